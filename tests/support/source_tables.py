"""The table-driven shape every source's metadata tests follow (docs/sources.md).

    VALID = [({"queueName": "orders"}, {"settings.queue_name": "orders", "target": 5.0}), ...]
    INVALID = [({"queueName": "Orders"}, "triggers[0].queueName: expected an Azure queue"), ...]

`load_trigger` runs one trigger through the real rule-file loader, inside a one-rule file, so an
error line is exactly what `validate` prints; `attribute` reads dotted paths of the Trigger.
"""

from __future__ import annotations

from typing import Any

import yaml

from eventscaler.config import parse_rules_text
from eventscaler.triggers import Trigger


def load_trigger(source_type: str, metadata: dict[str, Any]) -> tuple[list[str], Trigger | None]:
    rule = {"name": "r", "deployment": "d", "triggers": [{"type": source_type, **metadata}]}
    result = parse_rules_text(yaml.safe_dump({"rules": [rule]}), "rules.yaml")
    problems = [str(p) for p in result.problems]
    return problems, (result.rules[0].triggers[0] if result.rules else None)


def attribute(trigger: Trigger, path: str) -> Any:
    value: Any = trigger
    for part in path.split("."):
        value = getattr(value, part)
    return value


def assert_valid(source_type: str, metadata: dict[str, Any], expected: dict[str, Any]) -> None:
    problems, trigger = load_trigger(source_type, metadata)
    assert problems == [] and trigger is not None
    assert {path: attribute(trigger, path) for path in expected} == expected


def assert_invalid(source_type: str, metadata: dict[str, Any], fragment: str) -> None:
    problems, trigger = load_trigger(source_type, metadata)
    assert trigger is None
    assert any(p.startswith("rules.yaml: rules[0] (r).") and fragment in p for p in problems), (
        problems
    )
