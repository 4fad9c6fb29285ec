"""What the `postgresql` and `mysql` sources share: the number in a query's answer, the process's
idle connections per connection settings, the connection fields' parsers, the errors' shape and
convert's mapping of a TriggerAuthentication.

Neither source imports the other (see .importlinter) and this module imports no database client:
each source brings its own, imported only when a rule uses it.

The value is the first column of the first row, as KEDA reads it: an integer, a decimal, a float,
or a string holding one (KEDA's database/sql scan converts those too). No row, NULL, a boolean, a
string that is not a number, NaN or an infinity is an error that names the trigger's query, never
a 0.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Generic, TypeVar

from eventscaler import retry
from eventscaler.fields import ConfigError, parse_int, parse_text, show
from eventscaler.sources import base
from eventscaler.triggers import Trigger

C = TypeVar("C")
T = TypeVar("T")

MAX_PORT = 65535
MAX_QUERY_SHOWN = 60
HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9])?)$")
NAME = re.compile(r"^\S(.*\S)?$")  # a user or database name: anything without outer blanks

# SourceError.code values of both sources; their kinds are in KIND_OF_CODE.
AUTHENTICATION_FAILED = "AuthenticationFailed"
PERMISSION_DENIED = "PermissionDenied"
DATABASE_NOT_FOUND = "DatabaseNotFound"
TABLE_NOT_FOUND = "TableNotFound"
MISSING_ENV = "MissingEnv"
INVALID_CONNECTION = "InvalidConnectionString"
CONNECTION_ERROR = "ConnectionError"
TIMEOUT = "Timeout"
STATEMENT_TIMEOUT = "StatementTimeout"
WRITE_REFUSED = "WriteRefused"
QUERY_ERROR = "QueryError"
NO_ROW = "NoRow"
NOT_A_NUMBER = "NotANumber"
SERVICE_ERROR = "ServiceError"
KIND_OF_CODE = {
    AUTHENTICATION_FAILED: base.UNAUTHORIZED,
    PERMISSION_DENIED: base.UNAUTHORIZED,
    DATABASE_NOT_FOUND: base.NOT_FOUND,
    TABLE_NOT_FOUND: base.NOT_FOUND,
    MISSING_ENV: base.MISSING_CREDENTIAL,
    INVALID_CONNECTION: base.INVALID_CREDENTIAL,
    CONNECTION_ERROR: base.UNAVAILABLE,
    TIMEOUT: base.TIMEOUT,
    STATEMENT_TIMEOUT: base.TIMEOUT,
    WRITE_REFUSED: base.SERVICE_ERROR,
    QUERY_ERROR: base.SERVICE_ERROR,
    NO_ROW: base.BAD_RESPONSE,
    NOT_A_NUMBER: base.BAD_RESPONSE,
    SERVICE_ERROR: base.SERVICE_ERROR,
}


class SqlReadError(base.SourceError):
    """A query's value could not be read; `str()` names the query, the server and the env vars."""


def error(what: str, code: str, detail: str) -> SqlReadError:
    """`what` names the query and where it runs (see `describe_query`), never a secret."""
    return SqlReadError(
        KIND_OF_CODE.get(code, base.SERVICE_ERROR), f"{what}: {code}: {detail}", code
    )


def describe_query(source: str, query: str, where: str) -> str:
    """`postgresql query 'SELECT count(*) FROM jobs' on eventscaler@db:5432/app`."""
    flat = " ".join(query.split())
    shown = flat if len(flat) <= MAX_QUERY_SHOWN else flat[: MAX_QUERY_SHOWN - 3] + "..."
    return f"{source} query {shown!r} on {where}"


# ---------------------------------------------------------------------------------------------
# The number


def first_number(row: tuple[Any, ...] | None, what: str) -> float:
    """The first column of the first row as a float, or SqlReadError (BadResponse)."""
    if row is None:
        raise error(what, NO_ROW, "the query returned no row (a count with COALESCE always does)")
    value = row[0] if row else None
    if value is None:
        raise error(what, NOT_A_NUMBER, "the first column is NULL (COALESCE(x, 0) gives a 0)")
    number = number_of(value)
    if number is None:
        raise error(
            what, NOT_A_NUMBER, f"the first column holds {show(value)}, not a finite number"
        )
    return number


def number_of(value: Any) -> float | None:
    """An int, float, Decimal, or a string (or bytes) of one, as a finite float; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        try:
            value = Decimal(value.strip())
        except ArithmeticError:
            return None
    if not isinstance(value, (int, float, Decimal)):
        return None
    try:
        number = float(value)
    except (OverflowError, ValueError):
        return None
    return number if math.isfinite(number) else None


# ---------------------------------------------------------------------------------------------
# Fields


def parse_query(value: Any, field: str) -> str:
    """One SQL statement; a trailing `;` (KEDA's examples have one) is dropped."""
    text = parse_text(value, field, "an SQL query returning one number").strip()
    text = text.rstrip("; \t\r\n")
    if not text:
        raise ConfigError(field, f"expected an SQL query returning one number, got {show(value)}")
    return text


def parse_host(value: Any, field: str) -> str:
    if isinstance(value, str) and ("@" in value or "://" in value or "=" in value):
        # Never echoed: it may be a connection string with its password.
        raise ConfigError(
            field,
            "expected a host name or IP address alone, got what looks like a connection string "
            "(not shown): put a connection string in an environment variable and name it in "
            "the ...FromEnv field",
        )
    if not isinstance(value, str) or not HOST.fullmatch(value):
        raise ConfigError(field, f"expected a host name or IP address, got {show(value)}")
    return value.strip("[]")


def parse_port(value: Any, field: str) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)  # KEDA's metadata strings ("5432")
    port = parse_int(value, field, 1)
    if port > MAX_PORT:
        raise ConfigError(field, f"expected a port from 1 to {MAX_PORT}, got {show(value)}")
    return port


def parse_name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise ConfigError(field, f"expected a name without surrounding blanks, got {show(value)}")
    return value


def inline_secret(instead: str) -> Callable[[Any, str], Any]:
    """A parser that refuses a secret written in the rule file, naming the FromEnv field."""

    def refuse(value: Any, field: str) -> None:
        key = field.rsplit(".", 1)[-1]
        raise ConfigError(
            field,
            f"is not read from the rule file: put the {key} in an environment variable (in a "
            f"cluster, from a Secret) and give its name in {instead}",
        )

    return refuse


def check_required(data: Mapping[str, Any], field: str, keys: tuple[str, ...], mode: str) -> None:
    """Each of `keys` (or its ...FromEnv twin) must be given in `mode`."""
    for key in keys:
        if data.get(key) is None and data.get(f"{key}FromEnv") is None:
            raise ConfigError(f"{field}.{key}", f"is required with {mode}")


def digest(secret: str) -> str:
    """What a connection's key holds instead of its password: a rotation gets new connections."""
    return hashlib.sha256(secret.encode()).hexdigest() if secret else ""


def env_value(environ: Mapping[str, str], name: str, what: str, holds: str) -> str:
    """The value of env var `name`; unset or empty: MissingCredential."""
    value = environ.get(name, "").strip()
    if not value:
        raise error(what, MISSING_ENV, f"env {name} ({holds}) is unset or empty")
    return value


# ---------------------------------------------------------------------------------------------
# The process's connections


class Connections(Generic[C]):
    """Idle connections per connection key (server, user, database, password's digest): a read
    takes one, or opens one, and gives it back when it worked or failed on its query alone; a
    connection that broke is closed, so the next read reconnects. At most `size` idle ones per
    key are kept (the daemon's worker threads); `close` closes the idle ones, and those in use
    when they come back."""

    def __init__(
        self, close_connection: Callable[[C], None], alive: Callable[[C], bool], size: int
    ) -> None:
        self._close_connection = close_connection
        self._alive = alive
        self._size = max(1, size)
        self._idle: dict[Any, list[C]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def run(
        self,
        key: Any,
        open_connection: Callable[[], C],
        use: Callable[[C], T],
        reusable_after: Callable[[BaseException], bool],
    ) -> T:
        connection = self._take(key) or open_connection()
        try:
            result = use(connection)
        except BaseException as exc:
            self._give(key, connection, reusable_after(exc))
            raise
        self._give(key, connection, True)
        return result

    def idle_count(self) -> int:
        with self._lock:
            return sum(len(idle) for idle in self._idle.values())

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle = [c for connections in self._idle.values() for c in connections]
            self._idle.clear()
        for connection in idle:
            self._discard(connection)

    def _take(self, key: Any) -> C | None:
        while True:
            with self._lock:
                idle = self._idle.get(key)
                connection = idle.pop() if idle else None
            if connection is None or self._alive(connection):
                return connection
            self._discard(connection)  # closed by the server while idle: the next one, or anew

    def _give(self, key: Any, connection: C, reusable: bool) -> None:
        keep = reusable and self._alive(connection)
        with self._lock:
            idle = self._idle.setdefault(key, [])
            keep = keep and not self._closed and len(idle) < self._size
            if keep:
                idle.append(connection)
        if not keep:
            self._discard(connection)

    def _discard(self, connection: C) -> None:
        # A broken connection may fail to close: it is gone either way.
        with contextlib.suppress(Exception):
            self._close_connection(connection)


@dataclass(frozen=True)
class Driver(Generic[C]):
    """How one source talks to its database, for the reader both share."""

    name: str  # the source's type, as error messages start
    error: type[Exception]  # the client library's base error class
    connect: Callable[[Mapping[str, Any], float], C]  # (login arguments, timeout)
    query: Callable[[C, str, float], Any]  # the first row, () when no result set, None: no row
    close: Callable[[C], None]
    alive: Callable[[C], bool]
    reusable_after: Callable[[BaseException], bool]  # a connection whose query failed so
    transient: Callable[[Exception], retry.Transient | None]
    translate: Callable[[Any, str, float], SqlReadError]  # (error, what, timeout)


class SqlReader(Generic[C]):
    """A source's reader: each read resolves the trigger's login from the environment (`login`,
    per source), runs the query on a kept connection, retried within the tick, and turns the
    first row into the value. Safe to call from many threads at once (a connection per read)."""

    def __init__(
        self,
        driver: Driver[C],
        environ: Mapping[str, str] | None = None,
        timeout_seconds: float = 5.0,
        pool_size: int = 16,
    ) -> None:
        self._driver = driver
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._timeout = timeout_seconds
        self._connections: Connections[C] = Connections(driver.close, driver.alive, pool_size)

    def read(self, trigger: Trigger) -> float:
        settings = trigger.settings
        driver = self._driver
        what = describe_query(driver.name, settings.query, settings.where)
        key, params = self.login(settings, what)
        timeout = retry.call_timeout(self._timeout)

        def attempt() -> Any:
            limit = retry.call_timeout(timeout)
            return self._connections.run(
                key, lambda: driver.connect(params, limit),
                lambda c: driver.query(c, settings.query, limit), driver.reusable_after,
            )  # fmt: skip

        try:
            row = retry.call(attempt, driver.transient)
        except driver.error as exc:
            raise driver.translate(exc, what, timeout) from None
        return first_number(row, what)

    def login(self, settings: Any, what: str) -> tuple[Any, dict[str, Any]]:
        """(the connections' key, the connect arguments), every secret registered."""
        raise NotImplementedError

    def close(self) -> None:
        self._connections.close()

    def idle_connections(self) -> int:
        return self._connections.idle_count()


# ---------------------------------------------------------------------------------------------
# convert: a TriggerAuthentication's secretTargetRef parameters


def keda_auth(keda: base.KedaTrigger, out: dict[str, Any], env_fields: Mapping[str, str]) -> None:
    """Map each secretTargetRef parameter found in `env_fields` (KEDA's parameter -> the rule's
    ...FromEnv field) to an env var, with a note saying which Secret key to expose as it; the
    others are reported, naming the rule field to write the Secret's value in."""
    ref = keda.auth_ref
    if not isinstance(ref, Mapping):
        return
    what = f"{ref.get('kind') or 'TriggerAuthentication'} {ref.get('name', '')}"
    if keda.auth is None:
        wanted = ", ".join(sorted(set(env_fields.values())))
        keda.lost(
            "authenticationRef",
            f"{what} is not in this input: eventscaler reads no TriggerAuthentication; expose "
            f"the Secret keys it maps as env vars and name them in {wanted}",
        )
        return
    spec = keda.auth.get("spec") or {}
    for entry in spec.get("secretTargetRef") or []:
        if isinstance(entry, Mapping):
            _map_parameter(keda, out, what, entry, env_fields)
    for key in sorted(set(spec) - {"secretTargetRef"}):
        keda.lost(
            f"authenticationRef.{key}",
            f"{what}: {key} is not followed; expose the value as an env var and name it in the "
            "matching ...FromEnv field",
        )


def _map_parameter(
    keda: base.KedaTrigger,
    out: dict[str, Any],
    what: str,
    entry: Mapping[str, Any],
    env_fields: Mapping[str, str],
) -> None:
    parameter = str(entry.get("parameter", ""))
    secret, key = entry.get("name"), entry.get("key")
    target = env_fields.get(parameter)
    if target is None:
        keda.lost(
            f"authenticationRef ({parameter})",
            f"{what}: parameter {parameter!r} (Secret {secret} key {key}) is not read from a "
            f"Secret here: write its value in the trigger's {parameter} field",
        )
        return
    if target in out:
        keda.lost(f"authenticationRef ({parameter})", f"{what}: the trigger's own {target} is used")
        return
    env = keda.env_name(f"{keda.auth_ref.get('name', '')}_{parameter}")
    out[target] = env
    keda.note(
        "authenticationRef",
        f"{what} maps {parameter!r} to Secret {secret} key {key}: set {target} {env} (done) and "
        f"add to the autoscaler's container: env: [{{name: {env}, valueFrom: {{secretKeyRef: "
        f"{{name: {secret}, key: {key}}}}}}}] (copy the Secret to the autoscaler's namespace)",
    )


def keda_number(keda: base.KedaTrigger, out: dict[str, Any], key: str) -> None:
    """A KEDA metadata string that must be a whole number (a port): as an int, or reported."""
    if key not in out:
        return
    number = keda.number(out[key])
    if isinstance(number, int) and number > 0:
        out[key] = number
    else:
        keda.lost(f"metadata.{key}", f"expected a whole number, got {out.pop(key)!r}")
