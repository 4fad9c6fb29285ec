"""A stand-in of the Azure Service Bus administration endpoint, on 127.0.0.1, over HTTPS.

No Service Bus emulator installs here without a container, so the tests run the official
`azure-servicebus` SDK's ServiceBusAdministrationClient against this server, which speaks the
documented wire format for exactly what the azure-servicebus source reads:
- `GET /{queue}?api-version=...` (2021-05 and later): an Atom `<entry>` whose content is a
  `QueueDescription` with its `CountDetails` (ActiveMessageCount, DeadLetterMessageCount,
  ScheduledMessageCount, TransferMessageCount, TransferDeadLetterMessageCount, in the 2011/06
  namespace);
- `GET /{topic}/Subscriptions/{sub}`: the same with a `SubscriptionDescription`;
- `GET /$Resources/queues` and `GET /{topic}/Subscriptions`: Atom feeds paged by `$skip`/`$top`,
  with a `rel="next"` link while entries remain, as the service does;
- the service's answers to what goes wrong: a GET of a missing queue is a 200 with an empty feed
  (the SDK turns it into ResourceNotFoundError), a missing subscription or topic a 404 with the
  service's `<Error><Code>404</Code><Detail>Entity '...' was not found...` body; a missing,
  malformed, expired, wrongly signed or wrong-audience SAS token a 401 with an `<Error>` body,
  and a policy without the Manage claim a 401 as well (reading descriptions needs Manage).
SAS tokens (`SharedAccessSignature sr=&sig=&se=&skn=`) are checked for real: the signature is the
HMAC-SHA256, with the policy's key, of the URL-encoded `sr` and the expiry. A bearer token given
to `allow_bearer` is accepted too (the Azure AD path).

Not reproduced: sending or receiving messages (tests set the counts directly), creating entities
over HTTP, topics' own descriptions, rules, the `enrich` option, throttling, and the exact
TrackingId/SystemTracker texts. TLS: the SDK always builds `https://` URLs (the connection
string's `sb://` scheme is dropped; only the host and port are kept), so the server speaks HTTPS
with a throwaway CA (tests/support/kubeapi_tls.py, through the metrics-api test server it is
built on) whose PEM file (`ca_path`) a client trusts through REQUESTS_CA_BUNDLE.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Self
from xml.sax.saxutils import escape

from tests.support.metrics_api_server import MetricsApiServer

HOST = "127.0.0.1"
API_VERSION = "2021-05"  # in the ids of entries; any api-version is served (SDK 7.15: 2024-05)
ATOM = "http://www.w3.org/2005/Atom"
CONNECT = "http://schemas.microsoft.com/netservices/2010/10/servicebus/connect"
COUNTS_NS = "http://schemas.microsoft.com/netservices/2011/06/servicebus"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
ROOT_RULE = "RootManageSharedAccessKey"


@dataclass
class Counts:
    """An entity's CountDetails; `active` is what the source reads."""

    active: int = 0
    dead_letter: int = 0
    scheduled: int = 0
    transfer: int = 0
    transfer_dead_letter: int = 0

    @property
    def total(self) -> int:  # MessageCount: everything in the entity
        return (
            self.active
            + self.dead_letter
            + self.scheduled
            + self.transfer
            + (self.transfer_dead_letter)
        )


@dataclass
class _Namespace:
    queues: dict[str, Counts] = field(default_factory=dict)  # lower-cased name -> counts
    names: dict[str, str] = field(default_factory=dict)  # lower-cased -> as created
    topics: dict[str, dict[str, Counts]] = field(default_factory=dict)
    # SAS policies: name -> (key, claims)
    rules: dict[str, tuple[str, frozenset[str]]] = field(default_factory=dict)
    bearer_tokens: set[str] = field(default_factory=set)
    requests: list[str] = field(default_factory=list)  # "GET /path?query" as received
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Refused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _error_body(status: int, detail: str) -> bytes:
    tracking = f"TrackingId:{uuid.uuid4()}_G1, SystemTracker:NoSystemTracker"
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    text = f"{detail} {tracking}, Timestamp:{stamp}"
    return f"<Error><Code>{status}</Code><Detail>{escape(text)}</Detail></Error>".encode()


def _not_found(entity: str) -> str:
    more = "To know more visit https://aka.ms/sbResourceMgrExceptions."
    return f"Entity '{entity}' was not found. {more} "


def _count_details(counts: Counts) -> str:
    parts = [("ActiveMessageCount", counts.active), ("DeadLetterMessageCount", counts.dead_letter),
             ("ScheduledMessageCount", counts.scheduled),
             ("TransferMessageCount", counts.transfer),
             ("TransferDeadLetterMessageCount", counts.transfer_dead_letter)]  # fmt: skip
    inner = "".join(f"<d2p1:{name}>{value}</d2p1:{name}>" for name, value in parts)
    return f'<CountDetails xmlns:d2p1="{COUNTS_NS}">{inner}</CountDetails>'


def _queue_description(counts: Counts) -> str:
    stamp = _now()
    return (
        f'<QueueDescription xmlns="{CONNECT}" xmlns:i="{XSI}">'
        "<LockDuration>PT1M</LockDuration><MaxSizeInMegabytes>1024</MaxSizeInMegabytes>"
        "<RequiresDuplicateDetection>false</RequiresDuplicateDetection>"
        "<RequiresSession>false</RequiresSession>"
        "<DefaultMessageTimeToLive>P14D</DefaultMessageTimeToLive>"
        "<DeadLetteringOnMessageExpiration>false</DeadLetteringOnMessageExpiration>"
        "<DuplicateDetectionHistoryTimeWindow>PT10M</DuplicateDetectionHistoryTimeWindow>"
        "<MaxDeliveryCount>10</MaxDeliveryCount>"
        "<EnableBatchedOperations>true</EnableBatchedOperations>"
        f"<SizeInBytes>{counts.total * 256}</SizeInBytes>"
        f"<MessageCount>{counts.total}</MessageCount>"
        "<IsAnonymousAccessible>false</IsAnonymousAccessible><AuthorizationRules/>"
        f"<Status>Active</Status><CreatedAt>{stamp}</CreatedAt><UpdatedAt>{stamp}</UpdatedAt>"
        f"<AccessedAt>{stamp}</AccessedAt><SupportOrdering>true</SupportOrdering>"
        f"{_count_details(counts)}"
        "<AutoDeleteOnIdle>P10675199DT2H48M5.4775807S</AutoDeleteOnIdle>"
        "<EnablePartitioning>false</EnablePartitioning>"
        "<EntityAvailabilityStatus>Available</EntityAvailabilityStatus>"
        "<EnableExpress>false</EnableExpress></QueueDescription>"
    )


def _subscription_description(counts: Counts) -> str:
    stamp = _now()
    return (
        f'<SubscriptionDescription xmlns="{CONNECT}" xmlns:i="{XSI}">'
        "<LockDuration>PT1M</LockDuration><RequiresSession>false</RequiresSession>"
        "<DefaultMessageTimeToLive>P14D</DefaultMessageTimeToLive>"
        "<DeadLetteringOnMessageExpiration>false</DeadLetteringOnMessageExpiration>"
        "<DeadLetteringOnFilterEvaluationExceptions>true</DeadLetteringOnFilterEvaluationExceptions>"
        f"<MessageCount>{counts.total}</MessageCount><MaxDeliveryCount>10</MaxDeliveryCount>"
        "<EnableBatchedOperations>true</EnableBatchedOperations><Status>Active</Status>"
        f"<CreatedAt>{stamp}</CreatedAt><UpdatedAt>{stamp}</UpdatedAt>"
        f"<AccessedAt>{stamp}</AccessedAt>{_count_details(counts)}"
        "<AutoDeleteOnIdle>P10675199DT2H48M5.4775807S</AutoDeleteOnIdle>"
        "<EntityAvailabilityStatus>Available</EntityAvailabilityStatus>"
        "</SubscriptionDescription>"
    )


def _entry(base: str, path: str, title: str, description: str, xmlns: bool = True) -> str:
    url = f"{base}/{path}?api-version={API_VERSION}"
    stamp = _now()
    return (
        f"<entry{f' xmlns={chr(34)}{ATOM}{chr(34)}' if xmlns else ''}>"
        f'<id>{escape(url)}</id><title type="text">{escape(title)}</title>'
        f"<published>{stamp}</published><updated>{stamp}</updated>"
        f"<author><name>{escape(base.split('//')[1])}</name></author>"
        f'<link rel="self" href="{escape(url)}"/>'
        f'<content type="application/xml">{description}</content></entry>'
    )


def _feed(base: str, path: str, title: str, entries: list[str], links: list[str]) -> bytes:
    head = (
        f'<feed xmlns="{ATOM}"><title type="text">{escape(title)}</title>'
        f"<id>{escape(f'{base}/{path}?api-version={API_VERSION}')}</id><updated>{_now()}</updated>"
    )
    return (head + "".join(links) + "".join(entries) + "</feed>").encode()


def _empty_feed() -> bytes:
    """What the service answers to a GET of an entity that does not exist (status 200)."""
    return (
        f'<feed xmlns="{ATOM}"><title type="text">Publicly Listed Services</title>'
        '<subtitle type="text">This is the list of publicly-listed services currently '
        f"available.</subtitle><id>uuid:{uuid.uuid4()};id=1</id><updated>{_now()}</updated>"
        "<generator>Service Bus 1.1</generator></feed>"
    ).encode()


def signature(resource: str, key: str, expiry: int) -> str:
    """The `sig` of a SAS token: HMAC-SHA256 with the key of the URL-encoded resource and expiry."""
    encoded = urllib.parse.quote_plus(resource)
    digest = hmac.new(key.encode(), f"{encoded}\n{expiry}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def sign(resource: str, rule: str, key: str, expiry: int) -> str:
    """A SAS token as Service Bus defines it (for tests that build one by hand)."""
    sig = signature(resource, key, expiry)
    query = urllib.parse.urlencode({"sr": resource, "sig": sig, "se": expiry, "skn": rule})
    return f"SharedAccessSignature {query}"


class _Handler(BaseHTTPRequestHandler):
    server: Any  # the metrics-api server's: its `state` is the namespace
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        state = self.server.state
        with state.lock:
            state.requests.append(f"GET {self.path}")
        parts = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parts.query))
        base = f"https://{self.headers.get('Host', HOST)}"
        try:
            self._authorize(state, base + parts.path)
            if query.get("api-version") is None:
                raise _Refused(400, "The api-version query parameter is required.")
            status, body = self._route(state, base, urllib.parse.unquote(parts.path), query)
        except _Refused as refused:
            status, body = refused.status, _error_body(refused.status, refused.detail)
            self._send(status, body, "application/xml; charset=utf-8")
            return
        self._send(status, body, "application/atom+xml;type=entry;charset=utf-8")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _authorize(self, state: _Namespace, url: str) -> None:
        header = self.headers.get("Authorization", "")
        if header.startswith("Bearer ") and header[7:] in state.bearer_tokens:
            return
        if not header.startswith("SharedAccessSignature "):
            raise _Refused(401, "MalformedToken: The credentials contained in the authorization "
                                "header are not in the WRAP format.")  # fmt: skip
        fields = dict(urllib.parse.parse_qsl(header[len("SharedAccessSignature ") :]))
        if not {"sr", "sig", "se", "skn"} <= fields.keys() or not fields["se"].isdigit():
            raise _Refused(401, "MalformedToken: The token is missing a required field.")
        rule = state.rules.get(fields["skn"])
        expected = rule and signature(fields["sr"], rule[0], int(fields["se"]))
        if not expected or not hmac.compare_digest(expected, fields["sig"]):
            raise _Refused(401, "InvalidSignature: The token has an invalid signature.")
        if int(fields["se"]) < time.time():
            raise _Refused(401, "ExpiredToken: The token is expired.")
        if not url.lower().startswith(fields["sr"].rstrip("/").lower()):
            raise _Refused(401, f"InvalidAudience: The token audience {fields['sr']} does not "
                                "match the resource.")  # fmt: skip
        if "Manage" not in rule[1]:
            raise _Refused(401, "Unauthorized access. 'Manage' claim(s) are required for this "
                                "operation.")  # fmt: skip

    def _route(
        self, state: _Namespace, base: str, path: str, query: dict[str, str]
    ) -> tuple[int, bytes]:
        segments = [s for s in path.strip("/").split("/") if s]
        with state.lock:
            if len(segments) == 2 and segments[0] == "$Resources" and segments[1] == "queues":
                return 200, self._queue_feed(state, base, query)
            if len(segments) == 1:
                counts = state.queues.get(segments[0].lower())
                if counts is None:
                    return 200, _empty_feed()
                name = state.names[segments[0].lower()]
                return 200, _entry(base, name, name, _queue_description(counts)).encode()
            if len(segments) in (2, 3) and segments[1].lower() == "subscriptions":
                return self._subscriptions(state, base, segments, query)
        raise _Refused(404, f"No service is hosted at the specified address ({path}).")

    def _subscriptions(
        self, state: _Namespace, base: str, segments: list[str], query: dict[str, str]
    ) -> tuple[int, bytes]:
        topic = segments[0]
        subscriptions = state.topics.get(topic.lower())
        namespace = self.headers.get("Host", HOST)
        if len(segments) == 2:
            if subscriptions is None:
                raise _Refused(404, _not_found(f"{namespace}:Topic:{topic}"))
            items = sorted(subscriptions.items())
            entries = [(f"{topic}/Subscriptions/{n}", n, _subscription_description(c))
                       for n, c in items]  # fmt: skip
            return 200, self._page(base, f"{topic}/Subscriptions", entries, query)
        name = segments[2]
        counts = (subscriptions or {}).get(name.lower())
        if counts is None:
            raise _Refused(404, _not_found(f"{namespace}:Topic:{topic}|{name}"))
        path = f"{topic}/Subscriptions/{name}"
        return 200, _entry(base, path, name, _subscription_description(counts)).encode()

    def _queue_feed(self, state: _Namespace, base: str, query: dict[str, str]) -> bytes:
        names = sorted(state.queues)
        entries = [(state.names[n], state.names[n], _queue_description(state.queues[n]))
                   for n in names]  # fmt: skip
        return self._page(base, "$Resources/queues", entries, query)

    def _page(
        self, base: str, path: str, entries: list[tuple[str, str, str]], query: dict[str, str]
    ) -> bytes:
        try:
            skip, top = int(query.get("$skip", "0")), int(query.get("$top", "100"))
        except ValueError:
            raise _Refused(400, "The value of $skip or $top is not a number.") from None
        if skip < 0 or not 0 < top <= 100:
            raise _Refused(400, "$skip must be >= 0 and $top between 1 and 100.")
        chosen = entries[skip : skip + top]
        self_query = urllib.parse.urlencode(
            {"$skip": skip, "$top": top, "api-version": API_VERSION}
        )
        links = [f'<link rel="self" href="{escape(f"{base}/{path}?{self_query}")}"/>']
        if skip + top < len(entries):
            nxt = urllib.parse.urlencode(
                {"$skip": skip + top, "$top": top, "api-version": API_VERSION}
            )
            links.append(f'<link rel="next" href="{escape(f"{base}/{path}?{nxt}")}"/>')
        body = [_entry(base, p, t, d, xmlns=False) for p, t, d in chosen]
        return _feed(base, path, path.rsplit("/", 1)[-1], body, links)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Quiet: the request log is the namespace's."""


class ServiceBusStandIn(MetricsApiServer):
    """The stand-in namespace; a context manager whose exit stops it. `stop()` then `start()`
    (or `restart()`) serve again on the same port, with the same entities."""

    handler = _Handler

    def __init__(self, tls_dir: Path, key: str | None = None) -> None:
        super().__init__(tls_dir)
        self.state = self.namespace = _Namespace()
        self.key = key or base64.b64encode(uuid.uuid4().bytes + uuid.uuid4().bytes).decode()
        self.add_policy(ROOT_RULE, self.key, "Manage", "Send", "Listen")
        self.ca_path = tls_dir / "servicebus-ca.pem"

    def start(self) -> Self:
        super().start()
        if self.ca_pem is not None and not self.ca_path.exists():
            self.ca_path.write_bytes(self.ca_pem)  # for REQUESTS_CA_BUNDLE
        return self

    @property
    def running(self) -> bool:
        return self._server is not None

    # --- the namespace's contents -------------------------------------------------------------

    def add_policy(self, name: str, key: str, *claims: str) -> None:
        with self.namespace.lock:
            self.namespace.rules[name] = (key, frozenset(claims))

    def allow_bearer(self, token: str) -> None:
        with self.namespace.lock:
            self.namespace.bearer_tokens.add(token)

    def set_queue(self, name: str, active: int = 0, **other: int) -> None:
        """Create the queue, or set its counts (dead_letter, scheduled, transfer...)."""
        with self.namespace.lock:
            self.namespace.queues[name.lower()] = Counts(active, **other)
            self.namespace.names[name.lower()] = name

    def delete_queue(self, name: str) -> None:
        with self.namespace.lock:
            self.namespace.queues.pop(name.lower(), None)
            self.namespace.names.pop(name.lower(), None)

    def set_subscription(self, topic: str, name: str, active: int = 0, **other: int) -> None:
        """Create the topic and subscription as needed, or set the subscription's counts."""
        with self.namespace.lock:
            self.namespace.topics.setdefault(topic.lower(), {})[name.lower()] = Counts(
                active, **other
            )

    @property
    def seen(self) -> list[str]:
        """Every request received, as "GET /path?query"."""
        with self.namespace.lock:
            return list(self.namespace.requests)

    # --- connection ---------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return f"{HOST}:{self.port}"

    def connection_string(self, rule: str = ROOT_RULE, key: str | None = None) -> str:
        secret = self.key if key is None else key
        return f"Endpoint=sb://{self.host}/;SharedAccessKeyName={rule};SharedAccessKey={secret}"


class RealNamespace:
    """A real Service Bus namespace (E2E_SERVICEBUS_CONNECTION_STRING: a policy with Manage,
    Send and Listen) behind the stand-in's interface, so the end-to-end tests run against both.

    Queues are created by the tests with a prefix of their own and deleted by `close()`; counts
    are set by sending, or receiving and deleting, messages. It cannot be stopped: the outage
    test runs against the stand-in only. Not run here (no namespace is reachable from CI).
    """

    def __init__(self, connection_string: str) -> None:
        from azure.servicebus import ServiceBusClient
        from azure.servicebus.management import ServiceBusAdministrationClient

        self._connection = connection_string
        self._admin = ServiceBusAdministrationClient.from_connection_string(connection_string)
        self._client = ServiceBusClient.from_connection_string(connection_string)
        self._created: set[str] = set()
        self.ca_path: Path | None = None

    def connection_string(self, rule: str = "", key: str | None = None) -> str:
        if key is None:
            return self._connection
        parts = [
            p for p in self._connection.split(";") if p and not p.startswith("SharedAccessKey=")
        ]
        return ";".join([*parts, f"SharedAccessKey={key}"])

    def set_queue(self, name: str, active: int = 0, **other: int) -> None:
        from azure.servicebus import ServiceBusMessage

        if name not in self._created:
            self._admin.create_queue(name)
            self._created.add(name)
        now = self._admin.get_queue_runtime_properties(name).active_message_count or 0
        if active > now:
            with self._client.get_queue_sender(name) as sender:
                sender.send_messages([ServiceBusMessage("m") for _ in range(active - now)])
        elif active < now:
            with self._client.get_queue_receiver(name, receive_mode="receiveanddelete") as rx:
                left = now - active
                while left > 0:
                    left -= len(rx.receive_messages(max_message_count=left, max_wait_time=5))

    def delete_queue(self, name: str) -> None:
        self._admin.delete_queue(name)
        self._created.discard(name)

    def close(self) -> None:
        for name in list(self._created):
            self.delete_queue(name)
        self._client.close()
        self._admin.close()
