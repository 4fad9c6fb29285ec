"""PostgreSQL (Debian `postgresql` 15) on 127.0.0.1 for the postgresql source.

initdb refuses to run as root, so as root both initdb and the server run as the `postgres`
system user (Popen drops to it; the pid held is the postmaster's own). Over TCP every login
needs a password (scram-sha-256): the tests' user `.user` / `.password` owns the database
`.database`. The superuser `postgres` logs in through the Unix socket in the temp dir only
(trust), for setup. The data dir persists across restarts; fsync is off (throwaway data).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psycopg
from psycopg import sql

from tests.support.servers.process import (
    HOST,
    ServerNotInstalledError,
    ServerProcess,
    require_program,
    running_as_root,
    system_user,
)

PACKAGE = "the Debian package postgresql"
POSTGRESQL_LIB = Path("/usr/lib/postgresql")


def postgres_bin_dir() -> Path:
    """The newest installed server's bin dir (/usr/lib/postgresql/15/bin on Debian 12)."""
    versions = sorted(
        (p for p in POSTGRESQL_LIB.glob("*/bin") if (p / "postgres").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not versions:
        raise ServerNotInstalledError(
            f"no PostgreSQL server under {POSTGRESQL_LIB}: install {PACKAGE} "
            "(`.ci/install-servers` installs every test server)"
        )
    return versions[-1]


class PostgresServer(ServerProcess):
    name = "PostgreSQL"
    start_timeout_seconds = 60.0
    stop_signal = signal.SIGINT  # "fast" shutdown; SIGTERM would wait for clients to leave
    user = "eventscaler"
    password = "pg-user-secret-51d4"
    database = "eventscaler"

    def _check_installed(self) -> None:
        bin_dir = postgres_bin_dir()
        self._postgres = require_program(bin_dir / "postgres", PACKAGE, "postgres")
        self._initdb = require_program(bin_dir / "initdb", PACKAGE, "initdb")
        self._account = system_user("postgres", PACKAGE) if running_as_root() else None

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def socket_dir(self) -> Path:
        return self.directory / "socket"

    def _prepare(self) -> None:
        for path in (self.data_dir, self.socket_dir):
            path.mkdir(mode=0o700)
            if self._account is not None:
                os.chown(path, self._account.pw_uid, self._account.pw_gid)
        argv = [self._initdb, "-D", self.data_dir, "-U", "postgres", "--no-sync"]
        argv += ["--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8"]
        self._run(argv, "initdb", env=self._environment(), user=self._account)

    def _launch(self) -> None:
        argv = [self._postgres, "-D", self.data_dir, "-p", str(self.port()), "-k", self.socket_dir]
        for setting in (
            f"listen_addresses={HOST}",
            "fsync=off",
            "synchronous_commit=off",
            "full_page_writes=off",
        ):
            argv += ["-c", setting]
        self._spawn("postgres", argv, env=self._environment(), user=self._account)

    def _environment(self) -> dict[str, str]:
        home = self._account.pw_dir if self._account is not None else str(self.directory)
        return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": home}

    def _is_ready(self) -> bool:
        with self.connect_admin() as connection:
            return connection.execute("SELECT 1").fetchone() == (1,)

    def _bootstrap(self) -> None:
        with self.connect_admin() as connection:
            connection.autocommit = True
            connection.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(self.user), sql.Literal(self.password)
                )
            )
            connection.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(self.database), sql.Identifier(self.user)
                )
            )

    @property
    def host(self) -> str:
        return HOST

    @property
    def url(self) -> str:
        """A libpq URL with the password (what `connectionFromEnv` would hold)."""
        return (
            f"postgresql://{self.user}:{self.password}@{HOST}:{self.port()}/{self.database}"
            "?sslmode=disable"
        )

    def connect(self) -> psycopg.Connection:
        """The tests' user over TCP, to their database."""
        return psycopg.connect(self.url, connect_timeout=5)

    def connect_admin(self) -> psycopg.Connection:
        """The superuser through the Unix socket (trust), to the `postgres` database."""
        return psycopg.connect(
            host=str(self.socket_dir),
            port=self.port(),
            user="postgres",
            dbname="postgres",
            connect_timeout=5,
        )
