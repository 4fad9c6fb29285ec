"""End to end, the real daemon process against real redis-server and nats-server on 127.0.0.1
and the Kubernetes API test server (or E2E_KUBECONFIG's cluster), for the `redis`,
`redis-streams` (lagCount) and `nats-jetstream` sources:

- a flood scales 0 -> N in one write with KEDA's arithmetic (ceil(value / target)), and the
  drained backlog brings the workload back to 0 once it stayed idle for the cooldown;
- the server stopped mid-run: the rule holds its replicas well past the cooldown (never a
  scale-down on a reading it did not get), logs the error naming the rule, the trigger and the
  source object; started again, the same daemon reads it again and scales on the new backlog;
- `validate` names a misspelt field of each source, with file, rule and trigger.
(Wrong credentials and the secrets sweep: tests/test_secrets.py.)
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig

from tests.conftest import write_rules
from tests.support.cluster import Cluster, wait_for
from tests.support.daemon_process import run_command
from tests.support.servers.nats import NatsServer
from tests.support.servers.redis import RedisServer
from tests.support.source_e2e import source_daemon
from tests.test_e2e import SEEN_SOON

pytestmark = pytest.mark.e2e

POLL = 0.5
COOLDOWN = 3.0
PASSWORD_ENV, USER_ENV = "E2E_REDIS_PASSWORD", "E2E_REDIS_USER"


class Backend(Protocol):
    """One source's side of the tests: its trigger, its environment, its backlog."""

    type: str
    per_replica: int

    def trigger(self, key: str) -> dict[str, Any]: ...

    def env(self) -> dict[str, str]: ...

    def prepare(self, key: str) -> None: ...

    def flood(self, key: str, count: int) -> None: ...

    def drain(self, key: str) -> None: ...

    def source_words(self, key: str) -> str: ...


class RedisList:
    type = "redis"
    per_replica = 5

    def __init__(self, server: RedisServer) -> None:
        self.server = server

    def trigger(self, key: str) -> dict[str, Any]:
        return {
            "type": "redis",
            "address": self.server.address,
            "listName": key,
            "listLength": self.per_replica,
            "usernameFromEnv": USER_ENV,
            "passwordFromEnv": PASSWORD_ENV,
        }

    def env(self) -> dict[str, str]:
        return {USER_ENV: self.server.username, PASSWORD_ENV: self.server.password}

    def prepare(self, key: str) -> None:
        pass  # a list that does not exist is empty

    def flood(self, key: str, count: int) -> None:
        with self.server.client() as client:
            client.rpush(key, *range(count))

    def drain(self, key: str) -> None:
        with self.server.client() as client:
            client.delete(key)  # the workers popped everything

    def source_words(self, key: str) -> str:
        return f"redis list '{key}'"


class RedisStreamLag(RedisList):
    type = "redis-streams"
    per_replica = 10

    def trigger(self, key: str) -> dict[str, Any]:
        return {
            "type": "redis-streams",
            "address": self.server.address,
            "stream": key,
            "consumerGroup": "workers",
            "lagCount": self.per_replica,
            "usernameFromEnv": USER_ENV,
            "passwordFromEnv": PASSWORD_ENV,
        }

    def prepare(self, key: str) -> None:
        with self.server.client() as client:
            client.xgroup_create(key, "workers", id="0", mkstream=True)

    def flood(self, key: str, count: int) -> None:
        with self.server.client() as client, client.pipeline() as pipe:
            for i in range(count):
                pipe.xadd(key, {"n": i})
            pipe.execute()

    def drain(self, key: str) -> None:
        with self.server.client() as client:
            for _, entries in client.xreadgroup("workers", "w", {key: ">"}):
                client.xack(key, "workers", *[entry_id for entry_id, _ in entries])

    def source_words(self, key: str) -> str:
        return f"redis stream '{key}' group 'workers'"


class NatsConsumer:
    type = "nats-jetstream"
    per_replica = 10

    def __init__(self, server: NatsServer) -> None:
        self.server = server

    def trigger(self, key: str) -> dict[str, Any]:
        return {
            "type": "nats-jetstream",
            "natsServerMonitoringEndpoint": self.server.monitoring_endpoint,
            "stream": key,
            "consumer": "workers",
            "lagThreshold": self.per_replica,
        }

    def env(self) -> dict[str, str]:
        return {}

    def prepare(self, key: str) -> None:
        self.server.add_stream(key, [f"{key}.*"])
        config = ConsumerConfig(durable_name="workers", ack_policy=AckPolicy.EXPLICIT)
        self._run(lambda js: js.add_consumer(key, config))

    def flood(self, key: str, count: int) -> None:
        self.server.publish(f"{key}.new", count)

    def drain(self, key: str) -> None:
        """The workers take and acknowledge every message; returns once the last is acked."""

        async def work(js: Any) -> None:
            subscription = await js.pull_subscribe(f"{key}.*", durable="workers", stream=key)
            while pending := (await js.consumer_info(key, "workers")).num_pending:
                for message in await subscription.fetch(min(pending, 100), timeout=5):
                    await message.ack_sync()

        self._run(work)

    def source_words(self, key: str) -> str:
        return f"nats-jetstream stream '{key}' consumer 'workers'"

    def _run(self, action: Any) -> Any:
        async def run() -> Any:
            connection = await nats.connect(self.server.url, max_reconnect_attempts=0)
            try:
                return await action(connection.jetstream())
            finally:
                await connection.close()

        return asyncio.run(run())


BACKENDS = ["redis", "redis-streams", "nats-jetstream"]


class PersistentRedisServer(RedisServer):
    """Saves on SIGTERM and loads on start, so a restart keeps the backlog (as NATS does)."""

    name = "Redis persistent"

    def _prepare(self) -> None:
        super()._prepare()
        config = self.directory / "redis.conf"
        config.write_text(config.read_text().replace("save ''\n", "save 3600 1\n"))


def backend_for(kind: str, request: pytest.FixtureRequest) -> Backend:
    if kind == "nats-jetstream":
        return NatsConsumer(request.getfixturevalue("nats_server"))
    server = request.getfixturevalue("redis_server")
    return RedisStreamLag(server) if kind == "redis-streams" else RedisList(server)


def rule(name: str, namespace: str, trigger: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "deployment": name,
        "minReplicas": 0,
        "maxReplicas": 20,
        "pollingInterval": POLL,
        "cooldownPeriod": COOLDOWN,
        "triggers": [trigger],
        **fields,
    }


def key_for(unique: str) -> str:
    return f"{unique}-{uuid.uuid4().hex[:4]}"


@pytest.mark.parametrize("kind", BACKENDS)
def test_flood_scales_zero_to_n_in_one_step_and_drain_back_to_zero(
    cluster: Cluster, unique: str, tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    backend = backend_for(kind, request)
    key = key_for(unique)
    backend.prepare(key)
    cluster.create_deployment(unique, replicas=0)
    rules = write_rules(
        tmp_path / "rules.yaml", [rule(unique, cluster.namespace, backend.trigger(key))]
    )
    target = f"{cluster.namespace}/{unique}"
    count = 7 * backend.per_replica + 3  # ceil((7 x target + 3) / target) = 8
    # A pause set and removed by hand is seen at the target's next read: within a second here.
    with source_daemon(cluster, rules, backend.env(), *SEEN_SOON) as proc:
        proc.wait_for_output(rf"{target}: rule {unique}: 0 -> 0")  # it reads, idle at zero
        # NATS takes the messages one by one, which may take longer than a poll: the rule is
        # paused while they land, so the tick after the pause sees the whole flood at once.
        cluster.annotate(unique, "eventscaler.io/paused", "true")
        proc.wait_for_output(rf"{target}: rule {unique}: 0 -> 0 \[paused\]")
        backend.flood(key, count)
        cluster.annotate(unique, "eventscaler.io/paused", None)
        wait_for(lambda: cluster.replicas(unique) == 8, 15, what="0 -> 8")
        proc.wait_for_output(rf"{target}: scaled 0 -> 8")  # logged once the write returned
        proc.assert_scale_lines([(target, 0, 8)])  # one step
        backend.drain(key)
        drained = time.monotonic()
        wait_for(lambda: cluster.replicas(unique) == 0, COOLDOWN + 15, what="8 -> 0")
        assert time.monotonic() - drained >= COOLDOWN - POLL
        proc.wait_for_output(rf"{target}: scaled 8 -> 0")
        proc.assert_scale_lines([(target, 0, 8), (target, 8, 0)])
        assert proc.stop() == 0


@pytest.fixture(params=BACKENDS)
def own_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """A backend on a server of the test's own: stopping the shared one would break others."""
    server: RedisServer | NatsServer
    if request.param == "nats-jetstream":
        with NatsServer() as server:
            yield NatsConsumer(server)
    else:
        with PersistentRedisServer() as server:
            yield RedisStreamLag(server) if request.param == "redis-streams" else RedisList(server)


def test_a_stopped_server_holds_the_replicas_and_a_restart_recovers(
    cluster: Cluster, unique: str, tmp_path: Path, own_backend: Backend
) -> None:
    backend = own_backend
    key = key_for(unique)
    backend.prepare(key)
    cluster.create_deployment(unique, replicas=0)
    trigger = {**backend.trigger(key), "name": "backlog"}
    rules = write_rules(tmp_path / "rules.yaml", [rule(unique, cluster.namespace, trigger)])
    server: Any = backend.server  # type: ignore[attr-defined]
    with source_daemon(cluster, rules, backend.env()) as proc:
        backend.flood(key, 3 * backend.per_replica)
        wait_for(lambda: cluster.replicas(unique) == 3, 15, what="0 -> 3")
        server.stop()
        failing = rf"rule {unique}: source read failed: backlog: {backend.source_words(key)}"
        proc.wait_for_output(failing + r".*ConnectionError: cannot reach 127\.0\.0\.1")
        proc.wait_for_output(r"\(failing for [4-9] ticks\)", timeout=COOLDOWN + 15)
        time.sleep(COOLDOWN)  # well past the cooldown: an idle reading would have scaled to 0
        assert cluster.replicas(unique) == 3
        server.start()  # the same port, the backlog kept
        backend.flood(key, 5 * backend.per_replica)
        wait_for(lambda: cluster.replicas(unique) == 8, 20, what="3 -> 8")
        assert proc.stop() == 0
    steps = [line[1:] for line in proc.scale_lines()]
    # Held at 3 while the server was down; after it, only up (a read in the middle of the
    # flood may take 3 -> 6 -> 8), never down on the readings it did not get.
    assert steps[0] == (0, 3) and steps[-1][1] == 8
    assert all(before < after for before, after in steps[1:]), steps


@pytest.mark.parametrize(
    ("trigger", "field"),
    [
        (
            {"type": "redis", "address": "127.0.0.1:6379", "listName": "jobs", "listLenght": 5},
            "listLenght: unknown field (did you mean 'listLength'?)",
        ),
        (
            {
                "type": "redis-streams",
                "address": "127.0.0.1:6379",
                "stream": "s",
                "consumerGroup": "g",
                "lagCont": 5,
            },
            "lagCont: unknown field (did you mean 'lagCount'?)",
        ),
        (
            {
                "type": "nats-jetstream",
                "natsServerMonitoringEndpoint": "127.0.0.1:8222",
                "stream": "s",
                "consumer": "c",
                "lagTreshold": 5,
            },
            "lagTreshold: unknown field (did you mean 'lagThreshold'?)",
        ),
    ],
)
def test_validate_names_a_misspelt_field(
    tmp_path: Path, trigger: dict[str, Any], field: str
) -> None:
    path = write_rules(
        tmp_path / "rules.yaml", [{"name": "w", "deployment": "w", "triggers": [trigger]}]
    )
    result = run_command(["validate", str(path)])
    assert result.returncode == 2
    assert f"{path}: rules[0] (w).triggers[0].{field}" in result.stderr
