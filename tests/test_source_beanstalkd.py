"""The beanstalkd source: its fields, and its readings and errors against a real beanstalkd.

Metadata, table-driven (no server): valid triggers load (port 11300 by default, IPv6 in
brackets, includeDelayed as KEDA's strings, a timeout in seconds or as a duration); invalid
ones give their exact `file: rules[0] (r).triggers[0].field: message` line (value and tube
required as in KEDA, a misspelt field, a bad port, a tube name beanstalkd would refuse).

Against the real beanstalkd 1.12 (the session's `beanstalkd_server`):
- ready + reserved jobs, delayed ones only with includeDelayed, buried ones never;
- a tube that does not exist reads 0, as in KEDA (beanstalkd drops empty unwatched tubes);
- a closed port is Unavailable (fast); a server frozen mid-connection is a Timeout within the
  tick's budget, and the next read after it comes back reconnects; a connection cut under an
  idle source is replaced on the next read without an error;
- something that is not beanstalkd on the port is a BadResponse;
- one connection per server for 200 reads from 8 threads over 4 tubes;
- the server stopped and started again (same port, binlog): Unavailable, then the same jobs.

End to end, the real daemon process with the Kubernetes API (test server or E2E_KUBECONFIG):
- 95 buried jobs kicked at once take a Deployment 0 -> 10 in one write; drained, back to 0 no
  sooner than the cooldown;
- beanstalkd stopped mid-run: 4 replicas held through more failed ticks than the cooldown, each
  error names the tube and the server; restarted (binlog), 20 more -> 6;
- `validate` names a misspelt field. (Beanstalkd has no credentials: nothing to leak.)
convert: KEDA's documented example loads; one without a tube is not converted. simulate: a rule
replayed by the command. The commented example of config.example.yaml loads.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import greenstalk
import pytest

from eventscaler import retry
from eventscaler.config import parse_rules_text
from eventscaler.sources.base import SourceError
from eventscaler.sources.beanstalkd import BeanstalkdSource, beanstalkd_trigger
from eventscaler.triggers import Trigger
from tests.conftest import write_rules
from tests.support.cluster import Cluster, wait_for
from tests.support.daemon_process import run_command
from tests.support.servers.beanstalkd import BeanstalkdServer
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

# --- metadata ------------------------------------------------------------------------------


BASE = {"type": "beanstalkd", "server": "beanstalkd.jobs:11300", "tube": "emails", "value": 15}


@pytest.mark.parametrize(
    ("fields", "server", "include_delayed", "timeout"),
    [
        ({}, ("beanstalkd.jobs", 11300), False, None),
        ({"server": "10.0.0.7"}, ("10.0.0.7", 11300), False, None),
        ({"server": "[::1]:11400"}, ("::1", 11400), False, None),
        ({"includeDelayed": "true", "timeout": "30"}, ("beanstalkd.jobs", 11300), True, 30.0),
        ({"includeDelayed": True, "timeout": "1500ms"}, ("beanstalkd.jobs", 11300), True, 1.5),
    ],
)
def test_valid_metadata(
    fields: dict[str, Any],
    server: tuple[str, int],
    include_delayed: bool,
    timeout: float | None,
) -> None:
    problems, loaded = load_trigger({**BASE, "activationValue": 2, **fields})
    assert problems == []
    assert loaded is not None
    settings = loaded.settings
    assert (settings.server, settings.include_delayed, settings.timeout) == (
        server,
        include_delayed,
        timeout,
    )
    assert (loaded.name, loaded.target, loaded.activation) == ("emails", 15.0, 2.0)


PREFIX = "rules.yaml: rules[0] (r).triggers[0]."


@pytest.mark.parametrize(
    ("fields", "line"),
    [
        ({"value": None}, "value: is required"),
        ({"tube": None}, "tube: is required"),
        ({"server": None}, "server: is required"),
        ({"tub": "x"}, "tub: unknown field (did you mean 'tube'?)"),
        ({"server": "jobs:99999"}, "server: expected host:port (port 11300 if left out), "
                                   "got 'jobs:99999'"),
        ({"server": "jobs:port"}, "server: expected host:port (port 11300 if left out), "
                                  "got 'jobs:port'"),
        ({"tube": "-starts-with-hyphen"}, "tube: expected a tube name (1-200 letters, digits "
                                          "or -+/;.$_(), not starting with -), got "
                                          "'-starts-with-hyphen'"),
        ({"tube": "has space"}, "tube: expected a tube name"),
        ({"includeDelayed": "yes"}, "includeDelayed: expected true or false, got 'yes'"),
        ({"timeout": 0}, "timeout: expected a duration of more than zero seconds, got 0"),
    ],
)  # fmt: skip
def test_invalid_metadata(fields: dict[str, Any], line: str) -> None:
    trigger = {k: v for k, v in {**BASE, **fields}.items() if v is not None}
    problems, loaded = load_trigger(trigger)
    assert loaded is None
    assert any(p.startswith(PREFIX + line) for p in problems), problems


# --- readings on the real server -------------------------------------------------------------


def new_tube() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def source() -> Iterator[BeanstalkdSource]:
    reader = BeanstalkdSource(timeout_seconds=5.0)
    yield reader
    reader.close()


def tube_trigger(server: BeanstalkdServer | tuple[str, int], tube: str, **settings: Any) -> Trigger:
    address = server if isinstance(server, tuple) else (server.host, server.port())
    return beanstalkd_trigger(address, tube, 10.0, **settings)


def read_error(source: BeanstalkdSource, trigger: Trigger) -> SourceError:
    with pytest.raises(SourceError) as info:
        source.read(trigger)
    assert "\n" not in str(info.value)
    assert trigger.settings.tube in str(info.value)
    return info.value


def test_ready_reserved_delayed_and_buried(
    beanstalkd_server: BeanstalkdServer, source: BeanstalkdSource
) -> None:
    tube = new_tube()
    with beanstalkd_server.client(tube) as client:
        for i in range(6):
            client.put(f"job-{i}")
        client.put("later", delay=600)
        client.put("later too", delay=600)
        reserved = client.reserve(timeout=5)  # a worker holds it: reserved
        buried = client.reserve(timeout=5)
        client.bury(buried)  # buried jobs are never counted
        stats = client.stats_tube(tube)
        assert (stats["current-jobs-ready"], stats["current-jobs-reserved"]) == (4, 1)
        assert source.read(tube_trigger(beanstalkd_server, tube)) == 5
        assert source.read(tube_trigger(beanstalkd_server, tube, include_delayed=True)) == 7
        client.delete(reserved)
        assert source.read(tube_trigger(beanstalkd_server, tube)) == 4


def test_a_missing_tube_reads_zero(
    beanstalkd_server: BeanstalkdServer, source: BeanstalkdSource
) -> None:
    assert source.read(tube_trigger(beanstalkd_server, "never-used-" + new_tube())) == 0


def test_a_closed_port_is_unavailable_fast(source: BeanstalkdSource) -> None:
    port = closed_port()
    started = time.monotonic()
    error = read_error(source, tube_trigger(("127.0.0.1", port), "jobs"))
    assert time.monotonic() - started < 3.0
    assert (error.kind, error.code) == ("Unavailable", "ConnectionError")
    assert f"127.0.0.1:{port}" in str(error) and "Connection refused" in str(error)


def test_a_frozen_server_times_out_within_the_budget_then_recovers(
    beanstalkd_server: BeanstalkdServer,
) -> None:
    tube = new_tube()
    with beanstalkd_server.client(tube) as client:
        client.put("one")
    timeout = 0.5
    with TcpProxy(beanstalkd_server.port()) as proxy:
        source = BeanstalkdSource(timeout)
        trigger = tube_trigger(("127.0.0.1", proxy.port), tube)
        assert source.read(trigger) == 1
        proxy.freeze()
        started = time.monotonic()
        with retry.budget(2.5 * timeout):
            error = read_error(source, trigger)
        assert time.monotonic() - started < 2.5 * timeout + 0.5
        assert (error.kind, error.code) == ("Timeout", "Timeout")
        proxy.thaw()
        assert source.read(trigger) == 1
        source.close()


def test_a_cut_connection_is_replaced_on_the_next_read(
    beanstalkd_server: BeanstalkdServer,
) -> None:
    tube = new_tube()
    with beanstalkd_server.client(tube) as client:
        client.put("one")
        client.put("two")
    with TcpProxy(beanstalkd_server.port()) as proxy:
        source = BeanstalkdSource()
        trigger = tube_trigger(("127.0.0.1", proxy.port), tube)
        assert source.read(trigger) == 2
        proxy.cut()
        assert source.read(trigger) == 2  # retried on a fresh connection, no error
        assert proxy.accepted == 2
        source.close()


def test_not_beanstalkd_on_the_port_is_a_bad_response() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def answer_http() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        threading.Thread(target=answer_http, daemon=True).start()
        source = BeanstalkdSource(2.0)
        with retry.budget(0.0):  # one try: the thread answers one connection
            error = read_error(source, tube_trigger(("127.0.0.1", port), "jobs"))
        assert error.kind in ("BadResponse", "ServiceError")
        source.close()


def test_one_connection_for_many_threads(
    beanstalkd_server: BeanstalkdServer, source: BeanstalkdSource
) -> None:
    expected = {}
    for count in (0, 1, 3, 7):
        tube = new_tube()
        expected[tube] = count
        if count:
            with beanstalkd_server.client(tube) as client:
                for i in range(count):
                    client.put(f"job-{i}")
    triggers = [tube_trigger(beanstalkd_server, tube) for tube in expected]
    start = threading.Barrier(8)

    def read(i: int) -> tuple[str, float]:
        if i < 8:
            start.wait()
        trigger = triggers[i % len(triggers)]
        return trigger.settings.tube, source.read(trigger)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(read, range(200)))
    assert all(value == expected[tube] for tube, value in results)
    (connection,) = source._connections.values()
    assert connection.connects == 1


def test_server_stopped_then_started_again(
    beanstalkd_server: BeanstalkdServer, source: BeanstalkdSource
) -> None:
    tube = new_tube()
    with beanstalkd_server.client(tube) as client:
        for i in range(3):
            client.put(f"job-{i}")
        assert source.read(tube_trigger(beanstalkd_server, tube)) == 3
        with beanstalkd_server.stopped():
            error = read_error(source, tube_trigger(beanstalkd_server, tube))
            assert error.kind == "Unavailable"
    # The binlog kept the jobs (reserved ones come back ready).
    assert source.read(tube_trigger(beanstalkd_server, tube)) == 3


# --- end to end: the real daemon process, beanstalkd and the Kubernetes API -------------------


def tube_rule(name: str, namespace: str, server: str) -> dict[str, Any]:
    trigger = {"type": "beanstalkd", "server": server, "tube": name, "value": 10}
    return e2e_rule(name, namespace, trigger)


def bury(server: BeanstalkdServer, tube: str, count: int) -> None:
    """`count` buried jobs (never counted), for one `kick` to make ready all at once."""
    with server.client(tube) as client:
        for i in range(count):
            client.put(f"job-{i}")
            client.bury(client.reserve(timeout=5))


def kick(server: BeanstalkdServer, tube: str, count: int) -> None:
    with server.client(tube) as client:
        assert client.kick(count) == count


def drain(server: BeanstalkdServer, tube: str) -> None:
    with server.client(tube) as client:
        while True:
            try:
                client.delete(client.reserve(timeout=0))
            except greenstalk.TimedOutError:
                return


@pytest.mark.e2e
def test_e2e_flood_scales_0_to_n_in_one_step_and_drains_to_0_after_the_cooldown(
    cluster: Cluster, beanstalkd_server: BeanstalkdServer, unique: str, tmp_path: Path
) -> None:
    cluster.create_deployment(unique, replicas=0)
    bury(beanstalkd_server, unique, 95)
    rules = write_rules(
        tmp_path / "rules.yaml", [tube_rule(unique, cluster.namespace, beanstalkd_server.server)]
    )
    target = f"{cluster.namespace}/{unique}"
    with source_daemon(cluster, rules) as proc:
        proc.wait_for_output(rf"{target}: rule {unique}: 0 -> 0")  # buried jobs do not count
        kick(beanstalkd_server, unique, 95)  # ceil(95 / 10) = 10
        wait_for(lambda: cluster.replicas(unique) == 10, 15, what="0 -> 10")
        proc.assert_scale_lines([(target, 0, 10)])

        drain(beanstalkd_server, unique)
        drained = time.monotonic()
        wait_for(lambda: cluster.replicas(unique) == 0, COOLDOWN + 15, what="10 -> 0")
        assert time.monotonic() - drained >= COOLDOWN - POLL
        proc.assert_scale_lines([(target, 0, 10), (target, 10, 0)])
        assert proc.stop() == 0


@pytest.mark.e2e
def test_e2e_server_stopped_holds_replicas_reports_and_recovers(
    cluster: Cluster, beanstalkd_server: BeanstalkdServer, unique: str, tmp_path: Path
) -> None:
    cluster.create_deployment(unique, replicas=0)
    with beanstalkd_server.client(unique) as client:
        for i in range(35):
            client.put(f"job-{i}")
    rules = write_rules(
        tmp_path / "rules.yaml", [tube_rule(unique, cluster.namespace, beanstalkd_server.server)]
    )
    with source_daemon(cluster, rules) as proc:
        wait_for(lambda: cluster.replicas(unique) == 4, 15, what="0 -> 4")
        with beanstalkd_server.stopped():
            failed = (
                rf"rule {unique}: .*beanstalkd tube '{unique}' at 127.0.0.1:\d+: ConnectionError"
            )
            proc.wait_for_output(failed, timeout=15)
            # Longer than the cooldown of failed ticks: a failed read is never a zero.
            wait_for(lambda: count_lines(proc, failed) >= COOLDOWN / POLL + 2, 30,
                     what="failed ticks beyond the cooldown")  # fmt: skip
            assert cluster.replicas(unique) == 4
        bury(beanstalkd_server, unique, 20)
        kick(beanstalkd_server, unique, 20)  # 55 -> 6: the binlog kept the 35, the rule reads again
        wait_for(lambda: cluster.replicas(unique) == 6, 15, what="recovered at 6")
        assert proc.stop() == 0


def test_validate_names_a_misspelt_field(tmp_path: Path) -> None:
    stderr = validate_error(tmp_path, {**BASE, "includeDelayd": True})
    assert (
        "rules.yaml: rules[0] (orders).triggers[0].includeDelayd: unknown field (did you mean "
        "'includeDelayed'?)" in stderr
    )


# --- convert and simulate ------------------------------------------------------------------

# KEDA docs: the beanstalkd scaler's example.
SCALED_OBJECT = """
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: beanstalkd-scaledobject, namespace: jobs}
spec:
  scaleTargetRef: {name: beanstalkd-consumer}
  triggers:
  - type: beanstalkd
    metadata:
      server: beanstalkd.internal-namespace:11300
      includeDelayed: "false"
      tube: "default"
      activationValue: "10"
      value: "15"
      timeout: "30"
"""


def test_convert_keda_example() -> None:
    from eventscaler.convert import convert_text, render_rules

    conversion = convert_text(SCALED_OBJECT, "so.yaml")
    assert conversion.complete
    result = parse_rules_text(render_rules(conversion, "so.yaml"), "converted.yaml")
    assert result.problems == ()
    (trigger,) = result.rules[0].triggers
    assert (trigger.target, trigger.activation) == (15.0, 10.0)
    settings = trigger.settings
    assert settings.server == ("beanstalkd.internal-namespace", 11300)
    assert (settings.tube, settings.include_delayed, settings.timeout) == ("default", False, 30.0)

    no_tube = convert_text(SCALED_OBJECT.replace('tube: "default"', ""), "so.yaml")
    assert no_tube.rules == ()
    assert any("server and tube are required" in str(n) for n in no_tube.notes)


def test_simulate_replays_a_beanstalkd_rule(tmp_path: Path) -> None:
    rules = write_rules(
        tmp_path / "rules.yaml", [tube_rule("emails", "default", "127.0.0.1:11300")]
    )
    result = run_command(["simulate", "--config", str(rules), "--scenario", "flood",
                          "--duration", "120"])  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "on beanstalkd tube emails at 127.0.0.1:11300 (target 10/replica" in result.stdout
    assert "readings emails=" in result.stdout


def test_the_commented_example_in_config_example_loads() -> None:
    result = parse_rules_text(commented_example("beanstalkd"), "config.example.yaml")
    assert result.problems == ()
    assert [t.type for t in result.rules[0].triggers] == ["beanstalkd"]


def test_greenstalk_is_imported_only_when_a_rule_uses_beanstalkd() -> None:
    trigger = "{type: beanstalkd, server: '127.0.0.1:11300', tube: t, value: 1}"
    assert sdk_loaded("greenstalk", trigger) == (False, True)
