"""The Azure sources' HTTP transport: azure-core's transport interface over urllib3's pools.

azure-core's default transport sends each call through a `requests` Session, which merges
settings, cookies, hooks and adapters around urllib3 on every call: about 0.3 of the 1.9 CPU ms
a queue read costs here. The daemon needs none of that, so its Azure clients send through
urllib3 directly, and keep what `requests` gave them:

- the CA bundle: REQUESTS_CA_BUNDLE, else CURL_CA_BUNDLE, else certifi's (as requests does);
  read once, not per call;
- proxies: a client's own (azure-core's `proxies` option), else HTTPS_PROXY, HTTP_PROXY and
  NO_PROXY, read as requests reads them, once per host;
- the errors azure-core's pipeline, the retry and the error classes rely on: no connection is a
  ServiceRequestError, a connect timeout a ServiceRequestTimeoutError, a read timeout a
  ServiceResponseTimeoutError, a broken answer a ServiceResponseError;
- no retries and no redirects at this level (the daemon's retries are bounded by the tick).

A response is read whole: the Azure calls the daemon makes answer a few kilobytes at most.
Requests of azure-core's legacy type (none of the calls the sources make) go through the
`requests` transport instead.

No Azure module is imported here at import time: the classes are built on first use.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

# The keyword arguments azure-core passes to a transport's send() that this transport reads.
_CONSUMED = (
    "connection_timeout",
    "read_timeout",
    "connection_verify",
    "connection_cert",
    "proxies",
)


def ca_bundle() -> str | bool:
    """What requests would verify with: a bundle from the environment, else True (certifi's)."""
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True


def build(pool_size: int, timeout_seconds: float, fallback: Callable[[], Any]) -> Any:
    """A transport keeping `pool_size` connections per host; `fallback()` builds the transport
    for legacy requests."""
    return _transport_class()(pool_size, timeout_seconds, fallback)


@functools.cache
def _transport_class() -> type:
    import urllib3
    from azure.core import exceptions as errors
    from azure.core.pipeline.transport import HttpTransport
    from azure.core.rest import HttpRequest as RestRequest
    from azure.core.rest._http_response_impl import HttpResponseImpl
    from azure.core.utils import CaseInsensitiveDict
    from urllib3 import exceptions as u3

    def whole_body(pipeline: Any, response: Any, **kwargs: Any) -> Iterator[bytes]:
        # The stream of a response already read: its content, once.
        yield response.content

    class Response(HttpResponseImpl):
        """An answer read whole, as azure-core's requests transport returns one."""

        def __init__(self, *, data: bytes, **kwargs: Any) -> None:
            super().__init__(stream_download_generator=whole_body, **kwargs)
            self._content = data

    class Urllib3Transport(HttpTransport):
        def __init__(
            self, pool_size: int, timeout_seconds: float, fallback: Callable[[], Any]
        ) -> None:
            self._pool_size = pool_size
            self._timeout = timeout_seconds
            self._verify = ca_bundle()
            self._fallback_factory = fallback
            self._fallback: Any = None
            self._lock = threading.Lock()
            self._managers: dict[tuple[str | None, Any, Any], urllib3.PoolManager] = {}
            self._proxies: dict[str, dict[str, str]] = {}

        def __enter__(self) -> Urllib3Transport:
            return self

        def __exit__(self, *args: Any) -> None:
            self.close()

        def open(self) -> None:
            pass

        def close(self) -> None:
            with self._lock:
                managers = list(self._managers.values())
                self._managers.clear()
                fallback, self._fallback = self._fallback, None
            for manager in managers:
                manager.clear()
            if fallback is not None:
                fallback.close()

        def send(self, request: Any, **kwargs: Any) -> Any:
            if not isinstance(request, RestRequest):
                return self._legacy().send(request, **kwargs)
            options = {key: kwargs.pop(key, None) for key in _CONSUMED}
            connect = options["connection_timeout"] or self._timeout
            read = options["read_timeout"] or self._timeout
            verify = options["connection_verify"]
            verify = self._verify if verify is None else verify
            proxy = self._proxy_for(request.url, options["proxies"])
            manager = self._manager(proxy, verify, options["connection_cert"])
            try:
                answer = manager.request(
                    request.method,
                    request.url,
                    body=request.content,
                    headers=dict(request.headers),
                    timeout=urllib3.Timeout(connect=connect, read=read),
                    retries=False,
                    redirect=False,
                    preload_content=True,
                )
            except (u3.NewConnectionError, u3.SSLError, u3.ProxyError) as exc:
                # First: urllib3's NewConnectionError is a ConnectTimeoutError too.
                raise errors.ServiceRequestError(exc, error=exc) from exc
            except u3.ConnectTimeoutError as exc:
                raise errors.ServiceRequestTimeoutError(exc, error=exc) from exc
            except u3.ReadTimeoutError as exc:
                raise errors.ServiceResponseTimeoutError(exc, error=exc) from exc
            except u3.HTTPError as exc:  # a broken answer: ProtocolError, a short body...
                raise errors.ServiceResponseError(exc, error=exc) from exc
            headers = CaseInsensitiveDict(answer.headers.items())
            response = Response(
                request=request,
                internal_response=answer,
                status_code=answer.status,
                reason=answer.reason or "",
                headers=headers,
                content_type=headers.get("content-type"),
                data=answer.data,
            )
            response.read()  # marks it consumed, as the requests transport does unless streaming
            return response

        def _legacy(self) -> Any:
            with self._lock:
                if self._fallback is None:
                    self._fallback = self._fallback_factory()
                return self._fallback

        def _manager(self, proxy: str | None, verify: Any, cert: Any) -> urllib3.PoolManager:
            key = (proxy, verify, cert)
            manager = self._managers.get(key)
            if manager is not None:
                return manager
            with self._lock:
                manager = self._managers.get(key)
                if manager is None:
                    manager = self._managers[key] = self._new_manager(proxy, verify, cert)
                return manager

        def _new_manager(self, proxy: str | None, verify: Any, cert: Any) -> urllib3.PoolManager:
            tls: dict[str, Any] = {"cert_reqs": "CERT_REQUIRED" if verify else "CERT_NONE"}
            if verify:
                tls["ca_certs"] = verify if isinstance(verify, str) else _certifi_bundle()
            if cert:
                cert_file, key_file = cert if isinstance(cert, tuple) else (cert, None)
                tls.update(cert_file=cert_file, key_file=key_file)
            common = {"maxsize": self._pool_size, "block": False, **tls}
            if proxy is not None:
                return urllib3.ProxyManager(proxy, **common)
            return urllib3.PoolManager(**common)

        def _proxy_for(self, url: str, given: dict[str, str] | None) -> str | None:
            parts = urlsplit(url)
            proxies = given if given is not None else self._proxies.get(parts.netloc)
            if proxies is None:
                import requests

                proxies = self._proxies[parts.netloc] = requests.utils.get_environ_proxies(url)
            return proxies.get(parts.scheme) or proxies.get("all")

    return Urllib3Transport


def _certifi_bundle() -> str:
    import certifi

    return str(certifi.where())
