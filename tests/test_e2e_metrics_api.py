"""End to end: the real daemon process, a real HTTP endpoint the test controls, the API test server.

- the endpoint's value goes 0 -> 42 (targetValue 5): the Deployment goes 0 -> 9 in one write
  (ceil(42 / 5)); back to 0 -> to 0 replicas once it stayed 0 for the cooldown;
- the endpoint stopped mid-run: the rule holds its replicas, reports the error naming the
  endpoint (never its query), and follows the value again once the endpoint is back;
- a wrong bearer token, and a URL from urlFromEnv whose query carries a signature: a per-rule
  Unauthorized error naming the rule and the env var, the replicas held (that neither the token
  nor the signature shows anywhere: tests/test_secrets.py);
- `validate` names a misspelt field.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import write_rules
from tests.support.cluster import Cluster, wait_for
from tests.support.daemon_process import run_command
from tests.support.metrics_api_server import MetricsApiServer
from tests.support.source_e2e import (
    COOLDOWN,
    POLL,
    health,
    rule_for,
    source_daemon,
    status_row,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def endpoint() -> Iterator[MetricsApiServer]:
    with MetricsApiServer() as server:
        yield server


@pytest.fixture(autouse=True)
def open_endpoint(endpoint: MetricsApiServer) -> None:
    endpoint.require(None)


def tasks(value: float) -> str:
    return json.dumps({"components": {"worker": {"tasks": value}}})


def trigger(url: str, **fields: object) -> dict[str, object]:
    return {"type": "metrics-api", "url": url, "valueLocation": "components.worker.tasks",
            "targetValue": 5, **fields}  # fmt: skip


def test_value_up_scales_in_one_poll_then_back_to_zero_after_the_cooldown(
    cluster: Cluster, endpoint: MetricsApiServer, unique: str, tmp_path: Path
) -> None:
    endpoint.answer(tasks(0))
    cluster.create_deployment(unique, replicas=0)
    url = endpoint.url(f"/{unique}/stats")
    rules = write_rules(
        tmp_path / "rules.yaml", [rule_for(unique, cluster.namespace, trigger(url))]
    )
    target = f"{cluster.namespace}/{unique}"
    with source_daemon(cluster, rules, {}) as proc:
        proc.wait_for_output(rf"{target}: rule {unique}: 0 -> 0")
        endpoint.answer(tasks(42))
        wait_for(lambda: cluster.replicas(unique) == 9, 10, what="0 -> 9")
        proc.assert_scale_lines([(target, 0, 9)])
        endpoint.answer(tasks(0))
        lowered = time.monotonic()
        wait_for(lambda: cluster.replicas(unique) == 0, COOLDOWN + 10, what="9 -> 0")
        assert time.monotonic() - lowered >= COOLDOWN - POLL
        proc.assert_scale_lines([(target, 0, 9), (target, 9, 0)])
        assert proc.stop() == 0


def test_endpoint_stopped_holds_the_replicas_reports_and_recovers(
    cluster: Cluster, endpoint: MetricsApiServer, unique: str, tmp_path: Path
) -> None:
    endpoint.answer(tasks(18))
    cluster.create_deployment(unique, replicas=0)
    url = endpoint.url(f"/{unique}")
    rules = write_rules(
        tmp_path / "rules.yaml", [rule_for(unique, cluster.namespace, trigger(url))]
    )
    error = (
        rf"rule {unique}: .*metrics-api http://127\.0\.0\.1:{endpoint.port}/{unique} at "
        rf"'components\.worker\.tasks': Unavailable: cannot reach 127\.0\.0\.1:{endpoint.port}"
    )
    with source_daemon(cluster, rules, {}) as proc:
        wait_for(lambda: cluster.replicas(unique) == 4, 10, what="0 -> 4")
        endpoint.stop()
        try:
            proc.wait_for_output(error)
            failing_since = time.monotonic()
            wait_for(
                lambda: (
                    time.monotonic() - failing_since > COOLDOWN + 2 * POLL
                    and proc.output.count("Unavailable: cannot reach") >= 4
                ),
                COOLDOWN + 20,
                what="failed reads for longer than the cooldown",
            )
            assert cluster.replicas(unique) == 4
        finally:
            endpoint.start()
        endpoint.answer(tasks(31))
        wait_for(lambda: cluster.replicas(unique) == 7, 15, what="4 -> 7 once it is back")
        assert proc.stop() == 0


def test_wrong_credentials_are_a_clear_per_rule_error(
    cluster: Cluster, endpoint: MetricsApiServer, unique: str, tmp_path: Path
) -> None:
    token, wrong = "right-token-5d41402abc4b2a76", "wrong-token-7d793037a0760186"
    signature = "sig0123456789abcdef0123"
    endpoint.answer(tasks(12))
    endpoint.require(
        lambda seen: (
            seen.headers.get("Authorization") == f"Bearer {token}"
            or seen.query.get("sig") == signature
        )
    )
    for name in (f"{unique}-bearer", f"{unique}-url"):
        cluster.create_deployment(name, replicas=1)
    bearer = trigger(endpoint.url(f"/{unique}"), authMode="bearer", tokenFromEnv="STATS_TOKEN")
    by_url = trigger("", urlFromEnv="STATS_URL")
    del by_url["url"]
    rules = write_rules(
        tmp_path / "rules.yaml",
        [rule_for(f"{unique}-bearer", cluster.namespace, bearer),
         rule_for(f"{unique}-url", cluster.namespace, by_url)],
    )  # fmt: skip
    env = {
        "STATS_TOKEN": wrong,
        "STATS_URL": endpoint.url(f"/{unique}") + f"?sig={signature[:-1]}x&page=1",
    }
    with source_daemon(cluster, rules, env) as proc:
        proc.wait_for_output(
            rf"rule {unique}-bearer: .*Unauthorized: HTTP 401: the endpoint refused the bearer "
            r"credential from env STATS_TOKEN"
        )
        proc.wait_for_output(
            rf"rule {unique}-url: .*metrics-api URL from env STATS_URL at "
            r"'components\.worker\.tasks': Unauthorized: HTTP 401"
        )
        metrics, status = health(proc)
        assert proc.stop() == 0
    assert cluster.replicas(f"{unique}-bearer") == 1
    assert "Unauthorized" in status_row(status, f"{unique}-bearer")["error"]
    assert "Unauthorized" in status_row(status, f"{unique}-url")["error"]
    assert 'kind="Unauthorized"' in metrics


def test_validate_names_a_misspelt_field(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n"
        "  - name: stats\n"
        "    deployment: worker\n"
        "    triggers:\n"
        "      - type: metrics-api\n"
        "        url: http://127.0.0.1:3232/api/v1/stats\n"
        "        valueLocation: components.worker.tasks\n"
        "        targetValeu: 8\n"
    )
    result = run_command(["validate", str(rules)])
    assert result.returncode == 2
    assert (
        f"{rules}: rules[0] (stats).triggers[0].targetValeu: unknown field "
        "(did you mean 'targetValue'?)" in result.stderr
    )
