"""A number from a PostgreSQL query, the way KEDA's `postgresql` scaler reads it.

The value is the first column of the first row of `query` (eventscaler.sources.sql_common says
which answers are numbers). Where: `connectionFromEnv` names an environment variable holding a
libpq URL (`postgresql://user:password@host:5432/db?sslmode=require`) or key=value conninfo;
or `host`, `port`, `userName`, `dbName` and `sslmode` (all required, as in KEDA) with the
password in the variable named by `passwordFromEnv`. A password or connection string written in
the rule file is a load error that points at the FromEnv field; whatever is read from the
environment is registered for redaction before any connection uses it.

Each read runs in its own read-only transaction (`BEGIN READ ONLY`, then `ROLLBACK`), with a
`statement_timeout` of what the tick has left (eventscaler.retry), and the query is sent as one
prepared statement, so `...; DELETE ...` cannot slip a second statement past the transaction.
A client-side watchdog cuts the connection's socket a little after that timeout, so a server that
stops answering cannot hold a tick either. Connections are kept per connection settings (and
password), reopened after a failure, and closed with the reader.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import conninfo, errors

from eventscaler import retry
from eventscaler.fields import ConfigError, choices, parse_choice, parse_env_name
from eventscaler.redact import first_line, register_secret
from eventscaler.sources import sql_common
from eventscaler.sources.base import KedaTrigger, SourceOptions, SourceType, optional, required
from eventscaler.sources.sql_common import SqlReadError, error
from eventscaler.triggers import Trigger

logger = logging.getLogger(__name__)

SSL_MODES = choices("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
WATCHDOG_GRACE_SECONDS = 1.0  # after the statement timeout, before the socket is cut
MIN_CONNECT_TIMEOUT = 2  # libpq's own floor, in whole seconds
_HOST_FIELDS = ("host", "port", "userName", "dbName", "sslmode", "passwordFromEnv")
_INLINE = {"password": "passwordFromEnv", "connection": "connectionFromEnv"}


@dataclass(frozen=True)
class PostgresSettings:
    """One `type: postgresql` trigger's own fields (KEDA's names, in snake_case)."""

    query: str
    connection_from_env: str = ""
    host: str = ""
    port: int = 0
    user_name: str = ""
    db_name: str = ""
    sslmode: str = ""
    password_from_env: str = ""

    @property
    def where(self) -> str:
        """The server as the rule gives it, and where the password comes from: safe to log."""
        if self.connection_from_env:
            return f"the connection from env {self.connection_from_env}"
        password = (
            f"password from env {self.password_from_env}"
            if self.password_from_env
            else "no password"
        )
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user_name}@{host}:{self.port}/{self.db_name} ({password})"


class PostgreSql(SourceType):
    """`type: postgresql`: the number a query returns."""

    type = "postgresql"
    settings = PostgresSettings
    target_key = "targetQueryValue"
    target_default = None  # required, as in KEDA
    activation_key = "activationTargetQueryValue"
    fields = (
        required("query", sql_common.parse_query),
        optional("connectionFromEnv", parse_env_name, "", secret_env=True),
        optional("host", sql_common.parse_host, ""),
        optional("port", sql_common.parse_port, 0),
        optional("userName", sql_common.parse_name, ""),
        optional("dbName", sql_common.parse_name, ""),
        optional("sslmode", lambda v, f: parse_choice(v, f, SSL_MODES), ""),
        optional("passwordFromEnv", parse_env_name, "", secret_env=True),
        *(optional(key, sql_common.inline_secret(instead)) for key, instead in _INLINE.items()),
    )

    def check(self, values: dict[str, Any], data: Mapping[str, Any], field: str) -> dict[str, Any]:
        given = [key for key in _HOST_FIELDS if data.get(key) is not None]
        if data.get("connectionFromEnv") is not None:
            if given:
                raise ConfigError(
                    f"{field}.{given[0]}",
                    "give connectionFromEnv or host, port, userName, dbName, sslmode and "
                    "passwordFromEnv, not both",
                )
        elif data.get("host") is None:
            raise ConfigError(
                f"{field}.host",
                "is required: give connectionFromEnv (an env var holding a libpq URL or "
                "conninfo) or host with port, userName, dbName and sslmode",
            )
        else:
            for key in ("port", "userName", "dbName", "sslmode"):
                if data.get(key) is None:
                    raise ConfigError(f"{field}.{key}", "is required with host (as in KEDA)")
        return {k: v for k, v in values.items() if k not in _INLINE}

    def default_name(self, settings: PostgresSettings) -> str:
        return f"postgresql-{settings.db_name}" if settings.db_name else "postgresql"

    def describe(self, settings: PostgresSettings) -> str:
        return sql_common.describe_query("postgresql", settings.query, settings.where)

    def open(self, options: SourceOptions) -> PostgresSource:
        return PostgresSource(options.environ, options.timeout_seconds, options.pool_size)

    def from_keda(self, keda: KedaTrigger) -> dict[str, Any] | None:
        return _from_keda(self, keda)


SOURCE_TYPE = PostgreSql()


def postgresql_trigger(
    query: str, target: float, activation: float = 0.0, name: str = "", **settings: Any
) -> Trigger:
    """A trigger built in code (tests, benchmarks), as the rule file would build it."""
    values = PostgresSettings(query=query, **settings)
    return Trigger(PostgreSql.type, name or SOURCE_TYPE.default_name(values), values, target,
                   activation)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Reading


class QueryTimedOut(psycopg.OperationalError):
    """The watchdog cut a connection whose server did not answer in time."""


class PostgresSource(sql_common.SqlReader[psycopg.Connection[Any]]):
    """Reads query values; safe to call from many threads at once (a connection per read)."""

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        timeout_seconds: float = 5.0,
        pool_size: int = 16,
    ) -> None:
        super().__init__(DRIVER, environ, timeout_seconds, pool_size)

    def login(self, settings: PostgresSettings, what: str) -> tuple[Any, dict[str, Any]]:
        """(the connections' key, psycopg.connect's arguments), every secret registered."""
        if settings.connection_from_env:
            name = settings.connection_from_env
            text = sql_common.env_value(self._environ, name, what, "the connection string")
            register_secret(text)
            try:
                parsed = conninfo.conninfo_to_dict(text)
            except psycopg.ProgrammingError:
                raise error(
                    what,
                    sql_common.INVALID_CONNECTION,
                    f"env {name} does not hold a libpq URL or key=value conninfo (not shown)",
                ) from None
            register_secret(str(parsed.get("password") or ""))
            return ("conninfo", sql_common.digest(text)), {"conninfo": text}
        password = ""
        if settings.password_from_env:
            password = sql_common.env_value(
                self._environ, settings.password_from_env, what, "the password"
            )
            register_secret(password)
        params = {"host": settings.host, "port": settings.port, "user": settings.user_name,
                  "dbname": settings.db_name, "sslmode": settings.sslmode}  # fmt: skip
        key = (*params.values(), sql_common.digest(password))
        return key, {**params, "password": password or None}


def _connect(params: Mapping[str, Any], timeout: float) -> psycopg.Connection[Any]:
    options = dict(params)
    text = options.pop("conninfo", "")
    return psycopg.connect(
        text,
        autocommit=True,  # the read's transaction is ours: BEGIN READ ONLY ... ROLLBACK
        connect_timeout=max(MIN_CONNECT_TIMEOUT, math.ceil(timeout)),
        fallback_application_name="eventscaler",
        **options,
    )


def _query(connection: psycopg.Connection[Any], query: str, timeout: float) -> Any:
    milliseconds = max(1, int(timeout * 1000))
    with _Watchdog(connection, timeout + WATCHDOG_GRACE_SECONDS) as watchdog:
        try:
            # Our own text (a whole number): the simple protocol runs both statements at once.
            connection.execute(f"BEGIN READ ONLY; SET LOCAL statement_timeout = {milliseconds}")
            # binary=True sends the query as one prepared statement: a second one is refused.
            cursor = connection.execute(query, binary=True)
            row = cursor.fetchone() if cursor.description is not None else ()
            connection.execute("ROLLBACK")
        except psycopg.Error as exc:
            if watchdog.fired and isinstance(exc, psycopg.OperationalError):
                raise QueryTimedOut(f"no answer within {timeout:.3g} s") from None
            _roll_back(connection)  # the query failed alone: the connection stays usable
            raise
    if watchdog.fired:
        connection.close()  # cut just as the answer came: of no further use
    return row


class _Watchdog:
    """Shuts the connection's socket down if the block is still running after `seconds`: the
    blocked read then returns at once, whatever the server does."""

    def __init__(self, connection: psycopg.Connection[Any], seconds: float) -> None:
        self._connection = connection
        self._seconds = seconds
        self._key = 0
        self.fired = False

    def __enter__(self) -> _Watchdog:
        self._key = _WATCHDOGS.arm(self._seconds, self._cut)
        return self

    def __exit__(self, *exc: object) -> None:
        _WATCHDOGS.disarm(self._key)

    def _cut(self) -> None:
        self.fired = True
        try:
            duplicate = socket.socket(fileno=os.dup(self._connection.pgconn.socket))
        except (OSError, psycopg.Error):
            return  # already closed
        with duplicate, contextlib.suppress(OSError):
            duplicate.shutdown(socket.SHUT_RDWR)  # the socket itself, not just this fd


class _WatchdogThread:
    """One thread keeps every read's watchdog: a timer thread started and cancelled per read
    cost a third of the read's CPU (bench.readings)."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._due: list[tuple[float, int, Callable[[], None]]] = []  # a heap
        self._armed: set[int] = set()
        self._keys = itertools.count(1)
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float, cut: Callable[[], None]) -> int:
        with self._condition:
            key = next(self._keys)
            heapq.heappush(self._due, (time.monotonic() + seconds, key, cut))
            self._armed.add(key)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pg-watchdog", daemon=True)
                self._thread.start()
            if self._due[0][1] == key:  # the earliest now: the thread's wait is too long
                self._condition.notify()
        return key

    def disarm(self, key: int) -> None:
        with self._condition:
            self._armed.discard(key)

    def _run(self) -> None:
        while True:
            self._next_due()()

    def _next_due(self) -> Callable[[], None]:
        with self._condition:
            while True:
                while self._due and self._due[0][1] not in self._armed:
                    heapq.heappop(self._due)  # disarmed: the read finished in time
                delay = self._due[0][0] - time.monotonic() if self._due else None
                if delay is not None and delay <= 0:
                    _, key, cut = heapq.heappop(self._due)
                    self._armed.discard(key)
                    return cut
                self._condition.wait(delay)


_WATCHDOGS = _WatchdogThread()


def _roll_back(connection: psycopg.Connection[Any]) -> None:
    if _alive(connection):
        with contextlib.suppress(psycopg.Error):  # broken now: not reused (_alive)
            connection.execute("ROLLBACK")


def _close(connection: psycopg.Connection[Any]) -> None:
    connection.close()


def _alive(connection: psycopg.Connection[Any]) -> bool:
    return not connection.closed and not connection.broken


def _reusable_after(exc: BaseException) -> bool:
    """A connection whose query failed on its own (a syntax error, a refused write, a statement
    timeout) is still good; one that failed to talk to the server is not."""
    return isinstance(exc, psycopg.Error) and getattr(exc, "sqlstate", None) is not None


# ---------------------------------------------------------------------------------------------
# Errors

_STATEMENT_CODES = {
    "25006": (sql_common.WRITE_REFUSED, "the query tries to write: refused by the read-only "
                                        "transaction"),
    "42P01": (sql_common.TABLE_NOT_FOUND, "a table the query reads does not exist"),
    "42501": (sql_common.PERMISSION_DENIED, "the user may not run the query"),
    "3D000": (sql_common.DATABASE_NOT_FOUND, "the database does not exist"),
}  # fmt: skip
_CONNECT_WORDS = (
    ("password authentication failed", sql_common.AUTHENTICATION_FAILED),
    ("no password supplied", sql_common.AUTHENTICATION_FAILED),
    ("authentication failed", sql_common.AUTHENTICATION_FAILED),
    ("pg_hba.conf", sql_common.AUTHENTICATION_FAILED),
    ("does not exist", sql_common.DATABASE_NOT_FOUND),
    ("timeout expired", sql_common.TIMEOUT),
)


def translate_error(exc: psycopg.Error, what: str, timeout: float) -> SqlReadError:
    """A psycopg error as the project's error kind, with a one-line reason (never a secret)."""
    reason = first_line(str(exc)) or type(exc).__name__
    if isinstance(exc, QueryTimedOut):
        return error(what, sql_common.TIMEOUT, f"no answer from the server within {timeout:.3g} s")
    if isinstance(exc, errors.QueryCanceled):
        return error(
            what, sql_common.STATEMENT_TIMEOUT, f"the query ran past its {timeout:.3g} s timeout"
        )
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate in _STATEMENT_CODES:
        code, detail = _STATEMENT_CODES[sqlstate]
        return error(what, code, f"{detail}: {reason}")
    if sqlstate and sqlstate.startswith("28"):
        return error(what, sql_common.AUTHENTICATION_FAILED, reason)
    if sqlstate:
        return error(what, sql_common.QUERY_ERROR, f"{sqlstate}: {reason}")
    lowered = reason.lower()
    found = next((c for words, c in _CONNECT_WORDS if words in lowered), None)
    return error(what, found or sql_common.CONNECTION_ERROR, reason)


def transient_failure(exc: Exception) -> retry.Transient | None:
    """A connection that failed or dropped is worth another try; a refused login, a missing
    database, a query's own error or a cut-off read (the tick's time is spent) are not."""
    if isinstance(exc, QueryTimedOut) or not isinstance(exc, psycopg.OperationalError):
        return None
    if getattr(exc, "sqlstate", None) is not None:
        return None
    lowered = str(exc).lower()
    return None if any(words in lowered for words, _ in _CONNECT_WORDS) else retry.Transient()


DRIVER = sql_common.Driver(
    "postgresql", psycopg.Error, _connect, _query, _close, _alive, _reusable_after,
    transient_failure, translate_error,
)  # fmt: skip

# ---------------------------------------------------------------------------------------------
# convert

# KEDA's TriggerAuthentication parameters that are secrets, and the rule field naming the env var.
KEDA_AUTH_ENV_FIELDS = {"password": "passwordFromEnv", "connection": "connectionFromEnv"}


def _from_keda(source: PostgreSql, keda: KedaTrigger) -> dict[str, Any] | None:
    out = SourceType.from_keda(source, keda) or {}
    for key in _INLINE:
        if out.pop(key, None) is not None:
            keda.lost(f"metadata.{key}", f"not read from the rule file: use {_INLINE[key]}")
    sql_common.keda_number(keda, out, "port")
    sql_common.keda_auth(keda, out, KEDA_AUTH_ENV_FIELDS)
    if not out.get("query") or "targetQueryValue" not in out:
        keda.lost("metadata", "query and targetQueryValue are required: trigger not converted")
        return None
    return out
