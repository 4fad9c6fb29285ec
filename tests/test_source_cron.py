"""The cron source: KEDA's window semantics on an injected clock, in real time zones.

Scenarios:
- metadata, table-driven: valid rows (KEDA's example, extra spaces, weekday names) load with
  target 1 and activation 0; invalid rows give the exact line (each required field missing,
  a misspelt key, an unknown time zone, a six-field or @daily or out-of-range expression,
  start equal to end, desiredReplicas 0, metricType Value)
- the window: start inclusive, end exclusive, weekdays only, Sunday as 0 and 7; a window that
  spans midnight (inside before and after midnight, outside at midday); the same instant is
  inside in one zone and outside in another; a daylight-saving change day; a whole day, minute
  by minute, against plain interval arithmetic
- the reader takes its clock from SourceOptions (the pool passes it), and the rule's decision
  asks desiredReplicas inside and 0 outside
- simulate: the fluid queue has no time of day, so a cron rule is refused with a clear error
  (exit 2), never simulated with a made-up time
- convert: KEDA's documented cron trigger converts and loads
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from eventscaler import config
from eventscaler.convert import convert_text, render_rules
from eventscaler.policy import Reading, decide, initial_state
from eventscaler.sources import cron
from eventscaler.sources.base import SourceError, SourceOptions
from eventscaler.sources.cron import CronSettings, CronSource, cron_trigger, window_value
from eventscaler.sources.pool import SourcePool
from tests.support.daemon_process import run_command
from tests.test_sources import load_one

BERLIN = ZoneInfo("Europe/Berlin")
BASE = {"type": "cron", "timezone": "Europe/Berlin", "start": "0 8 * * 1-5", "end": "0 17 * * 1-5",
        "desiredReplicas": 10}  # fmt: skip
PREFIX = "rules.yaml: rules[0] (r).triggers[0]"
CRON_WHAT = (
    "expected a five-field cron expression like '0 8 * * 1-5' (minute hour day month weekday)"
)


def at(text: str, zone: ZoneInfo = BERLIN) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=zone)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, CronSettings("Europe/Berlin", "0 8 * * 1-5", "0 17 * * 1-5", 10)),
        ({"start": "30 6 * * MON-FRI", "timezone": "UTC", "desiredReplicas": 3},
         CronSettings("UTC", "30 6 * * MON-FRI", "0 17 * * 1-5", 3)),
        ({"timezone": "Asia/Kolkata", "start": "0 22 * * *", "end": "0 6 * * *"},
         CronSettings("Asia/Kolkata", "0 22 * * *", "0 6 * * *", 10)),
    ],
)  # fmt: skip
def test_valid_metadata_loads(fields: dict[str, Any], expected: CronSettings) -> None:
    problems, rule = load_one({**BASE, **fields})
    assert problems == []
    (trigger,) = rule.triggers
    assert (trigger.settings, trigger.target, trigger.activation) == (expected, 1.0, 0.0)
    assert trigger.name.startswith("cron-")


def test_spaces_are_normalised() -> None:
    problems, rule = load_one({**BASE, "start": " 30  6 * *  MON-FRI "})
    assert problems == [] and rule.triggers[0].settings.start == "30 6 * * MON-FRI"


@pytest.mark.parametrize(
    ("fields", "line"),
    [
        ({"start": None}, ".start: is required"),
        ({"end": None}, ".end: is required"),
        ({"timezone": None}, ".timezone: is required"),
        ({"desiredReplicas": None}, ".desiredReplicas: is required"),
        ({"desiredReplica": 4}, ".desiredReplica: unknown field (did you mean 'desiredReplicas'?)"),
        ({"timezone": "Mars/Olympus"},
         ".timezone: expected an IANA time zone like 'Europe/Berlin' or 'UTC', got 'Mars/Olympus'"),
        ({"start": "0 0 8 * * *"}, f".start: {CRON_WHAT}, got '0 0 8 * * *'"),
        ({"start": "@daily"}, f".start: {CRON_WHAT}, got '@daily'"),
        ({"end": "61 8 * * *"}, f".end: {CRON_WHAT}, got '61 8 * * *'"),
        ({"end": "0 8 * * 1-5"}, ".end: is the same as start: the window would be empty"),
        ({"desiredReplicas": 0}, ".desiredReplicas: expected a whole number >= 1, got 0"),
        ({"metricType": "Value"}, ".metricType: a cron trigger's value is the replica count "
                                  "itself: only AverageValue applies"),
    ],
)  # fmt: skip
def test_invalid_metadata_names_the_field(fields: dict[str, Any], line: str) -> None:
    trigger = {k: v for k, v in {**BASE, **fields}.items() if v is not None}
    problems, rule = load_one(trigger)
    assert rule is None
    assert len(problems) == 1 and problems[0].startswith(PREFIX + line), problems


WEEKDAYS = CronSettings("Europe/Berlin", "0 8 * * 1-5", "0 17 * * 1-5", 10)
OVERNIGHT = CronSettings("Europe/Berlin", "0 22 * * *", "0 6 * * *", 4)


@pytest.mark.parametrize(
    ("settings", "when", "expected"),
    [
        (WEEKDAYS, "2026-03-02T07:59:59", 0),  # a Monday, just before the start
        (WEEKDAYS, "2026-03-02T08:00:00", 10),  # the start minute is inside
        (WEEKDAYS, "2026-03-02T16:59:59", 10),
        (WEEKDAYS, "2026-03-02T17:00:00", 0),  # the end minute is outside
        (WEEKDAYS, "2026-03-07T10:00:00", 0),  # a Saturday
        (OVERNIGHT, "2026-03-02T21:59:00", 0),
        (OVERNIGHT, "2026-03-02T22:00:00", 4),
        (OVERNIGHT, "2026-03-02T23:30:00", 4),  # before midnight
        (OVERNIGHT, "2026-03-03T00:00:00", 4),
        (OVERNIGHT, "2026-03-03T05:59:59", 4),  # after midnight
        (OVERNIGHT, "2026-03-03T06:00:00", 0),
        (OVERNIGHT, "2026-03-03T12:00:00", 0),
        (CronSettings("UTC", "0 9 * * 0", "0 10 * * 7", 2), "2026-03-01T09:30:00", 2),  # Sunday
    ],
)
def test_the_window(settings: CronSettings, when: str, expected: float) -> None:
    assert window_value(settings, at(when, ZoneInfo(settings.timezone))) == expected


def test_the_time_zone_decides() -> None:
    instant = datetime(2026, 3, 2, 7, 30, tzinfo=UTC)  # 08:30 in Berlin, 02:30 in New York
    assert window_value(WEEKDAYS, instant) == 10
    new_york = CronSettings("America/New_York", "0 8 * * 1-5", "0 17 * * 1-5", 10)
    assert window_value(new_york, instant) == 0


def test_a_daylight_saving_day() -> None:
    # Berlin goes from 02:00 CET to 03:00 CEST on 2026-03-29 (a Sunday): 08:00 is 06:00 UTC.
    daily = CronSettings("Europe/Berlin", "0 8 * * *", "0 17 * * *", 3)
    assert window_value(daily, datetime(2026, 3, 29, 5, 59, tzinfo=UTC)) == 0
    assert window_value(daily, datetime(2026, 3, 29, 6, 0, tzinfo=UTC)) == 3
    assert window_value(daily, datetime(2026, 3, 29, 14, 59, tzinfo=UTC)) == 3
    assert window_value(daily, datetime(2026, 3, 29, 15, 0, tzinfo=UTC)) == 0


@pytest.mark.parametrize(("start", "end"), [(9 * 60 + 15, 17 * 60 + 45), (22 * 60, 5 * 60 + 30)])
def test_a_whole_day_minute_by_minute(start: int, end: int) -> None:
    settings = CronSettings(
        "Europe/Berlin", f"{start % 60} {start // 60} * * *", f"{end % 60} {end // 60} * * *", 7
    )
    midnight = at("2026-06-10T00:00:00")
    for minute in range(24 * 60):
        inside = start <= minute < end if start < end else minute >= start or minute < end
        got = window_value(settings, midnight + timedelta(minutes=minute, seconds=30))
        assert got == (7 if inside else 0), f"minute {minute}"


def test_the_reader_takes_the_clock_from_the_options() -> None:
    now = [at("2026-03-02T09:00:00").timestamp()]
    pool = SourcePool(SourceOptions(clock=lambda: now[0]))
    trigger = cron_trigger("0 8 * * 1-5", "0 17 * * 1-5", 10, "Europe/Berlin")
    assert pool.read_value(trigger) == 10
    now[0] = at("2026-03-02T18:00:00").timestamp()
    assert pool.read_value(trigger) == 0
    pool.close()
    assert isinstance(CronSource().read(trigger), float)  # the wall clock by default


def test_the_rule_asks_desired_replicas_inside_and_nothing_outside() -> None:
    text = {"rules": [{"name": "peak", "deployment": "web", "minReplicas": 0, "maxReplicas": 50,
                       "cooldownPeriod": 0, "triggers": [BASE]}]}  # fmt: skip
    (rule,) = config.parse_rules_text(yaml.safe_dump(text), "rules.yaml").rules
    source = CronSource(lambda: at("2026-03-02T09:00:00").timestamp())
    value = source.read(rule.triggers[0])
    state = initial_state(0.0)
    decision = decide(rule, [Reading(rule.triggers[0].label, value)], 0, state, 1.0)
    assert decision.target == 10
    outside = CronSource(lambda: at("2026-03-02T20:00:00").timestamp()).read(rule.triggers[0])
    later = decide(rule, [Reading(rule.triggers[0].label, outside)], 10, decision.state, 400.0)
    assert later.target == 0


def test_simulate_refuses_a_cron_rule_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as error:
        cron.SOURCE_TYPE.simulated_value(WEEKDAYS, 10, 0)
    assert "simulate replays seconds from 0 without a date or time of day" in str(error.value)
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"rules": [{"name": "peak", "deployment": "web",
                                                "triggers": [BASE]}]}))  # fmt: skip
    result = run_command(["simulate", "--config", str(rules), "--scenario", "flood"])
    assert result.returncode == 2, result.stderr
    assert "rule peak: cron 0 8 * * 1-5 to 0 17 * * 1-5 (Europe/Berlin): simulate replays" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


KEDA_CRON = """
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: cron-scaledobject, namespace: default}
spec:
  scaleTargetRef: {name: my-deployment}
  triggers:
  - type: cron
    metadata:
      timezone: Asia/Kolkata
      start: 0 6 * * *
      end: 0 20 * * *
      desiredReplicas: "10"
"""


def test_convert_maps_keda_s_example() -> None:
    conversion = convert_text(KEDA_CRON, "so.yaml")
    (trigger,) = conversion.rules[0]["triggers"]
    assert trigger == {"type": "cron", "timezone": "Asia/Kolkata", "start": "0 6 * * *",
                       "end": "0 20 * * *", "desiredReplicas": 10}  # fmt: skip
    loaded = config.parse_rules_text(render_rules(conversion, "so.yaml"), "converted.yaml")
    assert loaded.problems == ()
