"""The thread-served test servers (metrics-api's, Service Bus's stand-in), in a child process.

bench/readings.py counts this process's CPU (time.process_time): a server answering on a thread
of the same process would put its own CPU into every reading. So these two run in a spawned
child, set up there; the parent gets what a client needs (a URL, a connection string, the CA
file) and stops the child when the row is done.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import tempfile
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0


def _metrics_api(directory: Path, setup: dict[str, Any]) -> tuple[Any, dict[str, str]]:
    from tests.support.metrics_api_server import MetricsApiServer

    server = MetricsApiServer().start()
    server.answer(json.dumps(setup["body"]))
    return server, {"url": server.url(setup["path"])}


def _servicebus(directory: Path, setup: dict[str, Any]) -> tuple[Any, dict[str, str]]:
    from tests.support.servicebus_server import ServiceBusStandIn

    server = ServiceBusStandIn(directory).start()
    server.set_queue(setup["queue"], active=setup["active"])
    return server, {
        "connection_string": server.connection_string(),
        "ca_path": str(server.ca_path),
    }


STANDINS = {"metrics-api": _metrics_api, "azure-servicebus": _servicebus}


def _answer_in_one_go() -> None:
    """http.server writes an answer's headers and its body apart; with Nagle's algorithm on
    and the client's delayed ACK, 40 ms pass between them on every keep-alive request. Real
    servers send without that wait (Go's net/http sets TCP_NODELAY), and so do these here."""
    from tests.support import metrics_api_server, servicebus_server

    for handler in (metrics_api_server._Handler, servicebus_server._Handler):
        handler.disable_nagle_algorithm = True


def _serve(kind: str, directory: str, setup: dict[str, Any], pipe: Connection) -> None:
    """The child: start the server, hand over its details, serve until told (or orphaned)."""
    _answer_in_one_go()
    server, details = STANDINS[kind](Path(directory), setup)
    try:
        pipe.send(details)
        with contextlib.suppress(EOFError, OSError):
            pipe.recv()  # "stop", or EOF once the parent has gone
    finally:
        server.stop()


@contextlib.contextmanager
def standin(kind: str, **setup: Any) -> Iterator[dict[str, str]]:
    """Run the `kind` stand-in in a child process; yield its details; stop it on exit."""
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix=f"bench-{kind}-") as directory:
        ours, theirs = context.Pipe()
        child = context.Process(
            target=_serve, args=(kind, directory, setup, theirs), name=kind, daemon=True
        )
        child.start()
        theirs.close()
        try:
            if not ours.poll(START_TIMEOUT_SECONDS):
                raise RuntimeError(f"the {kind} stand-in did not start within 60 s")
            try:
                details = ours.recv()
            except EOFError:
                raise RuntimeError(f"the {kind} stand-in failed (its traceback is above)") from None
            yield details
        finally:
            with contextlib.suppress(OSError):
                ours.send("stop")
            ours.close()
            child.join(STOP_TIMEOUT_SECONDS)
            if child.is_alive():
                child.terminate()
                child.join(STOP_TIMEOUT_SECONDS)
