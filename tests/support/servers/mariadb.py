"""MariaDB (Debian `mariadb-server` 10.11) on 127.0.0.1 for the mysql source.

`mariadb-install-db` initialises a data dir in the temp dir, then `mariadbd` runs in the
foreground (the pid held is the server's own; as root it drops to the `mysql` user itself).
Both get `--no-defaults` so nothing from /etc/mysql (its socket, its log paths) applies. The
tests' user `.user` / `.password` (any host) owns the database `.database`; root logs in
through the Unix socket only, for setup. The data dir persists across restarts.
"""

from __future__ import annotations

import os
from pathlib import Path

import pymysql

from tests.support.servers.process import (
    HOST,
    ServerProcess,
    find_program,
    require_program,
    running_as_root,
    system_user,
)

PACKAGE = "the Debian package mariadb-server"


class MariaDbServer(ServerProcess):
    name = "MariaDB"
    start_timeout_seconds = 60.0
    user = "eventscaler"
    password = "mysql-user-secret-9e07"
    database = "eventscaler"

    def _check_installed(self) -> None:
        self._server = require_program(find_program("mariadbd"), PACKAGE, "mariadbd")
        self._install_db = require_program(
            find_program("mariadb-install-db"), PACKAGE, "mariadb-install-db"
        )
        self._account = system_user("mysql", PACKAGE) if running_as_root() else None

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def socket_path(self) -> Path:
        return self.directory / "run" / "mysqld.sock"

    def _user_options(self) -> list[str]:
        return [f"--user={self._account.pw_name}"] if self._account is not None else []

    def _prepare(self) -> None:
        for path in (self.data_dir, self.socket_path.parent):
            path.mkdir(mode=0o750)
            if self._account is not None:
                os.chown(path, self._account.pw_uid, self._account.pw_gid)
        argv = [self._install_db, "--no-defaults", *self._user_options()]
        argv += [f"--datadir={self.data_dir}", "--auth-root-authentication-method=normal"]
        argv += ["--skip-test-db", "--skip-name-resolve"]
        self._run(argv, "install-db")

    def _launch(self) -> None:
        argv = [self._server, "--no-defaults", *self._user_options()]
        argv += [f"--datadir={self.data_dir}", f"--socket={self.socket_path}"]
        argv += [f"--bind-address={HOST}", f"--port={self.port()}"]
        argv += [f"--pid-file={self.socket_path.parent / 'mariadbd.pid'}", "--skip-log-bin"]
        argv += ["--skip-name-resolve", "--innodb-flush-log-at-trx-commit=0"]
        argv += ["--innodb-buffer-pool-size=64M"]
        self._spawn("mariadbd", argv)

    def _is_ready(self) -> bool:
        with self.connect_admin() as connection, connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)

    def _bootstrap(self) -> None:
        with self.connect_admin() as connection, connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{self.database}`")
            cursor.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (self.user, self.password))
            cursor.execute(f"GRANT ALL ON `{self.database}`.* TO '{self.user}'@'%'")
            connection.commit()

    @property
    def host(self) -> str:
        return HOST

    @property
    def url(self) -> str:
        """`user:password@tcp(host:port)/db`, the Go DSN that KEDA's `connectionString` holds."""
        return f"{self.user}:{self.password}@tcp({HOST}:{self.port()})/{self.database}"

    def connect(self) -> pymysql.connections.Connection:
        """The tests' user over TCP, to their database."""
        return pymysql.connect(
            host=HOST,
            port=self.port(),
            user=self.user,
            password=self.password,
            database=self.database,
            connect_timeout=5,
        )

    def connect_admin(self) -> pymysql.connections.Connection:
        """root through the Unix socket (no password there), for setup."""
        return pymysql.connect(unix_socket=str(self.socket_path), user="root", connect_timeout=5)
