"""`convert --out DIR`: give eventscaler the same credentials the scaled workload already uses.

KEDA reads a trigger's `connectionFromEnv` (v1: `connection`) from the scaled workload's own
container; eventscaler reads it from its own environment. For each such variable this module
finds, in the workload's Deployment (from the input, or from the cluster when asked), where the
container gets it:

- `env: [{name: VAR, valueFrom: {secretKeyRef | configMapKeyRef}}]`: the same reference;
- `envFrom: [{secretRef | configMapRef, prefix}]`: the key VAR less the prefix of that object;
- `env: [{name: VAR, value: ...}]`: a literal in the Deployment: never copied, the user is told
  to move it into a Secret;
- nowhere: said plainly, since a rule whose variable nobody sets can never read its source.

It writes a kustomize overlay of `manifests/`: the rules as the `eventscaler-rules` ConfigMap, and
a patch of eventscaler's own Deployment with one env entry per variable. A pod can only reference
Secrets and ConfigMaps of its own namespace: when the workload lives elsewhere, the note says
which object to copy into eventscaler's namespace, and how, without ever reading its value.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

AUTOSCALER_NAMESPACE = "eventscaler"  # manifests/: the namespace of eventscaler's Deployment
AUTOSCALER_DEPLOYMENT = "eventscaler"
AUTOSCALER_CONTAINER = "eventscaler"
PATCH_FILE = "eventscaler-env.yaml"

# (namespace, name) -> the Deployment document, or None when it cannot be found.
DeploymentLookup = Callable[[str, str], Mapping[str, Any] | None]


@dataclass(frozen=True)
class EnvNeed:
    """A variable a converted trigger reads, and the workload whose container had it in KEDA."""

    source: str  # "ScaledObject ns/name", for notes
    field: str  # "spec.triggers[0].metadata.connection"
    variable: str
    namespace: str
    deployment: str | None  # None: the target is no Deployment, nothing to look in
    container: str | None  # KEDA's envSourceContainerName (v1: containerName), if given


@dataclass(frozen=True)
class EnvSource:
    """Where a container gets one variable: a key of a Secret or ConfigMap, or a literal."""

    kind: str  # "secret", "configmap" or "literal"
    name: str = ""  # the Secret or ConfigMap
    key: str = ""

    def env_entry(self, variable: str) -> dict[str, Any]:
        ref = "secretKeyRef" if self.kind == "secret" else "configMapKeyRef"
        return {"name": variable, "valueFrom": {ref: {"name": self.name, "key": self.key}}}


@dataclass
class EnvPlan:
    """The env entries for eventscaler's container, and what the user must know or do."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    notes: list[tuple[str, str, str, bool]] = field(default_factory=list)  # source, field, text, ok

    def note(self, need: EnvNeed, message: str, done: bool) -> None:
        self.notes.append((need.source, need.field, message, done))


def find_env_source(
    deployment: Mapping[str, Any], variable: str, container: str | None = None
) -> EnvSource | None:
    """Where the Deployment's container (the named one, else the first) gets `variable`."""
    spec = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    containers = [c for c in spec.get("containers") or [] if isinstance(c, Mapping)]
    chosen = [c for c in containers if container is None or c.get("name") == container][:1]
    for entry in chosen[0].get("env") or [] if chosen else []:
        if isinstance(entry, Mapping) and entry.get("name") == variable:
            return _from_env_entry(entry)
    # envFrom: a later source wins over an earlier one for the same key, as in the kubelet; an
    # explicit `env` entry (checked above) wins over all of them.
    for source in reversed(chosen[0].get("envFrom") or [] if chosen else []):
        found = _from_env_from(source, variable) if isinstance(source, Mapping) else None
        if found is not None:
            return found
    return None


def _from_env_entry(entry: Mapping[str, Any]) -> EnvSource | None:
    if "value" in entry:
        return EnvSource("literal")
    value_from = entry.get("valueFrom") or {}
    for ref_key, kind in (("secretKeyRef", "secret"), ("configMapKeyRef", "configmap")):
        ref = value_from.get(ref_key)
        if isinstance(ref, Mapping) and ref.get("name") and ref.get("key"):
            return EnvSource(kind, str(ref["name"]), str(ref["key"]))
    return None  # fieldRef, resourceFieldRef: not a credential this converter can follow


def _from_env_from(source: Mapping[str, Any], variable: str) -> EnvSource | None:
    prefix = str(source.get("prefix") or "")
    if not variable.startswith(prefix):
        return None
    for ref_key, kind in (("secretRef", "secret"), ("configMapRef", "configmap")):
        ref = source.get(ref_key)
        if isinstance(ref, Mapping) and ref.get("name"):
            return EnvSource(kind, str(ref["name"]), variable[len(prefix) :])
    return None


def plan_env(
    needs: Sequence[EnvNeed],
    documents: Sequence[Any],
    lookup: DeploymentLookup | None = None,
) -> EnvPlan:
    """The env entries eventscaler needs for `needs`, looked up in the input, else the cluster."""
    plan = EnvPlan()
    chosen: dict[str, EnvSource] = {}
    for need in needs:
        source = _locate(need, documents, lookup, plan)
        if source is None:
            continue
        if need.variable in chosen and chosen[need.variable] != source:
            other = chosen[need.variable]
            plan.note(
                need,
                f"{need.variable} is also read by another rule from {other.kind} "
                f"{other.name} key {other.key}: one variable cannot hold both; give "
                "this trigger its own connectionFromEnv name",
                done=False,
            )
            continue
        if need.variable not in chosen:
            chosen[need.variable] = source
            plan.entries.append(source.env_entry(need.variable))
        _explain(need, source, documents, plan)
    return plan


def _locate(
    need: EnvNeed, documents: Sequence[Any], lookup: DeploymentLookup | None, plan: EnvPlan
) -> EnvSource | None:
    if need.deployment is None:
        plan.note(
            need,
            f"the target is no Deployment: give eventscaler's container an env var "
            f"{need.variable} from the Secret the workload uses",
            done=True,
        )
        return None
    deployment = _find_document(documents, "Deployment", need.namespace, need.deployment)
    where = "in the input"
    if deployment is None and lookup is not None:
        deployment, where = lookup(need.namespace, need.deployment), "in the cluster"
    what = f"Deployment {need.namespace}/{need.deployment}"
    if deployment is None:
        hint = "" if lookup is not None else " (give it in the input, or use --from-cluster)"
        plan.note(
            need,
            f"{what} is not {where}{hint}: nothing says where its container gets "
            f"{need.variable}; eventscaler needs an env var {need.variable} with the "
            "same value",
            done=True,
        )
        return None
    source = find_env_source(deployment, need.variable, need.container)
    if source is None:
        plan.note(
            need,
            f"nothing in {what} sets {need.variable} (env, envFrom): the rule would "
            "read an unset variable; set it in eventscaler's container",
            done=False,
        )
    elif source.kind == "literal":
        plan.note(
            need,
            f"{what} sets {need.variable} as a literal value: not copied (a secret "
            "belongs in a Secret); put it in a Secret and reference it from "
            f"eventscaler's container as {need.variable}",
            done=False,
        )
        return None
    return source


def _explain(need: EnvNeed, source: EnvSource, documents: Sequence[Any], plan: EnvPlan) -> None:
    kind = "Secret" if source.kind == "secret" else "ConfigMap"
    done = f"{need.variable} from {kind} {source.name} key {source.key} ({PATCH_FILE})"
    if need.namespace == AUTOSCALER_NAMESPACE:
        plan.note(need, f"eventscaler's container gets {done}", done=True)
        return
    copy = _copy_command(kind, source, need.namespace)
    present = _find_document(documents, kind, need.namespace, source.name) is not None
    seen = f" ({kind} {source.name} is in the input)" if present else ""
    plan.note(
        need,
        f"eventscaler's container gets {done}; a pod reads only {kind}s of its own "
        f"namespace, so copy {kind} {source.name}{seen} from {need.namespace} to "
        f"{AUTOSCALER_NAMESPACE}, that key only, without printing it: {copy}",
        done=True,
    )


def _copy_command(kind: str, source: EnvSource, namespace: str) -> str:
    """Copy one key into eventscaler's namespace through a pipe: the value is never printed and
    never on a command line (where `ps` would show it)."""
    jsonpath = "{.data." + source.key.replace(".", "\\.") + "}"
    read = f"kubectl get {kind.lower()} {source.name} -n {namespace} -o jsonpath='{jsonpath}'"
    decode = " | base64 -d" if kind == "Secret" else ""
    create = "secret generic" if kind == "Secret" else "configmap"
    return (
        f"{read}{decode} | kubectl create {create} {source.name} -n {AUTOSCALER_NAMESPACE} "
        f"--from-file={source.key}=/dev/stdin"
    )


def _find_document(
    documents: Sequence[Any], kind: str, namespace: str, name: str
) -> Mapping[str, Any] | None:
    for document in documents:
        if not isinstance(document, Mapping) or document.get("kind") != kind:
            continue
        metadata = document.get("metadata") or {}
        if metadata.get("name") == name and (metadata.get("namespace") or "default") == namespace:
            return document
    return None


def unused_secret_envs(manifests: Path, entries: Sequence[Mapping[str, Any]]) -> list[str]:
    """The shipped Deployment's Secret-fed variables that no converted rule reads: left in, they
    would keep the pod from starting until that Secret exists."""
    try:
        shipped = yaml.safe_load((manifests / "deployment.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return []
    containers = (((shipped or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
    needed = {e["name"] for e in entries}
    unused = []
    for container in containers.get("containers") or []:
        for entry in (
            container.get("env") or [] if container.get("name") == AUTOSCALER_CONTAINER else []
        ):
            secret = (entry.get("valueFrom") or {}).get("secretKeyRef")
            if secret and entry.get("name") not in needed:
                unused.append(str(entry["name"]))
    return unused


def render_patch(entries: Sequence[Mapping[str, Any]], remove: Sequence[str] = ()) -> str:
    """A strategic-merge patch of eventscaler's Deployment: its container gains `entries` and
    loses the variables in `remove`."""
    patch = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": AUTOSCALER_DEPLOYMENT, "namespace": AUTOSCALER_NAMESPACE},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": AUTOSCALER_CONTAINER,
                            "env": [
                                *(dict(e) for e in entries),
                                *({"name": name, "$patch": "delete"} for name in remove),
                            ],
                        },
                    ]
                }
            }
        },
    }
    header = "# The env eventscaler's rules read, from the same Secrets the workloads use.\n"
    return header + yaml.safe_dump(patch, sort_keys=False)


def render_kustomization(manifests: str, with_patch: bool) -> str:
    """An overlay of the shipped manifests: these rules, and the env patch when there is one."""
    body: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [manifests],
        "configMapGenerator": [
            {
                "name": "eventscaler-rules",
                "namespace": AUTOSCALER_NAMESPACE,
                "behavior": "replace",
                "files": ["rules.yaml"],
            }
        ],
        "generatorOptions": {"disableNameSuffixHash": True},
    }
    if with_patch:
        body["patches"] = [{"path": PATCH_FILE}]
    header = "# Written by `autoscaler.py convert --out`: kubectl apply -k THIS_DIRECTORY\n"
    return header + yaml.safe_dump(body, sort_keys=False)


def write_overlay(out: Path, rules_text: str, plan: EnvPlan, manifests: Path) -> list[Path]:
    """Write rules.yaml, the env patch (if any) and kustomization.yaml into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "rules.yaml"]
    written[0].write_text(rules_text, encoding="utf-8")
    remove = unused_secret_envs(manifests, plan.entries)
    if plan.entries or remove:
        written.append(out / PATCH_FILE)
        written[-1].write_text(render_patch(plan.entries, remove), encoding="utf-8")
    relative = os.path.relpath(manifests.resolve(), out.resolve())
    written.append(out / "kustomization.yaml")
    patched = bool(plan.entries or remove)
    written[-1].write_text(render_kustomization(relative, patched), encoding="utf-8")
    return written
