"""Prometheus (Debian `prometheus` 2.42) on 127.0.0.1, scraping a metrics endpoint the test owns.

`MetricsEndpoint` is a thread-served `/metrics` (Prometheus text format) whose samples the test
sets; `PrometheusServer` scrapes it every second (job `eventscaler-test`), with its TSDB in the
temp dir (kept across restarts). A test sets a value and waits until a query sees it:

    prometheus.metrics.set("jobs_backlog", 42, queue="orders")
    prometheus.wait_for_value('jobs_backlog{queue="orders"}', 42)

No authentication: Prometheus has none unless given a web config with bcrypt hashes, which
`GuardedPrometheusServer` writes (basic auth with `USERNAME` / `PASSWORD`; a wrong or missing
login gets Prometheus' own 401).
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import requests

from tests.support.servers.process import HOST, ServerProcess, find_program, require_program

PACKAGE = "the Debian package prometheus"
SCRAPE_JOB = "eventscaler-test"
SCRAPE_INTERVAL = "1s"
VALUE_TIMEOUT_SECONDS = 30.0


class MetricsEndpoint:
    """`GET /metrics` on 127.0.0.1 serving the gauges set with `set` (thread-safe)."""

    def __init__(self) -> None:
        self._samples: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((HOST, 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        self.scrapes = 0

    def start(self) -> MetricsEndpoint:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, name="metrics-endpoint", daemon=True
            )
            self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(10)
            self._thread = None
        self._server.server_close()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/metrics"

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._samples.setdefault(name, {})[_label_text(labels)] = value

    def remove(self, name: str, **labels: str) -> None:
        """Stop serving one series (or, with no labels given and none set, the whole metric)."""
        with self._lock:
            series = self._samples.get(name, {})
            series.pop(_label_text(labels), None)
            if not series:
                self._samples.pop(name, None)

    def exposition(self) -> str:
        with self._lock:
            lines = []
            for name, series in sorted(self._samples.items()):
                lines.append(f"# TYPE {name} gauge")
                lines += [f"{name}{labels} {_number(v)}" for labels, v in sorted(series.items())]
        return "\n".join(lines) + "\n"

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = endpoint.exposition().encode()
                endpoint.scrapes += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # one line a second per scrape would drown the test output

        return Handler


def _label_text(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    escaped = (
        f'{key}="{value.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for key, value in sorted(labels.items())
    )
    return "{" + ",".join(escaped) + "}"


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class PrometheusServer(ServerProcess):
    name = "Prometheus"
    start_timeout_seconds = 60.0
    login: ClassVar[tuple[str, str] | None] = None  # basic auth the server requires, if any

    def __init__(self) -> None:
        super().__init__()
        self.metrics = MetricsEndpoint().start()

    def _check_installed(self) -> None:
        self._binary = require_program(find_program("prometheus"), PACKAGE, "prometheus")

    def _prepare(self) -> None:
        (self.directory / "tsdb").mkdir()
        (self.directory / "prometheus.yml").write_text(
            "global:\n"
            f"  scrape_interval: {SCRAPE_INTERVAL}\n"
            f"  scrape_timeout: {SCRAPE_INTERVAL}\n"
            f"  evaluation_interval: {SCRAPE_INTERVAL}\n"
            "scrape_configs:\n"
            f"  - job_name: {SCRAPE_JOB}\n"
            "    static_configs:\n"
            f"      - targets: ['{HOST}:{self.metrics.port}']\n"
        )
        if self.login is not None:
            user, password = self.login
            (self.directory / "web.yml").write_text(
                f"basic_auth_users:\n  {user}: '{_bcrypt(password)}'\n"
            )

    def _launch(self) -> None:
        argv = [self._binary, f"--config.file={self.directory / 'prometheus.yml'}"]
        argv += [f"--storage.tsdb.path={self.directory / 'tsdb'}"]
        argv += [f"--web.listen-address={HOST}:{self.port()}", "--log.level=warn"]
        if self.login is not None:
            argv += [f"--web.config.file={self.directory / 'web.yml'}"]
        self._spawn("prometheus", argv)

    def _is_ready(self) -> bool:
        # Ready means scraping: the first scrape comes up to ~5 s after /-/ready (target
        # discovery is throttled), and a test's first query should not race it. The targets
        # API shows this process's own scrapes (`up` in the TSDB may predate a restart).
        if requests.get(f"{self.url}/-/ready", auth=self.login, timeout=2).status_code != 200:
            return False
        response = requests.get(
            f"{self.url}/api/v1/targets", params={"state": "active"}, auth=self.login, timeout=2
        )
        targets = response.json()["data"]["activeTargets"]
        return any(t["scrapePool"] == SCRAPE_JOB and t["health"] == "up" for t in targets)

    def close(self) -> None:
        super().close()
        self.metrics.close()

    @property
    def url(self) -> str:
        """KEDA's `serverAddress`."""
        return f"http://{HOST}:{self.port()}"

    def query(self, expression: str) -> dict[str, Any]:
        """`GET /api/v1/query`; the `data` member (`resultType`, `result`) of a success."""
        response = requests.get(
            f"{self.url}/api/v1/query", params={"query": expression}, auth=self.login, timeout=10
        )
        response.raise_for_status()
        body = response.json()
        if body.get("status") != "success":
            raise RuntimeError(f"query {expression!r} failed: {body}")
        return body["data"]

    def query_value(self, expression: str) -> float | None:
        """The value of a scalar or one-element vector result; None for an empty vector."""
        data = self.query(expression)
        if data["resultType"] == "scalar":
            return float(data["result"][1])
        if not data["result"]:
            return None
        return float(data["result"][0]["value"][1])

    def wait_for_value(
        self, expression: str, expected: float, timeout: float = VALUE_TIMEOUT_SECONDS
    ) -> None:
        """Wait until a query of `expression` gives `expected` (i.e. a scrape has seen it)."""
        deadline = time.monotonic() + timeout
        seen: float | None = None
        while time.monotonic() < deadline:
            seen = self.query_value(expression)
            if seen == expected:
                return
            time.sleep(0.2)
        raise TimeoutError(f"{expression} was {seen}, not {expected}, after {timeout:.0f} s")


class GuardedPrometheusServer(PrometheusServer):
    """A second Prometheus that requires basic auth (its web config holds a bcrypt hash)."""

    name = "Prometheus with basic auth"
    USERNAME = "prom-reader-5e2b"  # not a word of any other message: usernames are redacted too
    PASSWORD = "prom-pass-6f1c2e9a4b7d"
    login = (USERNAME, PASSWORD)


def _bcrypt(password: str) -> str:
    """A bcrypt hash (cost 4: tests need no strength) from the C library's crypt(3): Python's
    `crypt` is deprecated but present in 3.11, and spares a dependency for one hash."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
