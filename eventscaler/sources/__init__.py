"""Event sources: one module per source type, each the only importer of its SDK.

The registry maps KEDA's trigger `type` to the module that serves it. A module is imported only
when a rule (or a converted ScaledObject) uses its type, so a daemon pays the start-up and memory
of the SDKs its rules need and no others. Adding a source: one module, one line below
(docs/sources.md). `eventscaler.sources.pool.SourcePool` opens and closes the readers.
"""

from __future__ import annotations

import importlib
import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from eventscaler.sources.base import SourceType

# The Azure SDK imports aiohttp, when it is installed (the kubernetes client requires it), only to
# recognise its asyncio transport, which the daemon never uses: 0.12 s of start-up and ~8 MiB of
# resident memory. Its storage package imports yarl (aiohttp's URL type, with multidict and
# propcache) for that transport alone too: 0.04 s more. Declared absent here, before any source
# module imports the SDK.
sys.modules.setdefault("aiohttp", None)  # type: ignore[arg-type]
sys.modules.setdefault("yarl", None)  # type: ignore[arg-type]

SOURCE_MODULES = {
    "aws-sqs-queue": "eventscaler.sources.aws_sqs",
    "azure-queue": "eventscaler.sources.azure_queue",
    "azure-servicebus": "eventscaler.sources.azure_servicebus",
    "nats-jetstream": "eventscaler.sources.nats_jetstream",
    "redis": "eventscaler.sources.redis_lists",
    "redis-streams": "eventscaler.sources.redis_streams",
    "cron": "eventscaler.sources.cron",
    "metrics-api": "eventscaler.sources.metrics_api",
    "beanstalkd": "eventscaler.sources.beanstalkd",
    "rabbitmq": "eventscaler.sources.rabbitmq",
    "postgresql": "eventscaler.sources.postgresql",
    "mysql": "eventscaler.sources.mysql",
    "prometheus": "eventscaler.sources.prometheus",
}

_types: dict[str, SourceType] = {}
_types_lock = threading.Lock()


def known_types() -> list[str]:
    return sorted(SOURCE_MODULES)


def source_type(name: str) -> SourceType:
    """The SourceType registered under `name`; imports its module on first use. KeyError if none."""
    found = _types.get(name)
    if found is not None:
        return found
    module_name = SOURCE_MODULES[name]
    with _types_lock:
        if name not in _types:
            _types[name] = importlib.import_module(module_name).SOURCE_TYPE
        return _types[name]
