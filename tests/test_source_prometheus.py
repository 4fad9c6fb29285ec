"""The prometheus source against the real Prometheus (Debian's 2.42, tests/support/servers/).

Scenarios:
- metadata, table-driven (tests/support/source_tables.py): valid rows (KEDA's fields and
  defaults, customHeaders and queryParameters as KEDA's `a=1,b=2` string or a mapping, KEDA's
  timeout in milliseconds, each authModes, the FromEnv forms) load with their settings, target
  and activation; invalid rows give the exact error line (a misspelt key, no threshold, both or
  neither of serverAddress/serverAddressFromEnv and query/queryFromEnv, an address carrying a
  password or a token-like query parameter, an inline bearerToken/password/customAuthValue, an
  Authorization or token-like custom header, a token-like query parameter, authModes tls or two
  modes, a credential field of another mode, a missing one);
- the number, on the real server: one element, an aggregate, a scalar, a value moved by the
  test and seen after the next scrape; an empty vector is 0 with ignoreNullValues (default)
  and an error without; several elements, NaN, +Inf, -Inf, a range vector and a string are
  BadResponse errors naming the query; a bad query is the server's own message (kept back
  when the query is from the environment); a wrong path prefix is NotFound;
- credentials on the real server with basic auth (GuardedPrometheusServer): the right login
  reads; a wrong password is Unauthorized naming the env var, never the secret; an unset
  variable is MissingCredential;
- what Prometheus ignores, seen by a recording proxy in front of the real server: the bearer
  token, the custom auth header, customHeaders (X-Scope-OrgID), namespace and queryParameters
  as query parameters, an address from serverAddressFromEnv with its own query string (shown
  as scheme://host/path only, its values registered for redaction);
- outages: a closed port is Unavailable within the tick's budget, a silent server a Timeout
  within the trigger's timeout;
- convert: KEDA's documented trigger with a TriggerAuthentication (bearerToken; username and
  password) converts to the FromEnv fields with the env vars to add, cortexOrgID becomes the
  X-Scope-OrgID header, an address with a credential goes to serverAddressFromEnv, tls is
  reported; every output loads;
- simulate replays a prometheus rule; the commented example of config.example.yaml loads;
  requests' import is not a reason to load the module for other rules.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eventscaler import retry
from eventscaler.config import parse_rules_text
from eventscaler.redact import redact
from eventscaler.sources.prometheus import (
    PrometheusReadError,
    PrometheusSource,
    prometheus_trigger,
)
from tests.conftest import write_rules
from tests.support import silent
from tests.support.daemon_process import run_command
from tests.support.prometheus_proxy import PrometheusProxy
from tests.support.servers.prometheus import GuardedPrometheusServer, PrometheusServer
from tests.support.source_tables import assert_invalid, assert_valid
from tests.support.source_tests import closed_port, commented_example, e2e_rule, sdk_loaded

TYPE = "prometheus"
BASE = {"serverAddress": "http://127.0.0.1:9090", "query": "sum(jobs)", "threshold": 10}
USE_ENV = "put the whole address in an environment variable and name that variable in " \
          "serverAddressFromEnv"  # fmt: skip

VALID: list[tuple[dict[str, Any], dict[str, Any]]] = [
    (BASE, {"settings.server_address": "http://127.0.0.1:9090", "settings.query": "sum(jobs)",
            "target": 10.0, "activation": 0.0, "name": "prometheus",
            "settings.ignore_null_values": True, "settings.unsafe_ssl": False,
            "settings.timeout": None, "settings.namespace": "", "settings.auth_modes": ""}),
    ({**BASE, "threshold": 100.5, "activationThreshold": 5.5, "name": "rps"},
     {"target": 100.5, "activation": 5.5, "name": "rps"}),
    ({**BASE, "ignoreNullValues": "false", "unsafeSsl": "true", "timeout": "1500"},
     {"settings.ignore_null_values": False, "settings.unsafe_ssl": True,
      "settings.timeout": 1.5}),
    ({**BASE, "timeout": "2s", "namespace": "team-a"},
     {"settings.timeout": 2.0, "settings.namespace": "team-a"}),
    ({**BASE, "customHeaders": "X-Scope-OrgID=tenant-1, X-Client-Id=cid",
      "queryParameters": "dedup=true,partial_response=false"},
     {"settings.custom_headers": (("X-Scope-OrgID", "tenant-1"), ("X-Client-Id", "cid")),
      "settings.query_parameters": (("dedup", "true"), ("partial_response", "false"))}),
    ({**BASE, "customHeaders": {"X-Scope-OrgID": "tenant-1"}, "queryParameters": {"dedup": True}},
     {"settings.custom_headers": (("X-Scope-OrgID", "tenant-1"),),
      "settings.query_parameters": (("dedup", "True"),)}),
    ({**BASE, "authModes": "bearer", "bearerTokenFromEnv": "PROM_TOKEN"},
     {"settings.auth_modes": "bearer", "settings.bearer_token_from_env": "PROM_TOKEN"}),
    ({**BASE, "authModes": "Basic", "username": "ops", "passwordFromEnv": "PROM_PW"},
     {"settings.auth_modes": "basic", "settings.username": "ops",
      "settings.password_from_env": "PROM_PW"}),
    ({**BASE, "authModes": "basic", "usernameFromEnv": "PROM_USER"},
     {"settings.username_from_env": "PROM_USER", "settings.password_from_env": ""}),
    ({**BASE, "authModes": "custom", "customAuthHeader": "X-Api-Key",
      "customAuthValueFromEnv": "PROM_KEY"},
     {"settings.custom_auth_header": "X-Api-Key", "settings.custom_auth_value_from_env":
      "PROM_KEY"}),
    ({"serverAddressFromEnv": "PROM_URL", "queryFromEnv": "PROM_QUERY", "threshold": 3},
     {"settings.server_address": "", "settings.server_address_from_env": "PROM_URL",
      "settings.query": "", "settings.query_from_env": "PROM_QUERY"}),
    ({**BASE, "serverAddress": "http://127.0.0.1:8481/select/0/prometheus"},
     {"settings.server_address": "http://127.0.0.1:8481/select/0/prometheus"}),
    ({**BASE, "metricType": "Value"}, {"metric_type": "Value"}),
]  # fmt: skip

INVALID: list[tuple[dict[str, Any], str]] = [
    ({**BASE, "qeury": "x"}, "triggers[0].qeury: unknown field (did you mean 'query'?)"),
    ({**BASE, "threshold": None}, "triggers[0].threshold: is required"),
    ({**BASE, "threshold": "ten"}, "triggers[0].threshold: expected a positive number"),
    ({**BASE, "activationThreshold": -1},
     "triggers[0].activationThreshold: expected a number >= 0"),
    ({**BASE, "serverAddress": None},
     "triggers[0].serverAddress: give serverAddress or serverAddressFromEnv, one of them"),
    ({**BASE, "serverAddressFromEnv": "U"},
     "triggers[0].serverAddress: give serverAddress or serverAddressFromEnv, one of them, not "
     "both"),
    ({**BASE, "query": None}, "triggers[0].query: give query or queryFromEnv, one of them"),
    ({**BASE, "query": "  "}, "triggers[0].query: expected a PromQL expression"),
    ({**BASE, "serverAddress": "http://ops:hunter2@127.0.0.1:9090"},
     f"triggers[0].serverAddress: the address carries a credential (a user or password in "
     f"the URL): {USE_ENV}"),
    ({**BASE, "serverAddress": "http://127.0.0.1:9090?api_key=hunter2"},
     f"triggers[0].serverAddress: the address carries a credential (the query parameter "
     f"'api_key'): {USE_ENV}"),
    ({**BASE, "serverAddress": "127.0.0.1:9090"},
     "triggers[0].serverAddress: expected an http:// or https:// URL with a host, got "
     "'127.0.0.1:9090'"),
    ({**BASE, "authModes": "bearer", "bearerToken": "hunter2"},
     "triggers[0].bearerToken: a secret never sits in the rule file: put it in an environment "
     "variable and name that variable in bearerTokenFromEnv"),
    ({**BASE, "password": "hunter2"}, "triggers[0].password: a secret never sits"),
    ({**BASE, "customAuthValue": "hunter2"}, "in customAuthValueFromEnv"),
    ({**BASE, "customHeaders": "Authorization=Bearer hunter2"},
     "triggers[0].customHeaders: the header 'Authorization' carries a credential, which never "
     "sits in the rule file: use authModes (bearer, basic, or custom with customAuthHeader and "
     "customAuthValueFromEnv)"),
    ({**BASE, "customHeaders": "X-Api-Key=hunter2"},
     "triggers[0].customHeaders: the header 'X-Api-Key' carries a credential"),
    ({**BASE, "customHeaders": "X-Scope-OrgID"},
     "triggers[0].customHeaders: expected headers as name=value,..., got 'X-Scope-OrgID'"),
    ({**BASE, "customHeaders": "Bad Header=1"},
     "triggers[0].customHeaders: expected header names, got 'Bad Header'"),
    ({**BASE, "queryParameters": "access_token=hunter2"},
     "triggers[0].queryParameters: the query parameter 'access_token' carries a credential"),
    ({**BASE, "queryParameters": "query=up"},
     "triggers[0].queryParameters: 'query' is set by the trigger's own query field"),
    ({**BASE, "authModes": "tls"},
     "triggers[0].authModes: expected 'bearer' or 'basic' or 'custom', got 'tls'"),
    ({**BASE, "authModes": "bearer,basic"},
     "triggers[0].authModes: expected one mode, got 'bearer,basic'"),
    ({**BASE, "bearerTokenFromEnv": "T"},
     "triggers[0].bearerTokenFromEnv: only applies with authModes bearer"),
    ({**BASE, "authModes": "bearer"},
     "triggers[0].bearerTokenFromEnv: is required with authModes bearer"),
    ({**BASE, "authModes": "basic", "passwordFromEnv": "P"},
     "triggers[0].username: give username or usernameFromEnv with authModes basic, one of them"),
    ({**BASE, "authModes": "custom", "customAuthValueFromEnv": "V"},
     "triggers[0].customAuthHeader: is required with authModes custom"),
    ({**BASE, "ignoreNullValues": "maybe"},
     "triggers[0].ignoreNullValues: expected true or false, got 'maybe'"),
    ({**BASE, "timeout": 0}, "triggers[0].timeout: expected a duration of more than zero"),
    ({**BASE, "bearerTokenFromEnv": "not a name", "authModes": "bearer"},
     "triggers[0].bearerTokenFromEnv: expected the name of an environment variable"),
]  # fmt: skip


@pytest.mark.parametrize(("metadata", "expected"), VALID)
def test_valid_metadata(metadata: dict[str, Any], expected: dict[str, Any]) -> None:
    assert_valid(TYPE, metadata, expected)


@pytest.mark.parametrize(("metadata", "fragment"), INVALID)
def test_invalid_metadata(metadata: dict[str, Any], fragment: str) -> None:
    row = {k: v for k, v in metadata.items() if v is not None}
    assert_invalid(TYPE, row, fragment)
    if "hunter2" in str(row):
        from tests.support.source_tables import load_trigger

        assert "hunter2" not in str(load_trigger(TYPE, row)[0])


# --- the number, on the real server ------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus(prometheus_server: PrometheusServer) -> PrometheusServer:
    """The session's Prometheus with this module's series, scraped at least once."""
    metrics = prometheus_server.metrics
    metrics.set("ptest_jobs", 42, queue="orders")
    metrics.set("ptest_jobs", 7, queue="mail")
    metrics.set("ptest_broken", float("nan"))
    metrics.set("ptest_huge", float("inf"))
    metrics.set("ptest_low", float("-inf"))
    prometheus_server.wait_for_value('ptest_jobs{queue="orders"}', 42)
    prometheus_server.wait_for_value('count(ptest_jobs{queue="mail"})', 1)
    prometheus_server.wait_for_value("count(ptest_low)", 1)
    return prometheus_server


def read(address: str, query: str, env: dict[str, str] | None = None, **fields: Any) -> float:
    reader = PrometheusSource(env or {}, timeout_seconds=2.0)
    try:
        return reader.read(prometheus_trigger(address, query, 5.0, **fields))
    finally:
        reader.close()


@pytest.mark.parametrize(
    ("query", "fields", "expected"),
    [
        ('ptest_jobs{queue="orders"}', {}, 42.0),  # a vector of one element
        ("sum(ptest_jobs)", {}, 49.0),  # KEDA's documented shape: an aggregate
        ("scalar(sum(ptest_jobs))", {}, 49.0),  # a scalar
        ("2.5", {}, 2.5),
        ("ptest_absent", {}, 0.0),  # empty: 0 with ignoreNullValues (KEDA's default)
        ('sum(ptest_jobs{queue="none"})', {}, 0.0),
    ],
)
def test_the_value_of_the_query(
    prometheus: PrometheusServer, query: str, fields: dict[str, Any], expected: float
) -> None:
    assert read(prometheus.url, query, **fields) == expected


def test_the_value_follows_the_scraped_metric(prometheus: PrometheusServer) -> None:
    series = 'ptest_moving{queue="q"}'
    prometheus.metrics.set("ptest_moving", 3, queue="q")
    prometheus.wait_for_value(series, 3)
    assert read(prometheus.url + "/", series) == 3.0  # a trailing slash is fine
    prometheus.metrics.set("ptest_moving", 11, queue="q")
    prometheus.wait_for_value(series, 11)
    assert read(prometheus.url, series) == 11.0


@pytest.mark.parametrize(
    ("query", "fields", "code", "detail"),
    [
        ("ptest_jobs", {}, "MultipleElements",
         "the query gives 2 elements, not one: aggregate it (sum, max, ...)"),
        ("ptest_absent", {"ignore_null_values": False}, "EmptyResult",
         "the query gives an empty vector (the target may be lost; ignoreNullValues: true "
         "reads it as 0)"),
        ("ptest_broken", {}, "NotFinite", "the query gives NaN, not a finite number"),
        ("ptest_huge", {}, "NotFinite", "the query gives +Inf, not a finite number"),
        ("ptest_low", {}, "NotFinite", "the query gives -Inf, not a finite number"),
        ("0/0", {}, "NotFinite", "the query gives NaN, not a finite number"),
        ("ptest_jobs[1m]", {}, "UnsupportedResultType",
         "the query gives a range vector (matrix), not an instant vector or a scalar"),
        ('"text"', {}, "UnsupportedResultType",
         "the query gives a string, not an instant vector or a scalar"),
    ],
)  # fmt: skip
def test_answers_without_one_finite_number_are_errors_naming_the_query(
    prometheus: PrometheusServer, query: str, fields: dict[str, Any], code: str, detail: str
) -> None:
    with pytest.raises(PrometheusReadError) as error:
        read(prometheus.url, query, **fields)
    assert (error.value.kind, error.value.code) == ("BadResponse", code)
    assert str(error.value) == f"prometheus {prometheus.url} query {query!r}: BadResponse: {detail}"


def test_a_bad_query_is_the_servers_own_message(prometheus: PrometheusServer) -> None:
    with pytest.raises(PrometheusReadError) as error:
        read(prometheus.url, "sum(ptest_jobs")
    assert (error.value.kind, error.value.code) == ("ServiceError", "BadQuery")
    assert str(error.value) == (
        f"prometheus {prometheus.url} query 'sum(ptest_jobs': ServiceError: HTTP 400: bad query: "
        'bad_data: invalid parameter "query": 1:15: parse error: unclosed left parenthesis'
    )


def test_a_bad_query_from_the_environment_is_never_quoted(prometheus: PrometheusServer) -> None:
    secret_query = 'sum(ptest_jobs{token="q-secret-0b1c2d3e"}'
    reader = PrometheusSource({"PROM_QUERY": secret_query}, timeout_seconds=2.0)
    trigger = prometheus_trigger(prometheus.url, "", 5.0, query_from_env="PROM_QUERY")
    with pytest.raises(PrometheusReadError) as error:
        reader.read(trigger)
    assert str(error.value) == (
        f"prometheus {prometheus.url} query from env PROM_QUERY: ServiceError: HTTP 400: bad "
        "query: bad_data (the server's message is not shown: the query is a secret)"
    )
    assert redact(f"q={secret_query}") == "q=***"


def test_a_wrong_prefix_is_not_found(prometheus: PrometheusServer) -> None:
    with pytest.raises(PrometheusReadError) as error:
        read(prometheus.url + "/select/0/prometheus", "1")
    assert error.value.kind == "NotFound"
    assert "HTTP 404: no query API at /api/v1/query" in str(error.value)


# --- credentials: basic auth on the real server ------------------------------------------------


def test_basic_auth_on_the_real_server(prometheus_guarded_server: GuardedPrometheusServer) -> None:
    server = prometheus_guarded_server
    right = {"PROM_USER": server.USERNAME, "PROM_PW": server.PASSWORD}
    wrong = {**right, "PROM_PW": "wrong-pw-3c4d5e6f7a"}
    fields = {
        "auth_modes": "basic",
        "username_from_env": "PROM_USER",
        "password_from_env": "PROM_PW",
    }
    assert read(server.url, "vector(4)", right, **fields) == 4.0
    plain_user = {
        "auth_modes": "basic",
        "username": server.USERNAME,
        "password_from_env": "PROM_PW",
    }
    assert read(server.url, "vector(5)", right, **plain_user) == 5.0
    with pytest.raises(PrometheusReadError) as error:
        read(server.url, "vector(4)", wrong, **fields)
    message = str(error.value)
    assert error.value.kind == "Unauthorized"
    assert message == (
        f"prometheus {server.url} query 'vector(4)': Unauthorized: HTTP 401: the server refused "
        "the basic credential from env PROM_PW"
    )
    assert "wrong-pw-3c4d5e6f7a" not in message and server.PASSWORD not in message
    with pytest.raises(PrometheusReadError) as error:
        read(server.url, "vector(4)")
    assert error.value.kind == "Unauthorized" and "(no authModes is set)" in str(error.value)


def test_an_unset_credential_variable_is_missing_credential(prometheus: PrometheusServer) -> None:
    with pytest.raises(PrometheusReadError) as error:
        read(prometheus.url, "1", {}, auth_modes="bearer", bearer_token_from_env="NO_TOKEN")
    assert error.value.kind == "MissingCredential"
    assert "the environment variable NO_TOKEN (the bearer token) is unset or empty" in str(
        error.value
    )


# --- what Prometheus ignores, seen by a proxy in front of it -----------------------------------


@pytest.fixture
def proxy(prometheus: PrometheusServer) -> Iterator[PrometheusProxy]:
    with PrometheusProxy(prometheus.url) as running:
        yield running


TOKEN = "prom-token-8e7d6c5b4a39"


def test_bearer_token_headers_namespace_and_parameters_are_sent(proxy: PrometheusProxy) -> None:
    proxy.require(lambda seen: seen.headers.get("Authorization") == f"Bearer {TOKEN}")
    value = read(
        proxy.url, "sum(ptest_jobs)", {"PROM_TOKEN": TOKEN}, auth_modes="bearer",
        bearer_token_from_env="PROM_TOKEN", namespace="team-a",
        custom_headers=(("X-Scope-OrgID", "tenant-1"),),
        query_parameters=(("dedup", "true"),),
    )  # fmt: skip
    assert value == 49.0
    seen = proxy.requests[-1]
    assert seen.path == "/api/v1/query"
    assert seen.query == [("query", "sum(ptest_jobs)"), ("namespace", "team-a"), ("dedup", "true")]
    assert seen.headers["X-Scope-OrgID"] == "tenant-1"
    with pytest.raises(PrometheusReadError) as error:
        read(proxy.url, "1", {"PROM_TOKEN": "wrong-token-0a1b2c3d"}, auth_modes="bearer",
             bearer_token_from_env="PROM_TOKEN")  # fmt: skip
    assert error.value.kind == "Unauthorized"
    assert "the bearer credential from env PROM_TOKEN" in str(error.value)
    assert "wrong-token-0a1b2c3d" not in str(error.value)


def test_custom_auth_header(proxy: PrometheusProxy) -> None:
    proxy.require(lambda seen: seen.headers.get("X-Api-Key") == TOKEN)
    assert read(proxy.url, "vector(6)", {"K": TOKEN}, auth_modes="custom",
                custom_auth_header="X-Api-Key", custom_auth_value_from_env="K") == 6.0  # fmt: skip
    assert redact(TOKEN) == "***"


def test_basic_auth_without_a_password_sends_the_user_alone(proxy: PrometheusProxy) -> None:
    user_only = "Basic " + base64.b64encode(b"api-key-as-user-9f8e7d:").decode()
    proxy.require(lambda seen: seen.headers.get("Authorization") == user_only)
    assert read(proxy.url, "vector(1)", {"U": "api-key-as-user-9f8e7d"}, auth_modes="basic",
                username_from_env="U") == 1.0  # fmt: skip


def test_an_address_from_the_environment_keeps_its_query_and_is_never_shown(
    proxy: PrometheusProxy,
) -> None:
    address = proxy.url + "/?access_token=addr-secret-5a6b7c8d9e"
    env = {"PROM_URL": address}
    reader = PrometheusSource(env, timeout_seconds=2.0)
    trigger = prometheus_trigger("", "vector(8)", 5.0, server_address_from_env="PROM_URL")
    assert reader.read(trigger) == 8.0
    assert proxy.requests[-1].query == [("access_token", "addr-secret-5a6b7c8d9e"),
                                        ("query", "vector(8)")]  # fmt: skip
    proxy.require(lambda seen: False)
    with pytest.raises(PrometheusReadError) as error:
        reader.read(trigger)
    assert str(error.value) == (
        "prometheus server from env PROM_URL query 'vector(8)': Unauthorized: HTTP 401: the "
        "server refused the request (no authModes is set)"
    )
    assert redact(f"GET {address}") == "GET ***" and redact("addr-secret-5a6b7c8d9e") == "***"


# --- outages -----------------------------------------------------------------------------------


def test_a_closed_port_is_unavailable_within_the_budget() -> None:
    port = closed_port()
    began = time.monotonic()
    with retry.budget(2.0), pytest.raises(PrometheusReadError) as error:
        read(f"http://127.0.0.1:{port}", "up")
    assert time.monotonic() - began < 4.0
    assert error.value.kind == "Unavailable"
    assert str(error.value) == (
        f"prometheus http://127.0.0.1:{port} query 'up': Unavailable: cannot reach 127.0.0.1:{port}"
    )


@pytest.fixture
def silent_port() -> Iterator[int]:
    with silent.silent_port() as port:
        yield port


def test_a_silent_server_times_out_within_the_trigger_timeout(silent_port: int) -> None:
    began = time.monotonic()
    with retry.budget(1.0), pytest.raises(PrometheusReadError) as error:
        read(f"http://127.0.0.1:{silent_port}", "up", timeout=0.3)
    assert time.monotonic() - began < 3.0
    assert error.value.kind == "Timeout" and "timeout 0.3 s" in str(error.value)


def test_one_session_reused_and_closed(prometheus: PrometheusServer) -> None:
    reader = PrometheusSource({}, timeout_seconds=2.0)
    trigger = prometheus_trigger(prometheus.url, "1", 5.0)
    reader.read(trigger)
    session = reader._sessions.get()
    reader.read(trigger)
    assert reader._sessions.get() is session
    reader.close()
    assert not reader._sessions.open


# --- convert and simulate ----------------------------------------------------------------------

# KEDA's documented example, with a TriggerAuthentication holding the bearer token.
SCALED_OBJECT = """
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {name: keda-prom-creds, namespace: default}
spec:
  secretTargetRef:
  - {parameter: bearerToken, name: keda-prom-secret, key: bearerToken}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: prometheus-scaledobject, namespace: default}
spec:
  scaleTargetRef: {name: my-deployment}
  triggers:
  - type: prometheus
    metadata:
      serverAddress: http://127.0.0.1:9090
      query: sum(rate(http_requests_total{deployment="my-deployment"}[2m]))
      threshold: '100.50'
      activationThreshold: '5.5'
      namespace: example-namespace
      customHeaders: X-Client-Id=cid,X-Tenant-Id=tid
      ignoreNullValues: "false"
      queryParameters: key-1=value-1,key-2=value-2
      unsafeSsl: "false"
      timeout: "1000"
      authModes: bearer
    authenticationRef: {name: keda-prom-creds}
"""


def converted(text: str) -> tuple[Any, list[str], str]:
    from eventscaler.convert import convert_text, render_rules

    conversion = convert_text(text, "so.yaml")
    rendered = render_rules(conversion, "so.yaml")
    result = parse_rules_text(rendered, "converted.yaml")
    assert result.problems == ()
    return result.rules[0], [str(n) for n in conversion.notes], rendered


def test_convert_maps_every_field_and_the_bearer_token() -> None:
    rule, notes, _ = converted(SCALED_OBJECT)
    (trigger,) = rule.triggers
    s = trigger.settings
    assert (trigger.type, trigger.target, trigger.activation) == ("prometheus", 100.5, 5.5)
    assert s.query == 'sum(rate(http_requests_total{deployment="my-deployment"}[2m]))'
    assert (s.server_address, s.namespace, s.ignore_null_values, s.timeout) == (
        "http://127.0.0.1:9090", "example-namespace", False, 1.0)  # fmt: skip
    assert s.custom_headers == (("X-Client-Id", "cid"), ("X-Tenant-Id", "tid"))
    assert s.query_parameters == (("key-1", "value-1"), ("key-2", "value-2"))
    assert (s.auth_modes, s.bearer_token_from_env) == ("bearer", "KEDA_PROM_CREDS_BEARERTOKEN")
    assert any(
        "{name: KEDA_PROM_CREDS_BEARERTOKEN, valueFrom: {secretKeyRef: {name: keda-prom-secret, "
        "key: bearerToken}}}" in n
        for n in notes
    )


def test_convert_basic_auth_cortex_org_id_and_tls() -> None:
    text = (
        SCALED_OBJECT.replace("parameter: bearerToken, name: keda-prom-secret, key: bearerToken",
                              "parameter: username, name: s, key: u}\n  - {parameter: password, "
                              "name: s, key: p")
        .replace("authModes: bearer", 'authModes: "tls,basic"\n      cortexOrgID: my-org')
        .replace("      customHeaders: X-Client-Id=cid,X-Tenant-Id=tid\n", "")
    )  # fmt: skip
    rule, notes, _ = converted(text)
    s = rule.triggers[0].settings
    assert (s.auth_modes, s.username_from_env, s.password_from_env) == (
        "basic", "KEDA_PROM_CREDS_USERNAME", "KEDA_PROM_CREDS_PASSWORD")  # fmt: skip
    assert s.custom_headers == (("X-Scope-OrgID", "my-org"),)
    assert any("authModes: not converted: only bearer, basic, custom" in n for n in notes)
    assert any("cortexOrgID: note: sent as customHeaders X-Scope-OrgID" in n for n in notes)


def test_convert_moves_an_address_with_a_credential_to_the_environment() -> None:
    text = SCALED_OBJECT.replace("http://127.0.0.1:9090", "http://ops:pl41n-pw@127.0.0.1:9090")
    rule, notes, rendered = converted(text)
    assert rule.triggers[0].settings.server_address_from_env == "PROMETHEUS_URL"
    assert "pl41n-pw" not in rendered and not any("pl41n-pw" in n for n in notes)


def test_convert_reports_a_trigger_that_would_not_load() -> None:
    from eventscaler.convert import convert_text

    text = SCALED_OBJECT.replace("authModes: bearer", "authModes: custom").replace(
        "parameter: bearerToken", "parameter: customAuthValue"
    )
    notes = [str(n) for n in convert_text(text, "so.yaml").notes]
    assert any("metadata.customAuthHeader: not converted: is required with authModes custom" in n
               for n in notes), notes  # fmt: skip


def test_simulate_replays_a_prometheus_rule(tmp_path: Path) -> None:
    trigger = {"type": TYPE, **BASE}
    rules = write_rules(tmp_path / "rules.yaml", [e2e_rule("orders", "default", trigger)])
    result = run_command(["simulate", "--config", str(rules), "--rule", "orders",
                          "--scenario", "flood", "--duration", "120"])  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "on prometheus http://127.0.0.1:9090 query 'sum(jobs)' (target 10/replica" in (
        result.stdout
    )
    assert "readings prometheus=" in result.stdout


def test_the_commented_example_in_config_example_loads() -> None:
    result = parse_rules_text(commented_example(TYPE), "config.example.yaml")
    assert result.problems == ()
    assert [t.type for t in result.rules[0].triggers] == [TYPE]


def test_the_module_is_imported_only_when_a_rule_uses_prometheus() -> None:
    trigger = "{type: prometheus, serverAddress: 'http://127.0.0.1:9090', query: up, threshold: 1}"
    assert sdk_loaded("eventscaler.sources.prometheus", trigger) == (False, True)
