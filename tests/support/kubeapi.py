"""A faithful Kubernetes API test server, for the tests, the demo and the benchmarks.

No real kube-apiserver can run here (see TESTING.md), so the tests own this one. It serves, over
HTTPS on 127.0.0.1 with a per-server CA, exactly the API surface the daemon uses, with the
behaviour a real cluster shows: the same paths and objects, resourceVersion/generation
bookkeeping, Status error bodies, PATCH content types, label selectors, watches, bearer-token
authentication and RBAC from the shipped manifests. The daemon reaches it only through the
official `kubernetes` client and a generated kubeconfig:

    with KubeApiServer(rbac_dir="manifests") as api:
        api.create_deployment("default", "worker", replicas=0)
        token = api.add_service_account("eventscaler", "eventscaler")
        api.write_kubeconfig(tmp_path / "kubeconfig", token=token)
        ...  # run the daemon with KUBECONFIG pointing there
        assert api.get_deployment("default", "worker")["spec"]["replicas"] == 3
        assert {w["subresource"] for w in api.writes()} == {"scale"}

Tests can also inject faults (500, 429 + Retry-After, latency, dropped connections), read the log
of every request, and let a tiny controller settle Deployment/StatefulSet status after a delay.

`stop()` then `start()` is an apiserver restart: same URL and CA, objects kept, watches cut.
Standalone, for manual use: `python -m tests.support.kubeapi --kubeconfig OUT [--no-tls]`.

Layout: kubeapi_http (requests, authn/authz, faults, watches), kubeapi_store (objects,
resourceVersions, watch history), kubeapi_kinds (defaults, validation, views), kubeapi_crd
(CustomResourceDefinitions and the Scale of custom resources), kubeapi_model (resources,
selectors, decoding), kubeapi_patch, kubeapi_errors (Status bodies), kubeapi_rbac,
kubeapi_controller, kubeapi_tls.

Known differences from a real apiserver (none visible to the daemon's calls as far as we know):
- Only the resources listed in kubeapi_model.RESOURCES exist, and the custom resources of the
  CRDs created (kubeapi_crd: no schema validation, pruning or version conversion); no
  managedFields, no protobuf, no aggregated discovery, no bookmarks.
- Server-side apply (application/apply-patch+yaml) is a strategic merge that needs a
  fieldManager and creates missing objects; there is no field ownership, so no apply conflicts.
- Strategic merge patch merges keyed lists (containers by name, ...) but ignores other
  directives than `$patch: replace|delete`.
- Unknown fields are kept rather than dropped with a warning; only the fields the daemon can
  touch are type-checked like Go's decoder does.
- A continued list (`continue`) reads the current state, not the snapshot of its first page.
- Deleting a Namespace removes it and its objects at once (no Terminating period).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import itertools
import logging
import re
import secrets
import shutil
import signal
import socket
import ssl
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from tests.support.kubeapi_controller import Controller
from tests.support.kubeapi_crd import crd_manifest
from tests.support.kubeapi_errors import ApiError
from tests.support.kubeapi_http import HOST, Fault, Frontend, Handler, HttpServer, User
from tests.support.kubeapi_model import ResourceType
from tests.support.kubeapi_rbac import RbacPolicy
from tests.support.kubeapi_store import Store
from tests.support.kubeapi_tls import generate_tls_material

logger = logging.getLogger(__name__)

Obj = dict[str, Any]

ADMIN_USER = "kubernetes-admin"
WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")


class KubeApiServer:
    """The test cluster's API server. `start()` returns self; also a context manager."""

    def __init__(
        self,
        tls: bool = True,
        rbac_dir: str | Path | None = None,
        controller_delay: float | None = 0.0,
        *,
        history_size: int = 1000,
        port: int = 0,
    ) -> None:
        self._tls = tls
        self._rbac = RbacPolicy(rbac_dir) if rbac_dir is not None else None
        self._controller_delay = controller_delay
        self._requested_port = port
        self._store = Store(history_size=history_size)
        self._front = Frontend(self._store, self._rbac)
        self._controller: Controller | None = None
        self._httpd: HttpServer | None = None
        self._thread: threading.Thread | None = None
        self._context: ssl.SSLContext | None = None
        self._ca_pem = b""
        self._fault_ids = itertools.count(1)
        self.admin_token = secrets.token_urlsafe(32)
        self._front.users[self.admin_token] = User(
            ADMIN_USER, ("system:masters", "system:authenticated"), admin=True
        )

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> KubeApiServer:
        """Listen and serve. After `stop()`, starting again is an apiserver restart: the same
        port, CA and objects (etcd kept them), while watches and connections were cut."""
        if self._httpd is not None:
            raise RuntimeError("KubeApiServer is already running")
        self._front.stopping.clear()
        self._store.reopen()
        httpd = HttpServer((HOST, self._requested_port), Handler)
        httpd.front = self._front
        if self._tls:
            httpd.socket = self._ssl_context().wrap_socket(
                httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        # Restarts keep the port so that kubeconfigs written before stay valid.
        self._requested_port = self._front.port = int(httpd.server_address[1])
        if self._controller_delay is not None:
            self._controller = Controller(self._store, self._controller_delay)
            self._controller.start()
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="kubeapi", daemon=True
        )
        self._thread.start()
        logger.debug("kubeapi test server listening on %s", self.url)
        return self

    def _ssl_context(self) -> ssl.SSLContext:
        if self._context is None:
            # The key only needs to exist on disk while the context loads it.
            directory = Path(tempfile.mkdtemp(prefix="kubeapi-"))
            try:
                material = generate_tls_material(directory, HOST)
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.minimum_version = ssl.TLSVersion.TLSv1_2
                context.load_cert_chain(material.cert_path, material.key_path)
                context.set_alpn_protocols(["http/1.1"])
            finally:
                shutil.rmtree(directory, ignore_errors=True)
            self._context, self._ca_pem = context, material.ca_pem
        return self._context

    def stop(self) -> None:
        """Stop serving: watches end, open connections are cut, the port is released."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._front.stopping.set()
        self._store.close()
        httpd.shutdown()
        with self._front.lock:
            connections = list(self._front.connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by its client
                connection.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> KubeApiServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("KubeApiServer is not running")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"{'https' if self._tls else 'http'}://{HOST}:{self.port}"

    @property
    def ca_pem(self) -> bytes:
        """The CA certificate (PEM) clients must trust; empty without TLS."""
        return self._ca_pem

    # --- credentials -------------------------------------------------------------------------

    def add_service_account(self, namespace: str, name: str) -> str:
        """A bearer token for `system:serviceaccount:NAMESPACE:NAME` (subject to RBAC)."""
        token = secrets.token_urlsafe(32)
        groups = (
            "system:serviceaccounts",
            f"system:serviceaccounts:{namespace}",
            "system:authenticated",
        )
        with self._front.lock:
            self._front.users[token] = User(f"system:serviceaccount:{namespace}:{name}", groups)
        return token

    def kubeconfig(self, token: str | None = None, context: str = "kubeapi-test") -> Obj:
        cluster: Obj = {"server": self.url}
        if self._tls:
            cluster["certificate-authority-data"] = base64.b64encode(self._ca_pem).decode()
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context, "cluster": cluster}],
            "users": [{"name": context, "user": {"token": token or self.admin_token}}],
            "contexts": [
                {
                    "name": context,
                    "context": {"cluster": context, "user": context, "namespace": "default"},
                }
            ],
            "current-context": context,
            "preferences": {},
        }

    def write_kubeconfig(
        self, path: str | Path, token: str | None = None, context: str = "kubeapi-test"
    ) -> Path:
        """Write a kubeconfig for `token` (None: the admin) and return its path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch(mode=0o600)
        target.chmod(0o600)  # it holds a bearer token
        target.write_text(yaml.safe_dump(self.kubeconfig(token, context), sort_keys=False))
        return target

    # --- state helpers (as a cluster admin or controller would act, not logged) ---------------

    def _rt(self, plural: str) -> ResourceType:
        # The first registration wins: core/v1 events rather than events.k8s.io/v1.
        for rt in self._store.resources():
            if rt.plural == plural:
                return rt
        raise ValueError(f"unknown resource {plural!r}")

    def create_namespace(self, name: str) -> Obj:
        """Create a namespace unless it exists; return it."""
        rt = self._rt("namespaces")
        existing = self._store.get_raw(rt, "", name)
        if existing is not None:
            return {"kind": rt.kind, "apiVersion": rt.api_version, **existing}
        return self._store.create(rt, "", {"metadata": {"name": name}})

    def _create_workload(
        self,
        plural: str,
        namespace: str,
        name: str,
        replicas: int,
        labels: dict[str, str] | None,
    ) -> Obj:
        self.create_namespace(namespace)
        selector = {"app": name}
        body: Obj = {
            "metadata": {"name": name, "labels": dict(labels if labels is not None else selector)},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": {"labels": dict(selector)},
                    "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.9"}]},
                },
            },
        }
        if plural == "statefulsets":
            body["spec"]["serviceName"] = name
        return self._store.create(self._rt(plural), namespace, body)

    def create_deployment(
        self, namespace: str, name: str, replicas: int = 0, labels: dict[str, str] | None = None
    ) -> Obj:
        """Create a Deployment (and its namespace if missing) selecting `app=NAME` pods."""
        return self._create_workload("deployments", namespace, name, replicas, labels)

    def create_statefulset(
        self, namespace: str, name: str, replicas: int = 0, labels: dict[str, str] | None = None
    ) -> Obj:
        """Create a StatefulSet (and its namespace if missing) selecting `app=NAME` pods."""
        return self._create_workload("statefulsets", namespace, name, replicas, labels)

    def create_crd(self, group: str, kind: str, **options: Any) -> Obj:
        """Create a namespaced CRD (see kubeapi_crd.crd_manifest for `options`: plural, version,
        scale, status); its kind is served at once."""
        body = crd_manifest(group, kind, **options)
        return self._store.create(self._rt("customresourcedefinitions"), "", body)

    def create_custom_object(
        self,
        plural: str,
        namespace: str,
        name: str,
        spec: Obj | None = None,
        status: Obj | None = None,
    ) -> Obj:
        """Create a custom resource of a CRD made before (and its namespace if missing)."""
        self.create_namespace(namespace)
        rt = self._rt(plural)
        body: Obj = {"apiVersion": rt.api_version, "kind": rt.kind, "metadata": {"name": name}}
        body["spec"] = dict(spec or {})
        if status is not None:
            body["status"] = status
        return self._store.create(rt, namespace, body)

    def get_object(self, plural: str, namespace: str, name: str) -> Obj | None:
        """The stored object of a resource by plural (`deployments`, `leases`...), or None."""
        rt = self._rt(plural)
        raw = self._store.get_raw(rt, namespace if rt.namespaced else "", name)
        return None if raw is None else {"kind": rt.kind, "apiVersion": rt.api_version, **raw}

    def get_deployment(self, namespace: str, name: str) -> Obj | None:
        return self.get_object("deployments", namespace, name)

    def get_statefulset(self, namespace: str, name: str) -> Obj | None:
        return self.get_object("statefulsets", namespace, name)

    def delete_deployment(self, namespace: str, name: str) -> bool:
        """Delete a Deployment; False if there was none."""
        try:
            self._store.delete(self._rt("deployments"), namespace, name)
        except ApiError:
            return False
        return True

    def set_replicas(
        self, namespace: str, name: str, replicas: int, resource: str = "deployments"
    ) -> Obj:
        """Scale as `kubectl scale` does (through the scale subresource); return the Scale."""
        rt = self._rt(resource)
        return self._store.update(
            rt, namespace, name, {"spec": {"replicas": replicas}}, subresource="scale"
        )

    @property
    def resource_version(self) -> int:
        """The cluster-wide resourceVersion of the latest write."""
        return self._store.resource_version

    # --- request log -------------------------------------------------------------------------

    @property
    def requests(self) -> list[Obj]:
        """A snapshot of every request served so far, oldest first."""
        with self._front.lock:
            return copy.deepcopy(self._front.requests)

    def writes(self) -> list[Obj]:
        """Logged requests that wrote (create, update, patch, delete, deletecollection)."""
        return [r for r in self.requests if r["verb"] in WRITE_VERBS]

    def clear_requests(self) -> None:
        with self._front.lock:
            self._front.requests.clear()

    # --- RBAC bookkeeping --------------------------------------------------------------------

    def rbac_rules(self) -> list[tuple[str, int, Obj]]:
        """Every loaded RBAC rule as (role, index, rule); role is `ClusterRole/N` / `Role/NS/N`."""
        if self._rbac is None:
            return []
        return [(r.role, r.index, copy.deepcopy(r.rule)) for r in self._rbac.rules()]

    def used_rbac_rules(self) -> set[tuple[str, int]]:
        """The (role, index) of every rule that allowed at least one logged request."""
        return {(r["rbac_rule"][0], r["rbac_rule"][1]) for r in self.requests if r["rbac_rule"]}

    # --- fault injection ---------------------------------------------------------------------

    def inject_fault(
        self,
        path_regex: str,
        method: str | None = None,
        status: int | None = 500,
        retry_after: int | None = None,
        delay: float = 0.0,
        drop: bool = False,
        count: int | None = None,
    ) -> int:
        """Make matching requests (regex searched in the path, no query) fail; return its id.

        `status` answers with that code and its usual Status body (None: do not fail, e.g. delay
        only); 429 always carries `Retry-After` (`retry_after`, default 1). `delay` adds latency
        first; `drop` closes the connection without an answer. `count` limits how many requests
        it hits (None: all). The first matching fault wins.
        """
        fault = Fault(
            next(self._fault_ids),
            re.compile(path_regex),
            method.upper() if method else None,
            status,
            retry_after,
            delay,
            drop,
            count,
        )
        with self._front.lock:
            self._front.faults.append(fault)
        return fault.id

    def remove_fault(self, fault_id: int) -> None:
        with self._front.lock:
            self._front.faults[:] = [f for f in self._front.faults if f.id != fault_id]

    def clear_faults(self) -> None:
        with self._front.lock:
            self._front.faults.clear()


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT, with an admin kubeconfig written to --kubeconfig."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True, type=Path, help="where to write it")
    parser.add_argument("--no-tls", action="store_true", help="serve plain HTTP")
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument("--rbac-dir", type=Path, help="enforce RBAC from these manifests")
    parser.add_argument(
        "--controller-delay",
        type=float,
        default=1.0,
        help="seconds before workload status follows spec (negative: no controller)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    delay = args.controller_delay if args.controller_delay >= 0 else None
    with KubeApiServer(
        tls=not args.no_tls, rbac_dir=args.rbac_dir, controller_delay=delay, port=args.port
    ) as api:
        api.write_kubeconfig(args.kubeconfig)
        print(api.url, flush=True)
        logger.info("serving %s; admin kubeconfig in %s", api.url, args.kubeconfig)
        while not done.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
