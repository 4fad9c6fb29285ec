"""Replay a load through a rule, with a simulated clock and simulated workers: see before you scale.

Ours is the daemon's own `policy.decide`, called the way the engine calls it (state kept between
ticks, `record_scale` after each write, which always succeeds here); nothing of the policy is
copied. The same load can also run under the KEDA model (`keda_model.py`), under `no-poll` (the
rule's arithmetic without polling delay) and against the optimum (`optimum.py`).

The worker model (docs/simulate.md explains it with pictures):
- The backlog is a fluid: every message not yet processed (waiting and in flight).
  Messages arrive at the instants the load gives; each ready replica processes `processing_rate`
  messages per second, continuously, so the backlog falls linearly between events.
- A replica the autoscaler adds is ready `startup_seconds` later; until then it costs but does not
  work. Replicas present at the start are ready. Scale-in removes starting replicas first (the
  newest), then ready ones, as a ReplicaSet does.
- The autoscaler reads its triggers every `pollingInterval` of the rule from t=0, and every
  `activePollingInterval` while the target has replicas (as the daemon does). What a trigger
  reads is its source's to say (`SourceType.simulated_value`): most read the backlog rounded up;
  one that counts only waiting messages leaves out one in-flight message per ready replica. A
  load with reading noise multiplies each reading by (1 + e), e drawn from N(0, noise) and the
  same for every reader at the same instant. Every trigger of the rule reads the same backlog.
- `no-poll` asks, at every instant and without polling, for exactly what the rule's arithmetic
  asks for the true backlog: ceil(backlog / target) clamped to [minReplicas, maxReplicas], 0
  when the backlog is empty (no cooldown, no window, no activation threshold). Its replicas still
  take `startup_seconds`. It shows what polling and the windows cost; it bounds nothing (keeping
  replicas longer drains faster, so ours can wait less). The bound is `optimum.py`.
- The wait of a message is FIFO on the fluid: message m (of the cumulative arrivals) is taken
  when the cumulative processed work reaches m, so its wait is the horizontal distance between
  the two curves, and its integral over the messages is the backlog message-seconds.

Within each interval between events the figures are integrated exactly, so small cases can be
checked by hand.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import math
import random
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from eventscaler import sources
from eventscaler.config import RateAware, Rule, describe_rule, load_rules
from eventscaler.keda_model import MODEL_LABEL, KedaModel, settings_from_rule
from eventscaler.optimum import Bounds, OptimumError, Yardstick, yardstick
from eventscaler.policy import Reading, RuleState, decide, initial_state
from eventscaler.scenarios import Load, TraceError, load_trace, scenario
from eventscaler.sources.base import SourceError

DEFAULT_PROCESSING_RATE = 1.0  # messages per second per ready replica
DEFAULT_STARTUP_SECONDS = 10.0  # from "replica created" to "replica processing"
SAMPLE_INTERVAL = 1.0  # seconds between two rows of the timeline (CSV, plots)
NO_POLL_LABEL = "no-poll"  # the rule's arithmetic without polling delay
RATE_AWARE_LABEL = "rate-aware"  # the rule with the opt-in rateAware sizing
_EPS = 1e-9

EXIT_OK = 0
EXIT_INVALID = 2


@dataclass(frozen=True)
class WorkerModel:
    processing_rate: float = DEFAULT_PROCESSING_RATE
    startup_seconds: float = DEFAULT_STARTUP_SECONDS


@dataclass(frozen=True)
class BacklogView:
    """What a controller can know at one instant."""

    backlog: float  # the truth: messages not yet processed (only no-poll uses it)
    ready: int
    values: tuple[float, ...]  # what each trigger of the rule reads


class Controller(Protocol):
    label: str

    def due(self, now: float) -> bool:
        """Whether to tick at `now` (the simulator asks at every event)."""
        ...

    def next_wakeup(self, now: float, backlog: float, drain: float) -> float:
        """The next instant after `now` this controller needs an event, given the drain."""
        ...

    def tick(self, now: float, view: BacklogView, current: int) -> tuple[int, str]: ...


class PolicyController:
    """Ours: `policy.decide` driven exactly as the engine drives it, on a simulated clock."""

    def __init__(self, rule: Rule, start: float = 0.0, label: str = "ours") -> None:
        self.label = label
        self.rule = rule
        self.state: RuleState = initial_state(start)  # start-up counts as activity
        self._next = start

    def due(self, now: float) -> bool:
        return self.next_wakeup(now, 0.0, 0.0) <= now + _EPS

    def next_wakeup(self, now: float, backlog: float, drain: float) -> float:
        return self._next

    def tick(self, now: float, view: BacklogView, current: int) -> tuple[int, str]:
        target, reason = self._decide(now, view, current)
        # As the daemon: the next tick one interval later, at the interval the replicas ask for.
        self._next = now + self.rule.interval_at(target)
        return target, reason

    def _decide(self, now: float, view: BacklogView, current: int) -> tuple[int, str]:
        readings = [
            Reading(t.label, value)
            for t, value in zip(self.rule.triggers, view.values, strict=True)
        ]
        decision = decide(self.rule, readings, current, self.state, now)
        self.state = decision.state
        if decision.changes:
            # As the engine: the write succeeded (it always does here), so record it.
            self.state = decision.state.record_scale(now, current, decision.target)
        return decision.target, decision.reason


class KedaController:
    """The KEDA model of the ScaledObject equivalent to the rule."""

    label = MODEL_LABEL

    def __init__(self, rule: Rule, start: float = 0.0) -> None:
        self.model = KedaModel(settings_from_rule(rule), start)

    def due(self, now: float) -> bool:
        return self.model.next_tick() <= now + _EPS

    def next_wakeup(self, now: float, backlog: float, drain: float) -> float:
        return self.model.next_tick()

    def tick(self, now: float, view: BacklogView, current: int) -> tuple[int, str]:
        actions = self.model.tick(now, view.values, current)
        reasons = "; ".join(a.reason for a in actions if a.changes)
        return (actions[-1].target if actions else current), reasons


class NoPoll:
    """The rule's arithmetic on the true backlog at every instant, without polling delay (see the
    module docstring): a reference for what polling costs, not an optimum."""

    label = NO_POLL_LABEL

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.target = min(t.target for t in rule.triggers)  # the highest ask wins

    def due(self, now: float) -> bool:
        return True  # at every instant

    def needed(self, backlog: float) -> int:
        asked = math.ceil(backlog / self.target - _EPS) if backlog > _EPS else 0
        return min(max(asked, self.rule.min_replicas), self.rule.max_replicas)

    def next_wakeup(self, now: float, backlog: float, drain: float) -> float:
        """When the need falls next, at this drain rate (the backlog crosses a multiple of q)."""
        need = self.needed(backlog)
        if drain <= 0 or need == 0 or need - 1 < self.rule.min_replicas:
            return math.inf
        return now + max(backlog - (need - 1) * self.target, 0.0) / drain

    def tick(self, now: float, view: BacklogView, current: int) -> tuple[int, str]:
        need = self.needed(view.backlog)
        return need, f"no-poll: backlog {view.backlog:.6g} needs {need}"


@dataclass(frozen=True)
class Sample:
    time: float
    backlog: float
    replicas: int  # replicas asked for: starting and ready, what is paid for
    ready: int


@dataclass(frozen=True)
class ScaleWrite:
    time: float
    current: int
    target: int
    reason: str


@dataclass(frozen=True)
class Summary:
    """The figures of one run (docs/simulate.md defines each)."""

    time_to_enough: float | None  # first message -> ready replicas >= what the backlog needs
    peak_backlog: float
    backlog_message_seconds: float  # the integral of the backlog: the waiting users feel
    replica_seconds: float  # the integral of the replicas asked for: the cost
    direction_changes: int  # an up write after a down write or the reverse: flapping
    time_to_zero: float | None  # load over (last arrival processed) -> 0 replicas
    scale_writes: int
    backlog_at_end: float
    # Per message, FIFO: the median and 95th percentile of the time from its arrival to the
    # instant a worker takes it; None when that message is still waiting at the end.
    wait_p50: float | None = None
    wait_p95: float | None = None


@dataclass(frozen=True)
class Run:
    label: str
    summary: Summary
    samples: tuple[Sample, ...]
    writes: tuple[ScaleWrite, ...]


@dataclass
class _World:
    """One controller's backlog and replicas during a run."""

    backlog: float = 0.0
    # The time each replica is (or was) ready, in increasing order: a new replica is ready a
    # fixed start-up after its write, so appending keeps the order.
    pods: list[float] = field(default_factory=list)

    def ready(self, now: float) -> int:
        return bisect.bisect_right(self.pods, now + _EPS)

    def next_ready(self, now: float) -> float | None:
        """When the next replica still starting at `now` is ready."""
        index = bisect.bisect_right(self.pods, now + _EPS)
        return self.pods[index] if index < len(self.pods) else None

    def drain(self, span: float, rate: float) -> float:
        """Process for `span` seconds at `rate` messages/s; returns the backlog's exact integral
        over the span (linear until empty, then zero)."""
        if rate <= 0 or self.backlog <= _EPS:
            return self.backlog * span
        emptied_after = self.backlog / rate
        if emptied_after < span - _EPS:
            area, self.backlog = self.backlog * emptied_after / 2, 0.0
            return area
        after = max(self.backlog - rate * span, 0.0)
        area = (self.backlog + after) / 2 * span
        self.backlog = after if after > _EPS else 0.0
        return area

    def resize(self, target: int, ready_at: float, now: float) -> None:
        while len(self.pods) < target:
            self.pods.append(ready_at)
        # A ReplicaSet deletes the pods not yet ready first, the newest of them first, then the
        # newest ready ones: in a list in order of readiness, always the last ones.
        del self.pods[target:]


def read_values(
    rule: Rule, load: Load, now: float, backlog: float, ready: int
) -> tuple[float, ...]:
    """What each trigger reads: the backlog rounded up, per strategy, with the load's noise."""
    total = max(math.ceil(backlog - _EPS), 0)
    error = 0.0
    if load.reading_noise:
        # Seeded by the instant, so every reader at one instant sees the same error.
        error = random.Random(f"{load.seed}:{now:.6f}").gauss(0.0, load.reading_noise)
    values = []
    for trigger in rule.triggers:
        source = sources.source_type(trigger.type)
        value = source.simulated_value(trigger.settings, total, min(total, ready))
        values.append(float(max(round(value * (1.0 + error)), 0)))
    return tuple(values)


def simulate(
    controller: Controller,
    rule: Rule,
    load: Load,
    workers: WorkerModel | None = None,
    initial_replicas: int = 0,
    duration: float | None = None,
) -> Run:
    """Run `load` through `controller` for `duration` seconds (default: the load's)."""
    run = simulate_within(controller, rule, load, workers, initial_replicas, duration)
    assert run is not None  # no cost limit: the run always ends
    return run


def simulate_within(
    controller: Controller,
    rule: Rule,
    load: Load,
    workers: WorkerModel | None = None,
    initial_replicas: int = 0,
    duration: float | None = None,
    cost_limit: float = math.inf,
    samples: bool = True,
) -> Run | None:
    """As `simulate`, but None as soon as the replica-seconds pass `cost_limit`: a search for
    the cheapest settings (`tune`) stops a run that can no longer be the cheapest. Without
    `samples` the run has no timeline (only the figures), and takes half the time or less."""
    replay = _Replay(controller, rule, load, workers or WorkerModel(), initial_replicas)
    replay.sampling = samples
    end = load.duration if duration is None else duration
    while True:
        replay.arrive()
        replay.tick_if_due()
        replay.observe()
        if replay.t >= end - _EPS:
            break
        replay.advance(replay.next_event(end))
        if replay.replica_area > cost_limit:
            return None
    return replay.result()


class _Replay:
    """One simulation's clock, world and figures; `simulate` steps it from event to event."""

    def __init__(
        self, controller: Controller, rule: Rule, load: Load, workers: WorkerModel, initial: int
    ) -> None:
        self.controller, self.rule, self.load, self.workers = controller, rule, load, workers
        self.world = _World(pods=[0.0] * initial)
        self.arrivals, self.first_message = load.arrivals, load.first_arrival
        self.target = min(t.target for t in rule.triggers)
        self.floor = max(rule.min_replicas, 1)
        self.samples: list[Sample] = []
        self.writes: list[ScaleWrite] = []
        self.t, self.next_arrival, self.next_sample = 0.0, 0, 0
        self.peak = self.backlog_area = self.replica_area = 0.0
        self.enough_at: float | None = None
        self.load_end: float | None = None
        self.zero_at: float | None = None
        self.waiting = False
        self.processed: list[tuple[float, float]] = [(0.0, 0.0)]  # the cumulative work curve
        self.sampling = True  # a row of the timeline every SAMPLE_INTERVAL

    def arrive(self) -> None:
        arrivals = self.arrivals
        while self.next_arrival < len(arrivals) and arrivals[self.next_arrival][0] <= self.t + _EPS:
            self.world.backlog += arrivals[self.next_arrival][1]
            self.next_arrival += 1

    def tick_if_due(self) -> None:
        t, world = self.t, self.world
        if not self.controller.due(t):
            return
        ready = world.ready(t)
        values = read_values(self.rule, self.load, t, world.backlog, ready)
        current = len(world.pods)
        target, reason = self.controller.tick(t, BacklogView(world.backlog, ready, values), current)
        if target != current:
            self.writes.append(ScaleWrite(t, current, target, reason))
            world.resize(target, t + self.workers.startup_seconds, t)

    def is_enough(self, ready: int) -> bool:
        backlog = self.world.backlog
        asked = math.ceil(backlog / self.target - _EPS) if backlog > _EPS else 0
        return ready >= min(max(asked, self.floor), self.rule.max_replicas)

    def observe(self) -> None:
        """Update the figures at the current instant and take the samples that are due."""
        t, world = self.t, self.world
        ready = world.ready(t)
        self.peak = max(self.peak, world.backlog)
        started = self.first_message is not None and t >= self.first_message - _EPS
        self.waiting = started and self.enough_at is None
        if self.waiting and self.is_enough(ready):
            self.enough_at, self.waiting = t, False
        all_arrived = self.next_arrival == len(self.arrivals)
        if self.load_end is None and all_arrived and world.backlog <= _EPS:
            self.load_end = t if self.arrivals else None
        if self.load_end is not None and self.zero_at is None and not world.pods:
            self.zero_at = t
        while self.sampling and self.next_sample * SAMPLE_INTERVAL <= t + _EPS:
            at = self.next_sample * SAMPLE_INTERVAL
            self.samples.append(Sample(at, world.backlog, len(world.pods), ready))
            self.next_sample += 1

    def next_event(self, end: float) -> float:
        """The next instant anything changes: an arrival, a tick, a pod ready, a sample, the end,
        the backlog emptying or falling to what the ready replicas are enough for."""
        t, world = self.t, self.world
        ready = world.ready(t)
        drain = ready * self.workers.processing_rate
        candidates = [end, self.next_sample * SAMPLE_INTERVAL if self.sampling else end]
        if self.next_arrival < len(self.arrivals):
            candidates.append(self.arrivals[self.next_arrival][0])
        candidates.append(self.controller.next_wakeup(t, world.backlog, drain))
        next_ready = world.next_ready(t)
        if next_ready is not None:
            candidates.append(next_ready)
        if drain > 0 and world.backlog > _EPS:
            candidates.append(t + world.backlog / drain)  # the backlog empties
            if self.waiting:
                candidates.append(t + (world.backlog - ready * self.target) / drain)
        return min(c for c in candidates if c > t + _EPS)

    def advance(self, following: float) -> None:
        span, world = following - self.t, self.world
        drain = world.ready(self.t) * self.workers.processing_rate
        self.replica_area += len(world.pods) * span
        before = world.backlog
        self.backlog_area += world.drain(span, drain)
        self._record_work(before - world.backlog, drain)
        self.t = following

    def _record_work(self, done: float, drain: float) -> None:
        """Extend the cumulative work curve: `done` messages from now, at `drain` per second."""
        if done <= 0:
            return
        start, total = self.processed[-1]
        if start < self.t - _EPS:
            self.processed.append((self.t, total))
        self.processed.append((self.t + done / drain, total + done))

    def result(self) -> Run:
        first, enough = self.first_message, self.enough_at
        zero, end = self.zero_at, self.load_end
        summary = Summary(
            time_to_enough=None if enough is None or first is None else enough - first,
            peak_backlog=self.peak,
            backlog_message_seconds=self.backlog_area,
            replica_seconds=self.replica_area,
            direction_changes=count_direction_changes(self.writes),
            time_to_zero=None if zero is None or end is None else zero - end,
            scale_writes=len(self.writes),
            backlog_at_end=self.world.backlog,
            **self._wait_percentiles(),
        )
        return Run(self.controller.label, summary, tuple(self.samples), tuple(self.writes))

    def _wait_percentiles(self) -> dict[str, float | None]:
        arrived = self.arrivals[: self.next_arrival]
        p50, p95 = wait_percentiles(arrived, self.processed, (0.50, 0.95))
        return {"wait_p50": p50, "wait_p95": p95}


def wait_percentiles(
    arrivals: Sequence[tuple[float, int]],
    processed: Sequence[tuple[float, float]],
    quantiles: Sequence[float],
) -> list[float | None]:
    """The quantiles of the per-message wait, FIFO, exactly.

    `arrivals` are the batches (time, messages) in time order; `processed` the cumulative work
    curve (time, messages processed), piecewise linear and non-decreasing. Message m arrives
    with its batch and is taken when the work reaches m: its wait is the horizontal distance
    between the two curves. It is linear in m within a batch and a segment of the work curve, so
    the distribution is a sum of uniform pieces and its quantiles are found by one sweep.
    A quantile that falls among the messages still waiting is None.
    """
    total = sum(count for _, count in arrivals)
    pieces = list(_wait_pieces(arrivals, processed))
    return [_quantile(pieces, q * total) if total else None for q in quantiles]


def _wait_pieces(
    arrivals: Sequence[tuple[float, int]], processed: Sequence[tuple[float, float]]
) -> Iterator[tuple[float, float, float]]:
    """(wait of the first message, wait of the last, how many) of each piece where both the
    arrival time and the work curve's slope are constant."""
    segments = [(a, b) for a, b in zip(processed, processed[1:], strict=False) if b[1] > a[1]]
    batch, segment, done, arrived = 0, 0, 0.0, 0.0
    while batch < len(arrivals) and segment < len(segments):
        when, count = arrivals[batch]
        (t0, m0), (t1, m1) = segments[segment]
        upto = min(arrived + count, m1)
        if upto > done + _EPS:
            start = t0 + (done - m0) * (t1 - t0) / (m1 - m0)
            end = t0 + (upto - m0) * (t1 - t0) / (m1 - m0)
            yield start - when, end - when, upto - done
        done = max(done, upto)
        if upto >= arrived + count - _EPS:
            batch, arrived = batch + 1, arrived + count
        if upto >= m1 - _EPS:
            segment += 1


def _quantile(pieces: Sequence[tuple[float, float, float]], target: float) -> float | None:
    """The least wait w such that at least `target` messages waited w or less."""
    jumps: dict[float, float] = {}
    slopes: dict[float, float] = {}
    for low, high, count in pieces:
        if high - low <= _EPS:
            jumps[low] = jumps.get(low, 0.0) + count
        else:
            slopes[low] = slopes.get(low, 0.0) + count / (high - low)
            slopes[high] = slopes.get(high, 0.0) - count / (high - low)
    below, slope, previous = 0.0, 0.0, 0.0
    for point in sorted(set(jumps) | set(slopes)):
        reached = below + slope * (point - previous)
        if reached >= target - _EPS * max(target, 1.0) and slope > 0:
            return max(previous + (target - below) / slope, previous)
        below = reached + jumps.get(point, 0.0)
        if below >= target - _EPS * max(target, 1.0):
            return point
        slope += slopes.get(point, 0.0)
        previous = point
    return None


def count_direction_changes(writes: Sequence[ScaleWrite]) -> int:
    directions = [1 if w.target > w.current else -1 for w in writes]
    return sum(1 for a, b in zip(directions, directions[1:], strict=False) if a != b)


def compare_runs(
    rule: Rule,
    load: Load,
    workers: WorkerModel | None = None,
    initial_replicas: int = 0,
    duration: float | None = None,
) -> list[Run]:
    """The same load under ours, the KEDA model, no-poll and rate-aware, in that order."""
    workers = workers or WorkerModel()
    rate_rule = rate_aware_rule(rule, workers)
    controllers: list[tuple[Controller, Rule]] = [
        (PolicyController(rule), rule),
        (KedaController(rule), rule),
        (NoPoll(rule), rule),
        (PolicyController(rate_rule, label=RATE_AWARE_LABEL), rate_rule),
    ]
    return [simulate(c, r, load, workers, initial_replicas, duration) for c, r in controllers]


def rate_aware_rule(rule: Rule, workers: WorkerModel) -> Rule:
    """The rule with the rate-aware sizing: its own `rateAware`, or one at the workers' rate with
    the default drain target and window."""
    if rule.rate_aware is not None:
        return rule
    return replace(rule, rate_aware=RateAware(workers.processing_rate))


# ---------------------------------------------------------------------------------------------
# Output


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}s"


def _number(value: float) -> str:
    return f"{value:,.0f}"


FIGURES: tuple[tuple[str, str, Callable[[Summary], str]], ...] = (
    ("time to enough", "time from first message to enough replicas",
     lambda s: _seconds(s.time_to_enough)),
    ("peak backlog", "peak backlog (messages)", lambda s: _number(s.peak_backlog)),
    ("backlog msg*s", "backlog message-seconds (the waiting)",
     lambda s: _number(s.backlog_message_seconds)),
    ("wait p50", "a message's wait, median (p50)", lambda s: _seconds(s.wait_p50)),
    ("wait p95", "a message's wait, 95th percentile (p95)", lambda s: _seconds(s.wait_p95)),
    ("replica*s", "replica-seconds (the cost)", lambda s: _number(s.replica_seconds)),
    ("dir changes", "direction changes (flapping)", lambda s: str(s.direction_changes)),
    ("to zero", "time to zero after the load", lambda s: _seconds(s.time_to_zero)),
    ("writes", "scale writes", lambda s: str(s.scale_writes)),
)  # fmt: skip


def format_summary(runs: Sequence[Run]) -> str:
    """One column per run, one line per figure."""
    width = max(len(long) for _, long, _ in FIGURES) + 2
    columns = [max(len(run.label), 10) + 2 for run in runs]
    lines = [" " * width + "".join(r.label.rjust(c) for r, c in zip(runs, columns, strict=True))]
    for _, long, show in FIGURES:
        cells = "".join(show(r.summary).rjust(c) for r, c in zip(runs, columns, strict=True))
        lines.append(long.ljust(width) + cells)
    unfinished = [r for r in runs if r.summary.backlog_at_end > _EPS]
    for run in unfinished:
        lines.append(
            f"({run.label}: {run.summary.backlog_at_end:,.0f} messages still waiting at the end)"
        )
    return "\n".join(lines)


def format_writes(run: Run, limit: int = 12) -> str:
    lines = [f"scale writes ({run.label}):"]
    for write in run.writes[:limit]:
        lines.append(
            f"  t={write.time:7.1f}s {write.current:3d} -> {write.target:<3d} {write.reason}"
        )
    if len(run.writes) > limit:
        lines.append(f"  ... and {len(run.writes) - limit} more")
    if not run.writes:
        lines.append("  none")
    return "\n".join(lines)


def describe_setup(rule: Rule, load: Load, workers: WorkerModel, duration: float) -> str:
    lines = [
        f"rule {describe_rule(rule)}",
        f"load {load.name}: {load.description}; {load.total_messages:,} messages in all",
        f"workers: {workers.processing_rate:g} message/s per ready replica, ready "
        f"{workers.startup_seconds:g}s after it is created; {duration:g}s simulated",
    ]
    if load.max_replicas is not None and load.max_replicas != rule.max_replicas:
        lines.append(
            f"note: {load.name} is a story of maxReplicas {load.max_replicas}; the rule's own "
            f"{rule.max_replicas} is simulated"
        )
    return "\n".join(lines)


# The controllers measured against the optimum (no-poll is a reference for polling, not a policy).
MEASURED = ("ours", MODEL_LABEL, RATE_AWARE_LABEL)
OPTIMUM_NOTE = (
    "the optimum: the best of any schedule that knows the load in advance (a lower bound)"
)


def against_optimum(
    runs: Sequence[Run],
    rule: Rule,
    load: Load,
    workers: WorkerModel,
    initial_replicas: int,
    duration: float | None = None,
) -> dict[str, Yardstick]:
    """Each measured run beside the optimum, by label. Needs SciPy (ImportError otherwise)."""
    bounds = Bounds(rule.min_replicas, rule.max_replicas, initial_replicas)
    return {
        run.label: yardstick(
            load,
            bounds,
            workers,
            run.summary.backlog_message_seconds,
            run.summary.replica_seconds,
            duration,
        )
        for run in runs
        if run.label in MEASURED
    }


def ratio(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.2f}x"


YARDSTICK_FIGURES: tuple[tuple[str, Callable[[Yardstick], str]], ...] = (
    ("the optimum's waiting at the same cost", lambda m: _number(m.optimum_waiting)),
    ("  waiting / the optimum's (1.00x is the best)", lambda m: ratio(m.waiting_ratio)),
    ("the optimum's cost at the same waiting", lambda m: _number(m.optimum_cost)),
    ("  cost / the optimum's", lambda m: ratio(m.cost_ratio)),
)


def format_yardsticks(marks: dict[str, Yardstick]) -> str:
    """One column per measured run, one line per figure of the optimum beside it."""
    width = max(len(long) for long, _ in YARDSTICK_FIGURES) + 2
    columns = [max(len(label), 10) + 2 for label in marks]
    lines = [
        OPTIMUM_NOTE + ":",
        " " * width + "".join(label.rjust(c) for label, c in zip(marks, columns, strict=True)),
    ]
    for long, show in YARDSTICK_FIGURES:
        cells = "".join(show(m).rjust(c) for m, c in zip(marks.values(), columns, strict=True))
        lines.append(long.ljust(width) + cells)
    seconds = sum(mark.solve_seconds for mark in marks.values())
    lines.append(f"(solved by SciPy's HiGHS in {seconds:.1f}s of CPU)")
    return "\n".join(lines)


def write_csv(runs: Sequence[Run], path: str | Path) -> None:
    """One row per second: time, then backlog, replicas and ready of each run."""
    names = [run.label.lower().replace(" ", "_").replace("-", "_") for run in runs]
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        header = ["time"]
        for name in names:
            header += [f"{name}_backlog", f"{name}_replicas", f"{name}_ready"]
        writer.writerow(header)
        for rows in zip(*(run.samples for run in runs), strict=True):
            line = [f"{rows[0].time:g}"]
            for sample in rows:
                line += [f"{sample.backlog:.3f}", str(sample.replicas), str(sample.ready)]
            writer.writerow(line)


# ---------------------------------------------------------------------------------------------
# `autoscaler.py simulate`


def pick_rule(rules: Sequence[Rule], name: str | None) -> Rule:
    if name is not None:
        for rule in rules:
            if rule.name == name:
                return rule
        known = ", ".join(r.name for r in rules) or "none"
        raise LookupError(f"no valid rule named {name!r} (valid rules: {known})")
    if len(rules) == 1:
        return rules[0]
    known = ", ".join(r.name for r in rules) or "none"
    raise LookupError(f"choose a rule with --rule NAME (valid rules: {known})")


def run_simulate_command(args: argparse.Namespace) -> int:
    def fail(message: str) -> int:
        print(f"autoscaler.py simulate: error: {message}", file=sys.stderr)
        return EXIT_INVALID

    result = load_rules(args.config)
    for problem in result.problems:
        print(problem, file=sys.stderr)
    try:
        rule = pick_rule(result.rules, args.rule)
        load = scenario(args.scenario) if args.scenario else load_trace(args.trace)
    except (LookupError, TraceError) as exc:
        return fail(str(exc.args[0]) if exc.args else str(exc))
    if args.processing_rate <= 0 or args.startup_seconds < 0:
        return fail("--processing-rate must be > 0 and --startup-seconds >= 0")
    if args.duration is not None and args.duration <= 0:
        return fail("--duration must be > 0")
    workers = WorkerModel(args.processing_rate, args.startup_seconds)
    initial = rule.min_replicas if args.initial_replicas is None else args.initial_replicas
    duration = load.duration if args.duration is None else args.duration
    try:
        if args.compare:
            runs = compare_runs(rule, load, workers, initial, duration)
        else:
            runs = [simulate(PolicyController(rule), rule, load, workers, initial, duration)]
    except SourceError as exc:  # a trigger the fluid queue cannot give a value (cron)
        return fail(f"rule {rule.name}: {exc}")

    optimum = _optimum_text(runs, rule, load, workers, initial, duration) if args.compare else None
    _print_runs(runs, describe_setup(rule, load, workers, duration), optimum)
    if args.csv:
        write_csv(runs, args.csv)
        print(f"\ntimeline written to {args.csv}")
    if args.plot:
        from eventscaler.plots import plot_runs

        try:
            plot_runs(runs, load, rule, workers, args.plot)
        except ImportError as exc:  # matplotlib is a test-and-bench dependency only
            return fail(f"--plot needs matplotlib ({exc}): pip install -r requirements-dev.txt")
        print(f"plot written to {args.plot}")
    return EXIT_OK


def _optimum_text(
    runs: Sequence[Run],
    rule: Rule,
    load: Load,
    workers: WorkerModel,
    initial_replicas: int,
    duration: float,
) -> str:
    try:
        return format_yardsticks(
            against_optimum(runs, rule, load, workers, initial_replicas, duration)
        )
    except ImportError as exc:  # SciPy is a tooling dependency, like matplotlib
        return f"the optimum needs SciPy ({exc}): pip install -r requirements-dev.txt"
    except OptimumError as exc:
        return f"the optimum: {exc}"


def _print_runs(runs: Sequence[Run], setup: str, optimum: str | None) -> None:
    print(setup)
    print()
    print(format_summary(runs))
    if optimum is not None:
        print(f"\n{MODEL_LABEL}: a model built from KEDA's documented semantics, not KEDA itself;")
        print(f"{NO_POLL_LABEL}: the rule's arithmetic on the true backlog without polling delay.")
        print()
        print(optimum)
    print()
    print(format_writes(runs[0]))
