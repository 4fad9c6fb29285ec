"""Azure Service Bus queue and subscription lengths, as KEDA's azure-servicebus scaler reads them.

The value is the entity's ActiveMessageCount from the administration API's runtime properties
(`ServiceBusAdministrationClient.get_queue_runtime_properties` /
`get_subscription_runtime_properties` of the official `azure-servicebus` package): dead-lettered,
scheduled and transfer messages are not counted, as in KEDA. With `useRegex`, `queueName` (or
`subscriptionName`, under `topicName`) is a regular expression that must match a whole name; the
matching entities' counts are combined by `operation`: `sum` (default), `max`, or `avg` (the
integer average, rounded down, as KEDA's). No entity matching is a reading of 0, as in KEDA.

Credentials:
- a connection string from an environment variable (`connectionFromEnv`, default
  SERVICEBUS_CONNECTION_STRING): a SAS policy's key or a SAS token. Reading runtime properties
  needs the Manage claim (the service answers 401 otherwise);
- `namespace` instead: Azure AD tokens from `azure-identity`'s DefaultAzureCredential (workload
  identity in AKS, a managed identity...), for `{namespace}.{suffix}`, the suffix of `cloud` or
  `endpointSuffix` (cloud Private). KEDA's `azure-workload` pod identity, with the autoscaler's own
  identity (it needs the Azure Service Bus Data Owner role: reading descriptions is Manage).

The SDK is imported when the first reader opens: the registry imports this module only for a rule
of this type. The SDK's own retries are off; ours (eventscaler.retry) are bounded by the tick.
What the two Azure sources share (the credential fields, the transport, the process's one
DefaultAzureCredential, the error classes) is in eventscaler.sources.azure_common.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eventscaler import retry
from eventscaler.fields import ConfigError, parse_bool, parse_choice, parse_str, parse_text, show
from eventscaler.redact import first_line
from eventscaler.sources import azure_common, base
from eventscaler.sources.azure_common import (
    NoToken,
    TokenCredentialAdapter,
    register_connection_secrets,
    short_reason,
    transient_failure,
)
from eventscaler.sources.base import KedaTrigger, SourceOptions, SourceType, optional
from eventscaler.triggers import Trigger

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

logger = logging.getLogger(__name__)

DEFAULT_CONNECTION_ENV = "SERVICEBUS_CONNECTION_STRING"
DEFAULT_MESSAGE_COUNT = 5.0
OPERATIONS = {"sum": "sum", "max": "max", "avg": "avg"}
# KEDA's cloud names and the Service Bus endpoint suffix of each (Private: endpointSuffix).
CLOUD_SUFFIXES = {
    "AzurePublicCloud": "servicebus.windows.net",
    "AzureUSGovernmentCloud": "servicebus.usgovcloudapi.net",
    "AzureChinaCloud": "servicebus.chinacloudapi.cn",
    "Private": "",
}
# Service Bus naming rules: queues and topics up to 260 characters (slashes make paths),
# subscriptions up to 50; letters, digits, periods, hyphens, underscores.
_ENTITY_NAME = re.compile(r"^(?=.{1,260}$)[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9_])?$")
_SUBSCRIPTION_NAME = re.compile(r"^(?=.{1,50}$)[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9_])?$")
_NAMESPACE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{4,48}[A-Za-z0-9]$")
_DETAIL = re.compile(r"<Detail>(.*?)</Detail>", re.DOTALL)

# SourceError codes of this source.
ENTITY_NOT_FOUND = "EntityNotFound"
AUTHENTICATION_FAILED = "AuthenticationFailed"
MISSING_CONNECTION_STRING = "MissingConnectionString"
INVALID_CONNECTION_STRING = "InvalidConnectionString"
CREDENTIAL_UNAVAILABLE = "CredentialUnavailable"


@dataclass(frozen=True)
class ServiceBusSettings:
    """One `type: azure-servicebus` trigger's own fields (KEDA's names, in snake_case)."""

    queue_name: str = ""
    topic_name: str = ""
    subscription_name: str = ""
    connection_from_env: str = DEFAULT_CONNECTION_ENV  # "" when namespace (Azure AD) is used
    namespace: str = ""
    cloud: str = "AzurePublicCloud"
    endpoint_suffix: str = ""
    use_regex: bool = False
    operation: str = "sum"

    @property
    def uses_identity(self) -> bool:
        return bool(self.namespace)

    @property
    def entity(self) -> str:
        """What is read, safe to log: `queue q`, `subscription t/s`, or their patterns."""
        pattern = " pattern" if self.use_regex else ""
        if self.queue_name:
            return f"queue{pattern} {self.queue_name!r}"
        return f"subscription{pattern} {self.subscription_name!r} of topic {self.topic_name!r}"

    @property
    def credential_source(self) -> str:
        """Where the credential comes from, never the secret itself."""
        if self.uses_identity:
            return f"namespace {self.fully_qualified_namespace} with Azure AD"
        return f"connection string from env {self.connection_from_env}"

    @property
    def fully_qualified_namespace(self) -> str:
        suffix = self.endpoint_suffix or CLOUD_SUFFIXES.get(self.cloud, "")
        return f"{self.namespace}.{suffix}" if self.namespace else ""


def _text(value: Any, field: str) -> str:
    return parse_text(value, field)


def _parse_namespace(value: Any, field: str) -> str:
    what = "a Service Bus namespace name (6-50 letters, digits and hyphens, without the domain)"
    return parse_str(value, field, _NAMESPACE, what)


class AzureServiceBus(SourceType):
    """`type: azure-servicebus`: the active messages of a queue or a topic's subscription."""

    type = "azure-servicebus"
    settings = ServiceBusSettings
    target_key = "messageCount"
    target_default = DEFAULT_MESSAGE_COUNT
    activation_key = "activationMessageCount"
    fields = (
        optional("queueName", _text, ""),
        optional("topicName", _text, ""),
        optional("subscriptionName", _text, ""),
        *azure_common.credential_fields(DEFAULT_CONNECTION_ENV, "namespace", _parse_namespace,
                                        CLOUD_SUFFIXES, "servicebus.example.net"),
        optional("useRegex", parse_bool, False),
        optional("operation", lambda v, f: parse_choice(v, f, OPERATIONS), "sum"),
    )  # fmt: skip

    def check(self, values: dict[str, Any], data: Mapping[str, Any], field: str) -> dict[str, Any]:
        """A queue, or a topic and a subscription; names or patterns; one kind of credential."""
        _check_entity(values, data, field)
        if "operation" in data and not values["use_regex"]:
            raise ConfigError(f"{field}.operation", "only applies with useRegex: true")
        return azure_common.check_credentials(values, data, field, "namespace")

    def default_name(self, settings: ServiceBusSettings) -> str:
        if settings.queue_name:
            return "queue-regex" if settings.use_regex else settings.queue_name
        return "topic-regex" if settings.use_regex else settings.topic_name

    def describe(self, settings: ServiceBusSettings) -> str:
        return f"azure-servicebus {settings.entity}"

    def details(self, settings: ServiceBusSettings) -> tuple[str, ...]:
        return (settings.operation,) if settings.use_regex else ()

    def open(self, options: SourceOptions) -> ServiceBusSource:
        return ServiceBusSource(options.environ, options.timeout_seconds, options.pool_size)

    def simulated_value(self, settings: ServiceBusSettings, backlog: int, in_flight: int) -> float:
        # ActiveMessageCount counts locked (received, not yet completed) messages too: a message
        # leaves the count when its worker completes it.
        return float(backlog)

    def credential_envs(self, fields: Mapping[str, Any]) -> list[str]:
        return azure_common.credential_envs(fields, "namespace", DEFAULT_CONNECTION_ENV)

    def from_keda(self, keda: KedaTrigger) -> dict[str, Any] | None:
        return _from_keda(self, keda)


SOURCE_TYPE = AzureServiceBus()


def _check_entity(values: dict[str, Any], data: Mapping[str, Any], field: str) -> None:
    queue, topic, subscription = (
        values["queue_name"],
        values["topic_name"],
        values["subscription_name"],
    )
    if queue and topic:
        raise ConfigError(f"{field}.topicName", "give queueName, or topicName and "
                                                 "subscriptionName, not both")  # fmt: skip
    if queue and subscription:
        raise ConfigError(f"{field}.subscriptionName", "only applies with topicName")
    if not queue and not topic:
        raise ConfigError(f"{field}.queueName", "give queueName, or topicName and subscriptionName")
    if topic and not subscription:
        raise ConfigError(f"{field}.subscriptionName", "is required with topicName")
    if topic:
        parse_str(topic, f"{field}.topicName", _ENTITY_NAME, "a Service Bus topic name")
    regex = values["use_regex"]
    key, value = ("queueName", queue) if queue else ("subscriptionName", subscription)
    if regex:
        _compile_pattern(value, f"{field}.{key}")
    elif queue:
        parse_str(queue, f"{field}.queueName", _ENTITY_NAME, "a Service Bus queue name (letters, "
                  "digits, '.', '-', '_', '/'; or set useRegex: true for a pattern)")  # fmt: skip
    else:
        parse_str(subscription, f"{field}.subscriptionName", _SUBSCRIPTION_NAME,
                  "a Service Bus subscription name (up to 50 letters, digits, '.', '-', '_'; or "
                  "set useRegex: true for a pattern)")  # fmt: skip


def _compile_pattern(pattern: str, field: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        why = f"not a valid regular expression ({exc}), got {show(pattern)}"
        raise ConfigError(field, why) from None


def servicebus_trigger(
    message_count: float = DEFAULT_MESSAGE_COUNT,
    activation: float = 0.0,
    name: str = "",
    **settings: Any,
) -> Trigger:
    """A trigger built in code (tests, the simulator), as the rule file would build it."""
    loaded = ServiceBusSettings(**settings)
    return Trigger(
        AzureServiceBus.type,
        name or SOURCE_TYPE.default_name(loaded),
        loaded,
        message_count,
        activation,
    )


# ---------------------------------------------------------------------------------------------
# reading

KIND_OF_CODE = {
    ENTITY_NOT_FOUND: base.NOT_FOUND,
    AUTHENTICATION_FAILED: base.UNAUTHORIZED,
    MISSING_CONNECTION_STRING: base.MISSING_CREDENTIAL,
    INVALID_CONNECTION_STRING: base.INVALID_CREDENTIAL,
    CREDENTIAL_UNAVAILABLE: base.MISSING_CREDENTIAL,
    base.TIMEOUT: base.TIMEOUT,
    base.UNAVAILABLE: base.UNAVAILABLE,
    base.BAD_RESPONSE: base.BAD_RESPONSE,
    base.SERVICE_ERROR: base.SERVICE_ERROR,
}


def _error(settings: ServiceBusSettings, code: str, detail: str) -> base.SourceError:
    message = f"azure-servicebus {settings.entity} ({settings.credential_source}): {code}: {detail}"
    return base.SourceError(KIND_OF_CODE[code], message, code)


class ServiceBusSource:
    """Reads queue and subscription lengths; safe to call from many threads at once.

    One ServiceBusAdministrationClient (one HTTP connection pool) per distinct connection string
    (keyed by its digest, so a rotated secret gets a fresh client) or per namespace for Azure AD,
    built on first use and closed in `close()`.

    `credential` replaces the process's DefaultAzureCredential and `namespace_host` the
    `{namespace}.{suffix}` host (tests point both at the stand-in of tests/support/).
    """

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        timeout_seconds: float = 5.0,
        pool_size: int = 16,
        credential: TokenCredential | None = None,
        namespace_host: Callable[[ServiceBusSettings], str] | None = None,
    ) -> None:
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._timeout = timeout_seconds
        self._pool_size = pool_size
        self._given_credential = credential
        # Built on the first namespace trigger (the process's one DefaultAzureCredential, shared
        # with azure-queue): a daemon with connection strings only never constructs it.
        self._credential: TokenCredentialAdapter | None = None
        self._namespace_host = namespace_host or (lambda s: s.fully_qualified_namespace)
        self._lock = threading.Lock()  # guards the caches; calls run outside it
        self._clients: dict[str, Any] = {}

    def read(self, trigger: Trigger) -> float:
        settings: ServiceBusSettings = trigger.settings
        client, host = self._client(settings)
        from azure.core.exceptions import AzureError

        try:
            return retry.call(lambda: _count(client, settings, self._timeout), transient_failure)
        except NoToken as exc:
            reason = short_reason(exc.__cause__ or exc)
            raise _error(settings, CREDENTIAL_UNAVAILABLE, f"no Azure AD token: {reason}") from None
        except AzureError as exc:
            raise _translate(exc, settings, host, self._timeout) from None

    def close(self) -> None:
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for client in clients:
            client.close()

    def _client(self, settings: ServiceBusSettings) -> tuple[Any, str]:
        if settings.uses_identity:
            host = self._namespace_host(settings)
            key, build = host, lambda: self._identity_client(host, settings)
        else:
            connection = self._environ.get(settings.connection_from_env, "").strip()
            if not connection:
                raise _error(settings, MISSING_CONNECTION_STRING,
                             "the environment variable is unset or empty")  # fmt: skip
            key = hashlib.sha256(connection.encode()).hexdigest()
            host = _endpoint_host(connection)
            build = lambda: self._connection_client(connection, settings)  # noqa: E731
        client = self._clients.get(key)  # a dict read is atomic: the fast path takes no lock
        if client is None:
            with self._lock:
                client = self._clients.get(key) or build()
                self._clients[key] = client
        return client, host

    def _connection_client(self, connection: str, settings: ServiceBusSettings) -> Any:
        from azure.servicebus.management import ServiceBusAdministrationClient

        register_connection_secrets(connection)
        try:
            return ServiceBusAdministrationClient.from_connection_string(
                connection, **self._client_options()
            )
        except (ValueError, TypeError, UnboundLocalError):
            # `from None`: never chain an exception that might carry the value along.
            raise _error(settings, INVALID_CONNECTION_STRING,
                         "the connection string is malformed (Endpoint=sb://...;"
                         "SharedAccessKeyName=...;SharedAccessKey=...)") from None  # fmt: skip

    def _identity_client(self, host: str, settings: ServiceBusSettings) -> Any:
        """Called under `self._lock`: the credential is built once per source."""
        from azure.servicebus.management import ServiceBusAdministrationClient

        if self._credential is None:
            try:
                self._credential = azure_common.adapted_credential(self._given_credential)
            except azure_common.NoCredential as exc:
                raise _error(settings, CREDENTIAL_UNAVAILABLE, str(exc)) from None
        return ServiceBusAdministrationClient(host, self._credential, **self._client_options())

    def _client_options(self) -> dict[str, Any]:
        """Timeouts, pool size and no SDK retries, whatever the credential."""
        transport = azure_common.pooled_transport(self._pool_size, self._timeout)
        return {"transport": transport, "retry_total": 0}


def _count(client: Any, settings: ServiceBusSettings, timeout: float) -> float:
    timeouts = azure_common.call_timeouts(timeout)
    if not settings.use_regex:
        if settings.queue_name:
            props = client.get_queue_runtime_properties(settings.queue_name, **timeouts)
        else:
            props = client.get_subscription_runtime_properties(
                settings.topic_name, settings.subscription_name, **timeouts
            )
        return _active(props, settings)
    if settings.queue_name:
        listed = client.list_queues_runtime_properties(**timeouts)
    else:
        listed = client.list_subscriptions_runtime_properties(settings.topic_name, **timeouts)
    pattern = re.compile(settings.queue_name or settings.subscription_name)
    counts = [_active(p, settings) for p in listed if pattern.fullmatch(p.name)]
    return combine(counts, settings.operation)


def _active(props: Any, settings: ServiceBusSettings) -> float:
    count = getattr(props, "active_message_count", None)
    if count is None:  # never guess 0: a missing count must not scale anything down
        raise _error(settings, base.BAD_RESPONSE, "the answer carried no ActiveMessageCount")
    return float(count)


def combine(counts: list[float], operation: str) -> float:
    """KEDA's arithmetic over the matching entities: no entity is 0; avg is rounded down."""
    if not counts:
        return 0.0
    if operation == "max":
        return max(counts)
    if operation == "avg":
        return float(int(sum(counts)) // len(counts))
    return sum(counts)


def _endpoint_host(connection: str) -> str:
    """The namespace host of a connection string, for messages (never a secret)."""
    endpoint = azure_common.connection_parts(connection).get("endpoint", "")
    return endpoint.split("//", 1)[-1].rstrip("/") or "the namespace"


def _translate(
    exc: Exception, settings: ServiceBusSettings, host: str, timeout: float
) -> base.SourceError:
    failure = azure_common.classify(exc)
    status = getattr(exc, "status_code", None)
    if failure == azure_common.NOT_FOUND:
        return _error(settings, ENTITY_NOT_FOUND, f"{_missing(settings)} in {host}")
    if failure == azure_common.NOT_SIGNED:
        return _error(settings, CREDENTIAL_UNAVAILABLE, f"no Azure AD token: {short_reason(exc)}")
    if failure == azure_common.REFUSED:
        return _error(
            settings,
            AUTHENTICATION_FAILED,
            f"{host} refused the credentials (HTTP {status}: {_service_detail(exc)}): check the "
            "key, and that its policy has the Manage claim (reading runtime properties needs it)",
        )
    if failure == azure_common.TIMEOUT:
        return _error(settings, base.TIMEOUT, f"no answer from {host} (timeout {timeout:g} s)")
    if failure == azure_common.UNREACHABLE:
        return _error(settings, base.UNAVAILABLE, f"cannot reach {host}: {short_reason(exc)}")
    if failure == azure_common.HTTP_ERROR and status is not None:
        return _error(settings, base.SERVICE_ERROR, f"HTTP {status}: {_service_detail(exc)}")
    return _error(settings, base.SERVICE_ERROR, f"{type(exc).__name__}: {short_reason(exc)}")


def _missing(settings: ServiceBusSettings) -> str:
    if settings.queue_name:
        return "the queue does not exist"
    if settings.use_regex:
        return "the topic does not exist"
    return "the subscription or its topic does not exist"


def _service_detail(exc: Exception) -> str:
    """The service's own words (`<Error><Detail>`), less its tracking ids; the SDK keeps the body
    only in the response for 401 and 404."""
    try:
        body = exc.response.text()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - no body is a fine answer here
        body = ""
    found = _DETAIL.search(body or "")
    detail = found.group(1) if found else short_reason(exc)
    return first_line(detail.split(" TrackingId:")[0].strip()) or "no detail"


# ---------------------------------------------------------------------------------------------
# convert


# KEDA's cloud names (matched without case) and the rule file's.
KEDA_CLOUDS = {**azure_common.KEDA_CLOUDS, "private": "Private"}
# Metadata convert reads that the rule file spells otherwise (KEDA v1's names).
KEDA_V1_KEYS = {"connection": "connectionFromEnv", "queueLength": "messageCount"}
_IDENTITY_KEYS = ("namespace", "cloud", "endpointSuffix")


def _from_keda(source: AzureServiceBus, keda: KedaTrigger) -> dict[str, Any] | None:
    metadata = dict(keda.metadata)
    for old, new in KEDA_V1_KEYS.items():
        if old in metadata and new not in metadata:
            keda.note(f"metadata.{old}", f"KEDA v1's name for {new}: written as {new}")
            metadata[new] = metadata.pop(old)
    renamed = _Renamed(keda, metadata)
    out = SourceType.from_keda(source, renamed)  # type: ignore[arg-type]
    if out is None:
        return None
    if "operation" in out and str(out.get("useRegex", "")).lower() != "true":
        keda.lost("metadata.operation", "KEDA ignores it without useRegex: true; left out")
        out.pop("operation")
    if "cloud" in out:
        cloud = KEDA_CLOUDS.get(str(out["cloud"]).lower())
        if cloud is None:
            why = "no cloud of that name here; give cloud Private and endpointSuffix"
            keda.lost("metadata.cloud", f"{out['cloud']!r}: {why}; trigger not converted")
            return None
        out["cloud"] = cloud
    _keda_credentials(keda, out)
    return out


class _Renamed:
    """A KedaTrigger whose metadata has v1's keys renamed (the rest is the original's)."""

    def __init__(self, keda: KedaTrigger, metadata: dict[str, Any]) -> None:
        self._keda = keda
        self.metadata = metadata

    def __getattr__(self, name: str) -> Any:
        return getattr(self._keda, name)


def _keda_credentials(keda: KedaTrigger, out: dict[str, Any]) -> None:
    """connectionFromEnv, a TriggerAuthentication's Secret, or workload identity with namespace."""
    secret = azure_common.auth_secret(keda)
    what = azure_common.auth_name(keda) if isinstance(keda.auth_ref, Mapping) else ""
    if secret is not None and "connectionFromEnv" not in out:
        keda.note("authenticationRef", azure_common.secret_to_env(keda, secret, out))
    elif "connectionFromEnv" in out:
        env = out["connectionFromEnv"]
        keda.note("metadata.connectionFromEnv", f"KEDA reads {env} from the scaled workload's "
                  f"container; eventscaler reads it from its own: give the autoscaler's "
                  f"container an env var {env} from the same Secret")  # fmt: skip
    elif azure_common.auth_provider(keda) == "azure-workload" and out.get("namespace"):
        keda.note("authenticationRef", f"{what}: workload identity; eventscaler reads namespace "
                  f"{out['namespace']} with its own Azure AD identity (DefaultAzureCredential): "
                  "give the autoscaler's ServiceAccount workload identity and the Azure Service "
                  "Bus Data Owner role")  # fmt: skip
        return
    elif what:
        keda.lost("authenticationRef", f"{what} is not in this input or maps no 'connection' "
                  "this converter can follow: expose the connection string to the autoscaler as "
                  "an env var and set connectionFromEnv to its name (now "
                  f"{DEFAULT_CONNECTION_ENV}, the default)")  # fmt: skip
    for key in _IDENTITY_KEYS:
        if key in out:
            keda.lost(f"metadata.{key}", "a connection string is used: the namespace comes "
                                         "from it; left out")  # fmt: skip
            out.pop(key)
