"""The pure decision (eventscaler/policy.py): readings, replicas, state and time in; target out.

The clock is the `now` argument: no test sleeps. Scenarios covered:
- per trigger desired = ceil(length / queueLength), highest trigger wins, clamped to [min, max]
- activation: strictly greater than activationQueueLength (equal is not active)
- from zero: straight to what the backlog needs (1000 messages, target 5, max 20 -> 20 at once),
  at least 1 and at least minReplicas; minReplicas > 0 lifts an idle zero
- cooldownPeriod: zero only after cooldownPeriod without activity (exactly cooldownPeriod is
  enough); start-up counts as activity; minReplicas > 0 never goes to zero
- HPA tolerance on both sides of the boundary, in the HPA's float arithmetic (45 holds, 55, 56
  and 44 move, at 10 x 5)
- scale-down stabilization (highest recommendation of the window, default 300 s), including right
  after a start; scale-up immediate unless a scaleUp window or policies are set; a reload that
  changes min/maxReplicas is not held back by recommendations made under the old bounds
- behavior policies: Pods and Percent, selectPolicy Max / Min / Disabled, periods counted from
  past scale events, and the step to zero limited too
- failed readings: never a zero, never a scale-down on that tick, scale-up on what was read,
  all failed -> hold
- history is pruned so state stays small over many ticks
- a seeded random loop: the target is in [min, max] or equal to current, and never below current
  when a reading failed
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from eventscaler.config import (
    Behavior,
    Rule,
    ScaleTargetRef,
    ScalingPolicy,
    ScalingRules,
)
from eventscaler.policy import Decision, Reading, RuleState, decide, initial_state
from eventscaler.sources.azure_queue import azure_queue_trigger

T0 = 1_000.0  # an arbitrary start; only differences of `now` matter


def make_rule(
    *,
    min_replicas: int = 0,
    max_replicas: int = 100,
    cooldown: float = 300.0,
    tolerance: float = 0.1,
    queue_lengths: Sequence[float] = (5.0,),
    activation: float = 0.0,
    scale_up: ScalingRules | None = None,
    scale_down: ScalingRules | None = None,
) -> Rule:
    triggers = tuple(
        azure_queue_trigger(f"queue-{i}", queue_length=q, activation_queue_length=activation)
        for i, q in enumerate(queue_lengths)
    )
    return Rule(
        name="orders",
        namespace="default",
        scale_target=ScaleTargetRef("orders-worker"),
        triggers=triggers,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        cooldown_period=cooldown,
        tolerance=tolerance,
        behavior=Behavior(
            scale_up=scale_up or ScalingRules(),
            scale_down=scale_down or ScalingRules(300.0),
        ),
    )


def no_window_down(*policies: ScalingPolicy, select: str = "Max") -> ScalingRules:
    return ScalingRules(0.0, select, policies)


def readings(*lengths: int | None) -> list[Reading]:
    return [
        Reading(f"queue-{i}", length, None if length is not None else "timed out")
        for i, length in enumerate(lengths)
    ]


def tick(rule: Rule, current: int, state: RuleState, now: float, *lengths: int | None) -> Decision:
    return decide(rule, readings(*lengths), current, state, now)


class Simulation:
    """Feeds a rule tick after tick, writing each target as the Deployment's replicas."""

    def __init__(self, rule: Rule, current: int, start: float = T0) -> None:
        self.rule = rule
        self.current = current
        self.state = initial_state(start)

    def at(self, now: float, *lengths: int | None) -> Decision:
        decision = tick(self.rule, self.current, self.state, now, *lengths)
        self.state = decision.state.record_scale(now, self.current, decision.target)
        self.current = decision.target
        return decision


# ---------------------------------------------------------------------------------------------
# Desired replicas


@pytest.mark.parametrize(
    ("length", "queue_length", "expected"),
    [(7, 5, 2), (5, 5, 1), (6, 5, 2), (1, 5, 1), (11, 5, 3), (100, 7.5, 14)],
)
def test_desired_is_ceil_of_length_over_queue_length(
    length: int, queue_length: float, expected: int
) -> None:
    rule = make_rule(queue_lengths=(queue_length,))
    assert tick(rule, 0, initial_state(T0), T0, length).target == expected


def test_rule_takes_the_highest_trigger() -> None:
    rule = make_rule(queue_lengths=(5, 2))
    assert tick(rule, 0, initial_state(T0), T0, 10, 40).target == 20
    assert tick(rule, 0, initial_state(T0), T0, 40, 10).target == 8


def test_desired_above_max_is_clamped_to_max() -> None:
    rule = make_rule(max_replicas=6)
    assert tick(rule, 2, initial_state(T0), T0, 500).target == 6


def test_flood_from_zero_goes_straight_to_max_in_one_decision() -> None:
    decision = tick(make_rule(max_replicas=20), 0, initial_state(T0), T0, 1000)
    assert (decision.current, decision.target, decision.direction) == (0, 20, "up")
    assert decision.active
    assert "activated from zero" in decision.reason


def test_scale_up_between_non_zero_counts_is_immediate_by_default() -> None:
    decision = tick(make_rule(max_replicas=20), 2, initial_state(T0), T0 + 10, 100)
    assert decision.target == 20


# ---------------------------------------------------------------------------------------------
# Activation and zero


def test_length_equal_to_activation_threshold_is_not_active() -> None:
    rule = make_rule(activation=10)
    decision = tick(rule, 0, initial_state(T0), T0, 10)
    assert (decision.target, decision.active, decision.changes) == (0, False, False)


def test_length_above_activation_threshold_wakes_to_what_the_backlog_needs() -> None:
    rule = make_rule(activation=10)
    decision = tick(rule, 0, initial_state(T0), T0, 11)
    assert (decision.target, decision.active) == (3, True)


def test_idle_at_zero_stays_at_zero() -> None:
    decision = tick(make_rule(), 0, initial_state(T0), T0 + 5000, 0)
    assert (decision.target, decision.direction) == (0, "hold")


def test_wake_from_zero_gives_at_least_one_replica() -> None:
    assert tick(make_rule(), 0, initial_state(T0), T0, 1).target == 1


def test_min_replicas_lifts_an_idle_zero() -> None:
    decision = tick(make_rule(min_replicas=3), 0, initial_state(T0), T0, 0)
    assert decision.target == 3
    assert "minReplicas" in decision.reason


def test_wake_from_zero_is_at_least_min_replicas() -> None:
    assert tick(make_rule(min_replicas=3), 0, initial_state(T0), T0, 1).target == 3


def test_wake_from_zero_is_at_least_min_replicas_even_with_a_scale_up_policy() -> None:
    # An idle rule would be lifted to 3 at once: an active one must not get fewer.
    slow_up = ScalingRules(0.0, "Max", (ScalingPolicy("Pods", 1, 60),))
    rule = make_rule(min_replicas=3, scale_up=slow_up)
    assert tick(rule, 0, initial_state(T0), T0, 100).target == 3


# ---------------------------------------------------------------------------------------------
# Cooldown


def test_fresh_start_does_not_zero_an_idle_running_deployment() -> None:
    rule = make_rule(cooldown=300)
    state = initial_state(T0)
    assert tick(rule, 3, state, T0, 0).target > 0
    assert tick(rule, 3, state, T0 + 299, 0).target > 0
    assert tick(rule, 3, state, T0 + 300, 0).target == 0  # the cooldown counted from start-up


def test_scales_to_zero_at_exactly_cooldown_period_after_last_activity() -> None:
    rule = make_rule(cooldown=300)
    sim = Simulation(rule, current=4)
    sim.at(T0 + 100, 20)  # active: the cooldown now counts from here
    assert sim.at(T0 + 399, 0).target > 0
    decision = sim.at(T0 + 400, 0)
    assert decision.target == 0
    assert "cooldownPeriod" in decision.reason


def test_scale_to_zero_ignores_the_scale_down_stabilization_window() -> None:
    rule = make_rule(cooldown=60)
    sim = Simulation(rule, current=0)
    assert sim.at(T0, 100).target == 20
    # 60 s later the window still holds a recommendation of 20, yet the step to zero is taken.
    assert sim.at(T0 + 60, 0).target == 0


def test_zero_cooldown_scales_to_zero_on_the_first_idle_tick() -> None:
    assert tick(make_rule(cooldown=0), 5, initial_state(T0), T0, 0).target == 0


def test_min_replicas_above_zero_never_scales_to_zero() -> None:
    sim = Simulation(make_rule(min_replicas=2, cooldown=60), current=5)
    targets = [sim.at(T0 + 30 * i, 0).target for i in range(1, 40)]
    assert min(targets) == 2
    assert targets[-1] == 2


def test_scale_to_zero_is_limited_by_scale_down_policies() -> None:
    down = no_window_down(ScalingPolicy("Pods", 2, 60))
    sim = Simulation(make_rule(cooldown=100, scale_down=down), current=5)
    sim.state = RuleState(last_active=T0 - 1000)
    assert sim.at(T0, 0).target == 3
    assert sim.at(T0 + 30, 0).target == 3  # 2 pods already removed in this 60 s period
    assert sim.at(T0 + 61, 0).target == 1
    assert sim.at(T0 + 122, 0).target == 0


def test_scale_to_zero_limited_by_percent_policy() -> None:
    down = no_window_down(ScalingPolicy("Percent", 50, 60))
    state = RuleState(last_active=T0 - 1000)
    assert tick(make_rule(scale_down=down), 10, state, T0, 0).target == 5
    assert tick(make_rule(scale_down=down), 5, state, T0, 0).target == 2  # 2.5, truncated


def test_scale_down_disabled_never_scales_to_zero() -> None:
    rule = make_rule(scale_down=ScalingRules(300.0, "Disabled"))
    assert tick(rule, 4, RuleState(last_active=T0 - 10_000), T0, 0).target == 4


# ---------------------------------------------------------------------------------------------
# Tolerance (current 10, queueLength 5: the ratio is length / 50)


# The HPA's float arithmetic: |1 - 55/50| = 0.10000000000000009 > 0.1 scales to ceil(55/5) = 11;
# |1 - 45/50| = 0.09999999999999998 <= 0.1 holds. (Before issue 10 an epsilon held 55 at 10.)
@pytest.mark.parametrize(("length", "expected"), [(55, 11), (56, 12), (45, 10), (44, 9), (50, 10)])
def test_tolerance_boundary(length: int, expected: int) -> None:
    rule = make_rule(scale_down=no_window_down())
    decision = tick(rule, 10, initial_state(T0), T0, length)
    assert decision.target == expected


def test_tolerance_holds_the_current_count_and_says_so() -> None:
    decision = tick(make_rule(), 10, initial_state(T0), T0, 54)
    assert decision.direction == "hold"
    assert "within tolerance" in decision.reason


def test_scale_down_outside_tolerance_still_waits_for_stabilization() -> None:
    sim = Simulation(make_rule(), current=10)
    assert sim.at(T0, 44).target == 10
    assert sim.at(T0 + 299, 44).target == 10
    assert sim.at(T0 + 300, 44).target == 9


def test_zero_tolerance_moves_on_any_difference() -> None:
    rule = make_rule(tolerance=0.0, scale_down=no_window_down())
    assert tick(rule, 10, initial_state(T0), T0, 51).target == 11
    assert tick(rule, 10, initial_state(T0), T0, 49).target == 10
    assert tick(rule, 10, initial_state(T0), T0, 45).target == 9


def test_a_trigger_within_tolerance_keeps_current_against_a_lower_one() -> None:
    rule = make_rule(queue_lengths=(5, 5), scale_down=no_window_down())
    assert tick(rule, 10, initial_state(T0), T0, 52, 0).target == 10


# ---------------------------------------------------------------------------------------------
# Stabilization


def test_scale_down_uses_the_highest_recommendation_of_the_window() -> None:
    sim = Simulation(make_rule(), current=10)
    assert sim.at(T0, 50).target == 10  # recommends 10
    assert sim.at(T0 + 100, 30).target == 10  # recommends 6
    assert sim.at(T0 + 200, 10).target == 10  # recommends 2
    assert sim.at(T0 + 299, 10).target == 10  # the 10 of T0 is still in the window
    assert sim.at(T0 + 300, 10).target == 6  # the 10 has left; 6 is now the highest
    assert sim.at(T0 + 400, 10).target == 2


def test_fresh_start_does_not_skip_the_scale_down_window() -> None:
    # After a restart there is no history: the replicas found count as a recommendation.
    sim = Simulation(make_rule(), current=10)
    assert sim.at(T0, 10).target == 10
    assert sim.at(T0 + 150, 10).target == 10
    assert sim.at(T0 + 300, 10).target == 2


def test_fresh_start_above_max_still_comes_down_to_max() -> None:
    assert tick(make_rule(max_replicas=4), 10, initial_state(T0), T0, 100).target == 4


def test_lowered_max_replicas_applies_at_once_despite_the_window() -> None:
    # A reload keeps the rule's state: recommendations made under the old maxReplicas must not
    # hold the count above the new one for a whole window.
    sim = Simulation(make_rule(max_replicas=20), current=0)
    assert sim.at(T0, 30).target == 6
    assert sim.at(T0 + 30, 30).target == 6
    sim.rule = make_rule(max_replicas=4)
    assert sim.at(T0 + 60, 30).target == 4


def test_raised_min_replicas_applies_at_once_despite_a_scale_up_window() -> None:
    sim = Simulation(make_rule(scale_up=ScalingRules(120.0)), current=0)
    assert sim.at(T0, 30).target == 6
    sim.rule = make_rule(min_replicas=8, scale_up=ScalingRules(120.0))
    assert sim.at(T0 + 30, 30).target == 8


def test_scale_up_is_not_held_by_the_scale_down_window() -> None:
    sim = Simulation(make_rule(), current=10)
    sim.at(T0, 10)
    assert sim.at(T0 + 30, 100).target == 20


def test_scale_up_window_delays_scale_up() -> None:
    rule = make_rule(scale_up=ScalingRules(60.0))
    sim = Simulation(rule, current=2)
    assert sim.at(T0, 10).target == 2
    assert sim.at(T0 + 30, 100).target == 2
    assert sim.at(T0 + 59, 100).target == 2
    assert sim.at(T0 + 60, 100).target == 20


def test_zero_scale_down_window_scales_down_at_once() -> None:
    rule = make_rule(scale_down=no_window_down())
    sim = Simulation(rule, current=10)
    assert sim.at(T0, 10).target == 2


# ---------------------------------------------------------------------------------------------
# Rate policies


def test_scale_up_pods_policy_counts_the_period_from_recorded_events() -> None:
    up = ScalingRules(0.0, "Max", (ScalingPolicy("Pods", 4, 15),))
    sim = Simulation(make_rule(scale_up=up), current=1)
    assert sim.at(T0, 100).target == 5
    assert sim.at(T0 + 5, 100).target == 5  # 4 pods already added in this 15 s period
    assert sim.at(T0 + 14.9, 100).target == 5
    assert sim.at(T0 + 15, 100).target == 9  # the event at T0 has left the period


def test_scale_up_percent_policy_rounds_up() -> None:
    up = ScalingRules(0.0, "Max", (ScalingPolicy("Percent", 50, 15),))
    assert tick(make_rule(scale_up=up), 5, initial_state(T0), T0, 500).target == 8  # 7.5 -> 8


@pytest.mark.parametrize(("select", "expected"), [("Max", 20), ("Min", 14), ("Disabled", 10)])
def test_scale_up_select_policy(select: str, expected: int) -> None:
    policies = (ScalingPolicy("Pods", 4, 15), ScalingPolicy("Percent", 100, 15))
    rule = make_rule(scale_up=ScalingRules(0.0, select, policies))
    assert tick(rule, 10, initial_state(T0), T0, 500).target == expected


def test_scale_up_disabled_without_policies_holds() -> None:
    rule = make_rule(scale_up=ScalingRules(0.0, "Disabled"))
    assert tick(rule, 3, initial_state(T0), T0, 500).target == 3


@pytest.mark.parametrize(("select", "expected"), [("Max", 5), ("Min", 9), ("Disabled", 10)])
def test_scale_down_select_policy(select: str, expected: int) -> None:
    policies = (ScalingPolicy("Pods", 1, 60), ScalingPolicy("Percent", 50, 60))
    rule = make_rule(scale_down=ScalingRules(0.0, select, policies))
    assert tick(rule, 10, initial_state(T0), T0, 5).target == expected


def test_scale_down_pods_policy_paces_steps_by_period() -> None:
    # The long scale-up period keeps history beyond 60 s, so the period itself is what counts.
    up = ScalingRules(0.0, "Max", (ScalingPolicy("Pods", 100, 600),))
    rule = make_rule(scale_up=up, scale_down=no_window_down(ScalingPolicy("Pods", 1, 60)))
    sim = Simulation(rule, current=10)
    assert sim.at(T0, 5).target == 9
    assert sim.at(T0 + 30, 5).target == 9
    assert sim.at(T0 + 60, 5).target == 8


def test_wake_from_zero_is_limited_by_scale_up_policies() -> None:
    up = ScalingRules(0.0, "Max", (ScalingPolicy("Pods", 4, 60),))
    assert tick(make_rule(scale_up=up), 0, initial_state(T0), T0, 1000).target == 4


def test_percent_policy_still_allows_one_replica_from_zero() -> None:
    up = ScalingRules(0.0, "Max", (ScalingPolicy("Percent", 100, 60),))
    assert tick(make_rule(scale_up=up), 0, initial_state(T0), T0, 1000).target == 1


def test_record_scale_keeps_only_real_changes() -> None:
    state = initial_state(T0)
    assert state.record_scale(T0, 3, 3) is state
    assert state.record_scale(T0, 3, 7).scale_events == ((T0, 4),)
    assert state.record_scale(T0, 7, 2).scale_events == ((T0, -5),)


# ---------------------------------------------------------------------------------------------
# Failed readings


def test_all_readings_failed_holds() -> None:
    rule = make_rule(queue_lengths=(5, 5), scale_down=no_window_down())
    long_idle = RuleState(last_active=T0 - 10_000)
    decision = tick(rule, 6, long_idle, T0, None, None)
    assert (decision.target, decision.direction) == (6, "hold")
    assert "all readings failed" in decision.reason
    assert "timed out" in decision.reason
    assert tick(rule, 0, long_idle, T0, None, None).target == 0


def test_failed_reading_is_never_a_zero_after_cooldown() -> None:
    rule = make_rule(queue_lengths=(5, 5))
    decision = tick(rule, 4, RuleState(last_active=T0 - 10_000), T0, None, 0)
    assert decision.target == 4
    assert decision.active


def test_failed_reading_forbids_scale_down_on_that_tick() -> None:
    rule = make_rule(queue_lengths=(5, 5), scale_down=no_window_down())
    decision = tick(rule, 10, initial_state(T0), T0, 5, None)
    assert decision.target == 10
    assert "failed" in decision.reason


def test_failed_reading_still_allows_scale_up_on_what_was_read() -> None:
    rule = make_rule(queue_lengths=(5, 5), max_replicas=20)
    assert tick(rule, 2, initial_state(T0), T0, None, 1000).target == 20
    assert tick(rule, 0, initial_state(T0), T0, 30, None).target == 6


def test_failed_reading_does_not_wake_from_zero_on_its_own() -> None:
    rule = make_rule(queue_lengths=(5, 5))
    assert tick(rule, 0, initial_state(T0), T0, None, 0).target == 0


def test_cooldown_counts_from_the_last_failed_tick() -> None:
    rule = make_rule(queue_lengths=(5,), cooldown=300)
    sim = Simulation(rule, current=2)
    sim.at(T0 + 250, None)  # a reading we did not get may have been activity
    assert sim.at(T0 + 300, 0).target > 0
    assert sim.at(T0 + 549, 0).target > 0
    assert sim.at(T0 + 550, 0).target == 0


# ---------------------------------------------------------------------------------------------
# Memory


def test_history_is_pruned_over_many_ticks() -> None:
    policies = (ScalingPolicy("Pods", 2, 120),)
    rule = make_rule(
        max_replicas=30,
        scale_up=ScalingRules(0.0, "Max", policies),
        scale_down=ScalingRules(300.0, "Max", policies),
    )
    sim = Simulation(rule, current=1)
    most_recommendations = most_events = 0
    for i in range(5000):
        sim.at(T0 + 15 * i, (i * 37) % 150)  # lengths that keep moving the target
        most_recommendations = max(most_recommendations, len(sim.state.recommendations))
        most_events = max(most_events, len(sim.state.scale_events))
    # 300 s of 15 s ticks, plus the tick itself: never more, however long it runs.
    assert 10 <= most_recommendations <= 300 / 15 + 1
    assert 1 <= most_events <= 300 / 15 + 1
    assert all(
        when > sim.state.recommendations[-1][0] - 300 for when, _ in sim.state.recommendations
    )


# ---------------------------------------------------------------------------------------------
# Property-like loop


def random_rule(rng: random.Random) -> Rule:
    def scaling(window: float) -> ScalingRules:
        policies = tuple(
            ScalingPolicy(
                rng.choice(("Pods", "Percent")), rng.randint(1, 150), rng.choice((15, 60))
            )
            for _ in range(rng.choice((0, 0, 1, 2)))
        )
        select = rng.choice(("Max", "Max", "Min", "Disabled"))
        return ScalingRules(rng.choice((0.0, window)), select, policies)

    min_replicas = rng.choice((0, 0, 1, 3))
    return make_rule(
        min_replicas=min_replicas,
        max_replicas=rng.randint(max(min_replicas, 1), 30),
        cooldown=rng.choice((0.0, 60.0, 300.0)),
        tolerance=rng.choice((0.0, 0.1, 0.5)),
        queue_lengths=[rng.choice((1, 2.5, 5, 20)) for _ in range(rng.randint(1, 3))],
        activation=rng.choice((0, 0, 3)),
        scale_up=scaling(60.0),
        scale_down=scaling(300.0),
    )


def test_random_sequences_keep_target_in_bounds_and_never_drop_on_failure() -> None:
    rng = random.Random(20240601)
    seen = {"up": 0, "down": 0, "hold": 0, "to zero": 0, "failed": 0}
    for _ in range(60):
        rule = random_rule(rng)
        now = T0
        state = initial_state(now)
        current = rng.choice((0, rule.min_replicas, rule.max_replicas))
        for _ in range(120):
            now += rng.choice((1, 15, 30, 90, 400))
            lengths = [
                None if rng.random() < 0.15 else rng.choice((0, 0, 1, 3, 20, 80, 1000))
                for _ in rule.triggers
            ]
            decision = tick(rule, current, state, now, *lengths)
            target = decision.target
            assert decision.current == current
            if target != current:
                assert rule.min_replicas <= target <= rule.max_replicas, (rule, current, decision)
            if None in lengths:
                assert target >= current, (rule, current, lengths, decision)
            if all(length is None for length in lengths):
                assert target == current
            seen[decision.direction] += 1
            seen["to zero"] += target == 0 < current
            seen["failed"] += None in lengths and current > 0
            state = decision.state.record_scale(now, current, target)
            current = target
            if rng.random() < 0.05:  # someone scaled by hand, inside the bounds
                current = rng.randint(rule.min_replicas, rule.max_replicas)
    # The loop is only worth something if it went through every kind of step.
    assert min(seen.values()) >= 50, seen
