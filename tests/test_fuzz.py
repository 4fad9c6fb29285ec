"""Property-based fuzzing (hypothesis) of the rule file loader, the decision and `convert`.

The rule file (eventscaler/config.py), which must never raise for bad content:
- arbitrary text, YAML-like text (real keys, indicators, tags, anchors) and arbitrary YAML-shaped
  data (None, bools, ints up to thousands of digits, floats with nan and inf, strings, lists,
  dicts), dumped with yaml.safe_dump, never raise: every problem names the source and says
  something, a fatal result carries no rules, and every rule that loads is sane (bounds in order,
  finite positive numbers, a polling interval the scheduler can take);
- rule mappings built from the real field names (rule, trigger, behavior, policy, fallback) with
  arbitrary values, through `parse_rule` directly and through a whole file, never crash;
- a valid rule with one field changed (or added) to an arbitrary value loads, or is rejected with
  a problem naming that field (its path, a part of it, or, for a bound that involves two fields,
  a message that names it);
- regressions: a YAML alias bomb is reported at once, a hexadecimal integer past Python's
  4,300-digit str() limit, a pollingInterval too large to schedule and a queueLength whose
  reciprocal overflows are problems, not exceptions.

The decision (eventscaler/policy.py), on arbitrary valid rules (bounds, queueLength, activation,
tolerance, behavior windows and policies, fallback) and arbitrary sequences of ticks (readings
with failures, external changes of the replicas to values outside the bounds, pauses, failed
writes, time steps of 0 included), replayed as the engine does (`record_scale` after each
successful write):
- `decide` never raises, and the state it keeps stays within the longest window or period;
- no pause and no fallback, current in [minReplicas, maxReplicas]: the target is in the bounds;
- current outside the bounds: the target lies between current and the bounds (it never moves
  away from them), and it is outside the bounds only when every reading failed, when a reading
  failed and current is above maxReplicas (no scale-down on a failed tick), or when the rate
  policies (or selectPolicy Disabled) limit a step to zero or from zero; as the HPA, a count
  above maxReplicas goes to it whatever the policies;
- a tick with a failed reading never scales down, unless the fallback runs;
- with a fallback, from the failureThreshold-th failed tick in a row (a pause starts the count
  afresh) the target is fallback.replicas, and the fallback step never runs before;
- a paused tick leaves current alone, or sets the paused-replicas count;
- no step moves more than the behavior policies allow within each policy's period (the HPA's
  rule: the period starts at current - replicas added + replicas removed within it, scale events
  of both directions counted; from there Pods allows `value` more or fewer, Percent `value` %;
  selectPolicy Max lets the most permissive policy decide and Min the strictest, Disabled forbids
  the direction); lifts to minReplicas, cuts to maxReplicas, one replica from zero, the fallback
  and paused-replicas are not rate-limited.

`convert` (eventscaler/convert.py), on ScaledObjects whose azure-queue trigger metadata KEDA
accepts (its azure-queue scaler: queueName, queueLength and activationQueueLength as int64
strings, queueLengthStrategy all/visibleonly, connectionFromEnv, or accountName with workload
identity and any cloud KEDA's ParseEnvironmentProperty takes: absent or empty (the public cloud,
endpointSuffix ignored), its cloud names and aliases in any case, Private with an endpointSuffix):
- every converted rule file loads with no problem (issue 10: `cloud: ""` with endpointSuffix did
  not);
- every trigger is written or listed as not converted, and only when the rule file cannot say
  the same thing (a Private endpointSuffix without "queue." in front); two triggers on one queue
  get distinct names;
- a written trigger means what KEDA's meant: the same queue, target, activation when KEDA's is not
  negative, strategy, env var, and for an account the same queue URL KEDA reads.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from eventscaler.config import (
    POLICY_FIELDS,
    RULE_FIELDS,
    SCALING_RULES_FIELDS,
    ConfigError,
    ConfigErrors,
    LoadResult,
    Rule,
    ScalingRules,
    parse_rule,
    parse_rules_text,
)
from eventscaler.convert import convert_text, render_rules
from eventscaler.policy import (
    STEP_FALLBACK,
    STEP_PAUSED,
    Pause,
    Reading,
    decide,
    initial_state,
)
from eventscaler.sources.azure_queue import CLOUD_SUFFIXES, AzureQueue, default_account_url

SOURCE = "fuzz.yaml"
# Random in a developer's run, the same examples every time in CI; no example database on disk.
FUZZ = settings(
    deadline=None,
    database=None,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
INT32_MAX = 2**31 - 1

# ---------------------------------------------------------------------------------------------
# Strategies: values


class _BigIntDumper(yaml.SafeDumper):
    """safe_dump, except that integers past Python's 4,300-digit str() limit are written in hex
    (YAML 1.1, which the loader reads back), as a hostile file could."""


def _represent_int(dumper: yaml.SafeDumper, value: int) -> yaml.Node:
    if value.bit_length() > 10_000:
        text = ("-" if value < 0 else "") + hex(abs(value))
        return dumper.represent_scalar("tag:yaml.org,2002:int", text)
    return dumper.represent_int(value)


_BigIntDumper.add_representer(int, _represent_int)


def dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_BigIntDumper, allow_unicode=True, sort_keys=False)


# Integers past Python's 4,300-digit str() limit are tested from text (hex), not drawn here:
# hypothesis could not print such an example.
huge_ints = st.sampled_from(
    [2**31 - 1, 2**31, 2**63, -(2**63), 10**19, 10**308, 10**309, 10**400, 10**4000]
)
ints = st.one_of(st.integers(), st.integers(-3, 200), huge_ints)
floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 0.5, 1e-300, 5e-324, 1e308, math.inf, -math.inf, math.nan]),
)
words = st.sampled_from(
    ["azure-queue", "Pods", "Percent", "Max", "Min", "Disabled", "all", "visibleOnly",
     "visibleonly", "Private", "AzurePublicCloud", "30s", "5m", "1h30m", "500ms", "-5s", "1e999",
     "nan", "inf", "ten", "", " ", "orders", "default", "AZURE_STORAGE_CONNECTION_STRING",
     "core.example.net", "x" * 300, "a\nb", "0x1F", "1_000", "٣", "²"]
)  # fmt: skip
scalars = st.one_of(st.none(), st.booleans(), ints, floats, st.text(max_size=20), words)
known_keys = st.sampled_from(
    sorted(
        RULE_FIELDS
        | AzureQueue().keys()
        | {"type", "name", "metricType"}
        | SCALING_RULES_FIELDS
        | POLICY_FIELDS
    )
    + ["scaleUp", "scaleDown", "failureThreshold", "replicas", "rules", "defaults"]
)
keys = st.one_of(known_keys, st.text(max_size=10), st.integers(-5, 5), st.booleans(), st.none())
anything = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)

# ---------------------------------------------------------------------------------------------
# Strategies: rule-shaped mappings with arbitrary values


def shaped(fields: Mapping[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts with any subset of `fields`, now and then an unknown key too."""
    return st.builds(
        lambda known, extra: {**known, **extra},
        st.fixed_dictionaries({}, optional=dict(fields)),
        st.dictionaries(st.sampled_from(["queueLenght", "extra", "Name"]), anything, max_size=1),
    )


def or_anything(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(strategy, anything)


durations = or_anything(st.one_of(st.integers(0, 4000), st.sampled_from(["30s", "5m", "0"])))
policy_like = shaped(
    {
        "type": or_anything(st.sampled_from(["Pods", "Percent", "pods"])),
        "value": or_anything(st.integers(1, 300)),
        "periodSeconds": durations,
    }
)
scaling_rules_like = shaped(
    {
        "stabilizationWindowSeconds": durations,
        "selectPolicy": or_anything(st.sampled_from(["Max", "Min", "Disabled"])),
        "policies": or_anything(st.lists(policy_like, max_size=3)),
    }
)
behavior_like = shaped(
    {"scaleUp": or_anything(scaling_rules_like), "scaleDown": or_anything(scaling_rules_like)}
)
trigger_like = shaped(
    {
        "type": or_anything(st.just("azure-queue")),
        "queueName": or_anything(st.sampled_from(["orders", "returns", "q"])),
        "name": anything,
        "queueLength": or_anything(st.integers(1, 50)),
        "activationQueueLength": anything,
        "queueLengthStrategy": anything,
        "connectionFromEnv": anything,
        "accountName": or_anything(st.just("storeacct")),
        "cloud": anything,
        "endpointSuffix": anything,
    }
)
fallback_like = shaped({"failureThreshold": anything, "replicas": anything})
rule_like = shaped(
    {
        "name": or_anything(st.sampled_from(["orders", "returns"])),
        "namespace": or_anything(st.just("default")),
        "deployment": or_anything(st.just("worker")),
        "minReplicas": or_anything(st.integers(0, 5)),
        "maxReplicas": or_anything(st.integers(1, 50)),
        "pollingInterval": durations,
        "cooldownPeriod": durations,
        "tolerance": anything,
        "triggers": or_anything(st.lists(trigger_like, max_size=3)),
        "behavior": or_anything(behavior_like),
        "fallback": or_anything(fallback_like),
    }
)

# ---------------------------------------------------------------------------------------------
# Checks


def check_load(result: LoadResult, source: str = SOURCE) -> None:
    """What every load must give: named, non-empty problems; sane rules; nothing after fatal."""
    assert isinstance(result, LoadResult)
    for problem in result.problems:
        text = str(problem)
        assert problem.source == source
        assert text.startswith(f"{source}: "), text
        assert problem.message.strip(), text
        assert len(text) < 20_000, "a problem must stay readable"
    if result.fatal:
        assert result.problems and not result.rules
    for rule in result.rules:
        check_rule_is_sane(rule)
    names = [rule.name for rule in result.rules]
    assert len(names) == len(set(names))


def check_rule_is_sane(rule: Rule) -> None:
    """What the decision, the scheduler and the Kubernetes API rely on in a loaded rule."""
    assert 0 <= rule.min_replicas <= rule.max_replicas <= INT32_MAX
    assert rule.max_replicas >= 1
    assert rule.polling_interval > 0 and math.isfinite(rule.polling_interval)
    timedelta(seconds=rule.polling_interval)  # APScheduler's IntervalTrigger builds one
    assert rule.cooldown_period >= 0 and math.isfinite(rule.cooldown_period)
    assert rule.tolerance >= 0 and math.isfinite(rule.tolerance)
    assert rule.triggers
    for trigger in rule.triggers:
        assert trigger.target > 0 and math.isfinite(trigger.target)
        assert math.isfinite(1 / trigger.target)  # the per-trigger desired count divides
        assert trigger.activation >= 0 and math.isfinite(trigger.activation)
    for rules in (rule.behavior.scale_up, rule.behavior.scale_down):
        assert rules.select_policy in ("Max", "Min", "Disabled")
        assert 0 <= rules.stabilization_window_seconds <= 3600
        for policy in rules.policies:
            assert policy.type in ("Pods", "Percent")
            assert 1 <= policy.value <= INT32_MAX
            assert 0 < policy.period_seconds <= 1800
    if rule.fallback is not None:
        assert 1 <= rule.fallback.failure_threshold <= INT32_MAX
        assert 0 <= rule.fallback.replicas <= rule.max_replicas


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Fail (rather than hang the suite) when the block runs longer than `seconds`."""

    def expire(*_: object) -> None:
        raise AssertionError(f"took longer than {seconds}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# ---------------------------------------------------------------------------------------------
# The rule file: arbitrary text and data

yaml_tokens = st.sampled_from(
    ["rules:", "defaults:", "- ", "  ", "    ", "\n", ": ", "name: a", "deployment: d",
     "triggers:", "type: azure-queue", "queueName: orders", "minReplicas:", "maxReplicas:",
     "behavior:", "scaleUp:", "policies:", "fallback:", "[", "]", "{", "}", ",", "&a ", "*a",
     "*b", "!!int ", "!!float ", "!!str ", "!!binary ", "!!timestamp ", "!!python/object:os.system",
     "!!set ", "!!omap ", "? ", "|", ">", "'", '"', "#", "%YAML 1.1\n", "---", "...", "~", ".nan",
     ".inf", "-.inf", "0x" + "f" * 4000, "0o777", "0b101", "1:30:00", "2020-13-45", "1e999",
     "yes", "no", "null", "\t", "\x00", "\ufeff", "\x85", "=", "<<: *a"]
)  # fmt: skip
yaml_like_text = st.lists(st.one_of(yaml_tokens, st.text(max_size=5)), max_size=40).map("".join)


@settings(FUZZ, max_examples=200)
@given(st.one_of(st.text(), yaml_like_text))
@example("rules: [{name: a, deployment: d, minReplicas: 0x" + "F" * 4000 + "}]")
@example("[" * 100_000)
@example("rules: &a [*a]")
@example("rules:\n  - &r {name: a, deployment: d, triggers: [{type: azure-queue}], behavior: *r}")
@example("!!int x")
@example("rules: !!timestamp x")
@example("!!bool x")
@example("rules: [!!int ]")
def test_arbitrary_text_never_raises(text: str) -> None:
    check_load(parse_rules_text(text, SOURCE))


@settings(FUZZ, max_examples=200)
@given(anything)
def test_arbitrary_yaml_data_never_raises(data: Any) -> None:
    check_load(parse_rules_text(dump(data), SOURCE))
    check_load(parse_rules_text(yaml.safe_dump(data, default_flow_style=True), SOURCE))


@settings(FUZZ, max_examples=150)
@given(
    st.lists(rule_like, max_size=3),
    st.one_of(st.none(), shaped({k: anything for k in RULE_FIELDS - {"name", "deployment"}})),
    st.sampled_from([None, ("default",), ()]),
)
def test_arbitrary_rule_mappings_never_crash(
    rules: list[dict[str, Any]],
    defaults: dict[str, Any] | None,
    namespaces: tuple[str, ...] | None,
) -> None:
    for data in rules:
        try:
            rule = parse_rule(data, namespaces)
        except ConfigErrors as exc:
            assert exc.errors
            assert all(isinstance(e, ConfigError) and e.message.strip() for e in exc.errors)
        else:
            check_rule_is_sane(rule)
    document: dict[str, Any] = {"rules": rules}
    if defaults is not None:
        document["defaults"] = defaults
    check_load(parse_rules_text(dump(document), SOURCE, namespaces))


def test_yaml_alias_bomb_is_reported_at_once() -> None:
    # Nine levels of ten aliases are 10**9 strings once expanded; YAML itself shares them, so only
    # a message that printed the value in full could blow up.
    lines = ["rules:", "  - {name: &a [x,x,x,x,x,x,x,x,x,x], deployment: d}"]
    previous = "a"
    for anchor in "bcdefghi":
        aliases = ",".join([f"*{previous}"] * 10)
        lines.append(f"  - {{name: &{anchor} [{aliases}], minReplicas: *{anchor}}}")
        previous = anchor
    started = time.monotonic()
    with time_limit(20):
        result = parse_rules_text("\n".join(lines), SOURCE)
    assert time.monotonic() - started < 5
    check_load(result)
    assert "rules[8].name: expected a rule name, got [[[[" in " ".join(map(str, result.problems))


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("minReplicas", "0x" + "F" * 4000, "minReplicas: expected a whole number from 0 to"),
        ("maxReplicas", "0x" + "F" * 4000, "maxReplicas: expected a whole number from 1 to"),
        ("tolerance", "0x" + "F" * 4000, "tolerance: expected a number >= 0, got an integer of"),
        ("maxReplicas", str(2**31), "maxReplicas: expected a whole number from 1 to 2147483647"),
        ("pollingInterval", "1e14", "pollingInterval: expected at most 2147483647 seconds"),
        ("pollingInterval", "99999999999h", "pollingInterval: expected at most"),
    ],
)
def test_values_past_python_and_scheduler_limits_are_problems(
    field: str, value: str, expected: str
) -> None:
    text = (
        "rules:\n  - name: a\n    deployment: d\n"
        f"    triggers: [{{type: azure-queue, queueName: abc}}]\n    {field}: {value}\n"
    )
    result = parse_rules_text(text, SOURCE)
    check_load(result)
    assert not result.rules
    assert any(expected in str(p) for p in result.problems), result.problems


def test_a_queue_length_whose_reciprocal_overflows_is_a_problem() -> None:
    text = (
        "rules:\n  - name: a\n    deployment: d\n"
        "    triggers: [{type: azure-queue, queueName: abc, queueLength: 1.0e-320}]\n"
    )
    result = parse_rules_text(text, SOURCE)
    assert not result.rules
    assert "triggers[0].queueLength: expected a number of at least 0.001" in str(result.problems[0])


# ---------------------------------------------------------------------------------------------
# The rule file: one field of a valid rule changed

VALID_RULE: dict[str, Any] = {
    "name": "orders",
    "namespace": "default",
    "deployment": "orders-worker",
    "minReplicas": 1,
    "maxReplicas": 20,
    "pollingInterval": "15s",
    "cooldownPeriod": 300,
    "tolerance": 0.1,
    "triggers": [
        {"type": "azure-queue", "name": "first", "queueName": "orders", "queueLength": 5,
         "activationQueueLength": 0, "queueLengthStrategy": "all",
         "connectionFromEnv": "AZURE_STORAGE_CONNECTION_STRING"},
        {"type": "azure-queue", "name": "second", "queueName": "returns", "queueLength": 2.5},
    ],
    "behavior": {
        "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                    "policies": [{"type": "Pods", "value": 4, "periodSeconds": 60}]},
        "scaleDown": {"stabilizationWindowSeconds": "5m", "selectPolicy": "Min",
                      "policies": [{"type": "Percent", "value": 50, "periodSeconds": 60},
                                   {"type": "Pods", "value": 2, "periodSeconds": "30s"}]},
    },
    "fallback": {"failureThreshold": 3, "replicas": 4},
}  # fmt: skip
# Fields that are not in VALID_RULE, changed by being added.
ADDED_FIELDS = (
    ("triggers", 1, "accountName"),
    ("triggers", 0, "cloud"),
    ("triggers", 1, "endpointSuffix"),
    ("unknownField",),
    ("behavior", "scaleUp", "unknown"),
)


def leaf_paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path to a value inside `value`, containers included (the root excluded)."""
    if path:
        yield path
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from leaf_paths(inner, (*path, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from leaf_paths(inner, (*path, index))


PATHS = sorted(set(leaf_paths(VALID_RULE)) | set(ADDED_FIELDS), key=str)


def dotted(path: tuple[Any, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def with_value(data: Any, path: tuple[Any, ...], value: Any) -> Any:
    """A deep copy of `data` with `value` at `path`."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(data, list):
        copy = list(data)
        copy[head] = with_value(data[head], rest, value)
        return copy
    return {**data, head: with_value(data.get(head), rest, value)}


def test_the_valid_rule_is_valid() -> None:
    result = parse_rules_text(dump({"rules": [VALID_RULE]}), SOURCE)
    assert result.ok and len(result.rules) == 1


plausible_values = st.one_of(
    anything,
    st.integers(0, 30),
    st.sampled_from(["orders", "first", "second", "returns", "Pods", "Max", "10s", "storeacct"]),
)


@settings(FUZZ, max_examples=400)
@given(st.sampled_from(PATHS), plausible_values)
@example(("maxReplicas",), 0)
@example(("maxReplicas",), 2)
@example(("triggers", 1, "name"), "first")
@example(("triggers", 1, "accountName"), "storeacct")
def test_one_changed_field_loads_or_is_named(path: tuple[Any, ...], value: Any) -> None:
    data = with_value(VALID_RULE, path, value)
    result = parse_rules_text(dump({"rules": [data]}), SOURCE)
    check_load(result)
    if result.ok:
        assert len(result.rules) == 1
        return
    assert not result.rules
    changed = dotted(path)
    last = str(path[-1]) if not isinstance(path[-1], int) else dotted(path[-2:])
    for problem in result.problems:
        # The changed field, a field inside it, the container it is in, or for a bound that
        # involves two fields (min <= max, fallback <= max), a message that names it.
        named = (
            problem.field == changed
            or problem.field.startswith((changed + ".", changed + "["))
            or changed.startswith((problem.field + ".", problem.field + "["))
            or last in problem.message
        )
        assert named, f"changed {changed} to {value!r}, got: {problem}"


# ---------------------------------------------------------------------------------------------
# The decision

T0 = 10_000.0


@st.composite
def valid_rules(draw: st.DrawFn) -> Rule:
    """A rule as the loader accepts it, over the whole range of each field."""
    min_replicas = draw(st.one_of(st.integers(0, 6), st.just(0)))
    max_replicas = draw(st.integers(max(min_replicas, 1), min_replicas + 30))

    def scaling(default_window: float) -> dict[str, Any]:
        policies = st.fixed_dictionaries(
            {
                "type": st.sampled_from(["Pods", "Percent"]),
                "value": st.one_of(st.integers(1, 10), st.integers(1, 300), st.just(INT32_MAX)),
                "periodSeconds": st.one_of(st.integers(1, 120), st.floats(0.001, 1800)),
            }
        )
        return draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "stabilizationWindowSeconds": st.one_of(
                        st.sampled_from([0, 30, default_window]), st.floats(0, 3600)
                    ),
                    "selectPolicy": st.sampled_from(["Max", "Min", "Disabled"]),
                    "policies": st.lists(policies, max_size=3),
                },
            )
        )

    queue_lengths = st.one_of(
        st.integers(1, 50),
        st.floats(0.001, 1e9, allow_nan=False),
        st.sampled_from([0.001, 0.5, 7.5, 1e12]),
    )
    triggers = [
        {
            "type": "azure-queue",
            "queueName": f"queue-{i}",
            "queueLength": draw(queue_lengths),
            "activationQueueLength": draw(
                st.one_of(st.just(0), st.integers(0, 20), st.floats(0, 1e6))
            ),
        }
        for i in range(draw(st.integers(1, 3)))
    ]
    data: dict[str, Any] = {
        "name": "fuzz",
        "deployment": "fuzz",
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
        "cooldownPeriod": draw(st.one_of(st.sampled_from([0, 30, 300]), st.floats(0, 1e6))),
        "tolerance": draw(st.one_of(st.sampled_from([0, 0.1]), st.floats(0, 3))),
        "triggers": triggers,
        "behavior": {"scaleUp": scaling(0), "scaleDown": scaling(300)},
    }
    if draw(st.booleans()):
        data["fallback"] = {
            "failureThreshold": draw(st.integers(1, 4)),
            "replicas": draw(st.integers(0, max_replicas)),
        }
    return parse_rule(data)


@dataclass(frozen=True)
class Tick:
    dt: float  # seconds since the previous tick
    lengths: tuple[int | None, ...]  # None: the read failed
    pause: Pause | None = None
    set_replicas: int | None = None  # someone (kubectl scale) changed the count before the tick
    write_fails: bool = False


lengths = st.one_of(
    st.none(),
    st.integers(0, 30),
    st.integers(0, 10**6),
    st.sampled_from([0, 2**31, 2**62]),
)
pauses = st.one_of(
    st.none(),
    st.none(),
    st.none(),
    st.builds(Pause, st.just("eventscaler.io/paused"), st.none()),
    st.builds(Pause, st.just("eventscaler.io/paused-replicas"), st.integers(0, 60)),
)


def ticks(triggers: int) -> st.SearchStrategy[list[Tick]]:
    tick = st.builds(
        Tick,
        dt=st.one_of(
            st.just(0.0), st.sampled_from([1.0, 15.0, 30.0, 299.0, 300.0]), st.floats(0, 4000)
        ),  # fmt: skip
        lengths=st.tuples(*[lengths] * triggers),
        pause=pauses,
        set_replicas=st.one_of(st.none(), st.none(), st.none(), st.integers(0, 80)),
        write_fails=st.sampled_from([False, False, False, True]),
    )
    return st.lists(tick, min_size=1, max_size=40)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Rule, int, list[Tick]]:
    rule = draw(valid_rules())
    start = draw(
        st.one_of(st.integers(0, rule.max_replicas), st.integers(0, rule.max_replicas + 40))
    )
    return rule, start, draw(ticks(len(rule.triggers)))


@dataclass
class ScaleRecord:
    time: float
    change: int  # target - current of a successful write, as RuleState.record_scale keeps it


def rate_allowed(
    rules: ScalingRules, history: list[ScaleRecord], now: float, current: int, target: int
) -> bool:
    """Whether the HPA's rate policies of one direction allow `current -> target` at `now`."""
    if rules.select_policy == "Disabled":
        return False
    if not rules.policies:
        return True
    up = target > current
    verdicts = []
    for policy in rules.policies:
        # The HPA's period start: current - added + removed, counting both directions.
        start = current - sum(r.change for r in history if r.time > now - policy.period_seconds)
        if up:
            if policy.type == "Pods":
                verdicts.append(target <= max(start + policy.value, current))
            else:
                limit = math.ceil(start * (1 + policy.value / 100))
                verdicts.append(target <= max(limit, current))
        else:
            if policy.type == "Pods":
                verdicts.append(target >= min(start - policy.value, current))
            else:
                verdicts.append(target >= min(int(start * (1 - policy.value / 100)), current))
    return any(verdicts) if rules.select_policy == "Max" else all(verdicts)


@settings(FUZZ, max_examples=400, derandomize=True)
@given(scenarios())
def test_decisions_over_arbitrary_ticks_keep_every_promise(
    scenario: tuple[Rule, int, list[Tick]],
) -> None:
    rule, current, tick_list = scenario
    lo, hi = rule.min_replicas, rule.max_replicas
    behavior = rule.behavior
    horizon = max(
        behavior.scale_up.stabilization_window_seconds,
        behavior.scale_down.stabilization_window_seconds,
        *(p.period_seconds for p in behavior.scale_up.policies + behavior.scale_down.policies),
        0.0,
    )
    now = T0
    state = initial_state(now)
    history: list[ScaleRecord] = []
    failed_in_a_row = 0
    for tick in tick_list:
        now += tick.dt
        if tick.set_replicas is not None:
            current = tick.set_replicas
        readings = [
            Reading(t.label, length, None if length is not None else "timed out", "Timeout")
            for t, length in zip(rule.triggers, tick.lengths, strict=True)
        ]
        decision = decide(rule, () if tick.pause else readings, current, state, now, tick.pause)
        target = decision.target
        failed = not tick.pause and any(length is None for length in tick.lengths)
        all_failed = not tick.pause and all(length is None for length in tick.lengths)
        # A pause starts the count afresh: failures before it are history.
        failed_in_a_row = failed_in_a_row + 1 if failed else 0
        what = f"tick at +{now - T0:g}s: {current} -> {target} [{decision.step}] {decision.reason}"

        assert decision.current == current
        assert isinstance(target, int) and target >= 0, what
        if not tick.pause:
            # State stays bounded: nothing older than the longest window or period is kept (a
            # paused tick adds nothing and prunes nothing).
            kept = decision.state.recommendations + decision.state.scale_events
            assert all(when >= now - horizon for when, _ in kept), what

        if tick.pause:
            assert decision.step == STEP_PAUSED
            expected = current if tick.pause.replicas is None else tick.pause.replicas
            assert target == expected, what
        elif rule.fallback and failed and failed_in_a_row >= rule.fallback.failure_threshold:
            assert decision.step == STEP_FALLBACK, what
            assert target == rule.fallback.replicas, what
        else:
            assert decision.step != STEP_FALLBACK, what
            if failed:
                assert target >= current, f"scaled down on a failed reading: {what}"
            if lo <= current <= hi:
                assert lo <= target <= hi, what
            else:
                # Never away from the bounds: between current and the nearest bound.
                assert min(current, lo) <= target <= max(current, hi), what
                if not lo <= target <= hi:
                    direction = behavior.scale_up if current < lo else behavior.scale_down
                    limited = direction.policies or direction.select_policy == "Disabled"
                    held = all_failed or (failed and current > hi)
                    assert limited or held, what

            if target != current:
                lifts = target <= lo and target > current  # to minReplicas, not rate-limited
                wakes = current == 0 and target == 1  # one replica from zero is always allowed
                # Above maxReplicas, as the HPA: straight to it, whatever the policies.
                cut_to_max = current > hi and target == hi
                direction = behavior.scale_up if target > current else behavior.scale_down
                if not (lifts or wakes or cut_to_max):
                    assert rate_allowed(direction, history, now, current, target), (
                        f"rate policies exceeded: {what}; recent {history[-6:]}"
                    )

        # The engine: write, and record the scale only when the write succeeded.
        if decision.changes and not tick.write_fails:
            state = decision.state.record_scale(now, current, target)
            history.append(ScaleRecord(now, target - current))
            current = target
        else:
            state = decision.state
        history = [r for r in history if r.time > now - 1800]


# ---------------------------------------------------------------------------------------------
# convert: KEDA-valid azure-queue metadata always gives a rule file that loads

AZURE_QUEUE_NAMES = st.from_regex(r"\A[a-z0-9]{3,20}(-[a-z0-9]{1,10}){0,3}\Z")
ACCOUNT_NAMES = st.from_regex(r"\A[a-z0-9]{3,24}\Z")
ENV_NAMES = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,30}\Z")
DNS_SUFFIXES = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\.[a-z0-9]{1,8}){1,3}\Z")
INT64 = st.integers(-(2**63), 2**63 - 1)
# KEDA's clouds (matched without case) and the storage suffix each reads queues under.
KEDA_CLOUD_SUFFIXES = {
    "AzurePublicCloud": CLOUD_SUFFIXES["AzurePublicCloud"],
    "AzureCloud": CLOUD_SUFFIXES["AzurePublicCloud"],
    "AzureUSGovernmentCloud": CLOUD_SUFFIXES["AzureUSGovernmentCloud"],
    "AzureUSGovernment": CLOUD_SUFFIXES["AzureUSGovernmentCloud"],
    "AzureChinaCloud": CLOUD_SUFFIXES["AzureChinaCloud"],
    "AzureGermanCloud": "core.cloudapi.de",
}


def any_case(text: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(text), max_size=len(text)).map(
        lambda upper: "".join(
            c.upper() if u else c.lower() for c, u in zip(text, upper, strict=True)
        )
    )


@st.composite
def keda_clouds(draw: st.DrawFn) -> dict[str, str]:
    """cloud and endpointSuffix as KEDA accepts them (ParseEnvironmentProperty)."""
    kind = draw(st.sampled_from(["absent", "empty", "named", "private"]))
    metadata: dict[str, str] = {}
    if kind == "empty":
        metadata["cloud"] = ""
    elif kind == "named":
        metadata["cloud"] = draw(st.sampled_from(sorted(KEDA_CLOUD_SUFFIXES)).flatmap(any_case))
    if kind == "private":
        metadata["cloud"] = draw(any_case("Private"))
        metadata["endpointSuffix"] = draw(
            st.one_of(
                st.builds("{}{}".format, any_case("queue."), DNS_SUFFIXES),
                DNS_SUFFIXES,  # KEDA takes any non-empty suffix with Private
            )
        )
    elif draw(st.booleans()):
        metadata["endpointSuffix"] = draw(st.text(min_size=0, max_size=30))  # ignored by KEDA
    return metadata


@st.composite
def keda_azure_queue_triggers(draw: st.DrawFn) -> dict[str, Any]:
    metadata: dict[str, str] = {"queueName": draw(AZURE_QUEUE_NAMES)}
    if draw(st.booleans()):
        metadata["queueLength"] = str(draw(st.integers(1, 2**63 - 1)))  # the HPA wants > 0
    if draw(st.booleans()):
        metadata["activationQueueLength"] = str(draw(INT64))
    if draw(st.booleans()):
        metadata["queueLengthStrategy"] = draw(st.sampled_from(["all", "visibleonly"]))
    trigger: dict[str, Any] = {"type": "azure-queue", "metadata": metadata}
    if draw(st.booleans()):
        metadata["connectionFromEnv"] = draw(ENV_NAMES)
        if draw(st.integers(0, 3)) == 0:
            metadata.update(draw(keda_clouds()))  # checked by KEDA, unused with a connection
    else:
        metadata["accountName"] = draw(ACCOUNT_NAMES)
        metadata.update(draw(keda_clouds()))
        trigger["authenticationRef"] = {"name": "workload"}
    return trigger


def keda_queue_url(metadata: Mapping[str, str]) -> str:
    cloud = metadata.get("cloud") or ""
    if cloud.lower() == "private":
        return f"https://{metadata['accountName']}.{metadata['endpointSuffix']}".lower()
    suffixes = {name.lower(): suffix for name, suffix in KEDA_CLOUD_SUFFIXES.items()}
    suffix = suffixes[cloud.lower()] if cloud else CLOUD_SUFFIXES["AzurePublicCloud"]
    return f"https://{metadata['accountName']}.queue.{suffix}"


def expressible(metadata: Mapping[str, str]) -> bool:
    """Whether the rule file can say what KEDA reads: https://ACCOUNT.queue.SUFFIX."""
    if (metadata.get("cloud") or "").lower() != "private" or "accountName" not in metadata:
        return True
    return metadata["endpointSuffix"].lower().startswith("queue.")


WORKLOAD_AUTH = {
    "apiVersion": "keda.sh/v1alpha1",
    "kind": "TriggerAuthentication",
    "metadata": {"name": "workload", "namespace": "default"},
    "spec": {"podIdentity": {"provider": "azure-workload"}},
}


@settings(FUZZ, max_examples=200)
@given(st.lists(keda_azure_queue_triggers(), min_size=1, max_size=3))
@example(
    [
        {
            "type": "azure-queue",
            "metadata": {
                "queueName": "orders",
                "accountName": "acct1",
                "cloud": "",
                "endpointSuffix": "x.example",
            },
        }
    ]
)
def test_convert_of_keda_valid_azure_queue_metadata_always_loads(
    triggers: list[dict[str, Any]],
) -> None:  # fmt: skip
    scaled_object = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "orders", "namespace": "default"},
        "spec": {"scaleTargetRef": {"name": "orders"}, "triggers": triggers},
    }
    text = yaml.safe_dump_all([WORKLOAD_AUTH, scaled_object])
    conversion = convert_text(text, "so.yaml")
    notes = [str(n) for n in conversion.notes if not n.converted]
    dropped = [
        any(f"spec.triggers[{i}]." in n and "trigger not converted" in n for n in notes)
        for i in range(len(triggers))
    ]
    for trigger, was_dropped in zip(triggers, dropped, strict=True):
        assert was_dropped == (not expressible(trigger["metadata"])), (trigger, notes)
    if all(dropped):
        assert conversion.rules == ()
        return
    output = render_rules(conversion, "so.yaml")
    result = parse_rules_text(output, "converted.yaml")
    assert result.ok and not result.problems, (output, [str(p) for p in result.problems])
    (rule,) = result.rules
    kept = [t for t, d in zip(triggers, dropped, strict=True) if not d]
    for written, trigger in zip(rule.triggers, kept, strict=True):
        metadata = trigger["metadata"]
        settings = written.settings
        assert settings.queue_name == metadata["queueName"]
        assert written.target == float(metadata.get("queueLength", 5))
        activation = int(metadata.get("activationQueueLength", 0))
        if activation >= 0:
            assert written.activation == float(activation)
        strategy = {"all": "all", "visibleonly": "visibleOnly"}
        assert (
            settings.queue_length_strategy == strategy[metadata.get("queueLengthStrategy", "all")]
        )
        if "connectionFromEnv" in metadata:
            assert settings.connection_from_env == metadata["connectionFromEnv"]
        else:
            assert default_account_url(settings).lower() == keda_queue_url(metadata)
