"""What a rule scales on, whatever the source: a value, a target per replica, an activation level.

A source (eventscaler/sources/) turns its own settings into one number per reading: messages in a
queue, a consumer group's lag, a query's result. The rest of the daemon sees only a `Trigger`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# KEDA's metricType: how a value turns into replicas (the HPA's two external-metric target types).
AVERAGE_VALUE = "AverageValue"  # desired = ceil(value / target): the target is per replica
VALUE = "Value"  # desired = ceil(current x value / target): the target is for the whole workload
METRIC_TYPES = (AVERAGE_VALUE, VALUE)


@dataclass(frozen=True)
class Trigger:
    """One trigger of a rule: the source `type`, its own `settings`, and the generic numbers."""

    type: str  # KEDA's trigger type: "azure-queue", "rabbitmq", ...
    name: str  # for logs, metrics and scalingModifiers formulas
    settings: Any  # the source's frozen settings record (see its module)
    target: float = 5.0  # the value one replica handles (AverageValue) or the whole target (Value)
    activation: float = 0.0  # active when the value is strictly above this
    metric_type: str = AVERAGE_VALUE

    @property
    def label(self) -> str:
        return self.name


@dataclass(frozen=True)
class Measured:
    """A reading with the backlog behind it, for a trigger whose value is not a backlog.

    KEDA's rabbitmq MessageRate scales on the publish rate, yet stays active while the queue
    holds more than `activationValue` messages, so a backlog left when publishing stops is still
    worked off. A source returns this instead of a bare float to say so.
    """

    value: float
    backlog: float
