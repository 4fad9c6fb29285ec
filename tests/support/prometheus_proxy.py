"""A recording reverse proxy in front of the real Prometheus, for what Prometheus itself ignores.

Prometheus has no bearer tokens and no tenants: a test that must see the bearer token, the
custom headers, the `namespace` parameter or the extra query parameters a trigger sends puts
this proxy between the source and the real server. It records each request (path, query pairs,
headers) and, when `require` gave it a check, answers 401 (Prometheus' own error body shape) to
a request that fails it; every other request is forwarded and the real answer relayed as is.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Seen:
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str] = field(default_factory=dict)


class PrometheusProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.requests: list[Seen] = []
        self._check: Callable[[Seen], bool] | None = None
        self._server = ThreadingHTTPServer((HOST, 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self._server.server_address[1]}"

    def require(self, check: Callable[[Seen], bool] | None) -> None:
        self._check = check

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def __enter__(self) -> PrometheusProxy:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _handle(self, handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(handler.path)
        seen = Seen(
            parts.path,
            parse_qsl(parts.query, keep_blank_values=True),
            {k: v for k, v in handler.headers.items()},
        )
        self.requests.append(seen)
        if self._check is not None and not self._check(seen):
            body = {"status": "error", "errorType": "unauthorized", "error": "refused"}
            return 401, {"Content-Type": "application/json"}, json.dumps(body).encode()
        answer = requests.get(f"{self.upstream}{handler.path}", timeout=10)
        return answer.status_code, {"Content-Type": answer.headers["Content-Type"]}, answer.content

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                status, headers, body = proxy._handle(self)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
