"""What every real test server shares: a temp dir, fixed loopback ports, processes, readiness.

A server subclass says how to prepare its temp dir once (`_prepare`), which processes to spawn
(`_launch`), when it is ready (`_is_ready`) and what to create once it first is (`_bootstrap`).
The base class keeps the ports for the life of the object, so `stop()` then `start()` (or
`restart()`) brings the server back on the same address, with the same data where the server
keeps any on disk.

Each process starts in its own session, hence its own process group, and is stopped by that
group's id: SIGTERM (or the server's gentler signal), then SIGKILL for whatever is left. The
leader is checked for exit without being reaped, so the group id cannot be reused by an
unrelated process before the last SIGKILL.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, ClassVar, Self

HOST = "127.0.0.1"
STOP_TIMEOUT_SECONDS = 20.0
READY_POLL_SECONDS = 0.2
LOG_LINES_IN_ERRORS = 40

_ports_handed_out: set[int] = set()
_live_servers: weakref.WeakSet[ServerProcess] = weakref.WeakSet()


class ServerError(RuntimeError):
    """A test server did not start, did not become ready, or exited."""


class ServerNotInstalledError(ServerError):
    """The server's program is missing: the message names the package that provides it."""


def free_port() -> int:
    """A loopback port nothing listens on now, never one this process handed out before."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((HOST, 0))
            port = probe.getsockname()[1]
        if port not in _ports_handed_out:
            _ports_handed_out.add(port)
            return port
    raise ServerError("no free loopback port found")


def port_accepts(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def running_as_root() -> bool:
    return os.geteuid() == 0


def system_user(name: str, package: str) -> pwd.struct_passwd:
    """The account a Debian package creates for its server (postgres, mysql)."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise ServerNotInstalledError(
            f"system user {name!r} is missing: install the Debian package {package} "
            "(`.ci/install-servers` installs every test server)"
        ) from None


def find_program(name: str) -> str | None:
    """`shutil.which`, also looking in the sbin dirs a non-root PATH often lacks (nats-server,
    mariadbd live in /usr/sbin)."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin"])
    return shutil.which(name, path=search)


def require_program(path: Path | str | None, package: str, what: str) -> Path:
    """The program's path, or ServerNotInstalledError naming the package to install."""
    if path is not None and Path(path).is_file() and os.access(path, os.X_OK):
        return Path(path)
    how = " (`.ci/install-servers` installs every test server)" if "Debian" in package else ""
    raise ServerNotInstalledError(
        f"{what} not found ({path or 'not on PATH'}): install {package}{how}"
    )


def wait_until(
    condition: Callable[[], bool], timeout: float, describe: str, poll: float = 0.2
) -> None:
    """Poll `condition` until true; raise TimeoutError naming `describe` at the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{describe}: not true within {timeout:.0f} s")
        time.sleep(poll)


class ServerProcess:
    """Base of the test servers; a context manager whose exit stops the server and cleans up."""

    name: ClassVar[str] = "server"
    start_timeout_seconds: ClassVar[float] = 60.0
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM

    def __init__(self) -> None:
        self._directory: Path | None = None
        self._ports: dict[str, int] = {}
        self._processes: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._prepared = False
        self._bootstrapped = False
        self.last_ready_seconds: float | None = None

    # --- what a server defines ---------------------------------------------------------------

    def _check_installed(self) -> None:
        """Raise ServerNotInstalledError naming the package when a program is missing."""

    def _prepare(self) -> None:
        """Once, before the first start: config files, an initialised data dir."""

    def _launch(self) -> None:
        """Spawn the server's processes with `_spawn`."""
        raise NotImplementedError

    def _is_ready(self) -> bool:
        """True once clients can use the server (exceptions count as not ready)."""
        raise NotImplementedError

    def _bootstrap(self) -> None:
        """Once, after the first ready: users, passwords, databases."""

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        """Start, wait until ready (or raise ServerError with the server's log), return self."""
        if self._processes:
            raise ServerError(f"{self.name} is already running")
        self._check_installed()
        began = time.monotonic()
        if not self._prepared:
            self._prepare()
            self._prepared = True
        _live_servers.add(self)
        try:
            self._launch()
            self._wait_ready()
            if not self._bootstrapped:
                self._bootstrap()
                self._bootstrapped = True
        except BaseException:
            self.stop()
            raise
        self.last_ready_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Stop every process (last started first) by its process group. Safe to call twice."""
        while self._processes:
            _, process = self._processes.pop()
            _stop_group(process, self.stop_signal)

    def restart(self) -> Self:
        """Stop, then start on the same ports and in the same temp dir."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop and remove the temp dir; the object cannot start again."""
        self.stop()
        _live_servers.discard(self)
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None
            self._prepared = False
            self._bootstrapped = False

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """Stopped inside the block, running again after it (even when the block raises)."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return bool(self._processes) and all(p.poll() is None for _, p in self._processes)

    @property
    def pids(self) -> list[int]:
        return [process.pid for _, process in self._processes]

    # --- helpers for subclasses --------------------------------------------------------------

    @property
    def directory(self) -> Path:
        """The server's temp dir (made on first use, world-traversable for postgres/mysql)."""
        if self._directory is None:
            slug = self.name.lower().replace(" ", "-")
            self._directory = Path(tempfile.mkdtemp(prefix=f"eventscaler-{slug}-"))
            self._directory.chmod(0o755)
        return self._directory

    def port(self, purpose: str = "main") -> int:
        """The port for `purpose`, chosen once and kept across restarts."""
        if purpose not in self._ports:
            self._ports[purpose] = free_port()
        return self._ports[purpose]

    def log_path(self, label: str) -> Path:
        return self.directory / f"{label}.log"

    def log_tail(self, lines: int = LOG_LINES_IN_ERRORS) -> str:
        """The last lines of every process's log, for error messages."""
        parts = []
        for path in sorted(self.directory.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(parts)

    def _spawn(
        self,
        label: str,
        argv: Sequence[object],
        env: Mapping[str, str] | None = None,
        user: pwd.struct_passwd | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start one process in its own session, output appended to `<label>.log`."""
        with self.log_path(label).open("ab") as log:
            process = subprocess.Popen(
                [str(arg) for arg in argv],
                start_new_session=True,
                **self._child_options(log, env, user),
            )
        self._processes.append((label, process))
        return process

    def _run(
        self,
        argv: Sequence[object],
        label: str,
        env: Mapping[str, str] | None = None,
        user: pwd.struct_passwd | None = None,
        timeout: float = 120.0,
    ) -> None:
        """Run a setup command to completion (initdb, install-db); ServerError if it fails."""
        with self.log_path(label).open("ab") as log:
            result = subprocess.run(
                [str(arg) for arg in argv],
                timeout=timeout,
                check=False,
                **self._child_options(log, env, user),
            )
        if result.returncode != 0:
            raise ServerError(
                f"{self.name}: {Path(str(argv[0])).name} exited with code {result.returncode}:\n"
                f"{self.log_tail()}"
            )

    def _child_options(
        self, log: IO[bytes], env: Mapping[str, str] | None, user: pwd.struct_passwd | None
    ) -> dict[str, Any]:
        """Popen options of every child: in the temp dir, no stdin, output to its log."""
        options: dict[str, Any] = {
            "cwd": self.directory,
            "env": dict(env) if env is not None else None,
            "stdin": subprocess.DEVNULL,
            "stdout": log,
            "stderr": subprocess.STDOUT,
        }
        if user is not None and running_as_root():
            # Drop root to `user`: its group only, none of root's supplementary groups.
            options.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
        return options

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_seconds
        while not self._ready_now():
            exited = [(label, p.returncode) for label, p in self._processes if p.poll() is not None]
            if exited:
                raise ServerError(f"{self.name}: {exited} exited early:\n{self.log_tail()}")
            if time.monotonic() >= deadline:
                raise ServerError(
                    f"{self.name} not ready within {self.start_timeout_seconds:.0f} s:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(READY_POLL_SECONDS)

    def _ready_now(self) -> bool:
        try:
            return self._is_ready()
        except Exception:
            return False


def _stop_group(process: subprocess.Popen[bytes], first_signal: signal.Signals) -> None:
    group = process.pid  # start_new_session made the process its group's leader
    if process.poll() is None:
        _signal_group(group, first_signal)
        if not _exited_unreaped(process.pid, STOP_TIMEOUT_SECONDS):
            _signal_group(group, signal.SIGKILL)
    # The leader is a zombie now (not reaped), so the group id is still ours: kill what is left.
    _signal_group(group, signal.SIGKILL)
    process.wait(STOP_TIMEOUT_SECONDS)


def _signal_group(group: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, sig)


def _exited_unreaped(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` for `pid` to exit, leaving it for Popen to reap."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:
            return True
        time.sleep(0.05)
    return False


@atexit.register
def _stop_leftovers() -> None:
    # A session that dies before its fixtures' teardown still leaves no server behind.
    for server in list(_live_servers):
        server.close()
