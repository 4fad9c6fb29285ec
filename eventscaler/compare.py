"""`make compare`: every built-in scenario under ours, the KEDA model and the oracle; one table,
and a PNG plot per scenario.

    python -m eventscaler.compare [--config FILE --rule NAME] [--scenario NAME ...] [--out DIR]
                                  [--no-plots] [--markdown] [--polling-interval S] ...

Without --config the rule is the README's flood story under KEDA's defaults (target 5 messages per
replica, 0..20 replicas, pollingInterval 30 s, cooldownPeriod 300 s, default behavior), so the
comparison is like for like. "KEDA model" is a model built from KEDA's documented semantics
(eventscaler/keda_model.py), not KEDA itself; every output says so.

matplotlib is imported only to draw, so the daemon never needs it (requirements-dev.txt has it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from eventscaler.config import Rule, load_rules, parse_rules_text
from eventscaler.keda_model import MODEL_LABEL
from eventscaler.plots import CAPTION, plot_runs
from eventscaler.scenarios import DEFAULT_RULE_TEXT, SCENARIOS, Load, scenario
from eventscaler.simulate import (
    DEFAULT_PROCESSING_RATE,
    DEFAULT_STARTUP_SECONDS,
    FIGURES,
    Run,
    WorkerModel,
    compare_runs,
    pick_rule,
)

DEFAULT_OUT = "build/compare"
DEFAULT_RULE = parse_rules_text(DEFAULT_RULE_TEXT, "the built-in comparison rule").rules[0]


def format_table(results: Sequence[tuple[Load, Sequence[Run]]], markdown: bool = False) -> str:
    """One row per scenario and controller, one column per figure."""
    header = ["scenario", "controller", *(short for short, _, _ in FIGURES)]
    rows = []
    for load, runs in results:
        for index, run in enumerate(runs):
            name = load.name if index == 0 or markdown else ""
            rows.append([name, run.label, *(show(run.summary) for _, _, show in FIGURES)])
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 2 + "---:|" * len(FIGURES)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        left = [c.ljust(w) for c, w in zip(cells[:2], widths[:2], strict=True)]
        right = [c.rjust(w) for c, w in zip(cells[2:], widths[2:], strict=True)]
        return "  ".join(left + right).rstrip()

    lines = [line(header)]
    for row in rows:
        if row[0] and len(lines) > 1:
            lines.append("")
        lines.append(line(row))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m eventscaler.compare",
        description=f"Every scenario under ours, the {MODEL_LABEL} (built from KEDA's documented "
        "semantics, not KEDA itself) and the oracle: a table, and a PNG per scenario.",
    )
    parser.add_argument("--config", help="rule file (default: the README's flood rule)")
    parser.add_argument("--rule", help="the rule of --config to use")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=list(SCENARIOS),
        help="a scenario to run (repeatable; default: all)",
    )
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"plot folder (default {DEFAULT_OUT})")
    parser.add_argument("--no-plots", action="store_true", help="print the table only")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument(
        "--polling-interval", type=float, help="override the rule's pollingInterval (seconds)"
    )
    parser.add_argument(
        "--processing-rate",
        type=float,
        default=DEFAULT_PROCESSING_RATE,
        help=f"messages/s per ready replica (default {DEFAULT_PROCESSING_RATE:g})",
    )
    parser.add_argument(
        "--startup-seconds",
        type=float,
        default=DEFAULT_STARTUP_SECONDS,
        help=f"seconds before a new replica is ready (default {DEFAULT_STARTUP_SECONDS:g})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rule = _rule_from(args)
    except LookupError as exc:
        print(f"compare: error: {exc.args[0]}", file=sys.stderr)
        return 2
    if args.processing_rate <= 0 or args.startup_seconds < 0:
        print(
            "compare: error: --processing-rate must be > 0, --startup-seconds >= 0", file=sys.stderr
        )
        return 2
    workers = WorkerModel(args.processing_rate, args.startup_seconds)
    results = []
    for name in args.scenario or list(SCENARIOS):
        load = scenario(name)
        results.append(
            (load, compare_runs(rule, load, workers, initial_replicas=rule.min_replicas))
        )
    print(
        f"rule {rule.name}: {rule.min_replicas}..{rule.max_replicas} replicas, target "
        f"{rule.triggers[0].target:g} messages/replica, pollingInterval "
        f"{rule.polling_interval:g}s, cooldownPeriod {rule.cooldown_period:g}s; workers: "
        f"{workers.processing_rate:g} message/s per ready replica, ready "
        f"{workers.startup_seconds:g}s after creation"
    )
    print(f"{CAPTION}; oracle: the rule's arithmetic on the true backlog with no polling.\n")
    print(format_table(results, markdown=args.markdown))
    return 0 if args.no_plots else _write_plots(results, rule, workers, Path(args.out))


def _rule_from(args: argparse.Namespace) -> Rule:
    """The built-in rule, or the one --config and --rule name; LookupError if there is none."""
    rule = DEFAULT_RULE
    if args.config:
        result = load_rules(args.config)
        for problem in result.problems:
            print(problem, file=sys.stderr)
        rule = pick_rule(result.rules, args.rule)
    if args.polling_interval is not None:
        rule = replace(rule, polling_interval=args.polling_interval)
    return rule


def _write_plots(
    results: Sequence[tuple[Load, Sequence[Run]]], rule: Rule, workers: WorkerModel, out: Path
) -> int:
    out.mkdir(parents=True, exist_ok=True)
    try:
        for load, runs in results:
            plot_runs(runs, load, rule, workers, out / f"{load.name}.png")
    except ImportError as exc:
        print(f"compare: plots need matplotlib ({exc}): pip install -r requirements-dev.txt")
        return 2
    print(f"\nplots: {', '.join(str(out / f'{load.name}.png') for load, _ in results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
