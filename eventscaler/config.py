"""The rule file: YAML in, frozen dataclasses out, every problem named by file, rule and field.

Loading is per rule: a rule with a problem is reported and left out, the others load. Only a file
that cannot be read at all (unreadable, not YAML, wrong top-level shape, bad `defaults`) is fatal,
and then the caller keeps the rules it had.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from eventscaler import sources
from eventscaler.fields import (
    MAX_INT32,
    NAME,
    Collector,
    ConfigError,
    ConfigErrors,
    check_mapping,
    choices,
    parse_choice,
    parse_duration,
    parse_int,
    parse_number,
    parse_str,
    required,
    show,
)
from eventscaler.formula import Formula, FormulaError, compile_formula
from eventscaler.triggers import AVERAGE_VALUE, METRIC_TYPES, Trigger

# KEDA's ScaledObject defaults, so a migrated rule behaves the same when a field is left out.
DEFAULT_POLLING_INTERVAL = 30.0
# How often a rule decides while its target has replicas: the HPA's sync period, at which KEDA's
# HPA decides from 1 to N. Set it to pollingInterval (or more) for one loop every pollingInterval.
DEFAULT_ACTIVE_POLLING_INTERVAL = 15.0
DEFAULT_COOLDOWN_PERIOD = 300.0
DEFAULT_MIN_REPLICAS = 0
DEFAULT_MAX_REPLICAS = 100
DEFAULT_TOLERANCE = 0.1
# The HPA's default scale-down stabilization; scale-up is immediate unless the user limits it.
DEFAULT_SCALE_DOWN_STABILIZATION = 300.0
MAX_STABILIZATION_WINDOW = 3600.0
MAX_POLICY_PERIOD = 1800.0
MAX_POLLING_INTERVAL = float(MAX_INT32)
# rateAware: drain the backlog within 10 s; estimate the arrival rate over the last minute.
DEFAULT_TARGET_DRAIN_SECONDS = 10.0
DEFAULT_RATE_WINDOW_SECONDS = 60.0
OBSERVED = "observed"  # rateAware.processingRate: derive it from observed drain
# Below this, value / target can overflow a float and no replica count could be computed.
MIN_TARGET = 0.001

SELECT_POLICIES = ("Max", "Min", "Disabled")
POLICY_TYPES = ("Pods", "Percent")
# A trigger's fields that every source type has; the rest come from the source's field table.
GENERIC_TRIGGER_FIELDS = {"type", "name", "metricType"}

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_RULE_NAME = NAME
_ANY_TEXT = re.compile(r"^(?=.*\S)[^\x00-\x1f]{1,1000}$")
# KEDA's scaleTargetRef defaults. A kind is CamelCase and its lowercase a DNS-1035 label (as the
# apiextensions validation requires); an apiVersion is `v1` (core) or GROUP/VERSION.
DEFAULT_TARGET_KIND = "Deployment"
DEFAULT_TARGET_API_VERSION = "apps/v1"
_KIND = re.compile(r"^[A-Za-z]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?$")
_API_VERSION = re.compile(
    r"^((?=[^/]{1,253}/)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"
)


# ---------------------------------------------------------------------------------------------
# The records


@dataclass(frozen=True)
class ScalingPolicy:
    """An HPA scaling policy: at most `value` pods or percent per `period_seconds`."""

    type: str  # "Pods" or "Percent"
    value: int
    period_seconds: float


@dataclass(frozen=True)
class ScalingRules:
    """One direction of the HPA's `behavior`. No policies means no rate limit."""

    stabilization_window_seconds: float = 0.0
    select_policy: str = "Max"
    policies: tuple[ScalingPolicy, ...] = ()


@dataclass(frozen=True)
class Behavior:
    scale_up: ScalingRules = field(default_factory=ScalingRules)
    scale_down: ScalingRules = field(
        default_factory=lambda: ScalingRules(DEFAULT_SCALE_DOWN_STABILIZATION)
    )


@dataclass(frozen=True)
class Fallback:
    """KEDA's fallback: after `failure_threshold` failed ticks in a row, run `replicas`."""

    failure_threshold: int
    replicas: int


@dataclass(frozen=True)
class ScalingModifiers:
    """KEDA's `advanced.scalingModifiers`: one value computed from the named triggers decides."""

    formula: str  # as written, e.g. "(orders + returns) / 2"
    target: float
    activation: float = 0.0
    metric_type: str = AVERAGE_VALUE
    compiled: Formula | None = field(default=None, compare=False, repr=False)

    def as_trigger(self) -> Trigger:
        """The composite as the decision sees it: one trigger named `formula`."""
        return Trigger("formula", "formula", None, self.target, self.activation, self.metric_type)


@dataclass(frozen=True)
class RateAware:
    """The opt-in rate-aware sizing (eventscaler/rate_aware.py): replicas for the backlog to drain
    within `target_drain_seconds` at the estimated arrival rate."""

    processing_rate: float | None  # messages/s one replica processes; None: from observed drain
    target_drain_seconds: float = DEFAULT_TARGET_DRAIN_SECONDS
    window_seconds: float = DEFAULT_RATE_WINDOW_SECONDS  # the arrival-rate estimate's window


@dataclass(frozen=True)
class ScaleTargetRef:
    """What a rule scales: any object with a /scale subresource, named as KEDA's scaleTargetRef."""

    name: str
    kind: str = DEFAULT_TARGET_KIND
    api_version: str = DEFAULT_TARGET_API_VERSION

    @property
    def group(self) -> str:
        """The API group: "" for the core group (`v1`), "apps" for `apps/v1`."""
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    @property
    def is_deployment(self) -> bool:
        return self.kind == "Deployment" and self.group == "apps"


@dataclass(frozen=True)
class Rule:
    """One scale target (a Deployment, a StatefulSet, a custom resource...) scaled on triggers."""

    name: str
    namespace: str
    scale_target: ScaleTargetRef
    triggers: tuple[Trigger, ...]
    min_replicas: int = DEFAULT_MIN_REPLICAS
    max_replicas: int = DEFAULT_MAX_REPLICAS
    polling_interval: float = DEFAULT_POLLING_INTERVAL
    cooldown_period: float = DEFAULT_COOLDOWN_PERIOD
    tolerance: float = DEFAULT_TOLERANCE
    behavior: Behavior = field(default_factory=Behavior)
    fallback: Fallback | None = None
    scaling_modifiers: ScalingModifiers | None = None
    active_polling_interval: float = DEFAULT_ACTIVE_POLLING_INTERVAL
    rate_aware: RateAware | None = None

    def interval_at(self, replicas: int) -> float:
        """Seconds to the next tick once the target runs `replicas`: pollingInterval at zero (as
        KEDA's operator polls), activePollingInterval above it (as its HPA syncs), never longer
        than pollingInterval."""
        if replicas > 0:
            return min(self.active_polling_interval, self.polling_interval)
        return self.polling_interval

    @property
    def target(self) -> str:
        """For logs: `namespace/name` for a Deployment (as always), `namespace/Kind/name` else."""
        ref = self.scale_target
        if ref.is_deployment:
            return f"{self.namespace}/{ref.name}"
        return f"{self.namespace}/{ref.kind}/{ref.name}"

    @property
    def target_key(self) -> tuple[str, str, str, str]:
        """What identifies the target: (namespace, apiVersion, kind, name)."""
        ref = self.scale_target
        return (self.namespace, ref.api_version, ref.kind, ref.name)


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with the rule file, said so a person can find and fix it."""

    source: str
    where: str  # "rules[2] (hello-keda)", "defaults", or "" for the file itself
    field: str  # dotted path inside `where`, e.g. "triggers[0].metricType"
    message: str  # "expected a positive number, got 'ten'"
    rule_name: str | None = None  # the rule left out because of this problem, when named

    def __str__(self) -> str:
        location = ".".join(part for part in (self.where, self.field) if part)
        text = (
            f"{self.source}: {location}: {self.message}"
            if location
            else (f"{self.source}: {self.message}")
        )
        # Names and keys come from the file: a newline in one must not forge a log line.
        return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@dataclass(frozen=True)
class LoadResult:
    """What a load produced: the rules that are valid, and every problem found."""

    source: str
    rules: tuple[Rule, ...] = ()
    problems: tuple[ConfigProblem, ...] = ()
    fatal: bool = False  # the file as a whole is unusable: keep the rules already in force

    @property
    def ok(self) -> bool:
        return not self.problems

    def rejected_rule_names(self) -> set[str]:
        """Names of rules that were written in the file but left out because of a problem."""
        return {p.rule_name for p in self.problems if p.rule_name}


def _parse_polling_interval(value: Any, field: str = "pollingInterval") -> float:
    seconds = parse_duration(value, field, allow_zero=False)
    if seconds > MAX_POLLING_INTERVAL:
        # The scheduler cannot represent a longer interval (OverflowError in timedelta).
        message = f"expected at most {MAX_INT32} seconds, got {show(value)}"
        raise ConfigError(field, message)
    return seconds


# ---------------------------------------------------------------------------------------------
# Sections

TARGET_REF_FIELDS = {"apiVersion", "kind", "name"}
SCALING_RULES_FIELDS = {"stabilizationWindowSeconds", "selectPolicy", "policies"}
POLICY_FIELDS = {"type", "value", "periodSeconds"}
RULE_FIELDS = {
    "name",
    "namespace",
    "scaleTargetRef",
    "deployment",
    "minReplicas",
    "maxReplicas",
    "pollingInterval",
    "activePollingInterval",
    "cooldownPeriod",
    "tolerance",
    "triggers",
    "behavior",
    "fallback",
    "scalingModifiers",
    "rateAware",
}
DEFAULTABLE_FIELDS = RULE_FIELDS - {"name", "scaleTargetRef", "deployment", "scalingModifiers"}
MODIFIER_FIELDS = {"formula", "target", "activationTarget", "metricType"}
RATE_AWARE_FIELDS = {"processingRate", "targetDrainSeconds", "windowSeconds"}


def parse_trigger(data: Any, field: str) -> Trigger:
    """One trigger: its `type` picks the source, whose field table checks the rest."""
    if not isinstance(data, Mapping):
        raise ConfigError(field, f"expected a mapping, got {show(data)}")
    source = _source_type(required(data, "type", f"{field}.type"), f"{field}.type")
    data = check_mapping(data, field, GENERIC_TRIGGER_FIELDS | source.keys())
    check = Collector()
    settings = check.take(source.parse_settings, data, field)
    target = 1.0  # a source without a target (cron) gives the replica count itself
    target_key = source.target_key_for(data)
    if target_key is not None:
        target = check.take(_parse_target, data, target_key, source.target_default, field)
    activation = 0.0
    if source.activation_key is not None:
        key = source.activation_key
        activation = check.take(parse_number, data.get(key, 0), f"{field}.{key}", False)
    metric_type = check.take(
        parse_choice, data.get("metricType", AVERAGE_VALUE), f"{field}.metricType",
        choices(*METRIC_TYPES),
    )  # fmt: skip
    default_name = source.default_name(settings) if settings is not None else source.type
    name = check.take(parse_str, data.get("name", default_name), f"{field}.name", NAME, "a name")
    check.raise_if_any()
    return Trigger(source.type, name, settings, target, activation, metric_type)


def _source_type(kind: Any, field: str) -> sources.base.SourceType:
    if isinstance(kind, str) and kind in sources.SOURCE_MODULES:
        return sources.source_type(kind)
    known = sources.known_types()
    close = difflib.get_close_matches(str(kind), known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise ConfigError(field, f"unknown trigger type {show(kind)}{hint}; known: {', '.join(known)}")


def _parse_target(data: Mapping[str, Any], key: str, default: float | None, field: str) -> float:
    path = f"{field}.{key}"
    value = data.get(key, default)
    if value is None:
        raise ConfigError(path, "is required")
    target = parse_number(value, path, positive=True)
    if target < MIN_TARGET:
        raise ConfigError(path, f"expected a number of at least {MIN_TARGET:g}, got {show(value)}")
    return target


def parse_scaling_modifiers(data: Any, triggers: tuple[Trigger, ...]) -> ScalingModifiers:
    """The formula over trigger names, compiled now so a typo is a load error, not a tick error."""
    field = "scalingModifiers"
    data = check_mapping(data, field, MODIFIER_FIELDS)
    check = Collector()
    text = check.take(parse_str, required(data, "formula", f"{field}.formula"),
                      f"{field}.formula", _ANY_TEXT, "a formula over trigger names")  # fmt: skip
    compiled = None
    if text is not None:
        compiled = check.take(_compile_formula, text, [t.name for t in triggers])
    target = check.take(_parse_target, data, "target", None, field)
    activation = check.take(
        parse_number, data.get("activationTarget", 0), f"{field}.activationTarget", False
    )
    metric_type = check.take(
        parse_choice, data.get("metricType", AVERAGE_VALUE), f"{field}.metricType",
        choices(*METRIC_TYPES),
    )  # fmt: skip
    check.raise_if_any()
    return ScalingModifiers(text, target, activation, metric_type, compiled)


def _compile_formula(text: str, names: list[str]) -> Formula:
    try:
        return compile_formula(text, names)
    except FormulaError as exc:
        raise ConfigError("scalingModifiers.formula", str(exc)) from None


def parse_rate_aware(data: Any, signals: int | None) -> RateAware:
    """`rateAware: {processingRate, targetDrainSeconds, windowSeconds}`; `signals` is how many
    values the rule decides on (one per trigger, or one formula), None when unknown."""
    field = "rateAware"
    data = check_mapping(data, field, RATE_AWARE_FIELDS)
    check = Collector()
    rate = check.take(_parse_processing_rate, required(data, "processingRate",
                                                      f"{field}.processingRate"))  # fmt: skip
    drain = check.take(_parse_bounded_seconds, data, "targetDrainSeconds",
                       DEFAULT_TARGET_DRAIN_SECONDS)  # fmt: skip
    window = check.take(_parse_bounded_seconds, data, "windowSeconds", DEFAULT_RATE_WINDOW_SECONDS)
    if signals is not None and signals > 1:
        message = "sizes for one backlog: give one trigger, or scalingModifiers to combine them"
        check.add(field, f"{message} (this rule has {signals} triggers)")
    check.raise_if_any()
    return RateAware(rate, drain, window)


def _parse_processing_rate(value: Any) -> float | None:
    path = "rateAware.processingRate"
    if isinstance(value, str) and value.strip().lower() == OBSERVED:
        return None
    if isinstance(value, str):
        message = f"expected messages per second per replica (> 0) or '{OBSERVED}', got "
        raise ConfigError(path, message + show(value))
    rate = parse_number(value, path, positive=True)
    if rate < MIN_TARGET:
        raise ConfigError(path, f"expected a number of at least {MIN_TARGET:g}, got {show(value)}")
    return rate


def _parse_bounded_seconds(data: Mapping[str, Any], key: str, default: float) -> float:
    path = f"rateAware.{key}"
    seconds = parse_duration(data.get(key, default), path, allow_zero=False)
    if seconds > MAX_STABILIZATION_WINDOW:
        message = f"expected at most {MAX_STABILIZATION_WINDOW:g} seconds, got {seconds:g}"
        raise ConfigError(path, message)
    return seconds


def parse_scale_target(rule: Mapping[str, Any]) -> ScaleTargetRef:
    """`scaleTargetRef: {apiVersion, kind, name}` as KEDA's, or the shorthand `deployment: NAME`."""
    if "scaleTargetRef" not in rule:
        if "deployment" not in rule:
            raise ConfigError("scaleTargetRef", "is required (or its shorthand: deployment: NAME)")
        name = required(rule, "deployment", "deployment")
        return ScaleTargetRef(parse_str(name, "deployment", _DNS_SUBDOMAIN, "a Deployment name"))
    if "deployment" in rule:
        raise ConfigError("deployment", "give scaleTargetRef or its shorthand deployment, not both")
    field = "scaleTargetRef"
    data = check_mapping(rule["scaleTargetRef"], field, TARGET_REF_FIELDS)
    check = Collector()
    name = check.take(
        lambda: parse_str(
            required(data, "name", f"{field}.name"), f"{field}.name", _DNS_SUBDOMAIN,
            "an object name (lowercase letters, digits, '-' and '.')",
        )
    )  # fmt: skip
    kind = check.take(
        parse_str, data.get("kind", DEFAULT_TARGET_KIND), f"{field}.kind", _KIND,
        "a kind like 'Deployment' or 'StatefulSet'",
    )  # fmt: skip
    api_version = check.take(
        parse_str, data.get("apiVersion", DEFAULT_TARGET_API_VERSION), f"{field}.apiVersion",
        _API_VERSION, "an apiVersion like 'apps/v1' or 'argoproj.io/v1alpha1'",
    )  # fmt: skip
    check.raise_if_any()
    return ScaleTargetRef(name, kind, api_version)


def parse_fallback(data: Any, field: str, max_replicas: int | None) -> Fallback:
    data = check_mapping(data, field, {"failureThreshold", "replicas"})
    check = Collector()
    threshold = check.take(
        lambda: parse_int(
            required(data, "failureThreshold", f"{field}.failureThreshold"),
            f"{field}.failureThreshold",
            1,
        )
    )
    replicas = check.take(
        lambda: parse_int(required(data, "replicas", f"{field}.replicas"), f"{field}.replicas", 0)
    )
    if replicas is not None and max_replicas is not None and replicas > max_replicas:
        check.errors.append(
            ConfigError(
                f"{field}.replicas", f"must not exceed maxReplicas ({max_replicas}), got {replicas}"
            )
        )
    check.raise_if_any()
    return Fallback(threshold, replicas)


def parse_policy(data: Any, field: str) -> ScalingPolicy:
    data = check_mapping(data, field, POLICY_FIELDS)
    kind = parse_choice(
        required(data, "type", f"{field}.type"),
        f"{field}.type",
        {t.lower(): t for t in POLICY_TYPES},
    )
    value = parse_int(required(data, "value", f"{field}.value"), f"{field}.value", minimum=1)
    period = parse_duration(
        required(data, "periodSeconds", f"{field}.periodSeconds"),
        f"{field}.periodSeconds",
        allow_zero=False,
    )
    if period > MAX_POLICY_PERIOD:
        raise ConfigError(
            f"{field}.periodSeconds",
            f"expected at most {MAX_POLICY_PERIOD:g} seconds, got {period:g}",
        )
    return ScalingPolicy(kind, value, period)


def parse_scaling_rules(data: Any, field: str, default_window: float) -> ScalingRules:
    data = check_mapping(data, field, SCALING_RULES_FIELDS)
    window = parse_duration(
        data.get("stabilizationWindowSeconds", default_window),
        f"{field}.stabilizationWindowSeconds",
    )
    if window > MAX_STABILIZATION_WINDOW:
        raise ConfigError(
            f"{field}.stabilizationWindowSeconds",
            f"expected at most {MAX_STABILIZATION_WINDOW:g} seconds, got {window:g}",
        )
    policies = data.get("policies") or []
    if not isinstance(policies, list):
        raise ConfigError(f"{field}.policies", f"expected a list, got {show(policies)}")
    return ScalingRules(
        stabilization_window_seconds=window,
        select_policy=parse_choice(
            data.get("selectPolicy", "Max"),
            f"{field}.selectPolicy",
            {s.lower(): s for s in SELECT_POLICIES},
        ),
        policies=tuple(parse_policy(p, f"{field}.policies[{i}]") for i, p in enumerate(policies)),
    )


def parse_behavior(data: Any, field: str) -> Behavior:
    data = check_mapping(data, field, {"scaleUp", "scaleDown"})
    return Behavior(
        scale_up=parse_scaling_rules(data.get("scaleUp") or {}, f"{field}.scaleUp", 0.0),
        scale_down=parse_scaling_rules(
            data.get("scaleDown") or {}, f"{field}.scaleDown", DEFAULT_SCALE_DOWN_STABILIZATION
        ),
    )


def parse_rule(data: Mapping[str, Any], allowed_namespaces: Collection[str] | None = None) -> Rule:
    """Build a Rule from one entry of `rules` already merged with `defaults`.

    Raises ConfigErrors listing every wrong field, so one `validate` run shows them all.
    """
    check = Collector()
    name = check.take(
        lambda: parse_str(required(data, "name", "name"), "name", _RULE_NAME, "a rule name")
    )
    namespace = check.take(_parse_namespace, data.get("namespace", "default"), allowed_namespaces)
    scale_target = check.take(parse_scale_target, data)
    bounds: tuple[int, int] | tuple[None, None] = check.take(_parse_bounds, data) or (None, None)
    triggers = check.take(_parse_triggers, data.get("triggers"))
    values = {
        "polling_interval": check.take(
            _parse_polling_interval, data.get("pollingInterval", DEFAULT_POLLING_INTERVAL)
        ),
        "active_polling_interval": check.take(
            _parse_polling_interval,
            data.get("activePollingInterval", DEFAULT_ACTIVE_POLLING_INTERVAL),
            "activePollingInterval",
        ),
        "cooldown_period": check.take(
            parse_duration, data.get("cooldownPeriod", DEFAULT_COOLDOWN_PERIOD), "cooldownPeriod"
        ),
        "tolerance": check.take(
            parse_number, data.get("tolerance", DEFAULT_TOLERANCE), "tolerance", False
        ),
        "behavior": check.take(parse_behavior, data.get("behavior") or {}, "behavior"),
    }
    if data.get("fallback") is not None:
        values["fallback"] = check.take(parse_fallback, data["fallback"], "fallback", bounds[1])
    if data.get("scalingModifiers") is not None and triggers is not None:
        modifiers = check.take(parse_scaling_modifiers, data["scalingModifiers"], triggers)
        values["scaling_modifiers"] = modifiers
    if data.get("rateAware") is not None:
        values["rate_aware"] = check.take(parse_rate_aware, data["rateAware"], _signals(data))
    check.raise_if_any()
    low, high = bounds
    assert low is not None and high is not None  # raise_if_any() saw any error of theirs
    return Rule(name, namespace, scale_target, triggers, low, high, **values)


def _signals(data: Mapping[str, Any]) -> int | None:
    """How many values a rule decides on: one formula, or one per trigger (None: unreadable)."""
    if data.get("scalingModifiers") is not None:
        return 1
    triggers = data.get("triggers")
    return len(triggers) if isinstance(triggers, list) else None


def _parse_namespace(value: Any, allowed: Collection[str] | None) -> str:
    namespace = parse_str(value, "namespace", _DNS_LABEL, "a Kubernetes namespace name")
    if allowed is not None and namespace not in allowed:
        shown = ", ".join(sorted(allowed)) or "none"
        message = f"namespace {namespace!r} is not in this autoscaler's allow-list ({shown})"
        raise ConfigError("namespace", message)
    return namespace


def _parse_bounds(data: Mapping[str, Any]) -> tuple[int, int]:
    check = Collector()
    low = check.take(parse_int, data.get("minReplicas", DEFAULT_MIN_REPLICAS), "minReplicas", 0)
    high = check.take(parse_int, data.get("maxReplicas", DEFAULT_MAX_REPLICAS), "maxReplicas", 1)
    if low is not None and high is not None and low > high:
        check.add("minReplicas", f"must not exceed maxReplicas ({high}), got {low}")
    check.raise_if_any()
    return low, high


def _parse_triggers(triggers: Any) -> tuple[Trigger, ...]:
    if triggers is None:
        raise ConfigError("triggers", "is required")
    if not isinstance(triggers, list) or not triggers:
        raise ConfigError("triggers", f"expected a non-empty list, got {show(triggers)}")
    check = Collector()
    parsed = [check.take(parse_trigger, t, f"triggers[{i}]") for i, t in enumerate(triggers)]
    check.raise_if_any()
    return tuple(_unique_names(parsed, [isinstance(t, Mapping) and "name" in t for t in triggers]))


def _unique_names(parsed: list[Trigger], explicit: list[bool]) -> list[Trigger]:
    """Two triggers may read one queue (KEDA allows it): a name taken by default from the queue
    gets a `-2`, `-3`... suffix; a name written twice is an error, since a formula, a metric or a
    log line could not tell the two apart."""
    written = {t.name for t, given in zip(parsed, explicit, strict=True) if given}
    seen: set[str] = set()
    unique = []
    for i, (trigger, given) in enumerate(zip(parsed, explicit, strict=True)):
        name, number = trigger.name, 2
        if given and name in seen:
            raise ConfigError(f"triggers[{i}].name", f"duplicate trigger name {name!r}")
        while not given and (name in seen or name in written):
            name, number = f"{trigger.name}-{number}", number + 1
        seen.add(name)
        unique.append(trigger if name == trigger.name else replace(trigger, name=name))
    return unique


# ---------------------------------------------------------------------------------------------
# The file


class _FileError(Exception):
    """The file as a whole cannot be used: the rules in force stay."""

    def __init__(self, problems: tuple[ConfigProblem, ...]) -> None:
        super().__init__(str(problems[0]))
        self.problems = problems


def parse_rules_text(
    text: str, source: str, allowed_namespaces: Collection[str] | None = None
) -> LoadResult:
    """Parse a whole rule file. Never raises for bad content: problems are in the result."""
    try:
        rules_data, defaults = _read_document(text, source)
    except _FileError as exc:
        return LoadResult(source, problems=exc.problems, fatal=True)
    rules: dict[str, Rule] = {}
    problems: list[ConfigProblem] = []
    for index, entry in enumerate(rules_data):
        name = entry.get("name") if isinstance(entry, Mapping) else None
        name = name if isinstance(name, str) and name else None
        where = f"rules[{index}] ({name})" if name else f"rules[{index}]"
        try:
            entry = check_mapping(entry, "", RULE_FIELDS)
            rule = parse_rule({**defaults, **entry}, allowed_namespaces)
        except (ConfigError, ConfigErrors) as exc:
            errors = exc.errors if isinstance(exc, ConfigErrors) else [exc]
            problems.extend(ConfigProblem(source, where, e.field, e.message, name) for e in errors)
            continue
        if rule.name in rules:
            # The first rule of that name stays; only the repeat is left out.
            problems.append(ConfigProblem(source, where, "name", f"duplicate rule name {name!r}"))
            continue
        rules[rule.name] = rule
    return LoadResult(source, tuple(rules.values()), tuple(problems))


def _read_document(text: str, source: str) -> tuple[list[Any], Mapping[str, Any]]:
    """The `rules` list and the checked `defaults`; _FileError if the file cannot be used."""

    def fatal(where: str, field: str, message: str) -> _FileError:
        return _FileError((ConfigProblem(source, where, field, message),))

    document = _load_yaml(text, fatal)
    if document is None:
        raise fatal("", "", "the file is empty: expected a mapping with a 'rules' list")
    try:
        document = check_mapping(document, "", {"defaults", "rules"})
    except ConfigError as exc:
        raise fatal("", exc.field, exc.message) from None
    rules_data = document.get("rules")
    if not isinstance(rules_data, list):
        raise fatal("", "rules", f"expected a list of rules, got {show(rules_data)}")
    defaults = document.get("defaults") or {}
    try:
        defaults = check_mapping(defaults, "", DEFAULTABLE_FIELDS)
        # A default that is itself invalid would break every rule: check it once, on its own.
        _check_defaults(defaults)
    except ConfigError as exc:
        raise fatal("defaults", exc.field, exc.message) from None
    except ConfigErrors as exc:
        found = tuple(ConfigProblem(source, "defaults", e.field, e.message) for e in exc.errors)
        raise _FileError(found) from None
    return rules_data, defaults


def _load_yaml(text: str, fatal: Callable[[str, str, str], _FileError]) -> Any:
    try:
        return yaml.load(text, Loader=_SafeLoader)  # SafeLoader semantics: see _safe_loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise fatal("", "", f"not valid YAML{where}: {problem}") from None
    except (ValueError, RecursionError) as exc:
        # safe_load raises these, not YAMLError, for e.g. `2020-13-45`, `!!int x`, deep nesting.
        raise fatal("", "", f"not valid YAML: {exc}") from None
    except Exception as exc:
        # And its constructors fail with IndexError, KeyError or AttributeError on some explicit
        # tags (`!!int` with no value, `!!bool x`, `!!timestamp x`): still bad content, not a bug.
        kind = type(exc).__name__
        raise fatal("", "", f"not valid YAML: a value could not be read ({kind})") from None


def _safe_loader() -> type:
    """yaml.SafeLoader's results, with libyaml's scanner and parser when PyYAML has them, and
    the items of the rule list constructed one by one (see _ItemByItem).

    libyaml's scanner and parser are where the pure-Python loader spends its time (0.8 s of CPU
    for 1,000 rules against 0.15 s). The nodes are still composed in Python: libyaml's composer
    recurses in C and kills the process (SIGSEGV) on a deeply nested file, where Python's raises
    RecursionError, a clear problem of the file.
    """
    loader: type
    if getattr(yaml, "__with_libyaml__", False):
        from yaml import _yaml
        from yaml.composer import Composer
        from yaml.constructor import SafeConstructor
        from yaml.resolver import Resolver

        class FastSafeLoader(_ItemByItem, Composer, _yaml.CParser, SafeConstructor, Resolver):
            def __init__(self, stream: str) -> None:
                _yaml.CParser.__init__(self, stream)
                Composer.__init__(self)
                SafeConstructor.__init__(self)
                Resolver.__init__(self)
                _ItemByItem.__init__(self)

        loader = FastSafeLoader
    else:

        class ItemByItemSafeLoader(_ItemByItem, yaml.SafeLoader):
            def __init__(self, stream: str) -> None:
                yaml.SafeLoader.__init__(self, stream)
                _ItemByItem.__init__(self)

        loader = ItemByItemSafeLoader
    loader.add_constructor(_BUILT_TAG, _constructed)
    return loader


def _constructed(_loader: Any, node: Any) -> Any:
    return node.built


_BUILT_TAG = "tag:eventscaler.io,2026:constructed"


class _Constructed(yaml.nodes.ScalarNode):
    """A node standing for an item already constructed: its nodes are gone."""

    def __init__(self, built: Any, node: yaml.nodes.Node) -> None:
        super().__init__(_BUILT_TAG, "", node.start_mark, node.end_mark)
        self.built = built


class _ItemByItem:
    """Constructs each item of a list under the top-level mapping (the rules) as soon as it is
    composed, and drops its nodes: composing the whole document first held about six times the
    memory of the data (7 MiB for 1,000 rules) until the end, and left that much of the heap in
    holes. An alias into an earlier item still resolves (its anchor keeps its node)."""

    def __init__(self) -> None:
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            return super().compose_node(parent, index)  # type: ignore[misc]
        finally:
            self._depth -= 1

    def compose_sequence_node(self, anchor: Any) -> Any:
        if self._depth != 2:  # the document is depth 1, its keys' values depth 2
            return super().compose_sequence_node(anchor)  # type: ignore[misc]
        loader: Any = self
        start = loader.get_event()
        tag = start.tag
        if tag is None or tag == "!":
            tag = loader.resolve(yaml.nodes.SequenceNode, None, start.implicit)
        node = yaml.nodes.SequenceNode(tag, [], start.start_mark, None, start.flow_style)
        if anchor is not None:
            loader.anchors[anchor] = node
        while not loader.check_event(yaml.events.SequenceEndEvent):
            item = loader.compose_node(node, len(node.value))
            node.value.append(_Constructed(loader.construct_object(item, deep=True), item))
            loader.constructed_objects.clear()  # an alias constructs an equal copy instead
        node.end_mark = loader.get_event().end_mark
        return node


_SafeLoader = _safe_loader()


def _check_defaults(defaults: Mapping[str, Any]) -> None:
    checks: dict[str, Callable[[Any], object]] = {
        "pollingInterval": _parse_polling_interval,
        "activePollingInterval": lambda v: _parse_polling_interval(v, "activePollingInterval"),
        "cooldownPeriod": lambda v: parse_duration(v, "cooldownPeriod"),
        "minReplicas": lambda v: parse_int(v, "minReplicas", 0),
        "maxReplicas": lambda v: parse_int(v, "maxReplicas", 1),
        "tolerance": lambda v: parse_number(v, "tolerance", positive=False),
        "behavior": lambda v: parse_behavior(v, "behavior"),
        "rateAware": lambda v: parse_rate_aware(v, None),
        "namespace": lambda v: parse_str(v, "namespace", _DNS_LABEL, "a Kubernetes namespace name"),
        "triggers": _parse_triggers,
    }
    for key, check in checks.items():
        if key in defaults:
            check(defaults[key])


def load_rules(path: str | Path, allowed_namespaces: Collection[str] | None = None) -> LoadResult:
    """Read and parse the rule file at `path`."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        problem = ConfigProblem(source, "", "", f"cannot read the rule file: {reason}")
        return LoadResult(source, problems=(problem,), fatal=True)
    return parse_rules_text(text, source, allowed_namespaces)


def describe_rule(rule: Rule) -> str:
    """A one-line summary of a rule, for `validate` and start-up logs."""
    triggers = ", ".join(describe_trigger(t) for t in rule.triggers)
    ref = rule.scale_target
    target = rule.target if ref.is_deployment else f"{rule.target} ({ref.api_version})"
    every = f"every {rule.polling_interval:g}s"
    if rule.interval_at(1) < rule.polling_interval:
        every += f" ({rule.interval_at(1):g}s while it has replicas)"
    return (
        f"{rule.name}: {target} replicas {rule.min_replicas}..{rule.max_replicas}, "
        f"{every}, cooldown {rule.cooldown_period:g}s, on {triggers}"
    )


def describe_trigger(trigger: Trigger) -> str:
    source = sources.source_type(trigger.type)
    per = "/replica" if trigger.metric_type == AVERAGE_VALUE else " in all (Value)"
    numbers = [f"target {trigger.target:g}{per}", f"activation > {trigger.activation:g}"]
    details = ", ".join([*numbers, *source.details(trigger.settings)])
    return f"{source.describe(trigger.settings)} ({details})"


def rules_in_force(previous: Mapping[str, Rule], result: LoadResult) -> dict[str, Rule]:
    """The rules to run after a (re)load: nothing that worked is lost to a bad edit.

    A fatal result keeps every previous rule. Otherwise the valid rules of the file run, and a rule
    that is now rejected keeps its last good version; rules no longer in the file stop.
    """
    if result.fatal:
        return dict(previous)
    in_force = {rule.name: rule for rule in result.rules}
    for name in result.rejected_rule_names():
        if name in previous and name not in in_force:
            in_force[name] = previous[name]
    return in_force
