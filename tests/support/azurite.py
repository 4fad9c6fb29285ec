"""Azurite, the official Azure Storage emulator, as a child process for tests, demo and bench.

Only the queue service runs, on loopback, in memory, on a port the OS picks:

    with Azurite() as azurite:
        azurite.create_queue("orders")
        azurite.send_messages("orders", 1000)
        os.environ["AZURE_STORAGE_CONNECTION_STRING"] = azurite.connection_string

The binary is started directly (never through `npx`, whose pid is npm's: killing it would leave
the server running) and stopped by its pid.

`Azurite(oauth=True)` serves HTTPS with a throwaway CA (`.ca_cert_path`) and `--oauth basic`, so
it also accepts Azure AD bearer tokens. Azurite checks only a token's shape, never its signature
(node_modules/azurite/dist/src/queue/authentication/QueueTokenAuthenticator.js): a JWT with
`iat`, `nbf` <= now < `exp`, an issuer starting with `https://sts.windows.net/` (or another
sovereign-cloud STS) and the storage audience `https://storage.azure.com` (or
`https://{account}.queue.core.windows.net`). `oauth_token()` makes one, with a made-up signature.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import os
import re
import subprocess
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from types import TracebackType

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient

from tests.support.kubeapi_tls import generate_tls_material

REPO_ROOT = Path(__file__).resolve().parents[2]
AZURITE_QUEUE_BIN = REPO_ROOT / "node_modules" / ".bin" / "azurite-queue"

# The well-known development account every Azurite instance accepts (public, not a secret; tests
# grep logs for it all the same, as a stand-in for a real key).
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 20.0
STOP_TIMEOUT_SECONDS = 5.0
SEND_THREADS = 8  # stays under the SDK's HTTP pool size (10) per client
_LISTEN_LINE = re.compile(r"successfully listens on https?://127\.0\.0\.1:(\d+)")
_OUTPUT_LINES_KEPT = 200

# What Azurite's `--oauth basic` accepts as a token's audience and issuer (see the module doc).
STORAGE_AUDIENCE = "https://storage.azure.com"
TEST_TENANT_ID = "00000000-0000-4000-8000-00000000a2e1"
STS_ISSUER = f"https://sts.windows.net/{TEST_TENANT_ID}/"


def oauth_token(
    audience: str = STORAGE_AUDIENCE,
    issuer: str = STS_ISSUER,
    lifetime: timedelta = timedelta(hours=1),
) -> str:
    """A JWT shaped like an Azure AD access token for Storage, with a random (invalid) signature.

    Each call returns a different token. A negative `lifetime` gives an expired one.
    """
    now = int(time.time())
    header = {"alg": "RS256", "typ": "JWT", "kid": "azurite-test"}
    claims = {
        "aud": audience,
        "iss": issuer,
        "iat": now - 60,
        "nbf": now - 60,
        "exp": now + int(lifetime.total_seconds()),
        "tid": TEST_TENANT_ID,
        "oid": str(uuid.uuid4()),
        "sub": "eventscaler-tests",
        "ver": "1.0",
    }
    signature = os.urandom(256)  # the size of an RS256 signature; Azurite never checks it
    return ".".join(_base64url(part) for part in (_json(header), _json(claims), signature))


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class AzuriteError(RuntimeError):
    """Azurite is missing, did not start in time, or exited."""


class Azurite:
    """One Azurite queue service process. `start()` returns self; also a context manager.

    With `oauth=True` it serves HTTPS (certificate for 127.0.0.1 from a throwaway CA at
    `.ca_cert_path`) and accepts bearer tokens as well as shared keys and SAS. The CA and the
    certificate outlive restarts, so clients that trust the CA keep working.
    """

    def __init__(self, port: int = 0, oauth: bool = False) -> None:
        self._requested_port = port
        self._oauth = oauth
        self._tls_dir: tempfile.TemporaryDirectory[str] | None = None
        self._tls_args: list[str] = []
        if oauth:
            # Removed when this object is collected or the interpreter exits.
            self._tls_dir = tempfile.TemporaryDirectory(prefix="azurite-tls-")
            directory = Path(self._tls_dir.name)
            tls = generate_tls_material(directory, HOST)
            self._ca_cert_path = directory / "ca.crt"
            self._ca_cert_path.write_bytes(tls.ca_pem)
            self._tls_args = [
                "--cert",
                str(tls.cert_path),
                "--key",
                str(tls.key_path),
                "--oauth",
                "basic",
            ]
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._output: collections.deque[str] = collections.deque(maxlen=_OUTPUT_LINES_KEPT)
        self._port: int | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> Azurite:
        """Start the server and wait until it listens; raise AzuriteError otherwise."""
        if self._process is not None:
            raise AzuriteError("Azurite is already running")
        if not AZURITE_QUEUE_BIN.exists():
            raise AzuriteError(
                f"{AZURITE_QUEUE_BIN} not found: run `npm ci` in {REPO_ROOT} to install Azurite"
            )
        self._output.clear()
        self._port = None
        # Each start gets its own reader thread bound to its own pipe and event, so the thread of
        # a previous run can never report into this one.
        port_found = threading.Event()
        self._process = subprocess.Popen(
            [
                str(AZURITE_QUEUE_BIN),
                "--queueHost",
                HOST,
                "--queuePort",
                str(self._requested_port),
                "--inMemoryPersistence",
                "--silent",
                "--skipApiVersionCheck",
                "--disableTelemetry",
                *self._tls_args,
            ],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self._reader = threading.Thread(
            target=self._read_output,
            args=(self._process, port_found),
            name=f"azurite-output-{self._process.pid}",
            daemon=True,
        )
        self._reader.start()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not port_found.wait(0.05):
            returncode = self._process.poll()
            if returncode is None and time.monotonic() < deadline:
                continue
            self.stop()  # also joins the reader, so the output below is complete
            reason = (
                f"exited with code {returncode}"
                if returncode is not None
                else f"did not listen within {START_TIMEOUT_SECONDS:.0f} s"
            )
            raise AzuriteError(f"Azurite {reason}; its output:\n{self.output}")
        return self

    def stop(self) -> None:
        """Terminate by pid, wait, kill if it does not exit in time. Safe to call twice."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT_SECONDS)
        # The reader ends at EOF, which comes once the process is gone.
        if self._reader is not None:
            self._reader.join(STOP_TIMEOUT_SECONDS)
            self._reader = None

    def restart(self) -> Azurite:
        """Stop and start a new process; the in-memory queues and messages are gone.

        The same port is asked for, so clients and connection strings keep working; if the OS
        will not give it back, a new port is used (check `.port`).
        """
        old_port = self._port
        requested = self._requested_port
        self.stop()
        if old_port is not None:
            self._requested_port = old_port
            try:
                return self.start()
            except AzuriteError:
                self._requested_port = requested
        return self.start()

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _read_output(self, process: subprocess.Popen[str], port_found: threading.Event) -> None:
        # Drains the pipe for the life of the process, so Azurite never blocks on a full pipe.
        assert process.stdout is not None
        with process.stdout:
            for line in process.stdout:
                self._output.append(line.rstrip("\n"))
                match = _LISTEN_LINE.search(line)
                if match and not port_found.is_set():
                    self._port = int(match.group(1))
                    port_found.set()

    # --- addresses -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def port(self) -> int:
        if self._port is None:
            raise AzuriteError("Azurite has not been started")
        return self._port

    @property
    def output(self) -> str:
        """What Azurite printed (the last lines), for error messages."""
        return "\n".join(self._output)

    @property
    def account_key(self) -> str:
        return ACCOUNT_KEY

    @property
    def oauth(self) -> bool:
        return self._oauth

    @property
    def scheme(self) -> str:
        return "https" if self._oauth else "http"

    @property
    def ca_cert_path(self) -> Path:
        """The PEM CA certificate that signed the server's certificate (oauth=True only)."""
        if not self._oauth:
            raise AzuriteError("plain HTTP Azurite has no CA certificate: use Azurite(oauth=True)")
        return self._ca_cert_path

    @property
    def queue_endpoint(self) -> str:
        return f"{self.scheme}://{HOST}:{self.port}/{ACCOUNT_NAME}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol={self.scheme};AccountName={ACCOUNT_NAME};"
            f"AccountKey={ACCOUNT_KEY};QueueEndpoint={self.queue_endpoint};"
        )

    # --- queue helpers ---------------------------------------------------------------------

    def queue_client(self, name: str) -> QueueClient:
        if self._oauth:
            return QueueClient.from_connection_string(
                self.connection_string, name, connection_verify=str(self.ca_cert_path)
            )
        return QueueClient.from_connection_string(self.connection_string, name)

    def create_queue(self, name: str) -> None:
        """Create the queue; one that already exists is fine (the SDK raises for it)."""
        with self.queue_client(name) as client, contextlib.suppress(ResourceExistsError):
            client.create_queue()

    def send_messages(self, queue: str, n: int, threads: int = SEND_THREADS) -> None:
        """Send `n` small messages concurrently (1,000 take about a second or two)."""
        with (
            self.queue_client(queue) as client,
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix="azurite-send") as pool,
        ):
            # list() surfaces the first exception of any send.
            list(pool.map(lambda i: client.send_message(f"message-{i}"), range(n)))

    def delete_messages(
        self, queue: str, n: int, visibility_timeout: int = 30, threads: int = SEND_THREADS
    ) -> int:
        """Receive and delete up to `n` visible messages, as workers would; return how many."""
        deleted = 0
        with (
            self.queue_client(queue) as client,
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix="azurite-delete") as pool,
        ):
            while deleted < n:
                batch = list(
                    client.receive_messages(
                        messages_per_page=min(32, n - deleted),
                        visibility_timeout=visibility_timeout,
                        max_messages=min(32, n - deleted),
                    )
                )
                if not batch:
                    break
                list(pool.map(client.delete_message, batch))
                deleted += len(batch)
        return deleted
