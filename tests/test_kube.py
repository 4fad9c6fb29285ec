"""The Kubernetes adapter (eventscaler/kube.py) against the Kubernetes API test server.

Scenarios covered:
- one generic scale-target client: a Deployment and a StatefulSet are read with one GET of the
  object, a custom resource with two (the object for its annotations, its Scale for the replicas,
  at the CRD's specReplicasPath); every write is one merge patch of `/scale`; a Scale that omits
  `spec.replicas` (0) reads as 0
- discovery: one GET per (apiVersion, kind) for any number of reads and writes; a kind without a
  scale subresource fails with "kind Plain (example.com/v1) has no scale subresource" before any
  object request; a group version or kind that is not served says so; a failed discovery is not
  remembered (a CRD installed later is found), a 404 on the object path makes the next call look
  again (a CRD that went away); a transient discovery failure is retried
- error wording: a missing object is "StatefulSet default/x not found" with the real kind; 403
  and 401 keep the server's message and reason
- Events carry the target's real apiVersion and kind (and the server accepts them); Leases are
  created, read, renewed and a stale renewal is a 409 KubeError; /version answers readiness
- the bearer token of a kubeconfig exec plugin is refreshed when it expires, as the `kubernetes`
  package does it
- lean imports: the adapter loads none of the generated API classes or models
- the proxy variables are read once, at load (the proxy found stays in force), not on each request
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from eventscaler.config import ScaleTargetRef
from eventscaler.kube import (
    ClusterAccess,
    EventRecorder,
    KubeError,
    LeaseClient,
    LeaseRecord,
    ScaleTargetClient,
    build_api_client,
)
from tests.support.kubeapi import KubeApiServer

REPO_ROOT = Path(__file__).resolve().parents[1]
DEPLOYMENT = ScaleTargetRef("web")
STATEFULSET = ScaleTargetRef("db", "StatefulSet")
WORKER = ScaleTargetRef("w1", "Worker", "example.com/v1")
PLAIN = ScaleTargetRef("p1", "Plain", "example.com/v1")


@pytest.fixture
def server() -> Iterator[KubeApiServer]:
    with KubeApiServer(controller_delay=None) as api:
        api.create_deployment("default", "web", replicas=2)
        api.create_statefulset("default", "db", replicas=0)
        api.create_crd("example.com", "Worker")
        api.create_crd("example.com", "Plain", scale=False, status=False)
        api.create_custom_object("workers", "default", "w1", {"replicas": 0})
        api.create_custom_object("plains", "default", "p1", {"replicas": 1})
        yield api


@pytest.fixture
def api_client(server: KubeApiServer, tmp_path: Path) -> Iterator[Any]:
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    made = build_api_client(ClusterAccess(str(kubeconfig)))
    yield made
    made.close()


@pytest.fixture
def scaler(api_client: Any) -> ScaleTargetClient:
    return ScaleTargetClient(api_client, timeout_seconds=5)


def paths(server: KubeApiServer, method: str | None = None) -> list[str]:
    return [r["path"] for r in server.requests if method is None or r["method"] == method]


def annotate(server: KubeApiServer, path: str, annotations: dict[str, str]) -> None:
    from tests.test_kubeapi_server import raw_request

    patch = {"metadata": {"annotations": annotations}}
    code, body, _ = raw_request(server, "PATCH", path, patch, "application/merge-patch+json")
    assert code == 200, body


def test_deployments_and_statefulsets_are_read_with_one_get_of_the_object(
    server: KubeApiServer, scaler: ScaleTargetClient
) -> None:
    manifest = json.dumps({"kind": "StatefulSet", "spec": {"replicas": 0, "x": "y" * 4000}})
    annotate(server, "/apis/apps/v1/namespaces/default/statefulsets/db",
             {"autoscaling.keda.sh/paused": "true",
              "kubectl.kubernetes.io/last-applied-configuration": manifest})  # fmt: skip
    server.clear_requests()
    web = scaler.read("default", DEPLOYMENT)
    db = scaler.read("default", STATEFULSET)
    assert (web.replicas, db.replicas) == (2, 0)
    assert db.annotations == {"autoscaling.keda.sh/paused": "true"}  # only what a tick reads
    assert db.uid == server.get_statefulset("default", "db")["metadata"]["uid"]
    assert paths(server) == [
        "/apis/apps/v1",  # discovery, once per (apiVersion, kind)
        "/apis/apps/v1/namespaces/default/deployments/web",
        "/apis/apps/v1",
        "/apis/apps/v1/namespaces/default/statefulsets/db",
    ]
    server.clear_requests()
    for _ in range(3):
        scaler.read("default", STATEFULSET)
    assert paths(server) == ["/apis/apps/v1/namespaces/default/statefulsets/db"] * 3


def test_a_custom_resource_is_read_through_its_object_and_its_scale(
    server: KubeApiServer, scaler: ScaleTargetClient
) -> None:
    path = "/apis/example.com/v1/namespaces/default/workers/w1"
    annotate(server, path, {"eventscaler.io/paused-replicas": "4"})
    server.clear_requests()
    view = scaler.read("default", WORKER)
    assert (view.replicas, view.annotations) == (0, {"eventscaler.io/paused-replicas": "4"})
    assert paths(server) == ["/apis/example.com/v1", path, f"{path}/scale"]

    server.clear_requests()
    scaler.set_replicas("default", WORKER, 3)
    [write] = server.writes()
    assert (write["method"], write["path"]) == ("PATCH", f"{path}/scale")
    assert write["content_type"] == "application/merge-patch+json"
    assert write["body"] == {"spec": {"replicas": 3}}
    worker = server.get_object("workers", "default", "w1")
    assert worker["spec"]["replicas"] == 3 and worker["metadata"]["generation"] == 2
    assert scaler.read("default", WORKER).replicas == 3


def test_every_write_is_a_merge_patch_of_scale(
    server: KubeApiServer, scaler: ScaleTargetClient
) -> None:
    scaler.set_replicas("default", STATEFULSET, 4)
    scaler.set_replicas("default", DEPLOYMENT, 0)
    writes = [(w["method"], w["path"], w["subresource"]) for w in server.writes()]
    assert writes == [
        ("PATCH", "/apis/apps/v1/namespaces/default/statefulsets/db/scale", "scale"),
        ("PATCH", "/apis/apps/v1/namespaces/default/deployments/web/scale", "scale"),
    ]
    assert server.get_statefulset("default", "db")["spec"]["replicas"] == 4
    assert scaler.read("default", DEPLOYMENT).replicas == 0  # the Scale omits 0: still 0


def test_a_kind_without_scale_fails_clearly_before_any_object_request(
    server: KubeApiServer, scaler: ScaleTargetClient
) -> None:
    server.clear_requests()
    for call in (lambda: scaler.read("default", PLAIN),
                 lambda: scaler.set_replicas("default", PLAIN, 2)):  # fmt: skip
        with pytest.raises(KubeError) as failed:
            call()
        assert str(failed.value) == "kind Plain (example.com/v1) has no scale subresource"
        assert failed.value.reason == "NoScale"
    assert paths(server) == ["/apis/example.com/v1", "/apis/example.com/v1"]
    assert server.get_object("plains", "default", "p1")["spec"]["replicas"] == 1
    with pytest.raises(KubeError, match=r"^kind ConfigMap \(v1\) has no scale subresource$"):
        scaler.read("default", ScaleTargetRef("rules", "ConfigMap", "v1"))
    with pytest.raises(KubeError, match=r"^kind Namespace \(v1\) is cluster-scoped"):
        scaler.read("default", ScaleTargetRef("default", "Namespace", "v1"))


def test_kinds_and_group_versions_that_are_not_served(scaler: ScaleTargetClient) -> None:
    with pytest.raises(KubeError) as no_kind:
        scaler.read("default", ScaleTargetRef("x", "Rollout", "apps/v1"))
    assert str(no_kind.value) == "kind Rollout (apps/v1) is not served by this cluster"
    with pytest.raises(KubeError) as no_group:
        scaler.read("default", ScaleTargetRef("x", "Rollout", "argoproj.io/v1alpha1"))
    assert str(no_group.value) == (
        "kind Rollout (argoproj.io/v1alpha1): argoproj.io/v1alpha1 is not served by this "
        "cluster (is its CRD installed?)"
    )
    assert no_group.value.reason == "NotFound"


def test_a_missing_object_is_named_with_its_real_kind(scaler: ScaleTargetClient) -> None:
    for ref, text in (
        (ScaleTargetRef("gone", "StatefulSet"), "StatefulSet default/gone not found"),
        (ScaleTargetRef("gone"), "Deployment default/gone not found"),
        (ScaleTargetRef("gone", "Worker", "example.com/v1"), "Worker default/gone not found"),
    ):
        with pytest.raises(KubeError) as missing:
            scaler.read("default", ref)
        assert str(missing.value) == text
        assert (missing.value.reason, missing.value.status) == ("NotFound", 404)


def test_discovery_is_asked_again_until_it_answers_and_after_a_crd_goes(
    server: KubeApiServer, scaler: ScaleTargetClient
) -> None:
    rollout = ScaleTargetRef("r1", "Rollout", "argoproj.io/v1alpha1")
    with pytest.raises(KubeError, match="not served"):
        scaler.read("default", rollout)
    server.create_crd("argoproj.io", "Rollout", version="v1alpha1")  # installed later
    server.create_custom_object("rollouts", "default", "r1", {"replicas": 5})
    assert scaler.read("default", rollout).replicas == 5

    server.clear_requests()
    crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/rollouts.argoproj.io"
    from tests.test_kubeapi_server import raw_request

    assert raw_request(server, "DELETE", crds)[0] == 200
    with pytest.raises(KubeError, match="Rollout default/r1 not found"):
        scaler.read("default", rollout)
    with pytest.raises(KubeError, match="is its CRD installed"):
        scaler.read("default", rollout)  # discovery again, not the stale plural
    assert paths(server)[-1] == "/apis/argoproj.io/v1alpha1"


def test_a_transient_discovery_failure_is_retried(
    server: KubeApiServer, scaler: ScaleTargetClient
) -> None:
    server.inject_fault(r"^/apis/apps/v1$", status=503, count=1)
    assert scaler.read("default", DEPLOYMENT).replicas == 2
    assert paths(server).count("/apis/apps/v1") == 2


def test_forbidden_and_unauthorized_keep_the_servers_words(
    tmp_path: Path,
) -> None:
    rbac = tmp_path / "rbac"
    rbac.mkdir()
    (rbac / "rbac.yaml").write_text("kind: List\nitems: []\n")
    with KubeApiServer(rbac_dir=rbac, controller_delay=None) as api:
        api.create_deployment("default", "web")
        token = api.add_service_account("eventscaler", "eventscaler")
        for secret, reason, status in ((token, "Forbidden", 403), ("wrong", "Unauthorized", 401)):
            kubeconfig = api.write_kubeconfig(tmp_path / f"{reason}.kubeconfig", token=secret)
            made = build_api_client(ClusterAccess(str(kubeconfig)))
            with pytest.raises(KubeError) as failed:
                ScaleTargetClient(made).read("default", DEPLOYMENT)
            made.close()
            assert (failed.value.reason, failed.value.status) == (reason, status)
            if status == 403:
                assert str(failed.value).startswith(
                    'get Deployment default/web: 403 Forbidden: deployments.apps "web" is '
                    'forbidden: User "system:serviceaccount:eventscaler:eventscaler" cannot get'
                )


def test_events_carry_the_targets_real_kind(server: KubeApiServer, api_client: Any) -> None:
    recorder = EventRecorder(api_client, "replica-a")
    for ref in (STATEFULSET, WORKER):
        recorder.record("default", ref, "uid-1", "Normal", "SuccessfulRescale", "New size: 3")
    created = [w["body"] for w in server.writes() if w["resource"] == "events"]
    assert [(e["involvedObject"]["apiVersion"], e["involvedObject"]["kind"]) for e in created] == [
        ("apps/v1", "StatefulSet"), ("example.com/v1", "Worker")
    ]  # fmt: skip
    assert all(w["status"] == 201 for w in server.writes())
    assert {e["reportingInstance"] for e in created} == {"replica-a"}


def test_leases_are_created_renewed_and_a_stale_renewal_conflicts(
    server: KubeApiServer, api_client: Any
) -> None:
    server.create_namespace("eventscaler")
    lease = LeaseClient(api_client, "eventscaler", "eventscaler")
    assert lease.get() is None
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    lease.write(LeaseRecord("a", 15, 0), now, acquired=True)
    first = lease.get()
    assert first is not None and (first.holder, first.lease_duration_seconds) == ("a", 15)
    assert first.acquire_time == now and first.resource_version
    later = (datetime.now(UTC) + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    lease.write(first, later, acquired=False)
    renewed = lease.get()
    assert renewed is not None and renewed.acquire_time == now  # kept by the renewal
    with pytest.raises(KubeError) as stale:
        lease.write(first, later, acquired=False)  # the version read before the renewal
    assert stale.value.status == 409 and str(stale.value).startswith(
        "lease: write Lease eventscaler/eventscaler: 409 Conflict:"
    )
    ScaleTargetClient(api_client).check_reachable()
    assert paths(server)[-1] == "/version"


EXEC_PLUGIN = """
import json, sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
calls = Path(sys.argv[1])
count = int(calls.read_text()) if calls.exists() else 0
calls.write_text(str(count + 1))
# The package refreshes 5 minutes before expiry: the first token is good for ~2 s more.
first = count == 0
expiry = datetime.now(UTC) + (timedelta(minutes=5, seconds=2) if first else timedelta(hours=1))
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1beta1",
                  "kind": "ExecCredential",
                  "status": {"token": sys.argv[2 if first else 3],
                             "expirationTimestamp": expiry.strftime("%Y-%m-%dT%H:%M:%SZ")}}))
"""


def test_an_exec_plugin_token_is_refreshed_when_it_expires(
    server: KubeApiServer, tmp_path: Path
) -> None:
    first = server.add_service_account("eventscaler", "first")
    second = server.add_service_account("eventscaler", "second")
    plugin = tmp_path / "plugin.py"
    plugin.write_text(EXEC_PLUGIN)
    kubeconfig = server.kubeconfig()
    kubeconfig["users"][0]["user"] = {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1beta1", "command": sys.executable,
        "args": [str(plugin), str(tmp_path / "calls"), first, second],
        "interactiveMode": "Never",
    }}  # fmt: skip
    path = tmp_path / "exec.kubeconfig"
    path.write_text(json.dumps(kubeconfig))
    made = build_api_client(ClusterAccess(str(path)))  # runs the plugin: the first token
    client = ScaleTargetClient(made)
    server.clear_requests()
    second_user = "system:serviceaccount:eventscaler:second"
    deadline = time.monotonic() + 30  # the first token expires ~2 s after the load
    while not any(r["user"] == second_user for r in server.requests):
        assert time.monotonic() < deadline, "the token was never refreshed"
        client.check_reachable()
        time.sleep(0.1)
    client.check_reachable()
    made.close()
    users = [r["user"] for r in server.requests]
    assert users[-1] == second_user  # refreshed, and kept once refreshed
    assert set(users) <= {"system:serviceaccount:eventscaler:first", second_user}
    assert all(r["status"] == 200 for r in server.requests)  # never a 401 on the way
    assert int((tmp_path / "calls").read_text()) >= 2  # the plugin ran again


LEAN_IMPORTS = """
import sys
from eventscaler.config import ScaleTargetRef
from eventscaler.kube import (ClusterAccess, EventRecorder, LeaseClient, ScaleTargetClient,
                              build_api_client)
api = build_api_client(ClusterAccess(sys.argv[1]))
scaler = ScaleTargetClient(api)
scaler.read("default", ScaleTargetRef("web"))
scaler.set_replicas("default", ScaleTargetRef("web"), 3)
scaler.check_reachable()
EventRecorder(api, "x").record("default", ScaleTargetRef("web"), "u", "Normal", "R", "m")
LeaseClient(api, "default", "lock").get()
generated = sorted(m for m in sys.modules
                   if m.startswith(("kubernetes.client.api.", "kubernetes.client.models.")))
print(len(generated), generated[:5])
"""


def test_the_adapter_loads_no_generated_api_class_or_model(
    server: KubeApiServer, tmp_path: Path
) -> None:
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(LEAN_IMPORTS), str(kubeconfig)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0 []"
    assert server.get_deployment("default", "web")["spec"]["replicas"] == 3


def test_the_proxy_is_read_from_the_environment_once_not_per_request(
    server: KubeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kubernetes.client.configuration as configuration_module

    calls: list[int] = []
    real = configuration_module.getproxies

    def counting() -> dict[str, str]:
        calls.append(1)
        return dict(real())

    monkeypatch.setattr(configuration_module, "getproxies", counting)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # the test server itself is reached directly
    made = build_api_client(ClusterAccess(str(server.write_kubeconfig(tmp_path / "kc"))))
    try:
        assert made.configuration.proxy == "http://127.0.0.1:3128"  # as loaded, from the env
        loaded = len(calls)
        client = ScaleTargetClient(made, timeout_seconds=5)
        for _ in range(5):
            assert client.read("default", DEPLOYMENT).replicas == 2
        assert len(calls) == loaded  # none per request (the token hook sets `host` each time)
        assert made.configuration.proxy == "http://127.0.0.1:3128"
    finally:
        made.close()
