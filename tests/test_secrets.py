"""No secret leaves the daemon: connection strings, account keys and SAS signatures never appear in
its logs, its /metrics, its /status, the `status` and `--once` commands, or anything it sends to
the Kubernetes API (Events included).

The real daemon process runs against Azurite and the Kubernetes API test server (whose request log
holds every body it received), at --log-level DEBUG, once with --log-format text and once with
json, with one rule per path that logs or reports an error, each reading its connection string
from its own environment variable:
- a queue that does not exist (QueueNotFound), with a fallback, so the fallback's write, its
  SuccessfulRescale and FallbackActive events carry the failed reading;
- a wrong account key (AuthenticationFailed from Azurite);
- a SAS connection string whose SAS may only add messages (AuthenticationFailed);
- a malformed connection string, and one whose key is not base64 (InvalidConnectionString);
- a queue endpoint on a closed port of 127.0.0.1 (ConnectionError);
- a Deployment that does not exist (404), one whose read the API answers 403, and one whose
  scale write the API answers 403 (FailedRescale event).
The redis and redis-streams sources' secrets (a right and a wrong passwordFromEnv, an
addressFromEnv holding a URL with a password, an unset password variable) get a sweep of their
own against a real redis-server.
Each secret is looked for whole, URL-encoded and JSON-escaped, and for keys and signatures every
12-character piece too, so a truncated secret would be caught as well.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import pytest
from azure.storage.queue import QueueSasPermissions, generate_queue_sas

from tests.conftest import write_rules
from tests.support.azurite import ACCOUNT_NAME, Azurite
from tests.support.cluster import Cluster
from tests.support.daemon_process import DaemonProcess, run_command

pytestmark = pytest.mark.e2e

POLL = 0.5
WAIT = 30.0  # seconds for every error path to show up
PIECE = 12  # characters of a key or signature that must not appear anywhere on their own


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def random_key() -> str:
    return base64.b64encode(os.urandom(64)).decode()


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


@pytest.fixture
def server(cluster_and_server: tuple[Cluster, Any]) -> Any:
    server = cluster_and_server[1]
    if server is None:
        pytest.skip("needs the Kubernetes API test server (its request log and its faults)")
    return server


@pytest.fixture
def api_faults(server: Any) -> Iterator[list[int]]:
    ids: list[int] = []
    yield ids
    for fault_id in ids:
        server.remove_fault(fault_id)


def rule(name: str, queue: str, env: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "deployment": name,
        "minReplicas": 0,
        "maxReplicas": 5,
        "pollingInterval": POLL,
        "cooldownPeriod": 60,
        "triggers": [
            {"type": "azure-queue", "queueName": queue, "queueLength": 5, "connectionFromEnv": env}
        ],
        **fields,
    }


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_secret_in_logs_metrics_status_or_api_requests(
    cluster: Cluster,
    server: Any,
    api_faults: list[int],
    azurite: Azurite,
    unique: str,
    tmp_path: Path,
    log_format: str,
) -> None:
    p = unique
    good = azurite.connection_string
    key = azurite.account_key
    wrong_key = random_key()
    bad_key = "not*base64!" + random_key()[:40]
    existing = f"{p}-q"
    azurite.create_queue(existing)
    azurite.send_messages(existing, 12)
    sas = generate_queue_sas(
        ACCOUNT_NAME,
        existing,
        key,
        permission=QueueSasPermissions(add=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    signature = parse_qs(sas)["sig"][0]
    endpoint = azurite.queue_endpoint
    env = {
        "AZURE_STORAGE_CONNECTION_STRING": good,
        "CONN_WRONG_KEY": good.replace(key, wrong_key),
        "CONN_SAS": f"QueueEndpoint={endpoint};SharedAccessSignature={sas}",
        "CONN_MALFORMED": f"DefaultEndpointsProtocol=http;AccountKey={key};this is;not one",
        "CONN_BAD_KEY": good.replace(key, bad_key),
        "CONN_CLOSED": good.replace(endpoint, f"http://127.0.0.1:{closed_port()}/{ACCOUNT_NAME}"),
    }
    secrets = Secrets(whole=[*env.values(), sas], pieces_of=[key, wrong_key, bad_key, signature])

    default = "AZURE_STORAGE_CONNECTION_STRING"
    rules = [
        rule(f"{p}-noqueue", f"{p}-none", default, fallback={"failureThreshold": 1, "replicas": 2}),
        rule(f"{p}-wrongkey", existing, "CONN_WRONG_KEY"),
        rule(f"{p}-sas", existing, "CONN_SAS"),
        rule(f"{p}-malformed", existing, "CONN_MALFORMED"),
        rule(f"{p}-badkey", existing, "CONN_BAD_KEY"),
        rule(f"{p}-closed", existing, "CONN_CLOSED"),
        rule(f"{p}-nodeploy", existing, default),
        rule(f"{p}-read403", existing, default),
        rule(f"{p}-write403", existing, default),
    ]
    for entry in rules:
        if not entry["name"].endswith("-nodeploy"):
            cluster.create_deployment(entry["name"], replicas=0)
    api_faults.append(server.inject_fault(rf"/deployments/{p}-read403$", "GET", status=403))
    api_faults.append(
        server.inject_fault(rf"/deployments/{p}-write403/scale$", "PATCH", status=403)
    )
    rules_path = write_rules(tmp_path / "rules.yaml", rules)
    args = ["--config", str(rules_path), "--kubeconfig", str(cluster.daemon_kubeconfig),
            "--log-level", "DEBUG", "--log-format", log_format]  # fmt: skip
    # Every path must have run, or the search below proves nothing.
    evidence = [
        rf"rule {p}-noqueue: .*QueueNotFound",
        rf"scaled 0 -> 2 \(rule {p}-noqueue \[fallback\]",
        rf"rule {p}-wrongkey: .*AuthenticationFailed",
        rf"rule {p}-sas: .*AuthenticationFailed",
        rf"rule {p}-malformed: .*the connection string is malformed",
        rf"rule {p}-badkey: .*the account key cannot sign requests",
        rf"rule {p}-closed: .*ConnectionError",
        rf"rule {p}-nodeploy: cannot read the target Deployment: .*not found",
        rf"rule {p}-read403: cannot read the target Deployment: .*403",
        rf"rule {p}-write403: cannot scale 0 -> 3: .*403",
    ]

    daemon = DaemonProcess(
        ["run", *args, "--health-port", "0", "--reload-interval", "0.3"], env=env
    )
    with daemon:
        for pattern in evidence:
            daemon.wait_for_output(pattern, timeout=WAIT)
        port = int(daemon.wait_for_output(r"health endpoints on port (\d+)")[1])
        metrics = fetch(f"http://127.0.0.1:{port}/metrics")
        status = fetch(f"http://127.0.0.1:{port}/status")
        assert daemon.stop() == 0
    assert re.search(rf'eventscaler_source_errors_total{{[^}}]*target="{p}-wrongkey"', metrics)
    assert 'kind="Unauthorized"' in metrics
    rows = {row["rule"]: row for row in json.loads(status)["rules"]}
    assert "AuthenticationFailed" in rows[f"{p}-sas"]["error"]
    assert "ConnectionError" in rows[f"{p}-closed"]["error"]

    # The same paths once more through `--once` and `status` (no daemon answers on that URL).
    once = run_command(["run", *args, "--once"], env)
    assert once.returncode == 1
    table = run_command(
        ["status", "--config", str(rules_path), "--kubeconfig", str(cluster.daemon_kubeconfig),
         "--url", f"http://127.0.0.1:{closed_port()}"],
        env,
    )  # fmt: skip
    assert "evaluated once now in dry-run" in table.stdout, table.stderr
    assert "QueueNotFound" in table.stdout

    events = [
        r["body"]
        for r in server.requests
        if r["resource"] == "events" and r["verb"] == "create" and isinstance(r["body"], dict)
    ]
    reasons = {
        (e["involvedObject"]["name"], e["reason"])
        for e in events
        if e["involvedObject"]["name"].startswith(p)
    }
    for name, reason in [
        (f"{p}-noqueue", "FailedGetTriggerValue"),
        (f"{p}-noqueue", "FallbackActive"),
        (f"{p}-noqueue", "SuccessfulRescale"),
        (f"{p}-wrongkey", "FailedGetTriggerValue"),
        (f"{p}-sas", "FailedGetTriggerValue"),
        (f"{p}-malformed", "FailedGetTriggerValue"),
        (f"{p}-closed", "FailedGetTriggerValue"),
        (f"{p}-write403", "FailedRescale"),
    ]:
        assert (name, reason) in reasons, sorted(reasons)

    outputs = {
        f"daemon log ({log_format})": daemon.output,
        "/metrics": metrics,
        "/status": status,
        "--once output": once.stdout + once.stderr,
        "status command output": table.stdout + table.stderr,
        # Every request the API server received: paths, queries and bodies (Events included).
        "Kubernetes API requests": json.dumps(server.requests, default=str),
    }
    leaks = {where: found for where, text in outputs.items() if (found := secrets.found_in(text))}
    assert not leaks, f"secrets found: {leaks}"
    # The search itself works.
    assert secrets.found_in(f"x{key[5:20]}x") and secrets.found_in(quote(signature, safe=""))


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def redis_rules(prefix: str, key: str, address: str) -> list[dict[str, Any]]:
    """One rule per path: the right password, a wrong one (list and stream), an unset variable,
    and an addressFromEnv holding a URL with a password."""
    login = {"usernameFromEnv": "REDIS_USER", "passwordFromEnv": "REDIS_WRONG"}
    a_list = {"type": "redis", "listName": key, "address": address, **login}
    triggers = {
        "good": {**a_list, "passwordFromEnv": "REDIS_GOOD"},
        "wrong": a_list,
        "stream": {"type": "redis-streams", "stream": key, "consumerGroup": "g", "lagCount": 5,
                   "address": address, **login},
        "unset": {**a_list, "passwordFromEnv": "NO_SUCH"},
        "url": {"type": "redis", "listName": key, "addressFromEnv": "REDIS_URL", **login,
                "passwordFromEnv": "REDIS_GOOD"},
    }  # fmt: skip
    return [
        {"name": f"{prefix}-{name}", "deployment": f"{prefix}-{name}", "maxReplicas": 5,
         "pollingInterval": POLL, "cooldownPeriod": 60,
         "triggers": [trigger]}
        for name, trigger in triggers.items()
    ]  # fmt: skip


def test_no_redis_password_in_logs_metrics_status_or_api_requests(
    cluster: Cluster, server: Any, redis_server: Any, unique: str, tmp_path: Path
) -> None:
    """The redis and redis-streams sources' secrets: passwordFromEnv's value (right or wrong)
    and an addressFromEnv that holds a URL with a password, on every path that reports."""
    p, key = unique, f"{unique}-jobs"
    good, wrong = redis_server.password, f"wrong-{random_key()[:24]}"
    url_password = f"in-url-{random_key()[:20]}"
    with redis_server.client() as client:
        client.rpush(key, *range(12))
    env = {
        "REDIS_USER": redis_server.username,
        "REDIS_GOOD": good,
        "REDIS_WRONG": wrong,
        "REDIS_URL": f"redis://eventscaler:{url_password}@{redis_server.address}/0",
    }
    secrets = Secrets(whole=[env["REDIS_URL"]], pieces_of=[good, wrong, url_password])
    rules = redis_rules(p, key, redis_server.address)
    for entry in rules:
        cluster.create_deployment(entry["name"], replicas=0)
    rules_path = write_rules(tmp_path / "rules.yaml", rules)
    args = ["--config", str(rules_path), "--kubeconfig", str(cluster.daemon_kubeconfig),
            "--log-level", "DEBUG"]  # fmt: skip
    evidence = [
        rf"scaled 0 -> 3 \(rule {p}-good ",
        rf"rule {p}-wrong: source read failed: {key}: redis list '{key}' .*AuthenticationFailed",
        rf"rule {p}-stream: source read failed: {key}: redis stream '{key}' group 'g' "
        r".*AuthenticationFailed",
        rf"rule {p}-unset: .*MissingEnv: env NO_SUCH \(the password\) is unset or empty",
        rf"rule {p}-url: .*InvalidAddress: env REDIS_URL does not hold host:port",
    ]
    daemon = DaemonProcess(["run", *args, "--health-port", "0"], env=env)
    with daemon:
        for pattern in evidence:
            daemon.wait_for_output(pattern, timeout=WAIT)
        port = int(daemon.wait_for_output(r"health endpoints on port (\d+)")[1])
        metrics = fetch(f"http://127.0.0.1:{port}/metrics")
        status = fetch(f"http://127.0.0.1:{port}/status")
        assert daemon.stop() == 0
    assert 'kind="Unauthorized"' in metrics and 'kind="MissingCredential"' in metrics
    rows = {row["rule"]: row for row in json.loads(status)["rules"]}
    assert "AuthenticationFailed" in rows[f"{p}-wrong"]["error"]
    once = run_command(["run", *args, "--once"], env)
    assert once.returncode == 1 and "AuthenticationFailed" in once.stdout + once.stderr
    outputs = {
        "daemon log": daemon.output,
        "/metrics": metrics,
        "/status": status,
        "--once output": once.stdout + once.stderr,
        "Kubernetes API requests": json.dumps(server.requests, default=str),
    }
    leaks = {where: found for where, text in outputs.items() if (found := secrets.found_in(text))}
    assert not leaks, f"secrets found: {leaks}"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_sqs_or_metrics_api_secret_anywhere(
    cluster: Cluster,
    server: Any,
    sqs_iam_server: Any,
    unique: str,
    tmp_path: Path,
    log_format: str,
) -> None:
    """The aws-sqs-queue and metrics-api secrets: a wrong AWS secret key (refused by moto's IAM
    checks), a bearer token, a basic password, an API key sent in the query, and URLs from
    urlFromEnv with a password and a signature in them, each refused by the endpoint."""
    from tests.support.metrics_api_server import MetricsApiServer

    p = unique
    queue = sqs_iam_server.client().create_queue(QueueName=f"{p}-q")["QueueUrl"]
    aws_secret = random_key()[:40]
    token, password, api_key = random_key()[:32], random_key()[:24], random_key()[:28]
    url_password, signature = random_key()[:20], random_key()[:30]
    with MetricsApiServer() as endpoint:
        endpoint.require(lambda seen: False)  # every credential is refused: each path logs it
        host = f"127.0.0.1:{endpoint.port}"
        env = {
            "AWS_ACCESS_KEY_ID": sqs_iam_server.access_key_id,
            "AWS_SECRET_ACCESS_KEY": aws_secret,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "API_TOKEN": token,
            "API_PASSWORD": password,
            "API_KEY": api_key,
            "URL_WITH_PASSWORD": f"http://ops:{quote(url_password, safe='')}@{host}/stats",
            "URL_WITH_SIG": f"http://{host}/stats?sig={quote(signature, safe='')}&page=1",
        }
        secrets = Secrets(
            whole=[env["URL_WITH_PASSWORD"], env["URL_WITH_SIG"]],
            pieces_of=[aws_secret, token, password, api_key, url_password, signature],
        )
        api = {"type": "metrics-api", "url": f"http://{host}/stats", "valueLocation": "n",
               "targetValue": 5}  # fmt: skip
        triggers = {
            f"{p}-sqs": {"type": "aws-sqs-queue", "queueURL": queue, "awsRegion": "us-east-1",
                         "awsEndpoint": sqs_iam_server.endpoint_url},
            f"{p}-bearer": {**api, "authMode": "bearer", "tokenFromEnv": "API_TOKEN"},
            f"{p}-basic": {**api, "authMode": "basic", "username": "ops",
                           "passwordFromEnv": "API_PASSWORD"},
            f"{p}-apikey": {**api, "authMode": "apiKey", "apiKeyFromEnv": "API_KEY",
                            "method": "query"},
            f"{p}-urlpw": {**{k: v for k, v in api.items() if k != "url"},
                           "urlFromEnv": "URL_WITH_PASSWORD"},
            f"{p}-urlsig": {**{k: v for k, v in api.items() if k != "url"},
                            "urlFromEnv": "URL_WITH_SIG"},
        }  # fmt: skip
        rules = []
        for name, trigger in triggers.items():
            cluster.create_deployment(name, replicas=0)
            rules.append({"name": name, "deployment": name, "pollingInterval": POLL,
                          "cooldownPeriod": 60, "triggers": [trigger]})  # fmt: skip
        rules_path = write_rules(tmp_path / "rules.yaml", rules)
        args = ["--config", str(rules_path), "--kubeconfig", str(cluster.daemon_kubeconfig),
                "--log-level", "DEBUG", "--log-format", log_format]  # fmt: skip
        daemon = DaemonProcess(["run", *args, "--health-port", "0"], env=env)
        with daemon:
            for name in triggers:
                daemon.wait_for_output(rf"rule {name}: .*Unauthorized", timeout=WAIT)
            port = int(daemon.wait_for_output(r"health endpoints on port (\d+)")[1])
            metrics = fetch(f"http://127.0.0.1:{port}/metrics")
            status = fetch(f"http://127.0.0.1:{port}/status")
            assert daemon.stop() == 0
        once = run_command(["run", *args, "--once"], env)
        assert once.returncode == 1
        # The endpoint did receive every credential: the search below would find them.
        seen = json.dumps([r.__dict__ for r in endpoint.requests])
        assert secrets.found_in(seen)
    outputs = {
        f"daemon log ({log_format})": daemon.output,
        "/metrics": metrics,
        "/status": status,
        "--once output": once.stdout + once.stderr,
        "Kubernetes API requests": json.dumps(server.requests, default=str),
    }
    leaks = {where: found for where, text in outputs.items() if (found := secrets.found_in(text))}
    assert not leaks, f"secrets found: {leaks}"


def rabbit_rule(name: str, queue: str, **trigger: Any) -> dict[str, Any]:
    return {
        "name": name,
        "deployment": name,
        "minReplicas": 0,
        "maxReplicas": 5,
        "pollingInterval": POLL,
        "cooldownPeriod": 60,
        "triggers": [{"type": "rabbitmq", "queueName": queue, "value": 5, **trigger}],
    }


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_rabbitmq_secret_in_logs_metrics_status_or_api_requests(
    cluster: Cluster, server: Any, rabbitmq_server: Any, unique: str, tmp_path: Path,
    log_format: str,
) -> None:  # fmt: skip
    p = unique
    rabbit = rabbitmq_server
    existing = f"{p}-q"
    rabbit.publish(existing, 12)
    wrong = "wr0ng-" + random_key()[:20].replace("/", "x").replace("+", "y")
    amqp, http = rabbit.amqp_url(), rabbit.management_url
    env = {
        "RABBIT_AMQP": amqp,
        "RABBIT_HTTP": http,
        "RABBIT_AMQP_WRONG": amqp.replace(rabbit.password, wrong),
        "RABBIT_HTTP_WRONG": http.replace(rabbit.password, wrong),
        "RABBIT_CLOSED": f"amqp://{rabbit.username}:{rabbit.password}@127.0.0.1:{closed_port()}/",
        "RABBIT_USER": rabbit.username,
        "RABBIT_PASS_WRONG": wrong,
    }
    secrets = Secrets(whole=[amqp, http, env["RABBIT_AMQP_WRONG"], env["RABBIT_HTTP_WRONG"],
                             env["RABBIT_CLOSED"]], pieces_of=[rabbit.password, wrong])  # fmt: skip
    bare_http = http.replace(f"{rabbit.username}:{rabbit.password}@", "")
    rules = [
        rabbit_rule(f"{p}-noqueue", f"{p}-none", hostFromEnv="RABBIT_AMQP"),
        rabbit_rule(f"{p}-noqueue-http", f"{p}-none", hostFromEnv="RABBIT_HTTP"),
        rabbit_rule(f"{p}-wrong", existing, hostFromEnv="RABBIT_AMQP_WRONG"),
        rabbit_rule(f"{p}-wrong-http", existing, hostFromEnv="RABBIT_HTTP_WRONG"),
        rabbit_rule(f"{p}-closed", existing, hostFromEnv="RABBIT_CLOSED"),
        rabbit_rule(
            f"{p}-userpass",
            existing,
            host=bare_http,
            usernameFromEnv="RABBIT_USER",
            passwordFromEnv="RABBIT_PASS_WRONG",
        ),  # fmt: skip
        rabbit_rule(
            f"{p}-rate", existing, hostFromEnv="RABBIT_AMQP", mode="MessageRate", value=1
        ),  # fmt: skip
    ]
    for entry in rules:
        cluster.create_deployment(entry["name"], replicas=0)
    rules_path = write_rules(tmp_path / "rules.yaml", rules)
    args = ["--config", str(rules_path), "--kubeconfig", str(cluster.daemon_kubeconfig),
            "--log-level", "DEBUG", "--log-format", log_format]  # fmt: skip
    evidence = [
        rf"rule {p}-noqueue: .*QueueNotFound",
        rf"rule {p}-noqueue-http: .*QueueNotFound",
        rf"rule {p}-wrong: .*AccessRefused",
        rf"rule {p}-wrong-http: .*AccessRefused",
        rf"rule {p}-closed: .*ConnectionError",
        rf"rule {p}-userpass: .*AccessRefused",
        rf"rule {p}-rate: .*InvalidHost",
    ]
    daemon = DaemonProcess(["run", *args, "--health-port", "0", "--reload-interval", "0.3"], env)
    with daemon:
        for pattern in evidence:
            daemon.wait_for_output(pattern, timeout=WAIT)
        port = int(daemon.wait_for_output(r"health endpoints on port (\d+)")[1])
        metrics = fetch(f"http://127.0.0.1:{port}/metrics")
        status = fetch(f"http://127.0.0.1:{port}/status")
        assert daemon.stop() == 0
    assert re.search(rf'eventscaler_source_errors_total{{[^}}]*target="{p}-wrong"', metrics)
    rows = {row["rule"]: row for row in json.loads(status)["rules"]}
    assert "AccessRefused" in rows[f"{p}-wrong-http"]["error"]
    once = run_command(["run", *args, "--once"], env)
    assert once.returncode == 1
    events = [r for r in server.requests if r["resource"] == "events" and r["verb"] == "create"]
    assert any(f"{p}-wrong" in json.dumps(e["body"]) for e in events)

    outputs = {
        f"daemon log ({log_format})": daemon.output,
        "/metrics": metrics,
        "/status": status,
        "--once output": once.stdout + once.stderr,
        "Kubernetes API requests": json.dumps(server.requests, default=str),
    }
    leaks = {where: found for where, text in outputs.items() if (found := secrets.found_in(text))}
    assert not leaks, f"secrets found: {leaks}"
    assert secrets.found_in(f"x{rabbit.password[3:18]}x")  # the search itself works
