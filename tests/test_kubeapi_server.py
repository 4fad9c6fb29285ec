"""The Kubernetes API test server, exercised through the real `kubernetes` client (v37).

Scenarios:
- TLS: the generated kubeconfig carries the CA and the client verifies the server normally; a
  client without the CA is refused; plain HTTP works when asked for.
- Scale subresource: a 0-replica Deployment's Scale has no `spec.replicas` (omitempty, read as
  None) but always `status.replicas` and `status.selector`; a merge patch of the Scale bumps the
  Deployment's generation and resourceVersion; a no-op patch bumps nothing.
- PATCH content types: v37 sends a dict body under its default `json-patch+json` as strategic
  merge patch (asserted); a JSON patch whose body is not a list is 400; failing ops are 422;
  unknown types 415; apply patches need a fieldManager and can create.
- Errors as v1 Status objects: 404 NotFound, 409 AlreadyExists, 409 Conflict on a stale PUT (and
  a PUT without resourceVersion is accepted), 422 Invalid for negative or non-integer replicas,
  400 for undecodable PUT bodies, 401 for a wrong or missing token.
- Lists: label selectors (=, !=, in, notin, exists, !exists, AND), all namespaces, paging, no
  kind on items; bad selectors 400.
- Watches: events after a resourceVersion, initial ADDED without one, `timeoutSeconds`, selector
  transitions (a relabelled object is DELETED for the watcher), 410 Expired for a too old version.
- Leases (create/replace/stale 409/patch/delete), Events in both API groups sharing one
  storage (and the stricter events.k8s.io name rule), ConfigMaps, Namespaces (404 for objects in
  a missing namespace, cascading delete, system namespaces undeletable).
- StatefulSets and custom resources, against the facts of a real v1.28 apiserver (TESTING.md):
  a 0-replica StatefulSet's Scale is `"spec":{}` with `status.selector`; a CRD with
  `subresources.scale` serves its kind's Scale through specReplicasPath, statusReplicasPath and
  labelSelectorPath (`"spec":{}`, `"status":{"replicas":0}`, no `selector` until the resource has
  one), a merge patch of it writes `.spec.replicas` and bumps the generation; the scale path of a
  CRD without the subresource is 404 `plains.example.com "p1" not found` although the object
  exists; discovery (`/api/v1`, `/apis/apps/v1`, `/apis/G/V`) lists `PLURAL/scale` as its own
  autoscaling/v1 Scale entry; CRDs are validated, Established at once, and take their custom
  resources along when deleted; the official client's CustomObjectsApi reads and patches a Scale.
- Discovery is open to every authenticated user (system:discovery), whatever the roles; RBAC
  covers custom resources and their `scale` subresource like built-in ones.
- RBAC from a manifest directory: allowed and denied requests with the apiserver's exact
  message, resourceNames, wildcards, kustomization namespace, and which rule allowed each request.
- Fault injection: 500, 429 with Retry-After, added latency, dropped connections, `count`.
- The controller: status follows spec after the delay, so a PUT with the pre-controller
  resourceVersion conflicts as on a real cluster.
- Request log, stop() cutting watches, and the standalone `python -m tests.support.kubeapi`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from tests.support.kubeapi import KubeApiServer
from tests.support.kubeapi_crd import crd_manifest

REPO_ROOT = Path(__file__).resolve().parents[1]
SA_USER = "system:serviceaccount:eventscaler:eventscaler"
MERGE = "application/merge-patch+json"


@pytest.fixture
def api() -> Iterator[KubeApiServer]:
    # No controller by default: tests that read status decide when it changes.
    with KubeApiServer(controller_delay=None) as server:
        yield server


def make_client(api: KubeApiServer, tmp_path: Path, token: str | None = None) -> client.ApiClient:
    path = api.write_kubeconfig(tmp_path / f"kubeconfig-{len(list(tmp_path.iterdir()))}", token)
    return config.new_client_from_config(str(path))


@pytest.fixture
def kube(api: KubeApiServer, tmp_path: Path) -> Iterator[client.ApiClient]:
    api_client = make_client(api, tmp_path)
    yield api_client
    api_client.close()


def raw_request(
    api: KubeApiServer,
    method: str,
    path: str,
    body: Any = None,
    content_type: str = "application/json",
    token: str | None = "admin",
) -> tuple[int, Any, urllib3.HTTPHeaderDict]:
    """One request without the client's help (it rewrites some of what we want to send)."""
    pool = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_cert_data=api.ca_pem.decode())
    headers = {"Content-Type": content_type}
    if token:
        headers["Authorization"] = f"Bearer {api.admin_token if token == 'admin' else token}"
    data = body if isinstance(body, bytes | None) else json.dumps(body).encode()
    response = pool.request(method, api.url + path, body=data, headers=headers, retries=False)
    try:
        parsed = json.loads(response.data)
    except ValueError:
        parsed = response.data.decode()
    return response.status, parsed, response.headers


def stored(api: KubeApiServer, plural: str, namespace: str, name: str) -> dict[str, Any]:
    """The object as the server holds it (read directly, not through the API)."""
    obj = api.get_object(plural, namespace, name)
    assert obj is not None, f"{plural} {namespace}/{name} does not exist"
    return obj


def status_of(exc: ApiException) -> dict[str, Any]:
    body = json.loads(exc.body)
    assert body["kind"] == "Status" and body["apiVersion"] == "v1"
    assert body["status"] == "Failure" and body["code"] == exc.status
    return body


# --- TLS and kubeconfig ------------------------------------------------------------------------


def test_client_verifies_tls_with_the_kubeconfig_ca(api: KubeApiServer, tmp_path: Path) -> None:
    path = api.write_kubeconfig(tmp_path / "kubeconfig")
    assert path.stat().st_mode & 0o777 == 0o600
    document = config.kube_config.yaml.safe_load(path.read_text())
    assert document["clusters"][0]["cluster"]["server"] == api.url
    assert api.url.startswith("https://127.0.0.1:")
    assert "certificate-authority-data" in document["clusters"][0]["cluster"]
    api_client = config.new_client_from_config(str(path))
    assert api_client.configuration.verify_ssl
    assert client.VersionApi(api_client).get_code().git_version.startswith("v1.")

    untrusting = urllib3.PoolManager(cert_reqs="CERT_REQUIRED")  # system CAs only
    with pytest.raises(urllib3.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        untrusting.request("GET", api.url + "/version", retries=False)


def test_plain_http_when_tls_is_off(tmp_path: Path) -> None:
    with KubeApiServer(tls=False, controller_delay=None) as server:
        assert server.url.startswith("http://127.0.0.1:")
        core = client.CoreV1Api(make_client(server, tmp_path))
        names = {ns.metadata.name for ns in core.list_namespace().items}
        assert {"default", "kube-system"} <= names


# --- scale subresource -------------------------------------------------------------------------


def test_scale_of_zero_replica_deployment_omits_spec_replicas(
    api: KubeApiServer, kube: client.ApiClient
) -> None:
    api.create_deployment("default", "web", replicas=0)
    scale = client.AppsV1Api(kube).read_namespaced_deployment_scale("web", "default")
    assert scale.spec.replicas is None  # what a real apiserver's omitempty makes the client see
    assert scale.status.replicas == 0
    assert scale.status.selector == "app=web"
    _, raw, _ = raw_request(api, "GET", "/apis/apps/v1/namespaces/default/deployments/web/scale")
    assert raw["kind"] == "Scale" and raw["apiVersion"] == "autoscaling/v1"
    assert raw["spec"] == {}
    assert raw["status"] == {"replicas": 0, "selector": "app=web"}
    assert set(raw["metadata"]) == {
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    }


def test_merge_patch_of_scale_bumps_generation_and_resource_version(
    api: KubeApiServer, kube: client.ApiClient
) -> None:
    apps = client.AppsV1Api(kube)
    created = api.create_deployment("default", "web", replicas=0)
    scale = apps.patch_namespaced_deployment_scale(
        "web", "default", {"spec": {"replicas": 3}}, _content_type="application/merge-patch+json"
    )
    assert scale.spec.replicas == 3
    deployment = apps.read_namespaced_deployment("web", "default")
    assert deployment.spec.replicas == 3
    assert deployment.metadata.generation == created["metadata"]["generation"] + 1
    assert int(deployment.metadata.resource_version) > int(created["metadata"]["resourceVersion"])
    assert scale.metadata.resource_version == deployment.metadata.resource_version

    again = apps.patch_namespaced_deployment_scale(
        "web", "default", {"spec": {"replicas": 3}}, _content_type="application/merge-patch+json"
    )
    assert again.metadata.resource_version == scale.metadata.resource_version  # no-op write


def test_default_patch_content_type_and_json_patch_bodies(
    api: KubeApiServer, kube: client.ApiClient
) -> None:
    apps = client.AppsV1Api(kube)
    api.create_deployment("default", "web", replicas=1)
    # v37 picks `application/json-patch+json` by default, but its REST layer then sends a dict
    # body as a strategic merge patch: so this works on a real cluster, and here.
    apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": 2}})
    assert api.requests[-1]["content_type"] == "application/strategic-merge-patch+json"
    assert stored(api, "deployments", "default", "web")["spec"]["replicas"] == 2

    # A real JSON patch must be a list of operations: an object is a decode error.
    code, body, _ = raw_request(
        api,
        "PATCH",
        "/apis/apps/v1/namespaces/default/deployments/web/scale",
        {"spec": {"replicas": 3}},
        "application/json-patch+json",
    )
    assert code == 400 and body["reason"] == "BadRequest"
    assert "cannot unmarshal object into Go value of type jsonpatch.Patch" in body["message"]

    ops = [
        {"op": "test", "path": "/spec/replicas", "value": 2},
        {"op": "replace", "path": "/spec/replicas", "value": 4},
    ]
    scale = apps.patch_namespaced_deployment_scale(
        "web", "default", ops, _content_type="application/json-patch+json"
    )
    assert scale.spec.replicas == 4
    with pytest.raises(ApiException) as failed:
        apps.patch_namespaced_deployment_scale(
            "web", "default", ops, _content_type="application/json-patch+json"
        )
    assert failed.value.status == 422 and status_of(failed.value)["reason"] == "Invalid"

    labels = [{"op": "add", "path": "/metadata/labels/tier", "value": "backend"}]
    apps.patch_namespaced_deployment(
        "web", "default", labels, _content_type="application/json-patch+json"
    )
    assert stored(api, "deployments", "default", "web")["metadata"]["labels"]["tier"] == "backend"


def test_unknown_and_apply_patch_content_types(api: KubeApiServer) -> None:
    api.create_deployment("default", "web", replicas=1)
    path = "/apis/apps/v1/namespaces/default/deployments/web"
    code, body, _ = raw_request(api, "PATCH", path, {"spec": {}}, "application/x-whatever")
    assert code == 415 and body["reason"] == "UnsupportedMediaType"
    assert "application/merge-patch+json" in body["message"]

    manifest = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: '1'\n"
    cm_path = "/api/v1/namespaces/default/configmaps/settings"
    code, body, _ = raw_request(api, "PATCH", cm_path, manifest, "application/apply-patch+yaml")
    assert code == 422 and "fieldManager: Required value" in body["message"]
    code, body, _ = raw_request(
        api, "PATCH", cm_path + "?fieldManager=test", manifest, "application/apply-patch+yaml"
    )
    assert code == 201 and body["data"] == {"a": "1"}
    code, body, _ = raw_request(
        api,
        "PATCH",
        cm_path + "?fieldManager=test",
        manifest.replace(b"'1'", b"'2'"),
        "application/apply-patch+yaml",
    )
    assert code == 200 and body["data"] == {"a": "2"}


# --- StatefulSets, custom resources, discovery -------------------------------------------------

WORKERS = "/apis/example.com/v1/namespaces/default/workers"
PLAINS = "/apis/example.com/v1/namespaces/default/plains"


@pytest.fixture
def crds(api: KubeApiServer) -> KubeApiServer:
    """Worker (with the scale and status subresources) and Plain (without) in example.com."""
    api.create_crd("example.com", "Worker")
    api.create_crd("example.com", "Plain", scale=False, status=False)
    api.create_custom_object("workers", "default", "w1", {"replicas": 0})
    api.create_custom_object("plains", "default", "p1", {"replicas": 0})
    return api


def test_scale_of_a_zero_replica_statefulset_is_an_empty_spec_with_a_selector(
    api: KubeApiServer,
) -> None:
    api.create_statefulset("default", "s1", replicas=0)
    code, scale, _ = raw_request(
        api, "GET", "/apis/apps/v1/namespaces/default/statefulsets/s1/scale"
    )
    assert code == 200 and (scale["kind"], scale["apiVersion"]) == ("Scale", "autoscaling/v1")
    assert scale["spec"] == {} and scale["status"] == {"replicas": 0, "selector": "app=s1"}


def test_custom_resource_scale_follows_the_crd_paths(crds: KubeApiServer) -> None:
    api = crds
    code, scale, _ = raw_request(api, "GET", f"{WORKERS}/w1/scale")
    assert code == 200 and (scale["kind"], scale["apiVersion"]) == ("Scale", "autoscaling/v1")
    assert set(scale["metadata"]) == {
        "name", "namespace", "uid", "resourceVersion", "creationTimestamp"
    }  # fmt: skip
    assert scale["spec"] == {} and scale["status"] == {"replicas": 0}  # no selector key yet

    code, patched, _ = raw_request(api, "PATCH", f"{WORKERS}/w1/scale",
                                   {"spec": {"replicas": 3}}, MERGE)  # fmt: skip
    assert code == 200 and patched["spec"] == {"replicas": 3}
    worker = stored(api, "workers", "default", "w1")
    assert worker["spec"]["replicas"] == 3 and worker["metadata"]["generation"] == 2
    assert patched["metadata"]["resourceVersion"] == worker["metadata"]["resourceVersion"]

    # Its operator reports status through the status subresource; the Scale shows it.
    status = {"status": {"replicas": 3, "selector": "app=w1"}}
    assert raw_request(api, "PATCH", f"{WORKERS}/w1/status", status, MERGE)[0] == 200
    assert raw_request(api, "GET", f"{WORKERS}/w1/scale")[1]["status"] == status["status"]
    assert stored(api, "workers", "default", "w1")["metadata"]["generation"] == 2  # status only
    # The main resource cannot write status when the CRD has the status subresource.
    raw_request(api, "PATCH", f"{WORKERS}/w1", {"status": {"replicas": 9}}, MERGE)
    assert stored(api, "workers", "default", "w1")["status"]["replicas"] == 3

    code, invalid, _ = raw_request(api, "PATCH", f"{WORKERS}/w1/scale",
                                   {"spec": {"replicas": -1}}, MERGE)  # fmt: skip
    assert code == 422 and invalid["reason"] == "Invalid"


def test_the_scale_path_of_a_crd_without_scale_is_not_found_though_the_object_exists(
    crds: KubeApiServer,
) -> None:
    api = crds
    assert raw_request(api, "GET", f"{PLAINS}/p1")[0] == 200
    for method, body in (("GET", None), ("PATCH", {"spec": {"replicas": 2}})):
        code, status, _ = raw_request(api, method, f"{PLAINS}/p1/scale", body, MERGE)
        assert code == 404
        assert (status["reason"], status["message"]) == (
            "NotFound",
            'plains.example.com "p1" not found',
        )
        assert status["details"] == {"name": "p1", "group": "example.com", "kind": "plains"}
    assert stored(api, "plains", "default", "p1")["spec"]["replicas"] == 0


def test_discovery_lists_the_scale_subresource_as_its_own_entry(crds: KubeApiServer) -> None:
    api = crds
    code, document, _ = raw_request(api, "GET", "/apis/example.com/v1")
    assert code == 200
    assert (document["kind"], document["groupVersion"]) == ("APIResourceList", "example.com/v1")
    entries = {e["name"]: e for e in document["resources"]}
    assert entries["workers"]["kind"] == "Worker" and entries["workers"]["namespaced"] is True
    assert {k: entries["workers/scale"][k] for k in ("group", "version", "kind", "verbs")} == {
        "group": "autoscaling", "version": "v1", "kind": "Scale",
        "verbs": ["get", "patch", "update"],
    }  # fmt: skip
    assert "plains" in entries and "plains/scale" not in entries
    groups = raw_request(api, "GET", "/apis")[1]["groups"]
    version = {"groupVersion": "example.com/v1", "version": "v1"}
    assert {"name": "example.com", "versions": [version], "preferredVersion": version} in groups
    apps = {e["name"] for e in raw_request(api, "GET", "/apis/apps/v1")[1]["resources"]}
    assert {"deployments", "deployments/scale", "statefulsets", "statefulsets/scale"} <= apps
    core = {e["name"]: e for e in raw_request(api, "GET", "/api/v1")[1]["resources"]}
    assert core["configmaps"]["kind"] == "ConfigMap" and "configmaps/scale" not in core
    assert raw_request(api, "GET", "/apis/nothing.example.com/v1")[0] == 404


def test_the_official_client_reads_and_patches_a_custom_resource_scale(
    crds: KubeApiServer, kube: client.ApiClient
) -> None:
    custom = client.CustomObjectsApi(kube)
    scale = custom.get_namespaced_custom_object_scale(
        "example.com", "v1", "default", "workers", "w1"
    )
    assert scale["spec"] == {}
    custom.patch_namespaced_custom_object_scale(
        "example.com", "v1", "default", "workers", "w1", {"spec": {"replicas": 4}}
    )
    assert stored(crds, "workers", "default", "w1")["spec"]["replicas"] == 4


def test_crds_are_validated_established_and_take_their_resources_along(
    api: KubeApiServer, kube: client.ApiClient
) -> None:
    extensions = client.ApiextensionsV1Api(kube)
    crd = crd_manifest("example.com", "Worker")
    crd["metadata"]["name"] = "workers.other.com"
    with pytest.raises(ApiException) as misnamed:
        extensions.create_custom_resource_definition(crd)
    assert misnamed.value.status == 422
    assert (
        'metadata.name: Invalid value: "workers.other.com": '
        'must be spec.names.plural+"."+spec.group' in status_of(misnamed.value)["message"]
    )
    crd = crd_manifest("example.com", "Worker")
    crd["spec"]["versions"][0]["subresources"]["scale"]["specReplicasPath"] = ".replicas"
    with pytest.raises(ApiException) as bad_path:
        extensions.create_custom_resource_definition(crd)
    assert (
        'specReplicasPath: Invalid value: ".replicas": should be a json path under .spec'
        in status_of(bad_path.value)["message"]
    )

    created = extensions.create_custom_resource_definition(crd_manifest("example.com", "Worker"))
    conditions = {c.type: c.status for c in created.status.conditions}
    assert conditions["Established"] == "True"
    api.create_custom_object("workers", "default", "w1", {"replicas": 1})
    extensions.delete_custom_resource_definition("workers.example.com")
    assert api.get_object("customresourcedefinitions", "", "workers.example.com") is None
    assert raw_request(api, "GET", f"{WORKERS}/w1")[0] == 404
    assert raw_request(api, "GET", "/apis/example.com/v1")[0] == 404
    # Created again, it starts empty.
    api.create_crd("example.com", "Worker")
    assert raw_request(api, "GET", f"{WORKERS}/w1")[1]["reason"] == "NotFound"


def test_discovery_is_open_to_any_authenticated_user_and_rbac_covers_custom_scale(
    tmp_path: Path,
) -> None:
    rbac_dir = tmp_path / "rbac"
    rbac_dir.mkdir()
    (rbac_dir / "rbac.yaml").write_text(CUSTOM_SCALE_RBAC)
    with KubeApiServer(rbac_dir=rbac_dir, controller_delay=None) as server:
        server.create_crd("example.com", "Worker")
        server.create_custom_object("workers", "default", "w1", {"replicas": 0})
        nobody = server.add_service_account("eventscaler", "nobody")  # no role at all
        for path in ("/api", "/api/v1", "/apis", "/apis/apps/v1", "/apis/example.com/v1"):
            assert raw_request(server, "GET", path, token=nobody)[0] == 200, path
            assert raw_request(server, "GET", path, token=None)[0] == 401, path
        assert raw_request(server, "GET", f"{WORKERS}/w1/scale", token=nobody)[0] == 403

        token = server.add_service_account("eventscaler", "eventscaler")
        scale = raw_request(server, "PATCH", f"{WORKERS}/w1/scale", {"spec": {"replicas": 2}},
                            MERGE, token=token)  # fmt: skip
        assert scale[0] == 200
        code, denied, _ = raw_request(server, "PATCH", f"{WORKERS}/w1", {"spec": {"replicas": 3}},
                                      MERGE, token=token)  # fmt: skip
        assert code == 403 and denied["message"] == (
            f'workers.example.com "w1" is forbidden: User "{SA_USER}" cannot patch resource '
            '"workers" in API group "example.com" in the namespace "default"'
        )
        assert raw_request(server, "GET", f"{WORKERS}/w1", token=token)[0] == 200
        granted = {tuple(r["rbac_rule"]) for r in server.requests if r["rbac_rule"]}
        assert granted == {("ClusterRole/custom-scale", 0), ("ClusterRole/custom-scale", 1)}


CUSTOM_SCALE_RBAC = """
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: custom-scale}
rules:
  - {apiGroups: [example.com], resources: [workers], verbs: [get]}
  - {apiGroups: [example.com], resources: [workers/scale], verbs: [get, patch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: custom-scale}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: custom-scale}
subjects:
  - {kind: ServiceAccount, name: eventscaler, namespace: eventscaler}
"""


# --- errors ------------------------------------------------------------------------------------


def test_errors_are_status_objects(
    api: KubeApiServer, kube: client.ApiClient, tmp_path: Path
) -> None:
    apps = client.AppsV1Api(kube)
    with pytest.raises(ApiException) as missing:
        apps.read_namespaced_deployment_scale("nope", "default")
    body = status_of(missing.value)
    assert missing.value.status == 404 and body["reason"] == "NotFound"
    assert body["message"] == 'deployments.apps "nope" not found'
    assert body["details"] == {"name": "nope", "group": "apps", "kind": "deployments"}

    api.create_deployment("default", "web", replicas=1)
    existing = api.get_deployment("default", "web")
    assert existing is not None
    del existing["metadata"]["resourceVersion"]
    with pytest.raises(ApiException) as duplicate:
        apps.create_namespaced_deployment("default", existing)
    body = status_of(duplicate.value)
    assert duplicate.value.status == 409 and body["reason"] == "AlreadyExists"
    assert body["message"] == 'deployments.apps "web" already exists'

    with pytest.raises(ApiException) as negative:
        apps.patch_namespaced_deployment_scale(
            "web",
            "default",
            {"spec": {"replicas": -1}},
            _content_type="application/merge-patch+json",
        )
    body = status_of(negative.value)
    assert negative.value.status == 422 and body["reason"] == "Invalid"
    assert body["message"] == (
        'Scale.autoscaling "web" is invalid: spec.replicas: Invalid value: -1: must be greater '
        "than or equal to 0"
    )
    assert body["details"]["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "field": "spec.replicas",
            "message": "Invalid value: -1: must be greater than or equal to 0",
        }
    ]

    with pytest.raises(ApiException) as deployment_negative:
        apps.patch_namespaced_deployment(
            "web",
            "default",
            {"spec": {"replicas": -2}},
            _content_type="application/merge-patch+json",
        )
    assert status_of(deployment_negative.value)["message"].startswith(
        'Deployment.apps "web" is invalid: spec.replicas: Invalid value: -2'
    )

    with pytest.raises(ApiException) as not_an_int:
        apps.patch_namespaced_deployment_scale(
            "web",
            "default",
            {"spec": {"replicas": "three"}},
            _content_type="application/merge-patch+json",
        )
    body = status_of(not_an_int.value)
    assert not_an_int.value.status == 422 and body["reason"] == "Invalid"
    assert (
        "cannot unmarshal string into Go struct field ScaleSpec.spec.replicas of type int32"
        in (body["message"])
    )
    code, body, _ = raw_request(
        api,
        "PUT",
        "/apis/apps/v1/namespaces/default/deployments/web/scale",
        {"metadata": {"name": "web"}, "spec": {"replicas": 2.5}},
    )
    assert code == 400 and body["reason"] == "BadRequest"
    assert body["message"].startswith('Scale in version "v1" cannot be handled as a Scale')

    wrong = make_client(api, tmp_path, token="not-a-token")
    with pytest.raises(ApiException) as unauthorized:
        client.AppsV1Api(wrong).list_namespaced_deployment("default")
    body = status_of(unauthorized.value)
    assert unauthorized.value.status == 401 and body["reason"] == "Unauthorized"
    code, body, _ = raw_request(api, "GET", "/apis/apps/v1/deployments", token=None)
    assert code == 401 and body["reason"] == "Unauthorized"

    code, body, _ = raw_request(api, "GET", "/apis/apps/v1/namespaces/default/widgets")
    assert code == 404 and body["message"] == "the server could not find the requested resource"


def test_put_with_stale_resource_version_conflicts(
    api: KubeApiServer, kube: client.ApiClient
) -> None:
    apps = client.AppsV1Api(kube)
    api.create_deployment("default", "web", replicas=1)
    scale = apps.read_namespaced_deployment_scale("web", "default")
    api.set_replicas("default", "web", 5)  # someone else scales in between
    scale.spec.replicas = 2
    with pytest.raises(ApiException) as stale:
        apps.replace_namespaced_deployment_scale("web", "default", scale)
    body = status_of(stale.value)
    assert stale.value.status == 409 and body["reason"] == "Conflict"
    assert body["message"] == (
        'Operation cannot be fulfilled on deployments.apps "web": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    assert stored(api, "deployments", "default", "web")["spec"]["replicas"] == 5

    unconditional = client.V1Scale(
        metadata=client.V1ObjectMeta(name="web"), spec=client.V1ScaleSpec(replicas=2)
    )
    assert (
        apps.replace_namespaced_deployment_scale("web", "default", unconditional).spec.replicas == 2
    )

    deployment = apps.read_namespaced_deployment("web", "default")
    api.set_replicas("default", "web", 1)
    with pytest.raises(ApiException) as stale_deployment:
        apps.replace_namespaced_deployment("web", "default", deployment)
    assert stale_deployment.value.status == 409


# --- lists and watches -------------------------------------------------------------------------


def test_list_honours_label_selectors_and_paging(
    api: KubeApiServer, kube: client.ApiClient
) -> None:
    apps = client.AppsV1Api(kube)
    api.create_deployment("default", "a", labels={"scale": "queue", "tier": "web"})
    api.create_deployment("default", "b", labels={"scale": "queue", "tier": "worker"})
    api.create_deployment("default", "c", labels={"tier": "web"})
    api.create_deployment("other", "d", labels={"scale": "queue"})

    def names(selector: str, namespace: str | None = "default") -> list[str]:
        if namespace is None:
            result = apps.list_deployment_for_all_namespaces(label_selector=selector)
        else:
            result = apps.list_namespaced_deployment(namespace, label_selector=selector)
        return [item.metadata.name for item in result.items]

    assert names("scale=queue") == ["a", "b"]
    assert names("scale==queue,tier=web") == ["a"]
    assert names("tier!=web") == ["b"]
    assert names("scale!=queue") == ["c"]  # a missing label satisfies !=
    assert names("tier in (web, worker)") == ["a", "b", "c"]
    assert names("tier notin (web)") == ["b"]
    assert names("scale") == ["a", "b"]
    assert names("!scale") == ["c"]
    assert names("scale=queue", namespace=None) == ["a", "b", "d"]
    assert names("") == ["a", "b", "c"]

    _, raw, _ = raw_request(api, "GET", "/apis/apps/v1/namespaces/default/deployments")
    assert raw["kind"] == "DeploymentList" and raw["apiVersion"] == "apps/v1"
    assert raw["metadata"]["resourceVersion"] == str(api.resource_version)
    assert "kind" not in raw["items"][0]  # list items carry no TypeMeta on a real cluster

    first = apps.list_deployment_for_all_namespaces(limit=2)
    assert [i.metadata.name for i in first.items] == ["a", "b"]
    assert first.metadata.remaining_item_count == 2
    rest = apps.list_deployment_for_all_namespaces(limit=2, _continue=first.metadata._continue)
    assert [i.metadata.name for i in rest.items] == ["c", "d"]
    assert rest.metadata._continue is None

    with pytest.raises(ApiException) as bad:
        apps.list_namespaced_deployment("default", label_selector="a in b")
    assert bad.value.status == 400


def test_watch_streams_changes_after_a_resource_version(
    api: KubeApiServer, kube: client.ApiClient
) -> None:
    apps = client.AppsV1Api(kube)
    api.create_deployment("default", "old")
    since = apps.list_namespaced_deployment("default").metadata.resource_version
    api.create_deployment("default", "web")
    api.set_replicas("default", "web", 2)
    api.create_deployment("other", "elsewhere")
    api.delete_deployment("default", "web")

    seen: list[tuple[str, str, int | None]] = []
    stream = watch.Watch()
    for event in stream.stream(
        apps.list_namespaced_deployment, "default", resource_version=since, timeout_seconds=5
    ):
        seen.append((event["type"], event["object"].metadata.name, event["object"].spec.replicas))
        assert event["raw_object"]["kind"] == "Deployment"
        if event["type"] == "DELETED":
            stream.stop()
    assert seen == [("ADDED", "web", 0), ("MODIFIED", "web", 2), ("DELETED", "web", 2)]


def test_watch_without_resource_version_lists_first_and_times_out(
    api: KubeApiServer, kube: client.ApiClient
) -> None:
    apps = client.AppsV1Api(kube)
    api.create_deployment("default", "a", labels={"scale": "queue"})
    api.create_deployment("default", "b")
    started = time.monotonic()
    events = [
        (e["type"], e["object"].metadata.name)
        for e in watch.Watch().stream(
            apps.list_namespaced_deployment,
            "default",
            label_selector="scale=queue",
            timeout_seconds=1,
        )
    ]
    elapsed = time.monotonic() - started
    assert events == [("ADDED", "a")]
    assert 0.9 <= elapsed < 3


def test_watch_selector_transitions_and_expiry(tmp_path: Path) -> None:
    with KubeApiServer(controller_delay=None, history_size=8) as server:
        apps = client.AppsV1Api(make_client(server, tmp_path))
        server.create_deployment("default", "web", labels={"scale": "queue"})
        since = apps.list_namespaced_deployment("default").metadata.resource_version
        apps.patch_namespaced_deployment(
            "web",
            "default",
            {"metadata": {"labels": {"scale": None}}},
            _content_type="application/merge-patch+json",
        )
        stream = watch.Watch()
        events = []
        for event in stream.stream(
            apps.list_namespaced_deployment,
            "default",
            label_selector="scale=queue",
            resource_version=since,
            timeout_seconds=5,
        ):
            events.append((event["type"], event["object"].metadata.name))
            stream.stop()
        assert events == [("DELETED", "web")]  # no longer selected: gone for this watcher

        for index in range(10):
            server.set_replicas("default", "web", index + 1)
        with pytest.raises(ApiException) as expired:
            list(
                watch.Watch().stream(
                    apps.list_namespaced_deployment,
                    "default",
                    resource_version=since,
                    timeout_seconds=1,
                )
            )
        assert expired.value.status == 410
        assert "Expired: too old resource version" in expired.value.reason


def test_statefulsets_subresources_dry_run_and_collections(
    api: KubeApiServer, kube: client.ApiClient
) -> None:
    apps = client.AppsV1Api(kube)
    api.create_statefulset("default", "db", replicas=0)
    scale = apps.read_namespaced_stateful_set_scale("db", "default")
    assert scale.spec.replicas is None and scale.status.selector == "app=db"
    apps.patch_namespaced_stateful_set_scale(
        "db", "default", {"spec": {"replicas": 2}}, _content_type="application/merge-patch+json"
    )
    statefulset = apps.read_namespaced_stateful_set("db", "default")
    assert statefulset.spec.replicas == 2 and statefulset.metadata.generation == 2

    # Status is written through its subresource only, and does not bump the generation.
    apps.patch_namespaced_stateful_set_status(
        "db",
        "default",
        {"status": {"replicas": 2, "readyReplicas": 1}},
        _content_type="application/merge-patch+json",
    )
    apps.patch_namespaced_stateful_set(
        "db", "default", {"status": {"replicas": 9}}, _content_type="application/merge-patch+json"
    )
    statefulset = apps.read_namespaced_stateful_set("db", "default")
    assert (statefulset.status.replicas, statefulset.status.ready_replicas) == (2, 1)
    assert statefulset.metadata.generation == 2

    before = api.resource_version
    dry = apps.patch_namespaced_stateful_set_scale(
        "db",
        "default",
        {"spec": {"replicas": 7}},
        dry_run="All",
        _content_type="application/merge-patch+json",
    )
    assert dry.spec.replicas == 7
    assert api.resource_version == before
    assert stored(api, "statefulsets", "default", "db")["spec"]["replicas"] == 2

    api.create_deployment("default", "a", labels={"team": "x"})
    api.create_deployment("default", "b", labels={"team": "y"})
    by_name = apps.list_namespaced_deployment("default", field_selector="metadata.name=b")
    assert [d.metadata.name for d in by_name.items] == ["b"]
    apps.delete_collection_namespaced_deployment("default", label_selector="team=x")
    assert [d.metadata.name for d in apps.list_namespaced_deployment("default").items] == ["b"]

    resources = client.AppsV1Api(kube).get_api_resources()
    names = {r.name: r for r in resources.resources}
    assert names["deployments/scale"].kind == "Scale" and names["deployments"].namespaced
    groups = {g.name for g in client.ApisApi(kube).get_api_versions().groups}
    assert {"apps", "coordination.k8s.io", "events.k8s.io"} <= groups


def test_restart_keeps_url_ca_and_objects(tmp_path: Path) -> None:
    with KubeApiServer(controller_delay=None) as server:
        apps = client.AppsV1Api(make_client(server, tmp_path))
        server.create_deployment("default", "web", replicas=2)
        url = server.url
        server.stop()
        with pytest.raises(urllib3.exceptions.MaxRetryError):
            apps.read_namespaced_deployment("web", "default", _request_timeout=1)
        server.start()
        assert server.url == url
        assert apps.read_namespaced_deployment("web", "default").spec.replicas == 2


# --- leases, events, configmaps, namespaces ----------------------------------------------------


def test_leases_create_replace_and_conflict(api: KubeApiServer, kube: client.ApiClient) -> None:
    coordination = client.CoordinationV1Api(kube)
    lease = client.V1Lease(
        metadata=client.V1ObjectMeta(name="eventscaler-leader"),
        spec=client.V1LeaseSpec(holder_identity="pod-a", lease_duration_seconds=15),
    )
    created = coordination.create_namespaced_lease("default", lease)
    assert created.metadata.resource_version and created.metadata.generation is None
    current = coordination.read_namespaced_lease("eventscaler-leader", "default")
    current.spec.holder_identity = "pod-b"
    replaced = coordination.replace_namespaced_lease("eventscaler-leader", "default", current)
    assert replaced.spec.holder_identity == "pod-b"

    current.spec.holder_identity = "pod-c"  # still carries the old resourceVersion
    with pytest.raises(ApiException) as stale:
        coordination.replace_namespaced_lease("eventscaler-leader", "default", current)
    assert stale.value.status == 409
    assert status_of(stale.value)["details"] == {
        "name": "eventscaler-leader",
        "group": "coordination.k8s.io",
        "kind": "leases",
    }

    renewed = coordination.patch_namespaced_lease(
        "eventscaler-leader",
        "default",
        {"spec": {"renewTime": "2030-01-02T03:04:05.5+01:00"}},
        _content_type="application/merge-patch+json",
    )
    assert stored(api, "leases", "default", "eventscaler-leader")["spec"]["renewTime"] == (
        "2030-01-02T02:04:05.500000Z"
    )
    assert renewed.spec.renew_time.year == 2030
    with pytest.raises(ApiException) as invalid:
        coordination.patch_namespaced_lease(
            "eventscaler-leader",
            "default",
            {"spec": {"leaseDurationSeconds": 0}},
            _content_type="application/merge-patch+json",
        )
    assert invalid.value.status == 422
    coordination.delete_namespaced_lease("eventscaler-leader", "default")
    assert coordination.list_namespaced_lease("default").items == []


def test_events_in_both_groups_share_storage(api: KubeApiServer, kube: client.ApiClient) -> None:
    core, events = client.CoreV1Api(kube), client.EventsV1Api(kube)
    deployment = client.V1ObjectReference(
        api_version="apps/v1", kind="Deployment", name="web", namespace="default"
    )
    core.create_namespaced_event(
        "default",
        client.CoreV1Event(
            metadata=client.V1ObjectMeta(name="web.scaled-1"),
            involved_object=deployment,
            reason="Scaled",
            message="scaled to 3",
            type="Normal",
            action="Scale",
            event_time="2030-01-01T00:00:00Z",
            reporting_component="eventscaler",
            reporting_instance="eventscaler-0",
            count=1,
        ),
    )
    events.create_namespaced_event(
        "default",
        client.EventsV1Event(
            metadata=client.V1ObjectMeta(name="web.scaled-2"),
            regarding=deployment,
            reason="Scaled",
            note="scaled to 0",
            type="Normal",
            action="Scale",
            event_time="2030-01-01T00:00:00.123456Z",
            reporting_controller="eventscaler",
            reporting_instance="eventscaler-0",
        ),
    )

    as_new = {e.metadata.name: e for e in events.list_namespaced_event("default").items}
    assert as_new["web.scaled-1"].note == "scaled to 3"
    assert as_new["web.scaled-1"].regarding.name == "web"
    as_core = {e.metadata.name: e for e in core.list_namespaced_event("default").items}
    assert as_core["web.scaled-2"].message == "scaled to 0"
    assert as_core["web.scaled-2"].reporting_component == "eventscaler"

    patched = core.patch_namespaced_event(
        "web.scaled-1", "default", {"count": 2}, _content_type="application/merge-patch+json"
    )
    assert patched.count == 2
    assert events.read_namespaced_event("web.scaled-1", "default").deprecated_count == 2

    # events.k8s.io/v1 wants a DNS subdomain name and its required fields; core/v1 does not.
    core.create_namespaced_event(
        "default",
        client.CoreV1Event(
            metadata=client.V1ObjectMeta(name="Web.Scaled"),
            involved_object=deployment,
            reason="Scaled",
            message="ok",
        ),
    )
    # A legacy event (no eventTime) reads as `"eventTime": null` through events.k8s.io/v1, as on
    # a real cluster, which the v37 models reject: the daemon must not list events that way.
    _, legacy, _ = raw_request(
        api, "GET", "/apis/events.k8s.io/v1/namespaces/default/events/Web.Scaled"
    )
    assert legacy["eventTime"] is None and legacy["note"] == "ok"
    with pytest.raises(ApiException) as invalid:
        events.create_namespaced_event(
            "default",
            client.EventsV1Event(
                metadata=client.V1ObjectMeta(name="Web.Scaled2"),
                regarding=deployment,
                reason="Scaled",
                event_time="2030-01-01T00:00:00Z",
                type="Normal",
            ),
        )
    body = status_of(invalid.value)
    assert invalid.value.status == 422
    fields = {cause["field"] for cause in body["details"]["causes"]}
    assert {"metadata.name", "reportingController", "reportingInstance", "action"} <= fields


def test_configmaps_and_namespaces(api: KubeApiServer, kube: client.ApiClient) -> None:
    core = client.CoreV1Api(kube)
    config_map = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="rules"), data={"a": "1"})
    with pytest.raises(ApiException) as missing_ns:
        core.create_namespaced_config_map("team-a", config_map)
    assert missing_ns.value.status == 404
    assert status_of(missing_ns.value)["message"] == 'namespaces "team-a" not found'

    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="team-a")))
    namespace = core.read_namespace("team-a")
    assert namespace.status.phase == "Active"
    assert namespace.metadata.labels == {"kubernetes.io/metadata.name": "team-a"}
    core.create_namespaced_config_map("team-a", config_map)
    current = core.read_namespaced_config_map("rules", "team-a")
    current.data["b"] = "2"
    replaced = core.replace_namespaced_config_map("rules", "team-a", current)
    assert replaced.data == {"a": "1", "b": "2"}

    deleted = core.delete_namespace("team-a")  # answered with the Namespace, not a Status
    assert deleted["kind"] == "Namespace" and deleted["status"]["phase"] == "Terminating"
    assert api.get_object("configmaps", "team-a", "rules") is None
    with pytest.raises(ApiException) as system:
        core.delete_namespace("default")
    assert system.value.status == 403


# --- RBAC --------------------------------------------------------------------------------------

RBAC_MANIFEST = """\
apiVersion: v1
kind: ServiceAccount
metadata: {name: eventscaler}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: eventscaler-scale, namespace: default}
rules:
  - apiGroups: [apps]
    resources: [deployments]
    verbs: [get, list, watch]
  - apiGroups: [apps]
    resources: [deployments/scale]
    verbs: [get, patch]
  - apiGroups: [""]
    resources: [configmaps]
    resourceNames: [rules]
    verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: eventscaler-scale, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: eventscaler-scale}
subjects:
  - {kind: ServiceAccount, name: eventscaler, namespace: eventscaler}
"""
LEADER_MANIFEST = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: leader}
rules:
  - apiGroups: [coordination.k8s.io]
    resources: ["*"]
    verbs: ["*"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: leader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: leader}
subjects:
  - {kind: ServiceAccount, name: eventscaler}
"""


def test_rbac_allows_exactly_what_the_manifests_grant(tmp_path: Path) -> None:
    rbac_dir = tmp_path / "manifests"
    (rbac_dir / "leader").mkdir(parents=True)
    (rbac_dir / "rbac.yaml").write_text(RBAC_MANIFEST)
    (rbac_dir / "leader" / "lease.yml").write_text(LEADER_MANIFEST)
    (rbac_dir / "leader" / "kustomization.yaml").write_text("namespace: eventscaler\n")
    with KubeApiServer(rbac_dir=rbac_dir, controller_delay=None) as server:
        assert [(role, index) for role, index, _ in server.rbac_rules()] == [
            ("Role/eventscaler/leader", 0),
            ("Role/default/eventscaler-scale", 0),
            ("Role/default/eventscaler-scale", 1),
            ("Role/default/eventscaler-scale", 2),
        ]
        server.create_deployment("default", "web", replicas=1)
        token = server.add_service_account("eventscaler", "eventscaler")
        sa = make_client(server, tmp_path, token)
        apps, core = client.AppsV1Api(sa), client.CoreV1Api(sa)

        apps.list_namespaced_deployment("default")
        apps.read_namespaced_deployment_scale("web", "default")
        apps.patch_namespaced_deployment_scale(
            "web",
            "default",
            {"spec": {"replicas": 2}},
            _content_type="application/merge-patch+json",
        )
        with pytest.raises(ApiException) as denied:
            apps.patch_namespaced_deployment(
                "web",
                "default",
                {"spec": {"replicas": 3}},
                _content_type="application/merge-patch+json",
            )
        body = status_of(denied.value)
        assert denied.value.status == 403 and body["reason"] == "Forbidden"
        assert body["message"] == (
            f'deployments.apps "web" is forbidden: User "{SA_USER}" cannot patch resource '
            '"deployments" in API group "apps" in the namespace "default"'
        )
        assert body["details"] == {"name": "web", "group": "apps", "kind": "deployments"}
        with pytest.raises(ApiException) as scale_put:
            apps.replace_namespaced_deployment_scale(
                "web", "default", apps.read_namespaced_deployment_scale("web", "default")
            )
        assert 'cannot update resource "deployments/scale"' in status_of(scale_put.value)["message"]
        with pytest.raises(ApiException) as elsewhere:
            apps.list_namespaced_deployment("kube-system")
        assert status_of(elsewhere.value)["message"] == (
            f'deployments.apps is forbidden: User "{SA_USER}" cannot list resource "deployments" '
            'in API group "apps" in the namespace "kube-system"'
        )

        with pytest.raises(ApiException) as other_name:
            core.read_namespaced_config_map("secrets-ish", "default")
        assert other_name.value.status == 403  # resourceNames: only "rules"
        with pytest.raises(ApiException) as allowed_but_missing:
            core.read_namespaced_config_map("rules", "default")
        assert allowed_but_missing.value.status == 404  # authorised, then not found

        server.create_namespace("eventscaler")
        coordination = client.CoordinationV1Api(sa)
        coordination.create_namespaced_lease(
            "eventscaler", client.V1Lease(metadata=client.V1ObjectMeta(name="leader"))
        )
        client.VersionApi(sa).get_code()  # discovery and /version are open to everyone

        admin = client.AppsV1Api(make_client(server, tmp_path))
        admin.patch_namespaced_deployment(
            "web",
            "default",
            {"spec": {"replicas": 3}},
            _content_type="application/merge-patch+json",
        )
        assert server.used_rbac_rules() == {(role, index) for role, index, _ in server.rbac_rules()}
        scale_patch = next(r for r in server.writes() if r["subresource"] == "scale")
        assert scale_patch["rbac_rule"] == ("Role/default/eventscaler-scale", 1)
        assert scale_patch["user"] == SA_USER


# --- faults ------------------------------------------------------------------------------------


def test_fault_injection(api: KubeApiServer, kube: client.ApiClient) -> None:
    apps = client.AppsV1Api(kube)
    api.create_deployment("default", "web", replicas=1)

    api.inject_fault(r"/deployments$", method="GET", status=500, count=1)
    with pytest.raises(ApiException) as server_error:
        apps.list_namespaced_deployment("default")
    assert server_error.value.status == 500
    assert status_of(server_error.value)["reason"] == "InternalError"
    apps.list_namespaced_deployment("default")  # count=1: only the first request failed

    # PATCH is not retried by urllib3 (GETs are, honouring Retry-After, up to 3 times).
    api.inject_fault(r"/scale$", method="PATCH", status=429, retry_after=2)
    with pytest.raises(ApiException) as throttled:
        apps.patch_namespaced_deployment_scale(
            "web",
            "default",
            {"spec": {"replicas": 2}},
            _content_type="application/merge-patch+json",
        )
    assert throttled.value.status == 429
    assert throttled.value.headers["Retry-After"] == "2"
    assert status_of(throttled.value)["details"] == {"retryAfterSeconds": 2}
    api.clear_faults()

    fault = api.inject_fault(r"/deployments/web$", status=None, delay=0.3)
    started = time.monotonic()
    apps.read_namespaced_deployment("web", "default")
    assert time.monotonic() - started >= 0.3
    api.remove_fault(fault)

    api.inject_fault(r"/scale$", method="PATCH", drop=True, count=1)
    with pytest.raises(urllib3.exceptions.ProtocolError):
        apps.patch_namespaced_deployment_scale(
            "web",
            "default",
            {"spec": {"replicas": 2}},
            _content_type="application/merge-patch+json",
        )
    assert stored(api, "deployments", "default", "web")["spec"]["replicas"] == 1  # never reached
    dropped = [r for r in api.requests if r["fault"] is not None and r["status"] is None]
    assert len(dropped) == 1 and dropped[0]["method"] == "PATCH"

    api.inject_fault(r"/deployments/web$", method="GET", drop=True, count=1)
    api.clear_requests()
    apps.read_namespaced_deployment("web", "default")  # urllib3 retries the dropped GET
    assert [r["status"] for r in api.requests] == [None, 200]


# --- controller --------------------------------------------------------------------------------


def test_controller_settles_status_after_the_delay(tmp_path: Path) -> None:
    with KubeApiServer(controller_delay=0.1) as server:
        apps = client.AppsV1Api(make_client(server, tmp_path))
        server.create_deployment("default", "web", replicas=0)
        scale = apps.patch_namespaced_deployment_scale(
            "web",
            "default",
            {"spec": {"replicas": 2}},
            _content_type="application/merge-patch+json",
        )
        assert scale.status.replicas == 0  # right after the change, nothing runs yet
        deadline = time.monotonic() + 3
        while True:
            deployment = apps.read_namespaced_deployment("web", "default")
            if deployment.status.ready_replicas == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        status = deployment.status
        assert (
            status.replicas,
            status.ready_replicas,
            status.available_replicas,
            status.updated_replicas,
        ) == (2, 2, 2, 2)
        assert status.observed_generation == deployment.metadata.generation
        assert apps.read_namespaced_deployment_scale("web", "default").status.replicas == 2

        # The scale read before the controller wrote status is stale now, as on a cluster.
        scale.spec.replicas = 3
        with pytest.raises(ApiException) as stale:
            apps.replace_namespaced_deployment_scale("web", "default", scale)
        assert stale.value.status == 409


# --- request log, lifecycle, CLI ---------------------------------------------------------------


def test_request_log_records_each_request(api: KubeApiServer, kube: client.ApiClient) -> None:
    apps = client.AppsV1Api(kube)
    api.create_deployment("default", "web", replicas=1)
    apps.read_namespaced_deployment("web", "default")
    apps.patch_namespaced_deployment_scale(
        "web", "default", {"spec": {"replicas": 2}}, _content_type="application/merge-patch+json"
    )
    apps.list_deployment_for_all_namespaces(label_selector="app=web")
    read, patch, listed = api.requests
    assert read["verb"] == "get" and read["status"] == 200 and read["body"] is None
    assert patch == patch | {
        "method": "PATCH",
        "path": "/apis/apps/v1/namespaces/default/deployments/web/scale",
        "content_type": "application/merge-patch+json",
        "body": {"spec": {"replicas": 2}},
        "status": 200,
        "user": "kubernetes-admin",
        "verb": "patch",
        "resource": "deployments",
        "subresource": "scale",
        "namespace": "default",
        "name": "web",
        "api_group": "apps",
    }
    assert listed["verb"] == "list" and listed["query"] == {"labelSelector": "app=web"}
    assert listed["namespace"] is None
    assert api.writes() == [patch]
    api.clear_requests()
    assert api.requests == []


def test_stop_ends_watches_and_refuses_connections(tmp_path: Path) -> None:
    server = KubeApiServer(controller_delay=None).start()
    apps = client.AppsV1Api(make_client(server, tmp_path))
    finished = threading.Event()

    def watch_forever() -> None:
        try:
            for _ in watch.Watch().stream(
                apps.list_namespaced_deployment, "default", resource_version="1", timeout_seconds=60
            ):
                pass
        except Exception:  # the connection is cut: any client error is fine here
            pass
        finished.set()

    thread = threading.Thread(target=watch_forever, daemon=True)
    thread.start()
    deadline = time.monotonic() + 2
    while not any(r["verb"] == "watch" for r in server.requests) and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    server.stop()
    assert finished.wait(3), "the watch outlived the server"
    assert time.monotonic() - started < 3
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        apps.list_namespaced_deployment("default", _request_timeout=1)


def test_standalone_server_serves_until_sigterm(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    with subprocess.Popen(
        [sys.executable, "-m", "tests.support.kubeapi", "--kubeconfig", str(kubeconfig)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    ) as process:
        try:
            assert process.stdout is not None
            url = process.stdout.readline().strip()
            assert url.startswith("https://127.0.0.1:")
            core = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
            assert "default" in {ns.metadata.name for ns in core.list_namespace().items}
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=5)
            assert process.returncode == 0
            assert "Traceback" not in stderr
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
