"""HTTP layer of the Kubernetes API test server: requests in, apiserver-shaped answers out.

Reads each request as the apiserver's RequestInfoFactory does (verb, resource, subresource,
namespace, name), then authenticates the bearer token, applies injected faults where the
priority-and-fairness filter would, authorises with RBAC, and dispatches to the store. Answers
are compact JSON with the apiserver's headers; watches stream JSON lines in HTTP/1.1 chunks.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import select
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from tests.support import kubeapi_errors as errors
from tests.support.kubeapi_errors import ApiError
from tests.support.kubeapi_model import ALL_VERBS, ResourceType
from tests.support.kubeapi_rbac import RbacPolicy, RequestAttributes, forbidden_message
from tests.support.kubeapi_store import APPLY_PATCH, Store

logger = logging.getLogger(__name__)

Obj = dict[str, Any]

HOST = "127.0.0.1"
DEFAULT_WATCH_TIMEOUT_SECONDS = 1800  # the apiserver's --min-request-timeout
WATCH_POLL_SECONDS = 0.5  # how often an idle watch checks for a gone client or a stop
PUBLIC_PATHS = re.compile(r"^/(api|apis|version|healthz|livez|readyz|openapi)(/.*)?$")
TRUE_VALUES = ("1", "t", "T", "true", "TRUE", "True")  # Go's strconv.ParseBool
SERVER_VERSION = {
    "major": "1",
    "minor": "28",
    "gitVersion": "v1.28.15",
    "gitCommit": "841856557ef0f6a399096c42635d114d6f2cf7f4",
    "gitTreeState": "clean",
    "buildDate": "2024-10-22T20:24:53Z",
    "goVersion": "go1.22.8",
    "compiler": "gc",
    "platform": "linux/amd64",
}


@dataclass(frozen=True)
class User:
    """An authenticated identity; `admin` (system:masters) bypasses RBAC."""

    name: str
    groups: tuple[str, ...]
    admin: bool = False


@dataclass
class Fault:
    """One injected fault (see KubeApiServer.inject_fault); `remaining` None hits forever."""

    id: int
    pattern: re.Pattern[str]
    method: str | None
    status: int | None
    retry_after: int | None
    delay: float
    drop: bool
    remaining: int | None


@dataclass(frozen=True)
class RequestInfo:
    """How the apiserver's RequestInfoFactory reads a request (verb, resource, namespace...)."""

    path: str
    verb: str
    resource_request: bool
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    extra_parts: bool = False  # more path segments than any resource has
    authz_name: str = ""  # list/watch with fieldSelector metadata.name=X authorise as X


def parse_request_info(method: str, path: str, query: dict[str, str]) -> RequestInfo:
    verb = {
        "GET": "get",
        "HEAD": "get",
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete",
    }.get(method, method.lower())
    parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return RequestInfo(path=path, verb=verb, resource_request=False)
    if not rest:
        return RequestInfo(path=path, verb=verb, resource_request=False)
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        # /namespaces/{ns}/{resource}...; but /namespaces/{name}[/status|finalize] is a namespace
        if len(rest) > 2 and rest[2] not in ("status", "finalize"):
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    authz_name = name
    if not name and verb == "get":
        verb = "watch" if query.get("watch") in TRUE_VALUES else "list"
        match = re.fullmatch(r"metadata\.name==?([^,]+)", query.get("fieldSelector", ""))
        authz_name = match[1] if match else ""
    if not name and verb == "delete":
        verb = "deletecollection"
    return RequestInfo(
        path=path,
        verb=verb,
        resource_request=True,
        api_group=group,
        api_version=version,
        resource=resource,
        subresource=subresource,
        namespace=namespace,
        name=name,
        extra_parts=len(rest) > 3,
        authz_name=authz_name,
    )


def discovery(path: str, port: int, served: list[ResourceType]) -> Obj | None:
    """Legacy discovery documents (/api, /apis, /apis/G, /api/v1, /apis/G/V) of the `served`
    resource types (the built-in ones and those of the CRDs)."""
    groups: dict[str, list[ResourceType]] = {}
    for rt in served:
        groups.setdefault(rt.api_version, []).append(rt)
    if path == "/api":
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{HOST}:{port}"}
            ],
        }

    def group_doc(name: str) -> Obj:
        versions = list(dict.fromkeys(rt.version for rt in served if rt.group == name))
        docs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
        return {"name": name, "versions": docs, "preferredVersion": docs[0]}

    names = sorted({rt.group for rt in served if rt.group})
    if path == "/apis":
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group_doc(n) for n in names]}
    match = re.fullmatch(r"/apis/([^/]+)", path)
    if match and match[1] in names:
        return {"kind": "APIGroup", "apiVersion": "v1", **group_doc(match[1])}
    match = re.fullmatch(r"/api/(v1)|/apis/([^/]+/[^/]+)", path)
    if not match or (match[1] or match[2]) not in groups:
        return None
    resources: list[Obj] = []
    for rt in groups[match[1] or match[2]]:
        resources.append(
            {
                "name": rt.plural,
                "singularName": rt.singular,
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": list(ALL_VERBS),
                "shortNames": list(rt.short_names),
            }
        )
        for sub in sorted(rt.subresources):
            sub_doc: Obj = {
                "name": f"{rt.plural}/{sub}",
                "singularName": "",
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": ["get", "patch", "update"],
            }
            if sub == "scale":
                sub_doc.update(group="autoscaling", version="v1", kind="Scale")
            resources.append(sub_doc)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": match[1] or match[2],
        "resources": resources,
    }


class Frontend:
    """What the HTTP layer needs besides the store: credentials, the authorizer, injected
    faults, the request log and the open connections. One lock guards all of it."""

    def __init__(self, store: Store, rbac: RbacPolicy | None) -> None:
        self.store = store
        self.rbac = rbac
        self.port = 0
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.requests: list[Obj] = []
        self.faults: list[Fault] = []
        self.users: dict[str, User] = {}
        self.connections: set[socket.socket] = set()
        # Priority-and-fairness headers every apiserver answer carries.
        self.flow_uid, self.priority_uid = str(uuid.uuid4()), str(uuid.uuid4())

    def log(self, entry: Obj) -> None:
        with self.lock:
            self.requests.append(entry)

    def take_fault(self, path: str, method: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.method not in (None, method) or not fault.pattern.search(path):
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self.faults.remove(fault)
                return fault
        return None

    def track(self, connection: socket.socket, add: bool) -> None:
        with self.lock:
            if add:
                self.connections.add(connection)
            else:
                self.connections.discard(connection)

    def authenticate(self, header: str) -> User:
        scheme, _, token = header.partition(" ")
        with self.lock:
            user = self.users.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise errors.unauthorized()
        return user

    def authorize(self, user: User, info: RequestInfo) -> tuple[str, int] | None:
        """None when allowed without a rule (admin, no RBAC, discovery); 403 when denied."""
        if user.admin or self.rbac is None:
            return None
        if not info.resource_request and PUBLIC_PATHS.match(info.path):
            return None  # system:discovery and system:public-info-viewer, for all users
        attrs = RequestAttributes(
            user=user.name,
            groups=user.groups,
            verb=info.verb,
            path=info.path,
            resource_request=info.resource_request,
            api_group=info.api_group,
            resource=info.resource,
            subresource=info.subresource,
            namespace=info.namespace,
            name=info.authz_name,
        )
        rule, reason = self.rbac.authorize(attrs)
        if rule is not None:
            return (rule.role, rule.index)
        why = forbidden_message(attrs) + (f": {reason}" if reason else "")
        raise errors.forbidden(
            info.api_group, info.resource if info.resource_request else "", info.authz_name, why
        )

    def resource(self, info: RequestInfo) -> ResourceType:
        rt = self.store.find_resource(info.api_group, info.api_version, info.resource)
        if rt is None or info.extra_parts:
            raise errors.route_not_found()
        if info.subresource and info.subresource not in rt.subresources:
            if rt.custom:
                # The CR handler serves only the subresources its CRD declares: the others are
                # a NotFound of the object itself, though it exists.
                raise errors.not_found(rt, info.name)
            raise errors.route_not_found()
        return rt

    def dispatch(
        self, info: RequestInfo, query: dict[str, str], raw: bytes, content_type: str
    ) -> tuple[int, Any]:
        """Serve a non-watch request: (HTTP status, JSON-able body) or raise ApiError."""
        if not info.resource_request:
            return self.non_resource(info)
        rt = self.resource(info)
        verb, name, sub = info.verb, info.name, info.subresource or None
        if rt.namespaced and not info.namespace and (name or verb != "list"):
            # /apis/apps/v1/deployments only lists (and watches) across namespaces.
            raise errors.route_not_found() if name else errors.method_not_allowed()
        namespace = info.namespace if rt.namespaced else ""
        dry_run = query.get("dryRun", "")
        if dry_run not in ("", "All"):
            raise errors.bad_request(f'Invalid dryRun value: "{dry_run}", supported: "All"')
        labels, fields = query.get("labelSelector", ""), query.get("fieldSelector", "")
        store = self.store
        if verb == "get":
            return 200, store.get(rt, namespace, name, sub)
        if verb == "list":
            try:
                limit = int(query.get("limit") or 0)
            except ValueError as exc:
                raise errors.bad_request(f"invalid limit: {exc}") from exc
            page = store.list_objects(
                rt, namespace or None, labels, fields, limit, query.get("continue", "")
            )
            return 200, page
        if verb == "create" and not name:
            return 201, store.create(rt, namespace, json_body(raw, content_type), bool(dry_run))
        if verb == "update" and name:
            body = json_body(raw, content_type)
            return 200, store.update(rt, namespace, name, body, sub, bool(dry_run))
        if verb == "patch" and name:
            field_manager = query.get("fieldManager", "")
            result, created = store.patch(
                rt, namespace, name, sub, content_type, raw, field_manager, bool(dry_run)
            )
            return (201 if created else 200), result
        if verb == "delete" and not sub:
            options = parse_body(raw, "application/json")
            return 200, store.delete(rt, namespace, name, options, bool(dry_run))
        if verb == "deletecollection":
            return 200, store.delete_collection(
                rt, namespace or None, labels, fields, bool(dry_run)
            )
        raise errors.method_not_allowed()

    def non_resource(self, info: RequestInfo) -> tuple[int, Any]:
        if info.verb != "get":
            raise errors.method_not_allowed()
        path = info.path.rstrip("/") or "/"
        if path == "/version":
            return 200, SERVER_VERSION
        if path in ("/healthz", "/livez", "/readyz"):
            return 200, "ok"
        document = discovery(path, self.port, self.store.resources())
        if document is None:
            raise errors.route_not_found()
        return 200, document


class HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    front: Frontend

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients dropping connections (and failed TLS handshakes) are normal here: no stderr.
        logger.debug("connection from %s ended with an error", client_address, exc_info=True)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked watches, as clients expect
    server: HttpServer

    # --- plumbing ----------------------------------------------------------------------------

    def setup(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if isinstance(self.request, ssl.SSLSocket):
            # Handshake here, in the connection's thread, not in the accept loop.
            self.request.settimeout(10)
            self.request.do_handshake()
            self.request.settimeout(None)
        super().setup()
        self.server.front.track(self.request, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.front.track(self.request, False)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def send_response(self, code: int, message: str | None = None) -> None:
        # Like the stdlib, minus the `Server:` header a kube-apiserver never sends.
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())

    def _common_headers(self, content_type: str = "application/json") -> None:
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Content-Type", content_type)
        self.send_header("X-Kubernetes-Pf-Flowschema-Uid", self.server.front.flow_uid)
        self.send_header("X-Kubernetes-Pf-Prioritylevel-Uid", self.server.front.priority_uid)

    def _send(self, code: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        if isinstance(payload, str):
            data, content_type = payload.encode(), "text/plain; charset=utf-8"
        else:
            data = (json.dumps(payload, separators=(",", ":")) + "\n").encode()
            content_type = "application/json"
        self.send_response(code)
        self._common_headers(content_type)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _drop(self) -> None:
        """Close the connection without answering (a crashed apiserver or a cut network)."""
        self.close_connection = True
        with contextlib.suppress(OSError):  # already gone is fine
            self.connection.shutdown(socket.SHUT_RDWR)

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    # --- one request -------------------------------------------------------------------------

    def _handle(self) -> None:
        front = self.server.front
        split = urlsplit(self.path)
        path = split.path or "/"
        query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        raw = self._read_body()
        content_type = self.headers.get("Content-Type", "")
        entry: Obj = {
            "method": self.command,
            "path": path,
            "query": query,
            "content_type": content_type,
            "body": parse_body(raw, content_type),
            "status": None,
            "user": None,
            "verb": None,
            "resource": None,
            "subresource": None,
            "namespace": None,
            "name": None,
            "api_group": None,
            "rbac_rule": None,
            "fault": None,
            "time": time.time(),
        }
        try:
            info = parse_request_info(self.command, path, query)
            entry.update(verb=info.verb, path=path)
            if info.resource_request:
                entry.update(
                    resource=info.resource,
                    subresource=info.subresource or None,
                    namespace=info.namespace or None,
                    name=info.name or None,
                    api_group=info.api_group,
                )
            user = front.authenticate(self.headers.get("Authorization", ""))
            entry["user"] = user.name
            fault = front.take_fault(path, self.command)
            if fault is not None:
                entry["fault"] = fault.id
                if fault.delay:
                    front.stopping.wait(fault.delay)
                if fault.drop:
                    front.log(entry)
                    self._drop()
                    return
                if fault.status is not None:
                    rt = front.store.find_resource(info.api_group, info.api_version, info.resource)
                    retry_after = fault.retry_after
                    if retry_after is None and fault.status == 429:
                        retry_after = 1  # priority-and-fairness always sends one
                    raise errors.fault_error(fault.status, rt, info.name, retry_after)
            entry["rbac_rule"] = front.authorize(user, info)
            if info.verb == "watch" and info.resource_request:
                self._watch(info, query, entry)
                return
            code, payload = front.dispatch(info, query, raw, content_type)
            headers: dict[str, str] = {}
        except ApiError as exc:
            code, payload, headers = exc.code, exc.status(), exc.headers
        except Exception as exc:  # a server bug: answer like the apiserver, keep details in logs
            logger.exception("kubeapi: %s %s failed", self.command, self.path)
            error = errors.internal_error(str(exc))
            code, payload, headers = error.code, error.status(), {}
        # Logged before answering, so a test that got the answer always finds its request.
        entry["status"] = code
        front.log(entry)
        try:
            self._send(code, payload, headers)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True

    def _watch(self, info: RequestInfo, query: dict[str, str], entry: Obj) -> None:
        front = self.server.front
        rt = front.resource(info)
        namespace = info.namespace if rt.namespaced and info.namespace else None
        labels, fields = query.get("labelSelector", ""), query.get("fieldSelector", "")
        try:
            timeout = float(query.get("timeoutSeconds") or DEFAULT_WATCH_TIMEOUT_SECONDS)
        except ValueError as exc:
            raise errors.bad_request(f"invalid timeoutSeconds: {exc}") from exc
        initial, last = front.store.watch_start(
            rt, namespace, labels, fields, query.get("resourceVersion", "")
        )
        entry["status"] = 200
        front.log(entry)
        self.send_response(200)
        self._common_headers()
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = True
        deadline = time.monotonic() + timeout
        try:
            for initial_event in initial:
                self._chunk(initial_event)
            while last >= 0 and not front.stopping.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._client_gone():
                    break
                events = front.store.wait_events(last, min(remaining, WATCH_POLL_SECONDS))
                if events is None:
                    self._chunk(front.store.expired_event(last))
                    break
                for event in events:
                    last = event.rv
                    out = front.store.translate(rt, event, namespace, labels, fields)
                    if out is not None:
                        self._chunk(out)
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            logger.debug("watch client went away", exc_info=True)

    def _chunk(self, event: Obj) -> None:
        data = (json.dumps(event, separators=(",", ":")) + "\n").encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _client_gone(self) -> bool:
        # A watch client sends nothing after its request: readable means closed (EOF).
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)


def parse_body(raw: bytes, content_type: str) -> Any:
    if not raw:
        return None
    try:
        if content_type.startswith(APPLY_PATCH) or "yaml" in content_type:
            return yaml.safe_load(raw)
        return json.loads(raw)
    except (ValueError, yaml.YAMLError):
        return None


def json_body(raw: bytes, content_type: str) -> Any:
    """Decode a POST/PUT body (JSON or YAML, as the apiserver accepts both)."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in ("", "application/json", "application/yaml", "*/*"):
        raise errors.unsupported_media_type(
            ["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"]
        )
    try:
        if media == "application/yaml":
            return yaml.safe_load(raw)
        return json.loads(raw) if raw else None
    except (ValueError, yaml.YAMLError) as exc:
        raise errors.bad_request(f"couldn't get version/kind; json parse error: {exc}") from exc
