"""What the Kubernetes API test server knows about resources: kinds, selectors, decoding.

Everything here is pure (no I/O, no locks) so it can be read against the apiserver sources it
imitates: the discovery documents for the resource list, `k8s.io/apimachinery/pkg/labels` and
`pkg/fields` for selectors, and Go's JSON decoder for the type errors of request bodies.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tests.support.kubeapi_errors import bad_request

Obj = dict[str, Any]

# ---------------------------------------------------------------------------------------------
# Resource types
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScalePaths:
    """Where a custom resource keeps what its Scale shows (`.spec.replicas`...), without the dot."""

    spec_replicas: str
    status_replicas: str
    label_selector: str = ""


@dataclass(frozen=True)
class ResourceType:
    """One REST resource as served under a group/version (the same storage may have two views)."""

    group: str  # "" is the core group, served under /api/v1
    version: str
    plural: str
    kind: str
    singular: str
    namespaced: bool = True
    subresources: frozenset[str] = frozenset()
    # Only some kinds track metadata.generation (workloads do; configmaps, leases, events do not).
    generation: bool = False
    # Both event APIs read and write the same stored objects, as on a real cluster.
    storage: str = ""
    short_names: tuple[str, ...] = ()
    # A custom resource (served from a CustomResourceDefinition), and its CRD's
    # subresources.scale paths (specReplicasPath, statusReplicasPath, labelSelectorPath).
    custom: bool = False
    scale_paths: ScalePaths | None = None

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """`deployments.apps` / `configmaps`: how error messages name the resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """`Deployment.apps` / `ConfigMap`: how Invalid messages name the kind."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def store_key(self) -> str:
        return self.storage or self.plural


ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
SUBRESOURCE_VERBS = ("get", "patch", "update")

RESOURCES: tuple[ResourceType, ...] = (
    ResourceType(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        "deployment",
        subresources=frozenset({"scale", "status"}),
        generation=True,
        short_names=("deploy",),
    ),
    ResourceType(
        "apps",
        "v1",
        "statefulsets",
        "StatefulSet",
        "statefulset",
        subresources=frozenset({"scale", "status"}),
        generation=True,
        short_names=("sts",),
    ),
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease", "lease"),
    ResourceType("", "v1", "events", "Event", "event", storage="events", short_names=("ev",)),
    ResourceType(
        "events.k8s.io", "v1", "events", "Event", "event", storage="events", short_names=("ev",)
    ),
    ResourceType("", "v1", "configmaps", "ConfigMap", "configmap", short_names=("cm",)),
    ResourceType(
        "", "v1", "namespaces", "Namespace", "namespace", namespaced=False, short_names=("ns",)
    ),
    ResourceType(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        "customresourcedefinition",
        namespaced=False,
        subresources=frozenset({"status"}),
        generation=True,
        short_names=("crd", "crds"),
    ),
)

RESOURCE_INDEX: dict[tuple[str, str, str], ResourceType] = {
    (rt.group, rt.version, rt.plural): rt for rt in RESOURCES
}
# Namespaces that exist on every cluster and cannot be deleted.
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
INITIAL_NAMESPACES = ("default", "kube-system")


def scale_document(meta: Obj, spec_replicas: int, status_replicas: int, selector: str) -> Obj:
    """autoscaling/v1 Scale: `spec.replicas` omitted when 0 (omitempty in the Go type, so the
    Python client reads it as None), `status.replicas` always, `status.selector` when known."""
    status: Obj = {"replicas": status_replicas}
    if selector:
        status["selector"] = selector
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            key: meta[key]
            for key in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if key in meta
        },
        "spec": {"replicas": spec_replicas} if spec_replicas else {},
        "status": status,
    }


def find_resource(group: str, version: str, plural: str) -> ResourceType | None:
    """A built-in resource; the Store also knows the custom ones its CRDs define."""
    return RESOURCE_INDEX.get((group, version, plural))


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    """MicroTime, the format of Lease renewTime and events.k8s.io eventTime."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---------------------------------------------------------------------------------------------
# Label and field selectors (k8s.io/apimachinery/pkg/labels and pkg/fields)
# ---------------------------------------------------------------------------------------------

_KEY = r"[A-Za-z0-9](?:[-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_REQ_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("!", re.compile(rf"^!\s*({_KEY})$")),
    ("set", re.compile(rf"^({_KEY})\s+(in|notin)\s*\(([^()]*)\)$")),
    ("eq", re.compile(rf"^({_KEY})\s*(==|=|!=)\s*({_VALUE})$")),
    ("cmp", re.compile(rf"^({_KEY})\s*(<|>)\s*(-?\d+)$")),
    ("exists", re.compile(rf"^({_KEY})$")),
)

Requirement = tuple[str, str, tuple[str, ...]]  # (key, operator, values)


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _parse_requirement(part: str) -> Requirement | None:
    for shape, pattern in _REQ_PATTERNS:
        match = pattern.match(part)
        if not match:
            continue
        if shape == "!":
            return (match[1], "!", ())
        if shape == "set":
            values = tuple(v.strip() for v in match[3].split(",") if v.strip())
            if not values or not all(re.fullmatch(_VALUE, v) for v in values):
                return None
            return (match[1], match[2], values)
        if shape == "eq":
            return (match[1], "!=" if match[2] == "!=" else "=", (match[3],))
        if shape == "cmp":
            return (match[1], match[2], (match[3],))
        return (match[1], "exists", ())
    return None


def parse_label_selector(text: str) -> list[Requirement]:
    """Parse the query-string form (`a=b,c!=d,e in (f,g),h,!i`); BadRequest if malformed."""
    requirements: list[Requirement] = []
    if not text.strip():
        return requirements
    for raw in _split_top_level(text):
        requirement = _parse_requirement(raw.strip())
        if requirement is None:
            raise bad_request(
                f"unable to parse requirement: found '{raw.strip()}', expected: selector"
            )
        requirements.append(requirement)
    return requirements


def labels_match(requirements: list[Requirement], labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    for key, op, values in requirements:
        present = key in labels
        value = labels.get(key)
        if op == "=" and value != values[0]:
            return False
        if op == "!=" and value == values[0]:
            return False  # a missing label satisfies `!=`, as in the apiserver
        if op == "in" and value not in values:
            return False
        if op == "notin" and value in values:
            return False
        if op == "exists" and not present:
            return False
        if op == "!" and present:
            return False
        if op in ("<", ">"):
            try:
                number = int(value) if value is not None else None
            except ValueError:
                return False
            if number is None or not (
                number < int(values[0]) if op == "<" else number > int(values[0])
            ):
                return False
    return True


def format_label_selector(selector: Mapping[str, Any] | None) -> str:
    """LabelSelector object -> query string, as `labels.Selector.String()` (sorted by key)."""
    if not selector:
        return ""
    items: list[tuple[str, str]] = []
    for key, value in (selector.get("matchLabels") or {}).items():
        items.append((key, f"{key}={value}"))
    for expression in selector.get("matchExpressions") or []:
        key, op = expression.get("key", ""), expression.get("operator", "")
        values = ",".join(sorted(expression.get("values") or []))
        if op == "In":
            items.append((key, f"{key} in ({values})"))
        elif op == "NotIn":
            items.append((key, f"{key} notin ({values})"))
        elif op == "Exists":
            items.append((key, key))
        elif op == "DoesNotExist":
            items.append((key, f"!{key}"))
    return ",".join(text for _, text in sorted(items))


def selector_matches_object(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a LabelSelector object selects these labels (template-vs-selector validation)."""
    return labels_match(parse_label_selector(format_label_selector(selector)), labels)


FieldRequirement = tuple[str, bool, str]  # (field path, equal?, value)


def parse_field_selector(text: str, allowed: Callable[[str], bool]) -> list[FieldRequirement]:
    requirements: list[FieldRequirement] = []
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            continue
        match = re.fullmatch(r"([^=!]+?)\s*(==|=|!=)\s*(.*)", part)
        if not match:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        if not allowed(match[1]):
            raise bad_request(f"field label not supported: {match[1]}")
        requirements.append((match[1], match[2] != "!=", match[3]))
    return requirements


def dotted_get(obj: Mapping[str, Any], path: str) -> Any:
    current: Any = obj
    for part in path.split("."):
        if not isinstance(current, Mapping):
            return None
        current = current.get(part)
    return current


def fields_match(requirements: list[FieldRequirement], obj: Mapping[str, Any]) -> bool:
    for path, equal, value in requirements:
        actual = dotted_get(obj, path)
        actual_text = "" if actual is None else str(actual)
        if (actual_text == value) != equal:
            return False
    return True


# ---------------------------------------------------------------------------------------------
# Decoding: the JSON type checks Go's decoder makes on the fields the daemon can touch
# ---------------------------------------------------------------------------------------------

_JSON_TYPE_NAMES = {
    str: "string",
    bool: "bool",
    int: "number",
    float: "number",
    list: "array",
    dict: "object",
}
_META_FIELDS = {
    "metadata": ("ObjectMeta", "object"),
    "metadata.name": ("ObjectMeta", "string"),
    "metadata.generateName": ("ObjectMeta", "string"),
    "metadata.namespace": ("ObjectMeta", "string"),
    "metadata.resourceVersion": ("ObjectMeta", "string"),
    "metadata.uid": ("ObjectMeta", "string"),
    "metadata.labels": ("ObjectMeta", "map[string]string"),
    "metadata.annotations": ("ObjectMeta", "map[string]string"),
    "spec": ("", "object"),
    "status": ("", "object"),
}
_KIND_FIELDS: dict[str, dict[str, tuple[str, str]]] = {
    "Deployment": {
        "spec.replicas": ("DeploymentSpec", "int32"),
        "spec.minReadySeconds": ("DeploymentSpec", "int32"),
        "spec.revisionHistoryLimit": ("DeploymentSpec", "int32"),
        "spec.progressDeadlineSeconds": ("DeploymentSpec", "int32"),
        "spec.paused": ("DeploymentSpec", "bool"),
        "spec.selector": ("DeploymentSpec", "object"),
        "spec.template": ("DeploymentSpec", "object"),
    },
    "StatefulSet": {
        "spec.replicas": ("StatefulSetSpec", "int32"),
        "spec.serviceName": ("StatefulSetSpec", "string"),
        "spec.selector": ("StatefulSetSpec", "object"),
        "spec.template": ("StatefulSetSpec", "object"),
    },
    "Scale": {"spec.replicas": ("ScaleSpec", "int32")},
    "Lease": {
        "spec.holderIdentity": ("LeaseSpec", "string"),
        "spec.leaseDurationSeconds": ("LeaseSpec", "int32"),
        "spec.leaseTransitions": ("LeaseSpec", "int32"),
        "spec.acquireTime": ("LeaseSpec", "string"),
        "spec.renewTime": ("LeaseSpec", "string"),
    },
    "ConfigMap": {
        "data": ("ConfigMap", "map[string]string"),
        "binaryData": ("ConfigMap", "map[string]string"),
    },
    "Event": {"count": ("Event", "int32")},
}
_GO_STRUCT_OF_TOP = {"spec": "Spec", "status": "Status"}


def _type_ok(value: Any, go_type: str) -> bool:
    if value is None:
        return True  # Go decodes null into the zero value
    if go_type == "int32":
        return isinstance(value, int) and not isinstance(value, bool) and -(2**31) <= value < 2**31
    if go_type == "bool":
        return isinstance(value, bool)
    if go_type == "string":
        return isinstance(value, str)
    if go_type == "object":
        return isinstance(value, dict)
    if go_type == "map[string]string":
        return isinstance(value, dict) and all(
            isinstance(v, str) or v is None for v in value.values()
        )
    return True


def decode_error(kind: str, obj: Any) -> str | None:
    """The Go JSON decoder's complaint about `obj` as a `kind`, or None if it decodes."""
    if not isinstance(obj, dict):
        return f"json: cannot unmarshal {_JSON_TYPE_NAMES.get(type(obj), 'value')} into Go value of type struct"  # noqa: E501
    for path, (struct, go_type) in {**_META_FIELDS, **_KIND_FIELDS.get(kind, {})}.items():
        value = dotted_get(obj, path)
        if _type_ok(value, go_type):
            continue
        shown = type(value)
        if go_type == "map[string]string" and isinstance(value, dict):
            bad = next(v for v in value.values() if not isinstance(v, str) and v is not None)
            shown, go_type = type(bad), "string"
        what = _JSON_TYPE_NAMES.get(shown, "value")
        if shown in (int, float) and not isinstance(value, bool) and go_type == "int32":
            what = f"number {json.dumps(value)}"
        struct = struct or f"{kind}{_GO_STRUCT_OF_TOP.get(path, '')}"
        return (
            f"json: cannot unmarshal {what} into Go struct field {struct}.{path} of type {go_type}"
        )
    return None
