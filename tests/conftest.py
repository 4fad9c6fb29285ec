"""Shared fixtures: one Azurite and one cluster (test server or E2E_KUBECONFIG) per session."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.azurite import Azurite
from tests.support.cluster import Cluster, open_cluster

pytest_plugins = ["tests.support.servers.fixtures"]  # the real servers, one fixture each

_names = itertools.count(1)


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    with Azurite() as server:
        yield server


@pytest.fixture(scope="session")
def cluster_and_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Any]]:
    with open_cluster(tmp_path_factory.mktemp("cluster")) as pair:
        yield pair


@pytest.fixture
def cluster(cluster_and_server: tuple[Cluster, Any]) -> Cluster:
    return cluster_and_server[0]


@pytest.fixture
def unique() -> str:
    """A fresh lowercase name for a queue and a Deployment, so tests never share one."""
    return f"e2e-{next(_names):03d}-{uuid.uuid4().hex[:4]}"


def write_rules(path: Path, rules: list[dict[str, Any]], **defaults: Any) -> Path:
    document: dict[str, Any] = {"rules": rules}
    if defaults:
        document["defaults"] = defaults
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _fault_figures() -> list[str]:
    import sys

    return list(getattr(sys.modules.get("tests.test_faults"), "FIGURES", []))


_WORKER_FIGURES: list[str] = []  # on pytest-xdist's controller: the lines its workers sent


def pytest_sessionfinish(session: pytest.Session) -> None:
    """On a pytest-xdist worker, hand the fault figures to the controller, which prints them."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["fault_figures"] = _fault_figures()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    _WORKER_FIGURES.extend(getattr(node, "workeroutput", {}).get("fault_figures", []))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fault suite's figures (FIGURES of tests/test_faults.py), one line per fault."""
    figures = _fault_figures() + _WORKER_FIGURES
    if figures:
        terminalreporter.section("fault injection figures")
        for line in figures:
            terminalreporter.write_line(line)
