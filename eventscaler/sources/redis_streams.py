"""Redis stream backlogs, as KEDA's `redis-streams` scaler reads them, in its three modes.

- no `consumerGroup`: the stream's length, XLEN (0 for a stream not created yet), target
  `streamLength`;
- `consumerGroup` and `lagCount`: the group's `lag` from XINFO GROUPS (Redis 7+), the entries not
  yet delivered to any of its consumers, target `lagCount`. As KEDA: a stream not created yet
  has a lag of 0, and a group not created yet (its workers create it when they start, so a
  scaled-to-zero worker never does) counts every entry of the stream (XLEN). Unlike KEDA, a lag
  Redis cannot tell (it answers NULL once entries after the group's last delivered one were
  deleted) is not read as 0: XLEN, an upper bound, is read instead;
- `consumerGroup` alone: the group's pending entries (delivered, not yet acknowledged) from
  XPENDING, target `pendingEntriesCount`. A missing stream or group is NotFound, as in KEDA
  (XPENDING answers NOGROUP). Pending entries exist only while workers run, so this mode cannot
  wake a workload from zero (KEDA's documentation says the same).

`activationLagCount` is the activation threshold in every mode, as in KEDA. The connection
fields, pools and error mapping are shared with the redis source (eventscaler.sources.redis_common).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import ResponseError

from eventscaler.fields import ConfigError
from eventscaler.sources import base, redis_common
from eventscaler.sources.base import KedaTrigger, SourceOptions, SourceType, optional, required
from eventscaler.sources.redis_common import RedisConnection
from eventscaler.triggers import Trigger

DEFAULT_TARGET = 5.0
# The modes, under the name of the field holding each one's target.
STREAM_LENGTH = "streamLength"
PENDING_ENTRIES = "pendingEntriesCount"
LAG = "lagCount"
MODES = (STREAM_LENGTH, PENDING_ENTRIES, LAG)

# SourceError.code values of this source, besides redis_common's.
NO_GROUP = "NoSuchGroup"
LAG_UNSUPPORTED = "LagUnsupported"


@dataclass(frozen=True)
class RedisStreamSettings:
    """One `type: redis-streams` trigger's own fields; `mode` is the name of its target field."""

    connection: RedisConnection
    stream: str
    consumer_group: str = ""
    mode: str = STREAM_LENGTH


def mode_of(data: Mapping[str, Any]) -> str:
    """KEDA's choice: no group -> the length; a group -> its lag with lagCount, else pending."""
    if data.get("consumerGroup") is None:
        return STREAM_LENGTH
    return LAG if data.get(LAG) is not None else PENDING_ENTRIES


class RedisStreams(SourceType):
    """`type: redis-streams`: a stream's length, or a consumer group's lag or pending entries."""

    type = "redis-streams"
    settings = RedisStreamSettings
    target_key = PENDING_ENTRIES
    target_default = DEFAULT_TARGET
    activation_key = "activationLagCount"
    fields = (
        *redis_common.CONNECTION_FIELDS,
        required("stream", redis_common.parse_key),
        optional("consumerGroup", redis_common.parse_key, ""),
    )

    def keys(self) -> set[str]:
        return super().keys() | set(MODES)

    def target_key_for(self, data: Mapping[str, Any]) -> str:
        return mode_of(data)

    def check(self, values: dict[str, Any], data: Mapping[str, Any], field: str) -> dict[str, Any]:
        mode = mode_of(data)
        given = {key for key in MODES if data.get(key) is not None}
        if mode == STREAM_LENGTH and given - {STREAM_LENGTH}:
            key = sorted(given - {STREAM_LENGTH})[0]
            raise ConfigError(
                f"{field}.{key}",
                "only applies with consumerGroup (without one, "
                "the stream's length counts: streamLength)",
            )
        if mode != STREAM_LENGTH and STREAM_LENGTH in given:
            raise ConfigError(
                f"{field}.{STREAM_LENGTH}",
                "only applies without consumerGroup (use lagCount or pendingEntriesCount)",
            )
        if {LAG, PENDING_ENTRIES} <= given:
            raise ConfigError(
                f"{field}.{PENDING_ENTRIES}",
                "give lagCount (the group's lag) or pendingEntriesCount, not both",
            )
        return {**redis_common.take_connection(values, data, field), "mode": mode}

    def default_name(self, settings: RedisStreamSettings) -> str:
        return redis_common.trigger_name(settings.stream, self.type)

    def describe(self, settings: RedisStreamSettings) -> str:
        group = f" group {settings.consumer_group}" if settings.consumer_group else ""
        return f"redis-streams {settings.stream}{group} on {settings.connection.describe()}"

    def details(self, settings: RedisStreamSettings) -> tuple[str, ...]:
        return (settings.mode,)

    def open(self, options: SourceOptions) -> RedisStreamSource:
        return RedisStreamSource(options.environ, options.timeout_seconds, options.pool_size)

    def simulated_value(self, settings: RedisStreamSettings, backlog: int, in_flight: int) -> float:
        if settings.mode == PENDING_ENTRIES:
            return float(in_flight)  # delivered to a worker, not yet acknowledged
        if settings.mode == LAG:
            return float(max(backlog - in_flight, 0))  # not yet delivered
        return float(backlog)  # entries leave the stream when workers delete them

    def from_keda(self, keda: KedaTrigger) -> dict[str, Any] | None:
        metadata = keda.metadata
        if not metadata.get("stream"):
            keda.lost("metadata.stream", "missing: trigger not converted")
            return None
        out: dict[str, Any] = {"stream": str(metadata["stream"])}
        if metadata.get("consumerGroup"):
            out["consumerGroup"] = str(metadata["consumerGroup"])
        _keda_numbers(keda, out)
        redis_common.keda_connection(keda, out)
        for key in metadata:
            if key not in self.keys():
                keda.lost(f"metadata.{key}", "not a redis-streams setting eventscaler knows")
        return out


def _keda_numbers(keda: KedaTrigger, out: dict[str, Any]) -> None:
    """The target of the mode KEDA would pick, and the activation; the other targets, which
    KEDA ignores in that mode, are reported."""
    numbers: dict[str, float | int] = {}
    for key in (*MODES, "activationLagCount"):
        if key in keda.metadata:
            number = keda.number(keda.metadata[key])
            if number is None or number < 0:
                keda.lost(
                    f"metadata.{key}", f"expected a number, got {keda.metadata[key]!r}: left out"
                )
            elif key == LAG and number == 0:
                keda.lost(f"metadata.{key}", "0: KEDA reads the pending entries then; left out")
            else:
                numbers[key] = number
    mode = mode_of({**out, **numbers})
    for key, number in numbers.items():
        if key in (mode, "activationLagCount"):
            out[key] = number
        else:
            keda.lost(f"metadata.{key}", f"KEDA ignores it when the trigger reads {mode}")


SOURCE_TYPE = RedisStreams()


class RedisStreamSource(redis_common.RedisReader):
    """Reads stream lengths, lags and pending counts; safe to call from many threads at once."""

    def read(self, trigger: Trigger) -> float:
        return float(self.read_count(trigger.settings))

    def read_count(self, settings: RedisStreamSettings) -> int:
        """The number of the trigger's mode, or raise RedisReadError."""
        what = f"redis stream {settings.stream!r}"
        if settings.consumer_group:
            what += f" group {settings.consumer_group!r}"
        if settings.mode == STREAM_LENGTH:
            return self._clients.run(what, settings.connection, lambda c: _length(c, settings))
        if settings.mode == LAG:
            return self._clients.run(what, settings.connection, lambda c: _lag(c, settings, what))
        if settings.mode == PENDING_ENTRIES:
            return self._clients.run(
                what, settings.connection, lambda c: _pending(c, settings, what)
            )
        raise ValueError(f"unknown redis-streams mode {settings.mode!r}")  # a loader bug


def _length(client: redis.Redis, settings: RedisStreamSettings) -> int:
    return int(client.xlen(settings.stream))


def _pending(client: redis.Redis, settings: RedisStreamSettings, what: str) -> int:
    try:
        summary = client.xpending(settings.stream, settings.consumer_group)
    except ResponseError as exc:
        if str(exc).startswith("NOGROUP"):
            raise redis_common.error(
                what,
                settings.connection,
                NO_GROUP,
                "the stream or its consumer group does not exist (NOGROUP)",
                base.NOT_FOUND,
            ) from None
        raise
    return int(summary["pending"])


def _lag(client: redis.Redis, settings: RedisStreamSettings, what: str) -> int:
    try:
        groups = client.xinfo_groups(settings.stream)
    except ResponseError as exc:
        if str(exc).lower().startswith("no such key"):
            return 0  # the stream is not created yet: nothing waits (KEDA reads 0 too)
        raise
    group = next((g for g in groups if g.get("name") == settings.consumer_group), None)
    if group is None:
        # Not created yet (its workers create it on start): every entry waits for it.
        return _length(client, settings)
    if "lag" not in group:
        raise redis_common.error(
            what,
            settings.connection,
            LAG_UNSUPPORTED,
            "lagCount needs Redis 7 or later (XINFO GROUPS gives no lag); use "
            "pendingEntriesCount or no consumerGroup",
            base.BAD_RESPONSE,
        )
    if group["lag"] is None:
        # Redis cannot tell (entries after the group's last delivered one were deleted): every
        # entry still in the stream may wait, an upper bound. KEDA reads 0 here.
        return _length(client, settings)
    return int(group["lag"])
