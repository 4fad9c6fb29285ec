"""AWS SQS as moto's standalone server (PyPI `moto[server]`) on 127.0.0.1.

moto accepts any credentials (it checks none unless told to), so tests cannot prove a wrong
key against it; it does keep the SQS counters (ApproximateNumberOfMessages, ...NotVisible,
...Delayed) as SQS documents them. State lives in memory: a restart starts with no queues.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import boto3
import requests

from tests.support.servers.process import HOST, ServerProcess, require_program

PACKAGE = "moto[server] from requirements-dev.txt (`pip install -r requirements-dev.txt`)"
# The console script sits next to the interpreter running the tests (the project's venv).
MOTO_SERVER = Path(sys.executable).parent / "moto_server"


class SqsServer(ServerProcess):
    name = "SQS (moto)"
    start_timeout_seconds = 60.0
    region = "us-east-1"
    access_key_id = "testing"
    secret_access_key = "testing"

    def _check_installed(self) -> None:
        self._binary = require_program(MOTO_SERVER, PACKAGE, "moto_server")

    def _launch(self) -> None:
        self._spawn("moto", [self._binary, "-H", HOST, "-p", str(self.port())])

    def _is_ready(self) -> bool:
        # moto's own API answers once Flask serves; any AWS call would do the same.
        response = requests.get(f"{self.endpoint_url}/moto-api/data.json", timeout=2)
        return response.status_code == 200

    @property
    def endpoint_url(self) -> str:
        """KEDA's `awsEndpoint`."""
        return f"http://{HOST}:{self.port()}"

    @property
    def environment(self) -> dict[str, str]:
        """The standard AWS chain's variables, for a daemon process under test."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self) -> Any:
        """A boto3 SQS client bound to this server."""
        return boto3.client(
            "sqs",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        )
