"""Kubernetes access: the only module that imports `kubernetes`.

The daemon reads and writes replicas through the apps/v1 `scale` subresource only, so its RBAC can
be `get`/`patch` on `deployments/scale` and nothing on the Deployments themselves.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.util.retry import Retry

from eventscaler import retry

logger = logging.getLogger(__name__)

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
MERGE_PATCH = "application/merge-patch+json"
DEFAULT_TIMEOUT_SECONDS = 10.0


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


def build_api_client(access: ClusterAccess, pool_size: int = 16) -> client.ApiClient:
    """One API client for the whole process: the in-cluster account in a pod, else a kubeconfig.

    An explicit --kubeconfig wins even in a pod; without one the client's own default applies
    (the KUBECONFIG variable, then ~/.kube/config).
    """
    configuration = client.Configuration()
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
    # Retries are ours (eventscaler.retry: bounded by the tick, Retry-After honoured within it);
    # urllib3's own would sleep a whole Retry-After and retry a PATCH blindly.
    configuration.retries = Retry(total=0, redirect=0, respect_retry_after_header=False)
    return client.ApiClient(configuration)


@dataclass(frozen=True)
class DeploymentView:
    """The few fields of a Deployment the daemon needs."""

    replicas: int
    annotations: dict[str, str]
    uid: str


class DeploymentScaler:
    """Reads a Deployment (replicas and pause annotations) and sets its replicas through the
    `scale` subresource, so the only write permission needed is `patch` on `deployments/scale`."""

    def __init__(
        self, api_client: client.ApiClient, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    ) -> None:
        self._apps = client.AppsV1Api(api_client)
        self._timeout = timeout_seconds

    def read(self, namespace: str, name: str) -> DeploymentView:
        """One GET of the Deployment. The annotations (pause) live on it, not on its Scale, and
        one read beats two; only three fields are parsed, not the whole pod template."""
        response = self._call(
            "get",
            namespace,
            name,
            lambda: self._apps.read_namespaced_deployment(
                name,
                namespace,
                _preload_content=False,
                _request_timeout=retry.call_timeout(self._timeout),
            ),
        )
        try:
            body = json.loads(response.data)
            metadata, spec = body.get("metadata") or {}, body.get("spec") or {}
            return DeploymentView(
                # A missing field reads as 0, never as "unknown": the API server always sets it.
                replicas=int(spec.get("replicas") or 0),
                annotations=dict(metadata.get("annotations") or {}),
                uid=str(metadata.get("uid", "")),
            )
        except (ValueError, TypeError, AttributeError) as exc:
            raise KubeError(
                "BadResponse", f"get {namespace}/{name}: unreadable reply: {exc}"
            ) from None

    def set_replicas(self, namespace: str, name: str, replicas: int) -> None:
        # A merge patch of spec.replicas alone: no resourceVersion, so the deployment controller's
        # own status updates between our read and write cannot make it fail with 409.
        self._call(
            "patch",
            namespace,
            name,
            lambda: self._apps.patch_namespaced_deployment_scale(
                name,
                namespace,
                {"spec": {"replicas": replicas}},
                _content_type=MERGE_PATCH,
                _request_timeout=retry.call_timeout(self._timeout),
            ),
        )

    def check_reachable(self) -> None:
        """Cheap call proving the API server answers (used by readiness)."""
        self._call(
            "get",
            "",
            "version",
            lambda: client.VersionApi(self._apps.api_client).get_code(
                _request_timeout=self._timeout
            ),
        )

    @staticmethod
    def _call(verb: str, namespace: str, name: str, call: Any) -> Any:
        try:
            return retry.call(call, transient_failure)
        except ApiException as exc:
            raise _api_error(verb, namespace, name, exc) from None
        except urllib3.exceptions.HTTPError as exc:
            raise KubeError(
                "Unreachable", f"cannot {verb} {namespace}/{name}: {type(exc).__name__}"
            ) from None


EVENT_COMPONENT = "eventscaler"
MAX_EVENT_MESSAGE = 1024  # the API server rejects longer event messages


class EventRecorder:
    """Writes core/v1 Events about a Deployment, as `kubectl describe` and `kubectl events`
    show them (the HPA writes its SuccessfulRescale events the same way)."""

    def __init__(
        self,
        api_client: client.ApiClient,
        instance: str,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self._core = client.CoreV1Api(api_client)
        self._instance = instance
        self._timeout = timeout_seconds

    def record(
        self, namespace: str, name: str, uid: str, kind: str, reason: str, message: str
    ) -> None:
        now = datetime.now(UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            # kubectl's naming: the object's name and a hex timestamp; valid for both events APIs.
            "metadata": {"name": f"{name}.{time.time_ns():x}", "namespace": namespace},
            "involvedObject": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": name,
                "namespace": namespace,
                "uid": uid,
            },
            "reason": reason,
            "message": message[:MAX_EVENT_MESSAGE],
            "type": kind,
            "source": {"component": EVENT_COMPONENT},
            "reportingComponent": EVENT_COMPONENT,
            "reportingInstance": self._instance,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            self._core.create_namespaced_event(namespace, body, _request_timeout=self._timeout)
        except ApiException as exc:
            raise _api_error("create event for", namespace, name, exc) from None
        except urllib3.exceptions.HTTPError as exc:
            raise KubeError("Unreachable", f"cannot create event: {type(exc).__name__}") from None


RETRYABLE_STATUSES = {429, 500, 502, 503, 504}


def transient_failure(exc: Exception) -> retry.Transient | None:
    """Connection errors, timeouts, 5xx and 429 (with its Retry-After) are worth another try."""
    if isinstance(exc, urllib3.exceptions.HTTPError):
        return retry.Transient()
    if isinstance(exc, ApiException) and exc.status in RETRYABLE_STATUSES:
        return retry.Transient(_retry_after(exc))
    return None


def _retry_after(exc: ApiException) -> float | None:
    headers = exc.headers or {}
    value = headers.get("Retry-After") or headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare from the API server; use our own backoff


def _api_error(verb: str, namespace: str, name: str, exc: ApiException) -> KubeError:
    """Turn an ApiException into a one-line error; the server's Status message says it best."""
    message, reason = "", ""
    try:
        body = json.loads(exc.body or "{}")
        message, reason = str(body.get("message", "")), str(body.get("reason", ""))
    except (ValueError, AttributeError):
        pass
    status = exc.status or 0
    if status == 404:
        return KubeError("NotFound", f"Deployment {namespace}/{name} not found", 404)
    reason = reason or {401: "Unauthorized", 403: "Forbidden", 409: "Conflict"}.get(
        status, exc.reason or "Error"
    )
    detail = message or exc.reason or "no details"
    return KubeError(reason, f"{verb} {namespace}/{name}: {status} {reason}: {detail}", status)


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
        api_client: client.ApiClient,
        namespace: str,
        name: str,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self._api = client.CoordinationV1Api(api_client)
        self.namespace = namespace
        self.name = name
        self._timeout = timeout_seconds

    def get(self) -> LeaseRecord | None:
        try:
            lease = self._api.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=self._timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _lease_error("get", self.namespace, self.name, exc) from None
        except urllib3.exceptions.HTTPError as exc:
            raise KubeError("Unreachable", f"cannot get lease: {type(exc).__name__}") from None
        spec = lease.spec
        return LeaseRecord(
            holder=(spec.holder_identity or "") if spec else "",
            lease_duration_seconds=(spec.lease_duration_seconds or 0) if spec else 0,
            transitions=(spec.lease_transitions or 0) if spec else 0,
            resource_version=lease.metadata.resource_version,
            acquire_time=_microtime(spec.acquire_time) if spec else None,
        )

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
        try:
            if record.resource_version is None:
                self._api.create_namespaced_lease(
                    self.namespace, body, _request_timeout=self._timeout
                )
            else:
                metadata["resourceVersion"] = record.resource_version
                self._api.replace_namespaced_lease(
                    self.name, self.namespace, body, _request_timeout=self._timeout
                )
        except ApiException as exc:
            raise _lease_error("write", self.namespace, self.name, exc) from None
        except urllib3.exceptions.HTTPError as exc:
            raise KubeError("Unreachable", f"cannot write lease: {type(exc).__name__}") from None


def _lease_error(verb: str, namespace: str, name: str, exc: ApiException) -> KubeError:
    error = _api_error(verb, namespace, name, exc)
    return KubeError(error.reason, f"lease: {error}", error.status)


def _microtime(value: Any) -> str | None:
    """A Lease time as the API's MicroTime string (the client parses it into a datetime)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
