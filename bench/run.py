"""`make bench`: how fast, how small and how economical the real daemon is, as rules grow.

For each rule count N (`--rules`, default 10,100,1000; an idle run with 0 rules comes first) the
benchmark starts a fresh Azurite and a fresh Kubernetes API test server (TLS on, deployment
controller on), creates N queues and N Deployments, writes a rule file of N rules (one queue and
one Deployment each, pollingInterval 5 s) and runs the real daemon, `python autoscaler.py run`, on
it. Then:

1. bare queries: the same N `get_queue_properties` calls, `--workers` at a time (the daemon's
   concurrency), against the same Azurite, before the daemon starts and after it stops;
2. quiet phase (`--duration` s, nothing changes): tick time, API reads and writes per tick, CPU
   per tick, from the test server's request log and /proc/PID/stat;
3. reaction phase (`--trials` floods): a queue flooded at a random moment, the time until its
   Deployment's scale PATCH reaches the test server;
4. RSS (/proc/PID/status VmRSS) at the end.

Last, the cluster-size check: the smallest N again, in a cluster holding `--unrelated` extra
Deployments the rules do not name; the daemon's RSS must not change.

Prints one table and writes the same figures as JSON (`--json`, default bench/results.json).
Everything it starts (Azurite, the test server's process, the daemon, py-spy) is stopped on
exit, on failure and on Ctrl-C. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from bench import profile
from bench.daemon import Cycle, DaemonRun, RequestCollector, polling_cycles
from bench.kubeproc import KubeServerProcess
from bench.procstat import (
    MIB,
    Sampler,
    read_cpu_seconds,
    read_rss_bytes,
    read_system_busy_seconds,
)
from bench.queues import QueueBench
from tests.support.azurite import Azurite

REPO_ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "bench"
CONNECTION_ENV = "AZURE_STORAGE_CONNECTION_STRING"
ZERO_RULES_SECONDS = 10.0  # the idle daemon: long enough for two reload checks
CLUSTER_CHECK_SECONDS = 20.0

# Targets of issue 6.
TARGET_RATIO = 1.25
TARGET_REACTION_SLACK = 0.5  # reaction <= pollingInterval + this
TARGET_RSS_MIB = 96
TARGET_STARTUP_S = 2.0


def log(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def rule_names(count: int) -> list[str]:
    return [f"bench-{i:04d}" for i in range(count)]


def write_rules(path: Path, names: Sequence[str], interval: float) -> Path:
    document = {
        "defaults": {
            "namespace": NAMESPACE,
            "pollingInterval": interval,
            "cooldownPeriod": 300,
            "minReplicas": 0,
            "maxReplicas": 20,
        },
        "rules": [
            {
                "name": name,
                "deployment": name,
                "triggers": [
                    {
                        "type": "azure-queue",
                        "queueName": name,
                        "queueLength": 5,
                        "connectionFromEnv": CONNECTION_ENV,
                    }
                ],
            }
            for name in names
        ],
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (p95 of 20 values is the 19th smallest)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * fraction // 1))
    return ordered[int(rank) - 1]


def r3(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class Stage:
    """Azurite, the test server and a scratch directory for one measurement."""

    def __init__(self, stack: contextlib.ExitStack, workers: int) -> None:
        self.workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        self.azurite = stack.enter_context(Azurite())
        self.kube = stack.enter_context(KubeServerProcess(tls=True, controller_delay=0.5))
        self.kubeconfig = self.kube.write_kubeconfig(self.workdir / "kubeconfig")
        self.queues = QueueBench(self.azurite.connection_string, workers)
        stack.callback(self.queues.close)

    def daemon(
        self, options: argparse.Namespace, rules: Path, stack: contextlib.ExitStack
    ) -> DaemonRun:
        run = DaemonRun(
            options.daemon_root,
            [
                "run",
                "--config",
                str(rules),
                "--kubeconfig",
                str(self.kubeconfig),
                "--workers",
                str(options.workers),
                "--health-port",
                "-1",
                "--log-level",
                options.daemon_log_level,
            ],
            {CONNECTION_ENV: self.azurite.connection_string, **options.extra_env},
        )
        stack.callback(run.kill)  # after a clean stop, a no-op
        return run.start()


def wait_until(condition: Any, timeout: float, what: str, daemon: DaemonRun) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if not daemon.alive():
            raise RuntimeError(f"the daemon exited while waiting for {what}:\n{daemon.tail()}")
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}:\n{daemon.tail()}")


# --- the idle daemon -------------------------------------------------------------------------


def measure_zero(options: argparse.Namespace) -> dict[str, Any]:
    log("0 rules: idle daemon")
    with contextlib.ExitStack() as stack:
        stage = Stage(stack, options.workers)
        rules = write_rules(stage.workdir / "rules.yaml", [], options.interval)
        daemon = stage.daemon(options, rules, stack)
        loaded = wait_until(
            lambda: daemon.first_line_time("loaded"), 60, "the rule file to load", daemon
        )
        time.sleep(ZERO_RULES_SECONDS)
        rss = read_rss_bytes(daemon.pid)
        cpu = read_cpu_seconds(daemon.pid)
        result: dict[str, Any] = {
            "rules": 0,
            "rss_mib": r3(rss / MIB) if rss else None,
            "cpu_s_total": r3(cpu),
            "startup_rules_loaded_s": r3(loaded - daemon.started),
            "age_s": r3(time.time() - daemon.started),
        }
        daemon.stop()
        if options.profile:
            result["import_profile"] = profile_imports(options, stage, rules)
    return result


def profile_imports(options: argparse.Namespace, stage: Stage, rules: Path) -> dict[str, Any]:
    """`python -X importtime` on a `--once` run of an empty rule file: the run path's imports."""
    env = {**os.environ, CONNECTION_ENV: stage.azurite.connection_string}
    env.pop("KUBECONFIG", None)
    start = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            str(options.daemon_root / "autoscaler.py"),
            "run",
            "--once",
            "--config",
            str(rules),
            "--kubeconfig",
            str(stage.kubeconfig),
        ],
        cwd=options.daemon_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    summary = profile.import_times(done.stderr)
    summary["once_run_wall_s"] = r3(time.monotonic() - start)
    log(f"imports: {summary['total_s']} s, by package {summary['by_package_s']}")
    return summary


# --- N rules -----------------------------------------------------------------------------------


def measure_rules(
    count: int, options: argparse.Namespace, profile_this: bool, unrelated: int = 0
) -> dict[str, Any]:
    label = f"{count} rules" + (f" + {unrelated} unrelated Deployments" if unrelated else "")
    log(f"{label}: setting up")
    names = rule_names(count)
    with contextlib.ExitStack() as stack:
        stage = Stage(stack, options.workers)
        stage.queues.create_queues(names)
        stage.kube.create_deployments(NAMESPACE, names, 0)
        # In the rules' own namespace: the worst case for a daemon that lists or watches it.
        for start in range(0, unrelated, 1000):
            batch = [f"unrelated-{i:05d}" for i in range(start, min(unrelated, start + 1000))]
            stage.kube.create_deployments(NAMESPACE, batch, 1)
        rules = write_rules(stage.workdir / "rules.yaml", names, options.interval)

        bare_rounds: list[float] = []
        single = bare_cpu = None
        if not unrelated:
            bare = stage.queues.measure_bare(names, options.bare_rounds)
            bare_rounds, single = list(bare.rounds), bare.single
            bare_cpu = bare.cpu_per_call
            log(f"{label}: bare queries {statistics.median(bare_rounds):.3f} s")

        collector = RequestCollector(stage.kube).start()
        stack.callback(collector.stop)
        daemon = stage.daemon(options, rules, stack)
        sampler = Sampler(
            {"daemon": daemon.pid, "azurite": stage.azurite.pid or 0, "kubeapi": stage.kube.pid}
        ).start()
        stack.callback(sampler.stop)

        # Start-up: until every rule has read its Deployment once (the end of the first tick).
        def first_tick_done() -> float | None:
            gets = collector.all_gets()
            if count and len(gets) >= count and all(gets.get(n) for n in names):
                return max(times[0] for times in gets.values())
            return None

        first_done = wait_until(first_tick_done, 120, "the first tick", daemon)
        first_get = min(times[0] for times in collector.all_gets().values())
        log(f"{label}: first tick done {first_done - daemon.started:.2f} s after start")

        # Quiet phase: nothing changes, so every tick is a pure read.
        quiet = options.duration if not unrelated else min(options.duration, CLUSTER_CHECK_SECONDS)
        spy = None
        if profile_this:
            spy_out = options.profile_dir / f"profile-{count}-rules.txt"
            spy = profile.start_recording(daemon.pid, quiet, spy_out)
            stack.callback(lambda: spy.poll() is None and spy.kill())
        quiet_start = time.time()
        cpu_start = read_cpu_seconds(daemon.pid) or 0.0
        side_start = {k: read_cpu_seconds(p) or 0.0 for k, p in sampler.pids.items()}
        side_start["bench"] = read_cpu_seconds(os.getpid()) or 0.0
        busy_start = read_system_busy_seconds()
        stop_at = time.monotonic() + quiet
        while time.monotonic() < stop_at:
            if not daemon.alive():
                raise RuntimeError(f"the daemon exited:\n{daemon.tail()}")
            time.sleep(0.2)
        quiet_end = time.time()
        cpu_end = read_cpu_seconds(daemon.pid) or 0.0
        side_end = {k: read_cpu_seconds(p) or 0.0 for k, p in sampler.pids.items()}
        side_end["bench"] = read_cpu_seconds(os.getpid()) or 0.0
        busy = read_system_busy_seconds() - busy_start
        ours = cpu_end - cpu_start + sum(side_end[k] - side_start[k] for k in side_end)
        time.sleep(0.3)  # the last requests reach the log
        collector.collect()

        def in_quiet(times: dict[str, list[float]]) -> list[Cycle]:
            return [
                c
                for c in polling_cycles(times, names, options.interval)
                if quiet_start <= c.first and c.last <= quiet_end
            ]

        cycles = in_quiet(collector.all_gets())
        logged = in_quiet(daemon.decision_times()) if options.daemon_log_level == "DEBUG" else []
        ticks_in_quiet = (quiet_end - quiet_start) / options.interval
        result: dict[str, Any] = {"rules": count, "unrelated_deployments": unrelated}
        if logged:
            result["tick_from_log_s"] = r3(statistics.median(c.span for c in logged))
        # The API clock when the daemon reads every Deployment every tick; else (a cache) only
        # the log's. A cycle some rules did not read in is no tick of the API clock.
        cycles = [c for c in cycles if c.rules == count]
        clock = cycles or logged
        if clock:
            spans = [c.span for c in clock]
            # The server sees each rule's Deployment read, not its queue read: one queue read
            # (the last rule's, after its Deployment read) is outside the span it sees.
            lead = (single or 0.0) if cycles else 0.0
            window_reads, window_writes, kinds = collector.counts_between(
                clock[0].first, clock[-1].last
            )
            result.update(
                ticks=len(clock),
                tick_clock="api" if cycles else "log",
                tick_s=r3(statistics.median(spans) + lead),
                tick_max_s=r3(max(spans) + lead),
                tick_spans_s=[r3(s) for s in spans],
                incomplete_cycles=sum(1 for c in clock if c.rules != count),
                reads_per_rule_per_tick=r3(window_reads / (count * len(clock))),
                writes_per_tick=r3(window_writes / len(clock)),
                requests_in_quiet_cycles=kinds,
            )
        else:
            # No tick boundaries (no complete API cycle, no DEBUG log): count over the phase.
            window_reads, window_writes, kinds = collector.counts_between(quiet_start, quiet_end)
            result.update(
                tick_clock=None,
                reads_per_rule_per_tick=r3(window_reads / (count * ticks_in_quiet)),
                writes_per_tick=r3(window_writes / ticks_in_quiet),
                requests_in_quiet_cycles=kinds,
            )
            log(f"{label}: no tick time: not every rule reads the API each tick; "
                "--daemon-log-level DEBUG times ticks from the daemon's log")  # fmt: skip
        result.update(
            cpu_s_per_tick=r3((cpu_end - cpu_start) / ticks_in_quiet),
            other_cpu_s_per_tick={
                k: r3((side_end[k] - side_start[k]) / ticks_in_quiet)
                for k in side_start
                if k not in ("daemon", "bench")
            },
            # Other processes on the machine (their CPU competes with ours on the same cores).
            background_cpu_cores=r3(max(0.0, busy - ours) / (quiet_end - quiet_start)),
            startup_first_decision_s=r3(first_get - daemon.started),
            startup_first_tick_done_s=r3(first_done - daemon.started),
            startup_rules_loaded_s=r3((daemon.first_line_time("loaded") or 0) - daemon.started),
        )
        if spy is not None:
            spy.wait(quiet + 30)
            stacks = profile.read_collapsed(spy_out)
            summary = profile.summarize(stacks)
            summary["file"] = str(spy_out)
            summary["seconds"] = quiet
            result["profile"] = summary
            log(f"{label}: profile in {spy_out}")

        if options.trials and not unrelated:
            log(f"{label}: {options.trials} reaction trials")
            result["reaction"] = reaction_trials(stage, collector, names, options, daemon)

        rss = read_rss_bytes(daemon.pid)
        result.update(
            rss_mib=r3(rss / MIB) if rss else None,
            rss_peak_mib=r3((read_rss_bytes(daemon.pid, "VmHWM") or 0) / MIB),
            age_s=r3(time.time() - daemon.started),
            rss_series_mib=[
                [r3(s.time - daemon.started), r3(s.rss / MIB)]
                for s in sampler.series["daemon"][:: max(1, len(sampler.series["daemon"]) // 60)]
                if s.rss
            ],
        )
        result["daemon_problem_lines"] = daemon.problem_lines()[:20]
        code = daemon.stop()
        result["daemon_exit_code"] = code
        if bare_rounds:  # again, with the daemon stopped
            after = stage.queues.measure_bare(names, max(1, options.bare_rounds - 1))
            bare_rounds += after.rounds
            bare_median = statistics.median(bare_rounds)
            result.update(
                bare_s=r3(bare_median),
                bare_rounds_s=[r3(b) for b in bare_rounds],
                bare_single_read_s=r3(single),
                bare_client_cpu_ms_per_call=r3(bare_cpu * 1000) if bare_cpu else None,
                ratio=r3(result["tick_s"] / bare_median) if "tick_s" in result else None,
            )
        sampler.stop()
        result["_sampler"] = sampler
        result["_started"] = daemon.started
        log(
            f"{label}: tick {result.get('tick_s')} s, bare {result.get('bare_s')} s, "
            f"RSS {result['rss_mib']} MiB"
        )
    return result


def reaction_trials(
    stage: Stage,
    collector: RequestCollector,
    names: Sequence[str],
    options: argparse.Namespace,
    daemon: DaemonRun,
) -> dict[str, Any]:
    """Flood queues at random moments; time each flood to its Deployment's scale write.

    `--lanes` trials run at once, each on its own rule. A rule used again is reset first (queue
    emptied, replicas set back to 0 as `kubectl scale` would) and left until the daemon has read
    it once in that state, so the next flood starts from a quiet rule.
    """
    rng = random.Random(options.seed + len(names))
    order = list(names)
    rng.shuffle(order)
    lanes = max(1, min(options.lanes, len(names), options.trials))
    latencies: list[float] = []
    missed: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    timeout = 3 * options.interval

    def reset(name: str) -> bool:
        for _ in range(3):
            stage.queues.clear(name)
            stage.kube.set_replicas(NAMESPACE, name, 0)
            since = time.time()
            seen = collector.first_after("get", name, since + 0.05, timeout)
            if seen is None:
                return False
            time.sleep(0.3)  # a write decided on that read would arrive by now
            quiet = collector.first_after("write", name, since, 0) is None
            if quiet and stage.kube.replicas(NAMESPACE, name) == 0:
                return True
        return False

    def lane(index: int) -> None:
        lane_rng = random.Random(options.seed * 1000 + index)
        for trial in range(index, options.trials, lanes):
            if stop.is_set():
                return
            name = order[trial % len(order)]
            if trial >= len(order) and not reset(name):
                with lock:
                    missed.append(f"{name}: could not reset")
                continue
            if stop.wait(lane_rng.uniform(0, options.interval)):
                return
            landed = stage.queues.flood(name, options.flood)
            written = collector.first_after("write", name, landed, timeout)
            with lock:
                if written is None:
                    missed.append(f"{name}: no write within {timeout:g} s")
                else:
                    latencies.append(written - landed)

    threads = [
        threading.Thread(target=lane, args=(i,), name=f"bench-lane-{i}", daemon=True)
        for i in range(lanes)
    ]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.5)
                if not daemon.alive():
                    raise RuntimeError(f"the daemon exited:\n{daemon.tail()}")
    finally:
        stop.set()
    result: dict[str, Any] = {"trials": len(latencies), "missed": missed, "lanes": lanes}
    if latencies:
        result.update(
            median_s=r3(statistics.median(latencies)),
            p95_s=r3(percentile(latencies, 0.95)),
            max_s=r3(max(latencies)),
            min_s=r3(min(latencies)),
            latencies_s=[r3(x) for x in sorted(latencies)],
        )
    return result


# --- report ------------------------------------------------------------------------------------


def fmt(value: Any, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def table(results: Sequence[dict[str, Any]]) -> str:
    header = (
        "rules",
        "tick s",
        "bare s",
        "ratio",
        "react med s",
        "react p95 s",
        "RSS MiB",
        "CPU s/tick",
        "reads/rule/tick",
        "writes/tick",
        "start-up s",
    )
    rows = []
    for r in results:
        reaction = r.get("reaction") or {}
        rows.append(
            (
                str(r["rules"]),
                fmt(r.get("tick_s")),
                fmt(r.get("bare_s")),
                fmt(r.get("ratio"), ".2f"),
                fmt(reaction.get("median_s"), ".2f"),
                fmt(reaction.get("p95_s"), ".2f"),
                fmt(r.get("rss_mib"), ".1f"),
                fmt(r.get("cpu_s_per_tick")),
                fmt(r.get("reads_per_rule_per_tick"), ".2f"),
                fmt(r.get("writes_per_tick"), ".2f"),
                fmt(r.get("startup_first_decision_s", r.get("startup_rules_loaded_s")), ".2f"),
            )
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        lines.append("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")
    return "\n".join(lines)


def targets(results: Sequence[dict[str, Any]], interval: float) -> list[dict[str, Any]]:
    """Each target of issue 6 at the largest N measured: met, or missed by how much."""
    measured = [r for r in results if r["rules"] > 0]
    if not measured:
        return []
    top = max(measured, key=lambda r: r["rules"])
    checks = []

    def check(name: str, value: float | None, limit: float, unit: str) -> None:
        if value is None:
            return
        met = value <= limit
        over = f"{value - limit:.3g}" + (f" {unit}" if unit else "")
        relative = f" ({value / limit - 1:.0%})" if limit else ""
        missed_by = None if met else over + relative
        checks.append(
            {"target": name, "value": value, "limit": limit, "met": met, "missed_by": missed_by}
        )

    n = top["rules"]
    check(f"tick/bare ratio at {n} rules", top.get("ratio"), TARGET_RATIO, "")
    check(f"tick at {n} rules within the interval", top.get("tick_max_s"), interval, "s")
    for r in measured:
        reaction = r.get("reaction") or {}
        check(
            f"reaction p95 at {r['rules']} rules",
            reaction.get("p95_s"),
            interval + TARGET_REACTION_SLACK,
            "s",
        )
    check(f"RSS at {n} rules", top.get("rss_mib"), TARGET_RSS_MIB, "MiB")
    check(f"writes per quiet tick at {n} rules", top.get("writes_per_tick"), 0, "")
    check(f"start-up to first decision at {n} rules", top.get("startup_first_decision_s"),
          TARGET_STARTUP_S, "s")  # fmt: skip
    return checks


def git_state(options: argparse.Namespace) -> dict[str, Any]:
    """Which code the daemon ran: a revision, or this work tree and its uncommitted changes."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    if options.daemon_ref:
        return {"commit": git("rev-parse", options.daemon_ref), "modified": []}
    if options.daemon_root != REPO_ROOT:
        return {"root": str(options.daemon_root)}
    changed = git("status", "--porcelain", "--", "autoscaler.py", "eventscaler", "requirements.txt")
    return {
        "commit": git("rev-parse", "HEAD"),
        "modified": [line[3:] for line in changed.splitlines()],
    }


# --- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--rules", default="10,100,1000", help="rule counts (default 10,100,1000)")
    parser.add_argument(
        "--duration",
        type=float,
        default=30.0,
        help="seconds of the quiet phase per rule count (default 30; the issue's "
        "'RSS after 10 minutes' is --duration 600)",
    )
    parser.add_argument(
        "--trials",
        type=int,
        default=20,
        help="reaction trials per rule count (default 20; 0: none)",
    )
    parser.add_argument("--lanes", type=int, default=4, help="reaction trials at once (default 4)")
    parser.add_argument("--flood", type=int, default=10, help="messages per flood (default 10)")
    parser.add_argument(
        "--interval",
        type=float,
        default=5.0,
        help="pollingInterval of every rule, seconds (default 5)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=16,
        help="the daemon's --workers, and the bare queries' concurrency "
        "(default 16, the daemon's default)",
    )
    parser.add_argument(
        "--bare-rounds",
        type=int,
        default=3,
        help="bare-query rounds before the daemon runs; one fewer after",
    )
    parser.add_argument(
        "--unrelated",
        type=int,
        default=5000,
        help="unrelated Deployments for the cluster-size check (0: skip it)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the daemon during the quiet phase of the largest N, and time its imports",
    )
    parser.add_argument(
        "--profile-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "eventscaler-bench",
        help="where py-spy's raw stacks go (default: the temp dir)",
    )
    parser.add_argument(
        "--daemon-root",
        type=Path,
        default=REPO_ROOT,
        help="the checkout whose autoscaler.py runs (default: this one, as it is)",
    )
    parser.add_argument(
        "--daemon-ref",
        metavar="REV",
        help="run the daemon of this git revision instead (a `git archive` copy in a temp dir): "
        "measures committed code whatever the work tree holds",
    )
    parser.add_argument(
        "--daemon-env",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="extra environment of the daemon, e.g. MALLOC_ARENA_MAX=2 (repeatable)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=REPO_ROOT / "bench" / "results.json",
        help="where the results go (default bench/results.json)",
    )
    parser.add_argument(
        "--daemon-log-level",
        default="INFO",
        choices=("INFO", "DEBUG"),
        help="the daemon's log level (default INFO, as in production); DEBUG also times ticks "
        "from its decision lines, the only clock when it reads no API per tick",
    )
    parser.add_argument("--seed", type=int, default=6, help="random seed of the flood moments")
    options = parser.parse_args(argv)
    try:
        options.rule_counts = sorted({int(x) for x in options.rules.split(",") if x.strip()})
    except ValueError:
        parser.error(f"--rules: expected comma-separated numbers, got {options.rules!r}")
    if any(n < 0 for n in options.rule_counts) or options.duration < options.interval * 2:
        parser.error("--rules must be >= 0 and --duration at least two intervals")
    options.daemon_root = options.daemon_root.resolve()
    try:
        options.extra_env = dict(item.split("=", 1) for item in options.daemon_env)
    except ValueError:
        parser.error("--daemon-env: expected NAME=VALUE")
    return options


@contextlib.contextmanager
def daemon_checkout(options: argparse.Namespace) -> Iterator[None]:
    """With --daemon-ref, point --daemon-root at an exported copy of that revision."""
    if not options.daemon_ref:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="bench-daemon-") as directory:
        archive = subprocess.run(
            ["git", "archive", "--format=tar", options.daemon_ref],
            cwd=REPO_ROOT,
            capture_output=True,
            check=True,
        )
        subprocess.run(["tar", "-x", "-C", directory], input=archive.stdout, check=True)
        options.daemon_root = Path(directory)
        yield


INTERRUPTED = threading.Event()


@contextlib.contextmanager
def interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so every `finally` stops what it started.

    Ctrl-C reaches Azurite and the daemon too: whatever fails first because they are gone is
    still reported as the interruption it is (INTERRUPTED is set).
    """

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        INTERRUPTED.set()
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, interrupt) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    options.profile_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results: list[dict[str, Any]] = []
    cluster_check: dict[str, Any] | None = None
    try:
        with interrupts_as_keyboard_interrupt(), daemon_checkout(options):
            code = git_state(options)
            results.append(measure_zero(options))
            counts = [n for n in options.rule_counts if n > 0]
            for n in counts:
                results.append(measure_rules(n, options, options.profile and n == max(counts)))
            if options.unrelated and counts:
                cluster_check = check_cluster_size(options, min(counts), results)
    except KeyboardInterrupt:
        log("interrupted: everything it started is stopped")
        return 130
    except Exception as exc:
        if INTERRUPTED.is_set():
            log("interrupted: everything it started is stopped")
            return 130
        if not isinstance(exc, (RuntimeError, OSError, subprocess.SubprocessError)):
            traceback.print_exc()  # a bug of the benchmark: the whole story
        log(f"failed: {exc}")
        log("everything it started is stopped")
        return 1
    report = {
        "settings": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(options).items()
            if k not in ("rules",)
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "code": code,
        "wall_s": r3(time.monotonic() - started),
        "results": [{k: v for k, v in r.items() if not k.startswith("_")} for r in results],
        "cluster_size_check": cluster_check,
        "targets": targets(results, options.interval),
    }
    options.json.parent.mkdir(parents=True, exist_ok=True)
    options.json.write_text(json.dumps(report, indent=2) + "\n")
    print(render(report))
    print(f"\nJSON: {options.json}")
    return 0


def check_cluster_size(
    options: argparse.Namespace, count: int, results: list[dict[str, Any]]
) -> dict[str, Any]:
    """The same rules in a cluster with many more Deployments: RSS compared at the same age."""
    baseline = next(r for r in results if r["rules"] == count)
    crowded = measure_rules(count, options, False, unrelated=options.unrelated)
    age = min(crowded["age_s"], baseline["age_s"])
    rss_base = baseline["_sampler"].rss_at_age("daemon", baseline["_started"], age)
    rss_crowd = crowded["_sampler"].rss_at_age("daemon", crowded["_started"], age)
    return {
        "rules": count,
        "unrelated_deployments": options.unrelated,
        "age_s": r3(age),
        "rss_mib_without": r3(rss_base / MIB) if rss_base else None,
        "rss_mib_with": r3(rss_crowd / MIB) if rss_crowd else None,
        "reads_per_rule_per_tick_with": crowded.get("reads_per_rule_per_tick"),
        "requests_with": crowded.get("requests_in_quiet_cycles"),
        "daemon_problem_lines_with": crowded.get("daemon_problem_lines"),
    }


def render(report: dict[str, Any]) -> str:
    lines = [table(report["results"])]
    loads = [r["background_cpu_cores"] for r in report["results"] if "background_cpu_cores" in r]
    if loads:
        lines.append(
            f"\nother processes used {min(loads):.2f}-{max(loads):.2f} of the "
            f"{report['machine']['cpus']} cores during the quiet phases (their load slows ticks "
            "and bare queries alike; compare CPU s/tick and RSS between runs)"
        )
    check = report.get("cluster_size_check")
    if check:
        lines.append(
            f"\ncluster size: {check['rules']} rules, RSS at {check['age_s']:.0f} s: "
            f"{fmt(check['rss_mib_without'], '.1f')} MiB with only the rules' Deployments, "
            f"{fmt(check['rss_mib_with'], '.1f')} MiB with {check['unrelated_deployments']} "
            "unrelated Deployments more"
        )
    top = [r for r in report["results"] if "profile" in r]
    for r in top:
        p = r["profile"]
        lines.append(f"\nprofile at {r['rules']} rules ({p['samples']} samples, {p['file']}):")
        for a in p["activities"]:
            lines.append(f"  {a['share']:6.1%}  {a['what']}")
    lines.append("\ntargets:")
    for t in report["targets"]:
        verdict = "met" if t["met"] else f"MISSED by {t['missed_by']}"
        lines.append(f"  {t['target']}: {t['value']} (limit {t['limit']}): {verdict}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
