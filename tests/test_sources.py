"""The source registry, the pool of readers, and the generic trigger fields.

- every registered type resolves to a SourceType whose `type` is its key, fields are unique;
- an unknown type is a load error with a "did you mean" and the list of known types;
- a source module (and so its SDK) is imported only when a rule uses its type: checked in a
  fresh interpreter, where loading a rule file without azure-queue rules imports no Azure module;
- the pool opens one reader per type on first use, reuses it, and closes every reader;
- metricType (AverageValue default, Value) and the target/activation keys of each source load.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import pytest

from eventscaler import sources
from eventscaler.config import parse_rules_text
from eventscaler.sources.base import SourceOptions
from eventscaler.sources.pool import SourcePool
from eventscaler.triggers import AVERAGE_VALUE, VALUE, Trigger
from tests.support.daemon_process import REPO_ROOT


@pytest.mark.parametrize("name", sources.known_types())
def test_every_registered_type_is_a_source_type_of_that_name(name: str) -> None:
    source = sources.source_type(name)
    assert source.type == name
    keys = [f.key for f in source.fields]
    assert len(keys) == len(set(keys))
    assert not {"type", "name", "metricType"} & set(keys)  # generic fields are the loader's
    assert source is sources.source_type(name)  # one instance per process


def load_one(trigger: dict[str, Any]) -> tuple[list[str], Any]:
    text = {"rules": [{"name": "r", "deployment": "d", "triggers": [trigger]}]}
    import yaml

    result = parse_rules_text(yaml.safe_dump(text), "rules.yaml")
    return [str(p) for p in result.problems], (result.rules[0] if result.rules else None)


def test_unknown_type_names_the_known_ones() -> None:
    problems, rule = load_one({"type": "azure-qeue", "queueName": "orders"})
    assert rule is None
    (line,) = problems
    assert "rules[0] (r).triggers[0].type: unknown trigger type 'azure-qeue'" in line
    assert "did you mean 'azure-queue'?" in line
    assert line.rpartition("; known: ")[2].split(", ") == sources.known_types()


@pytest.mark.parametrize(
    ("metric_type", "expected"),
    [(None, AVERAGE_VALUE), ("Value", VALUE), ("averagevalue", AVERAGE_VALUE)],
)
def test_metric_type_loads(metric_type: str | None, expected: str) -> None:
    trigger: dict[str, Any] = {"type": "azure-queue", "queueName": "orders", "queueLength": 20}
    if metric_type is not None:
        trigger["metricType"] = metric_type
    problems, rule = load_one(trigger)
    assert problems == []
    assert (rule.triggers[0].metric_type, rule.triggers[0].target) == (expected, 20)


def test_bad_metric_type_names_the_field() -> None:
    problems, _ = load_one({"type": "azure-queue", "queueName": "orders", "metricType": "Avg"})
    assert any(
        "triggers[0].metricType: expected 'AverageValue' or 'Value', got 'Avg'" in p
        for p in problems
    )


def test_a_source_module_is_imported_only_when_a_rule_uses_it() -> None:
    script = textwrap.dedent(
        """
        import sys
        from eventscaler.config import parse_rules_text
        parse_rules_text("rules: []", "empty.yaml")
        before = sorted(m for m in sys.modules if m.startswith(("azure", "eventscaler.sources.")))
        parse_rules_text(
            "rules: [{name: r, deployment: d, triggers: [{type: azure-queue, queueName: q-q}]}]",
            "one.yaml",
        )
        after = "azure.storage.queue" in sys.modules
        others = [m for m in ("boto3", "gjson", "croniter", "requests") if m in sys.modules]
        print(before, after, others)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    # The azure-queue rule loads the Azure SDK (which needs requests), not boto3, gjson or croniter.
    assert done.stdout.strip() == "[] True ['requests']"


class CountingReader:
    def __init__(self) -> None:
        self.reads = 0
        self.closed = False

    def read(self, trigger: Trigger) -> float:
        self.reads += 1
        return 7.0

    def close(self) -> None:
        self.closed = True


def test_the_pool_opens_one_reader_per_type_on_first_use_and_closes_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened: list[SourceOptions] = []
    reader = CountingReader()
    source = sources.source_type("azure-queue")

    def fake_open(options: SourceOptions) -> CountingReader:
        opened.append(options)
        return reader

    monkeypatch.setattr(source, "open", fake_open)
    options = SourceOptions(timeout_seconds=2.0, pool_size=3)
    pool = SourcePool(options)
    assert pool.opened_types() == []
    trigger = Trigger("azure-queue", "q", None)
    assert [pool.read_value(trigger) for _ in range(3)] == [7.0, 7.0, 7.0]
    assert opened == [options] and reader.reads == 3
    assert pool.opened_types() == ["azure-queue"]
    pool.close()
    assert reader.closed and pool.opened_types() == []


def test_value_metric_scales_the_current_count_as_the_hpa_does() -> None:
    from eventscaler.policy import Reading, decide, initial_state

    problems, rule = load_one(
        {"type": "azure-queue", "queueName": "orders", "queueLength": 100, "metricType": "Value"}
    )
    assert problems == []
    state = initial_state(0.0)
    # Value: ratio 150 / 100 = 1.5 -> ceil(1.5 x 10) = 15 (AverageValue would ask ceil(1.5) = 2).
    assert decide(rule, [Reading("orders", 150)], 10, state, 0.0).target == 15
    # Within tolerance (105 / 100 = 1.05): the current count.
    assert decide(rule, [Reading("orders", 105)], 10, state, 0.0).target == 10
    # From zero, one replica counts as current: ceil(3.0 x 1) = 3.
    assert decide(rule, [Reading("orders", 300)], 0, state, 0.0).target == 3


def test_the_commented_trigger_examples_of_config_example_load() -> None:
    """config.example.yaml's commented triggers of the other sources are valid as written."""
    import yaml

    lines = (REPO_ROOT / "config.example.yaml").read_text().splitlines()
    start = lines.index("# Other sources: one trigger each, to put under a rule's `triggers:` "
                        "(KEDA's field names).")  # fmt: skip
    block = "\n".join(line[1:] for line in lines[start + 1 :] if line.startswith("#"))
    triggers = yaml.safe_load(block)
    assert [t["type"] for t in triggers] == ["aws-sqs-queue", "metrics-api", "cron"]
    for trigger in triggers:
        assert load_one(trigger)[0] == [], trigger
