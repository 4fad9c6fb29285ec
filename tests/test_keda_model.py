"""The KEDA model (eventscaler/keda_model.py): a model of KEDA + HPA from documented semantics.

Scenarios covered:
- the documented flood timeline, stepped clock by clock with the queue held at 1,000 messages
  until t=90: 0 -> 1 at the first operator poll that sees it (t=30), 1 -> 5 -> 10 -> 20 on the
  next HPA syncs (45, 60, 75), the HPA holding 20 through its 300 s scale-down window, and zero
  exactly 300 s after the last active poll (t=390)
- the same flood through the simulator with workers: the same steps up, the HPA stepping down
  once the window slides, zero at last activity + 300 s, and every figure computed by hand
- the two clocks: the HPA runs before the operator at a shared instant, and never at 0 replicas
- the operator: activation strictly greater than activationQueueLength, cooldown at exactly
  cooldownPeriod, a target never active since start zeroed at once (KEDA #5008) unless
  initialCooldownPeriod, minReplicaCount > 0 lifted from 0 and never zeroed
- the HPA: tolerance 0.1 on both sides, the highest trigger wins, the 4-pods-or-100 % scale-up
  rule (and selectPolicy Min), the 100 % scale-down policy and the minReplicas floor of 1,
  selectPolicy Disabled
- settings_from_rule: KEDA's defaults for a default rule; a rule's behavior carried over, with
  the HPA's default policies where it has none
- the model is labelled a model wherever it shows
"""

from __future__ import annotations

import pytest

from eventscaler import keda_model
from eventscaler.compare import DEFAULT_RULE
from eventscaler.config import (
    Behavior,
    Rule,
    ScaleTargetRef,
    ScalingPolicy,
    ScalingRules,
)
from eventscaler.keda_model import (
    HPA_DEFAULT_SCALE_DOWN,
    HPA_DEFAULT_SCALE_UP,
    KedaModel,
    KedaSettings,
    settings_from_rule,
)
from eventscaler.scenarios import scenario
from eventscaler.simulate import KedaController, simulate
from eventscaler.sources.azure_queue import azure_queue_trigger

QUEUE = azure_queue_trigger("js-queue-items", queue_length=5.0)


def settings(**overrides: object) -> KedaSettings:
    values: dict[str, object] = {"triggers": (QUEUE,), "max_replica_count": 20}
    values.update(overrides)
    return KedaSettings(**values)  # type: ignore[arg-type]


def run_clocks(
    model: KedaModel, length_at: dict[float, int] | None, until: float, current: int = 0
) -> list[tuple[float, str, int, int]]:
    """Step every due clock up to `until`; returns the changes as (time, clock, from, to)."""
    changes = []
    now = model.next_tick()
    while now <= until:
        length = (length_at or {}).get(now, 0)
        for action in model.tick(now, [length] * len(model.settings.triggers), current):
            if action.changes:
                changes.append((action.time, action.clock, action.current, action.target))
            current = action.target
        now = model.next_tick()
    return changes


def test_documented_flood_timeline_step_by_step() -> None:
    model = KedaModel(settings())
    # 1,000 messages arrive at t=1 and stay until t=90 (no workers): only the clocks matter.
    flooded = {float(t): 1000 for t in range(15, 91, 15)}
    changes = run_clocks(model, flooded, until=600)
    assert changes == [
        (30.0, "operator", 0, 1),  # the first operator poll after the messages
        (45.0, "hpa", 1, 5),  # max(1 + 4 pods, 1 x 200 %)
        (60.0, "hpa", 5, 10),  # max(5 + 4, 5 x 200 %)
        (75.0, "hpa", 10, 20),  # max(10 + 4, 10 x 200 %), capped at maxReplicaCount
        (390.0, "hpa", 20, 1),  # the 300 s window no longer holds a recommendation of 200
        (390.0, "operator", 1, 0),  # 300 s after the last active poll (t=90): straight to 0
    ]
    assert model.last_active == 90.0


def test_flood_through_the_simulator_matches_the_timeline_and_hand_figures() -> None:
    controller = KedaController(DEFAULT_RULE)
    run = simulate(controller, DEFAULT_RULE, scenario("flood"))  # 1 msg/s, ready after 10 s
    assert [(w.time, w.current, w.target) for w in run.writes] == [
        (30.0, 0, 1),
        (45.0, 1, 5),
        (60.0, 5, 10),
        (75.0, 10, 20),
        (405.0, 20, 12),  # the HPA: the window's highest recommendation is now 12 (t=120)
        (420.0, 12, 0),  # the HPA goes to 1, then the operator to 0 at the same instant
    ]
    # Last active poll: t=120 (60 messages left); the queue is empty at t=123.
    assert controller.model.last_active == 120.0
    assert run.writes[-1].time == controller.model.last_active + 300
    s = run.summary
    assert s.time_to_enough == 84.0  # 20 ready at t=85; the flood came at t=1
    backlog = (
        1000 * 39  # t=1..40: nobody ready
        + (1000 + 985) / 2 * 15  # 40..55: 1 ready
        + (985 + 910) / 2 * 15  # 55..70: 5 ready
        + (910 + 760) / 2 * 15  # 70..85: 10 ready
        + 760 * 38 / 2  # 85..123: 20 ready
    )
    assert s.backlog_message_seconds == pytest.approx(backlog)
    assert s.replica_seconds == pytest.approx(1 * 15 + 5 * 15 + 10 * 15 + 20 * 330 + 12 * 15)
    assert s.time_to_zero == pytest.approx(420 - 123)
    assert s.direction_changes == 1


def test_the_hpa_runs_first_at_a_shared_instant_and_never_at_zero() -> None:
    model = KedaModel(settings())
    actions = model.tick(0.0, [1000], 0)
    assert [(a.clock, a.target) for a in actions] == [("hpa", 0), ("operator", 1)]
    assert "scaling disabled" in actions[0].reason
    assert model.next_sync() == 15.0 and model.next_poll() == 30.0
    assert model.hpa_sync(15.0, [1000], 0).target == 0


def test_activation_is_strictly_greater() -> None:
    queue = azure_queue_trigger("q-q", queue_length=5.0, activation_queue_length=10)
    model = KedaModel(settings(triggers=(queue,)))
    assert model.operator_poll(0.0, [10], 0).target == 0
    assert model.last_active is None
    assert model.operator_poll(30.0, [11], 0).target == 1


def test_cooldown_goes_at_exactly_the_period() -> None:
    model = KedaModel(settings(cooldown_period=60.0))
    assert model.operator_poll(0.0, [1], 0).target == 1
    assert model.operator_poll(30.0, [0], 3).target == 3
    assert model.operator_poll(59.0, [0], 3).target == 3
    assert model.operator_poll(60.0, [0], 3).target == 0


def test_never_active_since_start_zeroes_at_once_unless_initial_cooldown() -> None:
    # KEDA #5008: a new ScaledObject scales an idle running Deployment to 0 at its first poll.
    assert KedaModel(settings()).operator_poll(0.0, [0], 4).target == 0
    model = KedaModel(settings(initial_cooldown_period=60.0))
    assert model.operator_poll(0.0, [0], 4).target == 4
    assert model.operator_poll(30.0, [0], 4).target == 4
    assert model.operator_poll(60.0, [0], 4).target == 0


def test_min_replica_count_above_zero() -> None:
    model = KedaModel(settings(min_replica_count=2))
    assert model.operator_poll(0.0, [0], 0).target == 2  # lifted to the minimum even idle
    assert model.operator_poll(30.0, [50], 0).target == 2
    assert model.operator_poll(1000.0, [0], 2).target == 2  # never to zero
    assert model.hpa_sync(1015.0, [0], 2).target == 2


def test_tolerance_on_both_sides() -> None:
    no_window = ScalingRules(0.0, "Max", HPA_DEFAULT_SCALE_DOWN.policies)
    # The HPA's float arithmetic: |1 - 55/50| = 0.10000000000000009 > 0.1, so 55 scales to 11.
    for length, expected in ((55, 11), (45, 10), (56, 12), (44, 9)):
        model = KedaModel(settings(scale_down=no_window))
        assert model.hpa_sync(15.0, [length], 10).target == expected, length


def test_highest_trigger_wins() -> None:
    triggers = (QUEUE, azure_queue_trigger("other", queue_length=2.0))
    model = KedaModel(settings(triggers=triggers))
    assert model.hpa_sync(15.0, [10, 10], 4).target == 5  # ceil(10 / 2) beats ceil(10 / 5)


def test_scale_up_pods_or_percent_whichever_allows_more() -> None:
    assert KedaModel(settings()).hpa_sync(15.0, [1000], 2).target == 6  # 2 + 4 > 2 x 2
    assert KedaModel(settings()).hpa_sync(15.0, [1000], 8).target == 16  # 8 x 2 > 8 + 4
    minimal = ScalingRules(0.0, "Min", HPA_DEFAULT_SCALE_UP.policies)
    assert KedaModel(settings(scale_up=minimal)).hpa_sync(15.0, [1000], 2).target == 4
    disabled = ScalingRules(0.0, "Disabled", HPA_DEFAULT_SCALE_UP.policies)
    assert KedaModel(settings(scale_up=disabled)).hpa_sync(15.0, [1000], 2).target == 2


def test_scale_up_counts_the_hpas_own_recent_events() -> None:
    model = KedaModel(settings(max_replica_count=100))
    assert model.hpa_sync(15.0, [1000], 2).target == 6
    # One second later the period starts at 2 again: 2 + 4 = 6 is still the limit.
    assert model.hpa_sync(16.0, [1000], 6).target == 6
    assert model.hpa_sync(30.0, [1000], 6).target == 12  # t=15 is out of (15, 30]


def test_scale_down_policy_and_the_floor_of_one() -> None:
    no_window = ScalingRules(0.0, "Max", HPA_DEFAULT_SCALE_DOWN.policies)
    model = KedaModel(settings(scale_down=no_window))
    assert model.hpa_sync(15.0, [0], 20).target == 1  # 100 % per 15 s, but HPA minReplicas 1
    gradual = ScalingRules(0.0, "Max", (ScalingPolicy("Pods", 2, 60.0),))
    model = KedaModel(settings(scale_down=gradual))
    assert model.hpa_sync(15.0, [0], 20).target == 18
    assert model.hpa_sync(30.0, [0], 18).target == 18  # 2 removed within the last 60 s
    disabled = ScalingRules(0.0, "Disabled", ())
    assert KedaModel(settings(scale_down=disabled)).hpa_sync(15.0, [0], 20).target == 20


def test_settings_from_a_default_rule_are_kedas_defaults() -> None:
    s = settings_from_rule(DEFAULT_RULE)
    assert s.polling_interval == 30 and s.cooldown_period == 300 and s.hpa_sync_period == 15
    assert s.tolerance == 0.1 and s.min_replica_count == 0 and s.max_replica_count == 20
    assert s.scale_up == HPA_DEFAULT_SCALE_UP
    assert s.scale_down == HPA_DEFAULT_SCALE_DOWN
    assert s.hpa_min_replicas == 1


def test_settings_carry_a_rules_behavior_with_hpa_default_policies() -> None:
    rule = Rule(
        "r",
        "default",
        ScaleTargetRef("d"),
        (QUEUE,),
        min_replicas=1,
        polling_interval=15.0,
        behavior=Behavior(
            scale_up=ScalingRules(policies=(ScalingPolicy("Pods", 1, 60.0),)),
            scale_down=ScalingRules(stabilization_window_seconds=60.0),
        ),
    )
    s = settings_from_rule(rule)
    assert s.scale_up.policies == (ScalingPolicy("Pods", 1, 60.0),)
    assert s.scale_down.stabilization_window_seconds == 60.0
    assert s.scale_down.policies == HPA_DEFAULT_SCALE_DOWN.policies
    assert s.polling_interval == 15.0 and s.hpa_min_replicas == 1


def test_the_model_is_labelled_a_model() -> None:
    assert keda_model.MODEL_LABEL == "KEDA model"
    assert KedaModel.label == "KEDA model"
    assert (keda_model.__doc__ or "").startswith("A MODEL of how KEDA scales")
    assert "Not KEDA." in (keda_model.__doc__ or "")
