"""Operating the decision (eventscaler/policy.py): pauses, the fallback and the step words.

Pure functions with `now` as an argument: no clock, no I/O. Scenarios covered:
- pause_from_annotations: no annotation, ours and KEDA's `paused` ("true" in any case, with
  spaces), "false" is no pause, paused-replicas wins over paused and ours over KEDA's, a value
  that is not a whole number still pauses but leaves the count alone (negative, decimal, empty,
  text, and a non-ASCII digit such as "²" that `int()` cannot parse)
- decide() under a pause: no readings needed, the count is kept or set to paused-replicas (even
  above maxReplicas), the pause counts as activity so resuming never zeroes at once
- the fallback: failed ticks are counted in RuleState.failed_ticks (a partial failure counts), the
  fallback runs at failureThreshold (not before), from zero and downwards too, a good tick resets
  the count and returns to normal, a rule without a fallback only holds
- Decision.step: one scenario per STEP_* word, checked to cover them all; `changes` and
  `direction`; at maxReplicas or minReplicas the reason says so rather than blaming a window
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest

from eventscaler import policy
from eventscaler.config import (
    Behavior,
    Fallback,
    Rule,
    ScaleTargetRef,
    ScalingPolicy,
    ScalingRules,
)
from eventscaler.policy import (
    KEDA_PAUSED,
    KEDA_PAUSED_REPLICAS,
    PAUSED,
    PAUSED_REPLICAS,
    Decision,
    Pause,
    Reading,
    RuleState,
    decide,
    initial_state,
    pause_from_annotations,
)
from eventscaler.sources.azure_queue import azure_queue_trigger

T0 = 5_000.0  # an arbitrary start; only differences matter


def make_rule(
    *,
    queues: Sequence[str] = ("orders",),
    min_replicas: int = 0,
    max_replicas: int = 20,
    cooldown: float = 300.0,
    fallback: Fallback | None = None,
    behavior: Behavior | None = None,
) -> Rule:
    return Rule(
        name="orders",
        namespace="shop",
        scale_target=ScaleTargetRef("worker"),
        triggers=tuple(azure_queue_trigger(q, queue_length=5.0) for q in queues),
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        cooldown_period=cooldown,
        fallback=fallback,
        behavior=behavior or Behavior(),
    )


def ok(length: int, trigger: str = "orders") -> Reading:
    return Reading(trigger, length)


def failed(trigger: str = "orders") -> Reading:
    return Reading(trigger, None, "timed out", "Timeout")


# -- pause_from_annotations ----------------------------------------------------------------------


def test_no_pause_annotation_is_no_pause() -> None:
    assert pause_from_annotations({}) is None
    assert pause_from_annotations({"app": "worker", "eventscaler.io/other": "true"}) is None


@pytest.mark.parametrize("key", [PAUSED, KEDA_PAUSED])
@pytest.mark.parametrize("value", ["true", "True", " TRUE "])
def test_paused_true_leaves_the_count_alone(key: str, value: str) -> None:
    assert pause_from_annotations({key: value}) == Pause(key, None)


@pytest.mark.parametrize("value", ["false", "", "yes", "1"])
def test_paused_other_than_true_is_no_pause(value: str) -> None:
    assert pause_from_annotations({PAUSED: value, KEDA_PAUSED: value}) is None


@pytest.mark.parametrize("key", [PAUSED_REPLICAS, KEDA_PAUSED_REPLICAS])
def test_paused_replicas_holds_at_that_count(key: str) -> None:
    assert pause_from_annotations({key: "3"}) == Pause(key, 3)
    assert pause_from_annotations({key: " 0 "}) == Pause(key, 0)


def test_paused_replicas_wins_over_paused_and_ours_over_kedas() -> None:
    both = {PAUSED: "true", PAUSED_REPLICAS: "2"}
    assert pause_from_annotations(both) == Pause(PAUSED_REPLICAS, 2)
    ours_and_keda = {KEDA_PAUSED_REPLICAS: "7", PAUSED_REPLICAS: "2"}
    assert pause_from_annotations(ours_and_keda) == Pause(PAUSED_REPLICAS, 2)
    keda_replicas_and_our_paused = {PAUSED: "true", KEDA_PAUSED_REPLICAS: "7"}
    assert pause_from_annotations(keda_replicas_and_our_paused) == Pause(KEDA_PAUSED_REPLICAS, 7)
    assert pause_from_annotations({KEDA_PAUSED: "true", PAUSED: "true"}) == Pause(PAUSED)


@pytest.mark.parametrize("value", ["-1", "2.5", "", "two", "²", "3 replicas"])
def test_paused_replicas_not_a_whole_number_still_pauses_without_a_count(value: str) -> None:
    pause = pause_from_annotations({PAUSED_REPLICAS: value})
    assert pause is not None
    assert pause.replicas is None
    assert pause.source.startswith(PAUSED_REPLICAS)
    assert "not a whole number" in pause.source
    assert repr(value.strip()) in pause.source


# -- decide() under a pause ----------------------------------------------------------------------


def test_a_paused_rule_needs_no_readings_and_keeps_the_count() -> None:
    rule = make_rule()
    state = replace(initial_state(T0), failed_ticks=2)
    decision = decide(rule, (), 4, state, T0 + 10, Pause(PAUSED))
    assert (decision.current, decision.target, decision.changes) == (4, 4, False)
    assert decision.step == policy.STEP_PAUSED
    assert decision.active is False
    assert decision.reason == f"paused by {PAUSED}"
    assert decision.state.last_active == T0 + 10


def test_paused_replicas_sets_the_count_even_from_zero_and_above_max() -> None:
    rule = make_rule(max_replicas=5)
    up = decide(rule, (), 0, initial_state(T0), T0, Pause(KEDA_PAUSED_REPLICAS, 9))
    assert (up.target, up.direction, up.step) == (9, "up", policy.STEP_PAUSED)
    assert up.reason == f"paused at 9 replicas by {KEDA_PAUSED_REPLICAS}"
    down = decide(rule, (), 3, initial_state(T0), T0, Pause(PAUSED_REPLICAS, 0))
    assert (down.target, down.direction) == (0, "down")


def test_resuming_after_a_long_pause_does_not_zero_at_once() -> None:
    rule = make_rule(cooldown=300.0)
    state = initial_state(T0)
    for minute in range(1, 20):  # paused for far longer than the cooldown
        state = decide(rule, (), 3, state, T0 + 60 * minute, Pause(PAUSED)).state
    resumed_at = T0 + 60 * 19
    first = decide(rule, [ok(0)], 3, state, resumed_at + 30, None)
    assert first.target > 0
    later = decide(rule, [ok(0)], 3, first.state, resumed_at + 300, None)
    assert (later.target, later.step) == (0, policy.STEP_TO_ZERO)


# -- the fallback --------------------------------------------------------------------------------


def test_failed_ticks_are_counted_and_the_fallback_runs_at_the_threshold() -> None:
    rule = make_rule(fallback=Fallback(failure_threshold=3, replicas=6))
    state = initial_state(T0)
    steps = []
    for tick in range(1, 5):
        decision = decide(rule, [failed()], 0, state, T0 + tick, None)
        state = decision.state
        steps.append((state.failed_ticks, decision.target, decision.step))
    assert steps == [
        (1, 0, policy.STEP_FAILED),
        (2, 0, policy.STEP_FAILED),
        (3, 6, policy.STEP_FALLBACK),  # from zero, zero included
        (4, 6, policy.STEP_FALLBACK),
    ]
    third = decide(rule, [failed()], 0, replace(state, failed_ticks=2), T0 + 9, None)
    assert "3 failed tick(s) >= failureThreshold 3: running fallback.replicas 6" in third.reason


def test_a_partial_failure_counts_towards_the_fallback() -> None:
    rule = make_rule(queues=("orders", "returns"), fallback=Fallback(2, 4))
    state = initial_state(T0)
    readings = [ok(100, "orders"), failed("returns")]
    first = decide(rule, readings, 10, state, T0 + 1, None)
    assert first.state.failed_ticks == 1
    assert first.step == policy.STEP_UP  # scale-up on what was read still happens
    second = decide(rule, readings, 20, first.state, T0 + 2, None)
    assert (second.target, second.step) == (4, policy.STEP_FALLBACK)  # downwards too
    assert "returns=failed (timed out)" in second.reason


def test_a_good_tick_resets_the_count_and_returns_to_normal() -> None:
    rule = make_rule(fallback=Fallback(2, 6))
    state = initial_state(T0)
    state = decide(rule, [failed()], 0, state, T0 + 1, None).state
    state = decide(rule, [failed()], 0, state, T0 + 2, None).state
    assert state.failed_ticks == 2
    back = decide(rule, [ok(12)], 6, state, T0 + 3, None)
    assert back.state.failed_ticks == 0
    assert back.step != policy.STEP_FALLBACK
    # The count starts over: one more failure is below the threshold again.
    again = decide(rule, [failed()], 6, back.state, T0 + 4, None)
    assert (again.state.failed_ticks, again.target, again.step) == (1, 6, policy.STEP_FAILED)


def test_without_a_fallback_failures_are_counted_but_only_hold() -> None:
    rule = make_rule()
    state = initial_state(T0)
    for tick in range(1, 11):
        decision = decide(rule, [failed()], 3, state, T0 + tick * 400, None)
        state = decision.state
        assert (decision.target, decision.step) == (3, policy.STEP_FAILED)
    assert state.failed_ticks == 10


# -- Decision.step -------------------------------------------------------------------------------

NO_DOWN_WINDOW = Behavior(scale_down=ScalingRules(0.0))
UP_DISABLED = Behavior(scale_up=ScalingRules(select_policy="Disabled"))
ONE_POD_PER_MINUTE = Behavior(scale_up=ScalingRules(policies=(ScalingPolicy("Pods", 1, 60.0),)))

# (name, rule, readings, current, state, now, pause, expected target, expected step)
STEP_CASES = [
    ("wake", make_rule(), [ok(12)], 0, initial_state(T0), T0, None, 3, policy.STEP_WAKE),
    ("idle", make_rule(), [ok(0)], 0, initial_state(T0), T0, None, 0, policy.STEP_IDLE),
    ("min", make_rule(min_replicas=2), [ok(0)], 0, initial_state(T0), T0, None, 2, policy.STEP_MIN),
    ("to-zero", make_rule(), [ok(0)], 2, initial_state(T0), T0 + 300, None, 0,
     policy.STEP_TO_ZERO),
    ("cooldown", make_rule(), [ok(0)], 1, initial_state(T0), T0 + 10, None, 1,
     policy.STEP_COOLDOWN),
    ("up", make_rule(), [ok(50)], 1, initial_state(T0), T0, None, 10, policy.STEP_UP),
    ("down", make_rule(behavior=NO_DOWN_WINDOW), [ok(20)], 10, initial_state(T0), T0, None, 4,
     policy.STEP_DOWN),
    ("tolerance", make_rule(), [ok(53)], 10, initial_state(T0), T0, None, 10,
     policy.STEP_TOLERANCE),
    ("at-target", make_rule(), [ok(50)], 10, initial_state(T0), T0, None, 10,
     policy.STEP_AT_TARGET),
    ("stabilization", make_rule(), [ok(20)], 10, initial_state(T0), T0, None, 10,
     policy.STEP_STABILIZATION),
    ("rate-disabled", make_rule(behavior=UP_DISABLED), [ok(50)], 2, initial_state(T0), T0, None,
     2, policy.STEP_RATE),
    ("rate-used-up", make_rule(behavior=ONE_POD_PER_MINUTE), [ok(50)], 2,
     RuleState(T0, scale_events=((T0 - 10, 1),), seeded=True), T0, None, 2, policy.STEP_RATE),
    ("failed", make_rule(), [failed()], 3, initial_state(T0), T0, None, 3, policy.STEP_FAILED),
    ("fallback", make_rule(fallback=Fallback(1, 5)), [failed()], 3, initial_state(T0), T0, None,
     5, policy.STEP_FALLBACK),
    ("paused", make_rule(), [], 3, initial_state(T0), T0, Pause(PAUSED), 3, policy.STEP_PAUSED),
]  # fmt: skip


@pytest.mark.parametrize(
    ("rule", "readings", "current", "state", "now", "pause", "target", "step"),
    [case[1:] for case in STEP_CASES],
    ids=[case[0] for case in STEP_CASES],
)
def test_each_step_word_names_the_step_that_decided(
    rule: Rule,
    readings: list[Reading],
    current: int,
    state: RuleState,
    now: float,
    pause: Pause | None,
    target: int,
    step: str,
) -> None:
    decision = decide(rule, readings, current, state, now, pause)
    assert (decision.target, decision.step) == (target, step)


def test_the_step_cases_cover_every_step_word() -> None:
    words = {value for name, value in vars(policy).items() if name.startswith("STEP_")}
    assert words == {case[-1] for case in STEP_CASES}


def test_a_failed_trigger_forbids_a_scale_down_the_other_trigger_asks_for() -> None:
    rule = make_rule(queues=("orders", "returns"), behavior=NO_DOWN_WINDOW)
    decision = decide(rule, [ok(0, "orders"), failed("returns")], 6, initial_state(T0), T0, None)
    assert (decision.target, decision.step) == (6, policy.STEP_FAILED)
    assert decision.active is True  # a reading we did not get is never a zero
    assert "never scaling down on a missing reading" in decision.reason


def test_changes_and_direction() -> None:
    state = initial_state(T0)
    assert Decision(2, 5, True, "", state).direction == "up"
    assert Decision(5, 2, True, "", state).direction == "down"
    held = Decision(3, 3, True, "", state)
    assert (held.direction, held.changes) == (policy.HOLD, False)
    assert Decision(0, 1, True, "", state).changes is True
    assert held.step == policy.STEP_AT_TARGET  # the default


def test_at_max_replicas_the_reason_names_the_clamp_not_a_window() -> None:
    rule = make_rule(max_replicas=10)
    decision = decide(rule, [ok(200)], 10, initial_state(T0), T0, None)
    assert (decision.target, decision.step) == (10, policy.STEP_AT_TARGET)
    assert decision.reason.startswith("backlog needs 40, clamped to 10")
    assert "stabilization" not in decision.reason


def test_at_min_replicas_the_reason_names_the_clamp_not_a_window() -> None:
    rule = make_rule(min_replicas=2)
    decision = decide(rule, [ok(1)], 2, initial_state(T0), T0, None)
    assert (decision.target, decision.step) == (2, policy.STEP_AT_TARGET)
    assert decision.reason.startswith("backlog needs 1, clamped to 2")
    assert "stabilization" not in decision.reason


def test_held_by_the_window_or_the_rate_policy_says_which() -> None:
    window = decide(make_rule(), [ok(20)], 10, initial_state(T0), T0, None)
    assert window.reason.startswith("backlog asks for 4: held by the stabilization window")
    rate = decide(make_rule(behavior=UP_DISABLED), [ok(50)], 2, initial_state(T0), T0, None)
    assert rate.reason.startswith("backlog asks for 10: held by the rate policy")
