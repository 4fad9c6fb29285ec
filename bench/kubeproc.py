"""The Kubernetes API test server in a child process of its own.

In its own process the server neither shares a GIL with the benchmark's own threads (bare queries,
floods) nor hides its CPU time in theirs: /proc/PID/stat of the child is the server's cost alone.
The parent drives it through a pipe; the child stops serving when told to or when the pipe closes
(the parent died), so it never outlives the benchmark.

The request log is drained (taken and cleared under the server's lock) rather than read through
`KubeApiServer.requests`, which deep-copies the whole log on every call: at 1,000 rules the log
grows by 200 entries a second and the benchmark reads it ten times a second.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NamedTuple

STOP_TIMEOUT_SECONDS = 10.0
CALL_TIMEOUT_SECONDS = 60.0  # creating thousands of Deployments takes a few seconds


class Request(NamedTuple):
    """One request the server answered, as much of it as the benchmark needs."""

    time: float  # time.time() when the server began reading it
    method: str
    verb: str | None
    resource: str | None
    subresource: str | None
    namespace: str | None
    name: str | None
    status: int | None


class KubeServerError(RuntimeError):
    """The child failed a command, or stopped answering."""


def _serve(conn: Connection, tls: bool, controller_delay: float | None) -> None:
    """The child: run a KubeApiServer and answer commands until told to stop or orphaned."""
    # Ctrl-C reaches the whole process group; the parent decides when this child stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from tests.support.kubeapi import KubeApiServer

    server = KubeApiServer(tls=tls, controller_delay=controller_delay).start()
    front = server._front  # noqa: SLF001 - drained under its own lock, see the module docstring

    def create_deployments(namespace: str, names: list[str], replicas: int) -> int:
        for name in names:
            server.create_deployment(namespace, name, replicas)
        return len(names)

    def set_replicas(namespace: str, name: str, replicas: int) -> None:
        server.set_replicas(namespace, name, replicas)

    def set_replicas_many(namespace: str, names: list[str], replicas: int) -> int:
        for name in names:
            server.set_replicas(namespace, name, replicas)
        return len(names)

    def replicas(namespace: str, name: str) -> int:
        spec = (server.get_deployment(namespace, name) or {}).get("spec") or {}
        return int(spec.get("replicas") or 0)

    def drain() -> list[Request]:
        with front.lock:
            entries, front.requests[:] = list(front.requests), []
        return [
            Request(
                e["time"],
                e["method"],
                e["verb"],
                e["resource"],
                e["subresource"],
                e["namespace"],
                e["name"],
                e["status"],
            )
            for e in entries
        ]

    commands: dict[str, Callable[..., Any]] = {
        "url": lambda: server.url,
        "write_kubeconfig": lambda path: str(server.write_kubeconfig(path)),
        "create_deployments": create_deployments,
        "set_replicas": set_replicas,
        "set_replicas_many": set_replicas_many,
        "replicas": replicas,
        "drain": drain,
    }
    try:
        conn.send(("ok", None))
        while True:
            try:
                name, args = conn.recv()
            except (EOFError, OSError):
                return  # the parent is gone
            if name == "stop":
                return
            try:
                conn.send(("ok", commands[name](*args)))
            except Exception as exc:  # reported to the parent, which raises it there
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        server.stop()
        conn.close()


class KubeServerProcess:
    """Parent side: start the child, call its commands (thread-safe), stop it."""

    def __init__(self, tls: bool = True, controller_delay: float | None = 0.5) -> None:
        self._tls = tls
        self._controller_delay = controller_delay
        self._conn: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._lock = threading.Lock()

    def start(self) -> KubeServerProcess:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self._process = context.Process(
            target=_serve,
            args=(child, self._tls, self._controller_delay),
            name="bench-kubeapi",
            daemon=True,
        )
        self._process.start()
        child.close()
        self._conn = parent
        if not parent.poll(CALL_TIMEOUT_SECONDS):
            self.stop()
            raise KubeServerError("the Kubernetes API test server did not start")
        parent.recv()
        return self

    def stop(self) -> None:
        conn, self._conn = self._conn, None
        process, self._process = self._process, None
        if conn is not None:
            try:
                with self._lock:
                    conn.send(("stop", ()))
            except (OSError, ValueError):
                pass
            conn.close()
        if process is not None:
            process.join(STOP_TIMEOUT_SECONDS)
            if process.is_alive():
                process.kill()
                process.join(STOP_TIMEOUT_SECONDS)

    def __enter__(self) -> KubeServerProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        if self._process is None or self._process.pid is None:
            raise KubeServerError("not running")
        return self._process.pid

    def call(self, name: str, *args: Any) -> Any:
        if self._conn is None:
            raise KubeServerError("not running")
        with self._lock:
            self._conn.send((name, args))
            if not self._conn.poll(CALL_TIMEOUT_SECONDS):
                raise KubeServerError(f"no answer to {name} within {CALL_TIMEOUT_SECONDS:.0f} s")
            status, value = self._conn.recv()
        if status != "ok":
            raise KubeServerError(f"{name}: {value}")
        return value

    # Typed conveniences.
    @property
    def url(self) -> str:
        return str(self.call("url"))

    def write_kubeconfig(self, path: Path) -> Path:
        return Path(self.call("write_kubeconfig", str(path)))

    def create_deployments(self, namespace: str, names: list[str], replicas: int = 0) -> int:
        return int(self.call("create_deployments", namespace, names, replicas))

    def set_replicas(self, namespace: str, name: str, replicas: int) -> None:
        self.call("set_replicas", namespace, name, replicas)

    def set_replicas_many(self, namespace: str, names: list[str], replicas: int) -> int:
        return int(self.call("set_replicas_many", namespace, names, replicas))

    def replicas(self, namespace: str, name: str) -> int:
        return int(self.call("replicas", namespace, name))

    def drain(self) -> list[Request]:
        return [Request(*r) for r in self.call("drain")]
