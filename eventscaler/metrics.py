"""Prometheus metrics, served on the health port's /metrics. The only prometheus_client import.

Labels are rule, namespace, target_kind, target (the scale target's kind and name), and trigger,
direction, outcome, kind where they apply; never a queue URL, account or connection string. A
rule's gauges are removed when the rule goes; its counters stay, as counters should (a rate over
them ends by itself).

The per-rule gauges are kept as plain numbers and turned into metric families only when scraped
(`RuleGauges`): a prometheus_client Gauge child per rule and gauge is about 600 bytes and two
locks, 5 MiB and 0.05 ms a tick at 1,000 rules, for numbers read once per scrape.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from eventscaler.daemon import ReloadListener
from eventscaler.engine import Outcome
from eventscaler.events import DROP_CAUSES

RULE_LABELS = ("rule", "namespace", "target_kind", "target")
CONTENT_TYPE = CONTENT_TYPE_LATEST
Labels = tuple[str, str, str, str]

# name -> help of each per-rule gauge, in exposition order.
RULE_GAUGES = {
    "eventscaler_desired_replicas": "Replicas the last decision asked for.",
    "eventscaler_current_replicas": "Replicas the target had at the last tick.",
    "eventscaler_rule_active": "1 when some trigger is above its activation threshold.",
    "eventscaler_rule_paused": "1 while a pause annotation holds the target.",
    "eventscaler_rule_fallback_active": "1 while the rule runs its fallback replicas.",
    "eventscaler_last_successful_poll_timestamp_seconds":
        "Unix time of the rule's last tick with every reading and call successful.",
}  # fmt: skip
TRIGGER_GAUGES = {
    "eventscaler_trigger_value":
        "Last value read, per trigger: messages, lag, a query's result.",
    # The name before sources became plug-ins, kept for one release (README: metrics).
    "eventscaler_queue_length_messages":
        "Deprecated: the same as eventscaler_trigger_value; removed in the next release.",
}  # fmt: skip


class _RuleSeries:
    """One rule's gauge values (by metric name) and trigger values (by trigger label)."""

    __slots__ = ("gauges", "triggers")

    def __init__(self) -> None:
        self.gauges: dict[str, float] = {}
        self.triggers: dict[str, float] = {}


class RuleGauges(Collector):
    """The per-rule gauges as plain numbers, exposed as metric families when collected."""

    def __init__(self) -> None:
        self._series: dict[Labels, _RuleSeries] = {}
        self._lock = threading.Lock()

    def set(self, labels: Labels, gauges: dict[str, float], triggers: dict[str, float]) -> None:
        with self._lock:
            series = self._series.get(labels)
            if series is None:
                series = self._series[labels] = _RuleSeries()
            series.gauges.update(gauges)
            series.triggers.update(triggers)

    def remove(self, labels: tuple[str, ...]) -> None:
        with self._lock:
            self._series.pop(labels, None)  # type: ignore[arg-type]

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            snapshot = [(labels, dict(s.gauges), dict(s.triggers)) for labels, s in
                        self._series.items()]  # fmt: skip
        for name, documentation in RULE_GAUGES.items():
            family = GaugeMetricFamily(name, documentation, labels=RULE_LABELS)
            for labels, gauges, _ in snapshot:
                if name in gauges:
                    family.add_metric(labels, gauges[name])
            yield family
        for name, documentation in TRIGGER_GAUGES.items():
            family = GaugeMetricFamily(name, documentation, labels=(*RULE_LABELS, "trigger"))
            for labels, _, triggers in snapshot:
                for trigger, value in triggers.items():
                    family.add_metric((*labels, trigger), value)
            yield family


# The declarations below are one metric each, kept on as few lines as reads well.
# fmt: off
class Metrics(ReloadListener):
    """Every metric the daemon exports; an engine observer, and told about reloads."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.rule_gauges = RuleGauges()
        r.register(self.rule_gauges)
        self._counters(r)
        self._process_metrics(r)

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
        gauges: dict[str, float] = {}
        triggers: dict[str, float] = {}
        for reading in outcome.readings:
            if reading.value is not None:
                triggers[reading.trigger] = reading.value
            else:
                self.source_errors.labels(*labels, reading.trigger, reading.kind or "other").inc()
        if outcome.current is not None:
            gauges["eventscaler_current_replicas"] = outcome.current
        decision = outcome.decision
        if decision is not None:
            gauges.update(
                eventscaler_desired_replicas=decision.target,
                eventscaler_rule_active=1 if decision.active else 0,
                eventscaler_rule_paused=1 if decision.step == "paused" else 0,
                eventscaler_rule_fallback_active=1 if decision.step == "fallback" else 0,
            )
            if decision.changes:
                result = "success" if outcome.wrote else "failure"
                result = "dry_run" if outcome.dry_run else result
                self.scale_operations.labels(*labels, decision.direction, result).inc()
        if outcome.error_kind:
            self.rule_errors.labels(*labels, outcome.error_kind).inc()
        else:
            gauges["eventscaler_last_successful_poll_timestamp_seconds"] = outcome.finished_at
        self.rule_gauges.set(labels, gauges, triggers)

    def rules_changed(self, names: set[str], gone: set[tuple[str, ...]]) -> None:
        """After a reload: count the rules, forget the gauges of rules that are gone."""
        self.rules_loaded.set(len(names))
        for labels in gone:
            self.rule_gauges.remove(labels)

    def event_dropped(self, cause: str) -> None:
        self.events_dropped.labels(cause).inc()

    def reload_failed(self) -> None:
        self.reload_failures.inc()

    def leadership(self, is_leader: bool) -> None:
        self.is_leader.set(1 if is_leader else 0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
