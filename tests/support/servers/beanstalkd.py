"""Beanstalkd (Debian `beanstalkd` 1.12) on 127.0.0.1 for the beanstalkd source.

Beanstalkd has no authentication. Jobs go to a binlog in the temp dir, so a restart keeps them
(ready, delayed and buried jobs come back; reserved ones come back ready).
"""

from __future__ import annotations

import greenstalk

from tests.support.servers.process import HOST, ServerProcess, find_program, require_program

PACKAGE = "the Debian package beanstalkd"


class BeanstalkdServer(ServerProcess):
    name = "Beanstalkd"
    start_timeout_seconds = 30.0

    def _check_installed(self) -> None:
        self._binary = require_program(find_program("beanstalkd"), PACKAGE, "beanstalkd")

    def _prepare(self) -> None:
        (self.directory / "binlog").mkdir()

    def _launch(self) -> None:
        argv = [self._binary, "-l", HOST, "-p", str(self.port()), "-b", self.directory / "binlog"]
        self._spawn("beanstalkd", argv)

    def _is_ready(self) -> bool:
        with self.client() as client:
            return "current-jobs-ready" in client.stats()

    @property
    def host(self) -> str:
        return HOST

    @property
    def server(self) -> str:
        """`host:port`, KEDA's `server` field."""
        return f"{HOST}:{self.port()}"

    def client(self, tube: str = "default") -> greenstalk.Client:
        """A client that uses and watches `tube` (close it, or use it in `with`)."""
        return greenstalk.Client((HOST, self.port()), use=tube, watch=tube)
