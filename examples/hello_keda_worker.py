"""The walkthrough's sample worker: takes messages off an Azure Storage queue, one at a time.

Each message is "processed" (a sleep of PROCESSING_SECONDS), then deleted, with one log line per
message. On SIGTERM (a scale-in) or SIGINT the worker finishes the message in hand, then exits 0:
keep PROCESSING_SECONDS well under the pod's terminationGracePeriodSeconds.

Environment:
    AZURE_STORAGE_CONNECTION_STRING  the storage account's connection string (required)
    QUEUE_NAME                       the queue to drain (default: js-queue-items)
    PROCESSING_SECONDS               how long one message takes (default: 1)

Runs in the autoscaler's image (manifests/example/hello-keda.yaml), or locally:
    python examples/hello_keda_worker.py
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import FrameType

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.queue import QueueClient, QueueMessage

logger = logging.getLogger("hello_keda_worker")

DEFAULT_QUEUE_NAME = "js-queue-items"
DEFAULT_PROCESSING_SECONDS = 1.0
# How long an empty, missing or unreachable queue makes the worker wait before it asks again.
IDLE_WAIT_SECONDS = 2.0
# A received message stays invisible to other workers this much longer than its processing takes,
# so it is never handed out twice while this worker still holds it.
VISIBILITY_MARGIN_SECONDS = 30


@dataclass(frozen=True)
class Settings:
    connection_string: str
    queue_name: str = DEFAULT_QUEUE_NAME
    processing_seconds: float = DEFAULT_PROCESSING_SECONDS

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read the settings; raise ValueError naming the variable that is missing or wrong."""
        connection_string = environ.get("AZURE_STORAGE_CONNECTION_STRING", "").strip()
        if not connection_string:
            raise ValueError("AZURE_STORAGE_CONNECTION_STRING is unset or empty")
        raw_seconds = environ.get("PROCESSING_SECONDS", str(DEFAULT_PROCESSING_SECONDS))
        try:
            processing_seconds = float(raw_seconds)
        except ValueError:
            processing_seconds = -1.0
        if not 0 <= processing_seconds < float("inf"):
            raise ValueError(f"PROCESSING_SECONDS must be a number >= 0, got {raw_seconds!r}")
        queue_name = environ.get("QUEUE_NAME", "").strip() or DEFAULT_QUEUE_NAME
        return cls(connection_string, queue_name, processing_seconds)


def process(message: QueueMessage, settings: Settings) -> None:
    """Stand-in for real work. Not interruptible: a signal only ends the loop afterwards."""
    time.sleep(settings.processing_seconds)


def run(queue: QueueClient, settings: Settings, stop: threading.Event) -> int:
    """Process messages until `stop` is set; return how many were processed and deleted."""
    visibility_timeout = int(settings.processing_seconds) + VISIBILITY_MARGIN_SECONDS
    processed = 0
    while not stop.is_set():
        message = receive(queue, settings, visibility_timeout)
        if message is None:
            stop.wait(IDLE_WAIT_SECONDS)
            continue
        started = time.monotonic()
        process(message, settings)
        try:
            queue.delete_message(message)
        except AzureError as exc:
            # Another worker may hold it now (our visibility timeout ran out): it is redone.
            logger.warning(
                "message %s not deleted, it will be delivered again: %s", message.id, exc
            )
            continue
        processed += 1
        logger.info(
            "processed message %s from %s in %.1fs (delivery %s): %.40r",
            message.id,
            settings.queue_name,
            time.monotonic() - started,
            message.dequeue_count,
            message.content,
        )
    return processed


def receive(queue: QueueClient, settings: Settings, visibility_timeout: int) -> QueueMessage | None:
    """The next message, or None when the queue is empty, missing or unreachable (logged)."""
    try:
        return queue.receive_message(visibility_timeout=visibility_timeout)
    except ResourceNotFoundError:
        logger.warning("queue %s does not exist (yet)", settings.queue_name)
    except AzureError as exc:
        logger.warning("queue %s: %s: %s", settings.queue_name, type(exc).__name__, exc)
    return None


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # The SDK logs every request and response at INFO: keep the one line per message readable.
    logging.getLogger("azure").setLevel(logging.WARNING)
    try:
        settings = Settings.from_env(os.environ)
    except ValueError as exc:
        logger.error("%s", exc)
        return 2

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        # Only set the flag: logging from a signal handler can hit a reentrant write on stderr.
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    try:
        queue = QueueClient.from_connection_string(settings.connection_string, settings.queue_name)
    except ValueError:
        # Not the SDK's message: it could quote part of the secret.
        logger.error("AZURE_STORAGE_CONNECTION_STRING is not a valid connection string")
        return 2
    logger.info(
        "worker started: queue %s, %gs per message",
        settings.queue_name,
        settings.processing_seconds,
    )
    with queue:
        processed = run(queue, settings, stop)
    logger.info("stop requested: exiting after %d message(s)", processed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
