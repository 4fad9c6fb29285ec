"""Where a scaled workload gets the variable its trigger names, and the overlay convert writes.

- find_env_source, table-driven: env valueFrom secretKeyRef / configMapKeyRef, a literal value,
  envFrom secretRef and configMapRef with and without prefix (a later envFrom wins, an explicit
  env entry wins over all), a named container, nothing at all;
- plan_env: one entry per variable; a Deployment not in the input (and no cluster) is said; the
  same variable from two Secrets is refused for the second; a Secret of another namespace gets
  the copy command, which never carries a value;
- write_overlay: rules.yaml, the env patch (the shipped, now unused, Secret variable deleted) and
  a kustomization over the manifests, which `kubectl kustomize` renders (when kubectl is here).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from eventscaler.migrate import EnvNeed, EnvSource, find_env_source, plan_env, write_overlay
from tests.support.daemon_process import REPO_ROOT


def deployment(env: list[Any] | None = None, env_from: list[Any] | None = None,
               name: str = "worker", namespace: str = "shop",
               containers: list[dict[str, Any]] | None = None) -> dict[str, Any]:  # fmt: skip
    container: dict[str, Any] = {"name": "main", "image": "x"}
    if env is not None:
        container["env"] = env
    if env_from is not None:
        container["envFrom"] = env_from
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"template": {"spec": {"containers": containers or [container]}}},
    }


SECRET_REF = {"valueFrom": {"secretKeyRef": {"name": "s1", "key": "conn"}}}


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (deployment(env=[{"name": "CONN", **SECRET_REF}]), EnvSource("secret", "s1", "conn")),
        (deployment(env=[{"name": "CONN", "valueFrom": {"configMapKeyRef": {
            "name": "c1", "key": "k"}}}]), EnvSource("configmap", "c1", "k")),
        (deployment(env=[{"name": "CONN", "value": "literal"}]), EnvSource("literal")),
        (deployment(env_from=[{"secretRef": {"name": "s2"}}]), EnvSource("secret", "s2", "CONN")),
        (deployment(env_from=[{"prefix": "CO", "secretRef": {"name": "s3"}}]),
         EnvSource("secret", "s3", "NN")),
        (deployment(env_from=[{"prefix": "X_", "secretRef": {"name": "s3"}}]), None),
        (deployment(env_from=[{"configMapRef": {"name": "c2"}}, {"secretRef": {"name": "s4"}}]),
         EnvSource("secret", "s4", "CONN")),
        (deployment(env=[{"name": "CONN", **SECRET_REF}], env_from=[{"secretRef": {"name": "s5"}}]),
         EnvSource("secret", "s1", "conn")),
        (deployment(env=[{"name": "OTHER", **SECRET_REF}]), None),
        (deployment(env=[{"name": "CONN", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}]), None),
        (deployment(), None),
    ],
)  # fmt: skip
def test_find_env_source(document: dict[str, Any], expected: EnvSource | None) -> None:
    assert find_env_source(document, "CONN") == expected


def test_find_env_source_in_the_named_container() -> None:
    document = deployment(containers=[
        {"name": "sidecar", "env": [{"name": "CONN", "value": "x"}]},
        {"name": "main", "env": [{"name": "CONN", **SECRET_REF}]},
    ])  # fmt: skip
    assert find_env_source(document, "CONN") == EnvSource("literal")
    assert find_env_source(document, "CONN", "main") == EnvSource("secret", "s1", "conn")


def need(variable: str = "CONN", namespace: str = "shop", name: str = "worker") -> EnvNeed:
    return EnvNeed("ScaledObject shop/w", "spec.triggers[0].metadata", variable, namespace, name,
                   None)  # fmt: skip


def test_plan_env_one_entry_and_the_copy_command_without_a_value() -> None:
    documents = [deployment(env=[{"name": "CONN", **SECRET_REF}]),
                 {"kind": "Secret", "metadata": {"name": "s1", "namespace": "shop"},
                  "data": {"conn": "c2VjcmV0LXZhbHVl"}}]  # fmt: skip
    plan = plan_env([need(), need()], documents)
    assert plan.entries == [
        {"name": "CONN", "valueFrom": {"secretKeyRef": {"name": "s1", "key": "conn"}}}
    ]
    (text,) = {n[2] for n in plan.notes}
    assert "copy Secret s1 (Secret s1 is in the input) from shop to eventscaler" in text
    assert "--from-file=conn=/dev/stdin" in text
    assert "c2VjcmV0LXZhbHVl" not in text and "secret-value" not in text
    assert all(n[3] for n in plan.notes)


def test_plan_env_says_what_it_cannot_resolve() -> None:
    plan = plan_env([need(name="gone")], [deployment()])
    ((_, _, text, done),) = plan.notes
    assert done and "Deployment shop/gone is not in the input" in text
    assert "--from-cluster" in text and plan.entries == []
    plan = plan_env([need()], [deployment(env=[{"name": "CONN", "value": "plain"}])])
    ((_, _, text, done),) = plan.notes
    assert not done and "literal value: not copied" in text and "plain" not in text


def test_plan_env_asks_the_cluster_when_the_input_lacks_the_deployment() -> None:
    asked: list[tuple[str, str]] = []

    def lookup(namespace: str, name: str) -> dict[str, Any] | None:
        asked.append((namespace, name))
        return deployment(env_from=[{"secretRef": {"name": "from-cluster"}}])

    plan = plan_env([need()], [], lookup)
    assert asked == [("shop", "worker")]
    assert plan.entries[0]["valueFrom"]["secretKeyRef"] == {"name": "from-cluster", "key": "CONN"}


def test_one_variable_from_two_secrets_is_refused_for_the_second() -> None:
    documents = [deployment(env=[{"name": "CONN", **SECRET_REF}]),
                 deployment(name="other", env_from=[{"secretRef": {"name": "s9"}}])]  # fmt: skip
    plan = plan_env([need(), need(name="other")], documents)
    assert len(plan.entries) == 1
    assert any("one variable cannot hold both" in n[2] and not n[3] for n in plan.notes)


def test_the_overlay_renders_with_the_env_and_without_the_unused_shipped_secret(
    tmp_path: Path,
) -> None:
    plan = plan_env([need()], [deployment(env=[{"name": "CONN", **SECRET_REF}])])
    out = tmp_path / "overlay"
    written = write_overlay(out, "rules: []\n", plan, REPO_ROOT / "manifests")
    assert [p.name for p in written] == ["rules.yaml", "eventscaler-env.yaml", "kustomization.yaml"]
    patch = yaml.safe_load((out / "eventscaler-env.yaml").read_text())
    env = patch["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "AZURE_STORAGE_CONNECTION_STRING", "$patch": "delete"} in env
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the overlay is checked as YAML only")
    rendered = subprocess.run([kubectl, "kustomize", str(out)], capture_output=True, text=True,
                              check=True).stdout  # fmt: skip
    objects = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(rendered)}
    container = objects[("Deployment", "eventscaler")]["spec"]["template"]["spec"]["containers"][0]
    names = {e["name"]: e for e in container["env"]}
    assert names["CONN"]["valueFrom"]["secretKeyRef"] == {"name": "s1", "key": "conn"}
    assert "AZURE_STORAGE_CONNECTION_STRING" not in names
    assert objects[("ConfigMap", "eventscaler-rules")]["data"]["rules.yaml"] == "rules: []\n"
