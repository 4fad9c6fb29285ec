"""`make soak`: the real daemon for a long while on hundreds of rules whose queues keep changing.

One Azurite and one Kubernetes API test server (TLS, the shipped RBAC, the daemon as its
ServiceAccount), `--rules` rules (default 300) each with its own queue and Deployment, and the real
daemon (`python autoscaler.py run`, DEBUG, JSON logs). While it runs, background threads keep
changing the queue lengths at random (`--changes-per-second`: a few messages more or fewer, now
and then an empty queue), for `--minutes` or `--seconds` (default 120 s). Then the changes
stop, and after one polling interval every Deployment must have the replicas its queue asks for.

The rules are written so that the replicas follow from the queue alone: minReplicas 0, tolerance
0, cooldownPeriod 0, no stabilization window, queueLength 1, 2 or 5, maxReplicas 5, 10 or 20:
expected = 0 for an empty queue, else min(max(ceil(length / queueLength), 1), maxReplicas).

Reported, one line each: the daemon's RSS after its first ticks, at the end, its peak, and its
growth per hour (least-squares slope of one sample a second, after a warm-up); ticks seen against
ticks expected, late ticks (a gap between two decisions of one rule longer than pollingInterval
+ `--late-after`) and missed ticks (whole intervals inside such gaps), from the time stamps of
the daemon's decision log lines; queue changes made; the time of one queue read a second made
from outside the daemon (a slow Azurite shows there, not only as the daemon's timeouts); writes
(from /metrics); errors and warnings in the log; the final check; how the daemon stopped.

Exit status 1 when the log has any error, the RSS grew faster than `--max-growth-mib-per-hour`
(default 20 MiB/h, and by more than `--min-growth-mib` in absolute terms, 4 MiB, so that a short
run's noise is not read as a leak), a Deployment did not match its queue, or the daemon did not
exit 0 on SIGTERM. Everything it starts is stopped on exit, on failure and on Ctrl-C.
See docs/soak.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from azure.core.exceptions import AzureError
from azure.storage.queue import QueueServiceClient
from kubernetes import client as kube_client
from kubernetes import config as kube_config

from tests.support.azurite import Azurite
from tests.support.cluster import write_rbac_shape
from tests.support.kubeapi import KubeApiServer

REPO_ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "soak"
MIB = 1024 * 1024
QUEUE_LENGTHS = (1, 2, 5)
MAX_REPLICAS = (5, 10, 20)
CHURN_THREADS = 8
DRAIN_CHANCE = 0.15  # of a change emptying its queue, so scale-to-zero is exercised too
STEP = 5  # a change moves a queue by up to this many messages
FIRST_TICKS_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
DECISION = re.compile(r"^\S+: rule (\S+): (\d+) -> (\d+) \[")
HEALTH_PORT = re.compile(r"health endpoints on port (\d+)")


# ---------------------------------------------------------------------------------------------
# The daemon and what its log says


@dataclass
class LogStats:
    """Everything the soak learns from the daemon's log, counted as the lines arrive (memory
    stays flat however long the run)."""

    interval: float
    late_after: float
    first_tick: dict[str, float] = field(default_factory=dict)
    last_tick: dict[str, float] = field(default_factory=dict)
    ticks: Counter[str] = field(default_factory=Counter)
    gaps: list[float] = field(default_factory=list)
    late: int = 0
    missed: int = 0
    errors: int = 0
    warnings: int = 0
    unparsed: int = 0
    health_port: int | None = None
    kinds: Counter[str] = field(default_factory=Counter)  # messages, rule names blanked

    def take(self, line: str) -> None:
        try:
            entry = json.loads(line)
            when = datetime.fromisoformat(entry["time"].replace("Z", "+00:00")).timestamp()
            message = str(entry["message"])
            level = str(entry["level"])
        except (ValueError, KeyError, TypeError, AttributeError):
            self.unparsed += 1  # not the JSON formatter's: a crash or stray output
            self._count_kind("ERROR", line)
            return
        if level in ("ERROR", "CRITICAL"):
            self.errors += 1
            self._count_kind(level, message)
        elif level == "WARNING":
            self.warnings += 1
            self._count_kind(level, message)
        if self.health_port is None and (port := HEALTH_PORT.search(message)):
            self.health_port = int(port[1])
        decision = DECISION.match(message)
        if decision:
            self._tick(decision[1], when)

    def _tick(self, rule: str, when: float) -> None:
        last = self.last_tick.get(rule)
        self.last_tick[rule] = when
        self.ticks[rule] += 1
        if last is None:
            self.first_tick[rule] = when
            return
        gap = when - last
        self.gaps.append(gap)
        if gap > self.interval + self.late_after:
            self.late += 1
            self.missed += max(0, round(gap / self.interval) - 1)

    def _count_kind(self, level: str, message: str) -> None:
        kind = re.sub(r"soak-\d+", "soak-N", message)
        kind = re.sub(r"\d+(\.\d+)?", "N", kind)[:160]
        if kind in self.kinds or len(self.kinds) < 50:
            self.kinds[f"{level} {kind}"] += 1


class Daemon:
    """`python autoscaler.py run` in a child process; its log read line by line into LogStats."""

    def __init__(self, args: Sequence[str], env: dict[str, str], stats: LogStats) -> None:
        self.stats = stats
        full_env = {**os.environ, **env}
        full_env.pop("KUBECONFIG", None)  # never a developer's own cluster
        self.process = subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "autoscaler.py"), *args],
            cwd=REPO_ROOT,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, name="soak-daemon-log", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.strip():
                self.stats.take(line)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> tuple[int | None, float]:
        """SIGTERM, then wait; returns (exit code, seconds), killing it if it overstays."""
        started = time.monotonic()
        if self.running:
            self.process.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            code = None
        self._reader.join(5)
        return code, time.monotonic() - started


def read_rss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


class RssSampler:
    """One RSS sample of a process a second, on a thread of its own."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-rss", daemon=True)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = read_rss(self.pid)
            if rss is not None:
                self.samples.append((time.monotonic(), rss))
            self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def growth_per_hour(samples: Sequence[tuple[float, int]]) -> float:
    """Least-squares slope of RSS over time, in bytes per hour."""
    if len(samples) < 3:
        return 0.0
    times = [t for t, _ in samples]
    values = [float(v) for _, v in samples]
    mean_t, mean_v = statistics.fmean(times), statistics.fmean(values)
    spread = sum((t - mean_t) ** 2 for t in times)
    if spread == 0:
        return 0.0
    slope = sum((t - mean_t) * (v - mean_v) for t, v in zip(times, values, strict=True)) / spread
    return slope * 3600


class LatencyProbe:
    """Times one queue read a second from outside the daemon: when the daemon's reads time out,
    this tells whether Azurite itself was slow."""

    def __init__(self, service: QueueServiceClient, queue: str) -> None:
        self._queue = service.get_queue_client(queue)
        self.seconds: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-probe", daemon=True)

    def start(self) -> LatencyProbe:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            started = time.monotonic()
            # A failure is counted by its time, which is what matters here.
            with contextlib.suppress(AzureError):
                self._queue.get_queue_properties(timeout=30)
            self.seconds.append(time.monotonic() - started)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(35)


# ---------------------------------------------------------------------------------------------
# The queues


@dataclass(frozen=True)
class SoakRule:
    name: str  # also the queue's and the Deployment's
    queue_length: int
    max_replicas: int

    def expected(self, length: int) -> int:
        if length == 0:
            return 0
        return min(max(math.ceil(length / self.queue_length), 1), self.max_replicas)


class Churn:
    """Background threads that keep changing queue lengths; each owns a share of the queues."""

    def __init__(
        self,
        service: QueueServiceClient,
        names: Sequence[str],
        lengths: dict[str, int],
        max_messages: int,
        rate: float,
        seed: int,
    ) -> None:
        self._service = service
        self._names = list(names)
        self.lengths = lengths  # each entry written only by the thread that owns the queue
        self._max = max_messages
        self._period = CHURN_THREADS / rate if rate > 0 else math.inf
        self._seed = seed
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(k,), name=f"soak-churn-{k}", daemon=True)
            for k in range(CHURN_THREADS)
        ]
        self.changes = self.sent = self.removed = self.failures = 0
        self._lock = threading.Lock()

    def start(self) -> Churn:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self, k: int) -> None:
        rng = random.Random(self._seed * 1000 + k)
        mine = self._names[k::CHURN_THREADS]
        if not mine or math.isinf(self._period):
            return
        next_at = time.monotonic() + rng.random() * self._period
        while not self._stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            next_at += self._period
            name = rng.choice(mine)
            current = self.lengths[name]
            if rng.random() < DRAIN_CHANCE:
                target = 0
            else:
                target = min(max(current + rng.randint(-STEP, STEP), 0), self._max)
            try:
                sent, removed = set_length(self._service, name, current, target)
            except AzureError:
                with self._lock:
                    self.failures += 1
                continue
            self.lengths[name] = current + sent - removed
            with self._lock:
                self.changes += 1
                self.sent += sent
                self.removed += removed


def set_length(
    service: QueueServiceClient, name: str, current: int, target: int
) -> tuple[int, int]:
    """Go from `current` to `target` messages; returns (sent, removed).

    Down is a clear and a refill, not a receive-and-delete per message as workers would do: in
    Azurite a receive or a delete costs some 40 ms of its only thread, ten times a send, and the
    soak measures the daemon, not Azurite.
    """
    queue = service.get_queue_client(name)
    removed = 0
    if target < current:
        queue.clear_messages()
        removed, current = current, 0
    for _ in range(target - current):
        queue.send_message("soak")
    return target - current, removed


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def add(self, label: str, text: str) -> None:
        self.lines.append(f"  {label:<15} {text}")

    def fail(self, why: str) -> None:
        self.failures.append(why)


def make_rules(count: int, seed: int) -> list[SoakRule]:
    rng = random.Random(seed)
    return [
        SoakRule(f"soak-{i:04d}", rng.choice(QUEUE_LENGTHS), rng.choice(MAX_REPLICAS))
        for i in range(count)
    ]


def write_rule_file(path: Path, rules: Sequence[SoakRule], interval: float) -> Path:
    document = {
        "defaults": {
            "namespace": NAMESPACE,
            "minReplicas": 0,
            "pollingInterval": interval,
            "cooldownPeriod": 0,
            "tolerance": 0,
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}},
        },
        "rules": [
            {
                "name": r.name,
                "deployment": r.name,
                "maxReplicas": r.max_replicas,
                "triggers": [
                    {"type": "azure-queue", "queueName": r.name, "queueLength": r.queue_length}
                ],
            }
            for r in rules
        ],
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def fetch_metrics(port: int | None) -> dict[str, float]:
    """Sums of a few counters from /metrics, by metric name and the `outcome` label."""
    totals: Counter[str] = Counter()
    if port is None:
        return {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return {}
    for line in text.splitlines():
        if line.startswith("eventscaler_scale_operations_total{"):
            outcome = re.search(r'outcome="([^"]+)"', line)
            totals[f"writes_{outcome[1] if outcome else 'other'}"] += float(line.rsplit(" ", 1)[1])
        elif line.startswith("eventscaler_rule_errors_total{"):
            totals["rule_errors"] += float(line.rsplit(" ", 1)[1])
    return dict(totals)


def final_check(
    service: QueueServiceClient, server: KubeApiServer, rules: Sequence[SoakRule]
) -> list[str]:
    """Every rule whose Deployment does not have the replicas its queue asks for, described."""
    wrong = []
    for rule in rules:
        length = service.get_queue_client(rule.name).get_queue_properties()
        count = int(length.approximate_message_count or 0)
        deployment = server.get_deployment(NAMESPACE, rule.name) or {}
        replicas = int((deployment.get("spec") or {}).get("replicas") or 0)
        if replicas != rule.expected(count):
            wrong.append(f"{rule.name}: {count} messages -> expected {rule.expected(count)}, "
                         f"found {replicas}")  # fmt: skip
    return wrong


def housekeeping(server: KubeApiServer, admin: Any, stop: threading.Event) -> None:
    """Keep the test server's memory flat on long runs: clear its request log, delete Events."""
    events = kube_client.CoreV1Api(admin)
    rounds = 0
    while not stop.wait(5.0):
        server.clear_requests()
        rounds += 1
        if rounds % 6 == 0:
            try:
                events.delete_collection_namespaced_event(NAMESPACE, _request_timeout=30)
            except Exception as exc:  # the soak goes on; the daemon is what is measured
                print(f"soak: could not delete events: {exc}", file=sys.stderr)


def soak(args: argparse.Namespace) -> int:
    duration = args.seconds if args.seconds is not None else (args.minutes or 2.0) * 60
    rules = make_rules(args.rules, args.seed)
    rng = random.Random(args.seed)
    report = Report()
    stop_helpers = threading.Event()
    daemon: Daemon | None = None
    sampler: RssSampler | None = None
    churn: Churn | None = None
    probe: LatencyProbe | None = None
    with tempfile.TemporaryDirectory(prefix="eventscaler-soak-") as work, Azurite() as azurite:
        workdir = Path(work)
        server = KubeApiServer(rbac_dir=write_rbac_shape(workdir / "rbac")).start()
        admin = None
        try:
            token = server.add_service_account("eventscaler", "eventscaler")
            kubeconfig = server.write_kubeconfig(workdir / "daemon.kubeconfig", token=token)
            admin = kube_config.new_client_from_config(
                str(server.write_kubeconfig(workdir / "admin.kubeconfig"))
            )
            service = QueueServiceClient.from_connection_string(azurite.connection_string)
            print(f"soak: creating {len(rules)} queues and Deployments...", flush=True)
            lengths = {r.name: rng.randint(0, args.max_messages) for r in rules}
            for rule in rules:
                server.create_deployment(NAMESPACE, rule.name, replicas=0)

            def prepare(rule: SoakRule) -> None:
                service.get_queue_client(rule.name).create_queue()
                set_length(service, rule.name, 0, lengths[rule.name])

            with ThreadPoolExecutor(max_workers=CHURN_THREADS) as pool:
                list(pool.map(prepare, rules))
            rules_path = write_rule_file(workdir / "rules.yaml", rules, args.polling_interval)

            stats = LogStats(args.polling_interval, args.late_after)
            daemon = Daemon(
                ["run", "--config", str(rules_path), "--kubeconfig", str(kubeconfig),
                 "--log-level", "DEBUG", "--log-format", "json", "--health-port", "0",
                 "--workers", str(args.workers)],
                {"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string},
                stats,
            )  # fmt: skip
            sampler = RssSampler(daemon.process.pid).start()
            deadline = time.monotonic() + FIRST_TICKS_TIMEOUT
            while len(stats.first_tick) < len(rules) and time.monotonic() < deadline:
                if not daemon.running:
                    break
                time.sleep(0.2)
            if len(stats.first_tick) < len(rules):
                report.fail(f"only {len(stats.first_tick)} of {len(rules)} rules ever ticked")
            start_rss = read_rss(daemon.process.pid) or 0
            started = time.monotonic()
            print(
                f"soak: daemon up, every rule ticked; running {duration:g} s "
                f"(RSS {start_rss / MIB:.1f} MiB)",
                flush=True,
            )
            threading.Thread(
                target=housekeeping, args=(server, admin, stop_helpers), daemon=True
            ).start()
            probe = LatencyProbe(service, rules[0].name).start()
            churn = Churn(
                service, [r.name for r in rules], lengths, args.max_messages,
                args.changes_per_second, args.seed,
            ).start()  # fmt: skip
            end_at = started + duration
            next_progress = started + 60
            while time.monotonic() < end_at and daemon.running:
                time.sleep(min(1.0, max(0.0, end_at - time.monotonic())))
                if time.monotonic() >= next_progress:
                    next_progress += 60
                    rss = read_rss(daemon.process.pid) or 0
                    print(
                        f"soak: {time.monotonic() - started:.0f} s, RSS {rss / MIB:.1f} MiB, "
                        f"{churn.changes} changes, {stats.errors} errors",
                        flush=True,
                    )
            churn.stop()
            probe.stop()
            elapsed = time.monotonic() - started
            end_rss = read_rss(daemon.process.pid) or 0

            # Within one tick: every rule polls once in the next interval, then it must match.
            time.sleep(args.polling_interval + args.late_after)
            wrong = final_check(service, server, rules) if daemon.running else ["daemon died"]
            still_wrong = []
            if wrong and daemon.running:
                time.sleep(args.polling_interval)
                still_wrong = final_check(service, server, rules)
            metrics = fetch_metrics(stats.health_port)
            sampler.stop()
            stopped_at = time.time()
            code, stop_seconds = daemon.stop()
        finally:
            stop_helpers.set()
            if churn is not None:
                churn.stop()
            if probe is not None:
                probe.stop()
            if sampler is not None:
                sampler.stop()
            if daemon is not None and daemon.running:
                daemon.stop()
            if admin is not None:
                admin.close()
            server.stop()

    # -- the report ------------------------------------------------------------------------
    warm_until = started + max(2 * args.polling_interval, 0.2 * elapsed)
    steady = [(t, v) for t, v in sampler.samples if warm_until <= t <= started + elapsed]
    growth = growth_per_hour(steady)
    absolute = (end_rss - start_rss) / MIB
    peak = max((v for _, v in sampler.samples), default=0)
    report.add(
        "daemon RSS",
        f"start {start_rss / MIB:.1f} MiB (after first ticks), end {end_rss / MIB:.1f} MiB, "
        f"peak {peak / MIB:.1f} MiB; growth {growth / MIB:+.1f} MiB/h over the last "
        f"{(steady[-1][0] - steady[0][0]) if len(steady) > 1 else 0:.0f} s, {absolute:+.1f} MiB "
        f"in all (limit {args.max_growth_mib_per_hour:g} MiB/h beyond {args.min_growth_mib:g} MiB)",
    )
    if growth / MIB > args.max_growth_mib_per_hour and absolute > args.min_growth_mib:
        report.fail(f"RSS grew {growth / MIB:.1f} MiB/h ({absolute:+.1f} MiB)")
    # Every rule's ticks are due every interval from its first one; one that was due in the last
    # `late_after` seconds before SIGTERM may still have been running, so it is not counted.
    expected = {
        rule: math.floor((stopped_at - args.late_after - first) / args.polling_interval) + 1
        for rule, first in stats.first_tick.items()
    }
    expected_ticks = sum(expected.values())
    missing = sum(max(0, due - stats.ticks[rule]) for rule, due in expected.items())
    seen = sum(stats.ticks.values())
    gaps = sorted(stats.gaps) or [0.0]
    report.add(
        "ticks",
        f"{seen} seen / {expected_ticks} due, {missing} missing; late {stats.late} "
        f"(> {args.polling_interval:g} + {args.late_after:g} s apart), missed {stats.missed}; "
        f"gap p50 {gaps[len(gaps) // 2]:.2f} s, p99 {gaps[int(len(gaps) * 0.99)]:.2f} s, "
        f"max {gaps[-1]:.2f} s",
    )
    report.add(
        "queue changes",
        f"{churn.changes} in {elapsed:.0f} s ({churn.changes / max(elapsed, 1):.1f}/s; "
        f"{churn.sent} messages sent, {churn.removed} removed, {churn.failures} failed)",
    )
    latencies = sorted(probe.seconds) or [0.0]
    report.add(
        "Azurite reads",
        f"{len(probe.seconds)} timed from outside the daemon: p50 "
        f"{latencies[len(latencies) // 2] * 1000:.0f} ms, p99 "
        f"{latencies[int(len(latencies) * 0.99)] * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms",
    )
    report.add(
        "writes",
        f"{metrics.get('writes_success', 0):.0f} ok, {metrics.get('writes_failure', 0):.0f} "
        f"failed; rule errors {metrics.get('rule_errors', 0):.0f} (from /metrics)",
    )
    report.add(
        "log",
        f"errors {stats.errors + stats.unparsed} ({stats.unparsed} not JSON), "
        f"warnings {stats.warnings}",
    )
    for kind, count in stats.kinds.most_common(5):
        report.add("", f"{count} x {kind}")
    if stats.errors or stats.unparsed:
        report.fail(f"{stats.errors + stats.unparsed} error(s) in the log")
    if wrong:
        report.add(
            "final check",
            f"{len(rules) - len(wrong)}/{len(rules)} Deployments match their queue within one "
            f"tick; {len(still_wrong)} still wrong one tick later; e.g. {wrong[0]}",
        )
        report.fail(f"{len(wrong)} Deployment(s) did not match their queue within one tick")
    else:
        report.add(
            "final check",
            f"{len(rules)}/{len(rules)} Deployments match their queue within one tick",
        )
    report.add("stop", f"SIGTERM: exit code {code} after {stop_seconds:.1f} s")
    if code != 0:
        report.fail(f"the daemon exited {code} on SIGTERM")

    print(
        f"\nsoak: {len(rules)} rules, {elapsed:.0f} s, pollingInterval "
        f"{args.polling_interval:g} s, {args.workers} workers, "
        f"{args.changes_per_second:g} queue changes/s asked"
    )
    print("\n".join(report.lines))
    print("RESULT: " + ("PASS" if not report.failures else "FAIL: " + "; ".join(report.failures)))
    return 0 if not report.failures else 1


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--rules", type=int, default=300, help="rules, queues, Deployments (300)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, help="how long the queues change (default 2)")
    length.add_argument("--seconds", type=float, help="the same in seconds")
    parser.add_argument("--polling-interval", type=float, default=10.0, help="seconds (10)")
    parser.add_argument(
        "--changes-per-second", type=float, default=2.0, help="queue changes a second (2)"
    )
    parser.add_argument("--max-messages", type=int, default=20, help="longest queue (20)")
    parser.add_argument("--workers", type=int, default=16, help="the daemon's --workers (16)")
    parser.add_argument(
        "--late-after", type=float, default=1.0,
        help="seconds past the polling interval before a tick counts as late (1)",
    )  # fmt: skip
    parser.add_argument(
        "--max-growth-mib-per-hour", type=float, default=20.0,
        help="fail above this RSS growth (20 MiB/h)...",
    )  # fmt: skip
    parser.add_argument(
        "--min-growth-mib", type=float, default=4.0,
        help="...when RSS also grew by more than this in all (4 MiB)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=1, help="random seed (1)")
    args = parser.parse_args(argv)
    if args.rules < 1 or args.polling_interval <= 0:
        parser.error("--rules must be >= 1 and --polling-interval > 0")
    return args


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Ctrl-C and SIGTERM unwind through the finally blocks, which stop every child.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return soak(args)
    except KeyboardInterrupt:
        print("soak: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
