"""What the Azure sources share (azure-queue, azure-servicebus); not itself a source.

- the rule file's credential fields: a connection string from an environment variable, or an
  identity field (`accountName`, `namespace`) with `cloud` and `endpointSuffix` for Azure AD;
- a connection string's parts, and every secret in them registered for redaction;
- the SDK's HTTP transport: a connection pool as large as the daemon's worker pool, the CA bundle
  and the proxies read once (not per call), urllib3's retries off; per-call timeouts cut to what
  the tick has left;
- Azure AD: the process's one DefaultAzureCredential, and an adapter that registers each token
  for redaction and tells a credential's failure (`NoToken`) from the service's answers;
- errors: which are worth another try, and which class of failure an SDK error is (each source
  words its own message);
- convert: KEDA's cloud names, a TriggerAuthentication's Secret and pod identity.

No Azure module is imported here at import time: azure.core and azure.identity are imported by
the first call that needs them, so loading a rule of a type whose SDK is lazy loads none.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

from eventscaler import retry
from eventscaler.fields import ConfigError, choices, parse_choice, parse_env_name, parse_str
from eventscaler.redact import first_line, redact, register_secret
from eventscaler.sources import azure_transport
from eventscaler.sources.base import Field, KedaTrigger, Parser, optional

if TYPE_CHECKING:
    import requests
    from azure.core.credentials import (
        AccessToken,
        AccessTokenInfo,
        TokenCredential,
        TokenRequestOptions,
    )
    from azure.core.pipeline.transport import RequestsTransport as _TransportBase
else:
    _TransportBase = object  # the real base is added by _pooled_transport_class()

logger = logging.getLogger(__name__)

# The SDK's HTTP logging policy logs every request and response, headers included, at INFO:
# one line per entity per tick, and noise around every real problem.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)
# A credential chain that finds no token logs a multi-line WARNING on every read (and an INFO line
# on every token refresh); the NoToken error carries each credential's reason on one line instead.
logging.getLogger("azure.identity._credentials.chained").setLevel(logging.ERROR)

PUBLIC_CLOUD = "AzurePublicCloud"
ENDPOINT_SUFFIX = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9-]+)+$")
# A credential chain's reason lists every credential it tried: allow room for a few of them.
_MAX_CREDENTIAL_REASON_LENGTH = 600

# ---------------------------------------------------------------------------------------------
# the rule file's credential fields


def credential_fields(
    default_env: str,
    identity_key: str,
    parse_identity: Parser,
    cloud_suffixes: Mapping[str, str],
    suffix_example: str,
) -> tuple[Field, ...]:
    """connectionFromEnv, the identity field (Azure AD instead), cloud and endpointSuffix."""
    what_suffix = f"a DNS suffix like {suffix_example!r}"
    return (
        optional("connectionFromEnv", parse_env_name, default_env, secret_env=True),
        optional(identity_key, parse_identity, ""),
        optional("cloud", lambda v, f: parse_choice(v, f, choices(*cloud_suffixes)), PUBLIC_CLOUD),
        optional("endpointSuffix", lambda v, f: parse_str(v, f, ENDPOINT_SUFFIX, what_suffix), ""),
    )


def check_credentials(
    values: dict[str, Any], data: Mapping[str, Any], field: str, identity_key: str
) -> dict[str, Any]:
    """A connection string from an env var (the default), or `identity_key` with Azure AD."""
    if identity_key not in data:
        for key in ("cloud", "endpointSuffix"):
            if key in data:
                raise ConfigError(f"{field}.{key}", f"only applies together with {identity_key}")
        return values
    if "connectionFromEnv" in data:
        raise ConfigError(
            f"{field}.{identity_key}",
            f"give connectionFromEnv (a connection string) or {identity_key} (Azure AD), not both",
        )
    cloud = values["cloud"]
    if cloud == "Private" and "endpointSuffix" not in data:
        raise ConfigError(f"{field}.endpointSuffix", "is required with cloud 'Private'")
    if cloud != "Private" and "endpointSuffix" in data:
        raise ConfigError(f"{field}.endpointSuffix", "only applies with cloud 'Private'")
    return {**values, "connection_from_env": ""}


def credential_envs(fields: Mapping[str, Any], identity_key: str, default_env: str) -> list[str]:
    """The environment variable a trigger's credential comes from; none for Azure AD."""
    if fields.get(identity_key):
        return []  # Azure AD: the autoscaler's own identity, no variable
    return [str(fields.get("connectionFromEnv") or default_env)]


# ---------------------------------------------------------------------------------------------
# connection strings

# Parts of a connection string that are secrets: a storage account key, a Service Bus policy key,
# a SAS token (either service's).
_SECRET_PARTS = ("accountkey", "sharedaccesskey", "sharedaccesssignature")


def register_connection_secrets(connection_string: str) -> dict[str, str]:
    """Tell the log redaction about a connection string and every secret part inside it.

    Returns its parts, as `connection_parts` does.
    """
    register_secret(connection_string)
    for name, value in _parts(connection_string):
        if name in _SECRET_PARTS:
            register_secret(value)
        if name == "sharedaccesssignature":
            _register_signature(value)
    return connection_parts(connection_string)


def connection_parts(connection_string: str) -> dict[str, str]:
    """A connection string's `Name=value` parts, names lower-cased (the last of a repeated one)."""
    return dict(_parts(connection_string))


def _parts(connection_string: str) -> list[tuple[str, str]]:
    parts = (part.partition("=") for part in connection_string.split(";"))
    return [(name.strip().lower(), value.strip()) for name, _, value in parts]


def _register_signature(sas: str) -> None:
    """A SAS token's signature travels in request URLs (and so in SDK errors) in either encoding."""
    for param in sas.lstrip("?").split("&"):
        key, _, sig = param.partition("=")
        if key.strip() == "sig":
            for variant in (sig, unquote(sig), quote(unquote(sig), safe="")):
                register_secret(variant)


# ---------------------------------------------------------------------------------------------
# the transport


def pooled_transport(pool_size: int, timeout_seconds: float) -> Any:
    """The Azure clients' transport, its pool `pool_size` connections per host: urllib3's pools
    directly (eventscaler/sources/azure_transport.py), the SDK's requests transport for the
    legacy requests none of the sources' calls make.

    A default pool keeps 10 connections per host: more concurrent reads would open and discard a
    connection each (with a urllib3 warning every time). Retries stay off at this level; each
    source turns the SDK's own off too (ours, in eventscaler.retry, are bounded by the tick).
    """
    legacy = functools.partial(requests_transport, pool_size, timeout_seconds)
    return azure_transport.build(pool_size, timeout_seconds, legacy)


def requests_transport(pool_size: int, timeout_seconds: float) -> _TransportBase:
    """The SDK's requests transport, pooled the same way."""
    transport: _TransportBase = _pooled_transport_class()(
        pool_size, connection_timeout=timeout_seconds, read_timeout=timeout_seconds
    )
    return transport


def call_timeouts(timeout_seconds: float) -> dict[str, Any]:
    """One SDK call's timeouts, cut to what the tick has left: a frozen service must not stretch
    a tick past its polling interval."""
    t = retry.call_timeout(timeout_seconds)
    return {"connection_timeout": t, "read_timeout": t}


class _PooledTransportMixin(_TransportBase):
    """What `pooled_transport` changes in RequestsTransport (its base when built at run time)."""

    def __init__(self, pool_size: int, **kwargs: Any) -> None:
        # With use_env_settings (requests' trust_env), requests re-reads the proxy variables,
        # the CA bundle variables and ~/.netrc from the environment on every call: 15-20 % of a
        # read's CPU, and in a pod the environment grows with the namespace's Services. The same
        # settings are read once instead: the CA bundle here, proxies once per host.
        kwargs.setdefault(
            "connection_verify",
            os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True,
        )
        super().__init__(use_env_settings=False, **kwargs)
        self._pool_size = pool_size
        self._proxies: dict[str, dict[str, str]] = {}

    def send(self, request: Any, **kwargs: Any) -> Any:
        import requests

        if "proxies" not in kwargs:
            host = urlsplit(request.url).netloc
            proxies = self._proxies.get(host)
            if proxies is None:  # HTTPS_PROXY, HTTP_PROXY and NO_PROXY, as requests reads them
                proxies = self._proxies[host] = requests.utils.get_environ_proxies(request.url)
            kwargs["proxies"] = proxies
        return super().send(request, **kwargs)

    def _init_session(self, session: requests.Session) -> None:
        from requests.adapters import HTTPAdapter
        from urllib3.util.retry import Retry

        super()._init_session(session)
        no_retries = Retry(total=False, redirect=False, raise_on_status=False)
        adapter = HTTPAdapter(pool_maxsize=self._pool_size, max_retries=no_retries)
        for prefix in self._protocols:
            session.mount(prefix, adapter)


@functools.cache
def _pooled_transport_class() -> type[_PooledTransportMixin]:
    """The mixin over the SDK's RequestsTransport, built on first use (azure.core is lazy)."""
    from azure.core.pipeline.transport import RequestsTransport

    class PooledTransport(_PooledTransportMixin, RequestsTransport):
        pass

    return PooledTransport


# ---------------------------------------------------------------------------------------------
# Azure AD

_process_credential: TokenCredential | None = None
_process_credential_lock = threading.Lock()


def process_credential() -> TokenCredential:
    """The process's one DefaultAzureCredential, built on first use (thread-safe).

    One object for every source and account: it caches its tokens (and a managed identity's
    endpoint discovery), so more instances would only ask Azure AD more often. ValueError when
    DefaultAzureCredential refuses its settings.
    """
    global _process_credential
    with _process_credential_lock:
        if _process_credential is None:
            # Imported here: a daemon with connection strings only never needs azure-identity.
            from azure.identity import DefaultAzureCredential

            _process_credential = DefaultAzureCredential()
            logger.info(
                "Azure AD credential: DefaultAzureCredential (workload identity, managed identity, "
                "environment or Azure CLI, whichever is set up first)"
            )
        return _process_credential


class NoCredential(Exception):
    """No credential could be built; the message is safe to show (it names no secret)."""


def adapted_credential(given: TokenCredential | None) -> TokenCredentialAdapter:
    """`given` (tests, an emulator), or the process's DefaultAzureCredential, adapted."""
    if given is not None:
        return TokenCredentialAdapter(given)
    try:
        inner = process_credential()
    except ValueError as exc:
        # DefaultAzureCredential refuses some settings, e.g. an unknown value of
        # AZURE_TOKEN_CREDENTIALS; its message names the variable, never a secret.
        raise NoCredential(f"DefaultAzureCredential cannot be built: {short_reason(exc)}") from None
    return TokenCredentialAdapter(inner, "DefaultAzureCredential")


class NoToken(Exception):
    """The credential gave no token. Raised from inside the SDK pipeline, chained to the cause.

    Deliberately not an AzureError: the SDK's retry policies retry those, and a credential chain
    already retries on its own (a managed identity endpoint, say); running it twice per read
    would only double the wait for the same answer.
    """

    def __init__(self, credential_name: str) -> None:
        super().__init__(f"{credential_name} gave no token")
        self.credential_name = credential_name


class TokenCredentialAdapter:
    """Wraps a TokenCredential: registers each token it hands out for log redaction, and turns
    its failures into `NoToken` so they are told apart from the service's answers.

    The SDK prefers `get_token_info` (the newer protocol) and falls back to `get_token`.
    """

    def __init__(self, inner: TokenCredential, name: str | None = None) -> None:
        self._inner = inner
        self.name = name or type(inner).__name__

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        from azure.core.exceptions import AzureError

        try:
            token = self._inner.get_token(
                *scopes, claims=claims, tenant_id=tenant_id, enable_cae=enable_cae, **kwargs
            )
        except AzureError as exc:
            raise NoToken(self.name) from exc
        register_secret(token.token, ephemeral=True)
        return token

    def get_token_info(
        self, *scopes: str, options: TokenRequestOptions | None = None
    ) -> AccessTokenInfo:
        from azure.core.credentials import AccessTokenInfo
        from azure.core.exceptions import AzureError

        try:
            get_info = getattr(self._inner, "get_token_info", None)
            if get_info is not None:
                info: AccessTokenInfo = get_info(*scopes, options=options)
            else:
                extra: dict[str, Any] = dict(options or {})
                token = self._inner.get_token(*scopes, **extra)
                info = AccessTokenInfo(token.token, token.expires_on)
        except AzureError as exc:
            raise NoToken(self.name) from exc
        register_secret(info.token, ephemeral=True)
        return info


def credential_reason(exc: BaseException) -> str:
    """A credential error on one line, redacted and truncated.

    A chain's message (DefaultAzureCredential, ChainedTokenCredential) runs to a dozen lines:
    a header, then one `\tName: reason` entry per credential tried, each reason possibly followed
    by a troubleshooting link on lines of its own. Each entry's first line is kept.
    """
    text = str(getattr(exc, "message", None) or exc)
    head, marker, rest = text.partition("Attempted credentials:")
    if marker:
        tried = [entry.strip().splitlines()[0] for entry in rest.split("\n\t") if entry.strip()]
        reason = "tried " + "; ".join(tried)
    else:
        lines = [line.strip() for line in head.splitlines() if line.strip()]
        reason = lines[0] if lines else type(exc).__name__
    reason = redact(reason)
    if len(reason) > _MAX_CREDENTIAL_REASON_LENGTH:
        reason = reason[: _MAX_CREDENTIAL_REASON_LENGTH - 3] + "..."
    return reason


# ---------------------------------------------------------------------------------------------
# errors

# classify()'s answers: what kind of failure an SDK error is.
NOT_FOUND = "not-found"  # the entity does not exist
NOT_SIGNED = "not-signed"  # the credential failed before any request was sent
REFUSED = "refused"  # HTTP 401 or 403: the service refused the credential
TIMEOUT = "timeout"  # no answer in time
UNREACHABLE = "unreachable"  # no connection, or it broke
HTTP_ERROR = "http-error"  # any other answer with an error status
OTHER = "other"


def classify(exc: Exception) -> str:
    """Which of the classes above an SDK error is, checked in that order."""
    from azure.core import exceptions as errors

    if isinstance(exc, errors.ResourceNotFoundError):
        return NOT_FOUND
    if isinstance(exc, errors.ClientAuthenticationError) and exc.response is None:
        return NOT_SIGNED
    if isinstance(exc, errors.HttpResponseError) and exc.status_code in (401, 403):
        return REFUSED
    if isinstance(exc, (errors.ServiceRequestTimeoutError, errors.ServiceResponseTimeoutError)):
        return TIMEOUT
    if isinstance(exc, (errors.ServiceRequestError, errors.ServiceResponseError)):
        return UNREACHABLE
    if isinstance(exc, errors.HttpResponseError):
        return HTTP_ERROR
    return OTHER


def transient_failure(exc: Exception) -> retry.Transient | None:
    """Connection errors, timeouts, 5xx and 429 (with its Retry-After) are worth another try."""
    from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return retry.Transient()
    if isinstance(exc, HttpResponseError):
        return retry.after_status(exc.status_code, getattr(exc.response, "headers", None))
    return None


def short_reason(exc: BaseException) -> str:
    """First line of an SDK message (they run to pages of XML), redacted and truncated."""
    return first_line(str(getattr(exc, "message", None) or exc)) or type(exc).__name__


# ---------------------------------------------------------------------------------------------
# convert

# KEDA's cloud names (matched without case, as its EnvironmentFromName does) and the rule file's
# name for the same cloud. An empty or absent cloud is the public cloud in both.
KEDA_CLOUDS = {
    "azurepubliccloud": PUBLIC_CLOUD,
    "azurecloud": PUBLIC_CLOUD,
    "azureusgovernmentcloud": "AzureUSGovernmentCloud",
    "azureusgovernment": "AzureUSGovernmentCloud",
    "azurechinacloud": "AzureChinaCloud",
}


def auth_name(keda: KedaTrigger) -> str:
    """`Kind name` of the trigger's authenticationRef, for notes."""
    ref = keda.auth_ref
    return f"{ref.get('kind') or 'TriggerAuthentication'} {ref.get('name', '')}"


def _auth_spec(keda: KedaTrigger) -> Mapping[str, Any]:
    if not isinstance(keda.auth_ref, Mapping) or keda.auth is None:
        return {}
    spec = keda.auth.get("spec") or {}
    return spec if isinstance(spec, Mapping) else {}


def auth_secret(keda: KedaTrigger) -> Mapping[str, Any] | None:
    """The TriggerAuthentication's secretTargetRef for the parameter `connection`, if any."""
    refs = _auth_spec(keda).get("secretTargetRef") or []
    found = [r for r in refs if isinstance(r, Mapping) and r.get("parameter") == "connection"]
    return found[0] if found else None


def auth_provider(keda: KedaTrigger) -> str:
    """The TriggerAuthentication's pod identity provider, or ""."""
    identity = _auth_spec(keda).get("podIdentity") or {}
    return str(identity.get("provider") or "") if isinstance(identity, Mapping) else ""


def secret_to_env(keda: KedaTrigger, secret: Mapping[str, Any], out: dict[str, Any]) -> str:
    """Sets connectionFromEnv to a new variable for the TriggerAuthentication's Secret; returns
    what to add to the autoscaler's container."""
    env = keda.env_name(f"{keda.auth_ref.get('name', '')}_connection")
    out["connectionFromEnv"] = env
    name, key = secret.get("name"), secret.get("key")
    return (
        f"{auth_name(keda)} maps 'connection' to Secret {name} key {key}: set connectionFromEnv "
        f"{env} (done) and add to the autoscaler's container: env: [{{name: {env}, valueFrom: "
        f"{{secretKeyRef: {{name: {name}, key: {key}}}}}}}] (copy the Secret to the autoscaler's "
        "namespace first)"
    )
