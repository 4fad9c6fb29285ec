"""The opt-in rate-aware sizing: replicas for the backlog to drain within targetDrainSeconds while
messages keep arriving. Pure: readings, replicas and time in, an estimate out; no I/O, no clock.

    needed = ceil((arrivals + backlog / targetDrainSeconds) / processingRate)

`arrivals` (messages/s) is estimated from successive readings, as the median of the samples of
the last `windowSeconds`, each bounded to [0, processingRate x maxReplicas]. One sample per
interval between two good ticks, with N the replicas found at both ticks (new ones may still be
starting) and mu the processing rate:
- flow balance: (backlog now - backlog before) / interval + mu x N. Exact when the workers were
  busy the whole interval, which they were when the backlog before alone was at least what they
  process in it (backlog before >= mu x N x interval);
- otherwise they kept up and may have idled, so the flow balance is only an upper bound; the
  backlog is then about what is in flight, one message per busy replica, so mu x backlog is the
  rate (Little's law with a time in the system of 1/mu), and the sample is the lower of the two.
The median makes one noisy reading (the approximate count's error) move nothing, and the backlog
term reacts at once to a queue that builds, so the window only sets how fast the base follows.
While the samples rise (at least 80 % of their pairs, from 3 samples on), the arrivals are their
Theil-Sen line's value now instead (the median of the pairwise slopes, the line through the
samples' median): a median lags a ramp by half its window.

processingRate may be derived from observed drain instead of given: over an interval where the
backlog fell and was not empty at its end, the workers were busy throughout and arrivals are
never negative, so (backlog before - backlog now) / (N x interval) is a lower bound of mu; the
highest such bound is used until it is DRAIN_MEMORY old, when the next one seen replaces it.
Until a drain has been observed there is no rate, and the rule's queue-length arithmetic sizes.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, replace

from eventscaler.config import RateAware

TREND_AGREEMENT = 0.8  # the share of sample pairs that must rise for a trend to count
TREND_PAIRS = 3  # the fewest sample pairs a trend is drawn from (3 samples)
# The trend compares every pair: a long window (600 s at a 5 s interval is 120 samples, 7,140
# pairs) is thinned evenly to this many samples first (276 pairs), the newest always kept.
TREND_SAMPLES = 24
DRAIN_MEMORY = 3600.0  # seconds an observed drain rate stays the best one
_EPS = 1e-9


@dataclass(frozen=True)
class RateMemory:
    """What the estimate keeps between ticks: the last good reading and the recent samples."""

    last: tuple[float, float, int] | None = None  # (time, backlog, replicas found)
    samples: tuple[tuple[float, float], ...] = ()  # (time, arrival-rate sample) in the window
    drain: tuple[float, float] | None = None  # (time, highest observed per-replica drain)


@dataclass(frozen=True)
class Sizing:
    """The estimate behind one decision, for the decision and its reason."""

    needed: int | None  # None: no processing rate yet, the queue-length arithmetic decides
    arrivals: float
    samples: int
    backlog: float
    processing_rate: float | None
    target_drain_seconds: float
    derived: bool  # the processing rate comes from observed drain
    trend: float | None = None  # msg/s per second: the samples' rising line gave the arrivals

    def describe(self) -> str:
        if self.needed is None or self.processing_rate is None:
            return "rate-aware: no drain observed yet, so no processingRate: sized by the target"
        rate = f"{self.processing_rate:.3g} msg/s per replica"
        if self.derived:
            rate += " (observed drain)"
        return (
            f"rate-aware: arrivals {self.arrivals:.3g} msg/s ({self._how()}), "
            f"backlog {self.backlog:g}, processingRate {rate}: "
            f"({self.arrivals:.3g} + {self.backlog:g}/{self.target_drain_seconds:g}s) / "
            f"{self.processing_rate:.3g} -> {self.needed} replica(s) needed"
        )

    def _how(self) -> str:
        if self.trend is None:
            return f"median of {self.samples} sample(s)"
        return f"trend of {self.samples} samples, rising {self.trend:.3g} msg/s per s"


def estimate(
    mode: RateAware, memory: RateMemory, backlog: float, current: int, now: float, most: int
) -> tuple[RateMemory, Sizing]:
    """Fold the tick's good reading into the memory and size for it. `most` is maxReplicas."""
    memory = _observe_drain(mode, memory, backlog, current, now)
    rate = mode.processing_rate if mode.processing_rate is not None else _drain_rate(memory)
    if rate is not None:
        memory = _add_sample(mode, memory, backlog, current, now, rate * most, rate)
    memory = replace(memory, last=(now, backlog, current))
    arrivals, trend = _arrivals_now(memory.samples, now)
    derived = mode.processing_rate is None
    drain = mode.target_drain_seconds
    if rate is None:
        return memory, Sizing(None, 0.0, 0, backlog, None, drain, derived)
    wanted = (arrivals + backlog / drain) / rate
    needed = max(math.ceil(wanted - _EPS), 0)
    samples = len(memory.samples)
    return memory, Sizing(needed, arrivals, samples, backlog, rate, drain, derived, trend)


def _arrivals_now(
    samples: tuple[tuple[float, float], ...], now: float
) -> tuple[float, float | None]:
    """(arrivals, the rising trend used or None): the median of the samples or, while they rise,
    their Theil-Sen line's value now. The median of a window lags a ramp by half the window;
    the line does not. Noise moves pairs of samples both ways, so a trend counts only when at
    least TREND_AGREEMENT of the pairs rise, and it can only raise the estimate."""
    if not samples:
        return 0.0, None
    level = statistics.median(value for _, value in samples)
    samples = thinned(samples, TREND_SAMPLES)
    slopes = [
        (b - a) / (tb - ta)
        for i, (ta, a) in enumerate(samples)
        for tb, b in samples[i + 1 :]
        if tb - ta > _EPS
    ]
    rising = sum(1 for slope in slopes if slope > 0)
    if len(slopes) < TREND_PAIRS or rising < TREND_AGREEMENT * len(slopes):
        return level, None
    slope = statistics.median(slopes)
    projected = statistics.median(value + slope * (now - when) for when, value in samples)
    return (projected, slope) if projected > level else (level, None)


def thinned(samples: tuple[tuple[float, float], ...], most: int) -> tuple[tuple[float, float], ...]:
    """At most `most` (>= 2) of `samples`, evenly spread, the oldest and the newest kept."""
    if len(samples) <= most:
        return samples
    step = (len(samples) - 1) / (most - 1)
    return tuple(samples[round(i * step)] for i in range(most))


def _interval(memory: RateMemory, now: float, current: int) -> tuple[float, float, int] | None:
    """(seconds since the last good tick, the backlog then, replicas present at both)."""
    if memory.last is None:
        return None
    then, before, replicas = memory.last
    if now - then <= _EPS:
        return None
    return now - then, before, min(replicas, current)


def _add_sample(
    mode: RateAware,
    memory: RateMemory,
    backlog: float,
    current: int,
    now: float,
    ceiling: float,
    rate: float,
) -> RateMemory:
    kept = tuple(s for s in memory.samples if s[0] > now - mode.window_seconds + _EPS)
    interval = _interval(memory, now, current)
    if interval is None:
        return replace(memory, samples=kept)
    seconds, before, working = interval
    flow = (backlog - before) / seconds + rate * working
    busy = before >= rate * working * seconds
    sample = flow if busy else min(flow, rate * backlog)
    sample = min(max(sample, 0.0), ceiling)
    return replace(memory, samples=(*kept, (now, sample)))


def _observe_drain(
    mode: RateAware, memory: RateMemory, backlog: float, current: int, now: float
) -> RateMemory:
    """With processingRate derived: a lower bound of it from an interval of steady work."""
    interval = _interval(memory, now, current)
    if mode.processing_rate is not None or interval is None:
        return memory
    seconds, before, working = interval
    if working == 0 or backlog <= 0 or before <= backlog:
        return memory
    drained = (before - backlog) / (working * seconds)
    best = memory.drain
    if best is None or drained > best[1] or best[0] <= now - DRAIN_MEMORY:
        best = (now, drained)
    return replace(memory, drain=best)


def _drain_rate(memory: RateMemory) -> float | None:
    return memory.drain[1] if memory.drain is not None else None
