"""Retries for transient failures, bounded by the time the current tick may still use.

Exponential backoff with full jitter, a server's Retry-After honoured (never beyond the budget),
and a per-tick deadline set by the engine: a retry that would end after it is not attempted, and
`call_timeout` cuts each call's own timeout to it, so one tick never overruns its polling interval.
Outside a tick (start-up, leader election) the default budget applies.
"""

from __future__ import annotations

import contextvars
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_BUDGET_SECONDS = 10.0
MIN_CALL_TIMEOUT_SECONDS = 0.25
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("deadline", default=None)


@dataclass(frozen=True)
class Transient:
    """What a classifier says of a failure worth retrying."""

    retry_after: float | None = None  # the server's Retry-After, in seconds


# HTTP answers worth another try: too many requests, and the server's own failures.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


def after_status(status: int | None, headers: Any) -> Transient | None:
    """A Transient for a retryable HTTP status, with the answer's Retry-After (in seconds; an
    HTTP date, rare from these servers, leaves our own backoff in charge); None otherwise."""
    if status not in RETRYABLE_STATUSES:
        return None
    value = (headers or {}).get("Retry-After") or (headers or {}).get("retry-after")
    try:
        return Transient(float(value) if value is not None else None)
    except ValueError:
        return Transient()


@dataclass(frozen=True)
class Backoff:
    attempts: int = 4  # calls in all, the first included
    base: float = 0.1  # seconds before the second call (times up to 2**n, jittered)
    cap: float = 2.0  # no single wait longer than this


@contextmanager
def budget(seconds: float) -> Iterator[None]:
    """Calls inside this block retry only while `seconds` from now have not passed."""
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining() -> float:
    deadline = _deadline.get()
    if deadline is None:
        return DEFAULT_BUDGET_SECONDS
    return deadline - time.monotonic()


def call_timeout(limit: float) -> float:
    """The timeout of one outside call: `limit`, cut to what the current tick has left, so a
    server that answers slowly cannot stretch a tick past its polling interval either. Never
    below MIN_CALL_TIMEOUT_SECONDS (a write decided late in a tick still gets a fair chance);
    outside a tick, `limit` itself."""
    deadline = _deadline.get()
    if deadline is None:
        return limit
    return min(limit, max(MIN_CALL_TIMEOUT_SECONDS, deadline - time.monotonic()))


def call(
    operation: Callable[[], T],
    classify: Callable[[Exception], Transient | None],
    backoff: Backoff = Backoff(),
    sleep: Callable[[float], None] = time.sleep,
    rng: Callable[[], float] = random.random,
) -> T:
    """Run `operation`, retrying the failures `classify` calls transient, within the budget.

    The last failure is raised as it is; a permanent one at once.
    """
    started = time.monotonic()
    budget_left = remaining()
    for attempt in range(1, backoff.attempts + 1):
        attempt_started = time.monotonic()
        try:
            return operation()
        except Exception as exc:
            transient = classify(exc)
            if transient is None or attempt == backoff.attempts:
                raise
            wait = _wait(attempt, backoff, transient, rng)
            # Another try costs the wait and, likely, as long as this one took (a timeout).
            cost = wait + (time.monotonic() - attempt_started)
            if time.monotonic() - started + cost >= budget_left:
                raise  # no time left in this tick: the next tick is the retry
            sleep(wait)
    raise AssertionError("unreachable")  # the loop returns or raises


def _wait(attempt: int, backoff: Backoff, transient: Transient, rng: Callable[[], float]) -> float:
    if transient.retry_after is not None:
        return max(0.0, transient.retry_after)
    # Full jitter: spreads the retries of many rules hit by the same outage.
    return min(backoff.cap, backoff.base * 2 ** (attempt - 1)) * rng()
