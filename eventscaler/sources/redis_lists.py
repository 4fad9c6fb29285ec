"""Redis list lengths, as KEDA's `redis` scaler reads them: LLEN of `listName`.

A key that does not exist is an empty list (LLEN answers 0, and KEDA counts it so); a key holding
another type is an error (WrongType), and so is every failure to get an answer: never a 0.
The connection fields, the pools and the error mapping are shared with redis-streams through
eventscaler.sources.redis_common.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from eventscaler.sources import redis_common
from eventscaler.sources.base import KedaTrigger, SourceOptions, SourceType, required
from eventscaler.sources.redis_common import RedisConnection
from eventscaler.triggers import Trigger

DEFAULT_LIST_LENGTH = 5.0


@dataclass(frozen=True)
class RedisListSettings:
    """One `type: redis` trigger's own fields."""

    connection: RedisConnection
    list_name: str


class RedisList(SourceType):
    """`type: redis`: the length of a Redis list."""

    type = "redis"
    settings = RedisListSettings
    target_key = "listLength"
    target_default = DEFAULT_LIST_LENGTH
    activation_key = "activationListLength"
    fields = (*redis_common.CONNECTION_FIELDS, required("listName", redis_common.parse_key))

    def check(self, values: dict[str, Any], data: Mapping[str, Any], field: str) -> dict[str, Any]:
        return redis_common.take_connection(values, data, field)

    def default_name(self, settings: RedisListSettings) -> str:
        return redis_common.trigger_name(settings.list_name, self.type)

    def describe(self, settings: RedisListSettings) -> str:
        return f"redis list {settings.list_name} on {settings.connection.describe()}"

    def open(self, options: SourceOptions) -> RedisListSource:
        return RedisListSource(options.environ, options.timeout_seconds, options.pool_size)

    def simulated_value(self, settings: RedisListSettings, backlog: int, in_flight: int) -> float:
        # A worker pops its item (LPOP/BRPOP): what it works on is no longer in the list.
        return float(max(backlog - in_flight, 0))

    def from_keda(self, keda: KedaTrigger) -> dict[str, Any] | None:
        if not keda.metadata.get("listName"):
            keda.lost("metadata.listName", "missing: trigger not converted")
            return None
        out = super().from_keda(keda) or {}  # the known keys; listLength and its activation
        redis_common.keda_connection(keda, out)
        return out


SOURCE_TYPE = RedisList()


class RedisListSource(redis_common.RedisReader):
    """Reads list lengths; safe to call from many threads at once."""

    def read(self, trigger: Trigger) -> float:
        return float(self.read_length(trigger.settings))

    def read_length(self, settings: RedisListSettings) -> int:
        """LLEN of the list (0 for a missing key), or raise RedisReadError."""

        def length(client: redis.Redis) -> int:
            return int(client.llen(settings.list_name))

        what = f"redis list {settings.list_name!r}"
        return self._clients.run(what, settings.connection, length)
