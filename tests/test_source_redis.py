"""The `redis` source (eventscaler/sources/redis_lists.py) and the connection code it shares with
redis-streams (eventscaler/sources/redis_common.py), against a real redis-server on 127.0.0.1.

Scenarios:
- metadata, table-driven: valid rows (address, host + port, each FromEnv form, databaseIndex,
  TLS, KEDA's string booleans, targets and defaults) load with the right settings, target and
  activation; invalid rows give the exact `file: rules[0] (r).triggers[0].field: message` line,
  an inline password or a URL with credentials among them, never echoing the secret;
- reading: LLEN, a missing key reads 0 (as KEDA), another database index, an address, a host or a
  port read from the environment; the ACL user, and the default user with a password only;
- errors, each with its kind and a one-line message naming the list, the server and the env var,
  never the password: a key of another type, a wrong password, no password where one is needed,
  a user without the permission, an env var unset or empty or not holding host:port;
- the server stopped: Unavailable within the tick's budget; restarted: the same reader reads
  again; a server that accepts but never answers: Timeout within the budget;
- pools: one per server and user for the whole process, shared by a redis and a redis-streams
  reader and kept until the last one closes; a rotated password gets a new pool and the old one
  is dropped; 200 reads from 8 threads, all right, through one pool;
- TLS: with the CA from SSL_CERT_FILE, without it (certificate refused, Unavailable), and with
  unsafeSsl;
- no password in any log line at DEBUG, redis-py's included; passwords registered for redaction;
- convert: KEDA's documented example and a TriggerAuthentication whose Secret gives the
  password; the output loads; simulate: the list counts what no worker took yet.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from eventscaler import retry
from eventscaler.config import parse_rules_text
from eventscaler.convert import convert_text, render_rules
from eventscaler.redact import redact
from eventscaler.sources import redis_common, source_type
from eventscaler.sources.base import SourceError
from eventscaler.sources.redis_common import RedisConnection
from eventscaler.sources.redis_lists import RedisListSettings, RedisListSource
from eventscaler.sources.redis_streams import RedisStreamSettings, RedisStreamSource
from tests.support.kubeapi_tls import generate_tls_material
from tests.support.servers.process import HOST, wait_until
from tests.support.servers.redis import RedisServer
from tests.support.source_tables import assert_invalid, assert_valid, load_trigger

USER_ENV, PASSWORD_ENV = "REDIS_USERNAME", "REDIS_PASSWORD"


def redis_trigger(**fields: Any) -> dict[str, Any]:
    return {"type": "redis", "listName": "jobs", **fields}


# --- metadata --------------------------------------------------------------------------------

VALID = [
    (
        redis_trigger(address="redis.example:6380"),
        RedisConnection(host="redis.example", port=6380),
        5.0,
        0.0,
    ),
    (
        redis_trigger(host="10.0.0.7", port=6379, listLength=20, activationListLength=3),
        RedisConnection(host="10.0.0.7", port=6379),
        20.0,
        3.0,
    ),
    (
        redis_trigger(addressFromEnv="REDIS_ADDRESS", passwordFromEnv="P", usernameFromEnv="U"),
        RedisConnection(
            address_from_env="REDIS_ADDRESS", password_from_env="P", username_from_env="U"
        ),
        5.0,
        0.0,
    ),
    (
        redis_trigger(hostFromEnv="REDIS_HOST", portFromEnv="REDIS_PORT", databaseIndex=3),
        RedisConnection(host_from_env="REDIS_HOST", port_from_env="REDIS_PORT", database_index=3),
        5.0,
        0.0,
    ),
    (
        redis_trigger(hostFromEnv="REDIS_HOST", port=6379, enableTLS="true", unsafeSsl="true"),
        RedisConnection(host_from_env="REDIS_HOST", port=6379, enable_tls=True, unsafe_ssl=True),
        5.0,
        0.0,
    ),
    (
        redis_trigger(address="[::1]:6379", enableTLS=False),
        RedisConnection(host="[::1]", port=6379),
        5.0,
        0.0,
    ),
]


@pytest.mark.parametrize(("trigger", "connection", "target", "activation"), VALID)
def test_valid_metadata_loads(
    trigger: dict[str, Any], connection: RedisConnection, target: float, activation: float
) -> None:
    settings = RedisListSettings(connection=connection, list_name="jobs")
    expected = {"settings": settings, "target": target, "activation": activation, "name": "jobs"}
    assert_valid("redis", trigger, expected)


INVALID = [
    (
        redis_trigger(address="h:1", listLenght=5),
        ".listLenght: unknown field (did you mean 'listLength'?)",
    ),
    ({"type": "redis", "address": "h:1"}, ".listName: is required"),
    (
        redis_trigger(),
        ".address: is required: give address (host:port), host and port, or "
        "addressFromEnv / hostFromEnv naming an environment variable",
    ),
    (redis_trigger(address="localhost"), ".address: expected host:port, got 'localhost'"),
    (redis_trigger(address="h:70000"), ".address: expected host:port, got 'h:70000'"),
    (
        redis_trigger(address="redis://:hunter2hunter2@h:6379"),
        ".address: expected host:port, got what looks like a URL (not shown); a password goes in "
        "the environment variable named by passwordFromEnv",
    ),
    (
        redis_trigger(address="h:1", password="hunter2hunter2"),
        ".password: is not read from the rule file: put the password in an environment variable "
        "(in a cluster, from a Secret) and give its name in passwordFromEnv",
    ),
    (
        redis_trigger(address="h:1", username="admin"),
        ".username: is not read from the rule file: put the username in an environment variable "
        "(in a cluster, from a Secret) and give its name in usernameFromEnv",
    ),
    (
        redis_trigger(address="h:1", host="h"),
        ".host: give one of address, addressFromEnv, host or hostFromEnv, not address and host",
    ),
    (redis_trigger(host="h"), ".port: is required with host (or portFromEnv)"),
    (redis_trigger(hostFromEnv="H"), ".port: is required with hostFromEnv (or portFromEnv)"),
    (
        redis_trigger(host="h", port=1, portFromEnv="P"),
        ".portFromEnv: give port or portFromEnv, not both",
    ),
    (redis_trigger(address="h:1", port=1), ".port: only applies with host or hostFromEnv"),
    (redis_trigger(host="h", port="6379"), ".port: expected a whole number >= 1, got '6379'"),
    (redis_trigger(host="h", port=70000), ".port: expected a port from 1 to 65535, got 70000"),
    (redis_trigger(host="h:1", port=1), ".host: expected a host name or IP address, got 'h:1'"),
    (
        redis_trigger(address="h:1", databaseIndex=-1),
        ".databaseIndex: expected a whole number >= 0, got -1",
    ),
    (
        redis_trigger(address="h:1", enableTLS="yes"),
        ".enableTLS: expected true or false, got 'yes'",
    ),
    (redis_trigger(address="h:1", unsafeSsl=True), ".unsafeSsl: only applies with enableTLS: true"),
    (
        redis_trigger(address="h:1", passwordFromEnv="my-password"),
        ".passwordFromEnv: expected the name of an environment variable, got 'my-password'",
    ),
    (redis_trigger(address="h:1", listLength=0), ".listLength: expected a positive number, got 0"),
    (
        redis_trigger(address="h:1", activationListLength=-1),
        ".activationListLength: expected a number >= 0, got -1",
    ),
    (
        redis_trigger(address="h:1", listName=" jobs"),
        ".listName: expected a Redis key (no leading or trailing blanks), got ' jobs'",
    ),
]


@pytest.mark.parametrize(("trigger", "line"), INVALID)
def test_invalid_metadata_names_the_field(trigger: dict[str, Any], line: str) -> None:
    assert_invalid("redis", trigger, "triggers[0]" + line)
    problems, _ = load_trigger("redis", trigger)
    assert not any("hunter2" in p for p in problems)


def test_a_key_any_name_cannot_hold_gives_a_clean_trigger_name() -> None:
    problems, loaded = load_trigger(
        "redis", redis_trigger(address="h:1", listName="queue:{jobs}:high")
    )
    assert problems == []
    assert loaded.name == "queue-jobs-high"
    assert loaded.settings.list_name == "queue:{jobs}:high"


# --- reading against the real server ---------------------------------------------------------


@pytest.fixture
def environ(redis_server: RedisServer) -> dict[str, str]:
    return {USER_ENV: redis_server.username, PASSWORD_ENV: redis_server.password}


@pytest.fixture
def source(environ: dict[str, str]) -> Iterator[RedisListSource]:
    reader = RedisListSource(environ=environ, timeout_seconds=2.0)
    yield reader
    reader.close()


def settings(server: RedisServer, key: str, **connection: Any) -> RedisListSettings:
    fields: dict[str, Any] = {
        "host": HOST,
        "port": server.port(),
        "username_from_env": USER_ENV,
        "password_from_env": PASSWORD_ENV,
    }
    fields.update(connection)
    return RedisListSettings(connection=RedisConnection(**fields), list_name=key)


def new_list(server: RedisServer, items: int, database: int = 0) -> str:
    key = f"jobs:{uuid.uuid4().hex[:10]}"
    if items:
        with server.client(database) as client:
            client.rpush(key, *range(items))
    return key


def read_error(source: RedisListSource | RedisStreamSource, trigger: Any) -> SourceError:
    with pytest.raises(SourceError) as info:
        if isinstance(source, RedisListSource):
            source.read_length(trigger)
        else:
            source.read_count(trigger)
    assert "\n" not in str(info.value)
    return info.value


def test_llen_counts_the_list_and_a_pop_lowers_it(
    redis_server: RedisServer, source: RedisListSource
) -> None:
    key = new_list(redis_server, 7)
    assert source.read_length(settings(redis_server, key)) == 7
    with redis_server.client() as client:
        client.lpop(key, 3)  # three workers took one each: they are no longer in the list
    assert source.read_length(settings(redis_server, key)) == 4


def test_a_missing_key_is_an_empty_list(redis_server: RedisServer, source: RedisListSource) -> None:
    assert source.read_length(settings(redis_server, f"none:{uuid.uuid4().hex}")) == 0


def test_the_database_index_is_used(redis_server: RedisServer, source: RedisListSource) -> None:
    key = new_list(redis_server, 4, database=3)
    assert source.read_length(settings(redis_server, key, database_index=3)) == 4
    assert source.read_length(settings(redis_server, key)) == 0  # db 0 has no such key


def test_address_host_and_port_from_the_environment(redis_server: RedisServer) -> None:
    key = new_list(redis_server, 2)
    environ = {
        "ADDR": redis_server.address,
        "HOST": HOST,
        "PORT": str(redis_server.port()),
        PASSWORD_ENV: redis_server.default_password,  # the default user: AUTH password alone
    }
    reader = RedisListSource(environ=environ)
    conn = {"host": "", "port": 0, "username_from_env": ""}
    for where in (
        {"address_from_env": "ADDR"},
        {"host_from_env": "HOST", "port_from_env": "PORT"},
        {"host": HOST, "port_from_env": "PORT"},
    ):
        assert reader.read_length(settings(redis_server, key, **{**conn, **where})) == 2
    reader.close()


@pytest.mark.parametrize(
    ("environ", "where", "kind", "words"),
    [
        (
            {},
            {"address_from_env": "ADDR"},
            "MissingCredential",
            "MissingEnv: env ADDR (the address) is unset or empty",
        ),
        (
            {"ADDR": "  "},
            {"address_from_env": "ADDR"},
            "MissingCredential",
            "MissingEnv: env ADDR (the address) is unset or empty",
        ),
        (
            {"ADDR": "redis://:pw-in-a-url-123@h:1"},
            {"address_from_env": "ADDR"},
            "InvalidCredential",
            "InvalidAddress: env ADDR does not hold host:port (value not shown)",
        ),
        (
            {"H": "h", "P": "63x79"},
            {"host_from_env": "H", "port_from_env": "P"},
            "InvalidCredential",
            "InvalidAddress: env P does not hold a port number",
        ),
        (
            {"ADDR": "127.0.0.1:1"},
            {"address_from_env": "ADDR", "password_from_env": "NOPE"},
            "MissingCredential",
            "MissingEnv: env NOPE (the password) is unset or empty",
        ),
    ],
)
def test_environment_problems_are_named(
    redis_server: RedisServer,
    environ: dict[str, str],
    where: dict[str, str],
    kind: str,
    words: str,
) -> None:
    reader = RedisListSource(environ=environ)
    conn = {"host": "", "port": 0, "username_from_env": "", "password_from_env": "", **where}
    error = read_error(reader, settings(redis_server, "jobs", **conn))
    reader.close()
    assert error.kind == kind
    assert str(error).startswith("redis list 'jobs' on ")
    assert str(error).endswith(words)
    assert "pw-in-a-url-123" not in str(error)


def test_a_key_of_another_type_is_wrong_type(
    redis_server: RedisServer, source: RedisListSource
) -> None:
    key = f"str:{uuid.uuid4().hex}"
    with redis_server.client() as client:
        client.set(key, "not a list")
    error = read_error(source, settings(redis_server, key))
    assert (error.kind, error.code) == ("BadResponse", "WrongType")


def test_a_wrong_password_is_unauthorized_and_never_shown(redis_server: RedisServer) -> None:
    wrong = f"wrong-{uuid.uuid4().hex}"
    reader = RedisListSource(environ={USER_ENV: redis_server.username, PASSWORD_ENV: wrong})
    error = read_error(reader, settings(redis_server, "jobs"))
    reader.close()
    assert (error.kind, error.code) == ("Unauthorized", "AuthenticationFailed")
    assert str(error) == (
        f"redis list 'jobs' on 127.0.0.1:{redis_server.port()} db 0 (user from env "
        f"{USER_ENV}, password from env {PASSWORD_ENV}): AuthenticationFailed: the server "
        "refused the user name or password"
    )
    assert redact(f"x {wrong} y") == "x *** y"  # registered for every log handler


def test_no_password_where_one_is_needed_says_so(redis_server: RedisServer) -> None:
    reader = RedisListSource(environ={})
    trigger = settings(redis_server, "jobs", username_from_env="", password_from_env="")
    error = read_error(reader, trigger)
    reader.close()
    assert error.kind == "Unauthorized"
    assert "(no password): AuthenticationFailed: the server requires a password: set " in str(error)


def test_a_user_without_the_permission_is_unauthorized(redis_server: RedisServer) -> None:
    password = f"limited-{uuid.uuid4().hex}"
    with redis_server.client() as client:
        client.acl_setuser(
            "limited", enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+ping"]
        )
    reader = RedisListSource(environ={USER_ENV: "limited", PASSWORD_ENV: password})
    error = read_error(reader, settings(redis_server, "jobs"))
    reader.close()
    assert (error.kind, error.code) == ("Unauthorized", "NoPermission")
    assert "'llen'" in str(error)


def test_a_stopped_server_fails_fast_and_a_restart_recovers() -> None:
    timeout = 1.0
    with RedisServer() as server:  # its own: stopping the shared one would break other tests
        environ = {USER_ENV: server.username, PASSWORD_ENV: server.password}
        reader = RedisListSource(environ=environ, timeout_seconds=timeout)
        key = new_list(server, 3)
        assert reader.read_length(settings(server, key)) == 3
        server.stop()
        started = time.monotonic()
        with retry.budget(2 * timeout):
            error = read_error(reader, settings(server, key))
        assert time.monotonic() - started < 2 * timeout + 0.5
        assert (error.kind, error.code) == ("Unavailable", "ConnectionError")
        assert f"cannot reach 127.0.0.1:{server.port()}" in str(error)
        server.start()  # the same port; nothing persisted
        with server.client() as client:
            client.rpush(key, "a", "b")
        assert reader.read_length(settings(server, key)) == 2  # the pooled socket died: retried
        reader.close()


def test_a_silent_server_times_out_within_the_budget(redis_server: RedisServer) -> None:
    timeout = 0.5
    with socket.socket() as silent:  # accepts (through the backlog), never answers
        silent.bind((HOST, 0))
        silent.listen(16)
        reader = RedisListSource(environ={}, timeout_seconds=timeout)
        trigger = settings(
            redis_server,
            "jobs",
            port=silent.getsockname()[1],
            username_from_env="",
            password_from_env="",
        )
        started = time.monotonic()
        with retry.budget(2.5 * timeout):  # one retry fits, a third try does not
            error = read_error(reader, trigger)
        elapsed = time.monotonic() - started
        reader.close()
    assert (error.kind, error.code) == ("Timeout", "Timeout")
    assert elapsed < 2.5 * timeout + 0.3


def test_the_call_timeout_is_cut_to_what_the_tick_has_left() -> None:
    with socket.socket() as silent:
        silent.bind((HOST, 0))
        silent.listen(16)
        reader = RedisListSource(environ={}, timeout_seconds=30.0)
        trigger = RedisListSettings(RedisConnection(host=HOST, port=silent.getsockname()[1]), "j")
        started = time.monotonic()
        with retry.budget(0.6):
            assert read_error(reader, trigger).kind == "Timeout"
        reader.close()
    assert time.monotonic() - started < 1.5  # not the 30 s of the reader's own limit


# --- pools -----------------------------------------------------------------------------------


def pool_count() -> int:
    return redis_common.PROCESS_POOLS.count()


def test_one_pool_per_server_and_user_shared_by_both_sources(
    redis_server: RedisServer, environ: dict[str, str]
) -> None:
    lists = RedisListSource(environ=environ)
    streams = RedisStreamSource(environ=environ)
    before = pool_count()
    key = new_list(redis_server, 5)
    for _ in range(5):
        assert lists.read_length(settings(redis_server, key)) == 5
        conn = settings(redis_server, key).connection
        assert streams.read_count(RedisStreamSettings(conn, f"s:{uuid.uuid4().hex}")) == 0
    assert pool_count() == before + 1
    lists.close()
    assert pool_count() == before + 1  # the streams reader still uses it
    streams.close()


def test_a_rotated_password_gets_a_new_pool_and_drops_the_old(redis_server: RedisServer) -> None:
    environ = {USER_ENV: redis_server.username, PASSWORD_ENV: "old-password-1234"}
    reader = RedisListSource(environ=environ)
    before = pool_count()
    assert read_error(reader, settings(redis_server, "jobs")).kind == "Unauthorized"
    environ[PASSWORD_ENV] = redis_server.password  # the Secret was fixed, the env var follows
    key = new_list(redis_server, 1)
    assert reader.read_length(settings(redis_server, key)) == 1
    assert pool_count() == before + 1  # the old password's pool is gone
    reader.close()


def test_concurrent_reads_share_one_pool(
    redis_server: RedisServer, environ: dict[str, str]
) -> None:
    reader = RedisListSource(environ=environ, pool_size=4)
    before = pool_count()
    keys = [new_list(redis_server, n) for n in range(1, 9)]
    start = threading.Barrier(8)

    def read(i: int) -> list[int]:
        start.wait()
        return [reader.read_length(settings(redis_server, keys[i])) for _ in range(25)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(read, range(8)))
    assert results == [[i + 1] * 25 for i in range(8)]
    assert pool_count() == before + 1
    reader.close()


# --- TLS -------------------------------------------------------------------------------------


class TlsRedisServer(RedisServer):
    """The same server with TLS only, its certificate signed by a CA of the test's own."""

    name = "Redis TLS"

    def _prepare(self) -> None:
        super()._prepare()
        self.tls = generate_tls_material(self.directory)
        ca = self.directory / "ca.pem"
        ca.write_bytes(self.tls.ca_pem)
        config = self.directory / "redis.conf"
        text = config.read_text().replace(f"port {self.port()}\n", "port 0\n")
        config.write_text(
            text + f"tls-port {self.port()}\ntls-cert-file {self.tls.cert_path}\n"
            f"tls-key-file {self.tls.key_path}\ntls-ca-cert-file {ca}\ntls-auth-clients no\n"
        )

    def _is_ready(self) -> bool:
        import redis

        client = redis.Redis(
            host=HOST,
            port=self.port(),
            password=self.default_password,
            ssl=True,
            ssl_cert_reqs="none",
            socket_timeout=2,
        )
        with client:
            return bool(client.ping())

    @property
    def ca_path(self) -> Path:
        return self.directory / "ca.pem"


def test_tls_verified_against_a_ca_refused_without_and_unsafe_skips_the_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with TlsRedisServer() as server:
        environ = {PASSWORD_ENV: server.default_password}
        tls = {"username_from_env": "", "enable_tls": True}
        wait_until(lambda: server.running, 10, "the TLS server runs")
        import redis

        with redis.Redis(
            host=HOST,
            port=server.port(),
            password=server.default_password,
            ssl=True,
            ssl_cert_reqs="none",
        ) as client:
            client.rpush("jobs", 1, 2, 3)

        reader = RedisListSource(environ=environ, timeout_seconds=2.0)
        error = read_error(reader, settings(server, "jobs", **tls))
        assert (error.kind, error.code) == ("Unavailable", "ConnectionError")
        assert "certificate verify failed" in str(error)
        assert reader.read_length(settings(server, "jobs", **tls, unsafe_ssl=True)) == 3
        plain = settings(server, "jobs", username_from_env="")
        assert read_error(reader, plain).kind in ("Unavailable", "Timeout")
        reader.close()

        monkeypatch.setenv("SSL_CERT_FILE", str(server.ca_path))  # how a private CA is given
        reader = RedisListSource(environ=environ, timeout_seconds=2.0)
        assert reader.read_length(settings(server, "jobs", **tls)) == 3
        reader.close()


# --- logs ------------------------------------------------------------------------------------


def test_no_password_in_any_log_line(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = f"wrong-{uuid.uuid4().hex}"
    for password in (redis_server.password, wrong):
        reader = RedisListSource(environ={USER_ENV: redis_server.username, PASSWORD_ENV: password})
        try:
            reader.read_length(settings(redis_server, new_list(redis_server, 1)))
        except SourceError as exc:
            logging.getLogger("eventscaler.test").exception("read failed: %s", exc)
        reader.close()
    assert "read failed" in caplog.text
    for secret in (redis_server.password, wrong):
        assert secret not in caplog.text


# --- convert and simulate --------------------------------------------------------------------

KEDA_EXAMPLE = """
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: redis-scaledobject, namespace: default}
spec:
  scaleTargetRef: {name: worker}
  triggers:
  - type: redis
    metadata:
      address: localhost:6379
      usernameFromEnv: REDIS_USERNAME
      passwordFromEnv: REDIS_PASSWORD
      listName: mylist
      listLength: "5"
      activationListLength: "5"
      enableTLS: "false"
      unsafeSsl: "false"
      databaseIndex: "0"
"""

KEDA_WITH_AUTH = """
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {name: keda-trigger-auth-redis-secret, namespace: default}
spec:
  secretTargetRef:
  - {parameter: password, name: votes-db-secret, key: redis_password}
  - {parameter: tls, name: votes-db-secret, key: tls}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: redis-scaledobject, namespace: default}
spec:
  scaleTargetRef: {name: votes}
  triggers:
  - type: redis
    metadata: {address: localhost:6379, listName: mylist, listLength: "5", password: plain}
    authenticationRef: {name: keda-trigger-auth-redis-secret}
"""


def test_convert_keda_example_maps_every_field() -> None:
    conversion = convert_text(KEDA_EXAMPLE, "so.yaml")
    (trigger,) = conversion.rules[0]["triggers"]
    assert trigger == {
        "type": "redis",
        "listName": "mylist",
        "listLength": 5,
        "activationListLength": 5,
        "address": "localhost:6379",
        "usernameFromEnv": "REDIS_USERNAME",
        "passwordFromEnv": "REDIS_PASSWORD",
        "databaseIndex": 0,
        "enableTLS": False,
        "unsafeSsl": False,
    }
    result = parse_rules_text(render_rules(conversion, "so.yaml"), "out.yaml")
    assert result.problems == ()
    assert result.rules[0].triggers[0].activation == 5


def test_convert_trigger_authentication_becomes_password_from_env() -> None:
    conversion = convert_text(KEDA_WITH_AUTH, "so.yaml")
    (trigger,) = conversion.rules[0]["triggers"]
    env = "KEDA_TRIGGER_AUTH_REDIS_SECRET_PASSWORD"
    assert trigger["passwordFromEnv"] == env
    assert "password" not in trigger
    notes = [str(n) for n in conversion.notes]
    assert any(
        f"Secret votes-db-secret key redis_password: set passwordFromEnv {env}" in n for n in notes
    )
    assert any("metadata.password" in n and "set passwordFromEnv to its name" in n for n in notes)
    assert any("(tls)" in n and "set enableTLS: true" in n for n in notes)
    assert not any("plain" in n for n in notes)
    assert parse_rules_text(render_rules(conversion, "so.yaml"), "out.yaml").problems == ()


def test_simulated_value_leaves_out_what_workers_took() -> None:
    redis_list = source_type("redis")
    trigger_settings = RedisListSettings(RedisConnection(host="h", port=1), "jobs")
    assert redis_list.simulated_value(trigger_settings, backlog=10, in_flight=4) == 6
    assert redis_list.simulated_value(trigger_settings, backlog=3, in_flight=3) == 0


def test_simulate_replays_rules_with_these_triggers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import autoscaler

    triggers = [
        {"type": "redis", "address": "127.0.0.1:6379", "listName": "jobs", "listLength": 5},
        {"type": "redis-streams", "address": "127.0.0.1:6379", "stream": "s",
         "consumerGroup": "g", "lagCount": 5},
        {"type": "nats-jetstream", "natsServerMonitoringEndpoint": "127.0.0.1:8222",
         "stream": "s", "consumer": "c", "lagThreshold": 5},
    ]  # fmt: skip
    for trigger in triggers:
        path = tmp_path / f"{trigger['type']}.yaml"
        rules = {"rules": [{"name": "w", "deployment": "w", "maxReplicas": 20,
                            "triggers": [trigger]}]}  # fmt: skip
        path.write_text(yaml.safe_dump(rules))
        assert autoscaler.main(["simulate", "--config", str(path), "--scenario", "flood"]) == 0
        out = capsys.readouterr().out
        assert "t=   30.0s   0 -> 20  activated from zero" in out, (trigger["type"], out)


def test_a_source_module_and_its_client_are_imported_only_when_a_rule_uses_it() -> None:
    import subprocess
    import sys
    import textwrap

    from tests.support.daemon_process import REPO_ROOT

    script = textwrap.dedent(
        """
        import sys
        from eventscaler.config import parse_rules_text
        parse_rules_text(
            "rules: [{name: r, deployment: d, triggers: [{type: azure-queue, queueName: q-q}]}]",
            "azure.yaml",
        )
        names = ("redis", "nats", "eventscaler.sources.redis", "eventscaler.sources.nats")
        before = sorted(m for m in sys.modules if m.startswith(names))
        parse_rules_text(
            "rules: [{name: r, deployment: d, triggers: [{type: redis, address: 'h:1',"
            " listName: j}]}]",
            "redis.yaml",
        )
        print(before, "redis" in sys.modules, "eventscaler.sources.redis_streams" in sys.modules)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[] True False"


def test_the_commented_examples_of_config_example_load() -> None:
    from tests.support.daemon_process import REPO_ROOT

    lines = (REPO_ROOT / "config.example.yaml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "# More sources" in line) + 1
    block = []
    for line in lines[start:]:
        if not line.startswith("      # "):
            break
        block.append(line[len("      # ") :])
    triggers = yaml.safe_load("\n".join(block))
    assert [t["type"] for t in triggers] == ["redis", "redis-streams", "nats-jetstream"]
    for trigger in triggers:
        problems, loaded = load_trigger(trigger["type"], trigger)
        assert problems == [], trigger
        assert loaded.type == trigger["type"]
