"""End-to-end: operating the autoscaler day to day, with the real daemon process.

Against Azurite and the Kubernetes API (test server, or E2E_KUBECONFIG). Scenarios:
- metrics after a flood: queue length, desired/current replicas, a successful scale-up counted,
  last successful poll, rules loaded; no secret in any label;
- events: SuccessfulRescale on the Deployment with from -> to size and reason; failing queue reads
  give one FailedGetTriggerValue event, not one per tick;
- pause with our annotation: nothing changes while paused, removing it resumes once the daemon
  reads the target again (within --target-resync; 1 s here);
- paused-replicas sets the count and holds it; KEDA's annotations work the same way;
- fallback: a rule whose queue fails scales to fallback.replicas from 0, and back to normal on
  the first good reading;
- status: the table from the running daemon (/status), and the dry-run evaluation when no daemon
  answers;
- the connection string's key appears in no log, event or metric.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.conftest import write_rules
from tests.support.azurite import Azurite
from tests.support.cluster import Cluster, wait_for
from tests.support.daemon_process import DaemonProcess, run_command
from tests.test_cluster_features import get, health_port, start_daemon
from tests.test_e2e import POLL, SEEN_SOON, rule

pytestmark = pytest.mark.e2e


def start(cluster: Cluster, azurite: Azurite, rules: Path, *extra: str) -> DaemonProcess:
    """The daemon with its health port, at DEBUG so every decision's step is in the log."""
    return start_daemon(cluster, azurite, rules, "--log-level", "DEBUG", *extra)


def http_get(proc: DaemonProcess, path: str) -> str:
    status, body = get(health_port(proc), path)
    assert status == 200, body
    return body


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample `name{labels...}` in a Prometheus exposition, or None."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_and_events_after_a_flood(
    cluster: Cluster, azurite: Azurite, unique: str, tmp_path: Path
) -> None:
    azurite.create_queue(unique)
    cluster.create_deployment(unique)
    rules = write_rules(tmp_path / "rules.yaml", [rule(unique, cluster.namespace, unique)])
    with start(cluster, azurite, rules) as proc:
        azurite.send_messages(unique, 100)
        wait_for(lambda: cluster.replicas(unique) == 20, 10, what="0 -> 20")
        labels = {"rule": unique, "namespace": cluster.namespace, "target_kind": "Deployment",
                  "target": unique}  # fmt: skip

        def after_three_ticks_at_20() -> str | None:
            text = http_get(proc, "/metrics")
            ticks = metric(text, "eventscaler_tick_duration_seconds_count") or 0
            at_20 = metric(text, "eventscaler_current_replicas", **labels) == 20
            return text if at_20 and ticks >= 3 else None

        text = wait_for(after_three_ticks_at_20, 10, what="3 ticks, the last at 20 replicas")
        assert metric(text, "eventscaler_queue_length_messages", **labels, trigger=unique) == 100
        assert metric(text, "eventscaler_desired_replicas", **labels) == 20
        assert metric(text, "eventscaler_current_replicas", **labels) == 20
        assert metric(text, "eventscaler_scale_operations_total", **labels, direction="up",
                      outcome="success") == 1  # fmt: skip
        assert metric(text, "eventscaler_rules_loaded") == 1
        last_poll = metric(text, "eventscaler_last_successful_poll_timestamp_seconds", **labels)
        assert last_poll is not None and abs(last_poll - time.time()) < 10
        assert metric(text, "eventscaler_tick_duration_seconds_count") >= 3
        assert azurite.account_key not in text and "AccountKey" not in text
        assert proc.stop() == 0

    events = [e for e in cluster.events(unique) if e.reason == "SuccessfulRescale"]
    assert len(events) == 1
    assert events[0].type == "Normal"
    assert events[0].message.startswith("New size: 20; reason: [scale-from-zero]")
    assert f"{unique}=" in events[0].message  # the reading behind it


def test_failing_queue_gives_one_warning_event_and_metrics_by_kind(
    cluster: Cluster, azurite: Azurite, unique: str, tmp_path: Path
) -> None:
    cluster.create_deployment(unique, replicas=2)
    rules = write_rules(tmp_path / "rules.yaml", [rule(unique, cluster.namespace, unique)])
    with start(cluster, azurite, rules) as proc:  # the queue does not exist
        proc.wait_for_output(r"failing for 4 ticks")
        # The counter moves just after the tick's line is logged: wait for it.
        wait_for(
            lambda: metric(http_get(proc, "/metrics"), "eventscaler_source_errors_total",
                           rule=unique, kind="NotFound") >= 4,
            10, what="4 NotFound errors counted",
        )  # fmt: skip
        assert proc.stop() == 0
    warnings = [e for e in cluster.events(unique) if e.reason == "FailedGetTriggerValue"]
    assert len(warnings) == 1 and warnings[0].type == "Warning"
    assert "QueueNotFound" in warnings[0].message
    assert azurite.account_key not in warnings[0].message
    assert cluster.replicas(unique) == 2  # a failed read scaled nothing


@pytest.mark.parametrize(
    ("paused", "paused_replicas"),
    [
        ("eventscaler.io/paused", "eventscaler.io/paused-replicas"),
        ("autoscaling.keda.sh/paused", "autoscaling.keda.sh/paused-replicas"),
    ],
)
def test_pause_paused_replicas_and_resume(
    cluster: Cluster,
    azurite: Azurite,
    unique: str,
    tmp_path: Path,
    paused: str,
    paused_replicas: str,
) -> None:
    azurite.create_queue(unique)
    cluster.create_deployment(unique)
    cluster.annotate(unique, paused, "true")
    rules = write_rules(tmp_path / "rules.yaml", [rule(unique, cluster.namespace, unique)])
    with start(cluster, azurite, rules, *SEEN_SOON) as proc:
        azurite.send_messages(unique, 30)  # would ask for 6
        proc.wait_for_output(rf"rule {unique}: 0 -> 0 \[paused\]: paused by {re.escape(paused)}")
        time.sleep(4 * POLL)
        assert cluster.replicas(unique) == 0  # left alone

        cluster.annotate(unique, paused_replicas, "3")
        wait_for(lambda: cluster.replicas(unique) == 3, 10, what="paused-replicas 3")
        time.sleep(4 * POLL)
        assert cluster.replicas(unique) == 3  # held, although the queue asks for 6

        cluster.annotate(unique, paused_replicas, None)
        cluster.annotate(unique, paused, None)
        wait_for(lambda: cluster.replicas(unique) == 6, 10, what="resumed at the next tick")
        assert proc.stop() == 0
    assert "[paused]" in proc.output


def test_fallback_lifts_from_zero_and_recovers(
    cluster: Cluster, azurite: Azurite, unique: str, tmp_path: Path
) -> None:
    cluster.create_deployment(unique, replicas=0)
    fallback = {"failureThreshold": 3, "replicas": 4}
    rules = write_rules(
        tmp_path / "rules.yaml", [rule(unique, cluster.namespace, unique, fallback=fallback)]
    )
    with start(cluster, azurite, rules) as proc:  # the queue does not exist yet: reads fail
        wait_for(lambda: cluster.replicas(unique) == 4, 10, what="fallback from 0 to 4")
        # The target shows the write a moment before the daemon's line and gauge about it.
        proc.wait_for_output(r"\[fallback\]")
        assert "3 failed tick(s) >= failureThreshold 3" in proc.output
        wait_for(
            lambda: metric(http_get(proc, "/metrics"), "eventscaler_rule_fallback_active",
                           rule=unique) == 1,
            10, what="fallback_active 1",
        )  # fmt: skip

        azurite.create_queue(unique)
        azurite.send_messages(unique, 10)  # the first good reading asks for 2
        wait_for(lambda: "[scale-down]" in proc.output or "[stabilization]" in proc.output, 10)
        # The gauge is set just after the decision's line is logged: wait for it too.
        wait_for(
            lambda: metric(http_get(proc, "/metrics"), "eventscaler_rule_fallback_active",
                           rule=unique) == 0,
            10, what="fallback_active back to 0",
        )  # fmt: skip
        assert proc.stop() == 0
    assert [e for e in cluster.events(unique) if e.reason == "FallbackActive"]


def test_status_from_the_daemon_and_from_a_dry_run(
    cluster: Cluster, azurite: Azurite, unique: str, tmp_path: Path
) -> None:
    azurite.create_queue(unique)
    cluster.create_deployment(unique)
    rules = write_rules(tmp_path / "rules.yaml", [rule(unique, cluster.namespace, unique)])
    common = ["--config", str(rules), "--kubeconfig", str(cluster.daemon_kubeconfig)]
    env = {"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string}
    with start(cluster, azurite, rules) as proc:
        azurite.send_messages(unique, 35)
        wait_for(lambda: cluster.replicas(unique) == 7, 10, what="0 -> 7")
        port = proc.wait_for_output(r"health endpoints on port (\d+)")[1]
        shown = run_command(["status", *common, "--url", f"http://127.0.0.1:{port}"], env)
        assert proc.stop() == 0
    assert shown.returncode == 0, shown.stderr
    header, line = shown.stdout.splitlines()[:2]
    assert header.split()[:5] == ["RULE", "KIND", "TARGET", "CURRENT", "DESIRED"]
    assert line.split()[:7] == [unique, "Deployment", f"{cluster.namespace}/{unique}", "7", "7",
                                f"{unique}=35", "yes"]  # fmt: skip
    assert "0->7" in line and "from the daemon at" in shown.stdout
    # The reason, in full, under the table: the write's, or, when a later tick came first (a busy
    # machine), that tick's.
    reasons = shown.stdout.split("Reasons:", 1)[1]
    assert f"{unique}: " in reasons
    assert "backlog needs 7" in reasons or "at target" in reasons, reasons

    # No daemon on that port: one dry-run evaluation, and still no write.
    generation = cluster.generation(unique)
    offline = run_command(["status", *common, "--url", "http://127.0.0.1:9"], env)
    assert offline.returncode == 0, offline.stderr
    assert "evaluated once now in dry-run" in offline.stdout
    assert f"{unique}=35" in offline.stdout
    assert cluster.generation(unique) == generation
