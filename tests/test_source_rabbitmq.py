"""The rabbitmq source: its fields, and its readings and errors against a real RabbitMQ.

Metadata, table-driven (no server): valid triggers load with their settings, target and
activation; each invalid one gives its exact `file: rules[0] (r).triggers[0].field: message`
line, among them a `host` holding a password (pointed to hostFromEnv), a misspelt field, each
http-only feature on an amqp URL, mode without value, a half pair of username/password vars.
The vhost and path an amqp or http URL gives, as KEDA reads them.

Against the real RabbitMQ 3.10 (the session's `rabbitmq_server`, AMQP and management API):
- AMQP counts ready messages only; the management API counts ready + unacknowledged, and
  ready only with excludeUnacknowledged (messages held unacked by a live consumer);
- MessageRate follows a steady publisher's rate and falls back to 0 when it stops;
- useRegex: sum, max and avg (KEDA's whole-number average) over matching queues; none
  matching reads 0; more matches than pageSize is an error, not a partial sum;
- a vhost from the URL's path or from vhostName, one with a `/` in its name, both protocols;
- a URL without a password plus usernameFromEnv / passwordFromEnv, both protocols;
- errors, each with its kind and a one-line message naming the queue, never the password:
  missing queue (NotFound), missing vhost (NotFound), wrong password (Unauthorized), unset
  variable (MissingCredential), an amqp URL from env for an http-only mode (InvalidCredential),
  a closed port (Unavailable, fast), a server frozen mid-connection (Timeout within the budget,
  both protocols), then a read after it comes back reconnects;
- a connection cut under an idle source is replaced on the next read (one retry, no error);
- one AMQP connection per server and credentials for 200 reads from 8 threads over 4 queues;
  a changed URL (a rotated password) gets a new connection and the old one is closed;
- the password and the URL are registered for redaction.

End to end, the real daemon process with the Kubernetes API (test server or E2E_KUBECONFIG):
- a flood of 95 messages (one transaction) takes a Deployment 0 -> 10 in one write, over AMQP
  and over the management API; purged, back to 0 no sooner than the cooldown;
- RabbitMQ stopped mid-run: both rules keep their 4 replicas through more failed ticks than the
  cooldown, each error names the queue; restarted (durable queues kept), 20 more -> 6;
- a wrong password fails its own rule only (`--once` exits 1, the other rule scales), the
  error names the rule, the queue and the variable, never a password (the full sweep of logs,
  metrics, status and Events is tests/test_secrets.py);
- `validate` names a misspelt field.
convert: KEDA's example (hostFromEnv), a TriggerAuthentication's `host` Secret (and one not in
the input), a `host` with a password (moved to hostFromEnv, never written out), the deprecated
queueLength, an operation without useRegex, an unknown key; every output loads. simulate: the
simulated value of each counting, and a rule replayed by the command. The commented example
of config.example.yaml loads.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pika
import pytest

from eventscaler import retry
from eventscaler.config import parse_rules_text
from eventscaler.redact import redact
from eventscaler.sources import rabbitmq
from eventscaler.sources.base import SourceError
from eventscaler.sources.rabbitmq import RabbitMqSettings, RabbitMqSource, rabbitmq_trigger
from eventscaler.triggers import Measured, Trigger
from tests.conftest import write_rules
from tests.support.cluster import Cluster, wait_for
from tests.support.daemon_process import run_command
from tests.support.servers.process import wait_until
from tests.support.servers.rabbitmq import RabbitMqServer
from tests.support.source_e2e import source_daemon
from tests.support.source_tests import (
    COOLDOWN,
    POLL,
    closed_port,
    commented_example,
    count_lines,
    e2e_rule,
    load_trigger,
    sdk_loaded,
    validate_error,
)
from tests.support.tcp_proxy import TcpProxy

STATS_DEADLINE = 30.0  # the management API's counts lag the queue by ~2 s here


# --- metadata ------------------------------------------------------------------------------


BASE = {"type": "rabbitmq", "queueName": "orders", "hostFromEnv": "RABBITMQ_HOST"}


@pytest.mark.parametrize(
    ("fields", "expected", "target", "activation"),
    [
        ({}, {"protocol": "auto", "mode": "QueueLength"}, 20.0, 0.0),
        (
            {"hostFromEnv": None, "host": "amqp://rabbit.shop:5672/orders", "value": 10},
            {"protocol": "amqp", "host": "amqp://rabbit.shop:5672/orders"},
            10.0,
            0.0,
        ),
        (
            {"hostFromEnv": None, "host": "http://rabbit:15672/", "mode": "MessageRate",
             "value": 3.5, "activationValue": 1},
            {"protocol": "http", "mode": "MessageRate"},
            3.5,
            1.0,
        ),
        (
            {"hostFromEnv": None, "host": "amqps://worker@rabbit/", "usernameFromEnv": "U",
             "passwordFromEnv": "P"},
            {"protocol": "amqp", "username_from_env": "U", "password_from_env": "P"},
            20.0,
            0.0,
        ),
        (
            {"queueName": "orders-.*", "protocol": "HTTP", "useRegex": "true",
             "operation": "max", "pageSize": "50", "excludeUnacknowledged": True},
            {"protocol": "http", "use_regex": True, "operation": "max", "page_size": 50,
             "exclude_unacknowledged": True},
            20.0,
            0.0,
        ),
        ({"timeout": "1500", "vhostName": "team/a"}, {"timeout": 1.5, "vhost_name": "team/a"},
         20.0, 0.0),
        ({"mode": "messagerate", "value": 7}, {"mode": "MessageRate", "protocol": "auto"},
         7.0, 0.0),
    ],
)  # fmt: skip
def test_valid_metadata(
    fields: dict[str, Any], expected: dict[str, Any], target: float, activation: float
) -> None:
    trigger = {k: v for k, v in {**BASE, **fields}.items() if v is not None}
    problems, loaded = load_trigger(trigger)
    assert problems == []
    assert loaded is not None
    for attribute, value in expected.items():
        assert getattr(loaded.settings, attribute) == value, attribute
    assert (loaded.target, loaded.activation) == (target, activation)


def test_a_regex_queue_name_gives_a_valid_trigger_name() -> None:
    problems, loaded = load_trigger({**BASE, "queueName": "orders.*", "protocol": "http",
                             "useRegex": True})  # fmt: skip
    assert problems == [] and loaded is not None
    assert loaded.name == "orders"


PREFIX = "rules.yaml: rules[0] (r).triggers[0]."


@pytest.mark.parametrize(
    ("fields", "line"),
    [
        (
            {"hostFromEnv": None, "host": "amqp://user:s3cr3t-pass@rabbit:5672/"},
            "host: holds a password, which must not sit in the rule file: put the URL in an "
            "environment variable (from a Secret) and name it with hostFromEnv, or give "
            "usernameFromEnv and passwordFromEnv",
        ),
        ({"host": "amqp://rabbit/"}, "host: give host or hostFromEnv, not both"),
        ({"hostFromEnv": None}, "hostFromEnv: is required (or host, without a password)"),
        ({"queueName": None}, "queueName: is required"),
        ({"queueNmae": "x"}, "queueNmae: unknown field (did you mean 'queueName'?)"),
        (
            {"hostFromEnv": None, "host": "amqp://rabbit/", "mode": "MessageRate", "value": 5},
            "mode: MessageRate needs protocol http (the management API)",
        ),
        (
            {"protocol": "amqp", "useRegex": True},
            "useRegex: needs protocol http (the management API)",
        ),
        (
            {"protocol": "amqp", "excludeUnacknowledged": "true"},
            "excludeUnacknowledged: needs protocol http (the management API)",
        ),
        (
            {"hostFromEnv": None, "host": "http://rabbit:15672/", "protocol": "amqp"},
            "protocol: is amqp, but host is a http URL",
        ),
        ({"mode": "QueueLength"}, "value: is required with mode (KEDA's rule)"),
        (
            {"mode": "Length", "value": 1},
            "mode: expected 'QueueLength' or 'MessageRate', got 'Length'",
        ),
        ({"operation": "max"}, "operation: only applies with useRegex: true"),
        ({"usernameFromEnv": "U"}, "passwordFromEnv: is required with the other (KEDA's rule)"),
        ({"timeout": 0}, "timeout: expected a whole number >= 1, got 0"),
        ({"timeout": "soon"}, "timeout: expected a whole number >= 1, got 'soon'"),
        (
            {"hostFromEnv": None, "host": "ftp://rabbit/"},
            "host: expected an amqp://, amqps://, http:// or https:// URL, got 'ftp://rabbit/'",
        ),
        ({"hostFromEnv": "not a name"}, "hostFromEnv: expected the name of an environment "
                                        "variable, got 'not a name'"),
        ({"value": 0}, "value: expected a positive number, got 0"),
    ],
)  # fmt: skip
def test_invalid_metadata(fields: dict[str, Any], line: str) -> None:
    trigger = {k: v for k, v in {**BASE, **fields}.items() if v is not None}
    problems, loaded = load_trigger(trigger)
    assert loaded is None
    assert any(p.startswith(PREFIX + line) for p in problems), problems
    assert not any("s3cr3t-pass" in p for p in problems)


@pytest.mark.parametrize(
    ("url", "vhost_name", "vhost", "prefix"),
    [
        ("http://h:15672", "", "/", ""),
        ("http://h:15672/", "", "/", ""),
        ("http://h:15672/%2F", "", "/", ""),
        ("http://h:15672/team-a", "", "team-a", ""),
        ("http://h/rabbit/mgmt/team-a", "", "team-a", "/rabbit/mgmt"),
        ("http://h/rabbit/", "", "/", "/rabbit"),
        ("http://h/team-a", "team/b", "team/b", ""),
        ("amqp://h:5672", "", "/", ""),
        ("amqp://h:5672/", "", "/", ""),
        ("amqp://h:5672/%2F", "", "/", ""),
        ("amqp://h:5672/team%2Fb", "", "team/b", ""),
        ("amqp://h:5672/team-a", "other", "other", ""),
    ],
)
def test_vhost_of_a_url(url: str, vhost_name: str, vhost: str, prefix: str) -> None:
    settings = RabbitMqSettings("q", host=url, vhost_name=vhost_name)
    endpoint = rabbitmq.resolve_endpoint(settings, {})
    assert (endpoint.vhost, endpoint.base_path) == (vhost, prefix)


# --- readings on the real server -------------------------------------------------------------


def unique(prefix: str = "q") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def env(rabbitmq_server: RabbitMqServer) -> dict[str, str]:
    return {"AMQP_URL": rabbitmq_server.amqp_url(), "HTTP_URL": rabbitmq_server.management_url}


@pytest.fixture
def source(env: dict[str, str]) -> Iterator[RabbitMqSource]:
    reader = RabbitMqSource(env, timeout_seconds=5.0)
    yield reader
    reader.close()


def amqp(queue: str, **settings: Any) -> Trigger:
    return rabbitmq_trigger(queue, host_from_env="AMQP_URL", **settings)


def http(queue: str, **settings: Any) -> Trigger:
    return rabbitmq_trigger(queue, host_from_env="HTTP_URL", **settings)


def read_eventually(source: RabbitMqSource, trigger: Trigger, expected: float) -> None:
    """Wait for the management API's lagging statistics to show `expected` (a queue declared a
    moment ago has none yet: BadResponse until then)."""

    def reads_expected() -> bool:
        try:
            return source.read(trigger) == expected
        except SourceError as error:
            if error.code != "BadResponse" or "statistics not collected" not in str(error):
                raise
            return False

    wait_until(reads_expected, STATS_DEADLINE, f"{trigger.settings.queue_name} reads {expected}")


def read_error(source: RabbitMqSource, trigger: Trigger) -> SourceError:
    with pytest.raises(SourceError) as info:
        source.read(trigger)
    error = info.value
    assert "\n" not in str(error)
    assert trigger.settings.queue_name in str(error)
    return error


def hold_unacked(server: RabbitMqServer, queue: str, count: int) -> pika.BlockingConnection:
    """A consumer that received `count` messages and acknowledges none while it is open."""
    connection = server.connect()
    channel = connection.channel()
    for _ in range(count):
        method, _, _ = channel.basic_get(queue, auto_ack=False)
        assert method is not None
    return connection


def test_amqp_counts_ready_http_counts_in_flight_too(
    rabbitmq_server: RabbitMqServer, source: RabbitMqSource
) -> None:
    queue = unique()
    rabbitmq_server.publish(queue, 5)
    consumer = hold_unacked(rabbitmq_server, queue, 2)
    try:
        assert source.read(amqp(queue)) == 3  # ready only: busy workers are not counted
        # The statistics lag: wait for the snapshot taken after the two deliveries.
        read_eventually(source, http(queue, exclude_unacknowledged=True), 3)
        assert source.read(http(queue)) == 5  # ready + unacknowledged, same snapshot
    finally:
        consumer.close()  # the two messages go back to ready
    wait_until(lambda: source.read(amqp(queue)) == 5, 10, "requeued on the consumer's close")


def test_message_rate_follows_the_publisher(
    rabbitmq_server: RabbitMqServer, source: RabbitMqSource
) -> None:
    queue = unique()
    rabbitmq_server.publish(queue, 1)
    trigger = http(queue, mode="MessageRate")
    stop = threading.Event()
    published = [1]

    def publish_20_a_second() -> None:
        with rabbitmq_server.connect() as connection:
            channel = connection.channel()
            while not stop.is_set():
                channel.basic_publish("", queue, b"tick")
                published[0] += 1
                time.sleep(0.05)

    publisher = threading.Thread(target=publish_20_a_second, daemon=True)
    publisher.start()
    try:
        wait_until(lambda: 8 <= rate_of(source.read(trigger)) <= 30, STATS_DEADLINE, "~20/s")
    finally:
        stop.set()
        publisher.join(10)
    # Nobody consumed: every message published waits, and keeps the trigger active (KEDA's rule)
    # once the rate is back to 0. (How many were published depends on the machine's load.)
    wait_until(
        lambda: source.read(trigger) == Measured(0.0, float(published[0])),
        STATS_DEADLINE,
        f"rate back to 0 with the {published[0]} messages published waiting",
    )
    reading = source.read(trigger)
    assert isinstance(reading, Measured) and reading.backlog > 1
    regex = http(queue[:-3] + ".*", mode="MessageRate", use_regex=True)
    by_regex = source.read(regex)
    assert isinstance(by_regex, Measured) and by_regex.backlog == reading.backlog


def rate_of(reading: float | Measured) -> float:
    return reading.value if isinstance(reading, Measured) else reading


def test_use_regex_sum_max_avg(rabbitmq_server: RabbitMqServer, source: RabbitMqSource) -> None:
    prefix = unique("rx")
    for suffix, count in (("a", 2), ("b", 5), ("c", 6)):
        rabbitmq_server.publish(f"{prefix}-{suffix}", count)
    rabbitmq_server.publish(f"other-{prefix}", 50)  # does not match ^prefix
    pattern = f"^{prefix}-.*"
    read_eventually(source, http(pattern, use_regex=True), 13)
    assert source.read(http(pattern, use_regex=True, operation="max")) == 6
    assert source.read(http(pattern, use_regex=True, operation="avg")) == 4  # 13 // 3, as KEDA
    assert source.read(http(f"^{prefix}-nothing$", use_regex=True)) == 0
    error = read_error(source, http(pattern, use_regex=True, page_size=2))
    assert (error.kind, error.code) == ("BadResponse", "BadResponse")
    assert "more than pageSize 2 queues match" in str(error)


def test_vhosts_from_the_url_or_vhost_name(
    rabbitmq_server: RabbitMqServer, env: dict[str, str]
) -> None:
    queue = unique()
    for vhost in ("team-a", "team/b"):
        rabbitmq_server.add_vhost(vhost)
        rabbitmq_server.publish(queue, 3 if vhost == "team-a" else 4, vhost=vhost)
    env = {
        **env,
        "AMQP_TEAM_A": rabbitmq_server.amqp_url("team-a"),
        "HTTP_TEAM_A": rabbitmq_server.management_url + "/team-a",
    }
    source = RabbitMqSource(env)
    assert source.read(rabbitmq_trigger(queue, host_from_env="AMQP_TEAM_A")) == 3
    assert source.read(amqp(queue, vhost_name="team/b")) == 4
    read_eventually(source, rabbitmq_trigger(queue, host_from_env="HTTP_TEAM_A"), 3)
    read_eventually(source, http(queue, vhost_name="team/b"), 4)
    assert source.read(amqp(queue, vhost_name="team-a")) == 3
    source.close()


@pytest.mark.parametrize("protocol", ["amqp", "http"])
def test_credentials_from_their_own_variables(
    rabbitmq_server: RabbitMqServer, protocol: str
) -> None:
    queue = unique()
    rabbitmq_server.publish(queue, 2)
    bare = rabbitmq_server.amqp_url() if protocol == "amqp" else rabbitmq_server.management_url
    bare = bare.replace(f"{rabbitmq_server.username}:{rabbitmq_server.password}@", "")
    env = {"USER": rabbitmq_server.username, "PASS": rabbitmq_server.password}
    source = RabbitMqSource(env)
    trigger = rabbitmq_trigger(queue, host=bare, username_from_env="USER", password_from_env="PASS")
    read_eventually(source, trigger, 2)
    env["PASS"] = "wrong-password-123"
    assert read_error(source, trigger).kind == "Unauthorized"
    source.close()


# --- errors -------------------------------------------------------------------------------


def assert_no_secret(error: SourceError, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in str(error) and secret not in repr(error)
        assert quote(secret, safe="") not in str(error)


@pytest.mark.parametrize("make", [amqp, http])
def test_missing_queue_and_vhost_are_not_found(
    rabbitmq_server: RabbitMqServer, source: RabbitMqSource, make: Any
) -> None:
    error = read_error(source, make("no-such-queue"))
    assert (error.kind, error.code) == ("NotFound", "QueueNotFound")
    assert "AMQP_URL" in str(error) or "HTTP_URL" in str(error)
    error = read_error(source, make("q", vhost_name="no-such-vhost"))
    assert error.kind == "NotFound"
    assert "no-such-vhost" in str(error)
    assert_no_secret(error, rabbitmq_server.password)


@pytest.mark.parametrize("which", ["AMQP_URL", "HTTP_URL"])
def test_wrong_password_is_unauthorized(
    rabbitmq_server: RabbitMqServer, env: dict[str, str], which: str
) -> None:
    wrong = "not-the-password-" + uuid.uuid4().hex[:8]
    source = RabbitMqSource({which: env[which].replace(rabbitmq_server.password, wrong)})
    queue = unique()
    rabbitmq_server.publish(queue, 1)
    error = read_error(source, rabbitmq_trigger(queue, host_from_env=which))
    assert (error.kind, error.code) == ("Unauthorized", "AccessRefused")
    assert_no_secret(error, wrong, rabbitmq_server.password)
    assert redact(f"pw={wrong}") == "pw=***"
    source.close()


def test_unset_variable_and_wrong_scheme(source: RabbitMqSource) -> None:
    error = read_error(source, rabbitmq_trigger("q", host_from_env="NOT_SET"))
    assert (error.kind, error.code) == ("MissingCredential", "MissingHost")
    assert "NOT_SET" in str(error)
    error = read_error(source, amqp("q", mode="MessageRate"))
    assert (error.kind, error.code) == ("InvalidCredential", "InvalidHost")
    assert "mode MessageRate needs the management API" in str(error)


@pytest.mark.parametrize("scheme", ["amqp", "http"])
def test_closed_port_is_unavailable_fast(scheme: str) -> None:
    port = closed_port()
    source = RabbitMqSource({"URL": f"{scheme}://u:p-secret-99@127.0.0.1:{port}/"}, 1.0)
    started = time.monotonic()
    error = read_error(source, rabbitmq_trigger("q", host_from_env="URL"))
    assert time.monotonic() - started < 3.0
    assert (error.kind, error.code) == ("Unavailable", "ConnectionError")
    assert f"127.0.0.1:{port}" in str(error) and "Connection refused" in str(error)
    assert_no_secret(error, "p-secret-99")
    source.close()


@pytest.mark.parametrize("purpose", ["amqp", "management"])
def test_a_frozen_server_times_out_within_the_budget_then_recovers(
    rabbitmq_server: RabbitMqServer, purpose: str
) -> None:
    queue = unique()
    rabbitmq_server.publish(queue, 2)
    timeout = 0.6
    port = rabbitmq_server.port(purpose)
    with TcpProxy(port) as proxy:
        url = rabbitmq_server.amqp_url() if purpose == "amqp" else rabbitmq_server.management_url
        source = RabbitMqSource({"URL": url.replace(f":{port}", f":{proxy.port}")}, timeout)
        trigger = rabbitmq_trigger(queue, host_from_env="URL")
        read_eventually(source, trigger, 2)  # connected through the proxy
        proxy.freeze()
        started = time.monotonic()
        with retry.budget(2.5 * timeout):
            error = read_error(source, trigger)
        elapsed = time.monotonic() - started
        assert (error.kind, error.code) == ("Timeout", "Timeout")
        assert elapsed < 2.5 * timeout + 0.5
        proxy.thaw()
        assert source.read(trigger) == 2  # a new connection (the frozen one was cut off)
        source.close()


def test_a_cut_connection_is_replaced_on_the_next_read(
    rabbitmq_server: RabbitMqServer,
) -> None:
    queue = unique()
    rabbitmq_server.publish(queue, 4)
    port = rabbitmq_server.port("amqp")
    with TcpProxy(port) as proxy:
        url = rabbitmq_server.amqp_url().replace(f":{port}", f":{proxy.port}")
        source = RabbitMqSource({"URL": url})
        trigger = rabbitmq_trigger(queue, host_from_env="URL")
        assert source.read(trigger) == 4
        proxy.cut()  # what a broker restart or an idle-dropping load balancer does
        assert source.read(trigger) == 4  # retried on a fresh connection, no error
        assert proxy.accepted == 2
        (connection,) = source._connections.values()
        assert connection.connects == 2
        source.close()


# --- connections ---------------------------------------------------------------------------


def test_one_connection_for_many_threads(
    rabbitmq_server: RabbitMqServer, source: RabbitMqSource
) -> None:
    expected = {}
    for count in (0, 1, 3, 7):
        queue = unique()
        rabbitmq_server.publish(queue, count)
        expected[queue] = count
    triggers = [amqp(queue) for queue in expected]
    start = threading.Barrier(8)

    def read(i: int) -> tuple[str, float]:
        if i < 8:
            start.wait()  # the first reads race for the empty pool
        trigger = triggers[i % len(triggers)]
        return trigger.settings.queue_name, source.read(trigger)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(read, range(200)))
    assert all(value == expected[queue] for queue, value in results)
    (connection,) = source._connections.values()
    assert connection.connects == 1


def test_a_rotated_url_gets_a_new_connection(
    rabbitmq_server: RabbitMqServer, env: dict[str, str]
) -> None:
    queue = unique()
    rabbitmq_server.publish(queue, 1)
    source = RabbitMqSource(env)
    assert source.read(amqp(queue)) == 1
    (old,) = source._connections.values()
    env["AMQP_URL"] += "?socket_timeout=5"  # same server, new text: a rotated secret's view
    assert source.read(amqp(queue)) == 1
    (new,) = source._connections.values()
    assert new is not old
    assert old._connection is None  # closed
    source.close()


def test_secrets_are_registered(rabbitmq_server: RabbitMqServer, source: RabbitMqSource) -> None:
    queue = unique()
    rabbitmq_server.publish(queue, 1)
    source.read(amqp(queue))
    assert redact(rabbitmq_server.amqp_url()) == "***"
    assert redact(f"password {rabbitmq_server.password}") == "password ***"


# --- end to end: the real daemon process, RabbitMQ and the Kubernetes API ---------------------


def two_rules(
    cluster: Cluster, server: RabbitMqServer, unique: str, tmp_path: Path, messages: int
) -> tuple[tuple[str, str], Path, dict[str, str]]:
    """Two queues of `messages`, one read over AMQP and one over the management API, each with
    its rule (10 messages per replica) and Deployment at 0; the daemon's environment."""
    names = (f"{unique}-amqp", f"{unique}-http")
    for name in names:
        server.publish(name, messages)  # durable and persistent: kept across a restart
        cluster.create_deployment(name, replicas=0)
    trigger = {"type": "rabbitmq", "value": 10}
    rules = write_rules(tmp_path / "rules.yaml", [
        e2e_rule(name, cluster.namespace, {**trigger, "queueName": name, "hostFromEnv": env})
        for name, env in zip(names, ("RABBIT_AMQP", "RABBIT_HTTP"), strict=True)
    ])  # fmt: skip
    return names, rules, {"RABBIT_AMQP": server.amqp_url(), "RABBIT_HTTP": server.management_url}


def flood(server: RabbitMqServer, queue: str, count: int) -> None:
    """`count` messages that land together (one transaction), so no poll sees half a flood."""
    with server.connect() as connection:
        channel = connection.channel()
        channel.tx_select()
        persistent = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
        for i in range(count):
            channel.basic_publish("", queue, f"job-{i}".encode(), persistent)
        channel.tx_commit()


def purge(server: RabbitMqServer, queue: str) -> None:
    with server.connect() as connection:
        connection.channel().queue_purge(queue)


@pytest.mark.e2e
def test_e2e_flood_scales_0_to_n_in_one_step_and_drains_to_0_after_the_cooldown(
    cluster: Cluster, rabbitmq_server: RabbitMqServer, unique: str, tmp_path: Path
) -> None:
    names, rules, env = two_rules(cluster, rabbitmq_server, unique, tmp_path, 0)
    over_amqp, over_http = names
    with source_daemon(cluster, rules, env) as proc:
        proc.wait_for_output(rf"rule {over_amqp}: 0 -> 0")
        for name in (over_amqp, over_http):
            flood(rabbitmq_server, name, 95)  # ceil(95 / 10) = 10
        for name in (over_amqp, over_http):
            wait_for(lambda n=name: cluster.replicas(n) == 10, 20, what=f"{name} 0 -> 10")
        target = f"{cluster.namespace}/{{}}"
        lines = proc.wait_scale_lines(2)
        assert (target.format(over_amqp), 0, 10) in lines
        assert (target.format(over_http), 0, 10) in lines
        assert len(lines) == 2  # one step each, never 0 -> 1 -> ...

        for name in (over_amqp, over_http):
            purge(rabbitmq_server, name)  # the workers drained it
        drained = time.monotonic()
        for name in (over_amqp, over_http):
            wait_for(lambda n=name: cluster.replicas(n) == 0, COOLDOWN + 20, what=f"{name} -> 0")
        assert time.monotonic() - drained >= COOLDOWN - POLL
        assert len(proc.wait_scale_lines(4)) == 4
        assert proc.stop() == 0
    assert rabbitmq_server.password not in proc.output


@pytest.mark.e2e
def test_e2e_server_stopped_holds_replicas_reports_and_recovers(
    cluster: Cluster, rabbitmq_server: RabbitMqServer, unique: str, tmp_path: Path
) -> None:
    names, rules, env = two_rules(cluster, rabbitmq_server, unique, tmp_path, 35)
    over_amqp, over_http = names
    with source_daemon(cluster, rules, env) as proc:
        for name in (over_amqp, over_http):
            wait_for(lambda n=name: cluster.replicas(n) == 4, 30, what=f"{name} at 4")
        with rabbitmq_server.stopped():
            for name in (over_amqp, over_http):
                failed = rf"rule {name}: .*rabbitmq queue '{name}'.*(ConnectionError|Timeout)"
                proc.wait_for_output(failed, timeout=30)
            # Longer than the cooldown of failed ticks: a failed read is never a zero.
            failed = rf"rule {over_amqp}: .*ConnectionError"
            wait_for(lambda: count_lines(proc, failed) >= COOLDOWN / POLL + 2, 30,
                     what="failed ticks beyond the cooldown")  # fmt: skip
            assert cluster.replicas(over_amqp) == cluster.replicas(over_http) == 4
        for name in (over_amqp, over_http):
            flood(rabbitmq_server, name, 20)  # 55 -> 6: the rules read again
        for name in (over_amqp, over_http):
            wait_for(lambda n=name: cluster.replicas(n) == 6, 40, what=f"{name} recovered")
        assert proc.stop() == 0
    assert rabbitmq_server.password not in proc.output


@pytest.mark.e2e
def test_e2e_wrong_password_fails_its_rule_only(
    cluster: Cluster, rabbitmq_server: RabbitMqServer, unique: str, tmp_path: Path
) -> None:
    good, bad = f"{unique}-good", f"{unique}-bad"
    for name in (good, bad):
        rabbitmq_server.publish(name, 25)
        cluster.create_deployment(name, replicas=0)
    wrong = "wrong-password-" + uuid.uuid4().hex[:8]
    rules = write_rules(tmp_path / "rules.yaml", [
        e2e_rule(name, cluster.namespace,
                 {"type": "rabbitmq", "queueName": name, "hostFromEnv": env, "value": 10})
        for name, env in ((good, "RABBIT_AMQP"), (bad, "RABBIT_WRONG"))
    ])  # fmt: skip
    env = {
        "RABBIT_AMQP": rabbitmq_server.amqp_url(),
        "RABBIT_WRONG": rabbitmq_server.amqp_url().replace(rabbitmq_server.password, wrong),
    }
    result = run_command(["run", "--config", str(rules), "--kubeconfig",
                          str(cluster.daemon_kubeconfig), "--once"], env)  # fmt: skip
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert re.search(rf"rule {bad}: .*{bad}: rabbitmq queue '{bad}'.*AccessRefused", output)
    assert "env RABBIT_WRONG" in output
    assert cluster.replicas(good) == 3 and cluster.replicas(bad) == 0
    assert wrong not in output and rabbitmq_server.password not in output


def test_validate_names_a_misspelt_field(tmp_path: Path) -> None:
    stderr = validate_error(tmp_path, {**BASE, "queueNmae": "orders"})
    assert (
        "rules.yaml: rules[0] (orders).triggers[0].queueNmae: unknown field (did you mean "
        "'queueName'?)" in stderr
    )


# --- convert and simulate ------------------------------------------------------------------

SCALED_OBJECT = """
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: orders, namespace: shop}
spec:
  scaleTargetRef: {name: orders-worker}
  triggers:
  - type: rabbitmq
    metadata:
      protocol: amqp
      queueName: testqueue
      mode: QueueLength
      value: "100.50"
      activationValue: "10.5"
      hostFromEnv: RABBITMQ_HOST
"""

# KEDA docs: the rabbitmq scaler's example with a TriggerAuthentication and a Secret.
WITH_TRIGGER_AUTHENTICATION = """
apiVersion: v1
kind: Secret
metadata: {name: keda-rabbitmq-secret, namespace: default}
data: {host: <base64 amqp URL>}
---
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {name: keda-trigger-auth-rabbitmq-conn, namespace: default}
spec:
  secretTargetRef:
  - {parameter: host, name: keda-rabbitmq-secret, key: host}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: rabbitmq-scaledobject, namespace: default}
spec:
  scaleTargetRef: {name: rabbitmq-deployment}
  triggers:
  - type: rabbitmq
    metadata: {protocol: amqp, queueName: testqueue, mode: QueueLength, value: "20"}
    authenticationRef: {name: keda-trigger-auth-rabbitmq-conn}
"""


def converted(text: str) -> tuple[Any, list[str]]:
    from eventscaler.convert import convert_text, render_rules

    conversion = convert_text(text, "so.yaml")
    rendered = render_rules(conversion, "so.yaml")
    result = parse_rules_text(rendered, "converted.yaml")
    assert result.problems == ()
    return result.rules[0], [str(n) for n in conversion.notes], rendered


def test_convert_maps_every_field_and_the_host_variable() -> None:
    rule, notes, _ = converted(SCALED_OBJECT)
    (trigger,) = rule.triggers
    assert (trigger.type, trigger.target, trigger.activation) == ("rabbitmq", 100.5, 10.5)
    settings = trigger.settings
    assert (settings.queue_name, settings.protocol, settings.host_from_env) == (
        "testqueue",
        "amqp",
        "RABBITMQ_HOST",
    )
    assert any("metadata.hostFromEnv: note:" in n and "from its own" in n for n in notes)


def test_convert_a_trigger_authentication_becomes_host_from_env() -> None:
    rule, notes, _ = converted(WITH_TRIGGER_AUTHENTICATION)
    env = "KEDA_TRIGGER_AUTH_RABBITMQ_CONN_HOST"
    assert rule.triggers[0].settings.host_from_env == env
    (line,) = [n for n in notes if "authenticationRef: not converted" in n]
    assert "'host' is Secret keda-rabbitmq-secret key host" in line
    assert f"{{name: {env}, valueFrom: {{secretKeyRef: {{name: keda-rabbitmq-secret" in line
    # Not in the input: the variable to fill is named all the same.
    rule, notes, _ = converted(WITH_TRIGGER_AUTHENTICATION.split("---")[2])
    assert rule.triggers[0].settings.host_from_env == env
    assert any("is not in this input" in n for n in notes)


def test_convert_never_writes_a_password_from_metadata() -> None:
    text = SCALED_OBJECT.replace(
        "hostFromEnv: RABBITMQ_HOST", "host: amqp://guest:pl41n-t3xt-pw@rabbit:5672/"
    )
    rule, notes, rendered = converted(text)
    assert rule.triggers[0].settings.host_from_env == "TESTQUEUE_RABBITMQ_HOST"
    assert "pl41n-t3xt-pw" not in rendered and not any("pl41n-t3xt-pw" in n for n in notes)
    assert any("metadata.host: not converted: holds a password" in n for n in notes)


def test_convert_deprecated_and_unknown_keys() -> None:
    text = SCALED_OBJECT.replace(
        '      mode: QueueLength\n      value: "100.50"\n',
        '      queueLength: "30"\n      operation: max\n      unsafeSsl: "true"\n',
    )
    rule, notes, _ = converted(text)
    assert rule.triggers[0].target == 30
    assert any("queueLength: note: KEDA's deprecated name" in n for n in notes)
    assert any("operation: note: left out" in n for n in notes)
    assert any("unsafeSsl: not converted" in n for n in notes)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"protocol": "amqp"}, 6.0),  # ready only: 10 in the queue, 4 held by workers
        ({"protocol": "http"}, 10.0),
        ({"protocol": "http", "exclude_unacknowledged": True}, 6.0),
    ],
)
def test_simulated_value(settings: dict[str, Any], expected: float) -> None:
    source = rabbitmq.SOURCE_TYPE
    assert source.simulated_value(RabbitMqSettings("q", **settings), 10, 4) == expected


def test_simulate_replays_a_rabbitmq_rule(tmp_path: Path) -> None:
    trigger = {**BASE, "queueName": "orders", "protocol": "http", "value": 10}
    rules = write_rules(tmp_path / "rules.yaml", [e2e_rule("orders", "default", trigger)])
    result = run_command(["simulate", "--config", str(rules), "--rule", "orders",
                          "--scenario", "flood", "--duration", "120"])  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "on rabbitmq orders (target 10/replica" in result.stdout
    assert "readings orders=" in result.stdout


def test_the_commented_example_in_config_example_loads() -> None:
    result = parse_rules_text(commented_example("rabbitmq"), "config.example.yaml")
    assert result.problems == ()
    assert [t.type for t in result.rules[0].triggers] == ["rabbitmq"]


def test_pika_is_imported_only_when_a_rule_uses_rabbitmq() -> None:
    assert sdk_loaded("pika", "{type: rabbitmq, queueName: q, hostFromEnv: H}") == (False, True)
