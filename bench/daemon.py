"""The real daemon (`python autoscaler.py run ...`) as a child process, and what it asked the API.

Started like an operator would start it, from a rule file and a kubeconfig, at INFO level (the
production setting: DEBUG would add a formatted log line per rule per tick to the CPU measured).
Everything the benchmark learns about ticks it learns from outside: the test server's request log
and /proc.
"""

from __future__ import annotations

import bisect
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bench.kubeproc import KubeServerProcess, Request

STOP_TIMEOUT_SECONDS = 30.0
# A decision line of the text log format: `2026-11-28 04:21:41,159 DEBUG   eventscaler.engine:
# bench/bench-0001: rule bench-0001: 0 -> 0 ...` (namespace/name first, as every rule line).
DECISION_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ +eventscaler\.engine: ([\w.-]+)/([\w.-]+): rule "
)
READ_VERBS = ("get", "list", "watch")
WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")


class DaemonRun:
    """One daemon process; its output lines are kept with the time each was read."""

    def __init__(self, root: Path, args: Sequence[str], env: Mapping[str, str]) -> None:
        self.args = [sys.executable, str(root / "autoscaler.py"), *args]
        self._root = root
        self._env = {**os.environ, **env}
        self._env.pop("KUBECONFIG", None)  # never a developer's own cluster
        self.lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self.process: subprocess.Popen[str] | None = None
        self.started = 0.0

    def start(self) -> DaemonRun:
        self.started = time.time()
        self.process = subprocess.Popen(
            self.args,
            cwd=self._root,
            env=self._env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._collect, name="bench-daemon-output", daemon=True).start()
        return self

    def _collect(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            with self._lock:
                self.lines.append((time.time(), line.rstrip("\n")))

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def first_line_time(self, needle: str) -> float | None:
        with self._lock:
            return next((t for t, line in self.lines if needle in line), None)

    def decision_times(self) -> dict[str, list[float]]:
        """When each Deployment's rule decided, from the DEBUG log (the log's own timestamps,
        local time, millisecond resolution): the tick clock when no API read marks the ticks."""
        times: dict[str, list[float]] = defaultdict(list)
        with self._lock:
            lines = [line for _, line in self.lines]
        for line in lines:
            match = DECISION_LINE.match(line)
            if match:
                stamp = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                times[match[3]].append(stamp)
        return dict(times)

    def lines_with(self, needle: str) -> list[str]:
        with self._lock:
            return [line for _, line in self.lines if needle in line]

    def problem_lines(self) -> list[str]:
        with self._lock:
            return [line for _, line in self.lines if " ERROR " in line or " WARNING " in line]

    def tail(self, count: int = 20) -> str:
        with self._lock:
            return "\n".join(line for _, line in self.lines[-count:])

    def stop(self) -> int | None:
        """SIGTERM (runs in progress finish), then SIGKILL if it overstays."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT_SECONDS)
        return process.returncode

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT_SECONDS)


class RequestCollector:
    """Drains the test server's request log ten times a second; lets threads wait on it."""

    def __init__(self, kube: KubeServerProcess, interval: float = 0.1) -> None:
        self._kube = kube
        self._interval = interval
        self.requests: list[Request] = []
        self._gets: dict[str, list[float]] = defaultdict(list)
        self._writes: dict[str, list[float]] = defaultdict(list)
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-requests", daemon=True)

    def start(self) -> RequestCollector:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.collect()

    def collect(self) -> None:
        try:
            batch = self._kube.drain()
        except Exception:  # the server is stopping; the last batch is not needed
            return
        with self._changed:
            for request in sorted(batch):
                self.requests.append(request)
                if request.resource != "deployments" or not request.name:
                    continue
                if request.verb == "get":
                    self._gets[request.name].append(request.time)
                elif request.verb in WRITE_VERBS:
                    self._writes[request.name].append(request.time)
            self._changed.notify_all()

    def gets(self, name: str) -> list[float]:
        with self._changed:
            return list(self._gets.get(name, ()))

    def all_gets(self) -> dict[str, list[float]]:
        with self._changed:
            return {name: list(times) for name, times in self._gets.items()}

    def first_after(self, kind: str, name: str, after: float, timeout: float) -> float | None:
        """Time of the first GET (`kind` "get") or write ("write") of Deployment `name` after
        `after`, waiting up to `timeout` seconds for it."""
        index = self._gets if kind == "get" else self._writes
        deadline = time.monotonic() + timeout

        def found() -> float | None:
            times = index.get(name, [])
            i = bisect.bisect_right(times, after)
            return times[i] if i < len(times) else None

        with self._changed:
            while True:
                value = found()
                remaining = deadline - time.monotonic()
                if value is not None or remaining <= 0 or self._stop.is_set():
                    return value
                self._changed.wait(min(remaining, 0.5))

    def times_of(self, verb: str, resource: str, since: float) -> list[float]:
        """Arrival times of the `verb` requests on `resource` (any name) since `since`."""
        with self._changed:
            return [
                r.time
                for r in self.requests
                if r.verb == verb and r.resource == resource and r.time >= since
            ]

    def counts_between(self, start: float, end: float) -> tuple[int, int, dict[str, int]]:
        """(reads, writes, {"VERB resource[/sub]": n}) of the requests in [start, end]."""
        reads = writes = 0
        kinds: dict[str, int] = defaultdict(int)
        with self._changed:
            for request in self.requests:
                if not start <= request.time <= end:
                    continue
                reads += request.verb in READ_VERBS
                writes += request.verb in WRITE_VERBS
                what = request.resource or "(non-resource)"
                if request.subresource:
                    what += "/" + request.subresource
                kinds[f"{request.verb} {what}"] += 1
        return reads, writes, dict(kinds)


@dataclass(frozen=True)
class Cycle:
    """One polling cycle as the API server saw it: the first and last Deployment read."""

    first: float
    last: float
    rules: int

    @property
    def span(self) -> float:
        return self.last - self.first


def polling_cycles(gets: Mapping[str, Sequence[float]], names: Sequence[str], interval: float):
    """Group each rule's Deployment reads into ticks, then line the rules' ticks up.

    A rule's reads closer together than half an interval belong to one tick of that rule (should a
    tick read more than once); the k-th tick of every rule forms cycle k. Rules whose reads are
    missing are not counted in a cycle, which then shows fewer `rules`.
    """
    runs: dict[str, list[tuple[float, float]]] = {}
    for name in names:
        grouped: list[tuple[float, float]] = []
        for t in sorted(gets.get(name, ())):
            if grouped and t - grouped[-1][1] < interval / 2:
                grouped[-1] = (grouped[-1][0], t)
            else:
                grouped.append((t, t))
        runs[name] = grouped
    count = max((len(r) for r in runs.values()), default=0)
    cycles = []
    for k in range(count):
        ticks = [r[k] for r in runs.values() if len(r) > k]
        cycles.append(Cycle(min(t[0] for t in ticks), max(t[1] for t in ticks), len(ticks)))
    return cycles
