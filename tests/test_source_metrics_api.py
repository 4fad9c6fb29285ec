"""The metrics-api source against a real HTTP(S) server the tests run (tests/support/).

Scenarios:
- metadata, table-driven: valid rows (json, yaml, prometheus; each authMode; KEDA's timeout in
  milliseconds or a duration; urlFromEnv) load with their settings, target and activation;
  invalid rows give the exact `file: rules[0] (r).triggers[0].field: message` line (misspelt
  key, no targetValue, url and urlFromEnv both or neither, a URL carrying a password or a
  token-like query parameter, an inline token/password/apiKey, format xml, an unknown
  authMode, a credential field of another authMode, a missing credential field, a bad GJSON
  path, a Prometheus selector with =~, a zero timeout)
- the number: GJSON paths as KEDA's docs write them (nested keys, array index, #, a query),
  a Kubernetes quantity string, YAML, Prometheus text with and without labels
- each authMode sends its credential as the server expects (bearer, basic, apiKey in a header
  or the query, default and custom names); without it the server answers 401 -> Unauthorized
  naming the env var, never the secret
- errors: 404 NotFound, 500 Unavailable, not JSON / nothing at the path / a string that is no
  quantity / null / NaN -> BadResponse, an env var unset -> MissingCredential, the server
  stopped -> Unavailable within the tick's budget and a restart recovers, a silent server ->
  Timeout within 3x the timeout; HTTPS with an untrusted certificate -> Unavailable, read
  with unsafeSsl
- secrets: a URL from urlFromEnv is shown as scheme://host/path only, its query values and the
  API key are registered for redaction and absent from every error
- convert: KEDA's documented trigger with a TriggerAuthentication (bearer token) converts to
  tokenFromEnv with the env var to add, and loads
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eventscaler import config, retry
from eventscaler.convert import convert_text, render_rules
from eventscaler.redact import redact
from eventscaler.sources import metrics_api
from eventscaler.sources.metrics_api import (
    MetricsApiReadError,
    MetricsApiSettings,
    MetricsApiSource,
    metrics_api_trigger,
)
from tests.support import silent
from tests.support.metrics_api_server import MetricsApiServer, Seen
from tests.test_sources import load_one

TASKS = '{"components": {"worker": {"tasks": 12, "queued": "1.5k", "none": null}}, ' \
        '"items": [{"name": "a", "v": 3}, {"name": "b", "v": 7}]}'  # fmt: skip
PROMETHEUS = """# HELP jobs_waiting Jobs waiting.
# TYPE jobs_waiting gauge
jobs_waiting{queue="mail"} 4
jobs_waiting{queue="pdf"} 9
# TYPE jobs_total counter
jobs_total 42
# TYPE broken gauge
broken NaN
"""


@pytest.fixture(scope="module")
def server() -> Iterator[MetricsApiServer]:
    with MetricsApiServer() as running:
        yield running


@pytest.fixture(autouse=True)
def reset(server: MetricsApiServer) -> None:
    server.answer(TASKS)
    server.require(None)
    if server._server is None:
        server.start()


def read(
    server: MetricsApiServer,
    location: str,
    environ: dict[str, str] | None = None,
    source: MetricsApiSource | None = None,
    **fields: Any,
) -> float:
    url = fields.pop("url", server.url())
    reader = source or MetricsApiSource(environ or {}, timeout_seconds=2.0)
    return reader.read(metrics_api_trigger(url, location, 5.0, **fields))


# --- metadata ---------------------------------------------------------------------------------

BASE = {"type": "metrics-api", "url": "http://127.0.0.1:8080/stats", "targetValue": 8}


@pytest.mark.parametrize(
    ("fields", "expected", "activation"),
    [
        (
            {"valueLocation": "components.worker.tasks", "activationTargetValue": 3.5},
            {"value_location": "components.worker.tasks", "format": "json"},
            3.5,
        ),
        (
            {"valueLocation": "a.b", "format": "YAML", "timeout": "1500"},
            {"format": "yaml", "timeout": 1.5},
            0.0,
        ),
        (
            {"valueLocation": 'jobs_waiting{queue="pdf"}', "format": "prometheus", "timeout": "2s"},
            {"format": "prometheus", "timeout": 2.0},
            0.0,
        ),
        (
            {"valueLocation": "x", "authMode": "bearer", "tokenFromEnv": "TOKEN"},
            {"auth_mode": "bearer", "token_from_env": "TOKEN"},
            0.0,
        ),
        (
            {"valueLocation": "x", "authMode": "basic", "username": "u", "passwordFromEnv": "PW"},
            {"auth_mode": "basic", "username": "u", "password_from_env": "PW"},
            0.0,
        ),
        (
            {"valueLocation": "x", "authMode": "apikey", "apiKeyFromEnv": "KEY",
             "method": "query", "keyParamName": "key", "unsafeSsl": "true"},
            {"auth_mode": "apiKey", "method": "query", "key_param_name": "key",
             "unsafe_ssl": True},
            0.0,
        ),
        (
            {"url": None, "urlFromEnv": "STATS_URL", "valueLocation": "x"},
            {"url": "", "url_from_env": "STATS_URL"},
            0.0,
        ),
    ],
)  # fmt: skip
def test_valid_metadata_loads(
    fields: dict[str, Any], expected: dict[str, Any], activation: float
) -> None:
    trigger = {k: v for k, v in {**BASE, **fields}.items() if v is not None}
    problems, rule = load_one(trigger)
    assert problems == []
    (loaded,) = rule.triggers
    for attribute, value in expected.items():
        assert getattr(loaded.settings, attribute) == value, attribute
    assert (loaded.target, loaded.activation) == (8.0, activation)


PREFIX = "rules.yaml: rules[0] (r).triggers[0]"
USE_ENV = "put the whole URL in an environment variable and name that variable in urlFromEnv"


@pytest.mark.parametrize(
    ("fields", "line"),
    [
        ({"valueLocaton": "x"}, ".valueLocaton: unknown field (did you mean 'valueLocation'?)"),
        ({"valueLocation": "x", "targetValue": None}, ".targetValue: is required"),
        ({"valueLocation": "x", "url": None}, ".url: give url or urlFromEnv, one of them"),
        ({"valueLocation": "x", "urlFromEnv": "U"},
         ".url: give url or urlFromEnv, one of them, not both"),
        ({"valueLocation": "x", "url": "http://user:hunter2@127.0.0.1/s"},
         f".url: the URL carries a credential (a user or password in the URL): {USE_ENV}"),
        ({"valueLocation": "x", "url": "http://127.0.0.1/s?api_key=hunter2"},
         f".url: the URL carries a credential (the query parameter 'api_key'): {USE_ENV}"),
        ({"valueLocation": "x", "url": "ftp://127.0.0.1/s"},
         ".url: expected an http:// or https:// URL with a host, got 'ftp://127.0.0.1/s'"),
        ({"valueLocation": "x", "authMode": "bearer", "token": "abc"},
         ".token: a secret never sits in the rule file: put it in an environment variable and "
         "name that variable in tokenFromEnv"),
        ({"valueLocation": "x", "format": "xml"},
         ".format: expected 'json' or 'yaml' or 'prometheus', got 'xml'"),
        ({"valueLocation": "x", "authMode": "tls"},
         ".authMode: expected 'bearer' or 'basic' or 'apiKey', got 'tls'"),
        ({"valueLocation": "x", "tokenFromEnv": "T"}, ".tokenFromEnv: only applies with "
                                                       "authMode bearer"),
        ({"valueLocation": "x", "authMode": "apiKey"},
         ".apiKeyFromEnv: is required with authMode apiKey"),
        ({"valueLocation": "x", "authMode": "basic", "passwordFromEnv": "P"},
         ".username: give username or usernameFromEnv with authMode basic, one of them"),
        ({"valueLocation": "a..b"},
         ".valueLocation: not a GJSON path (Invalid query with two consecutive path "
         "delimiters.), got 'a..b'"),
        ({"valueLocation": 'jobs{queue=~"p.*"}', "format": "prometheus"},
         '.valueLocation: expected label="value" matchers (= only), got'),
        ({"valueLocation": "x", "timeout": 0}, ".timeout: expected a duration of more than zero"),
    ],
)  # fmt: skip
def test_invalid_metadata_names_the_field(fields: dict[str, Any], line: str) -> None:
    trigger = {k: v for k, v in {**BASE, **fields}.items() if v is not None}
    problems, rule = load_one(trigger)
    assert rule is None
    assert len(problems) == 1 and problems[0].startswith(PREFIX + line), problems
    assert "hunter2" not in problems[0]


# --- the number -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("components.worker.tasks", 12.0),  # KEDA's documented example
        ("items.1.v", 7.0),
        ("items.#", 2.0),
        ('items.#(name=="b").v', 7.0),
        ("components.worker.queued", 1500.0),  # a quantity string, as KEDA reads it
    ],
)
def test_gjson_paths_read_the_number(
    server: MetricsApiServer, location: str, expected: float
) -> None:
    assert read(server, location) == expected


def test_yaml(server: MetricsApiServer) -> None:
    server.answer("components:\n  worker:\n    tasks: 250m\nitems: [4, 5]\n", "application/yaml")
    assert read(server, "components.worker.tasks", format="yaml") == 0.25
    assert read(server, "items.1", format="yaml") == 5.0


@pytest.mark.parametrize(
    ("selector", "expected"),
    [('jobs_waiting{queue="pdf"}', 9.0), ('jobs_waiting{queue="mail"}', 4.0), ("jobs_total", 42)],
)
def test_prometheus_text(server: MetricsApiServer, selector: str, expected: float) -> None:
    server.answer(PROMETHEUS, "text/plain; version=0.0.4")
    assert read(server, selector, format="prometheus") == expected


@pytest.mark.parametrize(
    ("body", "location", "fields", "detail"),
    [
        ("not json", "x", {}, "the answer is not json"),
        (TASKS, "components.nope", {}, "nothing at the path: Mapping object does not have key"),
        ('{"v": "lots"}', "v", {}, "the path holds 'lots', not a finite number or quantity"),
        (TASKS, "components.worker.none", {}, "the path holds a null, not a number"),
        (TASKS, "items", {}, "the path holds a list, not a number"),
        (PROMETHEUS, "broken", {"format": "prometheus"}, "not a finite number"),
        (PROMETHEUS, "absent", {"format": "prometheus"}, "no sample matches the selector"),
    ],
)
def test_answers_without_a_number_are_bad_responses(
    server: MetricsApiServer, body: str, location: str, fields: dict[str, str], detail: str
) -> None:
    server.answer(body)
    with pytest.raises(MetricsApiReadError) as error:
        read(server, location, **fields)
    assert error.value.kind == "BadResponse"
    assert f"metrics-api http://127.0.0.1:{server.port}/metrics at {location!r}: " in str(
        error.value
    )
    assert detail in str(error.value)


@pytest.mark.parametrize(("status", "kind"), [(404, "NotFound"), (500, "Unavailable"),
                                              (400, "ServiceError")])  # fmt: skip
def test_statuses(server: MetricsApiServer, status: int, kind: str) -> None:
    server.answer("{}", status=status)
    with pytest.raises(MetricsApiReadError) as error:
        read(server, "x")
    assert error.value.kind == kind and f"HTTP {status}" in str(error.value)


# --- credentials ------------------------------------------------------------------------------

TOKEN = "tok-3f9a8b7c6d5e4f3a2b1c"
PASSWORD = "pw-9z8y7x6w5v4u"
API_KEY = "key-1a2b3c4d5e6f7a8b"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("fields", "check"),
    [
        ({"auth_mode": "bearer", "token_from_env": "TOKEN"},
         lambda s: s.headers.get("Authorization") == f"Bearer {TOKEN}"),
        ({"auth_mode": "basic", "username": "ops", "password_from_env": "PASSWORD"},
         lambda s: s.headers.get("Authorization") == basic("ops", PASSWORD)),
        ({"auth_mode": "basic", "username_from_env": "USER", "password_from_env": "PASSWORD"},
         lambda s: s.headers.get("Authorization") == basic("env-user", PASSWORD)),
        ({"auth_mode": "apiKey", "api_key_from_env": "API_KEY"},
         lambda s: s.headers.get("X-API-KEY") == API_KEY),
        ({"auth_mode": "apiKey", "api_key_from_env": "API_KEY", "key_param_name": "X-Token"},
         lambda s: s.headers.get("X-Token") == API_KEY),
        ({"auth_mode": "apiKey", "api_key_from_env": "API_KEY", "method": "query"},
         lambda s: s.query.get("api_key") == API_KEY),
        ({"auth_mode": "apiKey", "api_key_from_env": "API_KEY", "method": "query",
          "key_param_name": "k"}, lambda s: s.query.get("k") == API_KEY),
    ],
)  # fmt: skip
def test_each_auth_mode_sends_its_credential(
    server: MetricsApiServer, fields: dict[str, str], check: Any
) -> None:
    env = {"TOKEN": TOKEN, "PASSWORD": PASSWORD, "API_KEY": API_KEY, "USER": "env-user"}
    server.require(check)
    assert read(server, "components.worker.tasks", env, **fields) == 12.0
    server.require(lambda s: False)
    with pytest.raises(MetricsApiReadError) as error:
        read(server, "components.worker.tasks", env, **fields)
    message = str(error.value)
    assert error.value.kind == "Unauthorized" and "HTTP 401: the endpoint refused the " in message
    env_name = fields.get("token_from_env") or fields.get("password_from_env") or "API_KEY"
    assert f"from env {env_name}" in message
    secret = {"TOKEN": TOKEN, "PASSWORD": PASSWORD, "API_KEY": API_KEY}[env_name]
    assert secret not in message
    assert redact(f"x{secret}x") == "x***x"


def test_an_unset_credential_variable_is_missing_credential(server: MetricsApiServer) -> None:
    with pytest.raises(MetricsApiReadError) as error:
        read(server, "x", {}, auth_mode="bearer", token_from_env="NO_SUCH_TOKEN")
    assert error.value.kind == "MissingCredential"
    assert "the environment variable NO_SUCH_TOKEN is unset or empty" in str(error.value)


def test_a_url_from_the_environment_is_never_shown_whole(server: MetricsApiServer) -> None:
    secret_query = "sig=0123456789abcdef&token=fedcba9876543210"
    url = server.url("/stats") + "?" + secret_query
    env = {"STATS_URL": url}
    trigger = metrics_api_trigger("", "components.worker.tasks", 5.0, url_from_env="STATS_URL")
    reader = MetricsApiSource(env, timeout_seconds=1.0)
    assert reader.read(trigger) == 12.0
    assert server.requests[-1].query == {"sig": "0123456789abcdef", "token": "fedcba9876543210"}
    server.stop()
    with retry.budget(2.0), pytest.raises(MetricsApiReadError) as error:
        reader.read(trigger)
    message = str(error.value)
    assert error.value.kind == "Unavailable"
    assert message.startswith("metrics-api URL from env STATS_URL at 'components.worker.tasks'")
    assert f"cannot reach 127.0.0.1:{server.port}" in message
    assert "0123456789abcdef" not in message and "fedcba9876543210" not in message
    assert redact(f"GET {url}") == "GET ***"
    assert redact("0123456789abcdef") == "***"


# --- outages ----------------------------------------------------------------------------------


def test_a_stopped_server_is_unavailable_and_a_restart_recovers(server: MetricsApiServer) -> None:
    reader = MetricsApiSource({}, timeout_seconds=1.0)
    assert read(server, "items.0.v", source=reader) == 3.0
    server.stop()
    began = time.monotonic()
    with retry.budget(2.0), pytest.raises(MetricsApiReadError) as error:
        read(server, "items.0.v", source=reader)
    assert time.monotonic() - began < 4.0
    assert error.value.kind == "Unavailable"
    server.start()
    assert read(server, "items.0.v", source=reader) == 3.0


@pytest.fixture
def silent_port() -> Iterator[int]:
    with silent.silent_port() as port:
        yield port


def test_a_silent_server_times_out_within_bound(silent_port: int) -> None:
    reader = MetricsApiSource({}, timeout_seconds=0.5)
    trigger = metrics_api_trigger(f"http://127.0.0.1:{silent_port}/m", "x", 5.0)
    began = time.monotonic()
    with retry.budget(1.0), pytest.raises(MetricsApiReadError) as error:
        reader.read(trigger)
    assert time.monotonic() - began < 3.0
    assert error.value.kind == "Timeout"


def test_the_trigger_timeout_applies(silent_port: int) -> None:
    reader = MetricsApiSource({}, timeout_seconds=5.0)
    trigger = metrics_api_trigger(f"http://127.0.0.1:{silent_port}/m", "x", 5.0, timeout=0.3)
    began = time.monotonic()
    with retry.budget(0.5), pytest.raises(MetricsApiReadError) as error:
        reader.read(trigger)
    assert time.monotonic() - began < 2.0
    assert "timeout 0.3 s" in str(error.value)


def test_https_needs_a_trusted_certificate_or_unsafe_ssl(tmp_path: Path) -> None:
    with MetricsApiServer(tls_dir=tmp_path) as tls:
        tls.answer(TASKS)
        with pytest.raises(MetricsApiReadError) as error:
            read(tls, "components.worker.tasks")
        assert error.value.kind == "Unavailable"
        assert "TLS with 127.0.0.1:" in str(error.value) and "unsafeSsl" in str(error.value)
        assert read(tls, "components.worker.tasks", unsafe_ssl=True) == 12.0


def test_one_session_reused_and_closed(server: MetricsApiServer) -> None:
    reader = MetricsApiSource({}, timeout_seconds=1.0)
    read(server, "items.#", source=reader)
    session = reader._sessions._session
    read(server, "items.#", source=reader)
    assert reader._sessions._session is session is not None
    reader.close()
    assert reader._sessions._session is None


def test_quantities() -> None:
    assert metrics_api.parse_quantity("2Ki") == 2048
    assert metrics_api.parse_quantity("1e3") == 1000
    assert metrics_api.parse_quantity("-5") == -5
    assert metrics_api.parse_quantity("5 apples") is None


def test_settings_show_no_query() -> None:
    settings = MetricsApiSettings("x", url="http://127.0.0.1:9/a/b?page=2")
    assert settings.label == "http://127.0.0.1:9/a/b"


# --- convert ----------------------------------------------------------------------------------

KEDA_METRICS_API = """
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {name: keda-metric-api-creds, namespace: default}
spec:
  secretTargetRef:
  - {parameter: token, name: keda-metric-api-secret, key: token}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: http-scaledobject, namespace: default}
spec:
  scaleTargetRef: {name: worker}
  triggers:
  - type: metrics-api
    metadata:
      targetValue: "8.8"
      activationTargetValue: "3.8"
      format: "json"
      url: "http://api:3232/api/v1/stats"
      valueLocation: "components.worker.tasks"
      authMode: "bearer"
    authenticationRef: {name: keda-metric-api-creds}
"""


def test_convert_maps_the_trigger_and_the_bearer_token() -> None:
    conversion = convert_text(KEDA_METRICS_API, "so.yaml")
    (rule,) = conversion.rules
    (trigger,) = rule["triggers"]
    env = trigger["tokenFromEnv"]
    assert trigger == {
        "type": "metrics-api",
        "targetValue": 8.8,
        "activationTargetValue": 3.8,
        "format": "json",
        "url": "http://api:3232/api/v1/stats",
        "valueLocation": "components.worker.tasks",
        "authMode": "bearer",
        "tokenFromEnv": env,
    }
    notes = "\n".join(str(n) for n in conversion.notes)
    assert f"{{name: {env}, valueFrom: {{secretKeyRef: {{name: keda-metric-api-secret" in notes
    loaded = config.parse_rules_text(render_rules(conversion, "so.yaml"), "converted.yaml")
    assert loaded.problems == ()


def test_convert_moves_a_url_with_a_credential_to_the_environment() -> None:
    text = KEDA_METRICS_API.replace("/api/v1/stats", "/api/v1/stats?token=abc123")
    conversion = convert_text(text, "so.yaml")
    trigger = conversion.rules[0]["triggers"][0]
    assert "url" not in trigger and trigger["urlFromEnv"]
    assert "abc123" not in render_rules(conversion, "so.yaml")
    assert config.parse_rules_text(render_rules(conversion, "so.yaml"), "c.yaml").problems == ()


def test_seen_requests_are_logged(server: MetricsApiServer) -> None:
    read(server, "items.#")
    assert isinstance(server.requests[-1], Seen) and server.requests[-1].path == "/metrics"
