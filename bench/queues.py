"""Azure Storage Queue side of the benchmark: set-up, floods, and the tuned bare client.

The bare client is what the daemon's queue read is compared with: the SDK's own
`get_queue_properties`, tuned as a careful user would tune it (and as the daemon does): no
per-call scan of the environment by `requests` (proxies, CA bundle, ~/.netrc), one pool of
`pool_size` HTTP connections, no retries. Nothing else: no Kubernetes call, no decision, no
scheduler.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from azure.core.exceptions import ResourceExistsError
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.queue import LinearRetry, QueueClient, QueueServiceClient
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

CALL_TIMEOUT = 10.0  # seconds to connect, and to wait for an answer


class _TunedTransport(RequestsTransport):
    """The SDK's transport with `pool_size` pooled connections, no environment scan per call
    (the emulator is on 127.0.0.1: no proxy to look up), and no urllib3 retries."""

    def __init__(self, pool_size: int, **kwargs: Any) -> None:
        super().__init__(use_env_settings=False, **kwargs)
        self._pool_size = pool_size

    def _init_session(self, session: requests.Session) -> None:
        super()._init_session(session)
        no_retries = Retry(total=False, redirect=False, raise_on_status=False)
        adapter = HTTPAdapter(pool_maxsize=self._pool_size, max_retries=no_retries)
        for prefix in self._protocols:
            session.mount(prefix, adapter)


class _NoRetry(LinearRetry):
    """Never retry (the storage policy reads retry_total=0 as no limit)."""

    def increment(self, *args: Any, **kwargs: Any) -> bool:
        return False


def tuned_service(connection_string: str, pool_size: int, retries: int = 0) -> QueueServiceClient:
    """A QueueServiceClient tuned as the module doc says; its HTTP session already open."""
    policy = _NoRetry() if not retries else LinearRetry(backoff=0.2, retry_total=retries)
    service = QueueServiceClient.from_connection_string(
        connection_string,
        transport=_TunedTransport(
            pool_size, connection_timeout=CALL_TIMEOUT, read_timeout=CALL_TIMEOUT
        ),
        retry_policy=policy,
    )
    service.__enter__()
    return service


class QueueBench:
    """One storage account (Azurite): creates queues, floods them, one message each to many."""

    def __init__(self, connection_string: str, workers: int) -> None:
        self.workers = workers
        # A few quick retries (Azurite resets a keep-alive connection idle for a few seconds),
        # not the SDK's backoff of 15 s and more: once Azurite is gone (Ctrl-C reaches it too)
        # every call must fail soon.
        self._service = tuned_service(connection_string, max(workers, 8), retries=2)
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

    def one_message_each(self, names: Sequence[str]) -> tuple[float, float]:
        """One message into each queue, `workers` at a time; (time.time() before the first
        send, time.time() once the last one was accepted)."""
        for name in names:
            self.client(name)
        started = time.time()
        with self._pool() as pool:
            list(pool.map(lambda n: self.client(n).send_message("mass-event"), names))
        return started, time.time()


def bare_reader(connection_string: str, pool_size: int) -> tuple[Any, Any]:
    """(read(name), close()) of the tuned bare client: one `get_queue_properties` per read."""
    service = tuned_service(connection_string, pool_size)
    clients: dict[str, QueueClient] = {}

    def read(name: str) -> None:
        client = clients.get(name)
        if client is None:
            client = clients[name] = service.get_queue_client(name)
        client.get_queue_properties()

    return read, service.close
