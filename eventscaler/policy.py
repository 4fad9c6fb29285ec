"""The decision: readings, state and time in; the replicas to run and why out. No I/O, no clock.

Every step, in order (the README lists them for users):
1. Per trigger: desired = ceil(value / target) (metricType AverageValue, the default) or
   ceil(current x value / target) (Value). Between non-zero counts a trigger inside the HPA's
   tolerance (|1 - usage ratio| <= tolerance, in plain float arithmetic as the HPA's) proposes
   `current`. The rule's proposal is the highest one (or scalingModifiers' formula decides).
   A rule with `rateAware` proposes instead the replicas for its backlog to drain within
   targetDrainSeconds at the estimated arrival rate (eventscaler/rate_aware.py), held at
   `current` within the tolerance; every step below applies to it the same.
2. active = some trigger's value > its activation threshold. A tick on which a trigger failed
   also counts as (possible) activity: a reading we did not get is never a reading of zero.
3. At 0 replicas: active -> straight to the proposal, clamped to [max(min, 1), max]. Idle -> stay,
   or lift to minReplicas when it is above 0.
4. Above 0 replicas, with minReplicas 0 and no activity for cooldownPeriod -> 0 (scale-down
   policies, when given, still limit the step). Otherwise the HPA's algorithm: a count outside
   [max(min, 1), max] goes to the bound at once; inside, the proposal goes through the HPA's
   stabilization (a target between the lowest recommendation of the scale-up window and the
   highest of the scale-down window), the bounds, and the HPA's rate policies (the period
   starting at current - replicas added + replicas removed within it).
5. A failed trigger forbids any scale-down on that tick; scale-up on what was read still happens.
6. After `fallback.failureThreshold` ticks in a row with a failed trigger, the rule runs
   `fallback.replicas`, from any count, zero included; the first tick with all readings back
   returns to normal.
Before all of these, a pause (annotation on the Deployment) leaves the replicas alone, or sets the
paused-replicas count, and counts as activity so resuming never zeroes at once.

The history (recommendations, scale events) is seeded once per rule state, as the HPA records its
initial recommendation once: on the first decision of a new rule (or a rule with a new target)
and on the first after a pause (KEDA re-creates the HPA on resume). Recommendations that aged out
leave an empty history, never a new seed; failed ticks record nothing and seed nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from eventscaler.config import Rule, ScalingPolicy, ScalingRules
from eventscaler.formula import FormulaError
from eventscaler.rate_aware import RateMemory, Sizing, estimate
from eventscaler.triggers import VALUE, Trigger

HOLD = "hold"


@dataclass(frozen=True)
class Reading:
    """One trigger's outcome on one tick: a value, or the error that prevented it."""

    trigger: str
    value: float | None  # None when the read failed
    error: str | None = None
    kind: str | None = None  # a short word for the failure (NotFound, Timeout...), for metrics
    backlog: float | None = None  # the messages behind a rate (Measured): active above activation

    @property
    def ok(self) -> bool:
        return self.value is not None


@dataclass(frozen=True)
class RuleState:
    """What a rule remembers between ticks. Immutable: each decision returns the next one."""

    last_active: float  # start-up counts as activity, so a restart never zeroes at once
    recommendations: tuple[tuple[float, int], ...] = ()  # (time, replicas) for stabilization
    scale_events: tuple[tuple[float, int], ...] = ()  # (time, replica change) for rate policies
    failed_ticks: int = 0  # ticks in a row on which some trigger failed (for the fallback)
    # Whether the history was started: the HPA records the count it finds as a recommendation
    # once, when it first sees its target; an empty history later (all aged out) is not a start.
    seeded: bool = False
    rate: RateMemory = RateMemory()  # the rate-aware estimate's memory (rateAware rules only)

    def record_scale(self, now: float, current: int, target: int) -> RuleState:
        """The state after a write from `current` to `target` succeeded."""
        if target == current:
            return self
        return replace(self, scale_events=(*self.scale_events, (now, target - current)))


def initial_state(now: float) -> RuleState:
    """A new rule's state (or a rule that now targets another Deployment): no history yet; the
    first decision seeds it with the replicas it finds."""
    return RuleState(last_active=now)


# Times this close are one instant. Tick times come from float arithmetic (a slot on the rule's
# schedule, see engine.TickClock), so a window, period or cooldown that ends exactly at a tick
# must not include or exclude it by a rounding error of a few nanoseconds.
SAME_INSTANT = 1e-6


@dataclass(frozen=True)
class Pause:
    """A pause asked for on the Deployment: leave it alone, or hold it at `replicas`."""

    source: str  # the annotation that asked for it, for the reason
    replicas: int | None = None


# Decision.step values: which step of the policy decided.
STEP_PAUSED = "paused"
STEP_FALLBACK = "fallback"
STEP_FAILED = "failed-readings"
STEP_WAKE = "scale-from-zero"
STEP_IDLE = "idle"
STEP_MIN = "min-replicas"
STEP_TO_ZERO = "cooldown-to-zero"
STEP_COOLDOWN = "cooldown"
STEP_UP = "scale-up"
STEP_DOWN = "scale-down"
STEP_TOLERANCE = "tolerance"
STEP_STABILIZATION = "stabilization"
STEP_RATE = "rate-policy"
STEP_AT_TARGET = "at-target"


@dataclass(frozen=True)
class Decision:
    current: int
    target: int
    active: bool
    reason: str  # the step of the policy that decided, and the readings behind it
    state: RuleState  # the state to keep for the next tick
    step: str = STEP_AT_TARGET  # one of the STEP_* words, for metrics and "reason changed" logs

    @property
    def changes(self) -> bool:
        return self.target != self.current

    @property
    def direction(self) -> str:
        if self.target > self.current:
            return "up"
        return "down" if self.target < self.current else HOLD


def decide(
    rule: Rule,
    readings: Sequence[Reading],
    current: int,
    state: RuleState,
    now: float,
    pause: Pause | None = None,
) -> Decision:
    """Decide the replicas for `rule`; `readings` are in the order of `rule.triggers`."""
    if pause is not None:
        return _paused(current, now, pause)
    good, failed = _signals(rule, readings)
    summary = _describe_readings(rule, readings, good)
    read_active = any(value > t.activation for t, value in good) or _backlog_active(rule, readings)
    active = failed or read_active
    state = replace(
        state,
        last_active=now if active else state.last_active,
        failed_ticks=state.failed_ticks + 1 if failed else 0,
    )
    state = _forget_old_history(rule, state, now)
    if not state.seeded:
        state = _start_history(state, now, current)
    state, sizing, summary = _size_by_rate(rule, good, failed, current, state, now, summary)

    def decision(target: int, step: str, why: str, next_state: RuleState = state) -> Decision:
        return Decision(current, target, active, f"{why}; {summary}", next_state, step)

    if failed and rule.fallback and state.failed_ticks >= rule.fallback.failure_threshold:
        replicas = rule.fallback.replicas
        why = f"fallback: {state.failed_ticks} failed tick(s) >= failureThreshold "
        why += f"{rule.fallback.failure_threshold}: running fallback.replicas {replicas}"
        return decision(replicas, STEP_FALLBACK, why)

    if not good:
        return decision(current, STEP_FAILED, "all readings failed: holding")

    if current == 0:
        if not read_active:
            if rule.min_replicas > 0:
                why = f"below minReplicas {rule.min_replicas}"
                return decision(rule.min_replicas, STEP_MIN, why)
            return decision(0, STEP_IDLE, "idle at zero")
        target, why = _wake_from_zero(rule, good, state, now, sizing)
        return decision(target, STEP_WAKE, why, _remember(state, now, target))

    idle_for = now - state.last_active
    if rule.min_replicas == 0 and not active and idle_for >= rule.cooldown_period - SAME_INSTANT:
        target = _apply_rate_policies(rule.behavior.scale_down, state, now, current, 0)
        why = f"no activity for {idle_for:.1f}s >= cooldownPeriod {rule.cooldown_period:g}s"
        if target > 0:
            why += f": scale-down policy allows {target}"
        return decision(target, STEP_TO_ZERO, why)

    idle = not active and rule.min_replicas == 0
    target, step, why, state = _between_non_zero(
        rule, good, current, state, now, failed, idle, sizing
    )
    return decision(target, step, why, state)


def _size_by_rate(
    rule: Rule,
    good: Sequence[tuple[Trigger, float]],
    failed: bool,
    current: int,
    state: RuleState,
    now: float,
    summary: str,
) -> tuple[RuleState, Sizing | None, str]:
    """The rate-aware estimate of a rateAware rule, folded into its state, and the summary with
    it. A failed tick adds nothing to it: a reading we did not get is never a backlog of zero."""
    if rule.rate_aware is None or failed or len(good) != 1:
        return state, None, summary
    backlog = good[0][1]
    memory, sizing = estimate(rule.rate_aware, state.rate, backlog, current, now, rule.max_replicas)
    return replace(state, rate=memory), sizing, f"{sizing.describe()}; {summary}"


def _asks(
    rule: Rule, good: Sequence[tuple[Trigger, float]], current: int, sizing: Sizing | None
) -> tuple[int, int]:
    """(the proposal after tolerance, the desire before it) above zero: the triggers' HPA
    arithmetic, or the rate-aware need, held at `current` within the rule's tolerance of it."""
    needed = _needs(good, current, sizing)
    if sizing is None or sizing.needed is None:
        return max(_proposal(t, value, current, rule.tolerance) for t, value in good), needed
    if math.fabs(1.0 - needed / current) <= rule.tolerance:
        return current, needed
    return needed, needed


def _needs(good: Sequence[tuple[Trigger, float]], current: int, sizing: Sizing | None) -> int:
    """What the readings ask for before tolerance: the rate-aware need, or the highest trigger's."""
    if sizing is not None and sizing.needed is not None:
        return sizing.needed
    return max(_desired(t, value, current) for t, value in good)


def _between_non_zero(
    rule: Rule,
    good: Sequence[tuple[Trigger, float]],
    current: int,
    state: RuleState,
    now: float,
    failed: bool,
    idle: bool,
    sizing: Sizing | None = None,
) -> tuple[int, str, str, RuleState]:
    """The HPA's part: tolerance, stabilization, rate policies; (target, step, why, state)."""
    floor = max(rule.min_replicas, 1)
    bounded = min(max(current, floor), rule.max_replicas)
    no_down = "a trigger failed: never scaling down on a missing reading"
    if bounded > current or (bounded < current and not failed):
        # As the HPA: a count outside the bounds goes to the nearest bound at once, before any
        # reading, window or rate policy, and records no recommendation on that tick.
        bound = "maxReplicas" if bounded < current else "minReplicas"
        why = f"{current} replicas outside [{floor}, {rule.max_replicas}]: to {bound} {bounded}"
        return bounded, STEP_UP if bounded > current else STEP_DOWN, why, state
    proposal, needs = _asks(rule, good, current, sizing)
    clamped = min(max(proposal, floor), rule.max_replicas)
    if failed and clamped <= current:
        # Partial readings may not lower anything, not even the stabilization history.
        return current, STEP_FAILED, no_down, state
    # As the HPA: the recommendation kept is the one before the bounds apply; the bounds apply
    # after stabilization, so a reload that changes them takes effect at once.
    state = _remember(state, now, proposal)
    stabilized = min(max(_stabilize(rule, state, now, current, proposal), floor), rule.max_replicas)
    direction = rule.behavior.scale_up if stabilized > current else rule.behavior.scale_down
    target = _apply_rate_policies(direction, state, now, current, stabilized)
    untolerated = min(max(needs, floor), rule.max_replicas)
    step = _step(current, clamped, stabilized, target, untolerated, idle)
    return target, step, _explain(current, proposal, clamped, stabilized, target), state


def _start_history(state: RuleState, now: float, current: int) -> RuleState:
    """The HPA's initial recommendation: the count found when the target is first seen."""
    return replace(state, seeded=True, recommendations=((now, current),), scale_events=())


def _signals(rule: Rule, readings: Sequence[Reading]) -> tuple[list[tuple[Trigger, float]], bool]:
    """The (trigger, value) pairs the decision works on, and whether a reading it needs failed.

    With scalingModifiers the formula's value is the one signal: a failed trigger it names, or a
    formula that cannot be computed (a division by zero), is a failed reading, never a zero.
    """
    read = [(t, r.value) for t, r in zip(rule.triggers, readings, strict=True)]
    good = [(t, v) for t, v in read if v is not None]
    failed = len(good) < len(read)
    modifiers = rule.scaling_modifiers
    if modifiers is None or modifiers.compiled is None:
        return good, failed
    # A failed trigger has no value: `a ?? 0` may still compute, yet the tick still counts as
    # failed, so it never scales down on a reading it did not get.
    try:
        value = modifiers.compiled.evaluate({t.name: v for t, v in good})
    except FormulaError:
        return [], True
    return [(modifiers.as_trigger(), value)], failed


def _backlog_active(rule: Rule, readings: Sequence[Reading]) -> bool:
    """A trigger read as a rate is active while its backlog is above its activation (KEDA's
    rabbitmq MessageRate). With scalingModifiers only the formula's value activates, as in KEDA."""
    if rule.scaling_modifiers is not None and rule.scaling_modifiers.compiled is not None:
        return False
    pairs = zip(rule.triggers, readings, strict=True)
    return any(r.backlog is not None and r.backlog > t.activation for t, r in pairs)


def _paused(current: int, now: float, pause: Pause) -> Decision:
    """Paused: no readings needed; the pause counts as activity so resuming never zeroes.

    The state starts afresh: failures before the pause are history (the fallback counts anew),
    and so is the HPA history, as with KEDA, which deletes the HPA of a paused ScaledObject and
    creates a new one on resume: the first tick after the pause seeds it with the count found.
    """
    state = initial_state(now)
    if pause.replicas is None:
        return Decision(current, current, False, f"paused by {pause.source}", state, STEP_PAUSED)
    why = f"paused at {pause.replicas} replicas by {pause.source}"
    return Decision(current, pause.replicas, False, why, state, STEP_PAUSED)


def _step(
    current: int, clamped: int, stabilized: int, target: int, untolerated: int, idle: bool
) -> str:
    """Name the step that decided; `untolerated` is the clamped desire before tolerance."""
    if target > current:
        return STEP_UP
    if target < current:
        return STEP_DOWN
    if clamped != current:
        return STEP_STABILIZATION if stabilized == current else STEP_RATE
    if idle:
        return STEP_COOLDOWN  # held above zero until the cooldown ends
    return STEP_TOLERANCE if untolerated != current else STEP_AT_TARGET


def _wake_from_zero(
    rule: Rule,
    good: Sequence[tuple[Trigger, float]],
    state: RuleState,
    now: float,
    sizing: Sizing | None = None,
) -> tuple[int, str]:
    """From zero, go straight to what the backlog needs (at least one), not to one first."""
    proposal = _needs(good, 0, sizing)
    clamped = min(max(proposal, rule.min_replicas, 1), rule.max_replicas)
    # Never below minReplicas: an idle rule at zero is lifted to it, an active one not less.
    target = max(
        _apply_rate_policies(rule.behavior.scale_up, state, now, 0, clamped), rule.min_replicas
    )
    why = f"activated from zero: backlog needs {proposal}"
    if clamped != proposal:
        why += f", clamped to {clamped}"
    if target != clamped:
        why += f", scale-up policy allows {target}"
    return target, why


def _remember(state: RuleState, now: float, recommendation: int) -> RuleState:
    return replace(state, recommendations=(*state.recommendations, (now, recommendation)))


def _desired(trigger: Trigger, value: float, current: int) -> int:
    """The HPA's replica count for one trigger, before tolerance. A Value target is for the whole
    workload, so it scales the current count; from zero that count is the one replica KEDA wakes."""
    if trigger.metric_type == VALUE:
        return math.ceil(value / trigger.target * max(current, 1))
    return math.ceil(value / trigger.target)


def _usage_ratio(trigger: Trigger, value: float, current: int) -> float:
    if trigger.metric_type == VALUE:
        return value / trigger.target
    return value / (trigger.target * current)


def _proposal(trigger: Trigger, value: float, current: int, tolerance: float) -> int:
    """The HPA's rule for one trigger, with its tolerance.

    Plain float arithmetic, as the HPA's: it scales when |1 - ratio| > tolerance, so 55 messages
    at 5 per replica on 10 replicas (|1 - 1.1| = 0.10000000000000009) go to 11, while 45 (|1 -
    0.9| = 0.09999999999999998) stay at 10. KEDA users comparing counts see the same numbers.
    """
    ratio = _usage_ratio(trigger, value, current)
    if math.fabs(1.0 - ratio) > tolerance:
        return _desired(trigger, value, current)
    return current


def _stabilize(rule: Rule, state: RuleState, now: float, current: int, recommendation: int) -> int:
    """Clamp `current` between the lowest recent up-recommendation and the highest down one.

    As the HPA: a recommendation counts while it is younger than the window (one exactly a
    window old no longer does); the current one always counts.
    """
    up_window = rule.behavior.scale_up.stabilization_window_seconds
    down_window = rule.behavior.scale_down.stabilization_window_seconds
    up = down = recommendation
    for when, value in state.recommendations:
        if when > now - up_window + SAME_INSTANT:
            up = min(up, value)
        if when > now - down_window + SAME_INSTANT:
            down = max(down, value)
    return min(max(current, up), down)


def _apply_rate_policies(
    rules: ScalingRules, state: RuleState, now: float, current: int, desired: int
) -> int:
    """Limit a step by the HPA's rate policies; no policies means no limit."""
    if desired == current:
        return desired
    if rules.select_policy == "Disabled":
        return current
    if not rules.policies:
        return desired
    up = desired > current
    limits = [_policy_limit(policy, state, now, current, up) for policy in rules.policies]
    if up:
        limit = max(limits) if rules.select_policy == "Max" else min(limits)
        # A percentage of zero is zero: waking from zero is always allowed one replica.
        return min(desired, max(limit, 1 if current == 0 else current))
    limit = min(limits) if rules.select_policy == "Max" else max(limits)
    return max(desired, min(limit, current))


def _policy_limit(
    policy: ScalingPolicy, state: RuleState, now: float, current: int, up: bool
) -> int:
    """The count one policy allows, as the HPA computes it.

    The period starts at `current - replicas added + replicas removed` within periodSeconds,
    counting the scale-ups AND the scale-downs of the period, whichever way this step goes (the
    HPA's calculateScaleUpLimitWithScalingRules and calculateScaleDownLimitWithBehaviors).
    """
    cutoff = now - policy.period_seconds + SAME_INSTANT
    start = current - sum(change for when, change in state.scale_events if when > cutoff)
    if policy.type == "Pods":
        return start + policy.value if up else start - policy.value
    if up:
        return math.ceil(start * (1 + policy.value / 100))
    return int(start * (1 - policy.value / 100))  # truncated toward zero, as Go's int32()


def _forget_old_history(rule: Rule, state: RuleState, now: float) -> RuleState:
    """Drop history older than any window or policy period can look at, so memory stays flat.

    An empty history is still a started one (`seeded`): it is never seeded again.
    """
    behavior = rule.behavior
    horizon = max(
        behavior.scale_up.stabilization_window_seconds,
        behavior.scale_down.stabilization_window_seconds,
        *(p.period_seconds for p in behavior.scale_up.policies + behavior.scale_down.policies),
        0.0,
    )
    cutoff = now - horizon + SAME_INSTANT
    if (state.recommendations and state.recommendations[0][0] <= cutoff) or (
        state.scale_events and state.scale_events[0][0] <= cutoff
    ):
        return replace(
            state,
            recommendations=tuple(r for r in state.recommendations if r[0] > cutoff),
            scale_events=tuple(e for e in state.scale_events if e[0] > cutoff),
        )
    return state


def _explain(current: int, proposal: int, clamped: int, stabilized: int, target: int) -> str:
    if target == current:
        if proposal == current:
            return "at target (within tolerance)" if clamped == current else "at target"
        if clamped == current:
            # Held by minReplicas or maxReplicas, not by a window: say so.
            return f"backlog needs {proposal}, clamped to {clamped}"
        if stabilized == current:
            return f"backlog asks for {clamped}: held by the stabilization window"
        return f"backlog asks for {clamped}: held by the rate policy"
    why = f"backlog needs {proposal}"
    if clamped != proposal:
        why += f", clamped to {clamped}"
    if stabilized != clamped:
        why += f", stabilization window keeps {stabilized}"
    if target != stabilized:
        why += f", rate policy allows {target}"
    return why


def _describe_readings(
    rule: Rule, readings: Sequence[Reading], signals: Sequence[tuple[Trigger, float]]
) -> str:
    parts = []
    for trigger, reading in zip(rule.triggers, readings, strict=True):
        if reading.value is None:
            parts.append(f"{trigger.label}=failed ({reading.error or 'no reading'})")
        else:
            backlog = "" if reading.backlog is None else f" ({reading.backlog:g} waiting)"
            parts.append(f"{trigger.label}={reading.value:g}/{trigger.target:g}{backlog}")
    modifiers = rule.scaling_modifiers
    if modifiers is not None:
        value = f"{signals[0][1]:g}" if signals else "failed"
        parts.append(f"formula {modifiers.formula!r}={value}/{modifiers.target:g}")
    return "readings " + ", ".join(parts)


# Pause annotations on the Deployment: ours, then KEDA's, so migrating GitOps setups keep working.
ANNOTATION_PREFIX = "eventscaler.io/"
PAUSED = ANNOTATION_PREFIX + "paused"
PAUSED_REPLICAS = ANNOTATION_PREFIX + "paused-replicas"
KEDA_PAUSED = "autoscaling.keda.sh/paused"
KEDA_PAUSED_REPLICAS = "autoscaling.keda.sh/paused-replicas"
# The only annotations a tick reads; a target's view keeps no other (last-applied-configuration
# alone may hold kilobytes per target).
PAUSE_ANNOTATIONS = frozenset((PAUSED, PAUSED_REPLICAS, KEDA_PAUSED, KEDA_PAUSED_REPLICAS))


def pause_from_annotations(annotations: Mapping[str, str]) -> Pause | None:
    """The pause the annotations ask for, if any. paused-replicas wins over paused (as in KEDA).

    A paused-replicas value that is not a whole number >= 0 still pauses (leaves the count
    alone): the user clearly wanted the autoscaler out of the way.
    """
    for key in (PAUSED_REPLICAS, KEDA_PAUSED_REPLICAS):
        if key in annotations:
            value = annotations[key].strip()
            # isascii: "²".isdigit() is true, yet int("²") raises.
            if value.isascii() and value.isdigit():
                return Pause(key, int(value))
            return Pause(f"{key} (not a whole number: {value!r}, so left alone)")
    for key in (PAUSED, KEDA_PAUSED):
        if annotations.get(key, "").strip().lower() == "true":
            return Pause(key)
    return None
