"""The opt-in rate-aware sizing (eventscaler/rate_aware.py through policy.decide) and its fields.

Scenarios covered:
- decisions worked out by hand: from zero, the backlog alone (no rate yet); a busy interval's flow
  balance; an idle interval bounded by mu x backlog, the median of the samples (or their rising
  trend), and the same
  stabilization window as every rule; samples older than the window are dropped
- the reason shows the estimate: arrivals, the samples, backlog, processingRate, needed replicas
- processingRate derived from observed drain: the queue-length arithmetic until a drain is seen,
  then the lower bound of mu it gives, said in the reason
- a reading it did not get: all failed holds and leaves the estimate alone; a formula with a
  failed trigger never scales down
- steady-noisy on the simulator: no direction change while the load lasts (the one change is
  the step to zero after it), and the simulator and compare show a rate-aware run
- the rule fields: defaults, `observed`, and every bad value named by file, rule and field
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from eventscaler.config import (
    DEFAULT_RATE_WINDOW_SECONDS,
    DEFAULT_TARGET_DRAIN_SECONDS,
    RateAware,
    Rule,
    ScaleTargetRef,
    parse_rules_text,
)
from eventscaler.policy import Decision, Reading, RuleState, decide, initial_state
from eventscaler.rate_aware import TREND_SAMPLES, RateMemory, estimate, thinned
from eventscaler.scenarios import scenario
from eventscaler.simulate import (
    RATE_AWARE_LABEL,
    PolicyController,
    WorkerModel,
    compare_runs,
    simulate,
)
from eventscaler.sources.azure_queue import azure_queue_trigger

T0 = 1_000.0


def rate_rule(rate: float | None = 2.0, drain: float = 10.0, window: float = 60.0) -> Rule:
    return Rule(
        "orders",
        "shop",
        ScaleTargetRef("orders"),
        (azure_queue_trigger("orders", queue_length=5.0),),
        max_replicas=20,
        rate_aware=RateAware(rate, drain, window),
    )


def tick(rule: Rule, value: float | None, current: int, state: RuleState, at: float) -> Decision:
    reading = Reading("orders", value, None if value is not None else "timed out")
    return decide(rule, [reading], current, state, T0 + at)


def test_from_zero_the_backlog_alone_sizes_then_a_busy_interval_gives_the_rate() -> None:
    rule = rate_rule()
    # t=0: no earlier reading, so no arrival sample: ceil((0 + 100/10) / 2) = 5 (the queue-length
    # arithmetic would ask for ceil(100/5) = 20).
    first = tick(rule, 100, 0, initial_state(T0), 0)
    assert first.target == 5
    # t=15, 5 replicas (none of them there at t=0, so none counted as working): the flow balance
    # (130 - 100) / 15 + 2 x 0 = 2 msg/s, and the interval was busy (100 >= 2 x 0 x 15):
    # ceil((2 + 130/10) / 2) = ceil(7.5) = 8, far outside the tolerance of 5.
    second = tick(rule, 130, 5, first.state, 15)
    assert second.target == 8
    assert [value for _, value in second.state.rate.samples] == [2.0]


def test_an_idle_interval_is_bounded_by_the_backlog_and_the_window_holds_the_count() -> None:
    rule = rate_rule()
    first = tick(rule, 100, 0, initial_state(T0), 0)
    second = tick(rule, 130, 5, first.state, 15)
    # t=30, 8 replicas: 5 worked throughout. Flow (40 - 130) / 15 + 2 x 5 = 4, but 130 < 2 x 5 x
    # 15 = 150, so they may have idled: the sample is min(4, 2 x 40) = 4. Median of [2, 4] = 3:
    # ceil((3 + 40/10) / 2) = 4, which the 300 s scale-down window does not let through.
    third = tick(rule, 40, 8, second.state, 30)
    assert [value for _, value in third.state.rate.samples] == [2.0, 4.0]
    assert (third.target, third.step) == (8, "stabilization")
    # t=45: 10 read at 8 replicas. Flow (10 - 40) / 15 + 2 x 8 = 14; idle (40 < 240): the sample
    # is min(14, 2 x 10) = 14. [2, 4, 14] rises in all 3 pairs (slopes 2/15, 12/30, 10/15), so
    # the trend counts: median slope 0.4 msg/s per s, and the line now is median(2 + 0.4 x 30,
    # 4 + 0.4 x 15, 14) = 14, over the median 4: ceil((14 + 1) / 2) = 8, the count as it is.
    fourth = tick(rule, 10, 8, third.state, 45)
    assert [value for _, value in fourth.state.rate.samples] == [2.0, 4.0, 14.0]
    assert "arrivals 14 msg/s (trend of 3 samples, rising 0.4 msg/s per s)" in fourth.reason
    assert fourth.target == 8
    # t=90: the samples of t=15 and t=30 are 60 s old or more, out of the 60 s window.
    fifth = tick(rule, 10, 8, fourth.state, 90)
    assert [when - T0 for when, _ in fifth.state.rate.samples] == [45.0, 90.0]


def test_a_trend_counts_only_when_most_pairs_of_samples_rise() -> None:
    mode = RateAware(1.0, 10.0, 600.0)

    def arrivals(values: list[float]) -> tuple[float, float | None]:
        memory = RateMemory(samples=tuple((15.0 * i, v) for i, v in enumerate(values)))
        sizing = estimate(mode, memory, 0.0, 0, 15.0 * (len(values) - 1), 20)[1]
        return sizing.arrivals, sizing.trend

    # A ramp of 1 msg/s every 15 s: the median (2) lags it; the line is at 4 now.
    assert arrivals([0, 1, 2, 3, 4]) == (4.0, pytest.approx(1 / 15))
    # Noise about a level of 8: 7 of the 10 pairs rise, under 80 %: the median, no trend.
    assert arrivals([8, 7, 9, 8, 10]) == (8.0, None)
    # A fall never goes through the line: the median holds until the window moves on.
    assert arrivals([4, 3, 2, 1, 0]) == (2.0, None)
    # Two samples are one pair: too few to tell a trend from noise.
    assert arrivals([1, 5]) == (3.0, None)


def test_a_long_window_is_thinned_before_its_pairs_are_compared() -> None:
    # 120 samples, 5 s apart (600 s at a 5 s interval): 24 of them, the first and last kept,
    # evenly spread: index round(i x 119 / 23).
    samples = tuple((5.0 * i, float(i)) for i in range(120))
    kept = thinned(samples, TREND_SAMPLES)
    assert len(kept) == TREND_SAMPLES == 24
    assert (kept[0], kept[-1]) == (samples[0], samples[-1])
    assert [when for when, _ in kept][:4] == [0.0, 25.0, 50.0, 80.0]  # indices 0, 5, 10, 16
    assert thinned(samples[:24], 24) == samples[:24]
    # The thinned samples still carry the ramp: 1 msg/s every 5 s, 119 now, over the median 59.5.
    mode = RateAware(1.0, 10.0, 600.0)
    sizing = estimate(mode, RateMemory(samples=samples), 0.0, 0, 5.0 * 119, 200)[1]
    assert (sizing.arrivals, sizing.trend) == (pytest.approx(119.0), pytest.approx(0.2))


def test_the_reason_shows_the_estimate() -> None:
    rule = rate_rule()
    first = tick(rule, 100, 0, initial_state(T0), 0)
    second = tick(rule, 130, 5, first.state, 15)
    assert second.reason == (
        "backlog needs 8; rate-aware: arrivals 2 msg/s (median of 1 sample(s)), backlog 130, "
        "processingRate 2 msg/s per replica: (2 + 130/10s) / 2 -> 8 replica(s) needed; "
        "readings orders=130/5"
    )


def test_a_processing_rate_derived_from_observed_drain() -> None:
    rule = rate_rule(rate=None)
    # No drain seen yet: the queue-length arithmetic, ceil(100 / 5) = 20, and the reason says so.
    first = tick(rule, 100, 0, initial_state(T0), 0)
    assert first.target == 20
    assert "rate-aware: no drain observed yet" in first.reason
    second = tick(rule, 40, 20, first.state, 15)  # none of the 20 was there at t=0
    assert second.state.rate.drain is None
    # t=30: 20 replicas worked throughout and the backlog fell 40 -> 10 without emptying: mu is at
    # least 30 / (20 x 15) = 0.1. Flow (10 - 40) / 15 + 0.1 x 20 = 0, busy (40 >= 30): arrivals
    # 0, so ceil((0 + 10/10) / 0.1) = 10, held at 20 by the window.
    third = tick(rule, 10, 20, second.state, 30)
    assert third.state.rate.drain == (T0 + 30, pytest.approx(0.1))
    assert "processingRate 0.1 msg/s per replica (observed drain)" in third.reason
    assert "-> 10 replica(s) needed" in third.reason
    assert third.target == 20


def test_a_reading_it_did_not_get_holds_and_leaves_the_estimate_alone() -> None:
    rule = rate_rule()
    first = tick(rule, 100, 0, initial_state(T0), 0)
    second = tick(rule, 130, 5, first.state, 15)
    failed = tick(rule, None, 8, second.state, 30)
    assert failed.target == 8
    assert failed.state.rate == second.state.rate


def test_a_formula_with_a_failed_trigger_never_scales_down() -> None:
    text = yaml.safe_dump(
        {
            "rules": [
                {
                    "name": "orders",
                    "deployment": "orders",
                    "triggers": [
                        {"type": "azure-queue", "queueName": "aaa", "name": "a"},
                        {"type": "azure-queue", "queueName": "bbb", "name": "b"},
                    ],
                    "scalingModifiers": {"formula": "a + (b ?? 0)", "target": 5},
                    "rateAware": {"processingRate": 1},
                }
            ]
        }
    )
    result = parse_rules_text(text, "rules.yaml")
    assert result.ok, [str(p) for p in result.problems]
    (rule,) = result.rules
    readings = [Reading("a", 0.0), Reading("b", None, "timed out")]
    decision = decide(rule, readings, 10, initial_state(T0), T0 + 600)
    assert decision.target == 10
    assert decision.state.rate.last is None  # nothing folded into the estimate


def test_steady_noisy_never_flaps() -> None:
    # The count climbs, then only ever comes down: one direction change, the least a run that
    # goes 0 -> N -> 0 can have (the queue-length default has 11 on this load).
    load = scenario("steady-noisy")
    rule = rate_rule(rate=1.0, drain=DEFAULT_TARGET_DRAIN_SECONDS, window=60.0)
    run = simulate(PolicyController(rule), rule, load, WorkerModel())
    ups = [i for i, w in enumerate(run.writes) if w.target > w.current]
    downs = [i for i, w in enumerate(run.writes) if w.target < w.current]
    assert ups and downs and max(ups) < min(downs)
    assert run.summary.direction_changes == 1
    assert run.writes[-1].target == 0


def test_compare_runs_has_a_rate_aware_run_at_the_workers_rate() -> None:
    rule = Rule("o", "shop", ScaleTargetRef("o"), (azure_queue_trigger("o", queue_length=5.0),))
    runs = compare_runs(rule, scenario("flood"), WorkerModel(processing_rate=2.0))
    assert [r.label for r in runs] == ["ours", "KEDA model", "no-poll", RATE_AWARE_LABEL]
    # t=0 reads 0 (the flood comes at t=1); t=30 reads 1,000: to the estimate the 30 s between the
    # two brought 1,000 / 30 msg/s (one sample, so the median): ceil((33.3 + 1000/10) / 2) = 67.
    # A burst looks like a rate until the window's later samples outvote it.
    assert (runs[3].writes[0].time, runs[3].writes[0].target) == (30.0, 67)


# -- the fields ---------------------------------------------------------------------------------


def load(rate_aware: Any, triggers: int = 1, **fields: Any) -> Any:
    entry = {
        "name": "orders",
        "deployment": "orders",
        "triggers": [{"type": "azure-queue", "queueName": f"queue{i}"} for i in range(triggers)],
        "rateAware": rate_aware,
        **fields,
    }
    return parse_rules_text(yaml.safe_dump({"rules": [entry]}), "rules.yaml")


def test_the_fields_and_their_defaults() -> None:
    (rule,) = load({"processingRate": 2.5}).rules
    assert rule.rate_aware == RateAware(
        2.5, DEFAULT_TARGET_DRAIN_SECONDS, DEFAULT_RATE_WINDOW_SECONDS
    )
    assert (DEFAULT_TARGET_DRAIN_SECONDS, DEFAULT_RATE_WINDOW_SECONDS) == (10.0, 60.0)
    spelled = {"processingRate": "Observed", "targetDrainSeconds": "1m", "windowSeconds": 120}
    (observed,) = load(spelled).rules
    assert observed.rate_aware == RateAware(None, 60.0, 120.0)
    (plain,) = load(None).rules
    assert plain.rate_aware is None


@pytest.mark.parametrize(
    ("block", "triggers", "expected"),
    [
        ({}, 1, "rateAware.processingRate: is required"),
        ({"processingRate": 0}, 1, "rateAware.processingRate: expected a positive number, got 0"),
        ({"processingRate": "fast"}, 1, "processingRate: expected messages per second per replica"),
        ({"processingRate": 0.0001}, 1, "processingRate: expected a number of at least 0.001"),
        ({"processingRate": 1, "targetDrainSeconds": 0}, 1, "rateAware.targetDrainSeconds: "),
        ({"processingRate": 1, "windowSeconds": 4000}, 1, "windowSeconds: expected at most 3600"),
        ({"processingRate": 1, "window": 60}, 1, "rateAware.window: unknown field"),
        ({"processingRate": 1}, 2, "rateAware: sizes for one backlog: give one trigger"),
        ("yes", 1, "rateAware: expected a mapping"),
    ],
)
def test_bad_values_name_the_file_rule_and_field(block: Any, triggers: int, expected: str) -> None:
    result = load(block, triggers)
    assert result.rules == ()
    lines = [str(p) for p in result.problems]
    assert len(lines) == 1, lines
    assert lines[0].startswith("rules.yaml: rules[0] (orders).rateAware")
    assert expected in lines[0]


def test_a_bad_default_is_fatal_and_named() -> None:
    text = yaml.safe_dump(
        {
            "defaults": {"rateAware": {"processingRate": -1}},
            "rules": [{"name": "a", "deployment": "a", "triggers": [{"type": "cron"}]}],
        }
    )
    result = parse_rules_text(text, "rules.yaml")
    assert result.fatal
    assert str(result.problems[0]).startswith("rules.yaml: defaults.rateAware.processingRate: ")
