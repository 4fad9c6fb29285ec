"""NATS JetStream consumer backlogs, as KEDA's `nats-jetstream` scaler reads them.

The value is the consumer's `num_pending` (messages not yet delivered to it) plus its
`num_ack_pending` (delivered, not yet acknowledged: in-flight work), from the server's monitoring
endpoint, `GET /jsz?acc=ACCOUNT&consumers=true`, plain HTTP (HTTPS with `useHttps`) through
requests. The monitoring endpoint has no credentials, so this source has no secret.

- A stream the account does not have, or an account without JetStream there: NotFound.
- A consumer the stream does not have (its workers create it when they start, so a workload
  scaled to zero never does): every message in the stream counts, its `state.messages`. KEDA
  counts the stream's `last_seq` there, which also counts the messages already removed from the
  stream (acknowledged in a work queue, expired), and can ask for the maximum with nothing to do.
- A clustered server answers for the replicas it holds; KEDA looks for the consumer's leader
  among the cluster's nodes first, this source reads the node it is given (point it at the
  consumer's leader, or at a single server).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from eventscaler import retry
from eventscaler.fields import ConfigError, parse_bool, parse_str, show
from eventscaler.redact import first_line
from eventscaler.sources import base
from eventscaler.sources.base import KedaTrigger, SourceOptions, SourceType, optional, required
from eventscaler.triggers import Trigger

logger = logging.getLogger(__name__)

DEFAULT_LAG_THRESHOLD = 10.0  # KEDA's default
DEFAULT_ACCOUNT = "$G"  # NATS's global account, where streams live when no account is set up
DEFAULT_POOL_SIZE = 16
_ENDPOINT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)(:\d{1,5})?$")
_ACCOUNT = re.compile(r"^[^\s&#?/]{1,256}$")
# JetStream's rule for stream and consumer names: no whitespace, '.', '*', '>' or path separators.
_JS_NAME = re.compile(r"^[^\s.*>/\\]{1,255}$")

# SourceError.code values of this source.
ACCOUNT_NOT_FOUND = "AccountNotFound"
STREAM_NOT_FOUND = "StreamNotFound"
JETSTREAM_DISABLED = "JetStreamDisabled"
HTTP_ERROR = "HttpError"
REFUSED = "Refused"
TIMEOUT = "Timeout"
CONNECTION_ERROR = "ConnectionError"
BAD_RESPONSE = "BadResponse"
KIND_OF_CODE = {
    ACCOUNT_NOT_FOUND: base.NOT_FOUND,
    STREAM_NOT_FOUND: base.NOT_FOUND,
    JETSTREAM_DISABLED: base.SERVICE_ERROR,
    HTTP_ERROR: base.SERVICE_ERROR,
    REFUSED: base.UNAUTHORIZED,
    TIMEOUT: base.TIMEOUT,
    CONNECTION_ERROR: base.UNAVAILABLE,
    BAD_RESPONSE: base.BAD_RESPONSE,
}


@dataclass(frozen=True)
class NatsJetStreamSettings:
    """One `type: nats-jetstream` trigger's own fields (KEDA's names, in snake_case)."""

    nats_server_monitoring_endpoint: str
    stream: str
    consumer: str
    account: str = DEFAULT_ACCOUNT
    use_https: bool = False

    @property
    def jsz_url(self) -> str:
        scheme = "https" if self.use_https else "http"
        return f"{scheme}://{self.nats_server_monitoring_endpoint}/jsz"


def _parse_endpoint(value: Any, field: str) -> str:
    if isinstance(value, str) and "://" in value:
        raise ConfigError(
            field,
            f"expected host:port without a scheme (useHttps: true for HTTPS), got {show(value)}",
        )
    if isinstance(value, str) and "@" in value:
        raise ConfigError(
            field,
            "expected host:port, got a value with credentials (not shown): "
            "the monitoring endpoint takes none",
        )
    return parse_str(value, field, _ENDPOINT, "host:port of the server's monitoring endpoint")


def _parse_js_name(value: Any, field: str) -> str:
    return parse_str(value, field, _JS_NAME, "a JetStream name (no blanks, '.', '*', '>' or '/')")


def _parse_account(value: Any, field: str) -> str:
    return parse_str(value, field, _ACCOUNT, "a NATS account name ('$G' without accounts)")


class NatsJetStream(SourceType):
    """`type: nats-jetstream`: a JetStream consumer's pending plus unacknowledged messages."""

    type = "nats-jetstream"
    settings = NatsJetStreamSettings
    target_key = "lagThreshold"
    target_default = DEFAULT_LAG_THRESHOLD
    activation_key = "activationLagThreshold"
    fields = (
        required("natsServerMonitoringEndpoint", _parse_endpoint),
        required("stream", _parse_js_name),
        required("consumer", _parse_js_name),
        optional("account", _parse_account, DEFAULT_ACCOUNT),
        optional("useHttps", parse_bool, False),
    )

    def default_name(self, settings: NatsJetStreamSettings) -> str:
        # Names appear in metrics and formulas: JetStream names may hold characters they cannot.
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{settings.stream}-{settings.consumer}")
        return name.strip("-._")[:253] or self.type

    def describe(self, settings: NatsJetStreamSettings) -> str:
        return (
            f"nats-jetstream {settings.stream}/{settings.consumer} (account {settings.account}) "
            f"at {settings.nats_server_monitoring_endpoint}"
        )

    def open(self, options: SourceOptions) -> NatsJetStreamSource:
        return NatsJetStreamSource(options.timeout_seconds, options.pool_size)

    def from_keda(self, keda: KedaTrigger) -> dict[str, Any] | None:
        fields = super().from_keda(keda)
        use_https = str((fields or {}).get("useHttps", "")).strip().lower()
        if fields is not None and use_https in ("true", "false"):
            fields["useHttps"] = use_https == "true"  # KEDA's metadata strings, as a boolean
        if isinstance(keda.auth_ref, Mapping):
            ref = keda.auth_ref
            what = f"{ref.get('kind') or 'TriggerAuthentication'} {ref.get('name', '')}"
            missing = [
                k for k in ("natsServerMonitoringEndpoint", "account") if k not in (fields or {})
            ]
            hint = f": write {' and '.join(missing)} in the trigger" if missing else ""
            keda.lost(
                "authenticationRef",
                f"{what}: eventscaler reads no TriggerAuthentication "
                f"(neither value is a secret){hint}",
            )
        return fields


SOURCE_TYPE = NatsJetStream()


class NatsReadError(base.SourceError):
    """A consumer's backlog could not be read; `str()` names stream, consumer and endpoint."""


class _Status(Exception):
    """A non-200 answer, raised inside the retried call so 5xx and 429 are retried."""

    def __init__(self, response: requests.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


class NatsJetStreamSource:
    """Reads consumers' backlogs; one HTTP session (a connection pool per server) per process."""

    def __init__(self, timeout_seconds: float = 5.0, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        self._timeout = timeout_seconds
        self._session = requests.Session()
        # Proxies and the CA bundle are read from the environment once per server, not on every
        # call (what trust_env would do), and the retries are ours (bounded by the tick).
        self._session.trust_env = False
        self._verify: str | bool = (
            os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        )
        self._proxies: dict[str, dict[str, str]] = {}
        adapter = HTTPAdapter(pool_maxsize=pool_size, max_retries=0)  # errors come out wrapped
        for prefix in ("http://", "https://"):
            self._session.mount(prefix, adapter)

    def read(self, trigger: Trigger) -> float:
        return float(self.read_lag(trigger.settings))

    def read_lag(self, settings: NatsJetStreamSettings) -> int:
        """num_pending + num_ack_pending of the consumer, or raise NatsReadError."""
        body = self._get_jsz(settings)
        stream = _find_stream(body, settings)
        consumer = next(
            (c for c in _list(stream, "consumer_detail") if c.get("name") == settings.consumer),
            None,
        )
        if consumer is None:
            # Not created yet: a consumer made now would have every message still in the stream.
            return _count(stream.get("state"), "messages", settings)
        return _count(consumer, "num_pending", settings) + _count(
            consumer, "num_ack_pending", settings
        )

    def close(self) -> None:
        self._session.close()

    def _get_jsz(self, settings: NatsJetStreamSettings) -> Mapping[str, Any]:
        url = settings.jsz_url
        params = {"acc": settings.account, "consumers": "true"}

        def get() -> requests.Response:
            response = self._session.get(
                url,
                params=params,
                timeout=retry.call_timeout(self._timeout),
                verify=self._verify,
                proxies=self._proxies_for(url),
            )
            if response.status_code != 200:
                raise _Status(response)
            return response

        try:
            response = retry.call(get, transient_failure)
        except _Status as exc:
            raise _http_error(settings, exc.response) from None
        except requests.RequestException as exc:
            raise _request_error(settings, exc, self._timeout) from None
        try:
            body = response.json()
        except ValueError:
            raise _error(settings, BAD_RESPONSE, "the answer is not JSON") from None
        if not isinstance(body, Mapping):
            raise _error(settings, BAD_RESPONSE, "the answer is not a JSON object")
        return body

    def _proxies_for(self, url: str) -> dict[str, str]:
        proxies = self._proxies.get(url)
        if proxies is None:  # HTTPS_PROXY, HTTP_PROXY and NO_PROXY, as requests reads them
            proxies = self._proxies[url] = requests.utils.get_environ_proxies(url)
        return proxies


def transient_failure(exc: Exception) -> retry.Transient | None:
    """Connection errors, timeouts, 5xx and 429 (with its Retry-After) are worth another try."""
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return retry.Transient()
    if isinstance(exc, _Status):
        return retry.after_status(exc.response.status_code, exc.response.headers)
    return None


def _find_stream(body: Mapping[str, Any], settings: NatsJetStreamSettings) -> Mapping[str, Any]:
    if body.get("disabled"):
        raise _error(settings, JETSTREAM_DISABLED, "JetStream is not enabled on this server")
    # The server may list other accounts too: the one asked for is found by name (or its id).
    account = next(
        (
            a
            for a in _list(body, "account_details")
            if settings.account in (a.get("name"), a.get("id"))
        ),
        None,
    )
    if account is None:
        raise _error(
            settings,
            ACCOUNT_NOT_FOUND,
            f"account {settings.account!r} has no JetStream streams on this server",
        )
    stream = next(
        (s for s in _list(account, "stream_detail") if s.get("name") == settings.stream), None
    )
    if stream is None:
        raise _error(
            settings,
            STREAM_NOT_FOUND,
            f"account {settings.account!r} has no stream {settings.stream!r}",
        )
    return stream


def _list(parent: Any, key: str) -> list[Mapping[str, Any]]:
    items = parent.get(key) if isinstance(parent, Mapping) else None
    return [item for item in items or [] if isinstance(item, Mapping)]


def _count(parent: Any, key: str, settings: NatsJetStreamSettings) -> int:
    value = parent.get(key) if isinstance(parent, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        # Never guessed as 0: a missing number must not scale anything down.
        raise _error(settings, BAD_RESPONSE, f"the answer carries no count {key!r}")
    return value


def _error(settings: NatsJetStreamSettings, code: str, detail: str) -> NatsReadError:
    message = (
        f"nats-jetstream stream {settings.stream!r} consumer {settings.consumer!r} "
        f"(account {settings.account} at {settings.jsz_url}): {code}: {detail}"
    )
    return NatsReadError(KIND_OF_CODE.get(code, base.SERVICE_ERROR), message, code)


def _http_error(settings: NatsJetStreamSettings, response: requests.Response) -> NatsReadError:
    status = response.status_code
    reason = first_line(response.text) or response.reason or ""
    code = REFUSED if status in (401, 403) else HTTP_ERROR
    return _error(settings, code, f"HTTP {status} {reason}".strip())


def _request_error(
    settings: NatsJetStreamSettings, exc: requests.RequestException, timeout: float
) -> NatsReadError:
    where = settings.nats_server_monitoring_endpoint
    if isinstance(exc, requests.Timeout):
        return _error(settings, TIMEOUT, f"no answer from {where} (timeout {timeout:g} s)")
    if isinstance(exc, requests.ConnectionError):
        return _error(settings, CONNECTION_ERROR, f"cannot reach {where}: {_reason(exc)}")
    return _error(settings, CONNECTION_ERROR, f"{type(exc).__name__}: {_reason(exc)}")


def _reason(exc: Exception) -> str:
    """The innermost cause's words: requests wraps urllib3's pool error around the socket's."""
    text = str(exc)
    for marker in ("Caused by ", "] "):
        if marker in text:
            text = text.rsplit(marker, 1)[-1]
    return first_line(text.strip("()'\" ")) or type(exc).__name__
