"""Leader election with a coordination.k8s.io/v1 Lease: only the holder scales.

The same protocol as client-go's leader election, reduced to what we need:
- every `retry_period` each replica reads the Lease; the holder renews it, the others take it when
  its record has not changed for `lease_duration` as seen by their own clock (no trust in the
  other's wall clock), or when it has no holder (released);
- every write carries the resourceVersion read, so two candidates cannot both win: one gets 409;
- the holder considers itself leader only while its last renewal is younger than `renew_deadline`
  (shorter than the lease duration), so it stops scaling before anyone else may start;
- on shutdown the holder releases the Lease (empty holder), so a successor takes over at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from eventscaler.kube import KubeError, LeaseClient, LeaseRecord

logger = logging.getLogger(__name__)


class LeaderElector:
    def __init__(
        self,
        lease: LeaseClient,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not retry_period < renew_deadline < lease_duration:
            raise ValueError("need retry_period < renew_deadline < lease_duration")
        self._lease = lease
        self.identity = identity
        self._duration = lease_duration
        self._renew_deadline = renew_deadline
        self._retry_period = retry_period
        self._clock = clock
        self._renewed_at: float | None = None  # when we last wrote the Lease as holder
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0  # when the observed record last changed, by our clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="leader-election", daemon=True)

    def is_leader(self) -> bool:
        renewed = self._renewed_at
        return renewed is not None and self._clock() - renewed < self._renew_deadline

    def start(self) -> LeaderElector:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop campaigning and release the Lease if we hold it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._retry_period + 5)
        if self.is_leader():
            self._release()

    def try_acquire_or_renew(self) -> bool:
        """One round of the protocol; returns whether we hold the Lease afterwards."""
        now = self._clock()
        try:
            record = self._lease.get()
        except KubeError as exc:
            logger.warning("leader election: cannot read lease %s: %s", self._where(), exc)
            return self.is_leader()
        if record != self._observed:
            self._observed, self._observed_at = record, now
        if record is None:
            return self._write(LeaseRecord(self.identity, self._duration_s(), 0), acquired=True)
        if record.holder == self.identity:
            return self._write(record, acquired=False)
        expired = now - self._observed_at >= self._duration
        if record.holder and not expired:
            self._lost_if_leader(record.holder)
            return False
        claim = LeaseRecord(
            self.identity,
            self._duration_s(),
            record.transitions + 1,
            record.resource_version,
        )
        return self._write(claim, acquired=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.try_acquire_or_renew()
            self._stop.wait(self._retry_period)

    def _write(self, record: LeaseRecord, acquired: bool) -> bool:
        was_leader = self.is_leader()
        # From before the write: the server may apply it at once, and a follower's lease_duration
        # starts from then, so a slow answer must not stretch our renew_deadline.
        sent_at = self._clock()
        try:
            self._lease.write(record, _now_microtime(), acquired)
        except KubeError as exc:
            # 409: someone else wrote first; anything else: we could not renew. Either way we
            # stay leader only until renew_deadline runs out.
            logger.info("leader election: lease %s not written: %s", self._where(), exc)
            return self.is_leader()
        self._renewed_at = sent_at
        if not was_leader:
            logger.info("leader election: %s is now the leader (lease %s)", self.identity,
                        self._where())  # fmt: skip
        return True

    def _lost_if_leader(self, holder: str) -> None:
        if self._renewed_at is not None:
            logger.warning("leader election: lease %s now held by %s", self._where(), holder)
            self._renewed_at = None

    def _release(self) -> None:
        try:
            current = self._lease.get()
            if current is None or current.holder != self.identity:
                return
            released = LeaseRecord("", self._duration_s(), current.transitions,
                                    current.resource_version, current.acquire_time)  # fmt: skip
            self._lease.write(released, _now_microtime(), acquired=False)
            logger.info("leader election: released lease %s", self._where())
        except KubeError as exc:
            logger.warning("leader election: could not release lease %s: %s", self._where(), exc)
        finally:
            self._renewed_at = None

    def _duration_s(self) -> int:
        return max(1, round(self._duration))

    def _where(self) -> str:
        return f"{self._lease.namespace}/{self._lease.name}"


def _now_microtime() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
