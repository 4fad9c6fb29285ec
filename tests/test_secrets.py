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
The same sweep for the rabbitmq source against the real RabbitMQ, each URL and password in its own
variable: a missing queue over AMQP and over the management API (the good URL's password), a
wrong password in an amqp:// and in an http:// URL, a password-carrying URL to a closed port, a
wrong passwordFromEnv next to a host without one, and an amqp URL given to an http-only mode.
Each secret is looked for whole, URL-encoded and JSON-escaped, and for keys, signatures and
passwords every 12-character piece too, so a truncated secret would be caught as well.
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


# --- rabbitmq: URLs with passwords, and passwords of their own --------------------------------


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
