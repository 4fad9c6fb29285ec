"""Run the real daemon (`python autoscaler.py ...`) as a child process and read its logs."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.support.waiting import WAIT_SCALE

REPO_ROOT = Path(__file__).resolve().parents[2]
SCALED = re.compile(r"(\S+/\S+): scaled (\d+) -> (\d+)")


class DaemonProcess:
    """The autoscaler in its own process, its output collected line by line."""

    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.args = [sys.executable, str(REPO_ROOT / "autoscaler.py"), *args]
        self._env = {**os.environ, **(env or {})}
        self._env.pop("KUBECONFIG", None)  # never fall back to a developer's own cluster
        # The health port defaults to 8080: a test that does not choose one gets a free port, so
        # two daemons (two tests, or this suite beside another process) never collide.
        self._env.setdefault("AUTOSCALER_HEALTH_PORT", "0")
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> DaemonProcess:
        assert self.process is None, "this daemon was already started"
        self.process = subprocess.Popen(
            self.args,
            cwd=REPO_ROOT,
            env=self._env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._collector = threading.Thread(target=self._collect, daemon=True)
        self._collector.start()
        return self

    def _collect(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            with self._lock:
                self._lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        with self._lock:
            return "\n".join(self._lines)

    def scale_lines(self) -> list[tuple[str, int, int]]:
        """Every `scaled A -> B` the daemon logged, as (namespace/name, A, B)."""
        return [(m[1], int(m[2]), int(m[3])) for m in SCALED.finditer(self.output)]

    def assert_scale_lines(
        self, expected: list[tuple[str, int, int]], timeout: float = 10.0
    ) -> None:
        """The daemon logged exactly these writes. Waits for them first: the target shows a write
        a moment before the daemon's line about it reaches this process."""
        assert self.wait_scale_lines(len(expected), timeout) == expected, self.output

    def wait_scale_lines(self, count: int, timeout: float = 10.0) -> list[tuple[str, int, int]]:
        """The daemon's scale lines once there are `count` of them (or the timeout passed)."""
        deadline = time.monotonic() + timeout * WAIT_SCALE
        while len(self.scale_lines()) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.scale_lines()

    def wait_for_output(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout * WAIT_SCALE
        while time.monotonic() < deadline:
            match = re.search(pattern, self.output)
            if match:
                return match
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"daemon never logged {pattern!r}; output:\n{self.output}")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait; returns the exit code (killing it if it overstays)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        timeout *= WAIT_SCALE  # a busy machine: a prompt stop still returns at once
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGUSR1)  # every thread's stack into the output
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(2)
            self.process.kill()
            self.process.wait()
            self._collector.join(10)  # the stacks dumped, read to the end
            raise AssertionError(f"daemon ignored SIGTERM for {timeout}s:\n{self.output}") from None

    def wait(self, timeout: float = 60.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def __enter__(self) -> DaemonProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def run_command(
    args: Sequence[str], env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python autoscaler.py ARGS` to completion (validate, --once...)."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("KUBECONFIG", None)
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "autoscaler.py"), *args],
        cwd=REPO_ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
