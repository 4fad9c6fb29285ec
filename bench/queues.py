"""Azure Storage Queue side of the benchmark: set-up, floods, and the bare-query baseline.

The baseline is what the daemon's tick is compared with: the same number of bare
`get_queue_properties` calls, against the same Azurite, with the same concurrency (a pool of
`workers` threads sharing one HTTP connection pool of that size, as the daemon's reads do), and
nothing else: no Kubernetes call, no decision, no scheduler.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import requests
from azure.core.exceptions import ResourceExistsError
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.queue import QueueClient, QueueServiceClient
from requests.adapters import HTTPAdapter

CALL_TIMEOUT = 10.0  # seconds to connect, and to wait for an answer


class _PooledTransport(RequestsTransport):
    """The SDK's transport with `pool_size` pooled connections (the daemon configures the same)."""

    def __init__(self, pool_size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pool_size = pool_size

    def _init_session(self, session: requests.Session) -> None:
        super()._init_session(session)
        adapter = HTTPAdapter(pool_maxsize=self._pool_size)
        for prefix in self._protocols:
            session.mount(prefix, adapter)


@dataclass
class Bare:
    """Timings of bare concurrent reads, in seconds."""

    rounds: list[float]  # each: all queues read once, `workers` at a time
    single: float  # median latency of one read on its own
    cpu_per_call: float  # CPU seconds this (client) process spent per concurrent call

    @property
    def median(self) -> float:
        return statistics.median(self.rounds)


class QueueBench:
    """One storage account (Azurite): creates queues, floods and clears them, times bare reads."""

    def __init__(self, connection_string: str, workers: int) -> None:
        self.workers = workers
        # No retries: a bare read is timed as one call, and once Azurite is gone (Ctrl-C reaches
        # it too) every call must fail at once, not after the SDK's backoff of 15 s and more.
        self._service = QueueServiceClient.from_connection_string(
            connection_string,
            transport=_PooledTransport(
                max(workers, 8), connection_timeout=CALL_TIMEOUT, read_timeout=CALL_TIMEOUT
            ),
            retry_total=0,
        )
        self._service.__enter__()
        self._clients: dict[str, QueueClient] = {}

    def close(self) -> None:
        self._service.close()

    def client(self, name: str) -> QueueClient:
        client = self._clients.get(name)
        if client is None:
            client = self._clients[name] = self._service.get_queue_client(name)
        return client

    @contextlib.contextmanager
    def _pool(self) -> Iterator[ThreadPoolExecutor]:
        """A thread pool whose queued calls are dropped, not run, when the caller is interrupted."""
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="bench-queue")
        try:
            yield pool
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)

    def create_queues(self, names: Sequence[str]) -> None:
        def create(name: str) -> None:
            with contextlib.suppress(ResourceExistsError):
                self.client(name).create_queue()

        for name in names:  # fill the client cache single-threaded
            self.client(name)
        with self._pool() as pool:
            list(pool.map(create, names))

    def flood(self, name: str, messages: int) -> float:
        """Send `messages` messages; return time.time() just before the first one was sent."""
        client = self.client(name)
        landed = time.time()
        for i in range(messages):
            client.send_message(f"flood-{i}")
        return landed

    def clear(self, name: str) -> None:
        self.client(name).clear_messages()

    def measure_bare(self, names: Sequence[str], rounds: int) -> Bare:
        """Read every queue's properties once per round, `workers` calls at a time."""
        clients = [self.client(name) for name in names]
        single = []
        for client in clients[: min(len(clients), 20)]:
            start = time.perf_counter()
            client.get_queue_properties()
            single.append(time.perf_counter() - start)
        timings = []
        with self._pool() as pool:
            list(pool.map(lambda c: c.get_queue_properties(), clients))  # warm every connection
            cpu = time.process_time()
            for _ in range(rounds):
                start = time.perf_counter()
                list(pool.map(lambda c: c.get_queue_properties(), clients))
                timings.append(time.perf_counter() - start)
            cpu = time.process_time() - cpu
        return Bare(timings, statistics.median(single), cpu / (rounds * len(clients)))
