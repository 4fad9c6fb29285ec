"""The rule-file loader (eventscaler/config.py).

Scenarios covered:
- a minimal rule gets KEDA's defaults; a full rule keeps every field (triggers and HPA behavior)
- durations as numbers or strings ("30s", "5m", "1h30m", "500ms"), and what is not a duration
- case-insensitive choices (queueLengthStrategy, selectPolicy, policy type) come out canonical
- `defaults` fill what a rule leaves out and never override what it sets
- unknown keys are errors with a "did you mean" hint, at every level
- error text names file, rule index and name, field, what was expected and what was found
- a bad rule is left out and the others load; every wrong field of a rule is reported
- duplicate rule names and duplicate trigger names
- field checks: required fields, names, replica bounds, queue lengths, tolerance, behavior limits
- file-level problems are fatal: not YAML, empty, wrong shape, bad defaults, unreadable, not UTF-8
- the loader (libyaml's parser when present, the rules constructed one by one) reads what
  yaml.safe_load reads: anchors, aliases and merge keys across rules included, with and without
  libyaml
- content that once crashed the loader (YAML values safe_load rejects with ValueError, integers
  too large for a float, names with a trailing newline) is reported instead
- the namespace allow-list
- the scale target: `scaleTargetRef` (apiVersion and kind default to apps/v1 Deployment, as
  KEDA's) or the `deployment:` shorthand (the same rule); both at once, neither, a bad name, kind
  or apiVersion, an unknown key are errors naming the field; a StatefulSet or custom resource has
  its kind in `target` and its apiVersion in describe_rule; `target_key` tells kinds apart
- rules_in_force: what runs after a reload with bad edits
- config.example.yaml at the repo root loads with no problems (skipped while it does not exist)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from eventscaler import config as config_module
from eventscaler.config import (
    ConfigError,
    LoadResult,
    Rule,
    ScaleTargetRef,
    ScalingPolicy,
    describe_rule,
    load_rules,
    parse_duration,
    parse_rules_text,
    rules_in_force,
)
from eventscaler.sources.azure_queue import DEFAULT_CONNECTION_ENV

REPO_ROOT = Path(__file__).resolve().parent.parent
SOURCE = "rules.yaml"


def trigger(**fields: Any) -> dict[str, Any]:
    return {"type": "azure-queue", "queueName": "orders", **fields}


def rule(name: str = "orders", **fields: Any) -> dict[str, Any]:
    return {"name": name, "deployment": "orders-worker", "triggers": [trigger()], **fields}


def load(*rules: dict[str, Any], defaults: Any = None, **kwargs: Any) -> LoadResult:
    document: dict[str, Any] = {"rules": list(rules)}
    if defaults is not None:
        document["defaults"] = defaults
    return parse_rules_text(yaml.safe_dump(document, sort_keys=False), SOURCE, **kwargs)


def load_one(**fields: Any) -> Rule:
    result = load(rule(**fields))
    assert result.ok, [str(p) for p in result.problems]
    return result.rules[0]


def problem_lines(result: LoadResult) -> list[str]:
    return [str(p) for p in result.problems]


def single_problem(**fields: Any) -> str:
    """The one problem of a file holding one rule with `fields`; the rule must be left out."""
    result = load(rule(**fields))
    assert not result.fatal
    assert result.rules == ()
    assert len(result.problems) == 1, problem_lines(result)
    return str(result.problems[0])


# ---------------------------------------------------------------------------------------------
# Defaults and full rules


def test_minimal_rule_gets_keda_defaults() -> None:
    loaded = load_one()
    assert (loaded.name, loaded.namespace) == ("orders", "default")
    assert loaded.scale_target == ScaleTargetRef("orders-worker", "Deployment", "apps/v1")
    assert (loaded.min_replicas, loaded.max_replicas) == (0, 100)
    assert (loaded.polling_interval, loaded.cooldown_period, loaded.tolerance) == (30, 300, 0.1)
    (only,) = loaded.triggers
    assert only.settings.queue_name == "orders"
    assert (only.target, only.activation) == (5, 0)
    assert only.settings.queue_length_strategy == "all"
    assert (
        only.settings.connection_from_env
        == DEFAULT_CONNECTION_ENV
        == "AZURE_STORAGE_CONNECTION_STRING"
    )
    assert only.label == "orders"
    assert loaded.behavior.scale_up.stabilization_window_seconds == 0
    assert loaded.behavior.scale_up.policies == ()
    assert loaded.behavior.scale_down.stabilization_window_seconds == 300
    assert loaded.behavior.scale_down.select_policy == "Max"
    assert loaded.target == "default/orders-worker"


def test_full_rule_keeps_every_field() -> None:
    loaded = load_one(
        namespace="shop",
        minReplicas=1,
        maxReplicas=20,
        pollingInterval="15s",
        cooldownPeriod="5m",
        tolerance=0.2,
        triggers=[
            trigger(
                name="big-orders",
                queueLength=10,
                activationQueueLength=3,
                queueLengthStrategy="visibleOnly",
                connectionFromEnv="SHOP_QUEUES",
            ),
            trigger(queueName="returns", queueLength=2.5),
        ],
        behavior={
            "scaleUp": {
                "stabilizationWindowSeconds": "1m",
                "selectPolicy": "Min",
                "policies": [
                    {"type": "Pods", "value": 4, "periodSeconds": 15},
                    {"type": "Percent", "value": 100, "periodSeconds": "1m"},
                ],
            },
            "scaleDown": {"selectPolicy": "Disabled"},
        },
    )
    assert loaded.target == "shop/orders-worker"
    assert (loaded.min_replicas, loaded.max_replicas) == (1, 20)
    assert (loaded.polling_interval, loaded.cooldown_period, loaded.tolerance) == (15, 300, 0.2)
    first, second = loaded.triggers
    assert (first.label, first.settings.queue_name, first.target) == ("big-orders", "orders", 10)
    assert (first.activation, first.settings.queue_length_strategy) == (3, "visibleOnly")
    assert first.settings.connection_from_env == "SHOP_QUEUES"
    assert (second.label, second.target) == ("returns", 2.5)
    up, down = loaded.behavior.scale_up, loaded.behavior.scale_down
    assert (up.stabilization_window_seconds, up.select_policy) == (60, "Min")
    assert up.policies == (ScalingPolicy("Pods", 4, 15), ScalingPolicy("Percent", 100, 60))
    # A scaleDown block that leaves the window out still gets the HPA's 300 s.
    assert (down.stabilization_window_seconds, down.select_policy) == (300, "Disabled")


def test_defaults_fill_omitted_fields_and_never_override_set_ones() -> None:
    result = load(
        rule("a"),
        rule("b", pollingInterval=5, namespace="other"),
        defaults={
            "namespace": "shop",
            "pollingInterval": "10s",
            "maxReplicas": 7,
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}},
        },
    )
    assert result.ok, problem_lines(result)
    a, b = result.rules
    assert (a.namespace, a.polling_interval, a.max_replicas) == ("shop", 10, 7)
    assert a.behavior.scale_down.stabilization_window_seconds == 60
    assert (b.namespace, b.polling_interval, b.max_replicas) == ("other", 5, 7)


def test_defaults_may_hold_the_triggers_of_every_rule() -> None:
    result = load(
        {"name": "a", "deployment": "a"},
        {"name": "b", "deployment": "b"},
        defaults={"triggers": [trigger(queueLength=9)]},
    )
    assert result.ok, problem_lines(result)
    assert [r.triggers[0].target for r in result.rules] == [9, 9]


def test_describe_rule_is_one_line_with_the_numbers_that_matter() -> None:
    text = describe_rule(load_one(maxReplicas=20, cooldownPeriod="2m"))
    assert "\n" not in text
    assert text.startswith("orders: default/orders-worker replicas 0..20")
    assert "cooldown 120s" in text and "azure-queue orders (target 5/replica" in text


# ---------------------------------------------------------------------------------------------
# The scale target


def target_rule(**ref: Any) -> dict[str, Any]:
    entry = rule(scaleTargetRef=ref)
    del entry["deployment"]
    return entry


def test_scale_target_ref_defaults_to_an_apps_v1_deployment_like_the_shorthand() -> None:
    (by_ref,) = load(target_rule(name="orders-worker")).rules
    assert by_ref == load_one()  # `deployment: orders-worker` is the same rule
    assert by_ref.target == "default/orders-worker"
    assert by_ref.target_key == ("default", "apps/v1", "Deployment", "orders-worker")
    assert (by_ref.scale_target.group, by_ref.scale_target.version) == ("apps", "v1")


@pytest.mark.parametrize(
    ("ref", "target", "group", "described"),
    [
        ({"kind": "StatefulSet", "name": "db"}, "default/StatefulSet/db", "apps",
         "orders: default/StatefulSet/db (apps/v1) replicas"),
        ({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "web"},
         "default/Rollout/web", "argoproj.io",
         "orders: default/Rollout/web (argoproj.io/v1alpha1) replicas"),
        ({"apiVersion": "v1", "kind": "ReplicationController", "name": "old"},
         "default/ReplicationController/old", "", "orders: default/ReplicationController/old (v1)"),
    ],
)  # fmt: skip
def test_scale_target_ref_of_any_kind(
    ref: dict[str, str], target: str, group: str, described: str
) -> None:
    (loaded,) = load(target_rule(**ref)).rules
    assert (loaded.scale_target.kind, loaded.scale_target.name) == (ref["kind"], ref["name"])
    assert loaded.scale_target.api_version == ref.get("apiVersion", "apps/v1")
    assert (loaded.target, loaded.scale_target.group) == (target, group)
    assert describe_rule(loaded).startswith(described)


def test_target_key_tells_a_statefulset_from_a_deployment_of_the_same_name() -> None:
    (deployment,) = load(target_rule(name="db")).rules
    (statefulset,) = load(target_rule(kind="StatefulSet", name="db")).rules
    (other_group,) = load(
        target_rule(apiVersion="example.com/v1", kind="StatefulSet", name="db")
    ).rules
    keys = {r.target_key for r in (deployment, statefulset, other_group)}
    assert len(keys) == 3


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (rule(scaleTargetRef={"name": "x"}),
         "rules[0] (orders).deployment: give scaleTargetRef or its shorthand deployment, not both"),
        ({"name": "orders", "triggers": [trigger()]},
         "rules[0] (orders).scaleTargetRef: is required (or its shorthand: deployment: NAME)"),
        (target_rule(kind="StatefulSet"), "rules[0] (orders).scaleTargetRef.name: is required"),
        (target_rule(name="Bad_Name"),
         "rules[0] (orders).scaleTargetRef.name: expected an object name"),
        (target_rule(name="x", kind="9lives"),
         "rules[0] (orders).scaleTargetRef.kind: expected a kind like 'Deployment' or "
         "'StatefulSet', got '9lives'"),
        (target_rule(name="x", apiVersion="Apps/V1"),
         "rules[0] (orders).scaleTargetRef.apiVersion: expected an apiVersion like 'apps/v1' or "
         "'argoproj.io/v1alpha1', got 'Apps/V1'"),
        (target_rule(name="x", apiVersion="apps/"),
         "rules[0] (orders).scaleTargetRef.apiVersion: expected an apiVersion"),
        (target_rule(nmae="x"),
         "rules[0] (orders).scaleTargetRef.nmae: unknown field (did you mean 'name'?); "
         "known fields: apiVersion, kind, name"),
        ({**target_rule(), "scaleTargetRef": "db"},
         "rules[0] (orders).scaleTargetRef: expected a mapping, got 'db'"),
    ],
)  # fmt: skip
def test_scale_target_problems_name_the_field(entry: dict[str, Any], expected: str) -> None:
    result = load(entry, rule("other"))
    assert [r.name for r in result.rules] == ["other"]  # the broken rule alone is left out
    assert len(result.problems) == 1, problem_lines(result)
    assert problem_lines(result)[0].startswith(f"rules.yaml: {expected}")


def test_every_wrong_field_of_a_scale_target_ref_is_reported() -> None:
    result = load(target_rule(kind="9", apiVersion="/v1"))
    fields = sorted(p.field for p in result.problems)
    assert fields == ["scaleTargetRef.apiVersion", "scaleTargetRef.kind", "scaleTargetRef.name"]


# ---------------------------------------------------------------------------------------------
# Durations and choices


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (30, 30.0),
        (1.5, 1.5),
        ("30", 30.0),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        (" 2m ", 120.0),
        (0, 0.0),
    ],
)
def test_parse_duration_accepts_numbers_and_unit_strings(value: Any, seconds: float) -> None:
    assert parse_duration(value, "cooldownPeriod") == seconds


@pytest.mark.parametrize(
    "value",
    ["ten", "5 m", "1h30", "5m later", "", "-5", -1, True, None, [30], float("nan"), float("inf")],
)
def test_parse_duration_rejects_what_is_not_a_duration(value: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_duration(value, "cooldownPeriod")
    assert caught.value.field == "cooldownPeriod"
    assert "expected a duration" in caught.value.message
    assert repr(value)[:20] in caught.value.message


def test_polling_interval_must_be_more_than_zero_but_cooldown_may_be_zero() -> None:
    assert load_one(cooldownPeriod=0).cooldown_period == 0
    assert single_problem(pollingInterval="0s") == (
        "rules.yaml: rules[0] (orders).pollingInterval: "
        "expected a duration of more than zero seconds, got '0s'"
    )


@pytest.mark.parametrize(
    ("written", "canonical"),
    [("visibleonly", "visibleOnly"), ("VISIBLEONLY", "visibleOnly"), ("All", "all")],
)
def test_queue_length_strategy_is_case_insensitive(written: str, canonical: str) -> None:
    loaded = load_one(triggers=[trigger(queueLengthStrategy=written)])
    assert loaded.triggers[0].settings.queue_length_strategy == canonical


def test_unknown_queue_length_strategy_lists_the_choices() -> None:
    assert single_problem(triggers=[trigger(queueLengthStrategy="newest")]) == (
        "rules.yaml: rules[0] (orders).triggers[0].queueLengthStrategy: "
        "expected 'all' or 'visibleOnly', got 'newest'"
    )


def test_behavior_choices_are_case_insensitive() -> None:
    loaded = load_one(
        behavior={
            "scaleDown": {
                "selectPolicy": "min",
                "policies": [{"type": "percent", "value": 10, "periodSeconds": 60}],
            }
        }
    )
    assert loaded.behavior.scale_down.select_policy == "Min"
    assert loaded.behavior.scale_down.policies == (ScalingPolicy("Percent", 10, 60),)


# ---------------------------------------------------------------------------------------------
# Unknown keys


@pytest.mark.parametrize(
    ("fields", "location", "hint"),
    [
        ({"minReplica": 1}, "minReplica", "minReplicas"),
        ({"triggers": [trigger(queueLenght=3)]}, "triggers[0].queueLenght", "queueLength"),
        ({"behavior": {"scaledown": {}}}, "behavior.scaledown", "scaleDown"),
        (
            {"behavior": {"scaleUp": {"policies": [{"type": "Pods", "value": 1, "period": 15}]}}},
            "behavior.scaleUp.policies[0].period",
            "periodSeconds",
        ),
    ],
)
def test_unknown_keys_are_errors_with_a_did_you_mean_hint(
    fields: dict[str, Any], location: str, hint: str
) -> None:
    line = single_problem(**fields)
    assert line.startswith(f"rules.yaml: rules[0] (orders).{location}: unknown field")
    assert f"(did you mean '{hint}'?)" in line


def test_unknown_key_without_a_close_match_lists_the_known_fields() -> None:
    line = single_problem(zzz=1)
    assert "did you mean" not in line
    assert "known fields: activePollingInterval, behavior, cooldownPeriod, deployment" in line


def test_unknown_top_level_key_is_fatal_with_a_hint() -> None:
    result = parse_rules_text("rule:\n  - name: a\n", SOURCE)
    assert result.fatal
    assert problem_lines(result) == [
        "rules.yaml: rule: unknown field (did you mean 'rules'?); known fields: defaults, rules"
    ]


def test_unknown_key_in_defaults_is_fatal_and_named_once() -> None:
    result = load(rule(), defaults={"pollingIntervall": 5})
    assert result.fatal
    assert result.rules == ()
    (line,) = problem_lines(result)
    assert line.startswith("rules.yaml: defaults.pollingIntervall: unknown field")
    assert "(did you mean 'pollingInterval'?)" in line


@pytest.mark.parametrize("key", ["name", "deployment", "scaleTargetRef"])
def test_defaults_may_not_hold_name_or_deployment(key: str) -> None:
    result = load(rule(), defaults={key: "x"})
    assert result.fatal
    assert problem_lines(result)[0].startswith(f"rules.yaml: defaults.{key}: unknown field")


# ---------------------------------------------------------------------------------------------
# Per-rule errors


def test_error_names_file_rule_index_and_name_field_expected_and_found() -> None:
    bad = rule("hello-keda", triggers=[trigger(queueLength="ten")])
    result = load(rule("first"), rule("second"), bad)
    assert not result.fatal
    assert problem_lines(result) == [
        "rules.yaml: rules[2] (hello-keda).triggers[0].queueLength: "
        "expected a positive number, got 'ten'"
    ]
    problem = result.problems[0]
    assert (problem.where, problem.field) == ("rules[2] (hello-keda)", "triggers[0].queueLength")
    assert problem.rule_name == "hello-keda"


def test_bad_rule_is_left_out_and_the_others_load() -> None:
    result = load(rule("a"), rule("b", maxReplicas=-1), rule("c"))
    assert not result.fatal and not result.ok
    assert [r.name for r in result.rules] == ["a", "c"]
    assert result.rejected_rule_names() == {"b"}


def test_every_wrong_field_of_a_rule_is_reported() -> None:
    result = load(rule(minReplicas="two", triggers=[trigger(queueLength=0, queueName="Q")]))
    fields = sorted(p.field for p in result.problems)
    assert fields == ["minReplicas", "triggers[0].queueLength", "triggers[0].queueName"]
    assert result.rules == ()


def test_rule_without_a_name_is_named_by_index_only() -> None:
    result = load({"deployment": "d", "triggers": [trigger()]})
    assert problem_lines(result) == ["rules.yaml: rules[0].name: is required"]
    assert result.rejected_rule_names() == set()


def test_rule_that_is_not_a_mapping_is_reported_and_skipped() -> None:
    result = load(rule("a"), "just text")
    assert [r.name for r in result.rules] == ["a"]
    assert problem_lines(result) == ["rules.yaml: rules[1]: expected a mapping, got 'just text'"]


def test_duplicate_rule_name_keeps_the_first() -> None:
    result = load(rule("a", maxReplicas=3), rule("a", maxReplicas=9))
    assert [(r.name, r.max_replicas) for r in result.rules] == [("a", 3)]
    assert problem_lines(result) == ["rules.yaml: rules[1] (a).name: duplicate rule name 'a'"]
    # The name still runs (its first rule), so it is not reported as rejected.
    assert result.rejected_rule_names() == set()


def test_duplicate_trigger_names_are_rejected_and_default_ones_numbered() -> None:
    named = [trigger(name="orders"), trigger(name="orders", queueLength=2)]
    line = single_problem(triggers=named)
    assert line == "rules.yaml: rules[0] (orders).triggers[1].name: duplicate trigger name 'orders'"
    # Two triggers on one queue, as KEDA allows, named by default: the second is numbered, and a
    # default name never takes one written elsewhere in the rule.
    text = yaml.safe_dump(
        {
            "rules": [
                {
                    "name": "r",
                    "deployment": "d",
                    "triggers": [
                        trigger(),
                        trigger(queueLength=2),
                        trigger(queueName="returns", name="orders-2"),
                    ],
                }
            ]
        }
    )
    (rule,) = parse_rules_text(text, "rules.yaml").rules
    assert [t.name for t in rule.triggers] == ["orders", "orders-3", "orders-2"]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"deployment": None}, "deployment: is required"),
        ({"deployment": "Orders_Worker"}, "deployment: expected a Deployment name"),
        ({"namespace": "Shop"}, "namespace: expected a Kubernetes namespace name, got 'Shop'"),
        ({"name": "has space"}, "name: expected a rule name"),
        ({"triggers": []}, "triggers: expected a non-empty list, got []"),
        ({"triggers": None}, "triggers: is required"),
        (
            {"triggers": [trigger(type="azure-queues")]},
            "triggers[0].type: unknown trigger type 'azure-queues' (did you mean 'azure-queue'?)",
        ),
        ({"triggers": [{"type": "azure-queue"}]}, "triggers[0].queueName: is required"),
        ({"triggers": [trigger(queueName="Orders_1")]}, "triggers[0].queueName: expected an Azure"),
        ({"triggers": [trigger(queueName="ab")]}, "triggers[0].queueName: expected an Azure"),
        ({"triggers": [trigger(queueLength=0)]}, "queueLength: expected a positive number, got 0"),
        (
            {"triggers": [trigger(activationQueueLength=-1)]},
            "activationQueueLength: expected a number >= 0, got -1",
        ),
        (
            {"triggers": [trigger(connectionFromEnv="1BAD")]},
            "connectionFromEnv: expected the name of an environment variable",
        ),
        ({"minReplicas": 1.5}, "minReplicas: expected a whole number >= 0, got 1.5"),
        ({"minReplicas": True}, "minReplicas: expected a whole number >= 0, got True"),
        ({"maxReplicas": 0}, "maxReplicas: expected a whole number >= 1, got 0"),
        (
            {"minReplicas": 5, "maxReplicas": 2},
            "minReplicas: must not exceed maxReplicas (2), got 5",
        ),
        ({"tolerance": -0.1}, "tolerance: expected a number >= 0, got -0.1"),
    ],
)
def test_field_checks(fields: dict[str, Any], expected: str) -> None:
    line = single_problem(**fields)
    assert line.startswith("rules.yaml: rules[0]")
    assert expected in line


def test_whole_float_replica_counts_are_accepted_as_ints() -> None:
    loaded = load_one(minReplicas=2.0, maxReplicas=4)
    assert loaded.min_replicas == 2 and isinstance(loaded.min_replicas, int)


@pytest.mark.parametrize(
    ("scaling", "expected"),
    [
        ({"stabilizationWindowSeconds": 3601}, "stabilizationWindowSeconds: expected at most 3600"),
        ({"selectPolicy": "Fastest"}, "selectPolicy: expected 'Max' or 'Min' or 'Disabled'"),
        ({"policies": {"type": "Pods"}}, "policies: expected a list"),
        ({"policies": [{"type": "Jobs", "value": 1, "periodSeconds": 15}]}, "policies[0].type"),
        (
            {"policies": [{"type": "Pods", "value": 0, "periodSeconds": 15}]},
            "value: expected a whole",
        ),
        (
            {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 0}]},
            "more than zero seconds",
        ),
        ({"policies": [{"type": "Pods", "value": 1, "periodSeconds": 1801}]}, "at most 1800"),
        ({"policies": [{"type": "Pods", "value": 1}]}, "policies[0].periodSeconds: is required"),
    ],
)
def test_behavior_checks(scaling: dict[str, Any], expected: str) -> None:
    line = single_problem(behavior={"scaleDown": scaling})
    assert line.startswith("rules.yaml: rules[0] (orders).behavior.scaleDown.")
    assert expected in line


# ---------------------------------------------------------------------------------------------
# File-level problems: fatal


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rules: [a, b\n", "rules.yaml: not valid YAML at line"),
        ("", "rules.yaml: the file is empty"),
        ("# only a comment\n", "rules.yaml: the file is empty"),
        ("- name: a\n", "rules.yaml: expected a mapping, got [{'name': 'a'}]"),
        ("defaults: {}\n", "rules.yaml: rules: expected a list of rules, got None"),
        ("rules: {name: a}\n", "rules.yaml: rules: expected a list of rules"),
        ("rules: []\ndefaults: 5\n", "rules.yaml: defaults: expected a mapping, got 5"),
        ("rules: []\ndefaults: {pollingInterval: soon}\n", "rules.yaml: defaults.pollingInterval:"),
        ("rules: []\ndefaults: {namespace: Bad_NS}\n", "rules.yaml: defaults.namespace: expected"),
        ("rules: []\ndefaults: {triggers: []}\n", "rules.yaml: defaults.triggers: expected a non"),
        (
            "rules: []\ndefaults: {triggers: [{type: azure-queue, queueName: a}]}\n",
            "rules.yaml: defaults.triggers[0].queueName: expected an Azure queue name",
        ),
        (
            "rules: []\ndefaults: {behavior: {scaleUp: {selectPolicy: Fast}}}\n",
            "rules.yaml: defaults.behavior.scaleUp.selectPolicy:",
        ),
        ("rules: !!python/object/apply:os.getcwd []\n", "rules.yaml: not valid YAML"),
        ("rules:\n  - cooldownPeriod: 2020-13-45\n", "rules.yaml: not valid YAML"),
        ("rules: !!int many\n", "rules.yaml: not valid YAML"),
        ("rules: " + "[" * 1000 + "]" * 1000 + "\n", "rules.yaml: not valid YAML"),
    ],
)
def test_file_level_problems_are_fatal(text: str, expected: str) -> None:
    result = parse_rules_text(text, SOURCE)
    assert result.fatal
    assert result.rules == ()
    assert len(result.problems) == 1
    assert str(result.problems[0]).startswith(expected)


YAML_SHAPES = [
    "rules:\n  - {name: a, deployment: a}\n  - name: b\n    minReplicas: 2\n",
    # Anchors, aliases and merge keys across rules, and a rule that is an alias of another.
    "base: &base {minReplicas: 1, triggers: [{type: azure-queue, queueName: q}]}\n"
    "rules:\n  - &one {name: one, deployment: one, <<: *base}\n"
    "  - {name: two, deployment: two, <<: *base}\n  - *one\n",
    "rules: [[1, [2, [3]]], {a: {b: [c, {d: e}]}}, 'text', 4.5, null, 2024-01-02]\n",
    "defaults: {namespace: shop}\nrules: []\n",
    "- a\n- [b, c]\n",
]


@pytest.mark.parametrize("text", YAML_SHAPES)
@pytest.mark.parametrize("libyaml", [True, False])
def test_the_rule_file_loader_reads_what_safe_load_reads(
    text: str, libyaml: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Item by item, with libyaml's parser or without it: the same data as yaml.safe_load's.
    monkeypatch.setattr(yaml, "__with_libyaml__", libyaml and yaml.__with_libyaml__)
    loader = config_module._safe_loader()
    assert yaml.load(text, Loader=loader) == yaml.safe_load(text)


def test_bad_default_fails_the_file_even_when_every_rule_overrides_it() -> None:
    result = load(rule(pollingInterval=5), defaults={"pollingInterval": -5})
    assert result.fatal and result.rules == ()


def test_load_rules_reads_the_file_and_names_it(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"rules": [rule("a"), rule("b", minReplicas=-1)]}))
    result = load_rules(path)
    assert result.source == str(path)
    assert [r.name for r in result.rules] == ["a"]
    assert problem_lines(result)[0].startswith(f"{path}: rules[1] (b).minReplicas: ")


@pytest.mark.parametrize("kind", ["missing", "directory", "not-utf8"])
def test_unreadable_file_is_fatal(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "rules.yaml"
    if kind == "directory":
        path.mkdir()
    elif kind == "not-utf8":
        path.write_bytes(b"rules: []\n# \xff\xfe\n")
    result = load_rules(path)
    assert result.fatal and result.rules == ()
    (line,) = problem_lines(result)
    assert line.startswith(f"{path}: cannot read the rule file: ")


def test_empty_rules_list_is_not_a_problem() -> None:
    result = parse_rules_text("rules: []\n", SOURCE)
    assert result.ok and not result.fatal and result.rules == ()


# ---------------------------------------------------------------------------------------------
# Content that used to crash the loader


@pytest.mark.parametrize("field", ["tolerance", "pollingInterval", "cooldownPeriod"])
def test_integer_too_large_for_a_float_is_a_problem_not_a_crash(field: str) -> None:
    text = f"rules:\n  - name: a\n    deployment: a\n    {field}: {'9' * 400}\n" + (
        "    triggers: [{type: azure-queue, queueName: orders}]\n"
    )
    result = parse_rules_text(text, SOURCE)
    assert not result.fatal and result.rules == ()
    assert [p.field for p in result.problems] == [field]


@pytest.mark.parametrize("field", ["name", "namespace", "deployment"])
def test_name_with_a_trailing_newline_is_rejected(field: str) -> None:
    # `name: |` in YAML keeps the newline; `$` in a regex would still match before it.
    line = single_problem(**{field: "orders\n"})
    assert f".{field}: expected" in line


# ---------------------------------------------------------------------------------------------
# Namespace allow-list


def test_namespace_allow_list_keeps_rules_inside_it() -> None:
    result = load(rule("a", namespace="shop"), rule("b"), allowed_namespaces={"shop", "default"})
    assert result.ok and [r.name for r in result.rules] == ["a", "b"]


def test_namespace_allow_list_rejects_rules_outside_it_clearly() -> None:
    result = load(rule("a", namespace="shop"), rule("b"), allowed_namespaces={"shop", "billing"})
    assert [r.name for r in result.rules] == ["a"]
    assert problem_lines(result) == [
        "rules.yaml: rules[1] (b).namespace: "
        "namespace 'default' is not in this autoscaler's allow-list (billing, shop)"
    ]


def test_empty_allow_list_rejects_everything() -> None:
    result = load(rule(namespace="shop"), allowed_namespaces=set())
    assert result.rules == ()
    assert "allow-list (none)" in problem_lines(result)[0]


# ---------------------------------------------------------------------------------------------
# Reloads


def test_rules_in_force_keeps_last_good_version_of_a_rejected_rule() -> None:
    before = load(rule("a", maxReplicas=3), rule("b"), rule("gone"))
    previous = {r.name: r for r in before.rules}
    after = load(rule("a", maxReplicas="lots"), rule("b", maxReplicas=9), rule("new"))
    in_force = rules_in_force(previous, after)
    assert sorted(in_force) == ["a", "b", "new"]
    assert in_force["a"] is previous["a"]
    assert in_force["b"].max_replicas == 9


def test_rules_in_force_keeps_everything_after_a_fatal_load() -> None:
    previous = {r.name: r for r in load(rule("a")).rules}
    assert rules_in_force(previous, parse_rules_text("rules: [", SOURCE)) == previous


# ---------------------------------------------------------------------------------------------
# The example file


def test_config_example_loads_without_problems() -> None:
    example = REPO_ROOT / "config.example.yaml"
    if not example.exists():
        pytest.skip("config.example.yaml is not written yet")
    result = load_rules(example)
    assert not result.fatal
    assert result.ok, problem_lines(result)
    assert result.rules


def test_an_alias_bomb_is_rejected_quickly() -> None:
    """Aliases shared 10^8 times are walked once, not expanded (libyaml builds them shared)."""
    import time

    levels = "abcdefgh"
    lines = ["rules:", "  - name: x", "    deployment: x", "    triggers:", "      - &a [x, x, x]"]
    for prev, name in zip(levels, levels[1:], strict=False):
        lines.append(f"      - &{name} [{', '.join(['*' + prev] * 10)}]")
    started = time.monotonic()
    result = parse_rules_text("\n".join(lines) + "\n", "bomb.yaml")
    assert time.monotonic() - started < 2
    assert result.problems and not result.rules


def test_a_problem_cannot_forge_a_log_line() -> None:
    text = 'rules:\n  - name: "ok\\nERROR forged line"\n    deployment: x\n    "bad\\nkey": 1\n'
    result = parse_rules_text(text, "rules.yaml")
    assert result.problems
    for problem in result.problems:
        assert "\n" not in str(problem) and "\\n" in str(problem)
