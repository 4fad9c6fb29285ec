"""State of the Kubernetes API test server: objects, resourceVersions, watch history.

One re-entrant lock guards everything, as etcd serialises writes: every write takes the next
cluster-wide resourceVersion, is kept in a bounded history for watches, and is told to listeners
(the tiny workload controller). Stored objects are never mutated in place (a write replaces the
dict), so history entries can share them safely; everything handed out is a deep copy.
"""

from __future__ import annotations

import base64
import binascii
import collections
import copy
import json
import logging
import random
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from tests.support import kubeapi_crd as crd
from tests.support import kubeapi_errors as errors
from tests.support import kubeapi_kinds as kinds
from tests.support.kubeapi_errors import ApiError, FieldError
from tests.support.kubeapi_model import (
    INITIAL_NAMESPACES,
    RESOURCES,
    SYSTEM_NAMESPACES,
    ResourceType,
    decode_error,
    fields_match,
    find_resource,
    labels_match,
    now_rfc3339,
    parse_field_selector,
    parse_label_selector,
)
from tests.support.kubeapi_patch import (
    JsonPatchError,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)

logger = logging.getLogger(__name__)

Obj = dict[str, Any]

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_TYPES = [JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH, APPLY_PATCH]


def _namespaces() -> ResourceType:
    found = find_resource("", "v1", "namespaces")
    assert found is not None
    return found


NAMESPACES = _namespaces()
_GENERATE_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # as utilrand.String: no vowels, no 0/1/3
_META_ORDER = (
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
)
_SERVER_SET_META = (
    "uid",
    "creationTimestamp",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "name",
    "namespace",
)


@dataclass(frozen=True)
class WatchEvent:
    """One committed write: the object after it (for DELETED, as last seen with the new RV)."""

    rv: int
    store_key: str
    type: str
    namespace: str
    name: str
    obj: Obj
    prev: Obj | None


Listener = Callable[[WatchEvent], None]


def _ordered(obj: Obj) -> Obj:
    """Metadata keys in Go struct order, then the usual top-level order: easier to read."""
    meta = obj.get("metadata") or {}
    ordered_meta = {k: meta[k] for k in _META_ORDER if k in meta}
    ordered_meta.update({k: v for k, v in meta.items() if k not in ordered_meta})
    out: Obj = {"metadata": ordered_meta}
    for key in ("spec", "status"):
        if key in obj:
            out[key] = obj[key]
    out.update({k: v for k, v in obj.items() if k not in out})
    return out


def _key_string(namespace: str, name: str) -> str:
    """The etcd key under the resource prefix: lists come back in this order."""
    return f"{namespace}/{name}" if namespace else name


class Store:
    """All objects of the test cluster, keyed by storage then (namespace, name); and the custom
    resource types its CustomResourceDefinitions serve."""

    def __init__(self, history_size: int = 1000) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self._objects: dict[str, dict[tuple[str, str], Obj]] = collections.defaultdict(dict)
        self._custom: dict[tuple[str, str, str], ResourceType] = {}
        self._rv = 0
        self._history: collections.deque[WatchEvent] = collections.deque(maxlen=history_size)
        self._floor = 0  # every event with rv > _floor is still in the history
        self._listeners: list[Listener] = []
        self.closed = False
        for name in INITIAL_NAMESPACES:
            self.create(NAMESPACES, "", {"metadata": {"name": name}})

    # --- resource types ----------------------------------------------------------------------

    def find_resource(self, group: str, version: str, plural: str) -> ResourceType | None:
        with self.lock:
            return find_resource(group, version, plural) or self._custom.get(
                (group, version, plural)
            )

    def resources(self) -> list[ResourceType]:
        """Every resource type served now: the built-in ones, then those of the CRDs."""
        with self.lock:
            return [*RESOURCES, *self._custom.values()]

    def _crd_changed(self, new: Obj | None, old: Obj | None) -> None:
        """Serve what a CRD now defines; a deleted CRD takes its custom resources with it."""
        for rt in crd.resource_types(old) if old else []:
            self._custom.pop((rt.group, rt.version, rt.plural), None)
        for rt in crd.resource_types(new) if new else []:
            self._custom[(rt.group, rt.version, rt.plural)] = rt
        if new is None and old is not None:
            for rt in crd.resource_types(old)[:1]:
                for (ns, name), obj in list(self._objects[rt.store_key].items()):
                    self._commit(rt, "DELETED", ns, name, None, obj)

    # --- bookkeeping -------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        with self.lock:
            return self._rv

    def add_listener(self, listener: Listener) -> None:
        with self.lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with self.lock:
            self._listeners.remove(listener)

    def close(self) -> None:
        """Wake every watch and tell it to end (the server is stopping)."""
        with self.changed:
            self.closed = True
            self.changed.notify_all()

    def reopen(self) -> None:
        with self.lock:
            self.closed = False

    def _commit(
        self,
        rt: ResourceType,
        type_: str,
        namespace: str,
        name: str,
        new: Obj | None,
        prev: Obj | None,
    ) -> Obj:
        self._rv += 1
        bucket = self._objects[rt.store_key]
        if new is None:
            assert prev is not None
            gone = copy.deepcopy(prev)
            gone["metadata"]["resourceVersion"] = str(self._rv)
            del bucket[(namespace, name)]
            event_obj = gone
        else:
            new["metadata"]["resourceVersion"] = str(self._rv)
            new = _ordered(new)
            bucket[(namespace, name)] = new
            event_obj = new
        if len(self._history) == self._history.maxlen:
            self._floor = self._history[0].rv
        event = WatchEvent(self._rv, rt.store_key, type_, namespace, name, event_obj, prev)
        self._history.append(event)
        self.changed.notify_all()
        for listener in self._listeners:
            listener(event)
        if rt.kind == crd.CRD_KIND and not rt.custom:
            self._crd_changed(new, prev)
        return event_obj

    def _stored(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        obj = self._objects[rt.store_key].get((namespace, name))
        if obj is None:
            raise errors.not_found(rt, name)
        return obj

    def _namespace_exists(self, namespace: str) -> bool:
        return ("", namespace) in self._objects[NAMESPACES.store_key]

    # --- decoding ----------------------------------------------------------------------------

    @staticmethod
    def _decode(rt: ResourceType, subresource: str | None, body: Any, patched: bool) -> None:
        """Reject what Go's decoder would: wrong kind/apiVersion, wrong JSON types."""
        kind, api_version = (
            ("Scale", "autoscaling/v1") if subresource == "scale" else (rt.kind, rt.api_version)
        )
        version = api_version.rsplit("/", 1)[-1]
        problem = decode_error(kind, body)
        if problem is None and isinstance(body, dict):
            if body.get("apiVersion") and body["apiVersion"] != api_version:
                raise errors.bad_request(
                    f"the API version in the data ({body['apiVersion']}) does not match the "
                    f"expected API version ({api_version})"
                )
            if body.get("kind") and body["kind"] != kind:
                raise errors.bad_request(
                    f"the kind in the data ({body['kind']}) does not match the expected kind "
                    f"({kind})"
                )
            return
        if problem is None:
            return
        if patched:
            # A patch that decodes badly is an Invalid "patch" field of an unnamed kind.
            raise errors.invalid(
                "", "", "", [FieldError("patch", "Invalid", json.dumps(body), problem)]
            )
        raise errors.bad_request(
            f'{kind} in version "{version}" cannot be handled as a {kind}: {problem}'
        )

    # --- reads -------------------------------------------------------------------------------

    def get(
        self, rt: ResourceType, namespace: str, name: str, subresource: str | None = None
    ) -> Obj:
        with self.lock:
            stored = self._stored(rt, namespace, name)
            return self._view(rt, stored, subresource)

    def get_raw(self, rt: ResourceType, namespace: str, name: str) -> Obj | None:
        with self.lock:
            obj = self._objects[rt.store_key].get((namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    @staticmethod
    def _view(rt: ResourceType, stored: Obj, subresource: str | None) -> Obj:
        if subresource == "scale":
            return kinds.scale_view(rt, stored)
        return kinds.to_view(rt, stored)

    @staticmethod
    def field_allowed(rt: ResourceType) -> Callable[[str], bool]:
        def allowed(path: str) -> bool:
            if path in ("metadata.name", "metadata.namespace"):
                return True
            if rt.kind == "Event":
                return True  # events index many fields (involvedObject.*, reason, type, ...)
            return rt.kind == "Namespace" and path == "status.phase"

        return allowed

    def _matching(
        self, rt: ResourceType, namespace: str | None, label_text: str, field_text: str
    ) -> list[tuple[str, Obj]]:
        labels = parse_label_selector(label_text)
        fields = parse_field_selector(field_text, self.field_allowed(rt))
        out = []
        for (ns, name), stored in self._objects[rt.store_key].items():
            if namespace and ns != namespace:
                continue
            view = kinds.to_view(rt, stored, with_type=False)
            if labels_match(labels, view["metadata"].get("labels")) and fields_match(fields, view):
                out.append((_key_string(ns, name), view))
        return sorted(out, key=lambda pair: pair[0])

    def list_objects(
        self,
        rt: ResourceType,
        namespace: str | None,
        label_text: str = "",
        field_text: str = "",
        limit: int = 0,
        continue_token: str = "",
    ) -> Obj:
        with self.lock:
            rv = self._rv
            items = self._matching(rt, namespace, label_text, field_text)
        metadata: Obj = {"resourceVersion": str(rv)}
        if continue_token:
            try:
                padded = continue_token + "=" * (-len(continue_token) % 4)
                token = json.loads(base64.urlsafe_b64decode(padded))
                start, rv = str(token["start"]), int(token["rv"])
            except (ValueError, KeyError, TypeError, binascii.Error) as exc:
                raise errors.bad_request(f"continue key is not valid: {exc}") from exc
            metadata["resourceVersion"] = str(rv)
            items = [pair for pair in items if pair[0] >= start]
        if limit and len(items) > limit:
            last_key = items[limit - 1][0]
            raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": last_key + "\x00"})
            metadata["continue"] = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
            if not label_text and not field_text:
                metadata["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version,
            "metadata": metadata,
            "items": [view for _, view in items],
        }

    # --- writes ------------------------------------------------------------------------------

    def create(self, rt: ResourceType, namespace: str, body: Any, dry_run: bool = False) -> Obj:
        self._decode(rt, None, body, patched=False)
        obj = kinds.from_view(rt, body)
        meta = obj.get("metadata") or {}
        obj["metadata"] = meta
        if rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on "
                    "the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        with self.lock:
            if rt.namespaced and not self._namespace_exists(namespace):
                raise errors.namespace_not_found(namespace)
            name = meta.get("name") or ""
            if not name and meta.get("generateName"):
                name = meta["generateName"] + "".join(random.choices(_GENERATE_CHARS, k=5))
                meta["name"] = name
            if not name:
                raise errors.invalid(
                    rt.group,
                    rt.kind,
                    "",
                    [
                        FieldError(
                            "metadata.name", "Required", detail="name or generateName is required"
                        )
                    ],
                )
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            for key in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
                meta.pop(key, None)
            if rt.generation:
                meta["generation"] = 1
            else:
                meta.pop("generation", None)
            status = kinds.initial_status(rt)
            if status is not None:
                obj["status"] = status
            elif kinds.has_status(rt):
                obj.pop("status", None)  # a status subresource: a create cannot set status
            kinds.apply_defaults(rt, obj)
            problems = kinds.validate(rt, obj, None)
            if problems:
                raise errors.invalid(rt.group, rt.kind, name, problems)
            if meta.get("resourceVersion"):
                # What etcd3's store answers, surfaced by the apiserver as a plain 500.
                raise errors.internal_error(
                    "resourceVersion should not be set on objects to be created"
                )
            if (namespace if rt.namespaced else "", name) in self._objects[rt.store_key]:
                raise errors.already_exists(rt, name)
            if dry_run:
                return kinds.to_view(rt, _ordered(obj))
            stored = self._commit(rt, "ADDED", namespace if rt.namespaced else "", name, obj, None)
            return kinds.to_view(rt, stored)

    def update(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        body: Any,
        subresource: str | None = None,
        dry_run: bool = False,
        patched: bool = False,
    ) -> Obj:
        self._decode(rt, subresource, body, patched)
        meta = body.get("metadata") or {}
        if meta.get("name") and meta["name"] != name:
            raise errors.bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL "
                f"({name})"
            )
        if rt.namespaced and meta.get("namespace") and meta["namespace"] != namespace:
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on the "
                "request"
            )
        with self.lock:
            old = self._stored(rt, namespace, name)
            old_meta = old["metadata"]
            # Optimistic concurrency: an update naming a resourceVersion is conditional on it
            # (all our kinds allow unconditional updates, as the real strategies do).
            if (
                meta.get("resourceVersion")
                and meta["resourceVersion"] != old_meta["resourceVersion"]
            ):
                raise errors.conflict(rt, name)
            if meta.get("uid") and meta["uid"] != old_meta["uid"]:
                raise errors.conflict(
                    rt,
                    name,
                    f"Precondition failed: UID in precondition: {meta['uid']}, UID in object "
                    f"meta: {old_meta['uid']}",
                )
            new = self._updated(rt, old, body, subresource)
            if rt.generation and new.get("spec") != old.get("spec"):
                new["metadata"]["generation"] = old_meta.get("generation", 1) + 1
            new["metadata"]["resourceVersion"] = old_meta["resourceVersion"]
            if _ordered(new) == old or dry_run:
                # A write that changes nothing is not written: no new resourceVersion, no event.
                return self._view(rt, _ordered(new), subresource)
            stored = self._commit(rt, "MODIFIED", old_meta.get("namespace", ""), name, new, old)
            return self._view(rt, stored, subresource)

    @staticmethod
    def _updated(rt: ResourceType, old: Obj, body: Obj, subresource: str | None) -> Obj:
        name = old["metadata"]["name"]
        if subresource == "scale":
            replicas = (body.get("spec") or {}).get("replicas") or 0  # omitempty: absent is 0
            problems = kinds.minimum(replicas, "spec.replicas", 0)
            if problems:
                raise errors.invalid("autoscaling", "Scale", name, problems)
            new = copy.deepcopy(old)
            if rt.scale_paths is not None:
                crd.set_spec_replicas(rt, new, replicas)
            else:
                new["spec"]["replicas"] = replicas
            return new
        if subresource == "status":
            new = copy.deepcopy(old)
            new["status"] = kinds.from_view(rt, body).get("status") or {}
            return new
        new = kinds.from_view(rt, body)
        meta = dict(new.get("metadata") or {})
        for key in _SERVER_SET_META:
            meta.pop(key, None)
            if key in old["metadata"]:
                meta[key] = old["metadata"][key]
        new["metadata"] = meta
        if kinds.has_status(rt):
            new["status"] = copy.deepcopy(old.get("status"))
            if new["status"] is None:
                new.pop("status")
        kinds.apply_defaults(rt, new)
        problems = kinds.validate(rt, new, old)
        if problems:
            raise errors.invalid(rt.group, rt.kind, name, problems)
        return new

    def patch(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        subresource: str | None,
        content_type: str,
        raw: bytes,
        field_manager: str = "",
        dry_run: bool = False,
    ) -> tuple[Obj, bool]:
        """Apply a PATCH; returns the result and whether it created the object (apply only)."""
        patch_type = content_type.split(";", 1)[0].strip().lower()
        if patch_type not in PATCH_TYPES:
            raise errors.unsupported_media_type(PATCH_TYPES)
        try:
            document = (
                yaml.safe_load(raw) if patch_type == APPLY_PATCH else json.loads(raw or b"null")
            )
        except (ValueError, yaml.YAMLError) as exc:
            raise errors.bad_request(f"error decoding patch: {exc}") from exc
        if patch_type == APPLY_PATCH and not field_manager:
            raise errors.invalid(
                "meta.k8s.io",
                "PatchOptions",
                "",
                [FieldError("fieldManager", "Required", detail="is required for apply patch")],
            )
        if patch_type in (MERGE_PATCH, STRATEGIC_PATCH, APPLY_PATCH) and not isinstance(
            document, dict
        ):
            raise errors.bad_request(
                "json: cannot unmarshal array into Go value of type map[string]interface {}"
            )
        with self.lock:
            current_obj = self._objects[rt.store_key].get(
                (namespace if rt.namespaced else "", name)
            )
            if current_obj is None:
                if patch_type == APPLY_PATCH and subresource is None:
                    # Server-side apply creates what does not exist yet.
                    named = (document.get("metadata") or {}).get("name")
                    if named is not None and named != name:
                        raise errors.bad_request(
                            f"the name of the object ({named}) does not match the name on the "
                            f"URL ({name})"
                        )
                    return self.create(rt, namespace, document, dry_run), True
                raise errors.not_found(rt, name)
            current = self._view(rt, current_obj, subresource)
            if patch_type == JSON_PATCH:
                try:
                    patched = json_patch(current, document)
                except JsonPatchError as exc:
                    # The apiserver drops the detail (NewGenericServerResponse 422); log it.
                    logger.debug("json patch of %s/%s failed: %s", namespace, name, exc)
                    raise ApiError(
                        422,
                        "Invalid",
                        "the server rejected our request due to an error in our request",
                        {},
                    ) from exc
            elif patch_type == MERGE_PATCH:
                patched = merge_patch(current, document)
            else:
                patched = strategic_merge_patch(current, document)
            updated = self.update(rt, namespace, name, patched, subresource, dry_run, patched=True)
            return updated, False

    def delete(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        options: Any = None,
        dry_run: bool = False,
    ) -> Obj:
        # DeleteOptions.preconditions make a delete conditional, like resourceVersion an update.
        preconditions = (options.get("preconditions") if isinstance(options, dict) else None) or {}
        with self.lock:
            old = self._stored(rt, namespace, name)
            meta = old["metadata"]
            if rt.kind == "Namespace" and name in SYSTEM_NAMESPACES:
                raise errors.forbidden("", "namespaces", name, "this namespace may not be deleted")
            for field_name, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
                wanted = preconditions.get(field_name)
                if wanted and wanted != meta.get(field_name):
                    raise errors.conflict(
                        rt,
                        name,
                        f"Precondition failed: {label} in precondition: {wanted}, {label} in "
                        f"object meta: {meta.get(field_name)}",
                    )
            if rt.kind == "Namespace":
                terminating = copy.deepcopy(old)
                terminating["metadata"]["deletionTimestamp"] = now_rfc3339()
                terminating["status"] = {"phase": "Terminating"}
                if not dry_run:
                    self._delete_namespace_contents(name)
                    self._commit(rt, "DELETED", "", name, None, old)
                # Namespaces answer with the object (the finalizer would keep it a while).
                return kinds.to_view(rt, terminating)
            if not dry_run:
                self._commit(rt, "DELETED", meta.get("namespace", ""), name, None, old)
            # Deleted at once (no finalizers here): a Status naming it, as the generic registry.
            details = errors.details(name, rt.group, rt.plural, uid=meta["uid"])
            return {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": details,
            }

    def _delete_namespace_contents(self, namespace: str) -> None:
        storages = {rt.store_key: rt for rt in reversed(self.resources()) if rt.namespaced}
        for rt in storages.values():  # each storage once (as its first registration)
            for (ns, name), obj in list(self._objects[rt.store_key].items()):
                if ns == namespace:
                    self._commit(rt, "DELETED", ns, name, None, obj)

    def delete_collection(
        self,
        rt: ResourceType,
        namespace: str | None,
        label_text: str = "",
        field_text: str = "",
        dry_run: bool = False,
    ) -> Obj:
        with self.lock:
            result = self.list_objects(rt, namespace, label_text, field_text)
            if not dry_run:
                for item in result["items"]:
                    ns = item["metadata"].get("namespace", "")
                    self._commit(
                        rt,
                        "DELETED",
                        ns,
                        item["metadata"]["name"],
                        None,
                        self._stored(rt, ns, item["metadata"]["name"]),
                    )
            return result

    # --- controller hook ----------------------------------------------------------------------

    def settle(self, rt: ResourceType, namespace: str, name: str, uid: str) -> bool:
        """Write the status a workload controller reports once the rollout is done."""
        with self.lock:
            old = self._objects[rt.store_key].get((namespace, name))
            if old is None or old["metadata"]["uid"] != uid or not kinds.needs_reconcile(old):
                return False
            new = copy.deepcopy(old)
            new["status"] = kinds.settled_status(rt, old)
            if rt.kind == "Deployment":
                annotations = new["metadata"].setdefault("annotations", {})
                annotations.setdefault("deployment.kubernetes.io/revision", "1")
            if new == old:
                return False
            self._commit(rt, "MODIFIED", namespace, name, new, old)
            return True

    # --- watch -------------------------------------------------------------------------------

    def watch_start(
        self,
        rt: ResourceType,
        namespace: str | None,
        label_text: str,
        field_text: str,
        rv_text: str,
    ) -> tuple[list[Obj], int]:
        """Initial events and the resourceVersion to stream after (ERROR 410 if too old)."""
        parse_label_selector(label_text)  # reject bad selectors before the stream starts
        parse_field_selector(field_text, self.field_allowed(rt))
        with self.lock:
            if rv_text in ("", "0"):
                # No (or "any") resourceVersion: the current state as synthetic ADDED events.
                initial = [
                    {
                        "type": "ADDED",
                        "object": {"kind": rt.kind, "apiVersion": rt.api_version, **view},
                    }
                    for _, view in self._matching(rt, namespace, label_text, field_text)
                ]
                return initial, self._rv
            try:
                start = int(rv_text)
            except ValueError as exc:
                raise errors.bad_request(f"invalid resource version: {rv_text}") from exc
            if start < self._floor:
                return [self.expired_event(start)], -1
            return [], start

    def expired_event(self, start: int) -> Obj:
        with self.lock:
            oldest = self._floor + 1
        error = errors.expired(f"too old resource version: {start} ({oldest})")
        return {"type": "ERROR", "object": error.status()}

    def wait_events(self, after: int, timeout: float) -> list[WatchEvent] | None:
        """Events after `after`, waiting up to `timeout` for one; None if `after` is too old."""
        with self.changed:
            if self._rv <= after and not self.closed:
                self.changed.wait(timeout)
            if after < self._floor:
                return None
            out: list[WatchEvent] = []
            for event in reversed(self._history):
                if event.rv <= after:
                    break
                out.append(event)
            out.reverse()
            return out

    def translate(
        self,
        rt: ResourceType,
        event: WatchEvent,
        namespace: str | None,
        label_text: str,
        field_text: str,
    ) -> Obj | None:
        """The watch event a client of `rt` sees for `event`, if any (selectors as the cache)."""
        if event.store_key != rt.store_key or (namespace and event.namespace != namespace):
            return None
        labels = parse_label_selector(label_text)
        fields = parse_field_selector(field_text, self.field_allowed(rt))

        def matches(obj: Obj | None) -> bool:
            if obj is None:
                return False
            view = kinds.to_view(rt, obj, with_type=False)
            return labels_match(labels, view["metadata"].get("labels")) and fields_match(
                fields, view
            )

        now_matches = matches(event.obj)
        if event.type == "MODIFIED":
            was_matching = matches(event.prev)
            type_ = {
                (True, True): "MODIFIED",
                (True, False): "ADDED",
                (False, True): "DELETED",
            }.get((now_matches, was_matching))
        else:
            type_ = event.type if now_matches else None
        if type_ is None:
            return None
        return {"type": type_, "object": kinds.to_view(rt, event.obj)}

    def all_objects(self) -> Iterable[tuple[str, Obj]]:
        with self.lock:
            return [
                (key, copy.deepcopy(obj))
                for key, bucket in self._objects.items()
                for obj in bucket.values()
            ]
