"""A schedule as a trigger: `desiredReplicas` inside a window of two cron expressions.

KEDA's cron semantics: from the current time in the trigger's time zone, take the next time
`start` fires and the next time `end` fires. When `end` comes first (or both at once), the
current time is inside the window; otherwise outside. So the window starts at `start`
(inclusive) and stops at `end` (exclusive), and a window that spans midnight (start `0 22 * * *`,
end `0 6 * * *`) needs nothing special.

Inside, the value is `desiredReplicas` and the target 1 (the rule asks for desiredReplicas);
outside, the value is 0 and the trigger is inactive. (KEDA reports 1 outside, marked inactive:
the replicas are the same, since an inactive rule at minReplicas 0 goes to 0 after the cooldown
and an active one never asks fewer than 1; only a scalingModifiers formula sees the difference.)

Expressions are standard five-field cron (minute hour day-of-month month day-of-week, Sunday 0
or 7), read by croniter; time zones are IANA names from zoneinfo (the `tzdata` package supplies
the database where the system has none). The reader's clock is injected (SourceOptions.clock).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from eventscaler.fields import ConfigError, parse_int, show
from eventscaler.sources import base
from eventscaler.sources.base import KedaTrigger, SourceOptions, SourceType, required
from eventscaler.triggers import AVERAGE_VALUE, Trigger

CRON_FIELDS = 5


@dataclass(frozen=True)
class CronSettings:
    """One `type: cron` trigger's own fields (KEDA's names, in snake_case)."""

    timezone: str
    start: str
    end: str
    desired_replicas: int

    @property
    def label(self) -> str:
        return f"{self.start} to {self.end} ({self.timezone})"


def _parse_timezone(value: Any, field: str) -> str:
    what = "an IANA time zone like 'Europe/Berlin' or 'UTC'"
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(field, f"expected {what}, got {show(value)}")
    try:
        ZoneInfo(value.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(field, f"expected {what}, got {show(value)}") from None
    return value.strip()


def _parse_cron(value: Any, field: str) -> str:
    what = "a five-field cron expression like '0 8 * * 1-5' (minute hour day month weekday)"
    text = " ".join(value.split()) if isinstance(value, str) else ""
    if len(text.split(" ")) != CRON_FIELDS or text.startswith("@") or not croniter.is_valid(text):
        raise ConfigError(field, f"expected {what}, got {show(value)}")
    return text


class Cron(SourceType):
    """`type: cron`: desiredReplicas inside the window, 0 (inactive) outside it."""

    type = "cron"
    settings = CronSettings
    fields = (
        required("timezone", _parse_timezone),
        required("start", _parse_cron),
        required("end", _parse_cron),
        required("desiredReplicas", lambda v, f: parse_int(v, f, 1)),
    )

    def check(self, values: dict[str, Any], data: Mapping[str, Any], field: str) -> dict[str, Any]:
        if values["start"] == values["end"]:
            raise ConfigError(f"{field}.end", "is the same as start: the window would be empty")
        if data.get("metricType", AVERAGE_VALUE).lower() != AVERAGE_VALUE.lower():
            raise ConfigError(
                f"{field}.metricType",
                "a cron trigger's value is the replica count itself: only AverageValue applies",
            )
        return values

    def default_name(self, settings: CronSettings) -> str:
        words = re.sub(r"[^A-Za-z0-9.-]+", "-", settings.start.replace("*", "x")).strip("-")
        return f"cron-{words}"

    def describe(self, settings: CronSettings) -> str:
        return f"cron {settings.label}"

    def details(self, settings: CronSettings) -> tuple[str, ...]:
        return (f"{settings.desired_replicas} replicas inside",)

    def open(self, options: SourceOptions) -> CronSource:
        return CronSource(options.clock)

    def simulated_value(self, settings: CronSettings, backlog: int, in_flight: int) -> float:
        raise base.SourceError(
            base.BAD_RESPONSE,
            f"cron {settings.label}: simulate replays seconds from 0 without a date or time of "
            "day, so a cron window cannot be placed in it",
        )

    def from_keda(self, keda: KedaTrigger) -> dict[str, Any] | None:
        out = super().from_keda(keda) or {}
        if "desiredReplicas" in out:
            number = keda.number(out["desiredReplicas"])
            if isinstance(number, int) and number >= 1:
                out["desiredReplicas"] = number
            else:
                keda.lost(
                    "metadata.desiredReplicas",
                    f"expected a whole number >= 1, got {out.pop('desiredReplicas')!r}",
                )
        missing = [k for k in ("timezone", "start", "end", "desiredReplicas") if k not in out]
        for key in missing:
            keda.lost(f"metadata.{key}", "missing: trigger not converted")
        return None if missing else out


SOURCE_TYPE = Cron()


def window_value(settings: CronSettings, now: datetime) -> float:
    """desiredReplicas when `now` is inside the window, else 0 (KEDA's next-start/next-end test)."""
    local = now.astimezone(ZoneInfo(settings.timezone))
    next_start = croniter(settings.start, local).get_next(datetime)
    next_end = croniter(settings.end, local).get_next(datetime)
    return float(settings.desired_replicas) if next_end <= next_start else 0.0


def cron_trigger(
    start: str, end: str, desired_replicas: int, timezone: str = "UTC", name: str = ""
) -> Trigger:
    """A trigger built in code (tests), as the rule file would build it."""
    settings = CronSettings(timezone, start, end, desired_replicas)
    return Trigger(Cron.type, name or SOURCE_TYPE.default_name(settings), settings, 1.0, 0.0)


class CronSource:
    """Reads the window's value off a clock (the wall clock, or the one a test injects)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock

    def read(self, trigger: Trigger) -> float:
        return window_value(trigger.settings, datetime.fromtimestamp(self._clock(), UTC))

    def close(self) -> None:
        """Nothing to close: no connection."""
