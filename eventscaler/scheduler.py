"""Fixed-interval jobs on a pool of worker threads: what the daemon needs of a scheduler, lean.

Each job (a rule's tick, the rule-file check) runs every `interval` seconds at its own phase on
one of `workers` threads. A job still running when it is due again skips that run: never two runs
of one job at once, and a slow job delays only itself. A job late by more than one interval runs
once, then keeps its phase (coalesced, as APScheduler's `coalesce=True, max_instances=1`).

Why not APScheduler any more: at 1,000 rules its per-run bookkeeping (job store index, trigger
date arithmetic, a Future with its Condition and RLock per run, events) was 7-9 % of the daemon's
CPU, more than the decision itself; here a run costs a heap push and a queue put.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


@dataclass
class _Job:
    key: Hashable
    interval: float
    run: Callable[[], object]
    name: str
    due: float
    generation: int
    busy: bool = False
    cancelled: bool = False
    skipped: int = 0  # runs skipped because the previous one was still running


@dataclass(order=True)
class _Due:
    at: float
    seq: int
    job: _Job = field(compare=False)
    generation: int = field(compare=False)


_STOP = object()


def next_slot(due: float, interval: float, now: float) -> float:
    """The first slot of the job's phase (due + k x interval) after `now`: a job that was late by
    several intervals runs once, not once per slot it missed."""
    missed = max(0, int((now - due) // interval))
    return due + (missed + 1) * interval


class Scheduler:
    """Runs jobs every `interval` seconds on `workers` threads (see the module doc)."""

    def __init__(self, workers: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._workers = max(1, workers)
        self._clock = clock
        self._jobs: dict[Hashable, _Job] = {}
        self._heap: list[_Due] = []
        self._seq = itertools.count()
        self._changed = threading.Condition()
        self._ready: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._stopping = False

    @property
    def running(self) -> bool:
        return bool(self._threads) and not self._stopping

    def schedule(
        self, key: Hashable, interval: float, run: Callable[[], object], name: str, delay: float
    ) -> None:
        """Run `run` every `interval` seconds, the first time in `delay` seconds; replaces the
        job of that key (a run under way finishes, and the replaced job never runs again)."""
        with self._changed:
            old = self._jobs.get(key)
            generation = old.generation + 1 if old else 0
            if old is not None:
                old.cancelled = True
            job = _Job(key, interval, run, name, self._clock() + delay, generation)
            job.busy = bool(old and old.busy)  # still one run at a time across the replacement
            self._jobs[key] = job
            self._push(job)
            self._changed.notify()

    def cancel(self, key: Hashable) -> None:
        with self._changed:
            job = self._jobs.pop(key, None)
            if job is not None:
                job.cancelled = True

    def start(self) -> None:
        for i in range(self._workers):
            thread = threading.Thread(target=self._work, name=f"worker-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        dispatcher = threading.Thread(target=self._dispatch, name="scheduler", daemon=True)
        dispatcher.start()
        self._threads.append(dispatcher)

    def stop(self, timeout: float | None = None) -> None:
        """No new runs; the runs under way finish (waited for); runs waiting for a free worker
        are dropped."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        while True:  # drop what waits for a worker
            try:
                self._ready.get_nowait()
            except queue.Empty:
                break
        for _ in range(self._workers):
            self._ready.put(_STOP)
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    def _push(self, job: _Job) -> None:
        heapq.heappush(self._heap, _Due(job.due, next(self._seq), job, job.generation))

    def _dispatch(self) -> None:
        with self._changed:
            while not self._stopping:
                now = self._clock()
                while self._heap and self._heap[0].at <= now:
                    self._start_due(heapq.heappop(self._heap), now)
                wait = self._heap[0].at - now if self._heap else None
                self._changed.wait(wait)

    def _start_due(self, due: _Due, now: float) -> None:
        """Called with the lock held: hand a due run to the workers, and plan the next one."""
        job = due.job
        if job.cancelled or due.generation != job.generation:
            return
        if job.busy:
            job.skipped += 1
            logger.warning("%s: run skipped: the previous one is still running", job.name)
        else:
            job.busy = True
            self._ready.put(job)
        job.due = next_slot(job.due, job.interval, now)
        self._push(job)

    def _work(self) -> None:
        while True:
            job = self._ready.get()
            if job is _STOP:
                return
            assert isinstance(job, _Job)
            try:
                job.run()
            except Exception:  # a job's bug must not kill the worker
                logger.exception("%s: run failed", job.name)
            finally:
                with self._changed:
                    job.busy = False
                    current = self._jobs.get(job.key)
                    if current is not None and current is not job:
                        current.busy = False  # the replacement may run from now on
