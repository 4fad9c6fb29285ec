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

from eventscaler import config

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_INVALID = 2

KEDA_API_GROUP = "keda.sh"
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
# KEDA's azure-queue metadata keys are the rule file's trigger fields (same names, same meaning).
AZURE_QUEUE_METADATA = config.TRIGGER_FIELDS - {"type", "name"}
BEHAVIOR_RULE_FIELDS = ("stabilizationWindowSeconds", "selectPolicy", "policies")
PAUSE_ANNOTATIONS = ("autoscaling.keda.sh/paused", "autoscaling.keda.sh/paused-replicas")
# KEDA's cloud names (matched without case, as its EnvironmentFromName does) and the rule file's
# name for the same cloud. An empty or absent cloud is the public cloud in both. KEDA's
# AzureGermanCloud (closed in 2021) is written as Private with its storage suffix.
KEDA_CLOUDS = {
    "azurepubliccloud": "AzurePublicCloud",
    "azurecloud": "AzurePublicCloud",
    "azureusgovernmentcloud": "AzureUSGovernmentCloud",
    "azureusgovernment": "AzureUSGovernmentCloud",
    "azurechinacloud": "AzureChinaCloud",
}
KEDA_GERMAN_CLOUD_SUFFIX = "core.cloudapi.de"
# KEDA's endpointSuffix (cloud Private) is all of the host after the account name
# (queue.core.example.net); the rule file's is what follows "queue." (core.example.net).
KEDA_QUEUE_HOST_PREFIX = "queue."
HPA_ANNOTATIONS = (
    "scaledobject.keda.sh/transfer-hpa-ownership",
    "validations.keda.sh/hpa-ownership",
)


def _loader_knows(section: str, name: str) -> bool:
    """Whether this version's rule-file loader accepts a field (convert never writes one it
    does not, so its output always loads)."""
    fields = config.RULE_FIELDS if section == "rule" else config.TRIGGER_FIELDS
    return name in fields


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


def _env_name(text: str) -> str:
    """An environment variable name made from an object's name: orders-auth -> ORDERS_AUTH."""
    name = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").upper()
    return name if re.match(r"^[A-Z_]", name) else f"_{name}"


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
        deployment = self._target()
        if deployment is None:
            return None
        triggers = self._triggers()
        if not triggers:
            self.lost("spec.triggers", "no trigger could be converted: no rule written")
            return None
        rule: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        rule["deployment"] = deployment
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

    def _target(self) -> str | None:
        ref = self.spec.get("scaleTargetRef")
        if not isinstance(ref, Mapping) or not ref.get("name"):
            self.lost("spec.scaleTargetRef.name", "missing: no rule written")
            return None
        kind = str(ref.get("kind") or "Deployment")
        api = str(ref.get("apiVersion") or "apps/v1")
        if kind != "Deployment" or api.split("/")[0] not in ("apps", "extensions"):
            self.lost(
                "spec.scaleTargetRef.kind",
                f"{kind} ({api}): eventscaler scales Deployments only (apps/v1 scale "
                "subresource): no rule written",
            )
            return None
        if ref.get("envSourceContainerName"):
            self.note(
                "spec.scaleTargetRef.envSourceContainerName",
                "not needed: eventscaler reads connectionFromEnv from its own environment",
            )
        return str(ref["name"])

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
            kind = trigger.get("type")
            if kind != "azure-queue":
                self.lost(
                    field,
                    f"type {kind!r}: eventscaler reads Azure Storage Queues only (azure-queue); "
                    "keep KEDA for this trigger or drop it",
                )
                continue
            result = self._azure_queue(trigger, field)
            if result is not None:
                converted.append(self._unique_name(result, converted, index))
        return converted

    def _unique_name(
        self, trigger: dict[str, Any], earlier: list[dict[str, Any]], index: int
    ) -> dict[str, Any]:
        """KEDA tells triggers apart by index; the rule file by name (the queue name unless
        given), which must be unique: a second trigger on one queue is named after its index."""
        taken = {t.get("name") or t["queueName"] for t in earlier}
        name = trigger.get("name") or trigger["queueName"]
        if name in taken:
            number = index
            while f"{name}-{number}" in taken:
                number += 1
            trigger["name"] = f"{name}-{number}"
            why = f"named {trigger['name']}: trigger names (the queue's by default) are unique here"
            self.note(f"spec.triggers[{index}].name", why)
        return trigger

    def _azure_queue(self, trigger: Mapping[str, Any], field: str) -> dict[str, Any] | None:
        metadata = trigger.get("metadata") or {}
        if not isinstance(metadata, Mapping) or not metadata.get("queueName"):
            self.lost(f"{field}.metadata.queueName", "missing: trigger not converted")
            return None
        out: dict[str, Any] = {"type": "azure-queue"}
        if trigger.get("name"):
            out["name"] = str(trigger["name"])
        out["queueName"] = str(metadata["queueName"])
        for key in ("queueLength", "activationQueueLength"):
            if key in metadata:
                value = _number(metadata[key])
                if value is None or value < 0:
                    self.lost(
                        f"{field}.metadata.{key}",
                        f"expected a number, got {metadata[key]!r}: left out, the default applies",
                    )
                else:
                    out[key] = value
        if "queueLengthStrategy" in metadata:
            strategy = str(metadata["queueLengthStrategy"]).lower()
            if strategy in config.QUEUE_LENGTH_STRATEGIES:
                out["queueLengthStrategy"] = config.QUEUE_LENGTH_STRATEGIES[strategy]
            else:
                self.lost(
                    f"{field}.metadata.queueLengthStrategy",
                    f"expected all or visibleonly, got {metadata['queueLengthStrategy']!r}: "
                    "left out, 'all' applies",
                )
        usable = self._credentials(trigger, metadata, field, out)
        for key in metadata:
            if key not in AZURE_QUEUE_METADATA:
                self.lost(f"{field}.metadata.{key}", "not an azure-queue setting eventscaler knows")
        for key in trigger:
            if key not in TRIGGER_KEYS:
                self.lost(f"{field}.{key}", "not a trigger field eventscaler knows")
        metric_type = trigger.get("metricType", "AverageValue")
        if metric_type != "AverageValue":
            self.lost(
                f"{field}.metricType",
                f"{metric_type}: eventscaler always divides the "
                "queue length by queueLength per replica (AverageValue)",
            )
        if "useCachedMetrics" in trigger:
            self.note(
                f"{field}.useCachedMetrics",
                "dropped: eventscaler has no metrics cache; "
                "each queue is read once per pollingInterval anyway",
            )
        return out if usable and self._loads(out, field) else None

    def _loads(self, out: Mapping[str, Any], field: str) -> bool:
        """Whether the rule file's loader takes the trigger: KEDA accepts some values it does
        not (a queue or account name Azure would refuse, say); such a trigger is not written."""
        try:
            config.parse_trigger(dict(out), f"{field}.metadata")
        except (config.ConfigError, config.ConfigErrors) as exc:
            errors = exc.errors if isinstance(exc, config.ConfigErrors) else [exc]
            for error in errors:
                self.lost(error.field, f"{error.message}: trigger not converted")
            return False
        return True

    def _cloud(self, metadata: Mapping[str, Any], where: str, out: dict[str, Any]) -> bool:
        """KEDA's cloud and endpointSuffix, as the rule file says the same; False if it cannot.

        KEDA takes an empty or absent cloud as the public cloud and ignores endpointSuffix unless
        the cloud is Private (ParseEnvironmentProperty); the rule file refuses both, so neither
        is written then.
        """
        cloud = str(metadata.get("cloud") or "")
        if cloud.lower() == "private":
            return self._private_cloud(str(metadata.get("endpointSuffix") or ""), where, out)
        if "endpointSuffix" in metadata:
            why = "dropped: KEDA ignores it unless cloud is Private"
            self.note(f"{where}.endpointSuffix", why)
        if not cloud:
            if "cloud" in metadata:
                self.note(f"{where}.cloud", "empty: KEDA takes the public cloud, the default here")
            return True
        if cloud.lower() in KEDA_CLOUDS:
            out["cloud"] = KEDA_CLOUDS[cloud.lower()]
            return True
        if cloud.lower() == "azuregermancloud":
            out.update(cloud="Private", endpointSuffix=KEDA_GERMAN_CLOUD_SUFFIX)
            self.note(f"{where}.cloud", f"written as cloud Private, {KEDA_GERMAN_CLOUD_SUFFIX}")
            return True
        self.lost(
            f"{where}.cloud",
            f"{cloud!r}: no cloud of that name here (AzureStackCloud's endpoints are in a file "
            "on KEDA's pod): give cloud Private and the storage endpointSuffix; trigger not "
            "converted",
        )
        return False

    def _private_cloud(self, suffix: str, where: str, out: dict[str, Any]) -> bool:
        if not suffix.lower().startswith(KEDA_QUEUE_HOST_PREFIX):
            self.lost(
                f"{where}.endpointSuffix",
                f"{suffix!r}: KEDA reads https://ACCOUNT.{suffix}, the rule file reads "
                "https://ACCOUNT.queue.SUFFIX: no endpointSuffix here says the same; trigger "
                "not converted",
            )
            return False
        ours = suffix[len(KEDA_QUEUE_HOST_PREFIX) :]
        out.update(cloud="Private", endpointSuffix=ours)
        self.note(
            f"{where}.endpointSuffix",
            f"{ours!r}: the rule file's endpointSuffix follows 'queue.' (the same host)",
        )
        return True

    def _credentials(
        self,
        trigger: Mapping[str, Any],
        metadata: Mapping[str, Any],
        field: str,
        out: dict[str, Any],
    ) -> bool:
        """Map the credentials; False when the trigger cannot be written so that it loads."""
        usable = True
        env = metadata.get("connectionFromEnv")
        account = metadata.get("accountName")
        ref = trigger.get("authenticationRef")
        auth = self._find_auth(ref)
        identity = _loader_knows("trigger", "accountName")
        if env:
            out["connectionFromEnv"] = str(env)
            self.note(
                f"{field}.metadata.connectionFromEnv",
                f"KEDA reads {env} from the scaled Deployment's container; eventscaler reads it "
                f"from its own: give the autoscaler's container an env var {env} from the same "
                "Secret (copied to the autoscaler's namespace)",
            )
            for key in ("accountName", "cloud", "endpointSuffix"):
                if key in metadata:
                    self.lost(
                        f"{field}.metadata.{key}",
                        "a connection string is used "
                        "(connectionFromEnv): the account and endpoint come from it",
                    )
        elif account and identity:
            out["accountName"] = str(account)
            usable = self._cloud(metadata, f"{field}.metadata", out)
            self.note(
                f"{field}.metadata.accountName",
                f"eventscaler reads account {account} with its own Azure AD identity "
                "(DefaultAzureCredential), not the scaled Deployment's: give the autoscaler's "
                "ServiceAccount workload identity and a role that reads the queue (Storage Queue "
                "Data Reader; see docs/azure-identity.md)",
            )
        elif account:
            for key in ("accountName", "cloud", "endpointSuffix"):
                if key in metadata:
                    self.lost(
                        f"{field}.metadata.{key}",
                        "this rule file takes a connection "
                        "string only (connectionFromEnv): put the connection string of "
                        f"account {account} in a Secret, expose it to the autoscaler as an "
                        "env var and set connectionFromEnv to its name",
                    )
        if isinstance(ref, Mapping):
            self._explain_auth(ref, auth, field, out, uses_env=bool(env), account=bool(account))
        elif not env and not account:
            self.note(
                f"{field}.metadata",
                "no connectionFromEnv nor authenticationRef (KEDA "
                "would refuse it): the rule reads the connection string from "
                f"{config.DEFAULT_CONNECTION_ENV}",
            )
        return usable

    def _find_auth(self, ref: Any) -> Mapping[str, Any] | None:
        if not isinstance(ref, Mapping):
            return None
        kind = str(ref.get("kind") or "TriggerAuthentication")
        namespace = "" if kind == "ClusterTriggerAuthentication" else self.namespace
        return self.auths.get((kind, namespace, str(ref.get("name", ""))))

    def _explain_auth(
        self,
        ref: Mapping[str, Any],
        auth: Mapping[str, Any] | None,
        field: str,
        out: dict[str, Any],
        uses_env: bool,
        account: bool,
    ) -> None:
        kind = str(ref.get("kind") or "TriggerAuthentication")
        name = str(ref.get("name", ""))
        what = f"{kind} {name}"
        where = f"{field}.authenticationRef"
        base = f"{what}: eventscaler does not read TriggerAuthentications; it takes the connection "
        base += "string from its own environment (connectionFromEnv)"
        if out.get("accountName"):
            self.lost(
                where,
                f"{what}: eventscaler uses its own Azure AD identity for account "
                f"{out['accountName']} (see accountName), not the TriggerAuthentication's "
                "pod identity",
            )
            return
        spec = (auth or {}).get("spec") or {}
        provider = (spec.get("podIdentity") or {}).get("provider")
        secret = next(
            (
                s
                for s in spec.get("secretTargetRef") or []
                if isinstance(s, Mapping) and s.get("parameter") == "connection"
            ),
            None,
        )
        if uses_env:
            self.lost(where, f"{base}; connectionFromEnv is set, so the rule uses it")
        elif auth is None:
            self.lost(
                where,
                f"{base}. {what} is not in this input: find the Secret it maps "
                "to the parameter 'connection', expose that key to the autoscaler as an "
                "env var, and set connectionFromEnv to its name (now "
                f"{config.DEFAULT_CONNECTION_ENV}, the default)",
            )
        elif secret is not None:
            env = _env_name(f"{name}_connection")
            out["connectionFromEnv"] = env
            self.lost(
                where,
                f"{base}. {what} maps 'connection' to Secret {secret.get('name')} "
                f"key {secret.get('key')}: set connectionFromEnv {env} (done) and add to the "
                f"autoscaler's container: env: [{{name: {env}, valueFrom: {{secretKeyRef: "
                f"{{name: {secret.get('name')}, key: {secret.get('key')}}}}}}}] (copy the "
                "Secret to the autoscaler's namespace first)",
            )
        elif provider and provider != "none":
            hint = (
                " and accountName is missing, so KEDA itself would refuse it" if not account else ""
            )
            self.lost(
                where,
                f"{base}. {what} uses pod identity {provider!r}{hint}: give the "
                "trigger accountName (Azure AD with the autoscaler's own identity) or a "
                "connection string via connectionFromEnv",
            )
        else:
            self.lost(
                where,
                f"{base}. {what} maps no 'connection' from a Secret that this "
                "converter can follow (env, vaults): expose the connection string to the "
                "autoscaler as an env var and set connectionFromEnv to its name",
            )

    # -- the rest of the spec

    def _advanced(self) -> dict[str, Any] | None:
        advanced = self.spec.get("advanced") or {}
        if not isinstance(advanced, Mapping):
            self.lost("spec.advanced", f"expected a mapping, got {advanced!r}")
            return None
        for key in advanced:
            field = f"spec.advanced.{key}"
            if key == "restoreToOriginalReplicaCount":
                self.lost(
                    field,
                    "eventscaler has no equivalent: removing a rule leaves the "
                    "replicas as they are",
                )
            elif key == "scalingModifiers":
                self.lost(
                    field,
                    "no formulas in the rule file: the rule takes the highest "
                    "trigger's ask (KEDA's behaviour without scalingModifiers)",
                )
            elif key != "horizontalPodAutoscalerConfig":
                self.lost(field, "not a field eventscaler knows")
        hpa = advanced.get("horizontalPodAutoscalerConfig") or {}
        if isinstance(hpa, Mapping) and hpa.get("name"):
            self.note(
                "spec.advanced.horizontalPodAutoscalerConfig.name",
                "dropped: eventscaler creates no HPA",
            )
        behavior = hpa.get("behavior") if isinstance(hpa, Mapping) else None
        out: dict[str, Any] = {}
        for direction in ("scaleUp", "scaleDown"):
            rules = (behavior or {}).get(direction) if isinstance(behavior, Mapping) else None
            field = f"spec.advanced.horizontalPodAutoscalerConfig.behavior.{direction}"
            if isinstance(rules, Mapping):
                out[direction] = {k: rules[k] for k in BEHAVIOR_RULE_FIELDS if k in rules}
                for key in rules:
                    if key not in BEHAVIOR_RULE_FIELDS:
                        self.lost(f"{field}.{key}", "not supported by the rule file's behavior")
            if direction == "scaleUp" and not (
                isinstance(rules, Mapping) and rules.get("policies")
            ):
                self.note(
                    field,
                    "KEDA's HPA adds at most 4 pods or 100 % per 15 s by default; "
                    "eventscaler scales up at once. To keep KEDA's pace add behavior: "
                    "{scaleUp: {policies: [{type: Pods, value: 4, periodSeconds: 15}, "
                    "{type: Percent, value: 100, periodSeconds: 15}]}}",
                )
        return out or None

    def _fallback(self) -> dict[str, Any] | None:
        fallback = self.spec.get("fallback")
        if fallback is None:
            return None
        if not _loader_knows("rule", "fallback"):
            self.lost(
                "spec.fallback",
                "the rule file has no fallback yet; without one a "
                "failing rule holds its replicas (a failed read is never a zero)",
            )
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


def convert_text(text: str, source: str) -> Conversion:
    """Convert every ScaledObject in `text`. Raises ConvertError if the YAML cannot be read."""
    documents = _documents(text)
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
