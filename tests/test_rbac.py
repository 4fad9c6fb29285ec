"""The shipped RBAC is sufficient and minimal, in both shapes, with the real daemon process.

The test server enforces exactly the Roles and ClusterRoles of manifests/ (403 otherwise) and
records which rule granted each request. Scenarios, for the cluster-wide shape and for the
namespaced one (manifests/namespaced):
- a daemon with leader election scales a Deployment and renews its Lease with no 403: sufficient;
- every verb of every shipped rule granted at least one of its requests: minimal;
- namespaced shape: a rule for another namespace gets 403 for that rule alone, and with the
  allow-list the daemon refuses such a rule at load, naming it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import write_rules
from tests.support.azurite import Azurite
from tests.support.cluster import wait_for, write_rbac_shape
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
    rules = write_rules(tmp_path / "rules.yaml", [rule(unique, "default", unique)])
    with run_daemon(server, azurite, rules) as proc:
        wait_for(lambda: server.get_deployment("default", unique)["spec"]["replicas"] == 2, 10)
        lease_writes = lambda: [  # noqa: E731
            r for r in server.requests if r["resource"] == "leases" and r["verb"] == "update"
        ]
        wait_for(lease_writes, 10, what="a lease renewal")
        assert proc.stop() == 0

    daemon_requests = [r for r in server.requests if r["user"] and "eventscaler" in r["user"]]
    assert daemon_requests
    forbidden = [(r["verb"], r["path"]) for r in daemon_requests if r["status"] == 403]
    assert forbidden == []  # sufficient

    used: dict[tuple[str, int], set[str]] = defaultdict(set)
    for request in daemon_requests:
        if request["rbac_rule"] is not None:
            used[tuple(request["rbac_rule"])].add(request["verb"])
    for role, index, granted in server.rbac_rules():
        assert used[(role, index)] == set(granted["verbs"]), (
            f"{role} rule {index} grants {granted['verbs']} but the daemon used "
            f"{sorted(used[(role, index)])}: the rule is broader than needed"
        )


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
