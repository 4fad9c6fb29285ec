"""What a tick knows of its rule's scale target: read from the API server every few ticks, and
always right before a write.

A steady tick, one that would change nothing, needs no fresh read of its target: it decides on
the replicas and pause annotations of an earlier tick's read. The view is read again
- on the first tick of a rule, and after a failed read or a failed write;
- every `resync` seconds: a rule running every P seconds (its pollingInterval, or its
  activePollingInterval while its target has replicas) serves one read to at most
  K = max(1, floor(resync / P)) ticks, and never one older than `resync` seconds (ticks skipped
  while not leading, or late, cannot stretch it);
- right before every write (the engine asks for it with `fresh=True` when a decision on a kept
  view would change the replicas), so a pause or a count set by hand is honoured before anything
  is written.
So a change made by hand (a `kubectl scale`, a pause annotation) is noticed within `resync`
seconds (plus the lateness of that tick), and never overwritten unseen. Views are kept per rule,
by its name, so memory grows with the rules, never with the objects of the cluster; a `resync`
of 0 reads the target on every tick.

Plain GETs, not a watch: a watch needs `list` and `watch` RBAC, one stream per namespace (or per
object), and its list holds every object of the namespace, rules or not; see docs/performance.md.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eventscaler.config import Rule

if TYPE_CHECKING:
    from eventscaler.engine import Scaler, TargetView

DEFAULT_RESYNC_SECONDS = 60.0


@dataclass(frozen=True)
class WrittenTarget:
    """A kept view after our own write: the replicas we set, the rest as read before it."""

    replicas: int
    annotations: dict[str, str]
    uid: str


@dataclass
class _Kept:
    target: tuple[str, str, str, str]  # the Rule.target_key it was read for
    view: TargetView
    read_at: float  # the clock when it was read
    ticks: int = 1  # ticks it has served, the one that read it included


class TargetViews:
    """The last view of each rule's target, and when to read it again (see the module doc).

    Called from several threads, never twice at once for one rule (the scheduler's guarantee).
    """

    def __init__(
        self,
        scaler: Scaler,
        resync_seconds: float = DEFAULT_RESYNC_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._scaler = scaler
        self._resync = max(0.0, resync_seconds)
        self._clock = clock
        self._kept: dict[str, _Kept] = {}
        self._lock = threading.Lock()

    def ticks_per_read(self, rule: Rule, interval: float | None = None) -> int:
        """K: how many ticks of `rule` one read of its target serves, at most, when it runs every
        `interval` seconds (its pollingInterval unless told: activePollingInterval while its
        target has replicas)."""
        if self._resync <= 0:
            return 1
        return max(1, math.floor(self._resync / (interval or rule.polling_interval)))

    def read(
        self, rule: Rule, fresh: bool = False, interval: float | None = None
    ) -> tuple[TargetView, bool]:
        """The rule's target, and whether the view comes from an earlier tick's read (kept).

        `fresh` always asks the API server (before a write). A failed read forgets the view.
        `interval`: how often the rule runs now, for K."""
        if not fresh:
            kept = self._take_kept(rule, interval)
            if kept is not None:
                return kept, True
        try:
            view = self._scaler.read(rule.namespace, rule.scale_target)
        except Exception:
            self.forget(rule)
            raise
        if self._resync > 0:
            with self._lock:
                self._kept[rule.name] = _Kept(rule.target_key, view, self._clock())
        return view, False

    def wrote(self, rule: Rule, view: TargetView, replicas: int) -> None:
        """Our write of `replicas` succeeded on `view` (read right before it)."""
        with self._lock:
            kept = self._kept.get(rule.name)
            if kept is not None and kept.target == rule.target_key:
                kept.view = WrittenTarget(replicas, dict(view.annotations), view.uid)

    def forget(self, rule: Rule) -> None:
        """Read the target again on the next tick (after a failed read or write)."""
        with self._lock:
            self._kept.pop(rule.name, None)

    def forget_rules_except(self, rules: Iterable[Rule]) -> None:
        """Drop the views of rules that are gone (a reload)."""
        keep = {rule.name for rule in rules}
        with self._lock:
            for name in [name for name in self._kept if name not in keep]:
                del self._kept[name]

    def kept_count(self) -> int:
        """Views kept: at most one per rule in force."""
        with self._lock:
            return len(self._kept)

    def _take_kept(self, rule: Rule, interval: float | None) -> TargetView | None:
        """The kept view if it may serve this tick (counting the tick), else None."""
        with self._lock:
            kept = self._kept.get(rule.name)
            if kept is None or kept.target != rule.target_key:
                return None
            young = self._clock() - kept.read_at < self._resync
            if not young or kept.ticks >= self.ticks_per_read(rule, interval):
                return None
            kept.ticks += 1
            return kept.view
