"""The azure-servicebus source, through the official SDK, against the administration endpoint's
stand-in (tests/support/servicebus_server.py: real HTTPS on 127.0.0.1, the documented Atom wire
format, SAS signatures checked for real).

Scenarios:
- metadata, table-driven: valid rows (a queue, a subscription, patterns with each operation,
  connectionFromEnv, namespace with each cloud, Private with endpointSuffix, KEDA's strings) load
  with their settings, target (messageCount, 5) and activation; invalid rows give the exact
  `file: rules[0] (r).triggers[0].field: message` line (misspelt key, no entity, queue and topic,
  topic without subscription, a bad name, a bad pattern, operation without useRegex, an unknown
  operation, namespace and connectionFromEnv, cloud without namespace, Private without suffix)
- the number: ActiveMessageCount only (dead-lettered, scheduled and transfer messages on the
  stand-in are not counted), of a queue and of a subscription; useRegex over more than one page
  of the list feed with sum, max and avg (rounded down), a pattern matching nothing -> 0
- errors: a missing queue (200 and an empty feed) and a missing subscription (404) -> NotFound;
  a wrong key and a policy without Manage -> Unauthorized with the service's reason, never the
  key; a malformed string -> InvalidCredential; an unset variable -> MissingCredential; the
  stand-in stopped -> Unavailable within the tick's budget, and the same reader recovers
- Azure AD: a namespace trigger with a given TokenCredential reads through the bearer path
- the SDK is imported only when a reader opens; convert (connectionFromEnv, a
  TriggerAuthentication's Secret, workload identity); simulate; config.example.yaml's example
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken

from eventscaler import config, retry
from eventscaler.convert import convert_text, render_rules
from eventscaler.redact import redact
from eventscaler.sources import azure_servicebus
from eventscaler.sources.azure_servicebus import ServiceBusSource, servicebus_trigger
from eventscaler.sources.base import SourceError
from tests.conftest import write_rules
from tests.support.daemon_process import run_command
from tests.support.servicebus_server import ServiceBusStandIn
from tests.support.source_tables import assert_invalid, assert_valid
from tests.support.source_tests import commented_example, sdk_loaded
from tests.support.waiting import WAIT_SCALE

TYPE = "azure-servicebus"
WRONG_KEY = "d3Jvbmcta2V5LXRoYXQtaXMtbm90LXRoZS1yaWdodC1vbmU="


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceBusStandIn]:
    with ServiceBusStandIn(tmp_path_factory.mktemp("servicebus")) as server:
        server.set_queue("orders", active=7, dead_letter=3, scheduled=2, transfer=1)
        for i in range(130):  # more than one page (100) of the list feed
            server.set_queue(f"work-{i:03d}", active=i)
        server.set_subscription("events", "billing", active=4, dead_letter=9, scheduled=5)
        server.set_subscription("events", "billing-eu", active=11)
        server.set_subscription("events", "audit", active=30)
        server.add_policy("listen-only", "bGlzdGVuLW9ubHkta2V5LXZhbHVlLTAxMjM0NTY3", "Listen")
        yield server


@pytest.fixture(autouse=True)
def trusted(standin: ServiceBusStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(standin.ca_path))
    if not standin.running:
        standin.start()


def env(standin: ServiceBusStandIn, **more: str) -> dict[str, str]:
    return {"SERVICEBUS_CONNECTION_STRING": standin.connection_string(), **more}


def read(standin: ServiceBusStandIn, environ: dict[str, str] | None = None, **fields: Any) -> float:
    source = ServiceBusSource(environ or env(standin), timeout_seconds=2.0)
    try:
        return source.read(servicebus_trigger(**fields))
    finally:
        source.close()


def read_error(standin: ServiceBusStandIn, environ: dict[str, str], **fields: Any) -> SourceError:
    with pytest.raises(SourceError) as caught:
        read(standin, environ, **fields)
    return caught.value


# --- metadata ---------------------------------------------------------------------------------

VALID: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"queueName": "orders"},
     {"settings.queue_name": "orders", "target": 5.0, "activation": 0.0, "name": "orders",
      "settings.connection_from_env": "SERVICEBUS_CONNECTION_STRING",
      "settings.use_regex": False}),
    ({"queueName": "orders", "messageCount": 20, "activationMessageCount": 3},
     {"target": 20.0, "activation": 3.0}),
    ({"topicName": "events", "subscriptionName": "billing", "connectionFromEnv": "SB_CONN"},
     {"settings.topic_name": "events", "settings.subscription_name": "billing", "name": "events",
      "settings.connection_from_env": "SB_CONN"}),
    ({"queueName": "work-.*", "useRegex": "true"},
     {"settings.use_regex": True, "settings.operation": "sum", "name": "queue-regex"}),
    ({"topicName": "events", "subscriptionName": "billing(-eu)?", "useRegex": True,
      "operation": "Max"}, {"settings.operation": "max", "name": "topic-regex"}),
    ({"queueName": "w.*", "useRegex": True, "operation": "avg"}, {"settings.operation": "avg"}),
    ({"queueName": "orders", "namespace": "shop-bus"},
     {"settings.namespace": "shop-bus", "settings.connection_from_env": "",
      "settings.fully_qualified_namespace": "shop-bus.servicebus.windows.net"}),
    ({"queueName": "orders", "namespace": "shop-bus", "cloud": "AzureChinaCloud"},
     {"settings.fully_qualified_namespace": "shop-bus.servicebus.chinacloudapi.cn"}),
    ({"queueName": "orders", "namespace": "shop-bus", "cloud": "Private",
      "endpointSuffix": "servicebus.airgap.example"},
     {"settings.fully_qualified_namespace": "shop-bus.servicebus.airgap.example"}),
    ({"queueName": "orders", "metricType": "Value"}, {"metric_type": "Value"}),
]  # fmt: skip

INVALID: list[tuple[dict[str, Any], str]] = [
    ({}, "triggers[0].queueName: give queueName, or topicName and subscriptionName"),
    ({"queueName": "orders", "mesageCount": 5},
     "triggers[0].mesageCount: unknown field (did you mean 'messageCount'?)"),
    ({"queueName": "orders", "messageCount": "ten"},
     "triggers[0].messageCount: expected a positive number, got 'ten'"),
    ({"queueName": "orders", "activationMessageCount": -1},
     "triggers[0].activationMessageCount: expected a number >= 0"),
    ({"queueName": "orders", "topicName": "events"},
     "triggers[0].topicName: give queueName, or topicName and subscriptionName, not both"),
    ({"queueName": "orders", "subscriptionName": "s"},
     "triggers[0].subscriptionName: only applies with topicName"),
    ({"topicName": "events"}, "triggers[0].subscriptionName: is required with topicName"),
    ({"queueName": "orders*"}, "triggers[0].queueName: expected a Service Bus queue name"),
    ({"topicName": "events", "subscriptionName": "x" * 51},
     "triggers[0].subscriptionName: expected a Service Bus subscription name"),
    ({"queueName": "work-(", "useRegex": True},
     "triggers[0].queueName: not a valid regular expression (missing ), unterminated subpattern"),
    ({"queueName": "orders", "operation": "max"},
     "triggers[0].operation: only applies with useRegex: true"),
    ({"queueName": "w.*", "useRegex": True, "operation": "min"},
     "triggers[0].operation: expected 'sum' or 'max' or 'avg', got 'min'"),
    ({"queueName": "orders", "useRegex": "yes"}, "triggers[0].useRegex: expected true or false"),
    ({"queueName": "orders", "namespace": "shop-bus", "connectionFromEnv": "SB"},
     "triggers[0].namespace: give connectionFromEnv (a connection string) or namespace (Azure AD)"),
    ({"queueName": "orders", "cloud": "AzureChinaCloud"},
     "triggers[0].cloud: only applies together with namespace"),
    ({"queueName": "orders", "namespace": "shop-bus", "cloud": "Private"},
     "triggers[0].endpointSuffix: is required with cloud 'Private'"),
    ({"queueName": "orders", "namespace": "shop-bus", "endpointSuffix": "a.b"},
     "triggers[0].endpointSuffix: only applies with cloud 'Private'"),
    ({"queueName": "orders", "namespace": "shop-bus.servicebus.windows.net"},
     "triggers[0].namespace: expected a Service Bus namespace name"),
    ({"queueName": "orders", "connectionFromEnv": "not a name"},
     "triggers[0].connectionFromEnv: expected the name of an environment variable"),
]  # fmt: skip


@pytest.mark.parametrize(("metadata", "expected"), VALID)
def test_valid_metadata(metadata: dict[str, Any], expected: dict[str, Any]) -> None:
    assert_valid(TYPE, metadata, expected)


@pytest.mark.parametrize(("metadata", "fragment"), INVALID)
def test_invalid_metadata(metadata: dict[str, Any], fragment: str) -> None:
    assert_invalid(TYPE, metadata, fragment)


# --- the number -------------------------------------------------------------------------------


def test_active_messages_only_of_a_queue_and_a_subscription(standin: ServiceBusStandIn) -> None:
    assert read(standin, queue_name="orders") == 7  # not the 3 dead, 2 scheduled, 1 transfer
    assert read(standin, queue_name="ORDERS") == 7  # entity names are case-insensitive
    assert read(standin, topic_name="events", subscription_name="billing") == 4


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"queue_name": r"work-0\d\d"}, sum(range(100))),  # across the first page only
        ({"queue_name": r"work-1\d\d"}, sum(range(100, 130))),  # the second page
        ({"queue_name": "work-.*", "operation": "max"}, 129),
        ({"queue_name": "work-.*", "operation": "avg"}, sum(range(130)) // 130),  # 64, not 64.5
        ({"queue_name": "work-12"}, 0),  # a whole-name match only: no work-12x
        ({"queue_name": "nothing-.*"}, 0),  # no entity matches: 0, as KEDA reads it
        ({"topic_name": "events", "subscription_name": "billing.*"}, 15),
        ({"topic_name": "events", "subscription_name": "billing.*", "operation": "max"}, 11),
    ],
)
def test_use_regex_combines_the_matching_entities(
    standin: ServiceBusStandIn, fields: dict[str, Any], expected: float
) -> None:
    assert read(standin, use_regex=True, **fields) == expected


def test_the_count_follows_the_entity(standin: ServiceBusStandIn) -> None:
    source = ServiceBusSource(env(standin), timeout_seconds=2.0)
    trigger = servicebus_trigger(queue_name="moving")
    standin.set_queue("moving", active=3)
    assert source.read(trigger) == 3
    standin.set_queue("moving", active=40, dead_letter=100)
    assert source.read(trigger) == 40
    source.close()


# --- errors -----------------------------------------------------------------------------------


def test_a_missing_queue_or_subscription_is_not_found(standin: ServiceBusStandIn) -> None:
    error = read_error(standin, env(standin), queue_name="no-such-queue")
    assert (error.kind, error.code) == ("NotFound", "EntityNotFound")
    assert str(error) == (
        "azure-servicebus queue 'no-such-queue' (connection string from env "
        f"SERVICEBUS_CONNECTION_STRING): EntityNotFound: the queue does not exist in "
        f"{standin.host}"
    )
    error = read_error(standin, env(standin), topic_name="events", subscription_name="gone")
    assert error.kind == "NotFound" and "subscription or its topic does not exist" in str(error)
    pattern = read_error(standin, env(standin), topic_name="nope", subscription_name=".*",
                         use_regex=True)  # fmt: skip
    assert pattern.kind == "NotFound" and "the topic does not exist" in str(pattern)


def test_a_wrong_key_is_unauthorized_and_never_shown(standin: ServiceBusStandIn) -> None:
    environ = {"SB": standin.connection_string(key=WRONG_KEY)}
    error = read_error(standin, environ, queue_name="orders", connection_from_env="SB")
    assert (error.kind, error.code) == ("Unauthorized", "AuthenticationFailed")
    assert (
        f"(connection string from env SB): AuthenticationFailed: {standin.host} refused the "
        "credentials (HTTP 401: InvalidSignature: The token has an invalid signature.)"
    ) in str(error)
    assert WRONG_KEY not in str(error) and redact(environ["SB"]) == "***"


def test_a_policy_without_manage_is_unauthorized(standin: ServiceBusStandIn) -> None:
    key = "bGlzdGVuLW9ubHkta2V5LXZhbHVlLTAxMjM0NTY3"
    environ = {"SB": standin.connection_string("listen-only", key)}
    error = read_error(standin, environ, queue_name="orders", connection_from_env="SB")
    assert error.kind == "Unauthorized"
    assert "'Manage' claim(s) are required" in str(error) and key not in str(error)


@pytest.mark.parametrize(
    ("value", "kind"),
    [("", "MissingCredential"), ("Endpoint=nonsense", "InvalidCredential"),
     ("just words", "InvalidCredential")],
)  # fmt: skip
def test_credential_problems_before_any_request(
    standin: ServiceBusStandIn, value: str, kind: str
) -> None:
    error = read_error(standin, {"SB": value}, queue_name="orders", connection_from_env="SB")
    assert error.kind == kind and "from env SB" in str(error)


def test_the_standin_stopped_is_unavailable_within_the_budget_then_recovers(
    standin: ServiceBusStandIn,
) -> None:
    source = ServiceBusSource(env(standin), timeout_seconds=2.0)
    trigger = servicebus_trigger(queue_name="orders")
    assert source.read(trigger) == 7
    standin.stop()
    try:
        started = time.monotonic()
        with retry.budget(3.0), pytest.raises(SourceError) as caught:
            source.read(trigger)
        assert time.monotonic() - started < 4.0 * WAIT_SCALE  # bounded, never hung
        assert caught.value.kind == "Unavailable"
        assert f"Unavailable: cannot reach {standin.host}" in str(caught.value)
    finally:
        standin.start()
    assert source.read(trigger) == 7
    source.close()


# --- Azure AD ---------------------------------------------------------------------------------


class _FixedToken:
    def __init__(self, token: str) -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)


def test_a_namespace_reads_with_an_azure_ad_token(standin: ServiceBusStandIn) -> None:
    token = "aad-token-for-the-stand-in-0123456789"
    standin.allow_bearer(token)
    credential = _FixedToken(token)
    source = ServiceBusSource({}, 2.0, credential=credential, namespace_host=lambda s: standin.host)
    trigger = servicebus_trigger(queue_name="orders", namespace="shop-bus")
    assert source.read(trigger) == 7
    # The SDK's own scope constant (its double slash included, which Azure AD accepts).
    assert credential.scopes == [("https://servicebus.azure.net//.default",)]
    assert redact(f"Bearer {token}") == "Bearer ***"
    wrong = ServiceBusSource({}, 2.0, credential=_FixedToken("not-the-token-at-all-0123"),
                             namespace_host=lambda s: standin.host)  # fmt: skip
    with pytest.raises(SourceError) as caught:
        wrong.read(trigger)
    assert caught.value.kind == "Unauthorized"
    assert "(namespace shop-bus.servicebus.windows.net with Azure AD)" in str(caught.value)


# --- lazy SDK, convert, simulate, the example -------------------------------------------------


def test_the_sdk_is_imported_only_by_a_reader() -> None:
    trigger = "{type: azure-servicebus, queueName: orders}"
    assert sdk_loaded("azure.servicebus", trigger) == (False, False)


KEDA_SERVICEBUS = """
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata: {name: sb-auth, namespace: default}
spec:
  secretTargetRef:
  - {parameter: connection, name: sb-secret, key: servicebus-connectionstring}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: orders-processor, namespace: default}
spec:
  scaleTargetRef: {name: orders-processor}
  triggers:
  - type: azure-servicebus
    metadata:
      topicName: orders
      subscriptionName: processor
      messageCount: "20"
      activationMessageCount: "2"
      namespace: shop-bus
    authenticationRef: {name: sb-auth}
"""


def test_convert_maps_a_trigger_authentication_secret_to_connection_from_env() -> None:
    conversion = convert_text(KEDA_SERVICEBUS, "so.yaml")
    (rule,) = conversion.rules
    (trigger,) = rule["triggers"]
    env_name = trigger["connectionFromEnv"]
    assert trigger == {"type": "azure-servicebus", "topicName": "orders",
                       "subscriptionName": "processor", "messageCount": 20,
                       "activationMessageCount": 2, "connectionFromEnv": env_name}  # fmt: skip
    notes = "\n".join(str(n) for n in conversion.notes)
    assert f"{{name: {env_name}, valueFrom: {{secretKeyRef: {{name: sb-secret, key: " in notes
    assert "metadata.namespace" in notes  # a connection string is used: the namespace is dropped
    loaded = config.parse_rules_text(render_rules(conversion, "so.yaml"), "converted.yaml")
    assert loaded.problems == ()


def test_convert_keeps_workload_identity_and_reports_what_keda_ignores() -> None:
    text = KEDA_SERVICEBUS.replace(
        "  secretTargetRef:\n  - {parameter: connection, name: sb-secret, key: "
        "servicebus-connectionstring}\n",
        "  podIdentity: {provider: azure-workload}\n",
    ).replace("      namespace: shop-bus\n", "      namespace: shop-bus\n      operation: max\n")
    conversion = convert_text(text, "so.yaml")
    (trigger,) = conversion.rules[0]["triggers"]
    assert trigger["namespace"] == "shop-bus" and "connectionFromEnv" not in trigger
    assert "operation" not in trigger
    notes = "\n".join(str(n) for n in conversion.notes)
    assert "workload identity" in notes and "metadata.operation" in notes
    loaded = config.parse_rules_text(render_rules(conversion, "so.yaml"), "converted.yaml")
    assert loaded.problems == ()


def test_simulate_replays_a_servicebus_rule(tmp_path: Path) -> None:
    rule = {"name": "orders", "deployment": "orders",
            "triggers": [{"type": TYPE, "queueName": "orders", "messageCount": 10}]}  # fmt: skip
    rules = write_rules(tmp_path / "rules.yaml", [rule])
    result = run_command(["simulate", "--config", str(rules), "--scenario", "flood",
                          "--duration", "120"])  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "azure-servicebus queue 'orders'" in result.stdout
    assert "readings orders=" in result.stdout


def test_the_commented_example_in_config_example_loads() -> None:
    result = config.parse_rules_text(commented_example(TYPE), "config.example.yaml")
    assert result.problems == ()
    assert [t.type for t in result.rules[0].triggers] == [TYPE]


def test_the_simulated_value_is_the_backlog() -> None:
    settings = azure_servicebus.ServiceBusSettings(queue_name="q")
    assert azure_servicebus.SOURCE_TYPE.simulated_value(settings, 30, 4) == 30.0
