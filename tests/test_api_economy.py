"""End-to-end: what the real daemon asks of the API server, by counts from the test server's
request log and the daemon's own DEBUG decision lines (never by timings). Scenarios:
- quiet ticks read the target once every K = floor(--target-resync / pollingInterval) ticks and
  write nothing;
- a write reads the target right before it: one GET between the messages landing and the scale
  PATCH, though the view in hand was many ticks old;
- a pause annotation added by hand, unseen by the view in hand, stops the write it would have let
  through;
- a pause added by hand is noticed within K ticks with no write to prompt it, and a count set by
  hand (kubectl scale) is noticed and corrected within K ticks;
- events off the write path: with an events API that takes 20 s to answer and one worker, two
  rules both scale before any event is answered, and SIGTERM exits within the flush bound,
  counting and logging the events still queued.
Against a real cluster (E2E_KUBECONFIG) these are skipped: they need the test server's log.
"""

from __future__ import annotations

import math
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_rules
from tests.support.azurite import Azurite
from tests.support.cluster import Cluster, wait_for
from tests.support.daemon_process import DaemonProcess
from tests.support.kubeapi import KubeApiServer
from tests.test_e2e import POLL, daemon, rule

pytestmark = pytest.mark.e2e

DAEMON_USER = "system:serviceaccount:eventscaler:eventscaler"
# A decision line: `2026-01-02 03:04:05,678 DEBUG   eventscaler.engine: ns/name: rule name: ...`.
DECISION = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ +eventscaler\.engine: \S+: rule (\S+): "
    r"\d+ -> \d+ \[([\w-]+)\]",
    re.MULTILINE,
)


@pytest.fixture
def server(cluster_and_server: tuple[Cluster, Any]) -> KubeApiServer:
    found = cluster_and_server[1]
    if found is None:
        pytest.skip("needs the test server's request log (not a real cluster)")
    assert isinstance(found, KubeApiServer)
    return found


def decisions(proc: DaemonProcess, name: str) -> list[tuple[float, str]]:
    """(time, step) of each tick of rule `name`, from the daemon's own log timestamps."""
    return [
        (datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp(), m[3])
        for m in DECISION.finditer(proc.output)
        if m[2] == name
    ]


def daemon_calls(server: KubeApiServer, name: str) -> list[dict[str, Any]]:
    """The daemon's requests on Deployment `name` (its scale included), oldest first."""
    return [
        r
        for r in server.requests
        if r["user"] == DAEMON_USER and r["resource"] == "deployments" and r["name"] == name
    ]


def reads(calls: list[dict[str, Any]], after: float = 0.0) -> int:
    return sum(1 for r in calls if r["verb"] == "get" and r["time"] > after)


def scale_writes(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in calls if r["verb"] == "patch" and r["subresource"] == "scale"]


def event_about(request: dict[str, Any]) -> str | None:
    """The object an Event create request is about, or None for any other request."""
    if request["resource"] != "events" or request["verb"] != "create":
        return None
    return str(((request["body"] or {}).get("involvedObject") or {}).get("name"))


def wait_for_ticks(proc: DaemonProcess, name: str, count: int, after: float = 0.0) -> None:
    wait_for(
        lambda: len([t for t, _ in decisions(proc, name) if t > after]) >= count,
        count * POLL + 10,
        what=f"{count} ticks of {name}",
    )


def test_quiet_ticks_read_every_k_ticks_and_a_write_reads_right_before_it(
    cluster: Cluster, server: KubeApiServer, azurite: Azurite, unique: str, tmp_path: Path
) -> None:
    # A 60 s resync at 0.5 s ticks: K = 120, so no tick of this test reads on the count alone.
    azurite.create_queue(unique)
    cluster.create_deployment(unique, replicas=0)
    rules = write_rules(tmp_path / "rules.yaml", [rule(unique, cluster.namespace, unique)])
    with daemon(cluster, azurite, rules, "--target-resync", "60") as proc:
        wait_for_ticks(proc, unique, 12)
        calls = daemon_calls(server, unique)
        assert reads(calls) == 1  # 12 quiet ticks: the first one read, ceil(12 / 120) = 1
        assert scale_writes(calls) == []

        landed = time.time()
        azurite.send_messages(unique, 10)
        wait_for(lambda: cluster.replicas(unique) == 2, 10, what="0 -> 2")
        calls = daemon_calls(server, unique)
        [write] = scale_writes(calls)
        assert reads(calls, after=landed) == 1  # the read right before the write
        before = [r for r in calls if r["time"] <= write["time"]]
        assert before[-2]["verb"] == "get" and before[-2]["time"] > landed

        # A pause the view in hand does not show: the write it would let through reads it first.
        cluster.annotate(unique, "eventscaler.io/paused", "true")
        azurite.send_messages(unique, 40)  # 50 messages would ask for 10
        proc.wait_for_output(rf"rule {unique}: 2 -> 2 \[paused\]")
        wait_for_ticks(proc, unique, 4, after=time.time())
        assert cluster.replicas(unique) == 2
        assert len(scale_writes(daemon_calls(server, unique))) == 1
        assert proc.stop() == 0


def test_a_pause_and_a_count_set_by_hand_are_noticed_within_k_ticks(
    cluster: Cluster, server: KubeApiServer, azurite: Azurite, unique: str, tmp_path: Path
) -> None:
    # 2.2 s at 0.5 s ticks: K = 4 (the 0.2 s spare lets a late tick not read early).
    k = 4
    azurite.create_queue(unique)
    azurite.send_messages(unique, 10)  # asks for 2
    cluster.create_deployment(unique, replicas=0)
    rules = write_rules(tmp_path / "rules.yaml", [rule(unique, cluster.namespace, unique)])
    with daemon(cluster, azurite, rules, "--target-resync", "2.2") as proc:
        wait_for(lambda: cluster.replicas(unique) == 2, 10, what="0 -> 2")
        start = time.time()
        wait_for_ticks(proc, unique, 6 * k, after=start)
        calls, ticks = daemon_calls(server, unique), decisions(proc, unique)
        quiet = len([t for t, _ in ticks if t > start])
        assert reads(calls, after=start) <= math.ceil(quiet / k) + 1  # was one per tick
        assert len(scale_writes(calls)) == 1

        cluster.set_replicas(unique, 0)  # kubectl scale --replicas=0
        changed = time.time()
        wait_for(lambda: cluster.replicas(unique) == 2, 10, what="the count set by hand corrected")
        writes = scale_writes(daemon_calls(server, unique))
        assert len(writes) == 2
        ticks_until = [t for t, _ in decisions(proc, unique) if changed < t <= writes[1]["time"]]
        assert len(ticks_until) <= k + 1  # the tick under way may have read before the change

        cluster.annotate(unique, "eventscaler.io/paused", "true")
        paused = time.time()
        proc.wait_for_output(rf"rule {unique}: 2 -> 2 \[paused\]")
        after = [step for t, step in decisions(proc, unique) if t > paused]
        assert after.index("paused") <= k  # at most K ticks on the view from before the pause
        assert len(scale_writes(daemon_calls(server, unique))) == 2
        assert proc.stop() == 0


def test_a_slow_events_api_never_delays_a_write_and_shutdown_is_bounded(
    cluster: Cluster, server: KubeApiServer, azurite: Azurite, unique: str, tmp_path: Path
) -> None:
    first, second = f"{unique}-a", f"{unique}-b"
    for name in (first, second):
        azurite.create_queue(name)
        azurite.send_messages(name, 10)
        cluster.create_deployment(name, replicas=0)
    rules = write_rules(
        tmp_path / "rules.yaml",
        [rule(first, cluster.namespace, first), rule(second, cluster.namespace, second)],
    )
    # Every event takes 20 s to answer; with one worker, an event sent on the tick's thread would
    # hold the second rule's write until the first rule's event was answered.
    fault = server.inject_fault(rf"/namespaces/{cluster.namespace}/events$", "POST", None, delay=20)
    try:
        with daemon(cluster, azurite, rules, "--workers", "1", "--api-timeout", "30") as proc:
            for name in (first, second):
                wait_for(lambda n=name: cluster.replicas(n) == 2, 10, what=f"{name} at 2")
            answered = [r for r in server.requests if event_about(r) in (first, second)]
            assert answered == []  # both writes went out while no event had been answered
            assert proc.stop(timeout=15) == 0  # the flush bound (5 s), not the events' 20 s
        assert re.search(r"\d event\(s\) dropped at shutdown: not sent within 5s", proc.output)
    finally:
        server.remove_fault(fault)
