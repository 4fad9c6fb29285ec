"""Fault injection: the real daemon process against Azurite and the Kubernetes API test server,
with something broken for a while, then repaired. After each fault the test checks that no wrong
write happened, that the daemon stayed alive, and that service resumed by itself.

Faults (each prints one figure line, collected under "fault injection figures" at the end of the
run by the `pytest_terminal_summary` hook in conftest.py):
- Azurite killed for several ticks, then restarted empty (the test recreates the queue and puts
  messages back): no scale write at all while it is down, then the count the new queue needs;
- Azurite frozen (SIGSTOP: connections hang, reads time out), then thawed: the same; and whether
  a tick stayed within its polling interval (not yet: an expected failure, see the test);
- the Kubernetes API answering 500, 429 with Retry-After, 409 on writes, slower than --api-timeout,
  dropping connections, then restarted (stop/start), each for a few ticks, with more messages
  arriving meanwhile: nothing written while it lasts, no tick longer than its polling interval
  (from the daemon's tick-duration histogram), the right count within a few ticks after;
- the rule file replaced by invalid YAML, by valid YAML with an invalid rule, by valid YAML whose
  rule has its `name` misspelt, by an empty file, and deleted, then restored: the rule in force
  keeps scaling on new messages during each fault, each restore is loaded, and a last edit
  applies;
- SIGTERM while a (slowed) write is in flight: the tick completes (write, log line and Event) and
  the process exits 0 within SIGTERM_BOUND seconds;
- a Deployment deleted and re-created while its rule is active: only that rule fails while it is
  gone, the other rule keeps scaling, and the re-created Deployment gets the right count.

Definitions used by every test:
- A fault window runs from the moment the fault starts until service is back (the Deployment has
  the replicas its queue justifies). It starts with the Deployment at R0, the count its queue
  justified then; during the window the tests only add messages, so the counts some queue length
  of the window justifies are R0 .. ceil(Lmax / queueLength), clamped to maxReplicas.
- A wrong write is a PATCH of `deployments/{name}/scale` by the daemon's ServiceAccount, sent during
  the window (whatever the server answered: a rejected write to a wrong count is still wrong),
  whose `spec.replicas` lies outside that range. While the queue cannot be read at all (Azurite
  down, its data gone), no count is justified: any scale write then is wrong.
- Ticks survived: the rule's ticks during the fault, from the daemon's DEBUG log (each tick logs
  its decision, twice when a 409 made it decide again, or only that it could not read the
  Deployment); the daemon must still be running after them.
- Recovered in: seconds from the repair (fault cleared, server back with its data, file restored,
  Deployment re-created) until the Deployment has the right count (for the rule file: until the
  restored file is loaded).

The daemon runs with --target-resync 0 (its target read on every tick), so that each API fault
meets every tick. These tests need the Kubernetes API test server to inject faults, so they
always use their own (and Azurite restarts use their own Azurite), even when E2E_KUBECONFIG
names a real cluster.
"""

from __future__ import annotations

import math
import os
import re
import signal
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_rules
from tests.support.azurite import Azurite
from tests.support.cluster import wait_for, write_rbac_shape
from tests.support.daemon_process import DaemonProcess
from tests.support.kubeapi import KubeApiServer
from tests.test_e2e import POLL, rule

pytestmark = [pytest.mark.faults, pytest.mark.e2e]

NAMESPACE = "default"
DAEMON_USER = "system:serviceaccount:eventscaler:eventscaler"
API_TIMEOUT = 1.0  # --api-timeout: the "slow" fault answers after twice as long
QUEUE_LENGTH = 5  # messages per replica in rule()
MAX_REPLICAS = 20  # rule()'s maxReplicas
COOLDOWN = 60.0  # long, so no step to zero can hide in a window
FAULT_TICKS = 4  # ticks each fault lasts at least (failed ones, where it fails them)
AZURITE_DOWN_TICKS = 6
# Seconds from SIGTERM to exit: the tick in progress (its calls end within its budget, 80 % of its
# 2 s interval, or 0.25 s after), its Events (1 s API timeout), stopping the health server (0.5 s)
# and the interpreter's exit.
SIGTERM_BOUND = 5.0
RECOVERY_TIMEOUT = 10.0  # "within a few ticks": 20 polls

# One line per fault, printed by the pytest_terminal_summary hook of conftest.py.
FIGURES: list[str] = []


def report(label: str, ticks: int | str, wrong: int, tail: str) -> None:
    line = f"fault: {label:<44} | ticks survived {ticks:>2} | wrong writes {wrong} | {tail}"
    FIGURES.append(line)
    print(line)


def justified(length: int) -> int:
    return min(MAX_REPLICAS, math.ceil(length / QUEUE_LENGTH))


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeApiServer]:
    """This module's own API server: faults and restarts here never touch the other tests."""
    workdir = tmp_path_factory.mktemp("faults-api")
    with KubeApiServer(rbac_dir=write_rbac_shape(workdir / "rbac")) as server:
        yield server


@pytest.fixture(scope="module")
def daemon_kubeconfig(api: KubeApiServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The daemon runs as the ServiceAccount of the shipped manifests, under their RBAC.
    token = api.add_service_account("eventscaler", "eventscaler")
    return api.write_kubeconfig(tmp_path_factory.mktemp("faults") / "daemon.kubeconfig", token)


def start_daemon(kubeconfig: Path, azurite: Azurite, rules: Path) -> DaemonProcess:
    return DaemonProcess(
        [
            "run",
            "--config",
            str(rules),
            "--kubeconfig",
            str(kubeconfig),
            "--reload-interval",
            "0.3",
            "--api-timeout",
            str(API_TIMEOUT),
            "--queue-timeout",
            "1",
            "--health-port",
            "0",
            "--log-level",
            "DEBUG",
            # Every tick reads its target, so an API fault hits every tick: the worst case. (By
            # default a quiet tick reads it every few ticks only; a write always reads it first.)
            "--target-resync",
            "0",
        ],
        env={"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string},
    )


def replicas(api: KubeApiServer, name: str) -> int | None:
    deployment = api.get_deployment(NAMESPACE, name)
    return None if deployment is None else int(deployment["spec"].get("replicas") or 0)


def scale_patches(
    api: KubeApiServer, name: str, since: float, until: float = math.inf
) -> list[int]:
    """spec.replicas of every scale PATCH the daemon sent for `name` in [since, until]
    (time.time(), when the request arrived), whatever the answer."""
    return [
        int((r["body"] or {}).get("spec", {}).get("replicas", -1))
        for r in api.requests
        if r["method"] == "PATCH"
        and r["subresource"] == "scale"
        and r["name"] == name
        and r["user"] == DAEMON_USER
        and since <= r["time"] <= until
    ]


# What a tick may take while a server hangs: two intervals. A call's timeout cut to the tick's
# budget (80 % of the interval) keeps it under one; an uncut one waits its own (a queue read
# 5 s, an API call --api-timeout 1 s, each retried). Not one interval: a loaded machine can
# delay a tick's threads past it without any call waiting.
TICK_BOUND = 2 * POLL  # 1 s: a bucket of eventscaler_tick_duration_seconds


def tick_durations(proc: DaemonProcess) -> tuple[float, float]:
    """(ticks that took at most TICK_BOUND seconds, all ticks), from the daemon's /metrics."""
    port = re.search(r"health endpoints on port (\d+)", proc.output)
    assert port, proc.output
    url = f"http://127.0.0.1:{port[1]}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    bucket = rf'eventscaler_tick_duration_seconds_bucket{{le="{TICK_BOUND:.1f}"}} (\S+)'
    within = re.search(bucket, text)
    total = re.search(r"eventscaler_tick_duration_seconds_count (\S+)", text)
    assert within and total, text
    return float(within[1]), float(total[1])


def write_atomically(path: Path, text: str) -> None:
    """Replace the file in one step, as a ConfigMap volume swaps its symlink."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def alive(proc: DaemonProcess) -> bool:
    return proc.process is not None and proc.process.poll() is None


@dataclass
class Window:
    """One fault window of one rule: what the daemon logged and sent since it opened."""

    api: KubeApiServer
    proc: DaemonProcess
    rule: str
    floor: int  # R0: the replicas the queue justified when the fault started
    started: float = field(default_factory=time.time)
    log_from: int = 0

    def __post_init__(self) -> None:
        self.log_from = len(self.proc.output)

    def log(self) -> str:
        return self.proc.output[self.log_from :]

    def patches(self) -> list[int]:
        return scale_patches(self.api, self.rule, self.started)

    def wrong_writes(self, ceiling: int) -> list[int]:
        return [n for n in self.patches() if not self.floor <= n <= ceiling]

    def ticks(self) -> int:
        name = re.escape(self.rule)
        log = self.log()
        decisions = len(re.findall(rf": rule {name}: \d+ -> \d+ \[", log))
        again = len(re.findall(rf": rule {name}: write conflicted", log))
        unread = len(re.findall(rf": rule {name}: cannot read the target Deployment", log))
        return decisions - again + unread

    def failing_ticks(self) -> int:
        counts = re.findall(
            rf": rule {re.escape(self.rule)}: .*\(failing for (\d+) ticks?\)", self.log()
        )
        return max((int(n) for n in counts), default=0)

    def wait_log(self, pattern: str, timeout: float = 10.0) -> None:
        wait_for(lambda: re.search(pattern, self.log()), timeout, 0.02, f"log {pattern!r}")

    def wait_failing(self, ticks: int, timeout: float = 15.0) -> None:
        wait_for(lambda: self.failing_ticks() >= ticks, timeout, what=f"{ticks} failed ticks")


def wait_replicas(
    api: KubeApiServer,
    name: str,
    count: int,
    timeout: float = RECOVERY_TIMEOUT,
    proc: DaemonProcess | None = None,
) -> float:
    """Wait until Deployment `name` has `count` replicas; return the seconds it took. On a
    timeout, the daemon's last log lines (of `proc`) go into the failure, to tell why."""
    started = time.monotonic()
    try:
        wait_for(lambda: replicas(api, name) == count, timeout, 0.05, f"{name} at {count} replicas")
    except AssertionError as exc:
        if proc is None:
            raise
        tail = "\n".join(proc.output.splitlines()[-40:])
        now = replicas(api, name)
        raise AssertionError(f"{exc} (now {now}); the daemon's log ends:\n{tail}") from None
    return time.monotonic() - started


# --- Azurite ------------------------------------------------------------------------------------


def test_azurite_killed_for_several_ticks_then_restarted_empty(
    api: KubeApiServer, daemon_kubeconfig: Path, unique: str, tmp_path: Path
) -> None:
    with Azurite() as azurite:  # its own: the restart loses every queue on it
        azurite.create_queue(unique)
        azurite.send_messages(unique, 20)
        api.create_deployment(NAMESPACE, unique, replicas=0)
        rules = write_rules(
            tmp_path / "rules.yaml", [rule(unique, NAMESPACE, unique, cooldownPeriod=COOLDOWN)]
        )
        with start_daemon(daemon_kubeconfig, azurite, rules) as proc:
            wait_replicas(api, unique, 4)
            window = Window(api, proc, unique, floor=4)
            port = azurite.port
            azurite.stop()
            window.wait_failing(AZURITE_DOWN_TICKS)
            assert alive(proc), proc.output
            assert replicas(api, unique) == 4  # a failed read is never a zero

            azurite.restart()  # takes a second or two: the daemon keeps failing meanwhile
            back = time.monotonic()
            ticks = window.ticks()
            assert azurite.port == port, "Azurite came back on another port"
            azurite.create_queue(unique)  # its data is gone: the queue and the messages
            unreadable_until = time.time()
            azurite.send_messages(unique, 35)
            wait_replicas(api, unique, 7)
            recovered = time.monotonic() - back
            assert alive(proc), proc.output

            down_writes = scale_patches(api, unique, window.started, unreadable_until)
            wrong = len(down_writes) + len(window.wrong_writes(justified(35)))
            report("azurite killed, restarted empty", ticks, wrong,
                   f"recovered in {recovered:.1f} s")  # fmt: skip
            assert down_writes == [], "scale writes while the queue could not be read"
            assert window.wrong_writes(justified(35)) == []
            assert window.failing_ticks() >= ticks  # every tick while down failed...
            assert "ConnectionError: cannot reach" in window.log()  # ...on the connection
            assert proc.stop() == 0


def test_azurite_frozen_for_several_ticks_then_thawed(
    api: KubeApiServer, daemon_kubeconfig: Path, unique: str, tmp_path: Path
) -> None:
    """A hung server rather than a dead one: connections open, no answer, every read times out."""
    with Azurite() as azurite:  # its own: it is frozen with SIGSTOP
        azurite.create_queue(unique)
        azurite.send_messages(unique, 20)
        api.create_deployment(NAMESPACE, unique, replicas=0)
        rules = write_rules(
            tmp_path / "rules.yaml", [rule(unique, NAMESPACE, unique, cooldownPeriod=COOLDOWN)]
        )
        with start_daemon(daemon_kubeconfig, azurite, rules) as proc:
            wait_replicas(api, unique, 4)
            window = Window(api, proc, unique, floor=4)
            durations_before = tick_durations(proc)
            assert azurite.pid is not None
            os.kill(azurite.pid, signal.SIGSTOP)
            try:
                window.wait_failing(FAULT_TICKS)
                ticks = window.ticks()
                within, total = (
                    a - b for a, b in zip(tick_durations(proc), durations_before, strict=True)
                )
                assert alive(proc), proc.output
                assert replicas(api, unique) == 4  # a read that timed out is never a zero
            finally:
                os.kill(azurite.pid, signal.SIGCONT)
            thawed = time.monotonic()
            azurite.send_messages(unique, 15)
            wait_replicas(api, unique, 7)
            recovered = time.monotonic() - thawed
            wrong = window.wrong_writes(justified(35))
            report("azurite frozen (SIGSTOP), thawed", ticks, len(wrong),
                   f"recovered in {recovered:.1f} s")  # fmt: skip
            assert wrong == []
            assert "Timeout: no answer from" in window.log()
            assert proc.stop() == 0
    # Each queue call's timeout is cut to what the tick has left: no tick waited out a call's own.
    assert within == total, f"{total - within:g} of {total:g} ticks took over {TICK_BOUND} s"


# --- Kubernetes API -----------------------------------------------------------------------------

API_FAULTS: list[tuple[str, dict[str, Any]]] = [
    ("API 500 on every call", {"path_regex": "^/", "status": 500}),
    ("API 429 with Retry-After 1 s", {"path_regex": "^/", "status": 429, "retry_after": 1}),
    ("API 409 on scale writes", {"path_regex": "/scale$", "method": "PATCH", "status": 409}),
    (f"API slow: 2 s, over --api-timeout {API_TIMEOUT:g} s",
     {"path_regex": "^/", "status": None, "delay": 2 * API_TIMEOUT}),
    ("API drops connections", {"path_regex": "^/", "status": None, "drop": True}),
    ("API server restart (stop, start)", {}),
]  # fmt: skip


def test_kubernetes_api_faults_then_healthy(
    api: KubeApiServer, daemon_kubeconfig: Path, azurite: Azurite, unique: str, tmp_path: Path
) -> None:
    azurite.create_queue(unique)
    length = 20
    azurite.send_messages(unique, length)
    api.create_deployment(NAMESPACE, unique, replicas=0)
    rules = write_rules(
        tmp_path / "rules.yaml", [rule(unique, NAMESPACE, unique, cooldownPeriod=COOLDOWN)]
    )
    with start_daemon(daemon_kubeconfig, azurite, rules) as proc:
        wait_replicas(api, unique, justified(length))
        for label, fault in API_FAULTS:
            window = Window(api, proc, unique, floor=justified(length))
            durations_before = tick_durations(proc)
            if fault:
                api.inject_fault(**fault)
            else:
                api.stop()
            try:
                if fault.get("method") != "PATCH":
                    # Every tick that started before the fault is over: the write due to the
                    # messages sent next can only be tried under the fault.
                    window.wait_failing(1)
                azurite.send_messages(unique, 10)  # a write is due from now on
                length += 10
                window.wait_failing(FAULT_TICKS)
                ticks = window.ticks()
                within, total = (
                    a - b for a, b in zip(tick_durations(proc), durations_before, strict=True)
                )
                assert alive(proc), proc.output
                assert replicas(api, unique) == window.floor, f"{label}: a write got through"
                # Retries and each call's timeout are bounded by the tick: none waited out a
                # call's own timeout, however slow the server.
                assert within == total, f"{label}: {total - within:g} tick(s) over {TICK_BOUND} s"
            finally:
                if fault:
                    api.clear_faults()
                else:
                    api.start()
            recovered = wait_replicas(api, unique, justified(length))
            wrong = window.wrong_writes(justified(length))
            report(label, ticks, len(wrong), f"recovered in {recovered:.1f} s")
            assert wrong == [], f"{label}: wrong writes {wrong}"
            assert alive(proc), proc.output
        assert proc.stop() == 0


# --- The rule file ------------------------------------------------------------------------------


def test_rule_file_broken_five_ways_then_restored(
    api: KubeApiServer, daemon_kubeconfig: Path, azurite: Azurite, unique: str, tmp_path: Path
) -> None:
    azurite.create_queue(unique)
    length = 10
    azurite.send_messages(unique, length)
    api.create_deployment(NAMESPACE, unique, replicas=0)
    # tolerance 0: a read in the middle of a send of 10 (55 of 60 messages: 11 replicas) must not
    # leave the count within the HPA's 10 % of the 12 the full queue justifies.
    good = rule(unique, NAMESPACE, unique, cooldownPeriod=COOLDOWN, tolerance=0)
    path = write_rules(tmp_path / "rules.yaml", [good])
    good_text = path.read_text()
    # The rule made invalid (and with a lower max that must not leak into the rule in force).
    invalid_rule = write_rules(
        tmp_path / "invalid.yaml",
        [{**good, "maxReplicas": 1, "triggers": [{**good["triggers"][0], "queueLength": "ten"}]}],
    ).read_text()
    # The rule with its name misspelt: nothing in the file says which rule in force it was.
    nameless = {("nmae" if key == "name" else key): value for key, value in good.items()}
    nameless_rule = write_rules(tmp_path / "nameless.yaml", [nameless]).read_text()
    faults: list[tuple[str, str | None, str]] = [
        ("rule file: invalid YAML", "rules: [this is: not valid", r"not valid YAML"),
        ("rule file: valid YAML, invalid rule", invalid_rule,
         r"queueLength: expected a positive number"),
        ("rule file: valid YAML, rule name misspelt", nameless_rule, r"nmae: unknown field"),
        ("rule file: empty", "", r"the file is empty"),
        ("rule file: deleted", None, r"cannot read the rule file"),
    ]  # fmt: skip
    loaded = re.compile(r"rule file \S+ loaded: 1 rule\(s\) in force, 0 problem\(s\)")
    with start_daemon(daemon_kubeconfig, azurite, path) as proc:
        wait_replicas(api, unique, justified(length))
        for label, text, problem in faults:
            window = Window(api, proc, unique, floor=justified(length))
            if text is None:
                path.unlink()
            else:
                write_atomically(path, text)
            window.wait_log(problem)
            window.wait_log(r"keeping the 1 rule|loaded: 1 rule\(s\) in force, [1-9]")
            azurite.send_messages(unique, 10)  # the rule in force must act on this
            length += 10
            wait_replicas(api, unique, justified(length), proc=proc)
            wait_for(lambda w=window: w.ticks() >= FAULT_TICKS, 10, what=f"{FAULT_TICKS} ticks")
            ticks = window.ticks()
            assert alive(proc), proc.output

            restore_from = len(proc.output)
            write_atomically(path, good_text)
            restored = time.monotonic()
            wait_for(lambda f=restore_from: loaded.search(proc.output[f:]), 10, 0.02,
                     f"{label}: the restored file loaded")  # fmt: skip
            recovered = time.monotonic() - restored
            wrong = window.wrong_writes(justified(length))
            report(label, ticks, len(wrong), f"recovered in {recovered:.1f} s")
            assert wrong == [], f"{label}: wrong writes {wrong}"

        # The restored file is the one in force: an edit of it (a lower max) applies.
        edit_from = time.time()
        write_atomically(path, good_text.replace(f"maxReplicas: {MAX_REPLICAS}", "maxReplicas: 7"))
        wait_replicas(api, unique, 7)
        assert scale_patches(api, unique, edit_from) == [7]
        assert alive(proc), proc.output
        assert proc.stop() == 0


# --- SIGTERM ------------------------------------------------------------------------------------


def test_sigterm_during_a_tick_completes_it_and_exits_zero(
    api: KubeApiServer, daemon_kubeconfig: Path, azurite: Azurite, unique: str, tmp_path: Path
) -> None:
    azurite.create_queue(unique)
    api.create_deployment(NAMESPACE, unique, replicas=0)
    # A longer interval than the other tests, so that a write of 0.8 s fits in both the API timeout
    # (1 s) and the tick's budget (80 % of 2 s): it succeeds, slowly.
    slow_rule = rule(unique, NAMESPACE, unique, cooldownPeriod=COOLDOWN, pollingInterval=2)
    rules = write_rules(tmp_path / "rules.yaml", [slow_rule])
    target = f"{NAMESPACE}/{unique}"
    with start_daemon(daemon_kubeconfig, azurite, rules) as proc:
        proc.wait_for_output(rf"{target}: rule {unique}: 0 -> 0 \[")
        # A SIGTERM sent once the tick has decided lands while its write is in flight.
        fault = api.inject_fault(r"/scale$", "PATCH", status=None, delay=0.8 * API_TIMEOUT)
        started = time.time()
        try:
            azurite.send_messages(unique, 20)
            proc.wait_for_output(rf"{target}: rule {unique}: 0 -> 4 \[", timeout=10)
            signalled = time.monotonic()
            exit_code = proc.stop(timeout=SIGTERM_BOUND + 10)
            exit_seconds = time.monotonic() - signalled
        finally:
            api.remove_fault(fault)
    patches = scale_patches(api, unique, started)
    output = proc.output
    events = [
        r
        for r in api.requests
        if r["method"] == "POST"
        and r["resource"] == "events"
        and r["time"] >= started
        and (r["body"] or {}).get("reason") == "SuccessfulRescale"
        and (r["body"] or {}).get("involvedObject", {}).get("name") == unique
    ]
    completed = replicas(api, unique) == 4 and f"{target}: scaled 0 -> 4" in output
    nothing = replicas(api, unique) == 0 and patches == [] and "scaled" not in output
    wrong = [n for n in patches if n != 4]
    report("SIGTERM during a tick (write in flight)", "-", len(wrong),
           f"tick {'completed' if completed else 'did nothing'}, exited {exit_code} "
           f"in {exit_seconds:.1f} s (bound {SIGTERM_BOUND:g} s)")  # fmt: skip
    assert exit_code == 0, output
    assert exit_seconds < SIGTERM_BOUND, output
    assert completed or nothing, f"half a tick: patches {patches}\n{output}"
    assert completed, "the write was in flight: the tick should have finished it"
    assert patches == [4]
    assert len(events) == 1, "the completed tick's SuccessfulRescale event is missing"
    assert "received SIGTERM" in output and output.rstrip().endswith("stopped")


# --- A Deployment deleted and re-created --------------------------------------------------------


def test_deployment_deleted_and_recreated_while_its_rule_is_active(
    api: KubeApiServer, daemon_kubeconfig: Path, azurite: Azurite, unique: str, tmp_path: Path
) -> None:
    gone, other = f"{unique}-gone", f"{unique}-other"
    for name in (gone, other):
        azurite.create_queue(name)
        azurite.send_messages(name, 20)
        api.create_deployment(NAMESPACE, name, replicas=0)
    rules = write_rules(
        tmp_path / "rules.yaml",
        [rule(name, NAMESPACE, name, cooldownPeriod=COOLDOWN) for name in (gone, other)],
    )
    with start_daemon(daemon_kubeconfig, azurite, rules) as proc:
        wait_replicas(api, gone, 4)
        wait_replicas(api, other, 4)
        window = Window(api, proc, gone, floor=4)
        other_window = Window(api, proc, other, floor=4)
        assert api.delete_deployment(NAMESPACE, gone)
        window.wait_failing(FAULT_TICKS)
        azurite.send_messages(other, 10)  # the other rule keeps working meanwhile
        wait_replicas(api, other, 6)
        azurite.send_messages(gone, 10)  # and the deleted one will need 6 when back
        ticks = window.ticks()
        assert alive(proc), proc.output
        gone_writes = scale_patches(api, gone, window.started)

        api.create_deployment(NAMESPACE, gone, replicas=1)  # as `kubectl apply` re-creates it
        recovered = wait_replicas(api, gone, 6)
        wrong = window.wrong_writes(6) + other_window.wrong_writes(6)
        report("Deployment deleted, re-created", ticks, len(wrong),
               f"recovered in {recovered:.1f} s")  # fmt: skip
        assert gone_writes == [], "a write to a Deployment that is not there"
        assert wrong == []
        log = window.log()
        assert re.search(
            rf"rule {re.escape(gone)}: cannot read the target Deployment: .*not found", log
        )
        assert not re.search(rf": rule {re.escape(other)}: .*failing for", log), "other rule failed"
        assert other_window.ticks() >= window.ticks() - 1  # it kept its pace meanwhile
        assert scale_patches(api, other, window.started) == [6]
        assert proc.stop() == 0
