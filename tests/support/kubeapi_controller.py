"""The part of the workload controllers a test cluster's clients can observe.

On a real cluster the deployment and statefulset controllers write `status` shortly after every
spec change (replicas all ready, `observedGeneration`), which bumps the object's resourceVersion
between a client's read and its write. This reproduces that, after a configurable delay, so the
409 Conflicts a real cluster causes happen in tests too.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time

from tests.support.kubeapi_kinds import needs_reconcile
from tests.support.kubeapi_model import find_resource
from tests.support.kubeapi_store import Store, WatchEvent

logger = logging.getLogger(__name__)


class Controller:
    """The part of the deployment and statefulset controllers a cluster's clients can observe:
    after `delay`, status catches up with spec (replicas all ready, observedGeneration)."""

    def __init__(self, store: Store, delay: float) -> None:
        self._store = store
        self._delay = delay
        self._queue: list[tuple[float, int, str, str, str, str]] = []
        self._seq = itertools.count()
        self._wake = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="kubeapi-controller", daemon=True)

    def start(self) -> None:
        self._store.add_listener(self._on_event)
        self._thread.start()

    def stop(self) -> None:
        self._store.remove_listener(self._on_event)
        with self._wake:
            self._stopped = True
            self._wake.notify_all()
        self._thread.join(timeout=5)

    def _on_event(self, event: WatchEvent) -> None:
        # Called under the store lock: only queue work here.
        if event.type == "DELETED" or event.store_key not in ("deployments", "statefulsets"):
            return
        if not needs_reconcile(event.obj):
            return
        meta = event.obj["metadata"]
        with self._wake:
            heapq.heappush(
                self._queue,
                (
                    time.monotonic() + self._delay,
                    next(self._seq),
                    event.store_key,
                    event.namespace,
                    event.name,
                    meta["uid"],
                ),
            )
            self._wake.notify_all()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopped and (
                    not self._queue or self._queue[0][0] > time.monotonic()
                ):
                    timeout = self._queue[0][0] - time.monotonic() if self._queue else None
                    self._wake.wait(timeout)
                if self._stopped:
                    return
                _, _, store_key, namespace, name, uid = heapq.heappop(self._queue)
            rt = find_resource("apps", "v1", store_key)
            assert rt is not None
            try:
                self._store.settle(rt, namespace, name, uid)
            except Exception:  # a controller bug must not kill the thread silently
                logger.exception("controller failed on %s/%s", namespace, name)
