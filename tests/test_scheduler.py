"""The daemon's scheduler (eventscaler/scheduler.py) with real threads and short intervals; every
wait is for a condition with a generous deadline. Scenarios covered:
- a job runs again and again, at once when its delay is 0
- never two runs of one job at once: a job held up while it falls due skips those runs (counted,
  logged as a warning naming it), and runs again once free
- a slow job delays only itself: another job keeps running meanwhile
- a cancelled job never runs again; a replaced job's old function never runs again, and the new
  one does not start while a run of the old one is under way
- stop waits for the runs under way, and nothing runs after it
- next_slot: a job late by several intervals runs once and keeps its phase
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from eventscaler.scheduler import Scheduler, next_slot
from tests.support.waiting import WAIT_SCALE

INTERVAL = 0.02


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout * WAIT_SCALE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


class Counter:
    def __init__(self, hold: threading.Event | None = None) -> None:
        self.runs = 0
        self.running = 0
        self.most_at_once = 0
        self.hold = hold
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self.runs += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        if self.hold is not None:
            self.hold.wait(30)
        with self._lock:
            self.running -= 1


@pytest.fixture
def scheduler() -> Iterator[Scheduler]:
    made = Scheduler(workers=4)
    made.start()
    yield made
    made.stop(timeout=30)


def test_a_job_runs_again_and_again(scheduler: Scheduler) -> None:
    job = Counter()
    scheduler.schedule("a", INTERVAL, job, "rule a", delay=0.0)
    wait_until(lambda: job.runs >= 5, "five runs")


def test_a_job_held_up_skips_its_runs_and_never_runs_twice_at_once(
    scheduler: Scheduler, caplog: pytest.LogCaptureFixture
) -> None:
    hold = threading.Event()
    slow, other = Counter(hold), Counter()
    with caplog.at_level(logging.WARNING, logger="eventscaler.scheduler"):
        scheduler.schedule("slow", INTERVAL, slow, "rule slow", delay=0.0)
        scheduler.schedule("other", INTERVAL, other, "rule other", delay=0.0)
        wait_until(lambda: slow.runs == 1, "the slow run to start")
        wait_until(lambda: other.runs >= 10, "the other job to keep running")  # delays only itself
        wait_until(lambda: "rule slow: run skipped" in caplog.text, "a skipped run")
    assert slow.runs == 1 and slow.most_at_once == 1
    hold.set()
    wait_until(lambda: slow.runs >= 3, "the slow job to run again once free")
    assert slow.most_at_once == 1
    assert "rule other" not in caplog.text


def test_a_cancelled_or_replaced_job_never_runs_again(scheduler: Scheduler) -> None:
    first, marker = Counter(), Counter()
    scheduler.schedule("a", INTERVAL, first, "rule a", delay=0.0)
    wait_until(lambda: first.runs >= 1, "a first run")
    scheduler.cancel("a")
    runs = first.runs
    scheduler.schedule("m", INTERVAL, marker, "marker", delay=0.0)
    wait_until(lambda: marker.runs >= 10, "ten intervals")
    assert first.runs <= runs + 1  # at most the run already handed to a worker


def test_a_replacement_waits_for_the_run_under_way(scheduler: Scheduler) -> None:
    hold = threading.Event()
    old = Counter(hold)
    scheduler.schedule("a", INTERVAL, old, "rule a", delay=0.0)
    wait_until(lambda: old.runs == 1, "the old run to start")
    new = Counter()
    scheduler.schedule("a", INTERVAL, new, "rule a", delay=0.0)
    marker = Counter()
    scheduler.schedule("m", INTERVAL, marker, "marker", delay=0.0)
    wait_until(lambda: marker.runs >= 10, "ten intervals")
    assert new.runs == 0  # one run of the job at a time, across the replacement
    hold.set()
    wait_until(lambda: new.runs >= 2, "the new function to run")
    assert old.runs == 1


def test_stop_waits_for_the_runs_under_way_and_nothing_runs_after() -> None:
    scheduler = Scheduler(workers=2)
    scheduler.start()
    release = threading.Event()
    finished: list[str] = []

    def slow() -> None:
        release.wait(30)
        finished.append("slow")

    job = Counter()
    scheduler.schedule("slow", 60.0, slow, "rule slow", delay=0.0)
    scheduler.schedule("a", INTERVAL, job, "rule a", delay=0.0)
    wait_until(lambda: job.runs >= 2, "runs")
    stopper = threading.Thread(target=scheduler.stop)
    stopper.start()
    wait_until(lambda: not scheduler.running, "stopping")
    assert stopper.is_alive()  # waiting for the slow run
    release.set()
    stopper.join(30)
    assert finished == ["slow"]
    runs = job.runs
    marker = threading.Event()
    threading.Timer(10 * INTERVAL, marker.set).start()
    marker.wait(30)
    assert job.runs == runs


@pytest.mark.parametrize(
    ("due", "now", "expected"),
    [(10.0, 10.0, 15.0), (10.0, 10.2, 15.0), (10.0, 14.99, 15.0), (10.0, 15.0, 20.0),
     (10.0, 37.0, 40.0)],
)  # fmt: skip
def test_next_slot_keeps_the_phase_and_coalesces(due: float, now: float, expected: float) -> None:
    assert next_slot(due, 5.0, now) == expected
