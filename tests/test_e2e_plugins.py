"""End to end, the real daemon process: the generic trigger and scalingModifiers.

- a scalingModifiers formula over two queues decides as the formula says (not the highest
  trigger), and the reason in the log shows the formula's value.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import write_rules
from tests.support.azurite import Azurite
from tests.support.cluster import Cluster, wait_for
from tests.test_e2e import daemon, rule

pytestmark = pytest.mark.e2e


def test_a_formula_over_two_queues_decides(
    cluster: Cluster, azurite: Azurite, unique: str, tmp_path: Path
) -> None:
    first, second = f"{unique}-a", f"{unique}-b"
    for queue in (first, second):
        azurite.create_queue(queue)
    cluster.create_deployment(unique, replicas=0)
    combo = rule(unique, cluster.namespace, first, trigger={"name": "fast"})
    combo["triggers"].append(
        {"type": "azure-queue", "name": "slow", "queueName": second, "queueLength": 5}
    )
    combo["scalingModifiers"] = {"formula": "fast + 2 * slow", "target": 10}
    rules = write_rules(tmp_path / "rules.yaml", [combo])
    with daemon(cluster, azurite, rules) as proc:
        azurite.send_messages(first, 30)
        azurite.send_messages(second, 25)
        # 30 + 2 x 25 = 80 -> ceil(80 / 10) = 8; the highest trigger alone would ask ceil(30/5) = 6.
        wait_for(lambda: cluster.replicas(unique) == 8, 15, what="the formula's 8 replicas")
        assert "formula 'fast + 2 * slow'=80/10" in proc.output
        assert proc.stop() == 0
