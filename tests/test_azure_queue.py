"""AzureQueueSource against a real Azurite, plus the log redaction it feeds.

Scenarios:
- strategy `all` counts in-flight (received, not deleted) messages; a delete lowers it
- `visibleOnly` (any case) counts only visible messages
- `visibleOnly` with 32 or more visible falls back to the approximate count (in-flight included)
- errors, each with its kind, a one-line message naming the queue and the env var, never the
  connection string or key: missing queue, missing or empty env var, malformed connection string,
  undecodable key, wrong key (Azurite checks shared-key signatures)
- SAS connection strings: a read SAS works; an add-only SAS is AuthenticationFailed
- Azurite stopped: ConnectionError in bounded time; restarted on the same port: reads work again
  with the same source and its cached clients
- a server that accepts but never answers: Timeout within 3x the timeout
- client reuse: one service client per connection string, one queue client per queue; a changed
  value builds a new client and drops the old one
- one dropped connection is retried once, and only once
- concurrency: 200 reads from 8 threads, all correct, and one service client built
- nothing logged at DEBUG carries the account key; the SDK's HTTP logging is silenced
- redact: register, ignore short values, longest first, filter on message, args and traceback

Azure AD (`accountName`), against Azurite over HTTPS with `--oauth basic` (made-up JWTs; Azurite
checks their audience, issuer and lifetime, not their signature):
- a token credential reads the right length (both strategies, in-flight counted); without a
  token Azurite refuses the same request
- a token with the wrong audience, a wrong issuer or expired: AuthenticationFailed with
  Azurite's reason, never the token
- a credential that cannot give a token (CredentialUnavailableError), a chain of them, and the
  real DefaultAzureCredential with nothing set up: CredentialUnavailable on one line, naming the
  account and each credential tried, never a token; the credential is not retried per read
- one credential per process, built lazily (never for connection strings only) and once
  under concurrency; one client per account URL, reused across reads and queues, one token
- the same bounded retries and timeouts as connection strings
- the account URL of each cloud (public, US Gov, China, Private with its suffix)
- no token in any log line at DEBUG, SDK HTTP logging included; tokens registered for redaction
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import (
    ChainedTokenCredential,
    CredentialUnavailableError,
    DefaultAzureCredential,
)
from azure.storage.queue import QueueSasPermissions, QueueServiceClient, generate_queue_sas

from eventscaler import redact as redact_module
from eventscaler import retry
from eventscaler.config import parse_trigger
from eventscaler.redact import RedactingFilter, redact, register_secret
from eventscaler.sources import azure_common, azure_queue
from eventscaler.sources.azure_queue import (
    AccountUrl,
    AzureQueueSettings,
    AzureQueueSource,
    QueueReadError,
    default_account_url,
)
from tests.support.azurite import ACCOUNT_NAME, Azurite, oauth_token

ENV = "AZURE_STORAGE_CONNECTION_STRING"
# Valid base64 of a 64-byte key, like a real one, but not the account's.
WRONG_KEY = (
    "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXk0MjQyNDI0Mg=="
)


@pytest.fixture
def source(azurite: Azurite) -> Iterator[AzureQueueSource]:
    src = AzureQueueSource(environ={ENV: azurite.connection_string})
    yield src
    src.close()


def new_queue(azurite: Azurite, messages: int = 0) -> str:
    name = f"q-{uuid.uuid4().hex[:12]}"
    azurite.create_queue(name)
    if messages:
        azurite.send_messages(name, messages)
    return name


def receive_without_delete(azurite: Azurite, queue: str, n: int) -> None:
    """Make `n` messages in-flight: received by a 'worker' that is still busy with them."""
    with azurite.queue_client(queue) as client:
        got = list(
            client.receive_messages(
                messages_per_page=min(32, n), max_messages=n, visibility_timeout=300
            )
        )
    assert len(got) == n


def read_error(source: AzureQueueSource, trigger: AzureQueueSettings) -> QueueReadError:
    with pytest.raises(QueueReadError) as info:
        source.read_length(trigger)
    return info.value


def assert_clean_message(error: QueueReadError, azurite_key: str, *secrets: str) -> None:
    text = str(error)
    assert "\n" not in text
    assert error.queue_name in text
    for secret in (azurite_key, *secrets):
        assert secret not in text
        assert secret not in repr(error)


# --- counting ------------------------------------------------------------------------------


def test_all_counts_in_flight_messages(azurite: Azurite, source: AzureQueueSource) -> None:
    queue = new_queue(azurite, messages=5)
    trigger = AzureQueueSettings(queue_name=queue)
    assert source.read_length(trigger) == 5

    receive_without_delete(azurite, queue, 2)
    assert source.read_length(trigger) == 5  # busy workers keep their replicas

    assert azurite.delete_messages(queue, 1) == 1
    assert source.read_length(trigger) == 4  # only a delete lowers it


@pytest.mark.parametrize("strategy", ["visibleOnly", "visibleonly", "VISIBLEONLY"])
def test_visible_only_counts_only_visible(
    azurite: Azurite, source: AzureQueueSource, strategy: str
) -> None:
    queue = new_queue(azurite, messages=6)
    receive_without_delete(azurite, queue, 2)
    trigger = AzureQueueSettings(queue_name=queue, queue_length_strategy=strategy)
    assert source.read_length(trigger) == 4


def test_visible_only_is_exact_below_32(azurite: Azurite, source: AzureQueueSource) -> None:
    queue = new_queue(azurite, messages=36)
    receive_without_delete(azurite, queue, 5)  # 31 visible: under the peek limit
    trigger = AzureQueueSettings(queue_name=queue, queue_length_strategy="visibleOnly")
    assert source.read_length(trigger) == 31


def test_visible_only_falls_back_to_approximate_count_at_32(
    azurite: Azurite, source: AzureQueueSource
) -> None:
    queue = new_queue(azurite, messages=40)
    receive_without_delete(azurite, queue, 5)  # 35 visible: a peek returns its limit of 32
    trigger = AzureQueueSettings(queue_name=queue, queue_length_strategy="visibleOnly")
    assert source.read_length(trigger) == 40  # the approximate count, in-flight included


def test_empty_queue_reads_zero(azurite: Azurite, source: AzureQueueSource) -> None:
    queue = new_queue(azurite)
    assert source.read_length(AzureQueueSettings(queue_name=queue)) == 0
    visible = AzureQueueSettings(queue_name=queue, queue_length_strategy="visibleOnly")
    assert source.read_length(visible) == 0


def test_unknown_strategy_is_a_bug_not_a_queue_error(
    azurite: Azurite, source: AzureQueueSource
) -> None:
    trigger = AzureQueueSettings(queue_name=new_queue(azurite), queue_length_strategy="newest")
    with pytest.raises(ValueError, match="newest"):
        source.read_length(trigger)


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["all", "visibleOnly"])
def test_missing_queue(azurite: Azurite, source: AzureQueueSource, strategy: str) -> None:
    error = read_error(
        source, AzureQueueSettings(queue_name="no-such-queue", queue_length_strategy=strategy)
    )
    assert error.code == "QueueNotFound"
    assert error.queue_name == "no-such-queue"
    assert "'no-such-queue'" in str(error)
    assert ENV in str(error)
    assert_clean_message(error, azurite.account_key)


@pytest.mark.parametrize("environ", [{}, {"MY_QUEUE_CONN": ""}, {"MY_QUEUE_CONN": "  "}])
def test_missing_connection_string(azurite: Azurite, environ: dict[str, str]) -> None:
    source = AzureQueueSource(environ=environ)
    trigger = AzureQueueSettings(queue_name="orders", connection_from_env="MY_QUEUE_CONN")
    error = read_error(source, trigger)
    assert error.code == "MissingConnectionString"
    assert "MY_QUEUE_CONN" in str(error)
    assert_clean_message(error, azurite.account_key)


@pytest.mark.parametrize(
    "value",
    [
        "this is not a connection string at all",
        "Garbage=1;AccountKey=SuperSecretValue1234567890",
        # Loopback endpoints: a connection string without one means the public cloud.
        "AccountName=devstoreaccount1;AccountKey=;QueueEndpoint=http://127.0.0.1:1/devstoreaccount1",
        "AccountKey=SuperSecretValue1234567890;QueueEndpoint=http://127.0.0.1:1/devstoreaccount1",
    ],
)
def test_malformed_connection_string(azurite: Azurite, value: str) -> None:
    source = AzureQueueSource(environ={ENV: value})
    error = read_error(source, AzureQueueSettings(queue_name="orders"))
    assert error.code == "InvalidConnectionString"
    assert ENV in str(error)
    assert_clean_message(error, azurite.account_key, value, "SuperSecretValue1234567890")
    # No chained SDK error that a traceback could print the value from.
    assert error.__cause__ is None


def test_undecodable_key_is_invalid_connection_string(azurite: Azurite) -> None:
    bad_key = "NotBase64Key0"  # 13 characters: no base64 decoding of it exists
    value = azurite.connection_string.replace(azurite.account_key, bad_key)
    source = AzureQueueSource(environ={ENV: value})
    error = read_error(source, AzureQueueSettings(queue_name=new_queue(azurite)))
    assert error.code == "InvalidConnectionString"
    assert_clean_message(error, azurite.account_key, bad_key, value)


def test_wrong_key_is_authentication_failed(azurite: Azurite) -> None:
    value = azurite.connection_string.replace(azurite.account_key, WRONG_KEY)
    source = AzureQueueSource(environ={ENV: value})
    queue = new_queue(azurite)
    for strategy in ("all", "visibleOnly"):
        trigger = AzureQueueSettings(queue_name=queue, queue_length_strategy=strategy)
        error = read_error(source, trigger)
        assert error.code == "AuthenticationFailed"
        assert "403" in str(error)
        assert_clean_message(error, azurite.account_key, WRONG_KEY, value)
    source.close()


@pytest.mark.parametrize(("permission", "kind"), [("r", None), ("a", "AuthenticationFailed")])
def test_sas_connection_string(azurite: Azurite, permission: str, kind: str | None) -> None:
    queue = new_queue(azurite, messages=3)
    sas = generate_queue_sas(
        ACCOUNT_NAME,
        queue,
        azurite.account_key,
        permission=QueueSasPermissions.from_string(permission),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    value = f"QueueEndpoint={azurite.queue_endpoint};SharedAccessSignature={sas}"
    source = AzureQueueSource(environ={ENV: value})
    trigger = AzureQueueSettings(queue_name=queue)
    if kind is None:
        assert source.read_length(trigger) == 3
    else:
        error = read_error(source, trigger)
        assert error.code == kind
        signature = parse_qs(sas)["sig"][0]
        assert_clean_message(error, azurite.account_key, sas, signature)
    assert redact(f"?{sas}") == "?***"
    source.close()


def test_stopped_azurite_fails_fast_and_restart_recovers() -> None:
    timeout = 1.0
    # Its own instance: stopping the shared one would break the other tests.
    with Azurite() as server:
        queue = new_queue(server, messages=3)
        source = AzureQueueSource(environ={ENV: server.connection_string}, timeout_seconds=timeout)
        trigger = AzureQueueSettings(queue_name=queue)
        assert source.read_length(trigger) == 3

        pid = server.pid
        server.stop()
        assert not server.running
        started = time.monotonic()
        error = read_error(source, trigger)
        elapsed = time.monotonic() - started
        assert error.code in ("ConnectionError", "Timeout")
        assert elapsed < 3 * timeout
        assert f"127.0.0.1:{server.port}" in str(error)
        assert_clean_message(error, server.account_key)
        assert pid is not None and not _pid_alive(pid)

        port = server.port
        server.restart()
        assert server.port == port  # so the cached client still points at it
        new_queue_same_name(server, queue, messages=2)  # in-memory data did not survive
        assert source.read_length(trigger) == 2

        # A restart between two reads kills the pooled keep-alive connection; still one good read.
        server.restart()
        new_queue_same_name(server, queue, messages=1)
        assert source.read_length(trigger) == 1
        source.close()


def test_silent_server_times_out_within_bound(azurite: Azurite) -> None:
    timeout = 0.5
    # Listens (so connect succeeds through the backlog) but never answers.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        value = azurite.connection_string.replace(f":{azurite.port}/", f":{port}/")
        source = AzureQueueSource(environ={ENV: value}, timeout_seconds=timeout)
        started = time.monotonic()
        with retry.budget(2.5 * timeout):  # the tick's budget: one retry fits, a third does not
            error = read_error(source, AzureQueueSettings(queue_name="orders"))
        elapsed = time.monotonic() - started
        source.close()
    assert error.code == "Timeout"
    assert elapsed < 2.5 * timeout + 0.3
    assert_clean_message(error, azurite.account_key)


def test_one_dropped_connection_is_retried(azurite: Azurite) -> None:
    queue = new_queue(azurite, messages=2)
    with DroppingProxy(azurite.port, drop_first=1) as proxy:
        value = azurite.connection_string.replace(f":{azurite.port}/", f":{proxy.port}/")
        source = AzureQueueSource(environ={ENV: value}, timeout_seconds=1.0)
        assert source.read_length(AzureQueueSettings(queue_name=queue)) == 2
        source.close()
    assert proxy.accepted == 2


def test_retries_are_bounded_in_count_and_by_the_tick(azurite: Azurite) -> None:
    for tick_budget, tries in ((10.0, retry.Backoff().attempts), (0.0, 1)):
        with DroppingProxy(azurite.port, drop_first=100) as proxy:
            value = azurite.connection_string.replace(f":{azurite.port}/", f":{proxy.port}/")
            source = AzureQueueSource(environ={ENV: value}, timeout_seconds=1.0)
            with retry.budget(tick_budget):
                error = read_error(source, AzureQueueSettings(queue_name="orders"))
            source.close()
        assert error.code == "ConnectionError"
        assert proxy.accepted == tries


# --- client reuse and concurrency ----------------------------------------------------------


def test_clients_are_reused_and_rebuilt_when_the_value_changes(
    azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = count_service_clients(monkeypatch)
    environ = {ENV: azurite.connection_string}
    source = AzureQueueSource(environ=environ)
    first, second = new_queue(azurite, messages=1), new_queue(azurite, messages=2)
    trigger_1, trigger_2 = (
        AzureQueueSettings(queue_name=first),
        AzureQueueSettings(queue_name=second),
    )

    for _ in range(3):
        assert source.read_length(trigger_1) == 1
        assert source.read_length(trigger_2) == 2
    assert len(built) == 1
    queue_client = source._get_queue_client(trigger_1)
    assert queue_client is source._get_queue_client(trigger_1)

    # Same account, different text: what a rotated secret looks like to the cache.
    environ[ENV] = azurite.connection_string.rstrip(";")
    assert source.read_length(trigger_1) == 1
    assert len(built) == 2
    assert built[1] is not built[0]
    assert source._get_queue_client(trigger_1) is not queue_client
    assert list(source._services.values()) == [built[1]]  # the old client is dropped
    source.close()


def test_two_env_vars_with_the_same_value_share_a_client(
    azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = count_service_clients(monkeypatch)
    source = AzureQueueSource(
        environ={"A": azurite.connection_string, "B": azurite.connection_string}
    )
    queue = new_queue(azurite, messages=1)
    for env in ("A", "B"):
        assert (
            source.read_length(AzureQueueSettings(queue_name=queue, connection_from_env=env)) == 1
        )
    assert len(built) == 1
    source.close()


def test_concurrent_reads(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> None:
    built = count_service_clients(monkeypatch)
    expected = {}
    for count in (0, 1, 7, 40):
        expected[new_queue(azurite, messages=count)] = count
    triggers = [
        AzureQueueSettings(queue_name=queue, queue_length_strategy=strategy)
        for queue in expected
        for strategy in ("all", "visibleOnly")
    ]
    source = AzureQueueSource(environ={ENV: azurite.connection_string})
    start = threading.Barrier(8)

    def read(i: int) -> tuple[AzureQueueSettings, int]:
        if i < 8:
            start.wait()  # the first reads race for the empty cache
        trigger = triggers[i % len(triggers)]
        return trigger, source.read_length(trigger)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(read, range(200)))
    source.close()
    assert len(results) == 200
    for trigger, length in results:
        assert length == expected[trigger.queue_name]
    assert len(built) == 1


# --- secrets in logs -----------------------------------------------------------------------


def test_nothing_logged_carries_the_key(azurite: Azurite, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    good = AzureQueueSource(environ={ENV: azurite.connection_string})
    wrong_value = azurite.connection_string.replace(azurite.account_key, WRONG_KEY)
    wrong = AzureQueueSource(environ={ENV: wrong_value})
    queue = new_queue(azurite, messages=2)
    good.read_length(AzureQueueSettings(queue_name=queue))
    read_error(good, AzureQueueSettings(queue_name="no-such-queue"))
    read_error(wrong, AzureQueueSettings(queue_name=queue))
    good.close()
    wrong.close()
    assert azurite.account_key not in caplog.text
    assert WRONG_KEY not in caplog.text


def test_sdk_http_logging_is_silenced() -> None:
    logger = logging.getLogger("azure.core.pipeline.policies.http_logging_policy")
    assert logger.getEffectiveLevel() >= logging.WARNING


def test_connection_secrets_are_registered_for_redaction(azurite: Azurite) -> None:
    source = AzureQueueSource(environ={ENV: azurite.connection_string})
    source.read_length(AzureQueueSettings(queue_name=new_queue(azurite)))
    source.close()
    assert redact(f"key={azurite.account_key}") == "key=***"
    assert redact(azurite.connection_string) == "***"


def test_sas_signature_is_registered_in_both_encodings() -> None:
    sig = "abc+def/ghi" + uuid.uuid4().hex + "="
    quoted = sig.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")
    value = (
        "QueueEndpoint=http://127.0.0.1:1/devstoreaccount1;"
        f"SharedAccessSignature=sv=2020-08-04&ss=q&sig={quoted}"
    )
    azure_queue.register_connection_secrets(value)
    assert sig not in redact(f"url?sig={sig}")
    assert quoted not in redact(f"url?sig={quoted}&x=1")


# --- redact --------------------------------------------------------------------------------


def unique_secret() -> str:
    return "s3cr3t-" + uuid.uuid4().hex


def test_redact_replaces_every_occurrence() -> None:
    secret = unique_secret()
    register_secret(secret)
    assert redact(f"a {secret} b {secret}") == "a *** b ***"
    assert redact("nothing here") == "nothing here"


def test_short_values_are_ignored() -> None:
    register_secret("")
    register_secret("abc1234")  # 7 characters: would redact ordinary words
    assert redact("abc1234 stays") == "abc1234 stays"


def test_longest_secret_is_replaced_first() -> None:
    key = unique_secret()
    whole = f"AccountName=x;AccountKey={key};QueueEndpoint=http://127.0.0.1:1/x"
    register_secret(key)
    register_secret(whole)
    assert redact(f"conn: {whole}") == "conn: ***"
    assert redact(f"key: {key}") == "key: ***"


def test_register_is_thread_safe() -> None:
    secrets = [unique_secret() for _ in range(200)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(register_secret, secrets))
    assert set(secrets) <= set(redact_module._secrets)
    assert redact(" ".join(secrets)) == " ".join(["***"] * 200)


def test_redacting_filter_covers_message_args_and_traceback() -> None:
    secret = unique_secret()
    register_secret(secret)
    records: list[str] = []

    class ListHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = ListHandler()
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("tests.redact")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("connecting with %s (%d%%)", secret, 50)
        logger.warning(f"inline {secret}")
        try:
            raise RuntimeError(f"failed with {secret}")
        except RuntimeError:
            logger.exception("read failed")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert records[0] == "connecting with *** (50%)"
    assert records[1] == "inline ***"
    assert "RuntimeError: failed with ***" in records[2]
    assert all(secret not in record for record in records)


# --- helpers -------------------------------------------------------------------------------


def new_queue_same_name(azurite: Azurite, name: str, messages: int) -> None:
    azurite.create_queue(name)
    azurite.send_messages(name, messages)


def count_service_clients(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Record every QueueServiceClient the source builds."""
    built: list[object] = []
    original = QueueServiceClient.from_connection_string

    def spy(*args: object, **kwargs: object) -> object:
        client = original(*args, **kwargs)  # type: ignore[arg-type]
        built.append(client)
        return client

    monkeypatch.setattr(QueueServiceClient, "from_connection_string", spy)
    return built


class DroppingProxy:
    """A loopback TCP proxy to Azurite that closes its first `drop_first` connections unanswered,
    the way a server or load balancer drops an idle keep-alive connection."""

    def __init__(self, target_port: int, drop_first: int) -> None:
        self._target_port = target_port
        self._drop_first = drop_first
        self.accepted = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)  # closing a socket does not wake a blocked accept()
        self.port: int = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> DroppingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._thread.join(5)
        self._listener.close()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            client.settimeout(None)
            self.accepted += 1
            if self.accepted <= self._drop_first:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self._target_port))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with src, dst:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass


def _pid_alive(pid: int) -> bool:
    if sys.platform != "linux":
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


def test_connection_pool_matches_worker_count(
    azurite: Azurite, caplog: pytest.LogCaptureFixture
) -> None:
    """More concurrent reads than the SDK's default pool of 10 reuse connections, no warnings."""
    queue = f"q-{uuid.uuid4().hex[:12]}"
    azurite.create_queue(queue)
    trigger = AzureQueueSettings(queue_name=queue, connection_from_env=ENV)
    source = AzureQueueSource(environ={ENV: azurite.connection_string}, pool_size=16)
    with caplog.at_level(logging.WARNING, logger="urllib3"), ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: source.read_length(trigger), range(160)))
    source.close()
    assert results == [0] * 160
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()]


# --- Azure AD (accountName) against HTTPS Azurite with `--oauth basic` ---------------------
#
# Azurite checks a bearer token's shape (audience, issuer, lifetime), not its signature, so a
# made-up JWT stands in for Azure AD's. The real DefaultAzureCredential runs only offline: every
# test here gets an environment where its one credential (EnvironmentCredential) has nothing
# configured and fails without a request; the authority host points at a closed loopback port.

IDENTITY_ENV_VARS = (
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_ADDITIONALLY_ALLOWED_TENANTS",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
)
STORAGE_SCOPE = "https://storage.azure.com/.default"


@pytest.fixture(autouse=True)
def offline_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test of this module can reach Azure AD, IMDS or any Azure host through the credential."""
    for name in IDENTITY_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "EnvironmentCredential")
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", "https://127.0.0.1:9")
    # Each test starts without the process's credential, and leaves none behind.
    monkeypatch.setattr(azure_common, "_process_credential", None)


@pytest.fixture(scope="module")
def oauth_azurite() -> Iterator[Azurite]:
    with Azurite(oauth=True) as server:
        yield server


@pytest.fixture
def https_azurite(oauth_azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> Azurite:
    """The OAuth Azurite, its CA trusted by the SDK's HTTP client (requests) for this test only.

    REQUESTS_CA_BUNDLE is what an operator would set for a private cloud with its own CA, so the
    source needs no test-only TLS option.
    """
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(oauth_azurite.ca_cert_path))
    return oauth_azurite


def azurite_url(azurite: Azurite, host: str = "127.0.0.1") -> AccountUrl:
    """Azurite's path-style account URL, in place of `https://{account}.queue.core.windows.net`."""
    return lambda trigger: f"https://{host}:{azurite.port}/{trigger.account_name}"


def identity_trigger(queue: str, strategy: str = "all") -> AzureQueueSettings:
    """A trigger as the rule file gives it for `accountName: devstoreaccount1`."""
    return AzureQueueSettings(
        queue_name=queue,
        queue_length_strategy=strategy,
        connection_from_env="",
        account_name=ACCOUNT_NAME,
        endpoint_suffix="core.windows.net",
    )


class FakeCredential:
    """A TokenCredential with `get_token` only (the older protocol, like many third-party ones).

    Hands out tokens shaped by `oauth_token(**claims)`, or raises `errors` in turn once its
    `good_tokens` are used up. `valid_for` (the expiry the SDK is told) under 5 minutes makes the
    SDK ask again on every request.
    """

    def __init__(
        self,
        *errors: Exception,
        good_tokens: int | None = None,
        valid_for: timedelta = timedelta(hours=1),
        **claims: object,
    ) -> None:
        self.errors = list(errors)
        self.good_tokens = good_tokens if good_tokens is not None else (0 if errors else 10**9)
        self.valid_for = valid_for
        self.claims = claims
        self.tokens: list[str] = []
        self.scopes: list[tuple[str, ...]] = []
        self._lock = threading.Lock()

    @property
    def calls(self) -> int:
        return len(self.scopes)

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: object,
    ) -> AccessToken:
        with self._lock:
            self.scopes.append(scopes)
            if len(self.tokens) >= self.good_tokens:
                failures = len(self.scopes) - len(self.tokens)  # this call included
                raise self.errors[min(failures, len(self.errors)) - 1]  # the last one repeats
            token = oauth_token(**self.claims)  # type: ignore[arg-type]
            self.tokens.append(token)
        expires = datetime.now(UTC) + self.valid_for
        return AccessToken(token, int(expires.timestamp()))


def identity_source(azurite: Azurite, credential: object, **kwargs: object) -> AzureQueueSource:
    return AzureQueueSource(
        environ={},  # no connection string anywhere: the token is the only way in
        credential=credential,  # type: ignore[arg-type]
        account_url=azurite_url(azurite),
        **kwargs,  # type: ignore[arg-type]
    )


def assert_no_token(error: QueueReadError, credential: FakeCredential) -> None:
    text = str(error)
    assert "\n" not in text
    assert error.queue_name in text
    assert ACCOUNT_NAME in text
    for token in credential.tokens:
        for part in (token, token.rsplit(".", 1)[-1]):
            assert part not in text
            assert part not in repr(error)


@pytest.mark.parametrize(("strategy", "expected"), [("all", 5), ("visibleOnly", 3)])
def test_identity_reads_the_length_from_https_azurite(
    https_azurite: Azurite, strategy: str, expected: int
) -> None:
    queue = new_queue(https_azurite, messages=5)
    receive_without_delete(https_azurite, queue, 2)
    credential = FakeCredential()
    source = identity_source(https_azurite, credential)
    trigger = identity_trigger(queue, strategy)
    assert source.read_length(trigger) == expected
    source.close()
    assert credential.scopes == [(STORAGE_SCOPE,)]


def test_identity_without_a_token_is_refused_by_azurite(https_azurite: Azurite) -> None:
    """The bearer token is what lets the reads in: Azurite refuses the same request without it."""
    queue = new_queue(https_azurite, messages=1)
    url = f"{https_azurite.queue_endpoint}/{queue}?comp=metadata"
    headers = {"x-ms-version": "2025-11-05"}
    anonymous = requests.get(url, headers=headers, verify=https_azurite.ca_cert_path, timeout=5)
    assert anonymous.status_code in (401, 403, 404)
    bearer = {**headers, "Authorization": f"Bearer {oauth_token()}"}
    with_token = requests.get(url, headers=bearer, verify=https_azurite.ca_cert_path, timeout=5)
    assert with_token.status_code == 200
    assert with_token.headers["x-ms-approximate-messages-count"] == "1"


@pytest.mark.parametrize(
    ("claims", "detail"),
    [
        ({"audience": "https://management.azure.com"}, "Invalid token audience."),
        ({"issuer": "https://login.example.com/tenant/"}, "Invalid token issuer."),
        ({"lifetime": -timedelta(minutes=5)}, "The token is expired."),
    ],
)
def test_identity_token_refused_is_authentication_failed(
    https_azurite: Azurite, claims: dict[str, object], detail: str
) -> None:
    queue = new_queue(https_azurite, messages=1)
    credential = FakeCredential(**claims)
    source = identity_source(https_azurite, credential)
    for strategy in ("all", "visibleOnly"):
        error = read_error(source, identity_trigger(queue, strategy))
        assert error.code == "AuthenticationFailed"
        assert "HTTP 403 AuthenticationFailed" in str(error)
        assert detail in str(error)
        assert "Storage Queue Data Reader" in str(error)
        assert f"account {ACCOUNT_NAME} with Azure AD" in str(error)
        assert_no_token(error, credential)
    source.close()


def test_credential_unavailable_names_the_account_and_never_a_token(
    https_azurite: Azurite,
) -> None:
    queue = new_queue(https_azurite, messages=2)
    unavailable = CredentialUnavailableError(
        message="WorkloadIdentityCredential authentication unavailable. The token file "
        "/var/run/secrets/azure/tokens/azure-identity-token is missing.\n"
        "Visit https://aka.ms/azsdk/python/identity/workloadidentitycredential/troubleshoot"
    )
    # One good token that the SDK must renew before every request (it expires within 5 minutes),
    # then the credential fails: the error comes after a token was handed out and used.
    credential = FakeCredential(unavailable, good_tokens=1, valid_for=timedelta(minutes=2))
    source = identity_source(https_azurite, credential)
    trigger = identity_trigger(queue)
    assert source.read_length(trigger) == 2

    error = read_error(source, trigger)
    source.close()
    assert error.code == "CredentialUnavailable"
    assert str(error) == (
        f"azure queue {queue!r} (account {ACCOUNT_NAME} with Azure AD (DefaultAzureCredential)): "
        f"CredentialUnavailable: FakeCredential gave no Azure AD token for "
        f"https://127.0.0.1:{https_azurite.port}/{ACCOUNT_NAME}: WorkloadIdentityCredential "
        "authentication unavailable. The token file "
        "/var/run/secrets/azure/tokens/azure-identity-token is missing."
    )
    assert_no_token(error, credential)
    assert error.__cause__ is unavailable  # the full text stays in the traceback
    # Asked once per read: the storage retry policy does not run the credential a second time.
    assert credential.calls == 2


class WorkloadIdentityStandIn(FakeCredential):
    pass


class ManagedIdentityStandIn(FakeCredential):
    pass


def test_credential_chain_failure_is_one_line_naming_each_credential(
    https_azurite: Azurite,
) -> None:
    chain = ChainedTokenCredential(
        WorkloadIdentityStandIn(
            CredentialUnavailableError(message="no federated token file\nVisit https://aka.ms/x")
        ),
        ManagedIdentityStandIn(
            ClientAuthenticationError(message="IMDS said no\n<html>a page of it</html>")
        ),
    )
    source = identity_source(https_azurite, chain)
    error = read_error(source, identity_trigger(new_queue(https_azurite)))
    source.close()
    assert error.code == "CredentialUnavailable"
    assert "\n" not in str(error)
    assert str(error).endswith(
        f"ChainedTokenCredential gave no Azure AD token for https://127.0.0.1:"
        f"{https_azurite.port}/{ACCOUNT_NAME}: tried WorkloadIdentityStandIn: no federated token "
        "file; ManagedIdentityStandIn: IMDS said no"
    )


def test_default_azure_credential_offline_is_credential_unavailable(
    https_azurite: Azurite, caplog: pytest.LogCaptureFixture
) -> None:
    """The real DefaultAzureCredential, with nothing set up (and allowed only its offline part)."""
    caplog.set_level(logging.DEBUG)
    source = AzureQueueSource(environ={}, account_url=azurite_url(https_azurite))
    error = read_error(source, identity_trigger(new_queue(https_azurite)))
    source.close()
    assert error.code == "CredentialUnavailable"
    text = str(error)
    assert "\n" not in text
    assert "DefaultAzureCredential gave no Azure AD token for https://127.0.0.1:" in text
    assert "tried EnvironmentCredential: EnvironmentCredential authentication unavailable" in text
    assert isinstance(azure_common._process_credential, DefaultAzureCredential)
    # The chain's own multi-line warning is silenced: the error above says it on one line.
    assert "Attempted credentials" not in caplog.text


def test_invalid_default_credential_settings_are_credential_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "NoSuchCredential")
    source = AzureQueueSource(environ={}, account_url=lambda t: "https://127.0.0.1:9/x")
    error = read_error(source, identity_trigger("orders"))
    assert error.code == "CredentialUnavailable"
    assert "AZURE_TOKEN_CREDENTIALS" in str(error)
    assert error.__cause__ is None


def test_one_credential_per_process_built_lazily_and_once(
    azurite: Azurite, https_azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[FakeCredential] = []

    def default_azure_credential() -> FakeCredential:
        time.sleep(0.05)  # widen the window in which racing threads could each build one
        built.append(FakeCredential())
        return built[-1]

    monkeypatch.setattr("azure.identity.DefaultAzureCredential", default_azure_credential)
    queue = new_queue(https_azurite, messages=3)
    sources = [
        AzureQueueSource(
            environ={ENV: azurite.connection_string}, account_url=azurite_url(https_azurite)
        )
        for _ in range(2)
    ]
    # Connection strings only: no credential is built.
    plain = new_queue(azurite, messages=1)
    assert sources[0].read_length(AzureQueueSettings(queue_name=plain)) == 1
    assert built == []

    start = threading.Barrier(8)

    def read(i: int) -> int:
        start.wait()
        return sources[i % 2].read_length(identity_trigger(queue))

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(read, range(8))) == [3] * 8
    for source in sources:
        source.close()
    assert len(built) == 1
    assert azure_common._process_credential is built[0]


def test_identity_clients_are_reused_per_account_url(
    https_azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[QueueServiceClient] = []

    class SpyClient(QueueServiceClient):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(azure_queue, "QueueServiceClient", SpyClient)
    first, second = new_queue(https_azurite, messages=1), new_queue(https_azurite, messages=2)
    credential = FakeCredential()
    source = identity_source(https_azurite, credential)
    for _ in range(5):
        assert source.read_length(identity_trigger(first)) == 1
        assert source.read_length(identity_trigger(second, "visibleOnly")) == 2
    assert len(built) == 1
    assert built[0].url.startswith(f"https://127.0.0.1:{https_azurite.port}/{ACCOUNT_NAME}")
    assert source._get_queue_client(identity_trigger(first)) is source._get_queue_client(
        identity_trigger(first)
    )
    # One token for 10 reads of two queues: the client and its queue clients share its cache.
    assert credential.calls == 1

    # Another account URL (the same server by another loopback name) gets a client of its own.
    other = AzureQueueSource(
        environ={}, credential=credential, account_url=azurite_url(https_azurite, "localhost")
    )
    assert other.read_length(identity_trigger(first)) == 1
    assert len(built) == 2
    other.close()
    source.close()


def test_identity_reads_use_the_same_bounded_retries(https_azurite: Azurite) -> None:
    queue = new_queue(https_azurite, messages=2)
    for drop_first, accepted in ((1, 2), (100, retry.Backoff().attempts)):
        with DroppingProxy(https_azurite.port, drop_first=drop_first) as proxy:
            source = AzureQueueSource(
                environ={},
                credential=FakeCredential(),  # type: ignore[arg-type]
                account_url=lambda t: f"https://127.0.0.1:{proxy.port}/{t.account_name}",
                timeout_seconds=1.0,
            )
            if drop_first == 1:
                assert source.read_length(identity_trigger(queue)) == 2
            else:
                assert read_error(source, identity_trigger(queue)).code == "ConnectionError"
            source.close()
        assert proxy.accepted == accepted  # the same bounded retries as connection strings


def test_identity_silent_server_times_out_within_bound() -> None:
    timeout = 1.0
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        source = AzureQueueSource(
            environ={},
            credential=FakeCredential(),  # type: ignore[arg-type]
            account_url=lambda t: f"https://127.0.0.1:{port}/{t.account_name}",
            timeout_seconds=timeout,
        )
        started = time.monotonic()
        with retry.budget(2.5 * timeout):
            error = read_error(source, identity_trigger("orders"))
        elapsed = time.monotonic() - started
        source.close()
    assert error.code == "Timeout"  # the TLS handshake never completes
    assert elapsed < 2.5 * timeout + 0.3


@pytest.mark.parametrize(
    ("cloud", "suffix", "url"),
    [
        ("AzurePublicCloud", "", "https://myaccount.queue.core.windows.net"),
        ("AzureUSGovernmentCloud", "", "https://myaccount.queue.core.usgovcloudapi.net"),
        ("AzureChinaCloud", "", "https://myaccount.queue.core.chinacloudapi.cn"),
        ("Private", "core.azurestack.example", "https://myaccount.queue.core.azurestack.example"),
    ],
)
def test_default_account_url_per_cloud(cloud: str, suffix: str, url: str) -> None:
    metadata: dict[str, object] = {
        "type": "azure-queue",
        "queueName": "orders",
        "accountName": "myaccount",
        "cloud": cloud,
    }
    if suffix:
        metadata["endpointSuffix"] = suffix
    # As the rule file gives it (suffix resolved by the loader) and as built by hand (not resolved).
    loaded = parse_trigger(metadata, "triggers[0]").settings
    by_hand = AzureQueueSettings(
        queue_name="orders", account_name="myaccount", cloud=cloud, endpoint_suffix=suffix
    )
    assert default_account_url(loaded) == url
    assert default_account_url(by_hand) == url


def test_default_account_url_needs_a_suffix_for_private_clouds() -> None:
    trigger = AzureQueueSettings(queue_name="orders", account_name="myaccount", cloud="Private")
    with pytest.raises(ValueError, match="endpoint suffix"):
        default_account_url(trigger)


def test_no_token_is_logged_at_debug(
    https_azurite: Azurite, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # Even with the SDK's HTTP logging switched back on, headers included.
    caplog.set_level(logging.DEBUG, logger="azure.core.pipeline.policies.http_logging_policy")
    queue = new_queue(https_azurite, messages=2)
    good = FakeCredential(valid_for=timedelta(minutes=1))  # a new token for every request
    refused = FakeCredential(audience="https://management.azure.com")
    failing = FakeCredential(ClientAuthenticationError(message="the identity endpoint said no"))
    for credential in (good, refused, failing):
        source = identity_source(https_azurite, credential)
        for strategy in ("all", "visibleOnly"):
            trigger = identity_trigger(queue, strategy)
            try:
                source.read_length(trigger)
            except QueueReadError as exc:
                logging.getLogger("eventscaler.test").exception("read failed: %s", exc)
        source.close()
    tokens = good.tokens + refused.tokens
    assert len(good.tokens) == 2  # one request per strategy here, each with a new token
    assert "Authorization" in caplog.text  # the request headers were logged, token redacted
    for token in tokens:
        assert token not in caplog.text
        assert token.rsplit(".", 1)[-1] not in caplog.text  # not even its signature
        assert redact(f"Bearer {token}") == "Bearer ***"  # registered for the daemon's handlers


def test_ephemeral_secrets_are_bounded_but_lasting_ones_kept() -> None:
    """Tokens refresh for the daemon's life: only the recent ones stay on the redaction list."""
    lasting = f"lasting-{uuid.uuid4().hex}"
    register_secret(lasting)
    tokens = [
        f"token-{i}-{uuid.uuid4().hex}" for i in range(redact_module.MAX_EPHEMERAL_SECRETS + 5)
    ]
    for token in tokens:
        register_secret(token, ephemeral=True)
    assert redact(f"{lasting} {tokens[-1]}") == "*** ***"
    assert tokens[0] not in redact_module._secrets  # forgotten: 5 newer than the limit came
    assert lasting in redact_module._secrets


class _FakeResponse:
    """Just enough of an azure-core HTTP response for HttpResponseError."""

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status_code = status
        self.headers = headers
        self.reason = "Too Many Requests" if status == 429 else "Error"
        self.request = None

    def text(self) -> str:
        return ""


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (429, {"Retry-After": "3"}, retry.Transient(3.0)),
        (503, {}, retry.Transient(None)),
        (500, {"Retry-After": "soon"}, retry.Transient(None)),
        (404, {}, None),
        (403, {}, None),
    ],
)
def test_which_service_errors_are_retried(
    status: int, headers: dict[str, str], expected: retry.Transient | None
) -> None:
    from azure.core.exceptions import HttpResponseError

    error = HttpResponseError(response=_FakeResponse(status, headers))  # type: ignore[arg-type]
    assert azure_queue.transient_failure(error) == expected
