"""Profiling the daemon while it runs: py-spy samples, summed up by function and by activity.

py-spy reads the daemon's memory from outside (no code change, no restart); `--nonblocking`
keeps it from pausing the daemon 100 times a second, so the figures measured meanwhile stay
close to an unprofiled run. `--gil` samples only the thread holding the GIL: the Python work that
the daemon's worker threads take turns at, which is what bounds a tick once the queue emulator
is not the bottleneck. (Without it py-spy also counts threads waiting in socket reads here, so
waiting and working could not be told apart.) Each sample is 1/RATE s of GIL time.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

RATE = 100  # samples per second

# Activities, recognised by a frame of their code anywhere in a sample's stack. A sample counts
# towards every activity its stack contains (the kubernetes client calling ssl counts in both).
ACTIVITIES = (
    ("azure queue read (azure SDK)", re.compile(r"\((azure/|eventscaler/sources/)")),
    ("kubernetes client", re.compile(r"\(kubernetes/")),
    ("HTTP (requests, urllib3, http.client)", re.compile(r"\((requests/|urllib3/|http/client)")),
    ("TLS (ssl)", re.compile(r"\(ssl\.py")),
    ("decision (policy.py)", re.compile(r"\(eventscaler/policy")),
    ("logging", re.compile(r"\(logging/")),
    # The scheduler's own work, not the rule runs it starts (every worker's stack holds those).
    (
        "scheduler (APScheduler and its lanes)",
        re.compile(r"(^|;)(RuleSchedule\.(?!_run )|\w+Scheduler\.|\w+JobStore\.|\w+Trigger\.)"),
    ),
    ("JSON", re.compile(r"\(json/")),
    ("deep copies", re.compile(r"\(copy\.py")),
)
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*)\)$")


def py_spy() -> str | None:
    """The py-spy next to this interpreter (the venv's), else on PATH."""
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def start_recording(pid: int, seconds: float, output: Path) -> subprocess.Popen[bytes]:
    binary = py_spy()
    if binary is None:
        raise RuntimeError("py-spy is not installed: .venv/bin/pip install -r requirements-dev.txt")
    return subprocess.Popen(
        [
            binary,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(seconds))),
            "--rate",
            str(RATE),
            "--format",
            "raw",
            "--nolineno",
            "--nonblocking",
            "--gil",
            "--output",
            str(output),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def read_collapsed(path: Path) -> list[tuple[list[str], int]]:
    """py-spy's raw format: one `frame;frame;...;leaf COUNT` line per distinct stack."""
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    return f"{match['function']} ({match['file']})" if match else frame


def summarize(stacks: list[tuple[list[str], int]], top: int = 15) -> dict[str, Any]:
    """Total samples, the share of each activity, and the heaviest functions (self, total)."""
    total = sum(count for _, count in stacks)
    activities: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, count in stacks:
        joined = ";".join(frames)
        for name, pattern in ACTIVITIES:
            if pattern.search(joined):
                activities[name] += count
        if frames:
            leaf[_short(frames[-1])] += count
        for frame in set(frames):
            if "(" in frame:  # skip thread names (`--threads`) and `process` roots
                inclusive[_short(frame)] += count

    def share(counter: Counter[str], limit: int) -> list[dict[str, Any]]:
        return [
            {"what": name, "samples": n, "share": round(n / total, 3) if total else 0.0}
            for name, n in counter.most_common(limit)
        ]

    return {
        "samples": total,
        "rate_hz": RATE,
        "activities": share(activities, len(ACTIVITIES)),
        "self": share(leaf, top),
        "total": share(inclusive, top * 2),
    }


def import_times(stderr_text: str, top: int = 12) -> dict[str, Any]:
    """Sum `python -X importtime` lines by top-level package (cumulative of each root import)."""
    by_package: Counter[str] = Counter()
    total_us = 0
    for line in stderr_text.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = [p.strip() for p in line[len("import time:") :].split("|")]
        if len(parts) != 3 or not parts[0].isdigit():
            continue
        self_us, _, module = int(parts[0]), int(parts[1]), parts[2]
        total_us += self_us
        by_package[module.strip().split(".")[0]] += self_us
    return {
        "total_s": round(total_us / 1e6, 3),
        "by_package_s": {name: round(us / 1e6, 3) for name, us in by_package.most_common(top)},
    }
