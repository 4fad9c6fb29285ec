"""`make bench`: how lean and how fast the real daemon is, against the Kubernetes API test server
and each source's server (Azurite for azure-queue), as rules grow. See docs/performance.md.

1. `run --once --dry-run` with one rule, `--once-runs` times: CPU seconds of the whole process.
2. The idle daemon (0 rules): RSS and its peak (VmHWM), the time to load the rule file.
3. For each rule count N (`--rules`, default 10,100,1000), a fresh test server and Azurite, N
   queues, N Deployments at 0 and N rules (one of each, pollingInterval 5 s), then:
   - the bare reads: N `get_queue_properties` of a tuned SDK client on `--workers` threads, in a
     child process of their own (bench/bare.py), before the daemon starts and after it stops;
   - the real daemon, `python autoscaler.py run`, started like an operator would;
   - start-up: to its first decision (its first target read) and until every rule has decided;
   - the quiet phase (`--duration`; at the largest N until the daemon is 60 s old): the daemon's
     CPU per interval over the bare reads' CPU, API reads and writes per tick from the test
     server's request log; then VmHWM;
   - at the largest N, the mass event: one message into each of the N empty queues, until every
     Deployment is scaled, against the same work done bare (N reads and N scale patches on
     `--workers` threads, bench/bare.py);
   - reaction trials (`--trials`): a queue flooded at a random moment, until its scale write.
4. Per source (`--sources`): CPU ms per rule-tick against its bare call's CPU ms (azure-queue's
   row is the largest N's run; bench/sources.py is the hook for the others).
5. The cluster-size check: the smallest N again, with `--unrelated` more Deployments in the rules'
   namespace; the daemon's RSS must not change.
6. One reading per source (`--readings`, on by default; `--no-readings` skips it): for every
   source type, its real server on 127.0.0.1, the CPU of one reading through the daemon's reader
   against one bare call of the same client library (bench/readings.py, in a child process).

Prints the tables and each target's verdict, and writes everything as JSON (`--json`, default
bench/results.json). Everything it starts is stopped on exit, on failure and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import random
import re
import resource
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

from bench import all_types, profile
from bench.bare import run_bare
from bench.daemon import DaemonRun, RequestCollector, polling_cycles
from bench.kubeproc import KubeServerProcess
from bench.procstat import (
    MIB,
    Sampler,
    read_cpu_seconds,
    read_memory_parts,
    read_rss_bytes,
    read_system_busy_seconds,
)
from bench.readings import render_json_rows
from bench.sources import BENCH_SOURCES, BenchSource

REPO_ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "bench"
ZERO_RULES_SECONDS = 10.0  # the idle daemon: long enough for two reload checks
CLUSTER_CHECK_SECONDS = 20.0
HWM_AGE_SECONDS = 60.0  # issue 12: peak RSS of the daemon with 1,000 rules after 60 s
EVENTS_DRAIN_SECONDS = 60.0

# Targets of issue 12 (and those of issue 6 that still apply).
TARGET_ONCE_CPU_S = 0.8
TARGET_CPU_RATIO = 1.1
TARGET_HWM_MIB = 72
TARGET_IDLE_HWM_MIB = 56
TARGET_MASS_FACTOR = 1.5  # mass event <= one interval + this x the bare work
TARGET_REACTION_SLACK = 0.5  # reaction <= pollingInterval + this
TARGET_STARTUP_S = 2.0


def log(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def rule_names(count: int) -> list[str]:
    return [f"bench-{i:04d}" for i in range(count)]


def write_rules(
    path: Path, names: Sequence[str], interval: float, sources: Sequence[BenchSource]
) -> Path:
    """N rules, one Deployment each; the sources take turns (one source: all of them)."""
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
                "triggers": [sources[i % len(sources)].trigger(name)],
            }
            for i, name in enumerate(names)
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


def mib(value: int | None) -> float | None:
    return None if not value else r3(value / MIB)


class Stage:
    """The test server, the sources' servers and a scratch directory for one measurement."""

    def __init__(
        self, stack: contextlib.ExitStack, workers: int, sources: Sequence[BenchSource]
    ) -> None:
        self.workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        self.kube = stack.enter_context(KubeServerProcess(tls=True, controller_delay=0.5))
        self.kubeconfig = self.kube.write_kubeconfig(self.workdir / "kubeconfig")
        self.sources = list(sources)
        for source in self.sources:
            source.start(stack, workers)

    def env(self) -> dict[str, str]:
        return {k: v for source in self.sources for k, v in source.env().items()}

    def pids(self) -> dict[str, int]:
        pids = {"kubeapi": self.kube.pid}
        for source in self.sources:
            pids.update(source.pids())
        return pids

    def daemon(
        self,
        options: argparse.Namespace,
        args: Sequence[str],
        stack: contextlib.ExitStack,
    ) -> DaemonRun:
        run = DaemonRun(
            options.daemon_root,
            ["run", *args, "--kubeconfig", str(self.kubeconfig), *options.daemon_args],
            {**self.env(), **options.extra_env},
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


def new_sources(options: argparse.Namespace) -> list[BenchSource]:
    return [BENCH_SOURCES[name]() for name in options.sources]


# --- 1. run --once --dry-run -----------------------------------------------------------------


def measure_once_cpu(options: argparse.Namespace) -> dict[str, Any]:
    """CPU seconds (user + system) of whole `run --once --dry-run` processes with one rule."""
    log(f"run --once --dry-run, 1 rule, {options.once_runs} runs")
    with contextlib.ExitStack() as stack:
        source = BENCH_SOURCES[options.sources[0]]()
        stage = Stage(stack, options.workers, [source])
        source.create(["once"])
        stage.kube.create_deployments(NAMESPACE, ["once"], 0)
        rules = write_rules(stage.workdir / "once.yaml", ["once"], options.interval, [source])
        args = [
            sys.executable,
            str(options.daemon_root / "autoscaler.py"),
            "run",
            "--once",
            "--dry-run",
            "--config",
            str(rules),
            "--kubeconfig",
            str(stage.kubeconfig),
            "--health-port",
            "-1",
        ]
        env = {**os.environ, **stage.env(), **options.extra_env}
        env.pop("KUBECONFIG", None)
        cpu, wall = [], []
        for _ in range(options.once_runs):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.monotonic()
            done = subprocess.run(
                args, cwd=options.daemon_root, env=env, capture_output=True, text=True, timeout=120
            )
            wall.append(time.monotonic() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if done.returncode != 0:
                raise RuntimeError(f"run --once failed ({done.returncode}):\n{done.stderr[-2000:]}")
            cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    result = {
        "runs": len(cpu),
        "cpu_s": r3(statistics.median(cpu)),
        "cpu_runs_s": [r3(c) for c in cpu],
        "wall_s": r3(statistics.median(wall)),
    }
    log(f"run --once --dry-run: {result['cpu_s']} CPU s (median), {result['wall_s']} s wall")
    return result


# --- 2. the idle daemon --------------------------------------------------------------------------


def measure_zero(options: argparse.Namespace) -> dict[str, Any]:
    log("0 rules: idle daemon")
    with contextlib.ExitStack() as stack:
        stage = Stage(stack, options.workers, [])
        rules = write_rules(stage.workdir / "rules.yaml", [], options.interval, [])
        daemon = stage.daemon(options, ["--config", str(rules), "--health-port", "-1"], stack)
        loaded = wait_until(
            lambda: daemon.first_line_time("loaded"), 60, "the rule file to load", daemon
        )
        time.sleep(ZERO_RULES_SECONDS)
        result: dict[str, Any] = {
            "rules": 0,
            "rss_mib": mib(read_rss_bytes(daemon.pid)),
            "hwm_mib": mib(read_rss_bytes(daemon.pid, "VmHWM")),
            "cpu_s_total": r3(read_cpu_seconds(daemon.pid)),
            "startup_rules_loaded_s": r3(loaded - daemon.started),
            "age_s": r3(time.time() - daemon.started),
        }
        daemon.stop()
        if options.profile:
            result["import_profile"] = profile_imports(options, stage, rules)
    return result


def profile_imports(options: argparse.Namespace, stage: Stage, rules: Path) -> dict[str, Any]:
    """`python -X importtime` on a `--once` run of an empty rule file: the run path's imports."""
    env = {**os.environ, **stage.env()}
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


# --- 3. N rules ----------------------------------------------------------------------------------


class RuleRun:
    """One rule count's measurement: set-up, bare work, the daemon's phases, the figures."""

    def __init__(
        self,
        count: int,
        options: argparse.Namespace,
        stack: contextlib.ExitStack,
        sources: Sequence[BenchSource],
        unrelated: int = 0,
    ) -> None:
        self.count, self.options, self.stack, self.unrelated = count, options, stack, unrelated
        self.names = rule_names(count)
        self.label = f"{count} rules" + (
            f" + {unrelated} unrelated Deployments" if unrelated else ""
        )
        self.result: dict[str, Any] = {
            "rules": count,
            "unrelated_deployments": unrelated,
            "sources": [s.type for s in sources],
        }
        log(f"{self.label}: setting up")
        self.stage = Stage(stack, options.workers, sources)
        self.source = self.stage.sources[0]
        for i, source in enumerate(self.stage.sources):
            source.create(self.names[i :: len(self.stage.sources)])
        self.stage.kube.create_deployments(NAMESPACE, self.names, 0)
        # In the rules' own namespace: the worst case for a daemon that lists or watches it.
        for start in range(0, unrelated, 1000):
            batch = [f"unrelated-{i:05d}" for i in range(start, min(unrelated, start + 1000))]
            self.stage.kube.create_deployments(NAMESPACE, batch, 1)
        self.rules = write_rules(
            self.stage.workdir / "rules.yaml", self.names, options.interval, self.stage.sources
        )
        self.bare_reads: list[dict[str, Any]] = []

    # -- bare work --------------------------------------------------------------------------

    def measure_bare_reads(self, rounds: int) -> None:
        if len(self.stage.sources) != 1:
            return  # a mixed run has no single bare call to compare with
        bare = run_bare(self.source, self.names, self.stage.workdir, self.options.workers, rounds)
        self.bare_reads.append(bare)
        log(
            f"{self.label}: bare reads {bare['median_s']:.3f} s a round, "
            f"{bare['cpu_s_per_call'] * 1000:.3f} CPU ms a call"
        )

    def measure_bare_mass(self) -> dict[str, Any]:
        """N reads + N scale patches, bare; the Deployments then go back to 0 (not logged)."""
        scale = (self.stage.kubeconfig, NAMESPACE, 1)
        bare = run_bare(self.source, self.names, self.stage.workdir, self.options.workers, 1, scale)
        self.stage.kube.set_replicas_many(NAMESPACE, self.names, 0)
        log(f"{self.label}: bare mass work (reads + scale patches) {bare['wall_s']:.2f} s")
        return bare

    # -- the daemon ---------------------------------------------------------------------------

    def start_daemon(self) -> None:
        self.stage.kube.drain()  # the set-up's and the bare work's requests are not the daemon's
        self.collector = RequestCollector(self.stage.kube).start()
        self.stack.callback(self.collector.stop)
        args = [
            "--config",
            str(self.rules),
            "--workers",
            str(self.options.workers),
            "--health-port",
            "-1",
            "--log-level",
            self.options.daemon_log_level,
        ]
        self.daemon = self.stage.daemon(self.options, args, self.stack)
        self.sampler = Sampler({"daemon": self.daemon.pid, **self.stage.pids()}).start()
        self.stack.callback(self.sampler.stop)

        def first_tick_done() -> float | None:
            gets = self.collector.all_gets()
            if len(gets) >= self.count and all(gets.get(n) for n in self.names):
                return max(times[0] for times in gets.values())
            return None

        done = wait_until(first_tick_done, 120, "every rule's first decision", self.daemon)
        first = min(times[0] for times in self.collector.all_gets().values())
        loaded = self.daemon.first_line_time("loaded") or 0.0
        self.result.update(
            startup_first_decision_s=r3(first - self.daemon.started),
            startup_first_tick_done_s=r3(done - self.daemon.started),
            startup_rules_loaded_s=r3(loaded - self.daemon.started),
        )
        log(
            f"{self.label}: first decision {first - self.daemon.started:.2f} s after start, "
            f"every rule's {done - self.daemon.started:.2f} s"
        )

    def quiet_phase(self, until_age: float | None, profile_this: bool) -> None:
        """Nothing changes: the CPU a steady interval costs, API reads and writes per tick."""
        options = self.options
        length = (
            options.duration if not self.unrelated else min(options.duration, CLUSTER_CHECK_SECONDS)
        )
        if until_age is not None:
            length = max(length, self.daemon.started + until_age - time.time())
        resync = self.options.resync
        if resync > 0 and not self.unrelated:
            # Whole resync periods: each holds one target read per rule, so reads and CPU per
            # tick are the steady average, not what a window happens to catch.
            length = math.ceil(max(length, resync) / resync) * resync
        spy = self._start_profile(length) if profile_this else None
        pids = {"daemon": self.daemon.pid, **self.stage.pids(), "bench": os.getpid()}
        start, cpu_start = time.time(), {k: read_cpu_seconds(p) or 0.0 for k, p in pids.items()}
        busy_start = read_system_busy_seconds()
        stop_at = time.monotonic() + length
        while time.monotonic() < stop_at:
            if not self.daemon.alive():
                raise RuntimeError(f"the daemon exited:\n{self.daemon.tail()}")
            time.sleep(0.2)
        end, cpu_end = time.time(), {k: read_cpu_seconds(p) or 0.0 for k, p in pids.items()}
        busy = read_system_busy_seconds() - busy_start
        time.sleep(0.3)  # the last requests reach the log
        self.collector.collect()
        used = {k: cpu_end[k] - cpu_start[k] for k in pids}
        intervals = (end - start) / options.interval
        self.result.update(
            quiet_s=r3(end - start),
            cpu_s_per_interval=round(used["daemon"] / intervals, 4),
            other_cpu_s_per_interval={
                k: r3(v / intervals) for k, v in used.items() if k not in ("daemon", "bench")
            },
            # Other processes on the machine (their CPU competes with ours on the same cores).
            background_cpu_cores=r3(max(0.0, busy - sum(used.values())) / (end - start)),
            hwm_mib=mib(read_rss_bytes(self.daemon.pid, "VmHWM")),
            hwm_age_s=r3(time.time() - self.daemon.started),
            # Where the resident memory is, at the same moment (docs/performance.md).
            memory_parts_mib=read_memory_parts(self.daemon.pid),
        )
        self._count_requests(start, end, intervals)
        if spy is not None:
            self._finish_profile(spy, length)

    def _count_requests(self, start: float, end: float, intervals: float) -> None:
        reads, writes, kinds = self.collector.counts_between(start, end)
        self.result.update(
            reads_per_rule_per_tick=r3(reads / (self.count * intervals)),
            writes_per_tick=r3(writes / intervals),
            requests_in_quiet_phase=kinds,
        )
        # Tick spans, when each tick reads every target (a daemon without a resync; with one, a
        # round of reads spans the rules' phases, not a tick) or from the DEBUG decision lines.
        names, interval = self.names, self.options.interval
        gets = self.collector.all_gets() if self.options.resync <= 0 else {}
        api = [
            c
            for c in polling_cycles(gets, names, interval)
            if start <= c.first and c.last <= end and c.rules == self.count
        ]
        logged = []
        if self.options.daemon_log_level == "DEBUG":
            logged = [
                c
                for c in polling_cycles(self.daemon.decision_times(), names, interval)
                if start <= c.first and c.last <= end
            ]
        clock = logged or api
        if clock:
            self.result.update(
                tick_clock="log" if logged else "api",
                tick_s=r3(statistics.median(c.span for c in clock)),
                tick_max_s=r3(max(c.span for c in clock)),
            )

    def mass_event(self, bare: dict[str, Any]) -> None:
        """One message into each empty queue; until every Deployment has been scaled."""
        log(f"{self.label}: mass event")
        sent_from, landed = self.source.one_message_each(self.names)
        deadline = 3 * self.options.interval + 120
        last = 0.0
        for name in self.names:
            written = self.collector.first_after("write", name, sent_from, deadline)
            if written is None:
                raise RuntimeError(f"mass event: {name} was not scaled:\n{self.daemon.tail()}")
            last = max(last, written)
        events = self._wait_for_events(sent_from)
        limit = self.options.interval + TARGET_MASS_FACTOR * bare["wall_s"]
        self.result["mass_event"] = {
            "sending_s": r3(landed - sent_from),
            "until_all_scaled_s": r3(last - landed),
            "from_first_send_s": r3(last - sent_from),
            "bare_work_s": r3(bare["wall_s"]),
            "bare_cpu_s": r3(bare["cpu_s"]),
            "limit_s": r3(limit),
            "events_posted": events[0],
            "events_done_after_s": r3(events[1] - landed) if events[1] else None,
            "hwm_mib_after": mib(read_rss_bytes(self.daemon.pid, "VmHWM")),
        }
        log(
            f"{self.label}: mass event: every Deployment scaled {last - landed:.2f} s after the "
            f"last message landed (bare work {bare['wall_s']:.2f} s)"
        )

    def _wait_for_events(self, since: float) -> tuple[int, float | None]:
        """SuccessfulRescale events of the mass event: how many reached the API, the last when."""
        deadline = time.monotonic() + EVENTS_DRAIN_SECONDS
        while True:
            self.collector.collect()
            times = self.collector.times_of("create", "events", since)
            if len(times) >= self.count or time.monotonic() > deadline:
                return len(times), max(times) if times else None
            time.sleep(0.5)

    def finish(self) -> dict[str, Any]:
        rss = read_rss_bytes(self.daemon.pid)
        series = self.sampler.series["daemon"]
        self.result.update(
            rss_mib=mib(rss),
            hwm_mib_end=mib(read_rss_bytes(self.daemon.pid, "VmHWM")),
            age_s=r3(time.time() - self.daemon.started),
            rss_series_mib=[
                [r3(s.time - self.daemon.started), mib(s.rss)]
                for s in series[:: max(1, len(series) // 60)]
                if s.rss
            ],
            daemon_problem_lines=self.daemon.problem_lines()[:20],
            daemon_exit_code=self.daemon.stop(),
        )
        self.sampler.stop()
        if self.bare_reads and not self.unrelated:
            self.measure_bare_reads(max(1, self.options.bare_rounds - 1))  # the daemon stopped
            self._compare_with_bare()
        self.result["_sampler"], self.result["_started"] = self.sampler, self.daemon.started
        return self.result

    def _compare_with_bare(self) -> None:
        rounds = [t for bare in self.bare_reads for t in bare["rounds_s"]]
        cpu_call = statistics.median(b["cpu_s_per_call"] for b in self.bare_reads)
        daemon_cpu = self.result.get("cpu_s_per_interval")
        self.result.update(
            bare_s=r3(statistics.median(rounds)),
            bare_rounds_s=[r3(t) for t in rounds],
            bare_single_read_s=r3(self.bare_reads[0]["single_s"]),
            bare_cpu_ms_per_call=r3(cpu_call * 1000),
            bare_cpu_s_per_interval=r3(cpu_call * self.count),
            cpu_ratio=r3(daemon_cpu / (cpu_call * self.count)) if daemon_cpu else None,
            cpu_ms_per_rule_tick=r3(daemon_cpu * 1000 / self.count) if daemon_cpu else None,
        )
        if "tick_s" in self.result:
            self.result["tick_over_bare"] = r3(self.result["tick_s"] / self.result["bare_s"])

    # -- profile ------------------------------------------------------------------------------

    def _start_profile(self, seconds: float) -> subprocess.Popen[bytes]:
        self.spy_out = self.options.profile_dir / f"profile-{self.count}-rules.txt"
        spy = profile.start_recording(self.daemon.pid, seconds, self.spy_out)
        self.stack.callback(lambda: spy.poll() is None and spy.kill())
        return spy

    def _finish_profile(self, spy: subprocess.Popen[bytes], seconds: float) -> None:
        spy.wait(seconds + 30)
        summary = profile.summarize(profile.read_collapsed(self.spy_out))
        summary.update(file=str(self.spy_out), seconds=seconds)
        self.result["profile"] = summary
        log(f"{self.label}: profile in {self.spy_out}")


def measure_rules(
    count: int,
    options: argparse.Namespace,
    largest: bool,
    sources: Sequence[BenchSource],
    unrelated: int = 0,
    trials: int | None = None,
) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        run = RuleRun(count, options, stack, sources, unrelated)
        mass_bare = None
        if not unrelated:
            run.measure_bare_reads(options.bare_rounds)
            if largest and options.mass_event:
                mass_bare = run.measure_bare_mass()
        run.start_daemon()
        run.quiet_phase(HWM_AGE_SECONDS if largest else None, options.profile and largest)
        if mass_bare is not None:
            run.mass_event(mass_bare)
        trials = options.trials if trials is None else trials
        if trials and not unrelated:
            log(f"{run.label}: {trials} reaction trials")
            run.result["reaction"] = reaction_trials(run, trials)
        result = run.finish()
    log(
        f"{run.label}: CPU {result.get('cpu_s_per_interval')} s an interval "
        f"(ratio {result.get('cpu_ratio')}), VmHWM {result.get('hwm_mib')} MiB"
    )
    return result


def reaction_trials(run: RuleRun, trials: int) -> dict[str, Any]:
    """Flood queues at random moments; time each flood to its Deployment's next scale write.

    `--lanes` trials at once, each on a rule of its own, each flood adding `--flood` messages to
    what the queue holds, so every trial asks for more replicas than the last write set: no
    reset by hand (which a daemon would only see at its next resync) is needed.
    """
    options, names = run.options, run.names
    rng = random.Random(options.seed + len(names))
    order = list(names)
    rng.shuffle(order)
    lanes = max(1, min(options.lanes, len(names), trials))
    latencies: list[float] = []
    missed: list[str] = []
    lock = threading.Lock()
    timeout = 3 * options.interval

    def lane(index: int) -> None:
        lane_rng = random.Random(options.seed * 1000 + index)
        for trial in range(index, trials, lanes):
            time.sleep(lane_rng.uniform(0, options.interval))
            name = order[trial % len(order)]
            try:
                landed = run.source.flood(name, options.flood)
            except Exception as exc:  # the source's server failed us: not the daemon's miss
                with lock:
                    missed.append(f"{name}: the flood failed: {type(exc).__name__}")
                continue
            written = run.collector.first_after("write", name, landed, timeout)
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
    for thread in threads:
        while thread.is_alive():
            thread.join(0.5)
            if not run.daemon.alive():
                raise RuntimeError(f"the daemon exited:\n{run.daemon.tail()}")
    result: dict[str, Any] = {"trials": len(latencies), "missed": missed, "lanes": lanes}
    if latencies:
        result.update(
            median_s=r3(statistics.median(latencies)),
            p95_s=r3(percentile(latencies, 0.95)),
            max_s=r3(max(latencies)),
            latencies_s=[r3(x) for x in sorted(latencies)],
        )
    return result


# --- 4 and 5: per source, cluster size ------------------------------------------------------


def measure_all_types_idle(options: argparse.Namespace) -> dict[str, Any]:
    """An idle daemon with one rule per source type (bench/all_types.py): every SDK loaded."""
    names = all_types.rule_names()
    log(f"every source type: {len(names)} rules, each on a closed port")
    with contextlib.ExitStack() as stack:
        stage = Stage(stack, options.workers, [])
        stage.kube.create_deployments(NAMESPACE, names, 0)
        rules = all_types.write_rules(stage.workdir / "rules.yaml", NAMESPACE, options.interval)
        env = {**all_types.ENV, **options.extra_env}
        options_env = argparse.Namespace(**{**vars(options), "extra_env": env})
        daemon = stage.daemon(options_env, ["--config", str(rules), "--health-port", "-1"], stack)
        wait_until(
            lambda: _failed_rules(daemon) >= len(names) - 1, 120, "every source read", daemon
        )
        time.sleep(ZERO_RULES_SECONDS)
        result = {
            "rules": len(names),
            "rss_mib": mib(read_rss_bytes(daemon.pid)),
            "hwm_mib": mib(read_rss_bytes(daemon.pid, "VmHWM")),
        }
        daemon.stop()
    return result


def _failed_rules(daemon: DaemonRun) -> int:
    """Rules whose source read failed at least once (every type but cron's, here)."""
    failed = (
        re.search(r"rule (all-[\w-]+): source read", line) for line in daemon.lines_with("all-")
    )
    return len({m[1] for m in failed if m})


def measure_sources(options: argparse.Namespace, results: list[dict[str, Any]]) -> list[Any]:
    """CPU ms per rule-tick against the bare call, per source type; the largest N's run gives
    the first source's row, the others get a run of `--source-rules` rules of their own."""
    rows = []
    top = max((r for r in results if r["rules"] > 0), key=lambda r: r["rules"], default=None)
    for name in options.sources:
        result = top if top is not None and top["sources"] == [name] else None
        if result is None:
            log(f"source {name}: {options.source_rules} rules")
            [source] = [BENCH_SOURCES[name]()]
            result = measure_rules(options.source_rules, options, False, [source], trials=0)
        rows.append(
            {
                "source": name,
                "rules": result["rules"],
                "cpu_ms_per_rule_tick": result.get("cpu_ms_per_rule_tick"),
                "bare_cpu_ms_per_call": result.get("bare_cpu_ms_per_call"),
                "cpu_ratio": result.get("cpu_ratio"),
                "hwm_mib": result.get("hwm_mib"),
            }
        )
    return rows


def measure_all_sources(options: argparse.Namespace, count: int) -> dict[str, Any] | None:
    """`count` rules spread over every source type: the memory with all their SDKs loaded."""
    if len(options.sources) < 2:
        return None
    log(f"all sources: {count} rules over {', '.join(options.sources)}")
    result = measure_rules(count, options, False, new_sources(options), trials=0)
    return {
        k: result.get(k)
        for k in ("rules", "sources", "cpu_s_per_interval", "hwm_mib", "rss_mib", "hwm_age_s")
    }


def check_cluster_size(
    options: argparse.Namespace, count: int, results: list[dict[str, Any]]
) -> dict[str, Any]:
    """The same rules in a cluster with many more Deployments: RSS compared at the same age."""
    baseline = next(r for r in results if r["rules"] == count)
    crowded = measure_rules(count, options, False, new_sources(options)[:1], options.unrelated)
    age = min(crowded["age_s"], baseline["age_s"])
    rss_base = baseline["_sampler"].rss_at_age("daemon", baseline["_started"], age)
    rss_crowd = crowded["_sampler"].rss_at_age("daemon", crowded["_started"], age)
    return {
        "rules": count,
        "unrelated_deployments": options.unrelated,
        "age_s": r3(age),
        "rss_mib_without": mib(rss_base),
        "rss_mib_with": mib(rss_crowd),
        "reads_per_rule_per_tick_with": crowded.get("reads_per_rule_per_tick"),
        "requests_with": crowded.get("requests_in_quiet_phase"),
        "daemon_problem_lines_with": crowded.get("daemon_problem_lines"),
    }


# --- report ------------------------------------------------------------------------------------


def fmt(value: Any, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        lines.append("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")
    return "\n".join(lines)


def table(results: Sequence[dict[str, Any]]) -> str:
    header = (
        "rules",
        "CPU s/interval",
        "bare CPU s",
        "CPU ratio",
        "ms/rule-tick",
        "bare ms/call",
        "reads/rule/tick",
        "writes/tick",
        "VmHWM MiB",
        "start-up s",
        "react med s",
        "react p95 s",
    )
    rows = []
    for r in results:
        reaction = r.get("reaction") or {}
        startup = r.get("startup_first_decision_s", r.get("startup_rules_loaded_s"))
        rows.append(
            (
                str(r["rules"]),
                fmt(r.get("cpu_s_per_interval")),
                fmt(r.get("bare_cpu_s_per_interval")),
                fmt(r.get("cpu_ratio"), ".2f"),
                fmt(r.get("cpu_ms_per_rule_tick")),
                fmt(r.get("bare_cpu_ms_per_call")),
                fmt(r.get("reads_per_rule_per_tick"), ".2f"),
                fmt(r.get("writes_per_tick"), ".2f"),
                fmt(r.get("hwm_mib"), ".1f"),
                fmt(startup, ".2f"),
                fmt(reaction.get("median_s"), ".2f"),
                fmt(reaction.get("p95_s"), ".2f"),
            )
        )
    return render_table(header, rows)


def source_table(rows: Sequence[dict[str, Any]]) -> str:
    header = ("source", "rules", "CPU ms/rule-tick", "bare CPU ms/call", "ratio", "VmHWM MiB")
    return render_table(
        header,
        [
            (
                r["source"],
                str(r["rules"]),
                fmt(r["cpu_ms_per_rule_tick"]),
                fmt(r["bare_cpu_ms_per_call"]),
                fmt(r["cpu_ratio"], ".2f"),
                fmt(r["hwm_mib"], ".1f"),
            )
            for r in rows
        ],
    )


def targets(report: dict[str, Any], interval: float) -> list[dict[str, Any]]:
    """Each target of issue 12 (and issue 6's that still apply): met, or missed by how much."""
    results = report["results"]
    measured = [r for r in results if r["rules"] > 0]
    checks: list[dict[str, Any]] = []

    def check(name: str, value: float | None, limit: float, unit: str = "") -> None:
        if value is None:
            return
        met = value <= limit
        over = f"{value - limit:.3g}" + (f" {unit}" if unit else "")
        relative = f" ({value / limit - 1:.0%})" if limit else ""
        checks.append(
            {
                "target": name,
                "value": value,
                "limit": r3(limit),
                "met": met,
                "missed_by": None if met else over + relative,
            }
        )

    once = report.get("once") or {}
    check("run --once --dry-run CPU, 1 rule", once.get("cpu_s"), TARGET_ONCE_CPU_S, "s")
    zero = next((r for r in results if r["rules"] == 0), {})
    check("VmHWM idle (0 rules)", zero.get("hwm_mib"), TARGET_IDLE_HWM_MIB, "MiB")
    if not measured:
        return checks
    top = max(measured, key=lambda r: r["rules"])
    n = top["rules"]
    check(
        f"CPU per interval over the bare reads at {n} rules", top.get("cpu_ratio"), TARGET_CPU_RATIO
    )
    check(
        f"VmHWM at {n} rules after {top.get('hwm_age_s') or 0:.0f} s",
        top.get("hwm_mib"),
        TARGET_HWM_MIB,
        "MiB",
    )
    mass = top.get("mass_event")
    if mass:
        check(
            f"mass event at {n} rules (one interval + {TARGET_MASS_FACTOR}x bare)",
            mass["until_all_scaled_s"],
            mass["limit_s"],
            "s",
        )
    check(f"writes per quiet tick at {n} rules", top.get("writes_per_tick"), 0)
    check(
        f"start-up to the first decision at {n} rules",
        top.get("startup_first_decision_s"),
        TARGET_STARTUP_S,
        "s",
    )
    for r in measured:
        reaction = r.get("reaction") or {}
        check(
            f"reaction p95 at {r['rules']} rules",
            reaction.get("p95_s"),
            interval + TARGET_REACTION_SLACK,
            "s",
        )
    return checks


def memory_lines(results: list[dict[str, Any]]) -> list[str]:
    """Where each measured daemon's resident memory was when its VmHWM was read."""
    lines = []
    for r in results:
        parts = r.get("memory_parts_mib")
        if parts:
            where = ", ".join(f"{key} {value:.1f}" for key, value in parts.items())
            lines.append(f"resident memory at {r['rules']} rules, MiB: {where}")
    return lines


def render(report: dict[str, Any]) -> str:
    once = report.get("once")
    lines = [table(report["results"])]
    if once:
        lines.append(
            f"\nrun --once --dry-run, 1 rule: {once['cpu_s']} CPU s (median of "
            f"{once['runs']}), {once['wall_s']} s wall"
        )
    zero = next((r for r in report["results"] if r["rules"] == 0), None)
    if zero:
        lines.append(
            f"idle daemon (0 rules): RSS {fmt(zero['rss_mib'], '.1f')} MiB, VmHWM "
            f"{fmt(zero['hwm_mib'], '.1f')} MiB"
        )
    lines.extend(memory_lines(report["results"]))
    for r in report["results"]:
        mass = r.get("mass_event")
        if mass:
            lines.append(
                f"mass event at {r['rules']} rules: every Deployment scaled "
                f"{mass['until_all_scaled_s']} s after the last message landed (sending took "
                f"{mass['sending_s']} s); bare work {mass['bare_work_s']} s; limit "
                f"{mass['limit_s']} s; {mass['events_posted']} events posted, the last "
                f"{fmt(mass['events_done_after_s'], '.1f')} s after; VmHWM after "
                f"{fmt(mass['hwm_mib_after'], '.1f')} MiB"
            )
    lines += _load_and_cluster_lines(report)
    if report.get("sources"):
        lines.append("\nper source (CPU of the daemon per rule-tick, against the bare call's):")
        lines.append(source_table(report["sources"]))
    everything = report.get("all_sources")
    lines.append(
        f"all source types loaded: {everything['rules']} rules over {everything['sources']}, "
        f"VmHWM {fmt(everything['hwm_mib'], '.1f')} MiB"
        if everything
        else "all source types loaded: one source type so far, the rows above"
    )
    idle = report.get("all_types_idle")
    if idle:
        lines.append(
            f"idle daemon with one rule per source type ({idle['rules']} types, every SDK "
            f"loaded): RSS {fmt(idle['rss_mib'], '.1f')} MiB, "
            f"VmHWM {fmt(idle['hwm_mib'], '.1f')} MiB"
        )
    if report.get("readings"):
        lines.append(
            "\none reading per source (bench/readings.py: CPU of the reading process, the "
            "server's not counted):"
        )
        lines.append(render_json_rows(report["readings"]))
    for r in [r for r in report["results"] if "profile" in r]:
        p = r["profile"]
        lines.append(f"\nprofile at {r['rules']} rules ({p['samples']} samples, {p['file']}):")
        lines += [f"  {a['share']:6.1%}  {a['what']}" for a in p["activities"]]
    lines.append("\ntargets:")
    for t in report["targets"]:
        verdict = "met" if t["met"] else f"MISSED by {t['missed_by']}"
        lines.append(f"  {t['target']}: {t['value']} (limit {t['limit']}): {verdict}")
    return "\n".join(lines)


def _load_and_cluster_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    loads = [r["background_cpu_cores"] for r in report["results"] if "background_cpu_cores" in r]
    if loads:
        lines.append(
            f"other processes used {min(loads):.2f}-{max(loads):.2f} of the "
            f"{report['machine']['cpus']} cores during the quiet phases (compare CPU figures and "
            "RSS between runs, not times)"
        )
    check = report.get("cluster_size_check")
    if check:
        lines.append(
            f"cluster size: {check['rules']} rules, RSS at {check['age_s']:.0f} s: "
            f"{fmt(check['rss_mib_without'], '.1f')} MiB with only the rules' Deployments, "
            f"{fmt(check['rss_mib_with'], '.1f')} MiB with {check['unrelated_deployments']} "
            "unrelated Deployments more"
        )
    return lines


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
    add = parser.add_argument
    add("--rules", default="10,100,1000", help="rule counts (default 10,100,1000)")
    add(
        "--duration",
        type=float,
        default=30.0,
        help="seconds of the quiet phase per rule count (default 30; at the largest count it "
        "lasts until the daemon is 60 s old)",
    )
    add("--trials", type=int, default=20, help="reaction trials per rule count (default 20)")
    add("--lanes", type=int, default=4, help="reaction trials at once (default 4)")
    add("--flood", type=int, default=10, help="messages per flood (default 10)")
    add("--interval", type=float, default=5.0, help="every rule's pollingInterval (default 5)")
    add(
        "--workers",
        type=int,
        default=16,
        help="the daemon's --workers, and the bare work's threads (default 16, the daemon's)",
    )
    add(
        "--bare-rounds",
        type=int,
        default=3,
        help="bare read rounds before the daemon runs; one fewer after",
    )
    add("--once-runs", type=int, default=7, help="`run --once --dry-run` runs (default 7)")
    add(
        "--no-mass-event",
        dest="mass_event",
        action="store_false",
        help="skip the mass event at the largest rule count",
    )
    add(
        "--sources",
        default=",".join(BENCH_SOURCES),
        help=f"source types measured (default all the bench knows: {', '.join(BENCH_SOURCES)})",
    )
    add(
        "--source-rules",
        type=int,
        default=1000,
        help="rules of each source's own run, for the sources after the first (default 1000)",
    )
    add(
        "--unrelated",
        type=int,
        default=5000,
        help="unrelated Deployments for the cluster-size check (0: skip it)",
    )
    add(
        "--profile",
        action="store_true",
        help="py-spy the daemon during the quiet phase of the largest N, and time its imports",
    )
    add(
        "--profile-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "eventscaler-bench",
        help="where py-spy's raw stacks go (default: the temp dir)",
    )
    add(
        "--daemon-root",
        type=Path,
        default=REPO_ROOT,
        help="the checkout whose autoscaler.py runs (default: this one, as it is)",
    )
    add(
        "--daemon-ref",
        metavar="REV",
        help="run the daemon of this git revision instead (a `git archive` copy in a temp dir)",
    )
    add(
        "--daemon-env",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="extra environment of the daemon, e.g. MALLOC_ARENA_MAX=2 (repeatable)",
    )
    add(
        "--daemon-arg",
        dest="daemon_args",
        metavar="ARG",
        action="append",
        default=[],
        help="an extra argument of `run` for the daemon, e.g. --daemon-arg=--target-resync=0",
    )
    add(
        "--json",
        type=Path,
        default=REPO_ROOT / "bench" / "results.json",
        help="where the results go (default bench/results.json)",
    )
    add(
        "--daemon-log-level",
        default="INFO",
        choices=("INFO", "DEBUG"),
        help="the daemon's log level (default INFO, as in production); DEBUG also times ticks "
        "from its decision lines",
    )
    add("--seed", type=int, default=6, help="random seed of the flood moments")
    add(
        "--readings",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="end with one reading per source type against its bare client call "
        "(bench/readings.py, this checkout's sources, 3-4 minutes; default on)",
    )
    add(
        "--readings-reads",
        type=int,
        default=500,
        help="readings per figure of that table (default 500, 3 rounds)",
    )
    return _checked(parser, parser.parse_args(argv))


def daemon_resync(options: argparse.Namespace) -> float:
    """The daemon's --target-resync: from --daemon-arg, its environment, or its code's default
    (0 for a daemon from before the resync: it reads its targets on every tick)."""
    args = list(options.daemon_args)
    for i, arg in enumerate(args):
        if arg.startswith("--target-resync="):
            return float(arg.split("=", 1)[1])
        if arg == "--target-resync" and i + 1 < len(args):
            return float(args[i + 1])
    if "AUTOSCALER_TARGET_RESYNC" in options.extra_env:
        return float(options.extra_env["AUTOSCALER_TARGET_RESYNC"])
    code = options.daemon_root / "eventscaler" / "target_views.py"
    found = re.search(r"^DEFAULT_RESYNC_SECONDS = ([\d.]+)", code.read_text() if code.exists()
                      else "", re.MULTILINE)  # fmt: skip
    return float(found[1]) if found else 0.0


def _checked(parser: argparse.ArgumentParser, options: argparse.Namespace) -> argparse.Namespace:
    try:
        options.rule_counts = sorted({int(x) for x in options.rules.split(",") if x.strip()})
    except ValueError:
        parser.error(f"--rules: expected comma-separated numbers, got {options.rules!r}")
    if any(n < 0 for n in options.rule_counts) or options.duration < options.interval * 2:
        parser.error("--rules must be >= 0 and --duration at least two intervals")
    options.sources = [s.strip() for s in options.sources.split(",") if s.strip()]
    unknown = [s for s in options.sources if s not in BENCH_SOURCES]
    if unknown or not options.sources:
        parser.error(f"--sources: unknown {unknown}; the bench knows {sorted(BENCH_SOURCES)}")
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


def compile_daemon(root: Path) -> None:
    """Byte-compile the daemon's code, as the image does at build time (Dockerfile): where the
    environment sets PYTHONDONTWRITEBYTECODE (as here, and in the image), every start would
    otherwise compile eventscaler from source, 0.1-0.15 s of CPU no shipped daemon pays."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "eventscaler", "autoscaler.py"],
        cwd=root,
        check=True,
    )


def measure_everything(options: argparse.Namespace) -> dict[str, Any]:
    compile_daemon(options.daemon_root)
    options.resync = daemon_resync(options)
    log(f"the daemon's target resync: {options.resync:g} s")
    report: dict[str, Any] = {"code": git_state(options)}
    if options.once_runs:
        report["once"] = measure_once_cpu(options)
    results = [measure_zero(options)]
    counts = [n for n in options.rule_counts if n > 0]
    for n in counts:
        largest = n == max(counts)
        results.append(measure_rules(n, options, largest, new_sources(options)[:1]))
    report["results"] = results
    report["sources"] = measure_sources(options, results)
    report["all_sources"] = measure_all_sources(options, max(counts, default=0) or 1000)
    report["all_types_idle"] = measure_all_types_idle(options)
    if options.unrelated and counts:
        report["cluster_size_check"] = check_cluster_size(options, min(counts), results)
    if options.readings:
        report["readings"] = measure_readings(options.readings_reads)
    return report


READINGS_STOP_SECONDS = 60.0


def measure_readings(reads: int) -> list[dict[str, Any]]:
    """bench/readings.py in a child process (its CPU is its own, none of this process's threads
    in it); its live table goes to stderr with the log, the rows come back as JSON."""
    log("one reading per source against the bare client call (bench/readings.py)")
    with tempfile.TemporaryDirectory(prefix="bench-readings-") as directory:
        out = Path(directory) / "readings.json"
        argv = [sys.executable, "-m", "bench.readings", "--reads", str(reads), "--json", str(out)]
        child = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=sys.stderr)
        try:
            code = child.wait()
        except BaseException:
            child.terminate()  # it unwinds on SIGTERM: every server it started is stopped
            try:
                child.wait(READINGS_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                child.kill()
            raise
        if not out.exists():
            raise RuntimeError(f"bench.readings failed (exit status {code}): see above")
        rows: list[dict[str, Any]] = json.loads(out.read_text())
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    options.profile_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        with interrupts_as_keyboard_interrupt(), daemon_checkout(options):
            report = measure_everything(options)
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
    report.update(
        settings={
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(options).items()
            if k != "rules"
        },
        machine={
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        wall_s=r3(time.monotonic() - started),
    )
    report["results"] = [
        {k: v for k, v in r.items() if not k.startswith("_")} for r in report["results"]
    ]
    report["targets"] = targets(report, options.interval)
    options.json.parent.mkdir(parents=True, exist_ok=True)
    options.json.write_text(json.dumps(report, indent=2) + "\n")
    print(render(report))
    print(f"\nJSON: {options.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
