"""A number from a MySQL or MariaDB query, the way KEDA's `mysql` scaler reads it.

The value is the first column of the first row of `query` (eventscaler.sources.sql_common says
which answers are numbers). Where: `connectionStringFromEnv` names an environment variable
holding KEDA's connection string, the Go driver's DSN `user:password@tcp(host:3306)/db`
(`?tls=true` or `tls=skip-verify` for TLS; `unix(/path)` for a socket); or `host` (or
`hostFromEnv`), `port` (or `portFromEnv`), `username` and `dbName`, all required as in KEDA, with
the password in the variable named by `passwordFromEnv`. A password or connection string written
in the rule file is a load error that points at the FromEnv field; whatever is read from the
environment is registered for redaction before any connection uses it.

Each read runs in a read-only transaction (`START TRANSACTION READ ONLY`, then `ROLLBACK`) of a
session that is read-only too, so neither a write nor DDL's implicit commit gets through; PyMySQL
sends no multi-statements, so `...; DELETE ...` is a syntax error. The statement is cut by the
server at what the tick has left (`max_statement_time` on MariaDB, `max_execution_time` on
MySQL, which bounds SELECTs), and the socket's own timeouts bound a server that stops answering.
Connections are kept per connection settings (and password), reopened after a failure, and
closed with the reader.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote

import pymysql
from pymysql.constants import CR, ER

from eventscaler import retry
from eventscaler.fields import ConfigError, parse_env_name
from eventscaler.redact import first_line, register_secret
from eventscaler.sources import sql_common
from eventscaler.sources.base import KedaTrigger, SourceOptions, SourceType, optional, required
from eventscaler.sources.sql_common import SqlReadError, error
from eventscaler.triggers import Trigger

logger = logging.getLogger(__name__)

DEFAULT_PORT = 3306
STATEMENT_GRACE_SECONDS = 0.5  # the socket waits this much longer than the server's own cut
_INLINE = {"password": "passwordFromEnv", "connectionString": "connectionStringFromEnv"}
_SERVER_FIELDS = ("host", "hostFromEnv", "port", "portFromEnv", "username", "dbName",
                  "passwordFromEnv")  # fmt: skip


@dataclass(frozen=True)
class MySqlSettings:
    """One `type: mysql` trigger's own fields (KEDA's names, in snake_case)."""

    query: str
    connection_string_from_env: str = ""
    host: str = ""
    host_from_env: str = ""
    port: int = 0
    port_from_env: str = ""
    username: str = ""
    db_name: str = ""
    password_from_env: str = ""

    @property
    def where(self) -> str:
        """The server as the rule gives it, and where the password comes from: safe to log."""
        if self.connection_string_from_env:
            return f"the connection string from env {self.connection_string_from_env}"
        host = self.host or f"(host from env {self.host_from_env})"
        host = f"[{host}]" if ":" in host else host
        port = str(self.port) if self.port else f"(port from env {self.port_from_env})"
        password = (
            f"password from env {self.password_from_env}"
            if self.password_from_env
            else "no password"
        )
        return f"{self.username}@{host}:{port}/{self.db_name} ({password})"


class MySql(SourceType):
    """`type: mysql`: the number a query returns."""

    type = "mysql"
    settings = MySqlSettings
    target_key = "queryValue"
    target_default = None  # required, as in KEDA
    activation_key = "activationQueryValue"
    fields = (
        required("query", sql_common.parse_query),
        optional("connectionStringFromEnv", parse_env_name, "", secret_env=True),
        optional("host", sql_common.parse_host, ""),
        optional("hostFromEnv", parse_env_name, ""),
        optional("port", sql_common.parse_port, 0),
        optional("portFromEnv", parse_env_name, ""),
        optional("username", sql_common.parse_name, ""),
        optional("dbName", sql_common.parse_name, ""),
        optional("passwordFromEnv", parse_env_name, "", secret_env=True),
        *(optional(key, sql_common.inline_secret(instead)) for key, instead in _INLINE.items()),
    )

    def check(self, values: dict[str, Any], data: Mapping[str, Any], field: str) -> dict[str, Any]:
        given = [key for key in _SERVER_FIELDS if data.get(key) is not None]
        if data.get("connectionStringFromEnv") is not None:
            if given:
                raise ConfigError(
                    f"{field}.{given[0]}",
                    "give connectionStringFromEnv or host, port, username, dbName and "
                    "passwordFromEnv, not both",
                )
            return _without_inline(values)
        if data.get("host") is None and data.get("hostFromEnv") is None:
            raise ConfigError(
                f"{field}.host",
                "is required: give connectionStringFromEnv (an env var holding "
                "user:password@tcp(host:3306)/db) or host (or hostFromEnv) with port, username "
                "and dbName",
            )
        for both in ("host", "port"):
            if data.get(both) is not None and data.get(f"{both}FromEnv") is not None:
                raise ConfigError(
                    f"{field}.{both}FromEnv", f"give {both} or {both}FromEnv, not both"
                )
        sql_common.check_required(data, field, ("port", "username", "dbName"), "host (as in KEDA)")
        return _without_inline(values)

    def default_name(self, settings: MySqlSettings) -> str:
        return f"mysql-{settings.db_name}" if settings.db_name else "mysql"

    def describe(self, settings: MySqlSettings) -> str:
        return sql_common.describe_query("mysql", settings.query, settings.where)

    def open(self, options: SourceOptions) -> MySqlSource:
        return MySqlSource(options.environ, options.timeout_seconds, options.pool_size)

    def from_keda(self, keda: KedaTrigger) -> dict[str, Any] | None:
        return _from_keda(self, keda)


SOURCE_TYPE = MySql()


def _without_inline(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k not in ("password", "connection_string")}


def mysql_trigger(
    query: str, target: float, activation: float = 0.0, name: str = "", **settings: Any
) -> Trigger:
    """A trigger built in code (tests, benchmarks), as the rule file would build it."""
    values = MySqlSettings(query=query, **settings)
    return Trigger(MySql.type, name or SOURCE_TYPE.default_name(values), values, target,
                   activation)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# KEDA's connection string: the Go driver's DSN


class DsnError(ValueError):
    """Not a DSN this reader can use; the message never quotes it."""


def parse_dsn(dsn: str) -> dict[str, Any]:
    """`[user[:password]@][tcp[(host[:port])]|unix(path)]/db[?tls=...]` as PyMySQL's connect
    arguments. As the Go driver does, the database follows the last `/` and the credentials end at
    the last `@` before it (a password may hold `@` or `:`)."""
    slash = dsn.rfind("/")
    if slash < 0:
        raise DsnError("no /database part")
    head, tail = dsn[:slash], dsn[slash + 1 :]
    database, _, query = tail.partition("?")
    at = head.rfind("@")
    credentials, address = (head[:at], head[at + 1 :]) if at >= 0 else ("", head)
    user, _, password = credentials.partition(":")
    options: dict[str, Any] = {"user": user, "password": password, "database": unquote(database)}
    options.update(_dsn_address(address))
    options.update(_dsn_tls(dict(parse_qsl(query, keep_blank_values=True)).get("tls", "false")))
    return options


def _dsn_address(address: str) -> dict[str, Any]:
    network, _, rest = address.partition("(")
    if rest and not rest.endswith(")"):
        raise DsnError("an address without its closing parenthesis")
    where = rest[:-1]
    if network == "unix":
        return {"unix_socket": where or "/tmp/mysql.sock"}
    if network not in ("", "tcp"):
        raise DsnError(f"network {network!r} (tcp or unix)")
    host, port = where or "127.0.0.1", DEFAULT_PORT
    if where.startswith("["):
        host, _, after = where[1:].partition("]")
        port = int(after[1:]) if after.startswith(":") and after[1:].isdigit() else DEFAULT_PORT
    elif ":" in where:
        host, _, text = where.rpartition(":")
        if not text.isdigit() or not 1 <= int(text) <= sql_common.MAX_PORT:
            raise DsnError("a port that is not a number from 1 to 65535")
        port = int(text)
    return {"host": host, "port": port}


def _dsn_tls(value: str) -> dict[str, Any]:
    mode = value.lower()
    if mode in ("false", ""):
        return {}
    if mode == "true":
        return {"ssl": ssl.create_default_context()}
    if mode == "skip-verify":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return {"ssl": context}
    raise DsnError(f"tls={value!r} (true, false or skip-verify)")


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass
class _Session:
    """A connection, and which server it talks to (their statement timeouts differ)."""

    connection: pymysql.connections.Connection[Any]
    mariadb: bool


class MySqlSource(sql_common.SqlReader[_Session]):
    """Reads query values; safe to call from many threads at once (a connection per read)."""

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        timeout_seconds: float = 5.0,
        pool_size: int = 16,
    ) -> None:
        super().__init__(DRIVER, environ, timeout_seconds, pool_size)

    def login(self, settings: MySqlSettings, what: str) -> tuple[Any, dict[str, Any]]:
        """(the connections' key, pymysql.connect's arguments), every secret registered."""
        if settings.connection_string_from_env:
            name = settings.connection_string_from_env
            text = sql_common.env_value(self._environ, name, what, "the connection string")
            register_secret(text)
            try:
                params = parse_dsn(text)
            except DsnError as exc:
                raise error(
                    what,
                    sql_common.INVALID_CONNECTION,
                    f"env {name} does not hold user:password@tcp(host:port)/db: {exc} "
                    "(value not shown)",
                ) from None
            register_secret(params["password"])
            return ("dsn", sql_common.digest(text)), params
        host = settings.host or sql_common.env_value(
            self._environ, settings.host_from_env, what, "the host"
        )
        port = settings.port or self._port_from_env(settings, what)
        password = ""
        if settings.password_from_env:
            password = sql_common.env_value(
                self._environ, settings.password_from_env, what, "the password"
            )
            register_secret(password)
        params = {"host": host, "port": port, "user": settings.username,
                  "database": settings.db_name, "password": password}  # fmt: skip
        key = (host, port, settings.username, settings.db_name, sql_common.digest(password))
        return key, params

    def _port_from_env(self, settings: MySqlSettings, what: str) -> int:
        name = settings.port_from_env
        text = sql_common.env_value(self._environ, name, what, "the port")
        if not text.isdigit() or not 1 <= int(text) <= sql_common.MAX_PORT:
            raise error(what, sql_common.INVALID_CONNECTION, f"env {name} does not hold a port")
        return int(text)


def _connect(params: Mapping[str, Any], timeout: float) -> _Session:
    connection = pymysql.connect(
        **params,
        connect_timeout=timeout,
        read_timeout=timeout + STATEMENT_GRACE_SECONDS,
        write_timeout=timeout + STATEMENT_GRACE_SECONDS,
        autocommit=True,  # the read's transaction is ours: START TRANSACTION ... ROLLBACK
        program_name="eventscaler",
    )
    return _Session(connection, "mariadb" in connection.get_server_info().lower())


def _query(session: _Session, query: str, timeout: float) -> Any:
    connection = session.connection
    # PyMySQL re-arms the socket's timeout from these before each read and write.
    connection._read_timeout = connection._write_timeout = timeout + STATEMENT_GRACE_SECONDS
    if session.mariadb:
        limit = f"SET SESSION max_statement_time = {timeout:.3f}, SESSION tx_read_only = 1"
    else:
        limit = (f"SET SESSION max_execution_time = {max(1, int(timeout * 1000))}, "
                 "SESSION transaction_read_only = 1")  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(limit)  # our own text: the query itself is never formatted
        cursor.execute("START TRANSACTION READ ONLY")
        try:
            cursor.execute(query)
            row = cursor.fetchone() if cursor.description is not None else ()
        finally:
            if connection.open:
                cursor.execute("ROLLBACK")
    return row


def _close(session: _Session) -> None:
    if session.connection.open:
        session.connection.close()


def _alive(session: _Session) -> bool:
    return bool(session.connection.open)


def _reusable_after(exc: BaseException) -> bool:
    """A connection whose query failed on its own (a syntax error, a refused write, the statement
    timeout) is still good; one that lost the server is not (PyMySQL has closed it then)."""
    return isinstance(exc, pymysql.MySQLError) and _code(exc) not in _CONNECTION_CODES


# ---------------------------------------------------------------------------------------------
# Errors

_CONNECTION_CODES = frozenset(
    {CR.CR_CONN_HOST_ERROR, CR.CR_SERVER_GONE_ERROR, CR.CR_SERVER_LOST, CR.CR_CONNECTION_ERROR,
     CR.CR_UNKNOWN_HOST, 0}
)  # fmt: skip
_CODES = {
    ER.ACCESS_DENIED_ERROR: (sql_common.AUTHENTICATION_FAILED, "the server refused the login"),
    ER.DBACCESS_DENIED_ERROR: (sql_common.PERMISSION_DENIED, "the user may not use the database"),
    ER.TABLEACCESS_DENIED_ERROR: (sql_common.PERMISSION_DENIED, "the user may not run the query"),
    ER.BAD_DB_ERROR: (sql_common.DATABASE_NOT_FOUND, "the database does not exist"),
    ER.NO_SUCH_TABLE: (sql_common.TABLE_NOT_FOUND, "a table the query reads does not exist"),
    1792: (sql_common.WRITE_REFUSED, "the query tries to write: refused by the read-only "
                                     "transaction"),
}  # fmt: skip
_STATEMENT_TIMEOUTS = frozenset({1969, 3024})  # MariaDB max_statement_time, MySQL max_execution


def _code(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def translate_error(exc: pymysql.MySQLError, what: str, timeout: float) -> SqlReadError:
    """A PyMySQL error as the project's error kind, with a one-line reason (never a secret)."""
    code = _code(exc)
    message = exc.args[1] if len(exc.args) > 1 else str(exc)
    reason = first_line(str(message)) or type(exc).__name__
    shown = f"{timeout:.3g}"
    if code in _STATEMENT_TIMEOUTS:
        return error(
            what, sql_common.STATEMENT_TIMEOUT, f"the query ran past its {shown} s timeout"
        )
    if code == CR.CR_SERVER_LOST and "timed out" in reason:
        return error(what, sql_common.TIMEOUT, f"no answer from the server within {shown} s")
    if code in _CODES:
        ours, detail = _CODES[code]
        return error(what, ours, f"{detail}: {reason}")
    if code in _CONNECTION_CODES or isinstance(exc, pymysql.InterfaceError):
        return error(what, sql_common.CONNECTION_ERROR, reason)
    if isinstance(exc, pymysql.ProgrammingError | pymysql.OperationalError):
        return error(what, sql_common.QUERY_ERROR, f"{code}: {reason}")
    return error(what, sql_common.SERVICE_ERROR, f"{code}: {reason}")


def transient_failure(exc: Exception) -> retry.Transient | None:
    """A connection that failed or dropped is worth another try, unless it timed out (the tick's
    time is spent); a refused login or a query's own error is not."""
    if not isinstance(exc, pymysql.MySQLError) or _code(exc) not in _CONNECTION_CODES:
        return None
    return None if "timed out" in str(exc) else retry.Transient()


DRIVER = sql_common.Driver(
    "mysql", pymysql.MySQLError, _connect, _query, _close, _alive, _reusable_after,
    transient_failure, translate_error,
)  # fmt: skip

# ---------------------------------------------------------------------------------------------
# convert

# KEDA's TriggerAuthentication parameters read from a Secret, and the rule field naming the env var.
KEDA_AUTH_ENV_FIELDS = {
    "password": "passwordFromEnv",
    "connectionString": "connectionStringFromEnv",
    "host": "hostFromEnv",
    "port": "portFromEnv",
}


def _from_keda(source: MySql, keda: KedaTrigger) -> dict[str, Any] | None:
    out = SourceType.from_keda(source, keda) or {}
    for key in _INLINE:
        if out.pop(key, None) is not None:
            keda.lost(f"metadata.{key}", f"not read from the rule file: use {_INLINE[key]}")
    sql_common.keda_number(keda, out, "port")
    sql_common.keda_auth(keda, out, KEDA_AUTH_ENV_FIELDS)
    if not out.get("query") or "queryValue" not in out:
        keda.lost("metadata", "query and queryValue are required: trigger not converted")
        return None
    return out
