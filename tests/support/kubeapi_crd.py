"""CustomResourceDefinitions in the Kubernetes API test server: what a CRD serves, and its Scale.

Follows apiextensions-apiserver for what the daemon can observe:
- a CRD named PLURAL.GROUP serves its kind under /apis/GROUP/VERSION for every served version,
  listed by discovery with `PLURAL/scale` and `PLURAL/status` entries for the subresources the
  version declares (apiextensions.k8s.io/v1 declares them per version);
- `subresources.scale` maps the autoscaling/v1 Scale onto the custom resource:
  `specReplicasPath` (read, and written by a scale update), `statusReplicasPath` (0 when absent)
  and `labelSelectorPath` (the `selector` key only while the resource has one);
- the scale path of a custom resource whose CRD declares no scale subresource answers 404
  NotFound naming the resource (`plains.example.com "p1" not found`), as a real server does;
- a CRD is Established as soon as it is created (a real server takes a moment: clients wait for
  the condition, so tests written against this server work against a real one);
- deleting a CRD deletes its custom resources.
Not imitated: OpenAPI schema validation and pruning, conversion between versions, categories.
"""

from __future__ import annotations

from typing import Any

from tests.support.kubeapi_errors import FieldError
from tests.support.kubeapi_model import (
    ResourceType,
    ScalePaths,
    dotted_get,
    now_rfc3339,
    scale_document,
)

Obj = dict[str, Any]

CRD_KIND = "CustomResourceDefinition"
SCOPES = ("Namespaced", "Cluster")


def resource_types(crd: Obj) -> list[ResourceType]:
    """The ResourceTypes a stored CRD serves, one per served version."""
    spec = crd.get("spec") or {}
    names, group = spec.get("names") or {}, spec.get("group", "")
    out = []
    for version in spec.get("versions") or []:
        if not version.get("served"):
            continue
        subresources = version.get("subresources") or {}
        scale = subresources.get("scale")
        paths = None
        if isinstance(scale, dict):
            paths = ScalePaths(
                _field(scale.get("specReplicasPath")),
                _field(scale.get("statusReplicasPath")),
                _field(scale.get("labelSelectorPath")),
            )
        out.append(
            ResourceType(
                group,
                str(version.get("name")),
                names["plural"],
                names["kind"],
                names.get("singular") or names["kind"].lower(),
                namespaced=spec.get("scope") == "Namespaced",
                subresources=frozenset(k for k in ("scale", "status") if k in subresources),
                generation=True,  # every custom resource tracks metadata.generation
                storage=f"{names['plural']}.{group}",  # all versions share one storage
                short_names=tuple(names.get("shortNames") or ()),
                custom=True,
                scale_paths=paths,
            )
        )
    return out


def _field(path: Any) -> str:
    """`.spec.replicas` (the CRD's JSON path) as a dotted path, `spec.replicas`."""
    return str(path or "").removeprefix(".")


def crd_manifest(
    group: str,
    kind: str,
    plural: str = "",
    version: str = "v1",
    scale: bool = True,
    status: bool = True,
) -> Obj:
    """A namespaced CRD as a user would apply it (any schema), with the usual scale paths."""
    plural = plural or f"{kind.lower()}s"
    subresources: Obj = {}
    if status:
        subresources["status"] = {}
    if scale:
        subresources["scale"] = {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        }
    schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    served = {"name": version, "served": True, "storage": True,
              "schema": {"openAPIV3Schema": schema}, "subresources": subresources}  # fmt: skip
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": CRD_KIND,
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "scope": "Namespaced",
            "versions": [served],
        },
    }


# ---------------------------------------------------------------------------------------------
# The Scale of a custom resource


def scale_view(rt: ResourceType, stored: Obj) -> Obj:
    """autoscaling/v1 Scale of a custom resource, through its CRD's scale paths."""
    assert rt.scale_paths is not None
    paths = rt.scale_paths
    selector = dotted_get(stored, paths.label_selector) if paths.label_selector else None
    return scale_document(
        stored["metadata"],
        dotted_get(stored, paths.spec_replicas) or 0,
        dotted_get(stored, paths.status_replicas) or 0,
        selector if isinstance(selector, str) else "",
    )


def set_spec_replicas(rt: ResourceType, obj: Obj, replicas: int) -> None:
    """What a scale update writes: the CRD's specReplicasPath, intermediate fields created."""
    assert rt.scale_paths is not None
    *parents, leaf = rt.scale_paths.spec_replicas.split(".")
    holder = obj
    for part in parents:
        child = holder.get(part)
        if not isinstance(child, dict):
            child = holder[part] = {}
        holder = child
    holder[leaf] = replicas


# ---------------------------------------------------------------------------------------------
# The CRD itself: defaults, status, validation


def apply_defaults(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    names = spec.setdefault("names", {})
    kind = names.get("kind") or ""
    if kind:
        names.setdefault("singular", kind.lower())
        names.setdefault("listKind", f"{kind}List")
    # Set once at create (status is a subresource, so updates keep it).
    obj.setdefault("status", established_status(obj))


def established_status(obj: Obj) -> Obj:
    spec = obj.get("spec") or {}
    now = now_rfc3339()
    conditions = [
        {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now,
         "reason": "NoConflicts", "message": "no conflicts found"},
        {"type": "Established", "status": "True", "lastTransitionTime": now,
         "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"},
    ]  # fmt: skip
    stored = [v.get("name") for v in spec.get("versions") or [] if v.get("storage")]
    return {"conditions": conditions, "acceptedNames": dict(spec.get("names") or {}),
            "storedVersions": stored}  # fmt: skip


def validate(obj: Obj, old: Obj | None) -> list[FieldError]:
    """ValidateCustomResourceDefinition, for the fields that decide what is served."""
    spec = obj.get("spec") or {}
    names, group = spec.get("names") or {}, spec.get("group") or ""
    problems: list[FieldError] = []
    if not group:
        problems.append(FieldError("spec.group", "Required"))
    elif "." not in group:
        problems.append(
            FieldError("spec.group", "Invalid", group, "should be a domain with at least one dot")
        )
    for key in ("plural", "kind"):
        if not names.get(key):
            problems.append(FieldError(f"spec.names.{key}", "Required"))
    name = obj["metadata"].get("name", "")
    if names.get("plural") and group and name != f"{names['plural']}.{group}":
        problems.append(
            FieldError("metadata.name", "Invalid", name, 'must be spec.names.plural+"."+spec.group')
        )
    if spec.get("scope") not in SCOPES:
        problems.append(FieldError("spec.scope", "NotSupported", spec.get("scope") or "",
                                   'supported values: "Cluster", "Namespaced"'))  # fmt: skip
    problems += _validate_versions(spec.get("versions"))
    if old is not None:
        old_spec = old.get("spec") or {}
        for path, new_value, old_value in (
            ("spec.group", group, old_spec.get("group")),
            ("spec.scope", spec.get("scope"), old_spec.get("scope")),
            ("spec.names.plural", names.get("plural"), (old_spec.get("names") or {}).get("plural")),
        ):
            if new_value != old_value:
                problems.append(FieldError(path, "Invalid", new_value, "field is immutable"))
    return problems


def _validate_versions(versions: Any) -> list[FieldError]:
    if not isinstance(versions, list) or not versions:
        return [FieldError("spec.versions", "Required", detail="must have exactly one version")]
    problems: list[FieldError] = []
    if sum(1 for v in versions if isinstance(v, dict) and v.get("storage")) != 1:
        shown = [v.get("name") for v in versions if isinstance(v, dict)]
        message = "must have exactly one version marked as storage version"
        problems.append(FieldError("spec.versions", "Invalid", shown, message))
    for index, version in enumerate(versions):
        where = f"spec.versions[{index}]"
        if not isinstance(version, dict) or not version.get("name"):
            problems.append(FieldError(f"{where}.name", "Required"))
            continue
        scale = (version.get("subresources") or {}).get("scale")
        if isinstance(scale, dict):
            problems += _validate_scale(scale, f"{where}.subresources.scale")
    return problems


def _validate_scale(scale: Obj, where: str) -> list[FieldError]:
    problems: list[FieldError] = []
    for key, prefixes, under in (
        ("specReplicasPath", (".spec.",), ".spec"),
        ("statusReplicasPath", (".status.",), ".status"),
        ("labelSelectorPath", (".spec.", ".status."), "either .spec or .status"),
    ):
        value = scale.get(key)
        if value is None:
            if key != "labelSelectorPath":
                problems.append(FieldError(f"{where}.{key}", "Required"))
            continue
        if not isinstance(value, str) or not value.startswith(prefixes):
            message = f"should be a json path under {under}"
            problems.append(FieldError(f"{where}.{key}", "Invalid", value, message))
    return problems
