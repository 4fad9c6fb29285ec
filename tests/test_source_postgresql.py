"""The postgresql source: its fields, and its readings and errors against a real PostgreSQL.

Metadata, table-driven (no server): valid triggers load (connectionFromEnv, or host with port,
userName, dbName, sslmode and passwordFromEnv; KEDA's metadata strings for numbers; a trailing `;`
dropped); invalid ones give their exact `file: rules[0] (r).triggers[0].field: message` line (a
misspelt field, no query, no targetQueryValue, neither way in or both, a host field missing, an
inline password or connection string, a host holding a URL, a bad sslmode or port).

Against the real PostgreSQL 15 (the session's `postgres_server`), table-driven: a count, a
decimal, a numeric string read as numbers, through a libpq URL and through host fields; no row,
NULL, a string and a boolean are BadResponse; a write and DDL are refused by the read-only
transaction, `...; DELETE` is refused as a second statement (and nothing is deleted); a slow query
is cut by the statement timeout within the tick; a missing table is NotFound; a wrong password is
Unauthorized without the password in the message; a missing database NotFound; an unset variable
MissingCredential, a malformed connection string InvalidCredential (not shown); a closed port
Unavailable; a frozen server (a proxy that stops forwarding) a Timeout within the tick's budget,
then a reconnect; connections reused per settings and closed by close().
convert: KEDA's trigger with a TriggerAuthentication (password, connection) becomes
passwordFromEnv / connectionFromEnv with the env vars to add, and loads. simulate replays a rule.
The commented example of config.example.yaml loads; psycopg is imported only when a rule uses it.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eventscaler import retry
from eventscaler.config import parse_rules_text
from eventscaler.redact import redact
from eventscaler.sources.base import SourceError
from eventscaler.sources.postgresql import PostgresSource, postgresql_trigger
from tests.conftest import write_rules
from tests.support.daemon_process import run_command
from tests.support.servers.postgres import PostgresServer
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
HOST_FIELDS = {"host": "db.jobs", "port": 5432, "userName": "worker", "dbName": "app",
               "sslmode": "require", "passwordFromEnv": "PG_PASSWORD"}  # fmt: skip
BASE = {"type": "postgresql", "query": QUERY, "targetQueryValue": 10}

# --- metadata ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected", "activation"),
    [
        ({"connectionFromEnv": "PG_URL"}, {"connection_from_env": "PG_URL", "host": ""}, 0.0),
        (HOST_FIELDS, {"host": "db.jobs", "port": 5432, "user_name": "worker", "db_name": "app",
                       "sslmode": "require", "password_from_env": "PG_PASSWORD"}, 0.0),
        ({**HOST_FIELDS, "port": "6432", "sslmode": "DISABLE", "passwordFromEnv": None,
          "activationTargetQueryValue": 2.5}, {"port": 6432, "sslmode": "disable",
                                               "password_from_env": ""}, 2.5),
        ({"connectionFromEnv": "PG_URL", "query": "SELECT 1;\n"}, {"query": "SELECT 1"}, 0.0),
    ],
)  # fmt: skip
def test_valid_metadata(
    fields: dict[str, Any], expected: dict[str, Any], activation: float
) -> None:
    problems, trigger = load_trigger({k: v for k, v in {**BASE, **fields}.items() if v is not None})
    assert problems == [] and trigger is not None
    assert {k: getattr(trigger.settings, k) for k in expected} == expected
    assert (trigger.target, trigger.activation) == (10.0, activation)


NEITHER = (".host: is required: give connectionFromEnv (an env var holding a libpq URL or "
           "conninfo) or host with port, userName, dbName and sslmode")  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "line"),
    [
        ({"connectionFromEnv": "U", "querry": "x"},
         ".querry: unknown field (did you mean 'query'?)"),
        ({"connectionFromEnv": "U", "query": None}, ".query: is required"),
        ({"connectionFromEnv": "U", "targetQueryValue": None}, ".targetQueryValue: is required"),
        ({}, NEITHER),
        ({"connectionFromEnv": "U", "host": "db"},
         ".host: give connectionFromEnv or host, port, userName, dbName, sslmode and "
         "passwordFromEnv, not both"),
        ({**HOST_FIELDS, "sslmode": None}, ".sslmode: is required with host (as in KEDA)"),
        ({**HOST_FIELDS, "userName": None}, ".userName: is required with host (as in KEDA)"),
        ({**HOST_FIELDS, "password": "hunter2hunter2"},
         ".password: is not read from the rule file: put the password in an environment "
         "variable (in a cluster, from a Secret) and give its name in passwordFromEnv"),
        ({"connection": "postgresql://u:hunter2hunter2@db/app"},
         ".connection: is not read from the rule file: put the connection in an environment "
         "variable (in a cluster, from a Secret) and give its name in connectionFromEnv"),
        ({**HOST_FIELDS, "host": "postgresql://u:hunter2hunter2@db/app"},
         ".host: expected a host name or IP address alone, got what looks like a connection "
         "string (not shown)"),
        ({**HOST_FIELDS, "sslmode": "on"},
         ".sslmode: expected 'disable' or 'allow' or 'prefer' or 'require' or 'verify-ca' or "
         "'verify-full', got 'on'"),
        ({**HOST_FIELDS, "port": 70000}, ".port: expected a port from 1 to 65535, got 70000"),
        ({"connectionFromEnv": "U", "query": "  "},
         ".query: expected an SQL query returning one number, got '  '"),
    ],
)  # fmt: skip
def test_invalid_metadata(fields: dict[str, Any], line: str) -> None:
    trigger = {k: v for k, v in {**BASE, **fields}.items() if v is not None}
    problems, loaded = load_trigger(trigger)
    assert loaded is None
    assert len(problems) == 1 and problems[0].startswith(PREFIX + line), problems
    assert "hunter2" not in problems[0]


# --- against the real server ---------------------------------------------------------------


@pytest.fixture(scope="module")
def jobs(postgres_server: PostgresServer) -> PostgresServer:
    with postgres_server.connect() as connection:
        connection.execute("DROP TABLE IF EXISTS jobs")
        connection.execute("CREATE TABLE jobs (id serial PRIMARY KEY, state text NOT NULL)")
        connection.execute("INSERT INTO jobs (state) SELECT 'ready' FROM generate_series(1, 23)")
        connection.execute("INSERT INTO jobs (state) VALUES ('done'), ('done')")
    return postgres_server


@pytest.fixture
def source(jobs: PostgresServer) -> Iterator[PostgresSource]:
    reader = PostgresSource(env(jobs), timeout_seconds=1.0)
    yield reader
    reader.close()


def env(server: PostgresServer) -> dict[str, str]:
    return {"PG_URL": server.url, "PG_PASSWORD": server.password, "PG_WRONG": "wrong-pw-1c9e4d",
            "PG_JUNK": "not a connection string at all"}  # fmt: skip


def by_host(server: PostgresServer, **fields: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": server.port(), "user_name": server.user,
            "db_name": server.database, "sslmode": "disable", "password_from_env": "PG_PASSWORD",
            **fields}  # fmt: skip


def read(source: PostgresSource, query: str, **fields: Any) -> float:
    with retry.budget(3.0):
        return source.read(postgresql_trigger(query, 5.0, **fields))


URL = {"connection_from_env": "PG_URL"}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (QUERY, 23.0),
        ("SELECT count(*) FROM jobs;", 25.0),
        ("SELECT avg(id) FROM jobs WHERE state = 'ready'", 12.0),  # numeric (a Decimal)
        ("SELECT '7.25'::text", 7.25),  # KEDA's scan converts a numeric string too
        ("SELECT 4, 'ignored' UNION ALL SELECT 9, 'second row'", 4.0),
    ],
)
def test_the_first_column_of_the_first_row(
    source: PostgresSource, jobs: PostgresServer, query: str, expected: float
) -> None:
    assert read(source, query, **URL) == expected
    assert read(source, query, **by_host(jobs)) == expected


@pytest.mark.parametrize(
    ("query", "kind", "words"),
    [
        ("SELECT 1 WHERE false", "BadResponse", "NoRow: the query returned no row"),
        ("SELECT NULL::int", "BadResponse", "NotANumber: the first column is NULL"),
        ("SELECT 'many'", "BadResponse", "NotANumber: the first column holds 'many'"),
        ("SELECT true", "BadResponse", "NotANumber: the first column holds True"),
        ("SELECT 'NaN'::float8", "BadResponse", "NotANumber"),
        ("INSERT INTO jobs (state) VALUES ('x') RETURNING id", "ServiceError",
         "WriteRefused: the query tries to write: refused by the read-only transaction"),
        ("CREATE TABLE sneaky (a int)", "ServiceError", "WriteRefused"),
        ("SELECT 1; DELETE FROM jobs", "ServiceError",
         "QueryError: 42601: cannot insert multiple commands into a prepared statement"),
        ("SELECT count(*) FROM nowhere", "NotFound", 'TableNotFound: a table the query reads '
                                                     'does not exist: relation "nowhere"'),
        ("SELEC 1", "ServiceError", "QueryError: 42601: syntax error"),
    ],
)  # fmt: skip
def test_answers_without_a_number_and_refused_queries(
    source: PostgresSource, jobs: PostgresServer, query: str, kind: str, words: str
) -> None:
    with pytest.raises(SourceError) as raised:
        read(source, query, **by_host(jobs))
    assert raised.value.kind == kind
    where = f"eventscaler@127.0.0.1:{jobs.port()}/eventscaler (password from env PG_PASSWORD)"
    assert f" on {where}: {words}" in str(raised.value)
    assert read(source, "SELECT count(*) FROM jobs", **URL) == 25.0  # nothing written
    assert source.idle_connections() >= 1  # a query's own error keeps its connection


def test_a_slow_query_is_cut_by_the_statement_timeout(
    source: PostgresSource, jobs: PostgresServer
) -> None:
    began = time.monotonic()
    with retry.budget(0.8), pytest.raises(SourceError) as raised:
        source.read(postgresql_trigger("SELECT 1 FROM pg_sleep(60)", 5.0, **URL))
    assert time.monotonic() - began < 30  # cut long before the query would have ended
    assert raised.value.kind == "Timeout" and raised.value.code == "StatementTimeout"
    cut_at = re.search(r"the query ran past its (0\.\d+) s timeout", str(raised.value))
    assert cut_at and float(cut_at.group(1)) <= 0.8, str(raised.value)  # what the budget left
    assert read(source, QUERY, **URL) == 23.0


@pytest.mark.parametrize(
    ("fields", "kind", "code", "words"),
    [
        ({"password_from_env": "PG_WRONG"}, "Unauthorized", "AuthenticationFailed",
         'password authentication failed for user "eventscaler"'),
        ({"password_from_env": ""}, "Unauthorized", "AuthenticationFailed", "no password"),
        ({"db_name": "nodb"}, "NotFound", "DatabaseNotFound", 'database "nodb" does not exist'),
        ({"password_from_env": "PG_UNSET"}, "MissingCredential", "MissingEnv",
         "env PG_UNSET (the password) is unset or empty"),
    ],
)  # fmt: skip
def test_login_errors(
    source: PostgresSource, jobs: PostgresServer, fields: dict[str, Any], kind: str, code: str,
    words: str,
) -> None:  # fmt: skip
    with pytest.raises(SourceError) as raised:
        read(source, QUERY, **by_host(jobs, **fields))
    assert (raised.value.kind, raised.value.code) == (kind, code)
    assert words in str(raised.value)
    assert "wrong-pw-1c9e4d" not in str(raised.value) and jobs.password not in str(raised.value)


def test_connection_strings_are_secrets(source: PostgresSource, jobs: PostgresServer) -> None:
    with pytest.raises(SourceError) as raised:
        read(source, QUERY, connection_from_env="PG_JUNK")
    assert raised.value.kind == "InvalidCredential"
    assert "env PG_JUNK does not hold a libpq URL or key=value conninfo (not shown)" in str(
        raised.value
    )
    assert "not a connection string" not in str(raised.value)
    read(source, QUERY, **URL)
    assert redact(f"x {jobs.url} y {jobs.password} z") == "x *** y *** z"


def test_a_closed_port_is_unavailable(source: PostgresSource, jobs: PostgresServer) -> None:
    with pytest.raises(SourceError) as raised:
        read(source, QUERY, **by_host(jobs, port=closed_port()))
    assert (raised.value.kind, raised.value.code) == ("Unavailable", "ConnectionError")


def test_every_read_shares_one_watchdog_thread(
    source: PostgresSource, jobs: PostgresServer
) -> None:
    for _ in range(20):
        assert read(source, QUERY, **URL) == 23.0
    watchdogs = [t for t in threading.enumerate() if t.name == "pg-watchdog"]
    assert len(watchdogs) == 1  # not a timer thread per read


def test_a_frozen_server_times_out_within_the_budget_then_reconnects(
    source: PostgresSource, jobs: PostgresServer
) -> None:
    with TcpProxy(jobs.port()) as proxy:
        fields = by_host(jobs, port=proxy.port)
        assert read(source, QUERY, **fields) == 23.0
        proxy.freeze()
        began = time.monotonic()
        with retry.budget(1.0), pytest.raises(SourceError) as raised:
            source.read(postgresql_trigger(QUERY, 5.0, **fields))
        assert (
            time.monotonic() - began < 3.0 * WAIT_SCALE
        )  # bounded: a frozen server never hangs it
        assert raised.value.kind == "Timeout" and "no answer from the server" in str(raised.value)
        proxy.thaw()
        assert read(source, QUERY, **fields) == 23.0


def test_connections_are_reused_per_settings_and_closed(
    source: PostgresSource, jobs: PostgresServer
) -> None:
    for _ in range(5):
        read(source, QUERY, **URL)
        read(source, QUERY, **by_host(jobs))
    assert source.idle_connections() == 2
    with jobs.connect_admin() as admin:
        sessions = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'eventscaler'"
        ).fetchone()
    assert sessions == (2,)
    source.close()
    assert source.idle_connections() == 0


# --- convert, simulate, the example, lazy import ---------------------------------------------

SCALED_OBJECT = """
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {name: keda-trigger-auth-postgresql-secret, namespace: my-project}
spec:
  secretTargetRef:
  - {parameter: password, name: keda-postgresql-secret, key: postgresql_password}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: airflow-worker, namespace: my-project}
spec:
  scaleTargetRef: {name: airflow-worker}
  triggers:
  - type: postgresql
    metadata:
      userName: "kedaUser"
      host: postgres-svc.namespace.cluster.local
      port: "5432"
      dbName: test_db_name
      sslmode: disable
      query: "SELECT CEIL(COUNT(*) / 6) FROM task_instance WHERE state='running';"
      targetQueryValue: "1.1"
      activationTargetQueryValue: "5"
    authenticationRef: {name: keda-trigger-auth-postgresql-secret}
"""


def test_convert_maps_the_trigger_and_its_password() -> None:
    from eventscaler.convert import convert_text, render_rules

    conversion = convert_text(SCALED_OBJECT, "so.yaml")
    (trigger,) = conversion.rules[0]["triggers"]
    env_name = trigger["passwordFromEnv"]
    assert {k: v for k, v in trigger.items() if k != "passwordFromEnv"} == {
        "type": "postgresql", "userName": "kedaUser",
        "host": "postgres-svc.namespace.cluster.local",
        "port": 5432, "dbName": "test_db_name", "sslmode": "disable",
        "query": "SELECT CEIL(COUNT(*) / 6) FROM task_instance WHERE state='running';",
        "targetQueryValue": 1.1, "activationTargetQueryValue": 5,
    }  # fmt: skip
    notes = "\n".join(str(n) for n in conversion.notes)
    secret_ref = "{secretKeyRef: {name: keda-postgresql-secret, key: postgresql_password}}}"
    assert f"{{name: {env_name}, valueFrom: {secret_ref}" in notes
    loaded = parse_rules_text(render_rules(conversion, "so.yaml"), "converted.yaml")
    assert loaded.problems == ()
    assert loaded.rules[0].triggers[0].settings.query.endswith("state='running'")


def test_convert_maps_a_connection_from_the_trigger_authentication() -> None:
    from eventscaler.convert import convert_text, render_rules

    text = SCALED_OBJECT.replace("parameter: password", "parameter: connection")
    for line in (
        '      userName: "kedaUser"\n',
        "      host: postgres-svc.namespace.cluster.local\n",
        '      port: "5432"\n',
        "      dbName: test_db_name\n",
        "      sslmode: disable\n",
    ):
        text = text.replace(line, "")  # fmt: skip
    conversion = convert_text(text, "so.yaml")
    (trigger,) = conversion.rules[0]["triggers"]
    assert trigger["connectionFromEnv"] and "passwordFromEnv" not in trigger
    assert parse_rules_text(render_rules(conversion, "so.yaml"), "c.yaml").problems == ()


def test_simulate_replays_a_postgresql_rule(tmp_path: Path) -> None:
    trigger = {**BASE, "connectionFromEnv": "PG_URL"}
    rules = write_rules(tmp_path / "rules.yaml", [e2e_rule("jobs", "default", trigger)])
    result = run_command(["simulate", "--config", str(rules), "--scenario", "flood",
                          "--duration", "120"])  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "postgresql query" in result.stdout and "the connection from env PG_URL" in result.stdout


def test_the_commented_example_in_config_example_loads() -> None:
    result = parse_rules_text(commented_example("postgresql"), "config.example.yaml")
    assert result.problems == ()
    assert [t.type for t in result.rules[0].triggers] == ["postgresql"]


def test_psycopg_is_imported_only_when_a_rule_uses_postgresql() -> None:
    trigger = "{type: postgresql, connectionFromEnv: U, query: 'SELECT 1', targetQueryValue: 1}"
    assert sdk_loaded("psycopg", trigger) == (False, True)
