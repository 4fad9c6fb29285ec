"""One rule per source type the daemon knows, each reading a closed port on 127.0.0.1.

Issue 12 asks for the daemon's memory "with all source types loaded". Every rule here has its
Deployment, so each tick gets past the target and reads its source: every source module and its
SDK are imported, and every reader is opened, though each read fails at once (connection refused
on port 1, where nothing listens). The figure is the idle daemon's RSS and VmHWM with all of that
loaded, next to the idle daemon with no rule. cron needs no server: its window is read locally.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

CLOSED = "127.0.0.1:1"  # nothing listens on port 1: every connection is refused at once
# Azurite's published development key (not a secret), pointed at the closed port.
AZURE_QUEUE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    f"QueueEndpoint=http://{CLOSED}/devstoreaccount1"
)
ENV: Mapping[str, str] = {
    "BENCH_AZURE_QUEUE": AZURE_QUEUE,
    "BENCH_SERVICEBUS": f"Endpoint=sb://{CLOSED}/;SharedAccessKeyName=bench;SharedAccessKey=YmVuY2g=",
    "BENCH_AMQP": f"amqp://bench:bench@{CLOSED}/",
    "BENCH_POSTGRES": f"postgresql://bench:bench@{CLOSED}/bench",
    "BENCH_MYSQL": f"bench:bench@tcp({CLOSED})/bench",
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
}
HTTP = f"http://{CLOSED}"
TRIGGERS: Mapping[str, Mapping[str, Any]] = {
    "azure-queue": {"queueName": "bench", "connectionFromEnv": "BENCH_AZURE_QUEUE"},
    "azure-servicebus": {"queueName": "bench", "connectionFromEnv": "BENCH_SERVICEBUS"},
    "rabbitmq": {"queueName": "bench", "hostFromEnv": "BENCH_AMQP", "value": 5},
    "beanstalkd": {"server": CLOSED, "tube": "bench", "value": 5},
    "redis": {"address": CLOSED, "listName": "bench"},
    "redis-streams": {"address": CLOSED, "stream": "bench", "streamLength": 5},
    "nats-jetstream": {
        "natsServerMonitoringEndpoint": CLOSED,
        "account": "$G",
        "stream": "bench",
        "consumer": "bench",
        "lagThreshold": 5,
    },
    "aws-sqs-queue": {
        "queueURL": f"{HTTP}/000000000000/bench",
        "awsRegion": "us-east-1",
        "awsEndpoint": HTTP,
    },
    "metrics-api": {"url": f"{HTTP}/metrics", "valueLocation": "backlog", "targetValue": 5},
    "prometheus": {"serverAddress": HTTP, "query": "sum(backlog)", "threshold": 5},
    "postgresql": {
        "connectionFromEnv": "BENCH_POSTGRES",
        "query": "SELECT 1",
        "targetQueryValue": 5,
    },
    "mysql": {"connectionStringFromEnv": "BENCH_MYSQL", "query": "SELECT 1", "queryValue": 5},
    "cron": {"timezone": "UTC", "start": "0 8 * * *", "end": "0 18 * * *", "desiredReplicas": 2},
}


def rule_names() -> list[str]:
    return [f"all-{name}" for name in TRIGGERS]


def rules_document(namespace: str, interval: float) -> dict[str, Any]:
    """The rule file: one rule per type, each on its own Deployment (named by rule_names())."""
    return {
        "defaults": {"namespace": namespace, "pollingInterval": interval, "maxReplicas": 5},
        "rules": [
            {"name": name, "deployment": name, "triggers": [{"type": kind, **fields}]}
            for name, (kind, fields) in zip(rule_names(), TRIGGERS.items(), strict=True)
        ],
    }


def write_rules(path: Path, namespace: str, interval: float) -> Path:
    path.write_text(yaml.safe_dump(rules_document(namespace, interval), sort_keys=False))
    return path
