"""One tick of one rule: read the queues, read the replicas, decide, write if needed, log why.

Failure is local: whatever goes wrong is reported for this rule alone and never scales anything
(a failed queue read is not a zero, a failed replica read stops the tick).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from eventscaler.config import AzureQueueTrigger, Rule
from eventscaler.policy import Decision, Reading, RuleState, decide, initial_state

logger = logging.getLogger(__name__)


class QueueSource(Protocol):
    def read_length(self, trigger: AzureQueueTrigger) -> int: ...


class Scaler(Protocol):
    def read_replicas(self, namespace: str, name: str) -> int: ...

    def set_replicas(self, namespace: str, name: str, replicas: int) -> None: ...


@dataclass(frozen=True)
class Outcome:
    """What one tick of one rule did."""

    rule: str
    decision: Decision | None = None
    wrote: bool = False
    error: str | None = None  # set when the tick could not do all it should

    @property
    def failed(self) -> bool:
        return self.error is not None


@dataclass
class _Memory:
    target: str  # the namespace/deployment the state belongs to
    state: RuleState


class Engine:
    """Evaluates rules and remembers each rule's state between ticks.

    `evaluate` is called from several threads at once, but never twice at once for one rule (the
    scheduler guarantees it), so one lock around the memory dict is enough.
    """

    def __init__(
        self,
        source: QueueSource,
        scaler: Scaler,
        dry_run: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._scaler = scaler
        self._dry_run = dry_run
        self._clock = clock
        self._memory: dict[str, _Memory] = {}
        self._failing_ticks: dict[str, int] = {}
        self._lock = threading.Lock()

    def evaluate(self, rule: Rule) -> Outcome:
        try:
            return self._evaluate(rule)
        except Exception as exc:  # a bug must not kill the scheduler thread or other rules
            logger.exception("%s: rule %s: unexpected error", rule.target, rule.name)
            return Outcome(rule.name, error=f"unexpected error: {type(exc).__name__}")

    def forget_rules_except(self, rules: Iterable[Rule]) -> None:
        """Drop the state of rules that are gone; rules that remain keep theirs (reload)."""
        keep = {rule.name for rule in rules}
        with self._lock:
            for name in list(self._memory):
                if name not in keep:
                    del self._memory[name]
                    self._failing_ticks.pop(name, None)

    def _evaluate(self, rule: Rule) -> Outcome:
        readings = [self._read(rule, trigger) for trigger in rule.triggers]
        log = _RuleLog(rule, self._dry_run)
        try:
            current = self._scaler.read_replicas(rule.namespace, rule.deployment)
        except Exception as exc:
            return self._fail(rule, log, f"cannot read replicas: {exc}")
        now = self._clock()
        memory = self._remember(rule, now)
        decision = decide(rule, readings, current, memory.state, now)
        memory.state = decision.state
        failed_reads = [r for r in readings if not r.ok]
        log.decision(decision)

        wrote = False
        if decision.changes:
            if self._dry_run:
                log.would_scale(decision)
            else:
                try:
                    self._scaler.set_replicas(rule.namespace, rule.deployment, decision.target)
                except Exception as exc:
                    error = f"cannot scale {current} -> {decision.target}: {exc}"
                    return self._fail(rule, log, error, decision)
                memory.state = decision.state.record_scale(now, current, decision.target)
                wrote = True
                log.scaled(decision)
        if failed_reads:
            errors = "; ".join(f"{r.trigger}: {r.error}" for r in failed_reads)
            return self._fail(rule, log, f"queue read failed: {errors}", decision, wrote)
        with self._lock:
            self._failing_ticks.pop(rule.name, None)
        return Outcome(rule.name, decision, wrote)

    def _read(self, rule: Rule, trigger: AzureQueueTrigger) -> Reading:
        try:
            return Reading(trigger.label, self._source.read_length(trigger))
        except Exception as exc:
            return Reading(trigger.label, None, str(exc) or type(exc).__name__)

    def _remember(self, rule: Rule, now: float) -> _Memory:
        """This rule's memory; a new one (start-up counts as activity) if it now targets another
        Deployment."""
        with self._lock:
            memory = self._memory.get(rule.name)
            if memory is None or memory.target != rule.target:
                memory = _Memory(rule.target, initial_state(now))
                self._memory[rule.name] = memory
            return memory

    def _fail(
        self,
        rule: Rule,
        log: _RuleLog,
        error: str,
        decision: Decision | None = None,
        wrote: bool = False,
    ) -> Outcome:
        with self._lock:
            ticks = self._failing_ticks[rule.name] = self._failing_ticks.get(rule.name, 0) + 1
        log.failure(error, ticks)
        return Outcome(rule.name, decision, wrote, error)


class _RuleLog:
    """Log lines of one rule's tick, each starting with namespace/name as operators grep for."""

    def __init__(self, rule: Rule, dry_run: bool) -> None:
        self._rule = rule
        self._extra = {
            "rule": rule.name,
            "namespace": rule.namespace,
            "deployment": rule.deployment,
            "dry_run": dry_run,
        }

    def decision(self, decision: Decision) -> None:
        logger.debug(
            "%s: rule %s: %d -> %d: %s",
            self._rule.target,
            self._rule.name,
            decision.current,
            decision.target,
            decision.reason,
            extra=self._with(decision),
        )

    def scaled(self, decision: Decision) -> None:
        logger.info(
            "%s: scaled %d -> %d (rule %s: %s)",
            self._rule.target,
            decision.current,
            decision.target,
            self._rule.name,
            decision.reason,
            extra=self._with(decision),
        )

    def would_scale(self, decision: Decision) -> None:
        logger.info(
            "%s: dry-run: would scale %d -> %d (rule %s: %s)",
            self._rule.target,
            decision.current,
            decision.target,
            self._rule.name,
            decision.reason,
            extra=self._with(decision),
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
        return {**self._extra, "from_replicas": decision.current, "to_replicas": decision.target}
