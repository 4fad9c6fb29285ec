"""When a tick reads its scale target (eventscaler/target_views.py), counted with a fake scaler
and a fake clock. Scenarios covered:
- K = max(1, floor(resync / pollingInterval)) ticks per read: 5 s ticks and a 30 s resync read on
  ticks 0, 6, 12...; a resync of 0, or an interval above the resync, reads on every tick
- a view older than the resync is read again even when ticks were skipped (not the leader, late)
- `fresh` always reads, and restarts the count
- a failed read keeps nothing: the next tick reads again
- our own write updates the kept replicas (annotations and uid as read before it)
- a rule that now targets another object reads that one at once; forget and
  forget_rules_except drop views, and nothing is kept for objects no rule names
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import pytest

from eventscaler.config import Rule, ScaleTargetRef
from eventscaler.sources.azure_queue import azure_queue_trigger
from eventscaler.target_views import TargetViews, WrittenTarget


@dataclass
class Clock:
    now: float = 1_000.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class View:
    replicas: int
    annotations: dict[str, str] = field(default_factory=dict)
    uid: str = "uid-1"


class CountingScaler:
    """Answers every read with the object's current state, and counts the reads per name."""

    def __init__(self) -> None:
        self.objects: dict[str, View] = {}
        self.reads: list[str] = []
        self.fail = False

    def read(self, namespace: str, ref: ScaleTargetRef) -> View:
        self.reads.append(ref.name)
        if self.fail:
            raise RuntimeError("Unreachable")
        return self.objects.get(ref.name, View(1))

    def set_replicas(self, namespace: str, ref: ScaleTargetRef, replicas: int) -> None:
        raise AssertionError("TargetViews never writes")


def make_rule(name: str = "orders", interval: float = 5.0, target: str = "orders") -> Rule:
    return Rule(
        name,
        "shop",
        ScaleTargetRef(target),
        (azure_queue_trigger(name),),
        polling_interval=interval,
    )


def ticks(views: TargetViews, rule: Rule, clock: Clock, count: int) -> list[bool]:
    """`count` ticks one polling interval apart; whether each was served a kept view."""
    kept = []
    for _ in range(count):
        kept.append(views.read(rule)[1])
        clock.now += rule.polling_interval
    return kept


def test_k_counts_the_ticks_at_the_interval_the_rule_runs_at() -> None:
    # pollingInterval 30 s, run every 15 s while its target has replicas (activePollingInterval):
    # a 60 s resync serves 4 of those ticks, not the 2 of a 30 s interval.
    scaler, clock = CountingScaler(), Clock()
    views = TargetViews(scaler, 60.0, clock)
    rule = make_rule(interval=30.0)
    assert views.ticks_per_read(rule) == 2
    assert views.ticks_per_read(rule, 15.0) == 4
    kept = []
    for _ in range(8):
        kept.append(views.read(rule, interval=15.0)[1])
        clock.now += 15.0
    assert kept == [False, True, True, True, False, True, True, True]
    assert len(scaler.reads) == 2


@pytest.mark.parametrize(
    ("resync", "interval", "per_read"),
    [(30.0, 5.0, 6), (30.0, 7.0, 4), (30.0, 30.0, 1), (30.0, 60.0, 1), (0.0, 5.0, 1), (2, 0.5, 4)],
)
def test_quiet_ticks_read_once_every_k_ticks(resync: float, interval: float, per_read: int) -> None:
    scaler, clock = CountingScaler(), Clock()
    views = TargetViews(scaler, resync, clock)
    rule = make_rule(interval=interval)
    assert views.ticks_per_read(rule) == per_read
    kept = ticks(views, rule, clock, 25)
    assert len(scaler.reads) == math.ceil(25 / per_read)
    assert [i for i, k in enumerate(kept) if not k] == list(range(0, 25, per_read))


def test_a_view_older_than_the_resync_is_read_again_after_skipped_ticks() -> None:
    scaler, clock = CountingScaler(), Clock()
    views = TargetViews(scaler, 30.0, clock)
    rule = make_rule()
    views.read(rule)
    clock.now += 30.0  # no tick for 30 s: not the leader, or a stalled pool
    assert views.read(rule)[1] is False
    clock.now += 29.9
    assert views.read(rule)[1] is True
    assert len(scaler.reads) == 2


def test_fresh_always_reads_and_restarts_the_count() -> None:
    scaler, clock = CountingScaler(), Clock()
    views = TargetViews(scaler, 30.0, clock)
    rule = make_rule()
    ticks(views, rule, clock, 4)
    assert views.read(rule, fresh=True)[1] is False
    assert ticks(views, rule, clock, 7) == [True] * 5 + [False, True]
    assert len(scaler.reads) == 3


def test_a_failed_read_keeps_nothing() -> None:
    scaler, clock = CountingScaler(), Clock()
    views = TargetViews(scaler, 30.0, clock)
    rule = make_rule()
    views.read(rule)
    scaler.fail = True
    clock.now += 30.0
    with pytest.raises(RuntimeError):
        views.read(rule)
    scaler.fail = False
    clock.now += 5.0
    assert views.read(rule)[1] is False
    assert len(scaler.reads) == 3


def test_our_write_updates_the_kept_replicas() -> None:
    scaler, clock = CountingScaler(), Clock()
    scaler.objects["orders"] = View(2, {"team": "shop"}, "uid-9")
    views = TargetViews(scaler, 30.0, clock)
    rule = make_rule()
    read, _ = views.read(rule, fresh=True)
    views.wrote(rule, read, 7)
    clock.now += 5.0
    view, kept = views.read(rule)
    assert kept is True
    assert view == WrittenTarget(7, {"team": "shop"}, "uid-9")
    assert len(scaler.reads) == 1


def test_another_target_is_read_at_once_and_forgotten_views_are_read_again() -> None:
    scaler, clock = CountingScaler(), Clock()
    views = TargetViews(scaler, 30.0, clock)
    orders, returns = make_rule("orders"), make_rule("returns", target="returns")
    views.read(orders)
    views.read(returns)
    assert views.read(replace(orders, scale_target=ScaleTargetRef("other")))[1] is False
    assert views.read(replace(orders, scale_target=ScaleTargetRef("orders", "StatefulSet")))[1] is (
        False
    )
    views.read(orders, fresh=True)
    views.forget(orders)
    assert views.read(orders)[1] is False
    views.forget_rules_except([orders])
    assert views.read(orders)[1] is True
    assert views.read(returns)[1] is False
    assert scaler.reads == ["orders", "returns", "other", "orders", "orders", "orders", "returns"]


def test_views_are_kept_per_rule_only() -> None:
    scaler, clock = CountingScaler(), Clock()
    views = TargetViews(scaler, 30.0, clock)
    for i in range(50):
        views.read(make_rule(f"r{i}", target=f"d{i}"))
    views.forget_rules_except([make_rule("r1", target="d1")])
    assert views.kept_count() == 1
