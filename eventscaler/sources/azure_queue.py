"""Azure Storage Queue lengths, counted the way KEDA's azure-queue scaler counts them.

The only module of the daemon that imports the Azure Storage SDK (what it shares with
azure-servicebus, the transport, the process's credential and the error classes, is in
eventscaler.sources.azure_common). It turns every SDK failure into a `QueueReadError` whose message
names the queue and where the credential comes from (the environment variable, or the account for
Azure AD), never a connection string, key or token.

Credentials:
- a connection string from an environment variable (shared key or SAS), the default;
- `accountName` (KEDA's name): Azure AD tokens from `azure-identity`'s `DefaultAzureCredential`,
  which finds workload identity in AKS, a managed identity, a service principal in the environment
  or a developer's Azure CLI login. One credential per process (shared with azure-servicebus),
  built on the first such trigger; the account URL is `https://{account}.queue.{endpointSuffix}`.

Strategies:
- `all` (default): the queue's approximate message count. It includes in-flight messages (received
  but not yet deleted) on purpose, so workers busy with a message are not scaled away.
- `visibleOnly`: peek up to 32 messages; at 32 or more, fall back to the approximate count.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError, HttpResponseError
from azure.storage.queue import LinearRetry, QueueClient, QueueServiceClient

from eventscaler import retry
from eventscaler.fields import parse_choice, parse_str
from eventscaler.redact import first_line
from eventscaler.sources import azure_common, base
from eventscaler.sources.azure_common import (
    NoToken,
    TokenCredentialAdapter,
    register_connection_secrets,
    short_reason,
    transient_failure,
)
from eventscaler.sources.base import KedaTrigger, SourceOptions, SourceType, optional, required
from eventscaler.triggers import Trigger

logger = logging.getLogger(__name__)

STRATEGY_ALL = "all"
STRATEGY_VISIBLE_ONLY = "visibleonly"  # compared lower-cased: KEDA writes `visibleonly`
DEFAULT_POOL_SIZE = 16  # HTTP connections kept per storage account
PEEK_LIMIT = 32  # the most messages the service returns from one peek

# Retries are ours (eventscaler.retry): backoff with jitter, 429/503 Retry-After honoured, and all
# of it bounded by the tick. The SDK's own policy is off: its default (ExponentialRetry, 3 retries
# from 15 s on) can hold one read for about a minute, and it ignores the tick.

# QueueReadError.kind values.
QUEUE_NOT_FOUND = "QueueNotFound"
AUTHENTICATION_FAILED = "AuthenticationFailed"
MISSING_CONNECTION_STRING = "MissingConnectionString"
INVALID_CONNECTION_STRING = "InvalidConnectionString"
CREDENTIAL_UNAVAILABLE = "CredentialUnavailable"  # no Azure AD token: the identity is not set up
TIMEOUT = "Timeout"
CONNECTION_ERROR = "ConnectionError"
SERVICE_ERROR = "ServiceError"

DEFAULT_CONNECTION_ENV = "AZURE_STORAGE_CONNECTION_STRING"
DEFAULT_QUEUE_LENGTH = 5.0
QUEUE_LENGTH_STRATEGIES = {"all": "all", "visibleonly": "visibleOnly"}
# KEDA's cloud names and the storage endpoint suffix of each.
CLOUD_SUFFIXES = {
    "AzurePublicCloud": "core.windows.net",
    "AzureUSGovernmentCloud": "core.usgovcloudapi.net",
    "AzureChinaCloud": "core.chinacloudapi.cn",
    "Private": "",
}
_QUEUE_NAME = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")
_ACCOUNT_NAME = re.compile(r"^[a-z0-9]{3,24}$")


@dataclass(frozen=True)
class AzureQueueSettings:
    """One `type: azure-queue` trigger's own fields (KEDA's names, in snake_case)."""

    queue_name: str
    queue_length_strategy: str = "all"  # "all" or "visibleOnly"
    connection_from_env: str = DEFAULT_CONNECTION_ENV  # "" when account_name is used instead
    # Azure AD authentication instead of a connection string (KEDA's `accountName` + `cloud`).
    account_name: str = ""
    cloud: str = "AzurePublicCloud"
    endpoint_suffix: str = ""  # required with cloud "Private"

    @property
    def uses_identity(self) -> bool:
        return bool(self.account_name)

    @property
    def credential_source(self) -> str:
        """Where the credential comes from, safe to log: never the secret itself."""
        if self.uses_identity:
            return f"account {self.account_name} with Azure AD (DefaultAzureCredential)"
        return f"connection string from env {self.connection_from_env}"

    @property
    def label(self) -> str:
        return self.queue_name


def _parse_queue_name(value: Any, field: str) -> str:
    what = "an Azure queue name (3-63 lowercase letters, digits and single hyphens)"
    return parse_str(value, field, _QUEUE_NAME, what)


def _parse_account(value: Any, field: str) -> str:
    what = "a storage account name (3-24 lowercase letters and digits)"
    return parse_str(value, field, _ACCOUNT_NAME, what)


class AzureQueue(SourceType):
    """`type: azure-queue`: the approximate message count of an Azure Storage queue."""

    type = "azure-queue"
    settings = AzureQueueSettings
    target_key = "queueLength"
    target_default = DEFAULT_QUEUE_LENGTH
    activation_key = "activationQueueLength"
    fields = (
        required("queueName", _parse_queue_name),
        optional("queueLengthStrategy", lambda v, f: parse_choice(v, f, QUEUE_LENGTH_STRATEGIES),
                 "all"),
        *azure_common.credential_fields(DEFAULT_CONNECTION_ENV, "accountName", _parse_account,
                                        CLOUD_SUFFIXES, "core.example.net"),
    )  # fmt: skip

    def check(self, values: dict[str, Any], data: Mapping[str, Any], field: str) -> dict[str, Any]:
        """A connection string from an env var (the default), or an account with Azure AD."""
        values = azure_common.check_credentials(values, data, field, "accountName")
        if "accountName" not in data:
            return values
        suffix = values["endpoint_suffix"] or CLOUD_SUFFIXES[values["cloud"]]
        return {**values, "endpoint_suffix": suffix}

    def default_name(self, settings: AzureQueueSettings) -> str:
        return settings.queue_name

    def describe(self, settings: AzureQueueSettings) -> str:
        return f"azure-queue {settings.queue_name}"

    def details(self, settings: AzureQueueSettings) -> tuple[str, ...]:
        return (settings.queue_length_strategy,)

    def open(self, options: SourceOptions) -> AzureQueueSource:
        return AzureQueueSource(options.environ, options.timeout_seconds, options.pool_size)

    def simulated_value(self, settings: AzureQueueSettings, backlog: int, in_flight: int) -> float:
        # The approximate count keeps received messages until they are deleted; a peek sees
        # only the visible ones.
        if settings.queue_length_strategy == "visibleOnly":
            return float(max(backlog - in_flight, 0))
        return float(backlog)

    def credential_envs(self, fields: Mapping[str, Any]) -> list[str]:
        return azure_common.credential_envs(fields, "accountName", DEFAULT_CONNECTION_ENV)

    def from_keda(self, keda: KedaTrigger) -> dict[str, Any] | None:
        metadata = keda.metadata
        if not metadata.get("queueName"):
            keda.lost("metadata.queueName", "missing: trigger not converted")
            return None
        out: dict[str, Any] = {"queueName": str(metadata["queueName"])}
        for key in ("queueLength", "activationQueueLength"):
            if key in metadata:
                value = keda.number(metadata[key])
                if value is None or value < 0:
                    keda.lost(
                        f"metadata.{key}",
                        f"expected a number, got {metadata[key]!r}: left out, the default applies",
                    )
                else:
                    out[key] = value
        if "queueLengthStrategy" in metadata:
            strategy = str(metadata["queueLengthStrategy"]).lower()
            if strategy in QUEUE_LENGTH_STRATEGIES:
                out["queueLengthStrategy"] = QUEUE_LENGTH_STRATEGIES[strategy]
            else:
                keda.lost(
                    "metadata.queueLengthStrategy",
                    f"expected all or visibleonly, got {metadata['queueLengthStrategy']!r}: "
                    "left out, 'all' applies",
                )
        if not _keda_credentials(keda, out):
            return None
        for key in metadata:
            if key not in self.keys() and key not in KEDA_ONLY_KEYS:
                keda.lost(f"metadata.{key}", "not an azure-queue setting eventscaler knows")
        return out


SOURCE_TYPE = AzureQueue()
# KEDA metadata convert reads that the rule file spells otherwise (v1's `connection`).
KEDA_ONLY_KEYS = {"connection"}
V1_DEFAULT_CONNECTION_ENV = "AzureWebJobsStorage"


def azure_queue_trigger(
    queue_name: str,
    queue_length: float = DEFAULT_QUEUE_LENGTH,
    activation_queue_length: float = 0.0,
    name: str = "",
    **settings: Any,
) -> Trigger:
    """A trigger built in code (tests, the simulator), as the rule file would build it."""
    return Trigger(
        AzureQueue.type,
        name or queue_name,
        AzureQueueSettings(queue_name, **settings),
        queue_length,
        activation_queue_length,
    )


AccountUrl = Callable[[AzureQueueSettings], str]


# The project's error kind of each of this source's codes.
KIND_OF_CODE = {
    QUEUE_NOT_FOUND: base.NOT_FOUND,
    AUTHENTICATION_FAILED: base.UNAUTHORIZED,
    MISSING_CONNECTION_STRING: base.MISSING_CREDENTIAL,
    INVALID_CONNECTION_STRING: base.INVALID_CREDENTIAL,
    CREDENTIAL_UNAVAILABLE: base.MISSING_CREDENTIAL,
    TIMEOUT: base.TIMEOUT,
    CONNECTION_ERROR: base.UNAVAILABLE,
    SERVICE_ERROR: base.SERVICE_ERROR,
}


class QueueReadError(base.SourceError):
    """A queue length could not be read. Never a reading of 0: the caller must not scale on it.

    `code` is this source's word (see the constants above), `kind` the project's; `str()` is one
    line that names the queue and the environment variable or the account, never the connection
    string, key or token.
    """

    def __init__(self, queue_name: str, code: str, message: str) -> None:
        super().__init__(KIND_OF_CODE.get(code, base.SERVICE_ERROR), message, code)
        self.queue_name = queue_name


class _NoRetry(LinearRetry):
    """The SDK's retry policy, never retrying. (retry_total=0 does not do it: the storage policy
    reads a count of 0 as "no limit".)"""

    def increment(
        self,
        settings: dict[str, Any],
        request: Any,
        response: Any | None = None,
        error: AzureError | None = None,
    ) -> bool:
        return False


class AzureQueueSource:
    """Reads queue lengths; safe to call from many threads at once.

    Clients are built on first use and reused across ticks: one QueueServiceClient (one HTTP
    connection pool) per distinct connection string or, for Azure AD triggers, per account URL;
    one QueueClient per queue. Connection-string clients are keyed by a hash of the value, so a
    rotated secret gets a fresh client. Azure AD clients share one credential, which caches tokens.

    `credential` and `account_url` replace the process's DefaultAzureCredential and
    `default_account_url` (tests point them at an emulator).
    """

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        timeout_seconds: float = 5.0,
        pool_size: int = DEFAULT_POOL_SIZE,
        credential: TokenCredential | None = None,
        account_url: AccountUrl | None = None,
    ) -> None:
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._timeout_seconds = timeout_seconds
        self._pool_size = pool_size
        self._given_credential = credential
        self._account_url: AccountUrl = account_url or default_account_url
        # Built on the first Azure AD trigger: a daemon with connection strings only never
        # constructs DefaultAzureCredential.
        self._credential: TokenCredentialAdapter | None = None
        # Guards cache creation only; network calls run outside it, concurrently.
        self._lock = threading.Lock()
        self._services: dict[str, QueueServiceClient] = {}
        self._queues: dict[tuple[str, str], QueueClient] = {}
        # Which connection string (by digest) each env var held last, to drop replaced clients.
        self._digest_by_env: dict[str, str] = {}

    def __repr__(self) -> str:
        clients = len(self._services)
        return f"AzureQueueSource(timeout_seconds={self._timeout_seconds}, clients={clients})"

    def read(self, trigger: Trigger) -> float:
        return float(self.read_length(trigger.settings))

    def read_length(self, trigger: AzureQueueSettings) -> int:
        """Return the queue length for `trigger`'s strategy, or raise QueueReadError."""
        strategy = trigger.queue_length_strategy.lower()
        if strategy not in (STRATEGY_ALL, STRATEGY_VISIBLE_ONLY):
            # The config loader rejects this; reaching it is a bug, not a queue problem.
            raise ValueError(f"unknown queueLengthStrategy {trigger.queue_length_strategy!r}")
        queue = self._get_queue_client(trigger)

        def count_messages() -> int | None:
            timeouts = azure_common.call_timeouts(self._timeout_seconds)
            if strategy == STRATEGY_VISIBLE_ONLY:
                peeked = queue.peek_messages(max_messages=PEEK_LIMIT, **timeouts)
                if len(peeked) < PEEK_LIMIT:
                    return len(peeked)
            count: int | None = queue.get_queue_properties(**timeouts).approximate_message_count
            return count

        try:
            count = retry.call(count_messages, transient_failure)
        except NoToken as exc:
            raise _credential_error(trigger, exc, queue.url) from exc.__cause__
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

    def _get_queue_client(self, trigger: AzureQueueSettings) -> QueueClient:
        if trigger.uses_identity:
            return self._get_identity_queue_client(trigger)
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

    def _get_identity_queue_client(self, trigger: AzureQueueSettings) -> QueueClient:
        url = self._account_url(trigger)
        key = (url, trigger.queue_name)
        # Same fast path as above: the URL of an account never changes, so neither do its clients.
        queue = self._queues.get(key)
        if queue is not None:
            return queue
        with self._lock:
            service = self._services.get(url)
            if service is None:
                credential = self._get_credential(trigger)
                service = self._open_service_client(
                    QueueServiceClient(url, credential=credential, **self._client_options()),
                    trigger,
                )
                self._services[url] = service
            queue = self._queues.get(key)
            if queue is None:
                queue = service.get_queue_client(trigger.queue_name)
                self._queues[key] = queue
            return queue

    def _get_credential(self, trigger: AzureQueueSettings) -> TokenCredentialAdapter:
        """The credential of every Azure AD client of this source; called under `self._lock`."""
        if self._credential is None:
            try:
                self._credential = azure_common.adapted_credential(self._given_credential)
            except azure_common.NoCredential as exc:
                raise _error(trigger, CREDENTIAL_UNAVAILABLE, str(exc)) from None
        return self._credential

    def _client_options(self) -> dict[str, Any]:
        """Timeouts, retries and pool size of every client, whatever its credential."""
        return {
            "transport": azure_common.pooled_transport(self._pool_size, self._timeout_seconds),
            "retry_policy": _NoRetry(),
        }

    def _open_service_client(
        self, service: QueueServiceClient, trigger: AzureQueueSettings
    ) -> QueueServiceClient:
        # Open the shared HTTP session now, under our lock: the SDK opens it lazily on the first
        # request, and two threads doing that at once would each create one.
        service.__enter__()
        logger.debug(
            "new storage client for %s (%s)", service.primary_hostname, trigger.credential_source
        )
        return service

    def _build_service_client(
        self, connection_string: str, trigger: AzureQueueSettings
    ) -> QueueServiceClient:
        parts = register_connection_secrets(connection_string)
        if "accountkey" in parts and not parts["accountkey"]:
            # The SDK accepts an empty key and only fails at the server, as a confusing 403.
            raise _error(trigger, INVALID_CONNECTION_STRING, "AccountKey is empty")
        try:
            service = QueueServiceClient.from_connection_string(
                connection_string, **self._client_options()
            )
        except ValueError:
            # `from None`: parse errors are generic today, but must never carry the value along.
            raise _error(
                trigger, INVALID_CONNECTION_STRING, "the connection string is malformed"
            ) from None
        return self._open_service_client(service, trigger)

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


def default_account_url(trigger: AzureQueueSettings) -> str:
    """`https://{account}.queue.{suffix}`, the suffix of the trigger's cloud or its own."""
    suffix = trigger.endpoint_suffix or CLOUD_SUFFIXES.get(trigger.cloud, "")
    if not trigger.account_name or not suffix:
        # The config loader requires both; reaching this is a bug, not a queue problem.
        raise ValueError(
            f"trigger {trigger.label!r} has no account name or endpoint suffix "
            f"(cloud {trigger.cloud!r})"
        )
    return f"https://{trigger.account_name}.queue.{suffix}"


def _error(trigger: AzureQueueSettings, kind: str, detail: str) -> QueueReadError:
    message = f"azure queue {trigger.queue_name!r} ({trigger.credential_source}): {kind}: {detail}"
    return QueueReadError(trigger.queue_name, kind, message)


def _credential_error(trigger: AzureQueueSettings, exc: NoToken, url: str) -> QueueReadError:
    """One line: which credential found no token for which account, and each reason it gave."""
    account_url = url.split("?", 1)[0].rsplit("/", 1)[0]  # the queue's URL, less the queue
    cause = exc.__cause__
    reason = azure_common.credential_reason(cause) if cause is not None else "no reason given"
    return _error(
        trigger,
        CREDENTIAL_UNAVAILABLE,
        f"{exc.credential_name} gave no Azure AD token for {account_url}: {reason}",
    )


def _translate_error(
    exc: AzureError, trigger: AzureQueueSettings, host: str, timeout: float
) -> QueueReadError:
    failure = azure_common.classify(exc)
    if failure == azure_common.NOT_FOUND:
        return _error(trigger, QUEUE_NOT_FOUND, "the queue does not exist")
    if failure == azure_common.NOT_SIGNED:
        if trigger.uses_identity:
            # A token credential fails through NoToken; this is one that broke some other way.
            return _error(trigger, CREDENTIAL_UNAVAILABLE, short_reason(exc))
        # Signing failed before any request was sent: the key is not valid base64.
        return _error(trigger, INVALID_CONNECTION_STRING, "the account key cannot sign requests")
    if failure == azure_common.REFUSED:
        return _refused(cast(HttpResponseError, exc), trigger, host)
    if failure == azure_common.TIMEOUT:
        return _error(trigger, TIMEOUT, f"no answer from {host} (timeout {timeout:g} s per try)")
    if failure == azure_common.UNREACHABLE:
        return _error(trigger, CONNECTION_ERROR, f"cannot reach {host}: {short_reason(exc)}")
    if failure == azure_common.HTTP_ERROR:
        status, code = cast(HttpResponseError, exc).status_code, _error_code(exc)
        return _error(trigger, SERVICE_ERROR, f"HTTP {status} {code}: {short_reason(exc)}")
    return _error(trigger, SERVICE_ERROR, f"{type(exc).__name__}: {short_reason(exc)}")


def _refused(exc: HttpResponseError, trigger: AzureQueueSettings, host: str) -> QueueReadError:
    """HTTP 401 or 403: what to check, for a key or SAS, or for an identity."""
    refused = f"{host} refused the credentials (HTTP {exc.status_code} {_error_code(exc)})"
    if not trigger.uses_identity:
        return _error(trigger, AUTHENTICATION_FAILED, f"{refused}: check the key or SAS")
    # The service says why it refused a token ("Invalid token audience.", "...expired"...).
    info = getattr(exc, "additional_info", None) or {}
    detail = info.get("authenticationerrordetail") if isinstance(info, dict) else None
    why = f" ({first_line(str(detail))})" if detail else ""
    return _error(
        trigger,
        AUTHENTICATION_FAILED,
        f"{refused}{why}: check the identity's role on the account (Storage Queue Data Reader)",
    )


def _error_code(exc: AzureError) -> str:
    code = getattr(exc, "error_code", None)  # set by the storage SDK, not declared by azure-core
    # The SDK gives either a plain string or a StorageErrorCode str-enum member.
    return str(getattr(code, "value", code) or "no error code")


# ---------------------------------------------------------------------------------------------
# convert: where a KEDA azure-queue trigger's credential comes from, and what to tell the user


def _keda_credentials(keda: KedaTrigger, out: dict[str, Any]) -> bool:
    """The credential fields into `out`; False when the trigger cannot be converted."""
    metadata = keda.metadata
    env, account = _keda_connection_env(keda), metadata.get("accountName")
    if env:
        _keda_connection_from_env(keda, env, out)
    elif account:
        out["accountName"] = str(account)
        if not _keda_cloud(keda, out):
            return False
        keda.note(
            "metadata.accountName",
            f"eventscaler reads account {account} with its own Azure AD identity "
            "(DefaultAzureCredential), not the scaled Deployment's: give the autoscaler's "
            "ServiceAccount workload identity and a role that reads the queue (Storage "
            "Queue Data Reader; see docs/azure-identity.md)",
        )
    if isinstance(keda.auth_ref, Mapping):
        _explain_keda_auth(keda, out, uses_env=bool(env), account=bool(account))
    elif not env and not account:
        keda.note(
            "metadata",
            "no connectionFromEnv nor authenticationRef (KEDA would refuse "
            "it): the rule reads the connection string from "
            f"{DEFAULT_CONNECTION_ENV}",
        )
    return True


def _keda_connection_from_env(keda: KedaTrigger, env: str, out: dict[str, Any]) -> None:
    """A connection string from `env`: what to give the autoscaler, and what is then ignored."""
    metadata = keda.metadata
    out["connectionFromEnv"] = env
    keda.note(
        "metadata.connectionFromEnv" if "connectionFromEnv" in metadata else "metadata",
        f"KEDA reads {env} from the scaled Deployment's container; eventscaler reads it "
        f"from its own: give the autoscaler's container an env var {env} from the same "
        "Secret (`convert --out DIR` writes that env entry when it finds the Deployment)",
    )
    for key in ("accountName", "cloud", "endpointSuffix"):
        if key in metadata:
            keda.lost(
                f"metadata.{key}",
                "a connection string is used (connectionFromEnv): "
                "the account and endpoint come from it",
            )


def _keda_connection_env(keda: KedaTrigger) -> str | None:
    """connectionFromEnv, or KEDA v1's `connection` (the same: the name of the worker's env var
    holding the connection string), or v1's default when neither nor any other credential is
    given."""
    metadata = keda.metadata
    if metadata.get("connectionFromEnv"):
        return str(metadata["connectionFromEnv"])
    if metadata.get("connection"):
        keda.note(
            "metadata.connection",
            "KEDA v1's name for connectionFromEnv (the worker's env "
            f"var holding the connection string): written as connectionFromEnv "
            f"{metadata['connection']}",
        )
        return str(metadata["connection"])
    no_other = not metadata.get("accountName") and not isinstance(keda.auth_ref, Mapping)
    if keda.v1 and no_other:
        keda.note(
            "metadata",
            f"no connection given: KEDA v1 read {V1_DEFAULT_CONNECTION_ENV}, and so does this rule",
        )
        return V1_DEFAULT_CONNECTION_ENV
    return None


# KEDA's cloud names: azure_common.KEDA_CLOUDS. KEDA's AzureGermanCloud (closed in 2021) is
# written as Private with its storage suffix.
KEDA_CLOUDS = azure_common.KEDA_CLOUDS
KEDA_GERMAN_CLOUD_SUFFIX = "core.cloudapi.de"
# KEDA's endpointSuffix (cloud Private) is all of the host after the account name
# (queue.core.example.net); the rule file's is what follows "queue." (core.example.net).
KEDA_QUEUE_HOST_PREFIX = "queue."


def _keda_cloud(keda: KedaTrigger, out: dict[str, Any]) -> bool:
    """KEDA's cloud and endpointSuffix, as the rule file says the same; False if it cannot.

    KEDA takes an empty or absent cloud as the public cloud and ignores endpointSuffix unless the
    cloud is Private; the rule file refuses both, so neither is written then.
    """
    metadata = keda.metadata
    cloud = str(metadata.get("cloud") or "")
    if cloud.lower() == "private":
        return _keda_private_cloud(keda, str(metadata.get("endpointSuffix") or ""), out)
    if "endpointSuffix" in metadata:
        keda.note("metadata.endpointSuffix", "dropped: KEDA ignores it unless cloud is Private")
    if not cloud:
        if "cloud" in metadata:
            keda.note("metadata.cloud", "empty: KEDA takes the public cloud, the default here")
        return True
    if cloud.lower() in KEDA_CLOUDS:
        if KEDA_CLOUDS[cloud.lower()] != "AzurePublicCloud":
            out["cloud"] = KEDA_CLOUDS[cloud.lower()]
        return True
    if cloud.lower() == "azuregermancloud":
        out.update(cloud="Private", endpointSuffix=KEDA_GERMAN_CLOUD_SUFFIX)
        keda.note("metadata.cloud", f"written as cloud Private, {KEDA_GERMAN_CLOUD_SUFFIX}")
        return True
    keda.lost(
        "metadata.cloud",
        f"{cloud!r}: no cloud of that name here (AzureStackCloud's endpoints are in a file on "
        "KEDA's pod): give cloud Private and the storage endpointSuffix; trigger not converted",
    )
    return False


def _keda_private_cloud(keda: KedaTrigger, suffix: str, out: dict[str, Any]) -> bool:
    if not suffix.lower().startswith(KEDA_QUEUE_HOST_PREFIX):
        keda.lost(
            "metadata.endpointSuffix",
            f"{suffix!r}: KEDA reads https://ACCOUNT.{suffix}, the rule file reads "
            "https://ACCOUNT.queue.SUFFIX: no endpointSuffix here says the same; trigger not "
            "converted",
        )
        return False
    ours = suffix[len(KEDA_QUEUE_HOST_PREFIX) :]
    out.update(cloud="Private", endpointSuffix=ours)
    keda.note(
        "metadata.endpointSuffix",
        f"{ours!r}: the rule file's endpointSuffix follows 'queue.' (the same host)",
    )
    return True


def _explain_keda_auth(
    keda: KedaTrigger, out: dict[str, Any], uses_env: bool, account: bool
) -> None:
    what = azure_common.auth_name(keda)
    base = f"{what}: eventscaler does not read TriggerAuthentications; it takes the connection "
    base += "string from its own environment (connectionFromEnv)"
    if out.get("accountName"):
        keda.lost(
            "authenticationRef",
            f"{what}: eventscaler uses its own Azure AD identity for account "
            f"{out['accountName']} (see accountName), not the TriggerAuthentication's "
            "pod identity",
        )
    elif uses_env:
        keda.lost("authenticationRef", f"{base}; connectionFromEnv is set, so the rule uses it")
    else:
        keda.lost("authenticationRef", base + _auth_advice(keda, out, what, account))


def _auth_advice(keda: KedaTrigger, out: dict[str, Any], what: str, account: bool) -> str:
    """What to do about a TriggerAuthentication, and the connectionFromEnv it leads to."""
    if keda.auth is None:
        return (
            f". {what} is not in this input: find the Secret it maps to the parameter "
            "'connection', expose that key to the autoscaler as an env var, and set "
            f"connectionFromEnv to its name (now {DEFAULT_CONNECTION_ENV}, the default)"
        )
    secret = azure_common.auth_secret(keda)
    if secret is not None:
        return ". " + azure_common.secret_to_env(keda, secret, out)
    provider = azure_common.auth_provider(keda)
    if provider and provider != "none":
        hint = " and accountName is missing, so KEDA itself would refuse it" if not account else ""
        return (
            f". {what} uses pod identity {provider!r}{hint}: give the trigger accountName "
            "(Azure AD with the autoscaler's own identity) or a connection string via "
            "connectionFromEnv"
        )
    return (
        f". {what} maps no 'connection' from a Secret that this converter can follow (env, "
        "vaults): expose the connection string to the autoscaler as an env var and set "
        "connectionFromEnv to its name"
    )
