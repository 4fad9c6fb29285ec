"""End to end, the real daemon process against a real PostgreSQL 15 and a real MariaDB 10.11 on
127.0.0.1 and the Kubernetes API test server (or E2E_KUBECONFIG's cluster), for the `postgresql`
and `mysql` sources (each test runs for both):

- 43 ready rows (target 5 per replica): the Deployment goes 0 -> 9 in one write (ceil(43 / 5),
  KEDA's arithmetic); the rows done, back to 0 no sooner than the cooldown;
- the server stopped mid-run: the rule holds its replicas through more failed ticks than the
  cooldown, each error names the rule and the query; started again, the same daemon follows the
  rows again;
- a wrong password: a clear per-rule Unauthorized error naming the env var, the replicas held,
  while the right one scales (that neither shows anywhere: the sweep, tests/test_secrets.py);
- `validate` names a misspelt field.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.conftest import write_rules
from tests.support.cluster import Cluster, wait_for
from tests.support.source_e2e import (
    COOLDOWN,
    POLL,
    health,
    rule_for,
    source_daemon,
    status_row,
    wait_failing_past_the_cooldown,
)
from tests.support.source_tests import validate_error

pytestmark = pytest.mark.e2e

PER_REPLICA = 5
SECRET_ENV, PASSWORD_ENV, WRONG_ENV = "E2E_SQL_URL", "E2E_SQL_PASSWORD", "E2E_SQL_WRONG"
WRONG_PASSWORD = "wrong-sql-password-6e1f0c"


class Database(Protocol):
    type: str
    target_key: str

    def trigger(self, table: str, **fields: Any) -> dict[str, Any]: ...

    def by_host(self, table: str, password_env: str) -> dict[str, Any]: ...

    def env(self) -> dict[str, str]: ...

    def set_rows(self, table: str, ready: int) -> None: ...

    def stopped(self) -> Any: ...


class Postgres:
    type, target_key = "postgresql", "targetQueryValue"

    def __init__(self, server: Any) -> None:
        self.server = server

    def trigger(self, table: str, **fields: Any) -> dict[str, Any]:
        query = f"SELECT count(*) FROM {table} WHERE ready"
        return {"type": self.type, "query": query, self.target_key: PER_REPLICA,
                "connectionFromEnv": SECRET_ENV, **fields}  # fmt: skip

    def by_host(self, table: str, password_env: str) -> dict[str, Any]:
        trigger = self.trigger(table, host="127.0.0.1", port=self.server.port(),
                               userName=self.server.user, dbName=self.server.database,
                               sslmode="disable", passwordFromEnv=password_env)  # fmt: skip
        del trigger["connectionFromEnv"]
        return trigger

    def env(self) -> dict[str, str]:
        return {SECRET_ENV: self.server.url, PASSWORD_ENV: self.server.password,
                WRONG_ENV: WRONG_PASSWORD}  # fmt: skip

    def set_rows(self, table: str, ready: int) -> None:
        with self.server.connect() as connection:
            connection.execute(f"CREATE TABLE IF NOT EXISTS {table} (ready boolean)")
            connection.execute(f"DELETE FROM {table}")
            connection.execute(
                f"INSERT INTO {table} SELECT true FROM generate_series(1, %s)", (ready,)
            )

    def stopped(self) -> Any:
        return self.server.stopped()


class MariaDb(Postgres):
    type, target_key = "mysql", "queryValue"

    def trigger(self, table: str, **fields: Any) -> dict[str, Any]:
        trigger = super().trigger(table, **fields)
        trigger["connectionStringFromEnv"] = trigger.pop("connectionFromEnv")
        return trigger

    def by_host(self, table: str, password_env: str) -> dict[str, Any]:
        trigger = self.trigger(table, host="127.0.0.1", port=self.server.port(),
                               username=self.server.user, dbName=self.server.database,
                               passwordFromEnv=password_env)  # fmt: skip
        del trigger["connectionStringFromEnv"]
        return trigger

    def set_rows(self, table: str, ready: int) -> None:
        with self.server.connect() as connection, connection.cursor() as cursor:
            cursor.execute(f"CREATE TABLE IF NOT EXISTS {table} (ready boolean)")
            cursor.execute(f"DELETE FROM {table}")
            cursor.executemany(f"INSERT INTO {table} VALUES (%s)", [(True,)] * ready)
            connection.commit()


@pytest.fixture(params=["postgresql", "mysql"])
def database(request: pytest.FixtureRequest) -> Database:
    if request.param == "postgresql":
        return Postgres(request.getfixturevalue("postgres_server"))
    return MariaDb(request.getfixturevalue("mariadb_server"))


def table_for(unique: str) -> str:
    return unique.replace("-", "_")


def test_rows_up_scale_out_in_one_poll_and_rows_done_back_to_zero_after_the_cooldown(
    cluster: Cluster, database: Database, unique: str, tmp_path: Path
) -> None:
    table = table_for(unique)
    database.set_rows(table, 0)
    cluster.create_deployment(unique, replicas=0)
    rules = write_rules(
        tmp_path / "rules.yaml", [rule_for(unique, cluster.namespace, database.trigger(table))]
    )
    target = f"{cluster.namespace}/{unique}"
    with source_daemon(cluster, rules, database.env()) as proc:
        proc.wait_for_output(rf"{target}: rule {unique}: 0 -> 0")
        database.set_rows(table, 43)
        wait_for(lambda: cluster.replicas(unique) == 9, 15, what="0 -> 9")
        proc.assert_scale_lines([(target, 0, 9)])  # one write: ceil(43 / 5)
        database.set_rows(table, 0)
        lowered = time.monotonic()
        wait_for(lambda: cluster.replicas(unique) == 0, COOLDOWN + 15, what="9 -> 0")
        assert time.monotonic() - lowered >= COOLDOWN - POLL
        proc.assert_scale_lines([(target, 0, 9), (target, 9, 0)])
        assert proc.stop() == 0


def test_server_stopped_holds_the_replicas_reports_and_recovers(
    cluster: Cluster, database: Database, unique: str, tmp_path: Path
) -> None:
    table = table_for(unique)
    database.set_rows(table, 18)
    cluster.create_deployment(unique, replicas=0)
    rules = write_rules(
        tmp_path / "rules.yaml", [rule_for(unique, cluster.namespace, database.trigger(table))]
    )
    error = rf"rule {unique}: source read failed: .*{database.type} query 'SELECT count\(\*\) " \
            rf"FROM {table} WHERE ready' on the connection (string )?from env {SECRET_ENV}: " \
            r"(Unavailable|ConnectionError|Timeout)"  # fmt: skip
    with source_daemon(cluster, rules, database.env()) as proc:
        wait_for(lambda: cluster.replicas(unique) == 4, 15, what="0 -> 4")
        with database.stopped():
            wait_failing_past_the_cooldown(proc, error)
            assert cluster.replicas(unique) == 4
        database.set_rows(table, 31)
        wait_for(lambda: cluster.replicas(unique) == 7, 20, what="4 -> 7 once it is back")
        assert proc.stop() == 0


def test_wrong_password_is_a_clear_per_rule_error(
    cluster: Cluster, database: Database, unique: str, tmp_path: Path
) -> None:
    table = table_for(unique)
    database.set_rows(table, 12)
    good, wrong = f"{unique}-good", f"{unique}-wrong"
    for name in (good, wrong):
        cluster.create_deployment(name, replicas=1)
    rules = write_rules(
        tmp_path / "rules.yaml",
        [rule_for(good, cluster.namespace, database.by_host(table, PASSWORD_ENV)),
         rule_for(wrong, cluster.namespace, database.by_host(table, WRONG_ENV))],
    )  # fmt: skip
    with source_daemon(cluster, rules, database.env()) as proc:
        wait_for(lambda: cluster.replicas(good) == 3, 15, what="the good rule reads: 1 -> 3")
        proc.wait_for_output(
            rf"rule {wrong}: source read failed: .*{database.type} query .* \(password from env "
            rf"{WRONG_ENV}\): Unauthorized|rule {wrong}: .*AuthenticationFailed"
        )
        metrics, status = health(proc)
        assert proc.stop() == 0
    assert cluster.replicas(wrong) == 1
    assert "AuthenticationFailed" in status_row(status, wrong)["error"]
    assert 'kind="Unauthorized"' in metrics


def test_validate_names_a_misspelt_field(database: Database, tmp_path: Path) -> None:
    trigger = database.trigger("jobs")
    trigger["querry"] = trigger.pop("query")
    stderr = validate_error(tmp_path, trigger)
    assert "rules.yaml: rules[0] (orders).triggers[0].querry: unknown field (did you mean " \
           "'query'?)" in stderr  # fmt: skip
