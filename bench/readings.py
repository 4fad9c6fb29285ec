"""`python -m bench.readings`: the CPU one reading costs, per source, against the bare client call.

For each source type the real server starts on 127.0.0.1 (the tests' own: tests/support/servers,
Azurite, and in a child process the thread-served stand-ins of metrics-api and Service Bus), an
object gets a known number of messages (rows, entries, a gauge...), then `--reads` readings go
through the daemon's reader (the trigger loaded by the rule-file loader, the source opened as the
daemon opens it: environment lookup, endpoint, pooled connection, retries, parsing) and as many
through the same client library alone (one client, the same request). Before it is timed, each
reader must read the number the server was given. The figure is this process's CPU time per
call (time.process_time: the server's CPU is not in it), after a warm-up; the median of
`--rounds` rounds, ours and bare taking turns. Prints one Markdown table; `--json` also writes it.

A new source type gets one function below (its server, its trigger, its bare call) and one line
in SOURCES; bench/test_bench.py fails while a type of eventscaler.sources has none.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any
from zoneinfo import ZoneInfo

WARM_UP = 20
READY_SECONDS = 60.0  # until a reader reads what the server was given (RabbitMQ's stats lag)
MESSAGES = 10


@dataclass(frozen=True)
class Row:
    name: str
    ours: Callable[[], float]  # the daemon's read
    bare: Callable[[], object]  # the client library's call alone
    bare_what: str
    expected: float  # what `ours` must read before it is timed


@dataclass(frozen=True)
class Measured:
    name: str
    ours_ms: float | None = None
    bare_ms: float | None = None
    bare_what: str = ""
    problem: str = ""  # why the row was not measured

    @property
    def ratio(self) -> float | None:
        if self.ours_ms is None or not self.bare_ms:
            return None
        return self.ours_ms / self.bare_ms


def cpu_ms_per_call(call: Callable[[], object], reads: int) -> float:
    for _ in range(WARM_UP):
        call()
    started = time.process_time()
    for _ in range(reads):
        call()
    return (time.process_time() - started) * 1000.0 / reads


def measure(row: Row, reads: int, rounds: int) -> Measured:
    wait_for_reading(row)
    ours, bare = [], []
    for _ in range(rounds):  # taking turns: a burst of load elsewhere hits both alike
        ours.append(cpu_ms_per_call(row.ours, reads))
        bare.append(cpu_ms_per_call(row.bare, reads))
    return Measured(row.name, statistics.median(ours), statistics.median(bare), row.bare_what)


def wait_for_reading(row: Row, timeout: float = READY_SECONDS) -> None:
    """Until `ours` reads what the server was given (a source error counts as not yet: the
    management API has no statistics for a new queue for a second or two)."""
    from eventscaler.sources.base import SourceError

    deadline = time.monotonic() + timeout
    while True:
        try:
            value: float | str = row.ours()
        except SourceError as exc:
            value = str(exc)
        if value == row.expected:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{row.name}: read {value}, not {row.expected}")
        time.sleep(0.5)


# --- the helpers every row uses ----------------------------------------------------------------


def daemon_reader(
    stack: contextlib.ExitStack, trigger: dict[str, Any], environ: Mapping[str, str]
) -> Callable[[], float]:
    """The trigger through the rule-file loader and its source opened as the daemon does."""
    from eventscaler.sources import source_type
    from eventscaler.sources.base import SourceOptions
    from tests.support.source_tables import load_trigger

    kind = trigger["type"]
    problems, loaded = load_trigger(kind, {k: v for k, v in trigger.items() if k != "type"})
    if loaded is None:
        raise RuntimeError(f"the bench's own {kind} trigger does not load: {problems}")
    source = source_type(kind).open(SourceOptions(environ=dict(environ)))
    stack.callback(source.close)
    return lambda: source.read(loaded)


def process_environ(stack: contextlib.ExitStack, **values: str) -> None:
    """Set variables the client reads from the process's environment (the AWS chain, the CA
    bundle), put back as they were when the row is done."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)

    def restore() -> None:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    stack.callback(restore)


def unique(prefix: str = "bench") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- one function per source -------------------------------------------------------------------


def azure_queue_rows(stack: contextlib.ExitStack) -> Iterator[Row]:
    from bench.queues import tuned_service
    from tests.support.azurite import Azurite

    azurite = stack.enter_context(Azurite())
    queue = unique()
    azurite.create_queue(queue)
    azurite.send_messages(queue, MESSAGES)
    env = {"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string}
    trigger = {"type": "azure-queue", "queueName": queue, "queueLength": 5,
               "connectionFromEnv": "AZURE_STORAGE_CONNECTION_STRING"}  # fmt: skip
    service = tuned_service(azurite.connection_string, 1)  # make bench's bare client
    stack.callback(service.close)
    client = service.get_queue_client(queue)
    yield Row(
        "azure-queue",
        daemon_reader(stack, trigger, env),
        lambda: client.get_queue_properties().approximate_message_count,
        "azure-storage-queue get_queue_properties",
        MESSAGES,
    )


def azure_servicebus_rows(stack: contextlib.ExitStack) -> Iterator[Row]:
    from azure.core.pipeline.transport import RequestsTransport
    from azure.servicebus.management import ServiceBusAdministrationClient

    from bench.standins import standin

    queue = unique()
    namespace = stack.enter_context(standin("azure-servicebus", queue=queue, active=MESSAGES))
    process_environ(stack, REQUESTS_CA_BUNDLE=namespace["ca_path"])  # trusts the stand-in's CA
    env = {"SERVICEBUS_CONNECTION": namespace["connection_string"]}
    trigger = {"type": "azure-servicebus", "queueName": queue, "messageCount": 5,
               "connectionFromEnv": "SERVICEBUS_CONNECTION"}  # fmt: skip
    client = ServiceBusAdministrationClient.from_connection_string(
        namespace["connection_string"],
        transport=RequestsTransport(connection_verify=namespace["ca_path"]),
        retry_total=0,
    )
    stack.callback(client.close)
    yield Row(
        "azure-servicebus",
        daemon_reader(stack, trigger, env),
        lambda: client.get_queue_runtime_properties(queue).active_message_count,
        "azure-servicebus get_queue_runtime_properties (stand-in)",
        MESSAGES,
    )


def rabbitmq_rows(stack: contextlib.ExitStack) -> Iterator[Row]:
    import requests

    from tests.support.servers.rabbitmq import RabbitMqServer

    server = stack.enter_context(RabbitMqServer())
    queue = unique()
    server.publish(queue, MESSAGES)
    env = {"AMQP": server.amqp_url(), "HTTP": server.management_url}
    channel = stack.enter_context(server.connect()).channel()
    yield Row(
        "rabbitmq (amqp)",
        daemon_reader(stack, {"type": "rabbitmq", "queueName": queue, "hostFromEnv": "AMQP"}, env),
        lambda: channel.queue_declare(queue, passive=True).method.message_count,
        "pika passive queue_declare",
        MESSAGES,
    )
    session = stack.enter_context(requests.Session())
    url = f"http://127.0.0.1:{server.port('management')}/api/queues/%2F/{queue}"
    params = {"columns": "name,messages,messages_ready,message_stats.publish_details.rate"}
    yield Row(
        "rabbitmq (http)",
        daemon_reader(stack, {"type": "rabbitmq", "queueName": queue, "hostFromEnv": "HTTP"}, env),
        lambda: session.get(url, params=params, auth=server.credentials, timeout=5).json(),
        "requests GET /api/queues/{vhost}/{queue} + json()",
        MESSAGES,
    )


def beanstalkd_rows(stack: contextlib.ExitStack) -> Iterator[Row]:
    from tests.support.servers.beanstalkd import BeanstalkdServer

    server = stack.enter_context(BeanstalkdServer())
    tube = unique()
    client = stack.enter_context(server.client(tube))
    for i in range(MESSAGES):
        client.put(f"job-{i}")
    trigger = {"type": "beanstalkd", "server": server.server, "tube": tube, "value": 5}
    yield Row(
        "beanstalkd",
        daemon_reader(stack, trigger, {}),
        lambda: client.stats_tube(tube)["current-jobs-ready"],
        "greenstalk stats_tube",
        MESSAGES,
    )


def redis_rows(stack: contextlib.ExitStack) -> Iterator[Row]:
    from tests.support.servers.redis import RedisServer

    server = stack.enter_context(RedisServer())
    key = unique()
    client = stack.enter_context(server.client())
    client.rpush(key, *range(MESSAGES))
    env = {"REDIS_USER": server.username, "REDIS_PASSWORD": server.password}
    trigger = {"type": "redis", "address": server.address, "listName": key, "listLength": 5,
               "usernameFromEnv": "REDIS_USER", "passwordFromEnv": "REDIS_PASSWORD"}  # fmt: skip
    yield Row("redis", daemon_reader(stack, trigger, env), lambda: client.llen(key),
              "redis-py LLEN", MESSAGES)  # fmt: skip


def redis_streams_rows(stack: contextlib.ExitStack) -> Iterator[Row]:
    from tests.support.servers.redis import RedisServer

    server = stack.enter_context(RedisServer())
    stream, group, taken = unique(), "workers", 4
    client = stack.enter_context(server.client())
    client.xgroup_create(stream, group, id="0", mkstream=True)
    for i in range(MESSAGES):
        client.xadd(stream, {"n": i})
    client.xreadgroup(group, "worker-1", {stream: ">"}, count=taken)  # delivered, not acked
    env = {"REDIS_USER": server.username, "REDIS_PASSWORD": server.password}
    base = {"type": "redis-streams", "address": server.address, "stream": stream,
            "usernameFromEnv": "REDIS_USER", "passwordFromEnv": "REDIS_PASSWORD"}  # fmt: skip
    grouped = {**base, "consumerGroup": group}

    def lag() -> object:
        return next(g["lag"] for g in client.xinfo_groups(stream) if g["name"] == group)

    yield Row("redis-streams (length)", daemon_reader(stack, {**base, "streamLength": 5}, env),
              lambda: client.xlen(stream), "redis-py XLEN", MESSAGES)  # fmt: skip
    yield Row("redis-streams (lag)", daemon_reader(stack, {**grouped, "lagCount": 5}, env), lag,
              "redis-py XINFO GROUPS", MESSAGES - taken)  # fmt: skip
    yield Row(
        "redis-streams (pending)",
        daemon_reader(stack, {**grouped, "pendingEntriesCount": 5}, env),
        lambda: client.xpending(stream, group)["pending"],
        "redis-py XPENDING",
        taken,
    )


def nats_jetstream_rows(stack: contextlib.ExitStack) -> Iterator[Row]:
    import requests

    from tests.support.servers.nats import NatsServer

    server = stack.enter_context(NatsServer())
    stream = unique()
    server.add_stream(stream, [f"{stream}.*"])
    server.add_consumer(stream, "workers")
    server.publish(f"{stream}.new", MESSAGES)
    trigger = {"type": "nats-jetstream", "natsServerMonitoringEndpoint": server.monitoring_endpoint,
               "stream": stream, "consumer": "workers", "lagThreshold": 5}  # fmt: skip
    session = stack.enter_context(requests.Session())
    url, params = f"{server.monitoring_url}/jsz", {"acc": "$G", "consumers": "true"}
    yield Row(
        "nats-jetstream",
        daemon_reader(stack, trigger, {}),
        lambda: session.get(url, params=params, timeout=5).json(),
        "requests GET /jsz + json()",
        MESSAGES,
    )


def aws_sqs_rows(stack: contextlib.ExitStack) -> Iterator[Row]:
    from tests.support.servers.sqs import SqsServer

    server = stack.enter_context(SqsServer())
    process_environ(stack, **server.environment)  # the standard AWS chain reads the process's
    client = server.client()
    stack.callback(client.close)
    url = client.create_queue(QueueName=unique())["QueueUrl"]
    for i in range(MESSAGES):
        client.send_message(QueueUrl=url, MessageBody=f"job-{i}")
    trigger = {"type": "aws-sqs-queue", "queueURL": url, "awsRegion": server.region,
               "awsEndpoint": server.endpoint_url, "queueLength": 5}  # fmt: skip
    # scaleOnInFlight defaults to true: the visible and the in-flight counts, as ours asks.
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    yield Row(
        "aws-sqs-queue",
        daemon_reader(stack, trigger, {}),
        lambda: client.get_queue_attributes(QueueUrl=url, AttributeNames=names),
        "boto3 get_queue_attributes (moto)",
        MESSAGES,
    )


def metrics_api_rows(stack: contextlib.ExitStack) -> Iterator[Row]:
    import requests

    from bench.standins import standin

    body = {"components": {"worker": {"tasks": MESSAGES}}}
    url = stack.enter_context(standin("metrics-api", body=body, path="/metrics"))["url"]
    trigger = {"type": "metrics-api", "url": url, "valueLocation": "components.worker.tasks",
               "targetValue": 5}  # fmt: skip
    session = stack.enter_context(requests.Session())
    yield Row(
        "metrics-api",
        daemon_reader(stack, trigger, {}),
        lambda: session.get(url, timeout=5).json(),
        "requests GET + json() (test server)",
        MESSAGES,
    )


def prometheus_rows(stack: contextlib.ExitStack) -> Iterator[Row]:
    import requests

    from tests.support.servers.prometheus import PrometheusServer

    server = stack.enter_context(PrometheusServer())
    server.metrics.set("jobs_backlog", MESSAGES, queue="orders")
    query = 'sum(jobs_backlog{queue="orders"})'
    server.wait_for_value(query, MESSAGES)
    trigger = {"type": "prometheus", "serverAddress": server.url, "query": query, "threshold": 5}
    session = stack.enter_context(requests.Session())
    url = f"{server.url}/api/v1/query"
    yield Row(
        "prometheus",
        daemon_reader(stack, trigger, {}),
        lambda: session.get(url, params={"query": query}, timeout=5).json(),
        "requests GET /api/v1/query + json()",
        MESSAGES,
    )


QUERY = "SELECT count(*) FROM jobs WHERE ready"


def postgresql_rows(stack: contextlib.ExitStack) -> Iterator[Row]:
    import psycopg

    from tests.support.servers.postgres import PostgresServer

    server = stack.enter_context(PostgresServer())
    with server.connect() as setup:
        setup.execute("CREATE TABLE jobs (ready boolean)")
        setup.execute("INSERT INTO jobs SELECT true FROM generate_series(1, %s)", (MESSAGES,))
    connection = stack.enter_context(psycopg.connect(server.url, autocommit=True))

    def bare() -> object:  # the same read-only transaction, the query prepared
        connection.execute("BEGIN READ ONLY")
        row = connection.execute(QUERY, binary=True).fetchone()
        connection.execute("ROLLBACK")
        return row

    trigger = {"type": "postgresql", "query": QUERY, "targetQueryValue": 5,
               "connectionFromEnv": "PG_URL"}  # fmt: skip
    yield Row("postgresql", daemon_reader(stack, trigger, {"PG_URL": server.url}), bare,
              "psycopg BEGIN READ ONLY; query; ROLLBACK", MESSAGES)  # fmt: skip


def mysql_rows(stack: contextlib.ExitStack) -> Iterator[Row]:

    from tests.support.servers.mariadb import MariaDbServer

    server = stack.enter_context(MariaDbServer())
    with server.connect() as setup, setup.cursor() as cursor:
        cursor.execute("CREATE TABLE jobs (ready boolean)")
        cursor.executemany("INSERT INTO jobs VALUES (%s)", [(True,)] * MESSAGES)
        setup.commit()
    connection = server.connect()
    connection.autocommit(True)
    stack.callback(connection.close)

    def bare() -> object:  # the same read-only transaction
        with connection.cursor() as cursor:
            cursor.execute("START TRANSACTION READ ONLY")
            cursor.execute(QUERY)
            row = cursor.fetchone()
            cursor.execute("ROLLBACK")
            return row

    trigger = {"type": "mysql", "query": QUERY, "queryValue": 5,
               "connectionStringFromEnv": "MYSQL_DSN"}  # fmt: skip
    yield Row("mysql", daemon_reader(stack, trigger, {"MYSQL_DSN": server.url}), bare,
              "PyMySQL START TRANSACTION READ ONLY; query; ROLLBACK", MESSAGES)  # fmt: skip


def cron_rows(stack: contextlib.ExitStack) -> Iterator[Row]:
    from croniter import croniter

    # No server: the reading is the clock and croniter. The bare work answers the same question,
    # "is now inside the window?": the next start and the next end, one get_next each.
    zone, start, end, replicas = ZoneInfo("Europe/Berlin"), "0 8 * * *", "0 18 * * *", 3
    trigger = {"type": "cron", "timezone": "Europe/Berlin", "start": start, "end": end,
               "desiredReplicas": replicas}  # fmt: skip

    def bare() -> object:
        now = datetime.now(zone)
        return croniter(end, now).get_next(datetime) <= croniter(start, now).get_next(datetime)

    inside = 8 <= datetime.now(zone).hour < 18
    yield Row("cron", daemon_reader(stack, trigger, {}), bare,
              "croniter get_next of start and of end", replicas if inside else 0)  # fmt: skip


# KEDA trigger type -> its rows. Every type in eventscaler.sources.SOURCE_MODULES has one.
SOURCES: dict[str, Callable[[contextlib.ExitStack], Iterator[Row]]] = {
    "azure-queue": azure_queue_rows,
    "azure-servicebus": azure_servicebus_rows,
    "rabbitmq": rabbitmq_rows,
    "beanstalkd": beanstalkd_rows,
    "redis": redis_rows,
    "redis-streams": redis_streams_rows,
    "nats-jetstream": nats_jetstream_rows,
    "aws-sqs-queue": aws_sqs_rows,
    "metrics-api": metrics_api_rows,
    "prometheus": prometheus_rows,
    "postgresql": postgresql_rows,
    "mysql": mysql_rows,
    "cron": cron_rows,
}


# --- running and printing ----------------------------------------------------------------------


def measure_source(name: str, reads: int, rounds: int) -> Iterator[Measured]:
    """The source's rows, measured; a server that cannot start is a row saying why."""
    from tests.support.servers.process import ServerError

    try:
        with contextlib.ExitStack() as stack:
            for row in SOURCES[name](stack):
                yield measure(row, reads, rounds)
    except (ServerError, RuntimeError, OSError, TimeoutError) as exc:
        yield Measured(name, problem=f"not measured: {type(exc).__name__}: {exc}".splitlines()[0])


HEADER = (
    "| source | ours: CPU ms/reading | bare client: CPU ms/call | ratio | bare call |\n"
    "|---|---:|---:|---:|---|"
)


def table_line(row: Measured) -> str:
    if row.problem:
        return f"| {row.name} | - | - | - | {row.problem} |"
    return (f"| {row.name} | {row.ours_ms:.3f} | {row.bare_ms:.3f} | {row.ratio:.2f} | "
            f"{row.bare_what} |")  # fmt: skip


def as_json(row: Measured) -> dict[str, Any]:
    return {**asdict(row), "ratio": row.ratio}


def render_json_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    """The table again, from what `--json` wrote (bench/run.py prints it in its report)."""
    names = {f.name for f in fields(Measured)}
    measured = [Measured(**{k: v for k, v in r.items() if k in names}) for r in rows]
    return "\n".join([HEADER, *(table_line(r) for r in measured)])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.readings", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--reads", type=int, default=500, help="readings per figure (500)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per figure, median (3)")
    parser.add_argument("--sources", default=",".join(SOURCES), help="comma-separated types")
    parser.add_argument("--json", type=Path, help="also write the rows here, as JSON")
    options = parser.parse_args(argv)
    options.sources = [s.strip() for s in options.sources.split(",") if s.strip()]
    unknown = sorted(set(options.sources) - set(SOURCES))
    if unknown or options.reads < 1 or options.rounds < 1:
        parser.error(f"unknown --sources {unknown} (known: {', '.join(SOURCES)}), or no reads")
    return options


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)  # unwinds: every server is stopped


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    print(HEADER, flush=True)
    measured = []
    for name in options.sources:
        for row in measure_source(name, options.reads, options.rounds):
            measured.append(row)
            print(table_line(row), flush=True)
    if options.json:
        options.json.write_text(json.dumps([as_json(r) for r in measured], indent=2) + "\n")
    return 0 if all(not r.problem for r in measured) else 1


if __name__ == "__main__":
    raise SystemExit(main())
