"""Smoke tests of the real servers the source tests run on (tests/support/servers/).

Scenarios covered, one real round trip per server with the client its source will use:
- RabbitMQ: 3 persistent messages -> a passive declare counts 3 (AMQP) and the management API's
  `messages` reaches 3; a wrong password is refused on both.
- Redis: LPUSH x3 -> LLEN 3; XADD x3 -> XINFO GROUPS lag 3 (Redis 7); the ACL user and the
  default user's password both log in, a wrong or missing password is refused.
- SQS (moto): 3 sends -> ApproximateNumberOfMessages 3.
- NATS JetStream: a stream, a durable consumer, 3 publishes -> /jsz?consumers=true shows the
  consumer with num_pending 3.
- Beanstalkd: 3 puts -> stats-tube current-jobs-ready 3.
- PostgreSQL and MariaDB: 3 rows -> SELECT count(*) 3 as the tests' user over TCP; a wrong
  password is refused.
- Prometheus: the test's endpoint serves 3 -> /api/v1/query gives 3 after a scrape; moved to 5
  -> 5 after the next.
- Every server listens on loopback only (every TCP listener of its process groups).
- RabbitMQ stopped: its node and its epmd are gone (by pid) and AMQP is refused; started again
  on the same ports, the durable queue still holds its 3 messages.
- A missing program fails with the package to install.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
import uuid
from pathlib import Path

import pika
import pika.exceptions
import psycopg
import pymysql
import pytest
import redis
import requests
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.servers.beanstalkd import BeanstalkdServer
from tests.support.servers.mariadb import MariaDbServer
from tests.support.servers.nats import NatsServer
from tests.support.servers.postgres import PostgresServer
from tests.support.servers.process import (
    ServerNotInstalledError,
    ServerProcess,
    require_program,
    wait_until,
)
from tests.support.servers.prometheus import PrometheusServer
from tests.support.servers.rabbitmq import RabbitMqServer
from tests.support.servers.redis import RedisServer
from tests.support.servers.sqs import SqsServer

DEADLINE_SECONDS = 30.0
# redis-py 8 retries a refused login 3 times with backoff (about 4 s) unless told not to.
NO_RETRY = Retry(NoBackoff(), 0)


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- listening only on loopback --------------------------------------------------------------


def _group_pids(group: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The process group is field 5 of /proc/PID/stat, after the parenthesised name.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group:
            pids.append(int(entry.name))
    return pids


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in (Path("/proc") / str(pid) / "fd").iterdir():
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    except OSError:
        pass
    return inodes


def _listening_tcp() -> dict[str, str]:
    """Socket inode -> `address:port` of every listening TCP socket (v4 and v6)."""
    listeners = {}
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            address_hex, port_hex = fields[1].split(":")
            packed = bytes.fromhex(address_hex)
            # /proc/net prints each 32-bit word in host (little-endian) order.
            packed = b"".join(packed[i : i + 4][::-1] for i in range(0, len(packed), 4))
            listeners[fields[9]] = f"{socket.inet_ntop(family, packed)}:{int(port_hex, 16)}"
    return listeners


def assert_loopback_only(server: ServerProcess) -> None:
    listeners = _listening_tcp()
    addresses = {
        listeners[inode]
        for group in server.pids
        for pid in _group_pids(group)
        for inode in _socket_inodes(pid)
        if inode in listeners
    }
    assert addresses, f"{server.name}: no listening TCP socket found"
    # epmd always adds ::1 next to the address it is given; loopback all the same.
    hosts = {address.rsplit(":", 1)[0] for address in addresses}
    assert all(ipaddress.ip_address(host).is_loopback for host in hosts), addresses
    assert "127.0.0.1" in hosts, addresses


# --- one round trip per server ---------------------------------------------------------------


def test_rabbitmq_counts_messages_over_amqp_and_http(rabbitmq_server: RabbitMqServer) -> None:
    queue = unique_name("orders")
    rabbitmq_server.publish(queue, 3)

    with rabbitmq_server.connect() as connection:
        declared = connection.channel().queue_declare(queue, passive=True)
    assert declared.method.message_count == 3

    path = f"queues/%2F/{queue}"
    wait_until(
        lambda: rabbitmq_server.management_get(path).get("messages") == 3,
        DEADLINE_SECONDS,
        f"management API messages of {queue} == 3",
    )
    assert rabbitmq_server.management_get(path)["messages_ready"] == 3
    assert_loopback_only(rabbitmq_server)


def test_rabbitmq_refuses_a_wrong_password(rabbitmq_server: RabbitMqServer) -> None:
    wrong_url = rabbitmq_server.amqp_url().replace(rabbitmq_server.password, "not-the-password")
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(pika.URLParameters(wrong_url))
    api = rabbitmq_server.management_url.split("@", 1)[1]
    response = requests.get(
        f"http://{api}/api/overview", auth=(rabbitmq_server.username, "nope"), timeout=10
    )
    assert response.status_code == 401


def test_redis_list_and_stream_lag(redis_server: RedisServer) -> None:
    key, stream = unique_name("jobs"), unique_name("events")
    with redis_server.client() as client:
        client.lpush(key, "a", "b", "c")
        assert client.llen(key) == 3

        client.xgroup_create(stream, "workers", id="0", mkstream=True)
        for i in range(3):
            client.xadd(stream, {"n": str(i)})
        groups = client.xinfo_groups(stream)
    assert [(g["name"], g["lag"]) for g in groups] == [("workers", 3)]
    assert_loopback_only(redis_server)


def test_redis_checks_passwords(redis_server: RedisServer) -> None:
    port = redis_server.port()
    default_user = redis.Redis(host="127.0.0.1", port=port, password=redis_server.default_password)
    assert default_user.ping()
    default_user.close()
    for username, password in ((redis_server.username, "wrong"), (None, "wrong"), (None, None)):
        client = redis.Redis(
            host="127.0.0.1", port=port, username=username, password=password, retry=NO_RETRY
        )
        with pytest.raises(redis.AuthenticationError):
            client.ping()
        client.close()


def test_sqs_counts_messages(sqs_server: SqsServer) -> None:
    client = sqs_server.client()
    url = client.create_queue(QueueName=unique_name("orders"))["QueueUrl"]
    for i in range(3):
        client.send_message(QueueUrl=url, MessageBody=f"message-{i}")
    attributes = client.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "3"
    assert_loopback_only(sqs_server)


def test_nats_jetstream_consumer_pending(nats_server: NatsServer) -> None:
    stream, consumer = unique_name("ORDERS"), unique_name("workers")
    nats_server.add_stream(stream, [f"{stream}.>"])
    nats_server.add_consumer(stream, consumer)
    nats_server.publish(f"{stream}.new", 3)

    pending = {}
    for account in nats_server.jsz(consumers="true")["account_details"]:
        for detail in account.get("stream_detail", []):
            for each in detail.get("consumer_detail", []):
                pending[(detail["name"], each["name"])] = each["num_pending"]
    assert pending[(stream, consumer)] == 3
    assert_loopback_only(nats_server)


def test_beanstalkd_counts_ready_jobs(beanstalkd_server: BeanstalkdServer) -> None:
    tube = unique_name("jobs")
    with beanstalkd_server.client(tube) as client:
        for i in range(3):
            client.put(f"job-{i}")
        assert client.stats_tube(tube)["current-jobs-ready"] == 3
    assert_loopback_only(beanstalkd_server)


def test_postgres_select_as_the_tests_user(postgres_server: PostgresServer) -> None:
    table = unique_name("jobs").replace("-", "_")
    with postgres_server.connect() as connection:
        connection.execute(f"CREATE TABLE {table} (id serial PRIMARY KEY, state text)")
        connection.execute(f"INSERT INTO {table} (state) VALUES ('new'), ('new'), ('new')")
        connection.commit()
        assert connection.execute(f"SELECT count(*) FROM {table}").fetchone() == (3,)
    assert_loopback_only(postgres_server)


def test_postgres_refuses_a_wrong_password(postgres_server: PostgresServer) -> None:
    wrong_url = postgres_server.url.replace(postgres_server.password, "not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong_url, connect_timeout=5)


def test_mariadb_select_as_the_tests_user(mariadb_server: MariaDbServer) -> None:
    table = unique_name("jobs").replace("-", "_")
    with mariadb_server.connect() as connection, connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {table} (id INT AUTO_INCREMENT PRIMARY KEY, state TEXT)")
        cursor.execute(f"INSERT INTO {table} (state) VALUES ('new'), ('new'), ('new')")
        connection.commit()
        cursor.execute(f"SELECT count(*) FROM {table}")
        assert cursor.fetchone() == (3,)
    assert_loopback_only(mariadb_server)


def test_mariadb_refuses_a_wrong_password(mariadb_server: MariaDbServer) -> None:
    with pytest.raises(pymysql.err.OperationalError) as refused:
        pymysql.connect(
            host="127.0.0.1",
            port=mariadb_server.port(),
            user=mariadb_server.user,
            password="not-the-password",
            connect_timeout=5,
        )
    assert refused.value.args[0] == 1045  # ER_ACCESS_DENIED_ERROR


def test_prometheus_sees_the_endpoint_value(prometheus_server: PrometheusServer) -> None:
    series = f'eventscaler_smoke_backlog{{queue="{unique_name("orders")}"}}'
    name, labels = series.split("{", 1)
    queue = labels.split('"')[1]
    prometheus_server.metrics.set(name, 3, queue=queue)
    prometheus_server.wait_for_value(series, 3)
    data = prometheus_server.query(series)
    assert data["resultType"] == "vector" and len(data["result"]) == 1

    prometheus_server.metrics.set(name, 5, queue=queue)
    prometheus_server.wait_for_value(series, 5)
    assert_loopback_only(prometheus_server)


# --- stop and restart ------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_rabbitmq_stops_by_pid_and_restarts_on_the_same_ports(
    rabbitmq_server: RabbitMqServer,
) -> None:
    queue = unique_name("durable")
    rabbitmq_server.publish(queue, 3)
    groups = rabbitmq_server.pids  # epmd, then the node's shell wrapper
    members = [pid for group in groups for pid in _group_pids(group)]
    amqp_port = rabbitmq_server.port("amqp")

    with rabbitmq_server.stopped():
        assert not rabbitmq_server.running
        assert [pid for pid in members if _alive(pid)] == []
        began = time.monotonic()
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            rabbitmq_server.connect()
        assert time.monotonic() - began < 10, "a stopped server refuses at once"

    assert rabbitmq_server.running
    assert rabbitmq_server.port("amqp") == amqp_port
    with rabbitmq_server.connect() as connection:
        declared = connection.channel().queue_declare(queue, passive=True)
    assert declared.method.message_count == 3


def test_a_missing_program_names_its_package(tmp_path: Path) -> None:
    with pytest.raises(ServerNotInstalledError, match="install the Debian package beanstalkd"):
        require_program(tmp_path / "beanstalkd", "the Debian package beanstalkd", "beanstalkd")
