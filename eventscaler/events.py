"""Kubernetes Events about what the autoscaler did, as the HPA writes them, on the scale target
(its real apiVersion and kind: a Deployment, a StatefulSet, a custom resource).

- SuccessfulRescale (Normal) on every write: "New size: 20; reason: ..." like the HPA's.
- FailedRescale (Warning) when a write fails.
- FailedGetTriggerValue (Warning) while a trigger's source cannot be read, FallbackActive
  (Warning) while the fallback runs: at most one per rule and reason every `repeat_after`
  seconds, so a rule failing every tick does not flood the API server (the first one goes out
  at once).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from eventscaler.config import ScaleTargetRef
from eventscaler.daemon import ReloadListener
from eventscaler.engine import FAILED_SOURCE_READ, FAILED_WRITE, Outcome
from eventscaler.policy import STEP_FALLBACK

logger = logging.getLogger(__name__)

NORMAL, WARNING = "Normal", "Warning"
DEFAULT_REPEAT_AFTER = 300.0


class EventSink(Protocol):
    def record(
        self,
        namespace: str,
        ref: ScaleTargetRef,
        uid: str,
        event_type: str,
        reason: str,
        message: str,
    ) -> None: ...


class EventReporter(ReloadListener):
    """An engine observer that turns outcomes into Events."""

    def __init__(
        self,
        sink: EventSink,
        repeat_after: float = DEFAULT_REPEAT_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sink = sink
        self._repeat_after = repeat_after
        self._clock = clock
        self._last_sent: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def observe(self, outcome: Outcome) -> None:
        decision = outcome.decision
        if outcome.wrote and decision is not None:
            self._send(outcome, NORMAL, "SuccessfulRescale",
                       f"New size: {decision.target}; reason: [{decision.step}] {decision.reason}",
                       limited=False)  # fmt: skip
        if outcome.error_kind == FAILED_WRITE and decision is not None:
            self._send(outcome, WARNING, "FailedRescale",
                       f"New size: {decision.target}; error: {outcome.error}")  # fmt: skip
        if outcome.error_kind == FAILED_SOURCE_READ:
            self._send(outcome, WARNING, "FailedGetTriggerValue", outcome.error or "")
        if decision is not None and decision.step == STEP_FALLBACK:
            self._send(outcome, WARNING, "FallbackActive", decision.reason)

    def _send(
        self, outcome: Outcome, kind: str, reason: str, message: str, limited: bool = True
    ) -> None:
        rule = outcome.rule
        if not outcome.uid or outcome.dry_run:
            return  # no target to attach it to, or told not to write
        if limited and not self._due(rule.name, reason):
            return
        try:
            self._sink.record(rule.namespace, rule.scale_target, outcome.uid, kind, reason, message)
        except Exception as exc:
            logger.warning("%s: cannot record event %s: %s", rule.target, reason, exc)
            return
        if limited:
            with self._lock:  # only a sent event starts the quiet period
                self._last_sent[(rule.name, reason)] = self._clock()

    def _due(self, rule: str, reason: str) -> bool:
        with self._lock:
            last = self._last_sent.get((rule, reason))
        return last is None or self._clock() - last >= self._repeat_after

    def rules_changed(self, names: set[str], gone: set[tuple[str, ...]]) -> None:
        """Drop the quiet periods of rules that are gone."""
        with self._lock:
            for key in [k for k in self._last_sent if k[0] not in names]:
                del self._last_sent[key]
