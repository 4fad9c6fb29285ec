"""One tick of one rule: read the target and the triggers, decide, write if needed, report.

Failure is local: whatever goes wrong is reported for this rule alone and never scales anything
(a failed source read is not a zero, a failed target read stops the tick). What a tick did goes
to the observers (metrics, events, status) as one `Outcome`.

The target is read through `eventscaler.target_views.TargetViews`: a steady tick may decide on
an earlier tick's view of it (within `target_resync` seconds), but a decision that would write
is taken again on a fresh read first.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from eventscaler import retry
from eventscaler.config import Rule, ScaleTargetRef
from eventscaler.policy import (
    STEP_PAUSED,
    Decision,
    Reading,
    RuleState,
    decide,
    initial_state,
    pause_from_annotations,
)
from eventscaler.target_views import TargetViews
from eventscaler.triggers import Measured, Trigger

logger = logging.getLogger(__name__)


class ValueSource(Protocol):
    def read_value(self, trigger: Trigger) -> float | Measured: ...


class TargetView(Protocol):
    """What a tick needs of its scale target: the replicas, the pause annotations, the uid."""

    @property
    def replicas(self) -> int: ...

    @property
    def annotations(self) -> dict[str, str]: ...

    @property
    def uid(self) -> str: ...


class Scaler(Protocol):
    def read(self, namespace: str, ref: ScaleTargetRef) -> TargetView: ...

    def set_replicas(self, namespace: str, ref: ScaleTargetRef, replicas: int) -> None: ...


# The share of its polling interval one tick may spend, retries included.
TICK_BUDGET_SHARE = 0.8
# A tick that starts within this share of its polling interval of its slot on the rule's
# schedule takes the slot's time (see TickClock).
SLOT_TOLERANCE_SHARE = 0.25

# Outcome.error_kind values.
FAILED_TARGET_READ = "target-read"
FAILED_SOURCE_READ = "source-read"
FAILED_WRITE = "write"
FAILED_BUG = "internal"


@dataclass(frozen=True)
class Outcome:
    """What one tick of one rule did."""

    rule: Rule
    readings: tuple[Reading, ...] = ()
    current: int | None = None  # replicas found; None when the target could not be read
    decision: Decision | None = None
    wrote: bool = False
    dry_run: bool = False
    error: str | None = None  # set when the tick could not do all it should
    error_kind: str | None = None
    uid: str = ""  # of the target, for events
    duration: float = 0.0  # seconds the tick took
    finished_at: float = field(default_factory=time.time)  # wall clock, for status
    cooldown_left: float | None = None  # seconds until the step to zero, while counting down

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def replicas_after(self) -> int | None:
        """The target's replicas once the tick is done (None: the target could not be read)."""
        if self.current is None:
            return None
        if self.wrote and self.decision is not None:
            return self.decision.target
        return self.current


class Observer(Protocol):
    def observe(self, outcome: Outcome) -> None: ...


class TickClock:
    """The times of one rule's ticks: their slots on its schedule, not when each happened to start.

    The scheduler starts a rule's ticks every pollingInterval, each a little late by a different
    amount (its wake-up, a thread pool busy with other rules). Decided on those start times, a
    cooldown of exactly N intervals would be missed by a few milliseconds about half the time and
    the step to zero would come one interval late. So the first tick takes the time it started,
    and each later tick that starts within SLOT_TOLERANCE_SHARE of an interval of a whole number
    of intervals after it takes that exact time. A tick further off (the interval changed, a
    stall) takes the time it started and the schedule starts again from it. Tick times never go
    backwards and are never more than SLOT_TOLERANCE_SHARE of an interval ahead of the clock.
    """

    def __init__(self) -> None:
        self._anchor: float | None = None
        self._interval = 0.0
        self._slot = 0
        self._last = -math.inf

    def time_of(self, started: float, interval: float) -> float:
        """The time of a tick that started at `started` (read once, before any read)."""
        if self._anchor is not None and interval == self._interval:
            slot = round((started - self._anchor) / interval)
            slot_time = self._anchor + slot * interval
            if slot > self._slot and abs(started - slot_time) <= SLOT_TOLERANCE_SHARE * interval:
                self._slot, self._last = slot, slot_time
                return slot_time
        self._anchor, self._interval, self._slot = max(started, self._last), interval, 0
        self._last = self._anchor
        return self._anchor


@dataclass
class _Memory:
    target: tuple[str, str, str, str]  # the Rule.target_key the state belongs to
    state: RuleState
    last_step: str | None = None


class Engine:
    """Evaluates rules and remembers each rule's state between ticks.

    `evaluate` is called from several threads at once, but never twice at once for one rule (the
    scheduler guarantees it), so one lock around the memory dict is enough.
    """

    def __init__(
        self,
        source: ValueSource,
        scaler: Scaler,
        dry_run: bool = False,
        clock: Callable[[], float] = time.monotonic,
        observers: Sequence[Observer] = (),
        target_resync: float = 0.0,
    ) -> None:
        self._source = source
        self._scaler = scaler
        self._targets = TargetViews(scaler, target_resync, clock)
        self._dry_run = dry_run
        self._clock = clock
        self._observers = list(observers)
        self._memory: dict[str, _Memory] = {}
        self._tick_clocks: dict[str, TickClock] = {}
        self._failing_ticks: dict[str, int] = {}
        self._intervals: dict[str, float] = {}  # what the scheduler runs each rule at
        self._next_intervals: dict[str, float] = {}  # what the replicas each rule left ask for
        self._lock = threading.Lock()

    def ticks_every(self, name: str, interval: float) -> None:
        """The scheduler runs rule `name` every `interval` s from now on (its pollingInterval
        unless told): its ticks' slots (TickClock) and their retry budget follow."""
        with self._lock:
            self._intervals[name] = interval

    def interval_of(self, rule: Rule) -> float:
        with self._lock:
            return self._intervals.get(rule.name, rule.polling_interval)

    def next_interval(self, rule: Rule) -> float:
        """The interval the replicas the rule's last tick left ask for (Rule.interval_at): the
        daemon places the rule at it. pollingInterval until a tick has read the target."""
        with self._lock:
            return self._next_intervals.get(rule.name, rule.polling_interval)

    def evaluate(self, rule: Rule) -> Outcome:
        started = time.perf_counter()
        interval = self.interval_of(rule)
        try:
            # Retries inside the tick stop in time for the next one.
            with retry.budget(interval * TICK_BUDGET_SHARE):
                outcome = self._evaluate(rule, interval=interval)
        except Exception as exc:  # a bug must not kill the scheduler thread or other rules
            logger.exception("%s: rule %s: unexpected error", rule.target, rule.name)
            outcome = Outcome(rule, error=f"unexpected error: {type(exc).__name__}",
                              error_kind=FAILED_BUG)  # fmt: skip
        outcome = _with_duration(outcome, time.perf_counter() - started)
        if outcome.replicas_after is not None:
            with self._lock:
                self._next_intervals[rule.name] = rule.interval_at(outcome.replicas_after)
        for observer in self._observers:
            try:
                observer.observe(outcome)
            except Exception:  # reporting must never stop scaling
                logger.exception("%s: rule %s: reporting failed", rule.target, rule.name)
        return outcome

    def forget_rules_except(self, rules: Iterable[Rule]) -> None:
        """Drop the state of rules that are gone; rules that remain keep theirs (reload)."""
        rules = list(rules)
        keep = {rule.name for rule in rules}
        with self._lock:
            for name in list(self._memory):
                if name not in keep:
                    del self._memory[name]
                    self._failing_ticks.pop(name, None)
                    self._tick_clocks.pop(name, None)
            for gone in (self._intervals, self._next_intervals):
                for name in [n for n in gone if n not in keep]:
                    del gone[name]
        self._targets.forget_rules_except(rules)

    def _evaluate(
        self,
        rule: Rule,
        readings: tuple[Reading, ...] | None = None,
        conflicted: bool = False,
        fresh: bool = False,
        now: float | None = None,
        interval: float | None = None,
    ) -> Outcome:
        """One tick; `readings` and `now` are given when the tick is decided again on a fresh
        read of the target (`fresh`: before a write; `conflicted`: after a write conflicted)."""
        if now is None:
            # Before any read: how long reads take must not move it.
            now = self._tick_time(rule, interval or rule.polling_interval)
        log = _RuleLog(rule, self._dry_run)
        try:
            target, kept = self._targets.read(rule, fresh=fresh or conflicted, interval=interval)
        except Exception as exc:
            error = f"cannot read the target {rule.scale_target.kind}: {exc}"
            return self._fail(Outcome(rule), log, error, FAILED_TARGET_READ)
        pause = pause_from_annotations(target.annotations)
        # A paused rule reads no source: "leave it alone" includes not billing source calls.
        if pause:
            readings = ()
        elif readings is None:
            readings = tuple(self._read(trigger) for trigger in rule.triggers)
        memory = self._remember(rule, now)
        decision = decide(rule, readings, target.replicas, memory.state, now, pause)
        if decision.changes and kept:
            # Decided on an earlier tick's view of the target: read it again before anything is
            # written (a pause or a count set by hand since then wins), and decide on that.
            return self._evaluate(rule, readings or None, conflicted, fresh=True, now=now)
        memory.state = decision.state
        log.decision(decision, memory.last_step)
        memory.last_step = decision.step
        cooldown_left = _cooldown_left(rule, decision, now)
        outcome = Outcome(rule, readings, target.replicas, decision, dry_run=self._dry_run,
                          uid=target.uid, cooldown_left=cooldown_left)  # fmt: skip
        if decision.changes:
            written = self._write(outcome, target, memory, log, conflicted, now)
            if written is None:  # a conflict: decide again on the same readings, once
                return self._evaluate(rule, readings or None, True, now=now)
            if written.failed:
                return written
            outcome = written
        return self._settle(outcome, log)

    def _write(
        self,
        outcome: Outcome,
        target: TargetView,
        memory: _Memory,
        log: _RuleLog,
        conflicted: bool,
        now: float,
    ) -> Outcome | None:
        """Writes the decision (dry-run: logs it); None when a 409 asks to decide again."""
        rule, decision = outcome.rule, outcome.decision
        assert decision is not None and outcome.current is not None
        if self._dry_run:
            log.would_scale(decision)
            return outcome
        try:
            self._scaler.set_replicas(rule.namespace, rule.scale_target, decision.target)
        except Exception as exc:
            if getattr(exc, "status", None) == 409 and not conflicted:
                # Someone else changed the target between our read and write.
                log.conflict(exc)
                return None
            self._targets.forget(rule)
            error = f"cannot scale {outcome.current} -> {decision.target}: {exc}"
            return self._fail(outcome, log, error, FAILED_WRITE)
        self._targets.wrote(rule, target, decision.target)
        memory.state = decision.state.record_scale(now, outcome.current, decision.target)
        log.scaled(decision)
        return _replace(outcome, wrote=True)

    def _settle(self, outcome: Outcome, log: _RuleLog) -> Outcome:
        """A failed source read makes the tick failed (after what it could do was done)."""
        failed_reads = [r for r in outcome.readings if not r.ok]
        if failed_reads:
            errors = "; ".join(f"{r.trigger}: {r.error}" for r in failed_reads)
            return self._fail(outcome, log, f"source read failed: {errors}", FAILED_SOURCE_READ)
        with self._lock:
            self._failing_ticks.pop(outcome.rule.name, None)
        return outcome

    def _tick_time(self, rule: Rule, interval: float) -> float:
        started = self._clock()
        with self._lock:
            clock = self._tick_clocks.setdefault(rule.name, TickClock())
        return clock.time_of(started, interval)  # one tick of a rule at a time

    def _read(self, trigger: Trigger) -> Reading:
        try:
            value = self._source.read_value(trigger)
            if isinstance(value, Measured):
                return Reading(trigger.label, value.value, backlog=value.backlog)
            return Reading(trigger.label, value)
        except Exception as exc:
            kind = getattr(exc, "kind", None) or type(exc).__name__
            return Reading(trigger.label, None, str(exc) or type(exc).__name__, kind)

    def _remember(self, rule: Rule, now: float) -> _Memory:
        """This rule's memory; a new one (start-up counts as activity) if it now targets another
        object (another name, kind or apiVersion)."""
        with self._lock:
            memory = self._memory.get(rule.name)
            if memory is None or memory.target != rule.target_key:
                memory = _Memory(rule.target_key, initial_state(now))
                self._memory[rule.name] = memory
            return memory

    def _fail(self, outcome: Outcome, log: _RuleLog, error: str, kind: str) -> Outcome:
        name = outcome.rule.name
        with self._lock:
            ticks = self._failing_ticks[name] = self._failing_ticks.get(name, 0) + 1
        log.failure(error, ticks)
        return _replace(outcome, error=error, error_kind=kind)


def _replace(outcome: Outcome, **changes: object) -> Outcome:
    return replace(outcome, **changes)  # type: ignore[arg-type]


def _with_duration(outcome: Outcome, seconds: float) -> Outcome:
    return _replace(outcome, duration=seconds, finished_at=time.time())


def _cooldown_left(rule: Rule, decision: Decision, now: float) -> float | None:
    """Seconds until the step to zero, while an idle rule above zero counts down."""
    if rule.min_replicas > 0 or decision.active or decision.target == 0:
        return None
    if decision.step == STEP_PAUSED:
        return None  # a paused rule does not count down to anything
    return max(0.0, rule.cooldown_period - (now - decision.state.last_active))


class _RuleLog:
    """Log lines of one rule's tick, each starting with namespace/name as operators grep for."""

    def __init__(self, rule: Rule, dry_run: bool) -> None:
        self._rule = rule
        self._extra = {
            "rule": rule.name,
            "namespace": rule.namespace,
            "target_kind": rule.scale_target.kind,
            "target": rule.scale_target.name,
            "dry_run": dry_run,
        }

    def decision(self, decision: Decision, last_step: str | None) -> None:
        # Every tick at DEBUG; at INFO when the reason changes (a hold that started, a pause...).
        changed = last_step is not None and decision.step != last_step and not decision.changes
        level = logging.INFO if changed else logging.DEBUG
        if not logger.isEnabledFor(level):
            return  # the common case of a quiet tick: not even its extra fields are built
        logger.log(
            level,
            "%s: rule %s: %d -> %d [%s]: %s",
            self._rule.target,
            self._rule.name,
            decision.current,
            decision.target,
            decision.step,
            decision.reason,
            extra=self._with(decision),
        )

    def scaled(self, decision: Decision) -> None:
        self._write_line("scaled", decision)

    def would_scale(self, decision: Decision) -> None:
        self._write_line("dry-run: would scale", decision)

    def _write_line(self, what: str, decision: Decision) -> None:
        logger.info(
            "%s: %s %d -> %d (rule %s [%s]: %s)",
            self._rule.target,
            what,
            decision.current,
            decision.target,
            self._rule.name,
            decision.step,
            decision.reason,
            extra=self._with(decision),
        )

    def conflict(self, error: Exception) -> None:
        logger.warning(
            "%s: rule %s: write conflicted (%s): reading the target again",
            self._rule.target,
            self._rule.name,
            error,
            extra=self._extra,
        )

    def failure(self, error: str, failing_ticks: int) -> None:
        logger.error(
            "%s: rule %s: %s (failing for %d tick%s)",
            self._rule.target,
            self._rule.name,
            error,
            failing_ticks,
            "" if failing_ticks == 1 else "s",
            extra=self._extra,
        )

    def _with(self, decision: Decision) -> dict[str, object]:
        return {
            **self._extra,
            "from_replicas": decision.current,
            "to_replicas": decision.target,
            "step": decision.step,
        }
