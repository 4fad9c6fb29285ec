"""End-to-end: what running in a cluster needs, with the real daemon process.

Scenarios:
- /healthz and /readyz answer 200 on a working daemon;
- /readyz answers 503 while no rule file could be loaded, and 200 once a valid one appears;
- SIGUSR1 dumps every thread's stack and the daemon lives on; SIGTERM then stops it, logged;
- /readyz answers 503 while the API server fails (test server only: injected 500s);
- /healthz answers 503 when the scheduler has been idle past its limit (HealthServer on its own);
- leader election with two daemons on one Lease: one leader, only it scales; the follower takes
  over after the leader is killed, within the lease duration; SIGTERM releases the Lease.
"""

from __future__ import annotations

import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from eventscaler.daemon import Health
from eventscaler.health import ApiCheck, HealthServer
from tests.conftest import write_rules
from tests.support.azurite import Azurite
from tests.support.cluster import Cluster, wait_for
from tests.support.daemon_process import DaemonProcess
from tests.test_e2e import POLL, rule

LEASE_DURATION = 3.0


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def start_daemon(cluster: Cluster, azurite: Azurite, rules: Path, *extra: str) -> DaemonProcess:
    return DaemonProcess(
        ["run", "--config", str(rules), "--kubeconfig", str(cluster.daemon_kubeconfig),
         "--reload-interval", "0.3", "--health-port", "0", *extra],
        env={"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string},
    )  # fmt: skip


def health_port(proc: DaemonProcess) -> int:
    return int(proc.wait_for_output(r"health endpoints on port (\d+)")[1])


@pytest.mark.e2e
def test_health_and_readiness_of_a_working_daemon(
    cluster: Cluster, azurite: Azurite, unique: str, tmp_path: Path
) -> None:
    azurite.create_queue(unique)
    cluster.create_deployment(unique)
    rules = write_rules(tmp_path / "rules.yaml", [rule(unique, cluster.namespace, unique)])
    with start_daemon(cluster, azurite, rules) as proc:
        port = health_port(proc)
        assert get(port, "/healthz") == (200, "ok\n")
        # Ready once the first load is done (it imports the rules' source modules).
        wait_for(lambda: get(port, "/readyz") == (200, "ok\n"), 30, what="ready")
        assert get(port, "/nope")[0] == 404
        assert proc.stop() == 0


@pytest.mark.e2e
def test_not_ready_until_a_valid_rule_file_loads(
    cluster: Cluster, azurite: Azurite, unique: str, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules: [oops")
    with start_daemon(cluster, azurite, rules) as proc:
        port = health_port(proc)
        status, text = get(port, "/readyz")
        assert status == 503 and "no rules loaded" in text and "not valid YAML" in text
        assert get(port, "/healthz")[0] == 200  # alive: a restart would not fix the file
        azurite.create_queue(unique)
        cluster.create_deployment(unique)
        write_rules(rules, [rule(unique, cluster.namespace, unique)])
        wait_for(lambda: get(port, "/readyz")[0] == 200, 10, what="ready after a valid file")
        assert proc.stop() == 0


@pytest.mark.e2e
def test_sigusr1_dumps_every_thread_and_sigterm_still_stops(
    cluster: Cluster, azurite: Azurite, unique: str, tmp_path: Path
) -> None:
    azurite.create_queue(unique)
    cluster.create_deployment(unique)
    rules = write_rules(tmp_path / "rules.yaml", [rule(unique, cluster.namespace, unique)])
    with start_daemon(cluster, azurite, rules) as proc:
        proc.wait_for_output(r"loaded: 1 rule\(s\) in force")  # running
        assert proc.process is not None
        proc.process.send_signal(signal.SIGUSR1)
        # A stack per thread, and the daemon lives on. faulthandler marks the thread the signal
        # interrupted "Current thread", and only when that thread held the GIL.
        proc.wait_for_output(r"(Current thread|Thread) 0x[0-9a-f]+ \(most recent call first\)")
        proc.wait_for_output(r'File "[^"]*/eventscaler/')
        assert proc.stop() == 0
    assert "received SIGTERM: finishing the runs in progress" in proc.output
    assert proc.output.rstrip().endswith("stopped")


@pytest.mark.e2e
def test_not_ready_while_the_api_server_fails(
    cluster_and_server: tuple[Cluster, Any], azurite: Azurite, unique: str, tmp_path: Path
) -> None:
    cluster, server = cluster_and_server
    if server is None:
        pytest.skip("injecting API failures needs the test server")
    azurite.create_queue(unique)
    cluster.create_deployment(unique)
    rules = write_rules(tmp_path / "rules.yaml", [rule(unique, cluster.namespace, unique)])
    fault = server.inject_fault(r"^/version", status=500)
    try:
        with start_daemon(cluster, azurite, rules) as proc:
            port = health_port(proc)
            # Not ready before the first load either; once loaded, the API check is the reason.
            wait_for(lambda: "Kubernetes API unreachable" in get(port, "/readyz")[1], 30,
                     what="the API check as the reason")  # fmt: skip
            assert get(port, "/readyz")[0] == 503
            assert proc.stop() == 0
    finally:
        server.clear_faults()
    assert fault is not None


def test_liveness_fails_when_the_scheduler_is_idle_too_long() -> None:
    health = Health(last_heartbeat=time.monotonic(), stale_after=60, rules_loaded=True)
    server = HealthServer("127.0.0.1", 0, health, ApiCheck(lambda: None)).start()
    try:
        assert get(server.port, "/healthz") == (200, "ok\n")
        health.last_heartbeat -= 61
        status, text = get(server.port, "/healthz")
        assert status == 503 and "scheduler idle for 61s" in text
    finally:
        server.stop()


def lease_holder(cluster: Cluster, namespace: str) -> str | None:
    api = client.CoordinationV1Api(cluster.apps.api_client)
    try:
        return api.read_namespaced_lease("eventscaler", namespace).spec.holder_identity
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


@pytest.mark.e2e
def test_leader_election_one_writer_and_failover(
    cluster_and_server: tuple[Cluster, Any], azurite: Azurite, unique: str, tmp_path: Path
) -> None:
    cluster, server = cluster_and_server
    # The shipped Role allows leases in the autoscaler's own namespace only.
    lease_ns = "eventscaler" if server is not None else cluster.namespace
    try:
        cluster.core.create_namespace({"metadata": {"name": lease_ns}})
    except ApiException as exc:
        if exc.status != 409:
            raise
    azurite.create_queue(unique)
    cluster.create_deployment(unique)
    rules = write_rules(tmp_path / "rules.yaml", [rule(unique, cluster.namespace, unique)])
    args = ["--leader-elect", "--lease-namespace", lease_ns,
            "--lease-duration", str(LEASE_DURATION)]  # fmt: skip
    first = start_daemon(cluster, azurite, rules, *args, "--identity", f"{unique}-a")
    second = start_daemon(cluster, azurite, rules, *args, "--identity", f"{unique}-b")
    with first, second:
        leader_id = wait_for(lambda: lease_holder(cluster, lease_ns), 10, what="a lease holder")
        leader, follower = (first, second) if leader_id.endswith("-a") else (second, first)
        azurite.send_messages(unique, 15)
        wait_for(lambda: cluster.replicas(unique) == 3, 10, what="the leader scaling to 3")
        time.sleep(4 * POLL)
        assert leader.scale_lines() and not follower.scale_lines()  # never two writers
        assert get(health_port(follower), "/readyz")[0] == 200  # the follower stays ready

        leader.process.kill()  # no release: the follower must wait the lease out
        killed = time.monotonic()
        new_id = wait_for(
            lambda: (h := lease_holder(cluster, lease_ns)) != leader_id and h,
            LEASE_DURATION * 3,
            what=f"failover; follower said:\n{follower.output[-3000:]}",
        )
        assert time.monotonic() - killed <= LEASE_DURATION * 2.5, follower.output
        assert new_id != leader_id
        azurite.send_messages(unique, 20)  # 35 messages: ceil(35 / 5) = 7
        wait_for(lambda: cluster.replicas(unique) == 7, 10, what="the new leader scaling")
        # Its log line follows the write's answer: wait for it rather than race it.
        wait_for(follower.scale_lines, 10, what="the new leader's scale line")

        assert follower.stop() == 0
        assert "released lease" in follower.output
        assert lease_holder(cluster, lease_ns) == ""
