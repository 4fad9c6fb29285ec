"""The decision for a trigger read as a rate with its backlog behind it (triggers.Measured;
KEDA's rabbitmq MessageRate). The clock is the `now` argument. Scenarios covered:
- a rate at 0 with more than activationValue messages waiting is active: the cooldown does not
  run out and the workload is not zeroed; once the backlog is at or under the activation, it is
- the backlog activates from zero (to at least one replica), yet never sizes the replicas: the
  rate does
- with scalingModifiers only the formula's value activates, as in KEDA
- a reading without a backlog (a bare float) decides as before
"""

from __future__ import annotations

from dataclasses import replace

from eventscaler.config import Behavior, Rule, ScaleTargetRef, ScalingRules, parse_rules_text
from eventscaler.policy import Decision, Reading, RuleState, decide, initial_state
from eventscaler.sources.rabbitmq import rabbitmq_trigger

T0 = 1_000_000.0
COOLDOWN = 300.0


def rate_rule(activation: float = 10.0) -> Rule:
    trigger = rabbitmq_trigger(
        "orders", 20.0, mode="MessageRate", protocol="http", activation=activation, name="rate"
    )
    return Rule(
        name="orders",
        namespace="default",
        scale_target=ScaleTargetRef("orders-worker"),
        triggers=(trigger,),
        min_replicas=0,
        max_replicas=50,
        cooldown_period=COOLDOWN,
        behavior=Behavior(scale_down=ScalingRules(0.0)),
    )


def at(
    rule: Rule, state: RuleState, now: float, current: int, rate: float, backlog: float | None
) -> tuple[Decision, RuleState]:
    decision = decide(rule, [Reading("rate", rate, backlog=backlog)], current, state, now)
    return decision, decision.state.record_scale(now, current, decision.target)


def test_a_backlog_above_activation_keeps_a_stopped_rate_active() -> None:
    rule = rate_rule(activation=10)
    state = initial_state(T0)
    decision, state = at(rule, state, T0 + 10, 3, 60.0, 0.0)  # publishing: 60/s -> 3 replicas
    assert decision.target == 3
    decision, state = at(rule, state, T0 + 20, 3, 0.0, 500.0)  # publishing stopped, 500 wait
    assert decision.active and "readings rate=0/20 (500 waiting)" in decision.reason
    decision, state = at(rule, state, T0 + 20 + COOLDOWN + 1, decision.target, 0.0, 11.0)
    assert decision.active and decision.target > 0  # 11 > 10 still wait: not zeroed
    decision, state = at(rule, state, T0 + 30 + COOLDOWN, decision.target, 0.0, 10.0)
    assert not decision.active  # 10 is not above the activation
    last_active = T0 + 20 + COOLDOWN + 1
    decision, _ = at(rule, state, last_active + COOLDOWN, decision.target, 0.0, 10.0)
    assert decision.target == 0


def test_the_backlog_wakes_from_zero_but_the_rate_sizes() -> None:
    rule = rate_rule(activation=0)
    decision, _ = at(rule, initial_state(T0), T0 + 10, 0, 0.0, 5_000.0)
    assert decision.active and decision.target == 1  # awake for the backlog, sized by the rate
    decision, _ = at(rule, initial_state(T0), T0 + 10, 0, 100.0, 5_000.0)
    assert decision.target == 5  # ceil(100 / 20)


def test_with_scaling_modifiers_only_the_formula_activates() -> None:
    text = """
rules:
  - name: orders
    deployment: orders-worker
    cooldownPeriod: 0
    scalingModifiers:
      formula: "rate * 2"
      target: 20
      activationTarget: 10
    triggers:
      - type: rabbitmq
        name: rate
        hostFromEnv: RABBIT_URL
        protocol: http
        queueName: orders
        mode: MessageRate
        value: 20
"""
    loaded = parse_rules_text(text, "rules.yaml")
    assert loaded.problems == ()
    rule = replace(loaded.rules[0], cooldown_period=0.0)
    decision, _ = at(rule, initial_state(T0 - 1000), T0, 2, 0.0, 5_000.0)
    assert not decision.active and decision.target == 0


def test_a_bare_value_decides_as_before() -> None:
    rule = rate_rule(activation=10)
    decision, _ = at(rule, initial_state(T0 - 1000), T0, 2, 0.0, None)
    assert not decision.active and decision.target == 0
