"""One trigger through the real rule loader, as the source tests' metadata tables need it."""

from __future__ import annotations

from typing import Any

import yaml

from eventscaler.config import parse_rules_text
from eventscaler.triggers import Trigger

# Where every problem of the one trigger below is reported.
PREFIX = "rules.yaml: rules[0] (r).triggers[0]"


def load_trigger(trigger: dict[str, Any]) -> tuple[list[str], Trigger | None]:
    """The problems of a one-rule file `rules.yaml` holding `trigger`, and the trigger loaded."""
    text = yaml.safe_dump({"rules": [{"name": "r", "deployment": "d", "triggers": [trigger]}]})
    result = parse_rules_text(text, "rules.yaml")
    problems = [str(p) for p in result.problems]
    return problems, (result.rules[0].triggers[0] if result.rules else None)
