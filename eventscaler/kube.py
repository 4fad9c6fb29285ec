"""Kubernetes access: the only module that imports `kubernetes`.

From the `kubernetes` package only `kubernetes.config` (kubeconfig, in-cluster account, token
refresh of exec plugins) and its ApiClient (TLS, auth headers, the urllib3 connection pool) are
used. Requests go out raw through `ApiClient.call_api` and their JSON is parsed here: the generated
API classes (AppsV1Api, CoreV1Api...) build hundreds of pydantic models when first touched, about
2 s of CPU at start-up for the few fields the daemon reads.

Every scale target goes through one generic client: a kind's plural and whether it has a `scale`
subresource come from API discovery, once per (apiVersion, kind); replicas are written only by a
merge patch of `/scale`, so the RBAC can be `patch` on `KIND/scale` and nothing else of the object.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import urllib3
from kubernetes import config
from kubernetes.client.api_client import ApiClient
from kubernetes.client.configuration import Configuration
from kubernetes.client.exceptions import ApiException
from urllib3.util.retry import Retry

from eventscaler import retry
from eventscaler.config import ScaleTargetRef
from eventscaler.policy import PAUSE_ANNOTATIONS

logger = logging.getLogger(__name__)

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
DEFAULT_TIMEOUT_SECONDS = 10.0
# Kinds whose Scale is, by the Kubernetes API's own definition, `.spec.replicas` of the object:
# for these one GET of the object gives the replicas and the pause annotations. Any other kind (a
# custom resource maps its Scale through its CRD's specReplicasPath) is read through `/scale`.
REPLICAS_IN_SPEC = {("apps", "Deployment"), ("apps", "StatefulSet"), ("apps", "ReplicaSet"),
                    ("", "ReplicationController")}  # fmt: skip


class KubeError(Exception):
    """A Kubernetes call failed; `reason` is a short word (NotFound, Forbidden, Unreachable...)."""

    def __init__(self, reason: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class ClusterAccess:
    """How to reach the API server; `describe()` is safe to log (no token)."""

    kubeconfig: str | None = None
    context: str | None = None

    def describe(self) -> str:
        if self.kubeconfig is None and self.context is None and running_in_cluster():
            return "in-cluster service account"
        path = self.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        return f"kubeconfig {path}" + (f" (context {self.context})" if self.context else "")


def running_in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and SERVICE_ACCOUNT_TOKEN.exists()


def build_api_client(access: ClusterAccess, pool_size: int = 16) -> ApiClient:
    """One API client for the whole process: the in-cluster account in a pod, else a kubeconfig.

    An explicit --kubeconfig wins even in a pod; without one the client's own default applies
    (the KUBECONFIG variable, then ~/.kube/config).
    """
    configuration = Configuration()
    try:
        if access.kubeconfig is None and access.context is None and running_in_cluster():
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(
                config_file=access.kubeconfig,
                context=access.context,
                client_configuration=configuration,
                persist_config=False,
            )
    except (config.ConfigException, OSError, ValueError) as exc:
        raise KubeError("ConfigError", f"cannot load {access.describe()}: {exc}") from None
    # Rules are evaluated from a thread pool: one pooled connection per worker avoids reconnects.
    configuration.connection_pool_maxsize = max(pool_size, 4)
    _keep_proxy_as_loaded(configuration)
    # Retries are ours (eventscaler.retry: bounded by the tick, Retry-After honoured within it);
    # urllib3's own would sleep a whole Retry-After and retry a PATCH blindly.
    configuration.retries = Retry(total=0, redirect=0, respect_retry_after_header=False)
    return ApiClient(configuration)


def _keep_proxy_as_loaded(configuration: Configuration) -> None:
    """Resolve the proxy from the environment once, when the config is loaded, not per request.

    The package's token hook (kubeconfig and in-cluster alike) sets `host` again before every
    request, and setting `host` re-reads every proxy variable of the environment (urllib's
    getproxies scans all of os.environ): about a tenth of a GET's CPU here, more in a pod, whose
    environment holds seven variables per Service of its namespace. The proxy found at load time
    stays in force, as it would if the environment were read every time: it does not change.
    """
    if getattr(configuration, "_proxy_from_env", False):
        configuration._proxy_from_env = False


# ---------------------------------------------------------------------------------------------
# Raw JSON requests


class HttpFailure(Exception):
    """A non-2xx answer, before it is worded as a KubeError."""

    def __init__(self, status: int, reason: str, body: bytes, headers: Mapping[str, str]) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.body = body
        self.headers = headers


class RawApi:
    """JSON in, JSON out, through the package's ApiClient: its auth (the bearer token, refreshed
    by the kubeconfig's exec plugin or the in-cluster token file as the package does it), its TLS
    settings and its connection pool. Raises HttpFailure, or urllib3's errors."""

    def __init__(self, api_client: ApiClient) -> None:
        self.api_client = api_client

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = JSON,
        timeout: float | None = None,
    ) -> Any:
        headers = {"Accept": JSON}
        if body is not None:
            headers["Content-Type"] = content_type
        # param_serialize adds the Authorization header (calling the token refresh hook first).
        method, url, headers, body, _ = self.api_client.param_serialize(
            method, path, header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        response = self.api_client.call_api(method, url, headers, body, _request_timeout=timeout)
        data = response.read()
        if not 200 <= response.status <= 299:
            raise HttpFailure(response.status, response.reason or "", data, response.headers)
        try:
            return json.loads(data) if data else {}
        except ValueError as exc:
            raise KubeError("BadResponse", f"{method} {path}: unreadable reply: {exc}") from None


def transient_failure(exc: Exception) -> retry.Transient | None:
    """Connection errors, timeouts, 5xx and 429 (with its Retry-After) are worth another try."""
    if isinstance(exc, urllib3.exceptions.HTTPError):
        return retry.Transient()
    if isinstance(exc, HttpFailure):
        return retry.after_status(exc.status, exc.headers)
    return None


def call(verb: str, what: str, send: Callable[[], Any], retried: bool = True) -> Any:
    """Run `send` (with retries of transient failures) and word its failure as a KubeError.

    `what` names the object for the messages: "Deployment default/web" (a 404 then reads
    "Deployment default/web not found").
    """
    try:
        return retry.call(send, transient_failure) if retried else send()
    except HttpFailure as failure:
        raise api_error(verb, what, failure) from None
    except urllib3.exceptions.HTTPError as exc:
        raise KubeError("Unreachable", f"cannot {verb} {what}: {type(exc).__name__}") from None
    except ApiException as exc:  # the REST layer's own (TLS failures): the first line says it
        detail = str(exc.reason or "").split("\n", 1)[0] or "error"
        raise KubeError("Unreachable", f"cannot {verb} {what}: {detail}") from None


def api_error(verb: str, what: str, failure: HttpFailure) -> KubeError:
    """A one-line error; the server's Status message says it best."""
    message, reason = "", ""
    try:
        body = json.loads(failure.body or b"{}")
        message, reason = str(body.get("message", "")), str(body.get("reason", ""))
    except (ValueError, AttributeError):
        pass
    status = failure.status
    if status == 404:
        return KubeError("NotFound", f"{what} not found", 404)
    reason = reason or {401: "Unauthorized", 403: "Forbidden", 409: "Conflict"}.get(
        status, failure.reason or "Error"
    )
    detail = message or failure.reason or "no details"
    return KubeError(reason, f"{verb} {what}: {status} {reason}: {detail}", status)


def deployment_lookup(
    api_client: ApiClient, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
) -> Callable[[str, str], Mapping[str, Any] | None]:
    """`convert --from-cluster`: (namespace, name) -> the Deployment as JSON, None if missing.
    A GET of the Deployment only: the Secrets it names are never read."""
    api = RawApi(api_client)

    def lookup(namespace: str, name: str) -> Mapping[str, Any] | None:
        path = f"/apis/apps/v1/namespaces/{quote(namespace)}/deployments/{quote(name)}"
        what = f"Deployment {namespace}/{name}"
        try:
            found = call("get", what, lambda: api.request("GET", path, timeout=timeout_seconds))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return found if isinstance(found, Mapping) else None

    return lookup


# ---------------------------------------------------------------------------------------------
# Scale targets


@dataclass(frozen=True)
class TargetView:
    """What a tick needs of its target: replicas, pause annotations and uid (for Events)."""

    replicas: int
    annotations: dict[str, str]
    uid: str


def describe_kind(ref: ScaleTargetRef) -> str:
    return f"kind {ref.kind} ({ref.api_version})"


class KindResolver:
    """The plural of a kind that has a scale subresource, from API discovery (`/api/v1`,
    `/apis/G/V`: an APIResourceList lists `PLURAL/scale` as its own entry).

    One discovery GET per (apiVersion, kind) for the life of the process; only a usable answer is
    kept, so a CRD installed (or given a scale subresource) later is found on the next tick, and
    `forget` drops a kind whose object paths answer 404 (its CRD may have gone)."""

    def __init__(self, api: RawApi, timeout_seconds: float) -> None:
        self._api = api
        self._timeout = timeout_seconds
        self._known: dict[tuple[str, str], str] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.Lock()

    def plural(self, ref: ScaleTargetRef) -> str:
        key = (ref.api_version, ref.kind)
        found = self._known.get(key)
        if found is not None:
            return found
        with self._lock:
            kind_lock = self._locks.setdefault(key, threading.Lock())
        with kind_lock:  # many rules on one new kind: one discovery request, not one each
            found = self._known.get(key)
            if found is None:
                found = self._discover(ref)
                self._known[key] = found
            return found

    def forget(self, ref: ScaleTargetRef) -> None:
        self._known.pop((ref.api_version, ref.kind), None)

    def _discover(self, ref: ScaleTargetRef) -> str:
        path = f"/apis/{ref.group}/{ref.version}" if ref.group else f"/api/{ref.version}"
        what = f"discovery of {ref.api_version}"

        def send() -> Any:
            return self._api.request("GET", path, timeout=retry.call_timeout(self._timeout))

        try:
            document = call("get", what, send)
        except KubeError as exc:
            if exc.status == 404:
                message = f"{ref.api_version} is not served by this cluster (is its CRD installed?)"
                raise KubeError("NotFound", f"{describe_kind(ref)}: {message}", 404) from None
            raise
        return scalable_plural(ref, document)


def scalable_plural(ref: ScaleTargetRef, document: Any) -> str:
    """The kind's entry in an APIResourceList, checked to be something a rule can scale."""
    entries = document.get("resources") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise KubeError("BadResponse", f"discovery of {ref.api_version}: no resource list")
    names = {str(e.get("name", "")) for e in entries if isinstance(e, dict)}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("kind") != ref.kind:
            continue
        plural = str(entry.get("name", ""))
        if not plural or "/" in plural:
            continue  # a subresource (pods/binding is a Binding too)
        if not entry.get("namespaced"):
            message = f"{describe_kind(ref)} is cluster-scoped: rules scale namespaced objects"
            raise KubeError("ClusterScoped", message)
        if f"{plural}/scale" not in names:
            raise KubeError("NoScale", f"{describe_kind(ref)} has no scale subresource")
        return plural
    message = f"{describe_kind(ref)} is not served by this cluster"
    raise KubeError("NotFound", message, 404)


class ScaleTargetClient:
    """Reads a target (replicas and pause annotations) and sets its replicas through its `scale`
    subresource, for any kind that has one: Deployments, StatefulSets, custom resources.

    A read is one GET of the object for the built-in kinds of REPLICAS_IN_SPEC, and two (the
    object for its annotations, its Scale for the replicas) for any other kind. A write is one
    merge patch of `/scale`."""

    def __init__(self, api_client: ApiClient, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS):
        self._api = RawApi(api_client)
        self._timeout = timeout_seconds
        self.kinds = KindResolver(self._api, timeout_seconds)

    def read(self, namespace: str, ref: ScaleTargetRef) -> TargetView:
        path, what = self._object_path(namespace, ref), _what(namespace, ref)
        obj = self._send_or_forget(ref, "get", what, lambda: self._get(path))
        metadata, spec = _mapping(obj.get("metadata")), _mapping(obj.get("spec"))
        if (ref.group, ref.kind) in REPLICAS_IN_SPEC:
            replicas = spec.get("replicas")
        else:
            scale = self._send_or_forget(ref, "get", what, lambda: self._get(f"{path}/scale"))
            replicas = _mapping(scale.get("spec")).get("replicas")
        try:
            return TargetView(
                # Absent is 0: a Scale omits `spec.replicas` when it is 0 (omitempty).
                replicas=int(replicas or 0),
                annotations=_pause_annotations(_mapping(metadata.get("annotations"))),
                uid=str(metadata.get("uid", "")),
            )
        except (ValueError, TypeError) as exc:
            raise KubeError("BadResponse", f"get {what}: unreadable reply: {exc}") from None

    def set_replicas(self, namespace: str, ref: ScaleTargetRef, replicas: int) -> None:
        # A merge patch of spec.replicas alone: no resourceVersion, so a controller's own status
        # updates between our read and write cannot make it fail with 409.
        path = f"{self._object_path(namespace, ref)}/scale"

        def send() -> Any:
            return self._api.request(
                "PATCH", path, {"spec": {"replicas": replicas}}, MERGE_PATCH,
                retry.call_timeout(self._timeout),
            )  # fmt: skip

        self._send_or_forget(ref, "patch", _what(namespace, ref), send)

    def check_reachable(self) -> None:
        """Cheap call proving the API server answers (used by readiness)."""
        call("get", "version", lambda: self._api.request("GET", "/version", timeout=self._timeout))

    def _get(self, path: str) -> Any:
        return self._api.request("GET", path, timeout=retry.call_timeout(self._timeout))

    def _object_path(self, namespace: str, ref: ScaleTargetRef) -> str:
        plural = self.kinds.plural(ref)
        base = f"/apis/{ref.group}/{ref.version}" if ref.group else f"/api/{ref.version}"
        return f"{base}/namespaces/{quote(namespace)}/{plural}/{quote(ref.name)}"

    def _send_or_forget(
        self, ref: ScaleTargetRef, verb: str, what: str, send: Callable[[], Any]
    ) -> Any:
        try:
            answer = call(verb, what, send)
        except KubeError as exc:
            if exc.status == 404:
                self.kinds.forget(ref)  # a gone CRD (or its scale subresource): look again
            raise
        return _mapping(answer)


def _what(namespace: str, ref: ScaleTargetRef) -> str:
    return f"{ref.kind} {namespace}/{ref.name}"


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# ---------------------------------------------------------------------------------------------
# Events

EVENT_COMPONENT = "eventscaler"
MAX_EVENT_MESSAGE = 1024  # the API server rejects longer event messages


class EventRecorder:
    """Writes core/v1 Events about a scale target, as `kubectl describe` and `kubectl events`
    show them (the HPA writes its SuccessfulRescale events the same way)."""

    def __init__(
        self,
        api_client: ApiClient,
        instance: str,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self._api = RawApi(api_client)
        self._instance = instance
        self._timeout = timeout_seconds

    def record(
        self,
        namespace: str,
        ref: ScaleTargetRef,
        uid: str,
        event_type: str,
        reason: str,
        message: str,
    ) -> None:
        body = self._event_about(namespace, ref, uid)
        body.update(reason=reason, message=message[:MAX_EVENT_MESSAGE], type=event_type)
        path = f"/api/v1/namespaces/{quote(namespace)}/events"
        call(
            "create event for", _what(namespace, ref),
            lambda: self._api.request("POST", path, body, timeout=self._timeout), retried=False,
        )  # fmt: skip

    def _event_about(self, namespace: str, ref: ScaleTargetRef, uid: str) -> dict[str, Any]:
        """A new core/v1 Event on the target, with its real apiVersion and kind."""
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        involved = {"apiVersion": ref.api_version, "kind": ref.kind, "name": ref.name,
                    "namespace": namespace, "uid": uid}  # fmt: skip
        return {
            "apiVersion": "v1",
            "kind": "Event",
            # kubectl's naming: the object's name and a hex timestamp; valid for both events APIs.
            "metadata": {"name": f"{ref.name}.{time.time_ns():x}", "namespace": namespace},
            "involvedObject": involved,
            "source": {"component": EVENT_COMPONENT},
            "reportingComponent": EVENT_COMPONENT,
            "reportingInstance": self._instance,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }


# ---------------------------------------------------------------------------------------------
# Leases


@dataclass(frozen=True)
class LeaseRecord:
    """The fields of a coordination.k8s.io/v1 Lease that leader election uses."""

    holder: str
    lease_duration_seconds: int
    transitions: int
    resource_version: str | None = None
    acquire_time: str | None = None  # kept as the server sent it, so a renewal does not drop it


class LeaseClient:
    """Get, create and update one Lease (the leader-election lock)."""

    def __init__(
        self,
        api_client: ApiClient,
        namespace: str,
        name: str,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self._api = RawApi(api_client)
        self.namespace = namespace
        self.name = name
        self._timeout = timeout_seconds
        self._leases = f"/apis/coordination.k8s.io/v1/namespaces/{quote(namespace)}/leases"

    def get(self) -> LeaseRecord | None:
        path = f"{self._leases}/{quote(self.name)}"
        try:
            lease = self._call("get", lambda: self._api.request("GET", path, timeout=self._timeout))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        spec, metadata = _mapping(_mapping(lease).get("spec")), _mapping(lease.get("metadata"))
        try:
            return LeaseRecord(
                holder=str(spec.get("holderIdentity") or ""),
                lease_duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
                transitions=int(spec.get("leaseTransitions") or 0),
                resource_version=metadata.get("resourceVersion"),
                acquire_time=spec.get("acquireTime"),
            )
        except (ValueError, TypeError) as exc:
            raise KubeError("BadResponse", f"lease: unreadable reply: {exc}") from None

    def write(self, record: LeaseRecord, now_rfc3339: str, acquired: bool) -> None:
        """Create the Lease (no resourceVersion) or update it (409 if someone wrote in between)."""
        spec: dict[str, Any] = {
            "holderIdentity": record.holder,
            "leaseDurationSeconds": record.lease_duration_seconds,
            "leaseTransitions": record.transitions,
            "renewTime": now_rfc3339,
        }
        acquire_time = now_rfc3339 if acquired else record.acquire_time
        if acquire_time:
            spec["acquireTime"] = acquire_time
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata}
        body["spec"] = spec
        if record.resource_version is None:
            method, path = "POST", self._leases
        else:
            metadata["resourceVersion"] = record.resource_version
            method, path = "PUT", f"{self._leases}/{quote(self.name)}"
        self._call("write", lambda: self._api.request(method, path, body, timeout=self._timeout))

    def _call(self, verb: str, send: Callable[[], Any]) -> Any:
        # No retries: leader election tries again every retry period, on fresh state.
        try:
            return call(verb, f"Lease {self.namespace}/{self.name}", send, retried=False)
        except KubeError as exc:
            raise KubeError(exc.reason, f"lease: {exc}", exc.status) from None


def _pause_annotations(annotations: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in annotations.items() if k in PAUSE_ANNOTATIONS}
