"""Kubernetes Events about what the autoscaler did, as the HPA writes them, on the scale target
(its real apiVersion and kind: a Deployment, a StatefulSet, a custom resource).

- SuccessfulRescale (Normal) on every write: "New size: 20; reason: ..." like the HPA's.
- FailedRescale (Warning) when a write fails.
- FailedGetTriggerValue (Warning) while a trigger's source cannot be read, FallbackActive
  (Warning) while the fallback runs: at most one per rule and reason every `repeat_after`
  seconds, so a rule failing every tick does not flood the API server (the first one goes out
  at once).

Events are reporting, not scaling: in the daemon they go out from a bounded queue on a thread of
their own (`EventSender`), so a tick never waits for the events API, however slow or failing it
is. An event that cannot be queued (the queue is full), is still queued at shutdown once the
flush time is up, or is refused by the API is counted (`eventscaler_events_dropped_total`, by
cause) and logged, never lost silently.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from eventscaler.config import ScaleTargetRef
from eventscaler.daemon import ReloadListener
from eventscaler.engine import FAILED_SOURCE_READ, FAILED_WRITE, Outcome
from eventscaler.policy import STEP_FALLBACK

logger = logging.getLogger(__name__)

NORMAL, WARNING = "Normal", "Warning"
DEFAULT_REPEAT_AFTER = 300.0
# Events waiting to be sent, at most: a mass event (every rule writes in one tick) of 1,000 rules
# fits, and the queue's memory stays bounded (a few hundred bytes an event) whatever happens.
DEFAULT_QUEUE_CAPACITY = 2000
# At shutdown, how long the events still queued may take to go out.
DEFAULT_FLUSH_SECONDS = 5.0
# A full queue logs at most one line per this many seconds (with the count dropped since).
DROP_LOG_INTERVAL = 30.0
# eventscaler_events_dropped_total's causes.
DROPPED_QUEUE_FULL, DROPPED_SHUTDOWN, DROPPED_SEND_FAILED = "queue-full", "shutdown", "send-failed"
DROP_CAUSES = (DROPPED_QUEUE_FULL, DROPPED_SHUTDOWN, DROPPED_SEND_FAILED)


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


class EventSender:
    """Sends events one at a time from a bounded queue, on a thread of its own.

    `submit` never blocks: a job that finds the queue full is dropped, counted and logged. Each
    job returns whether its event went out; False counts as dropped (send-failed). `close`
    gives the queued jobs up to `flush_seconds` to go out, then drops the rest.
    """

    def __init__(
        self,
        capacity: int = DEFAULT_QUEUE_CAPACITY,
        on_drop: Callable[[str], None] = lambda cause: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._capacity = max(1, capacity)
        self._on_drop = on_drop
        self._clock = clock
        self._jobs: deque[Callable[[], bool]] = deque()
        self._changed = threading.Condition()
        self._sending = False
        self._closed = False
        self._full_since_log = 0  # drops of a full queue not logged yet
        self._last_full_log: float | None = None
        self._thread = threading.Thread(target=self._run, name="event-sender", daemon=True)
        self._thread.start()

    def submit(self, what: str, job: Callable[[], bool]) -> bool:
        """Queue `job`; `what` ("namespace/name: event REASON") names it in a drop's log line."""
        with self._changed:
            if self._closed:
                cause = DROPPED_SHUTDOWN
            elif len(self._jobs) >= self._capacity:
                cause = DROPPED_QUEUE_FULL
                self._full_since_log += 1
            else:
                self._jobs.append(job)
                self._changed.notify_all()
                return True
        self._on_drop(cause)
        if cause == DROPPED_QUEUE_FULL:
            self._log_full(what)
        else:
            logger.warning("%s dropped: the daemon is stopping", what)
        return False

    def pending(self) -> int:
        """Jobs queued or being sent."""
        with self._changed:
            return len(self._jobs) + (1 if self._sending else 0)

    def close(self, flush_seconds: float = DEFAULT_FLUSH_SECONDS) -> int:
        """Stop taking jobs, let the queued ones go out for up to `flush_seconds`, drop the rest;
        returns how many were dropped. An event being sent at the deadline is left to finish."""
        deadline = self._clock() + flush_seconds
        with self._changed:
            self._closed = True
            while self._jobs and (left := deadline - self._clock()) > 0:
                self._changed.wait(left)
            dropped = len(self._jobs)
            self._jobs.clear()
            self._changed.notify_all()
        for _ in range(dropped):
            self._on_drop(DROPPED_SHUTDOWN)
        if dropped:
            logger.warning(
                "%d event(s) dropped at shutdown: not sent within %gs", dropped, flush_seconds
            )
        return dropped

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._jobs and not self._closed:
                    self._changed.wait()
                if not self._jobs:
                    return
                job = self._jobs.popleft()
                self._sending = True
            try:
                sent = job()
            except Exception:  # a bug in a job must not stop the sender
                logger.exception("sending an event failed")
                sent = False
            with self._changed:
                self._sending = False
                self._changed.notify_all()
            if not sent:
                self._on_drop(DROPPED_SEND_FAILED)

    def _log_full(self, what: str) -> None:
        now = self._clock()
        with self._changed:
            if self._last_full_log is not None and now - self._last_full_log < DROP_LOG_INTERVAL:
                return
            self._last_full_log, count, self._full_since_log = now, self._full_since_log, 0
        logger.warning(
            "%s dropped: the event queue is full (%d waiting); %d dropped since the last such "
            "line (eventscaler_events_dropped_total counts them all)",
            what, self._capacity, count,
        )  # fmt: skip


class EventReporter(ReloadListener):
    """An engine observer that turns outcomes into Events.

    With a `sender`, events go out from its queue (the tick goes on at once); without one, on
    the tick's own thread (tests, tools)."""

    def __init__(
        self,
        sink: EventSink,
        repeat_after: float = DEFAULT_REPEAT_AFTER,
        clock: Callable[[], float] = time.monotonic,
        sender: EventSender | None = None,
    ) -> None:
        self._sink = sink
        self._repeat_after = repeat_after
        self._clock = clock
        self._sender = sender
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
        if limited and not self._take_slot(rule.name, reason):
            return

        def deliver() -> bool:
            try:
                self._sink.record(
                    rule.namespace, rule.scale_target, outcome.uid, kind, reason, message
                )
            except Exception as exc:
                logger.warning("%s: cannot record event %s: %s", rule.target, reason, exc)
                if limited:  # only a sent event starts the quiet period
                    self._free_slot(rule.name, reason)
                return False
            return True

        if self._sender is None:
            deliver()
        elif not self._sender.submit(f"{rule.target}: event {reason}", deliver) and limited:
            self._free_slot(rule.name, reason)

    def _take_slot(self, rule: str, reason: str) -> bool:
        """Whether a limited event is due; if so its quiet period starts now."""
        now = self._clock()
        with self._lock:
            last = self._last_sent.get((rule, reason))
            if last is not None and now - last < self._repeat_after:
                return False
            self._last_sent[(rule, reason)] = now
            return True

    def _free_slot(self, rule: str, reason: str) -> None:
        with self._lock:
            self._last_sent.pop((rule, reason), None)

    def rules_changed(self, names: set[str], gone: set[tuple[str, ...]]) -> None:
        """Drop the quiet periods of rules that are gone."""
        with self._lock:
            for key in [k for k in self._last_sent if k[0] not in names]:
                del self._last_sent[key]
