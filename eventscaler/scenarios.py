"""Loads to simulate: the built-in scenarios and CSV trace files.

A load is a list of arrivals, `(time, messages)`: `messages` join the queue at `time` (seconds
from the start of the simulation). It is arrivals, not an observed queue length, on purpose: the
queue length depends on how many workers run, which is exactly what the simulation decides.

Trace file format (CSV, UTF-8):

    # comment lines start with '#'; blank lines are ignored
    time,messages
    0,0
    1,1000
    90.5,12

- `time`: seconds from the start, a number >= 0 (fractions allowed); rows may come in any order
  and several rows may share a time (their messages add up).
- `messages`: how many messages arrive at that time, a whole number >= 0.
- The header line is optional; a third column or more is an error, so a queue-length export is
  not silently read as arrivals.

A trace is simulated until its last row plus DEFAULT_TRACE_TAIL seconds (time to scale back to
zero), unless `--duration` says otherwise.

Every built-in scenario is deterministic: random ones use a fixed seed.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TRACE_TAIL = 900.0  # seconds simulated after a trace's last row


@dataclass(frozen=True)
class Load:
    """What arrives, when, and how the queue length is misread."""

    name: str
    description: str
    arrivals: tuple[tuple[float, int], ...]  # (time, messages), sorted by time
    duration: float  # seconds simulated
    reading_noise: float = 0.0  # relative standard deviation of each queue-length reading
    seed: int = 0  # for the reading noise
    # The maxReplicas the story needs (batch-dump: 100); `make compare` gives it to its built-in
    # rule, whose maxReplicas is 20. A rule file's own bounds are never changed.
    max_replicas: int | None = None

    @property
    def total_messages(self) -> int:
        return sum(count for _, count in self.arrivals)

    @property
    def first_arrival(self) -> float | None:
        return next((t for t, count in self.arrivals if count > 0), None)

    @property
    def last_arrival(self) -> float | None:
        return next((t for t, count in reversed(self.arrivals) if count > 0), None)


class TraceError(Exception):
    """A trace file cannot be used; the message names the file and the line."""


def _normalize(arrivals: Iterable[tuple[float, int]]) -> tuple[tuple[float, int], ...]:
    """Sorted by time, one entry per time, no empty entries."""
    merged: dict[float, int] = {}
    for when, count in arrivals:
        if count:
            merged[float(when)] = merged.get(float(when), 0) + count
    return tuple(sorted(merged.items()))


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth's method; fine for the small per-second means used here)."""
    if mean <= 0:
        return 0
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def _per_second(
    rate: Callable[[float], float], start: int, end: int, seed: int
) -> list[tuple[float, int]]:
    """Poisson arrivals, one draw per second, with the mean rate at the middle of that second."""
    rng = random.Random(seed)
    return [(float(t), _poisson(rng, rate(t + 0.5))) for t in range(start, end)]


# ---------------------------------------------------------------------------------------------
# The built-in scenarios


def flood() -> Load:
    # t=1, just after the polls at t=0: the worst phase for a poll-based autoscaler, as in
    # KEDA-REFERENCE's worst case (both autoscalers simulated wait the same full interval).
    return Load(
        "flood",
        "1,000 messages at once at t=1s, just after a poll (the README's story)",
        ((1.0, 1000),),
        duration=900.0,
    )


def sawtooth() -> Load:
    """The arrival rate climbs from 0 to 16 messages/s over 240 s, then stops for 120 s; 4 teeth."""
    peak, ramp, pause, teeth = 16.0, 240, 120, 4
    arrivals = []
    for tooth in range(teeth):
        start = tooth * (ramp + pause)
        # Cumulative rounding keeps whole messages without losing any to rounding.
        done = 0
        for second in range(ramp):
            total = round(peak * (second + 1) ** 2 / (2 * ramp))
            arrivals.append((float(start + second), total - done))
            done = total
    return Load(
        "sawtooth",
        "arrival rate ramps 0 -> 16 msg/s over 240s, then 120s of nothing; 4 teeth",
        _normalize(arrivals),
        duration=teeth * (ramp + pause) + 600.0,
    )


def diurnal() -> Load:
    """A day in one hour (1 s stands for 24 s): quiet nights, a smooth midday peak of 12 msg/s."""
    day, dawn, dusk, peak = 3600, 900, 2700, 12.0

    def rate(t: float) -> float:
        if not dawn <= t < dusk:
            return 0.0
        return peak * math.sin(math.pi * (t - dawn) / (dusk - dawn)) ** 2

    return Load(
        "diurnal",
        "a day in 1 hour: night, a daytime hump peaking at 12 msg/s (Poisson), night",
        _normalize(_per_second(rate, 0, day, seed=24)),
        duration=day + 600.0,
    )


def bursty() -> Load:
    """Random bursts: 100 to 600 messages over 10 s, about every 5 minutes (seeded)."""
    rng = random.Random(7)
    arrivals: list[tuple[float, int]] = []
    when = rng.expovariate(1 / 300)
    while when < 3300:
        size = rng.randint(100, 600)
        start = int(when)
        for second in range(10):
            arrivals.append((float(start + second), size // 10 + (1 if second < size % 10 else 0)))
        when += 10 + rng.expovariate(1 / 300)
    return Load(
        "bursty",
        "random bursts of 100-600 messages over 10s, about every 5 min, for 1 hour",
        _normalize(arrivals),
        duration=3600.0 + 600.0,
    )


def steady_noisy() -> Load:
    """A level 8 msg/s (Poisson) for 30 min; each reading is off by 10 % (standard deviation)."""
    return Load(
        "steady-noisy",
        "a level 8 msg/s (Poisson) for 30 min; readings with 10 % noise",
        _normalize(_per_second(lambda _t: 8.0, 0, 1800, seed=8)),
        duration=1800.0 + 600.0,
        reading_noise=0.10,
        seed=8,
    )


def monday_morning() -> Load:
    """A weekend trickle, then the office arrives: the rate climbs steadily for 20 minutes."""
    trickle, plateau = 0.2, 15.0
    opens, busy, closes = 600, 1800, 3600  # 08:00, 08:20 and 08:50 from 07:50

    def rate(t: float) -> float:
        if t < opens:
            return trickle
        return trickle + (plateau - trickle) * min((t - opens) / (busy - opens), 1.0)

    return Load(
        "monday-morning",
        "Monday 07:50-08:50: the weekend's trickle (0.2 msg/s), from 08:00 a 20-minute climb to "
        "15 msg/s as people start work, which holds (Poisson); nothing after 08:50",
        _normalize(_per_second(rate, 0, closes, seed=1)),
        duration=closes + 600.0,
    )


def batch_dump() -> Load:
    """A nightly batch job enqueues 50,000 messages at once into a worker allowed 100 replicas."""
    return Load(
        "batch-dump",
        "a batch job enqueues 50,000 messages at once at t=1s; the workers may scale to 100 "
        "replicas",
        ((1.0, 50_000),),
        duration=1500.0,
        max_replicas=100,
    )


# The rule `make compare` runs every scenario through unless given one: the seed's story, a worker
# draining a queue at 5 messages per replica, 0..20 replicas, KEDA's default clocks.
DEFAULT_RULE_TEXT = """
rules:
  - name: hello-keda
    deployment: hello-keda
    minReplicas: 0
    maxReplicas: 20
    pollingInterval: 30
    cooldownPeriod: 300
    triggers:
      - type: azure-queue
        queueName: js-queue-items
        queueLength: 5
"""

SCENARIOS: dict[str, Callable[[], Load]] = {
    "flood": flood,
    "sawtooth": sawtooth,
    "diurnal": diurnal,
    "bursty": bursty,
    "steady-noisy": steady_noisy,
    "monday-morning": monday_morning,
    "batch-dump": batch_dump,
}


def scenario(name: str) -> Load:
    try:
        return SCENARIOS[name]()
    except KeyError:
        known = ", ".join(SCENARIOS)
        raise KeyError(f"unknown scenario {name!r}; known: {known}") from None


# ---------------------------------------------------------------------------------------------
# Trace files


def parse_trace(text: str, source: str) -> Load:
    """A Load from the text of a trace file (see the module docstring for the format)."""
    arrivals: list[tuple[float, int]] = []
    header_allowed = True
    for number, row in enumerate(csv.reader(text.splitlines()), start=1):
        cells = [cell.strip() for cell in row]
        if not cells or not any(cells) or cells[0].startswith("#"):
            continue
        where = f"{source}: line {number}"
        if len(cells) != 2:
            raise TraceError(f"{where}: expected 2 columns (time,messages), got {len(cells)}")
        if header_allowed and [c.lower() for c in cells] == ["time", "messages"]:
            header_allowed = False
            continue
        header_allowed = False
        try:
            when = float(cells[0])
        except ValueError:
            when = math.nan
        if not math.isfinite(when) or when < 0:
            raise TraceError(f"{where}: time: expected seconds >= 0, got {cells[0]!r}")
        try:
            count = int(cells[1])
        except ValueError:
            count = -1
        if count < 0:
            raise TraceError(f"{where}: messages: expected a whole number >= 0, got {cells[1]!r}")
        arrivals.append((when, count))
    if not arrivals:
        raise TraceError(f"{source}: no rows: expected lines of time,messages")
    last = max(when for when, _ in arrivals)
    return Load(
        Path(source).name,
        f"trace {source}: {sum(c for _, c in arrivals):,} messages over {last:g}s",
        _normalize(arrivals),
        duration=last + DEFAULT_TRACE_TAIL,
    )


def load_trace(path: str | Path) -> Load:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise TraceError(f"{path}: cannot read the trace: {reason}") from None
    return parse_trace(text, str(path))
