"""The cluster the end-to-end tests drive: the Kubernetes API test server, or a real cluster.

Both are reached the same way, through the official client and a kubeconfig, so the tests assert
only what a real kube-apiserver would show. Set E2E_KUBECONFIG to a kubeconfig file to run them
against a real cluster (never plain KUBECONFIG, which may point at production): they then work in a
namespace of their own and delete it at the end, with the CRDs they installed (in an API group of
their own, so no CRD of the cluster is touched).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.support.waiting import WAIT_SCALE

E2E_KUBECONFIG = "E2E_KUBECONFIG"
# The API group of the tests' CRDs on the test server, whose RBAC grants its `workers` (as
# docs/cluster.md says to); a real cluster gets a group of its own per run, deleted after.
TEST_SERVER_CRD_GROUP = "e2e.eventscaler.example.com"
# A container that does nothing, so a real cluster can run the test Deployments cheaply.
PAUSE_IMAGE = "registry.k8s.io/pause:3.9"
REPO_ROOT = Path(__file__).resolve().parents[2]


class Cluster:
    """Create, inspect and scale test workloads (Deployments, StatefulSets, custom resources) in
    one namespace; CRDs the tests install are deleted again by close()."""

    def __init__(
        self,
        kubeconfig: Path,
        namespace: str,
        daemon_kubeconfig: Path,
        crd_group: str = TEST_SERVER_CRD_GROUP,
    ) -> None:
        self.kubeconfig = kubeconfig  # admin access, for the tests' own calls
        self.daemon_kubeconfig = daemon_kubeconfig  # what the daemon under test uses
        self.namespace = namespace
        self.crd_group = crd_group  # for the CRDs the tests install
        self._api = config.new_client_from_config(str(kubeconfig))
        self.apps = client.AppsV1Api(self._api)
        self.core = client.CoreV1Api(self._api)
        # Any /apis/GROUP/VERSION/namespaces/NS/PLURAL[/scale]: custom resources and apps/v1.
        self.objects = client.CustomObjectsApi(self._api)
        self._crds: list[str] = []

    def create_deployment(self, name: str, replicas: int = 0) -> None:
        self.apps.create_namespaced_deployment(
            self.namespace, workload("Deployment", name, replicas)
        )

    def create_statefulset(self, name: str, replicas: int = 0) -> None:
        body = workload("StatefulSet", name, replicas)
        body["spec"]["serviceName"] = name
        self.apps.create_namespaced_stateful_set(self.namespace, body)

    def install_crd(self, crd: dict[str, Any], timeout: float = 30.0) -> None:
        """Create a CRD (unless a test of this run did) and wait until it is Established (a real
        server takes a moment)."""
        extensions = client.ApiextensionsV1Api(self._api)
        name = crd["metadata"]["name"]
        if name not in self._crds:
            extensions.create_custom_resource_definition(crd)
            self._crds.append(name)

        def established() -> bool:
            status = extensions.read_custom_resource_definition(name).status
            return any(c.type == "Established" and c.status == "True"
                       for c in (status.conditions or []))  # fmt: skip

        wait_for(established, timeout, interval=0.2, what=f"CRD {name} Established")

    def create_custom_object(self, ref: Target, spec: dict[str, Any]) -> None:
        body = {"apiVersion": f"{ref.group}/{ref.version}", "kind": ref.kind,
                "metadata": {"name": ref.name}, "spec": spec}  # fmt: skip
        self.objects.create_namespaced_custom_object(
            ref.group, ref.version, self.namespace, ref.plural, body
        )

    def get_custom_object(self, ref: Target) -> dict[str, Any]:
        return dict(
            self.objects.get_namespaced_custom_object(
                ref.group, ref.version, self.namespace, ref.plural, ref.name
            )
        )

    def scale_replicas(self, ref: Target) -> int:
        """Replicas from the object's Scale, for any kind outside the core group."""
        scale = self.objects.get_namespaced_custom_object_scale(
            ref.group, ref.version, self.namespace, ref.plural, ref.name
        )
        return int((scale.get("spec") or {}).get("replicas") or 0)

    def annotate_object(self, ref: Target, key: str, value: str | None) -> None:
        self.objects.patch_namespaced_custom_object(
            ref.group, ref.version, self.namespace, ref.plural, ref.name,
            {"metadata": {"annotations": {key: value}}},
            _content_type="application/merge-patch+json",
        )  # fmt: skip

    def delete_deployment(self, name: str) -> None:
        try:
            self.apps.delete_namespaced_deployment(name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def replicas(self, name: str) -> int:
        scale = self.apps.read_namespaced_deployment_scale(name, self.namespace)
        return scale.spec.replicas or 0

    def generation(self, name: str) -> int:
        return self.apps.read_namespaced_deployment(name, self.namespace).metadata.generation

    def set_replicas(self, name: str, replicas: int) -> None:
        self.apps.patch_namespaced_deployment_scale(
            name,
            self.namespace,
            {"spec": {"replicas": replicas}},
            _content_type="application/merge-patch+json",
        )

    def annotate(self, name: str, key: str, value: str | None) -> None:
        """Set (or with None remove) an annotation on a Deployment, as `kubectl annotate` does."""
        self.apps.patch_namespaced_deployment(
            name,
            self.namespace,
            {"metadata": {"annotations": {key: value}}},
            _content_type="application/merge-patch+json",
        )

    def events(self, name: str) -> list[Any]:
        """The core/v1 Events about the object `name`, in the order the API lists them."""
        listed = self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name}"
        )
        return [e for e in listed.items if e.involved_object.name == name]

    def close(self) -> None:
        extensions = client.ApiextensionsV1Api(self._api)
        for name in self._crds:  # cluster-scoped: the namespace's deletion would not take them
            try:
                extensions.delete_custom_resource_definition(name)
            except ApiException as exc:
                if exc.status != 404:
                    raise
        self._api.close()


@dataclass(frozen=True)
class Target:
    """A scale target as the tests address it: the rule's scaleTargetRef plus its plural."""

    group: str
    version: str
    kind: str
    plural: str
    name: str

    @property
    def ref(self) -> dict[str, str]:
        """The rule file's scaleTargetRef."""
        return {"apiVersion": f"{self.group}/{self.version}", "kind": self.kind, "name": self.name}


def workload(kind: str, name: str, replicas: int) -> dict[str, Any]:
    """An apps/v1 workload of pause containers selecting `app=NAME`."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "main", "image": PAUSE_IMAGE}]},
            },
        },
    }


RBAC_KINDS = {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}
NAME = "eventscaler"  # the shipped role that holds the scale rules


def custom_resource_rbac_rules(group: str, plural: str) -> list[dict[str, Any]]:
    """The two rules docs/cluster.md tells users to add for a custom resource, for `plural`."""
    text = (REPO_ROOT / "docs" / "cluster.md").read_text()
    block = text.split("<!-- custom-resource-rbac -->", 1)[1].split("```yaml\n", 1)[1]
    rules = yaml.safe_load(block.split("```", 1)[0])
    documented = {"argoproj.io": group, "rollouts": plural, "rollouts/scale": f"{plural}/scale"}
    return [
        {**rule, "apiGroups": [documented[g] for g in rule["apiGroups"]],
         "resources": [documented[r] for r in rule["resources"]]}
        for rule in rules
    ]  # fmt: skip


def write_rbac_shape(
    directory: Path, shape: str = "cluster", extra_rules: list[dict[str, Any]] | None = None
) -> Path:
    """Write the RBAC objects of one shipped shape into `directory`, for the test server.

    "cluster": manifests/rbac.yaml as `kubectl apply -k manifests/` applies it. "namespaced": the
    same with the manifests/namespaced component applied (its ClusterRole and binding deleted, a
    Role per allowed namespace added). `extra_rules` are added to the role named eventscaler, as
    docs/cluster.md says to for a custom resource.
    """
    manifests = REPO_ROOT / "manifests"
    documents = [d for d in yaml.safe_load_all((manifests / "rbac.yaml").read_text()) if d]
    if shape == "namespaced":
        documents = [d for d in documents if not d["kind"].startswith("Cluster")]
        extra = (manifests / "namespaced" / "rbac-default.yaml").read_text()
        documents += [d for d in yaml.safe_load_all(extra) if d]
    elif shape != "cluster":
        raise ValueError(f"unknown RBAC shape {shape!r}")
    directory.mkdir(parents=True, exist_ok=True)
    kept = [d for d in documents if d["kind"] in RBAC_KINDS]
    for document in kept:
        if document["kind"] in ("Role", "ClusterRole") and document["metadata"]["name"] == NAME:
            document["rules"] = [*document["rules"], *(extra_rules or [])]
    (directory / "rbac.yaml").write_text(yaml.safe_dump_all(kept, sort_keys=False))
    return directory


def wait_for(
    condition: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = "condition"
) -> Any:
    """Poll until `condition()` is truthy; fail with `what` after `timeout` x WAIT_SCALE s."""
    timeout *= WAIT_SCALE
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


@contextmanager
def open_cluster(workdir: Path) -> Iterator[tuple[Cluster, Any]]:
    """Yield (cluster, test server or None): a real cluster when E2E_KUBECONFIG is set."""
    real = os.environ.get(E2E_KUBECONFIG)
    if real:
        run = uuid.uuid4().hex[:6]
        namespace = f"eventscaler-e2e-{run}"
        cluster = Cluster(Path(real), namespace, Path(real), f"e2e{run}.eventscaler.example.com")
        cluster.core.create_namespace({"metadata": {"name": namespace}})
        try:
            yield cluster, None
        finally:
            cluster.core.delete_namespace(namespace)
            cluster.close()
        return

    from tests.support.kubeapi import KubeApiServer

    custom = custom_resource_rbac_rules(TEST_SERVER_CRD_GROUP, "workers")
    server = KubeApiServer(rbac_dir=write_rbac_shape(workdir / "rbac", extra_rules=custom)).start()
    try:
        admin = server.write_kubeconfig(workdir / "admin.kubeconfig")
        # The daemon runs as the ServiceAccount of the shipped manifests, under their RBAC.
        token = server.add_service_account("eventscaler", "eventscaler")
        daemon = server.write_kubeconfig(workdir / "daemon.kubeconfig", token=token)
        cluster = Cluster(admin, "default", daemon)
        try:
            yield cluster, server
        finally:
            cluster.close()
    finally:
        server.stop()
