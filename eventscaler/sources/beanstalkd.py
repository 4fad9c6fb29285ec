"""Beanstalkd tube sizes, counted the way KEDA's beanstalkd scaler counts them.

The only module of the daemon that imports greenstalk. The value is a tube's
`current-jobs-ready` + `current-jobs-reserved` from `stats-tube` (jobs waiting and jobs a worker
holds, so busy workers keep their replicas), plus `current-jobs-delayed` with `includeDelayed`.
Buried jobs never count. A tube that does not exist reads 0, as in KEDA: beanstalkd creates a
tube on first use and deletes it once it is empty and nobody uses or watches it, so a missing
tube is an empty one. A server that cannot be reached is an error, never a 0.

Beanstalkd has no authentication: `server` (host:port, port 11300 by default) is all there is.
One connection per server in the process, opened on the first read, reused across ticks and
reopened after any failure; greenstalk's client is one socket, so each is used under a lock.
greenstalk is given a socket this module connects, so every connect and every command is
bounded by `retry.call_timeout` (greenstalk itself has no timeouts).
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import greenstalk

from eventscaler import retry
from eventscaler.fields import ConfigError, parse_bool, parse_duration, parse_text, show
from eventscaler.redact import first_line
from eventscaler.sources import base
from eventscaler.sources.base import KedaTrigger, SourceOptions, SourceType, optional, required
from eventscaler.triggers import Trigger

logger = logging.getLogger(__name__)

DEFAULT_PORT = 11300
# Beanstalkd's tube names: 1-200 bytes of letters, digits and `-+/;.$_()`, not starting with `-`.
_TUBE_NAME = re.compile(r"^(?!-)[A-Za-z0-9+/;.$_()-]{1,200}$")
_SERVER = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9._-]+))(?::(?P<port>\d+))?$"
)
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")

# BeanstalkdReadError codes, and the project's kind of each.
TIMEOUT = "Timeout"
CONNECTION_ERROR = "ConnectionError"
BAD_RESPONSE = "BadResponse"
SERVICE_ERROR = "ServiceError"
KIND_OF_CODE = {
    TIMEOUT: base.TIMEOUT,
    CONNECTION_ERROR: base.UNAVAILABLE,
    BAD_RESPONSE: base.BAD_RESPONSE,
    SERVICE_ERROR: base.SERVICE_ERROR,
}


@dataclass(frozen=True)
class BeanstalkdSettings:
    """One `type: beanstalkd` trigger's own fields (KEDA's names, in snake_case)."""

    server: tuple[str, int]  # (host, port)
    tube: str
    include_delayed: bool = False
    timeout: float | None = None  # seconds; None: the daemon's source timeout

    @property
    def address(self) -> str:
        host, port = self.server
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _parse_server(value: Any, field: str) -> tuple[str, int]:
    text = parse_text(value, field, "host:port")
    match = _SERVER.fullmatch(text.strip())
    port = int(match["port"]) if match and match["port"] else DEFAULT_PORT
    if match is None or not 0 < port < 65536:
        raise ConfigError(
            field, f"expected host:port (port {DEFAULT_PORT} if left out), got {show(value)}"
        )
    return (match["v6"] or match["host"]), port


def _parse_tube(value: Any, field: str) -> str:
    what = "a tube name (1-200 letters, digits or -+/;.$_(), not starting with -)"
    text = parse_text(value, field, what)
    if not _TUBE_NAME.fullmatch(text):
        raise ConfigError(field, f"expected {what}, got {show(value)}")
    return text


def _parse_timeout(value: Any, field: str) -> float:
    return parse_duration(value, field, allow_zero=False)


class Beanstalkd(SourceType):
    """`type: beanstalkd`: a tube's ready + reserved (+ delayed) jobs."""

    type = "beanstalkd"
    settings = BeanstalkdSettings
    target_key = "value"
    target_default = None  # required, as in KEDA
    activation_key = "activationValue"
    fields = (
        required("server", _parse_server),
        required("tube", _parse_tube),
        optional("includeDelayed", parse_bool, False),
        optional("timeout", _parse_timeout, None),
    )

    def default_name(self, settings: BeanstalkdSettings) -> str:
        name = _UNSAFE_NAME.sub("-", settings.tube).strip("-._")[:253]
        return name if name and name[0].isalnum() else "beanstalkd"

    def describe(self, settings: BeanstalkdSettings) -> str:
        return f"beanstalkd tube {settings.tube} at {settings.address}"

    def details(self, settings: BeanstalkdSettings) -> tuple[str, ...]:
        return ("ready + reserved + delayed" if settings.include_delayed else "ready + reserved",)

    def open(self, options: SourceOptions) -> BeanstalkdSource:
        return BeanstalkdSource(options.timeout_seconds)

    def simulated_value(self, settings: BeanstalkdSettings, backlog: int, in_flight: int) -> float:
        return float(backlog)  # ready + reserved: every job until a worker deletes it

    def from_keda(self, keda: KedaTrigger) -> dict[str, Any] | None:
        if not keda.metadata.get("server") or not keda.metadata.get("tube"):
            keda.lost("metadata", "server and tube are required: trigger not converted")
            return None
        return super().from_keda(keda)


SOURCE_TYPE = Beanstalkd()


def beanstalkd_trigger(
    server: tuple[str, int], tube: str, value: float, activation: float = 0.0, **settings: Any
) -> Trigger:
    """A trigger built in code (tests, the simulator), as the rule file would build it."""
    return Trigger(
        Beanstalkd.type, tube, BeanstalkdSettings(server, tube, **settings), value, activation
    )


class BeanstalkdReadError(base.SourceError):
    """A tube could not be read. Never a reading of 0: the caller must not scale on it."""

    def __init__(self, tube: str, code: str, message: str) -> None:
        super().__init__(KIND_OF_CODE.get(code, base.SERVICE_ERROR), message, code)
        self.tube = tube


def _error(settings: BeanstalkdSettings, code: str, detail: str) -> BeanstalkdReadError:
    message = f"beanstalkd tube {settings.tube!r} at {settings.address}: {code}: {detail}"
    return BeanstalkdReadError(settings.tube, code, message)


class BeanstalkdSource:
    """Reads tube statistics; safe to call from many threads at once."""

    def __init__(self, timeout_seconds: float = 5.0) -> None:
        self._timeout_seconds = timeout_seconds
        self._lock = threading.Lock()  # guards the dict, never held during I/O
        self._connections: dict[tuple[str, int], BeanstalkdConnection] = {}

    def read(self, trigger: Trigger) -> float:
        settings: BeanstalkdSettings = trigger.settings
        timeout = settings.timeout or self._timeout_seconds
        connection = self._connection(settings.server)
        try:
            stats = retry.call(lambda: connection.stats_tube(settings.tube, timeout), transient)
        except greenstalk.NotFoundError:
            logger.debug(
                "beanstalkd tube %s at %s does not exist: 0 jobs", settings.tube, settings.address
            )
            return 0.0
        except (OSError, greenstalk.Error, AssertionError, ValueError) as exc:
            raise _translate(exc, settings, timeout) from None
        return _jobs(stats, settings)

    def close(self) -> None:
        with self._lock:
            connections = list(self._connections.values())
            self._connections.clear()
        for connection in connections:
            connection.close()

    def _connection(self, server: tuple[str, int]) -> BeanstalkdConnection:
        found = self._connections.get(server)
        if found is not None:
            return found
        with self._lock:
            return self._connections.setdefault(server, BeanstalkdConnection(server))


class BeanstalkdConnection:
    """One greenstalk client (one socket) to one server, used by one thread at a time."""

    def __init__(self, server: tuple[str, int]) -> None:
        self._server = server
        self._lock = threading.Lock()
        self._client: greenstalk.Client[bytes] | None = None
        self._socket: socket.socket | None = None
        self.connects = 0  # connections opened so far (tests)

    def stats_tube(self, tube: str, timeout: float) -> Mapping[str, Any]:
        deadline = time.monotonic() + retry.call_timeout(timeout)
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise TimeoutError("another read on this connection did not finish in time")
        try:
            client = self._open(deadline)
            assert self._socket is not None
            self._socket.settimeout(max(0.001, deadline - time.monotonic()))
            return client.stats_tube(tube)
        except greenstalk.NotFoundError:
            raise  # an answer: the connection is fine
        except BaseException:
            self._drop()  # mid-answer or broken: in an unknown state, reconnect next time
            raise
        finally:
            self._lock.release()

    def close(self) -> None:
        if self._lock.acquire(timeout=5.0):
            try:
                self._drop()
            finally:
                self._lock.release()

    def _open(self, deadline: float) -> greenstalk.Client[bytes]:
        if self._client is None:
            left = max(retry.MIN_CALL_TIMEOUT_SECONDS, deadline - time.monotonic())
            sock = socket.create_connection(self._server, timeout=left)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            self._socket = sock
            # A connected socket: greenstalk sends nothing on its own for the default tube.
            self._client = greenstalk.Client(sock, encoding=None)
            self.connects += 1
        return self._client

    def _drop(self) -> None:
        client, self._client, self._socket = self._client, None, None
        if client is not None:
            with contextlib.suppress(OSError):
                client.close()


def transient(exc: Exception) -> retry.Transient | None:
    """A refused, reset or timed-out connection is worth another try (a fresh connection)."""
    return retry.Transient() if isinstance(exc, OSError) else None


def _jobs(stats: Mapping[str, Any], settings: BeanstalkdSettings) -> float:
    keys = ["current-jobs-ready", "current-jobs-reserved"]
    if settings.include_delayed:
        keys.append("current-jobs-delayed")
    counts = [stats.get(key) for key in keys]
    if not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
        missing = [k for k, c in zip(keys, counts, strict=True) if not isinstance(c, int)]
        raise _error(settings, BAD_RESPONSE, f"stats-tube lacks {', '.join(missing)}")
    return float(sum(counts))  # type: ignore[arg-type]


def _translate(
    exc: BaseException, settings: BeanstalkdSettings, timeout: float
) -> BeanstalkdReadError:
    if isinstance(exc, TimeoutError):
        return _error(settings, TIMEOUT, f"no answer within {timeout:g} s")
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc) or type(exc).__name__
        return _error(settings, CONNECTION_ERROR, f"cannot reach the server: {_short(reason)}")
    if isinstance(exc, greenstalk.BeanstalkdError):
        return _error(settings, SERVICE_ERROR, f"the server answered {type(exc).__name__}")
    # greenstalk asserts the protocol's framing: something else answers on that port.
    return _error(settings, BAD_RESPONSE, "not a beanstalkd answer (is this beanstalkd's port?)")


def _short(text: str) -> str:
    return first_line(text)
