"""Lease leader election (eventscaler/leader.py), one protocol round at a time.

An in-memory Lease stands in for the API server: it hands out resourceVersions and answers 409
to a write carrying a stale one, or to a create when the Lease exists. Each candidate has its
own fake clock, so expiry "by our own clock" is checked without sleeping. Scenarios covered:
- no Lease: the first round creates it (acquired, transitions 0) and we are leader
- renewal: the holder writes with the resourceVersion it read and keeps acquireTime
- a live holder that renews is waited out, however long; another candidate is never leader
- an expired Lease is taken over after lease_duration by the taker's own clock, counted from
  when it first saw the current record (not by the record's age); transitions + 1
- a released Lease (empty holder) is taken at once
- two candidates racing for one Lease: the one whose write gets 409 is not leader
- a leader whose renew is answered 409 loses leadership on the next round, when it sees the new
  holder
- a leader that cannot read or write the Lease stays leader until renew_deadline, then not;
  the deadline counts from when the renewal was sent, not from a late answer
- stop(): the holder releases the Lease (empty holder, acquireTime kept), so another candidate
  takes it at once; a candidate that does not hold it writes nothing
- the timing parameters are checked; start()/stop() run the loop in a thread
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace

import pytest

from eventscaler.kube import KubeError, LeaseRecord
from eventscaler.leader import LeaderElector

DURATION, DEADLINE, RETRY = 15.0, 10.0, 2.0


@dataclass
class Clock:
    now: float = 1_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeLease:
    """One Lease object with optimistic concurrency, as the API server keeps it."""

    namespace: str = "ops"
    name: str = "eventscaler"
    record: LeaseRecord | None = None
    version: int = 0
    writes: list[tuple[LeaseRecord, bool]] = field(default_factory=list)
    fail_get: bool = False
    fail_write: bool = False
    after_get: list[object] = field(default_factory=list)  # callables run once, after a get

    def get(self) -> LeaseRecord | None:
        if self.fail_get:
            raise KubeError("Unreachable", "cannot get lease: timed out")
        record = self.record
        while self.after_get:
            self.after_get.pop(0)()  # type: ignore[operator]
        return record

    def write(self, record: LeaseRecord, now_rfc3339: str, acquired: bool) -> None:
        if self.fail_write:
            raise KubeError("InternalError", "cannot write lease: 500", 500)
        if record.resource_version is None and self.record is not None:
            raise KubeError("AlreadyExists", "lease exists", 409)
        current_version = self.record.resource_version if self.record else None
        if record.resource_version is not None and record.resource_version != current_version:
            raise KubeError("Conflict", "the object has been modified", 409)
        self.version += 1
        acquire_time = now_rfc3339 if acquired else record.acquire_time
        self.record = replace(record, resource_version=str(self.version),
                              acquire_time=acquire_time)  # fmt: skip
        self.writes.append((record, acquired))

    @property
    def holder(self) -> str | None:
        return self.record.holder if self.record else None


def elector(lease: FakeLease, identity: str, clock: Clock) -> LeaderElector:
    return LeaderElector(lease, identity, DURATION, DEADLINE, RETRY, clock=clock)  # type: ignore[arg-type]


def test_no_lease_is_created_and_we_lead() -> None:
    lease, clock = FakeLease(), Clock()
    a = elector(lease, "a", clock)
    assert a.is_leader() is False
    assert a.try_acquire_or_renew() is True
    assert a.is_leader() is True
    assert lease.record is not None
    assert (lease.holder, lease.record.transitions, lease.record.lease_duration_seconds) == (
        "a", 0, 15
    )  # fmt: skip
    assert lease.writes[0][0].resource_version is None  # a create
    assert lease.writes[0][1] is True  # acquired: acquireTime set


def test_the_holder_renews_with_the_version_it_read_and_keeps_acquire_time() -> None:
    lease, clock = FakeLease(), Clock()
    a = elector(lease, "a", clock)
    a.try_acquire_or_renew()
    assert lease.record is not None
    acquired_at = lease.record.acquire_time
    for _ in range(20):  # far longer than the lease duration, renewing every retry period
        clock.now += RETRY
        assert a.try_acquire_or_renew() is True
        assert a.is_leader() is True
    renewals = lease.writes[1:]
    assert all(acquired is False for _, acquired in renewals)
    assert [r.resource_version for r, _ in renewals] == [str(v) for v in range(1, 21)]
    assert lease.record.acquire_time == acquired_at
    assert lease.record.transitions == 0


def test_a_live_holder_is_waited_out() -> None:
    lease = FakeLease()
    clock_a, clock_b = Clock(), Clock(50_000.0)  # clocks need not agree
    a, b = elector(lease, "a", clock_a), elector(lease, "b", clock_b)
    a.try_acquire_or_renew()
    for _ in range(30):
        clock_a.now += RETRY
        clock_b.now += RETRY
        a.try_acquire_or_renew()
        assert b.try_acquire_or_renew() is False
        assert b.is_leader() is False
    assert lease.holder == "a"
    assert all(r.holder == "a" for r, _ in lease.writes)


def test_an_expired_lease_is_taken_after_lease_duration_by_our_own_clock() -> None:
    lease = FakeLease()
    a = elector(lease, "a", Clock())
    a.try_acquire_or_renew()  # then "a" dies without releasing
    clock_b = Clock(9_999_000.0)  # "b" starts much later: the record's age does not count
    b = elector(lease, "b", clock_b)
    assert b.try_acquire_or_renew() is False  # first sight of this record starts b's count
    first_seen = clock_b.now
    while clock_b.now < first_seen + DURATION - RETRY:
        clock_b.now += RETRY
        assert b.try_acquire_or_renew() is False
    clock_b.now = first_seen + DURATION - 0.001
    assert b.try_acquire_or_renew() is False
    clock_b.now = first_seen + DURATION
    assert b.try_acquire_or_renew() is True
    assert b.is_leader() is True
    assert lease.record is not None
    assert (lease.holder, lease.record.transitions) == ("b", 1)
    assert lease.writes[-1][1] is True  # a new acquireTime


def test_a_renewal_restarts_the_count_of_a_waiting_candidate() -> None:
    lease = FakeLease()
    clock_a, clock_b = Clock(), Clock()
    a, b = elector(lease, "a", clock_a), elector(lease, "b", clock_b)
    a.try_acquire_or_renew()
    b.try_acquire_or_renew()
    clock_a.now += DURATION - 1
    clock_b.now += DURATION - 1
    a.try_acquire_or_renew()  # renewed just in time (late, but before expiry)
    b.try_acquire_or_renew()  # sees a new record: counts again from here
    clock_b.now += DURATION - 1
    assert b.try_acquire_or_renew() is False
    clock_b.now += 1
    assert b.try_acquire_or_renew() is True


def test_a_released_lease_is_taken_at_once() -> None:
    lease = FakeLease(record=LeaseRecord("", 15, 4, "7"), version=7)
    b = elector(lease, "b", Clock())
    assert b.try_acquire_or_renew() is True
    assert lease.record is not None
    assert (lease.holder, lease.record.transitions) == ("b", 5)


def test_two_candidates_race_and_the_409_loser_is_not_leader() -> None:
    lease = FakeLease(record=LeaseRecord("", 15, 0, "3"), version=3)
    a, b = elector(lease, "a", Clock()), elector(lease, "b", Clock())
    # "b" reads the released Lease, then "a" writes before "b" does.
    lease.after_get.append(lambda: a.try_acquire_or_renew())
    assert b.try_acquire_or_renew() is False
    assert b.is_leader() is False
    assert a.is_leader() is True
    assert lease.holder == "a"


def test_two_candidates_creating_at_once_and_the_loser_is_not_leader() -> None:
    lease = FakeLease()
    a, b = elector(lease, "a", Clock()), elector(lease, "b", Clock())
    lease.after_get.append(lambda: a.try_acquire_or_renew())
    assert b.try_acquire_or_renew() is False  # its create is answered 409
    assert (a.is_leader(), b.is_leader(), lease.holder) == (True, False, "a")


def test_a_leader_whose_renew_conflicts_steps_down_on_seeing_the_new_holder(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lease, clock = FakeLease(), Clock()
    a = elector(lease, "a", clock)
    a.try_acquire_or_renew()

    def taken_over() -> None:
        assert lease.record is not None
        lease.version += 1
        lease.record = LeaseRecord("b", 15, 1, str(lease.version))

    clock.now += RETRY
    lease.after_get.append(taken_over)
    with caplog.at_level(logging.INFO, logger="eventscaler.leader"):
        a.try_acquire_or_renew()  # 409: "b" wrote in between
        clock.now += RETRY
        assert a.try_acquire_or_renew() is False
    assert a.is_leader() is False  # well before renew_deadline
    assert any("now held by b" in r.getMessage() for r in caplog.records)
    assert lease.holder == "b"


@pytest.mark.parametrize("failure", ["fail_get", "fail_write"])
def test_without_a_renewal_leadership_ends_at_renew_deadline(failure: str) -> None:
    lease, clock = FakeLease(), Clock()
    a = elector(lease, "a", clock)
    a.try_acquire_or_renew()
    renewed_at = clock.now
    setattr(lease, failure, True)
    while clock.now + RETRY < renewed_at + DEADLINE:
        clock.now += RETRY
        assert a.try_acquire_or_renew() is True
    clock.now = renewed_at + DEADLINE - 0.001
    assert a.is_leader() is True
    clock.now = renewed_at + DEADLINE
    assert a.is_leader() is False
    assert a.try_acquire_or_renew() is False
    # The API comes back and the Lease still names us: leader again.
    setattr(lease, failure, False)
    assert a.try_acquire_or_renew() is True


def test_renew_deadline_counts_from_before_a_slow_write() -> None:
    lease, clock = FakeLease(), Clock()
    a = elector(lease, "a", clock)
    a.try_acquire_or_renew()
    clock.now += RETRY
    sent_at = clock.now
    write = lease.write

    def slow_write(record: LeaseRecord, now_rfc3339: str, acquired: bool) -> None:
        write(record, now_rfc3339, acquired)  # applied at once: a follower's count starts here
        clock.now += 6.0  # the answer comes back late

    lease.write = slow_write  # type: ignore[method-assign]
    assert a.try_acquire_or_renew() is True
    # A follower may take over at sent_at + DURATION: we must stop before, whatever the latency.
    clock.now = sent_at + DEADLINE
    assert a.is_leader() is False


def test_stop_releases_the_lease_for_an_immediate_successor() -> None:
    lease = FakeLease()
    a, b = elector(lease, "a", Clock()), elector(lease, "b", Clock())
    a.try_acquire_or_renew()
    b.try_acquire_or_renew()
    assert lease.record is not None
    acquired_at = lease.record.acquire_time
    a.stop()
    assert a.is_leader() is False
    assert lease.record is not None
    assert (lease.holder, lease.record.acquire_time) == ("", acquired_at)
    assert lease.writes[-1][1] is False
    assert b.try_acquire_or_renew() is True  # no need to wait for expiry


def test_stop_writes_nothing_when_not_holding() -> None:
    lease = FakeLease()
    a, b = elector(lease, "a", Clock()), elector(lease, "b", Clock())
    a.try_acquire_or_renew()
    b.try_acquire_or_renew()
    writes = len(lease.writes)
    b.stop()
    assert len(lease.writes) == writes
    assert lease.holder == "a"


def test_stop_does_not_release_a_lease_taken_over_meanwhile() -> None:
    lease, clock = FakeLease(), Clock()
    a = elector(lease, "a", clock)
    a.try_acquire_or_renew()
    assert lease.record is not None
    lease.version += 1
    lease.record = LeaseRecord("b", 15, 1, str(lease.version))
    writes = len(lease.writes)
    a.stop()  # still leader by its own clock, but the Lease is no longer ours
    assert len(lease.writes) == writes
    assert lease.holder == "b"
    assert a.is_leader() is False


@pytest.mark.parametrize(
    ("duration", "deadline", "retry"), [(15, 15, 2), (15, 10, 10), (10, 15, 2)]
)
def test_timings_must_be_retry_below_deadline_below_duration(
    duration: float, deadline: float, retry: float
) -> None:
    with pytest.raises(ValueError, match="retry_period < renew_deadline < lease_duration"):
        LeaderElector(FakeLease(), "a", duration, deadline, retry)  # type: ignore[arg-type]
    assert LeaderElector(FakeLease(), "a", 15, 10, 2).is_leader() is False  # type: ignore[arg-type]


def test_start_campaigns_in_a_thread_and_stop_releases() -> None:
    lease = FakeLease()
    a = LeaderElector(lease, "a", 0.3, 0.2, 0.005, clock=Clock())  # type: ignore[arg-type]
    a.start()
    try:
        deadline = time.monotonic() + 2.0
        while lease.holder != "a" and time.monotonic() < deadline:
            time.sleep(0.001)
        assert a.is_leader() is True
    finally:
        a.stop()
    assert lease.holder == ""
    assert not any(t.name == "leader-election" and t.is_alive() for t in threading.enumerate())
