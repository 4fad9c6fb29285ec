"""What each rule is doing (eventscaler/status.py): rows, the board, the table and the reasons.

Scenarios covered:
- outcome_row: the fields /status serves; after a write `current` is the new count; a failed
  reading shows as None; a tick without a decision (Deployment unreadable) has None fields
- StatusBoard: one row per rule, sorted by name; the last scale is remembered across later ticks
  that do not write, and not set by a dry-run or a failed write; keep_only drops gone rules with
  their last scale; snapshots are copies; to_json is the JSON served on /status
- render_table: the header, "-" for unknowns, "?" for a failed queue, yes/no for active, the
  cooldown in whole seconds, the last scale as "from->to <age> ago" in s, m or h, long errors
  cut to 60 characters, aligned columns without trailing spaces; works on rows read back from JSON
- render_reasons: the reason, else the error, else "-"
- the kind: every row names its target (apiVersion, kind, name, namespace) and the table shows a
  KIND column; a row from a daemon that predates scaleTargetRef shows "-" and its `target`
"""

from __future__ import annotations

import json

from eventscaler.config import Rule, ScaleTargetRef
from eventscaler.engine import FAILED_SOURCE_READ, FAILED_TARGET_READ, FAILED_WRITE, Outcome
from eventscaler.policy import (
    STEP_AT_TARGET,
    STEP_COOLDOWN,
    STEP_UP,
    Decision,
    Reading,
    initial_state,
)
from eventscaler.sources.azure_queue import azure_queue_trigger
from eventscaler.status import COLUMNS, StatusBoard, outcome_row, render_reasons, render_table

NOW = 1_700_000_000.0


def make_rule(name: str = "orders") -> Rule:
    return Rule(name, "shop", ScaleTargetRef(f"{name}-worker"), (azure_queue_trigger("orders"),))


def decision(current: int, target: int, step: str = STEP_UP, reason: str = "why") -> Decision:
    return Decision(current, target, True, reason, initial_state(0.0), step)


def test_outcome_row_has_what_status_serves() -> None:
    rule = make_rule()
    outcome = Outcome(
        rule,
        readings=(Reading("orders", 40), Reading("returns", None, "boom")),
        current=2,
        decision=decision(2, 8, reason="backlog needs 8"),
        wrote=True,
        finished_at=NOW,
        cooldown_left=None,
    )
    assert outcome_row(outcome) == {
        "rule": "orders",
        "target": "shop/orders-worker",
        "target_ref": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "orders-worker",
            "namespace": "shop",
        },  # fmt: skip
        "current": 8,  # the Deployment has the new count after a successful write
        "desired": 8,
        "triggers": {"orders": 40, "returns": None},
        "active": True,
        "cooldown_left": None,
        "step": STEP_UP,
        "reason": "backlog needs 8",
        "error": None,
        "dry_run": False,
        "updated_at": NOW,
        "last_scale": None,
    }


def test_outcome_row_before_and_without_a_write() -> None:
    rule = make_rule()
    failed_write = Outcome(rule, current=2, decision=decision(2, 8), error="cannot scale",
                           error_kind=FAILED_WRITE)  # fmt: skip
    assert outcome_row(failed_write)["current"] == 2
    dry = Outcome(rule, current=2, decision=decision(2, 8), dry_run=True)
    assert (outcome_row(dry)["current"], outcome_row(dry)["dry_run"]) == (2, True)
    unread = outcome_row(Outcome(rule, error="cannot read", error_kind=FAILED_TARGET_READ))
    for key in ("current", "desired", "active", "step", "reason"):
        assert unread[key] is None, key
    assert unread["error"] == "cannot read"


def test_the_board_remembers_the_last_scale_across_later_ticks() -> None:
    board = StatusBoard()
    rule = make_rule()
    board.observe(Outcome(rule, current=1, decision=decision(1, 5, reason="up"), wrote=True,
                          finished_at=NOW))  # fmt: skip
    board.observe(Outcome(rule, current=5, decision=decision(5, 5, STEP_AT_TARGET),
                          finished_at=NOW + 30))  # fmt: skip
    board.observe(Outcome(rule, current=5, decision=decision(5, 9), dry_run=True,
                          finished_at=NOW + 60))  # fmt: skip
    board.observe(Outcome(rule, current=5, decision=decision(5, 2), error="cannot scale",
                          error_kind=FAILED_WRITE, finished_at=NOW + 90))  # fmt: skip
    [row] = board.snapshot()
    assert row["updated_at"] == NOW + 90
    assert row["last_scale"] == {"at": NOW, "from": 1, "to": 5, "reason": "up"}


def test_the_board_sorts_by_rule_and_keep_only_forgets_gone_rules() -> None:
    board = StatusBoard()
    for name in ("zeta", "alpha", "mid"):
        board.observe(Outcome(make_rule(name), current=1, decision=decision(1, 2), wrote=True))
    assert [row["rule"] for row in board.snapshot()] == ["alpha", "mid", "zeta"]
    board.keep_only(["mid"])
    assert [row["rule"] for row in board.snapshot()] == ["mid"]
    # A gone rule that comes back starts without the old last scale.
    board.observe(Outcome(make_rule("zeta"), current=2, decision=decision(2, 2, STEP_AT_TARGET)))
    assert board.snapshot()[1]["last_scale"] is None


def test_a_reload_removes_gone_and_retargeted_rules_from_the_board() -> None:
    board = StatusBoard()
    for name in ("kept", "removed", "retargeted"):
        board.observe(Outcome(make_rule(name), current=1, decision=decision(1, 1, STEP_AT_TARGET)))
    # As the daemon calls it: the rules in force, and what is no longer scaled as it was.
    gone = {("removed", "default", "Deployment", "removed"),
            ("retargeted", "default", "Deployment", "old")}  # fmt: skip
    board.rules_changed({"kept", "retargeted"}, gone)
    assert [row["rule"] for row in board.snapshot()] == ["kept"]


def test_snapshots_are_copies_and_json_is_what_status_serves() -> None:
    board = StatusBoard()
    board.observe(Outcome(make_rule(), current=1, decision=decision(1, 1, STEP_AT_TARGET)))
    board.snapshot()[0]["rule"] = "changed"
    assert board.snapshot()[0]["rule"] == "orders"
    served = json.loads(board.to_json())
    assert served == {"rules": board.snapshot()}


def row(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "rule": "orders",
        "target": "shop/orders-worker",
        "target_ref": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "orders-worker",
            "namespace": "shop",
        },  # fmt: skip
        "current": 1,
        "desired": 1,
        "triggers": {"orders": 3},
        "active": True,
        "cooldown_left": None,
        "step": STEP_AT_TARGET,
        "reason": "at target; readings orders=3/5",
        "error": None,
        "last_scale": None,
    }
    base.update(changes)
    return base


def cells(table: str) -> list[list[str]]:
    """Split a rendered table on the three-space column gaps."""
    return [[c.strip() for c in line.split("   ") if c.strip()] for line in table.splitlines()]


def test_render_table_header_and_a_plain_row() -> None:
    table = render_table([row()], now=NOW)
    assert cells(table) == [
        list(COLUMNS),
        ["orders", "Deployment", "shop/orders-worker", "1", "1", "orders=3", "yes", "-", "-",
         STEP_AT_TARGET, "-"],
    ]  # fmt: skip


def test_render_table_unknowns_failed_queues_cooldown_and_last_scale() -> None:
    rows = [
        row(rule="a", current=None, desired=None, triggers={}, active=None, step=None),
        row(rule="b", triggers={"q1": None, "q2": 0}, active=False, cooldown_left=42.4,
            step=STEP_COOLDOWN, last_scale={"at": NOW - 30, "from": 0, "to": 5}),
        row(rule="c", last_scale={"at": NOW - 600, "from": 5, "to": 2}),
        row(rule="d", last_scale={"at": NOW - 3 * 3600 - 5, "from": 2, "to": 0}),
        row(rule="e", last_scale={"at": NOW + 5, "from": 2, "to": 3}),  # a clock a bit ahead
    ]  # fmt: skip
    table = cells(render_table(rows, now=NOW))
    assert table[1] == ["a", "Deployment", "shop/orders-worker"] + ["-"] * 8
    assert table[2][5:9] == ["q1=?,q2=0", "no", "42s", "0->5 30s ago"]
    assert table[3][8] == "5->2 10m ago"
    assert table[4][8] == "2->0 3h ago"
    assert table[5][8] == "2->3 0s ago"


def test_render_table_cuts_long_errors_and_aligns_columns() -> None:
    long_error = "source read failed: " + "x" * 100
    rows = [row(rule="a-much-longer-rule-name", error=long_error), row(rule="b")]
    table = render_table(rows, now=NOW)
    lines = table.splitlines()
    assert all(line == line.rstrip() for line in lines)
    error_cell = cells(table)[1][-1]
    assert len(error_cell) == 60
    assert error_cell.endswith("...")
    assert error_cell.startswith("source read failed: xxx")
    # Every column starts at the same offset on every line.
    target_at = lines[0].index("TARGET")
    assert all(line[target_at:].startswith("shop/") for line in lines[1:])
    assert lines[1].index("shop/") == lines[2].index("shop/")


def test_render_table_of_rows_read_back_from_json() -> None:
    board = StatusBoard()
    board.observe(Outcome(make_rule(), readings=(Reading("orders", 12),), current=1,
                          decision=decision(1, 3), wrote=True, finished_at=NOW - 90))  # fmt: skip
    rows = json.loads(board.to_json())["rules"]
    assert cells(render_table(rows, now=NOW))[1][1:9] == [
        "Deployment", "shop/orders-worker",
        "3", "3", "orders=12", "yes", "-", "1->3 90s ago"
    ]  # fmt: skip


def test_render_table_with_no_rows_is_the_header() -> None:
    assert cells(render_table([], now=NOW)) == [list(COLUMNS)]


def test_render_reasons_prefers_the_reason_then_the_error() -> None:
    rows = [
        row(rule="a", reason="backlog needs 3; readings orders=12/5"),
        row(rule="b", reason=None, error="cannot read the target Deployment: NotFound"),
        row(rule="c", reason=None, error=None),
    ]
    assert render_reasons(rows).splitlines() == [
        "a: backlog needs 3; readings orders=12/5",
        "b: cannot read the target Deployment: NotFound",
        "c: -",
    ]


def test_a_queue_failure_row_keeps_the_decision_and_the_error() -> None:
    outcome = Outcome(
        make_rule(),
        readings=(Reading("orders", None, "timeout"),),
        current=2,
        decision=decision(2, 2, "failed-readings", "all readings failed: holding"),
        error="source read failed: orders: timeout",
        error_kind=FAILED_SOURCE_READ,
    )
    made = outcome_row(outcome)
    assert (made["step"], made["error"], made["triggers"]) == (
        "failed-readings", "source read failed: orders: timeout", {"orders": None}
    )  # fmt: skip
    assert render_reasons([made]) == "orders: all readings failed: holding"


def test_last_scale_ages_switch_units_at_two_minutes_and_two_hours() -> None:
    ages = {119: "119s", 120: "2m", 5400: "90m", 7199: "119m", 7200: "2h"}
    rows = [row(rule=str(age), last_scale={"at": NOW - age, "from": 1, "to": 2}) for age in ages]
    table = cells(render_table(rows, now=NOW))
    assert [line[8] for line in table[1:]] == [f"1->2 {shown} ago" for shown in ages.values()]


def test_the_kind_of_any_target_is_shown() -> None:
    rule = Rule("db", "shop", ScaleTargetRef("db", "Worker", "example.com/v1"),
                (azure_queue_trigger("orders"),))  # fmt: skip
    made = outcome_row(Outcome(rule, current=2, decision=decision(2, 2, STEP_AT_TARGET)))
    assert made["target"] == "shop/Worker/db"
    assert made["target_ref"] == {"apiVersion": "example.com/v1", "kind": "Worker", "name": "db",
                                  "namespace": "shop"}  # fmt: skip
    older = row(rule="old")
    del older["target_ref"]  # /status of a daemon from before scaleTargetRef
    table = cells(render_table([made, older], now=NOW))
    assert table[1][:3] == ["db", "Worker", "shop/db"]
    assert table[2][:3] == ["old", "-", "shop/orders-worker"]
