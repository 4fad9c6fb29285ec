"""One tick of one rule (eventscaler/engine.py) with a fake queue source, a fake scale-target API
and a fake clock. Scenarios covered:
- a tick reads the Deployment and the queues, decides, writes, and reports one Outcome (readings,
  current, decision, uid); the state carries over so the next tick holds
- failure is local: a Deployment that cannot be read (no queue read, no decision), a queue that
  fails (never a scale-down), an unexpected error inside a tick (reported as "internal"), each
  alone, while the other rules scale; the failing-tick count is logged and reset by a good tick
- dry-run never writes, logs what it would do, and records no scale event
- a failed write reports the error and does not record a scale event (a rate policy is not used
  up by a write that did not happen)
- a paused Deployment: no queue is read; paused-replicas is written
- observers: each called once per tick with the returned Outcome, also on failure; an observer
  that raises is logged and neither stops the tick nor the other observers
- the decision line is DEBUG, but INFO when the step changes without a write; a write is INFO
- cooldown_left counts down while an idle rule waits above zero
- forget_rules_except drops a gone rule's state (start-up counts as activity again) and keeps the
  others'; a rule that now targets another object (another name, or the same name of another
  kind) starts afresh
- the target is read and written by its ScaleTargetRef (kind and apiVersion passed through), and a
  failed read names the kind
- a tick's time: read at its start (how long the reads take does not move it), and its slot on the
  rule's schedule (TickClock): ticks that start a few milliseconds late by different amounts still
  step to zero at exactly cooldownPeriod (KEDA's own azure-queue e2e numbers: poll 5 s, cooldown
  10 s); TickClock snaps within a quarter interval either way, starts again after a stall or an
  interval change, and never goes backwards
- the steady tick (target_resync 30 s, 5 s ticks, K = 6), by counts: N quiet ticks read the
  target ceil(N / K) times and write nothing; a write is preceded by a read on the same tick (one,
  not two, when the tick read anyway) and decided on the same readings; our write's count is kept;
  a pause added by hand stops the write it would have let through, and is seen within K ticks
  (no source read after); a count set by hand is seen and corrected within K ticks; a failed read
  or write reads again on the next tick; a 409 reads again once; a reload drops a gone rule's view
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import pytest

from eventscaler.config import (
    Behavior,
    Rule,
    ScaleTargetRef,
    ScalingPolicy,
    ScalingRules,
)
from eventscaler.engine import (
    FAILED_BUG,
    FAILED_SOURCE_READ,
    FAILED_TARGET_READ,
    FAILED_WRITE,
    Engine,
    Outcome,
    TickClock,
)
from eventscaler.policy import (
    PAUSED,
    PAUSED_REPLICAS,
    STEP_AT_TARGET,
    STEP_COOLDOWN,
    STEP_FAILED,
    STEP_PAUSED,
    STEP_TO_ZERO,
    STEP_TOLERANCE,
    STEP_UP,
)
from eventscaler.sources.azure_queue import azure_queue_trigger
from eventscaler.triggers import Trigger

T0 = 10_000.0


@dataclass
class Clock:
    now: float = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeDeployment:
    replicas: int
    annotations: dict[str, str] = field(default_factory=dict)
    uid: str = "uid-1"


class FakeScaler:
    """Targets by "namespace/name"; an entry in `errors` makes that call raise. A read answers a
    copy, as the API server does: a later change is seen only by a later read. `calls` lists
    every read and write in order."""

    def __init__(self, **deployments: FakeDeployment) -> None:
        self.deployments = {f"shop/{name}": d for name, d in deployments.items()}
        self.read_errors: dict[str, Exception] = {}
        self.write_errors: dict[str, Exception] = {}
        self.writes: list[tuple[str, int]] = []
        self.refs: list[ScaleTargetRef] = []
        self.calls: list[str] = []

    def read(self, namespace: str, ref: ScaleTargetRef) -> FakeDeployment:
        self.refs.append(ref)
        key = f"{namespace}/{ref.name}"
        self.calls.append("read")
        if key in self.read_errors:
            raise self.read_errors[key]
        found = self.deployments[key]
        if isinstance(found, FakeDeployment):
            return replace(found, annotations=dict(found.annotations))
        return found

    def set_replicas(self, namespace: str, ref: ScaleTargetRef, replicas: int) -> None:
        self.refs.append(ref)
        key = f"{namespace}/{ref.name}"
        self.calls.append(f"write {replicas}")
        if key in self.write_errors:
            raise self.write_errors[key]
        self.writes.append((key, replicas))
        self.deployments[key].replicas = replicas

    def reads(self) -> int:
        return self.calls.count("read")


class FakeSource:
    """Queue lengths by queue name; an exception as the value makes the read raise."""

    def __init__(self, **lengths: int | Exception) -> None:
        self.lengths = lengths
        self.calls: list[str] = []

    def read_value(self, trigger: Trigger) -> float:
        self.calls.append(trigger.settings.queue_name)
        value = self.lengths[trigger.settings.queue_name]
        if isinstance(value, Exception):
            raise value
        return value


class QueueError(Exception):
    kind = "QueueNotFound"


@dataclass
class Recorder:
    seen: list[Outcome] = field(default_factory=list)

    def observe(self, outcome: Outcome) -> None:
        self.seen.append(outcome)


class Exploding:
    def observe(self, outcome: Outcome) -> None:
        raise RuntimeError("metrics are broken")


def make_rule(
    name: str = "orders",
    queue: str = "orders",
    deployment: str = "orders",
    behavior: Behavior | None = None,
    min_replicas: int = 0,
    kind: str = "Deployment",
) -> Rule:
    return Rule(
        name,
        "shop",
        ScaleTargetRef(deployment, kind),
        (azure_queue_trigger(queue, queue_length=5.0),),
        min_replicas=min_replicas,
        max_replicas=20,
        cooldown_period=300.0,
        behavior=behavior or Behavior(),
    )


def test_a_tick_scales_and_reports_one_outcome() -> None:
    scaler, source = FakeScaler(orders=FakeDeployment(1)), FakeSource(orders=50)
    recorder = Recorder()
    engine = Engine(source, scaler, clock=Clock(), observers=[recorder])
    outcome = engine.evaluate(make_rule())
    assert scaler.writes == [("shop/orders", 10)]
    assert (outcome.wrote, outcome.failed) == (True, False)
    assert (outcome.current, outcome.uid) == (1, "uid-1")
    assert outcome.decision is not None
    assert (outcome.decision.target, outcome.decision.step) == (10, STEP_UP)
    assert [(r.trigger, r.value) for r in outcome.readings] == [("orders", 50)]
    assert outcome.duration >= 0
    assert recorder.seen == [outcome]
    second = engine.evaluate(make_rule())
    assert second.decision is not None
    assert (second.decision.step, second.wrote) == (STEP_AT_TARGET, False)
    assert scaler.writes == [("shop/orders", 10)]


def test_failure_is_local_to_each_rule(caplog: pytest.LogCaptureFixture) -> None:
    scaler = FakeScaler(broken=FakeDeployment(2), failing=FakeDeployment(6), fine=FakeDeployment(1))
    scaler.read_errors["shop/broken"] = RuntimeError("NotFound")
    source = FakeSource(broken=1, failing=QueueError("queue gone"), fine=20)
    engine = Engine(source, scaler, clock=Clock())
    with caplog.at_level(logging.ERROR, logger="eventscaler.engine"):
        broken = engine.evaluate(make_rule("broken", "broken", "broken"))
        failing = engine.evaluate(make_rule("failing", "failing", "failing"))
        fine = engine.evaluate(make_rule("fine", "fine", "fine"))
    assert (broken.error_kind, broken.decision, broken.readings) == (
        FAILED_TARGET_READ, None, ()
    )  # fmt: skip
    assert broken.error == "cannot read the target Deployment: NotFound"
    assert "broken" not in source.calls  # no queue read for a Deployment we cannot scale
    assert failing.error_kind == FAILED_SOURCE_READ
    assert failing.error == "source read failed: failing: queue gone"
    assert failing.readings[0].kind == "QueueNotFound"
    assert failing.decision is not None
    assert (failing.decision.target, failing.decision.step) == (6, STEP_FAILED)
    assert (fine.failed, fine.wrote) == (False, True)
    assert scaler.writes == [("shop/fine", 4)]
    assert [r.getMessage() for r in caplog.records] == [
        "shop/broken: rule broken: cannot read the target Deployment: NotFound "
        "(failing for 1 tick)",
        "shop/failing: rule failing: source read failed: failing: queue gone (failing for 1 tick)",
    ]


def test_the_failing_tick_count_grows_and_a_good_tick_resets_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scaler = FakeScaler(orders=FakeDeployment(1))
    scaler.read_errors["shop/orders"] = RuntimeError("Unreachable")
    engine = Engine(FakeSource(orders=5), scaler, clock=Clock())
    with caplog.at_level(logging.ERROR, logger="eventscaler.engine"):
        engine.evaluate(make_rule())
        engine.evaluate(make_rule())
        del scaler.read_errors["shop/orders"]
        assert engine.evaluate(make_rule()).failed is False
        scaler.read_errors["shop/orders"] = RuntimeError("Unreachable")
        engine.evaluate(make_rule())
    counts = [r.getMessage().rsplit("(", 1)[1] for r in caplog.records]
    assert counts == ["failing for 1 tick)", "failing for 2 ticks)", "failing for 1 tick)"]


def test_an_unexpected_error_is_reported_and_other_rules_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scaler = FakeScaler(buggy=FakeDeployment(1), fine=FakeDeployment(1))
    scaler.deployments["shop/buggy"] = object()  # type: ignore[assignment]  # no replicas field
    recorder = Recorder()
    engine = Engine(FakeSource(buggy=5, fine=20), scaler, clock=Clock(), observers=[recorder])
    with caplog.at_level(logging.ERROR, logger="eventscaler.engine"):
        buggy = engine.evaluate(make_rule("buggy", "buggy", "buggy"))
    assert (buggy.error_kind, buggy.error) == (FAILED_BUG, "unexpected error: AttributeError")
    assert "shop/buggy: rule buggy: unexpected error" in caplog.records[0].getMessage()
    assert caplog.records[0].exc_info is not None
    assert recorder.seen == [buggy]
    assert engine.evaluate(make_rule("fine", "fine", "fine")).wrote is True


def test_dry_run_never_writes_and_records_no_scale_event(caplog: pytest.LogCaptureFixture) -> None:
    scaler = FakeScaler(orders=FakeDeployment(1))
    scaler.write_errors["shop/orders"] = AssertionError("dry-run must not write")
    one_per_minute = Behavior(scale_up=ScalingRules(policies=(ScalingPolicy("Pods", 1, 60.0),)))
    rule = make_rule(behavior=one_per_minute)
    clock = Clock()
    engine = Engine(FakeSource(orders=50), scaler, dry_run=True, clock=clock)
    with caplog.at_level(logging.INFO, logger="eventscaler.engine"):
        first = engine.evaluate(rule)
        clock.now += 1
        second = engine.evaluate(rule)
    for outcome in (first, second):
        assert (outcome.dry_run, outcome.wrote, outcome.failed) == (True, False, False)
        assert outcome.decision is not None
        assert outcome.decision.target == 2  # not held back by a write that never happened
    assert scaler.writes == []
    assert scaler.deployments["shop/orders"].replicas == 1
    assert "shop/orders: dry-run: would scale 1 -> 2 (rule orders [scale-up]" in caplog.text


def test_a_failed_write_is_reported_and_records_no_scale_event() -> None:
    scaler = FakeScaler(orders=FakeDeployment(1))
    scaler.write_errors["shop/orders"] = RuntimeError("Forbidden")
    one_per_minute = Behavior(scale_up=ScalingRules(policies=(ScalingPolicy("Pods", 1, 60.0),)))
    rule = make_rule(behavior=one_per_minute)
    clock = Clock()
    engine = Engine(FakeSource(orders=50), scaler, clock=clock)
    failed = engine.evaluate(rule)
    assert (failed.wrote, failed.error_kind) == (False, FAILED_WRITE)
    assert failed.error == "cannot scale 1 -> 2: Forbidden"
    del scaler.write_errors["shop/orders"]
    clock.now += 1
    retried = engine.evaluate(rule)  # the policy allows the step: the failed write did not count
    assert retried.wrote is True
    assert scaler.writes == [("shop/orders", 2)]
    clock.now += 1
    held = engine.evaluate(rule)  # a write that happened does count
    assert held.decision is not None
    assert (held.decision.target, held.wrote) == (2, False)


def test_a_paused_rule_reads_no_queue() -> None:
    scaler = FakeScaler(orders=FakeDeployment(3, {PAUSED: "true"}))
    source = FakeSource(orders=500)
    engine = Engine(source, scaler, clock=Clock())
    outcome = engine.evaluate(make_rule())
    assert source.calls == []
    assert outcome.readings == ()
    assert outcome.decision is not None
    assert (outcome.decision.step, outcome.decision.target) == (STEP_PAUSED, 3)
    assert (outcome.wrote, outcome.failed) == (False, False)
    assert scaler.writes == []


def test_paused_replicas_is_written_without_reading_a_queue() -> None:
    scaler = FakeScaler(orders=FakeDeployment(3, {PAUSED_REPLICAS: "7"}))
    source = FakeSource(orders=QueueError("must not be read"))
    outcome = Engine(source, scaler, clock=Clock()).evaluate(make_rule())
    assert source.calls == []
    assert scaler.writes == [("shop/orders", 7)]
    assert (outcome.wrote, outcome.failed) == (True, False)


def test_observers_are_called_once_per_tick_and_one_that_raises_stops_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scaler = FakeScaler(orders=FakeDeployment(1))
    first, last = Recorder(), Recorder()
    engine = Engine(FakeSource(orders=50), scaler, clock=Clock(),
                    observers=[first, Exploding(), last])  # fmt: skip
    with caplog.at_level(logging.ERROR, logger="eventscaler.engine"):
        outcomes = [engine.evaluate(make_rule()) for _ in range(3)]
    assert first.seen == outcomes
    assert last.seen == outcomes
    assert scaler.writes == [("shop/orders", 10)]
    reporting = [r for r in caplog.records if "reporting failed" in r.getMessage()]
    assert len(reporting) == 3
    assert reporting[0].getMessage() == "shop/orders: rule orders: reporting failed"


def test_observers_see_failed_ticks_too() -> None:
    scaler = FakeScaler(orders=FakeDeployment(1))
    scaler.read_errors["shop/orders"] = RuntimeError("Unreachable")
    recorder = Recorder()
    engine = Engine(FakeSource(orders=1), scaler, clock=Clock(), observers=[recorder])
    outcome = engine.evaluate(make_rule())
    assert recorder.seen == [outcome]
    assert outcome.failed is True


def test_the_decision_is_logged_at_info_when_its_step_changes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scaler = FakeScaler(orders=FakeDeployment(10))
    source = FakeSource(orders=50)
    clock = Clock()
    engine = Engine(source, scaler, clock=clock)
    rule = make_rule()

    def tick(length: int) -> list[tuple[int, str]]:
        source.lengths["orders"] = length
        caplog.clear()
        clock.now += 1
        engine.evaluate(rule)
        return [(r.levelno, r.getMessage()) for r in caplog.records]

    with caplog.at_level(logging.DEBUG, logger="eventscaler.engine"):
        assert [level for level, _ in tick(50)] == [logging.DEBUG]  # the first tick
        assert [level for level, _ in tick(50)] == [logging.DEBUG]  # the same step
        changed = tick(53)  # within tolerance: a new step, no write
        assert changed[0][0] == logging.INFO
        assert changed[0][1].startswith(f"shop/orders: rule orders: 10 -> 10 [{STEP_TOLERANCE}]:")
        assert [level for level, _ in tick(53)] == [logging.DEBUG]
        back = tick(50)
        assert back[0][0] == logging.INFO
        assert f"[{STEP_AT_TARGET}]" in back[0][1]
        scaled = tick(100)  # a write: the decision line stays DEBUG, the write is INFO
        assert [level for level, _ in scaled] == [logging.DEBUG, logging.INFO]
        assert scaled[1][1].startswith("shop/orders: scaled 10 -> 20 (rule orders [scale-up]:")


def test_cooldown_left_counts_down_while_idle_above_zero() -> None:
    scaler = FakeScaler(orders=FakeDeployment(1))
    source = FakeSource(orders=0)
    clock = Clock()
    engine = Engine(source, scaler, clock=clock)
    rule = make_rule()
    first = engine.evaluate(rule)  # start-up counts as activity
    assert first.decision is not None
    assert (first.decision.step, first.cooldown_left) == (STEP_COOLDOWN, 300.0)
    clock.now += 120
    assert engine.evaluate(rule).cooldown_left == 180.0
    source.lengths["orders"] = 3
    clock.now += 1
    assert engine.evaluate(rule).cooldown_left is None  # active
    source.lengths["orders"] = 0
    clock.now += 300
    zeroed = engine.evaluate(rule)
    assert (zeroed.wrote, zeroed.cooldown_left) == (True, None)
    assert scaler.writes == [("shop/orders", 0)]


def test_min_replicas_above_zero_has_no_cooldown() -> None:
    scaler = FakeScaler(orders=FakeDeployment(2))
    outcome = Engine(FakeSource(orders=0), scaler, clock=Clock()).evaluate(
        make_rule(min_replicas=2)
    )
    assert outcome.cooldown_left is None


def test_forgetting_a_rule_restarts_its_cooldown_and_keeps_the_others() -> None:
    scaler = FakeScaler(kept=FakeDeployment(1), dropped=FakeDeployment(1))
    clock = Clock()
    engine = Engine(FakeSource(kept=0, dropped=0), scaler, clock=clock)
    kept, dropped = make_rule("kept", "kept", "kept"), make_rule("dropped", "dropped", "dropped")
    engine.evaluate(kept)
    engine.evaluate(dropped)
    engine.forget_rules_except([kept])
    clock.now += 300
    assert engine.evaluate(kept).wrote is True  # idle since T0: to zero
    dropped_again = engine.evaluate(dropped)  # a fresh start counts as activity
    assert (dropped_again.wrote, dropped_again.cooldown_left) == (False, 300.0)
    assert scaler.writes == [("shop/kept", 0)]


def test_a_rule_that_targets_another_deployment_starts_afresh() -> None:
    scaler = FakeScaler(first=FakeDeployment(1), second=FakeDeployment(1))
    clock = Clock()
    engine = Engine(FakeSource(orders=0), scaler, clock=clock)
    engine.evaluate(make_rule(deployment="first"))
    clock.now += 300
    moved = engine.evaluate(make_rule(deployment="second"))
    assert (moved.wrote, moved.cooldown_left) == (False, 300.0)
    assert scaler.writes == []


def test_a_rule_that_targets_another_kind_of_the_same_name_starts_afresh() -> None:
    scaler = FakeScaler(orders=FakeDeployment(1))
    clock = Clock()
    engine = Engine(FakeSource(orders=0), scaler, clock=clock)
    engine.evaluate(make_rule())
    clock.now += 300
    moved = engine.evaluate(make_rule(kind="StatefulSet"))
    assert (moved.wrote, moved.cooldown_left) == (False, 300.0)
    assert scaler.writes == []


def test_the_target_is_read_and_written_by_its_reference() -> None:
    ref = ScaleTargetRef("orders", "Worker", "example.com/v1")
    scaler = FakeScaler(orders=FakeDeployment(0))
    rule = replace(make_rule(), scale_target=ref)
    outcome = Engine(FakeSource(orders=12), scaler, clock=Clock()).evaluate(rule)
    assert outcome.wrote and scaler.writes == [("shop/orders", 3)]
    assert scaler.refs == [ref, ref]  # one read, one write, both with kind and apiVersion
    assert rule.target == "shop/Worker/orders"

    scaler.read_errors["shop/orders"] = RuntimeError("kind Worker (example.com/v1) is not served")
    failed = Engine(FakeSource(orders=12), scaler, clock=Clock()).evaluate(rule)
    assert (
        failed.error == "cannot read the target Worker: kind Worker (example.com/v1) is not served"
    )
    assert failed.error_kind == FAILED_TARGET_READ == "target-read"


# -- the time of a tick -------------------------------------------------------------------------


class SlowSource(FakeSource):
    """Each read advances the clock by the next of `read_times`: reads take time."""

    def __init__(self, clock: Clock, read_times: list[float], **lengths: int) -> None:
        super().__init__(**lengths)
        self.clock = clock
        self.read_times = read_times

    def read_value(self, trigger: Trigger) -> float:
        self.clock.now += self.read_times.pop(0)
        return super().read_value(trigger)


def test_the_step_to_zero_comes_at_exactly_cooldown_despite_late_starts_and_slow_reads() -> None:
    # KEDA's azure-queue e2e scenario: pollingInterval 5, cooldownPeriod 10. The tick that last
    # saw messages starts 8 ms late and its read takes 13 ms; the tick due 10 s later starts 2 ms
    # late and reads in 5 ms. Timed after the reads (9.986 s idle) or at the start (9.994 s), it
    # would wait another interval; on the schedule it is 10 s exactly.
    clock = Clock()
    source = SlowSource(clock, [0.013, 0.004, 0.005], orders=20)
    scaler = FakeScaler(orders=FakeDeployment(4))
    engine = Engine(source, scaler, clock=clock)
    rule = replace(make_rule(), polling_interval=5.0, cooldown_period=10.0)
    starts = [T0 + 0.008, T0 + 5.001, T0 + 10.002]
    outcomes = []
    for i, start in enumerate(starts):
        clock.now = start
        if i == 1:
            source.lengths["orders"] = 0  # the workers drained the queue
        outcomes.append(engine.evaluate(rule))
    steps = [o.decision.step if o.decision else None for o in outcomes]
    assert steps[-1] == STEP_TO_ZERO, steps
    assert "no activity for 10.0s" in outcomes[-1].decision.reason  # type: ignore[union-attr]
    assert scaler.writes == [("shop/orders", 0)]
    assert outcomes[1].cooldown_left == pytest.approx(5.0, abs=1e-9)


def test_a_tick_further_off_its_slot_takes_its_own_time() -> None:
    # Poll 5, cooldown 10: the second idle tick starts 2 s late (a stall): 12.008 s after the
    # active one, on no slot; it takes its own time and goes to zero, idle 12.0 s.
    clock = Clock()
    source = FakeSource(orders=20)
    scaler = FakeScaler(orders=FakeDeployment(4))
    engine = Engine(source, scaler, clock=clock)
    rule = replace(make_rule(), polling_interval=5.0, cooldown_period=10.0)
    clock.now = T0
    engine.evaluate(rule)
    source.lengths["orders"] = 0
    clock.now = T0 + 5.0
    assert engine.evaluate(rule).wrote is False
    clock.now = T0 + 12.0
    zeroed = engine.evaluate(rule)
    assert zeroed.wrote is True
    assert "no activity for 12.0s" in zeroed.decision.reason  # type: ignore[union-attr]


# (name, interval per tick, start times, expected tick times), all relative to T0
TICK_CLOCK_CASES = [
    ("on time", [5.0] * 3, [0.0, 5.0, 10.0], [0.0, 5.0, 10.0]),
    ("late by different amounts", [5.0] * 4, [0.008, 5.001, 10.02, 15.0],
     [0.008, 5.008, 10.008, 15.008]),
    ("a missed slot", [5.0] * 3, [0.0, 5.003, 15.001], [0.0, 5.0, 15.0]),
    ("within a quarter either way", [4.0] * 3, [0.0, 5.0, 7.0], [0.0, 4.0, 8.0]),
    ("a stall starts the schedule again", [5.0] * 4, [0.0, 7.6, 12.6, 17.61],
     [0.0, 7.6, 12.6, 17.6]),
    ("the interval changed", [5.0, 5.0, 2.0, 2.0], [0.0, 5.0, 8.0, 10.0], [0.0, 5.0, 8.0, 10.0]),
    ("never backwards", [5.0] * 3, [0.0, 4.0, 4.1], [0.0, 5.0, 5.0]),  # 4.0 snaps ahead to 5.0
    ("two starts on one slot", [5.0] * 3, [0.0, 5.9, 6.0], [0.0, 5.0, 6.0]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("intervals", "starts", "expected"),
    [case[1:] for case in TICK_CLOCK_CASES],
    ids=[case[0] for case in TICK_CLOCK_CASES],
)
def test_tick_clock_puts_ticks_on_their_slots(
    intervals: list[float], starts: list[float], expected: list[float]
) -> None:
    tick_clock = TickClock()
    times = [tick_clock.time_of(T0 + s, i) - T0 for s, i in zip(starts, intervals, strict=True)]
    assert times == pytest.approx(expected, abs=1e-9)
    assert times == sorted(times)


# --- the steady tick: the target read every K ticks, and always right before a write ---------

RESYNC = 30.0  # with 5 s ticks: one target read serves K = 6 ticks


def steady(scaler: FakeScaler, source: FakeSource, clock: Clock) -> tuple[Engine, Rule]:
    engine = Engine(source, scaler, clock=clock, target_resync=RESYNC)
    return engine, replace(make_rule(), polling_interval=5.0)


def run_ticks(engine: Engine, rule: Rule, clock: Clock, count: int) -> list[Outcome]:
    outcomes = []
    for _ in range(count):
        outcomes.append(engine.evaluate(rule))
        clock.now += rule.polling_interval
    return outcomes


def test_quiet_ticks_read_the_target_once_every_k_ticks_and_write_nothing() -> None:
    scaler, source, clock = FakeScaler(orders=FakeDeployment(2)), FakeSource(orders=10), Clock()
    engine, rule = steady(scaler, source, clock)
    outcomes = run_ticks(engine, rule, clock, 20)
    assert scaler.reads() == 4  # ceil(20 / 6): ticks 0, 6, 12, 18
    assert scaler.writes == []
    assert len(source.calls) == 20  # the queue is read on every tick
    assert all(o.current == 2 and not o.failed for o in outcomes)


def test_a_write_reads_the_target_right_before_it() -> None:
    scaler, source, clock = FakeScaler(orders=FakeDeployment(2)), FakeSource(orders=10), Clock()
    engine, rule = steady(scaler, source, clock)
    run_ticks(engine, rule, clock, 3)
    assert scaler.calls == ["read"]
    source.lengths["orders"] = 40  # asks for 8, on a tick that kept its view
    outcome = engine.evaluate(rule)
    assert scaler.calls == ["read", "read", "write 8"]
    assert outcome.wrote and outcome.current == 2
    assert source.calls == ["orders"] * 4  # decided again on the same readings, not re-read
    clock.now += 5
    # The write's count is kept: the next quiet ticks read nothing and write nothing.
    run_ticks(engine, rule, clock, 4)
    assert scaler.calls == ["read", "read", "write 8"]


def test_a_tick_that_reads_anyway_writes_without_a_second_read() -> None:
    scaler, source, clock = FakeScaler(orders=FakeDeployment(0)), FakeSource(orders=40), Clock()
    engine, rule = steady(scaler, source, clock)
    engine.evaluate(rule)  # the first tick always reads
    assert scaler.calls == ["read", "write 8"]


def test_a_pause_added_by_hand_is_honoured_before_any_write() -> None:
    scaler, source, clock = FakeScaler(orders=FakeDeployment(2)), FakeSource(orders=10), Clock()
    engine, rule = steady(scaler, source, clock)
    run_ticks(engine, rule, clock, 2)
    scaler.deployments["shop/orders"].annotations[PAUSED] = "true"
    source.lengths["orders"] = 100  # would ask for 20, on a kept view without the pause
    outcome = engine.evaluate(rule)
    assert scaler.writes == []
    assert outcome.decision is not None and outcome.decision.step == STEP_PAUSED
    assert scaler.calls == ["read", "read"]  # the decision to write read the target first


def test_a_pause_is_noticed_within_k_ticks_and_then_no_source_is_read() -> None:
    scaler, source, clock = FakeScaler(orders=FakeDeployment(2)), FakeSource(orders=10), Clock()
    engine, rule = steady(scaler, source, clock)
    engine.evaluate(rule)
    clock.now += 5
    scaler.deployments["shop/orders"].annotations[PAUSED] = "true"
    outcomes = run_ticks(engine, rule, clock, 6)
    steps = [o.decision.step if o.decision else None for o in outcomes]
    assert steps == [STEP_AT_TARGET] * 5 + [STEP_PAUSED]  # by the K-th tick after the last read
    calls = len(source.calls)
    run_ticks(engine, rule, clock, 5)
    assert len(source.calls) == calls  # paused: no source is billed
    assert scaler.writes == []


def test_a_count_set_by_hand_is_noticed_within_k_ticks() -> None:
    scaler, source, clock = FakeScaler(orders=FakeDeployment(2)), FakeSource(orders=10), Clock()
    engine, rule = steady(scaler, source, clock)
    engine.evaluate(rule)
    clock.now += 5
    scaler.deployments["shop/orders"].replicas = 0  # kubectl scale --replicas=0
    outcomes = run_ticks(engine, rule, clock, 6)
    assert [o.wrote for o in outcomes] == [False] * 5 + [True]
    assert scaler.writes == [("shop/orders", 2)]
    assert scaler.calls[-2:] == ["read", "write 2"]


def test_a_failed_read_or_write_reads_the_target_on_the_next_tick() -> None:
    scaler, source, clock = FakeScaler(orders=FakeDeployment(2)), FakeSource(orders=10), Clock()
    engine, rule = steady(scaler, source, clock)
    scaler.read_errors["shop/orders"] = RuntimeError("Unreachable")
    run_ticks(engine, rule, clock, 2)
    del scaler.read_errors["shop/orders"]
    run_ticks(engine, rule, clock, 2)
    assert scaler.reads() == 3  # two failed, then one read serving two ticks
    scaler.write_errors["shop/orders"] = RuntimeError("Forbidden")
    source.lengths["orders"] = 40
    assert engine.evaluate(rule).error_kind == FAILED_WRITE
    clock.now += 5
    del scaler.write_errors["shop/orders"]
    assert engine.evaluate(rule).wrote
    assert scaler.calls[-4:] == ["read", "write 8", "read", "write 8"]


def test_a_reload_that_drops_a_rule_drops_its_view() -> None:
    scaler, source, clock = FakeScaler(orders=FakeDeployment(2)), FakeSource(orders=10), Clock()
    engine, rule = steady(scaler, source, clock)
    run_ticks(engine, rule, clock, 2)
    engine.forget_rules_except([])
    engine.evaluate(rule)
    assert scaler.reads() == 2


class ConflictOnce(Exception):
    status = 409


def test_a_conflicted_write_reads_again_once_on_a_steady_tick_too() -> None:
    scaler, source, clock = FakeScaler(orders=FakeDeployment(2)), FakeSource(orders=10), Clock()
    engine, rule = steady(scaler, source, clock)
    run_ticks(engine, rule, clock, 2)
    scaler.write_errors["shop/orders"] = ConflictOnce("409 Conflict")
    original = scaler.set_replicas

    def conflict_once(namespace: str, ref: ScaleTargetRef, replicas: int) -> None:
        try:
            original(namespace, ref, replicas)
        finally:
            scaler.write_errors.pop("shop/orders", None)

    scaler.set_replicas = conflict_once  # type: ignore[method-assign]
    source.lengths["orders"] = 40
    assert engine.evaluate(rule).wrote
    assert scaler.calls == ["read", "read", "write 8", "read", "write 8"]
