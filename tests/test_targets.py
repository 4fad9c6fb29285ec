"""End-to-end: scale targets of any kind, with the real daemon process, Azurite and a Kubernetes
API (the test server under the shipped RBAC plus docs/cluster.md's two custom-resource rules, or
a real cluster when E2E_KUBECONFIG is set: the CRDs are then installed in a group of the run's
own and deleted after). Scenarios:
- a StatefulSet named by `scaleTargetRef` scales 0 -> N -> 0 on an Azure queue, its log lines
  name it `namespace/StatefulSet/name`, its Events carry apiVersion apps/v1 and kind StatefulSet;
- a custom resource whose CRD declares the scale subresource scales 0 -> N -> 0 the same way, its
  replicas written at the CRD's specReplicasPath, its Events carry its group and kind;
- a kind whose CRD has no scale subresource fails its own rule alone, with a clear error, while
  another rule of the same file keeps scaling;
- a rule file of the `deployment:` era runs unchanged: same log lines, and its metrics now say
  target_kind="Deployment";
- pause annotations on a StatefulSet: paused leaves it alone, paused-replicas holds a count,
  removing them resumes.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_rules
from tests.support.azurite import Azurite
from tests.support.cluster import Cluster, Target, wait_for
from tests.support.kubeapi_crd import crd_manifest
from tests.test_e2e import COOLDOWN, POLL, SEEN_SOON, daemon, rule
from tests.test_operations import http_get, metric

pytestmark = pytest.mark.e2e

WAIT = 20.0  # generous: a busy machine may take several polls


def target_rule(target: Target, namespace: str, queue: str, **fields: Any) -> dict[str, Any]:
    entry = rule(target.name, namespace, queue, **fields)
    del entry["deployment"]
    entry["scaleTargetRef"] = target.ref
    return entry


def statefulset(name: str) -> Target:
    return Target("apps", "v1", "StatefulSet", "statefulsets", name)


def worker_crd(cluster: Cluster) -> Target:
    """The scalable CRD of the run (Worker), installed once; returns a Target without a name."""
    cluster.install_crd(crd_manifest(cluster.crd_group, "Worker"))
    return Target(cluster.crd_group, "v1", "Worker", "workers", "")


def involved(cluster: Cluster, name: str, reason: str) -> list[tuple[str, str]]:
    return [
        (e.involved_object.api_version, e.involved_object.kind)
        for e in cluster.events(name)
        if e.reason == reason
    ]


def scale_up_and_back_to_zero(
    cluster: Cluster, azurite: Azurite, target: Target, tmp_path: Path
) -> str:
    """Flood the rule's queue (0 -> 3), drain it (3 -> 0); returns the daemon's log."""
    queue = target.name
    azurite.create_queue(queue)
    rules = write_rules(tmp_path / "rules.yaml", [target_rule(target, cluster.namespace, queue)])
    shown = f"{cluster.namespace}/{target.kind}/{target.name}"
    with daemon(cluster, azurite, rules) as proc:
        proc.wait_for_output(rf"{re.escape(shown)}: rule {target.name}: 0 -> 0", WAIT)
        azurite.send_messages(queue, 12)  # ceil(12 / 5) = 3
        wait_for(lambda: cluster.scale_replicas(target) == 3, WAIT, what="0 -> 3")
        assert azurite.delete_messages(queue, 12) == 12
        wait_for(lambda: cluster.scale_replicas(target) == 0, COOLDOWN + WAIT, what="3 -> 0")
        proc.assert_scale_lines([(shown, 0, 3), (shown, 3, 0)])
        assert proc.stop() == 0
        return proc.output


def test_a_statefulset_scales_from_zero_and_back(
    cluster: Cluster, azurite: Azurite, unique: str, tmp_path: Path
) -> None:
    cluster.create_statefulset(unique, replicas=0)
    target = statefulset(unique)
    scale_up_and_back_to_zero(cluster, azurite, target, tmp_path)
    assert cluster.apps.read_namespaced_stateful_set(unique, cluster.namespace).spec.replicas == 0
    wait_for(lambda: len(involved(cluster, unique, "SuccessfulRescale")) == 2, WAIT,
             what="two SuccessfulRescale events")  # fmt: skip
    assert set(involved(cluster, unique, "SuccessfulRescale")) == {("apps/v1", "StatefulSet")}


def test_a_custom_resource_with_a_scale_subresource_scales_from_zero_and_back(
    cluster: Cluster, azurite: Azurite, unique: str, tmp_path: Path
) -> None:
    kind = worker_crd(cluster)
    target = Target(kind.group, kind.version, kind.kind, kind.plural, unique)
    cluster.create_custom_object(target, {"replicas": 0})
    generation = cluster.get_custom_object(target)["metadata"]["generation"]
    scale_up_and_back_to_zero(cluster, azurite, target, tmp_path)
    worker = cluster.get_custom_object(target)
    assert worker["spec"]["replicas"] == 0  # written at the CRD's specReplicasPath
    assert worker["metadata"]["generation"] == generation + 2  # two writes of the spec
    wait_for(lambda: len(involved(cluster, unique, "SuccessfulRescale")) == 2, WAIT,
             what="two SuccessfulRescale events")  # fmt: skip
    assert set(involved(cluster, unique, "SuccessfulRescale")) == {(f"{kind.group}/v1", "Worker")}


def test_a_kind_without_scale_fails_only_its_own_rule(
    cluster: Cluster, azurite: Azurite, unique: str, tmp_path: Path
) -> None:
    cluster.install_crd(crd_manifest(cluster.crd_group, "Plain", scale=False))
    plain = Target(cluster.crd_group, "v1", "Plain", "plains", f"{unique}-plain")
    cluster.create_custom_object(plain, {"replicas": 1})
    working = f"{unique}-ok"
    cluster.create_deployment(working, replicas=0)
    for queue in (plain.name, working):
        azurite.create_queue(queue)
        azurite.send_messages(queue, 20)
    rules = write_rules(tmp_path / "rules.yaml", [
        target_rule(plain, cluster.namespace, plain.name),
        rule(working, cluster.namespace, working),
    ])  # fmt: skip
    with daemon(cluster, azurite, rules) as proc:
        wait_for(lambda: cluster.replicas(working) == 4, WAIT, what=f"{working} at 4")
        proc.wait_for_output(
            rf"rule {plain.name}: cannot read the target Plain: kind Plain "
            rf"\({re.escape(cluster.crd_group)}/v1\) has no scale subresource",
            WAIT,
        )
        time.sleep(3 * POLL)
        assert proc.process is not None and proc.process.poll() is None  # still running
        assert proc.stop() == 0
    assert cluster.get_custom_object(plain)["spec"]["replicas"] == 1  # untouched


def test_a_rule_file_of_the_deployment_era_runs_unchanged(
    cluster: Cluster, azurite: Azurite, unique: str, tmp_path: Path
) -> None:
    azurite.create_queue(unique)
    cluster.create_deployment(unique, replicas=0)
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "defaults:\n"
        f"  namespace: {cluster.namespace}\n"
        f"  pollingInterval: {POLL}\n"
        "rules:\n"
        f"  - name: {unique}\n"
        f"    deployment: {unique}\n"
        "    maxReplicas: 10\n"
        "    triggers:\n"
        "      - type: azure-queue\n"
        f"        queueName: {unique}\n"
        "        queueLength: 5\n"
    )
    with daemon(cluster, azurite, rules, "--health-port", "0") as proc:
        azurite.send_messages(unique, 10)
        wait_for(lambda: cluster.replicas(unique) == 2, WAIT, what="0 -> 2")
        proc.assert_scale_lines([(f"{cluster.namespace}/{unique}", 0, 2)])
        labels = {"rule": unique, "target_kind": "Deployment", "target": unique}
        wait_for(
            lambda: (
                metric(http_get(proc, "/metrics"), "eventscaler_current_replicas", **labels) == 2
            ),
            WAIT,
            what="the current replicas metric of the Deployment",
        )
        assert "deployment=" not in http_get(proc, "/metrics")
        assert proc.stop() == 0
    described = f"rule added: {unique}: {cluster.namespace}/{unique} replicas 0..10"
    assert described in proc.output


def test_pause_annotations_work_on_a_statefulset(
    cluster: Cluster, azurite: Azurite, unique: str, tmp_path: Path
) -> None:
    azurite.create_queue(unique)
    cluster.create_statefulset(unique, replicas=0)
    target = statefulset(unique)
    cluster.annotate_object(target, "autoscaling.keda.sh/paused", "true")
    rules = write_rules(tmp_path / "rules.yaml", [target_rule(target, cluster.namespace, unique)])
    with daemon(cluster, azurite, rules, *SEEN_SOON) as proc:
        azurite.send_messages(unique, 30)  # would ask for 6
        proc.wait_for_output(rf"rule {unique}: 0 -> 0 \[paused\]", WAIT)
        time.sleep(4 * POLL)
        assert cluster.scale_replicas(target) == 0  # left alone

        cluster.annotate_object(target, "eventscaler.io/paused-replicas", "2")
        wait_for(lambda: cluster.scale_replicas(target) == 2, WAIT, what="paused-replicas 2")
        time.sleep(4 * POLL)
        assert cluster.scale_replicas(target) == 2  # held, although the queue asks for 6

        cluster.annotate_object(target, "eventscaler.io/paused-replicas", None)
        cluster.annotate_object(target, "autoscaling.keda.sh/paused", None)
        wait_for(lambda: cluster.scale_replicas(target) == 6, WAIT, what="resumed")
        assert proc.stop() == 0
