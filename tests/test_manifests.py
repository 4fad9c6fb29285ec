"""The files that run eventscaler in a cluster: manifests/, Dockerfile, .dockerignore, the sample
worker and docs/cluster.md, checked against each other and against the daemon.

Scenarios:
- every YAML file under manifests/ parses (multi-document); every object has apiVersion, kind and
  metadata.name, the right apiVersion for its kind, and the required fields of its kind; every
  field is one the Kubernetes API knows (a round trip through the official client's models)
- kustomizations: every file or directory they list exists; every manifest file is listed by one
  (secret.example.yaml excepted, and never listed); the commented-out `namespaced` component
  becomes valid YAML when uncommented
- the configMapGenerator: `eventscaler-rules`, no name-suffix hash, its rules file loads without a
  problem (`eventscaler.config.load_rules`), and it is what AUTOSCALER_CONFIG points at
- one image everywhere: the Deployment, the example, any kustomize override, the docs, and the
  package version as its tag
- labels: app.kubernetes.io/name on every autoscaler object, app on the example; selectors match
  their pod templates
- the autoscaler's Deployment: every security setting (pod and container, each read on its own),
  service account and token, resources, probes on the named port, strategy, grace period
- the example's Deployment: replicas 0, the worker command, a script that exists, the same Secret
  and the same security settings
- env: only known daemon settings, the downward API and the connection strings the rules name;
  values are strings; the Secret name and key agree with secret.example.yaml and the docs
- the ConfigMap is mounted as a directory (no subPath) at the directory of AUTOSCALER_CONFIG
- RBAC: no wildcard anywhere; exactly get on deployments and statefulsets, patch on their scale
  subresources, create on events and get/update (one Lease by
  name) + create (no resourceNames) on leases; bindings point at roles and a service account that
  exist; the Lease name matches AUTOSCALER_LEASE_NAME
- the namespaced component: deletes exactly the cluster-scoped RBAC, keeps the same rule, and its
  AUTOSCALER_NAMESPACES lists exactly the namespaces it grants
- rendered by `kubectl kustomize` (skipped without kubectl): plain, example, namespaced component
- Dockerfile: multi-stage, each COPY source exists and is not dockerignored, the venv path is the
  same in both stages, final stage: numeric non-root USER equal to the pod's, no build tools,
  ENTRYPOINT runs /app/autoscaler.py (which exists), CMD run
- .dockerignore excludes .git, .venv, node_modules, tests, and nothing the image needs
- docs/cluster.md: the paths it names exist, the Secret is created after its namespace and before
  `kubectl apply -k manifests/`, in both namespaces
- the sample worker, as the example runs it, against Azurite: drains the queue with one log line
  per message; on SIGTERM mid-message it finishes and deletes that message, then exits 0
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient

import eventscaler
from eventscaler.config import load_rules
from tests.support.azurite import Azurite

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "manifests"
EXAMPLE = MANIFESTS / "example"
NAMESPACED = MANIFESTS / "namespaced"
DOCS = REPO / "docs" / "cluster.md"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
SECRET_EXAMPLE = MANIFESTS / "secret.example.yaml"

IMAGE = f"eventscaler:{eventscaler.__version__}"
NAMESPACE = "eventscaler"
NAME_LABEL = "app.kubernetes.io/name"
LABELS = {NAME_LABEL: "eventscaler"}
EXAMPLE_LABELS = {"app": "hello-keda"}
SECRET_NAME = "eventscaler-azure"
SECRET_KEY = "connection-string"
RULES_CONFIGMAP = "eventscaler-rules"
UID = 10001

# The daemon's settings (autoscaler.py: every flag defaults from one of these).
DAEMON_SETTINGS = {
    "AUTOSCALER_CONFIG",
    "AUTOSCALER_KUBECONFIG",
    "AUTOSCALER_CONTEXT",
    "AUTOSCALER_DRY_RUN",
    "AUTOSCALER_LOG_LEVEL",
    "AUTOSCALER_LOG_FORMAT",
    "AUTOSCALER_NAMESPACES",
    "AUTOSCALER_HEALTH_HOST",
    "AUTOSCALER_HEALTH_PORT",
    "AUTOSCALER_LEADER_ELECT",
    "AUTOSCALER_LEASE_NAME",
    "AUTOSCALER_LEASE_NAMESPACE",
}
DOWNWARD_API = {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
DEFAULT_LEASE_NAME = "eventscaler"

API_VERSIONS = {
    "Namespace": "v1",
    "ServiceAccount": "v1",
    "Secret": "v1",
    "ConfigMap": "v1",
    "Deployment": "apps/v1",
    "ClusterRole": "rbac.authorization.k8s.io/v1",
    "ClusterRoleBinding": "rbac.authorization.k8s.io/v1",
    "Role": "rbac.authorization.k8s.io/v1",
    "RoleBinding": "rbac.authorization.k8s.io/v1",
}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
KUSTOMIZE_KINDS = {
    "Kustomization": "kustomize.config.k8s.io/v1beta1",
    "Component": "kustomize.config.k8s.io/v1alpha1",
}

# Every Kubernetes call the daemon makes, as (apiGroup, resource) -> verbs. Nothing else.
EXPECTED_RBAC = {
    ("apps", "deployments"): {"get"},
    ("apps", "statefulsets"): {"get"},
    ("apps", "deployments/scale"): {"patch"},
    ("apps", "statefulsets/scale"): {"patch"},
    ("", "events"): {"create"},
    ("coordination.k8s.io", "leases"): {"get", "create", "update"},
}


# ---------------------------------------------------------------------------------------------
# Reading the files


@dataclass(frozen=True)
class Obj:
    path: Path
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body.get("kind"))

    @property
    def name(self) -> str:
        return str(self.body.get("metadata", {}).get("name"))

    @property
    def namespace(self) -> str | None:
        return self.body.get("metadata", {}).get("namespace")

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.path.relative_to(REPO)}: {self.kind} {where}{self.name}"


def load_documents(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


def yaml_files() -> list[Path]:
    return sorted(p for p in MANIFESTS.rglob("*") if p.suffix in (".yaml", ".yml"))


def kustomization_files() -> list[Path]:
    return [p for p in yaml_files() if p.name == "kustomization.yaml"]


def generator_sources() -> set[Path]:
    """Files a kustomization turns into a ConfigMap or Secret: data, not objects."""
    sources = set()
    for path in kustomization_files():
        body = yaml.safe_load(path.read_text(encoding="utf-8"))
        for generator in body.get("configMapGenerator", []) + body.get("secretGenerator", []):
            for source in generator.get("files", []):
                sources.add((path.parent / source.split("=", 1)[-1]).resolve())
    return sources


def objects(*, include_secret_example: bool = False) -> list[Obj]:
    """Every Kubernetes object in manifests/ (kustomizations and generator data are not)."""
    found = []
    data_files = generator_sources()
    for path in yaml_files():
        if path.name == "kustomization.yaml" or path.resolve() in data_files:
            continue
        if path == SECRET_EXAMPLE and not include_secret_example:
            continue
        found.extend(Obj(path, doc) for doc in load_documents(path))
    return found


def find(kind: str, name: str, namespace: str | None = None) -> Obj:
    matches = [
        o
        for o in objects(include_secret_example=True)
        if o.kind == kind and o.name == name and (namespace is None or o.namespace == namespace)
    ]
    assert len(matches) == 1, f"expected one {kind} {name}, found {[str(m) for m in matches]}"
    return matches[0]


def kustomization(directory: Path) -> dict[str, Any]:
    return yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))


def autoscaler_deployment() -> dict[str, Any]:
    return find("Deployment", "eventscaler", NAMESPACE).body


def example_deployment() -> dict[str, Any]:
    return find("Deployment", "hello-keda", "default").body


def the_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "one container per pod"
    return containers[0]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def env_value(container: dict[str, Any], name: str) -> str | None:
    entry = env_of(container).get(name)
    return None if entry is None else entry.get("value")


def rules_file() -> Path:
    generator = rules_generator()
    (source,) = generator["files"]
    return MANIFESTS / source.split("=", 1)[-1]


def rules_generator() -> dict[str, Any]:
    generators = kustomization(MANIFESTS).get("configMapGenerator", [])
    matches = [g for g in generators if g["name"] == RULES_CONFIGMAP]
    assert len(matches) == 1, f"one configMapGenerator named {RULES_CONFIGMAP}"
    return matches[0]


def rbac_objects() -> list[Obj]:
    return [o for o in objects() if o.body.get("apiVersion", "").startswith("rbac.")]


def enable_namespaced_component(text: str) -> str:
    """manifests/kustomization.yaml with its commented-out `components:` lines uncommented."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# components:"))
    lines[start] = "components:"
    lines[start + 1] = re.sub(r"^#\s*", "  ", lines[start + 1])
    return "\n".join(lines) + "\n"


def namespaced_patches() -> list[dict[str, Any]]:
    return [yaml.safe_load(p["patch"]) for p in kustomization(NAMESPACED).get("patches", [])]


# ---------------------------------------------------------------------------------------------
# Every file parses; every object is well formed


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(MANIFESTS)))
def test_every_yaml_file_parses(path: Path) -> None:
    documents = load_documents(path)
    assert documents, f"{path} holds no document"
    assert all(isinstance(doc, dict) for doc in documents)


def test_every_object_has_api_version_kind_and_name() -> None:
    for obj in objects(include_secret_example=True):
        assert obj.body.get("kind") in API_VERSIONS, f"{obj}: kind not checked by these tests"
        assert obj.body.get("apiVersion") == API_VERSIONS[obj.kind], f"{obj}: apiVersion"
        assert obj.body.get("metadata", {}).get("name"), f"{obj.path}: metadata.name"


def test_namespaced_objects_name_their_namespace_and_cluster_ones_do_not() -> None:
    # No kustomize `namespace:` transformer sets them (it would also move the namespaced
    # component's Roles), so each object says where it lives.
    for obj in objects(include_secret_example=True):
        if obj.kind in CLUSTER_SCOPED:
            assert obj.namespace is None, f"{obj}: cluster-scoped"
        else:
            assert obj.namespace, f"{obj}: metadata.namespace"


def test_every_object_has_the_required_fields_of_its_kind() -> None:
    for obj in objects(include_secret_example=True):
        body = obj.body
        if obj.kind in ("ClusterRole", "Role"):
            assert body.get("rules"), f"{obj}: rules"
            for rule in body["rules"]:
                for key in ("apiGroups", "resources", "verbs"):
                    assert rule.get(key), f"{obj}: every rule has {key}"
        elif obj.kind in ("ClusterRoleBinding", "RoleBinding"):
            ref = body["roleRef"]
            assert ref["apiGroup"] == "rbac.authorization.k8s.io", f"{obj}: roleRef.apiGroup"
            assert ref["kind"] in ("ClusterRole", "Role") and ref["name"], f"{obj}: roleRef"
            assert body.get("subjects"), f"{obj}: subjects"
            for subject in body["subjects"]:
                assert subject["kind"] == "ServiceAccount" and subject["name"], f"{obj}: subject"
                assert subject.get("namespace"), f"{obj}: a ServiceAccount subject's namespace"
        elif obj.kind == "Deployment":
            spec = body["spec"]
            assert isinstance(spec["replicas"], int) and spec["replicas"] >= 0, f"{obj}: replicas"
            selector = spec["selector"]["matchLabels"]
            template_labels = spec["template"]["metadata"]["labels"]
            assert selector, f"{obj}: selector.matchLabels"
            assert selector.items() <= template_labels.items(), f"{obj}: selector vs template"
            containers = spec["template"]["spec"]["containers"]
            assert containers, f"{obj}: containers"
            for container in containers:
                assert container.get("name") and container.get("image"), f"{obj}: name + image"
        elif obj.kind == "Secret":
            assert body.get("stringData") or body.get("data"), f"{obj}: data"


def test_every_object_matches_the_kubernetes_api_schema() -> None:
    # The official client's models know every field of every kind: a misspelled or misplaced
    # field (`readOnlyRootFileSystem`, `drop` outside `capabilities`) is dropped on the way
    # through them, and a missing required one raises.
    api = ApiClient()
    try:
        for obj in objects(include_secret_example=True):
            model = api.deserialize(json.dumps(obj.body), f"V1{obj.kind}", "application/json")
            assert api.sanitize_for_serialization(model) == obj.body, f"{obj}: unknown fields"
    finally:
        api.close()


def test_every_object_is_defined_once() -> None:
    keys = [(o.kind, o.namespace, o.name) for o in objects()]
    assert len(keys) == len(set(keys)), "an object is defined twice"


# ---------------------------------------------------------------------------------------------
# Kustomizations


def listed_paths(directory: Path) -> list[Path]:
    """Every file or directory a kustomization refers to, resolved against its directory."""
    body = kustomization(directory)
    entries: list[str] = [*body.get("resources", []), *body.get("components", [])]
    for generator in body.get("configMapGenerator", []) + body.get("secretGenerator", []):
        entries.extend(source.split("=", 1)[-1] for source in generator.get("files", []))
    entries.extend(p["path"] for p in body.get("patches", []) if "path" in p)
    entries.extend(body.get("patchesStrategicMerge", []))
    return [(directory / entry).resolve() for entry in entries]


@pytest.mark.parametrize("path", kustomization_files(), ids=lambda p: str(p.relative_to(MANIFESTS)))
def test_kustomization_kind_and_listed_files_exist(path: Path) -> None:
    body = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert body.get("kind") in KUSTOMIZE_KINDS, f"{path}: kind"
    assert body["apiVersion"] == KUSTOMIZE_KINDS[body["kind"]], f"{path}: apiVersion"
    for listed in listed_paths(path.parent):
        assert listed.exists(), f"{path} lists {listed}, which does not exist"
        if listed.is_dir():
            assert (listed / "kustomization.yaml").exists(), f"{listed} is no kustomization"
        else:
            assert listed.is_relative_to(path.parent), f"{path}: {listed} is outside its root"


def test_every_manifest_file_is_listed_by_a_kustomization() -> None:
    listed = {p for k in kustomization_files() for p in listed_paths(k.parent)}
    for path in yaml_files():
        if path.name == "kustomization.yaml" or path == SECRET_EXAMPLE:
            continue
        assert path.resolve() in listed, f"{path} is in no kustomization"


def test_the_secret_example_is_never_applied() -> None:
    listed = {p for k in kustomization_files() for p in listed_paths(k.parent)}
    assert SECRET_EXAMPLE.resolve() not in listed
    secret = find("Secret", SECRET_NAME, NAMESPACE).body
    value = secret["stringData"][SECRET_KEY]
    assert "<" in value and ">" in value, "a placeholder, never a real connection string"
    assert "AccountKey=<" in value


def test_the_namespaced_component_is_one_uncomment_away() -> None:
    text = (MANIFESTS / "kustomization.yaml").read_text(encoding="utf-8")
    assert "components" not in yaml.safe_load(text), "cluster-wide RBAC by default"
    enabled = yaml.safe_load(enable_namespaced_component(text))
    assert enabled["components"] == ["namespaced"]
    assert {k: v for k, v in enabled.items() if k != "components"} == yaml.safe_load(text)
    assert kustomization(NAMESPACED)["kind"] == "Component"


def test_the_rules_configmap_is_generated_without_a_name_hash() -> None:
    body = kustomization(MANIFESTS)
    generator = rules_generator()
    options = {**body.get("generatorOptions", {}), **generator.get("options", {})}
    # With the hash every rule edit would roll the Deployment; the daemon reloads instead.
    assert options.get("disableNameSuffixHash") is True
    assert generator.get("namespace") == NAMESPACE
    assert options.get("labels") == LABELS


def test_the_generated_rules_file_is_valid() -> None:
    result = load_rules(rules_file())
    assert result.ok, [str(p) for p in result.problems]
    assert [rule.name for rule in result.rules] == ["hello-keda"]
    (rule,) = result.rules
    example = example_deployment()
    assert (rule.namespace, rule.scale_target.name) == ("default", example["metadata"]["name"])
    assert rule.triggers[0].settings.queue_name == env_value(the_container(example), "QUEUE_NAME")


# ---------------------------------------------------------------------------------------------
# Image and labels


def effective_image(directory: Path, image: str) -> str:
    """The image after the kustomization's `images:` overrides."""
    name, _, tag = image.partition(":")
    for override in kustomization(directory).get("images", []):
        if override["name"] == name:
            name = override.get("newName", name)
            tag = override.get("newTag", tag)
    return f"{name}:{tag}"


def test_one_image_for_the_autoscaler_and_the_example() -> None:
    autoscaler = the_container(autoscaler_deployment())["image"]
    example = the_container(example_deployment())["image"]
    assert autoscaler == example == IMAGE, "the tag is the package version"
    assert effective_image(MANIFESTS, autoscaler) == effective_image(EXAMPLE, example)
    for deployment in (autoscaler_deployment(), example_deployment()):
        # An image loaded into kind/minikube must not be pulled again.
        assert the_container(deployment)["imagePullPolicy"] == "IfNotPresent"


def test_the_docs_build_and_load_the_same_image() -> None:
    docs = DOCS.read_text(encoding="utf-8")
    assert f"docker build -t {IMAGE} ." in docs
    assert f"kind load docker-image {IMAGE}" in docs
    assert "kustomize edit set image" in docs
    mentioned = set(re.findall(r"\beventscaler:\d[\w.\-]*", docs))
    assert mentioned == {IMAGE}, f"the docs name other tags: {sorted(mentioned - {IMAGE})}"


def test_every_autoscaler_object_carries_the_name_label() -> None:
    for obj in objects(include_secret_example=True):
        labels = obj.body["metadata"].get("labels", {})
        if obj.path.is_relative_to(EXAMPLE):
            assert labels == EXAMPLE_LABELS, f"{obj}: labels"
        else:
            assert labels.get(NAME_LABEL) == "eventscaler", f"{obj}: {NAME_LABEL}"


def test_deployment_selectors_equal_their_template_labels() -> None:
    for deployment, labels in (
        (autoscaler_deployment(), LABELS),
        (example_deployment(), EXAMPLE_LABELS),
    ):
        assert deployment["spec"]["selector"]["matchLabels"] == labels
        assert deployment["spec"]["template"]["metadata"]["labels"] == labels
        assert deployment["metadata"]["labels"] == labels


# ---------------------------------------------------------------------------------------------
# The autoscaler's Deployment


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


GetDeployment = Callable[[], dict[str, Any]]
BOTH_DEPLOYMENTS = pytest.mark.parametrize(
    "get_deployment", [autoscaler_deployment, example_deployment], ids=["autoscaler", "example"]
)


@BOTH_DEPLOYMENTS
def test_pod_runs_as_a_fixed_non_root_user(get_deployment: GetDeployment) -> None:
    context = pod_spec(get_deployment())["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == UID
    assert context["runAsGroup"] == UID


@BOTH_DEPLOYMENTS
def test_pod_uses_the_runtime_default_seccomp_profile(get_deployment: GetDeployment) -> None:
    assert pod_spec(get_deployment())["securityContext"]["seccompProfile"] == {
        "type": "RuntimeDefault"
    }


@BOTH_DEPLOYMENTS
def test_container_cannot_escalate_privileges(get_deployment: GetDeployment) -> None:
    assert the_container(get_deployment())["securityContext"]["allowPrivilegeEscalation"] is False


@BOTH_DEPLOYMENTS
def test_container_root_filesystem_is_read_only(get_deployment: GetDeployment) -> None:
    assert the_container(get_deployment())["securityContext"]["readOnlyRootFilesystem"] is True


@BOTH_DEPLOYMENTS
def test_container_drops_all_capabilities(get_deployment: GetDeployment) -> None:
    capabilities = the_container(get_deployment())["securityContext"]["capabilities"]
    assert capabilities == {"drop": ["ALL"]}, "drop ALL, add nothing"


@BOTH_DEPLOYMENTS
def test_tmp_is_a_writable_empty_dir(get_deployment: GetDeployment) -> None:
    deployment = get_deployment()
    mounts = {m["mountPath"]: m["name"] for m in the_container(deployment).get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_autoscaler_uses_its_service_account_token() -> None:
    spec = pod_spec(autoscaler_deployment())
    assert spec["automountServiceAccountToken"] is True
    find("ServiceAccount", spec["serviceAccountName"], NAMESPACE)
    # The worker needs no API access.
    assert pod_spec(example_deployment())["automountServiceAccountToken"] is False


def test_autoscaler_runs_one_replica_recreated() -> None:
    deployment = autoscaler_deployment()
    assert deployment["spec"]["replicas"] == 1
    # Never two autoscalers at once while leader election is off.
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert env_value(the_container(deployment), "AUTOSCALER_LEADER_ELECT") == "false"
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] == 30


def test_autoscaler_resources() -> None:
    resources = the_container(autoscaler_deployment())["resources"]
    assert resources == {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"cpu": "1", "memory": "192Mi"},
    }


def test_probes_use_the_named_health_port() -> None:
    container = the_container(autoscaler_deployment())
    (port,) = container["ports"]
    assert port["name"] == "health"
    assert port["containerPort"] == int(env_value(container, "AUTOSCALER_HEALTH_PORT") or 0) == 8080
    liveness = container["livenessProbe"]["httpGet"]
    readiness = container["readinessProbe"]["httpGet"]
    assert (liveness["path"], liveness["port"]) == ("/healthz", "health")
    assert (readiness["path"], readiness["port"]) == ("/readyz", "health")
    # The daemon listens on loopback by default, where the kubelet cannot reach it.
    assert env_value(container, "AUTOSCALER_HEALTH_HOST") == "0.0.0.0"


def test_autoscaler_logs_json_and_reads_the_mounted_rules() -> None:
    container = the_container(autoscaler_deployment())
    assert env_value(container, "AUTOSCALER_LOG_FORMAT") == "json"
    assert env_value(container, "AUTOSCALER_CONFIG") == "/etc/eventscaler/rules.yaml"
    assert container.get("args", ["run"]) == ["run"]
    assert "command" not in container, "the image's ENTRYPOINT runs autoscaler.py"


def test_the_rules_configmap_is_mounted_as_a_directory_without_subpath() -> None:
    deployment = autoscaler_deployment()
    container = the_container(deployment)
    config = PurePosixPath(env_value(container, "AUTOSCALER_CONFIG") or "")
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    (mount,) = [
        m
        for m in container["volumeMounts"]
        if volumes[m["name"]].get("configMap", {}).get("name") == RULES_CONFIGMAP
    ]
    # A subPath mount is a copy taken at container start: rule edits would never arrive.
    assert "subPath" not in mount and "subPathExpr" not in mount
    assert mount["mountPath"] == str(config.parent)
    assert mount.get("readOnly") is True
    assert config.name == rules_file().name, "the ConfigMap key is the generated file's name"
    for container in pod_spec(deployment)["containers"]:
        for mount in container.get("volumeMounts", []):
            assert "subPath" not in mount, f"{mount['name']}: no subPath mounts at all"


def test_env_holds_only_known_settings_and_the_rules_connection_strings() -> None:
    container = the_container(autoscaler_deployment())
    env = env_of(container)
    connection_envs = {
        t.settings.connection_from_env for r in load_rules(rules_file()).rules for t in r.triggers
    }
    assert set(env) <= DAEMON_SETTINGS | set(DOWNWARD_API) | connection_envs
    for name, entry in env.items():
        if "value" in entry:
            assert isinstance(entry["value"], str), f"{name}: env values are strings in the API"
    for name, field_path in DOWNWARD_API.items():
        assert env[name]["valueFrom"]["fieldRef"]["fieldPath"] == field_path
    for name in connection_envs:
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == (SECRET_NAME, SECRET_KEY)


def test_the_daemon_knows_every_setting_the_manifests_use() -> None:
    source = "\n".join(
        p.read_text(encoding="utf-8")
        for p in [REPO / "autoscaler.py", *REPO.glob("eventscaler/**/*.py")]
    )
    texts = [p.read_text(encoding="utf-8") for p in yaml_files()]
    used = set(re.findall(r"\bAUTOSCALER_[A-Z_]+\b", "\n".join(texts)))
    assert used <= DAEMON_SETTINGS
    missing = sorted(name for name in used if name not in source)
    assert not missing, f"the daemon does not read {missing}"


def test_the_secret_reference_matches_the_example_secret_and_the_docs() -> None:
    secret = find("Secret", SECRET_NAME, NAMESPACE).body
    assert list(secret["stringData"]) == [SECRET_KEY]
    ref = env_of(the_container(example_deployment()))["AZURE_STORAGE_CONNECTION_STRING"]
    assert ref["valueFrom"]["secretKeyRef"] == {"name": SECRET_NAME, "key": SECRET_KEY}
    docs = DOCS.read_text(encoding="utf-8")
    assert f"--from-literal={SECRET_KEY}=" in docs


def test_the_example_starts_at_zero_and_runs_the_worker() -> None:
    deployment = example_deployment()
    assert deployment["spec"]["replicas"] == 0
    container = the_container(deployment)
    assert container["command"] == ["python", "/app/examples/hello_keda_worker.py"]
    script = PurePosixPath(container["command"][1]).relative_to("/app")
    assert (REPO / script).is_file()
    assert env_value(container, "QUEUE_NAME") == "js-queue-items"


# ---------------------------------------------------------------------------------------------
# RBAC


def test_no_rbac_wildcard_anywhere() -> None:
    for obj in rbac_objects():
        for rule in obj.body.get("rules", []):
            assert "nonResourceURLs" not in rule, f"{obj}"
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                for value in rule.get(key, []):
                    assert "*" not in value, f"{obj}: wildcard in {key}"
    for path in yaml_files():
        for document in load_documents(path):
            assert '"*"' not in json.dumps(document), f"{path}: a wildcard"


def test_rbac_grants_exactly_the_calls_the_daemon_makes() -> None:
    granted: dict[tuple[str, str], set[str]] = {}
    for obj in rbac_objects():
        for rule in obj.body.get("rules", []):
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == EXPECTED_RBAC


def test_scale_rules_are_the_same_in_both_shapes() -> None:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for obj in rbac_objects():
        if obj.kind in ("ClusterRole", "Role") and obj.body["metadata"]["name"] == "eventscaler":
            by_kind.setdefault(obj.kind, []).extend(obj.body["rules"])
    assert set(by_kind) == {"ClusterRole", "Role"}
    # The same grants, any target in scope: get it, patch only its scale subresource.
    assert by_kind["ClusterRole"] == by_kind["Role"]
    scale = ["deployments/scale", "statefulsets/scale"]
    assert {"apiGroups": ["apps"], "resources": scale, "verbs": ["patch"]} in by_kind["Role"]


def test_lease_rules_name_the_lease_except_create() -> None:
    lease_name = env_value(the_container(autoscaler_deployment()), "AUTOSCALER_LEASE_NAME")
    lease_name = lease_name or DEFAULT_LEASE_NAME
    holders = [
        o
        for o in rbac_objects()
        if any("leases" in r["resources"] for r in o.body.get("rules", []))
    ]
    assert [(o.kind, o.namespace) for o in holders] == [("Role", NAMESPACE)], "own namespace only"
    rules = holders[0].body["rules"]
    by_verbs = {tuple(sorted(r["verbs"])): r for r in rules}
    assert set(by_verbs) == {("get", "update"), ("create",)}
    assert by_verbs[("get", "update")]["resourceNames"] == [lease_name]
    # resourceNames cannot restrict create: a create rule with them never matches.
    assert "resourceNames" not in by_verbs[("create",)]
    text = holders[0].path.read_text(encoding="utf-8")
    comments = " ".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
    assert re.search(r"create.*cannot be limited by resourceNames", comments), (
        "say why in a comment"
    )


def test_bindings_bind_existing_roles_to_the_service_account() -> None:
    roles = {
        (o.kind, o.namespace, o.name) for o in rbac_objects() if o.kind in ("Role", "ClusterRole")
    }
    bound = set()
    for obj in rbac_objects():
        if obj.kind not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        ref = obj.body["roleRef"]
        namespace = obj.namespace if ref["kind"] == "Role" else None
        assert (ref["kind"], namespace, ref["name"]) in roles, f"{obj}: roleRef"
        bound.add((ref["kind"], namespace, ref["name"]))
        assert obj.body["subjects"] == [
            {"kind": "ServiceAccount", "name": "eventscaler", "namespace": NAMESPACE}
        ]
    assert bound == roles, "every role is bound"
    find("ServiceAccount", "eventscaler", NAMESPACE)


def test_the_namespaced_component_swaps_the_cluster_wide_grant() -> None:
    cluster_scoped = {(o.kind, o.name) for o in rbac_objects() if o.kind in CLUSTER_SCOPED}
    patches = namespaced_patches()
    deleted = {(p["kind"], p["metadata"]["name"]) for p in patches if p.get("$patch") == "delete"}
    assert deleted == cluster_scoped
    granted = {
        o.namespace
        for o in rbac_objects()
        if o.path.is_relative_to(NAMESPACED) and o.kind == "Role"
    }
    (env_patch,) = [p for p in patches if p["kind"] == "Deployment"]
    container = env_patch["spec"]["template"]["spec"]["containers"][0]
    assert container["name"] == the_container(autoscaler_deployment())["name"]
    allowed = env_value(container, "AUTOSCALER_NAMESPACES") or ""
    assert set(allowed.split(",")) == granted == {"default"}
    result = load_rules(rules_file(), allowed_namespaces=granted)
    assert result.ok, "the shipped rules stay valid with the namespaced shape"


# ---------------------------------------------------------------------------------------------
# Rendered by kustomize (kubectl's built-in one)

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")


def kustomize(directory: Path) -> list[dict[str, Any]]:
    assert KUBECTL is not None
    # `kubectl kustomize` renders locally; it never contacts a cluster.
    done = subprocess.run(
        [KUBECTL, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def index(rendered: list[dict[str, Any]]) -> dict[tuple[str, str | None, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in rendered}


@needs_kubectl
def test_kustomize_renders_the_autoscaler() -> None:
    rendered = index(kustomize(MANIFESTS))
    assert set(rendered) == {
        ("Namespace", None, NAMESPACE),
        ("ServiceAccount", NAMESPACE, "eventscaler"),
        ("ClusterRole", None, "eventscaler"),
        ("ClusterRoleBinding", None, "eventscaler"),
        ("Role", NAMESPACE, "eventscaler-leader-election"),
        ("RoleBinding", NAMESPACE, "eventscaler-leader-election"),
        ("ConfigMap", NAMESPACE, RULES_CONFIGMAP),
        ("Deployment", NAMESPACE, "eventscaler"),
    }
    configmap = rendered[("ConfigMap", NAMESPACE, RULES_CONFIGMAP)]
    assert configmap["data"] == {rules_file().name: rules_file().read_text(encoding="utf-8")}
    assert configmap["metadata"]["labels"] == LABELS
    assert next(iter(rendered))[0] == "Namespace", "the namespace is applied first"
    assert rendered[("Deployment", NAMESPACE, "eventscaler")] == autoscaler_deployment()


@needs_kubectl
def test_kustomize_renders_the_example() -> None:
    rendered = index(kustomize(EXAMPLE))
    assert rendered == {("Deployment", "default", "hello-keda"): example_deployment()}


@needs_kubectl
def test_kustomize_renders_the_namespaced_shape(tmp_path: Path) -> None:
    copy = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, copy)
    text = (copy / "kustomization.yaml").read_text(encoding="utf-8")
    (copy / "kustomization.yaml").write_text(enable_namespaced_component(text), encoding="utf-8")
    rendered = index(kustomize(copy))
    plain = index(kustomize(MANIFESTS))
    assert set(plain) - set(rendered) == {
        ("ClusterRole", None, "eventscaler"),
        ("ClusterRoleBinding", None, "eventscaler"),
    }
    assert set(rendered) - set(plain) == {
        ("Role", "default", "eventscaler"),
        ("RoleBinding", "default", "eventscaler"),
    }
    container = the_container(rendered[("Deployment", NAMESPACE, "eventscaler")])
    assert env_value(container, "AUTOSCALER_NAMESPACES") == "default"
    others = {k: v for k, v in env_of(container).items() if k != "AUTOSCALER_NAMESPACES"}
    assert others == env_of(the_container(autoscaler_deployment())), "the rest is unchanged"


# ---------------------------------------------------------------------------------------------
# Dockerfile and .dockerignore


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str

    def words(self) -> list[str]:
        text = self.arguments.strip()
        if text.startswith("["):
            return [str(word) for word in json.loads(text)]
        return shlex.split(text)


def dockerfile_stages() -> list[list[Instruction]]:
    """The Dockerfile's instructions, continuation lines joined, grouped by FROM."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[list[Instruction]] = []
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        instruction = Instruction(keyword.upper(), arguments)
        if instruction.keyword == "FROM":
            stages.append([])
        assert stages, "the Dockerfile starts with FROM"
        stages[-1].append(instruction)
    return stages


def copy_sources(instruction: Instruction) -> tuple[list[str], str, dict[str, str]]:
    words = instruction.words()
    flags = dict(w[2:].split("=", 1) for w in words if w.startswith("--"))
    paths = [w for w in words if not w.startswith("--")]
    return paths[:-1], paths[-1], flags


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def is_dockerignored(path: str) -> bool:
    path = path.strip("/").removeprefix("./")
    for pattern in dockerignore_patterns():
        pattern = pattern.strip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            return True
    return False


def test_dockerfile_is_multi_stage_on_the_same_base() -> None:
    stages = dockerfile_stages()
    assert len(stages) == 2
    builder, final = (stage[0].words() for stage in stages)
    assert builder == ["python:3.11-slim", "AS", "builder"]
    assert final == ["python:3.11-slim"], "the venv refers to the base image's Python by path"


def test_dockerfile_builder_installs_the_pinned_requirements_into_a_venv() -> None:
    builder = dockerfile_stages()[0]
    runs = " ".join(i.arguments for i in builder if i.keyword == "RUN")
    assert "python -m venv /opt/venv" in runs
    assert "pip install --no-cache-dir -r /tmp/requirements.txt" in runs


def test_every_copy_source_exists_and_is_in_the_build_context() -> None:
    copies = [i for stage in dockerfile_stages() for i in stage if i.keyword in ("COPY", "ADD")]
    assert all(i.keyword == "COPY" for i in copies), "COPY, never ADD"
    for instruction in copies:
        sources, _, flags = copy_sources(instruction)
        if "from" in flags:
            continue
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
            assert not is_dockerignored(source), f"COPY {source}: excluded by .dockerignore"


def test_final_stage_copies_the_venv_and_the_code() -> None:
    final = dockerfile_stages()[-1]
    copies = [copy_sources(i) for i in final if i.keyword == "COPY"]
    assert (["/opt/venv"], "/opt/venv", {"from": "builder"}) in copies
    copied = {source.rstrip("/") for sources, _, flags in copies if not flags for source in sources}
    assert copied == {"autoscaler.py", "config.example.yaml", "eventscaler", "examples"}
    for sources, destination, flags in copies:
        if not flags:
            assert destination.startswith("/app/"), f"COPY {sources}: into /app"


def test_final_stage_runs_as_a_numeric_non_root_user() -> None:
    users = [i.arguments.strip() for i in dockerfile_stages()[-1] if i.keyword == "USER"]
    assert len(users) == 1
    uid, _, gid = users[0].partition(":")
    assert uid.isdigit() and gid.isdigit(), "numeric, so runAsNonRoot can verify it"
    assert int(uid) == int(gid) == UID != 0
    assert pod_spec(autoscaler_deployment())["securityContext"]["runAsUser"] == int(uid)


def test_final_stage_has_no_build_tools() -> None:
    final = dockerfile_stages()[-1]
    for instruction in final:
        if instruction.keyword == "RUN":
            words = set(re.findall(r"[\w.+-]+", instruction.arguments))
            assert not words & {"apt-get", "apt", "gcc", "build-essential", "pip", "make"}, (
                f"RUN {instruction.arguments}"
            )


def test_final_stage_environment_and_entrypoint() -> None:
    final = dockerfile_stages()[-1]
    env = " ".join(i.arguments for i in final if i.keyword == "ENV")
    assert "PYTHONUNBUFFERED=1" in env and "PYTHONDONTWRITEBYTECODE=1" in env
    (entrypoint,) = [i.words() for i in final if i.keyword == "ENTRYPOINT"]
    assert entrypoint == ["python", "/app/autoscaler.py"]
    assert (REPO / "autoscaler.py").is_file()
    assert [i.words() for i in final if i.keyword == "CMD"] == [["run"]]
    # The final instruction that sets the user comes after every RUN (which need root).
    keywords = [i.keyword for i in final]
    assert max(i for i, k in enumerate(keywords) if k == "RUN") < keywords.index("USER")


def test_dockerignore_keeps_out_what_the_image_does_not_need() -> None:
    for path in (".git", ".venv", "node_modules", "tests", "bench", "__pycache__", ".pytest_cache"):
        assert is_dockerignored(path) or is_dockerignored(f"x/{path}"), path
    for path in ("requirements.txt", "autoscaler.py", "eventscaler", "examples"):
        assert not is_dockerignored(path), path


# ---------------------------------------------------------------------------------------------
# docs/cluster.md


def test_the_docs_name_only_paths_that_exist() -> None:
    docs = DOCS.read_text(encoding="utf-8")
    # Repository paths: relative, so never right after a "/" (/etc/eventscaler/rules.yaml).
    relative = r"(?<![\w./-])"
    paths = set(re.findall(relative + r"((?:manifests|examples)/[\w./-]*\w)", docs))
    paths |= set(re.findall(relative + r"([\w-]+/[\w./-]*\.(?:py|yaml))\b", docs))
    assert paths, "the walkthrough points at the files it uses"
    for path in paths:
        if "NAMESPACE" in path:
            continue  # the name pattern of a copy the reader makes
        assert (REPO / path).exists(), f"docs/cluster.md names {path}"


def test_the_docs_create_each_secret_after_its_namespace_and_before_applying() -> None:
    docs = DOCS.read_text(encoding="utf-8")
    namespace_step = docs.index("kubectl apply -f manifests/namespace.yaml")
    secret_step = docs.index(f"kubectl create secret generic {SECRET_NAME} -n {NAMESPACE}")
    default_secret = docs.index(f"kubectl create secret generic {SECRET_NAME} -n default")
    apply_step = docs.index("kubectl apply -k manifests/\n")
    example_step = docs.index("kubectl apply -k manifests/example/")
    assert namespace_step < secret_step < apply_step < example_step
    assert default_secret < example_step
    assert f"kubectl edit configmap {RULES_CONFIGMAP} -n {NAMESPACE}" in docs
    assert "kubectl get deploy hello-keda -w" in docs


# ---------------------------------------------------------------------------------------------
# The sample worker, run the way the example Deployment runs it

WORKER = REPO / "examples" / "hello_keda_worker.py"


@pytest.fixture
def worker_queue(azurite: Azurite) -> Iterator[str]:
    name = f"hello-{uuid.uuid4().hex[:10]}"
    azurite.create_queue(name)
    yield name
    with azurite.queue_client(name) as client:
        client.delete_queue()


def start_worker(azurite: Azurite, queue: str, processing_seconds: float) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string,
        "QUEUE_NAME": queue,
        "PROCESSING_SECONDS": str(processing_seconds),
    }
    return subprocess.Popen(
        [sys.executable, str(WORKER)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def stop_worker(worker: subprocess.Popen[str]) -> tuple[int, str]:
    worker.send_signal(signal.SIGTERM)
    try:
        output, _ = worker.communicate(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    return worker.returncode, output


def test_the_worker_drains_the_queue_with_one_line_per_message(
    azurite: Azurite, worker_queue: str
) -> None:
    azurite.send_messages(worker_queue, 3)
    worker = start_worker(azurite, worker_queue, processing_seconds=0.1)
    with azurite.queue_client(worker_queue) as client:
        wait_for(
            lambda: client.get_queue_properties().approximate_message_count == 0,
            timeout=20,
            what="the worker to delete every message",
        )
    code, output = stop_worker(worker)
    assert code == 0, output
    assert len(re.findall(r"processed message \S+ from " + worker_queue, output)) == 3, output
    assert "Request URL" not in output, "the SDK's HTTP logging is silenced"


def test_the_worker_finishes_the_message_in_hand_on_sigterm(
    azurite: Azurite, worker_queue: str
) -> None:
    azurite.send_messages(worker_queue, 2)
    worker = start_worker(azurite, worker_queue, processing_seconds=1.5)
    with azurite.queue_client(worker_queue) as client:
        # One message received (invisible), one still visible: the worker is mid-message.
        wait_for(
            lambda: len(client.peek_messages(max_messages=32)) == 1,
            timeout=20,
            what="the worker to take a message",
        )
        code, output = stop_worker(worker)
        assert code == 0, output
        assert len(re.findall(r"processed message", output)) == 1, output
        assert "exiting after 1 message(s)" in output
        # The message in hand was deleted, the other one never taken.
        assert client.get_queue_properties().approximate_message_count == 1
        assert len(client.peek_messages(max_messages=32)) == 1
