"""Migrating what KEDA users have: KEDA v1 ScaledObjects, `func kubernetes deploy` output, and the
Secret their workers already use.

- table-driven over both API versions (keda.k8s.io/v1alpha1 with deploymentName and v1's
  `connection`; keda.sh/v1alpha1 with name and connectionFromEnv) and the func-tools
  three-document shape (Secret, Deployment with envFrom, ScaledObject with binding fields): the
  rule, the variable it reads, the env entry for eventscaler's container;
- KEDA's cloud "" with an endpointSuffix converts to a rule that loads (the public cloud);
- the command with --out: no secret value of the input reaches stdout, stderr or any file;
- --from-cluster reads the workload's Deployment from a real API (the test server), never a Secret;
- end to end: convert a func-tools file, render the overlay with `kubectl kustomize`, run the
  daemon with the environment the rendered Deployment gives it (the Secret's value resolved by the
  test, as the kubelet would), and a flood scales the worker 0 -> N.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from eventscaler import config
from eventscaler.convert import convert_text, render_rules
from eventscaler.migrate import plan_env
from tests.support.azurite import Azurite
from tests.support.cluster import Cluster, wait_for
from tests.support.daemon_process import REPO_ROOT, DaemonProcess, run_command

SECRET_VALUE = "DefaultEndpointsProtocol=https;AccountName=leak;AccountKey=TOPSECRETKEY=="


def func_deploy(
    namespace: str = "default",
    connection: str = "SECRET_VALUE_HERE",
    v1: bool = True,
    queue: str = "js-queue-items",
    name: str = "hello-keda",
) -> str:
    """What `func kubernetes deploy --name hello-keda --dry-run` writes for a queue function."""
    secret = {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"AzureWebJobsStorage": base64.b64encode(connection.encode()).decode(),
                 "FUNCTIONS_WORKER_RUNTIME": base64.b64encode(b"node").decode()},
    }  # fmt: skip
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {"selector": {"matchLabels": {"app": name}}, "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{
                "name": name, "image": "example/hello-keda",
                "env": [{"name": "AzureFunctionsJobHost__functions__0", "value": "QueueTrigger"}],
                "envFrom": [{"secretRef": {"name": name}}],
            }]},
        }},
    }  # fmt: skip
    target = {"deploymentName": name} if v1 else {"name": name}
    scaled = {
        "apiVersion": "keda.k8s.io/v1alpha1" if v1 else "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"deploymentName": name}},
        "spec": {"scaleTargetRef": target, "triggers": [{"type": "azure-queue", "metadata": {
            "direction": "in", "queueName": queue, "connection": "AzureWebJobsStorage"}}]},
    }  # fmt: skip
    return yaml.safe_dump_all([secret, deployment, scaled], sort_keys=False)


V2_ONLY = """
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: orders, namespace: shop}
spec:
  scaleTargetRef: {name: orders-worker}
  triggers:
  - type: azure-queue
    metadata: {queueName: orders, connectionFromEnv: ORDERS_CONN}
"""
V1_NO_CONNECTION = """
apiVersion: keda.k8s.io/v1alpha1
kind: ScaledObject
metadata: {name: legacy}
spec:
  scaleTargetRef: {deploymentName: legacy-worker, containerName: app}
  triggers:
  - type: azure-queue
    metadata: {queueName: legacy-items}
"""


@pytest.mark.parametrize(
    ("text", "deployment", "variable", "entry"),
    [
        (func_deploy(), "hello-keda", "AzureWebJobsStorage",
         {"secretKeyRef": {"name": "hello-keda", "key": "AzureWebJobsStorage"}}),
        (func_deploy(v1=False), "hello-keda", "AzureWebJobsStorage",
         {"secretKeyRef": {"name": "hello-keda", "key": "AzureWebJobsStorage"}}),
        (V2_ONLY, "orders-worker", "ORDERS_CONN", None),
        (V1_NO_CONNECTION, "legacy-worker", "AzureWebJobsStorage", None),
    ],
)  # fmt: skip
def test_both_api_versions_and_the_func_tools_shape(
    text: str, deployment: str, variable: str, entry: dict[str, Any] | None
) -> None:
    conversion = convert_text(text, "deploy.yaml")
    (rule,) = conversion.rules
    assert rule["deployment"] == deployment
    assert rule["triggers"][0]["connectionFromEnv"] == variable
    assert "direction" not in rule["triggers"][0]
    loaded = config.parse_rules_text(render_rules(conversion, "x"), "converted.yaml")
    assert loaded.problems == ()
    plan = plan_env(conversion.env_needs, conversion.documents)
    if entry is None:
        assert plan.entries == []
        assert any("is not in the input" in text for _, _, text, _ in plan.notes)
    else:
        assert plan.entries == [{"name": variable, "valueFrom": entry}]


def test_v1_field_names_are_noted_and_the_binding_fields_ignored() -> None:
    notes = [str(n) for n in convert_text(func_deploy(), "deploy.yaml").notes]
    assert any("scaleTargetRef.deploymentName: note: KEDA v1's field" in n for n in notes)
    assert any("metadata.direction: note: an Azure Functions binding field" in n for n in notes)
    assert any("metadata.connection: note: KEDA v1's name for connectionFromEnv" in n
               for n in notes)  # fmt: skip
    assert not any("not converted" in n for n in notes)
    legacy = [str(n) for n in convert_text(V1_NO_CONNECTION, "x").notes]
    assert any("KEDA v1 read AzureWebJobsStorage" in n for n in legacy)


@pytest.mark.parametrize("cloud", ["", "AzurePublicCloud", "azurepubliccloud"])
def test_an_empty_or_public_cloud_with_a_suffix_loads(cloud: str) -> None:
    text = f"""
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {{name: wi}}
spec:
  scaleTargetRef: {{name: wi-worker}}
  triggers:
  - type: azure-queue
    metadata: {{queueName: orders, accountName: myaccount, cloud: "{cloud}",
                endpointSuffix: queue.core.windows.net}}
"""
    conversion = convert_text(text, "so.yaml")
    trigger = conversion.rules[0]["triggers"][0]
    assert "cloud" not in trigger and "endpointSuffix" not in trigger
    result = config.parse_rules_text(render_rules(conversion, "x"), "converted.yaml")
    assert result.problems == ()
    assert result.rules[0].triggers[0].settings.endpoint_suffix == "core.windows.net"


def test_no_secret_value_reaches_any_output(tmp_path: Path) -> None:
    source = tmp_path / "deploy.yaml"
    source.write_text(func_deploy(connection=SECRET_VALUE))
    out = tmp_path / "overlay"
    done = run_command(["convert", str(source), "--out", str(out)])
    assert done.returncode == 0, done.stderr
    encoded = base64.b64encode(SECRET_VALUE.encode()).decode()
    texts = [done.stdout, done.stderr, *(p.read_text() for p in out.iterdir())]
    for text in texts:
        assert SECRET_VALUE not in text and "TOPSECRETKEY" not in text and encoded not in text
    assert "kubectl apply -k" in done.stderr


def test_from_cluster_reads_the_deployment_not_the_secret(
    cluster: Cluster, unique: str, tmp_path: Path
) -> None:
    documents = list(yaml.safe_load_all(func_deploy(namespace=cluster.namespace, name=unique)))
    cluster.apps.create_namespaced_deployment(cluster.namespace, documents[1])
    source = tmp_path / "scaledobject.yaml"
    source.write_text(yaml.safe_dump(documents[2]))  # the ScaledObject alone
    out = tmp_path / "overlay"
    done = run_command(["convert", str(source), "--out", str(out), "--from-cluster",
                        "--kubeconfig", str(cluster.kubeconfig)])  # fmt: skip
    assert done.returncode == 0, done.stderr
    patch = yaml.safe_load((out / "eventscaler-env.yaml").read_text())
    env = patch["spec"]["template"]["spec"]["containers"][0]["env"][0]
    assert env == {"name": "AzureWebJobsStorage", "valueFrom": {"secretKeyRef": {
        "name": unique, "key": "AzureWebJobsStorage"}}}  # fmt: skip


@pytest.mark.e2e
def test_func_tools_file_to_a_scaling_daemon(
    cluster: Cluster, azurite: Azurite, unique: str, tmp_path: Path
) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is needed to render the overlay (it ships with the machine image)")
    azurite.create_queue(unique)
    cluster.create_deployment(unique, replicas=0)
    text = func_deploy(cluster.namespace, azurite.connection_string, queue=unique, name=unique)
    source = tmp_path / "deploy.yaml"
    source.write_text(text)
    out = tmp_path / "overlay"
    done = run_command(["convert", str(source), "--out", str(out)])
    assert done.returncode == 0, done.stderr
    rendered = subprocess.run([kubectl, "kustomize", str(out)], capture_output=True, text=True,
                              check=True).stdout  # fmt: skip
    env = environment_of_rendered_autoscaler(rendered, yaml.safe_load_all(text))
    rules = tmp_path / "rules.yaml"
    rules.write_text(configmap_rules(rendered, poll=0.5))
    with DaemonProcess(["run", "--config", str(rules), "--kubeconfig",
                        str(cluster.daemon_kubeconfig), "--reload-interval", "0.3"],
                       env=env) as proc:  # fmt: skip
        proc.wait_for_output(r"rule file .* loaded")
        azurite.send_messages(unique, 12)  # ceil(12 / 5) = 3
        wait_for(lambda: cluster.replicas(unique) == 3, 15, what="the worker at 3")
        assert proc.stop() == 0
    assert azurite.account_key not in proc.output


def environment_of_rendered_autoscaler(rendered: str, documents: Any) -> dict[str, str]:
    """What the kubelet would put in eventscaler's container: each secretKeyRef, resolved."""
    objects = list(yaml.safe_load_all(rendered))
    secrets = {d["metadata"]["name"]: d for d in documents if d and d.get("kind") == "Secret"}
    (autoscaler,) = [o for o in objects if o["kind"] == "Deployment"]
    env: dict[str, str] = {}
    for entry in autoscaler["spec"]["template"]["spec"]["containers"][0]["env"]:
        ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            encoded = secrets[ref["name"]]["data"][ref["key"]]
            env[entry["name"]] = base64.b64decode(encoded).decode()
    assert "AZURE_STORAGE_CONNECTION_STRING" not in env  # the shipped variable is gone
    return env


def configmap_rules(rendered: str, poll: float) -> str:
    """The rules of the rendered ConfigMap, polled faster so the test is quick."""
    (configmap,) = [o for o in yaml.safe_load_all(rendered) if o["kind"] == "ConfigMap"]
    document = yaml.safe_load(configmap["data"]["rules.yaml"])
    for rule in document["rules"]:
        rule["pollingInterval"] = poll
    return yaml.safe_dump(document)


assert REPO_ROOT.is_dir()
