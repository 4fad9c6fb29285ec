"""The rules' schedule (eventscaler/schedule.py): APScheduler lanes with real threads and short
intervals; every wait is for a condition with a generous deadline. Scenarios covered:
- a job runs at once and then again and again; placed not at once, its first run waits about
  one interval
- rules placed together share one lane (one APScheduler job); another interval is another lane;
  the last rule to leave a lane removes its job
- never two runs of one job at once: a job held up while it falls due skips those runs (logged as
  a warning naming it) and runs again once free; a slow job delays only itself
- a cancelled job never runs again; a replaced job's old run never runs again, and the new one
  does not start while a run of the old one is under way
- a job that raises is logged and keeps its schedule
- stop waits for the runs under way, and nothing runs after it
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from eventscaler.schedule import PHASE_STEP, RuleSchedule
from tests.support.waiting import WAIT_SCALE

INTERVAL = 0.05


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
        self.times: list[float] = []
        self.hold = hold
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self.runs += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            self.times.append(time.monotonic())
        if self.hold is not None:
            self.hold.wait(30)
        with self._lock:
            self.running -= 1


@pytest.fixture
def schedule() -> Iterator[RuleSchedule]:
    made = RuleSchedule(workers=4)
    made.start()
    yield made
    made.stop()


def test_a_job_runs_at_once_and_again_and_again(schedule: RuleSchedule) -> None:
    job = Counter()
    schedule.place("a", INTERVAL, job, at_once=True)
    wait_until(lambda: job.runs >= 5, "five runs")


def test_a_job_placed_not_at_once_first_runs_about_one_interval_later(
    schedule: RuleSchedule,
) -> None:
    job = Counter()
    placed = time.monotonic()
    schedule.place("a", 1.0, job, at_once=False)
    wait_until(lambda: job.runs >= 1, "a first run")
    assert job.times[0] - placed >= 1.0 - PHASE_STEP - 0.01


def test_rules_placed_together_share_a_lane_and_the_last_to_leave_removes_it(
    schedule: RuleSchedule,
) -> None:
    jobs = {f"r{i}": Counter() for i in range(50)}
    for name, job in jobs.items():
        schedule.place(name, 30.0, job, at_once=True)
    assert schedule.lanes <= 2  # one, or two if placing straddled a phase step
    schedule.place("other", 60.0, Counter(), at_once=True)
    assert schedule.lanes <= 3
    wait_until(lambda: all(job.runs == 1 for job in jobs.values()), "every rule's first run")
    for name in jobs:
        schedule.cancel(name)
    schedule.cancel("other")
    assert schedule.lanes == 0
    assert [job.id for job in schedule._scheduler.get_jobs()] == []


def test_a_job_held_up_skips_its_runs_and_never_runs_twice_at_once(
    schedule: RuleSchedule, caplog: pytest.LogCaptureFixture
) -> None:
    hold = threading.Event()
    slow, other = Counter(hold), Counter()
    with caplog.at_level(logging.WARNING, logger="eventscaler.schedule"):
        schedule.place("slow", INTERVAL, slow, at_once=True)
        schedule.place("other", INTERVAL, other, at_once=True)
        wait_until(lambda: slow.runs == 1, "the slow run to start")
        wait_until(lambda: other.runs >= 10, "the other job to keep running")  # delays only itself
        wait_until(lambda: "rule slow: run skipped" in caplog.text, "a skipped run")
    assert slow.runs == 1 and slow.most_at_once == 1
    hold.set()
    wait_until(lambda: slow.runs >= 3, "the slow job to run again once free")
    assert slow.most_at_once == 1
    # (Not that "other" never skipped: on a loaded machine one of its 50 ms runs may overrun.)
    assert other.most_at_once == 1


def test_a_cancelled_job_never_runs_again(schedule: RuleSchedule) -> None:
    first, marker = Counter(), Counter()
    schedule.place("a", INTERVAL, first, at_once=True)
    wait_until(lambda: first.runs >= 1, "a first run")
    schedule.cancel("a")
    runs = first.runs
    schedule.place("m", INTERVAL, marker, at_once=True)
    wait_until(lambda: marker.runs >= 10, "ten intervals")
    assert first.runs <= runs + 1  # at most the run already handed to a worker


def test_a_replacement_waits_for_the_run_under_way(schedule: RuleSchedule) -> None:
    hold = threading.Event()
    old = Counter(hold)
    schedule.place("a", INTERVAL, old, at_once=True)
    wait_until(lambda: old.runs == 1, "the old run to start")
    new, marker = Counter(), Counter()
    schedule.place("a", INTERVAL, new, at_once=True)
    schedule.place("m", INTERVAL, marker, at_once=True)
    wait_until(lambda: marker.runs >= 10, "ten intervals")
    assert new.runs == 0  # one run of the job at a time, across the replacement
    hold.set()
    wait_until(lambda: new.runs >= 2, "the new function to run")
    assert old.runs == 1


def test_a_job_that_raises_is_logged_and_keeps_its_schedule(
    schedule: RuleSchedule, caplog: pytest.LogCaptureFixture
) -> None:
    runs = Counter()

    def failing() -> None:
        runs()
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="eventscaler.schedule"):
        schedule.place("bad", INTERVAL, failing, at_once=True)
        wait_until(lambda: runs.runs >= 3, "three runs despite the errors")
    assert "rule bad: run failed" in caplog.text and "boom" in caplog.text


def test_stop_waits_for_the_runs_under_way_and_nothing_runs_after() -> None:
    schedule = RuleSchedule(workers=2)
    schedule.start()
    release = threading.Event()
    finished: list[str] = []

    def slow() -> None:
        release.wait(30)
        finished.append("slow")

    job = Counter()
    schedule.place("slow", 60.0, slow, at_once=True)
    schedule.place("a", INTERVAL, job, at_once=True)
    wait_until(lambda: job.runs >= 2, "runs")
    stopper = threading.Thread(target=schedule.stop)
    stopper.start()
    wait_until(lambda: not schedule.running, "stopping")
    assert stopper.is_alive()  # waiting for the slow run
    release.set()
    stopper.join(30)
    assert not stopper.is_alive() and finished == ["slow"]
    runs = job.runs
    marker = threading.Event()
    threading.Timer(10 * INTERVAL, marker.set).start()
    marker.wait(30)
    assert job.runs == runs
