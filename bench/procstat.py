"""What /proc says about a process: resident memory and CPU time, sampled over time."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024


def read_rss_bytes(pid: int, key: str = "VmRSS") -> int | None:
    """VmRSS (or VmHWM, the peak) of a process in bytes; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024  # the kernel writes kB
    except (OSError, ValueError):
        return None
    return None


def memory_parts(smaps: str, largest: int = 4) -> dict[str, float]:
    """Resident MiB by kind from the text of /proc/PID/smaps: the `largest` mapped files by
    name, the other files, the brk heap, the main thread's stack, the other anonymous pages."""
    by_file: dict[str, int] = {}
    parts = {"heap": 0, "stack": 0, "anonymous": 0}
    name = ""
    for line in smaps.splitlines():
        head = line.split(maxsplit=5)
        if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            name = head[5] if len(head) == 6 else ""
        elif line.startswith("Rss:"):
            kib = int(line.split()[1])
            if name.startswith("/"):
                short = name.rsplit("/", 1)[-1]
                by_file[short] = by_file.get(short, 0) + kib
            elif name == "[heap]":
                parts["heap"] += kib
            elif name.startswith("[stack"):
                parts["stack"] += kib
            else:  # anonymous: Python's arenas, malloc's thread arenas, thread stacks
                parts["anonymous"] += kib
    top = sorted(by_file.items(), key=lambda item: -item[1])[:largest]
    out = {f"file {short}": kib / 1024 for short, kib in top}
    out["files, the rest"] = (sum(by_file.values()) - sum(kib for _, kib in top)) / 1024
    out.update({key: kib / 1024 for key, kib in parts.items()})
    return {key: round(value, 1) for key, value in out.items()}


def read_memory_parts(pid: int) -> dict[str, float] | None:
    """`memory_parts` of a running process; None once it is gone."""
    try:
        with open(f"/proc/{pid}/smaps", encoding="utf-8", errors="replace") as smaps:
            return memory_parts(smaps.read())
    except OSError:
        return None


def read_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (all its threads) in seconds; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            text = stat.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / CLOCK_TICKS


@dataclass
class Sample:
    time: float  # time.time()
    rss: int | None
    cpu: float | None
    hwm: int | None = None  # VmHWM: the peak RSS so far


@dataclass
class Sampler:
    """Samples RSS and CPU of some processes every `interval` seconds on a thread of its own."""

    pids: dict[str, int]
    interval: float = 1.0
    series: dict[str, list[Sample]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self.sample()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.sample()

    def sample(self) -> dict[str, Sample]:
        now = time.time()
        taken = {}
        for name, pid in self.pids.items():
            sample = Sample(
                now, read_rss_bytes(pid), read_cpu_seconds(pid), read_rss_bytes(pid, "VmHWM")
            )
            self.series.setdefault(name, []).append(sample)
            taken[name] = sample
        return taken

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def rss_at_age(self, name: str, start: float, age: float, key: str = "rss") -> int | None:
        """The last RSS (or `key` "hwm": VmHWM) sampled at most `age` seconds after `start`."""
        found = None
        for sample in self.series.get(name, []):
            if sample.time - start > age:
                break
            value = getattr(sample, key)
            if value is not None:
                found = value
        return found


def read_system_busy_seconds() -> float:
    """CPU seconds all processes on the machine spent busy since boot (all cores together)."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS
