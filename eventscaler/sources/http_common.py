"""What the sources that read an HTTP API share (metrics-api, prometheus); not itself a source.

- URLs: what makes one usable, what in it is a credential (a user, a password, a token-like
  query parameter: such a URL goes whole into an environment variable), and the only form
  ever shown (scheme://host/path);
- KEDA's `timeout` (milliseconds, or a duration with its unit);
- one `requests.Session` per reader (a connection pool per host as large as the daemon's
  worker pool, urllib3's own retries off: ours are bounded by the tick);
- a body read with a size cap, the retry classifier of connection errors, and the words for a
  request that failed before any answer;
- convert: a KEDA URL with a credential moved to the environment, and a TriggerAuthentication's
  secretTargetRef parameters mapped to `...FromEnv` fields with the env var to add.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from eventscaler import retry
from eventscaler.fields import ConfigError, parse_duration, parse_text, show
from eventscaler.redact import register_secret
from eventscaler.sources import base
from eventscaler.sources.base import KedaTrigger

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 4 * 1024 * 1024
# Names (query parameters, headers) whose value is taken for a credential.
SECRET_NAME = re.compile(r"(?i)(token|key|secret|passw|pwd|sig|auth|credential|session|cookie)")


def display_url(url: str) -> str:
    """scheme://host[:port]/path: never the user, password, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def url_problem(url: str) -> str | None:
    """Why a URL is not usable, or None. The message never quotes a credential."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return "not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "expected an http:// or https:// URL with a host"
    return None


def url_credential(url: str) -> str | None:
    """What in a URL is a credential (for the error that says to use the FromEnv field)."""
    parts = urlsplit(url)
    if parts.password is not None or parts.username:
        return "a user or password in the URL"
    for name, _ in parse_qsl(parts.query, keep_blank_values=True):
        if SECRET_NAME.search(name):
            return f"the query parameter {name!r}"
    return None


def parse_url(value: Any, field: str, env_key: str, noun: str = "URL") -> str:
    """A rule file's http(s) URL with no credential in it (that one goes whole in `env_key`)."""
    text = parse_text(value, field, "an http:// or https:// URL").strip()
    problem = url_problem(text)
    if problem:
        shown = display_url(text) if "://" in text else text
        raise ConfigError(field, f"{problem}, got {show(shown)}")
    credential = url_credential(text)
    if credential:
        raise ConfigError(
            field,
            f"the {noun} carries a credential ({credential}): put the whole {noun} in an "
            f"environment variable and name that variable in {env_key}",
        )
    return text


def refuse_inline_secrets(data: Mapping[str, Any], field: str, keys: Mapping[str, str]) -> None:
    """A secret written in the rule file (`keys`: its key -> the FromEnv field to use) is an
    error that says where it goes instead."""
    for key, instead in keys.items():
        if key in data:
            raise ConfigError(
                f"{field}.{key}",
                "a secret never sits in the rule file: put it in an environment variable and "
                f"name that variable in {instead}",
            )


@dataclass(frozen=True)
class AuthFields:
    """Which credential fields go with which auth mode (`mode_key`: authMode, authModes)."""

    mode_key: str
    belongs: Mapping[str, str]  # field -> the mode it applies to
    needs: Mapping[str, tuple[str, ...]]  # mode -> the fields it requires

    def check(self, mode: str, data: Mapping[str, Any], field: str) -> None:
        for key, wanted in self.belongs.items():
            if key in data and mode != wanted:
                raise ConfigError(f"{field}.{key}", f"only applies with {self.mode_key} {wanted}")
        for key in self.needs.get(mode, ()):
            if key not in data:
                raise ConfigError(f"{field}.{key}", f"is required with {self.mode_key} {mode}")
        if mode == "basic" and ("username" in data) == ("usernameFromEnv" in data):
            raise ConfigError(
                f"{field}.username",
                f"give username or usernameFromEnv with {self.mode_key} basic, one of them",
            )


def register_url_secrets(url: str) -> None:
    """The URL, its password and each query value are secrets from now on (an SDK or a proxy
    error may echo any of them)."""
    register_secret(url)
    parts = urlsplit(url)
    register_secret(parts.password or "")
    register_secret(parts.query)
    for _, value in parse_qsl(parts.query, keep_blank_values=True):
        register_secret(value)


def parse_timeout(value: Any, field: str) -> float:
    """KEDA's timeout in milliseconds ("1000"), or a duration string with its unit ("2s")."""
    if isinstance(value, str) and value.strip().replace(".", "", 1).isdigit():
        value = float(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return parse_duration(value / 1000.0, field, allow_zero=False)
    return parse_duration(value, field, allow_zero=False)


class Sessions:
    """One requests.Session, made on first use and shared by every thread; closed by `close`."""

    def __init__(self, pool_size: int) -> None:
        self._pool_size = pool_size
        self._session: requests.Session | None = None
        self._lock = threading.Lock()
        self._warned: set[str] = set()

    def get(self) -> requests.Session:
        session = self._session
        if session is not None:
            return session
        with self._lock:
            if self._session is None:
                session = requests.Session()
                adapter = HTTPAdapter(pool_maxsize=self._pool_size, max_retries=0)
                session.mount("http://", adapter)
                session.mount("https://", adapter)
                self._session = session
            return self._session

    def close(self) -> None:
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            session.close()

    @property
    def open(self) -> bool:
        return self._session is not None

    def warn_unsafe_once(self, what: str) -> None:
        """One warning per endpoint (`what`, safe to log) instead of urllib3's on every request."""
        if what in self._warned:
            return
        with self._lock:
            if what in self._warned:
                return
            self._warned.add(what)
        warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
        logger.warning("%s: unsafeSsl: its certificate is not verified", what)


class HttpReader:
    """What an HTTP source's reader holds: its environment, its default timeout, its session."""

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        timeout_seconds: float = 5.0,
        pool_size: int = 16,
    ) -> None:
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._timeout_seconds = timeout_seconds
        self._sessions = Sessions(pool_size)

    def close(self) -> None:
        self._sessions.close()

    def env_secret(self, env: str) -> str:
        """The variable's value, registered for redaction; "" when unset or empty."""
        value = self._environ.get(env, "").strip()
        register_secret(value)
        return value


def basic_authorization(user: str, password: str) -> str:
    """The Authorization header's value for HTTP basic auth, registered for redaction."""
    encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
    register_secret(encoded)
    return f"Basic {encoded}"


def read_body(response: requests.Response) -> bytes | None:
    """The body of a streamed answer, or None when it is over MAX_BODY_BYTES."""
    body = response.raw.read(MAX_BODY_BYTES + 1, decode_content=True)
    return None if len(body) > MAX_BODY_BYTES else bytes(body)


def transient_failure(exc: Exception) -> retry.Transient | None:
    """Connection errors and timeouts are worth another try (TLS errors are not)."""
    if isinstance(exc, requests.exceptions.SSLError):
        return None
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return retry.Transient()
    return None


def request_failure(exc: requests.RequestException, url: str, timeout: float) -> tuple[str, str]:
    """(kind, detail) for a request that got no answer; names the host only, never the URL."""
    host = urlsplit(url).netloc.rpartition("@")[2]
    if isinstance(exc, requests.exceptions.SSLError):
        return base.UNAVAILABLE, (
            f"TLS with {host} failed (certificate not trusted? unsafeSsl: true skips the check)"
        )
    if isinstance(exc, requests.Timeout):
        return base.TIMEOUT, f"no answer from {host} (timeout {timeout:g} s)"
    if isinstance(exc, requests.ConnectionError):
        return base.UNAVAILABLE, f"cannot reach {host}"
    return base.SERVICE_ERROR, f"{type(exc).__name__} from {host}"


# ---------------------------------------------------------------------------------------------
# convert


def keda_url_to_env(
    keda: KedaTrigger, out: dict[str, Any], key: str, env_key: str, env_base: str
) -> None:
    """A KEDA URL (`out[key]`) that carries a credential goes to an env var named in `env_key`."""
    url = str(out.get(key, ""))
    if url and url_credential(url):
        env = keda.env_name(env_base)
        del out[key]
        out[env_key] = env
        keda.note(
            f"metadata.{key}",
            f"the URL carries a credential: the rule reads it from env {env}; "
            f"put the URL in a Secret and expose it to the autoscaler as {env}",
        )


def keda_secret_refs(
    keda: KedaTrigger, out: dict[str, Any], fields: Mapping[str, str], source: str
) -> None:
    """The TriggerAuthentication's secretTargetRef parameters named in `fields` (KEDA's
    parameter -> our FromEnv field) become env vars, each with the `env:` entry to add."""
    if not isinstance(keda.auth_ref, Mapping):
        return
    ref = keda.auth_ref
    what = f"{ref.get('kind') or 'TriggerAuthentication'} {ref.get('name', '')}"
    if keda.auth is None:
        keda.lost(
            "authenticationRef",
            f"{what} is not in this input: set the ...FromEnv field of each credential "
            f"({', '.join(sorted(set(fields.values())))}) and expose the Secret keys as those "
            "env vars",
        )
        return
    spec = keda.auth.get("spec") or {}
    for secret in spec.get("secretTargetRef") or []:
        if isinstance(secret, Mapping):
            _map_secret_ref(keda, out, fields, (what, source), secret)
    for kind in ("env", "hashiCorpVault", "azureKeyVault", "boundServiceAccountToken"):
        if spec.get(kind):
            keda.lost("authenticationRef", f"{what}: {kind} is not supported: use secretTargetRef")


def _map_secret_ref(
    keda: KedaTrigger,
    out: dict[str, Any],
    fields: Mapping[str, str],
    where: tuple[str, str],
    secret: Mapping[str, Any],
) -> None:
    what, source = where
    parameter = str(secret.get("parameter", ""))
    field = fields.get(parameter)
    if field is None:
        keda.lost(
            "authenticationRef",
            f"{what}: parameter {parameter!r} (TLS or other) is not supported by eventscaler's "
            f"{source}",
        )
        return
    ref_name = keda.auth_ref.get("name", "") if isinstance(keda.auth_ref, Mapping) else ""
    env = keda.env_name(f"{ref_name}_{parameter}")
    out[field] = env
    keda.note(
        "authenticationRef",
        f"{what} maps {parameter!r} to Secret {secret.get('name')} key {secret.get('key')}: "
        f"{field} {env} (done); add env: [{{name: {env}, valueFrom: {{secretKeyRef: {{name: "
        f"{secret.get('name')}, key: {secret.get('key')}}}}}}}] to the autoscaler's container",
    )
