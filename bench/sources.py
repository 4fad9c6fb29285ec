"""Event sources as the benchmark drives them: one class per source type, one registry.

Each source the daemon can read gets a `BenchSource` here: its server on 127.0.0.1, N objects
(queues, streams...), the trigger a rule names, floods, and the bare SDK call the daemon's read
is compared with (`bare_reader`, run by bench/bare.py in a child process of its own, so its CPU
is its own). Adding a source's rows to `make bench`: one class below and one line in
BENCH_SOURCES; `--sources` then measures it (CPU ms per rule-tick against its bare call, and its
share of the all-sources run).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Protocol

from bench.queues import QueueBench, bare_reader
from tests.support.azurite import Azurite

Reader = tuple[Callable[[str], None], Callable[[], None]]  # read(name), close()


class BenchSource(Protocol):
    """One source type as the benchmark drives it."""

    type: ClassVar[str]  # the rules' trigger type (KEDA's)

    def start(self, stack: contextlib.ExitStack, workers: int) -> None:
        """Start its server(s) on 127.0.0.1; `stack` stops them."""

    def pids(self) -> dict[str, int]:
        """Its server processes by a short name, for CPU accounting."""

    def env(self) -> dict[str, str]:
        """What the daemon's environment needs (a connection string...)."""

    def trigger(self, name: str) -> dict[str, Any]:
        """The trigger of a rule on object `name` (target 5 per replica)."""

    def create(self, names: Sequence[str]) -> None:
        """Create the objects (queues, streams...), empty."""

    def flood(self, name: str, messages: int) -> float:
        """Add `messages` to `name`; return time.time() just before the first one."""

    def one_message_each(self, names: Sequence[str]) -> tuple[float, float]:
        """One message into each object; (time before the first, time after the last)."""

    def bare_spec(self) -> dict[str, str]:
        """What `bare_reader` needs to reach the server (handed over in the environment)."""

    @staticmethod
    def bare_reader(spec: Mapping[str, str], pool_size: int) -> Reader:
        """In the bare child: the tuned SDK client's read of one object, and its close."""


CONNECTION_ENV = "AZURE_STORAGE_CONNECTION_STRING"


class AzureQueueBench:
    """azure-queue on Azurite: one queue per rule, read with `get_queue_properties`."""

    type: ClassVar[str] = "azure-queue"

    def __init__(self) -> None:
        self._azurite: Azurite | None = None
        self._queues: QueueBench | None = None

    def start(self, stack: contextlib.ExitStack, workers: int) -> None:
        self._azurite = stack.enter_context(Azurite())
        self._queues = QueueBench(self._azurite.connection_string, workers)
        stack.callback(self._queues.close)

    @property
    def queues(self) -> QueueBench:
        assert self._queues is not None, "not started"
        return self._queues

    def pids(self) -> dict[str, int]:
        return {"azurite": (self._azurite.pid if self._azurite else None) or 0}

    def env(self) -> dict[str, str]:
        assert self._azurite is not None
        return {CONNECTION_ENV: self._azurite.connection_string}

    def trigger(self, name: str) -> dict[str, Any]:
        return {
            "type": self.type,
            "queueName": name,
            "queueLength": 5,
            "connectionFromEnv": CONNECTION_ENV,
        }

    def create(self, names: Sequence[str]) -> None:
        self.queues.create_queues(names)

    def flood(self, name: str, messages: int) -> float:
        return self.queues.flood(name, messages)

    def one_message_each(self, names: Sequence[str]) -> tuple[float, float]:
        return self.queues.one_message_each(names)

    def bare_spec(self) -> dict[str, str]:
        return self.env()

    @staticmethod
    def bare_reader(spec: Mapping[str, str], pool_size: int) -> Reader:
        return bare_reader(spec[CONNECTION_ENV], pool_size)


# KEDA trigger type -> its bench class. Add the other sources' classes here as they land.
BENCH_SOURCES: dict[str, type[BenchSource]] = {
    AzureQueueBench.type: AzureQueueBench,
}
