"""The value of a PromQL query, the way KEDA's prometheus scaler reads it.

One `GET <serverAddress>/api/v1/query` with `query` (and `namespace`, as KEDA sends it: a query
parameter that Thanos' querier and prom-label-proxy use to pick the tenant), `queryParameters`
and `customHeaders`, at the server's own evaluation time. The answer gives the value when it is:
- an instant vector of exactly one element: that element's value;
- an empty vector: 0 with `ignoreNullValues: true` (KEDA's default: no series, nothing to do),
  an error with `false` (the target may be lost);
- a scalar: its value.
A vector of several elements is an error naming the query (aggregate it with sum, max...), as
is a range vector or a string. NaN and +/-Inf are errors whatever `ignoreNullValues` says
(KEDA reads them as 0 when it is true): a reading that did not happen is never a number.

Credentials come from environment variables named by `...FromEnv` fields (KEDA's
TriggerAuthentication parameters: bearerToken, username/password, customAuthValue) and are
registered for log redaction. A server address with a user, a password or a token-like query
parameter is refused in the rule file (the whole address goes in `serverAddressFromEnv`), and
a query holding a secret goes in `queryFromEnv`. Addresses are shown as scheme://host/path, and
a query from the environment is never shown at all.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import requests

from eventscaler import retry
from eventscaler.fields import (
    ConfigError,
    ConfigErrors,
    parse_bool,
    parse_env_name,
    parse_str,
    parse_text,
    show,
)
from eventscaler.redact import first_line, redact
from eventscaler.sources import base, http_common
from eventscaler.sources.base import KedaTrigger, SourceOptions, SourceType, optional
from eventscaler.triggers import Trigger

logger = logging.getLogger(__name__)

QUERY_PATH = "/api/v1/query"
AUTH_MODES = ("bearer", "basic", "custom")
# Keys a user might write with the secret in plain text, and the field to use instead.
INLINE_SECRETS = {
    "bearerToken": "bearerTokenFromEnv",
    "password": "passwordFromEnv",
    "customAuthValue": "customAuthValueFromEnv",
}
# Headers that always carry a credential, whatever http_common.SECRET_NAME says of their name.
_CREDENTIAL_HEADERS = {"authorization", "proxy-authorization", "cookie"}
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}")
_PARAM_NAME = re.compile(r"[^\s=&,]{1,100}")
_SHOWN_QUERY_LENGTH = 120
# Query parameter names that hold a credential, as their letters end (access_token, api-key,
# X-Amz-Signature...); narrower than http_common.SECRET_NAME, so KEDA's own example (key-1)
# stays valid.
_CREDENTIAL_PARAM = re.compile(
    r"(token|apikey|accesskey|secretkey|privatekey|secret|password|passwd|pwd|sig|signature"
    r"|credentials?|auth|authorization|sessionid)$"
)


@dataclass(frozen=True)
class PrometheusSettings:
    """One `type: prometheus` trigger's own fields (KEDA's names, in snake_case)."""

    server_address: str = ""  # never carries a credential; "" with server_address_from_env
    server_address_from_env: str = ""
    query: str = ""  # "" with query_from_env
    query_from_env: str = ""
    namespace: str = ""
    custom_headers: tuple[tuple[str, str], ...] = ()
    query_parameters: tuple[tuple[str, str], ...] = ()
    ignore_null_values: bool = True
    unsafe_ssl: bool = False
    timeout: float | None = None  # seconds; None: the daemon's per-call timeout
    auth_modes: str = ""  # "" (none), "bearer", "basic" or "custom"
    bearer_token_from_env: str = ""
    username: str = ""
    username_from_env: str = ""
    password_from_env: str = ""
    custom_auth_header: str = ""
    custom_auth_value_from_env: str = ""

    @property
    def label(self) -> str:
        """The server and the query, safe to log."""
        if self.server_address_from_env:
            server = f"server from env {self.server_address_from_env}"
        else:
            server = http_common.display_url(self.server_address)
        return f"{server} query {shown_query(self)}"


def shown_query(settings: PrometheusSettings) -> str:
    if settings.query_from_env:
        return f"from env {settings.query_from_env}"
    text = " ".join(settings.query.split())
    if len(text) > _SHOWN_QUERY_LENGTH:
        text = text[: _SHOWN_QUERY_LENGTH - 3] + "..."
    return repr(redact(text))


# --- the field table ---------------------------------------------------------------------------


def _parse_server_address(value: Any, field: str) -> str:
    return http_common.parse_url(value, field, "serverAddressFromEnv", "address")


def _parse_query(value: Any, field: str) -> str:
    return parse_text(value, field, "a PromQL expression").strip()


def _parse_pairs(value: Any, field: str, what: str) -> tuple[tuple[str, str], ...]:
    """KEDA's `a=1,b=2` string, or a YAML mapping, as (name, value) pairs."""
    if isinstance(value, Mapping):
        pairs = [(str(k).strip(), "" if v is None else str(v).strip()) for k, v in value.items()]
    elif isinstance(value, str):
        pairs = []
        for item in filter(str.strip, value.split(",")):
            name, equals, text = item.partition("=")
            if not equals:
                raise ConfigError(field, f"expected {what} as name=value,..., got {show(item)}")
            pairs.append((name.strip(), text.strip()))
    else:
        raise ConfigError(
            field, f"expected {what} as name=value,... or a mapping, got {show(value)}"
        )
    return tuple(pairs)


def _parse_headers(value: Any, field: str) -> tuple[tuple[str, str], ...]:
    pairs = _parse_pairs(value, field, "headers")
    for name, _ in pairs:
        parse_str(name, field, _HEADER_NAME, "header names")
        if name.lower() in _CREDENTIAL_HEADERS or http_common.SECRET_NAME.search(name):
            raise ConfigError(
                field,
                f"the header {name!r} carries a credential, which never sits in the rule file: "
                "use authModes (bearer, basic, or custom with customAuthHeader and "
                "customAuthValueFromEnv)",
            )
    return pairs


def _parse_query_parameters(value: Any, field: str) -> tuple[tuple[str, str], ...]:
    pairs = _parse_pairs(value, field, "query parameters")
    for name, _ in pairs:
        parse_str(name, field, _PARAM_NAME, "query parameter names")
        if name in ("query", "namespace"):
            raise ConfigError(field, f"{name!r} is set by the trigger's own {name} field")
        if _CREDENTIAL_PARAM.search(re.sub(r"[^a-z0-9]", "", name.lower())):
            raise ConfigError(
                field,
                f"the query parameter {name!r} carries a credential: put it in the query of the "
                "address held by the environment variable named in serverAddressFromEnv",
            )
    return pairs


def _parse_auth_modes(value: Any, field: str) -> str:
    """KEDA's comma-separated list; here one of bearer, basic, custom (tls is not supported)."""
    text = parse_text(value, field, "an authentication mode").strip()
    modes = [m.strip().lower() for m in text.split(",") if m.strip()]
    for mode in modes:
        if mode not in AUTH_MODES:
            shown = " or ".join(repr(m) for m in AUTH_MODES)
            raise ConfigError(field, f"expected {shown}, got {show(mode)}")
    if len(set(modes)) != 1:
        raise ConfigError(field, f"expected one mode, got {show(text)}")
    return modes[0]


def _parse_header_name(value: Any, field: str) -> str:
    return parse_str(value, field, _HEADER_NAME, "a header name")


AUTH_FIELDS = http_common.AuthFields(
    "authModes",
    belongs={
        "bearerTokenFromEnv": "bearer", "username": "basic", "usernameFromEnv": "basic",
        "passwordFromEnv": "basic", "customAuthHeader": "custom",
        "customAuthValueFromEnv": "custom",
    },
    needs={"bearer": ("bearerTokenFromEnv",),
           "custom": ("customAuthHeader", "customAuthValueFromEnv")},
)  # fmt: skip


class Prometheus(SourceType):
    """`type: prometheus`: the value of a PromQL query, one element or a scalar."""

    type = "prometheus"
    settings = PrometheusSettings
    target_key = "threshold"
    target_default = None  # required, as in KEDA
    activation_key = "activationThreshold"
    fields = (
        optional("serverAddress", _parse_server_address, ""),
        optional("serverAddressFromEnv", parse_env_name, "", secret_env=True),
        optional("query", _parse_query, ""),
        optional("queryFromEnv", parse_env_name, "", secret_env=True),
        optional("namespace", lambda v, f: parse_text(v, f, "a namespace").strip(), ""),
        optional("customHeaders", _parse_headers, ()),
        optional("queryParameters", _parse_query_parameters, ()),
        optional("ignoreNullValues", parse_bool, True),
        optional("unsafeSsl", parse_bool, False),
        optional("timeout", http_common.parse_timeout, None),
        optional("authModes", _parse_auth_modes, ""),
        optional("bearerTokenFromEnv", parse_env_name, "", secret_env=True),
        optional("username", lambda v, f: parse_text(v, f, "a user name"), ""),
        optional("usernameFromEnv", parse_env_name, "", secret_env=True),
        optional("passwordFromEnv", parse_env_name, "", secret_env=True),
        optional("customAuthHeader", _parse_header_name, ""),
        optional("customAuthValueFromEnv", parse_env_name, "", secret_env=True),
    )

    def keys(self) -> set[str]:
        return super().keys() | set(INLINE_SECRETS)  # accepted only to be refused clearly

    def check(self, values: dict[str, Any], data: Mapping[str, Any], field: str) -> dict[str, Any]:
        http_common.refuse_inline_secrets(data, field, INLINE_SECRETS)
        for key, env_key in (("serverAddress", "serverAddressFromEnv"), ("query", "queryFromEnv")):
            if (key in data) == (env_key in data):
                both = ", not both" if key in data else ""
                raise ConfigError(f"{field}.{key}", f"give {key} or {env_key}, one of them{both}")
        AUTH_FIELDS.check(values["auth_modes"], data, field)
        return values

    def default_name(self, settings: PrometheusSettings) -> str:
        return "prometheus"  # KEDA's metric name too (s0-prometheus)

    def describe(self, settings: PrometheusSettings) -> str:
        return f"prometheus {settings.label}"

    def details(self, settings: PrometheusSettings) -> tuple[str, ...]:
        words: tuple[str, ...] = (f"auth {settings.auth_modes}",) if settings.auth_modes else ()
        if settings.namespace:
            words += (f"namespace {settings.namespace}",)
        return (*words, "empty is 0" if settings.ignore_null_values else "empty is an error")

    def open(self, options: SourceOptions) -> PrometheusSource:
        return PrometheusSource(options.environ, options.timeout_seconds, options.pool_size)

    def from_keda(self, keda: KedaTrigger) -> dict[str, Any] | None:
        return _from_keda(self, keda)


SOURCE_TYPE = Prometheus()


def prometheus_trigger(
    server_address: str, query: str, threshold: float, activation: float = 0.0,
    name: str = "prometheus", **settings: Any,
) -> Trigger:  # fmt: skip
    """A trigger built in code (tests), as the rule file would build it."""
    values = PrometheusSettings(server_address=server_address, query=query, **settings)
    return Trigger(Prometheus.type, name, values, threshold, activation)


# --- reading -----------------------------------------------------------------------------------


class PrometheusReadError(base.SourceError):
    """A value could not be read; `str()` names the server (never its query string) and the
    query (never one from the environment)."""


@dataclass(frozen=True)
class _Answer:
    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes | None  # None: over the size cap


class _RetryableAnswer(Exception):
    """A 429 or 5xx answer, raised so retry.call may try again within the tick."""

    def __init__(self, answer: _Answer) -> None:
        super().__init__(answer.status)
        self.answer = answer


def _transient(exc: Exception) -> retry.Transient | None:
    if isinstance(exc, _RetryableAnswer):
        return retry.after_status(exc.answer.status, exc.answer.headers)
    return http_common.transient_failure(exc)


class PrometheusSource(http_common.HttpReader):
    """Reads Prometheus query APIs; safe to call from many threads at once (one session)."""

    def read(self, trigger: Trigger) -> float:
        settings: PrometheusSettings = trigger.settings
        url, params = self._request(settings)
        headers = {**dict(settings.custom_headers), **self._auth_headers(settings)}
        timeout = retry.call_timeout(settings.timeout or self._timeout_seconds)
        session = self._sessions.get()
        if settings.unsafe_ssl:
            self._sessions.warn_unsafe_once(f"prometheus {settings.label}")

        def fetch() -> _Answer:
            t = retry.call_timeout(timeout)
            with session.get(
                url, params=params, headers=headers, timeout=(t, t),
                verify=not settings.unsafe_ssl, stream=True,
            ) as response:  # fmt: skip
                answer = _Answer(
                    response.status_code,
                    response.reason or "",
                    dict(response.headers),
                    http_common.read_body(response),
                )
            if answer.status in retry.RETRYABLE_STATUSES:
                raise _RetryableAnswer(answer)
            return answer

        try:
            answer = retry.call(fetch, _transient)
        except _RetryableAnswer as exc:
            answer = exc.answer
        except requests.RequestException as exc:
            raise _error(settings, *http_common.request_failure(exc, url, timeout)) from None
        return value_of(answer, settings)

    def _secret(self, settings: PrometheusSettings, env: str, what: str) -> str:
        value = self.env_secret(env)
        if not value:
            raise _error(
                settings,
                base.MISSING_CREDENTIAL,
                f"the environment variable {env} ({what}) is unset or empty",
            )
        return value

    def _request(self, settings: PrometheusSettings) -> tuple[str, list[tuple[str, str]]]:
        """The query API's URL (no query string) and every query parameter, in order."""
        address = settings.server_address
        if settings.server_address_from_env:
            address = self._secret(settings, settings.server_address_from_env, "the address")
            http_common.register_url_secrets(address)
            problem = http_common.url_problem(address)
            if problem:
                raise _error(
                    settings,
                    base.INVALID_CREDENTIAL,
                    f"{problem} in {settings.server_address_from_env}",
                )
        query = settings.query
        if settings.query_from_env:
            query = self._secret(settings, settings.query_from_env, "the query")
        parts = urlsplit(address)
        url = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + QUERY_PATH, "", ""))
        params = parse_qsl(parts.query, keep_blank_values=True) + [("query", query)]
        if settings.namespace:
            params.append(("namespace", settings.namespace))
        return url, params + list(settings.query_parameters)

    def _auth_headers(self, settings: PrometheusSettings) -> dict[str, str]:
        mode = settings.auth_modes
        if mode == "bearer":
            token = self._secret(settings, settings.bearer_token_from_env, "the bearer token")
            return {"Authorization": f"Bearer {token}"}
        if mode == "custom":
            value = self._secret(settings, settings.custom_auth_value_from_env, "the header value")
            return {settings.custom_auth_header: value}
        if mode == "basic":
            user = settings.username
            if settings.username_from_env:
                user = self._secret(settings, settings.username_from_env, "the user name")
            password = ""
            if settings.password_from_env:
                password = self._secret(settings, settings.password_from_env, "the password")
            return {"Authorization": http_common.basic_authorization(user, password)}
        return {}


# --- the answer --------------------------------------------------------------------------------


def value_of(answer: _Answer, settings: PrometheusSettings) -> float:
    """The number in a query API answer, or PrometheusReadError."""
    if answer.body is None:
        raise _error(
            settings,
            base.BAD_RESPONSE,
            f"the answer is over {http_common.MAX_BODY_BYTES} bytes: the query gives far more "
            "than one element",
            "TooLarge",
        )
    document = _json(answer.body)
    if answer.status != 200:
        raise _status_error(answer, document, settings)
    if not isinstance(document, Mapping) or document.get("status") != "success":
        raise _error(settings, base.BAD_RESPONSE, "not a Prometheus query API answer", "NotPromQL")
    data = document.get("data")
    if not isinstance(data, Mapping):
        raise _error(settings, base.BAD_RESPONSE, "the answer has no data", "NotPromQL")
    return _value_of_result(data.get("resultType"), data.get("result"), settings)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def _value_of_result(kind: Any, result: Any, settings: PrometheusSettings) -> float:
    if kind == "scalar":
        return _sample_value(result, settings)
    if kind != "vector":
        shown = {"matrix": "a range vector (matrix)", "string": "a string"}.get(str(kind))
        raise _error(
            settings,
            base.BAD_RESPONSE,
            f"the query gives {shown or show(kind)}, not an instant vector or a scalar",
            "UnsupportedResultType",
        )
    if not isinstance(result, list):
        raise _error(settings, base.BAD_RESPONSE, "the vector is not a list", "NotPromQL")
    if len(result) > 1:
        raise _error(
            settings,
            base.BAD_RESPONSE,
            f"the query gives {len(result)} elements, not one: aggregate it (sum, max, ...)",
            "MultipleElements",
        )
    if not result:
        if settings.ignore_null_values:
            return 0.0
        raise _error(
            settings,
            base.BAD_RESPONSE,
            "the query gives an empty vector (the target may be lost; ignoreNullValues: true "
            "reads it as 0)",
            "EmptyResult",
        )
    element = result[0]
    return _sample_value(element.get("value") if isinstance(element, Mapping) else None, settings)


def _sample_value(sample: Any, settings: PrometheusSettings) -> float:
    """[<unix time>, "<value>"] -> the value, finite or an error."""
    if not (isinstance(sample, list) and len(sample) == 2 and isinstance(sample[1], str)):
        raise _error(settings, base.BAD_RESPONSE, f"not a sample: {show(sample)}", "NotPromQL")
    try:
        value = float(sample[1])
    except ValueError:
        raise _error(
            settings, base.BAD_RESPONSE, f"the value {show(sample[1])} is not a number", "NotPromQL"
        ) from None
    if not math.isfinite(value):
        raise _error(
            settings,
            base.BAD_RESPONSE,
            f"the query gives {sample[1]}, not a finite number",
            "NotFinite",
        )
    return value


def _status_error(
    answer: _Answer, document: Any, settings: PrometheusSettings
) -> PrometheusReadError:
    status = answer.status
    said = _server_says(document, settings)
    if status in (401, 403):
        where = _credential_source(settings)
        return _error(settings, base.UNAUTHORIZED, f"HTTP {status}: the server refused {where}")
    if status == 404:
        return _error(
            settings,
            base.NOT_FOUND,
            f"HTTP 404: no query API at {QUERY_PATH} (serverAddress is the server's root, "
            "or the prefix it is served under)",
        )
    if status == 400:
        return _error(settings, base.SERVICE_ERROR, f"HTTP 400: bad query{said}", "BadQuery")
    kind = base.UNAVAILABLE if status in retry.RETRYABLE_STATUSES else base.SERVICE_ERROR
    return _error(settings, kind, f"HTTP {status} {answer.reason}".strip() + said, "QueryFailed")


def _server_says(document: Any, settings: PrometheusSettings) -> str:
    """`: <errorType>: <error>` from an error answer; the error text only when the query is
    not a secret (a parse error may quote a piece of it)."""
    if not isinstance(document, Mapping) or document.get("status") != "error":
        return ""
    error_type = first_line(str(document.get("errorType", ""))) or "error"
    if settings.query_from_env:
        return f": {error_type} (the server's message is not shown: the query is a secret)"
    return f": {error_type}: {first_line(str(document.get('error', '')))}"


def _credential_source(settings: PrometheusSettings) -> str:
    env = {
        "bearer": settings.bearer_token_from_env,
        "basic": settings.password_from_env or settings.username_from_env,
        "custom": settings.custom_auth_value_from_env,
    }.get(settings.auth_modes)
    if env:
        return f"the {settings.auth_modes} credential from env {env}"
    if settings.auth_modes == "basic":
        return f"the basic credential of user {settings.username!r}"
    return "the request (no authModes is set)"


def _error(
    settings: PrometheusSettings, kind: str, detail: str, code: str | None = None
) -> PrometheusReadError:
    message = f"prometheus {settings.label}: {kind}: {detail}"
    return PrometheusReadError(kind, redact(message), code)


# ---------------------------------------------------------------------------------------------
# convert: KEDA's prometheus trigger, its TriggerAuthentication's secrets as env vars

KEDA_AUTH_PARAMS = {
    "bearerToken": "bearerTokenFromEnv",
    "username": "usernameFromEnv",
    "password": "passwordFromEnv",
    "customAuthValue": "customAuthValueFromEnv",
}
KEDA_UNSUPPORTED = {
    "metricName": "deprecated in KEDA 2.10 (the metric is named after the trigger here)",
    "awsRegion": "AWS SigV4 (Amazon Managed Prometheus) is not supported: use a proxy that signs",
    "identityOwner": "pod identity is not supported by eventscaler's prometheus source",
}


def _from_keda(source: Prometheus, keda: KedaTrigger) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    for key, value in keda.metadata.items():
        if key in KEDA_UNSUPPORTED:
            keda.lost(f"metadata.{key}", KEDA_UNSUPPORTED[key])
        elif key == "cortexOrgID":
            _keda_org_id(keda, out, value)
        elif key in ("threshold", "activationThreshold"):
            number = keda.number(value)
            if number is None or number < 0:
                keda.lost(f"metadata.{key}", f"expected a number, got {value!r}")
            else:
                out[key] = number
        elif key in source.keys() - set(INLINE_SECRETS):
            out[key] = value
        else:
            keda.lost(f"metadata.{key}", "not a prometheus setting eventscaler knows")
    http_common.keda_url_to_env(
        keda, out, "serverAddress", "serverAddressFromEnv", "prometheus_url"
    )
    http_common.keda_secret_refs(keda, out, KEDA_AUTH_PARAMS, "prometheus")
    _keda_auth_modes(keda, out)
    for key in ("serverAddress", "query", "threshold"):
        if key not in out and f"{key}FromEnv" not in out:
            keda.lost(f"metadata.{key}", "missing: trigger not converted")
            return None
    return _loads(source, keda, out)


def _loads(source: Prometheus, keda: KedaTrigger, out: dict[str, Any]) -> dict[str, Any] | None:
    """`out`, if it loads as a trigger: convert never writes one that does not."""
    try:
        source.parse_settings(out, "metadata")
    except (ConfigError, ConfigErrors) as exc:
        errors = exc.errors if isinstance(exc, ConfigErrors) else [exc]
        for error in errors:
            keda.lost(error.field, f"{error.message}: trigger not converted")
        return None
    return out


def _keda_org_id(keda: KedaTrigger, out: dict[str, Any], value: Any) -> None:
    """KEDA before 2.12 sent cortexOrgID as the X-Scope-OrgID header: customHeaders does now."""
    headers = str(out.get("customHeaders") or keda.metadata.get("customHeaders") or "")
    out["customHeaders"] = ",".join(filter(None, [headers, f"X-Scope-OrgID={value}"]))
    keda.note("metadata.cortexOrgID", "sent as customHeaders X-Scope-OrgID, as KEDA 2.10+ does")


def _keda_auth_modes(keda: KedaTrigger, out: dict[str, Any]) -> None:
    """KEDA allows several modes ("tls,basic"); here one of bearer, basic, custom."""
    modes = [m.strip().lower() for m in str(out.get("authModes", "")).split(",") if m.strip()]
    kept = [m for m in modes if m in AUTH_MODES]
    if len(kept) < len(modes):
        keda.lost("metadata.authModes", f"only {', '.join(AUTH_MODES)} are supported: tls and "
                                        "others are left out")  # fmt: skip
    if kept:
        out["authModes"] = kept[0]
    else:
        out.pop("authModes", None)
    if out.get("authModes") == "custom" and "customAuthHeader" not in out:
        keda.note(
            "authenticationRef",
            "customAuthHeader (the header's name) comes from the Secret in KEDA: write it in "
            "the rule's customAuthHeader",
        )
