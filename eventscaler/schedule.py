"""When each rule runs: APScheduler fires one job per lane; a lane hands its rules to the workers.

A lane is the rules that share a pollingInterval and a phase (to PHASE_STEP); rules loaded
together share one. One APScheduler job per rule cost 7-9 % of the daemon's CPU at 1,000 rules
(its job store, its trigger's date arithmetic and a Future with callbacks on every run); one job
per lane costs that a few times an interval. What APScheduler gave each rule is kept: its own
interval and phase, never two runs of one rule at once (a run that falls due while the last one
is queued or under way is skipped, with a warning), late runs coalesced, and a stop that lets the
runs under way finish.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor as FuturesPool
from datetime import UTC, datetime

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

logger = logging.getLogger(__name__)

PHASE_STEP = 0.1  # seconds: rules whose phases differ by less share a lane
LANE_THREADS = 2  # the lane jobs only hand rules over; the reload job is the other one

LaneKey = tuple[float, int]  # (interval, phase slot)
Run = Callable[[], object]


class RuleSchedule:
    """Runs each named job every `interval` seconds on `workers` threads, one run at a time."""

    def __init__(self, workers: int) -> None:
        self._scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=LANE_THREADS)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )
        self._pool = FuturesPool(max_workers=workers, thread_name_prefix="rule")
        self._lanes: dict[LaneKey, dict[str, Run]] = {}
        self._lane_of: dict[str, LaneKey] = {}
        self._busy: set[str] = set()  # queued or running: its next run is skipped
        self._lock = threading.Lock()

    @property
    def lanes(self) -> int:
        """APScheduler jobs the rules take (the rule-file check not counted)."""
        with self._lock:
            return len(self._lanes)

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def start(self) -> None:
        self._scheduler.start()

    def stop(self) -> None:
        """Nothing new starts; runs under way finish first, queued ones are dropped."""
        self._scheduler.shutdown(wait=True)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def every(self, job_id: str, interval: float, run: Run) -> None:
        """A job of its own on APScheduler (the rule-file check), first one interval from now."""
        self._scheduler.add_job(run, IntervalTrigger(seconds=interval), id=job_id)

    def place(self, name: str, interval: float, run: Run, at_once: bool) -> None:
        """Run `run` every `interval` s from now: first at once (`at_once`), or in one interval.

        Placing a name again replaces its run and interval; a run of the old one under way still
        keeps the new one from starting until it ends."""
        key = (interval, int((time.time() % interval) / PHASE_STEP))
        with self._lock:
            self._leave(name)
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = {}
                self._open(key)
            lane[name] = run
            self._lane_of[name] = key
        if at_once:
            self._hand_over([name])

    def cancel(self, name: str) -> None:
        with self._lock:
            self._leave(name)

    def _leave(self, name: str) -> None:
        key = self._lane_of.pop(name, None)
        if key is None:
            return
        lane = self._lanes[key]
        del lane[name]
        if not lane:
            del self._lanes[key]
            self._scheduler.remove_job(_lane_id(key))

    def _open(self, key: LaneKey) -> None:
        interval, slot = key
        # Anchored at the slot's phase: the lane fires at slot * PHASE_STEP + k * interval.
        anchor = datetime.fromtimestamp(slot * PHASE_STEP, UTC)
        trigger = IntervalTrigger(seconds=interval, start_date=anchor)
        self._scheduler.add_job(self._fire, trigger, args=[key], id=_lane_id(key))

    def _fire(self, key: LaneKey) -> None:
        with self._lock:
            names = list(self._lanes.get(key, ()))
        self._hand_over(names)

    def _hand_over(self, names: list[str]) -> None:
        with self._lock:
            placed = [n for n in names if n in self._lane_of]  # not cancelled meanwhile
            skipped = [n for n in placed if n in self._busy]
            due = [(n, self._run_of(n)) for n in placed if n not in self._busy]
            self._busy.update(n for n, _ in due)
        for name in skipped:
            logger.warning("rule %s: run skipped: the previous one is still running", name)
        for name, run in due:
            try:
                self._pool.submit(self._run, name, run)
            except RuntimeError:  # stopping: the pool takes nothing new
                self._done(name)

    def _run_of(self, name: str) -> Run:
        return self._lanes[self._lane_of[name]][name]

    def _run(self, name: str, run: Run) -> None:
        try:
            run()
        except Exception:
            logger.exception("rule %s: run failed", name)
        finally:
            self._done(name)

    def _done(self, name: str) -> None:
        with self._lock:
            self._busy.discard(name)


def _lane_id(key: LaneKey) -> str:
    interval, slot = key
    return f"lane:{interval:g}s:{slot}"
