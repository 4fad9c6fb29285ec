"""RabbitMQ (Debian `rabbitmq-server` 3.10) on 127.0.0.1 for the rabbitmq source.

The node runs in the foreground from /usr/lib/rabbitmq/bin/rabbitmq-server (not the /usr/sbin
wrapper, which switches to the rabbitmq user and its /var/lib dirs), with every path in the temp
dir and every port on loopback: AMQP, the management API (plugin enabled by an enabled-plugins
file), the Erlang distribution port (`inet_dist_use_interface`, else it binds 0.0.0.0) and
epmd. epmd daemonizes itself when the node starts it, out of reach of the node's process group;
so this class starts epmd first, in the foreground, as its own process, and stops it by its pid
after the node. The node name is `rabbit@localhost`: sessions side by side do not clash, each
has its own epmd port.

The only user is `.username` / `.password` (administrator, all permissions on `/`; `guest` is
not created). Durable queues and persistent messages survive a restart (same node, same mnesia
dir). The node takes 5-20 s to boot here and about 6 s to stop gracefully; the deadline is
generous. The management API's counts lag the queue by about 2 s (statistics every second, not
RabbitMQ's default 5 s): HTTP-mode tests wait for a count, AMQP's passive declare is immediate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import pika
import requests

from tests.support.servers.process import (
    HOST,
    ServerProcess,
    find_program,
    port_accepts,
    require_program,
    wait_until,
)

PACKAGE = "the Debian package rabbitmq-server"
RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
NODE_NAME = "rabbit@localhost"


class RabbitMqServer(ServerProcess):
    name = "RabbitMQ"
    start_timeout_seconds = 180.0
    username = "eventscaler"
    password = "rabbit-user-secret-0b6e"

    def _check_installed(self) -> None:
        self._server = require_program(RABBITMQ_SERVER, PACKAGE, "rabbitmq-server")
        self._epmd = require_program(find_program("epmd"), PACKAGE + " (erlang-base)", "epmd")

    def _prepare(self) -> None:
        for name in ("home", "mnesia", "log"):
            (self.directory / name).mkdir()
        (self.directory / "rabbitmq-env.conf").write_text("")  # instead of /etc/rabbitmq's
        (self.directory / "enabled_plugins").write_text("[rabbitmq_management].\n")
        (self.directory / "rabbitmq.conf").write_text(
            f"default_user = {self.username}\n"
            f"default_pass = {self.password}\n"
            "default_user_tags.administrator = true\n"
            "default_permissions.configure = .*\n"
            "default_permissions.read = .*\n"
            "default_permissions.write = .*\n"
            f"management.tcp.ip = {HOST}\n"
            f"management.tcp.port = {self.port('management')}\n"
            "collect_statistics_interval = 1000\n"
        )
        # With the defaults the management API's queue counts move in 5 s steps (queues emit
        # stats every 5 s, the agent keeps 5 s samples); 1 s makes them lag about 2 s here.
        (self.directory / "advanced.config").write_text(
            "[{rabbitmq_management_agent, [{collect_statistics_interval, 1000},"
            " {sample_retention_policies, [{global, [{605, 1}]}, {basic, [{605, 1}]},"
            " {detailed, [{605, 1}]}]}]}].\n"
        )

    def _environment(self) -> dict[str, str]:
        base = self.directory
        return {
            "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
            "LANG": "C.UTF-8",
            "HOME": str(base / "home"),  # the Erlang cookie goes here
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": NODE_NAME,
            "RABBITMQ_NODE_IP_ADDRESS": HOST,
            "RABBITMQ_NODE_PORT": str(self.port("amqp")),
            "RABBITMQ_DIST_PORT": str(self.port("distribution")),
            "ERL_EPMD_ADDRESS": HOST,
            "ERL_EPMD_PORT": str(self.port("epmd")),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_LOGS": "-",  # to stdout, i.e. rabbitmq.log in the temp dir
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def _launch(self) -> None:
        epmd = [self._epmd, "-address", HOST, "-port", str(self.port("epmd"))]
        self._spawn("epmd", epmd, env=self._environment())
        self._wait_for_epmd()
        self._spawn("rabbitmq", [self._server], env=self._environment())

    def _wait_for_epmd(self) -> None:
        # The node must find this epmd, or it would start (and daemonize) one of its own.
        wait_until(lambda: port_accepts(self.port("epmd")), 30, f"epmd on {self.port('epmd')}")

    def _is_ready(self) -> bool:
        # The AMQP listener opens last in the boot; the management API answers once its
        # plugin has started. Both, so either way of reading the queue works.
        if not port_accepts(self.port("amqp")):
            return False
        response = requests.get(self._api("overview"), auth=self.credentials, timeout=5)
        return response.status_code == 200

    @property
    def host(self) -> str:
        return HOST

    @property
    def credentials(self) -> tuple[str, str]:
        return self.username, self.password

    def amqp_url(self, vhost: str = "/") -> str:
        """`amqp://user:pass@127.0.0.1:port/vhost`, what KEDA's `host` holds for amqp."""
        return (
            f"amqp://{self.username}:{self.password}@{HOST}:{self.port('amqp')}/"
            f"{quote(vhost, safe='')}"
        )

    @property
    def management_url(self) -> str:
        """`http://user:pass@127.0.0.1:port`, what KEDA's `host` holds for http."""
        return f"http://{self.username}:{self.password}@{HOST}:{self.port('management')}"

    def _api(self, path: str) -> str:
        return f"http://{HOST}:{self.port('management')}/api/{path}"

    def management_get(self, path: str) -> Any:
        """`GET /api/{path}` as the tests' user, e.g. `queues/%2F/orders`."""
        response = requests.get(self._api(path), auth=self.credentials, timeout=10)
        response.raise_for_status()
        return response.json()

    def add_vhost(self, vhost: str) -> None:
        """Create a vhost and give the tests' user every permission on it."""
        encoded = quote(vhost, safe="")
        for path, body in (
            (f"vhosts/{encoded}", {}),
            (
                f"permissions/{encoded}/{self.username}",
                {"configure": ".*", "write": ".*", "read": ".*"},
            ),
        ):
            response = requests.put(self._api(path), json=body, auth=self.credentials, timeout=10)
            response.raise_for_status()

    def connect(self, vhost: str = "/") -> pika.BlockingConnection:
        return pika.BlockingConnection(pika.URLParameters(self.amqp_url(vhost)))

    def publish(self, queue: str, count: int, vhost: str = "/") -> None:
        """Declare `queue` (durable) and publish `count` persistent messages to it."""
        with self.connect(vhost) as connection:
            channel = connection.channel()
            channel.queue_declare(queue, durable=True)
            channel.confirm_delivery()  # each publish returns once the broker has it
            persistent = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
            for i in range(count):
                channel.basic_publish("", queue, f"message-{i}".encode(), persistent)
