"""RabbitMQ queue lengths and publish rates, read the way KEDA's rabbitmq scaler reads them.

The only module of the daemon that imports pika. Two ways to read a queue, by `protocol`
(`auto`: from the URL's scheme):
- `amqp` (amqp://, amqps://): a passive `queue.declare`, whose answer carries the queue's
  message count: the messages READY for delivery only. Messages a consumer holds unacknowledged
  are not counted, so busy workers do not keep their replicas on this number.
- `http` (http://, https://): the management API's `GET /api/queues/{vhost}/{queue}`: `messages`
  (ready + unacknowledged, so in-flight work counts) or, with `excludeUnacknowledged`,
  `messages_ready`. `mode: MessageRate` reads `message_stats.publish_details.rate` (messages
  published per second). `useRegex` reads every queue whose name matches `queueName` (one page of
  `pageSize`) and combines them by `operation` (sum, max, avg).

Credentials: a URL with a password is a secret, so it never sits in the rule file: `hostFromEnv`
names the environment variable holding it (KEDA's own field), or `host` holds a URL without a
password and `usernameFromEnv` / `passwordFromEnv` name the variables of the credentials. Every
secret read is registered for log redaction; errors name the queue, the host and the variables.

Connections: one AMQP connection per server, vhost and credentials in the process, built on the
first read, reused across ticks, rebuilt after any failure; pika is not thread-safe, so each
connection is used under its own lock. Every call is bounded by `retry.call_timeout`: a server
that stops answering on an open connection is cut off at the deadline (pika's own calls would
wait forever). The management API goes through one `requests` session.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import SplitResult, quote, unquote, urlsplit

import pika
import pika.exceptions
import requests
from pika.adapters.blocking_connection import BlockingChannel
from pika.adapters.utils.connection_workflow import (
    AMQPConnectorException,
    AMQPConnectorPhaseErrorBase,
    AMQPConnectorStackTimeout,
)
from requests.adapters import HTTPAdapter

from eventscaler import retry
from eventscaler.fields import (
    ConfigError,
    choices,
    parse_bool,
    parse_choice,
    parse_env_name,
    parse_int,
    parse_text,
    show,
)
from eventscaler.redact import first_line, redact, register_secret
from eventscaler.sources import base
from eventscaler.sources.base import (
    KedaTrigger,
    SourceOptions,
    SourceType,
    optional,
    required,
)
from eventscaler.triggers import Measured, Trigger

logger = logging.getLogger(__name__)

# pika logs every failed connection and every broker-closed connection at ERROR, with a traceback
# for some: each failed read would print several lines besides the one SourceError line.
logging.getLogger("pika").setLevel(logging.CRITICAL)

AMQP, HTTP, AUTO = "amqp", "http", "auto"
QUEUE_LENGTH, MESSAGE_RATE = "QueueLength", "MessageRate"
SUM, MAX, AVG = "sum", "max", "avg"
DEFAULT_VALUE = 20.0  # KEDA's default target: 20 messages per replica
DEFAULT_PAGE_SIZE = 100
SCHEMES = {"amqp": AMQP, "amqps": AMQP, "http": HTTP, "https": HTTP}
DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671, "http": 80, "https": 443}
STATS_COLUMNS = "name,messages,messages_ready,message_stats.publish_details.rate"
CONNECTION_NAME = "eventscaler"  # shown in the management UI's connection list
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")

# RabbitMqReadError codes, and the project's kind of each.
QUEUE_NOT_FOUND = "QueueNotFound"
VHOST_NOT_FOUND = "VhostNotFound"
ACCESS_REFUSED = "AccessRefused"
MISSING_HOST = "MissingHost"
MISSING_CREDENTIAL = "MissingCredential"
INVALID_HOST = "InvalidHost"
TIMEOUT = "Timeout"
CONNECTION_ERROR = "ConnectionError"
BAD_RESPONSE = "BadResponse"
SERVICE_ERROR = "ServiceError"
KIND_OF_CODE = {
    QUEUE_NOT_FOUND: base.NOT_FOUND,
    VHOST_NOT_FOUND: base.NOT_FOUND,
    ACCESS_REFUSED: base.UNAUTHORIZED,
    MISSING_HOST: base.MISSING_CREDENTIAL,
    MISSING_CREDENTIAL: base.MISSING_CREDENTIAL,
    INVALID_HOST: base.INVALID_CREDENTIAL,
    TIMEOUT: base.TIMEOUT,
    CONNECTION_ERROR: base.UNAVAILABLE,
    BAD_RESPONSE: base.BAD_RESPONSE,
    SERVICE_ERROR: base.SERVICE_ERROR,
}


@dataclass(frozen=True)
class RabbitMqSettings:
    """One `type: rabbitmq` trigger's own fields (KEDA's names, in snake_case)."""

    queue_name: str
    host: str = ""  # a URL without a password, from the rule file
    host_from_env: str = ""  # or the variable holding the URL (credentials allowed)
    username_from_env: str = ""
    password_from_env: str = ""
    protocol: str = AUTO  # amqp or http once known: auto stays only for a URL from the env
    vhost_name: str = ""  # overrides the URL's vhost
    mode: str = QUEUE_LENGTH
    exclude_unacknowledged: bool = False
    use_regex: bool = False
    page_size: int = DEFAULT_PAGE_SIZE
    operation: str = SUM
    timeout: float | None = None  # seconds (KEDA's `timeout` is in milliseconds)

    @property
    def credential_source(self) -> str:
        """Where the URL and credentials come from, safe to log."""
        where = f"URL from env {self.host_from_env}" if self.host_from_env else "host from rules"
        if self.username_from_env:
            where += f", user from env {self.username_from_env}"
            where += f", password from env {self.password_from_env}"
        return where


# ---------------------------------------------------------------------------------------------
# The field table and its checks


def _parse_host(value: Any, field: str) -> str:
    text = parse_text(value, field, "an amqp://, amqps://, http:// or https:// URL")
    parts = _split_url(text)
    if parts is None or parts.scheme not in SCHEMES or not parts.hostname:
        raise ConfigError(
            field, f"expected an amqp://, amqps://, http:// or https:// URL, got {show(value)}"
        )
    if parts.password:
        # Never echo the value: it holds a password.
        raise ConfigError(
            field,
            "holds a password, which must not sit in the rule file: put the URL in an "
            "environment variable (from a Secret) and name it with hostFromEnv, or give "
            "usernameFromEnv and passwordFromEnv",
        )
    return text


def _parse_timeout_ms(value: Any, field: str) -> float:
    number = value
    if isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    return parse_int(number, field, minimum=1) / 1000.0


def _parse_queue_name(value: Any, field: str) -> str:
    text = parse_text(value, field, "a queue name")
    if len(text.encode()) > 255:
        raise ConfigError(field, "expected a queue name of at most 255 bytes (RabbitMQ's limit)")
    return text


def _parse_page_size(value: Any, field: str) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    return parse_int(value, field, minimum=1)


def _checked_choice(table: dict[str, str]) -> Callable[[Any, str], str]:
    return lambda v, f: parse_choice(v, f, table)


class RabbitMq(SourceType):
    """`type: rabbitmq`: a queue's messages (AMQP or the management API) or its publish rate."""

    type = "rabbitmq"
    settings = RabbitMqSettings
    target_key = "value"
    target_default = DEFAULT_VALUE
    activation_key = "activationValue"
    fields = (
        required("queueName", _parse_queue_name),
        optional("host", _parse_host, ""),
        optional("hostFromEnv", parse_env_name, "", secret_env=True),
        optional("usernameFromEnv", parse_env_name, "", secret_env=True),
        optional("passwordFromEnv", parse_env_name, "", secret_env=True),
        optional("protocol", _checked_choice(choices(AUTO, AMQP, HTTP)), AUTO),
        optional("vhostName", lambda v, f: parse_text(v, f, "a vhost name"), ""),
        optional("mode", _checked_choice(choices(QUEUE_LENGTH, MESSAGE_RATE)), QUEUE_LENGTH),
        optional("excludeUnacknowledged", parse_bool, False),
        optional("useRegex", parse_bool, False),
        optional("pageSize", _parse_page_size, DEFAULT_PAGE_SIZE),
        optional("operation", _checked_choice(choices(SUM, MAX, AVG)), SUM),
        optional("timeout", _parse_timeout_ms, None),
    )

    def check(self, values: dict[str, Any], data: Mapping[str, Any], field: str) -> dict[str, Any]:
        _check_host(values, field)
        if "mode" in data and "value" not in data:
            raise ConfigError(f"{field}.value", "is required with mode (KEDA's rule)")
        if not values["use_regex"]:
            for key in ("operation", "pageSize"):
                if key in data:
                    raise ConfigError(f"{field}.{key}", "only applies with useRegex: true")
        protocol = values["protocol"]
        if values["host"] and protocol == AUTO:
            protocol = _scheme_protocol(values["host"])
        elif values["host"] and protocol != _scheme_protocol(values["host"]):
            raise ConfigError(
                f"{field}.protocol", f"is {protocol}, but host is a {_scheme(values['host'])} URL"
            )
        if protocol == AMQP:
            _check_http_only(values, field)
        return {**values, "protocol": protocol}

    def default_name(self, settings: RabbitMqSettings) -> str:
        return _trigger_name(settings.queue_name)

    def describe(self, settings: RabbitMqSettings) -> str:
        vhost = f" vhost {settings.vhost_name}" if settings.vhost_name else ""
        return f"rabbitmq {settings.queue_name}{vhost}"

    def details(self, settings: RabbitMqSettings) -> tuple[str, ...]:
        return (settings.protocol, _what_is_counted(settings))

    def open(self, options: SourceOptions) -> RabbitMqSource:
        return RabbitMqSource(options.environ, options.timeout_seconds, options.pool_size)

    def simulated_value(self, settings: RabbitMqSettings, backlog: int, in_flight: int) -> float:
        # The simulator has no publish rate: MessageRate reads the backlog as a stand-in.
        if settings.mode == QUEUE_LENGTH and _counts_ready_only(settings):
            return float(max(backlog - in_flight, 0))
        return float(backlog)

    def from_keda(self, keda: KedaTrigger) -> dict[str, Any] | None:
        return _from_keda(keda, self.keys())


SOURCE_TYPE = RabbitMq()


def _check_host(values: dict[str, Any], field: str) -> None:
    if not values["host"] and not values["host_from_env"]:
        raise ConfigError(f"{field}.hostFromEnv", "is required (or host, without a password)")
    if values["host"] and values["host_from_env"]:
        raise ConfigError(f"{field}.host", "give host or hostFromEnv, not both")
    user, password = values["username_from_env"], values["password_from_env"]
    if bool(user) != bool(password):
        missing = "passwordFromEnv" if user else "usernameFromEnv"
        raise ConfigError(f"{field}.{missing}", "is required with the other (KEDA's rule)")


def _check_http_only(values: dict[str, Any], field: str) -> None:
    """MessageRate, useRegex and excludeUnacknowledged need the management API."""
    if values["mode"] == MESSAGE_RATE:
        raise ConfigError(f"{field}.mode", "MessageRate needs protocol http (the management API)")
    for attribute, key in (
        ("use_regex", "useRegex"),
        ("exclude_unacknowledged", "excludeUnacknowledged"),
    ):
        if values[attribute]:
            raise ConfigError(f"{field}.{key}", "needs protocol http (the management API)")


def _split_url(text: str) -> SplitResult | None:
    try:
        parts = urlsplit(text.strip())
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return None
    return parts


def _scheme(url: str) -> str:
    return urlsplit(url.strip()).scheme.lower()


def _scheme_protocol(url: str) -> str:
    return SCHEMES[_scheme(url)]


def _trigger_name(queue_name: str) -> str:
    """A trigger name from a queue name (or regex): `orders.*` -> `orders`."""
    name = _UNSAFE_NAME.sub("-", queue_name).strip("-._")[:253]
    return name if name and name[0].isalnum() else "rabbitmq"


def _counts_ready_only(settings: RabbitMqSettings) -> bool:
    # A URL from the environment with protocol auto: most are amqp:// (KEDA's own example).
    return settings.protocol in (AMQP, AUTO) or settings.exclude_unacknowledged


def _what_is_counted(settings: RabbitMqSettings) -> str:
    if settings.mode == MESSAGE_RATE:
        what = "publish rate"
    elif settings.protocol == AUTO:
        what = "ready messages (amqp) or ready + unacked (http)"
    elif _counts_ready_only(settings):
        what = "ready messages"
    else:
        what = "ready + unacked messages"
    if settings.use_regex:
        what += f", {settings.operation} over queues matching"
    return what


def rabbitmq_trigger(queue_name: str, value: float = DEFAULT_VALUE, **settings: Any) -> Trigger:
    """A trigger built in code (tests, the simulator), as the rule file would build it."""
    activation = settings.pop("activation", 0.0)
    return Trigger(
        RabbitMq.type,
        settings.pop("name", "") or _trigger_name(queue_name),
        RabbitMqSettings(queue_name, **settings),
        value,
        activation,
    )


# ---------------------------------------------------------------------------------------------
# Errors


class RabbitMqReadError(base.SourceError):
    """A queue could not be read. Never a reading of 0: the caller must not scale on it."""

    def __init__(self, queue_name: str, code: str, message: str) -> None:
        super().__init__(KIND_OF_CODE.get(code, base.SERVICE_ERROR), message, code)
        self.queue_name = queue_name


def _error(
    settings: RabbitMqSettings, code: str, detail: str, where: str = ""
) -> RabbitMqReadError:
    at = f" {where}" if where else ""
    message = (
        f"rabbitmq queue {settings.queue_name!r}{at} ({settings.credential_source}): "
        f"{code}: {detail}"
    )
    return RabbitMqReadError(settings.queue_name, code, redact(message))


def _short(text: str) -> str:
    return first_line(text)


# ---------------------------------------------------------------------------------------------
# Where a trigger reads: the URL and credentials resolved from the rule and the environment


@dataclass(frozen=True)
class Endpoint:
    """A trigger's server, vhost and credentials, as resolved for one read."""

    protocol: str
    url: SplitResult  # without user info
    vhost: str
    username: str = field(repr=False)
    password: str = field(repr=False)  # never in a repr, a traceback's locals included
    base_path: str = ""  # http: the management API's path prefix (KEDA: host/<path>/<vhost>)

    @property
    def address(self) -> str:
        """`host:port`, safe to log."""
        port = self.url.port or DEFAULT_PORTS.get(self.url.scheme, 0)
        host = self.url.hostname or ""
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def where(self) -> str:
        return f"(vhost {self.vhost!r}) at {self.address}"

    @property
    def key(self) -> str:
        """Identifies one connection: server, vhost and credentials (hashed, never shown)."""
        text = "\0".join((self.url.geturl(), self.vhost, self.username, self.password))
        return hashlib.sha256(text.encode()).hexdigest()


def resolve_endpoint(settings: RabbitMqSettings, environ: Mapping[str, str]) -> Endpoint:
    """The trigger's endpoint, or RabbitMqReadError naming the variable at fault."""
    text = settings.host
    if settings.host_from_env:
        text = environ.get(settings.host_from_env, "").strip()
        if not text:
            raise _error(settings, MISSING_HOST, "the environment variable is unset or empty")
        register_secret(text)
    parts = _split_url(text)
    if parts is None or parts.scheme.lower() not in SCHEMES or not parts.hostname:
        raise _error(
            settings, INVALID_HOST, "not an amqp://, amqps://, http:// or https:// URL with a host"
        )
    username, password = _credentials(settings, parts, environ)
    protocol = settings.protocol if settings.protocol != AUTO else SCHEMES[parts.scheme.lower()]
    if protocol != SCHEMES[parts.scheme.lower()]:
        raise _error(settings, INVALID_HOST, f"protocol {protocol} needs a {protocol} URL")
    if protocol == AMQP:
        _refuse_http_only(settings)
    netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc += f":{parts.port}" if parts.port else ""
    bare = parts._replace(scheme=parts.scheme.lower(), netloc=netloc)
    if protocol == AMQP:
        vhost = settings.vhost_name or _amqp_vhost(parts.path)
        return Endpoint(protocol, bare, vhost, username, password)
    base_path, vhost = _http_vhost(parts.path, settings.vhost_name)
    return Endpoint(
        protocol, bare._replace(query="", fragment=""), vhost, username, password, base_path
    )


def _credentials(
    settings: RabbitMqSettings, parts: SplitResult, environ: Mapping[str, str]
) -> tuple[str, str]:
    if not settings.username_from_env:
        password = unquote(parts.password or "")
        register_secret(password)
        register_secret(parts.password or "")
        return unquote(parts.username or ""), password
    values = []
    for env in (settings.username_from_env, settings.password_from_env):
        value = environ.get(env, "")
        if not value:
            raise _error(settings, MISSING_CREDENTIAL, f"env {env} is unset or empty")
        values.append(value)
    register_secret(values[1])
    register_secret(quote(values[1], safe=""))
    return values[0], values[1]


def _refuse_http_only(settings: RabbitMqSettings) -> None:
    """What the rule loader checks for a URL in the rule file, checked here for one from env."""
    wants = [
        name
        for name, on in (
            ("mode MessageRate", settings.mode == MESSAGE_RATE),
            ("useRegex", settings.use_regex),
            ("excludeUnacknowledged", settings.exclude_unacknowledged),
        )
        if on
    ]
    if wants:
        raise _error(
            settings,
            INVALID_HOST,
            f"{', '.join(wants)} needs the management API, but env {settings.host_from_env} "
            "holds an amqp URL: give an http(s):// URL",
        )


def _amqp_vhost(path: str) -> str:
    """The AMQP URI spec's vhost: the path less its slash; none (or `/` alone) is `/`."""
    vhost = unquote(path[1:]) if path.startswith("/") else unquote(path)
    return vhost or "/"


def _http_vhost(path: str, override: str) -> tuple[str, str]:
    """KEDA's reading of an http URL's path: `/<prefix>/<vhost>`; an empty vhost is `/`."""
    segments = path.split("/")
    vhost = unquote(segments[-1]) if len(segments) > 1 else ""
    prefix = "/".join(s for s in segments[:-1] if s)
    return (f"/{prefix}" if prefix else ""), (override or vhost or "/")


# ---------------------------------------------------------------------------------------------
# The reader


class RabbitMqSource:
    """Reads RabbitMQ queues; safe to call from many threads at once."""

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        timeout_seconds: float = 5.0,
        pool_size: int = 16,
    ) -> None:
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._timeout_seconds = timeout_seconds
        self._lock = threading.Lock()  # guards the two dicts below, never held during I/O
        self._connections: dict[str, AmqpConnection] = {}
        self._key_by_trigger: dict[tuple[str, ...], str] = {}
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_maxsize=pool_size, max_retries=0)
        for prefix in ("http://", "https://"):
            self._session.mount(prefix, adapter)

    def __repr__(self) -> str:
        connections = len(self._connections)
        return f"RabbitMqSource(timeout_seconds={self._timeout_seconds}, connections={connections})"

    def read(self, trigger: Trigger) -> float | Measured:
        settings: RabbitMqSettings = trigger.settings
        endpoint = resolve_endpoint(settings, self._environ)
        timeout = settings.timeout or self._timeout_seconds
        if endpoint.protocol == AMQP:
            return self._read_amqp(settings, endpoint, timeout)
        return _read_http(self._session, settings, endpoint, timeout)

    def close(self) -> None:
        with self._lock:
            connections = list(self._connections.values())
            self._connections.clear()
            self._key_by_trigger.clear()
        for connection in connections:
            connection.close()
        self._session.close()

    def _read_amqp(self, settings: RabbitMqSettings, endpoint: Endpoint, timeout: float) -> float:
        connection = self._connection(settings, endpoint)
        try:
            count = retry.call(
                lambda: connection.message_count(settings.queue_name, timeout), amqp_transient
            )
        except (pika.exceptions.AMQPError, AMQPConnectorException) as exc:
            raise _amqp_error(exc, settings, endpoint, timeout) from None
        except ValueError:
            # pika refuses an option of the URL's query (?heartbeat=x...); never echo the URL.
            detail = "pika refused the URL's options (its ?query part)"
            raise _error(settings, INVALID_HOST, detail, endpoint.where) from None
        return float(count)

    def _connection(self, settings: RabbitMqSettings, endpoint: Endpoint) -> AmqpConnection:
        key = endpoint.key
        found = self._connections.get(key)
        trigger_key = (
            settings.host,
            settings.host_from_env,
            settings.username_from_env,
            settings.vhost_name,
        )
        if found is not None and self._key_by_trigger.get(trigger_key) == key:
            return found
        with self._lock:
            old = self._key_by_trigger.get(trigger_key)
            self._key_by_trigger[trigger_key] = key
            found = self._connections.get(key)
            if found is None:
                found = self._connections[key] = AmqpConnection(endpoint)
                logger.debug("new AMQP connection pool entry for %s", endpoint.where)
            retired = None
            if old is not None and old != key and old not in self._key_by_trigger.values():
                retired = self._connections.pop(old, None)  # a rotated secret's connection
        if retired is not None:
            retired.close()
        return found


class _CallTimedOut(pika.exceptions.AMQPConnectionError):
    """The server did not answer within the call's timeout; the connection was cut off."""


class AmqpConnection:
    """One pika BlockingConnection and its channel, used by one thread at a time."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint
        self._lock = threading.Lock()
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self.connects = 0  # connections opened so far (tests, debug logs)

    def message_count(self, queue: str, timeout: float) -> int:
        """The queue's ready messages (a passive declare), connecting first if needed."""
        deadline = time.monotonic() + retry.call_timeout(timeout)
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise _CallTimedOut("another read on this connection did not finish in time")
        try:
            channel = self._open_channel(deadline)
            with self._cut_off_at(deadline):
                frame = channel.queue_declare(queue, passive=True)
            return int(frame.method.message_count)
        except pika.exceptions.ChannelClosed:
            self._channel = None  # the broker closed the channel (404...): a new one next time
            raise
        except Exception:
            self._drop()  # in an unknown state after any other failure: reconnect next time
            raise
        finally:
            self._lock.release()

    def close(self) -> None:
        if self._lock.acquire(timeout=5.0):
            try:
                self._drop()
            finally:
                self._lock.release()

    def _open_channel(self, deadline: float) -> BlockingChannel:
        if self._connection is None or not self._connection.is_open:
            self._drop()
            self._connection = pika.BlockingConnection(self._parameters(deadline))
            self.connects += 1
        if self._channel is None or not self._channel.is_open:
            with self._cut_off_at(deadline):
                self._channel = self._connection.channel()
        return self._channel

    def _parameters(self, deadline: float) -> pika.ConnectionParameters:
        endpoint = self._endpoint
        url = endpoint.url._replace(path="/" + quote(endpoint.vhost, safe=""))
        parameters = pika.URLParameters(url.geturl())
        if endpoint.username or endpoint.password:
            parameters.credentials = pika.PlainCredentials(endpoint.username, endpoint.password)
        if "heartbeat" not in endpoint.url.query:
            # No heartbeats: a blocking connection only answers them while a call runs, so an
            # idle one between ticks would be closed by the server. Each call has its deadline.
            parameters.heartbeat = 0
        left = max(retry.MIN_CALL_TIMEOUT_SECONDS, deadline - time.monotonic())
        parameters.socket_timeout = parameters.stack_timeout = left
        parameters.connection_attempts, parameters.retry_delay = 1, 0
        parameters.client_properties = {"connection_name": CONNECTION_NAME}
        return parameters

    def _cut_off_at(self, deadline: float) -> _Deadline:
        assert self._connection is not None
        return _Deadline(self._connection, max(0.0, deadline - time.monotonic()))

    def _drop(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            # Closing a broken connection may fail any way: it is dropped all the same.
            with contextlib.suppress(Exception):
                connection.close()


class _Deadline:
    """Cuts the connection off if a call is still waiting for the server at the deadline.

    pika's blocking calls have no timeout of their own; a timer on the connection's I/O loop,
    which runs while the call waits, terminates the stream, and the call raises _CallTimedOut.
    (pika's public call_later timers only fire in process_data_events, not during a call.)
    """

    def __init__(self, connection: pika.BlockingConnection, seconds: float) -> None:
        self._impl = connection._impl  # noqa: SLF001
        self._seconds = seconds
        self._handle: object = None

    def __enter__(self) -> _Deadline:
        error = _CallTimedOut(f"no answer within {self._seconds:.2f} s")
        self._handle = self._impl._adapter_call_later(  # noqa: SLF001
            self._seconds,
            lambda: self._impl._terminate_stream(error),  # noqa: SLF001
        )
        return self

    def __exit__(self, *_: object) -> None:
        if not self._impl.is_closed:
            self._impl._adapter_remove_timeout(self._handle)  # noqa: SLF001


def amqp_transient(exc: Exception) -> retry.Transient | None:
    """A lost or refused connection, or a timeout, is worth another try; a refusal is not."""
    if isinstance(
        exc,
        (
            pika.exceptions.ProbableAuthenticationError,
            pika.exceptions.ProbableAccessDeniedError,
            pika.exceptions.AuthenticationError,
        ),
    ):
        return None
    if isinstance(exc, pika.exceptions.ConnectionClosedByBroker):
        return retry.Transient() if exc.reply_code == 320 else None  # CONNECTION_FORCED
    if isinstance(exc, (pika.exceptions.AMQPConnectionError, AMQPConnectorException)):
        return retry.Transient()
    return None


def _amqp_error(
    exc: Exception, settings: RabbitMqSettings, endpoint: Endpoint, timeout: float
) -> RabbitMqReadError:
    where = endpoint.where
    if isinstance(exc, pika.exceptions.ChannelClosedByBroker):
        return _broker_refusal(exc.reply_code, exc.reply_text, settings, where)
    if isinstance(exc, pika.exceptions.ConnectionClosedByBroker):
        return _broker_refusal(exc.reply_code, exc.reply_text, settings, where)
    if isinstance(
        exc,
        (pika.exceptions.ProbableAuthenticationError, pika.exceptions.ProbableAccessDeniedError),
    ):
        code, text = _closed_by_broker(exc)
        return _broker_refusal(code, text, settings, where)
    if isinstance(exc, pika.exceptions.AuthenticationError):
        return _error(settings, ACCESS_REFUSED, f"login refused: {_short(str(exc))}", where)
    if isinstance(exc, (_CallTimedOut, AMQPConnectorStackTimeout)):
        detail = f"no answer from {endpoint.address} (timeout {timeout:g} s)"
        return _error(settings, TIMEOUT, detail, where)
    inner = _connect_failure(exc)
    if isinstance(inner, TimeoutError):
        detail = f"no answer from {endpoint.address} (timeout {timeout:g} s)"
        return _error(settings, TIMEOUT, detail, where)
    reason = _short(str(inner) or type(inner).__name__)
    return _error(settings, CONNECTION_ERROR, f"cannot reach {endpoint.address}: {reason}", where)


def _broker_refusal(
    code: int, text: str, settings: RabbitMqSettings, where: str
) -> RabbitMqReadError:
    """The broker's own word: 404 no such queue, 403 access refused, 530 no such vhost..."""
    reply = f"AMQP {code} {_short(str(text))}"
    if code == 404:
        return _error(settings, QUEUE_NOT_FOUND, f"the queue does not exist ({reply})", where)
    if code == 530 and "not found" in str(text):
        return _error(settings, VHOST_NOT_FOUND, f"the vhost does not exist ({reply})", where)
    if code in (403, 530):
        return _error(
            settings,
            ACCESS_REFUSED,
            f"refused: check the user's credentials and permissions ({reply})",
            where,
        )
    if code == 320:
        return _error(
            settings, CONNECTION_ERROR, f"the server closed the connection ({reply})", where
        )
    return _error(settings, SERVICE_ERROR, reply, where)


def _closed_by_broker(exc: Exception) -> tuple[int, str]:
    """(reply code, text) of pika's Probable...Error, whose text is `ConnectionClosedByBroker:
    (403) 'ACCESS_REFUSED - ...'`."""
    match = re.search(r"\((\d+)\)\s*'?(.*?)'?$", str(exc.args[0]) if exc.args else "")
    if match is None:
        return 403, str(exc)
    return int(match[1]), match[2]


def _connect_failure(exc: Exception) -> BaseException:
    """The socket error under pika's connection-workflow wrappers."""
    inner: BaseException = exc
    for _ in range(3):
        wrapped = inner.args[0] if inner.args else None
        if isinstance(inner, pika.exceptions.AMQPConnectionError) and isinstance(
            wrapped, BaseException
        ):
            inner = wrapped
            continue
        if isinstance(inner, AMQPConnectorPhaseErrorBase):
            inner = inner.exception
            continue
        break
    return inner


# ---------------------------------------------------------------------------------------------
# The management API


class _HttpStatus(Exception):
    """An answer worth another try (429, 5xx), raised so that retry.call retries it."""

    def __init__(self, response: requests.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def _read_http(
    session: requests.Session, settings: RabbitMqSettings, endpoint: Endpoint, timeout: float
) -> float | Measured:
    url, params = _management_request(settings, endpoint)
    auth = (endpoint.username, endpoint.password) if endpoint.username else None

    def get() -> requests.Response:
        response = session.get(
            url,
            params=params,
            auth=auth,
            timeout=retry.call_timeout(timeout),
            allow_redirects=False,
        )
        if response.status_code in retry.RETRYABLE_STATUSES:
            raise _HttpStatus(response)
        return response

    try:
        response = retry.call(get, http_transient)
    except _HttpStatus as exc:
        response = exc.response
    except requests.RequestException as exc:
        raise _http_failure(exc, settings, endpoint, timeout) from None
    if response.status_code != 200:
        raise _http_status_error(response, settings, endpoint)
    try:
        body = response.json()
    except ValueError:
        raise _error(settings, BAD_RESPONSE, "the answer is not JSON", endpoint.where) from None
    if settings.mode == MESSAGE_RATE:
        return _rate_and_backlog(body, settings, endpoint)
    if settings.use_regex:
        return _combined_value(body, settings, endpoint)
    return _queue_value(body, settings, endpoint)


def _management_request(
    settings: RabbitMqSettings, endpoint: Endpoint
) -> tuple[str, dict[str, Any]]:
    root = endpoint.url._replace(path=endpoint.base_path, query="").geturl().rstrip("/")
    queues = f"{root}/api/queues/{quote(endpoint.vhost, safe='')}"
    params: dict[str, Any] = {"columns": STATS_COLUMNS}  # ~100 bytes a queue instead of ~2 KB
    if not settings.use_regex:
        return f"{queues}/{quote(settings.queue_name, safe='')}", params
    params.update(page=1, page_size=settings.page_size, name=settings.queue_name, use_regex="true")
    return queues, params


def http_transient(exc: Exception) -> retry.Transient | None:
    """Connection errors, timeouts, 429 and 5xx (with their Retry-After) get another try."""
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return retry.Transient()
    if isinstance(exc, _HttpStatus):
        return retry.after_status(exc.response.status_code, exc.response.headers)
    return None


def _http_failure(
    exc: requests.RequestException,
    settings: RabbitMqSettings,
    endpoint: Endpoint,
    timeout: float,
) -> RabbitMqReadError:
    where = endpoint.where
    if isinstance(exc, requests.Timeout):
        detail = f"no answer from {endpoint.address} (timeout {timeout:g} s)"
        return _error(settings, TIMEOUT, detail, where)
    if isinstance(exc, requests.ConnectionError):
        found = re.search(r"\[Errno -?\d+\] [^'\")\]]+", str(exc))
        reason = found[0].strip() if found else type(exc).__name__
        detail = f"cannot reach {endpoint.address}: {_short(reason)}"
        return _error(settings, CONNECTION_ERROR, detail, where)
    return _error(settings, INVALID_HOST, f"{type(exc).__name__}: {_short(str(exc))}", where)


def _http_status_error(
    response: requests.Response, settings: RabbitMqSettings, endpoint: Endpoint
) -> RabbitMqReadError:
    status, where = response.status_code, endpoint.where
    reason = _http_reason(response)
    if status in (401, 403):
        detail = f"HTTP {status}: the management API refused the credentials ({reason})"
        return _error(settings, ACCESS_REFUSED, detail, where)
    if status == 404 and settings.use_regex:
        return _error(settings, VHOST_NOT_FOUND, "HTTP 404: the vhost does not exist", where)
    if status == 404:
        return _error(
            settings, QUEUE_NOT_FOUND, "HTTP 404: the queue (or its vhost) does not exist", where
        )
    hint = " (is queueName a valid regular expression?)" if settings.use_regex else ""
    return _error(settings, SERVICE_ERROR, f"HTTP {status}: {reason}{hint}", where)


def _http_reason(response: requests.Response) -> str:
    try:
        body = response.json()
        reason = body.get("reason") or body.get("error") if isinstance(body, dict) else None
    except ValueError:
        reason = None
    return _short(str(reason or response.text or response.reason or "no reason given"))


def _queue_value(body: Any, settings: RabbitMqSettings, endpoint: Endpoint) -> float:
    """The number one queue's statistics give for the trigger's mode."""
    if not isinstance(body, dict):
        raise _error(settings, BAD_RESPONSE, "the answer is not a queue object", endpoint.where)
    if settings.mode == MESSAGE_RATE:
        # No message_stats yet: nothing was ever published (KEDA reads 0 too).
        details = (body.get("message_stats") or {}).get("publish_details") or {}
        rate = details.get("rate", 0.0)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)):
            raise _error(settings, BAD_RESPONSE, f"publish rate {show(rate)}", endpoint.where)
        return float(rate)
    return _queue_length(body, settings, endpoint)


def _queue_length(body: dict[str, Any], settings: RabbitMqSettings, endpoint: Endpoint) -> float:
    key = "messages_ready" if settings.exclude_unacknowledged else "messages"
    count = body.get(key)
    if isinstance(count, bool) or not isinstance(count, int):
        # A queue declared a moment ago has no statistics yet: unknown, not zero.
        name = body.get("name", settings.queue_name)
        detail = f"no {key} count for queue {name!r} yet (statistics not collected)"
        raise _error(settings, BAD_RESPONSE, detail, endpoint.where)
    return float(count)


def _rate_and_backlog(
    body: Any, settings: RabbitMqSettings, endpoint: Endpoint
) -> float | Measured:
    """MessageRate: the publish rate, and the messages waiting, which keep the trigger active
    while above activationValue (as KEDA does), so a backlog left when publishing stops is
    still worked off. A queue whose count is not collected yet gives the rate alone."""
    rate = (_combined_value if settings.use_regex else _queue_value)(body, settings, endpoint)
    length = replace(settings, mode=QUEUE_LENGTH)
    try:
        if settings.use_regex:
            return Measured(rate, _combined_value(body, length, endpoint))
        return Measured(rate, _queue_length(body, length, endpoint))
    except RabbitMqReadError:
        return rate


def _combined_value(body: Any, settings: RabbitMqSettings, endpoint: Endpoint) -> float:
    """KEDA's useRegex: every matching queue of one page, combined by `operation`."""
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise _error(settings, BAD_RESPONSE, "the answer has no list of queues", endpoint.where)
    if isinstance(body.get("page_count"), int) and body["page_count"] > 1:
        detail = f"more than pageSize {settings.page_size} queues match: raise pageSize"
        raise _error(settings, BAD_RESPONSE, detail, endpoint.where)
    values = [_queue_value(item, settings, endpoint) for item in items]
    if not values:
        return 0.0  # no queue matches: nothing waits (KEDA reads 0)
    if settings.operation == MAX:
        return max(values)
    if settings.operation == AVG:
        if settings.mode == QUEUE_LENGTH:
            return float(int(sum(values)) // len(values))  # KEDA divides whole counts
        return sum(values) / len(values)
    return sum(values)


# ---------------------------------------------------------------------------------------------
# convert: a KEDA rabbitmq trigger's fields, and where its credentials come from

_COPIED_KEYS = (
    "protocol", "vhostName", "mode", "excludeUnacknowledged", "useRegex", "operation",
    "pageSize", "timeout", "usernameFromEnv", "passwordFromEnv",
)  # fmt: skip
_AUTH_FIELDS = {"host": "hostFromEnv", "username": "usernameFromEnv", "password": "passwordFromEnv"}


def _from_keda(keda: KedaTrigger, known: set[str]) -> dict[str, Any] | None:
    metadata = keda.metadata
    if not metadata.get("queueName"):
        keda.lost("metadata.queueName", "missing: trigger not converted")
        return None
    out: dict[str, Any] = {"queueName": str(metadata["queueName"])}
    _keda_numbers(keda, out)
    out.update({key: metadata[key] for key in _COPIED_KEYS if key in metadata})
    if str(out.get("useRegex", "false")).lower() != "true":
        for key in ("operation", "pageSize"):
            if out.pop(key, None) is not None:
                keda.note(f"metadata.{key}", "left out: it only applies with useRegex true")
    _keda_host(keda, out)
    if isinstance(keda.auth_ref, Mapping):
        _keda_auth(keda, out)
    if "host" not in out and "hostFromEnv" not in out:
        keda.lost(
            "metadata.host",
            "no host, hostFromEnv or authenticationRef host (KEDA "
            "would refuse it too): trigger not converted",
        )
        return None
    for key in metadata:
        if key not in known and key != "queueLength":
            keda.lost(f"metadata.{key}", "not a rabbitmq setting eventscaler knows")
    return out


def _keda_numbers(keda: KedaTrigger, out: dict[str, Any]) -> None:
    metadata = keda.metadata
    for key, written in (
        ("value", "value"),
        ("activationValue", "activationValue"),
        ("queueLength", "value"),
    ):
        if key not in metadata:
            continue
        number = keda.number(metadata[key])
        if number is None or number < 0:
            keda.lost(f"metadata.{key}", f"expected a number, got {metadata[key]!r}: left out")
        elif key == "queueLength" and ("value" in metadata or "mode" in metadata):
            keda.lost("metadata.queueLength", "deprecated, and given with mode/value: left out")
        else:
            out[written] = number
            if key == "queueLength":
                keda.note("metadata.queueLength", "KEDA's deprecated name: written as value")


def _keda_host(keda: KedaTrigger, out: dict[str, Any]) -> None:
    metadata = keda.metadata
    host, env = metadata.get("host"), metadata.get("hostFromEnv")
    if host:
        parts = _split_url(str(host))
        if parts is not None and parts.password:
            env = env or keda.env_name(f"{out['queueName']}_rabbitmq_host")
            keda.lost(
                "metadata.host",
                f"holds a password, which eventscaler never reads from a rule file: put the "
                f"URL in a Secret, expose it to the autoscaler's container as env {env} "
                "(hostFromEnv, set) and change the password, which sat in plain text",
            )
            out["hostFromEnv"] = env
            return
        out["host"] = str(host)
    elif env:
        out["hostFromEnv"] = str(env)
        keda.note(
            "metadata.hostFromEnv",
            f"KEDA reads {env} from the scaled workload's container; eventscaler reads it from "
            f"its own: give the autoscaler's container an env var {env} from the same Secret",
        )


def _keda_auth(keda: KedaTrigger, out: dict[str, Any]) -> None:
    ref = keda.auth_ref
    what = f"{ref.get('kind') or 'TriggerAuthentication'} {ref.get('name', '')}"
    summary = f"{what}: eventscaler does not read TriggerAuthentications; it reads the URL and "
    summary += "credentials from its own environment"
    if keda.auth is None:
        out.pop("host", None)
        out.setdefault("hostFromEnv", keda.env_name(f"{ref.get('name', '')}_host"))
        keda.lost(
            "authenticationRef",
            f"{summary}. {what} is not in this input: find the Secret it maps to 'host' (and "
            "'username', 'password'), expose them to the autoscaler as env vars, and set "
            f"hostFromEnv (now {out['hostFromEnv']}), usernameFromEnv and passwordFromEnv "
            "to their names",
        )
        return
    spec = keda.auth.get("spec") or {}
    advice = _keda_secret_refs(keda, out, spec)
    others = [
        k
        for k in ("env", "hashiCorpVault", "azureKeyVault", "gcpSecretManager", "podIdentity")
        if spec.get(k)
    ]
    if others:
        advice.append(
            f"{', '.join(others)}: not followed by this converter; expose those "
            "values to the autoscaler as env vars and name them with ...FromEnv"
        )
    keda.lost("authenticationRef", f"{summary}: " + "; ".join(advice or ["nothing to map"]))


def _keda_secret_refs(keda: KedaTrigger, out: dict[str, Any], spec: Mapping[str, Any]) -> list[str]:
    """Each secretTargetRef parameter as the ...FromEnv field it becomes, and what to add."""
    advice = []
    name = keda.auth_ref.get("name", "")
    for secret in [s for s in spec.get("secretTargetRef") or [] if isinstance(s, Mapping)]:
        parameter = str(secret.get("parameter", ""))
        field = _AUTH_FIELDS.get(parameter)
        if field is None:
            advice.append(
                f"'{parameter}' is not read (no TLS client certificates, no workload identity)"
            )
            continue
        env = keda.env_name(f"{name}_{parameter}")
        if field == "hostFromEnv":
            out.pop("host", None)  # KEDA: the TriggerAuthentication's host wins
        out[field] = env
        secret_name, key = secret.get("name"), secret.get("key")
        advice.append(
            f"'{parameter}' is Secret {secret_name} key {key}: set {field} {env} (done) and add "
            f"to the autoscaler's container env: [{{name: {env}, valueFrom: {{secretKeyRef: "
            f"{{name: {secret_name}, key: {key}}}}}}}]"
        )
    if advice:
        advice[-1] += " (copy the Secret to the autoscaler's namespace first)"
    return advice
