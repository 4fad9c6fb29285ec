"""End-to-end: the real daemon process against Azurite and a Kubernetes API.

The API is the faithful test server (under the RBAC of manifests/), or a real cluster when
E2E_KUBECONFIG names a kubeconfig. Scenarios:
- the flood story: 1,000 messages take a Deployment 0 -> 20 in one write, and back to 0 once the
  queue stayed empty for the cooldown; SIGTERM then exits 0;
- the step to zero comes on the first tick at cooldownPeriod after the last active one (poll 2 s,
  cooldown 6 s: two idle ticks held, the third goes, "no activity for 6.0s"), not an interval late;
- two rules on two queues scale independently;
- --dry-run logs the would-be write and changes nothing;
- a missing Deployment fails its rule only, the other rule still scales;
- `validate` rejects a broken file naming file, rule and field (exit 2), accepts the example;
- a broken reload keeps the old rules working, a fixed one takes effect without a restart;
- --once exits 0 when every rule worked and 1 when one failed;
- the connection string's key never appears in the output, even at DEBUG with failures.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_rules
from tests.support.azurite import Azurite
from tests.support.cluster import Cluster, wait_for
from tests.support.daemon_process import REPO_ROOT, DaemonProcess, run_command

pytestmark = pytest.mark.e2e

POLL = 0.5  # seconds: short periods keep the suite fast
COOLDOWN = 3.0
# For tests that change a target by hand (a pause, a count): noticed within a second rather than
# the default resync's 30 s. The bound itself is tests/test_api_economy.py's to prove.
SEEN_SOON = ("--target-resync", "1")


def rule(name: str, namespace: str, queue: str, **fields: Any) -> dict[str, Any]:
    trigger = {"type": "azure-queue", "queueName": queue, "queueLength": 5}
    trigger.update(fields.pop("trigger", {}))
    return {
        "name": name,
        "namespace": namespace,
        "deployment": name,
        "minReplicas": 0,
        "maxReplicas": 20,
        "pollingInterval": POLL,
        "cooldownPeriod": COOLDOWN,
        "triggers": [trigger],
        **fields,
    }


def daemon(cluster: Cluster, azurite: Azurite, rules: Path, *extra: str) -> DaemonProcess:
    return DaemonProcess(
        [
            "run",
            "--config",
            str(rules),
            "--kubeconfig",
            str(cluster.daemon_kubeconfig),
            "--reload-interval",
            "0.3",
            "--log-level",
            "DEBUG",
            *extra,
        ],
        env={"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string},
    )


def test_flood_scales_zero_to_max_in_one_step_then_back_to_zero_after_cooldown(
    cluster: Cluster, azurite: Azurite, unique: str, tmp_path: Path
) -> None:
    azurite.create_queue(unique)
    cluster.create_deployment(unique, replicas=0)
    rules = write_rules(tmp_path / "rules.yaml", [rule(unique, cluster.namespace, unique)])
    target = f"{cluster.namespace}/{unique}"

    with daemon(cluster, azurite, rules, *SEEN_SOON) as proc:
        proc.wait_for_output(rf"{target}: rule {unique}: 0 -> 0")  # it polls, idle at zero
        # Sending 1,000 messages takes seconds, longer than a poll on a busy machine: the rule is
        # paused while they land, so the tick after the pause sees the whole flood at once.
        cluster.annotate(unique, "eventscaler.io/paused", "true")
        proc.wait_for_output(rf"{target}: rule {unique}: 0 -> 0 \[paused\]")
        azurite.send_messages(unique, 1000)
        cluster.annotate(unique, "eventscaler.io/paused", None)
        wait_for(lambda: cluster.replicas(unique) == 20, 10, what="0 -> 20")
        proc.assert_scale_lines([(target, 0, 20)])  # one step, not 0 -> 1 -> ...

        assert azurite.delete_messages(unique, 1000) == 1000  # the workers drain the queue
        drained = time.monotonic()
        wait_for(lambda: cluster.replicas(unique) == 0, COOLDOWN + 10, what="20 -> 0")
        # Not before the queue stayed idle for the cooldown (less one poll of detection lag).
        assert time.monotonic() - drained >= COOLDOWN - POLL
        proc.assert_scale_lines([(target, 0, 20), (target, 20, 0)])
        assert "cooldownPeriod" in proc.output
        assert proc.stop() == 0
    assert "stopped" in proc.output


def test_the_step_to_zero_comes_on_the_first_tick_at_cooldown(
    cluster: Cluster, azurite: Azurite, unique: str, tmp_path: Path
) -> None:
    poll, cooldown = 2.0, 6.0
    azurite.create_queue(unique)
    azurite.send_messages(unique, 12)  # ceil(12 / 5) = 3
    cluster.create_deployment(unique, replicas=0)
    rules = write_rules(
        tmp_path / "rules.yaml",
        [rule(unique, cluster.namespace, unique, pollingInterval=poll, cooldownPeriod=cooldown)],
    )
    target = f"{cluster.namespace}/{unique}"
    with daemon(cluster, azurite, rules) as proc:
        wait_for(lambda: cluster.replicas(unique) == 3, 20, what="0 -> 3")
        assert azurite.delete_messages(unique, 12) == 12
        drained = time.monotonic()
        wait_for(lambda: cluster.replicas(unique) == 0, cooldown + 4 * poll + 20, what="3 -> 0")
        assert time.monotonic() - drained >= cooldown - poll  # never before the cooldown
        # The tick 6 s after the last active one went, not the one 8 s after: the ticks' times
        # are their slots on the schedule, whatever each start's jitter and read time. (The line
        # is logged just after the write the API already shows: wait for it.)
        proc.wait_for_output(rf"{target}: scaled 3 -> 0 .*no activity for 6\.0s >= cooldownPeriod")
        proc.assert_scale_lines([(target, 0, 3), (target, 3, 0)])
        held = re.findall(rf"rule {unique}: 3 -> 3 \[[a-z-]+\]: .*{unique}=0/5", proc.output)
        assert len(held) == cooldown / poll - 1, proc.output
        assert proc.stop() == 0


def test_two_rules_on_two_queues_scale_independently(
    cluster: Cluster, azurite: Azurite, unique: str, tmp_path: Path
) -> None:
    first, second = f"{unique}-a", f"{unique}-b"
    for name in (first, second):
        azurite.create_queue(name)
        cluster.create_deployment(name, replicas=0)
    rules = write_rules(
        tmp_path / "rules.yaml",
        [rule(first, cluster.namespace, first), rule(second, cluster.namespace, second)],
    )
    with daemon(cluster, azurite, rules) as proc:
        azurite.send_messages(first, 12)  # ceil(12 / 5) = 3
        wait_for(lambda: cluster.replicas(first) == 3, 10, what=f"{first} at 3")
        time.sleep(3 * POLL)
        assert cluster.replicas(second) == 0  # the idle rule did not move
        azurite.send_messages(second, 36)  # ceil(36 / 5) = 8
        wait_for(lambda: cluster.replicas(second) == 8, 10, what=f"{second} at 8")
        assert cluster.replicas(first) == 3
        assert proc.stop() == 0


def test_dry_run_logs_the_would_be_write_and_changes_nothing(
    cluster: Cluster, azurite: Azurite, unique: str, tmp_path: Path
) -> None:
    azurite.create_queue(unique)
    azurite.send_messages(unique, 50)
    cluster.create_deployment(unique, replicas=0)
    generation = cluster.generation(unique)
    rules = write_rules(tmp_path / "rules.yaml", [rule(unique, cluster.namespace, unique)])
    with daemon(cluster, azurite, rules, "--dry-run") as proc:
        proc.wait_for_output(rf"{cluster.namespace}/{unique}: dry-run: would scale 0 -> 10")
        time.sleep(3 * POLL)
        assert proc.stop() == 0
    assert cluster.replicas(unique) == 0
    assert cluster.generation(unique) == generation  # no write reached the Deployment
    proc.assert_scale_lines([])


def test_missing_deployment_fails_only_its_rule(
    cluster: Cluster, azurite: Azurite, unique: str, tmp_path: Path
) -> None:
    present, missing = f"{unique}-ok", f"{unique}-gone"
    for name in (present, missing):
        azurite.create_queue(name)
        azurite.send_messages(name, 20)
    cluster.create_deployment(present, replicas=0)
    rules = write_rules(
        tmp_path / "rules.yaml",
        [rule(missing, cluster.namespace, missing), rule(present, cluster.namespace, present)],
    )
    with daemon(cluster, azurite, rules) as proc:
        wait_for(lambda: cluster.replicas(present) == 4, 10, what=f"{present} at 4")
        proc.wait_for_output(
            rf"rule {missing}: cannot read the target Deployment: Deployment .*not found"
        )
        assert proc.process is not None and proc.process.poll() is None  # still running
        assert proc.stop() == 0


def test_validate_names_file_rule_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "rules:\n"
        "  - name: hello-keda\n"
        "    deployment: hello-keda\n"
        "    triggers:\n"
        "      - type: azure-queue\n"
        "        queueName: js-queue-items\n"
        "        queueLength: ten\n"
    )
    result = run_command(["validate", str(bad)])
    assert result.returncode == 2
    assert (
        f"{bad}: rules[0] (hello-keda).triggers[0].queueLength: "
        "expected a positive number, got 'ten'" in result.stderr
    )

    good = run_command(["validate", str(REPO_ROOT / "config.example.yaml")])
    assert good.returncode == 0, good.stderr
    assert "hello-keda: default/hello-keda replicas 0..20" in good.stdout


def test_broken_reload_keeps_old_rules_and_a_fixed_file_applies_without_restart(
    cluster: Cluster, azurite: Azurite, unique: str, tmp_path: Path
) -> None:
    azurite.create_queue(unique)
    cluster.create_deployment(unique, replicas=0)
    rules_path = tmp_path / "rules.yaml"
    write_rules(rules_path, [rule(unique, cluster.namespace, unique)])
    with daemon(cluster, azurite, rules_path) as proc:
        proc.wait_for_output(rf"rule {unique}: 0 -> 0")
        rules_path.write_text("rules: [this is: not valid")
        proc.wait_for_output(r"not valid YAML")
        proc.wait_for_output(r"keeping the 1 rule\(s\) in force")
        azurite.send_messages(unique, 30)
        wait_for(lambda: cluster.replicas(unique) == 6, 10, what="old rule still scaling")

        # A valid edit (a lower max) takes effect without a restart.
        write_rules(rules_path, [rule(unique, cluster.namespace, unique, maxReplicas=4)])
        wait_for(lambda: cluster.replicas(unique) == 4, 10, what="new maxReplicas applied")
        assert proc.stop() == 0


def test_once_exit_code_reports_failed_rules(
    cluster: Cluster, azurite: Azurite, unique: str, tmp_path: Path
) -> None:
    azurite.create_queue(unique)
    azurite.send_messages(unique, 7)
    cluster.create_deployment(unique, replicas=0)
    env = {"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string}
    args = ["--kubeconfig", str(cluster.daemon_kubeconfig), "--once"]

    good = write_rules(tmp_path / "good.yaml", [rule(unique, cluster.namespace, unique)])
    result = run_command(["run", "--config", str(good), *args], env)
    assert result.returncode == 0, result.stderr
    assert cluster.replicas(unique) == 2  # ceil(7 / 5)

    no_queue = rule(f"{unique}-q", cluster.namespace, f"{unique}-noqueue")
    no_queue["deployment"] = unique
    bad = write_rules(tmp_path / "bad.yaml", [no_queue])
    result = run_command(["--config", str(bad), *args], env)  # `run` is the default command
    assert result.returncode == 1
    assert "QueueNotFound" in result.stderr or "not found" in result.stderr
    assert cluster.replicas(unique) == 2  # a failed read scaled nothing


def test_connection_secret_never_logged(
    cluster: Cluster, azurite: Azurite, unique: str, tmp_path: Path
) -> None:
    cluster.create_deployment(unique, replicas=1)
    wrong_key = azurite.connection_string.replace(azurite.account_key, "A" * 86 + "==")
    rules = write_rules(
        tmp_path / "rules.yaml",
        [
            rule(f"{unique}-missing", cluster.namespace, f"{unique}-nope"),
            rule(
                f"{unique}-auth", cluster.namespace, unique, trigger={"connectionFromEnv": "WRONG"}
            ),
        ],
    )
    proc = DaemonProcess(
        ["--config", str(rules), "--kubeconfig", str(cluster.daemon_kubeconfig), "--once",
         "--log-level", "DEBUG"],
        env={"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string, "WRONG": wrong_key},
    )  # fmt: skip
    with proc:
        assert proc.wait() == 1
    output = proc.output
    assert "failed" in output
    assert azurite.account_key not in output
    assert "A" * 86 not in output
    assert "AccountKey" not in output
