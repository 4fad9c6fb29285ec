"""End to end: the real daemon, the Service Bus administration endpoint, the API test server.

The endpoint is the stand-in of tests/support/servicebus_server.py (HTTPS on 127.0.0.1, trusted
through REQUESTS_CA_BUNDLE) or, when E2E_SERVICEBUS_CONNECTION_STRING holds a connection string
(a policy with Manage, Send and Listen), a real namespace: the tests then create their own queues
(named e2e-...), set the counts by sending and receiving messages, and delete the queues at the end.

- the queue's active messages go 0 -> 42 (messageCount 5): the Deployment goes 0 -> 9 in one
  write (ceil(42 / 5)); back to 0 (dead-lettered messages left behind, which do not count) -> to
  0 replicas once it stayed 0 for the cooldown;
- the endpoint stopped mid-run (the stand-in only: a real namespace cannot be stopped): the rule
  holds its replicas, reports the error naming the queue and the env var, and follows the count
  again once the endpoint is back;
- a wrong key: a per-rule Unauthorized error naming the rule and the env var, while a second rule
  with the right key goes on scaling (that neither key shows anywhere: tests/test_secrets.py);
- `validate` names a misspelt field.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_rules
from tests.support.cluster import Cluster, wait_for
from tests.support.daemon_process import run_command
from tests.support.servicebus_server import RealNamespace, ServiceBusStandIn
from tests.support.source_e2e import (
    COOLDOWN,
    health,
    rule_for,
    source_daemon,
    status_row,
    wait_failing_past_the_cooldown,
)

pytestmark = pytest.mark.e2e

REAL_NAMESPACE_ENV = "E2E_SERVICEBUS_CONNECTION_STRING"
WRONG_KEY = "d3Jvbmcta2V5LWZvci10aGUtZTJlLXRlc3QtMDEyMzQ1Njc4OQ=="

Bus = ServiceBusStandIn | RealNamespace


@pytest.fixture(scope="module")
def bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bus]:
    real = os.environ.get(REAL_NAMESPACE_ENV)
    if real:
        namespace = RealNamespace(real)
        try:
            yield namespace
        finally:
            namespace.close()
        return
    with ServiceBusStandIn(tmp_path_factory.mktemp("servicebus")) as standin:
        yield standin


def daemon_env(bus: Bus, **connections: str) -> dict[str, str]:
    trust = {"REQUESTS_CA_BUNDLE": str(bus.ca_path)} if bus.ca_path is not None else {}
    return {**trust, **connections}


def trigger(queue: str, env: str = "SB_CONNECTION", **fields: Any) -> dict[str, Any]:
    return {"type": "azure-servicebus", "queueName": queue, "messageCount": 5,
            "connectionFromEnv": env, **fields}  # fmt: skip


def test_count_up_scales_in_one_poll_then_back_to_zero_after_the_cooldown(
    cluster: Cluster, bus: Bus, unique: str, tmp_path: Path
) -> None:
    bus.set_queue(unique, active=0)
    cluster.create_deployment(unique, replicas=0)
    rules = write_rules(
        tmp_path / "rules.yaml", [rule_for(unique, cluster.namespace, trigger(unique))]
    )
    target = f"{cluster.namespace}/{unique}"
    env = daemon_env(bus, SB_CONNECTION=bus.connection_string())
    with source_daemon(cluster, rules, env) as proc:
        proc.wait_for_output(rf"{target}: rule {unique}: 0 -> 0", timeout=30)
        bus.set_queue(unique, active=42)
        wait_for(lambda: cluster.replicas(unique) == 9, 30, what="0 -> 9")
        proc.assert_scale_lines([(target, 0, 9)])
        bus.set_queue(unique, active=0, dead_letter=12)  # dead-lettered: not counted
        lowered = time.monotonic()
        wait_for(lambda: cluster.replicas(unique) == 0, COOLDOWN + 30, what="9 -> 0")
        assert time.monotonic() - lowered >= COOLDOWN - 0.5
        proc.assert_scale_lines([(target, 0, 9), (target, 9, 0)])
        assert proc.stop() == 0


def test_endpoint_stopped_holds_the_replicas_reports_and_recovers(
    cluster: Cluster, bus: Bus, unique: str, tmp_path: Path
) -> None:
    if not isinstance(bus, ServiceBusStandIn):
        pytest.skip("a real namespace cannot be stopped")
    bus.set_queue(unique, active=18)
    cluster.create_deployment(unique, replicas=0)
    rules = write_rules(
        tmp_path / "rules.yaml", [rule_for(unique, cluster.namespace, trigger(unique))]
    )
    error = (
        rf"rule {unique}: .*azure-servicebus queue '{unique}' \(connection string from env "
        rf"SB_CONNECTION\): Unavailable: cannot reach 127\.0\.0\.1:{bus.port}"
    )
    with source_daemon(
        cluster, rules, daemon_env(bus, SB_CONNECTION=bus.connection_string())
    ) as proc:
        wait_for(lambda: cluster.replicas(unique) == 4, 20, what="0 -> 4")
        bus.stop()
        try:
            wait_failing_past_the_cooldown(proc, error)
            assert cluster.replicas(unique) == 4
        finally:
            bus.start()
        bus.set_queue(unique, active=31)
        wait_for(lambda: cluster.replicas(unique) == 7, 20, what="4 -> 7 once it is back")
        assert proc.stop() == 0


def test_a_wrong_key_is_a_clear_per_rule_error(
    cluster: Cluster, bus: Bus, unique: str, tmp_path: Path
) -> None:
    bad, good = f"{unique}-bad", f"{unique}-good"
    bus.set_queue(unique, active=12)
    for name in (bad, good):
        cluster.create_deployment(name, replicas=1)
    rules = write_rules(
        tmp_path / "rules.yaml",
        [rule_for(bad, cluster.namespace, trigger(unique, env="SB_WRONG")),
         rule_for(good, cluster.namespace, trigger(unique))],
    )  # fmt: skip
    right = bus.connection_string()
    wrong = bus.connection_string(key=WRONG_KEY)
    with source_daemon(
        cluster, rules, daemon_env(bus, SB_CONNECTION=right, SB_WRONG=wrong)
    ) as proc:
        proc.wait_for_output(
            rf"rule {bad}: .*azure-servicebus queue '{unique}' \(connection string from env "
            r"SB_WRONG\): AuthenticationFailed: .* refused the credentials \(HTTP 401: ",
            timeout=30,
        )
        wait_for(lambda: cluster.replicas(good) == 3, 30, what="the other rule scales: 1 -> 3")
        metrics, status = health(proc)
        assert proc.stop() == 0
    assert cluster.replicas(bad) == 1
    assert "AuthenticationFailed" in status_row(status, bad)["error"]
    assert 'kind="Unauthorized"' in metrics


def test_validate_names_a_misspelt_field(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n"
        "  - name: orders\n"
        "    deployment: order-processor\n"
        "    triggers:\n"
        "      - type: azure-servicebus\n"
        "        topicName: orders\n"
        "        subscriptionName: processor\n"
        "        messageCont: 20\n"
    )
    result = run_command(["validate", str(rules)])
    assert result.returncode == 2
    assert (
        f"{rules}: rules[0] (orders).triggers[0].messageCont: unknown field "
        "(did you mean 'messageCount'?)" in result.stderr
    )
