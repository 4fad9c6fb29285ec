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


READER_POLICY = (
    '{"Version": "2012-10-17", "Statement": '
    '[{"Effect": "Allow", "Action": "sqs:*", "Resource": "*"}]}'
)


class IamCheckedSqsServer(SqsServer):
    """moto with its IAM checks on, so wrong credentials are refused as AWS refuses them.

    After the bootstrap every request must be signed with the key of a user moto knows (else
    403 InvalidClientTokenId, or SignatureDoesNotMatch for a wrong secret) and be allowed by
    that user's policies (else AccessDenied). The bootstrap creates two users: `reader`, allowed
    sqs:*, whose key `client()` and `environment` use, and `nobody`, with no policy at all.
    moto's checks answer in the query protocol's XML even to JSON-protocol clients; its state
    is in memory, so a restart forgets the users: this server is not restarted by the tests.
    """

    name = "SQS (moto, IAM checked)"

    def _bootstrap(self) -> None:
        iam = boto3.client(
            "iam",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id="bootstrap",
            aws_secret_access_key="bootstrap",
        )
        keys = {}
        for user in ("reader", "nobody"):
            iam.create_user(UserName=user)
            keys[user] = iam.create_access_key(UserName=user)["AccessKey"]
        iam.put_user_policy(UserName="reader", PolicyName="sqs", PolicyDocument=READER_POLICY)
        self.access_key_id = keys["reader"]["AccessKeyId"]
        self.secret_access_key = keys["reader"]["SecretAccessKey"]
        self.nobody_key = (keys["nobody"]["AccessKeyId"], keys["nobody"]["SecretAccessKey"])
        # From now on every request is authenticated and authorized.
        answer = requests.post(f"{self.endpoint_url}/moto-api/reset-auth", data=b"0", timeout=10)
        answer.raise_for_status()
