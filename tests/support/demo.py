"""`make demo`: the flood story, end to end, with no cluster and no Azure account.

Starts Azurite and the project's local Kubernetes API stand-in (the test server, NOT a real
cluster), creates `hello-keda` at 0 replicas, floods `js-queue-items` with 1,000 messages, runs the
real autoscaler process, and drains the queue the way workers would (each replica handles a few
messages per second), printing the replicas over time: 0 -> 20 in one poll, back to 0 after the
cooldown. Periods are shortened so it ends within about a minute.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from tests.support.azurite import Azurite
from tests.support.daemon_process import DaemonProcess
from tests.support.kubeapi import KubeApiServer

NAMESPACE, NAME, QUEUE = "default", "hello-keda", "js-queue-items"
MESSAGES = 1000
PER_REPLICA_PER_SECOND = 5  # what one simulated worker drains each second
POLLING_INTERVAL, COOLDOWN = 2, 10
TIMEOUT = 120

RULES = {
    "rules": [
        {
            "name": NAME,
            "namespace": NAMESPACE,
            "deployment": NAME,
            "minReplicas": 0,
            "maxReplicas": 20,
            "pollingInterval": POLLING_INTERVAL,
            "cooldownPeriod": COOLDOWN,
            "triggers": [
                {
                    "type": "azure-queue",
                    "queueName": QUEUE,
                    "queueLength": 5,
                    "connectionFromEnv": "AZURE_STORAGE_CONNECTION_STRING",
                }
            ],
        }
    ]
}


def say(text: str) -> None:
    print(text, flush=True)


def main() -> int:
    say("eventscaler demo: the cluster is a LOCAL STAND-IN (the project's Kubernetes API test")
    say("server on 127.0.0.1), the queue is Azurite, the Azure Storage emulator, on 127.0.0.1.")
    with tempfile.TemporaryDirectory() as tmp, Azurite() as azurite, KubeApiServer() as kube:
        workdir = Path(tmp)
        kubeconfig = kube.write_kubeconfig(workdir / "kubeconfig")
        rules = workdir / "rules.yaml"
        rules.write_text(yaml.safe_dump(RULES, sort_keys=False))
        azurite.create_queue(QUEUE)
        kube.create_deployment(NAMESPACE, NAME, replicas=0, labels={"app": NAME})
        say(f"created Deployment {NAMESPACE}/{NAME} at 0 replicas and queue {QUEUE}")
        say(f"rule: target 5 messages/replica, max 20, poll every {POLLING_INTERVAL}s, "
            f"cooldown {COOLDOWN}s\n")  # fmt: skip

        daemon = DaemonProcess(
            ["run", "--config", str(rules), "--kubeconfig", str(kubeconfig)],
            env={"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string},
        )
        with daemon:
            daemon.wait_for_output("rule file .* loaded")
            # The clock starts when the flood starts: sending 1,000 messages takes seconds, and
            # the autoscaler may well act while they are still landing.
            flood = time.monotonic()
            say(f"t=  0.0s flooding {QUEUE} with {MESSAGES} messages")
            sender = threading.Thread(target=azurite.send_messages, args=(QUEUE, MESSAGES))
            sender.start()
            code = watch(kube, azurite, flood, sender)
            sender.join()
            daemon.stop()
        say("\nautoscaler log (scale decisions):")
        for line in daemon.output.splitlines():
            if "scaled" in line:
                say("  " + line)
    return code


def watch(kube: KubeApiServer, azurite: Azurite, flood: float, sender: threading.Thread) -> int:
    """Drain like workers would; print the replicas every second, and each write as it lands."""
    peak = shown = 0
    last_second, flooding = -1, True
    while time.monotonic() - flood < TIMEOUT:
        replicas = _replicas(kube)
        elapsed = time.monotonic() - flood
        if flooding and not sender.is_alive():
            flooding = False
            say(f"t={elapsed:5.1f}s flood complete: {MESSAGES} messages sent")
        if replicas != shown:
            say(f"t={elapsed:5.1f}s scaled {shown} -> {replicas}")
            shown, peak = replicas, max(peak, replicas)
        if int(elapsed) > last_second:
            last_second = int(elapsed)
            backlog = azurite.queue_client(QUEUE).get_queue_properties().approximate_message_count
            bar = "#" * replicas
            say(f"t={elapsed:5.1f}s replicas {replicas:2d} {bar:<20} backlog {backlog:4d}")
            if replicas and backlog and not flooding:
                azurite.delete_messages(QUEUE, replicas * PER_REPLICA_PER_SECOND)
        if peak and replicas == 0:
            say(f"\nback to zero {elapsed:.0f}s after the flood started (peak {peak} replicas)")
            return 0
        time.sleep(0.2)
    say("demo did not complete: see the log below")
    return 1


def _replicas(kube: KubeApiServer) -> int:
    deployment = kube.get_deployment(NAMESPACE, NAME) or {}
    return int(deployment.get("spec", {}).get("replicas", 0) or 0)


if __name__ == "__main__":
    sys.exit(main())
