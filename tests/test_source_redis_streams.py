"""The `redis-streams` source (eventscaler/sources/redis_streams.py) against a real redis-server 7.

Scenarios:
- metadata, table-driven: KEDA's mode from the fields (no consumerGroup: streamLength; a group:
  pendingEntriesCount; a group and lagCount: lagCount), each mode's target with its default 5 and
  activationLagCount as the activation in every mode; invalid rows (a target of another mode, both
  group targets, a misspelt key, the connection's own rules) with the exact error line;
- streamLength: XLEN, entries deleted lower it, a stream not created yet reads 0 (XLEN's answer);
- lagCount: the entries not yet delivered to the group, a read lowers it and an ack does not;
  as KEDA, a stream not created yet reads 0 and a group not created yet reads the stream's
  length; unlike KEDA (which reads 0), a lag Redis cannot tell (NULL) reads XLEN, an upper bound;
  a server whose XINFO GROUPS gives no lag (Redis < 7) is LagUnsupported (a unit test of the
  module with a stand-in client: no Redis 6 here);
- pendingEntriesCount: delivered and not acknowledged, an ack lowers it; a missing stream or group
  is NotFound (NOGROUP), as in KEDA;
- a key of another type is WrongType; a wrong password Unauthorized with the stream named;
- convert: KEDA's three documented examples, the targets KEDA ignores in a mode reported; the
  output loads; simulate: each mode's value off the simulated queue.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from eventscaler.config import parse_rules_text
from eventscaler.convert import convert_text, render_rules
from eventscaler.sources import source_type
from eventscaler.sources.base import SourceError
from eventscaler.sources.redis_common import RedisConnection
from eventscaler.sources.redis_streams import (
    LAG,
    PENDING_ENTRIES,
    STREAM_LENGTH,
    RedisStreamSettings,
    RedisStreamSource,
    _lag,
)
from tests.support.servers.process import HOST
from tests.support.servers.redis import RedisServer
from tests.support.source_tables import assert_invalid, load_trigger

USER_ENV, PASSWORD_ENV = "REDIS_USERNAME", "REDIS_PASSWORD"


def streams(**fields: Any) -> dict[str, Any]:
    return {"type": "redis-streams", "address": "h:6379", "stream": "orders", **fields}


# --- metadata --------------------------------------------------------------------------------

VALID = [
    (streams(), "", STREAM_LENGTH, 5.0, 0.0),
    (streams(streamLength=50, activationLagCount=3), "", STREAM_LENGTH, 50.0, 3.0),
    (streams(consumerGroup="workers"), "workers", PENDING_ENTRIES, 5.0, 0.0),
    (streams(consumerGroup="workers", pendingEntriesCount=10), "workers", PENDING_ENTRIES, 10, 0),
    (streams(consumerGroup="workers", lagCount=10, activationLagCount=3), "workers", LAG, 10, 3),
]


@pytest.mark.parametrize(("trigger", "group", "mode", "target", "activation"), VALID)
def test_valid_metadata_picks_keda_mode(
    trigger: dict[str, Any], group: str, mode: str, target: float, activation: float
) -> None:
    problems, loaded = load_trigger("redis-streams", trigger)
    assert problems == [] and loaded is not None
    assert loaded.settings == RedisStreamSettings(
        RedisConnection(host="h", port=6379), "orders", group, mode
    )
    assert (loaded.target, loaded.activation, loaded.name) == (target, activation, "orders")
    assert source_type("redis-streams").details(loaded.settings) == (mode,)


INVALID = [
    (
        streams(pendingEntriesCount=5),
        ".pendingEntriesCount: only applies with consumerGroup "
        "(without one, the stream's length counts: streamLength)",
    ),
    (streams(lagCount=5), ".lagCount: only applies with consumerGroup"),
    (
        streams(consumerGroup="g", streamLength=5),
        ".streamLength: only applies without consumerGroup (use lagCount or pendingEntriesCount)",
    ),
    (
        streams(consumerGroup="g", lagCount=5, pendingEntriesCount=5),
        ".pendingEntriesCount: give lagCount (the group's lag) or pendingEntriesCount, not both",
    ),
    (streams(consumerGroup="g", lagCount=0), ".lagCount: expected a positive number, got 0"),
    (
        streams(consumerGroup="g", activationLagCount="3"),
        ".activationLagCount: expected a number >= 0, got '3'",
    ),
    (streams(consumerGroupe="g"), ".consumerGroupe: unknown field (did you mean 'consumerGroup'?)"),
    ({"type": "redis-streams", "address": "h:1"}, ".stream: is required"),
    (streams(address=None, host="h"), ".port: is required with host (or portFromEnv)"),
    (streams(password="hunter2hunter2"), ".password: is not read from the rule file"),
]


@pytest.mark.parametrize(("trigger", "line"), INVALID)
def test_invalid_metadata_names_the_field(trigger: dict[str, Any], line: str) -> None:
    trigger = {k: v for k, v in trigger.items() if v is not None}
    assert_invalid("redis-streams", trigger, "triggers[0]" + line)


# --- reading against the real server ---------------------------------------------------------


@pytest.fixture
def source(redis_server: RedisServer) -> Iterator[RedisStreamSource]:
    environ = {USER_ENV: redis_server.username, PASSWORD_ENV: redis_server.password}
    reader = RedisStreamSource(environ=environ, timeout_seconds=2.0)
    yield reader
    reader.close()


def stream_settings(
    server: RedisServer, stream: str, group: str = "", mode: str = STREAM_LENGTH
) -> RedisStreamSettings:
    connection = RedisConnection(
        host=HOST, port=server.port(), username_from_env=USER_ENV, password_from_env=PASSWORD_ENV
    )
    return RedisStreamSettings(connection, stream, group, mode)


def new_stream(server: RedisServer, entries: int, group: str = "") -> str:
    stream = f"orders:{uuid.uuid4().hex[:10]}"
    with server.client() as client:
        for i in range(entries):
            client.xadd(stream, {"n": i})
        if group:
            client.xgroup_create(stream, group, id="0")
    return stream


def deliver(server: RedisServer, stream: str, group: str, count: int) -> list[str]:
    """A worker of `group` takes `count` entries (not acknowledged yet); their ids."""
    with server.client() as client:
        answer = client.xreadgroup(group, "worker-1", {stream: ">"}, count=count)
    return [entry_id for entry_id, _ in answer[0][1]] if answer else []


def read(source: RedisStreamSource, settings: RedisStreamSettings) -> int:
    return source.read_count(settings)


def read_error(source: RedisStreamSource, settings: RedisStreamSettings) -> SourceError:
    with pytest.raises(SourceError) as info:
        source.read_count(settings)
    assert "\n" not in str(info.value)
    return info.value


def test_stream_length_is_xlen(redis_server: RedisServer, source: RedisStreamSource) -> None:
    stream = new_stream(redis_server, 6)
    assert read(source, stream_settings(redis_server, stream)) == 6
    with redis_server.client() as client:
        first = client.xrange(stream, count=2)
        client.xdel(stream, *[entry_id for entry_id, _ in first])
    assert read(source, stream_settings(redis_server, stream)) == 4
    assert read(source, stream_settings(redis_server, f"none:{uuid.uuid4().hex}")) == 0


def test_lag_counts_entries_not_delivered_yet(
    redis_server: RedisServer, source: RedisStreamSource
) -> None:
    stream = new_stream(redis_server, 10, group="workers")
    settings = stream_settings(redis_server, stream, "workers", LAG)
    assert read(source, settings) == 10
    taken = deliver(redis_server, stream, "workers", 4)
    assert read(source, settings) == 6  # delivered entries are no longer lag
    with redis_server.client() as client:
        client.xack(stream, "workers", *taken)
    assert read(source, settings) == 6  # acknowledging does not change what waits
    with redis_server.client() as client:
        client.xadd(stream, {"n": "late"})
    assert read(source, settings) == 7


def test_lag_of_a_stream_or_group_not_created_yet(
    redis_server: RedisServer, source: RedisStreamSource
) -> None:
    missing = stream_settings(redis_server, f"none:{uuid.uuid4().hex}", "workers", LAG)
    assert read(source, missing) == 0  # KEDA reads 0 for a stream not created yet
    stream = new_stream(redis_server, 5, group="others")
    # The group's workers create it on start: until then every entry waits for it (as KEDA).
    assert read(source, stream_settings(redis_server, stream, "workers", LAG)) == 5


def test_a_lag_redis_cannot_tell_reads_the_stream_length(
    redis_server: RedisServer, source: RedisStreamSource
) -> None:
    stream = new_stream(redis_server, 6, group="workers")
    deliver(redis_server, stream, "workers", 2)
    with redis_server.client() as client:
        undelivered = client.xrange(stream, count=4)[-1][0]
        client.xdel(stream, undelivered)  # a tombstone after the last delivered entry
        (group,) = client.xinfo_groups(stream)
    assert group["lag"] is None  # Redis cannot tell; KEDA would read 0 and could scale to zero
    # XLEN, an upper bound: the 3 entries still to deliver and the 2 delivered ones.
    assert read(source, stream_settings(redis_server, stream, "workers", LAG)) == 5


def test_lag_without_redis_7_is_lag_unsupported() -> None:
    class OldRedis:  # XINFO GROUPS as Redis 6 answers it: no lag, no entries-read
        def xinfo_groups(self, stream: str) -> list[dict[str, Any]]:
            return [{"name": "workers", "consumers": 1, "pending": 2, "last-delivered-id": "1-0"}]

    settings = RedisStreamSettings(RedisConnection(host="h", port=1), "orders", "workers", LAG)
    with pytest.raises(SourceError) as info:
        _lag(OldRedis(), settings, "redis stream 'orders' group 'workers'")  # type: ignore[arg-type]
    assert (info.value.kind, info.value.code) == ("BadResponse", "LagUnsupported")
    assert "lagCount needs Redis 7 or later" in str(info.value)


def test_pending_counts_delivered_not_acknowledged(
    redis_server: RedisServer, source: RedisStreamSource
) -> None:
    stream = new_stream(redis_server, 8, group="workers")
    settings = stream_settings(redis_server, stream, "workers", PENDING_ENTRIES)
    assert read(source, settings) == 0  # nothing delivered: no worker, no pending entry
    taken = deliver(redis_server, stream, "workers", 5)
    assert read(source, settings) == 5
    with redis_server.client() as client:
        client.xack(stream, "workers", *taken[:2])
    assert read(source, settings) == 3


@pytest.mark.parametrize("missing", ["stream", "group"])
def test_pending_of_a_missing_stream_or_group_is_not_found(
    redis_server: RedisServer, source: RedisStreamSource, missing: str
) -> None:
    stream = new_stream(redis_server, 1, group="workers")
    if missing == "stream":
        stream = f"none:{uuid.uuid4().hex}"
    group = "workers" if missing == "stream" else "nobody"
    error = read_error(source, stream_settings(redis_server, stream, group, PENDING_ENTRIES))
    assert (error.kind, error.code) == ("NotFound", "NoSuchGroup")
    assert str(error).startswith(f"redis stream {stream!r} group {group!r} on 127.0.0.1:")
    assert str(error).endswith(
        "NoSuchGroup: the stream or its consumer group does not exist (NOGROUP)"
    )


@pytest.mark.parametrize("mode", [STREAM_LENGTH, LAG, PENDING_ENTRIES])
def test_a_key_of_another_type_is_wrong_type(
    redis_server: RedisServer, source: RedisStreamSource, mode: str
) -> None:
    key = f"list:{uuid.uuid4().hex}"
    with redis_server.client() as client:
        client.rpush(key, "x")
    group = "" if mode == STREAM_LENGTH else "workers"
    error = read_error(source, stream_settings(redis_server, key, group, mode))
    assert (error.kind, error.code) == ("BadResponse", "WrongType")


def test_a_wrong_password_names_the_stream(redis_server: RedisServer) -> None:
    reader = RedisStreamSource(environ={USER_ENV: redis_server.username, PASSWORD_ENV: "nope-nope"})
    error = read_error(reader, stream_settings(redis_server, "orders", "workers", LAG))
    reader.close()
    assert error.kind == "Unauthorized"
    assert str(error).startswith("redis stream 'orders' group 'workers' on 127.0.0.1:")
    assert "nope-nope" not in str(error)


# --- convert and simulate --------------------------------------------------------------------

KEDA_EXAMPLES = """
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: pending, namespace: default}
spec:
  scaleTargetRef: {name: redis-streams-consumer}
  triggers:
  - type: redis-streams
    metadata:
      addressFromEnv: REDIS_HOST
      usernameFromEnv: REDIS_USERNAME
      passwordFromEnv: REDIS_PASSWORD
      stream: my-stream
      consumerGroup: consumer-group-1
      pendingEntriesCount: "10"
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: length, namespace: default}
spec:
  scaleTargetRef: {name: redis-streams-consumer}
  triggers:
  - type: redis-streams
    metadata: {addressFromEnv: REDIS_HOST, stream: my-stream, streamLength: "50",
               pendingEntriesCount: "10"}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: lag, namespace: default}
spec:
  scaleTargetRef: {name: redis-streams-consumer}
  triggers:
  - type: redis-streams
    metadata: {host: localhost, port: "6379", stream: my-stream, consumerGroup: consumer-group-1,
               lagCount: "10", activationLagCount: "3", pendingEntriesCount: "10"}
"""


def test_convert_keda_examples_keep_the_mode_and_report_what_keda_ignores() -> None:
    conversion = convert_text(KEDA_EXAMPLES, "so.yaml")
    triggers = {r["name"]: r["triggers"][0] for r in conversion.rules}
    assert triggers["pending"] == {
        "type": "redis-streams",
        "stream": "my-stream",
        "consumerGroup": "consumer-group-1",
        "pendingEntriesCount": 10,
        "addressFromEnv": "REDIS_HOST",
        "usernameFromEnv": "REDIS_USERNAME",
        "passwordFromEnv": "REDIS_PASSWORD",
    }
    assert triggers["length"] == {
        "type": "redis-streams",
        "stream": "my-stream",
        "streamLength": 50,
        "addressFromEnv": "REDIS_HOST",
    }
    assert triggers["lag"]["lagCount"] == 10 and triggers["lag"]["port"] == 6379
    assert "pendingEntriesCount" not in triggers["lag"]
    notes = [str(n) for n in conversion.notes]
    assert any(
        "length" in n
        and "metadata.pendingEntriesCount" in n
        and "KEDA ignores it when the trigger reads streamLength" in n
        for n in notes
    )
    result = parse_rules_text(render_rules(conversion, "so.yaml"), "out.yaml")
    assert result.problems == ()
    modes = {r.name: (r.triggers[0].settings.mode, r.triggers[0].target) for r in result.rules}
    assert modes == {
        "pending": (PENDING_ENTRIES, 10),
        "length": (STREAM_LENGTH, 50),
        "lag": (LAG, 10),
    }


def test_simulated_value_of_each_mode() -> None:
    redis_streams = source_type("redis-streams")
    connection = RedisConnection(host="h", port=1)
    values = {
        mode: redis_streams.simulated_value(
            RedisStreamSettings(connection, "s", "g", mode), backlog=10, in_flight=4
        )
        for mode in (STREAM_LENGTH, LAG, PENDING_ENTRIES)
    }
    assert values == {STREAM_LENGTH: 10, LAG: 6, PENDING_ENTRIES: 4}
