"""What each rule is doing now and why: kept by the daemon, served as JSON on /status, and printed
by `python autoscaler.py status` as a kubectl-like table.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from eventscaler.daemon import ReloadListener
from eventscaler.engine import Outcome

COLUMNS = ("RULE", "KIND", "TARGET", "CURRENT", "DESIRED", "TRIGGERS", "ACTIVE", "COOLDOWN",
           "LAST SCALE", "REASON", "ERROR")  # fmt: skip


class StatusBoard(ReloadListener):
    """An engine observer remembering each rule's last tick and last scale."""

    def __init__(self) -> None:
        self._rows: dict[str, dict[str, Any]] = {}
        self._last_scale: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def observe(self, outcome: Outcome) -> None:
        row = outcome_row(outcome)
        with self._lock:
            if outcome.wrote and outcome.decision is not None:
                self._last_scale[outcome.rule.name] = {
                    "at": outcome.finished_at,
                    "from": outcome.decision.current,
                    "to": outcome.decision.target,
                    "reason": outcome.decision.reason,
                }
            row["last_scale"] = self._last_scale.get(outcome.rule.name)
            self._rows[outcome.rule.name] = row

    def rules_changed(self, names: set[str], gone: set[tuple[str, ...]]) -> None:
        self.keep_only(names - {labels[0] for labels in gone})

    def keep_only(self, names: Iterable[str]) -> None:
        keep = set(names)
        with self._lock:
            for name in list(self._rows):
                if name not in keep:
                    self._rows.pop(name)
                    self._last_scale.pop(name, None)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(self._rows[name]) for name in sorted(self._rows)]

    def to_json(self) -> bytes:
        return json.dumps({"rules": self.snapshot()}, indent=2).encode()


def outcome_row(outcome: Outcome) -> dict[str, Any]:
    """One rule's status as plain data (what /status serves, what the table prints)."""
    rule, decision, ref = outcome.rule, outcome.decision, outcome.rule.scale_target
    return {
        "rule": rule.name,
        "target": rule.target,
        "target_ref": {
            "apiVersion": ref.api_version,
            "kind": ref.kind,
            "name": ref.name,
            "namespace": rule.namespace,
        },
        # After a successful write the target has the new count.
        "current": decision.target if outcome.wrote and decision else outcome.current,
        "desired": decision.target if decision else None,
        "triggers": {r.trigger: r.value for r in outcome.readings},
        "active": decision.active if decision else None,
        "cooldown_left": outcome.cooldown_left,
        "step": decision.step if decision else None,
        "reason": decision.reason if decision else None,
        "error": outcome.error,
        "dry_run": outcome.dry_run,
        "updated_at": outcome.finished_at,
        "last_scale": None,
    }


def _values(values: Mapping[str, float | None]) -> str:
    return ",".join(f"{k}={'?' if v is None else f'{v:g}'}" for k, v in values.items()) or "-"


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


def render_table(rows: Sequence[Mapping[str, Any]], now: float | None = None) -> str:
    """A kubectl-like table of rule rows."""
    now = time.time() if now is None else now
    lines = [list(COLUMNS)]
    for row in rows:
        kind, target = _target_cells(row)
        lines.append([
            row["rule"],
            kind,
            target,
            _num(row.get("current")),
            _num(row.get("desired")),
            _values(row.get("triggers", {})),
            _yes_no(row.get("active")),
            "-" if row.get("cooldown_left") is None else f"{row['cooldown_left']:.0f}s",
            _last_scale(row.get("last_scale"), now),
            row.get("step") or "-",
            _short(row.get("error") or "-", 60),
        ])  # fmt: skip
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(COLUMNS))]
    return "\n".join(
        "   ".join(
            str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)
        ).rstrip()
        for line in lines
    )


def render_reasons(rows: Sequence[Mapping[str, Any]]) -> str:
    """The full reason of each rule's last decision, under the table."""
    return "\n".join(
        f"{row['rule']}: {row.get('reason') or row.get('error') or '-'}" for row in rows
    )


def _target_cells(row: Mapping[str, Any]) -> tuple[str, str]:
    """KIND and namespace/name; a daemon from before scaleTargetRef sends only `target`."""
    ref = row.get("target_ref")
    if not isinstance(ref, Mapping):
        return "-", str(row.get("target", "-"))
    return str(ref.get("kind", "-")), f"{ref.get('namespace')}/{ref.get('name')}"


def _num(value: Any) -> str:
    return "-" if value is None else str(value)


def _last_scale(scale: Mapping[str, Any] | None, now: float) -> str:
    if not scale:
        return "-"
    return f"{scale['from']}->{scale['to']} {_ago(now - scale['at'])} ago"


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
