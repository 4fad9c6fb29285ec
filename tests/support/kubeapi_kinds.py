"""Per-kind behaviour of the Kubernetes API test server: names, defaults, validation, views.

Mirrors the apiserver's registry strategies (`pkg/registry/*/strategy.go`), defaulting
(`pkg/apis/*/v1/defaults.go`) and validation (`pkg/apis/*/validation`) for the fields the daemon
reads or writes; everything else in an object is stored as sent.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from tests.support import kubeapi_crd as crd
from tests.support import kubeapi_errors as errors
from tests.support.kubeapi_errors import FieldError, GoText
from tests.support.kubeapi_model import (
    ResourceType,
    format_label_selector,
    now_rfc3339,
    scale_document,
    selector_matches_object,
)

Obj = dict[str, Any]

# ---------------------------------------------------------------------------------------------
# Names and labels
# ---------------------------------------------------------------------------------------------

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_CONFIG_KEY = re.compile(r"[-._a-zA-Z0-9]+")

DNS_SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
DNS_LABEL_MESSAGE = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
LABEL_VALUE_MESSAGE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    "'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
QUALIFIED_NAME_MESSAGE = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
    "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
    "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)


def validate_name(name: str, path: str, label: bool = False) -> list[FieldError]:
    limit, pattern, message = (
        (63, _DNS_LABEL, DNS_LABEL_MESSAGE)
        if label
        else (253, _DNS_SUBDOMAIN, DNS_SUBDOMAIN_MESSAGE)
    )
    problems = []
    if len(name) > limit:
        problems.append(
            FieldError(path, "Invalid", name, f"must be no more than {limit} characters")
        )
    if not pattern.fullmatch(name):
        problems.append(FieldError(path, "Invalid", name, message))
    return problems


def validate_path_segment_name(name: str, path: str) -> list[FieldError]:
    """The only name rule of core/v1 Events (and of every kind, under the others)."""
    if name in (".", ".."):
        return [FieldError(path, "Invalid", name, f"may not be '{name}'")]
    for bad in ("/", "%"):
        if bad in name:
            return [FieldError(path, "Invalid", name, f"may not contain '{bad}'")]
    return []


def validate_labels(labels: Mapping[str, Any] | None, path: str) -> list[FieldError]:
    problems = []
    for key, value in (labels or {}).items():
        name = key.rsplit("/", 1)[-1]
        if len(name) > 63 or not _QUALIFIED_NAME.fullmatch(name):
            problems.append(FieldError(path, "Invalid", key, QUALIFIED_NAME_MESSAGE))
        text = value or ""
        if len(text) > 63:
            problems.append(
                FieldError(f"{path}", "Invalid", text, "must be no more than 63 characters")
            )
        elif not _LABEL_VALUE.fullmatch(text):
            problems.append(FieldError(path, "Invalid", text, LABEL_VALUE_MESSAGE))
    return problems


def validate_config_keys(data: Mapping[str, Any] | None, path: str) -> list[FieldError]:
    message = (
        "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. "
        "'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is "
        "'[-._a-zA-Z0-9]+')"
    )
    return [
        FieldError(path, "Invalid", key, message)
        for key in (data or {})
        if not _CONFIG_KEY.fullmatch(key) or len(key) > 253
    ]


def minimum(value: Any, path: str, floor: int) -> list[FieldError]:
    if isinstance(value, int) and value < floor:
        word = "greater than or equal to 0" if floor == 0 else f"greater than {floor - 1}"
        return [FieldError(path, "Invalid", value, f"must be {word}")]
    return []


# ---------------------------------------------------------------------------------------------
# Conversion between the two Event APIs (stored once, in core/v1 shape)
# ---------------------------------------------------------------------------------------------

# events.k8s.io/v1 field -> core/v1 field; the rest (reason, type, action, related, series,
# eventTime, reportingInstance) have the same name in both.
_EVENTS_TO_CORE = {
    "regarding": "involvedObject",
    "note": "message",
    "reportingController": "reportingComponent",
    "deprecatedSource": "source",
    "deprecatedFirstTimestamp": "firstTimestamp",
    "deprecatedLastTimestamp": "lastTimestamp",
    "deprecatedCount": "count",
}
_CORE_TO_EVENTS = {core: new for new, core in _EVENTS_TO_CORE.items()}


def event_to_core(obj: Obj) -> Obj:
    return {_EVENTS_TO_CORE.get(k, k): v for k, v in obj.items()}


def event_from_core(obj: Obj) -> Obj:
    out = {_CORE_TO_EVENTS.get(k, k): v for k, v in obj.items()}
    # Go serialises these zero values (struct fields without a usable omitempty).
    out.setdefault("eventTime", None)
    out.setdefault("deprecatedFirstTimestamp", None)
    out.setdefault("deprecatedLastTimestamp", None)
    out.setdefault("deprecatedSource", {})
    out.setdefault("regarding", {})
    return out


def core_event_view(obj: Obj) -> Obj:
    out = dict(obj)
    for key, zero in (
        ("involvedObject", {}),
        ("source", {}),
        ("firstTimestamp", None),
        ("lastTimestamp", None),
        ("eventTime", None),
        ("reportingComponent", ""),
        ("reportingInstance", ""),
    ):
        out.setdefault(key, zero)
    return out


# ---------------------------------------------------------------------------------------------
# Defaulting (SetDefaults_* of the v1 APIs)
# ---------------------------------------------------------------------------------------------


def _default_pod_template(spec: Obj) -> None:
    template = spec.setdefault("template", {})
    if not isinstance(template, dict):
        return
    pod = template.setdefault("spec", {})
    if not isinstance(pod, dict):
        return
    pod.setdefault("restartPolicy", "Always")
    pod.setdefault("terminationGracePeriodSeconds", 30)
    pod.setdefault("dnsPolicy", "ClusterFirst")
    pod.setdefault("securityContext", {})
    pod.setdefault("schedulerName", "default-scheduler")
    for container in pod.get("containers") or []:
        if not isinstance(container, dict):
            continue
        image = str(container.get("image") or "")
        tag = image.rsplit("/", 1)[-1].partition(":")[2] if "@" not in image else "digest"
        container.setdefault(
            "imagePullPolicy", "Always" if tag in ("", "latest") else "IfNotPresent"
        )
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        container.setdefault("resources", {})
        for port in container.get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")


def _default_deployment(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    if spec.get("replicas") is None:
        spec["replicas"] = 1
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    _default_pod_template(spec)


def _default_statefulset(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    if spec.get("replicas") is None:
        spec["replicas"] = 1
    spec.setdefault("podManagementPolicy", "OrderedReady")
    strategy = spec.setdefault("updateStrategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        strategy.setdefault("rollingUpdate", {}).setdefault("partition", 0)
    spec.setdefault("revisionHistoryLimit", 10)
    policy = spec.setdefault("persistentVolumeClaimRetentionPolicy", {})
    policy.setdefault("whenDeleted", "Retain")
    policy.setdefault("whenScaled", "Retain")
    _default_pod_template(spec)


def _default_namespace(obj: Obj) -> None:
    name = obj["metadata"].get("name", "")
    # Set by the apiserver on every write since v1.22, and relied upon by namespaceSelectors.
    obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])


def apply_defaults(rt: ResourceType, obj: Obj) -> None:
    if rt.kind == "Deployment":
        _default_deployment(obj)
    elif rt.kind == "StatefulSet":
        _default_statefulset(obj)
    elif rt.kind == "Namespace":
        _default_namespace(obj)
    elif rt.kind == crd.CRD_KIND:
        crd.apply_defaults(obj)


def initial_status(rt: ResourceType) -> Obj | None:
    """The status a create starts from, whatever the client sent (PrepareForCreate)."""
    if rt.kind == "Deployment":
        return {}
    if rt.kind == "StatefulSet":
        return {"replicas": 0, "availableReplicas": 0}  # not omitempty in the Go type
    if rt.kind == "Namespace":
        return {"phase": "Active"}
    return None


def has_status(rt: ResourceType) -> bool:
    """Kinds whose status only its subresource (or a controller) may write; a custom resource's
    when its CRD declares the status subresource (then a create drops any status sent)."""
    if rt.custom:
        return "status" in rt.subresources
    return rt.kind in ("Deployment", "StatefulSet", "Namespace", crd.CRD_KIND)


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def _go_selector(selector: Any) -> str:
    if not isinstance(selector, dict):
        return "nil"
    labels = selector.get("matchLabels") or {}
    inner = ", ".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in sorted(labels.items()))
    return (
        f"v1.LabelSelector{{MatchLabels:map[string]string{{{inner}}}, "
        "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}"
    )


def _validate_workload(rt: ResourceType, obj: Obj, old: Obj | None) -> list[FieldError]:
    spec = obj.get("spec") or {}
    problems: list[FieldError] = []
    problems += minimum(spec.get("replicas"), "spec.replicas", 0)
    selector = spec.get("selector")
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    if not selector:
        problems.append(FieldError("spec.selector", "Required"))
    elif not selector.get("matchLabels") and not selector.get("matchExpressions"):
        problems.append(
            FieldError(
                "spec.selector",
                "Invalid",
                GoText(_go_selector(selector)),
                f"empty selector is invalid for {rt.singular}",
            )
        )
    elif not selector_matches_object(selector, labels):
        problems.append(
            FieldError(
                "spec.template.metadata.labels",
                "Invalid",
                labels,
                "`selector` does not match template `labels`",
            )
        )
    problems += validate_labels(labels, "spec.template.metadata.labels")
    containers = (template.get("spec") or {}).get("containers") or []
    if not containers:
        problems.append(FieldError("spec.template.spec.containers", "Required"))
    for index, container in enumerate(containers):
        path = f"spec.template.spec.containers[{index}]"
        if not isinstance(container, dict) or not container.get("name"):
            problems.append(FieldError(f"{path}.name", "Required"))
        if not isinstance(container, dict) or not container.get("image"):
            problems.append(FieldError(f"{path}.image", "Required"))
    if old is not None:
        old_spec = old.get("spec") or {}
        if old_spec.get("selector") != selector:
            problems.append(
                FieldError(
                    "spec.selector",
                    "Invalid",
                    GoText(_go_selector(selector)),
                    "field is immutable",
                )
            )
        if rt.kind == "StatefulSet":
            mutable = (
                "replicas",
                "ordinals",
                "template",
                "updateStrategy",
                "persistentVolumeClaimRetentionPolicy",
                "minReadySeconds",
                "revisionHistoryLimit",
            )
            if {k: v for k, v in spec.items() if k not in mutable} != {
                k: v for k, v in old_spec.items() if k not in mutable
            }:
                problems.append(
                    FieldError(
                        "spec",
                        "Forbidden",
                        detail="updates to statefulset spec for fields other "
                        "than 'replicas', 'ordinals', 'template', 'updateStrategy', "
                        "'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are "
                        "forbidden",
                    )
                )
    return problems


def _validate_lease(obj: Obj) -> list[FieldError]:
    spec = obj.get("spec") or {}
    return minimum(spec.get("leaseDurationSeconds"), "spec.leaseDurationSeconds", 1) + minimum(
        spec.get("leaseTransitions"), "spec.leaseTransitions", 0
    )


def _validate_event(rt: ResourceType, obj: Obj) -> list[FieldError]:
    """ValidateEventCreate: legacy rules for both APIs, strict ones for events.k8s.io/v1."""
    strict = rt.group == "events.k8s.io"
    names = {v: k for k, v in _EVENTS_TO_CORE.items()} if strict else {}

    def path(core_name: str) -> str:
        return names.get(core_name, core_name)

    problems: list[FieldError] = []
    namespace = obj["metadata"].get("namespace", "")
    involved_ns = (obj.get("involvedObject") or {}).get("namespace") or ""
    if not obj.get("eventTime"):
        if (not involved_ns and namespace not in ("", "default")) or (
            involved_ns and involved_ns != namespace
        ):
            problems.append(
                FieldError(
                    f"{path('involvedObject')}.namespace",
                    "Invalid",
                    involved_ns,
                    "does not match event.namespace",
                )
            )
    else:
        if not involved_ns and namespace not in ("default", "kube-system"):
            problems.append(
                FieldError(
                    f"{path('involvedObject')}.namespace",
                    "Invalid",
                    involved_ns,
                    "does not match event.namespace",
                )
            )
        for core_name, limit in (
            ("reportingComponent", 0),
            ("reportingInstance", 128),
            ("action", 128),
            ("reason", 128),
        ):
            value = obj.get(core_name) or ""
            if not value:
                problems.append(FieldError(path(core_name), "Required"))
            elif limit and len(value) > limit:
                problems.append(
                    FieldError(
                        path(core_name), "Invalid", "", f"can have at most {limit} characters"
                    )
                )
    if strict:
        if not obj.get("eventTime"):
            problems.append(FieldError("eventTime", "Required"))
        if obj.get("type") not in ("Normal", "Warning"):
            problems.append(
                FieldError("type", "Invalid", "", f"has invalid value: {obj.get('type') or ''}")
            )
        for core_name in ("firstTimestamp", "lastTimestamp", "count", "source"):
            if obj.get(core_name):
                problems.append(FieldError(path(core_name), "Invalid", "", "needs to be unset"))
    return problems


def validate(rt: ResourceType, obj: Obj, old: Obj | None) -> list[FieldError]:
    """Every validation error of `obj` (stored form) as `rt`, given the object it replaces."""
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    problems: list[FieldError] = []
    if rt.kind == "Namespace":
        problems += validate_name(name, "metadata.name", label=True)
    elif rt.kind == "Event" and rt.group == "":
        problems += validate_path_segment_name(name, "metadata.name")
    else:
        problems += validate_name(name, "metadata.name")
    problems += validate_labels(meta.get("labels"), "metadata.labels")
    if rt.kind in ("Deployment", "StatefulSet"):
        problems += _validate_workload(rt, obj, old)
    elif rt.kind == "Lease":
        problems += _validate_lease(obj)
    elif rt.kind == "ConfigMap":
        problems += validate_config_keys(obj.get("data"), "data")
        problems += validate_config_keys(obj.get("binaryData"), "binaryData")
    elif rt.kind == "Event":
        problems += _validate_event(rt, obj)
    elif rt.kind == crd.CRD_KIND:
        problems += crd.validate(obj, old)
    return problems


# ---------------------------------------------------------------------------------------------
# Views: what a resource type shows of a stored object
# ---------------------------------------------------------------------------------------------


def clone(obj: Any) -> Any:
    """A deep copy sharing nothing, not even between its own branches (deepcopy would keep a
    dict referenced twice shared, and a later patch of one place would change the other)."""
    return json.loads(json.dumps(obj))


def to_view(rt: ResourceType, stored: Obj, with_type: bool = True) -> Obj:
    """The stored object as `rt` serves it; list items carry no kind/apiVersion, as on a cluster."""
    body: Obj = clone(stored)
    if rt.kind == "Event":
        body = event_from_core(body) if rt.group == "events.k8s.io" else core_event_view(body)
    body.pop("kind", None)
    body.pop("apiVersion", None)
    if not with_type:
        return body
    return {"kind": rt.kind, "apiVersion": rt.api_version, **body}


# Time fields of the kinds we serve: metav1.Time has second precision, MicroTime microseconds.
_TIME_FIELDS = {
    "Event": {
        "firstTimestamp": False,
        "lastTimestamp": False,
        "eventTime": True,
        "series.lastObservedTime": True,
    },
    "Lease": {"spec.acquireTime": True, "spec.renewTime": True},
}


def _go_time(value: Any, micro: bool) -> Any:
    """Re-serialise a timestamp as the apiserver does: UTC, `Z`, fixed precision."""
    if not isinstance(value, str) or not value:
        return value
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise errors.bad_request(f"parsing time {json.dumps(value)} as RFC3339: {exc}") from exc
    if parsed.tzinfo is None:
        raise errors.bad_request(f"parsing time {json.dumps(value)}: missing time zone offset")
    parsed = parsed.astimezone(datetime.UTC)
    return parsed.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def _normalise_times(kind: str, obj: Obj) -> None:
    for dotted, micro in _TIME_FIELDS.get(kind, {}).items():
        *parents, leaf = dotted.split(".")
        holder: Any = obj
        for part in parents:
            holder = holder.get(part) if isinstance(holder, dict) else None
        if isinstance(holder, dict) and leaf in holder:
            holder[leaf] = _go_time(holder[leaf], micro)


def from_view(rt: ResourceType, body: Obj) -> Obj:
    """A request body of `rt` in stored form (both event APIs store the core/v1 shape)."""
    body = dict(clone(body))
    body.pop("kind", None)
    body.pop("apiVersion", None)
    if rt.kind == "Event" and rt.group == "events.k8s.io":
        body = event_to_core(body)
    _normalise_times(rt.kind, body)
    return body


def scale_view(rt: ResourceType, stored: Obj) -> Obj:
    """autoscaling/v1 Scale of a Deployment, a StatefulSet or a custom resource; a workload's
    `status.selector` is its spec.selector, always filled in."""
    if rt.scale_paths is not None:
        return crd.scale_view(rt, stored)
    spec = stored.get("spec") or {}
    return scale_document(
        stored["metadata"],
        spec.get("replicas") or 0,
        (stored.get("status") or {}).get("replicas") or 0,
        format_label_selector(spec.get("selector")),
    )


# ---------------------------------------------------------------------------------------------
# The workload controllers' view of a settled rollout
# ---------------------------------------------------------------------------------------------

_NAME_SUFFIX_CHARS = "bcdfghjklmnpqrstvwxz2456789"


def pod_template_hash(stored: Obj) -> str:
    """A stable, realistic-looking hash of the pod template (names the ReplicaSet/revision)."""
    digest = hashlib.sha256(
        json.dumps((stored.get("spec") or {}).get("template"), sort_keys=True).encode()
    ).digest()
    return "".join(_NAME_SUFFIX_CHARS[b % len(_NAME_SUFFIX_CHARS)] for b in digest[:10])


def _condition(old: list[Obj], type_: str, reason: str, message: str, now: str) -> Obj:
    previous = next((c for c in old if c.get("type") == type_), None)
    if previous and previous.get("reason") == reason and previous.get("status") == "True":
        return {**previous, "message": message}
    return {
        "type": type_,
        "status": "True",
        "lastUpdateTime": now,
        "lastTransitionTime": now,
        "reason": reason,
        "message": message,
    }


def settled_status(rt: ResourceType, stored: Obj) -> Obj:
    """The status a workload controller reports once every wanted replica runs and is ready."""
    replicas = (stored.get("spec") or {}).get("replicas") or 0
    generation = stored["metadata"].get("generation", 1)
    name = stored["metadata"]["name"]
    revision = f"{name}-{pod_template_hash(stored)}"
    if rt.kind == "StatefulSet":
        status: Obj = {"observedGeneration": generation, "replicas": replicas}
        if replicas:
            status.update(
                readyReplicas=replicas, currentReplicas=replicas, updatedReplicas=replicas
            )
        status.update(
            currentRevision=revision,
            updateRevision=revision,
            collisionCount=0,
            availableReplicas=replicas,
        )
        return status
    old_conditions = (stored.get("status") or {}).get("conditions") or []
    now = now_rfc3339()
    status = {"observedGeneration": generation}
    if replicas:  # all omitempty in DeploymentStatus
        status.update(
            replicas=replicas,
            updatedReplicas=replicas,
            readyReplicas=replicas,
            availableReplicas=replicas,
        )
    status["conditions"] = [
        _condition(
            old_conditions,
            "Available",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            now,
        ),
        _condition(
            old_conditions,
            "Progressing",
            "NewReplicaSetAvailable",
            f'ReplicaSet "{revision}" has successfully progressed.',
            now,
        ),
    ]
    return status


def needs_reconcile(stored: Obj) -> bool:
    status = stored.get("status") or {}
    return status.get("observedGeneration") != stored["metadata"].get("generation") or (
        status.get("replicas") or 0
    ) != ((stored.get("spec") or {}).get("replicas") or 0)
