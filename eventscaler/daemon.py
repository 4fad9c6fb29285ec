"""The rules in force, each run at its pollingInterval, the rule file watched, clean shutdown.

A rule whose target has replicas runs at its activePollingInterval instead (Rule.interval_at), as
KEDA's HPA decides every 15 s once the operator has woken the target: after each tick the rule is
placed again when the replicas it leaves ask for the other interval.

Each rule runs on a shared pool of worker threads (eventscaler/schedule.py, on APScheduler), so a
slow queue delays only its own rule, and one rule never runs twice at once.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor as FuturesPool
from dataclasses import dataclass
from pathlib import Path

from eventscaler.config import (
    ConfigProblem,
    LoadResult,
    Rule,
    describe_rule,
    parse_rules_text,
    rules_in_force,
)
from eventscaler.engine import Engine, Outcome
from eventscaler.schedule import RuleSchedule

logger = logging.getLogger(__name__)

RELOAD_JOB_ID = "reload-rules"
DEFAULT_RELOAD_INTERVAL = 5.0
DEFAULT_WORKERS = 16
# Unhealthy when the scheduler ran nothing, not even the reload job, for this long: a stuck pool.
MIN_STALE_AFTER = 60.0


class RuleFileWatcher:
    """Re-reads the rule file and reports a new load only when its content changed.

    A ConfigMap volume swaps a symlink and can keep the old mtime, so the content is compared.
    """

    def __init__(self, path: str | Path, allowed_namespaces: Collection[str] | None) -> None:
        self.path = Path(path)
        self._allowed = allowed_namespaces
        self._digest: str | None = None

    def poll(self) -> LoadResult | None:
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            digest = f"unreadable: {exc.strerror}"
            if digest == self._digest:
                return None
            self._digest = digest
            return parse_failure(str(self.path), f"cannot read the rule file: {exc.strerror}")
        digest = hashlib.sha256(data).hexdigest()
        if digest == self._digest:
            return None
        self._digest = digest
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return parse_failure(str(self.path), "the rule file is not UTF-8 text")
        return parse_rules_text(text, str(self.path), self._allowed)


def parse_failure(source: str, message: str) -> LoadResult:
    return LoadResult(source, problems=(ConfigProblem(source, "", "", message),), fatal=True)


@dataclass
class Health:
    """What /healthz and /readyz report; written by the daemon, read by the health server."""

    last_heartbeat: float
    stale_after: float
    rules_loaded: bool = False
    last_load_error: str | None = None

    def alive(self, now: float) -> bool:
        return now - self.last_heartbeat <= self.stale_after


class ReloadListener:
    """Told about the rules in force after each load, and about leadership at each reload check.
    Subclasses override what they need (metrics, status, events)."""

    def rules_changed(self, names: set[str], gone: set[tuple[str, ...]]) -> None:
        """`names`: the rules in force; `gone`: (name, namespace, target kind, target name) of
        each rule that no longer scales that target (removed, or now aimed elsewhere)."""

    def reload_failed(self) -> None:
        """A load found problems (the last good rules stay)."""

    def leadership(self, is_leader: bool) -> None:
        """Whether this replica may scale, checked every reload interval."""


class Daemon:
    """Holds the rules in force and keeps one scheduled job per rule."""

    def __init__(
        self,
        engine: Engine,
        watcher: RuleFileWatcher,
        workers: int = DEFAULT_WORKERS,
        reload_interval: float = DEFAULT_RELOAD_INTERVAL,
        is_leader: Callable[[], bool] = lambda: True,
        stale_after: float | None = None,
        listeners: Sequence[ReloadListener] = (),
    ) -> None:
        self.engine = engine
        self.watcher = watcher
        self.reload_interval = reload_interval
        self.rules: dict[str, Rule] = {}
        self._is_leader = is_leader
        self._listeners = list(listeners)
        self._workers = workers
        if stale_after is None:
            stale_after = max(MIN_STALE_AFTER, 3 * reload_interval)
        self.health = Health(time.monotonic(), stale_after)
        self._scheduler = RuleSchedule(workers)
        self._intervals: dict[str, float] = {}  # the interval each rule's job is placed at
        self._lock = threading.Lock()

    # -- rules -----------------------------------------------------------------------------

    def reload(self) -> bool:
        """Apply the rule file if it changed; returns whether a new file was seen."""
        self._beat()
        for listener in self._listeners:
            listener.leadership(self._is_leader())
        result = self.watcher.poll()
        if result is None:
            return False
        self.apply(result)
        return True

    def apply(self, result: LoadResult) -> None:
        for problem in result.problems:
            logger.error("rule file problem: %s", problem)
        with self._lock:
            previous = self.rules
            self.rules = _keep_unnamed(previous, rules_in_force(previous, result), result)
            current = dict(self.rules)
        _log_load(result, previous, current)
        self.health.rules_loaded = bool(current) or not result.problems
        self.health.last_load_error = str(result.problems[0]) if result.problems else None
        self.engine.forget_rules_except(current.values())
        gone: set[tuple[str, ...]] = {
            (r.name, r.namespace, r.scale_target.kind, r.scale_target.name)
            for name, r in previous.items()
            if name not in current or current[name].target_key != r.target_key
        }
        for listener in self._listeners:
            if result.problems:
                listener.reload_failed()
            listener.rules_changed(set(current), gone)
        self._sync_jobs(previous, current)

    # -- running ---------------------------------------------------------------------------

    def start(self) -> None:
        """Load the rules and start the scheduler (returns at once)."""
        self.reload()
        self._scheduler.every(RELOAD_JOB_ID, self.reload_interval, self.reload)
        self._scheduler.start()
        self._sync_jobs({}, dict(self.rules))

    def stop(self) -> None:
        """Stop scheduling; runs in progress finish first."""
        if self._scheduler.running:
            self._scheduler.stop()

    def run_once(self) -> list[Outcome]:
        """Evaluate every rule once, concurrently, and return what each did."""
        self.reload()
        rules = list(self.rules.values())
        with FuturesPool(max_workers=max(1, min(self._workers, len(rules)))) as pool:
            return list(pool.map(self.engine.evaluate, rules))

    def tick(self, name: str) -> Outcome | None:
        self._beat()
        rule = self.rules.get(name)
        if rule is None or not self._is_leader():
            return None
        outcome = self.engine.evaluate(rule)
        wanted = self.engine.next_interval(rule)
        with self._lock:
            placed = self._intervals.get(name)
        if placed is not None and wanted != placed:
            self._place(name, rule, wanted, at_once=False)
        return outcome

    def interval_of(self, name: str) -> float | None:
        """The interval rule `name` is scheduled at, None when it is not scheduled."""
        with self._lock:
            return self._intervals.get(name)

    def _beat(self) -> None:
        self.health.last_heartbeat = time.monotonic()

    def _sync_jobs(self, previous: dict[str, Rule], current: dict[str, Rule]) -> None:
        if not self._scheduler.running:
            return
        for name in previous.keys() - current.keys():
            with self._lock:
                self._intervals.pop(name, None)
            self._scheduler.cancel(name)
        for name, rule in current.items():
            old = previous.get(name)
            if old is not None and _intervals(old) == _intervals(rule):
                continue  # the job reads the rule by name, so other changes apply by themselves
            # A new rule runs at once; a changed interval waits one interval, as planned, at
            # pollingInterval until a tick has seen the replicas.
            self._place(name, rule, rule.polling_interval, at_once=old is None)

    def _place(self, name: str, rule: Rule, interval: float, at_once: bool) -> None:
        with self._lock:
            if self.rules.get(name) is not rule:
                return  # reloaded or removed meanwhile: the reload placed it
            self._intervals[name] = interval
            self.engine.ticks_every(name, interval)
            self._scheduler.place(name, interval, functools.partial(self.tick, name), at_once)


def _intervals(rule: Rule) -> tuple[float, float]:
    return rule.polling_interval, rule.active_polling_interval


def _keep_unnamed(
    previous: dict[str, Rule], in_force: dict[str, Rule], result: LoadResult
) -> dict[str, Rule]:
    """A rejected entry without a readable name (a misspelt `name:`) may be any rule in force:
    none of them stops for being absent from this file."""
    unnamed = _unnamed_rejected_entries(result)
    absent = sorted(previous.keys() - in_force.keys()) if unnamed else []
    if absent:
        in_force.update((name, previous[name]) for name in absent)
        logger.error(
            "rule file %s: %s rejected without a readable name: keeping %s",
            result.source, ", ".join(unnamed), ", ".join(absent),
        )  # fmt: skip
    return in_force


def _log_load(result: LoadResult, previous: dict[str, Rule], current: dict[str, Rule]) -> None:
    if result.fatal:
        kept = f"keeping the {len(current)} rule(s) in force" if current else "no rules in force"
        logger.error("rule file %s rejected: %s", result.source, kept)
        return
    added = current.keys() - previous.keys()
    changed = {n for n in current.keys() & previous.keys() if current[n] != previous[n]}
    for name in sorted(added | changed):
        what = "added" if name in added else "changed"
        logger.info("rule %s: %s", what, describe_rule(current[name]))
    for name in sorted(previous.keys() - current.keys()):
        logger.info("rule removed: %s", name)
    logger.info(
        "rule file %s loaded: %d rule(s) in force, %d problem(s)",
        result.source, len(current), len(result.problems),
    )  # fmt: skip


# ConfigProblem.where of a rule entry whose name could not be read: "rules[3]", not "rules[3] (x)".
_UNNAMED_ENTRY = re.compile(r"rules\[\d+\]")


def _unnamed_rejected_entries(result: LoadResult) -> list[str]:
    """The rule entries the load rejected without knowing which rule they were meant to be."""
    return sorted({p.where for p in result.problems if _UNNAMED_ENTRY.fullmatch(p.where)})
