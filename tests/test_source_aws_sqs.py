"""The aws-sqs-queue source against moto's real SQS server (moto_server on 127.0.0.1).

Scenarios:
- metadata, table-driven: valid rows (queueURL as a URL or a plain name, queueURLFromEnv, the
  booleans as KEDA's strings, awsEndpoint) load with their settings, target and activation;
  invalid rows give the exact `file: rules[0] (r).triggers[0].field: message` line (misspelt
  key, neither or both of queueURL/queueURLFromEnv, no awsRegion, a URL with a bad path or a
  query, an endpoint without scheme, a credential in the rule file)
- the number KEDA computes: visible + in flight by default; visible only with
  scaleOnInFlight false; + delayed with scaleOnDelayed; a plain queue name resolves to its URL
  once; the URL from an env var
- errors, each with its kind and one line naming the queue, never a secret: a missing queue
  (URL and name), the URL's env var unset; against a second moto with IAM checks on: a wrong
  secret (SignatureDoesNotMatch), an unknown key (InvalidClientTokenId), a user without
  permission (AccessDenied), all Unauthorized; no credentials anywhere -> MissingCredential
- web identity (IRSA's AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE, moto's STS as AWS's) through
  the standard chain: the temporary credentials read the queue, the session token is redacted
- the server stopped -> Unavailable within the tick's budget, restarted -> reads again with the
  same reader; a server that accepts and never answers -> Timeout within 3x the timeout
- one client per (region, endpoint), botocore's retries off, timeouts set; the secret key is
  registered for redaction
- convert: KEDA's documented trigger with a TriggerAuthentication (secretTargetRef) converts,
  explains which env vars to set, and the output loads; a missing awsRegion or queue is reported
- simulate: a rule with this trigger replays; without scaleOnInFlight in-flight work is not
  counted
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from eventscaler import config, retry
from eventscaler.convert import convert_text, render_rules
from eventscaler.redact import redact
from eventscaler.sources import aws_sqs
from eventscaler.sources.aws_sqs import AwsSqsReadError, AwsSqsSettings, AwsSqsSource
from tests.support import silent
from tests.support.servers.sqs import IamCheckedSqsServer, SqsServer
from tests.test_sources import load_one

REGION = "us-east-1"
_names = iter(range(1, 10_000))


@pytest.fixture(autouse=True)
def no_instance_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    """The credential chain must never reach out of the loopback for an instance profile."""
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)


def session_for(key: str, secret: str) -> boto3.session.Session:
    return boto3.session.Session(
        aws_access_key_id=key, aws_secret_access_key=secret, region_name=REGION
    )


@pytest.fixture
def source(sqs_server: SqsServer) -> Iterator[AwsSqsSource]:
    reader = AwsSqsSource(timeout_seconds=2.0, session=session_for("testing", "testing-secret-key"))
    yield reader
    reader.close()


def new_queue(server: SqsServer, **attributes: str) -> str:
    name = f"q{next(_names)}-{int(time.time() * 1000) % 100000}"
    url: str = server.client().create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    return url


def settings(server: SqsServer, queue: str, **fields: Any) -> AwsSqsSettings:
    return AwsSqsSettings(
        queue_url=queue, aws_region=REGION, aws_endpoint=server.endpoint_url, **fields
    )


def fill(server: SqsServer, url: str, visible: int, in_flight: int, delayed: int) -> None:
    """`visible + in_flight` messages, `in_flight` of them received; `delayed` more, delayed."""
    client = server.client()
    for start in range(0, visible + in_flight, 10):
        count = min(10, visible + in_flight - start)
        entries = [{"Id": str(i), "MessageBody": f"m{start + i}"} for i in range(count)]
        client.send_message_batch(QueueUrl=url, Entries=entries)
    received = 0
    while received < in_flight:
        answer = client.receive_message(
            QueueUrl=url, MaxNumberOfMessages=min(10, in_flight - received), VisibilityTimeout=600
        )
        received += len(answer.get("Messages", []))
    for i in range(delayed):
        client.send_message(QueueUrl=url, MessageBody=f"d{i}", DelaySeconds=600)


# --- metadata ---------------------------------------------------------------------------------

URL = "https://sqs.eu-west-1.amazonaws.com/123456789012/orders"
BASE = {"type": "aws-sqs-queue", "awsRegion": "eu-west-1"}


@pytest.mark.parametrize(
    ("fields", "expected", "target", "activation"),
    [
        ({"queueURL": URL}, AwsSqsSettings(URL, "", "eu-west-1"), 5.0, 0.0),
        (
            {"queueURL": "orders", "queueLength": 20, "activationQueueLength": 3},
            AwsSqsSettings("orders", "", "eu-west-1"),
            20.0,
            3.0,
        ),
        (
            {"queueURLFromEnv": "QUEUE_URL", "scaleOnInFlight": "false", "scaleOnDelayed": "true"},
            AwsSqsSettings("", "QUEUE_URL", "eu-west-1", "", False, True),
            5.0,
            0.0,
        ),
        (
            {"queueURL": "jobs.fifo", "awsEndpoint": "http://127.0.0.1:4566/"},
            AwsSqsSettings("jobs.fifo", "", "eu-west-1", "http://127.0.0.1:4566"),
            5.0,
            0.0,
        ),
    ],
)
def test_valid_metadata_loads(
    fields: dict[str, Any], expected: AwsSqsSettings, target: float, activation: float
) -> None:
    problems, rule = load_one({**BASE, **fields})
    assert problems == []
    (trigger,) = rule.triggers
    assert (trigger.settings, trigger.target, trigger.activation) == (expected, target, activation)


def test_default_names() -> None:
    _, by_url = load_one({**BASE, "queueURL": URL})
    _, by_env = load_one({**BASE, "queueURLFromEnv": "ORDERS_URL"})
    assert by_url.triggers[0].name == "orders"
    assert by_env.triggers[0].name == "sqs-orders-url"


PREFIX = "rules.yaml: rules[0] (r).triggers[0]"


@pytest.mark.parametrize(
    ("fields", "line"),
    [
        (
            {"queueURL": URL, "queueLenght": 5},
            ".queueLenght: unknown field (did you mean 'queueLength'?)",
        ),
        ({}, ".queueURL: give queueURL (a queue URL or name) or queueURLFromEnv (an env var "
             "holding it), one of them"),
        (
            {"queueURL": URL, "queueURLFromEnv": "Q"},
            ".queueURL: give queueURL (a queue URL or name) or queueURLFromEnv (an env var "
            "holding it), one of them, not both",
        ),
        (
            {"queueURL": "https://sqs.eu-west-1.amazonaws.com/orders"},
            ".queueURL: expected a queue URL like https://sqs.REGION.amazonaws.com/ACCOUNT/NAME, "
            "or a queue name, got 'https://sqs.eu-west-1.amazonaws.com/orders'",
        ),
        (
            {"queueURL": URL + "?X-Amz-Signature=abc"},
            ".queueURL: a queue URL has no user, password, query or fragment",
        ),
        (
            {"queueURL": "orders!"},
            ".queueURL: expected a queue URL like https://sqs.REGION.amazonaws.com/ACCOUNT/NAME, "
            "or a queue name, got 'orders!'",
        ),
        (
            {"queueURL": URL, "awsEndpoint": "127.0.0.1:4566"},
            ".awsEndpoint: expected an endpoint URL like http://127.0.0.1:4566, got "
            "'127.0.0.1:4566'",
        ),
        ({"queueURL": URL, "awsRegion": "Ireland"},
         ".awsRegion: expected an AWS region like 'eu-west-1', got 'Ireland'"),
        ({"queueURL": URL, "scaleOnInFlight": "yes"},
         ".scaleOnInFlight: expected true or false, got 'yes'"),
        (
            {"queueURL": URL, "awsSecretAccessKey": "abc"},
            ".awsSecretAccessKey: AWS credentials never sit in the rule file: the daemon takes "
            "them from the standard AWS chain",
        ),
    ],
)  # fmt: skip
def test_invalid_metadata_names_the_field(fields: dict[str, Any], line: str) -> None:
    problems, rule = load_one({**BASE, **fields})
    assert rule is None
    assert len(problems) == 1 and problems[0].startswith(PREFIX + line), problems


def test_region_is_required() -> None:
    problems, _ = load_one({"type": "aws-sqs-queue", "queueURL": URL})
    assert problems == [f"{PREFIX}.awsRegion: is required (the queue's region)"]


# --- the number -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, 12 + 4),  # KEDA's default: visible + in flight
        ({"scale_on_in_flight": False}, 12),
        ({"scale_on_delayed": True}, 12 + 4 + 3),
        ({"scale_on_in_flight": False, "scale_on_delayed": True}, 12 + 3),
    ],
)
def test_the_value_is_the_sum_keda_computes(
    sqs_server: SqsServer, source: AwsSqsSource, fields: dict[str, bool], expected: int
) -> None:
    url = new_queue(sqs_server)
    fill(sqs_server, url, visible=12, in_flight=4, delayed=3)
    assert source.read_length(settings(sqs_server, url, **fields)) == expected


def test_an_empty_queue_reads_zero(sqs_server: SqsServer, source: AwsSqsSource) -> None:
    assert source.read_length(settings(sqs_server, new_queue(sqs_server))) == 0


def test_a_plain_queue_name_is_resolved_once(
    sqs_server: SqsServer, source: AwsSqsSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = new_queue(sqs_server)
    fill(sqs_server, url, visible=3, in_flight=0, delayed=0)
    name = aws_sqs.queue_name_of(url)
    assert source.read_length(settings(sqs_server, name)) == 3
    client = source._client(settings(sqs_server, name))
    calls: list[str] = []
    original = client.get_queue_url
    monkeypatch.setattr(client, "get_queue_url", lambda **kw: calls.append("x") or original(**kw))
    assert source.read_length(settings(sqs_server, name)) == 3
    assert calls == []


def test_the_queue_url_from_an_env_var(sqs_server: SqsServer) -> None:
    url = new_queue(sqs_server)
    fill(sqs_server, url, visible=7, in_flight=0, delayed=0)
    reader = AwsSqsSource({"ORDERS_URL": url}, 2.0, session=session_for("testing", "testing"))
    got = reader.read_length(AwsSqsSettings("", "ORDERS_URL", REGION, sqs_server.endpoint_url))
    assert got == 7
    with pytest.raises(AwsSqsReadError) as missing:
        AwsSqsSource({}, 2.0, session=session_for("t", "t")).read_length(
            AwsSqsSettings("", "ORDERS_URL", REGION, sqs_server.endpoint_url)
        )
    assert missing.value.kind == "MissingCredential"
    assert "queue URL from env ORDERS_URL" in str(missing.value)


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["url", "name"])
def test_a_missing_queue_is_not_found(
    sqs_server: SqsServer, source: AwsSqsSource, form: str
) -> None:
    url = new_queue(sqs_server) + "-gone"
    queue = url if form == "url" else aws_sqs.queue_name_of(url)
    with pytest.raises(AwsSqsReadError) as error:
        source.read_length(settings(sqs_server, queue))
    assert error.value.kind == "NotFound"
    assert error.value.code in aws_sqs.NOT_FOUND_CODES
    assert f"aws-sqs-queue '{aws_sqs.queue_name_of(url)}' (in us-east-1 at " in str(error.value)
    assert "the queue does not exist" in str(error.value)


@pytest.fixture(scope="module")
def iam_queue(sqs_iam_server: IamCheckedSqsServer) -> str:
    url: str = sqs_iam_server.client().create_queue(QueueName="checked")["QueueUrl"]
    sqs_iam_server.client().send_message(QueueUrl=url, MessageBody="x")
    return url


def test_the_right_key_reads_on_the_checking_server(
    sqs_iam_server: IamCheckedSqsServer, iam_queue: str
) -> None:
    reader = AwsSqsSource(
        session=session_for(sqs_iam_server.access_key_id, sqs_iam_server.secret_access_key)
    )
    assert reader.read_length(settings(sqs_iam_server, iam_queue)) == 1


@pytest.mark.parametrize("case", ["wrong secret", "unknown key", "no permission"])
def test_refused_credentials_are_unauthorized_without_the_secret(
    sqs_iam_server: IamCheckedSqsServer, iam_queue: str, case: str
) -> None:
    good_key, good_secret = sqs_iam_server.access_key_id, sqs_iam_server.secret_access_key
    key, secret, code = {
        "wrong secret": (good_key, "W" * 40, "SignatureDoesNotMatch"),
        "unknown key": ("AKIAUNKNOWNKEY000000", good_secret, "InvalidClientTokenId"),
        "no permission": (*sqs_iam_server.nobody_key, "AccessDenied"),
    }[case]
    reader = AwsSqsSource(timeout_seconds=2.0, session=session_for(key, secret))
    with pytest.raises(AwsSqsReadError) as error:
        reader.read_length(settings(sqs_iam_server, iam_queue))
    message = str(error.value)
    assert error.value.kind == "Unauthorized" and error.value.code == code, message
    assert "refused the credentials from the environment" not in message  # explicit session keys
    assert f"(HTTP 403 {code})" in message and "\n" not in message
    assert secret not in message and good_secret not in message and "<" not in message


def test_refused_credentials_from_the_environment_name_the_variable(
    sqs_iam_server: IamCheckedSqsServer, iam_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", sqs_iam_server.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "E" * 40)
    reader = AwsSqsSource(timeout_seconds=2.0)  # the process's standard chain
    with pytest.raises(AwsSqsReadError) as error:
        reader.read_length(settings(sqs_iam_server, iam_queue))
    assert error.value.kind == "Unauthorized"
    assert "refused the credentials from the environment (AWS_ACCESS_KEY_ID)" in str(error.value)
    assert redact("E" * 40) == "***"  # registered for redaction once the chain found it


def test_no_credentials_anywhere_is_missing_credential(
    sqs_server: SqsServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    reader = AwsSqsSource(timeout_seconds=2.0)
    with pytest.raises(AwsSqsReadError) as error:
        reader.read_length(settings(sqs_server, new_queue(sqs_server)))
    assert error.value.kind == "MissingCredential"
    assert "no AWS credentials in the standard chain" in str(error.value)


def test_a_stopped_server_is_unavailable_and_a_restart_recovers(sqs_server: SqsServer) -> None:
    reader = AwsSqsSource(timeout_seconds=1.0, session=session_for("testing", "testing"))
    url = new_queue(sqs_server)
    with sqs_server.stopped():
        began = time.monotonic()
        with retry.budget(3.0), pytest.raises(AwsSqsReadError) as error:
            reader.read_length(settings(sqs_server, url))
        assert time.monotonic() - began < 6.0
        assert error.value.kind == "Unavailable"
        assert f"cannot reach 127.0.0.1:{sqs_server.port()}" in str(error.value)
    url = sqs_server.client().create_queue(QueueName=aws_sqs.queue_name_of(url))["QueueUrl"]
    fill(sqs_server, url, visible=2, in_flight=0, delayed=0)
    assert reader.read_length(settings(sqs_server, url)) == 2  # the same reader and client


@pytest.fixture
def silent_port() -> Iterator[int]:
    with silent.silent_port() as port:
        yield port


def test_a_silent_server_times_out_within_bound(silent_port: int) -> None:
    reader = AwsSqsSource(timeout_seconds=0.5, session=session_for("testing", "testing"))
    endpoint = f"http://127.0.0.1:{silent_port}"
    began = time.monotonic()
    with retry.budget(1.0), pytest.raises(AwsSqsReadError) as error:
        reader.read_length(AwsSqsSettings(f"{endpoint}/123456789012/q", "", REGION, endpoint))
    assert time.monotonic() - began < 3 * 1.0
    assert error.value.kind == "Timeout"


def test_one_client_per_region_and_endpoint(sqs_server: SqsServer, source: AwsSqsSource) -> None:
    first, second = new_queue(sqs_server), new_queue(sqs_server)
    source.read_length(settings(sqs_server, first))
    source.read_length(settings(sqs_server, second))
    assert len(source._clients) == 1
    client = source._clients[(REGION, sqs_server.endpoint_url)]
    assert client.meta.config.retries["total_max_attempts"] == 1
    assert client.meta.config.connect_timeout == client.meta.config.read_timeout == 2.0
    with pytest.raises(AwsSqsReadError):  # moto keeps queues per region, as SQS does
        source.read_length(AwsSqsSettings(first, "", "eu-west-1", sqs_server.endpoint_url))
    assert len(source._clients) == 2
    source.close()
    assert source._clients == {}


def test_the_secret_key_is_registered_for_redaction(
    sqs_server: SqsServer, source: AwsSqsSource
) -> None:
    source.read_length(settings(sqs_server, new_queue(sqs_server)))
    assert redact("key testing-secret-key here") == "key *** here"


def test_throttling_and_5xx_are_retried_others_not() -> None:
    from botocore.exceptions import ClientError

    def error(code: str, status: int) -> ClientError:
        body = {
            "Error": {"Code": code, "Message": "m"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }
        return ClientError(body, "GetQueueAttributes")  # type: ignore[arg-type]

    assert aws_sqs.transient_failure(error("ThrottlingException", 400)) is not None
    assert aws_sqs.transient_failure(error("InternalError", 500)) is not None
    assert aws_sqs.transient_failure(error("AWS.SimpleQueueService.NonExistentQueue", 400)) is None
    assert aws_sqs.transient_failure(error("SignatureDoesNotMatch", 403)) is None


# --- convert and simulate ---------------------------------------------------------------------

KEDA_SQS = """
apiVersion: v1
kind: Secret
metadata: {name: test-secrets, namespace: jobs}
data: {AWS_ACCESS_KEY_ID: eA==, AWS_SECRET_ACCESS_KEY: eA==}
---
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {name: keda-trigger-auth-aws-credentials, namespace: jobs}
spec:
  secretTargetRef:
  - {parameter: awsAccessKeyID, name: test-secrets, key: AWS_ACCESS_KEY_ID}
  - {parameter: awsSecretAccessKey, name: test-secrets, key: AWS_SECRET_ACCESS_KEY}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: aws-sqs-queue-scaledobject, namespace: jobs}
spec:
  scaleTargetRef: {name: nginx-deployment}
  triggers:
  - type: aws-sqs-queue
    authenticationRef: {name: keda-trigger-auth-aws-credentials}
    metadata:
      queueURL: https://sqs.eu-west-1.amazonaws.com/account_id/QueueName
      queueLength: "5"
      awsRegion: "eu-west-1"
      scaleOnInFlight: "false"
      identityOwner: pod
"""


def test_convert_maps_the_trigger_and_explains_the_credentials() -> None:
    conversion = convert_text(KEDA_SQS, "so.yaml")
    (rule,) = conversion.rules
    (trigger,) = rule["triggers"]
    assert trigger == {
        "type": "aws-sqs-queue",
        "queueURL": "https://sqs.eu-west-1.amazonaws.com/account_id/QueueName",
        "queueLength": 5,
        "awsRegion": "eu-west-1",
        "scaleOnInFlight": "false",
    }
    notes = "\n".join(str(n) for n in conversion.notes)
    assert "'awsSecretAccessKey' from Secret test-secrets key AWS_SECRET_ACCESS_KEY: add env: " \
           "[{name: AWS_SECRET_ACCESS_KEY" in notes  # fmt: skip
    assert "metadata.identityOwner" in notes
    loaded = config.parse_rules_text(render_rules(conversion, "so.yaml"), "converted.yaml")
    assert loaded.problems == ()
    assert loaded.rules[0].triggers[0].settings.scale_on_in_flight is False


def test_simulate_counts_in_flight_only_with_scale_on_in_flight() -> None:
    with_flight = AwsSqsSettings("q", "", REGION)
    without = AwsSqsSettings("q", "", REGION, scale_on_in_flight=False)
    assert aws_sqs.SOURCE_TYPE.simulated_value(with_flight, 30, 4) == 30
    assert aws_sqs.SOURCE_TYPE.simulated_value(without, 30, 4) == 26


def test_convert_reports_what_a_rule_needs_and_keda_left_out() -> None:
    text = KEDA_SQS.replace('      awsRegion: "eu-west-1"\n', "")
    conversion = convert_text(text, "so.yaml")
    assert "metadata.awsRegion: not converted: missing" in "\n".join(
        str(n) for n in conversion.notes
    )
    no_queue = KEDA_SQS.replace(
        "      queueURL: https://sqs.eu-west-1.amazonaws.com/account_id/QueueName\n", ""
    )
    assert convert_text(no_queue, "so.yaml").rules == ()


def test_web_identity_irsa_through_the_standard_chain(
    sqs_server: SqsServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """IRSA's variables, with moto's STS standing in for AWS's: the chain assumes the role with
    the token file, and the temporary credentials read the queue."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    token_file = tmp_path / "token"
    token_file.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2ln")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/eventscaler")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sqs_server.endpoint_url)
    url = new_queue(sqs_server)
    fill(sqs_server, url, visible=4, in_flight=0, delayed=0)
    reader = AwsSqsSource(timeout_seconds=2.0)
    assert reader.read_length(settings(sqs_server, url)) == 4
    credentials = reader._session.get_credentials()
    assert credentials.method == "assume-role-with-web-identity"
    token = credentials.get_frozen_credentials().token
    assert token and redact(f"t={token}") == "t=***"
    reader.close()
