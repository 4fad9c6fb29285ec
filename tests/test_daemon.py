"""Rule reloads (eventscaler/daemon.py and config.rules_in_force), without a scheduler running.

The Daemon is built with a real Engine over fakes that must never be called during a reload.
Scenarios covered:
- RuleFileWatcher: the first poll loads; an unchanged file gives nothing; a content change is
  seen even with the old mtime and size; a ConfigMap-style volume (kubelet's `..data` symlink to
  a timestamped directory, swapped atomically) is followed; a deleted or unreadable file is
  reported once as a fatal problem, and the file coming back loads again; bytes that are not
  UTF-8 are a fatal problem
- rules_in_force: a fatal result keeps every previous rule; a rejected rule keeps its last good
  version; a rejected new rule and a rule no longer in the file do not run
- Daemon.apply: keeps the last good rules on a fatal result and logs so; keeps a rejected rule's
  last good version; a rejected entry with no readable name stops no rule in force; logs added /
  changed / removed rules; sets health; drops the engine state of gone rules only; tells the
  listener about failures, the rules in force and the series gone (a rule whose target changed
  included)
- Daemon.reload reports leadership each time and applies only a changed file; tick() runs only
  known rules, only when leader; run_once evaluates every rule
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from eventscaler.config import (
    ConfigProblem,
    LoadResult,
    Rule,
    parse_rules_text,
    rules_in_force,
)
from eventscaler.daemon import Daemon, RuleFileWatcher
from eventscaler.engine import Engine
from eventscaler.triggers import Trigger


def rule_entry(name: str, deployment: str | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": "shop",
        "deployment": deployment or name,
        "triggers": [{"type": "azure-queue", "queueName": f"{name}-queue"}],
        **fields,
    }


def rules_text(*entries: dict[str, Any]) -> str:
    return yaml.safe_dump({"rules": list(entries)}, sort_keys=False)


def load(*entries: dict[str, Any]) -> LoadResult:
    return parse_rules_text(rules_text(*entries), "rules.yaml")


def fatal() -> LoadResult:
    problem = ConfigProblem("rules.yaml", "", "", "not valid YAML at line 3, column 1: oops")
    return LoadResult("rules.yaml", problems=(problem,), fatal=True)


# -- RuleFileWatcher ------------------------------------------------------------------------------


def test_the_first_poll_loads_and_an_unchanged_file_gives_nothing(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(rules_text(rule_entry("orders")))
    watcher = RuleFileWatcher(path, None)
    result = watcher.poll()
    assert result is not None
    assert [r.name for r in result.rules] == ["orders"]
    assert result.source == str(path)
    assert watcher.poll() is None
    assert watcher.poll() is None


def test_a_content_change_is_seen_with_the_same_mtime_and_size(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(rules_text(rule_entry("orders", maxReplicas=10)))
    stat = path.stat()
    watcher = RuleFileWatcher(path, None)
    watcher.poll()
    path.write_text(rules_text(rule_entry("orders", maxReplicas=20)))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    result = watcher.poll()
    assert result is not None
    assert result.rules[0].max_replicas == 20


def test_the_allowed_namespaces_are_applied(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(rules_text(rule_entry("orders")))
    result = RuleFileWatcher(path, {"other"}).poll()
    assert result is not None
    assert result.rules == ()
    assert "allow-list" in str(result.problems[0])


def configmap_volume(root: Path, text: str, version: str) -> None:
    """Write or update a ConfigMap volume the way the kubelet does: a new timestamped directory,
    a `..data_tmp` symlink to it renamed over `..data`, and the old directory removed."""
    root.mkdir(exist_ok=True)
    new_dir = root / f"..{version}"
    new_dir.mkdir()
    (new_dir / "rules.yaml").write_text(text)
    data = root / "..data"
    old_dir = Path(os.readlink(data)) if data.is_symlink() else None
    tmp_link = root / "..data_tmp"
    tmp_link.symlink_to(new_dir.name)
    os.replace(tmp_link, data)
    user_file = root / "rules.yaml"
    if not user_file.is_symlink():
        user_file.symlink_to("..data/rules.yaml")
    if old_dir is not None:
        (root / old_dir / "rules.yaml").unlink()
        (root / old_dir).rmdir()


def test_a_configmap_symlink_swap_is_followed(tmp_path: Path) -> None:
    volume = tmp_path / "config"
    configmap_volume(volume, rules_text(rule_entry("orders")), "2024_01_01_00_00_00.1")
    watcher = RuleFileWatcher(volume / "rules.yaml", None)
    first = watcher.poll()
    assert first is not None
    assert [r.name for r in first.rules] == ["orders"]
    link_stat = os.lstat(volume / "rules.yaml")
    configmap_volume(
        volume, rules_text(rule_entry("orders"), rule_entry("returns")), "2024_01_01_00_01_00.2"
    )
    assert os.lstat(volume / "rules.yaml").st_mtime_ns == link_stat.st_mtime_ns  # same link
    second = watcher.poll()
    assert second is not None
    assert [r.name for r in second.rules] == ["orders", "returns"]
    assert watcher.poll() is None
    # The kubelet also swaps when only another key of the ConfigMap changed: same content.
    configmap_volume(
        volume, rules_text(rule_entry("orders"), rule_entry("returns")), "2024_01_01_00_02_00.3"
    )
    assert watcher.poll() is None


def test_a_deleted_file_is_reported_once_and_loads_again_when_back(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    text = rules_text(rule_entry("orders"))
    path.write_text(text)
    watcher = RuleFileWatcher(path, None)
    watcher.poll()
    path.unlink()
    gone = watcher.poll()
    assert gone is not None
    assert gone.fatal is True
    assert str(gone.problems[0]) == f"{path}: cannot read the rule file: No such file or directory"
    assert watcher.poll() is None
    assert watcher.poll() is None
    path.write_text(text)  # the same content as before it went away
    back = watcher.poll()
    assert back is not None
    assert (back.fatal, [r.name for r in back.rules]) == (False, ["orders"])


def test_an_unreadable_path_is_reported_once(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.mkdir()  # reading a directory fails, even as root (chmod 000 would not)
    watcher = RuleFileWatcher(path, None)
    result = watcher.poll()
    assert result is not None
    assert result.fatal is True
    assert "cannot read the rule file: Is a directory" in str(result.problems[0])
    assert watcher.poll() is None


def test_bytes_that_are_not_utf8_are_a_fatal_problem(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_bytes(b"rules:\n  - name: \xff\xfe\n")
    watcher = RuleFileWatcher(path, None)
    result = watcher.poll()
    assert result is not None
    assert result.fatal is True
    assert "not UTF-8" in str(result.problems[0])
    assert watcher.poll() is None


# -- rules_in_force -------------------------------------------------------------------------------


def test_a_fatal_result_keeps_every_previous_rule() -> None:
    previous = {r.name: r for r in load(rule_entry("a"), rule_entry("b")).rules}
    kept = rules_in_force(previous, fatal())
    assert kept == previous
    assert kept is not previous


def test_a_rejected_rule_keeps_its_last_good_version() -> None:
    previous = {r.name: r for r in load(rule_entry("a", maxReplicas=5), rule_entry("b")).rules}
    result = load(
        rule_entry("a", maxReplicas="lots"),  # now rejected: the old "a" stays
        rule_entry("new-bad", minReplicas=-1),  # rejected and never good: not run
        rule_entry("c"),
    )  # "b" is no longer in the file: it stops
    assert result.rejected_rule_names() == {"a", "new-bad"}
    in_force = rules_in_force(previous, result)
    assert sorted(in_force) == ["a", "c"]
    assert in_force["a"] is previous["a"]
    assert in_force["a"].max_replicas == 5


def test_a_valid_new_version_replaces_the_old_one() -> None:
    previous = {r.name: r for r in load(rule_entry("a", maxReplicas=5)).rules}
    in_force = rules_in_force(previous, load(rule_entry("a", maxReplicas=8)))
    assert in_force["a"].max_replicas == 8


# -- Daemon ---------------------------------------------------------------------------------------


class NoCalls:
    """A source and scaler that fail the test if a reload ever touches them."""

    def read_value(self, trigger: Trigger) -> float:
        raise AssertionError("a reload must not read a source")

    def read(self, namespace: str, name: str) -> Any:
        raise AssertionError("a reload must not read a Deployment")

    def set_replicas(self, namespace: str, name: str, replicas: int) -> None:
        raise AssertionError("a reload must not scale")


class RecordingEngine(Engine):
    def __init__(self) -> None:
        super().__init__(NoCalls(), NoCalls())
        self.kept: list[list[str]] = []
        self.evaluated: list[str] = []

    def forget_rules_except(self, rules: Iterable[Rule]) -> None:
        rules = list(rules)
        self.kept.append(sorted(r.name for r in rules))
        super().forget_rules_except(rules)

    def evaluate(self, rule: Rule) -> Any:
        self.evaluated.append(rule.name)
        return rule.name


@dataclass
class Listener:
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def rules_changed(self, names: set[str], gone: set[tuple[str, str, str]]) -> None:
        self.calls.append(("rules_changed", names, gone))

    def reload_failed(self) -> None:
        self.calls.append(("reload_failed",))

    def leadership(self, is_leader: bool) -> None:
        self.calls.append(("leadership", is_leader))


@dataclass
class Leader:
    leading: bool = True

    def __call__(self) -> bool:
        return self.leading


def make_daemon(
    tmp_path: Path, listener: Listener | None = None, leader: Leader | None = None
) -> tuple[Daemon, RecordingEngine, Path]:
    path = tmp_path / "rules.yaml"
    engine = RecordingEngine()
    daemon = Daemon(
        engine,
        RuleFileWatcher(path, None),
        workers=2,
        is_leader=leader or Leader(),
        listeners=[listener] if listener else (),
    )
    return daemon, engine, path


def test_apply_keeps_the_last_good_rules_on_a_fatal_result(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    listener = Listener()
    daemon, engine, _ = make_daemon(tmp_path, listener)
    daemon.apply(load(rule_entry("a"), rule_entry("b")))
    good = dict(daemon.rules)
    listener.calls.clear()
    with caplog.at_level(logging.INFO, logger="eventscaler.daemon"):
        daemon.apply(fatal())
    assert daemon.rules == good
    assert engine.kept[-1] == ["a", "b"]
    assert daemon.health.rules_loaded is True
    assert daemon.health.last_load_error == ("rules.yaml: not valid YAML at line 3, column 1: oops")
    assert listener.calls == [("reload_failed",), ("rules_changed", {"a", "b"}, set())]
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "rule file problem: rules.yaml: not valid YAML at line 3, column 1: oops",
        "rule file rules.yaml rejected: keeping the 2 rule(s) in force",
    ]
    assert all(r.levelno == logging.ERROR for r in caplog.records)


def test_a_fatal_first_load_leaves_no_rules_and_not_ready(tmp_path: Path) -> None:
    daemon, _, _ = make_daemon(tmp_path)
    daemon.apply(fatal())
    assert daemon.rules == {}
    assert daemon.health.rules_loaded is False


def test_apply_keeps_a_rejected_rules_last_good_version(tmp_path: Path) -> None:
    listener = Listener()
    daemon, engine, _ = make_daemon(tmp_path, listener)
    daemon.apply(load(rule_entry("a", maxReplicas=5), rule_entry("b")))
    listener.calls.clear()
    daemon.apply(load(rule_entry("a", maxReplicas=0), rule_entry("b")))
    assert daemon.rules["a"].max_replicas == 5
    assert sorted(daemon.rules) == ["a", "b"]
    assert engine.kept[-1] == ["a", "b"]
    assert daemon.health.rules_loaded is True
    assert daemon.health.last_load_error is not None
    assert "rules[0] (a).maxReplicas: expected a whole number" in daemon.health.last_load_error
    assert listener.calls == [("reload_failed",), ("rules_changed", {"a", "b"}, set())]


def test_apply_logs_added_changed_and_removed_rules(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    daemon, _, _ = make_daemon(tmp_path)
    daemon.apply(load(rule_entry("a"), rule_entry("b")))
    with caplog.at_level(logging.INFO, logger="eventscaler.daemon"):
        daemon.apply(load(rule_entry("a", maxReplicas=7), rule_entry("c")))
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("rule changed: a: shop/a replicas 0..7,")
    assert messages[1].startswith("rule added: c: shop/c replicas 0..100,")
    assert messages[2:] == [
        "rule removed: b",
        "rule file rules.yaml loaded: 2 rule(s) in force, 0 problem(s)",
    ]


def test_apply_drops_gone_rules_from_the_engine_and_the_metrics(tmp_path: Path) -> None:
    listener = Listener()
    daemon, engine, _ = make_daemon(tmp_path, listener)
    daemon.apply(load(rule_entry("a"), rule_entry("b"), rule_entry("moved", deployment="old")))
    listener.calls.clear()
    daemon.apply(load(rule_entry("a"), rule_entry("moved", deployment="new")))
    assert engine.kept[-1] == ["a", "moved"]
    assert listener.calls == [
        ("rules_changed", {"a", "moved"},
         {("b", "shop", "Deployment", "b"), ("moved", "shop", "Deployment", "old")}),
    ]  # fmt: skip
    assert daemon.health.rules_loaded is True
    assert daemon.health.last_load_error is None


def test_a_rule_retargeted_to_another_kind_is_gone_for_its_old_target(tmp_path: Path) -> None:
    listener = Listener()
    daemon, _, _ = make_daemon(tmp_path, listener)
    daemon.apply(load(rule_entry("db")))
    listener.calls.clear()
    moved = rule_entry("db")
    moved["scaleTargetRef"] = {"kind": "StatefulSet", "name": moved.pop("deployment")}
    daemon.apply(load(moved))
    assert listener.calls == [("rules_changed", {"db"}, {("db", "shop", "Deployment", "db")})]
    assert daemon.rules["db"].target == "shop/StatefulSet/db"


def test_a_file_whose_every_rule_is_rejected_is_not_ready(tmp_path: Path) -> None:
    daemon, _, _ = make_daemon(tmp_path)
    daemon.apply(load(rule_entry("a", minReplicas=-1)))
    assert daemon.rules == {}
    assert daemon.health.rules_loaded is False
    daemon.apply(load())  # an empty list is a valid (if idle) file
    assert daemon.health.rules_loaded is True


def test_reload_applies_a_changed_file_only_and_reports_leadership(tmp_path: Path) -> None:
    listener, leader = Listener(), Leader(False)
    daemon, engine, path = make_daemon(tmp_path, listener, leader)
    path.write_text(rules_text(rule_entry("a")))
    assert daemon.reload() is True
    assert daemon.reload() is False
    leader.leading = True
    path.write_text(rules_text(rule_entry("a"), rule_entry("b")))
    assert daemon.reload() is True
    assert [c for c in listener.calls if c[0] == "leadership"] == [
        ("leadership", False),
        ("leadership", False),
        ("leadership", True),
    ]
    assert sorted(daemon.rules) == ["a", "b"]
    assert engine.kept == [["a"], ["a", "b"]]


def test_tick_runs_known_rules_only_and_only_when_leader(tmp_path: Path) -> None:
    leader = Leader(False)
    daemon, engine, _ = make_daemon(tmp_path, leader=leader)
    daemon.apply(load(rule_entry("a")))
    before = daemon.health.last_heartbeat
    assert daemon.tick("a") is None
    assert daemon.health.last_heartbeat >= before  # a follower is alive too
    leader.leading = True
    assert daemon.tick("gone") is None
    assert engine.evaluated == []
    assert daemon.tick("a") == "a"
    assert engine.evaluated == ["a"]


def test_run_once_loads_and_evaluates_every_rule(tmp_path: Path) -> None:
    daemon, engine, path = make_daemon(tmp_path)
    path.write_text(rules_text(rule_entry("a"), rule_entry("b"), rule_entry("c")))
    assert sorted(daemon.run_once()) == ["a", "b", "c"]  # type: ignore[type-var]
    assert sorted(engine.evaluated) == ["a", "b", "c"]


def test_apply_without_a_listener(tmp_path: Path) -> None:
    daemon, _, _ = make_daemon(tmp_path)
    daemon.apply(load(rule_entry("a")))
    daemon.apply(fatal())
    assert list(daemon.rules) == ["a"]


def test_a_rejected_rule_with_no_readable_name_keeps_the_rules_in_force(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    daemon, _, _ = make_daemon(tmp_path)
    daemon.apply(load(rule_entry("a"), rule_entry("b")))
    good = dict(daemon.rules)
    nameless = rule_entry("a")
    nameless["nmae"] = nameless.pop("name")  # a typo: the entry may be any rule in force
    with caplog.at_level(logging.ERROR, logger="eventscaler.daemon"):
        daemon.apply(load(nameless, rule_entry("b", maxReplicas=7)))
    assert daemon.rules["a"] is good["a"]  # not stopped by a bad edit
    assert daemon.rules["b"].max_replicas == 7  # the valid rules of the file apply
    assert "rules[0] rejected without a readable name: keeping a" in caplog.text
    daemon.apply(load(rule_entry("b")))  # once the file is valid, a rule it omits stops
    assert list(daemon.rules) == ["b"]
