"""`autoscaler.py tune`: the cheapest settings of a rule that meet a waiting target (simulated).

    python autoscaler.py tune --config FILE [--rule NAME] (--trace CSV | --scenario NAME)
                              --max-p95-wait S [--processing-rate R] [--startup-seconds S] ...

The settings searched are a declarative list, `DIMENSIONS`: each names a setting, the values worth
trying for a rule, how to set one on a `Rule` and how to write it back into the rule as the user
wrote it. A new setting (a rate-aware mode's fields) is one more entry.

The search (docs/simulate.md, "tune"): every candidate is the daemon's own policy replayed on the
simulator (`simulate.simulate_within`). A candidate that meets the p95 target beats one that does
not; among those that meet it the least replica-seconds wins (then the lower p95, then the fewer
writes); among those that do not, the lower p95. From today's settings, a coordinate descent:
one setting at a time, every value of it with the others fixed, keep the best, and again over all
the settings until a pass changes nothing. An ordered setting with many values is searched coarse
to fine (every other value, then the neighbours of the best). Once some candidate meets the
target, a replay stops as soon as its replica-seconds pass that candidate's: it can no longer win.
Every choice is in a fixed order and ties go to the first, so the same input gives the same
output.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import itertools
import math
import sys
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TextIO

import yaml

from eventscaler import sources
from eventscaler.config import (
    DEFAULT_RATE_WINDOW_SECONDS,
    MIN_TARGET,
    OBSERVED,
    RateAware,
    Rule,
    ScalingPolicy,
    ScalingRules,
    load_rules,
    parse_rules_text,
)
from eventscaler.optimum import Bounds, OptimumError
from eventscaler.scenarios import Load, TraceError, load_trace, scenario
from eventscaler.simulate import (
    PolicyController,
    Summary,
    WorkerModel,
    describe_setup,
    pick_rule,
    simulate_within,
)
from eventscaler.sources.base import SourceError

EXIT_OK = 0
EXIT_NO_SOLUTION = 1
EXIT_INVALID = 2
MAX_PASSES = 4  # coordinate descent: passes over every setting, at most
COARSE_ABOVE = 5  # an ordered setting with more values than this is searched coarse to fine
PROGRESS_AFTER = 1.0  # seconds before the progress bar shows
_EPS = 1e-9

Policies = tuple[str, tuple[ScalingPolicy, ...]]  # (selectPolicy, policies) of one direction


@dataclass(frozen=True)
class Goal:
    """What the settings are searched for: the p95 wait allowed, on this worker model."""

    max_p95: float
    processing_rate: float = 1.0


# ---------------------------------------------------------------------------------------------
# The settings searched


@dataclass(frozen=True)
class Dimension:
    """One setting of a rule the search may change."""

    name: str  # as the rule file spells it, for the table
    applies: Callable[[Rule], bool]
    current: Callable[[Rule], Hashable]
    # The values worth trying for a rule, given the goal (today's is added if missing).
    values: Callable[[Rule, Goal], Sequence[Hashable]]
    apply: Callable[[Rule, Any], Rule]
    # Writes the tuned rule's setting into the rule's mapping as written (`defaults` as read).
    write: Callable[[dict[str, Any], Mapping[str, Any], Rule], None]
    show: Callable[[Any], str]
    ordered: bool = True  # values in increasing order: searched coarse to fine when many


def _always(_rule: Rule) -> bool:
    return True


def show_policies(value: Policies) -> str:
    select, policies = value
    if select == "Disabled":
        return "Disabled"
    if not policies:
        return "no limit"
    text = " or ".join(f"{p.value}{' pods' if p.type == 'Pods' else '%'}/{p.period_seconds:g}s"
                       for p in policies)  # fmt: skip
    return f"{text} ({select})" if len(policies) > 1 else text


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _number(value: float) -> int | float:
    """A whole number as an int, so the YAML reads `300`, not `300.0`."""
    return int(value) if float(value).is_integer() else value


def _section(entry: dict[str, Any], defaults: Mapping[str, Any], key: str, empty: Any) -> Any:
    """The rule's own `key`, taken from `defaults` first when the rule leaves it out (the loader
    merges the two one level deep, so the rule's then replaces the default as a whole)."""
    if entry.get(key) is None:
        entry[key] = copy.deepcopy(defaults.get(key)) or empty
    return entry[key]


def deciding_target(rule: Rule) -> float:
    """The target per replica that decides: the formula's, else the smallest of the triggers'
    (every trigger reads the same simulated queue, so the highest ask is the smallest target)."""
    if rule.scaling_modifiers is not None:
        return rule.scaling_modifiers.target
    return min(t.target for t in rule.triggers)


def target_ladder(current: float, goal: Goal) -> list[float]:
    """Round numbers from an eighth of today's target to 8 times it, and at least to twice
    what one replica processes within the p95 allowed; whole ones when today's is at least 1
    (a message count)."""
    low = max(current / 8, MIN_TARGET)
    high = max(current * 8, 2 * goal.processing_rate * goal.max_p95)
    if current >= 1:
        low = max(low, 1.0)
    ladder = set()
    for exponent in range(-3, 9):
        for mantissa in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8):
            value = float(f"{mantissa * 10.0**exponent:.6g}")
            whole = value == int(value)
            if low - _EPS <= value <= high + _EPS and (whole or current < 1):
                ladder.add(value)
    return sorted(ladder)


def _with_target(rule: Rule, value: float) -> Rule:
    if rule.scaling_modifiers is not None:
        return replace(rule, scaling_modifiers=replace(rule.scaling_modifiers, target=value))
    factor = value / deciding_target(rule)
    triggers = tuple(replace(t, target=float(f"{t.target * factor:.6g}")) for t in rule.triggers)
    return replace(rule, triggers=triggers)


def _write_target(entry: dict[str, Any], defaults: Mapping[str, Any], tuned: Rule) -> None:
    if tuned.scaling_modifiers is not None:
        entry["scalingModifiers"]["target"] = _number(tuned.scaling_modifiers.target)
        return
    triggers = _section(entry, defaults, "triggers", [])
    for written, trigger in zip(triggers, tuned.triggers, strict=True):
        key = sources.source_type(trigger.type).target_key_for(written)
        if key is not None:
            written[key] = _number(trigger.target)


def _write_cooldown(entry: dict[str, Any], _defaults: Mapping[str, Any], tuned: Rule) -> None:
    entry["cooldownPeriod"] = _number(tuned.cooldown_period)


def _direction(rule: Rule, key: str) -> ScalingRules:
    return rule.behavior.scale_up if key == "scaleUp" else rule.behavior.scale_down


def _with_direction(rule: Rule, key: str, **changes: Any) -> Rule:
    rules = replace(_direction(rule, key), **changes)
    field = "scale_up" if key == "scaleUp" else "scale_down"
    return replace(rule, behavior=replace(rule.behavior, **{field: rules}))


def _written_direction(
    entry: dict[str, Any], defaults: Mapping[str, Any], key: str
) -> dict[str, Any]:
    behavior = _section(entry, defaults, "behavior", {})
    direction = behavior.get(key) or {}
    behavior[key] = direction
    return direction


def window_dimension(key: str, values: Sequence[float]) -> Dimension:
    """`behavior.<key>.stabilizationWindowSeconds`."""

    def write(entry: dict[str, Any], defaults: Mapping[str, Any], tuned: Rule) -> None:
        seconds = _direction(tuned, key).stabilization_window_seconds
        _written_direction(entry, defaults, key)["stabilizationWindowSeconds"] = _number(seconds)

    return Dimension(
        name=f"behavior.{key}.stabilizationWindowSeconds",
        applies=_always,
        current=lambda rule: _direction(rule, key).stabilization_window_seconds,
        values=lambda _rule, _goal: values,
        apply=lambda rule, v: _with_direction(rule, key, stabilization_window_seconds=v),
        write=write,
        show=_seconds,
    )


def policies_dimension(key: str, options: Sequence[Policies]) -> Dimension:
    """`behavior.<key>.policies` and its `selectPolicy`, as a whole: a few shapes worth trying."""

    def write(entry: dict[str, Any], defaults: Mapping[str, Any], tuned: Rule) -> None:
        rules, written = _direction(tuned, key), _written_direction(entry, defaults, key)
        written["policies"] = [
            {"type": p.type, "value": p.value, "periodSeconds": _number(p.period_seconds)}
            for p in rules.policies
        ]
        if "selectPolicy" in written or rules.select_policy != "Max":
            written["selectPolicy"] = rules.select_policy

    return Dimension(
        name=f"behavior.{key}.policies",
        applies=_always,
        current=lambda rule: (_direction(rule, key).select_policy, _direction(rule, key).policies),
        values=lambda _rule, _goal: options,
        apply=lambda rule, v: _with_direction(rule, key, select_policy=v[0], policies=v[1]),
        write=write,
        show=show_policies,
        ordered=False,
    )


def _pods(value: int, period: float) -> ScalingPolicy:
    return ScalingPolicy("Pods", value, period)


def _percent(value: int, period: float) -> ScalingPolicy:
    return ScalingPolicy("Percent", value, period)


NO_LIMIT: Policies = ("Max", ())
WINDOWS = (0.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0)
UP_WINDOWS = (0.0, 30.0, 60.0, 120.0)
COOLDOWNS = (0.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0)
DOWN_POLICIES: tuple[Policies, ...] = (
    NO_LIMIT,
    ("Max", (_percent(50, 60),)),
    ("Max", (_percent(10, 60),)),
    ("Max", (_pods(4, 60),)),
    ("Max", (_pods(1, 60),)),
)
UP_POLICIES: tuple[Policies, ...] = (
    NO_LIMIT,
    ("Max", (_pods(4, 15), _percent(100, 15))),  # the HPA's default
    ("Max", (_percent(100, 60),)),
)

DRAIN_TARGETS = (5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
RateSetting = tuple[float | None, float] | None  # (processingRate, targetDrainSeconds), or off


def _rate_setting(rule: Rule) -> RateSetting:
    mode = rule.rate_aware
    return None if mode is None else (mode.processing_rate, mode.target_drain_seconds)


def _with_rate_setting(rule: Rule, value: RateSetting) -> Rule:
    if value is None:
        return replace(rule, rate_aware=None)
    window = rule.rate_aware.window_seconds if rule.rate_aware else DEFAULT_RATE_WINDOW_SECONDS
    return replace(rule, rate_aware=RateAware(value[0], value[1], window))


def _write_rate_setting(entry: dict[str, Any], defaults: Mapping[str, Any], tuned: Rule) -> None:
    mode = tuned.rate_aware
    if mode is None:
        entry.pop("rateAware", None)
        if "rateAware" in defaults:
            entry["rateAware"] = None  # off for this rule alone: null overrides `defaults:`
        return
    written = dict(entry.get("rateAware") or defaults.get("rateAware") or {})
    rate = OBSERVED if mode.processing_rate is None else _number(mode.processing_rate)
    written.update(processingRate=rate, targetDrainSeconds=_number(mode.target_drain_seconds))
    entry["rateAware"] = written


def _rate_settings(rule: Rule, goal: Goal) -> list[RateSetting]:
    """Off, or on at the processing rate measured (`--processing-rate`) with a drain target."""
    return [None, *((goal.processing_rate, seconds) for seconds in DRAIN_TARGETS)]


def _show_rate_setting(value: RateSetting) -> str:
    if value is None:
        return "off"
    rate = "observed" if value[0] is None else f"{value[0]:g}/s"
    return f"{rate}, drain {value[1]:g}s"


def _one_signal(rule: Rule) -> bool:
    """The rate-aware mode sizes one backlog: one trigger, or a scalingModifiers formula."""
    return len(rule.triggers) == 1 or rule.scaling_modifiers is not None


# In the order the search visits them: the target first, it moves the cost most.
DIMENSIONS: tuple[Dimension, ...] = (
    Dimension(
        name="target per replica",
        applies=_always,
        current=deciding_target,
        values=lambda rule, goal: target_ladder(deciding_target(rule), goal),
        apply=_with_target,
        write=_write_target,
        show=lambda v: f"{v:g}",
    ),
    window_dimension("scaleDown", WINDOWS),
    Dimension(
        name="cooldownPeriod",
        applies=lambda rule: rule.min_replicas == 0,  # it only times the step to zero
        current=lambda rule: rule.cooldown_period,
        values=lambda _rule, _goal: COOLDOWNS,
        apply=lambda rule, v: replace(rule, cooldown_period=v),
        write=_write_cooldown,
        show=_seconds,
    ),
    policies_dimension("scaleDown", DOWN_POLICIES),
    window_dimension("scaleUp", UP_WINDOWS),
    policies_dimension("scaleUp", UP_POLICIES),
    Dimension(
        name="rateAware",
        applies=_one_signal,
        current=_rate_setting,
        values=_rate_settings,
        apply=_with_rate_setting,
        write=_write_rate_setting,
        show=_show_rate_setting,
        ordered=False,
    ),
)


# ---------------------------------------------------------------------------------------------
# The search


@dataclass(frozen=True)
class Candidate:
    """One setting of every dimension searched, and its figures (None: stopped early, because
    it had already cost more than the best candidate that meets the target)."""

    values: tuple[Hashable, ...]
    rule: Rule
    summary: Summary | None


@dataclass(frozen=True)
class Outcome:
    today: Candidate
    best: Candidate  # the cheapest that meets the target, else the lowest p95 found
    meets: bool
    simulated: int  # replays run
    stopped_early: int  # of which stopped at the best's cost
    passes: int


def meets_target(summary: Summary | None, max_p95: float) -> bool:
    return summary is not None and summary.wait_p95 is not None and summary.wait_p95 <= max_p95


def score(summary: Summary | None, max_p95: float) -> tuple[float, ...]:
    """Lower is better: meeting the target first, then the cost; else the p95."""
    if summary is None:
        return (2.0,)
    p95 = math.inf if summary.wait_p95 is None else summary.wait_p95
    if p95 <= max_p95:
        return (0.0, summary.replica_seconds, p95, summary.scale_writes)
    return (1.0, p95, summary.replica_seconds, summary.scale_writes)


class Progress:
    """One updating line on a terminal's stderr, once the search has taken a second; nothing
    when stderr is not a terminal."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self.stream, self.width = stream, width
        self.enabled = stream.isatty()
        self.started = time.monotonic()
        self.shown = False

    def update(self, done: int, total: int, text: str) -> None:
        if not self.enabled or time.monotonic() - self.started < PROGRESS_AFTER:
            return
        filled = self.width * done // max(total, 1)
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r\033[Ktune: [{bar}] {text}")
        self.stream.flush()
        self.shown = True

    def finish(self) -> None:
        if self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()


Replay = Callable[[Rule, float], "Summary | None"]  # a rule, a cost limit -> its figures


class Search:
    """Coordinate descent over the dimensions that apply to the rule (module docstring)."""

    def __init__(
        self,
        rule: Rule,
        replay: Replay,
        goal: Goal,
        dimensions: Sequence[Dimension] = DIMENSIONS,
        progress: Progress | None = None,
    ) -> None:
        self.base, self.replay, self.max_p95 = rule, replay, goal.max_p95
        self.dimensions = [d for d in dimensions if d.applies(rule)]
        self.values = [_with_today(d.values(rule, goal), d.current(rule), d.ordered)
                       for d in self.dimensions]  # fmt: skip
        self.progress = progress
        self.tried: dict[tuple[Hashable, ...], Candidate] = {}
        self.stopped_early = 0
        today = tuple(d.current(rule) for d in self.dimensions)
        self.today = self.best = self._replay(today, math.inf)

    def rule_for(self, values: tuple[Hashable, ...]) -> Rule:
        rule = self.base
        for dimension, value in zip(self.dimensions, values, strict=True):
            rule = dimension.apply(rule, value)
        return rule

    def evaluate(self, values: tuple[Hashable, ...]) -> Candidate:
        if values in self.tried:
            return self.tried[values]
        best = self.best.summary
        limit = best.replica_seconds if best and meets_target(best, self.max_p95) else math.inf
        candidate = self._replay(values, limit)
        if self._better(candidate, self.best):
            self.best = candidate
        return candidate

    def _replay(self, values: tuple[Hashable, ...], limit: float) -> Candidate:
        rule = self.rule_for(values)
        summary = self.replay(rule, limit)
        self.stopped_early += summary is None
        candidate = self.tried[values] = Candidate(values, rule, summary)
        return candidate

    def _better(self, a: Candidate, b: Candidate) -> bool:
        return score(a.summary, self.max_p95) < score(b.summary, self.max_p95)

    def run(self) -> Outcome:
        """A descent from today's settings, then one from the leanest (every setting at its
        first value: no window, no cooldown, no rate limit), which escapes the trap of a rule
        whose windows pay for a low target; the cheapest of all the candidates wins."""
        starts = [self.today.values]
        lean = tuple(values[0] for values in self.values)
        if lean != self.today.values:
            starts.append(lean)
        passes = sum(self._descend(start, number) for number, start in enumerate(starts, 1))
        if self.progress:
            self.progress.finish()
        meets = meets_target(self.best.summary, self.max_p95)
        return Outcome(self.today, self.best, meets, len(self.tried), self.stopped_early, passes)

    def _descend(self, start: tuple[Hashable, ...], number: int) -> int:
        """Coordinate descent from `start`: passes over every dimension until one changes
        nothing. Returns the passes made."""
        point = self.evaluate(start)
        for passes in range(1, MAX_PASSES + 1):
            before = point
            for index in range(len(self.dimensions)):
                self._show(number, passes, index)
                point = self._line(point, index)
            if point is before:
                break
        return passes

    def _show(self, number: int, passes: int, index: int) -> None:
        if self.progress:
            name = self.dimensions[index].name
            text = f"descent {number}, pass {passes}, {name}; {len(self.tried)} simulated"
            self.progress.update(index, len(self.dimensions), text)

    def _line(self, point: Candidate, index: int) -> Candidate:
        """Every value of one dimension, the others at `point`'s: coarse to fine when many.
        Returns the best of them (`point` on a tie)."""
        values, at = self.values[index], list(point.values)
        best = point

        def try_value(position: int) -> bool:
            nonlocal best
            at[index] = values[position]
            candidate = self.evaluate(tuple(at))
            if self._better(candidate, best):
                best = candidate
            return meets_target(candidate.summary, self.max_p95)

        ordered = self.dimensions[index].ordered and len(values) > COARSE_ABOVE
        coarse = sorted({*range(0, len(values), 2 if ordered else 1), len(values) - 1})
        meets = [try_value(position) for position in coarse]
        if ordered:
            for position in _fine(coarse, meets, values.index(best.values[index]), len(values)):
                try_value(position)
        return best


def _fine(coarse: Sequence[int], meets: Sequence[bool], best: int, size: int) -> list[int]:
    """The values to try after the coarse ones: the neighbours of the best, and those skipped
    where the target starts or stops being met (the cost is a staircase: the cheapest is often
    at that edge)."""
    fine = {best - 1, best + 1}
    for (low, low_meets), (high, high_meets) in itertools.pairwise(zip(coarse, meets, strict=True)):
        if low_meets != high_meets:
            fine.update(range(low + 1, high))
    return sorted(p for p in fine if 0 <= p < size)


def _with_today(values: Sequence[Hashable], today: Hashable, ordered: bool) -> list[Hashable]:
    if today in values:
        return list(values)
    if ordered:
        return sorted([*values, today])  # type: ignore[type-var]
    return [*values, today]  # last: the first value stays the leanest (no rate limit)


# ---------------------------------------------------------------------------------------------
# The rule as written, tuned


class TuneError(Exception):
    """Bad input: the message names the file, the rule or the flag."""


def written_rule(path: str, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The rule named `name` as the file writes it, and the file's `defaults` (the loader took
    the first rule of that name; the file has just loaded, so its shape is sound)."""
    with open(path, encoding="utf-8") as file:
        document = yaml.safe_load(file)
    defaults = dict(document.get("defaults") or {})
    for entry in document["rules"]:
        if isinstance(entry, Mapping) and entry.get("name") == name:
            return copy.deepcopy(dict(entry)), defaults
    raise TuneError(f"{path}: rule {name}: not found as written")  # pragma: no cover


def tuned_entry(
    entry: dict[str, Any],
    defaults: Mapping[str, Any],
    outcome: Outcome,
    dimensions: Sequence[Dimension],
) -> dict[str, Any]:
    """The rule as written, with the settings the search changed written in."""
    tuned = copy.deepcopy(entry)
    changed = zip(dimensions, outcome.today.values, outcome.best.values, strict=True)
    for dimension, today, best in changed:
        if today != best:
            dimension.write(tuned, defaults, outcome.best.rule)
    return tuned


class _IndentedDumper(yaml.SafeDumper):
    """Lists indented under their key, as the README and config.example.yaml write them."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def snippet(entry: Mapping[str, Any]) -> str:
    document = {"rules": [dict(entry)]}
    return yaml.dump(document, Dumper=_IndentedDumper, sort_keys=False, default_flow_style=False)


def check_snippet(
    entry: Mapping[str, Any], defaults: Mapping[str, Any], expected: Rule, source: str
) -> None:
    """The snippet, with the file's defaults, must load as exactly the rule simulated."""
    document: dict[str, Any] = {"rules": [dict(entry)]}
    if defaults:
        document = {"defaults": dict(defaults), **document}
    text = yaml.safe_dump(document, sort_keys=False)
    result = parse_rules_text(text, f"the tuned {source}")
    if result.problems or result.rules != (expected,):
        problems = "; ".join(str(p) for p in result.problems) or "another rule than simulated"
        raise TuneError(f"the tuned rule does not load as simulated: {problems}")


# ---------------------------------------------------------------------------------------------
# Output


def _figure(value: float | None, unit: str = "") -> str:
    if value is None:
        return "never"
    return f"{value:.1f}{unit}" if unit else f"{value:,.0f}"


FIGURES: tuple[tuple[str, Callable[[Summary], str]], ...] = (
    ("a message's wait, median (p50)", lambda s: _figure(s.wait_p50, "s")),
    ("a message's wait, 95th percentile (p95)", lambda s: _figure(s.wait_p95, "s")),
    ("backlog message-seconds (the waiting)", lambda s: _figure(s.backlog_message_seconds)),
    ("replica-seconds (the cost)", lambda s: _figure(s.replica_seconds)),
    ("scale writes", lambda s: str(s.scale_writes)),
)
LABEL_WIDTH = 46
COLUMN_WIDTH = 16


def _row(label: str, cells: Sequence[str]) -> str:
    return (label.ljust(LABEL_WIDTH) + "".join(c.rjust(COLUMN_WIDTH) for c in cells)).rstrip()


def format_table(
    outcome: Outcome, dimensions: Sequence[Dimension], optimum_cost: float | None
) -> str:
    """Today's settings and figures beside the tuned ones (and the optimum's cost)."""
    columns = ["today", "tuned" if outcome.meets else "lowest p95"]
    with_optimum = optimum_cost is not None
    lines = [_row("", [*columns, "optimum"] if with_optimum else columns)]
    for index, dimension in enumerate(dimensions):
        cells = [dimension.show(c.values[index]) for c in (outcome.today, outcome.best)]
        lines.append(_row(dimension.name, cells + ([""] if with_optimum else [])))
    for label, show in FIGURES:
        cells = [show(c.summary) for c in (outcome.today, outcome.best) if c.summary]
        if with_optimum:
            cells.append(_optimum_cell(label, outcome, optimum_cost))
        lines.append(_row(label, cells))
    return "\n".join(lines)


def _optimum_cell(label: str, outcome: Outcome, cost: float | None) -> str:
    assert outcome.best.summary is not None and cost is not None
    if label.startswith("backlog"):
        return _figure(outcome.best.summary.backlog_message_seconds)  # its budget
    return _figure(cost) if label.startswith("replica") else "-"


# ---------------------------------------------------------------------------------------------
# `autoscaler.py tune`


@dataclass(frozen=True)
class Setup:
    config: str
    rule: Rule
    load: Load
    workers: WorkerModel
    initial_replicas: int
    duration: float
    max_p95: float


def read_setup(args: argparse.Namespace) -> Setup:
    """The rule, the load and the worker model the flags name; TuneError names what is wrong."""
    if not args.max_p95_wait > 0:
        raise TuneError(f"--max-p95-wait: expected seconds > 0, got {args.max_p95_wait:g}")
    if args.processing_rate <= 0 or args.startup_seconds < 0:
        raise TuneError("--processing-rate must be > 0 and --startup-seconds >= 0")
    if args.duration is not None and args.duration <= 0:
        raise TuneError("--duration must be > 0")
    if args.initial_replicas is not None and args.initial_replicas < 0:
        raise TuneError("--initial-replicas must be >= 0")
    result = load_rules(args.config)
    for problem in result.problems:
        print(problem, file=sys.stderr)
    try:
        rule = pick_rule(result.rules, args.rule)
    except LookupError as exc:
        raise TuneError(f"{args.config}: --rule: {exc.args[0]}") from None
    try:
        load = scenario(args.scenario) if args.scenario else load_trace(args.trace)
    except TraceError as exc:
        raise TuneError(f"--trace: {exc}") from None
    initial = rule.min_replicas if args.initial_replicas is None else args.initial_replicas
    duration = load.duration if args.duration is None else args.duration
    workers = WorkerModel(args.processing_rate, args.startup_seconds)
    return Setup(args.config, rule, load, workers, initial, duration, args.max_p95_wait)


def tune(setup: Setup, progress: Progress | None = None) -> tuple[Outcome, list[Dimension]]:
    """The search on the simulator; TuneError when the rule cannot be simulated (cron)."""

    def replay(rule: Rule, limit: float) -> Summary | None:
        controller = PolicyController(rule)
        run = simulate_within(
            controller, rule, setup.load, setup.workers, setup.initial_replicas,
            setup.duration, limit, samples=False,
        )  # fmt: skip
        return None if run is None else run.summary

    try:
        goal = Goal(setup.max_p95, setup.workers.processing_rate)
        search = Search(setup.rule, replay, goal, DIMENSIONS, progress)
    except SourceError as exc:  # a trigger the fluid queue cannot give a value (cron)
        raise TuneError(f"{setup.config}: rule {setup.rule.name}: {exc}") from None
    return search.run(), search.dimensions


def optimum_cost(setup: Setup, outcome: Outcome, solve: bool) -> tuple[float | None, str]:
    """The optimum's least cost at the tuned settings' waiting, and the line that says so."""
    summary = outcome.best.summary
    if not solve or not outcome.meets or summary is None:
        return None, "the optimum: not solved (--no-optimum)" if not solve else ""
    if importlib.util.find_spec("scipy") is None:
        return None, "the optimum: skipped, it needs SciPy: pip install -r requirements-dev.txt"
    from eventscaler.optimum import optimum_at_waiting

    rule, waiting = setup.rule, summary.backlog_message_seconds
    bounds = Bounds(rule.min_replicas, rule.max_replicas, setup.initial_replicas)
    try:
        best = optimum_at_waiting(
            setup.load, bounds, setup.workers, waiting * (1 + 1e-9) + 1e-6, setup.duration
        )
    except OptimumError as exc:
        return None, f"the optimum: {exc}"
    note = (
        "optimum: the least replica-seconds of any schedule that knows the load in advance\n"
        "and waits no more message-seconds than the tuned settings (a lower bound)"
    )
    return best.cost, note


def run_tune_command(args: argparse.Namespace) -> int:
    started, cpu = time.monotonic(), time.process_time()
    try:
        setup = read_setup(args)
        outcome, dimensions = tune(setup, Progress(sys.stderr))
    except TuneError as exc:
        print(f"autoscaler.py tune: error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    searched, searched_cpu = time.monotonic() - started, time.process_time() - cpu
    cost, note = optimum_cost(setup, outcome, not args.no_optimum)
    print(describe_setup(setup.rule, setup.load, setup.workers, setup.duration))
    print(_search_line(setup, outcome, len(dimensions)))
    print()
    print(format_table(outcome, dimensions, cost))
    if note:
        print(note)
    print()
    status = _print_result(setup, outcome, dimensions)
    sys.stdout.flush()
    # Times on stderr: stdout is the same for the same input.
    print(
        f"tune: {outcome.simulated} settings simulated in {searched:.1f}s "
        f"({searched_cpu:.1f}s of CPU); the optimum in "
        f"{time.monotonic() - started - searched:.1f}s",
        file=sys.stderr,
    )
    return status


def _search_line(setup: Setup, outcome: Outcome, searched: int) -> str:
    stopped = ""
    if outcome.stopped_early:
        stopped = f" ({outcome.stopped_early} stopped once they cost more than the best)"
    return (
        f"goal: a message's p95 wait <= {setup.max_p95:g}s at the least replica-seconds\n"
        f"searched: {outcome.simulated} combinations of {searched} settings{stopped}, "
        f"in {outcome.passes} passes of coordinate descent"
    )


def _print_result(setup: Setup, outcome: Outcome, dimensions: Sequence[Dimension]) -> int:
    name, best = setup.rule.name, outcome.best.summary
    if not outcome.meets:
        p95 = "never" if best is None or best.wait_p95 is None else f"{best.wait_p95:.1f}s"
        print(
            f"no setting searched meets a p95 wait <= {setup.max_p95:g}s: the lowest p95 found "
            f"is {p95} (column 'lowest p95'). More maxReplicas, a shorter start-up or a higher "
            "--max-p95-wait may."
        )
        return EXIT_NO_SOLUTION
    if outcome.best is outcome.today:
        print(f"today's settings are the cheapest found that meet the target: rule {name} stays.")
        return EXIT_OK
    entry, defaults = written_rule(setup.config, name)
    tuned = tuned_entry(entry, defaults, outcome, dimensions)
    try:
        check_snippet(tuned, defaults, outcome.best.rule, setup.config)
    except TuneError as exc:
        print(f"autoscaler.py tune: error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    print(f"rule {name} tuned, to paste in place of it in {setup.config}:")
    print()
    print(snippet(tuned), end="")
    return EXIT_OK
