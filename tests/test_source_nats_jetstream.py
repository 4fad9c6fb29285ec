"""The `nats-jetstream` source (eventscaler/sources/nats_jetstream.py) against a real nats-server
2.9 with JetStream on 127.0.0.1 (streams, consumers and messages made with nats-py).

Scenarios:
- metadata, table-driven: KEDA's fields load (lagThreshold 10 and account $G by default,
  useHttps as KEDA's string); invalid rows (a scheme in the endpoint, credentials in it, a
  misspelt key, a missing stream or consumer, a JetStream name with a '.') give the exact line;
- the value is num_pending + num_ack_pending: messages not delivered yet plus delivered ones not
  acknowledged; an ack lowers it, a new message raises it;
- a consumer not created yet counts the stream's messages: in a work-queue stream whose messages
  were all acknowledged that is 0, where KEDA's last_seq would still count them all;
- a missing stream or an account without JetStream there is NotFound, naming stream, consumer,
  account and endpoint;
- the server stopped: Unavailable within the budget; started again: the same reader reads again
  (JetStream keeps its store); a server that accepts and never answers: Timeout within the budget;
- the monitoring port's answers that are not a count: a 503 is retried within the tick, a 500 that
  lasts is ServiceError, a 404 (not a NATS monitoring port) ServiceError at once, HTML BadResponse,
  a consumer without num_pending BadResponse (never 0);
- useHttps against the server's HTTPS monitoring port, its CA from REQUESTS_CA_BUNDLE;
- convert: KEDA's documented example loads; a TriggerAuthentication is explained;
  simulate: the consumer's backlog, in-flight messages included.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import nats
import pytest
import requests
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy

from eventscaler import retry
from eventscaler.config import parse_rules_text
from eventscaler.convert import convert_text, render_rules
from eventscaler.sources import source_type
from eventscaler.sources.base import SourceError
from eventscaler.sources.nats_jetstream import NatsJetStreamSettings, NatsJetStreamSource
from tests.support.kubeapi_tls import generate_tls_material
from tests.support.servers.nats import NatsServer
from tests.support.servers.process import HOST
from tests.support.source_tables import assert_invalid, assert_valid, load_trigger

T = TypeVar("T")


def js(**fields: Any) -> dict[str, Any]:
    base = {
        "type": "nats-jetstream",
        "natsServerMonitoringEndpoint": "nats.nats.svc:8222",
        "stream": "mystream",
        "consumer": "pull_consumer",
    }
    return {**base, **fields}


# --- metadata --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trigger", "settings", "target", "activation"),
    [
        (js(), NatsJetStreamSettings("nats.nats.svc:8222", "mystream", "pull_consumer"), 10, 0),
        (
            js(account="ACME", lagThreshold=50, activationLagThreshold=15, useHttps="true"),
            NatsJetStreamSettings("nats.nats.svc:8222", "mystream", "pull_consumer", "ACME", True),
            50,
            15,
        ),
        (
            js(natsServerMonitoringEndpoint="127.0.0.1", account="$G"),
            NatsJetStreamSettings("127.0.0.1", "mystream", "pull_consumer"),
            10,
            0,
        ),
    ],
)
def test_valid_metadata_loads(
    trigger: dict[str, Any], settings: NatsJetStreamSettings, target: float, activation: float
) -> None:
    expected = {"settings": settings, "target": target, "activation": activation}
    assert_valid("nats-jetstream", trigger, {**expected, "name": "mystream-pull_consumer"})


@pytest.mark.parametrize(
    ("trigger", "line"),
    [
        (
            js(natsServerMonitoringEndpoint="https://nats:8222"),
            ".natsServerMonitoringEndpoint: expected host:port without a scheme "
            "(useHttps: true for HTTPS), got 'https://nats:8222'",
        ),
        (
            js(natsServerMonitoringEndpoint="admin:s3cret-pw@nats:8222"),
            ".natsServerMonitoringEndpoint: expected host:port, got a value with credentials (not "
            "shown): the monitoring endpoint takes none",
        ),
        (
            js(natsServerMonitoringEndpoint="nats:8222/jsz"),
            ".natsServerMonitoringEndpoint: expected host:port of the server's monitoring endpoint",
        ),
        (js(lagTreshold=5), ".lagTreshold: unknown field (did you mean 'lagThreshold'?)"),
        (
            {"type": "nats-jetstream", "natsServerMonitoringEndpoint": "n:1", "consumer": "c"},
            ".stream: is required",
        ),
        (js(consumer=None), ".consumer: is required"),
        (
            js(stream="orders.new"),
            ".stream: expected a JetStream name (no blanks, '.', '*', '>' or '/'), "
            "got 'orders.new'",
        ),
        (js(useHttps="no"), ".useHttps: expected true or false, got 'no'"),
        (js(lagThreshold=0), ".lagThreshold: expected a positive number, got 0"),
    ],
)
def test_invalid_metadata_names_the_field(trigger: dict[str, Any], line: str) -> None:
    trigger = {k: v for k, v in trigger.items() if v is not None}
    assert_invalid("nats-jetstream", trigger, "triggers[0]" + line)
    problems, _ = load_trigger("nats-jetstream", trigger)
    assert not any("s3cret-pw" in p for p in problems)


# --- JetStream through nats-py (tests only) --------------------------------------------------


def jetstream(server: NatsServer, action: Callable[[JetStreamContext], Awaitable[T]]) -> T:
    async def run() -> T:
        connection = await nats.connect(server.url, connect_timeout=5, max_reconnect_attempts=0)
        try:
            return await action(connection.jetstream())
        finally:
            await connection.close()

    return asyncio.run(run())


def new_stream(server: NatsServer, work_queue: bool = False) -> str:
    name = f"S{uuid.uuid4().hex[:10]}"
    retention = RetentionPolicy.WORK_QUEUE if work_queue else RetentionPolicy.LIMITS
    jetstream(
        server, lambda j: j.add_stream(name=name, subjects=[f"{name}.*"], retention=retention)
    )
    return name


def new_consumer(server: NatsServer, stream: str, durable: str) -> None:
    config = ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT, ack_wait=600)
    jetstream(server, lambda j: j.add_consumer(stream, config))


def publish(server: NatsServer, stream: str, count: int) -> None:
    async def send(j: JetStreamContext) -> None:
        for i in range(count):
            await j.publish(f"{stream}.new", f"m{i}".encode())

    jetstream(server, send)


def take(server: NatsServer, stream: str, durable: str, count: int, ack: int) -> None:
    """A worker fetches `count` messages and acknowledges the first `ack` of them."""

    async def work(j: JetStreamContext) -> None:
        subscription = await j.pull_subscribe(f"{stream}.*", durable=durable, stream=stream)
        messages = await subscription.fetch(count, timeout=5)
        assert len(messages) == count
        for message in messages[:ack]:
            await message.ack_sync()

    jetstream(server, work)


@pytest.fixture
def source() -> Iterator[NatsJetStreamSource]:
    reader = NatsJetStreamSource(timeout_seconds=2.0)
    yield reader
    reader.close()


def settings(
    server: NatsServer | str, stream: str, consumer: str = "workers", **fields: Any
) -> NatsJetStreamSettings:
    endpoint = server if isinstance(server, str) else server.monitoring_endpoint
    return NatsJetStreamSettings(endpoint, stream, consumer, **fields)


def read_error(source: NatsJetStreamSource, trigger: NatsJetStreamSettings) -> SourceError:
    with pytest.raises(SourceError) as info:
        source.read_lag(trigger)
    assert "\n" not in str(info.value)
    return info.value


# --- reading ---------------------------------------------------------------------------------


def test_pending_plus_unacknowledged(nats_server: NatsServer, source: NatsJetStreamSource) -> None:
    stream = new_stream(nats_server)
    new_consumer(nats_server, stream, "workers")
    publish(nats_server, stream, 10)
    assert source.read_lag(settings(nats_server, stream)) == 10
    take(nats_server, stream, "workers", count=4, ack=1)  # 6 pending, 3 in flight, 1 done
    consumer = nats_server.jsz(consumers="true")["account_details"][0]["stream_detail"]
    detail = next(s for s in consumer if s["name"] == stream)["consumer_detail"][0]
    assert (detail["num_pending"], detail["num_ack_pending"]) == (6, 3)
    assert source.read_lag(settings(nats_server, stream)) == 9
    publish(nats_server, stream, 2)
    assert source.read_lag(settings(nats_server, stream)) == 11


def test_a_consumer_not_created_yet_counts_the_stream_messages(
    nats_server: NatsServer, source: NatsJetStreamSource
) -> None:
    stream = new_stream(nats_server, work_queue=True)
    new_consumer(nats_server, stream, "first")
    publish(nats_server, stream, 5)
    assert source.read_lag(settings(nats_server, stream, "later")) == 5
    take(nats_server, stream, "first", count=5, ack=5)  # a work queue drops acknowledged messages
    jsz = nats_server.jsz(consumers="true")["account_details"][0]["stream_detail"]
    state = next(s for s in jsz if s["name"] == stream)["state"]
    assert (state["messages"], state["last_seq"]) == (0, 5)  # KEDA would read last_seq: 5
    assert source.read_lag(settings(nats_server, stream, "later")) == 0


def test_missing_stream_and_account_are_not_found(
    nats_server: NatsServer, source: NatsJetStreamSource
) -> None:
    error = read_error(source, settings(nats_server, "NOSUCHSTREAM"))
    assert (error.kind, error.code) == ("NotFound", "StreamNotFound")
    assert str(error) == (
        f"nats-jetstream stream 'NOSUCHSTREAM' consumer 'workers' (account $G at "
        f"http://{nats_server.monitoring_endpoint}/jsz): StreamNotFound: account '$G' has no "
        "stream 'NOSUCHSTREAM'"
    )
    stream = new_stream(nats_server)
    error = read_error(source, settings(nats_server, stream, account="ACME"))
    assert (error.kind, error.code) == ("NotFound", "AccountNotFound")


def test_a_stopped_server_fails_fast_and_a_restart_recovers() -> None:
    timeout = 1.0
    with NatsServer() as server:  # its own: the shared one serves the other tests
        stream = new_stream(server)
        new_consumer(server, stream, "workers")
        publish(server, stream, 3)
        reader = NatsJetStreamSource(timeout_seconds=timeout)
        assert reader.read_lag(settings(server, stream)) == 3
        server.stop()
        started = time.monotonic()
        with retry.budget(2 * timeout):
            error = read_error(reader, settings(server, stream))
        assert time.monotonic() - started < 2 * timeout + 0.5
        assert (error.kind, error.code) == ("Unavailable", "ConnectionError")
        assert f"cannot reach {server.monitoring_endpoint}" in str(error)
        server.start()
        assert reader.read_lag(settings(server, stream)) == 3  # the store survived the restart
        reader.close()


def test_a_silent_server_times_out_within_the_budget(source: NatsJetStreamSource) -> None:
    timeout = 0.5
    with socket.socket() as silent:
        silent.bind((HOST, 0))
        silent.listen(16)
        reader = NatsJetStreamSource(timeout_seconds=timeout)
        started = time.monotonic()
        with retry.budget(2.5 * timeout):
            error = read_error(reader, settings(f"{HOST}:{silent.getsockname()[1]}", "S"))
        elapsed = time.monotonic() - started
        reader.close()
    assert (error.kind, error.code) == ("Timeout", "Timeout")
    assert elapsed < 2.5 * timeout + 0.3


class Answers:
    """An HTTP server on 127.0.0.1 answering /jsz with the answers it is given, in turn."""

    def __init__(self, *answers: tuple[int, str]) -> None:
        self.answers = list(answers)
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server name)
                owner.requests += 1
                status, body = owner.answers[min(owner.requests, len(owner.answers)) - 1]
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.endpoint = f"{HOST}:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def jsz_body(consumer: dict[str, Any]) -> str:
    stream = {"name": "S", "state": {"messages": 1}, "consumer_detail": [consumer]}
    return json.dumps({"account_details": [{"name": "$G", "stream_detail": [stream]}]})


GOOD = jsz_body({"name": "workers", "num_pending": 4, "num_ack_pending": 1})


@pytest.mark.parametrize(
    ("answers", "value", "kind", "code", "requests"),
    [
        ([(503, "busy"), (200, GOOD)], 5, None, None, 2),
        ([(500, "boom")], None, "ServiceError", "HttpError", 4),
        ([(404, "404 page not found")], None, "ServiceError", "HttpError", 1),
        ([(200, "<html>not json</html>")], None, "BadResponse", "BadResponse", 1),
        (
            [(200, jsz_body({"name": "workers", "num_ack_pending": 1}))],
            None,
            "BadResponse",
            "BadResponse",
            1,
        ),
        ([(200, '{"disabled": true}')], None, "ServiceError", "JetStreamDisabled", 1),
    ],
)
def test_answers_that_are_not_a_count(
    answers: list[tuple[int, str]],
    value: int | None,
    kind: str | None,
    code: str | None,
    requests: int,
) -> None:
    server = Answers(*answers)
    reader = NatsJetStreamSource(timeout_seconds=1.0)
    try:
        with retry.budget(10.0):
            if value is not None:
                assert reader.read_lag(settings(server.endpoint, "S")) == value
            else:
                error = read_error(reader, settings(server.endpoint, "S"))
                assert (error.kind, error.code) == (kind, code)
    finally:
        reader.close()
        server.close()
    assert server.requests == requests  # 5xx retried (bounded), others not


class HttpsNatsServer(NatsServer):
    """The same server with its monitoring port on HTTPS, certificate signed by a test CA."""

    name = "NATS HTTPS"

    def _prepare(self) -> None:
        super()._prepare()
        self.tls = generate_tls_material(self.directory)
        (self.directory / "ca.pem").write_bytes(self.tls.ca_pem)

    def _launch(self) -> None:
        argv = [
            self._binary,
            "-a",
            HOST,
            "-p",
            str(self.port()),
            "-ms",
            str(self.port("http")),
            "--tls",
            "--tlscert",
            str(self.tls.cert_path),
            "--tlskey",
            str(self.tls.key_path),
            "-js",
            "-sd",
            str(self.directory / "jetstream"),
        ]
        self._spawn("nats-server", argv)

    def _is_ready(self) -> bool:
        url = f"https://{self.monitoring_endpoint}/healthz"
        return requests.get(url, timeout=2, verify=str(self.directory / "ca.pem")).ok


def test_use_https(monkeypatch: pytest.MonkeyPatch) -> None:
    with HttpsNatsServer() as server:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.directory / "ca.pem"))
        reader = NatsJetStreamSource(timeout_seconds=2.0)
        error = read_error(reader, settings(server, "S", use_https=True))
        assert error.code == "StreamNotFound"  # an answer over HTTPS, verified
        assert "https://" in str(error)
        assert read_error(reader, settings(server, "S")).kind in ("Unavailable", "ServiceError")
        reader.close()


# --- convert and simulate --------------------------------------------------------------------

KEDA_EXAMPLE = """
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: nats-jetstream-scaledobject, namespace: nats-jetstream}
spec:
  pollingInterval: 3
  cooldownPeriod: 10
  minReplicaCount: 0
  maxReplicaCount: 2
  scaleTargetRef: {name: sub}
  triggers:
  - type: nats-jetstream
    metadata:
      natsServerMonitoringEndpoint: "nats.nats.svc.cluster.local:8222"
      account: "$G"
      stream: "mystream"
      consumer: "pull_consumer"
      lagThreshold: "10"
      activationLagThreshold: "15"
      useHttps: "false"
    authenticationRef: {name: nats-auth}
"""


def test_convert_keda_example() -> None:
    conversion = convert_text(KEDA_EXAMPLE, "so.yaml")
    (trigger,) = conversion.rules[0]["triggers"]
    assert trigger == {
        "type": "nats-jetstream",
        "natsServerMonitoringEndpoint": "nats.nats.svc.cluster.local:8222",
        "account": "$G",
        "stream": "mystream",
        "consumer": "pull_consumer",
        "lagThreshold": 10,
        "activationLagThreshold": 15,
        "useHttps": False,
    }
    notes = [str(n) for n in conversion.notes]
    assert any("authenticationRef" in n and "reads no TriggerAuthentication" in n for n in notes)
    result = parse_rules_text(render_rules(conversion, "so.yaml"), "out.yaml")
    assert result.problems == ()
    assert (result.rules[0].triggers[0].target, result.rules[0].triggers[0].activation) == (10, 15)


def test_simulated_value_counts_in_flight_messages() -> None:
    nats_js = source_type("nats-jetstream")
    assert nats_js.simulated_value(NatsJetStreamSettings("n:1", "s", "c"), 10, 4) == 10
