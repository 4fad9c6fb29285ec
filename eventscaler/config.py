"""Rule file: frozen dataclasses (loader still to come in this module)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AzureQueueTrigger:
    """One `type: azure-queue` trigger of a rule (field names follow KEDA's trigger metadata)."""

    queue_name: str
    queue_length: float = 5.0
    activation_queue_length: float = 0.0
    queue_length_strategy: str = "all"  # "all" or "visibleOnly"
    connection_from_env: str = "AZURE_STORAGE_CONNECTION_STRING"
    name: str = ""  # for logs; defaults to the queue name

    @property
    def label(self) -> str:
        return self.name or self.queue_name
