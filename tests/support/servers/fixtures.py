"""Session fixtures, one per real server, loaded by tests/conftest.py through `pytest_plugins`.

A server starts the first time a test asks for its fixture and stops when the session ends, so
a run that needs none starts none. Nothing is skipped: a missing program fails the test with the
package to install, since CI installs them all (`.ci/install-servers`). A test that stops a
server must bring it back for the tests after it: `with redis_server.stopped(): ...`.
Each server's module is imported only by its fixture, so its client library loads on use.
At the end of the session the summary lists how long each server took to be ready.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, TypeVar

import pytest

from tests.support.servers.process import ServerError, ServerProcess

if TYPE_CHECKING:
    from tests.support.servers.beanstalkd import BeanstalkdServer
    from tests.support.servers.mariadb import MariaDbServer
    from tests.support.servers.nats import NatsServer
    from tests.support.servers.postgres import PostgresServer
    from tests.support.servers.prometheus import GuardedPrometheusServer, PrometheusServer
    from tests.support.servers.rabbitmq import RabbitMqServer
    from tests.support.servers.redis import RedisServer
    from tests.support.servers.sqs import IamCheckedSqsServer, SqsServer

S = TypeVar("S", bound=ServerProcess)
_ready_times: list[str] = []


def _serve(server_class: type[S]) -> Iterator[S]:
    server = server_class()
    failure = None
    try:
        server.start()
    except (ServerError, TimeoutError) as error:
        server.close()
        failure = f"{server_class.name} test server: {error}"
    if failure is not None:  # outside the except block, so the message is not shown twice
        pytest.fail(failure, pytrace=False)
    _ready_times.append(f"{server.name}: ready in {server.last_ready_seconds:.1f} s")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def rabbitmq_server() -> Iterator[RabbitMqServer]:
    from tests.support.servers.rabbitmq import RabbitMqServer

    yield from _serve(RabbitMqServer)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    from tests.support.servers.redis import RedisServer

    yield from _serve(RedisServer)


@pytest.fixture(scope="session")
def sqs_server() -> Iterator[SqsServer]:
    from tests.support.servers.sqs import SqsServer

    yield from _serve(SqsServer)


@pytest.fixture(scope="session")
def sqs_iam_server() -> Iterator[IamCheckedSqsServer]:
    """A second moto that checks credentials (tests/support/servers/sqs.py says how)."""
    from tests.support.servers.sqs import IamCheckedSqsServer

    yield from _serve(IamCheckedSqsServer)


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    from tests.support.servers.nats import NatsServer

    yield from _serve(NatsServer)


@pytest.fixture(scope="session")
def beanstalkd_server() -> Iterator[BeanstalkdServer]:
    from tests.support.servers.beanstalkd import BeanstalkdServer

    yield from _serve(BeanstalkdServer)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    from tests.support.servers.postgres import PostgresServer

    yield from _serve(PostgresServer)


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariaDbServer]:
    from tests.support.servers.mariadb import MariaDbServer

    yield from _serve(MariaDbServer)


@pytest.fixture(scope="session")
def prometheus_server() -> Iterator[PrometheusServer]:
    from tests.support.servers.prometheus import PrometheusServer

    yield from _serve(PrometheusServer)


@pytest.fixture(scope="session")
def prometheus_guarded_server() -> Iterator[GuardedPrometheusServer]:
    """A second Prometheus that requires basic auth (tests/support/servers/prometheus.py)."""
    from tests.support.servers.prometheus import GuardedPrometheusServer

    yield from _serve(GuardedPrometheusServer)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _ready_times:
        terminalreporter.section("test servers")
        for line in _ready_times:
            terminalreporter.write_line(line)
