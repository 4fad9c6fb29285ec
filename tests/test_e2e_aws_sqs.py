"""End to end: the real daemon process, SQS on moto_server, the Kubernetes API test server.

- a flood of 37 visible + 8 in-flight (+ 5 delayed, not counted by default) messages takes the
  Deployment 0 -> 9 in one write (ceil(45 / 5), KEDA's arithmetic), and a drain brings it back
  to 0 once the queue stayed empty for the cooldown;
- SQS stopped mid-run: the rule holds its replicas, reports the error naming the queue, and
  scales again once SQS is back;
- a wrong secret key (moto with IAM checks): a per-rule Unauthorized error naming the rule and
  the trigger, the replicas held (that the key shows nowhere: tests/test_secrets.py);
- `validate` names a misspelt field.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import write_rules
from tests.support.cluster import Cluster, wait_for
from tests.support.daemon_process import run_command
from tests.support.servers.sqs import IamCheckedSqsServer, SqsServer
from tests.support.source_e2e import (
    COOLDOWN,
    POLL,
    health,
    rule_for,
    source_daemon,
    status_row,
)
from tests.test_e2e import SEEN_SOON
from tests.test_source_aws_sqs import fill

pytestmark = pytest.mark.e2e


def sqs_env(server: SqsServer) -> dict[str, str]:
    # Never reach for an instance profile off the loopback, whatever the machine.
    return {**server.environment, "AWS_EC2_METADATA_DISABLED": "true"}


def sqs_trigger(server: SqsServer, url: str) -> dict[str, object]:
    return {"type": "aws-sqs-queue", "queueURL": url, "awsRegion": server.region,
            "awsEndpoint": server.endpoint_url, "queueLength": 5}  # fmt: skip


def test_flood_scales_in_one_poll_then_back_to_zero_after_the_cooldown(
    cluster: Cluster, sqs_server: SqsServer, unique: str, tmp_path: Path
) -> None:
    url = sqs_server.client().create_queue(QueueName=unique)["QueueUrl"]
    cluster.create_deployment(unique, replicas=0)
    rules = write_rules(
        tmp_path / "rules.yaml", [rule_for(unique, cluster.namespace, sqs_trigger(sqs_server, url))]
    )
    target = f"{cluster.namespace}/{unique}"
    # A pause set and removed by hand is seen at the target's next read: within a second here.
    with source_daemon(cluster, rules, sqs_env(sqs_server), *SEEN_SOON) as proc:
        proc.wait_for_output(rf"{target}: rule {unique}: 0 -> 0")
        # Paused while the messages land, so one tick sees them all.
        cluster.annotate(unique, "eventscaler.io/paused", "true")
        proc.wait_for_output(rf"{target}: rule {unique}: 0 -> 0 \[paused\]")
        fill(sqs_server, url, visible=37, in_flight=8, delayed=5)
        cluster.annotate(unique, "eventscaler.io/paused", None)
        wait_for(lambda: cluster.replicas(unique) == 9, 10, what="0 -> 9")
        proc.assert_scale_lines([(target, 0, 9)])

        sqs_server.client().purge_queue(QueueUrl=url)  # the workers are done
        drained = time.monotonic()
        wait_for(lambda: cluster.replicas(unique) == 0, COOLDOWN + 10, what="9 -> 0")
        assert time.monotonic() - drained >= COOLDOWN - POLL
        proc.assert_scale_lines([(target, 0, 9), (target, 9, 0)])
        assert proc.stop() == 0


def test_sqs_stopped_holds_the_replicas_reports_and_recovers(
    cluster: Cluster, sqs_server: SqsServer, unique: str, tmp_path: Path
) -> None:
    url = sqs_server.client().create_queue(QueueName=unique)["QueueUrl"]
    fill(sqs_server, url, visible=20, in_flight=0, delayed=0)
    cluster.create_deployment(unique, replicas=0)
    rules = write_rules(
        tmp_path / "rules.yaml", [rule_for(unique, cluster.namespace, sqs_trigger(sqs_server, url))]
    )
    error = rf"rule {unique}: .*aws-sqs-queue '{unique}' .*Unavailable: cannot reach 127\.0\.0\.1"
    with source_daemon(cluster, rules, sqs_env(sqs_server)) as proc:
        wait_for(lambda: cluster.replicas(unique) == 4, 10, what="0 -> 4")
        with sqs_server.stopped():
            proc.wait_for_output(error)
            failing_since = time.monotonic()
            # Failed polls for longer than the cooldown: the replicas stay.
            wait_for(
                lambda: (
                    time.monotonic() - failing_since > COOLDOWN + 2 * POLL
                    and proc.output.count("Unavailable: cannot reach") >= 4
                ),
                COOLDOWN + 20,
                what="failed reads for longer than the cooldown",
            )
            assert cluster.replicas(unique) == 4
            proc.assert_scale_lines([(f"{cluster.namespace}/{unique}", 0, 4)])
        # moto keeps its queues in memory: the restarted server has the queue again once made.
        sqs_server.client().create_queue(QueueName=unique)
        fill(sqs_server, url, visible=30, in_flight=0, delayed=0)
        wait_for(lambda: cluster.replicas(unique) == 6, 15, what="4 -> 6 after the restart")
        assert proc.stop() == 0


def test_a_wrong_secret_key_is_a_clear_per_rule_error(
    cluster: Cluster, sqs_iam_server: IamCheckedSqsServer, unique: str, tmp_path: Path
) -> None:
    url = sqs_iam_server.client().create_queue(QueueName=unique)["QueueUrl"]
    cluster.create_deployment(unique, replicas=2)
    wrong = "Wr0ngSecretKeyWr0ngSecretKeyWr0ngSecret1"
    env = {**sqs_env(sqs_iam_server), "AWS_SECRET_ACCESS_KEY": wrong}
    rules = write_rules(
        tmp_path / "rules.yaml",
        [rule_for(unique, cluster.namespace, sqs_trigger(sqs_iam_server, url))],
    )
    with source_daemon(cluster, rules, env) as proc:
        proc.wait_for_output(
            rf"rule {unique}: .*aws-sqs-queue '{unique}' .*Unauthorized: 127\.0\.0\.1:\d+ refused "
            r"the credentials from the environment \(AWS_ACCESS_KEY_ID\) \(HTTP 403 "
            r"SignatureDoesNotMatch\)"
        )
        metrics, status = health(proc)
        assert proc.stop() == 0
    assert cluster.replicas(unique) == 2  # a reading it did not get scales nothing
    assert "Unauthorized" in status_row(status, unique)["error"]
    assert 'kind="Unauthorized"' in metrics


def test_validate_names_a_misspelt_field(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n"
        "  - name: orders\n"
        "    deployment: orders\n"
        "    triggers:\n"
        "      - type: aws-sqs-queue\n"
        "        queueURL: https://sqs.eu-west-1.amazonaws.com/123456789012/orders\n"
        "        awsRegion: eu-west-1\n"
        "        scaleOnInFligth: false\n"
    )
    result = run_command(["validate", str(rules)])
    assert result.returncode == 2
    assert (
        f"{rules}: rules[0] (orders).triggers[0].scaleOnInFligth: unknown field "
        "(did you mean 'scaleOnInFlight'?)" in result.stderr
    )
