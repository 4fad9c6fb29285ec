"""eventscaler.sources.azure_common, through both Azure sources against real servers: Azurite over
HTTPS with `--oauth basic` for azure-queue, the Service Bus stand-in for azure-servicebus (their two
CAs in one REQUESTS_CA_BUNDLE, as an operator of a private cloud would set it).

- one DefaultAzureCredential for the process: a queue reader and a Service Bus reader, read
  from 8 threads at once, build it once, and each gets its own service's token through it;
- a source whose credential fails is CredentialUnavailable in its own words (the credential's
  failure is not the service's answer), for both sources;
- loading an azure-servicebus rule alone imports no Azure module at all (azure_common imports
  azure.core and azure.identity lazily);
- the secrets of either service's connection string are registered for redaction: a storage
  account key and SAS signature, a Service Bus policy key and a SAS token's signature.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from eventscaler.redact import redact
from eventscaler.sources import azure_common
from eventscaler.sources.azure_queue import AzureQueueSettings, AzureQueueSource
from eventscaler.sources.azure_servicebus import ServiceBusSource, servicebus_trigger
from eventscaler.sources.base import SourceError
from tests.support.azurite import ACCOUNT_NAME, Azurite, oauth_token
from tests.support.daemon_process import REPO_ROOT
from tests.support.servicebus_server import ServiceBusStandIn

STORAGE_SCOPE = "https://storage.azure.com/.default"
SERVICEBUS_TOKEN = "aad-token-for-the-servicebus-stand-in-0123456789"


@pytest.fixture(scope="module")
def oauth_azurite() -> Iterator[Azurite]:
    with Azurite(oauth=True) as server:
        yield server


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceBusStandIn]:
    with ServiceBusStandIn(tmp_path_factory.mktemp("servicebus")) as server:
        server.set_queue("orders", active=7)
        server.allow_bearer(SERVICEBUS_TOKEN)
        yield server


@pytest.fixture(autouse=True)
def both_trusted(
    oauth_azurite: Azurite,
    standin: ServiceBusStandIn,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both CAs trusted through one bundle; no process credential before or after a test."""
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(oauth_azurite.ca_cert_path.read_bytes() + standin.ca_path.read_bytes())
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    monkeypatch.setattr(azure_common, "_process_credential", None)


class TwoServiceCredential:
    """A TokenCredential for both services: a Storage-shaped JWT for the storage scope (Azurite
    checks its shape), the stand-in's allowed token for any other scope."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []
        self._lock = threading.Lock()

    def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        with self._lock:
            self.scopes.append(scopes)
        token = oauth_token() if scopes == (STORAGE_SCOPE,) else SERVICEBUS_TOKEN
        return AccessToken(token, int(time.time()) + 3600)


def identity_queue(queue: str) -> AzureQueueSettings:
    return AzureQueueSettings(
        queue_name=queue, connection_from_env="", account_name=ACCOUNT_NAME,
        endpoint_suffix="core.windows.net",
    )  # fmt: skip


def readers(
    azurite: Azurite, standin: ServiceBusStandIn
) -> tuple[AzureQueueSource, ServiceBusSource]:
    """Both sources with no credential given: each must take the process's one."""
    queue = AzureQueueSource(
        environ={}, account_url=lambda t: f"https://127.0.0.1:{azurite.port}/{t.account_name}"
    )
    bus = ServiceBusSource({}, 2.0, namespace_host=lambda s: standin.host)
    return queue, bus


def test_both_sources_share_one_default_azure_credential_built_once(
    oauth_azurite: Azurite, standin: ServiceBusStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[TwoServiceCredential] = []

    def default_azure_credential() -> TwoServiceCredential:
        time.sleep(0.05)  # widen the window in which racing threads could each build one
        built.append(TwoServiceCredential())
        return built[-1]

    monkeypatch.setattr("azure.identity.DefaultAzureCredential", default_azure_credential)
    name = f"shared-{time.monotonic_ns()}"
    oauth_azurite.create_queue(name)
    oauth_azurite.send_messages(name, 3)
    queue_reader, bus_reader = readers(oauth_azurite, standin)
    bus_trigger = servicebus_trigger(queue_name="orders", namespace="shop-bus")
    start = threading.Barrier(8)

    def read(i: int) -> float:
        start.wait()
        if i % 2:
            return bus_reader.read(bus_trigger)
        return float(queue_reader.read_length(identity_queue(name)))

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            assert list(pool.map(read, range(8))) == [3.0, 7.0] * 4
    finally:
        queue_reader.close()
        bus_reader.close()
    assert len(built) == 1
    assert azure_common._process_credential is built[0]
    # Each service asked the one credential for its own scope (and cached its token).
    assert {scopes[0] for scopes in built[0].scopes} == {
        STORAGE_SCOPE,
        "https://servicebus.azure.net//.default",
    }
    assert redact(f"Bearer {SERVICEBUS_TOKEN}") == "Bearer ***"


class NoIdentity:
    """A credential with nothing set up, as a workload identity without its token file."""

    def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        raise ClientAuthenticationError("NoIdentity: no federated token file\nsee the docs")


def test_a_failing_credential_is_credential_unavailable_for_both_sources(
    oauth_azurite: Azurite, standin: ServiceBusStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("azure.identity.DefaultAzureCredential", NoIdentity)
    queue_reader, bus_reader = readers(oauth_azurite, standin)
    try:
        with pytest.raises(SourceError) as queue_error:
            queue_reader.read_length(identity_queue("orders"))
        with pytest.raises(SourceError) as bus_error:
            bus_reader.read(servicebus_trigger(queue_name="orders", namespace="shop-bus"))
    finally:
        queue_reader.close()
        bus_reader.close()
    for caught in (queue_error, bus_error):
        assert (caught.value.kind, caught.value.code) == ("MissingCredential",
                                                          "CredentialUnavailable")  # fmt: skip
        assert "\n" not in str(caught.value)
    assert str(queue_error.value).endswith(
        f"DefaultAzureCredential gave no Azure AD token for https://127.0.0.1:"
        f"{oauth_azurite.port}/{ACCOUNT_NAME}: NoIdentity: no federated token file"
    )
    assert str(bus_error.value).endswith(
        "(namespace shop-bus.servicebus.windows.net with Azure AD): CredentialUnavailable: "
        "no Azure AD token: NoIdentity: no federated token file"
    )


def test_a_servicebus_rule_alone_imports_no_azure_module() -> None:
    script = textwrap.dedent(
        """
        import sys
        from eventscaler.config import parse_rules_text
        rule = "{type: azure-servicebus, namespace: shop-bus, queueName: orders}"
        result = parse_rules_text(
            "rules: [{name: r, deployment: d, triggers: [%s]}]" % rule, "bus.yaml"
        )
        assert not result.problems, result.problems
        print(sorted(m for m in sys.modules if m == "azure" or m.startswith("azure.")))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("connection", "secrets"),
    [
        ("DefaultEndpointsProtocol=https;AccountName=acct;"
         "AccountKey=c3RvcmFnZS1hY2NvdW50LWtleS0wMTIzNDU2Nzg5;EndpointSuffix=core.windows.net",
         ["c3RvcmFnZS1hY2NvdW50LWtleS0wMTIzNDU2Nzg5"]),
        ("QueueEndpoint=https://acct.queue.core.windows.net;"
         "SharedAccessSignature=sv=2024-01-01&sp=r&sig=c2lnbmF0dXJlK3dpdGgvc2xhc2g%3D",
         ["c2lnbmF0dXJlK3dpdGgvc2xhc2g=", quote("c2lnbmF0dXJlK3dpdGgvc2xhc2g=", safe="")]),
        ("Endpoint=sb://shop-bus.servicebus.windows.net/;SharedAccessKeyName=manage;"
         "SharedAccessKey=c2VydmljZWJ1cy1wb2xpY3kta2V5LTAxMjM=",
         ["c2VydmljZWJ1cy1wb2xpY3kta2V5LTAxMjM="]),
        ("Endpoint=sb://shop-bus.servicebus.windows.net/;SharedAccessSignature="
         "SharedAccessSignature sr=shop-bus&sig=c2FzLXRva2VuLXNpZ25hdHVyZQ%3D%3D&se=1&skn=m",
         ["c2FzLXRva2VuLXNpZ25hdHVyZQ==", "c2FzLXRva2VuLXNpZ25hdHVyZQ%3D%3D"]),
    ],
)  # fmt: skip
def test_the_secrets_of_either_connection_string_are_redacted(
    connection: str, secrets: list[str]
) -> None:
    parts = azure_common.register_connection_secrets(connection)
    assert redact(connection) == "***"
    for secret in secrets:
        assert redact(f"signed with {secret} today") == "signed with *** today"
    # What is not a secret stays readable (the host names the error messages show).
    shown = [v for k, v in parts.items() if k.endswith("endpoint") or k == "endpointsuffix"]
    assert shown and all(redact(f"at {value}") == f"at {value}" for value in shown)
