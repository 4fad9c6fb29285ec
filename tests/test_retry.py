"""Retries: eventscaler.retry on its own, and the Kubernetes adapter over real HTTP.

Scenarios:
- a transient failure is retried and the call succeeds; a permanent one is raised at once;
- the number of attempts is bounded; the waits grow and are jittered;
- Retry-After is honoured; a wait that would overrun the tick's budget is not taken;
- the Kubernetes adapter against the test server: 500s and dropped connections are retried, a 429
  waits its Retry-After, 404 and 403 are not retried, and a budget bounds the whole call, a
  slow server's included (each call's timeout is cut to the budget left).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventscaler import retry
from eventscaler.config import ScaleTargetRef
from eventscaler.kube import ClusterAccess, KubeError, ScaleTargetClient, build_api_client
from tests.support.kubeapi import KubeApiServer


class Flaky:
    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


def transient_value_errors(exc: Exception) -> retry.Transient | None:
    if isinstance(exc, ValueError):
        return retry.Transient(float(str(exc)) if str(exc) else None)
    return None


def test_transient_failures_are_retried_until_success() -> None:
    waits: list[float] = []
    flaky = Flaky([ValueError(), ValueError()])
    assert retry.call(flaky, transient_value_errors, sleep=waits.append, rng=lambda: 1.0) == "ok"
    assert flaky.calls == 3
    assert waits == [0.1, 0.2]  # exponential: base, 2 x base (rng 1.0 = no jitter cut)


def test_permanent_failure_is_raised_at_once() -> None:
    flaky = Flaky([KeyError("no")])
    with pytest.raises(KeyError):
        retry.call(flaky, transient_value_errors, sleep=lambda _: None)
    assert flaky.calls == 1


def test_attempts_are_bounded_and_the_last_error_raised() -> None:
    flaky = Flaky([ValueError() for _ in range(10)])
    with pytest.raises(ValueError):
        retry.call(flaky, transient_value_errors, retry.Backoff(attempts=3), lambda _: None)
    assert flaky.calls == 3


def test_jitter_and_cap() -> None:
    waits: list[float] = []
    flaky = Flaky([ValueError() for _ in range(6)])
    backoff = retry.Backoff(attempts=7, base=1.0, cap=3.0)
    retry.call(flaky, transient_value_errors, backoff, waits.append, rng=lambda: 0.5)
    assert waits == [0.5, 1.0, 1.5, 1.5, 1.5, 1.5]


def test_retry_after_is_honoured_within_the_budget() -> None:
    waits: list[float] = []
    with retry.budget(5.0):
        retry.call(Flaky([ValueError("2")]), transient_value_errors, sleep=waits.append)
    assert waits == [2.0]

    flaky = Flaky([ValueError("2")])
    with retry.budget(1.0), pytest.raises(ValueError):  # 2 s would overrun the tick
        retry.call(flaky, transient_value_errors, sleep=waits.append)
    assert flaky.calls == 1 and waits == [2.0]


# --- the Kubernetes adapter against the test server ------------------------------------------

WEB = ScaleTargetRef("web")


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KubeApiServer, Path]]:
    with KubeApiServer() as server:
        server.create_deployment("default", "web", replicas=3)
        yield server, server.write_kubeconfig(tmp_path_factory.mktemp("kube") / "kubeconfig")


@pytest.fixture
def scaler(kube: tuple[KubeApiServer, Path]) -> Iterator[ScaleTargetClient]:
    server, kubeconfig = kube
    api = build_api_client(ClusterAccess(str(kubeconfig)))
    yield ScaleTargetClient(api, timeout_seconds=2)
    server.clear_faults()
    api.close()


def requests_to(server: KubeApiServer, path_end: str) -> int:
    return sum(1 for r in server.requests if r["path"].endswith(path_end))


def test_server_errors_and_dropped_connections_are_retried(
    kube: tuple[KubeApiServer, Path], scaler: ScaleTargetClient
) -> None:
    server, _ = kube
    server.clear_requests()
    server.inject_fault(r"/deployments/web$", status=500, count=1)
    server.inject_fault(r"/deployments/web$", status=None, drop=True, count=1)
    assert scaler.read("default", WEB).replicas == 3
    assert requests_to(server, "/deployments/web") == 3


def test_429_waits_its_retry_after(
    kube: tuple[KubeApiServer, Path], scaler: ScaleTargetClient
) -> None:
    server, _ = kube
    server.inject_fault(r"/deployments/web/scale$", method="PATCH", status=429, retry_after=1,
                        count=1)  # fmt: skip
    started = time.monotonic()
    scaler.set_replicas("default", WEB, 4)
    assert time.monotonic() - started >= 1.0
    assert server.get_deployment("default", "web")["spec"]["replicas"] == 4


def test_not_found_and_forbidden_are_not_retried(
    kube: tuple[KubeApiServer, Path], scaler: ScaleTargetClient
) -> None:
    server, _ = kube
    server.clear_requests()
    with pytest.raises(KubeError) as missing:
        scaler.read("default", ScaleTargetRef("nope"))
    assert missing.value.reason == "NotFound"
    server.inject_fault(r"/deployments/web$", status=403)
    with pytest.raises(KubeError) as forbidden:
        scaler.read("default", WEB)
    assert forbidden.value.status == 403
    assert requests_to(server, "/deployments/nope") == 1
    assert requests_to(server, "/deployments/web") == 1


def test_a_budget_bounds_a_failing_call(
    kube: tuple[KubeApiServer, Path], scaler: ScaleTargetClient
) -> None:
    server, _ = kube
    server.inject_fault(r"/deployments/web$", status=503)
    started = time.monotonic()
    with retry.budget(0.5), pytest.raises(KubeError) as failed:
        scaler.read("default", WEB)
    assert time.monotonic() - started < 1.0
    assert failed.value.status == 503


def test_a_call_timeout_is_cut_to_the_budget_left() -> None:
    assert retry.call_timeout(10.0) == 10.0  # outside a tick: the limit itself
    with retry.budget(3.0):
        assert 2.9 < retry.call_timeout(10.0) <= 3.0
        assert retry.call_timeout(1.0) == 1.0
    with retry.budget(-1.0):  # spent: still a fair chance, not a zero timeout
        assert retry.call_timeout(10.0) == retry.MIN_CALL_TIMEOUT_SECONDS
        assert retry.call_timeout(0.1) == 0.1


def test_a_slow_server_cannot_stretch_a_call_past_the_budget(
    kube: tuple[KubeApiServer, Path], scaler: ScaleTargetClient
) -> None:
    server, _ = kube
    server.inject_fault(r"/deployments/web$", status=None, delay=3)  # the scaler's timeout is 2 s
    started = time.monotonic()
    with retry.budget(0.5), pytest.raises(KubeError) as failed:
        scaler.read("default", WEB)
    assert time.monotonic() - started < 1.0
    assert failed.value.reason == "Unreachable"


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (429, {"Retry-After": "3"}, retry.Transient(3.0)),
        (503, {"retry-after": "0.5"}, retry.Transient(0.5)),
        (500, {}, retry.Transient()),
        (502, None, retry.Transient()),
        (503, {"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}, retry.Transient()),
        (404, {"Retry-After": "3"}, None),
        (409, {}, None),
        (None, {}, None),
    ],
)
def test_after_status_classifies_http_answers(
    status: int | None, headers: dict[str, str] | None, expected: retry.Transient | None
) -> None:
    assert retry.after_status(status, headers) == expected
