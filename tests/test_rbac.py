"""The shipped RBAC is sufficient and minimal, in both shapes, with the real daemon process.

The test server enforces exactly the Roles and ClusterRoles of manifests/ (403 otherwise) and
records which rule granted each request. Scenarios, for the cluster-wide shape and for the
namespaced one (manifests/namespaced):
- a daemon with leader election scales a Deployment and a StatefulSet and renews its Lease with
  no 403: sufficient;
- every verb and every resource of every shipped rule granted at least one of its requests:
  minimal; discovery (which kinds scale) is answered without any of our rules, as the built-in
  system:discovery role does on a real cluster;
- a custom resource: the two rules docs/cluster.md says to add are sufficient and minimal too;
- namespaced shape: a rule for another namespace gets 403 for that rule alone, and with the
  allow-list the daemon refuses such a rule at load, naming it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_rules
from tests.support.azurite import Azurite
from tests.support.cluster import custom_resource_rbac_rules, wait_for, write_rbac_shape
from tests.support.daemon_process import DaemonProcess
from tests.support.kubeapi import KubeApiServer
from tests.test_e2e import rule

pytestmark = pytest.mark.e2e

LEASE_NAMESPACE = "eventscaler"  # the autoscaler's own namespace in manifests/


@pytest.fixture(params=["cluster", "namespaced"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KubeApiServer]:
    with KubeApiServer(rbac_dir=write_rbac_shape(tmp_path / "rbac", request.param)) as kube:
        kube.create_namespace(LEASE_NAMESPACE)
        yield kube


def run_daemon(server: KubeApiServer, azurite: Azurite, rules: Path, *extra: str) -> DaemonProcess:
    token = server.add_service_account("eventscaler", "eventscaler")
    kubeconfig = server.write_kubeconfig(rules.parent / "daemon.kubeconfig", token=token)
    return DaemonProcess(
        ["run", "--config", str(rules), "--kubeconfig", str(kubeconfig), "--reload-interval",
         "0.3", "--health-port", "-1", "--leader-elect", "--lease-namespace", LEASE_NAMESPACE,
         "--lease-duration", "1.5", *extra],
        env={"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string},
    )  # fmt: skip


def test_shipped_rbac_is_sufficient_and_every_rule_is_needed(
    server: KubeApiServer, azurite: Azurite, unique: str, tmp_path: Path
) -> None:
    azurite.create_queue(unique)
    azurite.send_messages(unique, 10)
    server.create_deployment("default", unique, replicas=0)
    server.create_statefulset("default", f"{unique}-db", replicas=0)
    statefulset = rule(f"{unique}-db", "default", unique)
    statefulset["scaleTargetRef"] = {"kind": "StatefulSet", "name": statefulset.pop("deployment")}
    rules = write_rules(tmp_path / "rules.yaml", [rule(unique, "default", unique), statefulset])
    with run_daemon(server, azurite, rules) as proc:
        wait_for(lambda: server.get_deployment("default", unique)["spec"]["replicas"] == 2, 10)
        wait_for(
            lambda: server.get_statefulset("default", f"{unique}-db")["spec"]["replicas"] == 2, 10
        )
        wait_for(lease_writes(server), 10, what="a lease renewal")
        assert proc.stop() == 0
    assert_sufficient_and_minimal(server)


def test_the_documented_custom_resource_rules_are_sufficient_and_minimal(
    tmp_path: Path, azurite: Azurite, unique: str
) -> None:
    for shape in ("cluster", "namespaced"):
        extra = custom_resource_rbac_rules("example.com", "workers")
        rbac = write_rbac_shape(tmp_path / shape / "rbac", shape, extra)
        with KubeApiServer(rbac_dir=rbac) as server:
            server.create_namespace(LEASE_NAMESPACE)
            server.create_crd("example.com", "Worker")
            server.create_custom_object("workers", "default", unique, {"replicas": 0})
            azurite.create_queue(f"{unique}-{shape}")
            azurite.send_messages(f"{unique}-{shape}", 10)
            custom = rule(unique, "default", f"{unique}-{shape}")
            custom["scaleTargetRef"] = {"apiVersion": "example.com/v1", "kind": "Worker",
                                        "name": custom.pop("deployment")}  # fmt: skip
            rules = write_rules(tmp_path / shape / "rules.yaml", [custom])
            with run_daemon(server, azurite, rules) as proc:
                wait_for(lambda s=server: replicas(s, unique) == 2, 10, what=f"{shape}: 2")
                wait_for(lease_writes(server), 10, what="a lease renewal")
                assert proc.stop() == 0
            used = assert_sufficient_and_minimal(server, skip_unused=True)
            documented = {(role, i) for role, i, r in server.rbac_rules()
                          if r["apiGroups"] == ["example.com"]}  # fmt: skip
            assert len(documented) == 2 and documented <= used


def replicas(server: KubeApiServer, name: str) -> int:
    worker = server.get_object("workers", "default", name) or {}
    return int((worker.get("spec") or {}).get("replicas") or 0)


def lease_writes(server: KubeApiServer) -> Callable[[], list[dict[str, Any]]]:
    return lambda: [
        r for r in server.requests if r["resource"] == "leases" and r["verb"] == "update"
    ]


def assert_sufficient_and_minimal(
    server: KubeApiServer, skip_unused: bool = False
) -> set[tuple[str, int]]:
    """No 403; every rule's verbs and resources each granted a request (`skip_unused`: rules
    that granted nothing are not checked: another test proves those). Returns the rules used."""
    daemon_requests = [r for r in server.requests if r["user"] and "eventscaler" in r["user"]]
    assert daemon_requests
    forbidden = [(r["verb"], r["path"]) for r in daemon_requests if r["status"] == 403]
    assert forbidden == []  # sufficient
    discovery = [r for r in daemon_requests if r["path"].startswith(("/api/", "/apis/"))
                 and r["resource"] is None]  # fmt: skip
    assert discovery and all(r["status"] == 200 and r["rbac_rule"] is None for r in discovery)

    used: dict[tuple[str, int], set[tuple[str, str]]] = defaultdict(set)
    for request in daemon_requests:
        if request["rbac_rule"] is not None:
            sub = request["subresource"]
            resource = f"{request['resource']}/{sub}" if sub else request["resource"]
            used[tuple(request["rbac_rule"])].add((request["verb"], resource))
    for role, index, granted in server.rbac_rules():
        if skip_unused and (role, index) not in used:
            continue
        verbs = {verb for verb, _ in used[(role, index)]}
        resources = {resource for _, resource in used[(role, index)]}
        assert verbs == set(granted["verbs"]), (
            f"{role} rule {index} grants {granted['verbs']} but the daemon used "
            f"{sorted(verbs)}: the rule is broader than needed"
        )
        assert resources == set(granted["resources"]), (
            f"{role} rule {index} grants {granted['resources']} but the daemon used "
            f"{sorted(resources)}: the rule is broader than needed"
        )
    return set(used)


def test_namespaced_shape_forbids_other_namespaces(
    server: KubeApiServer, azurite: Azurite, unique: str, tmp_path: Path
) -> None:
    if not any(role.startswith("Role/default/") for role, _, _ in server.rbac_rules()):
        pytest.skip("only the namespaced shape limits namespaces")
    server.create_namespace("other")
    for namespace in ("default", "other"):
        server.create_deployment(namespace, unique, replicas=0)
    azurite.create_queue(unique)
    azurite.send_messages(unique, 10)
    inside, outside = (
        rule(f"{unique}-in", "default", unique),
        rule(f"{unique}-out", "other", unique),
    )
    inside["deployment"] = outside["deployment"] = unique
    rules = write_rules(tmp_path / "rules.yaml", [inside, outside])

    with run_daemon(server, azurite, rules) as proc:
        wait_for(lambda: server.get_deployment("default", unique)["spec"]["replicas"] == 2, 10)
        proc.wait_for_output(
            rf"other/{unique}: rule {unique}-out: cannot read the target Deployment: .*403"
        )  # noqa: E501
        assert proc.stop() == 0
    assert server.get_deployment("other", unique)["spec"]["replicas"] == 0

    with run_daemon(server, azurite, rules, "--namespaces", "default") as proc:
        proc.wait_for_output(
            rf"rules\[1\] \({unique}-out\)\.namespace: namespace 'other' is not in this "
            r"autoscaler's allow-list \(default\)"
        )
        assert proc.stop() == 0
