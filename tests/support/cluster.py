"""The cluster the end-to-end tests drive: the Kubernetes API test server, or a real cluster.

Both are reached the same way, through the official client and a kubeconfig, so the tests assert
only what a real kube-apiserver would show. Set E2E_KUBECONFIG to a kubeconfig file to run them
against a real cluster (never plain KUBECONFIG, which may point at production): they then work in a
namespace of their own and delete it at the end.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

E2E_KUBECONFIG = "E2E_KUBECONFIG"
# A container that does nothing, so a real cluster can run the test Deployments cheaply.
PAUSE_IMAGE = "registry.k8s.io/pause:3.9"
REPO_ROOT = Path(__file__).resolve().parents[2]


class Cluster:
    """Create, inspect and scale test Deployments in one namespace."""

    def __init__(self, kubeconfig: Path, namespace: str, daemon_kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig  # admin access, for the tests' own calls
        self.daemon_kubeconfig = daemon_kubeconfig  # what the daemon under test uses
        self.namespace = namespace
        self._api = config.new_client_from_config(str(kubeconfig))
        self.apps = client.AppsV1Api(self._api)
        self.core = client.CoreV1Api(self._api)

    def create_deployment(self, name: str, replicas: int = 0) -> None:
        labels = {"app": name}
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
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
        self.apps.create_namespaced_deployment(self.namespace, body)

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
        """The core/v1 Events about Deployment `name`, in the order the API lists them."""
        listed = self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name}"
        )
        return [e for e in listed.items if e.involved_object.name == name]

    def close(self) -> None:
        self._api.close()


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
    """Poll until `condition()` is truthy; fail with `what` after `timeout` seconds."""
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
        namespace = f"eventscaler-e2e-{uuid.uuid4().hex[:6]}"
        cluster = Cluster(Path(real), namespace, Path(real))
        cluster.core.create_namespace({"metadata": {"name": namespace}})
        try:
            yield cluster, None
        finally:
            cluster.core.delete_namespace(namespace)
            cluster.close()
        return

    from tests.support.kubeapi import KubeApiServer

    server = KubeApiServer(rbac_dir=write_rbac_shape(workdir / "rbac")).start()
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
