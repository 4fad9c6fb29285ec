"""`autoscaler.py convert` (eventscaler/convert.py): KEDA ScaledObjects -> a rule file.

The inputs are written from KEDA's documented examples (the azure-queue scaler page, the
ScaledObject specification, TriggerAuthentication with a Secret and with workload identity).
Scenarios covered:
- the azure-queue example: every field mapped, KEDA's string metadata ("5") become numbers, KEDA's
  defaults written out; notes for connectionFromEnv and KEDA's scale-up pace
- a TriggerAuthentication mapping `connection` to a Secret: explained, with the env var to add
  and connectionFromEnv set; one not in the input: explained, the default env var kept
- workload identity: accountName, cloud and endpointSuffix mapped (the loader knows them), the
  TriggerAuthentication's pod identity explained; KEDA's cloud meanings kept: an empty cloud is the
  public cloud and its endpointSuffix is ignored, cloud names are matched without case and
  KEDA's aliases (AzureCloud, AzureUSGovernment, AzureGermanCloud) mapped, KEDA's Private
  endpointSuffix (queue.HOST) becomes the rule file's (HOST), one this file cannot say (no
  "queue." in front, AzureStackCloud) is not converted, with the reason
- the full ScaledObject spec: min/max, pollingInterval, cooldownPeriod, fallback and HPA behavior
  mapped; idleReplicaCount, initialCooldownPeriod, restoreToOriginalReplicaCount, pause
  annotations and an unsupported trigger listed as not converted with the reason
- an older loader without fallback or accountName: those are listed as not converted, not written
- objects that give no rule: only unsupported triggers, a target without a name, a ScaledJob; a
  Secret in the input is skipped with a note
- scaleTargetRef of any kind: a Deployment stays `deployment: NAME`; a StatefulSet or a custom
  resource becomes `scaleTargetRef` with its apiVersion and kind, a kind outside the shipped RBAC
  with a note saying which grants to add
- bad values (queueLength 'ten', strategy 'peek', metricType Value, unknown keys), duplicate names
  across namespaces, `kind: List`, invalid YAML
- round trip: every converted file loads with parse_rules_text with no problems
- the command: stdout is the rule file, stderr the notes; exit 0 / 1 / 2; stdin with '-'
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

import autoscaler
from eventscaler import config
from eventscaler.convert import Conversion, ConvertError, convert_text, render_rules
from eventscaler.sources.azure_queue import default_account_url

# KEDA docs, "Azure Storage Queue" scaler: trigger specification.
AZURE_QUEUE_EXAMPLE = """
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: azure-queue-scaledobject
  namespace: default
spec:
  scaleTargetRef:
    name: azurequeue-function
  triggers:
  - type: azure-queue
    metadata:
      # Required
      queueName: functionsqueue
      # Optional: connection OR authenticationRef that defines connection
      connectionFromEnv: STORAGE_CONNECTIONSTRING_ENV_NAME
      # Optional
      queueLength: "5" # default 5
      activationQueueLength: "50" # default 0
      queueLengthStrategy: visibleonly
"""

# KEDA docs: "Use TriggerAuthentication with a secret".
SECRET_AUTH_EXAMPLE = """
apiVersion: v1
kind: Secret
metadata:
  name: test-secrets
  namespace: orders
data:
  connectionString: <base64-connection-string>
---
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata:
  name: keda-trigger-auth-azure-queue-secret
  namespace: orders
spec:
  secretTargetRef:
  - parameter: connection
    name: test-secrets
    key: connectionString
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: azure-queue-scaledobject
  namespace: orders
spec:
  scaleTargetRef:
    name: azurequeue-function
  triggers:
  - type: azure-queue
    metadata:
      queueName: functionsqueue
      queueLength: '5'
    authenticationRef:
      name: keda-trigger-auth-azure-queue-secret
"""

# KEDA docs: "Use TriggerAuthentication with Azure AD Workload Identity".
WORKLOAD_IDENTITY_EXAMPLE = """
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata:
  name: keda-trigger-auth-azure-queue-workload
  namespace: default
spec:
  podIdentity:
    provider: azure-workload
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: azure-queue-scaledobject
  namespace: default
spec:
  scaleTargetRef:
    name: azurequeue-function
  triggers:
  - type: azure-queue
    metadata:
      queueName: functionsqueue
      queueLength: '5'
      accountName: mystorageaccount
      cloud: Private
      endpointSuffix: queue.local.azurestack.external
    authenticationRef:
      name: keda-trigger-auth-azure-queue-workload
"""

# KEDA docs: the ScaledObject specification, filled in, with a second, unsupported trigger.
FULL_SPEC_EXAMPLE = """
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: orders
  namespace: shop
  annotations:
    scaledobject.keda.sh/transfer-hpa-ownership: "true"
    autoscaling.keda.sh/paused-replicas: "0"
    kubectl.kubernetes.io/last-applied-configuration: "{}"
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: orders-worker
    envSourceContainerName: worker
  pollingInterval: 15
  cooldownPeriod: 120
  initialCooldownPeriod: 60
  idleReplicaCount: 0
  minReplicaCount: 1
  maxReplicaCount: 50
  fallback:
    failureThreshold: 3
    replicas: 6
  advanced:
    restoreToOriginalReplicaCount: true
    horizontalPodAutoscalerConfig:
      name: keda-hpa-orders
      behavior:
        scaleDown:
          stabilizationWindowSeconds: 300
          policies:
          - type: Percent
            value: 100
            periodSeconds: 15
        scaleUp:
          stabilizationWindowSeconds: 0
          selectPolicy: Max
          policies:
          - type: Pods
            value: 10
            periodSeconds: 30
  triggers:
  - type: azure-queue
    name: orders-queue
    metadata:
      queueName: orders
      queueLength: "20"
      connectionFromEnv: ORDERS_STORAGE
  - type: kafka
    metadata:
      bootstrapServers: kafka.svc:9092
      consumerGroup: orders
      topic: orders
      lagThreshold: "20"
"""

NOTHING_CONVERTIBLE = """
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: kafka-consumer, namespace: stream}
spec:
  scaleTargetRef: {name: consumer}
  triggers:
  - type: kafka
    metadata: {bootstrapServers: "kafka:9092", consumerGroup: g, topic: t, lagThreshold: "50"}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: db}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: StatefulSet}
  triggers:
  - type: azure-queue
    metadata: {queueName: jobs, connectionFromEnv: X}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledJob
metadata: {name: batch}
spec:
  jobTargetRef: {template: {}}
  triggers:
  - type: azure-queue
    metadata: {queueName: jobs, connectionFromEnv: X}
"""


def messages(conversion: Conversion, converted: bool | None = None) -> list[str]:
    return [str(n) for n in conversion.notes if converted is None or n.converted == converted]


def one(lines: list[str], *needles: str) -> str:
    found = [line for line in lines if all(n in line for n in needles)]
    assert len(found) == 1, (needles, lines)
    return found[0]


def assert_round_trip(conversion: Conversion) -> config.LoadResult:
    text = render_rules(conversion, "input.yaml")
    result = config.parse_rules_text(text, "converted.yaml")
    assert result.problems == ()
    assert [r.name for r in result.rules] == [r["name"] for r in conversion.rules]
    return result


def test_documented_azure_queue_example() -> None:
    conversion = convert_text(AZURE_QUEUE_EXAMPLE, "so.yaml")
    assert conversion.rules == (
        {
            "name": "azure-queue-scaledobject",
            "namespace": "default",
            "deployment": "azurequeue-function",
            "minReplicas": 0,
            "maxReplicas": 100,
            "pollingInterval": 30,
            "cooldownPeriod": 300,
            "triggers": [
                {
                    "type": "azure-queue",
                    "queueName": "functionsqueue",
                    "queueLength": 5,
                    "activationQueueLength": 50,
                    "queueLengthStrategy": "visibleOnly",
                    "connectionFromEnv": "STORAGE_CONNECTIONSTRING_ENV_NAME",
                }
            ],
        },
    )
    assert conversion.complete
    notes = messages(conversion)
    one(notes, "connectionFromEnv: note:", "reads it from its own")
    one(notes, "behavior.scaleUp: note:", "4 pods or 100 % per 15 s")
    rule = assert_round_trip(conversion).rules[0]
    assert rule.triggers[0].target == 5.0
    assert rule.triggers[0].activation == 50.0


def test_trigger_authentication_with_a_secret_is_explained() -> None:
    conversion = convert_text(SECRET_AUTH_EXAMPLE, "so.yaml")
    (rule,) = conversion.rules
    env = "KEDA_TRIGGER_AUTH_AZURE_QUEUE_SECRET_CONNECTION"
    assert rule["namespace"] == "orders"
    assert rule["triggers"][0]["connectionFromEnv"] == env
    lost = messages(conversion, converted=False)
    line = one(lost, "ScaledObject orders/azure-queue-scaledobject", "authenticationRef")
    assert "eventscaler does not read TriggerAuthentications" in line
    assert "maps 'connection' to Secret test-secrets key connectionString" in line
    assert f"{{name: {env}, valueFrom: {{secretKeyRef: {{name: test-secrets" in line
    one(messages(conversion), "document 1 (Secret): note: read only to find where a workload")
    assert not conversion.complete
    assert_round_trip(conversion)


def test_trigger_authentication_not_in_the_input() -> None:
    text = SECRET_AUTH_EXAMPLE.split("---")[2]
    conversion = convert_text(text, "so.yaml")
    assert "connectionFromEnv" not in conversion.rules[0]["triggers"][0]
    line = one(messages(conversion, converted=False), "authenticationRef")
    assert "is not in this input" in line
    assert "(now AZURE_STORAGE_CONNECTION_STRING, the default)" in line
    assert_round_trip(conversion)


def test_workload_identity_maps_to_account_name() -> None:
    conversion = convert_text(WORKLOAD_IDENTITY_EXAMPLE, "so.yaml")
    trigger = conversion.rules[0]["triggers"][0]
    assert trigger["accountName"] == "mystorageaccount"
    assert trigger["cloud"] == "Private"
    # KEDA's endpointSuffix is the whole host after the account; the rule file's follows
    # "queue.": the same https://mystorageaccount.queue.local.azurestack.external.
    assert trigger["endpointSuffix"] == "local.azurestack.external"
    assert "connectionFromEnv" not in trigger
    one(messages(conversion, converted=True), "accountName: note:", "Storage Queue Data Reader")
    line = one(messages(conversion, converted=False), "authenticationRef")
    assert "uses its own Azure AD identity for account mystorageaccount" in line
    rule = assert_round_trip(conversion).rules[0]
    assert rule.triggers[0].settings.uses_identity
    assert default_account_url(rule.triggers[0].settings) == (
        "https://mystorageaccount.queue.local.azurestack.external"
    )


def identity_scaled_object(**metadata: str) -> str:
    fields = "".join(f"      {key}: {value!r}\n" for key, value in metadata.items())
    return (
        "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: orders}\n"
        "spec:\n  scaleTargetRef: {name: orders}\n  triggers:\n  - type: azure-queue\n"
        f"    metadata:\n      queueName: orders\n      accountName: acct1\n{fields}"
    )


# (KEDA's cloud and endpointSuffix, the URL KEDA reads: https://acct1.{suffix}), None: not
# converted. KEDA: an empty cloud is the public cloud and endpointSuffix only counts with Private.
CLOUD_CASES = [
    ({"cloud": "", "endpointSuffix": "queue.core.example.net"}, "queue.core.windows.net"),
    ({"cloud": ""}, "queue.core.windows.net"),
    ({"endpointSuffix": "queue.core.example.net"}, "queue.core.windows.net"),
    ({"cloud": "AzureCloud"}, "queue.core.windows.net"),
    ({"cloud": "azurepubliccloud", "endpointSuffix": "x"}, "queue.core.windows.net"),
    ({"cloud": "AzureUSGovernment"}, "queue.core.usgovcloudapi.net"),
    ({"cloud": "AZURECHINACLOUD"}, "queue.core.chinacloudapi.cn"),
    ({"cloud": "AzureGermanCloud"}, "queue.core.cloudapi.de"),
    ({"cloud": "private", "endpointSuffix": "queue.core.example.net"}, "queue.core.example.net"),
    ({"cloud": "Private", "endpointSuffix": "myqueues.example.net"}, None),
    ({"cloud": "AzureStackCloud"}, None),
]


@pytest.mark.parametrize(("metadata", "suffix"), CLOUD_CASES)
def test_keda_cloud_meanings_are_kept(metadata: dict[str, str], suffix: str | None) -> None:
    conversion = convert_text(identity_scaled_object(**metadata), "so.yaml")
    if suffix is None:
        assert conversion.rules == ()
        assert "trigger not converted" in " ".join(messages(conversion, converted=False))
        return
    (rule,) = assert_round_trip(conversion).rules
    assert default_account_url(rule.triggers[0].settings) == f"https://acct1.{suffix}"


def test_full_spec_mapped_and_the_rest_listed() -> None:
    conversion = convert_text(FULL_SPEC_EXAMPLE, "so.yaml")
    (rule,) = conversion.rules
    assert rule["name"] == "orders" and rule["namespace"] == "shop"
    assert rule["deployment"] == "orders-worker"
    assert (rule["minReplicas"], rule["maxReplicas"]) == (1, 50)
    assert (rule["pollingInterval"], rule["cooldownPeriod"]) == (15, 120)
    assert rule["fallback"] == {"failureThreshold": 3, "replicas": 6}
    assert rule["behavior"] == {
        "scaleUp": {
            "stabilizationWindowSeconds": 0,
            "selectPolicy": "Max",
            "policies": [{"type": "Pods", "value": 10, "periodSeconds": 30}],
        },
        "scaleDown": {
            "stabilizationWindowSeconds": 300,
            "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
        },
    }
    assert rule["triggers"] == [
        {
            "type": "azure-queue",
            "name": "orders-queue",
            "queueName": "orders",
            "queueLength": 20,
            "connectionFromEnv": "ORDERS_STORAGE",
        }
    ]
    lost = messages(conversion, converted=False)
    one(lost, "spec.triggers[1]: not converted: type 'kafka'", "not a source eventscaler reads")
    one(lost, "spec.idleReplicaCount: not converted: eventscaler has no idle count")
    one(lost, "spec.initialCooldownPeriod: not converted", "counts its own start as activity")
    one(lost, "restoreToOriginalReplicaCount: not converted", "leaves the replicas as they are")
    line = one(lost, "annotations[autoscaling.keda.sh/paused-replicas]: not converted")
    assert "annotate Deployment shop/orders-worker with autoscaling.keda.sh/paused-replicas" in line
    assert len(lost) == 5
    notes = messages(conversion, converted=True)
    one(notes, "transfer-hpa-ownership", "no HPA")
    one(notes, "horizontalPodAutoscalerConfig.name: note: dropped")
    one(notes, "envSourceContainerName: note:")
    one(notes, "spec.fallback: note:", "zero included")
    assert not any("scaleUp: note" in n for n in notes)  # it has its own scale-up policies
    assert not any("last-applied" in n for n in messages(conversion))
    loaded = assert_round_trip(conversion).rules[0]
    assert loaded.fallback == config.Fallback(3, 6)


def test_objects_that_give_no_rule() -> None:
    conversion = convert_text(NOTHING_CONVERTIBLE, "so.yaml")
    assert conversion.rules == () and conversion.skipped == 3
    lost = messages(conversion, converted=False)
    one(lost, "stream/kafka-consumer: spec.triggers[0]: not converted: type 'kafka'")
    one(lost, "stream/kafka-consumer: spec.triggers: not converted: no trigger could be converted")
    one(lost, "default/db: spec.scaleTargetRef.name: not converted: missing")
    one(lost, "document 3 (ScaledJob): not converted: ScaledJobs run Jobs")
    assert not any("db: spec.triggers" in n for n in messages(conversion))
    assert render_rules(conversion, "so.yaml").endswith("rules: []\n")


ANY_KIND = """
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: db}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: StatefulSet, name: db}
  triggers:
  - type: azure-queue
    metadata: {queueName: jobs, connectionFromEnv: X}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: web}
spec:
  scaleTargetRef: {apiVersion: argoproj.io/v1alpha1, kind: Rollout, name: web}
  triggers:
  - type: azure-queue
    metadata: {queueName: jobs, connectionFromEnv: X}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: plain}
spec:
  scaleTargetRef: {kind: Deployment, name: plain}
  triggers:
  - type: azure-queue
    metadata: {queueName: jobs, connectionFromEnv: X}
"""


def test_scale_target_ref_of_any_kind_is_converted() -> None:
    conversion = convert_text(ANY_KIND, "so.yaml")
    targets = {r["name"]: (r.get("scaleTargetRef"), r.get("deployment")) for r in conversion.rules}
    assert targets == {
        "db": ({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db"}, None),
        "web": ({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "web"}, None),
        "plain": (None, "plain"),
    }
    notes = messages(conversion, converted=True)
    line = one(notes, "default/web: spec.scaleTargetRef.kind")
    assert "Rollout (argoproj.io/v1alpha1)" in line and "scale subresource" in line
    assert not any("default/db: spec.scaleTargetRef" in n for n in notes)  # shipped RBAC
    loaded = {r.name: r for r in assert_round_trip(conversion).rules}
    assert loaded["web"].target == "default/Rollout/web"
    assert loaded["plain"].target == "default/plain"


def test_bad_values_are_listed_and_left_to_defaults() -> None:
    text = """
kind: ScaledObject
apiVersion: keda.sh/v1alpha1
metadata: {name: odd}
spec:
  scaleTargetRef: {name: odd-worker}
  maxReplicaCount: many
  scalingModifiers: {}
  advanced: {scalingModifiers: {formula: "a + b"}}
  triggers:
  - type: azure-queue
    metricType: Value
    useCachedMetrics: true
    metadata:
      queueName: odd
      queueLength: ten
      queueLengthStrategy: peek
      connectionFromEnv: ODD
      cloud: AzureChinaCloud
      queueURL: "https://x"
"""
    conversion = convert_text(text, "so.yaml")
    (rule,) = conversion.rules
    assert rule["maxReplicas"] == 100
    assert rule["triggers"] == [
        {
            "type": "azure-queue",
            "queueName": "odd",
            "connectionFromEnv": "ODD",
            "metricType": "Value",
        }
    ]
    lost = messages(conversion, converted=False)
    one(lost, "spec.maxReplicaCount: not converted: expected a whole number, got 'many'")
    one(lost, "spec.scalingModifiers: not converted: not a ScaledObject field")
    one(lost, "spec.advanced.scalingModifiers.target: not converted: missing")
    one(lost, "metadata.queueLength: not converted: expected a number, got 'ten'")
    one(lost, "metadata.queueLengthStrategy: not converted: expected all or visibleonly")
    one(lost, "metadata.cloud: not converted: a connection string is used")
    one(lost, "metadata.queueURL: not converted")
    one(messages(conversion, converted=True), "useCachedMetrics: note: dropped")
    assert_round_trip(conversion)


def test_duplicate_names_across_namespaces_and_kind_list() -> None:
    text = """
apiVersion: v1
kind: List
items:
- apiVersion: keda.sh/v1alpha1
  kind: ScaledObject
  metadata: {name: worker, namespace: a}
  spec:
    scaleTargetRef: {name: worker}
    triggers: [{type: azure-queue, metadata: {queueName: jobs, connectionFromEnv: A}}]
- apiVersion: keda.sh/v1alpha1
  kind: ScaledObject
  metadata: {name: worker, namespace: b}
  spec:
    scaleTargetRef: {name: worker}
    triggers: [{type: azure-queue, metadata: {queueName: jobs, connectionFromEnv: B}}]
"""
    conversion = convert_text(text, "so.yaml")
    assert [r["name"] for r in conversion.rules] == ["worker", "b.worker"]
    one(
        messages(conversion, converted=True), "b/worker: metadata.name: note: rule renamed b.worker"
    )
    assert [r.namespace for r in assert_round_trip(conversion).rules] == ["a", "b"]


def test_invalid_yaml() -> None:
    with pytest.raises(ConvertError, match="not valid YAML at line 2"):
        convert_text("kind: ScaledObject\n  bad: [", "so.yaml")


@pytest.mark.parametrize(
    "text", [AZURE_QUEUE_EXAMPLE, SECRET_AUTH_EXAMPLE, WORKLOAD_IDENTITY_EXAMPLE, FULL_SPEC_EXAMPLE]
)
def test_round_trip_every_example_together(text: str) -> None:
    assert_round_trip(convert_text(text, "so.yaml"))
    everything = "\n---\n".join([AZURE_QUEUE_EXAMPLE, FULL_SPEC_EXAMPLE, NOTHING_CONVERTIBLE])
    assert len(assert_round_trip(convert_text(everything, "so.yaml")).rules) == 2


# ---------------------------------------------------------------------------------------------
# The command


def test_command_complete_conversion_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "so.yaml"
    source.write_text(AZURE_QUEUE_EXAMPLE)
    assert autoscaler.main(["convert", str(source)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"# Converted from the ScaledObjects in {source}")
    assert "  # from ScaledObject default/azure-queue-scaledobject\n  - name:" in out
    assert config.parse_rules_text(out, "stdout").problems == ()
    assert f"{source}: 1 rule(s) written; 0 item(s) not converted, 0 object(s) skipped" in err


def test_command_partial_conversion_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "so.yaml"
    source.write_text(FULL_SPEC_EXAMPLE)
    assert autoscaler.main(["convert", str(source)]) == 1
    out, err = capsys.readouterr()
    assert config.parse_rules_text(out, "stdout").problems == ()
    assert f"{source}: ScaledObject shop/orders: spec.idleReplicaCount: not converted:" in err
    assert "1 rule(s) written; 5 item(s) not converted" in err


def test_command_nothing_to_convert_or_unreadable_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "so.yaml"
    source.write_text(NOTHING_CONVERTIBLE)
    assert autoscaler.main(["convert", str(source)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "no ScaledObject could be converted" in err
    assert autoscaler.main(["convert", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err
    source.write_text("a: [")
    assert autoscaler.main(["convert", str(source)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO(AZURE_QUEUE_EXAMPLE))
    assert autoscaler.main(["convert", "-"]) == 0
    out, err = capsys.readouterr()
    assert "name: azure-queue-scaledobject" in out and "stdin: 1 rule(s) written" in err


def test_scaling_modifiers_convert_and_the_formula_loads() -> None:
    text = """
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: combo, namespace: shop}
spec:
  scaleTargetRef: {name: combo-worker}
  advanced:
    scalingModifiers: {formula: "(orders + returns) / 2", target: "10", activationTarget: "2"}
  triggers:
  - {type: azure-queue, name: orders, metadata: {queueName: orders, connectionFromEnv: Q}}
  - {type: azure-queue, name: returns, metadata: {queueName: returns, connectionFromEnv: Q}}
"""
    conversion = convert_text(text, "so.yaml")
    (rule,) = conversion.rules
    assert rule["scalingModifiers"] == {
        "formula": "(orders + returns) / 2",
        "target": 10,
        "activationTarget": 2,
    }
    loaded = assert_round_trip(conversion).rules[0]
    assert loaded.scaling_modifiers is not None
    assert loaded.scaling_modifiers.compiled is not None
    assert loaded.scaling_modifiers.compiled.names == ("orders", "returns")
