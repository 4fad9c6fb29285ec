"""`make compare`: every built-in scenario under ours, the KEDA model and no-poll (the rule's
arithmetic without polling delay), one table, then ours and the KEDA model against the optimum
(eventscaler/optimum.py), and a PNG plot per scenario.

    python -m eventscaler.compare [--config FILE --rule NAME] [--scenario NAME ...] [--out DIR]
                                  [--no-plots] [--no-optimum] [--markdown] [--polling-interval S]

Without --config the rule is the README's flood story under KEDA's defaults (target 5 messages per
replica, 0..20 replicas, pollingInterval 30 s, cooldownPeriod 300 s, default behavior), so the
comparison is like for like; a scenario that is a story of other bounds (batch-dump: 100 replicas)
gets its maxReplicas. A rule of --config keeps its own bounds. "KEDA model" is a model built from
KEDA's documented semantics (eventscaler/keda_model.py), not KEDA itself; every output says so.

matplotlib is imported only to draw and SciPy only to solve, so the daemon never needs them
(requirements-dev.txt has them).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from eventscaler.config import Rule, load_rules, parse_rules_text
from eventscaler.keda_model import MODEL_LABEL
from eventscaler.optimum import OptimumError, Yardstick
from eventscaler.plots import CAPTION, plot_runs
from eventscaler.scenarios import DEFAULT_RULE_TEXT, SCENARIOS, Load, scenario
from eventscaler.simulate import (
    DEFAULT_PROCESSING_RATE,
    DEFAULT_STARTUP_SECONDS,
    FIGURES,
    NO_POLL_LABEL,
    OPTIMUM_NOTE,
    Run,
    WorkerModel,
    against_optimum,
    compare_runs,
    pick_rule,
    ratio,
)

DEFAULT_OUT = "build/compare"
DEFAULT_RULE = parse_rules_text(DEFAULT_RULE_TEXT, "the built-in comparison rule").rules[0]


@dataclass(frozen=True)
class Result:
    """One scenario: its rule, its runs, and the measured runs beside the optimum."""

    load: Load
    rule: Rule
    runs: Sequence[Run]
    marks: Mapping[str, Yardstick]


def format_table(results: Sequence[Result], markdown: bool = False) -> str:
    """One row per scenario and controller, one column per figure."""
    header = ["scenario", "controller", *(short for short, _, _ in FIGURES)]
    rows = []
    for result in results:
        for index, run in enumerate(result.runs):
            name = result.load.name if index == 0 or markdown else ""
            rows.append([name, run.label, *(show(run.summary) for _, _, show in FIGURES)])
    return _layout(header, rows, markdown)


OPTIMUM_COLUMNS = (
    "backlog msg*s",
    "replica*s",
    "optimum msg*s at this cost",
    "waiting / optimum",
    "optimum replica*s at this waiting",
    "cost / optimum",
)


def format_optimum_table(results: Sequence[Result], markdown: bool = False) -> str:
    """One row per scenario and measured controller: its figures beside the optimum's."""
    header = ["scenario", "controller", *OPTIMUM_COLUMNS]
    rows = []
    for result in results:
        for index, (label, mark) in enumerate(result.marks.items()):
            name = result.load.name if index == 0 or markdown else ""
            cells = [f"{mark.waiting:,.0f}", f"{mark.cost:,.0f}", f"{mark.optimum_waiting:,.0f}"]
            cells += [ratio(mark.waiting_ratio), f"{mark.optimum_cost:,.0f}"]
            rows.append([name, label, *cells, ratio(mark.cost_ratio)])
    return _layout(header, rows, markdown)


def _layout(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> str:
    """A Markdown table, or aligned plain text with a blank line between scenarios."""
    if markdown:
        figures = len(header) - 2
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 2 + "---:|" * figures]
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
        "semantics, not KEDA itself) and no-poll, against the optimum: tables, and a PNG per "
        "scenario.",
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
    parser.add_argument("--no-plots", action="store_true", help="print the tables only")
    parser.add_argument(
        "--no-optimum", action="store_true", help="skip the optimum (its linear programs)"
    )
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
    solve = not args.no_optimum and _can_solve()
    results = [
        _run_scenario(scenario(name), rule, workers, bool(args.config), solve)
        for name in args.scenario or list(SCENARIOS)
    ]
    print(
        f"rule {rule.name}: {rule.min_replicas}..{rule.max_replicas} replicas, target "
        f"{rule.triggers[0].target:g} messages/replica, pollingInterval "
        f"{rule.polling_interval:g}s, cooldownPeriod {rule.cooldown_period:g}s; workers: "
        f"{workers.processing_rate:g} message/s per ready replica, ready "
        f"{workers.startup_seconds:g}s after creation"
    )
    for note in _bound_notes(results, rule):
        print(note)
    print(f"{CAPTION}; {NO_POLL_LABEL}: the rule's arithmetic on the true backlog without polling.")
    print()
    print(format_table(results, markdown=args.markdown))
    if solve:
        _print_optimum(results, args.markdown)
    plotted = 0 if args.no_plots else _write_plots(results, workers, Path(args.out))
    return plotted or (0 if solve or args.no_optimum else 2)


def _can_solve() -> bool:
    """Whether SciPy is there to solve the optimum (a tooling dependency, like matplotlib)."""
    if importlib.util.find_spec("scipy") is not None:
        return True
    print(
        "compare: the optimum needs SciPy: pip install -r requirements-dev.txt (or --no-optimum)",
        file=sys.stderr,
    )
    return False


def _run_scenario(
    load: Load, rule: Rule, workers: WorkerModel, own_bounds: bool, optimum: bool
) -> Result:
    """The scenario under every controller; the built-in rule takes the scenario's bounds."""
    if load.max_replicas is not None and not own_bounds:
        rule = replace(rule, max_replicas=load.max_replicas)
    initial = rule.min_replicas
    runs = compare_runs(rule, load, workers, initial_replicas=initial)
    marks: Mapping[str, Yardstick] = {}
    if optimum:
        try:
            marks = against_optimum(runs, rule, load, workers, initial)
        except OptimumError as exc:
            print(f"compare: {load.name}: the optimum: {exc}", file=sys.stderr)
        seconds = sum(mark.solve_seconds for mark in marks.values())
        print(f"compare: {load.name}: the optimum solved in {seconds:.1f}s", file=sys.stderr)
    return Result(load, rule, runs, marks)


def _bound_notes(results: Sequence[Result], rule: Rule) -> list[str]:
    notes = []
    for result in results:
        wanted, used = result.load.max_replicas, result.rule.max_replicas
        if wanted is not None and used != rule.max_replicas:
            notes.append(f"{result.load.name}: maxReplicas {used}, the scenario's story")
        elif wanted is not None and wanted != used:
            notes.append(
                f"{result.load.name}: the scenario is a story of maxReplicas {wanted}; "
                f"the rule's own {used} is simulated"
            )
    return notes


def _print_optimum(results: Sequence[Result], markdown: bool) -> None:
    seconds = [mark.solve_seconds for r in results for mark in r.marks.values()]
    print(f"\nagainst {OPTIMUM_NOTE}:\n")
    print(format_optimum_table(results, markdown=markdown))
    if seconds:
        print(
            f"\n{len(seconds) * 2} linear programs solved by SciPy's HiGHS in {sum(seconds):.1f}s "
            f"of CPU (the longest pair {max(seconds):.1f}s)"
        )


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


def _write_plots(results: Sequence[Result], workers: WorkerModel, out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    try:
        for r in results:
            plot_runs(r.runs, r.load, r.rule, workers, out / f"{r.load.name}.png")
    except ImportError as exc:
        print(f"compare: plots need matplotlib ({exc}): pip install -r requirements-dev.txt")
        return 2
    print(f"\nplots: {', '.join(str(out / f'{r.load.name}.png') for r in results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
