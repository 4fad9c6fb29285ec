"""A MODEL of how KEDA scales a Deployment, built from KEDA's documented semantics. Not KEDA.

It exists so `simulate --compare` and `make compare` can show, on the same load, how a
ScaledObject equivalent to a rule would behave under KEDA's defaults. It is written from KEDA's
documentation and the Kubernetes HPA's documented algorithm (see /shared/KEDA-REFERENCE.md and
docs/simulate.md), not from running KEDA, and shares no code with our policy. Every output calls it
"KEDA model".

What is modelled, on two clocks:
- The KEDA operator, every `pollingInterval` (default 30 s), decides only 0 <-> 1. Active = some
  trigger's value is strictly greater than its activation threshold. Active at 0 replicas: set
  max(minReplicaCount, 1). Inactive, above 0, with minReplicaCount 0: straight to 0 once
  `cooldownPeriod` (default 300 s) has passed since the last active poll (at exactly the period it
  goes), bypassing the HPA's scale-down behaviour. Never active since the start: to 0 at once
  unless `initialCooldownPeriod` (default 0) has not yet passed (KEDA issue #5008).
- The HPA, every 15 s, from 1 to N, only while the target has replicas. minReplicas is
  max(minReplicaCount, 1). Per trigger (AverageValue): desired = ceil(value / target),
  or the current count when |value / (target x current) - 1| <= 0.1; the highest wins.
  Stabilization: the lowest recommendation of the scale-up window (0 s) and the highest of the
  scale-down window (300 s) bound the change, the first sync counting the replicas it finds as a
  recommendation. Rate: scale-up at most max(+4 pods, +100 %) per 15 s, scale-down at most 100 %
  per 15 s, counted from the HPA's own scale events (`periodStart = current - added + removed`).
- When both clocks are due at the same instant the HPA goes first, so a replica the operator has
  just added waits a whole HPA period: KEDA-REFERENCE's worst case (0 -> 1 after up to 30 s, then
  15 s steps 1 -> 5 -> 10 -> 20).

Not modelled: scaler errors and fallback, idleReplicaCount, scalingModifiers, metric caching and
the delay of the metrics server, the HPA's pod readiness handling (irrelevant to external metrics),
and the jitter of real clocks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from eventscaler.config import Rule, ScalingPolicy, ScalingRules
from eventscaler.triggers import VALUE, Trigger

MODEL_LABEL = "KEDA model"
HPA_SYNC_PERIOD = 15.0  # kube-controller-manager --horizontal-pod-autoscaler-sync-period
HPA_TOLERANCE = 0.1  # cluster-wide; KEDA does not set it per HPA
KEDA_POLLING_INTERVAL = 30.0
KEDA_COOLDOWN_PERIOD = 300.0
# The HPA's default behavior (autoscaling/v2), used wherever a ScaledObject leaves it out.
HPA_DEFAULT_SCALE_UP = ScalingRules(
    stabilization_window_seconds=0.0,
    select_policy="Max",
    policies=(ScalingPolicy("Pods", 4, 15.0), ScalingPolicy("Percent", 100, 15.0)),
)
HPA_DEFAULT_SCALE_DOWN = ScalingRules(
    stabilization_window_seconds=300.0,
    select_policy="Max",
    policies=(ScalingPolicy("Percent", 100, 15.0),),
)


@dataclass(frozen=True)
class KedaSettings:
    """The ScaledObject being modelled (its fields, KEDA's defaults) and the HPA's settings."""

    triggers: tuple[Trigger, ...]
    min_replica_count: int = 0
    max_replica_count: int = 100
    polling_interval: float = KEDA_POLLING_INTERVAL
    cooldown_period: float = KEDA_COOLDOWN_PERIOD
    initial_cooldown_period: float = 0.0
    scale_up: ScalingRules = HPA_DEFAULT_SCALE_UP
    scale_down: ScalingRules = HPA_DEFAULT_SCALE_DOWN
    hpa_sync_period: float = HPA_SYNC_PERIOD
    tolerance: float = HPA_TOLERANCE

    @property
    def hpa_min_replicas(self) -> int:
        # KEDA gives its HPA minReplicas 1 when minReplicaCount is 0: the HPA cannot reach 0.
        return max(self.min_replica_count, 1)


def settings_from_rule(rule: Rule) -> KedaSettings:
    """The ScaledObject equivalent to `rule` (the fields share their names), under KEDA's defaults.

    The rule's behavior is carried over as `advanced.horizontalPodAutoscalerConfig.behavior`
    would be, and the HPA fills in what it leaves out as the API server does: a direction without
    policies gets the HPA's default policies (ours means "no limit"; the HPA's default scale-up
    is 4 pods or 100 % per 15 s). The HPA's tolerance is its cluster-wide 0.1.
    """
    return KedaSettings(
        triggers=rule.triggers,
        min_replica_count=rule.min_replicas,
        max_replica_count=rule.max_replicas,
        polling_interval=rule.polling_interval,
        cooldown_period=rule.cooldown_period,
        scale_up=_with_default_policies(rule.behavior.scale_up, HPA_DEFAULT_SCALE_UP),
        scale_down=_with_default_policies(rule.behavior.scale_down, HPA_DEFAULT_SCALE_DOWN),
    )


def _with_default_policies(rules: ScalingRules, default: ScalingRules) -> ScalingRules:
    return ScalingRules(
        stabilization_window_seconds=rules.stabilization_window_seconds,
        select_policy=rules.select_policy,
        policies=rules.policies or default.policies,
    )


@dataclass(frozen=True)
class KedaAction:
    """What one clock did at one instant."""

    time: float
    clock: str  # "operator" or "hpa"
    current: int
    target: int
    reason: str

    @property
    def changes(self) -> bool:
        return self.target != self.current


class KedaModel:
    """The operator's and the HPA's memory, stepped on their own clocks from `start`."""

    label = MODEL_LABEL

    def __init__(self, settings: KedaSettings, start: float = 0.0) -> None:
        self.settings = settings
        self.start = start
        self.last_active: float | None = None
        self._polls = 0
        self._syncs = 0
        self._recommendations: list[tuple[float, int]] = []  # (time, replicas), HPA memory
        self._hpa_has_run = False
        self._scale_events: list[tuple[float, int]] = []  # (time, change) of the HPA's writes

    # -- the clocks

    def next_poll(self) -> float:
        return self.start + self._polls * self.settings.polling_interval

    def next_sync(self) -> float:
        return self.start + self._syncs * self.settings.hpa_sync_period

    def next_tick(self) -> float:
        return min(self.next_poll(), self.next_sync())

    def tick(self, now: float, values: Sequence[float], current: int) -> list[KedaAction]:
        """Run whichever clocks are due at `now`, the HPA first; the last action's target holds."""
        actions = []
        if self.next_sync() <= now + 1e-9:
            self._syncs += 1
            action = self.hpa_sync(now, values, current)
            actions.append(action)
            current = action.target
        if self.next_poll() <= now + 1e-9:
            self._polls += 1
            actions.append(self.operator_poll(now, values, current))
        return actions

    # -- the KEDA operator: 0 <-> 1 and the cooldown

    def operator_poll(self, now: float, values: Sequence[float], current: int) -> KedaAction:
        s = self.settings
        active = any(value > t.activation for t, value in zip(s.triggers, values, strict=True))
        if active:
            self.last_active = now

        def act(target: int, why: str) -> KedaAction:
            return KedaAction(now, "operator", current, target, f"operator: {why}")

        if active and current == 0:
            return act(s.hpa_min_replicas, "active at 0 replicas: activate")
        if not active and current > 0 and s.min_replica_count == 0:
            if self.last_active is None:
                if now - self.start >= s.initial_cooldown_period:
                    return act(0, "never active since start: scale to 0 (initialCooldownPeriod)")
            elif now - self.last_active >= s.cooldown_period:
                idle = now - self.last_active
                return act(0, f"inactive for {idle:g}s >= cooldownPeriod: scale to 0")
            return act(current, "inactive, cooling down")
        if not active and current < s.min_replica_count:
            return act(s.min_replica_count, "below minReplicaCount")
        return act(current, "active: the HPA decides" if active else "inactive")

    # -- the HPA: 1 <-> N

    def hpa_sync(self, now: float, values: Sequence[float], current: int) -> KedaAction:
        s = self.settings

        def act(target: int, why: str) -> KedaAction:
            if target != current:
                self._scale_events.append((now, target - current))
            return KedaAction(now, "hpa", current, target, f"HPA: {why}")

        if current == 0:
            return act(0, "target at 0 replicas: scaling disabled")
        if current > s.max_replica_count:
            return act(s.max_replica_count, "above maxReplicas")
        if current < s.hpa_min_replicas:
            return act(s.hpa_min_replicas, "below minReplicas")
        desired = max(
            self._proposal(t, value, current) for t, value in zip(s.triggers, values, strict=True)
        )
        self._forget(now)
        if not self._hpa_has_run:
            self._hpa_has_run = True
            self._recommendations.append((now, current))
        stabilized = self._stabilize(now, current, desired)
        self._recommendations.append((now, desired))
        target = self._limit_rate(now, current, stabilized)
        return act(target, f"metrics ask for {desired}, stabilized {stabilized}, allowed {target}")

    def _proposal(self, trigger: Trigger, value: float, current: int) -> int:
        # The HPA's two external-metric target types: a Value target is for the whole workload.
        per_replica = trigger.target if trigger.metric_type == VALUE else trigger.target * current
        ratio = value / per_replica
        # The HPA's own float comparison: |1 - 55/50| = 0.10000000000000009 > 0.1 scales.
        if abs(1.0 - ratio) <= self.settings.tolerance:
            return current
        if trigger.metric_type == VALUE:
            return math.ceil(ratio * current)
        return math.ceil(value / trigger.target)

    def _stabilize(self, now: float, current: int, desired: int) -> int:
        up_cutoff = now - self.settings.scale_up.stabilization_window_seconds
        down_cutoff = now - self.settings.scale_down.stabilization_window_seconds
        up = down = desired
        for when, value in self._recommendations:
            if when > up_cutoff:
                up = min(up, value)
            if when > down_cutoff:
                down = max(down, value)
        return min(max(current, up), down)

    def _limit_rate(self, now: float, current: int, desired: int) -> int:
        s = self.settings
        if desired > current:
            limit = max(self._scale_up_limit(now, current), current)
            return min(desired, limit, s.max_replica_count)
        if desired < current:
            limit = min(self._scale_down_limit(now, current), current)
            return max(desired, limit, s.hpa_min_replicas)
        return desired

    def _period_start(self, now: float, current: int, period: float) -> int:
        recent = [change for when, change in self._scale_events if when + period > now]
        added = sum(c for c in recent if c > 0)
        removed = -sum(c for c in recent if c < 0)
        return current - added + removed

    def _scale_up_limit(self, now: float, current: int) -> int:
        rules = self.settings.scale_up
        if rules.select_policy == "Disabled":
            return current
        proposals = []
        for policy in rules.policies:
            start = self._period_start(now, current, policy.period_seconds)
            if policy.type == "Pods":
                proposals.append(start + policy.value)
            else:
                proposals.append(math.ceil(start * (1 + policy.value / 100)))
        return max(proposals) if rules.select_policy == "Max" else min(proposals)

    def _scale_down_limit(self, now: float, current: int) -> int:
        rules = self.settings.scale_down
        if rules.select_policy == "Disabled":
            return current
        proposals = []
        for policy in rules.policies:
            start = self._period_start(now, current, policy.period_seconds)
            if policy.type == "Pods":
                proposals.append(start - policy.value)
            else:
                proposals.append(int(start * (1 - policy.value / 100)))
        return min(proposals) if rules.select_policy == "Max" else max(proposals)

    def _forget(self, now: float) -> None:
        """Keep only what a window or a policy period can still see, as the HPA does."""
        s = self.settings
        horizon = max(
            s.scale_up.stabilization_window_seconds,
            s.scale_down.stabilization_window_seconds,
        )
        self._recommendations = [r for r in self._recommendations if r[0] > now - horizon]
        longest = max(
            (p.period_seconds for p in s.scale_up.policies + s.scale_down.policies), default=0.0
        )
        self._scale_events = [e for e in self._scale_events if e[0] + longest > now]
