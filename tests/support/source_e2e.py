"""What the end-to-end tests of a source share: a rule around one trigger, the daemon, its health.

The daemon is the real `autoscaler.py run` process against the cluster of tests/support/cluster.py
(the Kubernetes API test server, or E2E_KUBECONFIG), with short periods so a suite stays fast.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.support.cluster import Cluster, wait_for
from tests.support.daemon_process import DaemonProcess

POLL = 0.5  # seconds between two reads of a rule
COOLDOWN = 3.0


def rule_for(
    name: str, namespace: str, trigger: Mapping[str, Any], **fields: Any
) -> dict[str, Any]:
    """A rule scaling Deployment `name` 0..20 on one trigger."""
    return {
        "name": name,
        "namespace": namespace,
        "deployment": name,
        "minReplicas": 0,
        "maxReplicas": 20,
        "pollingInterval": POLL,
        "cooldownPeriod": COOLDOWN,
        "triggers": [dict(trigger)],
        **fields,
    }


def source_daemon(
    cluster: Cluster, rules: Path, env: Mapping[str, str] | None = None, *extra: str
) -> DaemonProcess:
    """The real daemon on `rules`, at DEBUG, with a free health port, and `extra` flags."""
    return DaemonProcess(
        ["run", "--config", str(rules), "--kubeconfig", str(cluster.daemon_kubeconfig),
         "--reload-interval", "0.3", "--log-level", "DEBUG", "--health-port", "0", *extra],
        env=env,
    )  # fmt: skip


def wait_failing_past_the_cooldown(daemon: DaemonProcess, error: str) -> None:
    """Until reads have failed with `error` (a regex) for longer than the cooldown: a rule that
    scaled down on a reading it did not get would have done so by then."""
    daemon.wait_for_output(error)
    failing_since = time.monotonic()
    wait_for(
        lambda: (
            time.monotonic() - failing_since > COOLDOWN + 2 * POLL
            and len(re.findall(error, daemon.output)) >= 4
        ),
        COOLDOWN + 20,
        what="failed reads for longer than the cooldown",
    )


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def health(daemon: DaemonProcess) -> tuple[str, dict[str, Any]]:
    """The daemon's /metrics text and its /status document."""
    port = int(daemon.wait_for_output(r"health endpoints on port (\d+)")[1])
    metrics = fetch(f"http://127.0.0.1:{port}/metrics")
    status = json.loads(fetch(f"http://127.0.0.1:{port}/status"))
    return metrics, status


def status_row(status: Mapping[str, Any], rule: str) -> dict[str, Any]:
    rows = {row["rule"]: row for row in status["rules"]}
    return dict(rows[rule])
