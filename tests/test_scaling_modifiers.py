"""scalingModifiers: loading (errors name the field and the trigger), and the decision.

- a formula over trigger names compiles at load; an unknown name or a bad token is a load error
  of `scalingModifiers.formula` that names it; `target` is required;
- the formula's value decides with its own target, activation and metricType;
- a trigger the formula needs that fails makes the tick a failed one: no scale-down on it;
  `a ?? b` covers a missing value, but the tick still counts as failed;
- a formula that cannot be computed (division by zero) is a failed reading, never a zero.
"""

from __future__ import annotations

from typing import Any

import yaml

from eventscaler.config import Rule, parse_rules_text
from eventscaler.policy import STEP_FAILED, Reading, decide, initial_state

T0 = 1_000.0


def load(modifiers: Any, **rule: Any) -> tuple[list[str], Rule | None]:
    entry = {
        "name": "combo",
        "deployment": "worker",
        "maxReplicas": 50,
        "triggers": [
            {"type": "azure-queue", "name": "orders", "queueName": "orders"},
            {"type": "azure-queue", "name": "returns", "queueName": "returns"},
        ],
        "scalingModifiers": modifiers,
        **rule,
    }
    result = parse_rules_text(yaml.safe_dump({"rules": [entry]}), "rules.yaml")
    return [str(p) for p in result.problems], (result.rules[0] if result.rules else None)


def test_a_valid_formula_loads_with_its_numbers() -> None:
    problems, rule = load({"formula": "(orders + returns) / 2", "target": 10,
                           "activationTarget": 4, "metricType": "Value"})  # fmt: skip
    assert problems == [] and rule is not None
    modifiers = rule.scaling_modifiers
    assert modifiers is not None
    assert (modifiers.target, modifiers.activation, modifiers.metric_type) == (10, 4, "Value")
    assert modifiers.compiled is not None and modifiers.compiled.names == ("orders", "returns")


def test_unknown_trigger_name_is_a_load_error_naming_it() -> None:
    problems, rule = load({"formula": "orders + retruns", "target": 5})
    assert rule is None
    (line,) = problems
    assert line.startswith("rules.yaml: rules[0] (combo).scalingModifiers.formula: ")
    assert "retruns" in line and "returns" in line


def test_bad_token_and_missing_target_are_both_reported() -> None:
    problems, _ = load({"formula": "orders # 2"})
    assert any("scalingModifiers.formula:" in p and "#" in p for p in problems)
    assert any("scalingModifiers.target: is required" in p for p in problems)


def test_unknown_modifier_field_gets_a_hint() -> None:
    problems, _ = load({"formula": "orders", "target": 5, "activationTargt": 1})
    assert any("scalingModifiers.activationTargt: unknown field (did you mean "
               "'activationTarget'?)" in p for p in problems)  # fmt: skip


def rule_with(formula: str, target: float = 10, activation: float = 0) -> Rule:
    problems, rule = load({"formula": formula, "target": target,
                           "activationTarget": activation})  # fmt: skip
    assert problems == [] and rule is not None
    return rule


def readings(orders: float | None, returns: float | None) -> list[Reading]:
    return [Reading("orders", orders, None if orders is not None else "down"),
            Reading("returns", returns, None if returns is not None else "down")]  # fmt: skip


def test_the_formula_decides_from_zero() -> None:
    # (40 + 20) / 2 = 30 -> ceil(30 / 10) = 3, where the highest trigger alone would ask 8.
    decision = decide(rule_with("(orders + returns) / 2"), readings(40, 20), 0,
                      initial_state(T0), T0)  # fmt: skip
    assert decision.target == 3
    assert "formula '(orders + returns) / 2'=30/10" in decision.reason


def test_activation_applies_to_the_formula_value() -> None:
    rule = rule_with("orders - returns", activation=5)
    idle = decide(rule, readings(30, 25), 0, initial_state(T0), T0)  # 5 is not > 5
    assert idle.target == 0 and not idle.active
    active = decide(rule, readings(31, 25), 0, initial_state(T0), T0)  # 6 > 5
    assert active.target == 1 and active.active


def test_a_failed_trigger_the_formula_needs_never_scales_down() -> None:
    rule = rule_with("orders + returns")
    decision = decide(rule, readings(None, 0), 8, initial_state(T0), T0 + 1000)
    assert (decision.target, decision.step) == (8, STEP_FAILED)


def test_a_default_covers_a_missing_value_but_never_lowers_the_count() -> None:
    rule = rule_with("orders + (returns ?? 0)")
    up = decide(rule, readings(95, None), 2, initial_state(T0), T0)  # 95 -> 10
    assert up.target == 10
    held = decide(rule, readings(5, None), 8, initial_state(T0), T0 + 1000)
    assert held.target == 8


def test_division_by_zero_is_a_failed_reading_not_a_zero() -> None:
    rule = rule_with("orders / returns")
    decision = decide(rule, readings(10, 0), 6, initial_state(T0), T0 + 1000)
    assert (decision.target, decision.step) == (6, STEP_FAILED)
