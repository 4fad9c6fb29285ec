"""How often a rule decides: pollingInterval at zero, activePollingInterval while it has replicas.

Scenarios covered:
- the rule field: default 15 s (the HPA's sync period), its checks name file, rule and field, it
  may be a default, and it is never longer than pollingInterval (Rule.interval_at)
- describe_rule says both intervals when they differ
- the engine: the interval the replicas a tick left ask for (next_interval), pollingInterval
  until a tick has read the target, unchanged by a failed target read; ticks_every moves the
  tick's slots (TickClock) to the interval the scheduler runs it at
- the daemon with its real scheduler: a rule woken from zero is placed at its active interval,
  and at its pollingInterval again once it is back at zero
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from eventscaler.config import (
    DEFAULT_ACTIVE_POLLING_INTERVAL,
    Rule,
    ScaleTargetRef,
    describe_rule,
    parse_rules_text,
)
from eventscaler.daemon import Daemon, RuleFileWatcher
from eventscaler.engine import Engine
from eventscaler.sources.azure_queue import azure_queue_trigger
from eventscaler.triggers import Trigger

SOURCE = "rules.yaml"


def entry(**fields: Any) -> dict[str, Any]:
    trigger = {"type": "azure-queue", "queueName": "orders", "queueLength": 5}
    return {"name": "orders", "deployment": "orders", "triggers": [trigger], **fields}


def load_text(*entries: dict[str, Any], defaults: Any = None) -> str:
    document: dict[str, Any] = {"rules": list(entries)}
    if defaults is not None:
        document["defaults"] = defaults
    return yaml.safe_dump(document, sort_keys=False)


def make_rule(**fields: Any) -> Rule:
    trigger = azure_queue_trigger("orders", queue_length=5.0)
    values: dict[str, Any] = {"max_replicas": 20, "cooldown_period": 0.0, **fields}
    return Rule("orders", "shop", ScaleTargetRef("orders"), (trigger,), **values)


# -- the field ----------------------------------------------------------------------------------


def test_the_default_is_the_hpa_sync_period_and_never_longer_than_polling() -> None:
    (rule,) = parse_rules_text(load_text(entry()), SOURCE).rules
    assert rule.active_polling_interval == DEFAULT_ACTIVE_POLLING_INTERVAL == 15.0
    assert (rule.interval_at(0), rule.interval_at(1), rule.interval_at(20)) == (30.0, 15.0, 15.0)
    (fast,) = parse_rules_text(load_text(entry(pollingInterval=5)), SOURCE).rules
    assert (fast.interval_at(0), fast.interval_at(3)) == (5.0, 5.0)
    text = load_text(entry(activePollingInterval="30s"))
    (one_loop,) = parse_rules_text(text, SOURCE).rules
    assert (one_loop.interval_at(0), one_loop.interval_at(3)) == (30.0, 30.0)


def test_it_may_be_a_default() -> None:
    text = load_text(entry(), entry(name="b", activePollingInterval=20),
                     defaults={"activePollingInterval": 10})  # fmt: skip
    result = parse_rules_text(text, SOURCE)
    assert result.ok
    assert [r.active_polling_interval for r in result.rules] == [10.0, 20.0]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "expected a duration of more than zero seconds, got 0"),
        (-5, "expected a duration of more than zero seconds, got -5"),
        ("soon", "expected a duration"),
        (10**12, "expected at most 2147483647 seconds"),
    ],
)
def test_bad_values_name_the_file_rule_and_field(value: Any, expected: str) -> None:
    result = parse_rules_text(load_text(entry(activePollingInterval=value)), SOURCE)
    assert result.rules == ()
    (problem,) = result.problems
    assert str(problem).startswith("rules.yaml: rules[0] (orders).activePollingInterval: ")
    assert expected in str(problem)


def test_a_bad_default_is_fatal_and_named() -> None:
    result = parse_rules_text(load_text(entry(), defaults={"activePollingInterval": 0}), SOURCE)
    assert result.fatal
    assert str(result.problems[0]).startswith("rules.yaml: defaults.activePollingInterval: ")


def test_describe_rule_says_both_intervals_when_they_differ() -> None:
    assert "every 30s (15s while it has replicas), cooldown" in describe_rule(make_rule())
    one_loop = make_rule(active_polling_interval=30.0)
    assert "every 30s, cooldown" in describe_rule(one_loop)


# -- the engine and the daemon ------------------------------------------------------------------


class Queue:
    def __init__(self, length: float) -> None:
        self.length = length

    def read_value(self, trigger: Trigger) -> float:
        return self.length


class Target:
    def __init__(self, replicas: int) -> None:
        self.replicas = replicas
        self.annotations: dict[str, str] = {}
        self.uid = "uid-1"
        self.broken = False

    def read(self, namespace: str, ref: ScaleTargetRef) -> Target:
        if self.broken:
            raise ConnectionError("the API server is away")
        return self

    def set_replicas(self, namespace: str, ref: ScaleTargetRef, replicas: int) -> None:
        self.replicas = replicas


def test_the_engine_tells_the_interval_the_replicas_it_left_ask_for() -> None:
    now = [1000.0]
    queue, target = Queue(50), Target(0)
    engine = Engine(queue, target, clock=lambda: now[0])
    rule = make_rule()
    assert engine.next_interval(rule) == 30.0  # no tick yet
    assert engine.evaluate(rule).replicas_after == 10
    assert engine.next_interval(rule) == 15.0
    target.broken = True
    assert engine.evaluate(rule).replicas_after is None
    assert engine.next_interval(rule) == 15.0  # a failed read changes nothing
    target.broken, queue.length = False, 0
    now[0] += 15
    assert engine.evaluate(rule).replicas_after == 0  # cooldown 0: straight to zero
    assert engine.next_interval(rule) == 30.0


def test_ticks_every_puts_the_ticks_on_the_slots_of_the_interval_they_run_at() -> None:
    # Ticks that start a few milliseconds late take their slot's time: with the ticks placed at
    # 15 s, t=15.004 is the slot 15 s after the first tick (at 30 s it would be off its slot).
    now = [1000.0]
    engine = Engine(Queue(50), Target(2), clock=lambda: now[0])
    rule = make_rule(cooldown_period=300.0)
    engine.ticks_every(rule.name, 15.0)
    first = engine.evaluate(rule).decision
    now[0] += 15.004
    second = engine.evaluate(rule).decision
    assert first is not None and second is not None
    assert second.state.last_active - first.state.last_active == 15.0


def wait_for(condition: Any, deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.05)


def test_the_daemon_places_a_rule_at_its_active_interval_while_it_has_replicas(
    tmp_path: Path,
) -> None:
    path = tmp_path / "rules.yaml"
    text = load_text(entry(pollingInterval=2, activePollingInterval=1, cooldownPeriod=0))
    path.write_text(text)
    queue, target = Queue(50), Target(0)
    daemon = Daemon(Engine(queue, target), RuleFileWatcher(path, None), workers=2)
    daemon.start()
    try:
        wait_for(lambda: target.replicas == 10)  # the first tick runs at once
        wait_for(lambda: daemon.interval_of("orders") == 1.0)
        queue.length = 0
        wait_for(lambda: target.replicas == 0)
        wait_for(lambda: daemon.interval_of("orders") == 2.0)
    finally:
        daemon.stop()
