"""AWS SQS queue lengths, counted the way KEDA's aws-sqs-queue scaler counts them.

The only module of the daemon that imports boto3. The value is the sum of the queue attributes
KEDA sums: ApproximateNumberOfMessages (visible), plus ApproximateNumberOfMessagesNotVisible
(in flight: received, not yet deleted) with `scaleOnInFlight` (the default), plus
ApproximateNumberOfMessagesDelayed with `scaleOnDelayed`.

Credentials come from boto3's standard chain, never from the rule file: the environment
(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN), web identity (IRSA:
AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE), a shared profile, container credentials (EKS Pod
Identity) or the instance profile. One boto3 session per process, one client per (region,
endpoint); the secret key and session token are registered for log redaction.

Retries are ours (eventscaler.retry, bounded by the tick); botocore's are off. botocore has no
per-call timeout, so each client's connect and read timeouts are the source's call timeout.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from eventscaler import retry
from eventscaler.fields import ConfigError, parse_bool, parse_env_name, parse_str, show
from eventscaler.redact import first_line, redact, register_secret
from eventscaler.sources import base
from eventscaler.sources.base import KedaTrigger, SourceOptions, SourceType, optional
from eventscaler.triggers import Trigger

logger = logging.getLogger(__name__)

DEFAULT_QUEUE_LENGTH = 5.0
VISIBLE = "ApproximateNumberOfMessages"
IN_FLIGHT = "ApproximateNumberOfMessagesNotVisible"
DELAYED = "ApproximateNumberOfMessagesDelayed"

_QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}(\.fifo)?")
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")

NOT_FOUND_CODES = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}
# What AWS answers for a key it does not know, a wrong secret, an expired session token or a
# principal without sqs:GetQueueAttributes (the JSON protocol's and the query protocol's words).
AUTH_CODES = {
    "InvalidClientTokenId", "SignatureDoesNotMatch", "UnrecognizedClientException",
    "IncompleteSignature", "InvalidSignatureException", "MissingAuthenticationToken",
    "ExpiredToken", "ExpiredTokenException", "AccessDenied", "AccessDeniedException",
    "AuthFailure", "InvalidSecurity", "RequestExpired",
}  # fmt: skip
THROTTLING_CODES = {
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "RequestThrottledException",
}
# What the chain found the credentials through, as botocore names it, for error messages.
CREDENTIAL_METHODS = {
    "env": "the environment (AWS_ACCESS_KEY_ID)",
    "assume-role-with-web-identity": "web identity (AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE)",
    "iam-role": "the instance profile",
    "container-role": "container credentials (EKS Pod Identity or ECS)",
    "shared-credentials-file": "the shared credentials file",
    "config-file": "the AWS config file",
    "assume-role": "an assumed role of the AWS profile",
    "sso": "AWS SSO",
}


@dataclass(frozen=True)
class AwsSqsSettings:
    """One `type: aws-sqs-queue` trigger's own fields (KEDA's names, in snake_case)."""

    queue_url: str = ""  # a queue URL or a plain queue name; "" with queue_url_from_env
    queue_url_from_env: str = ""
    aws_region: str = ""
    aws_endpoint: str = ""
    scale_on_in_flight: bool = True
    scale_on_delayed: bool = False

    @property
    def label(self) -> str:
        if self.queue_url_from_env:
            return f"queue URL from env {self.queue_url_from_env}"
        return queue_name_of(self.queue_url)

    @property
    def attributes(self) -> tuple[str, ...]:
        """The queue attributes whose sum is the value, as KEDA sums them."""
        names = [VISIBLE]
        if self.scale_on_in_flight:
            names.append(IN_FLIGHT)
        if self.scale_on_delayed:
            names.append(DELAYED)
        return tuple(names)


def queue_name_of(queue_url: str) -> str:
    """`https://sqs.eu-west-1.amazonaws.com/123456789012/orders` -> `orders`; a name as is."""
    return queue_url.rstrip("/").rsplit("/", 1)[-1]


def _parse_queue_url(value: Any, field: str) -> str:
    """A queue URL (scheme, host, /account/name) or a plain queue name, as KEDA accepts."""
    what = "a queue URL like https://sqs.REGION.amazonaws.com/ACCOUNT/NAME, or a queue name"
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(field, f"expected {what}, got {show(value)}")
    value = value.strip()
    if "://" not in value:
        return parse_str(value, field, _QUEUE_NAME, what)
    parts = urlsplit(value)
    path = parts.path.split("/")
    ok = parts.scheme in ("http", "https") and bool(parts.hostname) and len(path) == 3
    if not ok or not path[1] or not _QUEUE_NAME.fullmatch(path[2]):
        raise ConfigError(field, f"expected {what}, got {show(value)}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError(field, "a queue URL has no user, password, query or fragment")
    return value


def _parse_endpoint(value: Any, field: str) -> str:
    what = "an endpoint URL like http://127.0.0.1:4566"
    text = value.strip() if isinstance(value, str) else ""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(field, f"expected {what}, got {show(value)}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError(field, "an endpoint URL has no user, password, query or fragment")
    return text.rstrip("/")


def _parse_region(value: Any, field: str) -> str:
    return parse_str(value, field, _REGION, "an AWS region like 'eu-west-1'")


class AwsSqsQueue(SourceType):
    """`type: aws-sqs-queue`: the approximate message count of an SQS queue."""

    type = "aws-sqs-queue"
    settings = AwsSqsSettings
    target_key = "queueLength"
    target_default = DEFAULT_QUEUE_LENGTH
    activation_key = "activationQueueLength"
    fields = (
        optional("queueURL", _parse_queue_url, "", attr="queue_url"),
        optional("queueURLFromEnv", parse_env_name, "", attr="queue_url_from_env"),
        optional("awsRegion", _parse_region, ""),
        optional("awsEndpoint", _parse_endpoint, ""),
        optional("scaleOnInFlight", parse_bool, True),
        optional("scaleOnDelayed", parse_bool, False),
    )

    def keys(self) -> set[str]:
        return super().keys() | KEDA_CREDENTIAL_KEYS  # accepted only to be refused clearly

    def check(self, values: dict[str, Any], data: Mapping[str, Any], field: str) -> dict[str, Any]:
        """One of queueURL or queueURLFromEnv; awsRegion always (KEDA requires it too)."""
        for key in sorted(KEDA_CREDENTIAL_KEYS & set(data)):
            raise ConfigError(
                f"{field}.{key}",
                "AWS credentials never sit in the rule file: the daemon takes them from the "
                "standard AWS chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in its "
                "environment, web identity (IRSA), or the instance profile)",
            )
        has_url, has_env = "queueURL" in data, "queueURLFromEnv" in data
        if has_url == has_env:
            raise ConfigError(
                f"{field}.queueURL",
                "give queueURL (a queue URL or name) or queueURLFromEnv (an env var holding "
                "it), one of them" + (", not both" if has_url else ""),
            )
        if "awsRegion" not in data:
            raise ConfigError(f"{field}.awsRegion", "is required (the queue's region)")
        return values

    def default_name(self, settings: AwsSqsSettings) -> str:
        if settings.queue_url_from_env:
            return f"sqs-{settings.queue_url_from_env}".replace("_", "-").lower()
        return queue_name_of(settings.queue_url)

    def describe(self, settings: AwsSqsSettings) -> str:
        return f"aws-sqs-queue {settings.label} in {settings.aws_region}"

    def details(self, settings: AwsSqsSettings) -> tuple[str, ...]:
        counted = ["visible"]
        if settings.scale_on_in_flight:
            counted.append("in flight")
        if settings.scale_on_delayed:
            counted.append("delayed")
        extra = (f"endpoint {settings.aws_endpoint}",) if settings.aws_endpoint else ()
        return (" + ".join(counted), *extra)

    def open(self, options: SourceOptions) -> AwsSqsSource:
        return AwsSqsSource(options.environ, options.timeout_seconds, options.pool_size)

    def simulated_value(self, settings: AwsSqsSettings, backlog: int, in_flight: int) -> float:
        # In-flight messages stay NotVisible until deleted: counted only with scaleOnInFlight.
        if settings.scale_on_in_flight:
            return float(backlog)
        return float(max(backlog - in_flight, 0))

    def from_keda(self, keda: KedaTrigger) -> dict[str, Any] | None:
        out = super().from_keda(_without_keda_only(keda)) or {}
        if "queueURL" in out and "queueURLFromEnv" in out:
            del out["queueURLFromEnv"]
            keda.note("metadata.queueURLFromEnv", "queueURL is given too and wins, as in KEDA")
        if "queueURLFromEnv" in out:
            env = out["queueURLFromEnv"]
            keda.note(
                "metadata.queueURLFromEnv",
                f"KEDA reads {env} from the scaled workload's container; eventscaler reads it "
                f"from its own: give the autoscaler's container an env var {env}",
            )
        _explain_keda_credentials(keda)
        if "queueURL" not in out and "queueURLFromEnv" not in out:
            keda.lost("metadata.queueURL", "missing (nor queueURLFromEnv): trigger not converted")
            return None
        if "awsRegion" not in out:
            keda.lost(
                "metadata.awsRegion",
                "missing (KEDA can take it from the TriggerAuthentication): the rule needs it; "
                "add awsRegion to the converted trigger",
            )
        return out


SOURCE_TYPE = AwsSqsQueue()


class _KedaView:
    """A KEDA trigger less the metadata keys this module explains itself (credentials)."""

    def __init__(self, keda: KedaTrigger, drop: set[str]) -> None:
        self._keda = keda
        self.metadata = {k: v for k, v in keda.metadata.items() if k not in drop}
        self.auth_ref, self.auth = keda.auth_ref, keda.auth

    def __getattr__(self, name: str) -> Any:
        return getattr(self._keda, name)


KEDA_CREDENTIAL_KEYS = {
    "identityOwner", "awsAccessKeyID", "awsSecretAccessKey", "awsSessionToken", "awsRoleArn",
    "awsAccessKeyIDFromEnv", "awsSecretAccessKeyFromEnv", "awsSessionTokenFromEnv",
}  # fmt: skip


def _without_keda_only(keda: KedaTrigger) -> Any:
    return _KedaView(keda, KEDA_CREDENTIAL_KEYS)


def aws_sqs_trigger(
    queue_url: str,
    aws_region: str = "us-east-1",
    queue_length: float = DEFAULT_QUEUE_LENGTH,
    activation_queue_length: float = 0.0,
    name: str = "",
    **settings: Any,
) -> Trigger:
    """A trigger built in code (tests), as the rule file would build it."""
    values = AwsSqsSettings(queue_url=queue_url, aws_region=aws_region, **settings)
    return Trigger(
        AwsSqsQueue.type,
        name or SOURCE_TYPE.default_name(values),
        values,
        queue_length,
        activation_queue_length,
    )


class AwsSqsReadError(base.SourceError):
    """A queue length could not be read; `str()` names the queue, never a secret."""


class AwsSqsSource:
    """Reads SQS queue lengths; safe to call from many threads at once.

    One boto3 session per reader (boto3 sessions are not thread-safe: clients are built under a
    lock), one client per (region, endpoint), reused across ticks and queues. Plain queue
    names are resolved to their URL once per client (GetQueueUrl).
    """

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        timeout_seconds: float = 5.0,
        pool_size: int = 16,
        session: Any = None,
    ) -> None:
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._timeout_seconds = timeout_seconds
        self._pool_size = pool_size
        self._session = session
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str], Any] = {}
        self._urls: dict[tuple[str, str, str], str] = {}

    def read(self, trigger: Trigger) -> float:
        return float(self.read_length(trigger.settings))

    def read_length(self, settings: AwsSqsSettings) -> int:
        """The sum of the trigger's queue attributes, or raise AwsSqsReadError."""
        queue_url = self._queue_url(settings)
        client = self._client(settings)
        self._register_credentials(settings)
        try:
            url = self._resolved_url(client, settings, queue_url)
            answer = retry.call(
                lambda: client.get_queue_attributes(
                    QueueUrl=url, AttributeNames=list(settings.attributes)
                ),
                transient_failure,
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, settings, queue_url) from None
        return _sum_attributes(answer, settings, queue_url)

    def close(self) -> None:
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
            self._urls.clear()
        for client in clients:
            client.close()

    def _queue_url(self, settings: AwsSqsSettings) -> str:
        if not settings.queue_url_from_env:
            return settings.queue_url
        value = self._environ.get(settings.queue_url_from_env, "").strip()
        if not value:
            raise _error(
                settings, base.MISSING_CREDENTIAL, "the environment variable is unset or empty"
            )
        try:
            return _parse_queue_url(value, settings.queue_url_from_env)
        except ConfigError as exc:
            raise _error(settings, base.INVALID_CREDENTIAL, exc.message) from None

    def _client(self, settings: AwsSqsSettings) -> Any:
        key = (settings.aws_region, settings.aws_endpoint)
        client = self._clients.get(key)  # without the lock: entries never change once set
        if client is not None:
            return client
        with self._lock:
            if key not in self._clients:
                self._clients[key] = self._build_client(*key)
            return self._clients[key]

    def _build_client(self, region: str, endpoint: str) -> Any:
        """Called under the lock: the session is built once, on the first trigger."""
        if self._session is None:
            self._session = boto3.session.Session()
        config = Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=self._timeout_seconds,
            read_timeout=self._timeout_seconds,
            max_pool_connections=self._pool_size,
        )
        client = self._session.client(
            "sqs", region_name=region, endpoint_url=endpoint or None, config=config
        )
        logger.debug("new SQS client for region %s (%s)", region, endpoint or "AWS endpoint")
        return client

    def _register_credentials(self, settings: AwsSqsSettings) -> None:
        """Tell the log redaction about the secret key and session token the chain found."""
        try:
            credentials = self._session.get_credentials() if self._session else None
            frozen = credentials.get_frozen_credentials() if credentials else None
        except (BotoCoreError, ClientError) as exc:
            raise self._translate(exc, settings, settings.queue_url) from None
        if frozen is not None:
            register_secret(frozen.secret_key or "")
            register_secret(frozen.token or "", ephemeral=True)

    def _resolved_url(self, client: Any, settings: AwsSqsSettings, queue_url: str) -> str:
        if "://" in queue_url:
            return queue_url
        key = (settings.aws_region, settings.aws_endpoint, queue_url)
        found = self._urls.get(key)
        if found is None:
            answer = retry.call(
                lambda: client.get_queue_url(QueueName=queue_url), transient_failure
            )
            found = self._urls[key] = str(answer["QueueUrl"])
        return found

    def _credential_source(self) -> str:
        try:
            credentials = self._session.get_credentials() if self._session else None
        except Exception:  # the chain already failed once: only the message is at stake here
            credentials = None
        method = getattr(credentials, "method", None)
        found = CREDENTIAL_METHODS.get(method or "", method or "")
        return f"credentials from {found}" if found else "no credentials found"

    def _translate(
        self, exc: Exception, settings: AwsSqsSettings, queue_url: str
    ) -> AwsSqsReadError:
        host = urlsplit(settings.aws_endpoint or queue_url).netloc or "SQS"
        if isinstance(exc, ClientError):
            return self._translate_client_error(exc, settings, host)
        if isinstance(exc, NoCredentialsError):
            return _error(
                settings,
                base.MISSING_CREDENTIAL,
                "no AWS credentials in the standard chain (environment, web identity, profile, "
                "container or instance profile)",
            )
        if isinstance(exc, PartialCredentialsError):
            return _error(settings, base.INVALID_CREDENTIAL, _short_reason(exc))
        if isinstance(exc, CredentialRetrievalError):
            return _error(settings, base.MISSING_CREDENTIAL, _short_reason(exc))
        if isinstance(exc, (ConnectTimeoutError, ReadTimeoutError)):
            limit = f"timeout {self._timeout_seconds:g} s per try"
            return _error(settings, base.TIMEOUT, f"no answer from {host} ({limit})")
        if isinstance(exc, (EndpointConnectionError, ConnectionClosedError)):
            return _error(settings, base.UNAVAILABLE, f"cannot reach {host}")
        return _error(settings, base.SERVICE_ERROR, f"{type(exc).__name__}: {_short_reason(exc)}")

    def _translate_client_error(
        self, exc: ClientError, settings: AwsSqsSettings, host: str
    ) -> AwsSqsReadError:
        code, message, status = error_details(exc)
        if code in NOT_FOUND_CODES:
            return _error(settings, base.NOT_FOUND, "the queue does not exist", code)
        if code in AUTH_CODES or status in (401, 403):
            refused = f"{host} refused the {self._credential_source()} (HTTP {status} {code})"
            return _error(settings, base.UNAUTHORIZED, f"{refused}: {message}", code)
        if status >= 500 or code in THROTTLING_CODES:
            return _error(settings, base.UNAVAILABLE, f"HTTP {status} {code}: {message}", code)
        return _error(settings, base.SERVICE_ERROR, f"HTTP {status} {code}: {message}", code)


def error_details(exc: ClientError) -> tuple[str, str, int]:
    """(code, one-line message, HTTP status) of an AWS error, whichever protocol it came in.

    An endpoint that answers the JSON protocol's request with a query-protocol XML error (moto's
    IAM checks do) leaves botocore with the status as the code and the XML as the message.
    """
    error = exc.response.get("Error", {}) if isinstance(exc.response, dict) else {}
    metadata = exc.response.get("ResponseMetadata", {}) if isinstance(exc.response, dict) else {}
    code, message = str(error.get("Code", "")), str(error.get("Message", ""))
    query_code = str(error.get("QueryErrorCode", ""))
    if query_code in NOT_FOUND_CODES:
        code = query_code
    xml_code = re.search(r"<Code>([^<]+)</Code>", message)
    if xml_code:
        code = xml_code[1]
        xml_message = re.search(r"<Message>([^<]*)</Message>", message)
        message = xml_message[1] if xml_message else ""
    status = int(metadata.get("HTTPStatusCode") or 0)
    return code or "no error code", first_line(message) or "no message", status


def transient_failure(exc: Exception) -> retry.Transient | None:
    """Connection errors, timeouts, throttling and 5xx are worth another try."""
    if isinstance(exc, (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError)):
        return retry.Transient()
    if isinstance(exc, ReadTimeoutError):
        return retry.Transient()
    if isinstance(exc, ClientError):
        code, _, status = error_details(exc)
        if status >= 500 or code in THROTTLING_CODES:
            return retry.Transient()
    return None


def _sum_attributes(answer: Any, settings: AwsSqsSettings, queue_url: str) -> int:
    attributes = answer.get("Attributes") or {} if isinstance(answer, dict) else {}
    total = 0
    for name in settings.attributes:
        value = attributes.get(name)
        try:
            total += int(str(value))
        except (TypeError, ValueError):
            # Never guess 0: a missing count must not scale anything down.
            raise _error(
                settings, base.BAD_RESPONSE, f"the answer carries no {name} (got {show(value)})"
            ) from None
    return total


def _error(
    settings: AwsSqsSettings, kind: str, detail: str, code: str | None = None
) -> AwsSqsReadError:
    where = f"in {settings.aws_region}"
    if settings.aws_endpoint:
        where += f" at {settings.aws_endpoint}"
    message = f"aws-sqs-queue {settings.label!r} ({where}): {kind}: {detail}"
    return AwsSqsReadError(kind, redact(message), code)


def _short_reason(exc: Exception) -> str:
    return first_line(str(exc)) or type(exc).__name__


# ---------------------------------------------------------------------------------------------
# convert: where a KEDA aws-sqs-queue trigger's credentials come from, and what to tell the user

KEDA_SECRET_ENV = {
    "awsAccessKeyID": "AWS_ACCESS_KEY_ID",
    "awsSecretAccessKey": "AWS_SECRET_ACCESS_KEY",
    "awsSessionToken": "AWS_SESSION_TOKEN",
}


def _explain_keda_credentials(keda: KedaTrigger) -> None:
    chain = "eventscaler takes AWS credentials from its own standard chain (environment, web "
    chain += "identity, instance profile), never from the rule file"
    for key in sorted(KEDA_CREDENTIAL_KEYS & set(keda.metadata)):
        if key == "identityOwner":
            keda.lost(f"metadata.{key}", "deprecated in KEDA; " + chain)
        else:
            keda.lost(f"metadata.{key}", f"{chain}: {_env_advice(key)}")
    if isinstance(keda.auth_ref, Mapping):
        _explain_keda_auth(keda, chain)


def _env_advice(parameter: str) -> str:
    base_name = parameter.removesuffix("FromEnv")
    if base_name == "awsRoleArn":
        return (
            "give the autoscaler's ServiceAccount that role (IRSA: the annotation "
            "eks.amazonaws.com/role-arn), or set AWS_ROLE_ARN with a web identity token file"
        )
    return f"expose it to the autoscaler as env var {KEDA_SECRET_ENV[base_name]}"


def _explain_keda_auth(keda: KedaTrigger, chain: str) -> None:
    ref = keda.auth_ref
    what = f"{ref.get('kind') or 'TriggerAuthentication'} {ref.get('name', '')}"
    if keda.auth is None:
        keda.lost(
            "authenticationRef",
            f"{what} is not in this input; {chain}: expose its awsAccessKeyID / "
            "awsSecretAccessKey as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the "
            "autoscaler's container, or give its ServiceAccount an IAM role (IRSA)",
        )
        return
    spec = keda.auth.get("spec") or {}
    advice = [
        _secret_advice(s) for s in spec.get("secretTargetRef") or [] if isinstance(s, Mapping)
    ]
    provider = (spec.get("podIdentity") or {}).get("provider")
    if provider and provider != "none":
        advice.append(
            f"pod identity {provider!r}: give the autoscaler's ServiceAccount the IAM role "
            "(IRSA annotation eks.amazonaws.com/role-arn, or EKS Pod Identity)"
        )
    keda.lost("authenticationRef", f"{what}: {chain}. " + ("; ".join(advice) or "nothing to map"))


def _secret_advice(secret: Mapping[str, Any]) -> str:
    parameter = str(secret.get("parameter", ""))
    source = f"Secret {secret.get('name')} key {secret.get('key')}"
    env = KEDA_SECRET_ENV.get(parameter)
    if env is None:
        return f"'{parameter}' from {source}: {_env_advice('awsRoleArn')}"
    return (
        f"'{parameter}' from {source}: add env: [{{name: {env}, valueFrom: {{secretKeyRef: "
        f"{{name: {secret.get('name')}, key: {secret.get('key')}}}}}}}] to the autoscaler's "
        "container (copy the Secret to its namespace first)"
    )
