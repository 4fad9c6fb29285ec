"""Prometheus metrics, served on the health port's /metrics. The only prometheus_client import.

Labels are rule, namespace, target_kind, target (the scale target's kind and name), and trigger,
direction, outcome, kind where they apply; never a queue URL, account or connection string. A
rule's gauges are removed when the rule goes; its counters stay, as counters should (a rate over
them ends by itself).
"""

from __future__ import annotations

import contextlib
import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from eventscaler.daemon import ReloadListener
from eventscaler.engine import Outcome
from eventscaler.events import DROP_CAUSES

RULE_LABELS = ("rule", "namespace", "target_kind", "target")
CONTENT_TYPE = CONTENT_TYPE_LATEST


# The declarations below are one metric each, kept on as few lines as reads well.
# fmt: off
class Metrics(ReloadListener):
    """Every metric the daemon exports; an engine observer, and told about reloads."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        per_rule, per_trigger = RULE_LABELS, (*RULE_LABELS, "trigger")
        self.trigger_value = Gauge("eventscaler_trigger_value",
            "Last value read, per trigger: messages, lag, a query's result.", per_trigger,
            registry=r)
        # The name before sources became plug-ins, kept for one release (README: metrics).
        self.queue_length = Gauge("eventscaler_queue_length_messages",
            "Deprecated: the same as eventscaler_trigger_value; removed in the next release.",
            per_trigger, registry=r)
        self.desired = Gauge("eventscaler_desired_replicas",
            "Replicas the last decision asked for.", per_rule, registry=r)
        self.current = Gauge("eventscaler_current_replicas",
            "Replicas the target had at the last tick.", per_rule, registry=r)
        self.active = Gauge("eventscaler_rule_active",
            "1 when some trigger is above its activation threshold.", per_rule, registry=r)
        self.paused = Gauge("eventscaler_rule_paused",
            "1 while a pause annotation holds the target.", per_rule, registry=r)
        self.fallback = Gauge("eventscaler_rule_fallback_active",
            "1 while the rule runs its fallback replicas.", per_rule, registry=r)
        self.last_success = Gauge("eventscaler_last_successful_poll_timestamp_seconds",
            "Unix time of the rule's last tick with every reading and call successful.",
            per_rule, registry=r)
        self._counters(r)
        self._process_metrics(r)
        self._triggers: dict[str, set[str]] = {}  # rule -> trigger labels seen, for removal
        self._lock = threading.Lock()

    def _counters(self, r: CollectorRegistry) -> None:
        self.scale_operations = Counter("eventscaler_scale_operations_total",
            "Scale writes by direction (up/down) and outcome (success/failure/dry_run).",
            (*RULE_LABELS, "direction", "outcome"), registry=r)
        self.source_errors = Counter("eventscaler_source_errors_total",
            "Failed source reads by trigger and kind (NotFound, Timeout, Unauthorized...).",
            (*RULE_LABELS, "trigger", "kind"), registry=r)
        self.rule_errors = Counter("eventscaler_rule_errors_total",
            "Ticks that could not do all they should, by kind (target-read, source-read...).",
            (*RULE_LABELS, "kind"), registry=r)
        self.events_dropped = Counter("eventscaler_events_dropped_total",
            "Events not sent, by cause: queue-full (the event queue was full), shutdown (still "
            "queued when the flush time was up), send-failed (the API refused or failed).",
            ("cause",), registry=r)
        for cause in DROP_CAUSES:  # every series from the start, at 0, for alerts on increase()
            self.events_dropped.labels(cause)

    def _process_metrics(self, r: CollectorRegistry) -> None:
        self.decision_duration = Histogram("eventscaler_tick_duration_seconds",
            "Time one tick of one rule takes: source reads, target read, decision, write.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=r)
        self.rules_loaded = Gauge("eventscaler_rules_loaded", "Rules in force.", registry=r)
        self.reload_failures = Counter("eventscaler_config_reload_failures_total",
            "Rule file loads with problems (the last good rules stay in force).", registry=r)
        self.is_leader = Gauge("eventscaler_leader",
            "1 when this replica may scale (leader, or no election).", registry=r)

    # fmt: on
    def observe(self, outcome: Outcome) -> None:
        rule = outcome.rule
        labels = (rule.name, rule.namespace, rule.scale_target.kind, rule.scale_target.name)
        self.decision_duration.observe(outcome.duration)
        for reading in outcome.readings:
            with self._lock:
                self._triggers.setdefault(rule.name, set()).add(reading.trigger)
            if reading.value is not None:
                self.trigger_value.labels(*labels, reading.trigger).set(reading.value)
                self.queue_length.labels(*labels, reading.trigger).set(reading.value)
            else:
                self.source_errors.labels(*labels, reading.trigger, reading.kind or "other").inc()
        if outcome.current is not None:
            self.current.labels(*labels).set(outcome.current)
        decision = outcome.decision
        if decision is not None:
            self.desired.labels(*labels).set(decision.target)
            self.active.labels(*labels).set(1 if decision.active else 0)
            self.paused.labels(*labels).set(1 if decision.step == "paused" else 0)
            self.fallback.labels(*labels).set(1 if decision.step == "fallback" else 0)
            if decision.changes:
                result = "success" if outcome.wrote else "failure"
                result = "dry_run" if outcome.dry_run else result
                self.scale_operations.labels(*labels, decision.direction, result).inc()
        if outcome.error_kind:
            self.rule_errors.labels(*labels, outcome.error_kind).inc()
        else:
            self.last_success.labels(*labels).set(outcome.finished_at)

    def rules_changed(self, names: set[str], gone: set[tuple[str, ...]]) -> None:
        """After a reload: count the rules, forget the series of rules that are gone."""
        self.rules_loaded.set(len(names))
        for labels in gone:
            for metric in (self.desired, self.current, self.active, self.paused, self.fallback,
                           self.last_success):  # fmt: skip
                _remove(metric, labels)
            with self._lock:
                triggers = self._triggers.pop(labels[0], set())
            for trigger in triggers:
                _remove(self.trigger_value, (*labels, trigger))
                _remove(self.queue_length, (*labels, trigger))

    def event_dropped(self, cause: str) -> None:
        self.events_dropped.labels(cause).inc()

    def reload_failed(self) -> None:
        self.reload_failures.inc()

    def leadership(self, is_leader: bool) -> None:
        self.is_leader.set(1 if is_leader else 0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _remove(metric: Gauge, labels: tuple[str, ...]) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)
