"""Redis (Debian `redis-server` 7) on 127.0.0.1 for the redis and redis-streams sources.

Two ways in, so tests can prove both kinds of wrong credentials: the ACL user `.username` /
`.password` (Redis 6+ AUTH username password), and the default user's `requirepass`
(`.default_password`, AUTH password alone). A client with neither gets NOAUTH. No persistence
(`save ''`, no AOF): a restart starts empty, as a crashed cache would.
"""

from __future__ import annotations

import redis

from tests.support.servers.process import HOST, ServerProcess, find_program, require_program

PACKAGE = "the Debian package redis-server"


class RedisServer(ServerProcess):
    name = "Redis"
    start_timeout_seconds = 30.0
    username = "eventscaler"
    password = "redis-user-secret-3f9a"
    default_password = "redis-default-secret-7c21"

    def _check_installed(self) -> None:
        self._binary = require_program(find_program("redis-server"), PACKAGE, "redis-server")

    def _prepare(self) -> None:
        config = self.directory / "redis.conf"
        config.write_text(
            f"bind {HOST}\n"
            f"port {self.port()}\n"
            f"dir {self.directory}\n"
            "save ''\n"
            "appendonly no\n"
            "protected-mode yes\n"
            f"requirepass {self.default_password}\n"
            f"user {self.username} on >{self.password} ~* &* +@all\n"
        )

    def _launch(self) -> None:
        self._spawn("redis", [self._binary, self.directory / "redis.conf"])

    def _is_ready(self) -> bool:
        with self.client() as client:
            return bool(client.ping())

    @property
    def host(self) -> str:
        return HOST

    @property
    def address(self) -> str:
        """`host:port`, KEDA's `address` field."""
        return f"{HOST}:{self.port()}"

    def url(self, database: int = 0) -> str:
        return f"redis://{self.username}:{self.password}@{HOST}:{self.port()}/{database}"

    def client(self, database: int = 0) -> redis.Redis:
        """A redis-py client logged in as the ACL user (close it, or use it in `with`)."""
        return redis.Redis(
            host=HOST,
            port=self.port(),
            db=database,
            username=self.username,
            password=self.password,
            socket_timeout=5,
            decode_responses=True,
        )
