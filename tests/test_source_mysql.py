"""The mysql source: its fields, KEDA's connection string, and its readings and errors against a
real MariaDB.

Metadata, table-driven (no server): valid triggers load (connectionStringFromEnv, or host or
hostFromEnv with port or portFromEnv, username, dbName and passwordFromEnv; KEDA's metadata
strings for numbers); invalid ones give their exact `file: rules[0] (r).triggers[0].field:
message` line (a misspelt field, no query, no queryValue, neither way in or both, a field missing,
host and hostFromEnv both, an inline password or connection string, a host holding a DSN).
KEDA's connection string, table-driven: the Go driver's DSN with a password holding `@` and `:`,
IPv6, the default port, a unix socket, tls; malformed ones are refused without being shown.

Against the real MariaDB 10.11 (the session's `mariadb_server`), table-driven: a count, a
decimal, a numeric string, through the DSN and through host fields; no row, NULL, a string are
BadResponse; a write and DDL are refused by the read-only transaction, `...; DELETE` is a syntax
error (and nothing is deleted); a slow query is cut by max_statement_time within the tick; a
missing table NotFound; a wrong password Unauthorized without the password in the message; an
unset variable MissingCredential, a malformed DSN InvalidCredential; a closed port Unavailable;
a frozen server (a proxy that stops forwarding) a Timeout within the tick's budget, then a
reconnect; connections reused per settings and closed by close().
convert: KEDA's trigger with a TriggerAuthentication (password) becomes passwordFromEnv with the
env var to add, and loads. simulate replays a rule. The commented example loads; PyMySQL is
imported only when a rule uses it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eventscaler import retry
from eventscaler.config import parse_rules_text
from eventscaler.redact import redact
from eventscaler.sources.base import SourceError
from eventscaler.sources.mysql import DsnError, MySqlSource, mysql_trigger, parse_dsn
from tests.conftest import write_rules
from tests.support.daemon_process import run_command
from tests.support.servers.mariadb import MariaDbServer
from tests.support.source_tests import (
    closed_port,
    commented_example,
    e2e_rule,
    load_trigger,
    sdk_loaded,
)
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import WAIT_SCALE

PREFIX = "rules.yaml: rules[0] (r).triggers[0]"
QUERY = "SELECT count(*) FROM jobs WHERE state = 'ready'"
HOST_FIELDS = {"host": "mysql.jobs", "port": 3306, "username": "worker", "dbName": "app",
               "passwordFromEnv": "MYSQL_PASSWORD"}  # fmt: skip
BASE = {"type": "mysql", "query": QUERY, "queryValue": 10}

# --- metadata ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected", "activation"),
    [
        ({"connectionStringFromEnv": "DSN"}, {"connection_string_from_env": "DSN"}, 0.0),
        (HOST_FIELDS, {"host": "mysql.jobs", "port": 3306, "username": "worker",
                       "db_name": "app", "password_from_env": "MYSQL_PASSWORD"}, 0.0),
        ({**HOST_FIELDS, "host": None, "hostFromEnv": "H", "port": None, "portFromEnv": "P",
          "activationQueryValue": 1.5}, {"host": "", "host_from_env": "H",
                                           "port_from_env": "P"}, 1.5),
        ({**HOST_FIELDS, "port": "3307", "passwordFromEnv": None}, {"port": 3307,
                                                                   "password_from_env": ""}, 0.0),
    ],
)  # fmt: skip
def test_valid_metadata(
    fields: dict[str, Any], expected: dict[str, Any], activation: float
) -> None:
    problems, trigger = load_trigger({k: v for k, v in {**BASE, **fields}.items() if v is not None})
    assert problems == [] and trigger is not None
    assert {k: getattr(trigger.settings, k) for k in expected} == expected
    assert (trigger.target, trigger.activation) == (10.0, activation)


@pytest.mark.parametrize(
    ("fields", "line"),
    [
        ({**HOST_FIELDS, "queryValeu": 3},
         ".queryValeu: unknown field (did you mean 'queryValue'?)"),
        ({**HOST_FIELDS, "query": None}, ".query: is required"),
        ({**HOST_FIELDS, "queryValue": None}, ".queryValue: is required"),
        ({}, ".host: is required: give connectionStringFromEnv (an env var holding "
             "user:password@tcp(host:3306)/db) or host (or hostFromEnv) with port, username and "
             "dbName"),
        ({"connectionStringFromEnv": "D", "username": "u"},
         ".username: give connectionStringFromEnv or host, port, username, dbName and "
         "passwordFromEnv, not both"),
        ({**HOST_FIELDS, "dbName": None}, ".dbName: is required with host (as in KEDA)"),
        ({**HOST_FIELDS, "port": None}, ".port: is required with host (as in KEDA)"),
        ({**HOST_FIELDS, "hostFromEnv": "H"}, ".hostFromEnv: give host or hostFromEnv, not both"),
        ({**HOST_FIELDS, "password": "hunter2hunter2"},
         ".password: is not read from the rule file: put the password in an environment "
         "variable (in a cluster, from a Secret) and give its name in passwordFromEnv"),
        ({"connectionString": "u:hunter2hunter2@tcp(db:3306)/app"},
         ".connectionString: is not read from the rule file: put the connectionString in an "
         "environment variable (in a cluster, from a Secret) and give its name in "
         "connectionStringFromEnv"),
        ({**HOST_FIELDS, "host": "u:hunter2hunter2@tcp(db:3306)/app"},
         ".host: expected a host name or IP address alone, got what looks like a connection "
         "string (not shown)"),
    ],
)  # fmt: skip
def test_invalid_metadata(fields: dict[str, Any], line: str) -> None:
    trigger = {k: v for k, v in {**BASE, **fields}.items() if v is not None}
    problems, loaded = load_trigger(trigger)
    assert loaded is None
    assert len(problems) == 1 and problems[0].startswith(PREFIX + line), problems
    assert "hunter2" not in problems[0]


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("u:p@tcp(db:3307)/app", {"user": "u", "password": "p", "host": "db", "port": 3307,
                                  "database": "app"}),
        ("u:p@:ss@w0rd@tcp(db)/app?parseTime=true", {"password": "p@:ss@w0rd", "port": 3306}),
        ("u@tcp([::1]:3310)/app", {"user": "u", "password": "", "host": "::1", "port": 3310}),
        ("u:p@/app", {"host": "127.0.0.1", "port": 3306}),
        ("u:p@unix(/run/mysqld.sock)/app", {"unix_socket": "/run/mysqld.sock"}),
    ],
)  # fmt: skip
def test_keda_connection_strings(dsn: str, expected: dict[str, Any]) -> None:
    parsed = parse_dsn(dsn)
    assert {k: parsed[k] for k in expected} == expected


@pytest.mark.parametrize(
    ("dsn", "words"),
    [("u:secretpw@db:3306", "no /database part"), ("u:secretpw@tcp(db:x)/a", "a port"),
     ("u:secretpw@udp(db)/a", "network 'udp'"), ("u:secretpw@tcp(db)/a?tls=custom", "tls=")],
)  # fmt: skip
def test_malformed_connection_strings(dsn: str, words: str) -> None:
    with pytest.raises(DsnError) as raised:
        parse_dsn(dsn)
    assert words in str(raised.value) and "secretpw" not in str(raised.value)


def test_tls_in_the_connection_string() -> None:
    assert parse_dsn("u:p@tcp(db)/a?tls=true")["ssl"].check_hostname is True
    assert parse_dsn("u:p@tcp(db)/a?tls=skip-verify")["ssl"].check_hostname is False
    assert "ssl" not in parse_dsn("u:p@tcp(db)/a?tls=false")


# --- against the real server ---------------------------------------------------------------


@pytest.fixture(scope="module")
def jobs(mariadb_server: MariaDbServer) -> MariaDbServer:
    with mariadb_server.connect() as connection, connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS jobs")
        cursor.execute("CREATE TABLE jobs (id int AUTO_INCREMENT PRIMARY KEY, state text)")
        cursor.executemany(
            "INSERT INTO jobs (state) VALUES (%s)", [("ready",)] * 23 + [("done",)] * 2
        )
        connection.commit()
    return mariadb_server


@pytest.fixture
def source(jobs: MariaDbServer) -> Iterator[MySqlSource]:
    reader = MySqlSource(env(jobs), timeout_seconds=1.0)
    yield reader
    reader.close()


def env(server: MariaDbServer) -> dict[str, str]:
    return {"DSN": server.url, "MYSQL_PASSWORD": server.password, "WRONG": "wrong-pw-2b8f1a",
            "JUNK": "mysql-junk-secret-4d1", "HOST": "127.0.0.1",
            "PORT": str(server.port())}  # fmt: skip


def by_host(server: MariaDbServer, **fields: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": server.port(), "username": server.user,
            "db_name": server.database, "password_from_env": "MYSQL_PASSWORD",
            **fields}  # fmt: skip


def read(source: MySqlSource, query: str, **fields: Any) -> float:
    with retry.budget(3.0):
        return source.read(mysql_trigger(query, 5.0, **fields))


DSN = {"connection_string_from_env": "DSN"}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (QUERY, 23.0),
        ("SELECT count(*) FROM jobs;", 25.0),
        ("SELECT avg(id) FROM jobs WHERE state = 'ready'", 12.0),  # a DECIMAL
        ("SELECT '7.25'", 7.25),
        ("SELECT 4 UNION ALL SELECT 9", 4.0),
    ],
)
def test_the_first_column_of_the_first_row(
    source: MySqlSource, jobs: MariaDbServer, query: str, expected: float
) -> None:
    assert read(source, query, **DSN) == expected
    assert read(source, query, **by_host(jobs)) == expected
    fields = by_host(jobs, host="", host_from_env="HOST", port=0, port_from_env="PORT")
    assert read(source, query, **fields) == expected


@pytest.mark.parametrize(
    ("query", "kind", "words"),
    [
        ("SELECT 1 FROM dual WHERE false", "BadResponse", "NoRow: the query returned no row"),
        ("SELECT NULL", "BadResponse", "NotANumber: the first column is NULL"),
        ("SELECT 'many'", "BadResponse", "NotANumber: the first column holds 'many'"),
        ("INSERT INTO jobs (state) VALUES ('x')", "ServiceError",
         "WriteRefused: the query tries to write: refused by the read-only transaction"),
        ("CREATE TABLE sneaky (a int)", "ServiceError", "WriteRefused"),
        ("SELECT 1; DELETE FROM jobs", "ServiceError", "QueryError: 1064: You have an error"),
        ("SELECT count(*) FROM nowhere", "NotFound",
         "TableNotFound: a table the query reads does not exist"),
    ],
)  # fmt: skip
def test_answers_without_a_number_and_refused_queries(
    source: MySqlSource, jobs: MariaDbServer, query: str, kind: str, words: str
) -> None:
    with pytest.raises(SourceError) as raised:
        read(source, query, **by_host(jobs))
    assert raised.value.kind == kind
    where = f"eventscaler@127.0.0.1:{jobs.port()}/eventscaler (password from env MYSQL_PASSWORD)"
    assert f" on {where}: {words}" in str(raised.value)
    assert read(source, "SELECT count(*) FROM jobs", **DSN) == 25.0  # nothing written
    assert source.idle_connections() >= 1


def test_a_slow_query_is_cut_by_the_statement_timeout(source: MySqlSource) -> None:
    began = time.monotonic()
    with retry.budget(0.8), pytest.raises(SourceError) as raised:
        source.read(mysql_trigger("SELECT count(*) FROM jobs WHERE sleep(5) = 0", 5.0, **DSN))
    assert time.monotonic() - began < 30  # cut long before the query would have ended
    assert raised.value.kind == "Timeout" and raised.value.code == "StatementTimeout"
    cut_at = re.search(r"the query ran past its (0\.\d+) s timeout", str(raised.value))
    assert cut_at and float(cut_at.group(1)) <= 0.8, str(raised.value)  # what the budget left
    assert read(source, QUERY, **DSN) == 23.0


@pytest.mark.parametrize(
    ("fields", "kind", "code", "words"),
    [
        ({"password_from_env": "WRONG"}, "Unauthorized", "AuthenticationFailed",
         "Access denied for user 'eventscaler'"),
        ({"db_name": "nodb"}, "Unauthorized", "PermissionDenied", "to database 'nodb'"),
        ({"password_from_env": "UNSET"}, "MissingCredential", "MissingEnv",
         "env UNSET (the password) is unset or empty"),
        ({"connection_string_from_env": "JUNK"}, "InvalidCredential", "InvalidConnectionString",
         "env JUNK does not hold user:password@tcp(host:port)/db: no /database part"),
    ],
)  # fmt: skip
def test_login_errors(
    source: MySqlSource, jobs: MariaDbServer, fields: dict[str, Any], kind: str, code: str,
    words: str,
) -> None:  # fmt: skip
    with pytest.raises(SourceError) as raised:
        read(source, QUERY, **by_host(jobs, **fields))
    assert (raised.value.kind, raised.value.code) == (kind, code)
    assert words in str(raised.value)
    for secret in ("wrong-pw-2b8f1a", jobs.password, "mysql-junk-secret-4d1"):
        assert secret not in str(raised.value)


def test_secrets_are_registered(source: MySqlSource, jobs: MariaDbServer) -> None:
    read(source, QUERY, **DSN)
    assert redact(f"x {jobs.url} y {jobs.password} z") == "x *** y *** z"


def test_a_closed_port_is_unavailable(source: MySqlSource, jobs: MariaDbServer) -> None:
    with pytest.raises(SourceError) as raised:
        read(source, QUERY, **by_host(jobs, port=closed_port()))
    assert (raised.value.kind, raised.value.code) == ("Unavailable", "ConnectionError")


def test_a_frozen_server_times_out_within_the_budget_then_reconnects(
    source: MySqlSource, jobs: MariaDbServer
) -> None:
    with TcpProxy(jobs.port()) as proxy:
        fields = by_host(jobs, port=proxy.port)
        assert read(source, QUERY, **fields) == 23.0
        proxy.freeze()
        began = time.monotonic()
        with retry.budget(1.0), pytest.raises(SourceError) as raised:
            source.read(mysql_trigger(QUERY, 5.0, **fields))
        assert (
            time.monotonic() - began < 3.0 * WAIT_SCALE
        )  # bounded: a frozen server never hangs it
        assert raised.value.kind == "Timeout" and "no answer from the server" in str(raised.value)
        proxy.thaw()
        assert read(source, QUERY, **fields) == 23.0


def test_connections_are_reused_per_settings_and_closed(
    source: MySqlSource, jobs: MariaDbServer
) -> None:
    for _ in range(5):
        read(source, QUERY, **DSN)
        read(source, QUERY, **by_host(jobs, password_from_env="MYSQL_PASSWORD"))
    assert source.idle_connections() == 2
    source.close()
    assert source.idle_connections() == 0


# --- convert, simulate, the example, lazy import ---------------------------------------------

SCALED_OBJECT = """
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {name: keda-trigger-auth-mysql-secret, namespace: my-project}
spec:
  secretTargetRef:
  - {parameter: password, name: keda-mysql-secret, key: mysql_password}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: mysql-scaledobject, namespace: my-project}
spec:
  scaleTargetRef: {name: worker}
  triggers:
  - type: mysql
    metadata:
      host: mysql.my-project.svc
      port: "3306"
      username: root
      dbName: test_db_name
      queryValue: "4.4"
      activationQueryValue: "5.4"
      query: "SELECT CEIL(COUNT(*) / 6) FROM task_instance WHERE state='running' OR state='queued'"
    authenticationRef: {name: keda-trigger-auth-mysql-secret}
"""


def test_convert_maps_the_trigger_and_its_password() -> None:
    from eventscaler.convert import convert_text, render_rules

    conversion = convert_text(SCALED_OBJECT, "so.yaml")
    (trigger,) = conversion.rules[0]["triggers"]
    env_name = trigger["passwordFromEnv"]
    assert {k: v for k, v in trigger.items() if k != "passwordFromEnv"} == {
        "type": "mysql", "host": "mysql.my-project.svc", "port": 3306, "username": "root",
        "dbName": "test_db_name", "queryValue": 4.4, "activationQueryValue": 5.4,
        "query": "SELECT CEIL(COUNT(*) / 6) FROM task_instance WHERE state='running' OR "
                 "state='queued'",
    }  # fmt: skip
    notes = "\n".join(str(n) for n in conversion.notes)
    secret_ref = "{secretKeyRef: {name: keda-mysql-secret, key: mysql_password}}}"
    assert f"{{name: {env_name}, valueFrom: {secret_ref}" in notes
    assert parse_rules_text(render_rules(conversion, "so.yaml"), "c.yaml").problems == ()


def test_simulate_replays_a_mysql_rule(tmp_path: Path) -> None:
    trigger = {**BASE, "connectionStringFromEnv": "DSN"}
    rules = write_rules(tmp_path / "rules.yaml", [e2e_rule("jobs", "default", trigger)])
    result = run_command(["simulate", "--config", str(rules), "--scenario", "flood",
                          "--duration", "120"])  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "mysql query" in result.stdout and "the connection string from env DSN" in result.stdout


def test_the_commented_example_in_config_example_loads() -> None:
    result = parse_rules_text(commented_example("mysql"), "config.example.yaml")
    assert result.problems == ()
    assert [t.type for t in result.rules[0].triggers] == ["mysql"]


def test_pymysql_is_imported_only_when_a_rule_uses_mysql() -> None:
    trigger = "{type: mysql, connectionStringFromEnv: D, query: 'SELECT 1', queryValue: 1}"
    assert sdk_loaded("pymysql", trigger) == (False, True)
