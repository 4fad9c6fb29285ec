"""The simulator (eventscaler/simulate.py), the scenarios (scenarios.py) and `make compare`.

Scenarios covered:
- the accounting on a small case computed by hand: 20 messages, 4 replicas ready after 5 s, every
  figure exact (time to enough, peak, backlog message-seconds, replica-seconds, direction
  changes, time to zero, the writes)
- no-poll's figures exact, on that case and on the flood (its staircase down is summed by hand)
- the per-message wait (p50, p95, FIFO on the fluid) exact on cases computed by hand
- ours on the flood: 0 -> 20 at the first poll after the messages, 20 -> 0 once the cooldown
  after the last active poll has passed; figures exact
- the daemon's own decide() is what runs: called at every pollingInterval on the simulated
  clock, and record_scale is honoured (a scale-up policy of 4 pods per 60 s paces the writes)
- the worker model: replicas present at the start are ready, new ones after startupSeconds,
  scale-in removes the starting replicas first; visibleOnly leaves out in-flight messages;
  reading noise is deterministic and the same for every reader at one instant
- the built-in scenarios are deterministic and well formed; trace files: header, comments,
  unsorted and repeated times, and errors naming the file and the line
- `autoscaler.py simulate`: summary, --compare, --csv, --trace, --plot, and its usage errors
- `python -m eventscaler.compare`: the table (every scenario x ours / KEDA model / no-poll), the
  KEDA model labelled as a model, the table against the optimum (flood and batch-dump, whose
  bounds are the scenario's), a PNG per scenario; matplotlib and SciPy never imported by the
  daemon
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

import autoscaler
from eventscaler import compare
from eventscaler import simulate as sim
from eventscaler.config import (
    Behavior,
    Rule,
    ScaleTargetRef,
    ScalingPolicy,
    ScalingRules,
)
from eventscaler.scenarios import (
    SCENARIOS,
    Load,
    TraceError,
    load_trace,
    parse_trace,
    scenario,
)
from eventscaler.simulate import (
    BacklogView,
    KedaController,
    NoPoll,
    PolicyController,
    ScaleWrite,
    WorkerModel,
    count_direction_changes,
    read_values,
    simulate,
)
from eventscaler.sources.azure_queue import azure_queue_trigger

ROOT = Path(__file__).resolve().parent.parent


def make_rule(**overrides: object) -> Rule:
    values: dict[str, object] = {
        "name": "orders",
        "namespace": "default",
        "scale_target": ScaleTargetRef("orders-worker"),
        "triggers": (azure_queue_trigger("orders", queue_length=5.0),),
        "max_replicas": 10,
        "polling_interval": 10.0,
        "cooldown_period": 30.0,
    }
    values.update(overrides)
    return Rule(**values)  # type: ignore[arg-type]


SMALL = Load("small", "20 messages at t=0", ((0.0, 20),), duration=60.0)
SMALL_WORKERS = WorkerModel(processing_rate=1.0, startup_seconds=5.0)


def writes_of(run: sim.Run) -> list[tuple[float, int, int]]:
    return [(round(w.time, 6), w.current, w.target) for w in run.writes]


# ---------------------------------------------------------------------------------------------
# Hand-computed accounting


def test_small_case_ours_by_hand() -> None:
    # t=0: 20 messages, poll reads 20 -> ceil(20/5) = 4 replicas, ready at t=5.
    # t=5..10: 4 msg/s drain 20 -> 0. Last active poll t=0; cooldown 30 s -> 0 at the t=30 poll.
    run = simulate(PolicyController(make_rule()), make_rule(), SMALL, SMALL_WORKERS)
    assert writes_of(run) == [(0.0, 0, 4), (30.0, 4, 0)]
    s = run.summary
    assert s.time_to_enough == 5.0  # 4 ready at t=5, backlog 20 <= 4 x 5
    assert s.peak_backlog == 20.0
    assert s.backlog_message_seconds == pytest.approx(20 * 5 + (20 + 0) / 2 * 5)  # 150
    assert s.replica_seconds == pytest.approx(4 * 30)  # paid from the write, ready or not
    assert s.direction_changes == 1
    assert s.time_to_zero == pytest.approx(30 - 10)  # load over at t=10, zero at t=30
    assert s.scale_writes == 2
    assert s.backlog_at_end == 0.0


def test_small_case_no_poll_exact() -> None:
    # 4 ready at t=5 drain 4/s; at 15 left (t=6.25) it needs 3, at 10 (t=6.25+5/3) 2, at 5
    # (t=+2.5) 1, at 0 (t=+5) none: each step drains 5 messages.
    run = simulate(NoPoll(make_rule()), make_rule(), SMALL, SMALL_WORKERS)
    t1, t2, t3, t4 = 6.25, 6.25 + 5 / 3, 6.25 + 5 / 3 + 2.5, 6.25 + 5 / 3 + 2.5 + 5
    assert [(pytest.approx(t), a, b) for t, a, b in writes_of(run)] == [
        (0.0, 0, 4),
        (pytest.approx(t1), 4, 3),
        (pytest.approx(t2), 3, 2),
        (pytest.approx(t3), 2, 1),
        (pytest.approx(t4), 1, 0),
    ]
    s = run.summary
    backlog = (
        20 * 5 + (20 + 15) / 2 * 1.25 + (15 + 10) / 2 * (5 / 3) + (10 + 5) / 2 * 2.5 + 5 / 2 * 5
    )
    assert s.backlog_message_seconds == pytest.approx(backlog, rel=1e-12)  # 4175/24
    assert backlog == pytest.approx(4175 / 24)
    assert s.replica_seconds == pytest.approx(4 * 6.25 + 3 * 5 / 3 + 2 * 2.5 + 1 * 5, rel=1e-12)
    assert s.time_to_enough == 5.0
    assert s.time_to_zero == 0.0
    assert s.direction_changes == 1
    assert s.peak_backlog == 20.0


def test_small_case_wait_percentiles_by_hand() -> None:
    # FIFO on the fluid: message m (of 20, all at t=0) is taken when 4/s from t=5 reach it, at
    # 5 + m / 4: the waits are spread evenly over [5, 10]. p50 = 7.5, p95 = 5 + 0.95 x 5.
    # Their mean is the message-seconds per message: 150 / 20.
    s = simulate(PolicyController(make_rule()), make_rule(), SMALL, SMALL_WORKERS).summary
    assert s.wait_p50 == pytest.approx(7.5) and s.wait_p95 == pytest.approx(9.75)


def test_wait_percentiles_of_two_batches_that_overlap() -> None:
    # One replica always ready at 2.5 msg/s; 10 messages at t=0, 10 at t=2. The first batch is
    # taken over [0, 4] (waits spread over [0, 4]), the second over [4, 8] (waits over [2, 6]).
    # Half of all waits are <= w where w/4 + (w - 2)/4 = 1: w = 3. 95 %: 10 + 10 (w - 2)/4 = 19,
    # w = 5.6. A FIFO wait is not the wait of message 0.95 N (that one waited 5.8 s).
    rule = make_rule(min_replicas=1, max_replicas=1)
    load = Load("two", "10 at t=0 and at t=2", ((0.0, 10), (2.0, 10)), duration=60.0)
    run = simulate(PolicyController(rule), rule, load, WorkerModel(2.5, 5.0), initial_replicas=1)
    assert run.writes == ()
    assert (run.summary.wait_p50, run.summary.wait_p95) == (pytest.approx(3.0), pytest.approx(5.6))
    assert run.summary.backlog_message_seconds == pytest.approx(20 * (2 + 4) / 2)  # mean 3 s
    assert sim.wait_percentiles(load.arrivals, [(0.0, 0.0), (8.0, 20.0)], (0.5,)) == [3.0]


def test_wait_percentiles_of_messages_still_waiting_are_unknown() -> None:
    # Only 10 of 20 are taken: the median is the last taken (4 s), the 95th never comes.
    arrivals = ((0.0, 10), (2.0, 10))
    assert sim.wait_percentiles(arrivals, [(0.0, 0.0), (4.0, 10.0)], (0.5, 0.95)) == [4.0, None]
    assert sim.wait_percentiles((), [(0.0, 0.0)], (0.5,)) == [None]
    rule = make_rule(max_replicas=1)
    load = Load("x", "too much", ((0.0, 1000),), duration=50.0)
    summary = simulate(PolicyController(rule), rule, load, SMALL_WORKERS).summary
    assert summary.wait_p50 is None and summary.wait_p95 is None


FLOOD_RULE = compare.DEFAULT_RULE  # 0..20, target 5, poll 30 s, cooldown 300 s


def test_flood_ours_exact() -> None:
    # Messages at t=1; poll at t=30 -> 20 replicas, ready at 40, 20 msg/s empty the queue at 90.
    # With replicas the rule ticks every activePollingInterval (15 s): 45, 60, 75, 90. The tick
    # at 90 reads 0, so the last active tick is t=75; 300 s later (t=375) -> 0.
    run = simulate(PolicyController(FLOOD_RULE), FLOOD_RULE, scenario("flood"))
    assert writes_of(run) == [(30.0, 0, 20), (375.0, 20, 0)]
    s = run.summary
    assert s.time_to_enough == 39.0
    assert s.peak_backlog == 1000
    assert s.backlog_message_seconds == pytest.approx(1000 * 39 + 1000 * 50 / 2)
    assert s.replica_seconds == pytest.approx(20 * 345)
    assert s.time_to_zero == pytest.approx(375 - 90)
    assert s.direction_changes == 1
    # Waits spread over [39, 89]: the flood's messages are taken at 20/s from t=40.
    assert (s.wait_p50, s.wait_p95) == (pytest.approx(64.0), pytest.approx(39 + 0.95 * 50))


def test_flood_one_loop_every_polling_interval() -> None:
    # activePollingInterval = pollingInterval: one loop every 30 s, the previous default. The
    # last active poll is t=60 (t=90 reads 0), so zero at t=360.
    rule = replace(FLOOD_RULE, active_polling_interval=FLOOD_RULE.polling_interval)
    run = simulate(PolicyController(rule), rule, scenario("flood"))
    assert writes_of(run) == [(30.0, 0, 20), (360.0, 20, 0)]
    assert run.summary.replica_seconds == pytest.approx(20 * 330)
    assert run.summary.time_to_zero == pytest.approx(360 - 90)


def decision_times(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The `now` of every decide() the simulator makes from here on, in order."""
    seen: list[float] = []
    real = sim.decide

    def spy(rule, readings, current, state, now):  # type: ignore[no-untyped-def]
        seen.append(now)
        return real(rule, readings, current, state, now)

    monkeypatch.setattr(sim, "decide", spy)
    return seen


def test_the_rule_ticks_at_its_active_interval_while_it_has_replicas(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # pollingInterval 10 s at zero, 4 s from the write 0 -> 4 at t=0 until the write 4 -> 0.
    # 20 messages at t=0: 4 replicas ready at 5 drain them by t=10 (the tick at t=8 still reads
    # 8, so the last active tick is t=8); cooldown 30 s -> 0 at t=40, then every 10 s again.
    seen = decision_times(monkeypatch)
    rule = make_rule(active_polling_interval=4.0)
    run = simulate(PolicyController(rule), rule, replace(SMALL, duration=60.0), SMALL_WORKERS)
    assert writes_of(run) == [(0.0, 0, 4), (40.0, 4, 0)]
    assert seen == [0.0, 4.0, 8.0, 12.0, 16.0, 20.0, 24.0, 28.0, 32.0, 36.0, 40.0, 50.0, 60.0]


def test_flood_no_poll_exact() -> None:
    # 20 replicas at t=1, ready at 11; 20/s until 95 are left (t=56.25); then k = 19..1 replicas
    # each drain 5 messages in 5/k s; 0 when the queue is empty.
    run = simulate(NoPoll(FLOOD_RULE), FLOOD_RULE, scenario("flood"))
    s = run.summary
    staircase = sum((5 * k - 2.5) * 5 / k for k in range(1, 20))  # = 475 - 12.5 x H(19)
    assert staircase == pytest.approx(475 - 12.5 * sum(1 / k for k in range(1, 20)))
    assert s.backlog_message_seconds == pytest.approx(
        1000 * 10 + (1000 + 95) / 2 * 45.25 + staircase, rel=1e-12
    )
    assert s.replica_seconds == pytest.approx(20 * 55.25 + 19 * 5, rel=1e-12)  # each step: 5
    assert s.time_to_enough == 10.0  # exactly the start-up time: no polling delay
    assert s.time_to_zero == 0.0
    assert s.peak_backlog == 1000
    assert s.scale_writes == 1 + 19 + 1
    assert run.writes[0] == ScaleWrite(1.0, 0, 20, "no-poll: backlog 1000 needs 20")


# ---------------------------------------------------------------------------------------------
# The daemon's decide(), driven like the engine


def test_decide_is_called_at_each_poll_on_the_simulated_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = decision_times(monkeypatch)
    simulate(PolicyController(make_rule()), make_rule(), SMALL, SMALL_WORKERS)
    assert seen == [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0]


def test_record_scale_is_honoured_so_rate_policies_pace_the_writes() -> None:
    # 4 pods per 60 s: 0 -> 4 at t=0; the next +4 only once t=0 is out of the period (t=60).
    # Without record_scale the rule would add 4 at every 10 s poll.
    paced = Behavior(scale_up=ScalingRules(policies=(ScalingPolicy("Pods", 4, 60.0),)))
    rule = make_rule(max_replicas=20, behavior=paced)
    load = Load("big", "10,000 at t=0", ((0.0, 10_000),), duration=130.0)
    run = simulate(PolicyController(rule), rule, load, WorkerModel(0.001, 5.0))
    assert writes_of(run) == [(0.0, 0, 4), (60.0, 4, 8), (120.0, 8, 12)]


# ---------------------------------------------------------------------------------------------
# The worker model


def test_replicas_at_the_start_are_ready_and_new_ones_wait_for_start_up() -> None:
    rule = make_rule(min_replicas=2, max_replicas=2)
    run = simulate(PolicyController(rule), rule, SMALL, SMALL_WORKERS, initial_replicas=2)
    assert run.writes == ()
    assert run.samples[0].ready == 2
    # 2 msg/s from t=0: empty at t=10; backlog message-seconds 20 x 10 / 2.
    assert run.summary.backlog_message_seconds == pytest.approx(100.0)


def test_scale_in_removes_starting_replicas_first() -> None:
    world = sim._World(pods=[0.0, 0.0, 12.0, 15.0])  # two ready, two starting at t=10
    world.resize(3, ready_at=20.0, now=10.0)
    assert sorted(world.pods) == [0.0, 0.0, 12.0]  # the newest starting one went first
    world.resize(1, ready_at=20.0, now=10.0)
    assert world.pods == [0.0]
    world.resize(3, ready_at=20.0, now=10.0)
    assert world.ready(10.0) == 1 and world.ready(20.0) == 3


def test_readings_round_up_and_visible_only_leaves_out_in_flight() -> None:
    rule = make_rule(
        triggers=(
            azure_queue_trigger("all-queue", queue_length=5.0),
            azure_queue_trigger("visible", queue_length=5.0, queue_length_strategy="visibleOnly"),
        )
    )
    assert read_values(rule, SMALL, 3.0, 10.2, ready=4) == (11, 7)
    assert read_values(rule, SMALL, 3.0, 2.0, ready=4) == (2, 0)
    assert read_values(rule, SMALL, 3.0, 0.0, ready=0) == (0, 0)


def test_reading_noise_is_deterministic_and_shared_at_an_instant() -> None:
    noisy = Load("n", "noisy", ((0.0, 100),), duration=10.0, reading_noise=0.2, seed=3)
    rule = make_rule(triggers=(azure_queue_trigger("a-q"), azure_queue_trigger("b-q")))
    first = read_values(rule, noisy, 30.0, 100.0, ready=0)
    assert first == read_values(rule, noisy, 30.0, 100.0, ready=0)
    assert first[0] == first[1]  # both triggers read at one instant see the same error
    values = {read_values(rule, noisy, float(t), 100.0, ready=0)[0] for t in range(40)}
    assert len(values) > 5 and all(v >= 0 for v in values)


def test_direction_changes_count_reversals_only() -> None:
    def w(a: int, b: int) -> ScaleWrite:
        return ScaleWrite(0.0, a, b, "")

    assert count_direction_changes([]) == 0
    assert count_direction_changes([w(0, 1), w(1, 5), w(5, 10)]) == 0
    assert count_direction_changes([w(0, 5), w(5, 2), w(2, 4), w(4, 0)]) == 3


def test_keda_controller_and_no_poll_are_labelled() -> None:
    rule = make_rule()
    assert KedaController(rule).label == "KEDA model"
    assert NoPoll(rule).label == "no-poll"
    no_poll = NoPoll(make_rule(min_replicas=1))
    assert no_poll.needed(0.0) == 1 and no_poll.needed(5.0) == 1 and no_poll.needed(5.01) == 2
    assert no_poll.tick(0.0, BacklogView(1000.0, 0, (1000,)), 0)[0] == 10  # clamped to max


def test_a_load_that_is_never_drained_reports_never() -> None:
    rule = make_rule(max_replicas=1)
    load = Load("x", "too much", ((0.0, 1000),), duration=50.0)
    s = simulate(PolicyController(rule), rule, load, SMALL_WORKERS).summary
    assert s.time_to_zero is None and s.time_to_enough == 5.0 and s.backlog_at_end == 955
    assert "955 messages still waiting" in sim.format_summary(
        [simulate(PolicyController(rule), rule, load, SMALL_WORKERS)]
    )


# ---------------------------------------------------------------------------------------------
# Scenarios and traces


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_builtin_scenarios_are_deterministic_and_well_formed(name: str) -> None:
    load = scenario(name)
    assert load == scenario(name)
    assert load.name == name and load.total_messages > 0
    times = [t for t, _ in load.arrivals]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert all(count > 0 for _, count in load.arrivals)
    assert load.duration >= (load.last_arrival or 0) + 300  # room to scale back to zero


def test_flood_is_the_readme_story_and_unknown_scenarios_are_named() -> None:
    assert scenario("flood").arrivals == ((1.0, 1000),)
    assert scenario("steady-noisy").reading_noise > 0
    with pytest.raises(KeyError, match="unknown scenario 'nope'; known: flood, sawtooth"):
        scenario("nope")


def test_trace_with_header_comments_unsorted_and_repeated_times() -> None:
    text = "# a comment\ntime,messages\n\n10,5\n0,0\n2.5,7\n10, 3\n"
    load = parse_trace(text, "t.csv")
    assert load.arrivals == ((2.5, 7), (10.0, 8))
    assert load.duration == 10 + 900
    assert load.name == "t.csv" and load.total_messages == 15


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("time,messages\n1,2,3\n", "t.csv: line 2: expected 2 columns (time,messages), got 3"),
        ("1,ten\n", "t.csv: line 1: messages: expected a whole number >= 0, got 'ten'"),
        ("1,-4\n", "t.csv: line 1: messages: expected a whole number >= 0, got '-4'"),
        ("x,4\n", "t.csv: line 1: time: expected seconds >= 0, got 'x'"),
        ("-1,4\n", "t.csv: line 1: time: expected seconds >= 0, got '-1'"),
        ("nan,4\n", "t.csv: line 1: time: expected seconds >= 0, got 'nan'"),
        ("# only a comment\n", "t.csv: no rows"),
        ("1,2\ntime,messages\n", "t.csv: line 2: time: expected seconds >= 0, got 'time'"),
    ],
)
def test_trace_errors_name_the_file_and_line(text: str, message: str) -> None:
    with pytest.raises(TraceError) as caught:
        parse_trace(text, "t.csv")
    assert str(caught.value).startswith(message)


def test_missing_trace_file(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="cannot read the trace"):
        load_trace(tmp_path / "missing.csv")


# ---------------------------------------------------------------------------------------------
# `autoscaler.py simulate`


def write_rules(path: Path, *rules: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump({"rules": list(rules)}, sort_keys=False))
    return path


HELLO = {
    "name": "hello-keda",
    "deployment": "hello-keda",
    "maxReplicas": 20,
    "triggers": [{"type": "azure-queue", "queueName": "js-queue-items", "queueLength": 5}],
}


def test_simulate_command_prints_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = write_rules(tmp_path / "rules.yaml", HELLO)
    assert autoscaler.main(["simulate", "--config", str(rules), "--scenario", "flood"]) == 0
    out = capsys.readouterr().out
    assert "load flood: 1,000 messages at once at t=1s" in out
    assert "workers: 1 message/s per ready replica, ready 10s after it is created" in out
    for line in (
        "time from first message to enough replicas         39.0s",
        "peak backlog (messages)                            1,000",
        "backlog message-seconds (the waiting)             64,000",
        "replica-seconds (the cost)                         6,900",
        "direction changes (flapping)                           1",
        "time to zero after the load                       285.0s",
        "a message's wait, median (p50)                     64.0s",
        "a message's wait, 95th percentile (p95)            86.5s",
    ):
        assert line in out
    assert "t=   30.0s   0 -> 20  activated from zero" in out
    assert "KEDA model" not in out and "optimum" not in out


def test_simulate_compare_csv_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = write_rules(tmp_path / "rules.yaml", HELLO)
    csv_path, png = tmp_path / "out.csv", tmp_path / "out.png"
    argv = ["simulate", "--config", str(rules), "--scenario", "flood", "--compare"]
    argv += ["--csv", str(csv_path), "--plot", str(png), "--startup-seconds", "5"]
    assert autoscaler.main(argv) == 0
    out = capsys.readouterr().out
    assert "ours  KEDA model     no-poll  rate-aware" in out
    assert "a model built from KEDA's documented semantics, not KEDA itself" in out
    # Ready 5 s after the write: ours at t=35 (poll at 30), drains 20/s until 85:
    # 1,000 x 34 + 1,000 x 50 / 2 = 59,000. Knowing the flood, 20 replicas asked at t=0 are
    # ready at 5: 1,000 x 4 + 25,000 = 29,000 at 1,100 replica-seconds, well within ours' 6,600.
    assert "backlog message-seconds (the waiting)             59,000" in out
    assert "the optimum's waiting at the same cost               29,000" in out
    assert "  waiting / the optimum's (1.00x is the best)         2.03x" in out
    rows = csv_path.read_text().splitlines()
    assert rows[0].startswith("time,ours_backlog,ours_replicas,ours_ready,keda_model_backlog")
    assert rows[0].endswith(
        "no_poll_backlog,no_poll_replicas,no_poll_ready,"
        "rate_aware_backlog,rate_aware_replicas,rate_aware_ready"
    )
    assert len(rows) == 1 + 901  # t = 0..900, one a second
    assert rows[2].split(",")[:4] == ["1", "1000.000", "0", "0"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulate_a_trace_with_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = write_rules(tmp_path / "rules.yaml", HELLO, {**HELLO, "name": "other"})
    trace = tmp_path / "t.csv"
    trace.write_text("time,messages\n0,20\n")
    argv = ["simulate", "--config", str(rules), "--trace", str(trace), "--rule", "other"]
    argv += ["--processing-rate", "2", "--startup-seconds", "0", "--duration", "100"]
    assert autoscaler.main(argv) == 0
    out = capsys.readouterr().out
    assert "rule other:" in out and "100s simulated" in out
    assert "time from first message to enough replicas          0.0s" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--scenario", "flood"], "choose a rule with --rule NAME (valid rules: a, b)"),
        (["--scenario", "flood", "--rule", "c"], "no valid rule named 'c' (valid rules: a, b)"),
        (["--trace", "missing.csv", "--rule", "a"], "missing.csv: cannot read the trace"),
        (["--scenario", "flood", "--rule", "a", "--processing-rate", "0"], "--processing-rate"),
        (["--scenario", "flood", "--rule", "a", "--duration", "-1"], "--duration must be > 0"),
    ],
)
def test_simulate_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    rules = write_rules(tmp_path / "r.yaml", {**HELLO, "name": "a"}, {**HELLO, "name": "b"})
    assert autoscaler.main(["simulate", "--config", str(rules), *extra]) == 2
    assert message in capsys.readouterr().err


def test_simulate_needs_a_scenario_or_a_trace(tmp_path: Path) -> None:
    rules = write_rules(tmp_path / "r.yaml", HELLO)
    with pytest.raises(SystemExit):
        autoscaler.main(["simulate", "--config", str(rules)])
    with pytest.raises(SystemExit):
        autoscaler.main(["simulate", "--config", str(rules), "--scenario", "nope"])


# ---------------------------------------------------------------------------------------------
# `make compare`


def test_compare_table_has_every_scenario_and_controller(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert compare.main(["--out", str(tmp_path), "--no-plots", "--no-optimum"]) == 0
    out = capsys.readouterr().out
    assert "KEDA model: built from KEDA's documented semantics, not KEDA itself" in out
    assert "batch-dump: maxReplicas 100, the scenario's story" in out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("scenario"))
    assert "backlog msg*s  wait p50  wait p95  replica*s" in lines[header]
    rows = [line for line in lines[header + 1 :] if line.strip()]
    assert len(rows) == 4 * len(SCENARIOS)
    assert [row.split()[0] for row in rows[::4]] == list(SCENARIOS)
    for four in zip(rows[::4], rows[1::4], rows[2::4], rows[3::4], strict=True):
        assert " ours " in four[0] and "KEDA model" in four[1] and "no-poll" in four[2]
        assert "rate-aware" in four[3]
    assert "against the optimum" not in out
    assert list(tmp_path.iterdir()) == []


def test_compare_against_the_optimum(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--scenario", "flood", "--scenario", "batch-dump", "--no-plots"]
    assert compare.main(argv) == 0
    out = capsys.readouterr().out
    rows = out.split("against the optimum")[1].splitlines()
    # flood: knowing it, 20 replicas asked at t=0 are ready at 10 and drain it by 60:
    # 1,000 x 9 + 1,000 x 50 / 2 = 34,000 message-seconds for 1,200 replica-seconds. At ours'
    # waiting (64,000), n replicas from t=0 wait 9,000 + 10^6 / (2n): n = 9.09, and cost
    # n x 10 s of start-up + 1,000 s of work = 1,091.
    flood = next(row for row in rows if row.startswith("flood"))
    # Ours holds 20 replicas from t=30 to the step to zero at t=375: 6,900 replica-seconds.
    assert flood.split()[2:] == ["64,000", "6,900", "34,000", "1.88x", "1,091", "6.33x"]
    # batch-dump, at the scenario's 100 replicas: ours has 100 ready at 40 (poll at 30), which
    # drain 100/s for 500 s: 50,000 x 39 + 50,000 x 250 = 14,450,000; the tick at 540 reads 0,
    # so 100 replicas from 30 to 825 (525 + 300): 79,500. The optimum's are ready at 10:
    # 50,000 x 9 + 12,500,000 = 12,950,000.
    batch = next(row for row in rows if row.startswith("batch-dump"))
    assert batch.split()[2:5] == ["14,450,000", "79,500", "12,950,000"]
    assert batch.split()[5] == "1.12x"
    assert "12 linear programs solved by SciPy's HiGHS in" in out


def test_compare_markdown_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--scenario", "flood", "--out", str(tmp_path / "plots"), "--markdown"]
    assert compare.main(argv) == 0
    out = capsys.readouterr().out
    row = "| flood | ours | 39.0s | 1,000 | 64,000 | 64.0s | 86.5s | 6,900 | 1 | 285.0s | 2 |"
    assert row in out
    assert "| flood | KEDA model | 84.0s |" in out
    assert "| flood | ours | 64,000 | 6,900 | 34,000 | 1.88x | 1,091 | 6.33x |" in out
    png = tmp_path / "plots" / "flood.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size < 150_000


def test_compare_with_a_rule_file_and_a_polling_override(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = write_rules(tmp_path / "r.yaml", HELLO)
    argv = ["--config", str(rules), "--scenario", "flood", "--no-plots", "--polling-interval", "15"]
    assert compare.main(argv) == 0
    out = capsys.readouterr().out
    assert "pollingInterval 15s" in out and "24.0s" in out  # 0 -> 20 at t=15, ready at 25
    assert compare.main(["--config", str(rules), "--rule", "x", "--no-plots"]) == 2


def test_simulate_and_compare_without_scipy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A machine with the runtime requirements only: everything but the optimum still works.
    monkeypatch.setitem(sys.modules, "scipy.optimize", None)  # `import` now fails
    rules = write_rules(tmp_path / "rules.yaml", HELLO)
    argv = ["simulate", "--config", str(rules), "--scenario", "flood", "--compare"]
    assert autoscaler.main(argv) == 0
    out = capsys.readouterr().out
    assert "backlog message-seconds (the waiting)             64,000      95,065" in out
    assert "the optimum needs SciPy" in out and "pip install -r requirements-dev.txt" in out
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "scipy" else real(name, *a)
    )
    assert compare.main(["--scenario", "flood", "--no-plots"]) == 2
    captured = capsys.readouterr()
    assert "| flood |" not in captured.out and "ours " in captured.out
    assert "against the optimum" not in captured.out
    assert "compare: the optimum needs SciPy" in captured.err
    assert compare.main(["--scenario", "flood", "--no-plots", "--no-optimum"]) == 0


def test_the_daemon_and_the_simulator_never_import_matplotlib_or_scipy() -> None:
    code = (
        "import sys, autoscaler, eventscaler.simulate, eventscaler.compare, eventscaler.convert\n"
        "import eventscaler.optimum, eventscaler.daemon, eventscaler.engine\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported'\n"
        "assert 'scipy' not in sys.modules, 'scipy imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_docs_flood_plot_is_small() -> None:
    plot = ROOT / "docs" / "flood.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot.stat().st_size < 150_000
