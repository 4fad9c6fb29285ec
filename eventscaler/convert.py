"""`autoscaler.py convert`: KEDA ScaledObjects in, a rule file out, and everything not converted
listed with the reason and what to do instead.

    python autoscaler.py convert scaledobjects.yaml > rules.yaml

The input is one or more YAML documents (`---`), or a `kind: List`. ScaledObjects are converted;
TriggerAuthentications in the same input are read to explain their references; other kinds are
skipped and said so. The rule file goes to stdout, the notes to stderr, one line each:

    FILE: ScaledObject NAMESPACE/NAME: FIELD: not converted: REASON
    FILE: ScaledObject NAMESPACE/NAME: FIELD: note: WHAT TO DO OR KNOW

Exit status: 0 when everything was converted, 1 when a rule file was printed but something was
not converted (read stderr), 2 when the input is unreadable or no ScaledObject could be converted.

The mapping follows KEDA's field names, which the rule file shares. Fields that the loader of
this version of eventscaler does not know (fallback, accountName...) are reported as not converted
rather than written, so the output always loads: it is checked with the real loader before it is
printed.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from eventscaler import config, sources
from eventscaler.triggers import AVERAGE_VALUE, METRIC_TYPES

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_INVALID = 2

KEDA_API_GROUP = "keda.sh"
# (group, kind) of the targets manifests/rbac.yaml grants; others need two more RBAC lines.
SHIPPED_RBAC_KINDS = {("apps", "Deployment"), ("extensions", "Deployment"), ("apps", "StatefulSet")}
HPA_DEFAULT_SCALE_UP_POLICIES = [
    {"type": "Pods", "value": 4, "periodSeconds": 15},
    {"type": "Percent", "value": 100, "periodSeconds": 15},
]
SPEC_FIELDS = {
    "scaleTargetRef",
    "pollingInterval",
    "cooldownPeriod",
    "initialCooldownPeriod",
    "idleReplicaCount",
    "minReplicaCount",
    "maxReplicaCount",
    "fallback",
    "advanced",
    "triggers",
}
TRIGGER_KEYS = {"type", "name", "metadata", "authenticationRef", "metricType", "useCachedMetrics"}
BEHAVIOR_RULE_FIELDS = ("stabilizationWindowSeconds", "selectPolicy", "policies")
PAUSE_ANNOTATIONS = ("autoscaling.keda.sh/paused", "autoscaling.keda.sh/paused-replicas")
HPA_ANNOTATIONS = (
    "scaledobject.keda.sh/transfer-hpa-ownership",
    "validations.keda.sh/hpa-ownership",
)


@dataclass(frozen=True)
class Note:
    """One thing to tell about a conversion."""

    source: str  # "ScaledObject default/orders", or "document 3 (Secret)"
    field: str  # "spec.idleReplicaCount", "" for the whole object
    message: str
    converted: bool = False  # False: something was lost; True: converted, but read this

    def __str__(self) -> str:
        kind = "note" if self.converted else "not converted"
        where = ": ".join(part for part in (self.source, self.field) if part)
        return f"{where}: {kind}: {self.message}"


@dataclass(frozen=True)
class Conversion:
    rules: tuple[dict[str, Any], ...]
    sources: tuple[str, ...]  # "ScaledObject ns/name" for each rule
    notes: tuple[Note, ...]
    skipped: int  # ScaledObjects that gave no rule

    @property
    def complete(self) -> bool:
        return not self.skipped and all(n.converted for n in self.notes)


class ConvertError(Exception):
    """The input as a whole cannot be read."""


# ---------------------------------------------------------------------------------------------
# Small helpers


def _number(value: Any) -> float | int | None:
    """KEDA's trigger metadata are strings ("5"); a number, int when whole, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return int(value) if float(value).is_integer() else float(value)


def _whole(value: Any) -> int | None:
    number = _number(value) if not isinstance(value, str) else None
    return number if isinstance(number, int) else None


def _kind(document: Any) -> str:
    return str(document.get("kind", "")) if isinstance(document, Mapping) else ""


def _is_keda(document: Mapping[str, Any], kind: str) -> bool:
    api = str(document.get("apiVersion", ""))
    return _kind(document) == kind and (not api or api.split("/")[0] == KEDA_API_GROUP)


def _documents(text: str) -> list[Any]:
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or exc
        raise ConvertError(f"not valid YAML{where}: {problem}") from None
    except (ValueError, RecursionError) as exc:
        raise ConvertError(f"not valid YAML: {exc}") from None
    flat: list[Any] = []
    for document in documents:
        if _kind(document) == "List" and isinstance(document.get("items"), list):
            flat.extend(document["items"])
        else:
            flat.append(document)
    return flat


class _KedaTrigger:
    """One KEDA trigger as a source's `from_keda` sees it (sources.base.KedaTrigger)."""

    def __init__(
        self,
        owner: _ScaledObject,
        trigger: Mapping[str, Any],
        metadata: Mapping[str, Any],
        field: str,
    ) -> None:
        self._owner = owner
        self._field = field
        self.metadata = metadata
        self.auth_ref = trigger.get("authenticationRef")
        self.auth = owner.find_auth(self.auth_ref)

    def lost(self, path: str, message: str) -> None:
        self._owner.lost(f"{self._field}.{path}" if path else self._field, message)

    def note(self, path: str, message: str) -> None:
        self._owner.note(f"{self._field}.{path}" if path else self._field, message)

    def number(self, value: Any) -> float | int | None:
        return _number(value)

    @staticmethod
    def env_name(text: str) -> str:
        """An environment variable name made from an object's name: orders-auth -> ORDERS_AUTH."""
        name = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").upper()
        return name if re.match(r"^[A-Z_]", name) else f"_{name}"


# ---------------------------------------------------------------------------------------------
# One ScaledObject


class _ScaledObject:
    """Converts one ScaledObject, collecting notes as it goes."""

    def __init__(
        self, document: Mapping[str, Any], auths: Mapping[tuple[str, str, str], Mapping[str, Any]]
    ) -> None:
        metadata = document.get("metadata") or {}
        self.name = str(metadata.get("name") or "")
        self.namespace = str(metadata.get("namespace") or "default")
        self.annotations = metadata.get("annotations") or {}
        self.spec = document.get("spec") or {}
        self.auths = auths
        self.source = f"ScaledObject {self.namespace}/{self.name or '(no name)'}"
        self.notes: list[Note] = []

    def lost(self, field: str, message: str) -> None:
        self.notes.append(Note(self.source, field, message))

    def note(self, field: str, message: str) -> None:
        self.notes.append(Note(self.source, field, message, converted=True))

    def convert(self) -> dict[str, Any] | None:
        if not self.name:
            self.lost("metadata.name", "missing: a rule needs a name")
            return None
        if not isinstance(self.spec, Mapping):
            self.lost("spec", "missing or not a mapping")
            return None
        target = self._target()
        if target is None:
            return None
        triggers = self._triggers()
        if not triggers:
            self.lost("spec.triggers", "no trigger could be converted: no rule written")
            return None
        rule: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        rule.update(target)
        # Written even when left out: KEDA's defaults, so the rule keeps KEDA's meaning even if
        # the rule file's own defaults ever change.
        for ours, keda, default in (
            ("minReplicas", "minReplicaCount", 0),
            ("maxReplicas", "maxReplicaCount", 100),
            ("pollingInterval", "pollingInterval", 30),
            ("cooldownPeriod", "cooldownPeriod", 300),
        ):
            rule[ours] = self._whole_field(keda, default)
        rule["triggers"] = triggers
        behavior = self._advanced()
        if behavior:
            rule["behavior"] = behavior
        modifiers = self._scaling_modifiers()
        if modifiers:
            rule["scalingModifiers"] = modifiers
        fallback = self._fallback()
        if fallback:
            rule["fallback"] = fallback
        self._unsupported_spec_fields()
        self._annotations()
        return rule

    def _whole_field(self, key: str, default: int) -> int:
        if key not in self.spec:
            return default
        value = _whole(self.spec[key])
        if value is None or value < 0:
            self.lost(
                f"spec.{key}",
                f"expected a whole number, got {self.spec[key]!r}: "
                f"KEDA's default {default} written instead",
            )
            return default
        return value

    def _target(self) -> dict[str, Any] | None:
        """`deployment: NAME` for a Deployment (as before), else KEDA's scaleTargetRef as is."""
        ref = self.spec.get("scaleTargetRef")
        if not isinstance(ref, Mapping) or not ref.get("name"):
            self.lost("spec.scaleTargetRef.name", "missing: no rule written")
            return None
        kind = str(ref.get("kind") or "Deployment")
        api = str(ref.get("apiVersion") or "apps/v1")
        self._target_notes(ref, kind, api)
        if kind == "Deployment" and api.split("/")[0] in ("apps", "extensions"):
            return {"deployment": str(ref["name"])}
        return {"scaleTargetRef": {"apiVersion": api, "kind": kind, "name": str(ref["name"])}}

    def _target_notes(self, ref: Mapping[str, Any], kind: str, api: str) -> None:
        if (api.split("/")[0], kind) not in SHIPPED_RBAC_KINDS:
            self.note(
                "spec.scaleTargetRef.kind",
                f"{kind} ({api}): the shipped RBAC covers Deployments and StatefulSets; grant "
                "`get` on this kind and `get`, `patch` on its scale subresource "
                "(docs/cluster.md)",
            )
        if ref.get("envSourceContainerName"):
            self.note(
                "spec.scaleTargetRef.envSourceContainerName",
                "not needed: eventscaler reads connectionFromEnv from its own environment",
            )

    # -- triggers

    def _triggers(self) -> list[dict[str, Any]]:
        triggers = self.spec.get("triggers")
        if not isinstance(triggers, list) or not triggers:
            self.lost("spec.triggers", "missing or empty: no rule written")
            return []
        converted = []
        for index, trigger in enumerate(triggers):
            field = f"spec.triggers[{index}]"
            if not isinstance(trigger, Mapping):
                self.lost(field, f"expected a mapping, got {trigger!r}")
                continue
            result = self._trigger(trigger, field)
            if result is not None:
                converted.append(result)
        return converted

    def _trigger(self, trigger: Mapping[str, Any], field: str) -> dict[str, Any] | None:
        """The generic fields here; the source module maps its own metadata (from_keda)."""
        kind = trigger.get("type")
        if not isinstance(kind, str) or kind not in sources.SOURCE_MODULES:
            known = ", ".join(sources.known_types())
            self.lost(
                field,
                f"type {kind!r}: not a source eventscaler reads ({known}); "
                "keep KEDA for this trigger or drop it",
            )
            return None
        metadata = trigger.get("metadata") or {}
        if not isinstance(metadata, Mapping):
            self.lost(f"{field}.metadata", f"expected a mapping, got {metadata!r}")
            return None
        keda = _KedaTrigger(self, trigger, metadata, field)
        out: dict[str, Any] = {"type": kind}
        if trigger.get("name"):
            out["name"] = str(trigger["name"])
        mapped = sources.source_type(kind).from_keda(keda)
        if mapped is None:
            return None
        out.update(mapped)
        self._generic_trigger_fields(trigger, field, out)
        return out

    def _generic_trigger_fields(
        self, trigger: Mapping[str, Any], field: str, out: dict[str, Any]
    ) -> None:
        for key in trigger:
            if key not in TRIGGER_KEYS:
                self.lost(f"{field}.{key}", "not a trigger field eventscaler knows")
        metric_type = trigger.get("metricType", AVERAGE_VALUE)
        if metric_type in METRIC_TYPES:
            if metric_type != AVERAGE_VALUE:
                out["metricType"] = metric_type
        else:
            self.lost(
                f"{field}.metricType",
                f"{metric_type!r}: expected one of "
                f"{', '.join(METRIC_TYPES)}; left out, AverageValue applies",
            )
        if "useCachedMetrics" in trigger:
            self.note(
                f"{field}.useCachedMetrics",
                "dropped: eventscaler has no metrics cache; "
                "each trigger is read once per pollingInterval anyway",
            )

    def find_auth(self, ref: Any) -> Mapping[str, Any] | None:
        if not isinstance(ref, Mapping):
            return None
        kind = str(ref.get("kind") or "TriggerAuthentication")
        namespace = "" if kind == "ClusterTriggerAuthentication" else self.namespace
        return self.auths.get((kind, namespace, str(ref.get("name", ""))))

    # -- the rest of the spec

    def _advanced(self) -> dict[str, Any] | None:
        """The HPA behavior of `advanced`; its other keys are reported (scalingModifiers aside)."""
        advanced = self.spec.get("advanced") or {}
        if not isinstance(advanced, Mapping):
            self.lost("spec.advanced", f"expected a mapping, got {advanced!r}")
            return None
        for key in advanced:
            field = f"spec.advanced.{key}"
            if key == "restoreToOriginalReplicaCount":
                self.lost(field, "eventscaler has no equivalent: removing a rule leaves the "
                                 "replicas as they are")  # fmt: skip
            elif key not in ("horizontalPodAutoscalerConfig", "scalingModifiers"):
                self.lost(field, "not a field eventscaler knows")
        hpa = advanced.get("horizontalPodAutoscalerConfig") or {}
        if isinstance(hpa, Mapping) and hpa.get("name"):
            self.note("spec.advanced.horizontalPodAutoscalerConfig.name",
                      "dropped: eventscaler creates no HPA")  # fmt: skip
        behavior = hpa.get("behavior") if isinstance(hpa, Mapping) else None
        out: dict[str, Any] = {}
        for direction in ("scaleUp", "scaleDown"):
            rules = behavior.get(direction) if isinstance(behavior, Mapping) else None
            mapped = self._behavior_direction(direction, rules)
            if mapped is not None:
                out[direction] = mapped
        return out or None

    def _behavior_direction(self, direction: str, rules: Any) -> dict[str, Any] | None:
        field = f"spec.advanced.horizontalPodAutoscalerConfig.behavior.{direction}"
        if direction == "scaleUp" and not (isinstance(rules, Mapping) and rules.get("policies")):
            self.note(
                field,
                "KEDA's HPA adds at most 4 pods or 100 % per 15 s by default; "
                "eventscaler scales up at once. To keep KEDA's pace add behavior: "
                "{scaleUp: {policies: [{type: Pods, value: 4, periodSeconds: 15}, "
                "{type: Percent, value: 100, periodSeconds: 15}]}}",
            )
        if not isinstance(rules, Mapping):
            return None
        for key in rules:
            if key not in BEHAVIOR_RULE_FIELDS:
                self.lost(f"{field}.{key}", "not supported by the rule file's behavior")
        return {k: rules[k] for k in BEHAVIOR_RULE_FIELDS if k in rules}

    def _scaling_modifiers(self) -> dict[str, Any] | None:
        """KEDA's advanced.scalingModifiers, field by field (the loader checks the formula)."""
        advanced = self.spec.get("advanced")
        modifiers = advanced.get("scalingModifiers") if isinstance(advanced, Mapping) else None
        if modifiers is None:
            return None
        field = "spec.advanced.scalingModifiers"
        if not isinstance(modifiers, Mapping) or not modifiers.get("formula"):
            self.lost(field, "no formula: the rule takes the highest trigger's ask")
            return None
        out: dict[str, Any] = {"formula": str(modifiers["formula"])}
        for key in ("target", "activationTarget"):
            number = _number(modifiers.get(key)) if key in modifiers else None
            if number is not None:
                out[key] = number
            elif key in modifiers:
                self.lost(f"{field}.{key}", f"expected a number, got {modifiers[key]!r}")
        if "metricType" in modifiers:
            out["metricType"] = str(modifiers["metricType"])
        for key in modifiers:
            if key not in out and key not in ("target", "activationTarget"):
                self.lost(f"{field}.{key}", "not a scalingModifiers field eventscaler knows")
        if "target" not in out:
            self.lost(f"{field}.target", "missing: KEDA requires it; the formula is left out")
            return None
        return out

    def _fallback(self) -> dict[str, Any] | None:
        fallback = self.spec.get("fallback")
        if fallback is None:
            return None
        if not isinstance(fallback, Mapping):
            self.lost("spec.fallback", f"expected a mapping, got {fallback!r}")
            return None
        out = {k: fallback[k] for k in ("failureThreshold", "replicas") if k in fallback}
        for key in fallback:
            if key == "behavior" and fallback[key] == "static":
                continue  # KEDA's default, and what eventscaler does
            if key not in out:
                self.lost(
                    f"spec.fallback.{key}",
                    "not supported by the rule file's fallback (it always runs fallback.replicas)",
                )
        self.note(
            "spec.fallback",
            "eventscaler applies it at any replica count, zero included "
            "(KEDA's cannot lift a target from 0)",
        )
        return out

    def _unsupported_spec_fields(self) -> None:
        if "idleReplicaCount" in self.spec:
            self.lost(
                "spec.idleReplicaCount",
                "eventscaler has no idle count: an idle rule "
                "goes to minReplicas after cooldownPeriod (0 with minReplicas 0); pick "
                "minReplicas 0 to keep the scale to zero, at the cost of the floor while "
                "active",
            )
        if "initialCooldownPeriod" in self.spec:
            self.lost(
                "spec.initialCooldownPeriod",
                "not needed: eventscaler counts its own "
                "start as activity, so nothing goes to zero before a full cooldownPeriod "
                "after a start",
            )
        for key in self.spec:
            if key not in SPEC_FIELDS:
                self.lost(f"spec.{key}", "not a ScaledObject field eventscaler knows")

    def _annotations(self) -> None:
        if not isinstance(self.annotations, Mapping):
            return
        for key, value in self.annotations.items():
            field = f"metadata.annotations[{key}]"
            if key in PAUSE_ANNOTATIONS:
                target = f"{self.namespace}/{self.spec['scaleTargetRef']['name']}"
                self.lost(
                    field,
                    f"eventscaler reads pause annotations from the Deployment: "
                    f"annotate Deployment {target} with {key}: {value!r} (KEDA's names "
                    "work there)",
                )
            elif key in HPA_ANNOTATIONS:
                self.note(field, "dropped: eventscaler creates no HPA")
            elif ".keda.sh/" in f".{key}":
                self.lost(field, "a KEDA annotation eventscaler does not know")


# ---------------------------------------------------------------------------------------------
# The whole input


def _trigger_authentications(
    documents: list[Any],
) -> dict[tuple[str, str, str], Mapping[str, Any]]:
    """(Cluster)TriggerAuthentications by (kind, namespace, name), for authenticationRef."""
    auths: dict[tuple[str, str, str], Mapping[str, Any]] = {}
    for document in documents:
        for kind in ("TriggerAuthentication", "ClusterTriggerAuthentication"):
            if isinstance(document, Mapping) and _is_keda(document, kind):
                metadata = document.get("metadata") or {}
                namespace = "" if kind.startswith("Cluster") else metadata.get("namespace")
                key = (kind, str(namespace or ""), str(metadata.get("name", "")))
                if kind == "TriggerAuthentication" and not namespace:
                    key = (kind, "default", key[2])
                auths[key] = document
    return auths


def convert_text(text: str, source: str) -> Conversion:
    """Convert every ScaledObject in `text`. Raises ConvertError if the YAML cannot be read."""
    documents = _documents(text)
    auths = _trigger_authentications(documents)

    rules: list[dict[str, Any]] = []
    sources: list[str] = []
    notes: list[Note] = []
    skipped = 0
    names: set[str] = set()
    for index, document in enumerate(documents, start=1):
        kind = _kind(document)
        if not (isinstance(document, Mapping) and _is_keda(document, "ScaledObject")):
            where = f"document {index} ({kind or 'no kind'})"
            if kind == "ScaledJob":
                why = "ScaledJobs run Jobs; eventscaler scales Deployments only"
                notes.append(Note(where, "", why))
                skipped += 1
            elif kind not in ("TriggerAuthentication", "ClusterTriggerAuthentication"):
                notes.append(Note(where, "", "skipped: not a ScaledObject", converted=True))
            continue
        scaled = _ScaledObject(document, auths)
        rule = scaled.convert()
        notes.extend(scaled.notes)
        if rule is None:
            skipped += 1
            continue
        if rule["name"] in names:
            renamed = f"{rule['namespace']}.{rule['name']}"
            why = f"rule renamed {renamed}: rule names are unique in a file"
            notes.append(Note(scaled.source, "metadata.name", why, converted=True))
            rule["name"] = renamed
        names.add(rule["name"])
        rules.append(rule)
        sources.append(scaled.source)
    return Conversion(tuple(rules), tuple(sources), tuple(notes), skipped)


def render_rules(conversion: Conversion, source: str) -> str:
    """The rule file: a header, then each rule under a comment naming its ScaledObject."""
    lines = [
        f"# Converted from the ScaledObjects in {source} by `autoscaler.py convert`.",
        "# Check it with `python autoscaler.py validate FILE`. What was not converted, and what to",
        "# do about it, was listed on stderr.",
        "rules:",
    ]
    for rule, origin in zip(conversion.rules, conversion.sources, strict=True):
        body = yaml.safe_dump([rule], sort_keys=False, default_flow_style=False, width=100)
        lines.append(f"  # from {origin}")
        lines.extend(f"  {line}" for line in body.rstrip("\n").splitlines())
    if not conversion.rules:
        lines[-1] = "rules: []"
    return "\n".join(lines) + "\n"


def run_convert_command(path: str) -> int:
    source = "stdin" if path == "-" else path
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        conversion = convert_text(text, source)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"{source}: cannot read: {reason}", file=sys.stderr)
        return EXIT_INVALID
    except ConvertError as exc:
        print(f"{source}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    for note in conversion.notes:
        print(f"{source}: {note}", file=sys.stderr)
    if not conversion.rules:
        print(f"{source}: no ScaledObject could be converted", file=sys.stderr)
        return EXIT_INVALID
    output = render_rules(conversion, source)
    # The output must load: check it with the real loader before printing it.
    check = config.parse_rules_text(output, "the converted rule file")
    for problem in check.problems:
        print(f"{source}: {problem}", file=sys.stderr)
    sys.stdout.write(output)
    lost = sum(1 for n in conversion.notes if not n.converted)
    print(
        f"{source}: {len(conversion.rules)} rule(s) written; {lost} item(s) not converted, "
        f"{conversion.skipped} object(s) skipped",
        file=sys.stderr,
    )
    return EXIT_OK if conversion.complete and check.ok else EXIT_PARTIAL
