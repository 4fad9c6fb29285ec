"""What the `redis` and `redis-streams` sources share: KEDA's connection fields, the process's
connection pools, and the mapping of redis-py's errors to the project's error kinds.

Both sources import this module and neither imports the other (see .importlinter); it is
imported, with redis-py, only when a rule uses one of them.

Connection fields, under KEDA's names: `address` (`host:port`) or `host` + `port`, each of them
also as `addressFromEnv` / `hostFromEnv` / `portFromEnv` naming an environment variable;
`usernameFromEnv`, `passwordFromEnv`; `databaseIndex` (0); `enableTLS` (false) and `unsafeSsl`
(false: the certificate is checked against the system's CAs, or the file named by SSL_CERT_FILE).
The password is never in the rule file: `password` (or `username`) written there is a load error
that points at the FromEnv field, and a password read from the environment is registered for
redaction before any connection uses it.

Pools: one redis-py connection pool per server, database, user and password for the whole process,
shared by the readers of both sources and closed when the last reader closes; a rotated password
gets a new pool and the old one is dropped. Before every command the connection's socket timeouts
are cut to what the tick has left (eventscaler.retry); redis-py's own retries are off, ours retry
connection failures and timeouts within the tick.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    NoPermissionError,
    RedisError,
    ResponseError,
)
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
)
from redis.exceptions import (
    TimeoutError as RedisTimeoutError,
)
from redis.retry import Retry

from eventscaler import retry
from eventscaler.fields import (
    ConfigError,
    parse_bool,
    parse_env_name,
    parse_int,
    parse_str,
    show,
)
from eventscaler.redact import first_line, register_secret
from eventscaler.sources import base
from eventscaler.sources.base import Field, optional

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_POOL_SIZE = 16
MAX_PORT = 65535
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)$")
_ADDRESS = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):(?P<port>\d{1,5})$")
KEY = re.compile(r"^\S(.*\S)?$")  # any key without surrounding blanks (Redis keys are binary)
_INLINE_SECRET_HINT = {
    "password": "passwordFromEnv",
    "username": "usernameFromEnv",
}

# SourceError.code values of both sources (the kind of each in KIND_OF_CODE).
AUTHENTICATION_FAILED = "AuthenticationFailed"
NO_PERMISSION = "NoPermission"
MISSING_ENV = "MissingEnv"
INVALID_ADDRESS = "InvalidAddress"
TIMEOUT = "Timeout"
CONNECTION_ERROR = "ConnectionError"
WRONG_TYPE = "WrongType"
SERVICE_ERROR = "ServiceError"
KIND_OF_CODE = {
    AUTHENTICATION_FAILED: base.UNAUTHORIZED,
    NO_PERMISSION: base.UNAUTHORIZED,
    MISSING_ENV: base.MISSING_CREDENTIAL,
    INVALID_ADDRESS: base.INVALID_CREDENTIAL,
    TIMEOUT: base.TIMEOUT,
    CONNECTION_ERROR: base.UNAVAILABLE,
    WRONG_TYPE: base.BAD_RESPONSE,
    SERVICE_ERROR: base.SERVICE_ERROR,
}


@dataclass(frozen=True)
class RedisConnection:
    """Where a trigger's Redis is and who it logs in as; never a secret, only env var names."""

    host: str = ""  # from `address` or `host`; "" when read from the environment
    port: int = 0  # from `address` or `port`; 0 when read from the environment
    address_from_env: str = ""
    host_from_env: str = ""
    port_from_env: str = ""
    username_from_env: str = ""
    password_from_env: str = ""
    database_index: int = 0
    enable_tls: bool = False
    unsafe_ssl: bool = False

    @property
    def where(self) -> str:
        """The server as the rule file gives it, safe to log."""
        if self.address_from_env:
            return f"address from env {self.address_from_env}"
        host = self.host or f"host from env {self.host_from_env}"
        port = str(self.port) if self.port else f"port from env {self.port_from_env}"
        return f"{host}:{port}" if self.host and self.port else f"{host}, {port}"

    @property
    def credential_source(self) -> str:
        """Where the credentials come from, safe to log: the variables' names, never values."""
        parts = []
        if self.username_from_env:
            parts.append(f"user from env {self.username_from_env}")
        if self.password_from_env:
            parts.append(f"password from env {self.password_from_env}")
        return ", ".join(parts) or "no password"

    def describe(self) -> str:
        tls = ", TLS" if self.enable_tls else ""
        return f"{self.where} db {self.database_index}{tls}"


# ---------------------------------------------------------------------------------------------
# The connection fields and their checks


def parse_key(value: Any, field: str) -> str:
    return parse_str(value, field, KEY, "a Redis key (no leading or trailing blanks)")


def _parse_address(value: Any, field: str) -> tuple[str, int]:
    if isinstance(value, str) and ("@" in value or "://" in value):
        # Never echoed: a URL with credentials would put the password in the error.
        raise ConfigError(
            field,
            "expected host:port, got what looks like a URL (not shown); a password goes in the "
            "environment variable named by passwordFromEnv",
        )
    match = _ADDRESS.fullmatch(value) if isinstance(value, str) else None
    if match is None or not 1 <= int(match["port"]) <= MAX_PORT:
        raise ConfigError(field, f"expected host:port, got {show(value)}")
    return match["host"], int(match["port"])


def _parse_host(value: Any, field: str) -> str:
    if isinstance(value, str) and ("@" in value or "://" in value):
        raise ConfigError(
            field, "expected a host name or IP address alone, got what looks like a URL (not shown)"
        )
    if not isinstance(value, str) or not _HOST.fullmatch(value):
        raise ConfigError(field, f"expected a host name or IP address, got {show(value)}")
    return value


def _parse_port(value: Any, field: str) -> int:
    port = parse_int(value, field, 1)
    if port > MAX_PORT:
        raise ConfigError(field, f"expected a port from 1 to {MAX_PORT}, got {show(value)}")
    return port


def _reject_inline_secret(value: Any, field: str) -> None:
    key = field.rsplit(".", 1)[-1]
    raise ConfigError(
        field,
        f"is not read from the rule file: put the {key} in an environment variable (in a "
        f"cluster, from a Secret) and give its name in {_INLINE_SECRET_HINT[key]}",
    )


CONNECTION_FIELDS: tuple[Field, ...] = (
    optional("address", _parse_address),
    optional("host", _parse_host, ""),
    optional("port", _parse_port, 0),
    optional("addressFromEnv", parse_env_name, ""),
    optional("hostFromEnv", parse_env_name, ""),
    optional("portFromEnv", parse_env_name, ""),
    optional("usernameFromEnv", parse_env_name, ""),
    optional("passwordFromEnv", parse_env_name, "", secret_env=True),
    optional("databaseIndex", lambda v, f: parse_int(v, f, 0), 0),
    optional("enableTLS", parse_bool, False),
    optional("unsafeSsl", parse_bool, False),
    optional("password", _reject_inline_secret),
    optional("username", _reject_inline_secret),
)
_CONNECTION_ATTRIBUTES = tuple(f.attribute for f in CONNECTION_FIELDS)


def take_connection(values: dict[str, Any], data: Mapping[str, Any], field: str) -> dict[str, Any]:
    """The parsed fields with the connection's gathered into one `connection` record, checked
    across fields (one way to the server, a host with a port, unsafeSsl with TLS)."""
    given = {key for key in data if data[key] is not None}
    _check_one_way_in(given, field)
    if "unsafeSsl" in given and values["unsafe_ssl"] and not values["enable_tls"]:
        raise ConfigError(f"{field}.unsafeSsl", "only applies with enableTLS: true")
    host, port = values["address"] or (values["host"], values["port"])
    connection = RedisConnection(
        host=host,
        port=port,
        address_from_env=values["address_from_env"],
        host_from_env=values["host_from_env"],
        port_from_env=values["port_from_env"],
        username_from_env=values["username_from_env"],
        password_from_env=values["password_from_env"],
        database_index=values["database_index"],
        enable_tls=values["enable_tls"],
        unsafe_ssl=values["unsafe_ssl"],
    )
    rest = {k: v for k, v in values.items() if k not in _CONNECTION_ATTRIBUTES}
    return {**rest, "connection": connection}


def _check_one_way_in(given: set[str], field: str) -> None:
    """address, addressFromEnv, or a host (or hostFromEnv) with a port (or portFromEnv)."""
    ways = sorted(given & {"address", "addressFromEnv", "host", "hostFromEnv"})
    if not ways:
        raise ConfigError(
            f"{field}.address",
            "is required: give address (host:port), host and port, or addressFromEnv / "
            "hostFromEnv naming an environment variable",
        )
    if len(ways) > 1:
        raise ConfigError(
            f"{field}.{ways[1]}",
            "give one of address, addressFromEnv, host or hostFromEnv, "
            f"not {ways[0]} and {ways[1]}",
        )
    ports = sorted(given & {"port", "portFromEnv"})
    if ways[0] in ("address", "addressFromEnv"):
        if ports:
            raise ConfigError(f"{field}.{ports[0]}", "only applies with host or hostFromEnv")
    elif not ports:
        raise ConfigError(f"{field}.port", f"is required with {ways[0]} (or portFromEnv)")
    elif len(ports) > 1:
        raise ConfigError(f"{field}.portFromEnv", "give port or portFromEnv, not both")


# ---------------------------------------------------------------------------------------------
# Errors


class RedisReadError(base.SourceError):
    """A Redis value could not be read; `str()` names the key, the server and the env vars."""


def error(
    what: str, connection: RedisConnection, code: str, detail: str, kind: str | None = None
) -> RedisReadError:
    """`what` names the object read ("redis list 'jobs'"); the message never holds a secret.
    `kind` defaults to the kind of a shared `code` (KIND_OF_CODE)."""
    message = (
        f"{what} on {connection.describe()} ({connection.credential_source}): {code}: {detail}"
    )
    return RedisReadError(kind or KIND_OF_CODE.get(code, base.SERVICE_ERROR), message, code)


def trigger_name(key: str, fallback: str) -> str:
    """A trigger name made from a Redis key (`jobs:high` -> `jobs-high`): names are used in
    metrics and formulas, keys may hold any character."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", key).strip("-._")[:253]
    return name or fallback


def translate_error(
    exc: RedisError, what: str, connection: RedisConnection, server: str, timeout: float
) -> RedisReadError:
    """A redis-py error as the project's error kind, with a one-line reason."""
    if isinstance(exc, AuthenticationError):
        return error(what, connection, AUTHENTICATION_FAILED, _authentication_detail(connection))
    if isinstance(exc, NoPermissionError):
        return error(what, connection, NO_PERMISSION, f"the user may not: {_reason(exc)}")
    if isinstance(exc, RedisTimeoutError):
        return error(what, connection, TIMEOUT, f"no answer from {server} (timeout {timeout:g} s)")
    if isinstance(exc, RedisConnectionError):
        return error(what, connection, CONNECTION_ERROR, f"cannot reach {server}: {_reason(exc)}")
    if isinstance(exc, ResponseError) and str(exc).startswith("WRONGTYPE"):
        return error(what, connection, WRONG_TYPE, "the key holds another type of value")
    return error(what, connection, SERVICE_ERROR, f"{type(exc).__name__}: {_reason(exc)}")


def _authentication_detail(connection: RedisConnection) -> str:
    if connection.password_from_env:
        return "the server refused the user name or password"
    # redis-py's message for this case is about the HELLO command, not about the cause.
    return (
        "the server requires a password: set passwordFromEnv (and usernameFromEnv for an ACL user)"
    )


def _reason(exc: Exception) -> str:
    return first_line(str(exc)) or type(exc).__name__


def transient_failure(exc: Exception) -> retry.Transient | None:
    """A dropped connection or a timeout is worth another try; a refused password is not."""
    if isinstance(exc, AuthenticationError):
        return None
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
        return retry.Transient()
    return None


# ---------------------------------------------------------------------------------------------
# The process's pools


@dataclass(frozen=True)
class _Login:
    """A trigger's connection resolved from the environment: what a pool is keyed by."""

    host: str
    port: int
    database: int
    username: str
    password_digest: str
    tls: bool
    unsafe_ssl: bool
    timeout: float

    @property
    def server(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def identity(self) -> tuple[Any, ...]:
        """The pool's key less the password: a new password for the same identity replaces it."""
        return (self.host, self.port, self.database, self.username, self.tls, self.timeout)


class _TickBoundConnection(redis.Connection):
    """A connection whose socket timeouts are cut to the tick's remaining time before it
    connects and before each command, so a frozen server never stretches a tick."""

    def __init__(self, *, timeout_limit: float, **kwargs: Any) -> None:
        self._timeout_limit = timeout_limit
        super().__init__(**kwargs)

    def connect(self) -> None:
        seconds = retry.call_timeout(self._timeout_limit)
        self.socket_connect_timeout = seconds
        self.socket_timeout = seconds
        super().connect()

    def send_command(self, *args: Any, **kwargs: Any) -> None:
        seconds = retry.call_timeout(self._timeout_limit)
        self.socket_timeout = seconds
        self.update_current_socket_timeout(seconds)
        super().send_command(*args, **kwargs)


class _TickBoundSSLConnection(_TickBoundConnection, redis.SSLConnection):
    pass


class RedisPools:
    """The process's clients, one (with its connection pool) per login; shared by every reader,
    closed with the last one. redis-py's clients are safe to share between threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[_Login, redis.Redis] = {}
        self._login_of: dict[tuple[Any, ...], _Login] = {}
        self._readers = 0

    def attach(self) -> None:
        with self._lock:
            self._readers += 1

    def detach(self) -> None:
        with self._lock:
            self._readers = max(0, self._readers - 1)
            if self._readers:
                return
            clients = list(self._clients.values())
            self._clients.clear()
            self._login_of.clear()
        for client in clients:
            client.connection_pool.disconnect()

    def count(self) -> int:
        return len(self._clients)

    def client(self, login: _Login, password: str, username: str, pool_size: int) -> redis.Redis:
        client = self._clients.get(login)  # no lock: dict reads are atomic, entries never change
        if client is None:
            with self._lock:
                client = self._clients.get(login)
                if client is None:
                    pool = _new_pool(login, username, password, pool_size)
                    client = self._clients[login] = redis.Redis(connection_pool=pool)
                    self._forget_replaced(login)
        return client

    def _forget_replaced(self, login: _Login) -> None:
        """Drop the client of the same server and user with an older password (a rotation).
        Not disconnected: another thread may be mid-read on it; its sockets close when freed."""
        old = self._login_of.get(login.identity)
        self._login_of[login.identity] = login
        if old is not None and old != login:
            self._clients.pop(old, None)


def _new_pool(login: _Login, username: str, password: str, pool_size: int) -> redis.ConnectionPool:
    options: dict[str, Any] = {
        "host": login.host,
        "port": login.port,
        "db": login.database,
        "username": username or None,
        "password": password or None,
        "timeout_limit": login.timeout,
        "retry": Retry(NoBackoff(), 0),  # ours retry, within the tick
        "protocol": 2,  # RESP2: every server since 2.x; RESP3 needs HELLO (6+)
        "decode_responses": True,
        "max_connections": pool_size,
        "connection_class": _TickBoundConnection,
    }
    if login.tls:
        options["connection_class"] = _TickBoundSSLConnection
        options["ssl_cert_reqs"] = "none" if login.unsafe_ssl else "required"
        options["ssl_check_hostname"] = not login.unsafe_ssl
    logger.debug("new redis pool for %s db %d", login.server, login.database)
    return redis.ConnectionPool(**options)


PROCESS_POOLS = RedisPools()


class RedisClients:
    """A reader's way to its clients: resolves a trigger's connection from the environment,
    registers the password for redaction, and runs one command with bounded retries."""

    def __init__(
        self,
        environ: Mapping[str, str],
        timeout_seconds: float,
        pool_size: int = DEFAULT_POOL_SIZE,
        pools: RedisPools = PROCESS_POOLS,
    ) -> None:
        self._environ = environ
        self._timeout = timeout_seconds
        self._pool_size = pool_size
        self._pools = pools
        pools.attach()
        self._closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pools.detach()

    def run(self, what: str, connection: RedisConnection, command: Callable[[redis.Redis], T]) -> T:
        """`command` against the trigger's server, retried within the tick; RedisReadError else."""
        login, username, password = self._resolve(what, connection)
        client = self._pools.client(login, password, username, self._pool_size)
        try:
            return retry.call(lambda: command(client), transient_failure)
        except RedisError as exc:
            raise translate_error(exc, what, connection, login.server, self._timeout) from None

    def _resolve(self, what: str, connection: RedisConnection) -> tuple[_Login, str, str]:
        host, port = self._address(what, connection)
        username = self._env(what, connection, connection.username_from_env, "user name")
        password = self._env(what, connection, connection.password_from_env, "password")
        register_secret(password)
        login = _Login(
            host=host.strip("[]"),  # an IPv6 address without its brackets
            port=port,
            database=connection.database_index,
            username=username,
            password_digest=hashlib.sha256(password.encode()).hexdigest() if password else "",
            tls=connection.enable_tls,
            unsafe_ssl=connection.unsafe_ssl,
            timeout=self._timeout,
        )
        return login, username, password

    def _address(self, what: str, connection: RedisConnection) -> tuple[str, int]:
        if connection.address_from_env:
            value = self._env(what, connection, connection.address_from_env, "address")
            match = _ADDRESS.fullmatch(value)
            if match is None or not 1 <= int(match["port"]) <= MAX_PORT:
                raise error(
                    what,
                    connection,
                    INVALID_ADDRESS,
                    f"env {connection.address_from_env} does not hold host:port (value not shown)",
                )
            return match["host"], int(match["port"])
        host = connection.host or self._env(what, connection, connection.host_from_env, "host")
        if connection.port:
            return host, connection.port
        value = self._env(what, connection, connection.port_from_env, "port")
        if not value.isdigit() or not 1 <= int(value) <= MAX_PORT:
            raise error(
                what,
                connection,
                INVALID_ADDRESS,
                f"env {connection.port_from_env} does not hold a port number",
            )
        return host, int(value)

    def _env(self, what: str, connection: RedisConnection, name: str, holds: str) -> str:
        """The value of env var `name`, "" when no variable is named; unset or empty: an error."""
        if not name:
            return ""
        value = self._environ.get(name, "").strip()
        if not value:
            raise error(
                what, connection, MISSING_ENV, f"env {name} (the {holds}) is unset or empty"
            )
        return value


class RedisReader:
    """What the redis and redis-streams readers share: their clients, opened and closed."""

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        timeout_seconds: float = 5.0,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> None:
        self._clients = RedisClients(
            os.environ if environ is None else environ, timeout_seconds, pool_size
        )

    def close(self) -> None:
        self._clients.close()


# The connection fields convert copies as they are (the others are numbers and booleans).
_TEXT_KEYS: tuple[str, ...] = ("address", "host", "addressFromEnv", "hostFromEnv")
_TEXT_KEYS += ("portFromEnv", "usernameFromEnv", "passwordFromEnv")


def keda_connection(keda: base.KedaTrigger, out: dict[str, Any]) -> None:
    """convert: KEDA's connection metadata (strings) as the rule's fields; `out` may hold them
    already, copied as they were."""
    metadata = keda.metadata
    for key in _TEXT_KEYS:
        if metadata.get(key):
            out[key] = str(metadata[key])
    for key in ("port", "databaseIndex"):
        out.pop(key, None)
        if key in metadata:
            number = keda.number(metadata[key])
            if isinstance(number, int) and number >= 0:
                out[key] = number
            else:
                keda.lost(f"metadata.{key}", f"expected a whole number, got {metadata[key]!r}")
    for key in ("enableTLS", "unsafeSsl"):
        out.pop(key, None)
        if key in metadata:
            text = str(metadata[key]).strip().lower()
            if text in ("true", "false"):
                out[key] = text == "true"
            else:
                keda.lost(f"metadata.{key}", f"expected true or false, got {metadata[key]!r}")
    for key in ("password", "username"):
        if out.pop(key, None) is not None or key in metadata:
            keda.lost(
                f"metadata.{key}",
                f"not read from the rule file: expose it to the autoscaler as an env var and "
                f"set {_INLINE_SECRET_HINT[key]} to its name",
            )
    if isinstance(keda.auth_ref, Mapping):
        _explain_keda_auth(keda, out)


CONNECTION_KEYS = frozenset(f.key for f in CONNECTION_FIELDS)
# What a TriggerAuthentication's secretTargetRef parameter becomes in the rule file.
_AUTH_PARAMETERS = {
    "password": "passwordFromEnv",
    "username": "usernameFromEnv",
    "address": "addressFromEnv",
    "host": "hostFromEnv",
    "port": "portFromEnv",
}


def _explain_keda_auth(keda: base.KedaTrigger, out: dict[str, Any]) -> None:
    ref = keda.auth_ref
    what = f"{ref.get('kind') or 'TriggerAuthentication'} {ref.get('name', '')}"
    if keda.auth is None:
        keda.lost(
            "authenticationRef",
            f"{what} is not in this input: eventscaler reads no TriggerAuthentication; find the "
            "Secret keys it maps to 'password' (and 'username'), expose them to the autoscaler "
            "as env vars and set passwordFromEnv (usernameFromEnv) to their names",
        )
        return
    spec = keda.auth.get("spec") or {}
    for entry in spec.get("secretTargetRef") or []:
        if isinstance(entry, Mapping):
            _map_auth_parameter(keda, out, what, entry)
    for key in (
        "env",
        "hashiCorpVault",
        "azureKeyVault",
        "gcpSecretManager",
        "awsSecretManager",
        "podIdentity",
        "configMapTargetRef",
    ):
        if spec.get(key):
            keda.lost(
                f"authenticationRef.{key}",
                f"{what}: {key} is not followed; expose the "
                "value as an env var and name it in the "
                "matching ...FromEnv field",
            )


def _map_auth_parameter(
    keda: base.KedaTrigger, out: dict[str, Any], what: str, entry: Mapping[str, Any]
) -> None:
    parameter = str(entry.get("parameter", ""))
    secret, key = entry.get("name"), entry.get("key")
    path = f"authenticationRef ({parameter})"
    target = _AUTH_PARAMETERS.get(parameter)
    if target is None:
        hint = " (if it says 'enable', set enableTLS: true)" if parameter == "tls" else ""
        keda.lost(
            path,
            f"{what}: parameter {parameter!r} (Secret {secret} key {key}) is not "
            f"mapped{hint}; TLS client certificates are not supported",
        )
        return
    given = _SAME_PART[parameter] & set(out)
    if given:
        # KEDA reads the trigger's metadata before the TriggerAuthentication.
        keda.lost(path, f"{what}: the trigger's own {sorted(given)[0]} is used, as KEDA does")
        return
    env = keda.env_name(f"{keda.auth_ref.get('name', '')}_{parameter}")
    out[target] = env
    keda.note(
        "authenticationRef",
        f"{what} maps {parameter!r} to Secret {secret} key {key}: set {target} {env} (done) and "
        f"add to the autoscaler's container: env: [{{name: {env}, valueFrom: {{secretKeyRef: "
        f"{{name: {secret}, key: {key}}}}}}}] (copy the Secret to the autoscaler's namespace)",
    )


_ADDRESS_PARTS = frozenset({"address", "host", "addressFromEnv", "hostFromEnv"})
# The rule fields that already give what a TriggerAuthentication parameter would.
_SAME_PART = {
    "password": frozenset({"passwordFromEnv"}),
    "username": frozenset({"usernameFromEnv"}),
    "address": _ADDRESS_PARTS,
    "host": _ADDRESS_PARTS,
    "port": frozenset({"port", "portFromEnv", "address", "addressFromEnv"}),
}
