"""NATS with JetStream (Debian `nats-server` 2.9) on 127.0.0.1 for the nats-jetstream source.

The source reads only the monitoring endpoint (`/jsz`, plain HTTP, no authentication), so the
client port has no user either. JetStream stores to the temp dir: streams, consumers and
messages survive a restart. The helpers use nats-py (tests only) to make streams and consumers
and to publish.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats
import requests
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from tests.support.servers.process import HOST, ServerProcess, find_program, require_program

PACKAGE = "the Debian package nats-server"
T = TypeVar("T")


class NatsServer(ServerProcess):
    name = "NATS"
    start_timeout_seconds = 30.0

    def _check_installed(self) -> None:
        self._binary = require_program(find_program("nats-server"), PACKAGE, "nats-server")

    def _prepare(self) -> None:
        (self.directory / "jetstream").mkdir()

    def _launch(self) -> None:
        argv = [self._binary, "-a", HOST, "-p", str(self.port()), "-m", str(self.port("http"))]
        argv += ["-js", "-sd", str(self.directory / "jetstream")]
        self._spawn("nats-server", argv)

    def _is_ready(self) -> bool:
        # /healthz answers 200 only once JetStream has loaded its store.
        response = requests.get(f"{self.monitoring_url}/healthz", timeout=2)
        return response.status_code == 200

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port()}"

    @property
    def monitoring_endpoint(self) -> str:
        """`host:port` of the monitoring server, KEDA's `natsServerMonitoringEndpoint`."""
        return f"{HOST}:{self.port('http')}"

    @property
    def monitoring_url(self) -> str:
        return f"http://{self.monitoring_endpoint}"

    def jsz(self, **params: str) -> dict[str, Any]:
        """`GET /jsz` with query parameters, e.g. `jsz(consumers="true")`."""
        response = requests.get(f"{self.monitoring_url}/jsz", params=params, timeout=5)
        response.raise_for_status()
        return response.json()

    def add_stream(self, stream: str, subjects: list[str]) -> None:
        self._jetstream(lambda js: js.add_stream(name=stream, subjects=subjects))

    def add_consumer(self, stream: str, durable: str) -> None:
        """A durable pull consumer with explicit acks (num_pending and num_ack_pending count)."""
        config = ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT)
        self._jetstream(lambda js: js.add_consumer(stream, config))

    def publish(self, subject: str, count: int) -> None:
        async def publish_all(js: JetStreamContext) -> None:
            for i in range(count):
                await js.publish(subject, f"message-{i}".encode())

        self._jetstream(publish_all)

    def _jetstream(self, action: Callable[[JetStreamContext], Awaitable[T]]) -> T:
        async def run() -> T:
            connection = await nats.connect(self.url, connect_timeout=5, max_reconnect_attempts=0)
            try:
                return await action(connection.jetstream())
            finally:
                await connection.close()

        return asyncio.run(run())
