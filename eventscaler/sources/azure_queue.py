"""Azure Storage Queue lengths, counted the way KEDA's azure-queue scaler counts them.

The only module of the daemon that imports the Azure SDK. It turns every SDK failure into a
`QueueReadError` whose message names the queue and the environment variable, never its value.

Strategies:
- `all` (default): the queue's approximate message count. It includes in-flight messages (received
  but not yet deleted) on purpose, so workers busy with a message are not scaled away.
- `visibleOnly`: peek up to 32 messages; at 32 or more, fall back to the approximate count.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote

import requests
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.queue import LinearRetry, QueueClient, QueueServiceClient
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from eventscaler.config import AzureQueueTrigger
from eventscaler.redact import redact, register_secret

logger = logging.getLogger(__name__)

# The SDK's HTTP logging policy logs every request and response, headers included, at INFO:
# one line per queue per tick, and noise around every real problem.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)

STRATEGY_ALL = "all"
STRATEGY_VISIBLE_ONLY = "visibleonly"  # compared lower-cased: KEDA writes `visibleonly`
DEFAULT_POOL_SIZE = 16  # HTTP connections kept per storage account
PEEK_LIMIT = 32  # the most messages the service returns from one peek

# One quick retry covers the usual transient failure of a poller (a pooled keep-alive connection
# closed by the server); the next tick is the real retry. The SDK default (ExponentialRetry, 3
# retries from 15 s on) can hold one read for about a minute.
RETRY_TOTAL = 1
RETRY_BACKOFF_SECONDS = 0.2

# QueueReadError.kind values.
QUEUE_NOT_FOUND = "QueueNotFound"
AUTHENTICATION_FAILED = "AuthenticationFailed"
MISSING_CONNECTION_STRING = "MissingConnectionString"
INVALID_CONNECTION_STRING = "InvalidConnectionString"
TIMEOUT = "Timeout"
CONNECTION_ERROR = "ConnectionError"
SERVICE_ERROR = "ServiceError"

_MAX_REASON_LENGTH = 200


class QueueReadError(Exception):
    """A queue length could not be read. Never a reading of 0: the caller must not scale on it.

    `kind` is a short machine word (see the constants above); `str()` is one line that names the
    queue and the environment variable, never the connection string or its key.
    """

    def __init__(self, queue_name: str, kind: str, message: str) -> None:
        super().__init__(message)
        self.queue_name = queue_name
        self.kind = kind


class _ShortLinearRetry(LinearRetry):
    """LinearRetry with a sub-second pause (its own `backoff` is typed as whole seconds)."""

    def get_backoff_time(self, settings: dict[str, Any]) -> float:
        return RETRY_BACKOFF_SECONDS


class _PooledTransport(RequestsTransport):
    """The SDK's transport with a connection pool as large as the daemon's worker pool.

    Its default keeps 10 connections per account: more concurrent reads would open and discard
    a connection each (with a urllib3 warning every time).
    """

    def __init__(self, pool_size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pool_size = pool_size

    def _init_session(self, session: requests.Session) -> None:
        super()._init_session(session)
        # Retries stay off at this level, as the SDK sets them: its retry policy does the retrying.
        no_retries = Retry(total=False, redirect=False, raise_on_status=False)
        adapter = HTTPAdapter(pool_maxsize=self._pool_size, max_retries=no_retries)
        for prefix in self._protocols:
            session.mount(prefix, adapter)


class AzureQueueSource:
    """Reads queue lengths; safe to call from many threads at once.

    Clients are built on first use and reused across ticks: one QueueServiceClient (one HTTP
    connection pool) per distinct connection string, one QueueClient per queue. The cache is keyed
    by a hash of the connection string, so a rotated secret gets a fresh client.
    """

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        timeout_seconds: float = 5.0,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> None:
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._timeout_seconds = timeout_seconds
        self._pool_size = pool_size
        # Guards cache creation only; network calls run outside it, concurrently.
        self._lock = threading.Lock()
        self._services: dict[str, QueueServiceClient] = {}
        self._queues: dict[tuple[str, str], QueueClient] = {}
        # Which connection string (by digest) each env var held last, to drop replaced clients.
        self._digest_by_env: dict[str, str] = {}

    def __repr__(self) -> str:
        clients = len(self._services)
        return f"AzureQueueSource(timeout_seconds={self._timeout_seconds}, clients={clients})"

    def read_length(self, trigger: AzureQueueTrigger) -> int:
        """Return the queue length for `trigger`'s strategy, or raise QueueReadError."""
        strategy = trigger.queue_length_strategy.lower()
        if strategy not in (STRATEGY_ALL, STRATEGY_VISIBLE_ONLY):
            # The config loader rejects this; reaching it is a bug, not a queue problem.
            raise ValueError(f"unknown queueLengthStrategy {trigger.queue_length_strategy!r}")
        queue = self._get_queue_client(trigger)
        try:
            if strategy == STRATEGY_VISIBLE_ONLY:
                peeked = queue.peek_messages(max_messages=PEEK_LIMIT)
                if len(peeked) < PEEK_LIMIT:
                    return len(peeked)
            count = queue.get_queue_properties().approximate_message_count
        except AzureError as exc:
            raise _translate_error(
                exc, trigger, queue.primary_hostname, self._timeout_seconds
            ) from exc
        if count is None:
            # Never guess 0: a missing count must not scale anything down.
            raise _error(
                trigger, SERVICE_ERROR, "the response carried no approximate message count"
            )
        return int(count)

    def close(self) -> None:
        """Close every cached client's connections; a later read builds new clients."""
        with self._lock:
            services = list(self._services.values())
            self._services.clear()
            self._queues.clear()
            self._digest_by_env.clear()
        for service in services:
            service.close()

    def _get_queue_client(self, trigger: AzureQueueTrigger) -> QueueClient:
        env_name = trigger.connection_from_env
        connection_string = self._environ.get(env_name, "").strip()
        if not connection_string:
            raise _error(
                trigger, MISSING_CONNECTION_STRING, "the environment variable is unset or empty"
            )
        digest = hashlib.sha256(connection_string.encode()).hexdigest()
        key = (digest, trigger.queue_name)
        # Fast path without the lock: dict reads are atomic, and entries never change once set.
        queue = self._queues.get(key)
        if queue is not None and self._digest_by_env.get(env_name) == digest:
            return queue
        with self._lock:
            service = self._services.get(digest)
            if service is None:
                service = self._build_service_client(connection_string, trigger)
                self._services[digest] = service
            self._remember_digest(env_name, digest)
            queue = self._queues.get(key)
            if queue is None:
                queue = service.get_queue_client(trigger.queue_name)
                self._queues[key] = queue
            return queue

    def _build_service_client(
        self, connection_string: str, trigger: AzureQueueTrigger
    ) -> QueueServiceClient:
        parts = register_connection_secrets(connection_string)
        if "accountkey" in parts and not parts["accountkey"]:
            # The SDK accepts an empty key and only fails at the server, as a confusing 403.
            raise _error(trigger, INVALID_CONNECTION_STRING, "AccountKey is empty")
        try:
            service = QueueServiceClient.from_connection_string(
                connection_string,
                transport=_PooledTransport(
                    self._pool_size,
                    connection_timeout=self._timeout_seconds,
                    read_timeout=self._timeout_seconds,
                ),
                retry_policy=_ShortLinearRetry(retry_total=RETRY_TOTAL, random_jitter_range=0),
            )
        except ValueError:
            # `from None`: parse errors are generic today, but must never carry the value along.
            raise _error(
                trigger, INVALID_CONNECTION_STRING, "the connection string is malformed"
            ) from None
        # Open the shared HTTP session now, under our lock: the SDK opens it lazily on the first
        # request, and two threads doing that at once would each create one.
        service.__enter__()
        logger.debug(
            "new storage client for %s (connection string from env %s)",
            service.primary_hostname,
            trigger.connection_from_env,
        )
        return service

    def _remember_digest(self, env_name: str, digest: str) -> None:
        """Drop the clients of a connection string no env var holds any more (a rotated secret)."""
        old = self._digest_by_env.get(env_name)
        self._digest_by_env[env_name] = digest
        if old is None or old == digest or old in self._digest_by_env.values():
            return
        # Not closed: another thread may still be mid-read on it; its pool closes when collected.
        self._services.pop(old, None)
        for key in [key for key in self._queues if key[0] == old]:
            del self._queues[key]


def register_connection_secrets(connection_string: str) -> dict[str, str]:
    """Tell the log redaction about a connection string and the secret parts inside it.

    Returns the parts, names lower-cased (`accountkey`, `sharedaccesssignature`, ...).
    """
    register_secret(connection_string)
    parts: dict[str, str] = {}
    for part in connection_string.split(";"):
        name, _, value = part.partition("=")
        parts[name.strip().lower()] = value.strip()
    register_secret(parts.get("accountkey", ""))
    sas = parts.get("sharedaccesssignature", "")
    register_secret(sas)
    # The signature travels in request URLs (and so in SDK errors) in either encoding.
    for param in sas.lstrip("?").split("&"):
        key, _, sig = param.partition("=")
        if key == "sig":
            for variant in (sig, unquote(sig), quote(unquote(sig), safe="")):
                register_secret(variant)
    return parts


def _error(trigger: AzureQueueTrigger, kind: str, detail: str) -> QueueReadError:
    message = (
        f"azure queue {trigger.queue_name!r} (connection string from env "
        f"{trigger.connection_from_env}): {kind}: {detail}"
    )
    return QueueReadError(trigger.queue_name, kind, message)


def _translate_error(
    exc: AzureError, trigger: AzureQueueTrigger, host: str, timeout: float
) -> QueueReadError:
    if isinstance(exc, ResourceNotFoundError):
        return _error(trigger, QUEUE_NOT_FOUND, "the queue does not exist")
    if isinstance(exc, ClientAuthenticationError) and exc.response is None:
        # Signing failed before any request was sent: the key is not valid base64.
        return _error(trigger, INVALID_CONNECTION_STRING, "the account key cannot sign requests")
    if isinstance(exc, HttpResponseError) and exc.status_code in (401, 403):
        code = _error_code(exc)
        return _error(
            trigger,
            AUTHENTICATION_FAILED,
            f"{host} refused the credentials (HTTP {exc.status_code} {code}): check the key or SAS",
        )
    if isinstance(exc, (ServiceRequestTimeoutError, ServiceResponseTimeoutError)):
        return _error(
            trigger,
            TIMEOUT,
            f"no answer from {host} ({RETRY_TOTAL + 1} tries, {timeout:g} s timeout each)",
        )
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return _error(trigger, CONNECTION_ERROR, f"cannot reach {host}: {_short_reason(exc)}")
    if isinstance(exc, HttpResponseError):
        code = _error_code(exc)
        return _error(
            trigger, SERVICE_ERROR, f"HTTP {exc.status_code} {code}: {_short_reason(exc)}"
        )
    return _error(trigger, SERVICE_ERROR, f"{type(exc).__name__}: {_short_reason(exc)}")


def _error_code(exc: HttpResponseError) -> str:
    code = getattr(exc, "error_code", None)  # set by the storage SDK, not declared by azure-core
    # The SDK gives either a plain string or a StorageErrorCode str-enum member.
    return str(getattr(code, "value", code) or "no error code")


def _short_reason(exc: Exception) -> str:
    """First line of an SDK message (they run to pages of XML), redacted and truncated."""
    lines = str(getattr(exc, "message", None) or exc).strip().splitlines()
    reason = redact(lines[0].strip()) if lines else type(exc).__name__
    if len(reason) > _MAX_REASON_LENGTH:
        reason = reason[: _MAX_REASON_LENGTH - 3] + "..."
    return reason
