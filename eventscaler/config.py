"""The rule file: YAML in, frozen dataclasses out, every problem named by file, rule and field.

Loading is per rule: a rule with a problem is reported and left out, the others load. Only a file
that cannot be read at all (unreadable, not YAML, wrong top-level shape, bad `defaults`) is fatal,
and then the caller keeps the rules it had.
"""

from __future__ import annotations

import difflib
import math
import re
import reprlib
import sys
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# KEDA's ScaledObject defaults, so a migrated rule behaves the same when a field is left out.
DEFAULT_POLLING_INTERVAL = 30.0
DEFAULT_COOLDOWN_PERIOD = 300.0
DEFAULT_MIN_REPLICAS = 0
DEFAULT_MAX_REPLICAS = 100
DEFAULT_TOLERANCE = 0.1
DEFAULT_QUEUE_LENGTH = 5.0
DEFAULT_CONNECTION_ENV = "AZURE_STORAGE_CONNECTION_STRING"
# The HPA's default scale-down stabilization; scale-up is immediate unless the user limits it.
DEFAULT_SCALE_DOWN_STABILIZATION = 300.0
MAX_STABILIZATION_WINDOW = 3600.0
MAX_POLICY_PERIOD = 1800.0
# Replica counts and HPA policy values are int32 in Kubernetes; KEDA's pollingInterval is int32
# seconds. Larger values are errors, not requests the API server or the scheduler would refuse.
MAX_INT32 = 2**31 - 1
MAX_POLLING_INTERVAL = float(MAX_INT32)
# Below this, length / queueLength can overflow a float and no replica count could be computed.
MIN_QUEUE_LENGTH = 0.001

QUEUE_LENGTH_STRATEGIES = {"all": "all", "visibleonly": "visibleOnly"}
SELECT_POLICIES = ("Max", "Min", "Disabled")
POLICY_TYPES = ("Pods", "Percent")

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_RULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_AZURE_QUEUE_NAME = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
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
class AzureQueueTrigger:
    """One `type: azure-queue` trigger of a rule (field names follow KEDA's trigger metadata)."""

    queue_name: str
    queue_length: float = DEFAULT_QUEUE_LENGTH
    activation_queue_length: float = 0.0
    queue_length_strategy: str = "all"  # "all" or "visibleOnly"
    connection_from_env: str = DEFAULT_CONNECTION_ENV  # "" when account_name is used instead
    name: str = ""  # for logs; defaults to the queue name
    # Azure AD authentication instead of a connection string (KEDA's `accountName` + `cloud`).
    account_name: str = ""
    cloud: str = "AzurePublicCloud"
    endpoint_suffix: str = ""  # required with cloud "Private"

    @property
    def uses_identity(self) -> bool:
        return bool(self.account_name)

    @property
    def credential_source(self) -> str:
        """Where the credential comes from, safe to log: never the secret itself."""
        if self.uses_identity:
            return f"account {self.account_name} with Azure AD (DefaultAzureCredential)"
        return f"connection string from env {self.connection_from_env}"

    @property
    def label(self) -> str:
        return self.name or self.queue_name


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
    triggers: tuple[AzureQueueTrigger, ...]
    min_replicas: int = DEFAULT_MIN_REPLICAS
    max_replicas: int = DEFAULT_MAX_REPLICAS
    polling_interval: float = DEFAULT_POLLING_INTERVAL
    cooldown_period: float = DEFAULT_COOLDOWN_PERIOD
    tolerance: float = DEFAULT_TOLERANCE
    behavior: Behavior = field(default_factory=Behavior)
    fallback: Fallback | None = None

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
    field: str  # dotted path inside `where`, e.g. "triggers[0].queueLength"
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


class ConfigError(Exception):
    """A field's value is wrong; `field` is its dotted path within the rule or section."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class ConfigErrors(Exception):
    """Several fields of one rule are wrong: all are reported at once, not one per edit."""

    def __init__(self, errors: list[ConfigError]) -> None:
        super().__init__("; ".join(e.message for e in errors))
        self.errors = errors


class _Collector:
    """Runs field parsers, keeping every error instead of stopping at the first."""

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    def take(self, parse: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return parse(*args, **kwargs)
        except ConfigError as exc:
            self.errors.append(exc)
        except ConfigErrors as exc:
            self.errors.extend(exc.errors)
        return None

    def raise_if_any(self) -> None:
        if self.errors:
            raise ConfigErrors(self.errors)


# ---------------------------------------------------------------------------------------------
# Small value parsers: each returns the clean value or raises ConfigError(field, message)


class _BoundedRepr(reprlib.Repr):
    """repr() that stays short: a YAML alias bomb (lists of aliases of lists...) shares its parts
    when loaded, but would expand into gigabytes if printed in full."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxlist, self.maxdict = 3, 6, 6
        self.maxstring = self.maxlong = self.maxother = 200

    def repr_int(self, x: int, level: int) -> str:
        try:
            return super().repr_int(x, level)
        except ValueError:
            # Past Python's 4,300-digit str() limit (YAML's hex notation can write such a number).
            return f"an integer of about {int(x.bit_length() * math.log10(2)) + 1} digits"


_SHOWN = _BoundedRepr()


def _show(value: Any) -> str:
    text = _SHOWN.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_duration(value: Any, field: str, allow_zero: bool = True) -> float:
    """Seconds from a number or a string like "30", "30s", "5m", "1h30m", "500ms"."""
    expected = "expected a duration (seconds, or a string like '30s', '5m', '1h30m')"
    seconds: float | None = None
    # `abs(value) <= max` rejects NaN and infinities, and a YAML integer too large for a float.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value) if abs(value) <= sys.float_info.max else None
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART.findall(text)
            if parts and "".join(n + u for n, u in parts) == text:
                unit_seconds = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
                seconds = sum(float(n) * unit_seconds[u] for n, u in parts)
    if seconds is None or not math.isfinite(seconds):
        raise ConfigError(field, f"{expected}, got {_show(value)}")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "more than zero"
        raise ConfigError(field, f"expected a duration of {bound} seconds, got {_show(value)}")
    return seconds


def _parse_int(value: Any, field: str, minimum: int) -> int:
    is_whole_number = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not is_whole_number or value < minimum:
        raise ConfigError(field, f"expected a whole number >= {minimum}, got {_show(value)}")
    if value > MAX_INT32:
        expected = f"expected a whole number from {minimum} to {MAX_INT32}"
        raise ConfigError(field, f"{expected}, got {_show(value)}")
    return int(value)


def _parse_polling_interval(value: Any, field: str = "pollingInterval") -> float:
    seconds = parse_duration(value, field, allow_zero=False)
    if seconds > MAX_POLLING_INTERVAL:
        # The scheduler cannot represent a longer interval (OverflowError in timedelta).
        message = f"expected at most {MAX_INT32} seconds, got {_show(value)}"
        raise ConfigError(field, message)
    return seconds


def _parse_queue_length(value: Any, field: str) -> float:
    length = _parse_number(value, field, positive=True)
    if length < MIN_QUEUE_LENGTH:
        raise ConfigError(
            field, f"expected a number of at least {MIN_QUEUE_LENGTH:g}, got {_show(value)}"
        )
    return length


def _parse_number(value: Any, field: str, positive: bool) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    # Not math.isfinite: it raises OverflowError on a YAML integer too large for a float.
    ok = ok and abs(value) <= sys.float_info.max and (value > 0 if positive else value >= 0)
    if not ok:
        kind = "a positive number" if positive else "a number >= 0"
        raise ConfigError(field, f"expected {kind}, got {_show(value)}")
    return float(value)


def _parse_str(value: Any, field: str, pattern: re.Pattern[str], what: str) -> str:
    # fullmatch, not match: `$` also matches before a trailing newline ("name: |" in YAML).
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ConfigError(field, f"expected {what}, got {_show(value)}")
    return value


def _parse_choice(value: Any, field: str, choices: Mapping[str, str]) -> str:
    """A case-insensitive choice; returns the canonical spelling."""
    if isinstance(value, str) and value.lower() in choices:
        return choices[value.lower()]
    shown = " or ".join(repr(c) for c in dict.fromkeys(choices.values()))
    raise ConfigError(field, f"expected {shown}, got {_show(value)}")


def _check_mapping(value: Any, field: str, known: Collection[str]) -> Mapping[str, Any]:
    """Check `value` is a mapping whose keys are all known; typos get a suggestion."""
    if not isinstance(value, Mapping):
        raise ConfigError(field, f"expected a mapping, got {_show(value)}")
    for key in value:
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            prefix = f"{field}." if field else ""
            allowed = ", ".join(sorted(known))
            raise ConfigError(f"{prefix}{key}", f"unknown field{hint}; known fields: {allowed}")
    return value


def _required(data: Mapping[str, Any], key: str, field: str) -> Any:
    if data.get(key) is None:
        raise ConfigError(field, "is required")
    return data[key]


# ---------------------------------------------------------------------------------------------
# Sections

TRIGGER_FIELDS = {
    "type",
    "name",
    "queueName",
    "queueLength",
    "activationQueueLength",
    "queueLengthStrategy",
    "connectionFromEnv",
    "accountName",
    "cloud",
    "endpointSuffix",
}
# KEDA's cloud names and the storage endpoint suffix of each.
CLOUD_SUFFIXES = {
    "AzurePublicCloud": "core.windows.net",
    "AzureUSGovernmentCloud": "core.usgovcloudapi.net",
    "AzureChinaCloud": "core.chinacloudapi.cn",
    "Private": "",
}
_ACCOUNT_NAME = re.compile(r"^[a-z0-9]{3,24}$")
_ENDPOINT_SUFFIX = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9-]+)+$")
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
    "cooldownPeriod",
    "tolerance",
    "triggers",
    "behavior",
    "fallback",
}
DEFAULTABLE_FIELDS = RULE_FIELDS - {"name", "scaleTargetRef", "deployment"}


def parse_trigger(data: Any, field: str) -> AzureQueueTrigger:
    data = _check_mapping(data, field, TRIGGER_FIELDS)
    kind = _required(data, "type", f"{field}.type")
    if kind != "azure-queue":
        raise ConfigError(f"{field}.type", f"expected 'azure-queue', got {_show(kind)}")
    check = _Collector()
    queue_name = check.take(
        lambda: _parse_str(
            _required(data, "queueName", f"{field}.queueName"),
            f"{field}.queueName",
            _AZURE_QUEUE_NAME,
            "an Azure queue name (3-63 lowercase letters, digits and single hyphens)",
        )
    )
    values = {
        "queue_length": check.take(
            _parse_queue_length,
            data.get("queueLength", DEFAULT_QUEUE_LENGTH),
            f"{field}.queueLength",
        ),
        "activation_queue_length": check.take(
            _parse_number,
            data.get("activationQueueLength", 0),
            f"{field}.activationQueueLength",
            False,
        ),
        "queue_length_strategy": check.take(
            _parse_choice,
            data.get("queueLengthStrategy", "all"),
            f"{field}.queueLengthStrategy",
            QUEUE_LENGTH_STRATEGIES,
        ),
        **(check.take(_parse_credentials, data, field) or {}),
        "name": check.take(
            _parse_str,
            data.get("name", queue_name or "queue"),
            f"{field}.name",
            _RULE_NAME,
            "a name",
        ),
    }
    check.raise_if_any()
    return AzureQueueTrigger(queue_name=queue_name, **values)


def _parse_credentials(data: Mapping[str, Any], field: str) -> dict[str, str]:
    """A connection string from an env var (the default), or an account with Azure AD."""
    if "accountName" not in data:
        for key in ("cloud", "endpointSuffix"):
            if key in data:
                raise ConfigError(f"{field}.{key}", "only applies together with accountName")
        env = data.get("connectionFromEnv", DEFAULT_CONNECTION_ENV)
        what = "the name of an environment variable"
        env = _parse_str(env, f"{field}.connectionFromEnv", _ENV_NAME, what)
        return {"connection_from_env": env}
    if "connectionFromEnv" in data:
        raise ConfigError(
            f"{field}.accountName",
            "give connectionFromEnv (a connection string) or accountName (Azure AD), not both",
        )
    account = _parse_str(
        data["accountName"], f"{field}.accountName", _ACCOUNT_NAME,
        "a storage account name (3-24 lowercase letters and digits)",
    )  # fmt: skip
    clouds = {c.lower(): c for c in CLOUD_SUFFIXES}
    cloud = _parse_choice(data.get("cloud", "AzurePublicCloud"), f"{field}.cloud", clouds)
    suffix = data.get("endpointSuffix")
    if cloud == "Private":
        if suffix is None:
            raise ConfigError(f"{field}.endpointSuffix", "is required with cloud 'Private'")
        what = "a DNS suffix like 'core.example.net'"
        suffix = _parse_str(suffix, f"{field}.endpointSuffix", _ENDPOINT_SUFFIX, what)
    elif suffix is not None:
        raise ConfigError(f"{field}.endpointSuffix", "only applies with cloud 'Private'")
    return {
        "connection_from_env": "",
        "account_name": account,
        "cloud": cloud,
        "endpoint_suffix": suffix or CLOUD_SUFFIXES[cloud],
    }


def parse_scale_target(rule: Mapping[str, Any]) -> ScaleTargetRef:
    """`scaleTargetRef: {apiVersion, kind, name}` as KEDA's, or the shorthand `deployment: NAME`."""
    if "scaleTargetRef" not in rule:
        if "deployment" not in rule:
            raise ConfigError("scaleTargetRef", "is required (or its shorthand: deployment: NAME)")
        name = _required(rule, "deployment", "deployment")
        return ScaleTargetRef(_parse_str(name, "deployment", _DNS_SUBDOMAIN, "a Deployment name"))
    if "deployment" in rule:
        raise ConfigError("deployment", "give scaleTargetRef or its shorthand deployment, not both")
    field = "scaleTargetRef"
    data = _check_mapping(rule["scaleTargetRef"], field, TARGET_REF_FIELDS)
    check = _Collector()
    name = check.take(
        lambda: _parse_str(
            _required(data, "name", f"{field}.name"), f"{field}.name", _DNS_SUBDOMAIN,
            "an object name (lowercase letters, digits, '-' and '.')",
        )
    )  # fmt: skip
    kind = check.take(
        _parse_str, data.get("kind", DEFAULT_TARGET_KIND), f"{field}.kind", _KIND,
        "a kind like 'Deployment' or 'StatefulSet'",
    )  # fmt: skip
    api_version = check.take(
        _parse_str, data.get("apiVersion", DEFAULT_TARGET_API_VERSION), f"{field}.apiVersion",
        _API_VERSION, "an apiVersion like 'apps/v1' or 'argoproj.io/v1alpha1'",
    )  # fmt: skip
    check.raise_if_any()
    return ScaleTargetRef(name, kind, api_version)


def parse_fallback(data: Any, field: str, max_replicas: int | None) -> Fallback:
    data = _check_mapping(data, field, {"failureThreshold", "replicas"})
    check = _Collector()
    threshold = check.take(
        lambda: _parse_int(
            _required(data, "failureThreshold", f"{field}.failureThreshold"),
            f"{field}.failureThreshold",
            1,
        )
    )
    replicas = check.take(
        lambda: _parse_int(_required(data, "replicas", f"{field}.replicas"), f"{field}.replicas", 0)
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
    data = _check_mapping(data, field, POLICY_FIELDS)
    kind = _parse_choice(
        _required(data, "type", f"{field}.type"),
        f"{field}.type",
        {t.lower(): t for t in POLICY_TYPES},
    )
    value = _parse_int(_required(data, "value", f"{field}.value"), f"{field}.value", minimum=1)
    period = parse_duration(
        _required(data, "periodSeconds", f"{field}.periodSeconds"),
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
    data = _check_mapping(data, field, SCALING_RULES_FIELDS)
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
        raise ConfigError(f"{field}.policies", f"expected a list, got {_show(policies)}")
    return ScalingRules(
        stabilization_window_seconds=window,
        select_policy=_parse_choice(
            data.get("selectPolicy", "Max"),
            f"{field}.selectPolicy",
            {s.lower(): s for s in SELECT_POLICIES},
        ),
        policies=tuple(parse_policy(p, f"{field}.policies[{i}]") for i, p in enumerate(policies)),
    )


def parse_behavior(data: Any, field: str) -> Behavior:
    data = _check_mapping(data, field, {"scaleUp", "scaleDown"})
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
    check = _Collector()
    name = check.take(
        lambda: _parse_str(_required(data, "name", "name"), "name", _RULE_NAME, "a rule name")
    )
    namespace = check.take(
        _parse_str,
        data.get("namespace", "default"),
        "namespace",
        _DNS_LABEL,
        "a Kubernetes namespace name",
    )
    if namespace and allowed_namespaces is not None and namespace not in allowed_namespaces:
        allowed = ", ".join(sorted(allowed_namespaces)) or "none"
        check.errors.append(
            ConfigError(
                "namespace",
                f"namespace {namespace!r} is not in this autoscaler's allow-list ({allowed})",
            )
        )
    scale_target = check.take(parse_scale_target, data)
    min_replicas = check.take(
        _parse_int, data.get("minReplicas", DEFAULT_MIN_REPLICAS), "minReplicas", 0
    )
    max_replicas = check.take(
        _parse_int, data.get("maxReplicas", DEFAULT_MAX_REPLICAS), "maxReplicas", 1
    )
    if min_replicas is not None and max_replicas is not None and min_replicas > max_replicas:
        check.errors.append(
            ConfigError(
                "minReplicas", f"must not exceed maxReplicas ({max_replicas}), got {min_replicas}"
            )
        )
    triggers = check.take(_parse_triggers, data.get("triggers"))
    values = {
        "polling_interval": check.take(
            _parse_polling_interval, data.get("pollingInterval", DEFAULT_POLLING_INTERVAL)
        ),
        "cooldown_period": check.take(
            parse_duration, data.get("cooldownPeriod", DEFAULT_COOLDOWN_PERIOD), "cooldownPeriod"
        ),
        "tolerance": check.take(
            _parse_number, data.get("tolerance", DEFAULT_TOLERANCE), "tolerance", False
        ),
        "behavior": check.take(parse_behavior, data.get("behavior") or {}, "behavior"),
        "fallback": None
        if data.get("fallback") is None
        else check.take(parse_fallback, data["fallback"], "fallback", max_replicas),
    }
    check.raise_if_any()
    return Rule(
        name=name,
        namespace=namespace,
        scale_target=scale_target,
        triggers=triggers,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        **values,
    )


def _parse_triggers(triggers: Any) -> tuple[AzureQueueTrigger, ...]:
    if triggers is None:
        raise ConfigError("triggers", "is required")
    if not isinstance(triggers, list) or not triggers:
        raise ConfigError("triggers", f"expected a non-empty list, got {_show(triggers)}")
    check = _Collector()
    parsed = [check.take(parse_trigger, t, f"triggers[{i}]") for i, t in enumerate(triggers)]
    check.raise_if_any()
    labels = [t.label for t in parsed]
    for i, label in enumerate(labels):
        if labels.index(label) != i:
            raise ConfigError(f"triggers[{i}].name", f"duplicate trigger name {label!r}")
    return tuple(parsed)


# ---------------------------------------------------------------------------------------------
# The file


def parse_rules_text(
    text: str, source: str, allowed_namespaces: Collection[str] | None = None
) -> LoadResult:
    """Parse a whole rule file. Never raises for bad content: problems are in the result."""

    def fatal(field: str, message: str) -> LoadResult:
        return LoadResult(source, problems=(ConfigProblem(source, "", field, message),), fatal=True)

    try:
        # The pure-Python loader, not libyaml's (4x faster on 1,000 rules): libyaml recurses in C
        # and crashes the process (SIGSEGV) on a deeply nested file, where this one raises.
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        return fatal("", f"not valid YAML{where}: {problem}")
    except (ValueError, RecursionError) as exc:
        # safe_load raises these, not YAMLError, for e.g. `2020-13-45`, `!!int x`, deep nesting.
        return fatal("", f"not valid YAML: {exc}")
    except Exception as exc:
        # And its constructors fail with IndexError, KeyError or AttributeError on some explicit
        # tags (`!!int` with no value, `!!bool x`, `!!timestamp x`): still bad content, not a bug.
        return fatal("", f"not valid YAML: a value could not be read ({type(exc).__name__})")
    if document is None:
        return fatal("", "the file is empty: expected a mapping with a 'rules' list")
    try:
        document = _check_mapping(document, "", {"defaults", "rules"})
    except ConfigError as exc:
        return fatal(exc.field, exc.message)
    rules_data = document.get("rules")
    if not isinstance(rules_data, list):
        return fatal("rules", f"expected a list of rules, got {_show(rules_data)}")
    defaults = document.get("defaults") or {}
    try:
        defaults = _check_mapping(defaults, "", DEFAULTABLE_FIELDS)
        # A default that is itself invalid would break every rule: check it once, on its own.
        _check_defaults(defaults)
    except ConfigError as exc:
        return LoadResult(
            source,
            problems=(ConfigProblem(source, "defaults", exc.field, exc.message),),
            fatal=True,
        )
    except ConfigErrors as exc:
        found = tuple(ConfigProblem(source, "defaults", e.field, e.message) for e in exc.errors)
        return LoadResult(source, problems=found, fatal=True)

    rules: list[Rule] = []
    problems: list[ConfigProblem] = []
    seen: set[str] = set()
    for index, entry in enumerate(rules_data):
        name = entry.get("name") if isinstance(entry, Mapping) else None
        name = name if isinstance(name, str) and name else None
        where = f"rules[{index}] ({name})" if name else f"rules[{index}]"
        try:
            entry = _check_mapping(entry, "", RULE_FIELDS)
            rule = parse_rule({**defaults, **entry}, allowed_namespaces)
        except ConfigError as exc:
            problems.append(ConfigProblem(source, where, exc.field, exc.message, name))
            continue
        except ConfigErrors as exc:
            problems.extend(
                ConfigProblem(source, where, e.field, e.message, name) for e in exc.errors
            )
            continue
        if rule.name in seen:
            # The first rule of that name stays; only the repeat is left out.
            problem = ConfigProblem(source, where, "name", f"duplicate rule name {name!r}")
            problems.append(problem)
            continue
        seen.add(rule.name)
        rules.append(rule)
    return LoadResult(source, tuple(rules), tuple(problems))


def _check_defaults(defaults: Mapping[str, Any]) -> None:
    checks: dict[str, Callable[[Any], object]] = {
        "pollingInterval": _parse_polling_interval,
        "cooldownPeriod": lambda v: parse_duration(v, "cooldownPeriod"),
        "minReplicas": lambda v: _parse_int(v, "minReplicas", 0),
        "maxReplicas": lambda v: _parse_int(v, "maxReplicas", 1),
        "tolerance": lambda v: _parse_number(v, "tolerance", positive=False),
        "behavior": lambda v: parse_behavior(v, "behavior"),
        "namespace": lambda v: _parse_str(
            v, "namespace", _DNS_LABEL, "a Kubernetes namespace name"
        ),
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
    triggers = ", ".join(
        f"azure-queue {t.queue_name} (target {t.queue_length:g}/replica, "
        f"activation > {t.activation_queue_length:g}, {t.queue_length_strategy})"
        for t in rule.triggers
    )
    ref = rule.scale_target
    target = rule.target if ref.is_deployment else f"{rule.target} ({ref.api_version})"
    return (
        f"{rule.name}: {target} replicas {rule.min_replicas}..{rule.max_replicas}, "
        f"every {rule.polling_interval:g}s, cooldown {rule.cooldown_period:g}s, on {triggers}"
    )


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
