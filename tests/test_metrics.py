"""Prometheus metrics from outcomes and reloads (eventscaler/metrics.py), on a private registry.

Scenarios covered:
- an Outcome sets queue length per trigger, current and desired replicas, active, paused and
  fallback flags, the last successful poll time, and observes the tick duration
- scale writes counted by direction and outcome (success, failure, dry_run); a hold counts none
- failed reads counted per trigger and kind ("other" when the kind is unknown), rule errors per
  kind, and an errored tick does not move the last successful poll
- rules_changed counts the rules in force and removes every gauge series of a gone rule (its
  queue lengths included) while other rules keep theirs; removing a rule never seen is harmless
- reload_failed counts, leadership sets 1 or 0
- the rule labels name the target's kind and name (target_kind, target): a StatefulSet and a
  Deployment of the same name are two series; no `deployment` label any more
- the exposition carries no queue URL, account or connection string
- dropped events are counted by cause, every cause's series present at 0 from the start
"""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from eventscaler.config import Rule, ScaleTargetRef
from eventscaler.engine import FAILED_SOURCE_READ, FAILED_WRITE, Outcome
from eventscaler.metrics import Metrics
from eventscaler.policy import (
    STEP_AT_TARGET,
    STEP_FALLBACK,
    STEP_PAUSED,
    STEP_UP,
    Decision,
    Reading,
    initial_state,
)
from eventscaler.sources.azure_queue import azure_queue_trigger


def make_rule(name: str = "orders") -> Rule:
    return Rule(name, "shop", ScaleTargetRef(f"{name}-worker"), (azure_queue_trigger("orders"),))


def labels(rule: Rule, **extra: str) -> dict[str, str]:
    ref = rule.scale_target
    return {"rule": rule.name, "namespace": rule.namespace, "target_kind": ref.kind,
            "target": ref.name, **extra}  # fmt: skip


def decision(current: int, target: int, step: str = STEP_UP, active: bool = True) -> Decision:
    return Decision(current, target, active, "why", initial_state(0.0), step)


def value(metrics: Metrics, name: str, **sample_labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, sample_labels)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def test_an_outcome_sets_the_rule_gauges(metrics: Metrics) -> None:
    rule = make_rule()
    metrics.observe(
        Outcome(
            rule,
            readings=(Reading("orders", 42), Reading("returns", 0)),
            current=2,
            decision=decision(2, 9),
            wrote=True,
            duration=0.03,
            finished_at=1_700_000_000.0,
        )
    )
    at = labels(rule)
    assert value(metrics, "eventscaler_queue_length_messages", **at, trigger="orders") == 42
    assert value(metrics, "eventscaler_queue_length_messages", **at, trigger="returns") == 0
    assert value(metrics, "eventscaler_current_replicas", **at) == 2
    assert value(metrics, "eventscaler_desired_replicas", **at) == 9
    assert value(metrics, "eventscaler_rule_active", **at) == 1
    assert value(metrics, "eventscaler_rule_paused", **at) == 0
    assert value(metrics, "eventscaler_rule_fallback_active", **at) == 0
    assert value(metrics, "eventscaler_last_successful_poll_timestamp_seconds", **at) == (
        1_700_000_000.0
    )
    assert value(metrics, "eventscaler_tick_duration_seconds_count") == 1
    assert value(metrics, "eventscaler_tick_duration_seconds_sum") == pytest.approx(0.03)
    assert value(metrics, "eventscaler_tick_duration_seconds_bucket", le="0.05") == 1
    assert value(metrics, "eventscaler_tick_duration_seconds_bucket", le="0.025") == 0


def test_paused_and_fallback_flags_follow_the_step(metrics: Metrics) -> None:
    rule = make_rule()
    at = labels(rule)
    metrics.observe(Outcome(rule, current=3, decision=decision(3, 3, STEP_PAUSED, False)))
    assert value(metrics, "eventscaler_rule_paused", **at) == 1
    assert value(metrics, "eventscaler_rule_active", **at) == 0
    metrics.observe(Outcome(rule, current=3, decision=decision(3, 5, STEP_FALLBACK)))
    assert value(metrics, "eventscaler_rule_paused", **at) == 0
    assert value(metrics, "eventscaler_rule_fallback_active", **at) == 1
    metrics.observe(Outcome(rule, current=5, decision=decision(5, 5, STEP_AT_TARGET)))
    assert value(metrics, "eventscaler_rule_fallback_active", **at) == 0


def test_scale_operations_by_direction_and_outcome(metrics: Metrics) -> None:
    rule = make_rule()
    name = "eventscaler_scale_operations_total"
    metrics.observe(Outcome(rule, current=1, decision=decision(1, 4), wrote=True))
    metrics.observe(Outcome(rule, current=4, decision=decision(4, 4, STEP_AT_TARGET)))  # a hold
    metrics.observe(
        Outcome(rule, current=4, decision=decision(4, 2), error="x", error_kind=FAILED_WRITE)
    )
    metrics.observe(Outcome(rule, current=4, decision=decision(4, 8), dry_run=True))
    metrics.observe(Outcome(rule, current=4, decision=decision(4, 8), dry_run=True))
    at = labels(rule)
    assert value(metrics, name, **at, direction="up", outcome="success") == 1
    assert value(metrics, name, **at, direction="down", outcome="failure") == 1
    assert value(metrics, name, **at, direction="up", outcome="dry_run") == 2
    assert value(metrics, name, **at, direction="up", outcome="failure") is None
    assert value(metrics, name, **at, direction="hold", outcome="success") is None


def test_failed_reads_and_rule_errors_are_counted_by_kind(metrics: Metrics) -> None:
    rule = make_rule()
    at = labels(rule)
    good = Outcome(rule, readings=(Reading("orders", 7),), current=1,
                   decision=decision(1, 1, STEP_AT_TARGET), finished_at=1000.0)  # fmt: skip
    metrics.observe(good)
    failing = Outcome(
        rule,
        readings=(Reading("orders", None, "gone", "QueueNotFound"), Reading("returns", None, "?")),
        current=1,
        decision=decision(1, 1, "failed-readings"),
        error="queue read failed",
        error_kind=FAILED_SOURCE_READ,
        finished_at=2000.0,
    )
    metrics.observe(failing)
    metrics.observe(failing)
    errors = "eventscaler_source_errors_total"
    assert value(metrics, errors, **at, trigger="orders", kind="QueueNotFound") == 2
    assert value(metrics, errors, **at, trigger="returns", kind="other") == 2
    assert value(metrics, "eventscaler_rule_errors_total", **at, kind=FAILED_SOURCE_READ) == 2
    assert value(metrics, "eventscaler_last_successful_poll_timestamp_seconds", **at) == 1000.0
    # The last length read stays; the error counter says the reading is failing.
    assert value(metrics, "eventscaler_queue_length_messages", **at, trigger="orders") == 7


def test_an_outcome_without_a_decision_sets_no_decision_gauges(metrics: Metrics) -> None:
    rule = make_rule()
    metrics.observe(
        Outcome(rule, error="cannot read the target Deployment", error_kind="target-read")
    )
    at = labels(rule)
    assert value(metrics, "eventscaler_desired_replicas", **at) is None
    assert value(metrics, "eventscaler_current_replicas", **at) is None
    assert value(metrics, "eventscaler_rule_errors_total", **at, kind="target-read") == 1


def test_rules_changed_removes_the_series_of_gone_rules_only(metrics: Metrics) -> None:
    orders, returns = make_rule("orders"), make_rule("returns")
    for rule in (orders, returns):
        metrics.observe(
            Outcome(
                rule,
                readings=(Reading("a", 1), Reading("b", 2)),
                current=1,
                decision=decision(1, 1, STEP_AT_TARGET),
            )
        )
    metrics.rules_changed({"returns"}, {("orders", "shop", "Deployment", "orders-worker")})
    assert value(metrics, "eventscaler_rules_loaded") == 1
    gauges = [
        "eventscaler_desired_replicas",
        "eventscaler_current_replicas",
        "eventscaler_rule_active",
        "eventscaler_rule_paused",
        "eventscaler_rule_fallback_active",
        "eventscaler_last_successful_poll_timestamp_seconds",
    ]
    for name in gauges:
        assert value(metrics, name, **labels(orders)) is None, name
        assert value(metrics, name, **labels(returns)) is not None, name
    for trigger in ("a", "b"):
        length = "eventscaler_queue_length_messages"
        assert value(metrics, length, **labels(orders), trigger=trigger) is None
        assert value(metrics, length, **labels(returns), trigger=trigger) is not None
    text = metrics.exposition().decode()
    assert 'rule="orders"' not in text
    assert 'rule="returns"' in text


def test_a_rule_that_comes_back_gets_its_series_again(metrics: Metrics) -> None:
    rule = make_rule()
    metrics.observe(Outcome(rule, readings=(Reading("a", 1),), current=1))
    metrics.rules_changed(set(), {("orders", "shop", "Deployment", "orders-worker")})
    metrics.observe(Outcome(rule, readings=(Reading("a", 5),), current=2))
    assert value(metrics, "eventscaler_queue_length_messages", **labels(rule), trigger="a") == 5
    metrics.rules_changed(set(), {("orders", "shop", "Deployment", "orders-worker")})
    assert value(metrics, "eventscaler_queue_length_messages", **labels(rule), trigger="a") is None


def test_removing_a_rule_never_observed_is_harmless(metrics: Metrics) -> None:
    metrics.rules_changed({"a", "b", "c"}, {("never", "seen", "Deployment", "before")})
    assert value(metrics, "eventscaler_rules_loaded") == 3


def test_reload_failures_and_leadership(metrics: Metrics) -> None:
    assert value(metrics, "eventscaler_config_reload_failures_total") == 0
    metrics.reload_failed()
    metrics.reload_failed()
    assert value(metrics, "eventscaler_config_reload_failures_total") == 2
    metrics.leadership(True)
    assert value(metrics, "eventscaler_leader") == 1
    metrics.leadership(False)
    assert value(metrics, "eventscaler_leader") == 0


def test_no_queue_url_account_or_secret_in_the_exposition(metrics: Metrics) -> None:
    rule = Rule(
        "orders",
        "shop",
        ScaleTargetRef("worker"),
        (azure_queue_trigger("orders", account_name="secretacct", connection_from_env=""),),
    )
    metrics.observe(Outcome(rule, readings=(Reading("orders", 3),), current=1))
    text = metrics.exposition().decode()
    assert "eventscaler_queue_length_messages{" in text
    for leak in ("secretacct", "queue.core.windows.net", "AccountKey", "http"):
        assert leak not in text


def test_the_labels_name_the_targets_kind_and_name(metrics: Metrics) -> None:
    deployment = make_rule("web")
    statefulset = Rule("db", "shop", ScaleTargetRef("web-worker", "StatefulSet"),
                       (azure_queue_trigger("orders"),))  # fmt: skip
    for rule, current in ((deployment, 2), (statefulset, 5)):
        metrics.observe(Outcome(rule, current=current))
    at = {"namespace": "shop", "target": "web-worker"}
    assert value(metrics, "eventscaler_current_replicas", rule="web", target_kind="Deployment",
                 **at) == 2  # fmt: skip
    assert value(metrics, "eventscaler_current_replicas", rule="db", target_kind="StatefulSet",
                 **at) == 5  # fmt: skip
    text = metrics.exposition().decode()
    assert 'target_kind="StatefulSet"' in text and "deployment=" not in text
    metrics.rules_changed({"web"}, {("db", "shop", "StatefulSet", "web-worker")})
    assert value(metrics, "eventscaler_current_replicas", **labels(statefulset)) is None
    assert value(metrics, "eventscaler_current_replicas", **labels(deployment)) == 2


def test_dropped_events_are_counted_by_cause_from_zero(metrics: Metrics) -> None:
    name = "eventscaler_events_dropped_total"
    for cause in ("queue-full", "shutdown", "send-failed"):
        assert value(metrics, name, cause=cause) == 0  # alertable before the first drop
    metrics.event_dropped("queue-full")
    metrics.event_dropped("queue-full")
    metrics.event_dropped("shutdown")
    assert value(metrics, name, cause="queue-full") == 2
    assert value(metrics, name, cause="shutdown") == 1
    assert value(metrics, name, cause="send-failed") == 0
