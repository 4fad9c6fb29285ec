"""End to end: the real daemon process on the real clock, a cron window, the API test server.

- a window that holds now (in Asia/Kolkata, UTC+05:30, so the zone matters to the minute):
  the Deployment goes 0 -> desiredReplicas in one write; when the window ends at the next
  minute boundary the rule goes back to 0 once the cooldown has passed, not before;
- a window elsewhere in the day leaves a Deployment at 0 and takes one that runs down to 0
  after the cooldown;
- `validate` names a misspelt field.
A cron trigger reads no server and no credential: the outage and credential cases of the other
sources have no counterpart here (the window arithmetic is unit-tested on an injected clock).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import write_rules
from tests.support.cluster import Cluster, wait_for
from tests.support.daemon_process import run_command
from tests.support.source_e2e import COOLDOWN, POLL, rule_for, source_daemon

pytestmark = pytest.mark.e2e

ZONE = "Asia/Kolkata"
MARGIN = timedelta(seconds=12)  # the daemon must start and scale before the window ends


def minute_expression(when: datetime) -> str:
    return f"{when.minute} {when.hour} * * *"


def test_inside_the_window_scales_up_in_one_poll_and_down_after_it_ends(
    cluster: Cluster, unique: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC).astimezone(ZoneInfo(ZONE))
    start = now.replace(second=0, microsecond=0)
    end = start + timedelta(minutes=1)
    if end - now < MARGIN:
        end += timedelta(minutes=1)
    trigger = {"type": "cron", "timezone": ZONE, "start": minute_expression(start),
               "end": minute_expression(end), "desiredReplicas": 6}  # fmt: skip
    cluster.create_deployment(unique, replicas=0)
    rules = write_rules(tmp_path / "rules.yaml", [rule_for(unique, cluster.namespace, trigger)])
    target = f"{cluster.namespace}/{unique}"
    with source_daemon(cluster, rules, {}) as proc:
        wait_for(lambda: cluster.replicas(unique) == 6, 10, what="0 -> 6 inside the window")
        proc.assert_scale_lines([(target, 0, 6)])
        seconds_left = (end - datetime.now(UTC)).total_seconds()
        wait_for(lambda: cluster.replicas(unique) == 0, seconds_left + COOLDOWN + 10,
                 what="6 -> 0 after the window")  # fmt: skip
        assert datetime.now(UTC) >= end + timedelta(seconds=COOLDOWN - POLL)
        proc.assert_scale_lines([(target, 0, 6), (target, 6, 0)])
        assert proc.stop() == 0


def test_outside_the_window_nothing_is_asked(cluster: Cluster, unique: str, tmp_path: Path) -> None:
    later = datetime.now(UTC).astimezone(ZoneInfo(ZONE)) + timedelta(hours=6)
    start, end = minute_expression(later), minute_expression(later + timedelta(hours=1))
    trigger = {"type": "cron", "timezone": ZONE, "start": start, "end": end, "desiredReplicas": 6}
    idle, running = f"{unique}-idle", f"{unique}-run"
    cluster.create_deployment(idle, replicas=0)
    cluster.create_deployment(running, replicas=3)
    rules = write_rules(
        tmp_path / "rules.yaml",
        [rule_for(idle, cluster.namespace, trigger), rule_for(running, cluster.namespace, trigger)],
    )
    with source_daemon(cluster, rules, {}) as proc:
        started = time.monotonic()
        proc.wait_for_output(rf"{cluster.namespace}/{idle}: rule {idle}: 0 -> 0")
        wait_for(lambda: cluster.replicas(running) == 0, COOLDOWN + 10, what="3 -> 0")
        assert time.monotonic() - started >= COOLDOWN - POLL
        assert cluster.replicas(idle) == 0
        proc.assert_scale_lines([(f"{cluster.namespace}/{running}", 3, 0)])
        assert proc.stop() == 0


def test_validate_names_a_misspelt_field(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n"
        "  - name: peak\n"
        "    deployment: web\n"
        "    triggers:\n"
        "      - type: cron\n"
        "        timezone: Europe/Berlin\n"
        "        start: 0 8 * * 1-5\n"
        "        end: 0 17 * * 1-5\n"
        "        desiredReplica: 10\n"
    )
    result = run_command(["validate", str(rules)])
    assert result.returncode == 2
    assert (
        f"{rules}: rules[0] (peak).triggers[0].desiredReplica: unknown field "
        "(did you mean 'desiredReplicas'?)" in result.stderr
    )
