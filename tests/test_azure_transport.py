"""The Azure sources' urllib3 transport (eventscaler/sources/azure_transport.py), against real
HTTP servers on 127.0.0.1: what it sends, what it returns to azure-core, and which azure-core
error each failure becomes (the retry and the error classes depend on it). The Azure sources'
own tests (Azurite, the Service Bus stand-in over HTTPS) run every read through it as well.
"""

from __future__ import annotations

import http.server
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import certifi
import pytest
from azure.core import exceptions as errors
from azure.core.pipeline.transport import HttpRequest as LegacyRequest
from azure.core.rest import HttpRequest

from eventscaler.sources import azure_transport
from tests.support.kubeapi_tls import generate_tls_material


class Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every GET with 207, a header and a body; records the request line and headers."""

    seen: list[tuple[str, dict[str, str]]] = []
    delay = threading.Event()  # set: hold the answer until released
    release = threading.Event()

    def do_GET(self) -> None:
        type(self).seen.append((self.path, dict(self.headers)))
        if self.delay.is_set():
            self.release.wait(10)
        body = b"<Queue>7</Queue>"
        self.send_response(207, "Multi-Status")
        self.send_header("Content-Type", "application/xml")
        self.send_header("x-ms-approximate-messages-count", "7")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Recorder.seen = []
    Recorder.delay.clear()
    Recorder.release.clear()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    Recorder.release.set()
    httpd.shutdown()
    httpd.server_close()


def transport(fallback: Any = None) -> Any:
    return azure_transport.build(4, 5.0, fallback or (lambda: pytest.fail("no fallback wanted")))


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_request_and_its_answer(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    monkeypatch.delenv("http_proxy", raising=False)
    request = HttpRequest("GET", f"{server}/queue?comp=metadata", headers={"x-ms-version": "1"})
    with transport() as sender:
        response = sender.send(request, connection_timeout=2, read_timeout=2)
        assert response.status_code == 207
        assert response.reason == "Multi-Status"
        assert response.headers["X-MS-Approximate-Messages-Count"] == "7"  # any case, as azure's
        assert response.content_type == "application/xml"
        assert response.content == b"<Queue>7</Queue>" == response.read()
        assert response.text() == "<Queue>7</Queue>"
        assert list(response.iter_bytes()) == [b"<Queue>7</Queue>"]
        sender.send(request)  # the pooled connection again
    (path, headers), _ = Recorder.seen
    assert path == "/queue?comp=metadata"
    assert headers["x-ms-version"] == "1"


def test_a_closed_port_is_a_request_error_not_a_timeout() -> None:
    request = HttpRequest("GET", f"http://127.0.0.1:{closed_port()}/queue")
    with pytest.raises(errors.ServiceRequestError) as caught:
        transport().send(request)
    assert not isinstance(caught.value, errors.ServiceRequestTimeoutError)


def test_no_answer_in_time_is_a_response_timeout(server: str) -> None:
    Recorder.delay.set()
    with pytest.raises(errors.ServiceResponseTimeoutError):
        transport().send(HttpRequest("GET", f"{server}/slow"), read_timeout=0.3)


def test_a_connection_cut_mid_answer_is_a_response_error() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def answer_half() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.recv(4096)
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")

        thread = threading.Thread(target=answer_half)
        thread.start()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/q"
        with pytest.raises(errors.ServiceResponseError):
            transport().send(HttpRequest("GET", url), read_timeout=2)
        thread.join(10)


def test_the_proxy_of_the_environment_is_used(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The test server as the proxy: a request through a proxy names the whole URL.
    monkeypatch.setenv("HTTP_PROXY", server)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    transport().send(HttpRequest("GET", "http://queues.invalid/q?comp=metadata"))
    assert Recorder.seen[0][0] == "http://queues.invalid/q?comp=metadata"


def test_a_clients_own_proxies_come_first(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # azure-core hands a client's `proxies` option to send(); it wins over the environment's.
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")
    transport().send(HttpRequest("GET", "http://queues.invalid/own"), proxies={"http": server})
    assert Recorder.seen[0][0] == "http://queues.invalid/own"


def test_no_proxy_is_honoured(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    transport().send(HttpRequest("GET", f"{server}/direct"))
    assert Recorder.seen[0][0] == "/direct"


def test_a_legacy_request_goes_to_the_fallback() -> None:
    sent: list[Any] = []

    class Fallback:
        def send(self, request: Any, **kwargs: Any) -> str:
            sent.append(request)
            return "answered by the fallback"

        def close(self) -> None:
            sent.append("closed")

    sender = transport(Fallback)
    legacy = LegacyRequest("GET", "http://127.0.0.1:1/q")
    assert sender.send(legacy) == "answered by the fallback"
    sender.close()
    assert sent == [legacy, "closed"]


def test_the_ca_bundle_comes_from_the_environment_as_requests_reads_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    assert azure_transport.ca_bundle() is True
    monkeypatch.setenv("CURL_CA_BUNDLE", "/curl.pem")
    assert azure_transport.ca_bundle() == "/curl.pem"
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/requests.pem")
    assert azure_transport.ca_bundle() == "/requests.pem"


def test_https_is_verified_by_default_and_trusts_the_bundle_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls = generate_tls_material(tmp_path)  # a CA of its own, which certifi's bundle lacks
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert_path, tls.key_path)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{httpd.server_address[1]}/tls"
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    Recorder.seen = []
    try:
        with pytest.raises(errors.ServiceRequestError):  # certifi's bundle: not trusted
            transport().send(HttpRequest("GET", url))
        ca = tmp_path / "ca.pem"
        ca.write_bytes(tls.ca_pem)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca))
        assert transport().send(HttpRequest("GET", url)).status_code == 207
        # A client's own connection_verify (as azure-core passes it) wins over the environment.
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
        sent = transport().send(HttpRequest("GET", url), connection_verify=str(ca))
        assert sent.status_code == 207
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert [path for path, _ in Recorder.seen] == ["/tls", "/tls"]
