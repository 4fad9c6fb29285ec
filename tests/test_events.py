"""Kubernetes Events from outcomes (eventscaler/events.py), with a recording sink and a fake clock.

Scenarios covered:
- SuccessfulRescale (Normal) on every write, never rate limited, with the new size, step and
  reason; attached to the rule's target (namespace, its ScaleTargetRef with kind and apiVersion,
  uid), a StatefulSet's or a custom resource's as a Deployment's
- FailedRescale (Warning) when a write fails
- FailedGetTriggerValue (Warning) while a queue cannot be read, FallbackActive (Warning) while the
  fallback runs
- rate limiting: the first Warning at once, then none until `repeat_after` has passed (exactly
  `repeat_after` is enough), counted per rule and per reason independently
- nothing is sent without a Deployment uid or in dry-run, and those ticks do not use up the limit
- a tick that only holds, or failed to read its Deployment, sends nothing
- a sink that raises is logged, not raised
- off the write path (EventSender): with an events API that does not answer, five rules write
  one after the other on one thread before any event is sent (ordering, no timing); a full queue
  drops, counts (queue-full) and logs one line; shutdown flushes what it can within its bound,
  then drops and counts (shutdown), and a tick after it queues nothing; a failing events API
  counts (send-failed) and does not start the quiet period
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from eventscaler.config import Rule, ScaleTargetRef
from eventscaler.engine import (
    FAILED_SOURCE_READ,
    FAILED_TARGET_READ,
    FAILED_WRITE,
    Engine,
    Outcome,
)
from eventscaler.events import NORMAL, WARNING, EventReporter, EventSender
from eventscaler.policy import (
    STEP_AT_TARGET,
    STEP_FALLBACK,
    STEP_UP,
    Decision,
    Reading,
    initial_state,
)
from eventscaler.sources.azure_queue import azure_queue_trigger
from tests.support.waiting import WAIT_SCALE
from tests.test_engine import FakeDeployment, FakeScaler, FakeSource
from tests.test_engine import make_rule as engine_rule

REPEAT = 300.0


@dataclass
class Clock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Sink:
    """Records each event as (namespace, name, uid, type, reason, message), and its target."""

    sent: list[tuple[str, str, str, str, str, str]] = field(default_factory=list)
    targets: list[ScaleTargetRef] = field(default_factory=list)
    error: Exception | None = None

    def record(
        self,
        namespace: str,
        ref: ScaleTargetRef,
        uid: str,
        event_type: str,
        reason: str,
        message: str,
    ) -> None:
        if self.error is not None:
            raise self.error
        self.targets.append(ref)
        self.sent.append((namespace, ref.name, uid, event_type, reason, message))

    def reasons(self) -> list[str]:
        return [event[4] for event in self.sent]


def make_rule(name: str = "orders") -> Rule:
    return Rule(name, "shop", ScaleTargetRef(f"{name}-worker"), (azure_queue_trigger("orders"),))


def decision(current: int, target: int, step: str = STEP_UP, reason: str = "why") -> Decision:
    return Decision(current, target, True, reason, initial_state(0.0), step)


def scaled(rule: Rule, current: int = 1, target: int = 4, **changes: object) -> Outcome:
    values: dict[str, object] = {
        "current": current,
        "decision": decision(current, target, reason="backlog needs 4"),
        "wrote": True,
        "uid": "uid-1",
    }
    values.update(changes)
    return Outcome(rule, **values)  # type: ignore[arg-type]


def queue_failure(rule: Rule, **changes: object) -> Outcome:
    values: dict[str, object] = {
        "readings": (Reading("orders", None, "boom", "Timeout"),),
        "current": 2,
        "decision": decision(2, 2, "failed-readings"),
        "error": "source read failed: orders: boom",
        "error_kind": FAILED_SOURCE_READ,
        "uid": "uid-1",
    }
    values.update(changes)
    return Outcome(rule, **values)  # type: ignore[arg-type]


def reporter(sink: Sink, clock: Clock) -> EventReporter:
    return EventReporter(sink, repeat_after=REPEAT, clock=clock)


def test_a_write_sends_successful_rescale_on_the_deployment() -> None:
    sink = Sink()
    rule = make_rule()
    reporter(sink, Clock()).observe(scaled(rule))
    assert sink.sent == [
        ("shop", "orders-worker", "uid-1", NORMAL, "SuccessfulRescale",
         "New size: 4; reason: [scale-up] backlog needs 4"),
    ]  # fmt: skip


def test_successful_rescale_is_never_rate_limited() -> None:
    sink, clock = Sink(), Clock()
    events = reporter(sink, clock)
    rule = make_rule()
    events.observe(scaled(rule, 1, 4))
    clock.now += 1
    events.observe(scaled(rule, 4, 8))
    events.observe(scaled(rule, 8, 2))
    assert sink.reasons() == ["SuccessfulRescale"] * 3
    assert [e[5].split(";")[0] for e in sink.sent] == ["New size: 4", "New size: 8", "New size: 2"]


def test_a_decision_without_a_write_sends_nothing() -> None:
    sink = Sink()
    rule = make_rule()
    reporter(sink, Clock()).observe(
        Outcome(rule, current=3, decision=decision(3, 3, STEP_AT_TARGET), uid="uid-1")
    )
    assert sink.sent == []


def test_a_failed_write_sends_failed_rescale_with_the_error() -> None:
    sink = Sink()
    rule = make_rule()
    outcome = scaled(rule, 1, 4, wrote=False, error="cannot scale 1 -> 4: Forbidden",
                     error_kind=FAILED_WRITE)  # fmt: skip
    reporter(sink, Clock()).observe(outcome)
    assert sink.sent == [
        ("shop", "orders-worker", "uid-1", WARNING, "FailedRescale",
         "New size: 4; error: cannot scale 1 -> 4: Forbidden"),
    ]  # fmt: skip


def test_a_failed_queue_read_warns_once_per_repeat_after() -> None:
    sink, clock = Sink(), Clock()
    events = reporter(sink, clock)
    rule = make_rule()
    events.observe(queue_failure(rule))
    assert sink.sent == [
        ("shop", "orders-worker", "uid-1", WARNING, "FailedGetTriggerValue",
         "source read failed: orders: boom"),
    ]  # fmt: skip
    for _ in range(10):  # a rule failing every tick
        clock.now += REPEAT / 20
        events.observe(queue_failure(rule))
    assert len(sink.sent) == 1
    clock.now = 100.0 + REPEAT - 0.001
    events.observe(queue_failure(rule))
    assert len(sink.sent) == 1
    clock.now = 100.0 + REPEAT
    events.observe(queue_failure(rule))
    assert sink.reasons() == ["FailedGetTriggerValue"] * 2


def test_the_limit_is_per_rule_and_per_reason() -> None:
    sink, clock = Sink(), Clock()
    events = reporter(sink, clock)
    orders, returns = make_rule("orders"), make_rule("returns")
    events.observe(queue_failure(orders))
    events.observe(queue_failure(returns))
    # The same rule, another reason: its own limit.
    events.observe(scaled(orders, wrote=False, error="x", error_kind=FAILED_WRITE))
    events.observe(queue_failure(orders))
    events.observe(queue_failure(returns))
    events.observe(scaled(orders, wrote=False, error="x", error_kind=FAILED_WRITE))
    assert [(e[1], e[4]) for e in sink.sent] == [
        ("orders-worker", "FailedGetTriggerValue"),
        ("returns-worker", "FailedGetTriggerValue"),
        ("orders-worker", "FailedRescale"),
    ]


def test_fallback_warns_with_its_reason_and_alongside_the_rescale() -> None:
    sink, clock = Sink(), Clock()
    events = reporter(sink, clock)
    rule = make_rule()
    fallback = decision(0, 6, STEP_FALLBACK, "fallback: 3 failed tick(s) >= failureThreshold 3")
    events.observe(queue_failure(rule, current=0, decision=fallback, wrote=True))
    assert sink.reasons() == ["SuccessfulRescale", "FailedGetTriggerValue", "FallbackActive"]
    assert sink.sent[2][3:] == (
        WARNING,
        "FallbackActive",
        "fallback: 3 failed tick(s) >= failureThreshold 3",
    )
    clock.now += 10
    held = decision(6, 6, STEP_FALLBACK, "fallback again")
    events.observe(queue_failure(rule, current=6, decision=held))
    assert len(sink.sent) == 3  # FailedGetTriggerValue and FallbackActive are both limited


@pytest.mark.parametrize("changes", [{"uid": ""}, {"dry_run": True}])
def test_no_uid_or_dry_run_sends_nothing_and_keeps_the_limit_unused(
    changes: dict[str, object],
) -> None:
    sink, clock = Sink(), Clock()
    events = reporter(sink, clock)
    rule = make_rule()
    events.observe(scaled(rule, **changes))
    events.observe(queue_failure(rule, **changes))
    assert sink.sent == []
    events.observe(queue_failure(rule))
    assert sink.reasons() == ["FailedGetTriggerValue"]


def test_a_deployment_that_cannot_be_read_sends_nothing() -> None:
    sink = Sink()
    rule = make_rule()
    outcome = Outcome(rule, error="cannot read the target Deployment: NotFound",
                      error_kind=FAILED_TARGET_READ)  # fmt: skip
    reporter(sink, Clock()).observe(outcome)
    assert sink.sent == []


def test_a_sink_that_raises_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    sink = Sink(error=RuntimeError("API server unreachable"))
    rule = make_rule()
    with caplog.at_level(logging.WARNING, logger="eventscaler.events"):
        reporter(sink, Clock()).observe(scaled(rule))
    assert [r.getMessage() for r in caplog.records] == [
        "shop/orders-worker: cannot record event SuccessfulRescale: API server unreachable"
    ]


def test_an_event_is_attached_to_the_target_of_any_kind() -> None:
    sink = Sink()
    ref = ScaleTargetRef("db", "StatefulSet")
    rule = Rule("db", "shop", ref, (azure_queue_trigger("orders"),))
    reporter(sink, Clock()).observe(scaled(rule))
    assert sink.targets == [ref]
    assert sink.sent[0][:3] == ("shop", "db", "uid-1")


# --- off the write path: EventSender's bounded queue on a thread of its own ------------------


class BlockedSink(Sink):
    """An events API that answers only when released: `entered` counts the calls under way."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = 0
        self._lock = threading.Lock()

    def record(self, *args: Any) -> None:
        with self._lock:
            self.entered += 1
        self.release.wait(60)
        super().record(*args)


@dataclass
class Drops:
    causes: list[str] = field(default_factory=list)

    def __call__(self, cause: str) -> None:
        self.causes.append(cause)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout * WAIT_SCALE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_a_blocked_events_api_never_delays_a_write() -> None:
    sink, drops = BlockedSink(), Drops()
    sender = EventSender(on_drop=drops)
    names = [f"rule-{i}" for i in range(5)]
    scaler = FakeScaler(**{name: FakeDeployment(0) for name in names})
    source = FakeSource(**{name: 40 for name in names})
    reporter = EventReporter(sink, sender=sender)
    engine = Engine(source, scaler, observers=[reporter])
    for name in names:  # on this one thread: a synchronous event would block the next write
        assert engine.evaluate(engine_rule(name, name, name)).wrote
    assert len(scaler.writes) == 5
    assert sink.sent == []  # every write happened while the events API had answered nothing
    sink.release.set()
    wait_until(lambda: len(sink.sent) == 5, "the five events")
    assert sender.close(5.0) == 0
    assert sink.reasons() == ["SuccessfulRescale"] * 5
    assert drops.causes == []


def test_a_full_queue_drops_counts_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    sink, drops = BlockedSink(), Drops()
    sender = EventSender(capacity=2, on_drop=drops)
    events = EventReporter(sink, sender=sender)
    rule = make_rule()
    with caplog.at_level(logging.WARNING, logger="eventscaler.events"):
        events.observe(scaled(rule, 0, 1))
        wait_until(lambda: sink.entered == 1, "the first event under way")
        for target in (2, 3, 4, 5):  # two fit in the queue, two do not
            events.observe(scaled(rule, target - 1, target))
    assert drops.causes == ["queue-full", "queue-full"]
    full = [r.getMessage() for r in caplog.records if "queue is full" in r.getMessage()]
    assert len(full) == 1  # one line per DROP_LOG_INTERVAL, not one per event
    assert full[0].startswith("shop/orders-worker: event SuccessfulRescale dropped: ")
    sink.release.set()
    wait_until(lambda: sender.pending() == 0, "the queue to drain")
    assert [e[5].split(";")[0] for e in sink.sent] == ["New size: 1", "New size: 2", "New size: 3"]
    sender.close(1.0)


def test_shutdown_flushes_within_its_bound_then_drops_and_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink, drops = BlockedSink(), Drops()
    sender = EventSender(on_drop=drops)
    events = EventReporter(sink, sender=sender)
    rule = make_rule()
    for target in (1, 2, 3):
        events.observe(scaled(rule, target - 1, target))
    wait_until(lambda: sink.entered == 1, "the first event under way")
    with caplog.at_level(logging.WARNING, logger="eventscaler.events"):
        assert sender.close(0.05) == 2  # the one under way is left to finish
        events.observe(scaled(rule, 3, 4))  # a tick after close: dropped, never queued
    assert drops.causes == ["shutdown", "shutdown", "shutdown"]
    messages = [r.getMessage() for r in caplog.records]
    assert "2 event(s) dropped at shutdown: not sent within 0.05s" in messages
    assert "shop/orders-worker: event SuccessfulRescale dropped: the daemon is stopping" in messages
    sink.release.set()


def test_shutdown_sends_what_is_queued_when_the_api_answers() -> None:
    sink, drops = Sink(), Drops()
    sender = EventSender(on_drop=drops)
    events = EventReporter(sink, sender=sender)
    for target in range(1, 21):
        events.observe(scaled(make_rule(), target - 1, target))
    assert sender.close(30.0) == 0
    assert len(sink.sent) == 20 and drops.causes == []


def test_a_failing_events_api_counts_and_frees_the_quiet_period() -> None:
    sink, drops = Sink(error=RuntimeError("500 Internal Server Error")), Drops()
    sender = EventSender(on_drop=drops)
    events = EventReporter(sink, repeat_after=REPEAT, clock=Clock(), sender=sender)
    rule = make_rule()
    events.observe(queue_failure(rule))
    wait_until(lambda: drops.causes == ["send-failed"], "the failed send")
    sink.error = None
    events.observe(queue_failure(rule))  # not sent, so no quiet period: the next tick tries
    sender.close(5.0)
    assert sink.reasons() == ["FailedGetTriggerValue"]
