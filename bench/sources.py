"""`python -m bench.sources`: the CPU one reading costs, per source, against the bare client call.

For each source the real server starts on 127.0.0.1 (the tests' own, tests/support/servers), a
queue or tube gets a few messages, then `--reads` readings go through the source's reader (what
the daemon calls each tick: environment lookup, endpoint, pooled connection, retries, parsing)
and as many through the client library alone (one pooled connection, the same request). The
figure is this process's CPU time per call (time.process_time: the server's CPU is not in it),
after a warm-up. Prints one Markdown table. `--sources` picks rows.
"""

from __future__ import annotations

import argparse
import contextlib
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

WARM_UP = 20


@dataclass(frozen=True)
class Row:
    name: str
    ours: Callable[[], object]
    bare: Callable[[], object]
    bare_what: str


def cpu_ms_per_call(call: Callable[[], object], reads: int) -> float:
    for _ in range(WARM_UP):
        call()
    started = time.process_time()
    for _ in range(reads):
        call()
    return (time.process_time() - started) * 1000.0 / reads


def rabbitmq_rows(stack: contextlib.ExitStack) -> Iterator[Row]:
    import requests

    from eventscaler.sources.rabbitmq import RabbitMqSource, rabbitmq_trigger
    from tests.support.servers.process import wait_until
    from tests.support.servers.rabbitmq import RabbitMqServer

    server = stack.enter_context(RabbitMqServer())
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    server.publish(queue, 10)
    env = {"AMQP": server.amqp_url(), "HTTP": server.management_url}
    source = RabbitMqSource(env)
    stack.callback(source.close)
    amqp, http = (rabbitmq_trigger(queue, host_from_env=name) for name in ("AMQP", "HTTP"))
    connection = stack.enter_context(server.connect())
    channel = connection.channel()
    yield Row(
        "rabbitmq (amqp)",
        lambda: source.read(amqp),
        lambda: channel.queue_declare(queue, passive=True),
        "pika passive queue_declare",
    )

    session = stack.enter_context(requests.Session())
    url = f"http://127.0.0.1:{server.port('management')}/api/queues/%2F/{queue}"
    params = {"columns": "name,messages,messages_ready,message_stats.publish_details.rate"}

    def bare_get() -> object:
        return session.get(url, params=params, auth=server.credentials, timeout=5).json()

    wait_until(lambda: "messages" in bare_get(), 30, "management statistics")  # type: ignore[operator]
    yield Row("rabbitmq (http)", lambda: source.read(http), bare_get, "requests GET + json()")


def beanstalkd_rows(stack: contextlib.ExitStack) -> Iterator[Row]:
    from eventscaler.sources.beanstalkd import BeanstalkdSource, beanstalkd_trigger
    from tests.support.servers.beanstalkd import BeanstalkdServer

    server = stack.enter_context(BeanstalkdServer())
    tube = f"bench-{uuid.uuid4().hex[:8]}"
    client = stack.enter_context(server.client(tube))
    for i in range(10):
        client.put(f"job-{i}")
    source = BeanstalkdSource()
    stack.callback(source.close)
    trigger = beanstalkd_trigger((server.host, server.port()), tube, 10.0)
    yield Row(
        "beanstalkd",
        lambda: source.read(trigger),
        lambda: client.stats_tube(tube),
        "greenstalk stats_tube",
    )


SOURCES: dict[str, Callable[[contextlib.ExitStack], Iterator[Row]]] = {
    "rabbitmq": rabbitmq_rows,
    "beanstalkd": beanstalkd_rows,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sources", description=__doc__)
    parser.add_argument("--reads", type=int, default=500, help="readings per figure (500)")
    parser.add_argument("--sources", default=",".join(SOURCES), help="comma-separated")
    options = parser.parse_args(argv)
    print("| source | ours: CPU ms/reading | bare client: CPU ms/call | ratio | bare call |")
    print("|---|---:|---:|---:|---|")
    for name in options.sources.split(","):
        with contextlib.ExitStack() as stack:
            for row in SOURCES[name](stack):
                ours = cpu_ms_per_call(row.ours, options.reads)
                bare = cpu_ms_per_call(row.bare, options.reads)
                line = f"| {row.name} | {ours:.3f} | {bare:.3f} | {ours / bare:.2f} | "
                print(line + f"{row.bare_what} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
