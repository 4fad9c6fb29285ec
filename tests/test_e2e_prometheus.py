"""End to end: the real daemon process, the real Prometheus (scraping an endpoint the test
controls), and the Kubernetes API test server (or E2E_KUBECONFIG's cluster).

- the scraped value goes 0 -> 42 (threshold 5): the Deployment goes 0 -> 9 in one write
  (KEDA's ceil(42 / 5)); back to 0 -> 0 replicas once it stayed 0 for the cooldown;
- Prometheus stopped mid-run: the rule holds its replicas well past the cooldown, logs the
  error naming the rule and the server, and follows the value again once Prometheus is back;
- wrong credentials (a wrong basic password on a Prometheus that requires one; a wrong bearer
  token and a wrong custom auth header through a proxy that checks them; an address from
  serverAddressFromEnv with a password and a token in it) and a bad query (inline, and from
  queryFromEnv with a secret in it): a clear per-rule error each, the replicas held (that no
  secret shows anywhere is the sweep's, tests/test_secrets.py);
- `validate` names a misspelt field.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.conftest import write_rules
from tests.support.cluster import Cluster, wait_for
from tests.support.daemon_process import run_command
from tests.support.prometheus_proxy import PrometheusProxy
from tests.support.servers.prometheus import GuardedPrometheusServer, PrometheusServer
from tests.support.source_e2e import (
    COOLDOWN,
    POLL,
    health,
    rule_for,
    source_daemon,
    status_row,
    wait_failing_past_the_cooldown,
)
from tests.test_secrets import random_key

pytestmark = pytest.mark.e2e

METRIC = "e2e_backlog"


def trigger(address: str, series: str, **fields: Any) -> dict[str, Any]:
    return {"type": "prometheus", "serverAddress": address, "query": f"sum({series})",
            "threshold": 5, **fields}  # fmt: skip


def set_backlog(prometheus: PrometheusServer, name: str, value: float) -> str:
    """Serve `e2e_backlog{rule=name}` = value and wait until a query sees it; the series."""
    prometheus.metrics.set(METRIC, value, rule=name)
    series = f'{METRIC}{{rule="{name}"}}'
    prometheus.wait_for_value(f"sum({series})", value)
    return series


def test_value_up_scales_in_one_poll_then_back_to_zero_after_the_cooldown(
    cluster: Cluster, prometheus_server: PrometheusServer, unique: str, tmp_path: Path
) -> None:
    series = set_backlog(prometheus_server, unique, 0)
    cluster.create_deployment(unique, replicas=0)
    rule = rule_for(unique, cluster.namespace, trigger(prometheus_server.url, series))
    rules = write_rules(tmp_path / "rules.yaml", [rule])
    target = f"{cluster.namespace}/{unique}"
    with source_daemon(cluster, rules, {}) as proc:
        proc.wait_for_output(rf"{target}: rule {unique}: 0 -> 0")
        set_backlog(prometheus_server, unique, 42)
        wait_for(lambda: cluster.replicas(unique) == 9, 15, what="0 -> 9")
        proc.assert_scale_lines([(target, 0, 9)])
        lowered = time.monotonic()
        set_backlog(prometheus_server, unique, 0)
        wait_for(lambda: cluster.replicas(unique) == 0, COOLDOWN + 15, what="9 -> 0")
        # No tick read 0 before `lowered`, and one read 42 within a poll of it: the cooldown
        # counts from then, however long the scrape took to show the 0.
        assert time.monotonic() - lowered >= COOLDOWN - POLL
        proc.assert_scale_lines([(target, 0, 9), (target, 9, 0)])
        assert proc.stop() == 0


def test_prometheus_stopped_holds_the_replicas_reports_and_recovers(
    cluster: Cluster, prometheus_server: PrometheusServer, unique: str, tmp_path: Path
) -> None:
    series = set_backlog(prometheus_server, unique, 18)
    cluster.create_deployment(unique, replicas=0)
    rule = rule_for(unique, cluster.namespace, trigger(prometheus_server.url, series))
    rules = write_rules(tmp_path / "rules.yaml", [rule])
    port = prometheus_server.port()
    error = (
        rf"rule {unique}: source read failed: .*prometheus http://127\.0\.0\.1:{port} query "
        rf"'sum\({METRIC}\{{rule=\"{unique}\"\}}\)': Unavailable: cannot reach 127\.0\.0\.1:{port}"
    )
    with source_daemon(cluster, rules, {}) as proc:
        wait_for(lambda: cluster.replicas(unique) == 4, 15, what="0 -> 4")
        with prometheus_server.stopped():
            wait_failing_past_the_cooldown(proc, error)
            assert cluster.replicas(unique) == 4
        set_backlog(prometheus_server, unique, 31)
        wait_for(lambda: cluster.replicas(unique) == 7, 20, what="4 -> 7 once it is back")
        assert proc.stop() == 0


def test_wrong_credentials_and_bad_queries_are_per_rule_errors(
    cluster: Cluster,
    prometheus_server: PrometheusServer,
    prometheus_guarded_server: GuardedPrometheusServer,
    unique: str,
    tmp_path: Path,
) -> None:
    guarded, p = prometheus_guarded_server, unique
    token, header_value = random_key()[:32], random_key()[:28]
    wrong_password, url_password, url_token = (random_key()[:24] for _ in range(3))
    query_secret = random_key()[:20].replace("/", "x").replace("+", "y")
    series = set_backlog(prometheus_server, p, 12)
    host = guarded.url.removeprefix("http://")
    with PrometheusProxy(prometheus_server.url) as proxy:
        proxy.require(lambda seen: False)  # every credential is refused: each path logs it
        env = {
            "PROM_USER": guarded.USERNAME,
            "PROM_PW": wrong_password,
            "PROM_TOKEN": token,
            "PROM_KEY": header_value,
            "PROM_URL": f"http://ops:{quote(url_password, safe='')}@{host}/?access_token="
                        f"{quote(url_token, safe='')}",
            "PROM_QUERY": f'sum({METRIC}{{rule="{query_secret}"}}',  # unclosed: a bad query
        }  # fmt: skip
        triggers = {
            f"{p}-basic": trigger(guarded.url, series, authModes="basic",
                                  usernameFromEnv="PROM_USER", passwordFromEnv="PROM_PW"),
            f"{p}-bearer": trigger(proxy.url, series, authModes="bearer",
                                   bearerTokenFromEnv="PROM_TOKEN"),
            f"{p}-custom": trigger(proxy.url, series, authModes="custom",
                                   customAuthHeader="X-Api-Key", customAuthValueFromEnv="PROM_KEY"),
            f"{p}-url": {**trigger("", series), "serverAddress": None,
                         "serverAddressFromEnv": "PROM_URL"},
            f"{p}-badquery": {**trigger(prometheus_server.url, series), "query": "sum(up"},
            f"{p}-envquery": {**trigger(prometheus_server.url, series), "query": None,
                              "queryFromEnv": "PROM_QUERY"},
        }  # fmt: skip
        rules = []
        for name, fields in triggers.items():
            cluster.create_deployment(name, replicas=1)
            fields = {k: v for k, v in fields.items() if v is not None}
            rules.append(rule_for(name, cluster.namespace, fields))
        path = write_rules(tmp_path / "rules.yaml", rules)
        evidence = {
            f"{p}-basic": r"Unauthorized: HTTP 401: the server refused the basic credential from "
                          r"env PROM_PW",
            f"{p}-bearer": r"Unauthorized: HTTP 401: the server refused the bearer credential "
                           r"from env PROM_TOKEN",
            f"{p}-custom": r"Unauthorized: HTTP 401: the server refused the custom credential "
                           r"from env PROM_KEY",
            f"{p}-url": r"prometheus server from env PROM_URL query .*Unauthorized: HTTP 401",
            f"{p}-badquery": r"query 'sum\(up': ServiceError: HTTP 400: bad query: bad_data: "
                             r"invalid parameter \"query\": 1:7: parse error: unclosed left",
            f"{p}-envquery": r"query from env PROM_QUERY: ServiceError: HTTP 400: bad query: "
                             r"bad_data \(the server's message is not shown: the query is a "
                             r"secret\)",
        }  # fmt: skip
        with source_daemon(cluster, path, env) as proc:
            for name, pattern in evidence.items():
                proc.wait_for_output(rf"rule {name}: source read failed: .*{pattern}", timeout=30)
            metrics, status = health(proc)
            assert proc.stop() == 0
        assert any(
            seen.headers.get("Authorization") == f"Bearer {token}" for seen in proxy.requests
        )
    for name in triggers:
        assert cluster.replicas(name) == 1, name
    assert "Unauthorized" in status_row(status, f"{p}-basic")["error"]
    assert 'kind="Unauthorized"' in metrics and 'kind="ServiceError"' in metrics


def test_validate_names_a_misspelt_field(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n"
        "  - name: api\n"
        "    deployment: api\n"
        "    triggers:\n"
        "      - type: prometheus\n"
        "        serverAddress: http://127.0.0.1:9090\n"
        "        query: sum(rate(http_requests_total[2m]))\n"
        "        treshold: 100\n"
    )
    result = run_command(["validate", str(rules)])
    assert result.returncode == 2
    assert (
        f"{rules}: rules[0] (api).triggers[0].treshold: unknown field (did you mean "
        "'threshold'?)" in result.stderr
    )
