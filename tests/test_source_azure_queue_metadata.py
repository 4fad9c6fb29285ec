"""azure-queue metadata, table-driven in the shape every source follows (tests/support/
source_tables.py): valid rows with the settings they give, invalid rows with the exact error."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.source_tables import assert_invalid, assert_valid

TYPE = "azure-queue"

VALID: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"queueName": "orders"}, {"settings.queue_name": "orders", "target": 5.0, "activation": 0.0,
      "settings.connection_from_env": "AZURE_STORAGE_CONNECTION_STRING", "name": "orders"}),
    ({"queueName": "orders", "queueLength": 20, "activationQueueLength": 3, "name": "big"},
     {"target": 20.0, "activation": 3.0, "name": "big"}),
    ({"queueName": "orders", "queueLengthStrategy": "VisibleOnly"},
     {"settings.queue_length_strategy": "visibleOnly"}),
    ({"queueName": "orders", "connectionFromEnv": "SHOP_QUEUES"},
     {"settings.connection_from_env": "SHOP_QUEUES"}),
    ({"queueName": "orders", "accountName": "shopacct"},
     {"settings.account_name": "shopacct", "settings.connection_from_env": "",
      "settings.endpoint_suffix": "core.windows.net"}),
    ({"queueName": "orders", "accountName": "shopacct", "cloud": "Private",
      "endpointSuffix": "queue.local.azurestack.external"},
     {"settings.endpoint_suffix": "queue.local.azurestack.external"}),
    ({"queueName": "orders", "metricType": "Value"}, {"metric_type": "Value"}),
]  # fmt: skip

INVALID: list[tuple[dict[str, Any], str]] = [
    ({}, "triggers[0].queueName: is required"),
    ({"queueName": "Orders_1"}, "triggers[0].queueName: expected an Azure queue name"),
    ({"queueName": "orders", "queueLenght": 5},
     "triggers[0].queueLenght: unknown field (did you mean 'queueLength'?)"),
    ({"queueName": "orders", "queueLength": "ten"},
     "triggers[0].queueLength: expected a positive number, got 'ten'"),
    ({"queueName": "orders", "queueLength": 0}, "triggers[0].queueLength: expected a positive"),
    ({"queueName": "orders", "activationQueueLength": -1},
     "triggers[0].activationQueueLength: expected a number >= 0"),
    ({"queueName": "orders", "queueLengthStrategy": "peek"},
     "triggers[0].queueLengthStrategy: expected 'all' or 'visibleOnly', got 'peek'"),
    ({"queueName": "orders", "connectionFromEnv": "not a name"},
     "triggers[0].connectionFromEnv: expected the name of an environment variable"),
    ({"queueName": "orders", "cloud": "AzureChinaCloud"},
     "triggers[0].cloud: only applies together with accountName"),
    ({"queueName": "orders", "accountName": "shopacct", "connectionFromEnv": "X"},
     "triggers[0].accountName: give connectionFromEnv (a connection string) or accountName"),
    ({"queueName": "orders", "accountName": "shopacct", "cloud": "Private"},
     "triggers[0].endpointSuffix: is required with cloud 'Private'"),
    ({"queueName": "orders", "accountName": "shopacct", "endpointSuffix": "a.b"},
     "triggers[0].endpointSuffix: only applies with cloud 'Private'"),
    ({"queueName": "orders", "accountName": "Shop_Acct"},
     "triggers[0].accountName: expected a storage account name"),
]  # fmt: skip


@pytest.mark.parametrize(("metadata", "expected"), VALID)
def test_valid_metadata(metadata: dict[str, Any], expected: dict[str, Any]) -> None:
    assert_valid(TYPE, metadata, expected)


@pytest.mark.parametrize(("metadata", "fragment"), INVALID)
def test_invalid_metadata(metadata: dict[str, Any], fragment: str) -> None:
    assert_invalid(TYPE, metadata, fragment)
