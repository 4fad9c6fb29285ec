"""A small real HTTP(S) server on 127.0.0.1 for the metrics-api source: the test sets its answer.

It serves one answer (body, content type, status) on every path, optionally only to requests
that carry the credential it expects (a header, or a query parameter), else 401. It keeps a log
of the requests it received (path, query, headers). `stop()` then `start()` (or `restart()`)
serve again on the same port, so a test can take it down mid-run. With `tls`, it speaks HTTPS
with a throwaway CA-signed certificate for 127.0.0.1 (tests/support/kubeapi_tls.py).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

HOST = "127.0.0.1"


@dataclass
class Answer:
    body: bytes = b"{}"
    content_type: str = "application/json"
    status: int = 200


@dataclass
class Seen:
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class _State:
    answer: Answer = field(default_factory=Answer)
    # None: anyone may read; else the request must pass this check, or get 401.
    authorized: Callable[[Seen], bool] | None = None
    requests: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        parts = urlsplit(self.path)
        seen = Seen(parts.path, dict(parse_qsl(parts.query)), dict(self.headers.items()))
        state = self.server.state
        with state.lock:
            state.requests.append(seen)
            answer, check = state.answer, state.authorized
        if check is not None and not check(seen):
            answer = Answer(b'{"error": "unauthorized"}', "application/json", 401)
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Quiet: the request log is the state's."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    state: _State

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.open_connections: set[socket.socket] = set()

    def process_request(self, request: Any, client_address: Any) -> None:
        self.open_connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.open_connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """A stopped server keeps no kept-alive connection serving: close them all."""
        for connection in list(self.open_connections):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()


class MetricsApiServer:
    """The server; a context manager whose exit stops it. A subclass may serve another `handler`
    (whose `self.server.state` is the subclass's `state`)."""

    handler: type[BaseHTTPRequestHandler] = _Handler

    def __init__(self, tls_dir: Path | None = None) -> None:
        self.state: Any = _State()
        self._tls_dir = tls_dir
        self._context: ssl.SSLContext | None = None
        self.ca_pem: bytes | None = None
        self._port = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        server = _Server((HOST, self._port), self.handler)
        server.state = self.state
        if self._tls_dir is not None:
            server.socket = self._tls_context().wrap_socket(server.socket, server_side=True)
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.drop_connections()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def restart(self) -> Self:
        self.stop()
        return self.start()

    def _tls_context(self) -> ssl.SSLContext:
        if self._context is None:
            from tests.support.kubeapi_tls import generate_tls_material

            assert self._tls_dir is not None
            material = generate_tls_material(self._tls_dir)
            self.ca_pem = material.ca_pem
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(material.cert_path, material.key_path)
            self._context = context
        return self._context

    @property
    def port(self) -> int:
        return self._port

    def url(self, path: str = "/metrics") -> str:
        scheme = "https" if self._tls_dir is not None else "http"
        return f"{scheme}://{HOST}:{self._port}{path}"

    def answer(
        self, body: str | bytes, content_type: str = "application/json", status: int = 200
    ) -> None:
        data = body.encode() if isinstance(body, str) else body
        with self.state.lock:
            self.state.answer = Answer(data, content_type, status)

    def require(self, check: Callable[[Seen], bool] | None) -> None:
        with self.state.lock:
            self.state.authorized = check

    @property
    def requests(self) -> list[Seen]:
        with self.state.lock:
            return list(self.state.requests)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
