"""Health endpoints for the kubelet: /healthz (the scheduler is alive), /readyz (rules loaded and
the API server reachable).

/healthz fails when the scheduler ran nothing for its stale period (a stuck thread pool): a
restart is then the cure. /readyz fails while no rule file could be loaded or the API server does
not answer; a restart would not help there, so it only marks the pod unready.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from eventscaler.daemon import Health

logger = logging.getLogger(__name__)

API_CHECK_TTL = 10.0  # seconds a successful API check is trusted, so probes cost one call at most


class ApiCheck:
    """Remembers the last API reachability check for API_CHECK_TTL seconds."""

    def __init__(self, check: Callable[[], None], clock: Callable[[], float] = time.monotonic):
        self._check = check
        self._clock = clock
        self._checked_at: float | None = None
        self._error: str | None = None
        self._lock = threading.Lock()

    def error(self) -> str | None:
        """None when the API answered recently, else why not."""
        with self._lock:
            now = self._clock()
            if self._checked_at is None or now - self._checked_at > API_CHECK_TTL:
                try:
                    self._check()
                    self._error = None
                except Exception as exc:
                    self._error = str(exc) or type(exc).__name__
                self._checked_at = now
            return self._error


# A route answers (status, content type, body).
Route = Callable[[], tuple[int, str, bytes]]
TEXT = "text/plain; charset=utf-8"


class HealthServer:
    """A tiny HTTP server in a background thread: /healthz, /readyz, and any extra routes
    (the daemon adds /metrics and /status)."""

    def __init__(
        self,
        host: str,
        port: int,
        health: Health,
        api: ApiCheck,
        extra_routes: Mapping[str, Route] | None = None,
    ) -> None:
        self._health = health
        self._api = api
        self._extra_routes = dict(extra_routes or {})
        handler = self._make_handler()
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        paths = " ".join(["/healthz", "/readyz", *self._extra_routes])
        logger.info("health endpoints on port %d: %s", self.port, paths)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def liveness(self) -> tuple[int, str]:
        idle = time.monotonic() - self._health.last_heartbeat
        if self._health.alive(time.monotonic()):
            return 200, "ok"
        return 503, f"scheduler idle for {idle:.0f}s (limit {self._health.stale_after:.0f}s)"

    def readiness(self) -> tuple[int, str]:
        if not self._health.rules_loaded:
            return 503, f"no rules loaded: {self._health.last_load_error or 'none yet'}"
        error = self._api.error()
        if error is not None:
            return 503, f"Kubernetes API unreachable: {error}"
        return 200, "ok"

    def _make_handler(self) -> type[BaseHTTPRequestHandler]:
        def text(check: Callable[[], tuple[int, str]]) -> Route:
            def route() -> tuple[int, str, bytes]:
                status, message = check()
                return status, TEXT, (message + "\n").encode()

            return route

        routes = {"/healthz": text(self.liveness), "/readyz": text(self.readiness)}
        routes.update(self._extra_routes)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                route = routes.get(self.path.split("?", 1)[0])
                status, content_type, body = route() if route else (404, TEXT, b"not found\n")
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # probes every few seconds would drown the decisions

        return Handler
