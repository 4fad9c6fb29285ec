"""A number read from an HTTP endpoint, the way KEDA's metrics-api scaler reads it.

One GET of `url`; any status but 200 is an error. The body is parsed as `format`:
- `json` (the default) or `yaml`: `valueLocation` is a GJSON path (`components.worker.tasks`,
  `items.0.value`, `items.#(name=="b").value`, `items.#`), evaluated by gjson-py, the Python
  implementation of the GJSON syntax KEDA uses (on YAML too, where KEDA has dotted paths only);
- `prometheus`: the text exposition format; `valueLocation` is a metric selector,
  `name` or `name{label="value",...}`, and the first sample that matches gives the value.
The value is a JSON/YAML number, or a string holding a Kubernetes quantity ("1.5k", "250m"),
as in KEDA. Anything else, NaN or an infinity is an error naming the trigger, never a 0.

Credentials are read from environment variables named by `...FromEnv` fields and registered
for log redaction: a bearer token, a basic password (the user name may be plain), an API key in
a header or in the query. A URL that carries a credential (a password in it, or a query
parameter named like a token or key) is refused in the rule file: it goes whole into an
environment variable named by `urlFromEnv`. Logs, errors and status show a URL only as
scheme://host/path, never its user, password or query.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import gjson
import requests
import yaml

from eventscaler import retry
from eventscaler.fields import (
    ConfigError,
    choices,
    parse_bool,
    parse_choice,
    parse_env_name,
    parse_str,
    parse_text,
    show,
)
from eventscaler.redact import first_line, redact
from eventscaler.sources import base, http_common
from eventscaler.sources.base import KedaTrigger, SourceOptions, SourceType, optional
from eventscaler.sources.http_common import (
    MAX_BODY_BYTES,
    display_url,
    register_url_secrets,
    transient_failure,
    url_problem,
)
from eventscaler.triggers import Trigger

logger = logging.getLogger(__name__)

FORMATS = choices("json", "yaml", "prometheus")
AUTH_MODES = choices("bearer", "basic", "apiKey")
KEY_METHODS = choices("header", "query")
DEFAULT_KEY_HEADER = "X-API-KEY"  # KEDA's names when keyParamName is not given
DEFAULT_KEY_PARAM = "api_key"
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?")
_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}")
_QUANTITY = re.compile(
    r"([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]?)"
)
_QUANTITY_SCALE = {
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
    "P": Decimal("1e15"), "E": Decimal("1e18"), "Ki": Decimal(2**10), "Mi": Decimal(2**20),
    "Gi": Decimal(2**30), "Ti": Decimal(2**40), "Pi": Decimal(2**50), "Ei": Decimal(2**60),
}  # fmt: skip
# Keys a user might write with the secret in plain text, and the field to use instead.
INLINE_SECRETS = {"token": "tokenFromEnv", "password": "passwordFromEnv", "apiKey": "apiKeyFromEnv"}


@dataclass(frozen=True)
class MetricsApiSettings:
    """One `type: metrics-api` trigger's own fields (KEDA's names, in snake_case)."""

    value_location: str
    url: str = ""  # never carries a credential (see _parse_url); "" with url_from_env
    url_from_env: str = ""
    format: str = "json"
    auth_mode: str = ""  # "" (none), "bearer", "basic" or "apiKey"
    token_from_env: str = ""
    username: str = ""
    username_from_env: str = ""
    password_from_env: str = ""
    api_key_from_env: str = ""
    key_param_name: str = ""
    method: str = "header"  # where the API key goes: "header" or "query"
    unsafe_ssl: bool = False
    timeout: float | None = None  # seconds; None: the daemon's per-call timeout

    @property
    def label(self) -> str:
        if self.url_from_env:
            return f"URL from env {self.url_from_env}"
        return display_url(self.url)


def _parse_value_location(value: Any, field: str) -> str:
    text = parse_text(value, field, "a GJSON path like 'components.worker.tasks'").strip()
    problem = gjson_syntax_problem(text)
    if problem:
        raise ConfigError(field, f"not a GJSON path ({problem}), got {show(text)}")
    return text


# gjson-py evaluates as it parses, so a path is checked against an empty document: these
# errors only say the document lacks something, any other is the path's own syntax.
_DATA_ERRORS = (
    "Mapping object does not have key",
    "No key matching",
    "Index ",
    "Integer query",
    "Queries are supported only",
    "Wildcard matching key",
    "Expected a sequence",
    "Query for first element",
)


def gjson_syntax_problem(path: str) -> str | None:
    try:
        gjson.get({}, path)
    except gjson.GJSONError as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None if message.startswith(_DATA_ERRORS) else message
    return None


def _parse_header_name(value: Any, field: str) -> str:
    return parse_str(value, field, _HEADER_NAME, "a header or query parameter name")


class MetricsApi(SourceType):
    """`type: metrics-api`: a number in a JSON, YAML or Prometheus answer of an HTTP endpoint."""

    type = "metrics-api"
    settings = MetricsApiSettings
    target_key = "targetValue"
    target_default = None  # required, as in KEDA
    activation_key = "activationTargetValue"
    fields = (
        optional("valueLocation", _parse_value_location, ""),
        optional("url", lambda v, f: http_common.parse_url(v, f, "urlFromEnv"), ""),
        optional("urlFromEnv", parse_env_name, "", secret_env=True),
        optional("format", lambda v, f: parse_choice(v, f, FORMATS), "json"),
        optional("authMode", lambda v, f: parse_choice(v, f, AUTH_MODES), ""),
        optional("tokenFromEnv", parse_env_name, "", secret_env=True),
        optional("username", lambda v, f: parse_text(v, f, "a user name"), ""),
        optional("usernameFromEnv", parse_env_name, ""),
        optional("passwordFromEnv", parse_env_name, "", secret_env=True),
        optional("apiKeyFromEnv", parse_env_name, "", secret_env=True),
        optional("keyParamName", _parse_header_name, ""),
        optional("method", lambda v, f: parse_choice(v, f, KEY_METHODS), "header"),
        optional("unsafeSsl", parse_bool, False),
        optional("timeout", http_common.parse_timeout, None),
    )

    def keys(self) -> set[str]:
        return super().keys() | set(INLINE_SECRETS)  # accepted only to be refused clearly

    def check(self, values: dict[str, Any], data: Mapping[str, Any], field: str) -> dict[str, Any]:
        http_common.refuse_inline_secrets(data, field, INLINE_SECRETS)
        if "valueLocation" not in data:
            raise ConfigError(f"{field}.valueLocation", "is required")
        if ("url" in data) == ("urlFromEnv" in data):
            raise ConfigError(
                f"{field}.url",
                "give url or urlFromEnv, one of them" + (", not both" if "url" in data else ""),
            )
        if values["format"] == "prometheus":
            _parse_selector(values["value_location"], f"{field}.valueLocation")
        AUTH_FIELDS.check(values["auth_mode"], data, field)
        return values

    def default_name(self, settings: MetricsApiSettings) -> str:
        words = re.sub(r"[^A-Za-z0-9.-]+", "-", settings.value_location).strip("-.")
        return f"metrics-api-{words}"[:253] if words else "metrics-api"

    def describe(self, settings: MetricsApiSettings) -> str:
        return f"metrics-api {settings.label} at {settings.value_location!r}"

    def details(self, settings: MetricsApiSettings) -> tuple[str, ...]:
        auth = (f"auth {settings.auth_mode}",) if settings.auth_mode else ()
        return (settings.format, *auth)

    def open(self, options: SourceOptions) -> MetricsApiSource:
        return MetricsApiSource(options.environ, options.timeout_seconds, options.pool_size)

    def from_keda(self, keda: KedaTrigger) -> dict[str, Any] | None:
        return _from_keda(self, keda)


SOURCE_TYPE = MetricsApi()


AUTH_FIELDS = http_common.AuthFields(
    "authMode",
    belongs={
        "tokenFromEnv": "bearer", "username": "basic", "usernameFromEnv": "basic",
        "passwordFromEnv": "basic", "apiKeyFromEnv": "apiKey", "keyParamName": "apiKey",
        "method": "apiKey",
    },
    needs={"bearer": ("tokenFromEnv",), "basic": ("passwordFromEnv",),
           "apiKey": ("apiKeyFromEnv",)},
)  # fmt: skip


def _parse_selector(text: str, field: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """`name{a="b",c="d"}` -> ("name", (("a", "b"), ("c", "d"))); equality matchers only."""
    match = _SELECTOR.fullmatch(text.strip())
    if not match:
        raise ConfigError(
            field, f'expected a metric selector like name{{label="value"}}, got {show(text)}'
        )
    labels: list[tuple[str, str]] = []
    body, position = match[2] or "", 0
    while position < len(body.rstrip()):
        matcher = _MATCHER.match(body, position)
        if not matcher:
            raise ConfigError(field, f'expected label="value" matchers (= only), got {show(text)}')
        labels.append((matcher[1], bytes(matcher[2], "utf-8").decode("unicode_escape")))
        position = matcher.end()
    return match[1], tuple(labels)


def metrics_api_trigger(
    url: str, value_location: str, target_value: float, activation: float = 0.0,
    name: str = "", **settings: Any,
) -> Trigger:  # fmt: skip
    """A trigger built in code (tests), as the rule file would build it."""
    values = MetricsApiSettings(value_location=value_location, url=url, **settings)
    return Trigger(
        MetricsApi.type, name or SOURCE_TYPE.default_name(values), values, target_value, activation
    )


class MetricsApiReadError(base.SourceError):
    """A value could not be read; `str()` names the endpoint (never its query) and the path."""


class MetricsApiSource(http_common.HttpReader):
    """Reads metric endpoints; safe to call from many threads at once.

    One requests.Session per process (one connection pool per host, as large as the daemon's
    worker pool); urllib3's retries off, ours bounded by the tick.
    """

    def read(self, trigger: Trigger) -> float:
        settings: MetricsApiSettings = trigger.settings
        url = self._url(settings)
        headers, params = self._credentials(settings)
        timeout = retry.call_timeout(settings.timeout or self._timeout_seconds)
        session = self._sessions.get()
        if settings.unsafe_ssl:
            self._sessions.warn_unsafe_once(f"metrics-api {settings.label}")

        def get() -> requests.Response:
            t = retry.call_timeout(timeout)
            return session.get(
                url,
                headers=headers,
                params=params,
                timeout=(t, t),
                verify=not settings.unsafe_ssl,
                stream=True,
            )

        try:
            response = retry.call(get, transient_failure)
        except requests.RequestException as exc:
            raise _error(settings, *http_common.request_failure(exc, url, timeout)) from None
        with response:
            body = _body(response, settings, url)
        return value_from_body(body, settings)

    def _secret(self, settings: MetricsApiSettings, env: str) -> str:
        value = self.env_secret(env)
        if not value:
            raise _error(
                settings,
                base.MISSING_CREDENTIAL,
                f"the environment variable {env} is unset or empty",
            )
        return value

    def _url(self, settings: MetricsApiSettings) -> str:
        if not settings.url_from_env:
            return settings.url
        url = self._secret(settings, settings.url_from_env)
        register_url_secrets(url)
        problem = url_problem(url)
        if problem:
            raise _error(settings, base.INVALID_CREDENTIAL, f"{problem} in {settings.url_from_env}")
        return url

    def _credentials(self, settings: MetricsApiSettings) -> tuple[dict[str, str], dict[str, str]]:
        """(headers, query parameters) that carry the trigger's credential."""
        mode = settings.auth_mode
        if mode == "bearer":
            return {
                "Authorization": f"Bearer {self._secret(settings, settings.token_from_env)}"
            }, {}
        if mode == "apiKey":
            key = self._secret(settings, settings.api_key_from_env)
            if settings.method == "query":
                return {}, {settings.key_param_name or DEFAULT_KEY_PARAM: key}
            return {settings.key_param_name or DEFAULT_KEY_HEADER: key}, {}
        if mode == "basic":
            user = settings.username
            if settings.username_from_env:
                user = self._environ.get(settings.username_from_env, "").strip()
            if not user:
                raise _error(
                    settings,
                    base.MISSING_CREDENTIAL,
                    f"the environment variable {settings.username_from_env} is unset or empty",
                )
            password = self._secret(settings, settings.password_from_env)
            return {"Authorization": http_common.basic_authorization(user, password)}, {}
        return {}, {}


def _body(response: requests.Response, settings: MetricsApiSettings, url: str) -> bytes:
    status = response.status_code
    if status != 200:
        raise _status_error(status, response, settings)
    body = http_common.read_body(response)
    if body is None:
        raise _error(settings, base.BAD_RESPONSE, f"the answer is over {MAX_BODY_BYTES} bytes")
    return body


def _status_error(
    status: int, response: requests.Response, settings: MetricsApiSettings
) -> MetricsApiReadError:
    if status in (401, 403):
        where = _credential_source(settings)
        return _error(settings, base.UNAUTHORIZED, f"HTTP {status}: the endpoint refused {where}")
    if status == 404:
        return _error(settings, base.NOT_FOUND, "HTTP 404: no such path on the endpoint")
    if status in retry.RETRYABLE_STATUSES:
        return _error(settings, base.UNAVAILABLE, f"HTTP {status} {response.reason or ''}".strip())
    return _error(settings, base.SERVICE_ERROR, f"HTTP {status} {response.reason or ''}".strip())


def _credential_source(settings: MetricsApiSettings) -> str:
    env = {
        "bearer": settings.token_from_env,
        "basic": settings.password_from_env,
        "apiKey": settings.api_key_from_env,
    }.get(settings.auth_mode)
    if env:
        return f"the {settings.auth_mode} credential from env {env}"
    return "the request (no authMode is set)"


def value_from_body(body: bytes, settings: MetricsApiSettings) -> float:
    """The number at valueLocation in `body`, parsed as the trigger's format."""
    if settings.format == "prometheus":
        return _prometheus_value(body, settings)
    try:
        text = body.decode("utf-8")
        document = yaml.safe_load(text) if settings.format == "yaml" else json.loads(text)
    except (UnicodeDecodeError, ValueError, yaml.YAMLError):
        raise _error(settings, base.BAD_RESPONSE, f"the answer is not {settings.format}") from None
    try:
        found = gjson.get(document, settings.value_location)
    except gjson.GJSONError as exc:
        reason = first_line(str(exc)) or type(exc).__name__
        raise _error(settings, base.BAD_RESPONSE, f"nothing at the path: {reason}") from None
    return _as_number(found, settings)


def _as_number(found: Any, settings: MetricsApiSettings) -> float:
    if isinstance(found, bool) or not isinstance(found, (int, float, str)):
        kind = "null" if found is None else type(found).__name__
        raise _error(settings, base.BAD_RESPONSE, f"the path holds a {kind}, not a number")
    value = parse_quantity(found) if isinstance(found, str) else float(found)
    if value is None or not math.isfinite(value):
        raise _error(
            settings,
            base.BAD_RESPONSE,
            f"the path holds {show(found)}, not a finite number or quantity",
        )
    return value


def parse_quantity(text: str) -> float | None:
    """A Kubernetes quantity ("10", "1.5k", "250m", "2Ki", "1e3") as a float, or None."""
    match = _QUANTITY.fullmatch(text.strip())
    if not match:
        return None
    try:
        return float(Decimal(match[1]) * _QUANTITY_SCALE[match[2]])
    except (InvalidOperation, OverflowError):
        return None


def _prometheus_value(body: bytes, settings: MetricsApiSettings) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    name, labels = _parse_selector(settings.value_location, "valueLocation")
    try:
        text = body.decode("utf-8")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels):
                    return _as_number(float(sample.value), settings)
    except (UnicodeDecodeError, ValueError) as exc:
        reason = first_line(str(exc)) or type(exc).__name__
        raise _error(settings, base.BAD_RESPONSE, f"not Prometheus text: {reason}") from None
    raise _error(settings, base.BAD_RESPONSE, "no sample matches the selector")


def _error(settings: MetricsApiSettings, kind: str, detail: str) -> MetricsApiReadError:
    message = f"metrics-api {settings.label} at {settings.value_location!r}: {kind}: {detail}"
    return MetricsApiReadError(kind, redact(message))


# ---------------------------------------------------------------------------------------------
# convert: KEDA's metrics-api trigger, its TriggerAuthentication's secrets as env vars

KEDA_AUTH_PARAMS = {
    "token": "tokenFromEnv", "username": "usernameFromEnv", "password": "passwordFromEnv",
    "apiKey": "apiKeyFromEnv",
}  # fmt: skip
KEDA_UNSUPPORTED = {
    "aggregateFromKubeServiceEndpoints": "eventscaler reads the URL itself, not each endpoint "
    "of a Service",
    "aggregationType": "only with aggregateFromKubeServiceEndpoints, which eventscaler lacks",
}


def _from_keda(source: MetricsApi, keda: KedaTrigger) -> dict[str, Any] | None:
    metadata = keda.metadata
    out: dict[str, Any] = {}
    for key, value in metadata.items():
        if key in KEDA_UNSUPPORTED:
            keda.lost(f"metadata.{key}", KEDA_UNSUPPORTED[key])
        elif key == "format" and str(value).lower() == "xml":
            keda.lost("metadata.format", "xml is not supported: trigger not converted")
            return None
        elif key in ("targetValue", "activationTargetValue"):
            number = keda.number(value)
            if number is None or number < 0:
                keda.lost(f"metadata.{key}", f"expected a number, got {value!r}")
            else:
                out[key] = number
        elif key in source.keys() - set(INLINE_SECRETS):
            out[key] = value
        else:
            keda.lost(f"metadata.{key}", "not a metrics-api setting eventscaler knows")
    http_common.keda_url_to_env(keda, out, "url", "urlFromEnv", "metrics_api_url")
    http_common.keda_secret_refs(keda, out, KEDA_AUTH_PARAMS, "metrics-api")
    for key in ("url", "valueLocation", "targetValue"):
        if key not in out and not (key == "url" and "urlFromEnv" in out):
            keda.lost(f"metadata.{key}", "missing: trigger not converted")
            return None
    return out
