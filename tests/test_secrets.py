"""No secret leaves the daemon: connection strings, passwords, tokens, keys, signatures and URLs
with credentials in them never appear in its logs, its /metrics, its /status, the `status` and
`--once` commands, or anything it sends to the Kubernetes API (Events and status included).

One table, ROWS: a row per (source, secret field, case), naming the real server the rule reads
(a session fixture of tests/support/servers/fixtures.py or tests/conftest.py, or one of the
servers this module runs: LOCAL_SERVERS), the environment variables that hold its secrets, the
trigger, and what the rule does with them: succeed (the Deployment goes 1 -> 3 on a backlog of
12, target 5) or fail with the error its `failure` pattern matches (the Deployment held at 1).
Every secret value a row's variables hold is looked for whole, URL-encoded and JSON-escaped, and
the bare secrets of `pieces` (passwords, keys, tokens, signatures) in every 12-character piece
too, so a truncated or re-encoded secret is caught as well.

Two daemons run every row at once, side by side: one logging text, one JSON (eventscaler/logs.py
has both), at DEBUG, each on its own Deployments. Once every row's evidence is in their output,
/metrics and /status are read, the daemons stopped, and `run --once` (both formats) and `status`
run once each over the same rules. The Kubernetes API test server's request log (bodies of
Events, scale writes, leases) is searched as well; without the test server (E2E_KUBECONFIG) the
sweep is skipped, since that log is the proof for the API side.

Sources without a secret field have no row: nats-jetstream (its monitoring endpoint takes no
credentials), beanstalkd (no authentication), cron. aws-sqs-queue takes its credentials from the
standard chain, one per process, so its row is the daemon's wrong AWS_SECRET_ACCESS_KEY.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import pytest

from tests.conftest import write_rules
from tests.support.azurite import ACCOUNT_NAME
from tests.support.cluster import Cluster
from tests.support.daemon_process import DaemonProcess, run_command
from tests.support.source_e2e import health, rule_for, source_daemon, status_row
from tests.support.waiting import WAIT_SCALE

pytestmark = pytest.mark.e2e

WAIT = 40.0  # seconds (times TEST_WAIT_SCALE) for every row's evidence to show up
PIECE = 12  # characters of a bare secret that must not appear anywhere on their own
BACKLOG, TARGET = 12, 5  # every source's backlog and target: a rule that reads scales 1 -> 3
POLL = 2.0  # every row reads on the first tick; later ticks only repeat it
FORMATS = ("text", "json")


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def random_key() -> str:
    return base64.b64encode(os.urandom(64)).decode()


def random_text(prefix: str, length: int = 24) -> str:
    """A secret that needs no quoting in a URL."""
    return f"{prefix}-{os.urandom(length).hex()[:length]}"


class Secrets:
    """Every secret of the test, and how to find any trace of one in a text."""

    def __init__(self, whole: list[str], pieces_of: list[str]) -> None:
        self._needles: dict[str, str] = {}
        for secret in [*whole, *pieces_of]:
            for variant in (secret, quote(secret, safe=""), json.dumps(secret)[1:-1]):
                self._needles[variant] = f"secret {secret[:6]}... ({variant[:10]}...)"
        for secret in pieces_of:
            for i in range(len(secret) - PIECE + 1):
                self._needles.setdefault(secret[i : i + PIECE], f"a piece of {secret[:6]}...")

    def found_in(self, text: str) -> list[str]:
        return sorted({what for needle, what in self._needles.items() if needle in text})


# --- the secrets: new for every run, so a piece found can only have come from this run ----------

WRONG_AZURE_KEY = random_key()
BAD_AZURE_KEY = "not*base64!" + random_key()[:40]
WRONG_SB_KEY = random_key()[:44]
WRONG_RABBIT = random_text("wr0ng", 20)
WRONG_REDIS = random_text("wrong")
REDIS_URL_PASSWORD = random_text("in-url", 20)
WRONG_AWS_SECRET = random_text("aws", 36)
API_TOKEN, API_TOKEN_WRONG = random_text("api-token", 32), random_text("api-wrong", 32)
API_PASSWORD_WRONG, API_KEY_WRONG = random_text("api-pw"), random_text("api-key", 28)
API_URL_PASSWORD, API_URL_SIGNATURE = random_text("api-url-pw", 20), random_text("sig", 30)
PROM_TOKEN, PROM_TOKEN_WRONG = random_text("prom-token", 32), random_text("prom-wrong", 32)
PROM_KEY, PROM_KEY_WRONG = random_text("prom-key", 28), random_text("prom-key-wrong", 28)
PROM_PASSWORD_WRONG, PROM_URL_PASSWORD = random_text("prom-pw"), random_text("prom-url-pw")
PROM_URL_TOKEN, PROM_QUERY_SECRET = random_text("prom-url-token"), random_text("q", 20)
PROM_QUERY_SECRET_RIGHT = random_text("q-right", 20)
SQL_WRONG = random_text("wrong-sql", 16)
SAS_EXPIRY = datetime.now(UTC) + timedelta(hours=2)  # one SAS for every use in this run

# Variables that name who, not prove it: not searched for (an error may name the user).
NOT_SECRET = {"REDIS_USER", "RABBIT_USER", "PROM_USER", "AWS_ACCESS_KEY_ID", "AWS_DEFAULT_REGION",
              "AWS_EC2_METADATA_DISABLED", "REQUESTS_CA_BUNDLE"}  # fmt: skip


@dataclass(frozen=True)
class At:
    """Where a row's rule reads: the running server, the backlog's name there, a closed port."""

    server: Any
    key: str
    closed: int


Make = Callable[[At], dict[str, Any]]


def nothing(at: At) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Row:
    source: str  # the trigger type
    field: str  # the secret's field (or variable, for the standard AWS chain)
    case: str  # what the rule does with it; with source and field, the row's name
    server: str  # the fixture (or LOCAL_SERVERS entry) that starts the real server
    env: Make  # variable -> value: the secrets the rule's fields name
    fields: Make  # the trigger's fields over the source's BASE ones (None removes one)
    pieces: Callable[[At], list[str]] = lambda at: []  # bare secrets, searched in pieces too
    failure: str | None = None  # the rule's error (regex); None: it reads and scales 1 -> 3
    replicas: int | None = None  # at the end: 3 if it reads, else 1 (held)
    rule: dict[str, Any] = field(default_factory=dict)  # more fields of the rule
    api_fault: tuple[str, str] | None = None  # (method, path suffix) the API answers 403
    deployment: bool = True  # False: the target does not exist
    events: tuple[str, ...] | None = None  # reasons of its Events; None: from `failure`

    @property
    def id(self) -> str:
        words = f"{self.source} {self.field} {self.case}".lower().replace("_", "-")
        return re.sub(r"[^a-z0-9]+", "-", words).strip("-")

    @property
    def final_replicas(self) -> int:
        if self.replicas is not None:
            return self.replicas
        return 1 if self.failure else 3

    @property
    def source_fails(self) -> bool:
        """Its source read fails (not the API): status, metrics and an Event say so."""
        return self.failure is not None and self.deployment and self.api_fault is None

    @property
    def event_reasons(self) -> tuple[str, ...]:
        if self.events is not None:
            return self.events
        return ("FailedGetTriggerValue",) if self.failure else ("SuccessfulRescale",)


def queue_trigger(at: At) -> dict[str, Any]:
    return {"queueName": at.key}


def redis_address(at: At) -> dict[str, Any]:
    return {"address": at.server.address, "usernameFromEnv": "REDIS_USER"}


def sql_query(at: At) -> dict[str, Any]:
    return {"query": f"SELECT count(*) FROM {at.key} WHERE ready"}


BASE: dict[str, Make] = {
    "azure-queue": lambda at: {**queue_trigger(at), "queueLength": TARGET},
    "azure-servicebus": lambda at: {**queue_trigger(at), "messageCount": TARGET},
    "rabbitmq": lambda at: {**queue_trigger(at), "value": TARGET},
    "redis": lambda at: {"listName": at.key, "listLength": TARGET, **redis_address(at)},
    "redis-streams": lambda at: {"stream": f"{at.key}-s", "consumerGroup": "g",
                                 "lagCount": TARGET, **redis_address(at)},
    "aws-sqs-queue": lambda at: {"queueURL": at.key, "awsRegion": at.server.region,
                                 "awsEndpoint": at.server.endpoint_url, "queueLength": TARGET},
    "metrics-api": lambda at: {"url": at.server.url("/stats"), "valueLocation": "n",
                               "targetValue": TARGET},
    "prometheus": lambda at: {"serverAddress": at.server.url, "query": f"vector({BACKLOG})",
                              "threshold": TARGET},
    "postgresql": lambda at: {**sql_query(at), "targetQueryValue": TARGET},
    "mysql": lambda at: {**sql_query(at), "queryValue": TARGET},
}  # fmt: skip

# Variables every rule on a server needs, none of them secret.
SERVER_ENV: dict[str, Make] = {
    "servicebus": lambda at: {"REQUESTS_CA_BUNDLE": str(at.server.ca_path)},
    "redis_server": lambda at: {"REDIS_USER": at.server.username},
    "rabbitmq_server": lambda at: {"RABBIT_USER": at.server.username},
    "prometheus_guarded_server": lambda at: {"PROM_USER": at.server.USERNAME},
    "sqs_iam_server": lambda at: {"AWS_ACCESS_KEY_ID": at.server.access_key_id,
                                  "AWS_DEFAULT_REGION": at.server.region,
                                  "AWS_EC2_METADATA_DISABLED": "true"},
}  # fmt: skip


# --- how each secret is made from its server -----------------------------------------------------


def azure_connection(at: At) -> str:
    return str(at.server.connection_string)


def azure_closed(at: At) -> str:
    return azure_connection(at).replace(
        at.server.queue_endpoint, f"http://127.0.0.1:{at.closed}/{ACCOUNT_NAME}"
    )


def add_only_sas(at: At) -> str:
    """A SAS of the backlog's queue that may only add messages: a read is refused."""
    from azure.storage.queue import QueueSasPermissions, generate_queue_sas

    permission = QueueSasPermissions(add=True)
    key = at.server.account_key
    return str(
        generate_queue_sas(ACCOUNT_NAME, at.key, key, permission=permission, expiry=SAS_EXPIRY)
    )


def sas_signature(at: At) -> str:
    return parse_qs(add_only_sas(at))["sig"][0]


def rabbit_wrong(url: str, at: At) -> str:
    return url.replace(at.server.password, WRONG_RABBIT)


def rabbit_bare_http(at: At) -> str:
    return str(at.server.management_url).replace(f"{at.server.username}:{at.server.password}@", "")


def pg_host(at: At, password_env: str) -> dict[str, Any]:
    s = at.server
    return {"host": "127.0.0.1", "port": s.port(), "userName": s.user, "dbName": s.database,
            "sslmode": "disable", "passwordFromEnv": password_env}  # fmt: skip


def mysql_host(at: At, password_env: str) -> dict[str, Any]:
    s = at.server
    return {"host": "127.0.0.1", "port": s.port(), "username": s.user, "dbName": s.database,
            "passwordFromEnv": password_env}  # fmt: skip


def sql_wrong(at: At) -> str:
    return str(at.server.url).replace(f":{at.server.password}@", f":{SQL_WRONG}@")


def sql_closed(at: At) -> str:
    return str(at.server.url).replace(f":{at.server.port()}", f":{at.closed}")


def metrics_api_host(at: At) -> str:
    return f"127.0.0.1:{at.server.port}"


def prom_host(at: At) -> str:
    return str(at.server.url).removeprefix("http://")


def without_url(at: At) -> dict[str, Any]:
    return {"url": None}


def server_password(at: At) -> list[str]:
    return [at.server.password]


def sql_rows(
    source: str, server: str, connection: str, by_host: Callable[[At, str], Any], var: str
) -> list[Row]:
    """The same rows for both SQL sources: the connection variable right, with a wrong password,
    to a closed port; passwordFromEnv right and wrong."""
    right, wrong, closed = f"{var}_CONNECTION", f"{var}_CONNECTION_WRONG", f"{var}_CLOSED"
    password, wrong_password = f"{var}_PASSWORD", f"{var}_WRONG"
    return [
        Row(source, connection, "right", server, env=lambda at: {right: at.server.url},
            fields=lambda at: {connection: right}, pieces=server_password),
        Row(source, connection, "wrong password", server, env=lambda at: {wrong: sql_wrong(at)},
            fields=lambda at: {connection: wrong}, pieces=lambda at: [SQL_WRONG],
            failure=SQL_REFUSED),
        Row(source, connection, "closed port", server, env=lambda at: {closed: sql_closed(at)},
            fields=lambda at: {connection: closed}, pieces=server_password, failure=SQL_CLOSED),
        Row(source, "passwordFromEnv", "right", server,
            env=lambda at: {password: at.server.password},
            fields=lambda at: by_host(at, password), pieces=server_password),
        Row(source, "passwordFromEnv", "wrong", server, env=lambda at: {wrong_password: SQL_WRONG},
            fields=lambda at: by_host(at, wrong_password), pieces=lambda at: [SQL_WRONG],
            failure=SQL_REFUSED),
    ]  # fmt: skip


AUTH_401 = r"Unauthorized: HTTP 401"
PROM_REFUSED = r"Unauthorized: HTTP 401: the server refused the {} credential from env {}"
API_REFUSED = r"Unauthorized: HTTP 401: the endpoint refused the {} credential from env {}"
SQL_REFUSED = r"(Unauthorized|AuthenticationFailed)"
SQL_CLOSED = r"(Unavailable|ConnectionError|Timeout)"
SB_REFUSED = r"AuthenticationFailed: .* refused the credentials \(HTTP 401: "
AWS_REFUSED = (r"Unauthorized: 127\.0\.0\.1:\d+ refused the credentials from the environment "
               r"\(AWS_ACCESS_KEY_ID\) \(HTTP 403 SignatureDoesNotMatch\)")  # fmt: skip
FALLBACK = {"fallback": {"failureThreshold": 1, "replicas": 2}}
AZ = "AZ_CONNECTION"

ROWS: list[Row] = [
    # azure-queue (Azurite): connectionFromEnv, its account key, a SAS, and the API's refusals
    Row("azure-queue", "connectionFromEnv", "right", "azurite",
        env=lambda at: {AZ: azure_connection(at)}, fields=lambda at: {"connectionFromEnv": AZ},
        pieces=lambda at: [at.server.account_key]),
    Row("azure-queue", "connectionFromEnv", "missing queue with a fallback", "azurite",
        env=lambda at: {AZ: azure_connection(at)},
        fields=lambda at: {"connectionFromEnv": AZ, "queueName": f"{at.key}-none"},
        failure="QueueNotFound", replicas=2, rule=FALLBACK,
        events=("FailedGetTriggerValue", "FallbackActive", "SuccessfulRescale")),
    Row("azure-queue", "connectionFromEnv", "wrong key", "azurite",
        env=lambda at: {"AZ_WRONG_KEY": azure_connection(at).replace(at.server.account_key,
                                                                      WRONG_AZURE_KEY)},
        fields=lambda at: {"connectionFromEnv": "AZ_WRONG_KEY"},
        pieces=lambda at: [WRONG_AZURE_KEY], failure="AuthenticationFailed"),
    Row("azure-queue", "connectionFromEnv", "add-only SAS", "azurite",
        env=lambda at: {"AZ_SAS": f"QueueEndpoint={at.server.queue_endpoint};"
                                  f"SharedAccessSignature={add_only_sas(at)}"},
        fields=lambda at: {"connectionFromEnv": "AZ_SAS"},
        pieces=lambda at: [sas_signature(at)], failure="AuthenticationFailed"),
    Row("azure-queue", "connectionFromEnv", "malformed", "azurite",
        env=lambda at: {"AZ_MALFORMED": f"DefaultEndpointsProtocol=http;AccountKey="
                                        f"{at.server.account_key};this is;not one"},
        fields=lambda at: {"connectionFromEnv": "AZ_MALFORMED"},
        pieces=lambda at: [at.server.account_key], failure="the connection string is malformed"),
    Row("azure-queue", "connectionFromEnv", "key not base64", "azurite",
        env=lambda at: {"AZ_BAD_KEY": azure_connection(at).replace(at.server.account_key,
                                                                    BAD_AZURE_KEY)},
        fields=lambda at: {"connectionFromEnv": "AZ_BAD_KEY"},
        pieces=lambda at: [BAD_AZURE_KEY], failure="the account key cannot sign requests"),
    Row("azure-queue", "connectionFromEnv", "closed port", "azurite",
        env=lambda at: {"AZ_CLOSED": azure_closed(at)},
        fields=lambda at: {"connectionFromEnv": "AZ_CLOSED"},
        pieces=lambda at: [at.server.account_key], failure="ConnectionError"),
    Row("azure-queue", "connectionFromEnv", "no deployment", "azurite",
        env=lambda at: {AZ: azure_connection(at)}, fields=lambda at: {"connectionFromEnv": AZ},
        failure="cannot read the target Deployment: .*not found", deployment=False, events=()),
    Row("azure-queue", "connectionFromEnv", "deployment read 403", "azurite",
        env=lambda at: {AZ: azure_connection(at)}, fields=lambda at: {"connectionFromEnv": AZ},
        failure="cannot read the target Deployment: .*403", api_fault=("GET", ""), events=()),
    Row("azure-queue", "connectionFromEnv", "scale write 403", "azurite",
        env=lambda at: {AZ: azure_connection(at)}, fields=lambda at: {"connectionFromEnv": AZ},
        failure="cannot scale 1 -> 3: .*403", api_fault=("PATCH", "/scale"),
        events=("FailedRescale",)),
    # azure-servicebus (the HTTPS stand-in): connectionFromEnv with a SharedAccessKey
    Row("azure-servicebus", "connectionFromEnv", "right", "servicebus",
        env=lambda at: {"SB_RIGHT": at.server.connection_string()},
        fields=lambda at: {"connectionFromEnv": "SB_RIGHT"}, pieces=lambda at: [at.server.key]),
    Row("azure-servicebus", "connectionFromEnv", "wrong key", "servicebus",
        env=lambda at: {"SB_WRONG": at.server.connection_string(key=WRONG_SB_KEY)},
        fields=lambda at: {"connectionFromEnv": "SB_WRONG"}, pieces=lambda at: [WRONG_SB_KEY],
        failure=r"\(connection string from env SB_WRONG\): " + SB_REFUSED),
    # rabbitmq: hostFromEnv (amqp and http URLs with the password), usernameFromEnv/passwordFromEnv
    Row("rabbitmq", "hostFromEnv", "right amqp", "rabbitmq_server",
        env=lambda at: {"RABBIT_AMQP": at.server.amqp_url()},
        fields=lambda at: {"hostFromEnv": "RABBIT_AMQP"}, pieces=server_password),
    Row("rabbitmq", "hostFromEnv", "right http", "rabbitmq_server",
        env=lambda at: {"RABBIT_HTTP": at.server.management_url},
        fields=lambda at: {"hostFromEnv": "RABBIT_HTTP"}, pieces=server_password),
    Row("rabbitmq", "hostFromEnv", "missing queue amqp", "rabbitmq_server",
        env=lambda at: {"RABBIT_AMQP": at.server.amqp_url()},
        fields=lambda at: {"hostFromEnv": "RABBIT_AMQP", "queueName": f"{at.key}-none"},
        pieces=server_password, failure="QueueNotFound"),
    Row("rabbitmq", "hostFromEnv", "missing queue http", "rabbitmq_server",
        env=lambda at: {"RABBIT_HTTP": at.server.management_url},
        fields=lambda at: {"hostFromEnv": "RABBIT_HTTP", "queueName": f"{at.key}-none"},
        pieces=server_password, failure="QueueNotFound"),
    Row("rabbitmq", "hostFromEnv", "wrong password amqp", "rabbitmq_server",
        env=lambda at: {"RABBIT_AMQP_WRONG": rabbit_wrong(at.server.amqp_url(), at)},
        fields=lambda at: {"hostFromEnv": "RABBIT_AMQP_WRONG"},
        pieces=lambda at: [WRONG_RABBIT], failure="AccessRefused"),
    Row("rabbitmq", "hostFromEnv", "wrong password http", "rabbitmq_server",
        env=lambda at: {"RABBIT_HTTP_WRONG": rabbit_wrong(at.server.management_url, at)},
        fields=lambda at: {"hostFromEnv": "RABBIT_HTTP_WRONG"},
        pieces=lambda at: [WRONG_RABBIT], failure="AccessRefused"),
    Row("rabbitmq", "hostFromEnv", "closed port", "rabbitmq_server",
        env=lambda at: {"RABBIT_CLOSED": f"amqp://{at.server.username}:{at.server.password}"
                                         f"@127.0.0.1:{at.closed}/"},
        fields=lambda at: {"hostFromEnv": "RABBIT_CLOSED"}, pieces=server_password,
        failure="ConnectionError"),
    Row("rabbitmq", "hostFromEnv", "MessageRate on amqp", "rabbitmq_server",
        env=lambda at: {"RABBIT_AMQP": at.server.amqp_url()},
        fields=lambda at: {"hostFromEnv": "RABBIT_AMQP", "mode": "MessageRate", "value": 1},
        pieces=server_password, failure="InvalidHost"),
    Row("rabbitmq", "passwordFromEnv", "right", "rabbitmq_server",
        env=lambda at: {"RABBIT_PASS": at.server.password},
        fields=lambda at: {"host": rabbit_bare_http(at), "usernameFromEnv": "RABBIT_USER",
                           "passwordFromEnv": "RABBIT_PASS"}, pieces=server_password),
    Row("rabbitmq", "passwordFromEnv", "wrong", "rabbitmq_server",
        env=lambda at: {"RABBIT_PASS_WRONG": WRONG_RABBIT},
        fields=lambda at: {"host": rabbit_bare_http(at), "usernameFromEnv": "RABBIT_USER",
                           "passwordFromEnv": "RABBIT_PASS_WRONG"},
        pieces=lambda at: [WRONG_RABBIT], failure="AccessRefused"),
    # redis and redis-streams: passwordFromEnv, and an addressFromEnv holding a URL with one
    Row("redis", "passwordFromEnv", "right", "redis_server",
        env=lambda at: {"REDIS_PASSWORD": at.server.password},
        fields=lambda at: {"passwordFromEnv": "REDIS_PASSWORD"}, pieces=server_password),
    Row("redis", "passwordFromEnv", "wrong", "redis_server",
        env=lambda at: {"REDIS_WRONG": WRONG_REDIS},
        fields=lambda at: {"passwordFromEnv": "REDIS_WRONG"}, pieces=lambda at: [WRONG_REDIS],
        failure=r"redis list '[^']+' .*AuthenticationFailed"),
    Row("redis", "passwordFromEnv", "unset", "redis_server", env=nothing,
        fields=lambda at: {"passwordFromEnv": "NO_SUCH"},
        failure=r"MissingEnv: env NO_SUCH \(the password\) is unset or empty"),
    Row("redis", "addressFromEnv", "URL with a password", "redis_server",
        env=lambda at: {"REDIS_URL": f"redis://eventscaler:{REDIS_URL_PASSWORD}@"
                                     f"{at.server.address}/0"},
        fields=lambda at: {"address": None, "addressFromEnv": "REDIS_URL"},
        pieces=lambda at: [REDIS_URL_PASSWORD],
        failure=r"InvalidAddress: env REDIS_URL does not hold host:port"),
    Row("redis-streams", "passwordFromEnv", "right", "redis_server",
        env=lambda at: {"REDIS_PASSWORD": at.server.password},
        fields=lambda at: {"passwordFromEnv": "REDIS_PASSWORD"}, pieces=server_password),
    Row("redis-streams", "passwordFromEnv", "wrong", "redis_server",
        env=lambda at: {"REDIS_WRONG": WRONG_REDIS},
        fields=lambda at: {"passwordFromEnv": "REDIS_WRONG"}, pieces=lambda at: [WRONG_REDIS],
        failure=r"redis stream '[^']+' group 'g' .*AuthenticationFailed"),
    Row("redis-streams", "addressFromEnv", "URL with a password", "redis_server",
        env=lambda at: {"REDIS_URL": f"redis://eventscaler:{REDIS_URL_PASSWORD}@"
                                     f"{at.server.address}/0"},
        fields=lambda at: {"address": None, "addressFromEnv": "REDIS_URL"},
        pieces=lambda at: [REDIS_URL_PASSWORD],
        failure=r"InvalidAddress: env REDIS_URL does not hold host:port"),
    # aws-sqs-queue (moto with IAM checks): the standard chain's secret key
    Row("aws-sqs-queue", "AWS_SECRET_ACCESS_KEY", "wrong", "sqs_iam_server",
        env=lambda at: {"AWS_SECRET_ACCESS_KEY": WRONG_AWS_SECRET}, fields=nothing,
        pieces=lambda at: [WRONG_AWS_SECRET], failure=r"aws-sqs-queue '[^']+' .*" + AWS_REFUSED),
    # metrics-api (an endpoint that takes only API_TOKEN): every auth mode, and urlFromEnv
    Row("metrics-api", "tokenFromEnv", "right", "metrics_api",
        env=lambda at: {"API_TOKEN": API_TOKEN},
        fields=lambda at: {"authMode": "bearer", "tokenFromEnv": "API_TOKEN"},
        pieces=lambda at: [API_TOKEN]),
    Row("metrics-api", "tokenFromEnv", "wrong", "metrics_api",
        env=lambda at: {"API_TOKEN_WRONG": API_TOKEN_WRONG},
        fields=lambda at: {"authMode": "bearer", "tokenFromEnv": "API_TOKEN_WRONG"},
        pieces=lambda at: [API_TOKEN_WRONG],
        failure=API_REFUSED.format("bearer", "API_TOKEN_WRONG")),
    Row("metrics-api", "passwordFromEnv", "wrong", "metrics_api",
        env=lambda at: {"API_PASSWORD": API_PASSWORD_WRONG},
        fields=lambda at: {"authMode": "basic", "username": "ops",
                           "passwordFromEnv": "API_PASSWORD"},
        pieces=lambda at: [API_PASSWORD_WRONG], failure=AUTH_401),
    Row("metrics-api", "apiKeyFromEnv", "wrong in the query", "metrics_api",
        env=lambda at: {"API_KEY": API_KEY_WRONG},
        fields=lambda at: {"authMode": "apiKey", "apiKeyFromEnv": "API_KEY", "method": "query"},
        pieces=lambda at: [API_KEY_WRONG], failure=AUTH_401),
    Row("metrics-api", "apiKeyFromEnv", "wrong in a header", "metrics_api",
        env=lambda at: {"API_KEY": API_KEY_WRONG},
        fields=lambda at: {"authMode": "apiKey", "apiKeyFromEnv": "API_KEY"},
        pieces=lambda at: [API_KEY_WRONG], failure=AUTH_401),
    Row("metrics-api", "urlFromEnv", "URL with a password", "metrics_api",
        env=lambda at: {"API_URL_PW": f"http://ops:{API_URL_PASSWORD}@{metrics_api_host(at)}/s"},
        fields=lambda at: {**without_url(at), "urlFromEnv": "API_URL_PW"},
        pieces=lambda at: [API_URL_PASSWORD],
        failure=r"metrics-api URL from env API_URL_PW at 'n': " + AUTH_401),
    Row("metrics-api", "urlFromEnv", "URL with a signature", "metrics_api",
        env=lambda at: {"API_URL_SIG": f"http://{metrics_api_host(at)}/s?sig="
                                       f"{API_URL_SIGNATURE}&page=1"},
        fields=lambda at: {**without_url(at), "urlFromEnv": "API_URL_SIG"},
        pieces=lambda at: [API_URL_SIGNATURE],
        failure=r"metrics-api URL from env API_URL_SIG at 'n': " + AUTH_401),
    Row("metrics-api", "urlFromEnv", "closed port, a password", "metrics_api",
        env=lambda at: {"API_URL_CLOSED": f"http://ops:{API_URL_PASSWORD}@127.0.0.1:"
                                          f"{at.closed}/s"},
        fields=lambda at: {**without_url(at), "urlFromEnv": "API_URL_CLOSED"},
        pieces=lambda at: [API_URL_PASSWORD], failure=r"Unavailable: cannot reach"),
    # prometheus: the guarded Prometheus (basic), a proxy taking PROM_TOKEN or PROM_KEY (bearer,
    # custom), serverAddressFromEnv with userinfo and a token, queryFromEnv
    Row("prometheus", "bearerTokenFromEnv", "right", "prometheus_proxy",
        env=lambda at: {"PROM_TOKEN": PROM_TOKEN},
        fields=lambda at: {"authModes": "bearer", "bearerTokenFromEnv": "PROM_TOKEN"},
        pieces=lambda at: [PROM_TOKEN]),
    Row("prometheus", "bearerTokenFromEnv", "wrong", "prometheus_proxy",
        env=lambda at: {"PROM_TOKEN_WRONG": PROM_TOKEN_WRONG},
        fields=lambda at: {"authModes": "bearer", "bearerTokenFromEnv": "PROM_TOKEN_WRONG"},
        pieces=lambda at: [PROM_TOKEN_WRONG],
        failure=PROM_REFUSED.format("bearer", "PROM_TOKEN_WRONG")),
    Row("prometheus", "customAuthValueFromEnv", "right", "prometheus_proxy",
        env=lambda at: {"PROM_KEY": PROM_KEY},
        fields=lambda at: {"authModes": "custom", "customAuthHeader": "X-Api-Key",
                           "customAuthValueFromEnv": "PROM_KEY"}, pieces=lambda at: [PROM_KEY]),
    Row("prometheus", "customAuthValueFromEnv", "wrong", "prometheus_proxy",
        env=lambda at: {"PROM_KEY_WRONG": PROM_KEY_WRONG},
        fields=lambda at: {"authModes": "custom", "customAuthHeader": "X-Api-Key",
                           "customAuthValueFromEnv": "PROM_KEY_WRONG"},
        pieces=lambda at: [PROM_KEY_WRONG],
        failure=PROM_REFUSED.format("custom", "PROM_KEY_WRONG")),
    Row("prometheus", "passwordFromEnv", "right", "prometheus_guarded_server",
        env=lambda at: {"PROM_PW": at.server.PASSWORD},
        fields=lambda at: {"authModes": "basic", "usernameFromEnv": "PROM_USER",
                           "passwordFromEnv": "PROM_PW"}, pieces=lambda at: [at.server.PASSWORD]),
    Row("prometheus", "passwordFromEnv", "wrong", "prometheus_guarded_server",
        env=lambda at: {"PROM_PW_WRONG": PROM_PASSWORD_WRONG},
        fields=lambda at: {"authModes": "basic", "usernameFromEnv": "PROM_USER",
                           "passwordFromEnv": "PROM_PW_WRONG"},
        pieces=lambda at: [PROM_PASSWORD_WRONG],
        failure=PROM_REFUSED.format("basic", "PROM_PW_WRONG")),
    Row("prometheus", "serverAddressFromEnv", "right userinfo", "prometheus_guarded_server",
        env=lambda at: {"PROM_URL": f"http://{at.server.USERNAME}:{at.server.PASSWORD}@"
                                    f"{prom_host(at)}"},
        fields=lambda at: {"serverAddress": None, "serverAddressFromEnv": "PROM_URL"},
        pieces=lambda at: [at.server.PASSWORD]),
    Row("prometheus", "serverAddressFromEnv", "wrong userinfo and a token",
        "prometheus_guarded_server",
        env=lambda at: {"PROM_URL_WRONG": f"http://ops:{PROM_URL_PASSWORD}@{prom_host(at)}/"
                                          f"?access_token={PROM_URL_TOKEN}"},
        fields=lambda at: {"serverAddress": None, "serverAddressFromEnv": "PROM_URL_WRONG"},
        pieces=lambda at: [PROM_URL_PASSWORD, PROM_URL_TOKEN],
        failure=r"prometheus server from env PROM_URL_WRONG query .*" + AUTH_401),
    Row("prometheus", "serverAddressFromEnv", "closed port, a password", "prometheus_server",
        env=lambda at: {"PROM_URL_CLOSED": f"http://ops:{PROM_URL_PASSWORD}@127.0.0.1:"
                                           f"{at.closed}"},
        fields=lambda at: {"serverAddress": None, "serverAddressFromEnv": "PROM_URL_CLOSED"},
        pieces=lambda at: [PROM_URL_PASSWORD], failure=r"Unavailable: cannot reach"),
    Row("prometheus", "queryFromEnv", "right", "prometheus_server",
        env=lambda at: {"PROM_QUERY": f'sum(absent_series{{token="{PROM_QUERY_SECRET_RIGHT}"}})'
                                      f" or vector({BACKLOG})"},
        fields=lambda at: {"query": None, "queryFromEnv": "PROM_QUERY"},
        pieces=lambda at: [PROM_QUERY_SECRET_RIGHT]),
    Row("prometheus", "queryFromEnv", "bad query", "prometheus_server",
        env=lambda at: {"PROM_QUERY_BAD": f'sum(e2e_backlog{{rule="{PROM_QUERY_SECRET}"}}'},
        fields=lambda at: {"query": None, "queryFromEnv": "PROM_QUERY_BAD"},
        pieces=lambda at: [PROM_QUERY_SECRET],
        failure=r"query from env PROM_QUERY_BAD: ServiceError: HTTP 400: bad query: bad_data "
                r"\(the server's message is not shown: the query is a secret\)"),
    # postgresql: connectionFromEnv (a libpq URL); mysql (MariaDB): connectionStringFromEnv (a
    # Go DSN); both passwordFromEnv
    *sql_rows("postgresql", "postgres_server", "connectionFromEnv", pg_host, "PG"),
    *sql_rows("mysql", "mariadb_server", "connectionStringFromEnv", mysql_host, "MY"),
]  # fmt: skip


# --- the servers, and a backlog of 12 on each --------------------------------------------------


def start_local_server(name: str, request: pytest.FixtureRequest, stack: Any, tmp: Path) -> Any:
    """The servers this module runs itself; the others are session fixtures."""
    from tests.support.metrics_api_server import MetricsApiServer
    from tests.support.prometheus_proxy import PrometheusProxy
    from tests.support.servicebus_server import ServiceBusStandIn

    if name == "servicebus":
        (tmp / "servicebus").mkdir()
        return stack.enter_context(ServiceBusStandIn(tmp / "servicebus"))
    if name == "metrics_api":
        endpoint = stack.enter_context(MetricsApiServer())
        endpoint.answer(json.dumps({"n": BACKLOG}))
        endpoint.require(lambda seen: seen.headers.get("Authorization") == f"Bearer {API_TOKEN}")
        return endpoint
    upstream = request.getfixturevalue("prometheus_server").url
    proxy = stack.enter_context(PrometheusProxy(upstream))
    proxy.require(
        lambda seen: (
            seen.headers.get("Authorization") == f"Bearer {PROM_TOKEN}"
            or seen.headers.get("X-Api-Key") == PROM_KEY
        )
    )
    return proxy


LOCAL_SERVERS = ("servicebus", "metrics_api", "prometheus_proxy")


def fill_redis(server: Any, key: str) -> str:
    with server.client() as client:
        client.rpush(key, *range(BACKLOG))
        client.xgroup_create(f"{key}-s", "g", id="0", mkstream=True)
        for i in range(BACKLOG):
            client.xadd(f"{key}-s", {"n": i})
    return key


def fill_postgres(server: Any, key: str) -> str:
    table = key.replace("-", "_")
    with server.connect() as connection:
        connection.execute(f"CREATE TABLE {table} (ready boolean)")
        connection.execute(f"INSERT INTO {table} SELECT true FROM generate_series(1, {BACKLOG})")
    return table


def fill_mariadb(server: Any, key: str) -> str:
    table = key.replace("-", "_")
    with server.connect() as connection, connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {table} (ready boolean)")
        cursor.executemany(f"INSERT INTO {table} VALUES (%s)", [(True,)] * BACKLOG)
        connection.commit()
    return table


def fill_azurite(server: Any, key: str) -> str:
    server.create_queue(key)
    server.send_messages(key, BACKLOG)
    return key


def fill_servicebus(server: Any, key: str) -> str:
    server.set_queue(key, active=BACKLOG)
    return key


def fill_rabbitmq(server: Any, key: str) -> str:
    server.publish(key, BACKLOG)
    return key


def make_sqs_queue(server: Any, key: str) -> str:
    return str(server.client().create_queue(QueueName=key)["QueueUrl"])


FILL: dict[str, Callable[[Any, str], str]] = {
    "azurite": fill_azurite,
    "servicebus": fill_servicebus,
    "rabbitmq_server": fill_rabbitmq,
    "redis_server": fill_redis,
    "sqs_iam_server": make_sqs_queue,
    "postgres_server": fill_postgres,
    "mariadb_server": fill_mariadb,
}


# --- one daemon per log format, every row at once ------------------------------------------------


@dataclass
class Run:
    """One daemon's rules and everything it produced."""

    log_format: str
    names: dict[str, str]  # row id -> rule (and Deployment) name
    rules: Path
    daemon: DaemonProcess | None = None
    output: str = ""
    metrics: str = ""
    status: dict[str, Any] = field(default_factory=dict)
    once: str = ""
    table: str = ""
    missing: dict[str, str] = field(default_factory=dict)  # row id -> the pattern never seen
    replicas: dict[str, int] = field(default_factory=dict)

    def evidence(self) -> dict[str, str]:
        """Row id -> what the daemon logs once the row's path ran."""
        found = {}
        for row in ROWS:
            name = self.names[row.id]
            if row.failure is not None:
                found[row.id] = rf"rule {name}: .*{row.failure}"
            if row.final_replicas != 1:  # read (or fell back): scaled, and that is logged
                key = f"{row.id} (scale)" if row.failure else row.id
                found[key] = rf"scaled 1 -> {row.final_replicas} \(rule {name}[ )]"
        return found


@dataclass
class Sweep:
    runs: dict[str, Run]
    places: dict[str, At]
    api_requests: str
    events: list[dict[str, Any]]
    endpoints_saw: str  # what the metrics-api endpoint and the Prometheus proxy received
    seconds: float


def provision(request: pytest.FixtureRequest, stack: Any, tmp: Path, key: str) -> dict[str, At]:
    closed = closed_port()
    places = {}
    for name in dict.fromkeys(row.server for row in ROWS):
        if name in LOCAL_SERVERS:
            server = start_local_server(name, request, stack, tmp)
        else:
            server = request.getfixturevalue(name)
        places[name] = At(server, FILL[name](server, key) if name in FILL else key, closed)
    return places


def daemon_env(places: dict[str, At]) -> dict[str, str]:
    env: dict[str, str] = {}
    for name, at in places.items():
        env.update(SERVER_ENV.get(name, nothing)(at))
    for row in ROWS:
        for var, value in row.env(places[row.server]).items():
            assert env.setdefault(var, value) == value, f"{row.id}: {var} holds two values"
    return env


def trigger_of(row: Row, at: At) -> dict[str, Any]:
    fields = {**BASE[row.source](at), **row.fields(at)}
    return {"type": row.source, **{k: v for k, v in fields.items() if v is not None}}


def prepare_run(
    log_format: str, tag: str, cluster: Cluster, api: Any, places: dict[str, At], tmp: Path
) -> Run:
    """The rule file of one daemon, and its Deployments (1 replica each) and API faults."""
    # A label value (the Deployment's name) is at most 63 characters; the index keeps it unique.
    names = {row.id: f"{tag}{log_format[0]}{i:02d}-{row.id}"[:63].rstrip("-")
             for i, row in enumerate(ROWS)}  # fmt: skip
    rules = []
    for row in ROWS:
        name = names[row.id]
        rules.append(rule_for(name, cluster.namespace, trigger_of(row, places[row.server]),
                              pollingInterval=POLL, **row.rule))  # fmt: skip
        if row.deployment:
            cluster.create_deployment(name, replicas=1)
        if row.api_fault is not None:
            method, suffix = row.api_fault
            api.inject_fault(rf"/deployments/{name}{suffix}$", method, status=403)
    return Run(log_format, names, write_rules(tmp / f"rules-{log_format}.yaml", rules))


def wait_for_all(runs: list[Run]) -> None:
    """Until each daemon logged every row's evidence (or the deadline: what is missing is kept,
    for the row's own test to report)."""
    pending = {run.log_format: dict(run.evidence()) for run in runs}
    deadline = time.monotonic() + WAIT * WAIT_SCALE
    while any(pending.values()) and time.monotonic() < deadline:
        for run in runs:
            assert run.daemon is not None
            output = run.daemon.output
            patterns = pending[run.log_format]
            for key in [k for k, pattern in patterns.items() if re.search(pattern, output)]:
                del patterns[key]
        time.sleep(0.2)
    for run in runs:
        run.missing = pending[run.log_format]


def daemon_args(run: Run, cluster: Cluster) -> list[str]:
    return ["run", "--config", str(run.rules), "--kubeconfig", str(cluster.daemon_kubeconfig),
            "--log-level", "DEBUG", "--log-format", run.log_format]  # fmt: skip


def run_commands(runs: list[Run], cluster: Cluster, env: dict[str, str]) -> None:
    """`run --once` in each format (side by side), and `status` once (no daemon on its URL)."""
    onces = [DaemonProcess([*daemon_args(run, cluster), "--once"], env).start() for run in runs]
    table = run_command(
        ["status", "--config", str(runs[0].rules), "--kubeconfig", str(cluster.daemon_kubeconfig),
         "--url", f"http://127.0.0.1:{closed_port()}"],
        env,
    )  # fmt: skip
    runs[0].table = table.stdout + table.stderr
    for run, once in zip(runs, onces, strict=True):
        assert once.wait(120) == 1, once.output  # rows fail: --once says so
        run.once = once.output


@pytest.fixture(scope="module")
def sweep(
    request: pytest.FixtureRequest,
    cluster_and_server: tuple[Cluster, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Sweep]:
    cluster, api = cluster_and_server
    if api is None:
        pytest.skip("needs the Kubernetes API test server (its request log and its faults)")
    tmp, tag = tmp_path_factory.mktemp("sweep"), f"s{uuid.uuid4().hex[:4]}"
    with contextlib.ExitStack() as stack:
        places = provision(request, stack, tmp, tag)
        env = daemon_env(places)
        started = time.monotonic()
        runs = [prepare_run(fmt, tag, cluster, api, places, tmp) for fmt in FORMATS]
        for run in runs:
            run.daemon = stack.enter_context(
                source_daemon(cluster, run.rules, env, "--log-format", run.log_format)
            )
        wait_for_all(runs)
        for run in runs:
            assert run.daemon is not None
            run.metrics, run.status = health(run.daemon)
        for run in runs:
            assert run.daemon is not None and run.daemon.stop() == 0
            run.output = run.daemon.output
            names = [run.names[row.id] for row in ROWS if row.deployment]
            run.replicas = {name: cluster.replicas(name) for name in names}
        run_commands(runs, cluster, env)
        api.clear_faults()
        requests = api.requests
        events = [r["body"] for r in requests if r["resource"] == "events"
                  and r["verb"] == "create" and isinstance(r["body"], dict)]  # fmt: skip
        saw = [*places["metrics_api"].server.requests, *places["prometheus_proxy"].server.requests]
        yield Sweep({run.log_format: run for run in runs}, places,
                    json.dumps(requests, default=str), events,
                    json.dumps([s.__dict__ for s in saw], default=str),
                    time.monotonic() - started)  # fmt: skip


def secrets_of(row: Row, at: At) -> Secrets:
    whole = [value for var, value in row.env(at).items() if var not in NOT_SECRET]
    return Secrets(whole=whole, pieces_of=row.pieces(at))


@pytest.mark.parametrize("log_format", FORMATS)
@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_no_secret_of_the_row_anywhere(sweep: Sweep, row: Row, log_format: str) -> None:
    run, at = sweep.runs[log_format], sweep.places[row.server]
    name = run.names[row.id]
    missing = {k: v for k, v in run.missing.items() if k.split(" ")[0] == row.id}
    assert not missing, f"the daemon never logged {missing}; its output:\n{run.output[-20000:]}"
    if row.deployment:
        assert run.replicas[name] == row.final_replicas  # a failed read scales nothing
    reasons = {e["reason"] for e in sweep.events if e["involvedObject"]["name"] == name}
    assert set(row.event_reasons) <= reasons, sorted(reasons)
    error = status_row(run.status, name)["error"]
    if row.source_fails:
        assert error, f"/status has no error for {name}"
        assert re.search(rf'eventscaler_source_errors_total{{[^}}]*target="{name}"', run.metrics)
    elif row.failure is None:
        assert not error, error
    outputs = {
        f"daemon log ({log_format})": run.output,
        "/metrics": run.metrics,
        "/status": json.dumps(run.status),
        f"--once output ({log_format})": run.once,
        "status command output": sweep.runs[FORMATS[0]].table,
        # Every request the API server received: paths, queries and bodies (Events included).
        "Kubernetes API requests": sweep.api_requests,
    }
    secrets = secrets_of(row, at)
    leaks = {where: found for where, text in outputs.items() if (found := secrets.found_in(text))}
    assert not leaks, f"secrets found: {leaks}"


def test_the_sweep_would_see_a_leak_and_stays_fast(sweep: Sweep) -> None:
    """The search finds what it looks for; the endpoints did receive the credentials (so a
    source that echoed one would have had it to echo); the commands ran every rule."""
    azure = ROWS[0]
    secrets = secrets_of(azure, sweep.places[azure.server])
    key = sweep.places[azure.server].server.account_key
    assert secrets.found_in(f"x{key[5:20]}x") and secrets.found_in(quote(key, safe=""))
    for token in (API_TOKEN_WRONG, API_URL_SIGNATURE, PROM_TOKEN_WRONG, PROM_KEY_WRONG):
        assert token in sweep.endpoints_saw, token
    text = sweep.runs["text"]
    assert "evaluated once now in dry-run" in text.table, text.table
    assert "QueueNotFound" in text.table
    for run in sweep.runs.values():
        for kind in ("Unauthorized", "MissingCredential", "ServiceError"):
            assert f'kind="{kind}"' in run.metrics, kind
    # Two daemons with every row: well under a minute on a quiet machine.
    assert sweep.seconds < 60 * WAIT_SCALE, sweep.seconds
