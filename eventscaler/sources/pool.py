"""The process's source readers: one per source type in use, opened on its first read."""

from __future__ import annotations

import threading

from eventscaler.sources import source_type
from eventscaler.sources.base import Source, SourceOptions
from eventscaler.triggers import Measured, Trigger


class SourcePool:
    """The process's readers, one per source type in use, opened on the first read of that type.

    The engine reads every trigger through it; `close` closes every reader's connections.
    """

    def __init__(self, options: SourceOptions | None = None) -> None:
        self._options = options or SourceOptions()
        self._sources: dict[str, Source] = {}
        self._lock = threading.Lock()

    def read_value(self, trigger: Trigger) -> float | Measured:
        return self.source(trigger.type).read(trigger)

    def source(self, type_name: str) -> Source:
        found = self._sources.get(type_name)
        if found is not None:
            return found
        with self._lock:
            if type_name not in self._sources:
                self._sources[type_name] = source_type(type_name).open(self._options)
            return self._sources[type_name]

    def opened_types(self) -> list[str]:
        return sorted(self._sources)

    def close(self) -> None:
        with self._lock:
            sources = list(self._sources.values())
            self._sources.clear()
        for source in sources:
            source.close()
