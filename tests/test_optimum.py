"""The optimum (eventscaler/optimum.py): the best schedule knowing the whole load, a lower bound.

Scenarios covered:
- one burst, start-up 10 s: the least waiting for a cost budget and the least cost for a waiting
  budget, solved on paper (below), exact where the drain ends on the grid, never above the paper
  value elsewhere
- one burst, start-up 0: the cost is the work, whatever the waiting; below the least waiting
  there is no schedule; a budget smaller than the work leaves messages waiting to the end
- replicas ready at t=0, minReplicas with no load, a budget below minReplicas x horizon
- the frontier: cost rising, waiting falling, and convex (a linear program's value function)
- the bound holds against real controllers: at ours' (and the KEDA model's) cost the optimum waits
  no longer, and at their waiting it costs no more; and it never beats the hand lower bound of
  the flood
- the bound is close: whole pods asked for a start-up ahead of the optimum's work, replayed in the
  simulator, cost no more and wait within 5 % of it (flood: exactly)
- deterministic; bad bounds and too short horizons named (SciPy imported only to solve:
  tests/test_simulate.py)
"""

from __future__ import annotations

import math

import pytest

from eventscaler import compare
from eventscaler.optimum import (
    Bounds,
    Optimum,
    OptimumError,
    arrival_areas,
    arrivals_before,
    frontier,
    make_grid,
    optimum_at_cost,
    optimum_at_waiting,
    yardstick,
)
from eventscaler.scenarios import Load, scenario
from eventscaler.simulate import (
    BacklogView,
    KedaController,
    PolicyController,
    WorkerModel,
    simulate,
)

# One burst of N = 1,000 messages at t=0; rate p = 1 message/s per replica, start-up s = 10 s.
# On paper: a schedule whose ready replicas peak at n has paid s for each of them, and p x cost
# of work, so cost >= n s + N / p; nothing is processed before s and then at most p n per second,
# so waiting >= N s + N^2 / (2 p n). Both are met at once by n replicas asked for at t=0 that go
# when the queue is empty. So at a cost C the least waiting is N s + N^2 s / (2 (p C - N)):
#   C = 1,100: n = 10, waiting 10,000 + 50,000 = 60,000 (the drain ends at t = 110)
#   C = 1,200: n = 20, waiting 10,000 + 25,000 = 35,000 (ends at t = 60)
#   C = 1,500: n = 50, waiting 10,000 + 10,000 = 20,000 (ends at t = 30)
#   C = 1,300: n = 30, waiting 10,000 + 16,666.7 (ends at t = 43.3, between two 5 s steps)
# The horizon is long (3,000 s) so that leaving messages waiting to the end never pays.
BURST = Load("burst", "1,000 at t=0", ((0.0, 1000),), duration=3000.0)
WORKERS = WorkerModel(processing_rate=1.0, startup_seconds=10.0)
WIDE = Bounds(min_replicas=0, max_replicas=100)


def paper_waiting(cost: float) -> float:
    return 1000 * 10 + 1000**2 * 10 / (2 * (cost - 1000))


@pytest.mark.parametrize("cost", [1100.0, 1200.0, 1500.0])
def test_burst_least_waiting_at_a_cost_is_the_paper_value(cost: float) -> None:
    best = optimum_at_cost(BURST, WIDE, WORKERS, cost)
    assert best.waiting == pytest.approx(paper_waiting(cost), rel=1e-7)
    assert best.cost <= cost + 1e-6
    assert best.step == 5.0


@pytest.mark.parametrize(("waiting", "cost"), [(60_000.0, 1100.0), (35_000.0, 1200.0)])
def test_burst_least_cost_at_a_waiting_is_the_paper_value(waiting: float, cost: float) -> None:
    best = optimum_at_waiting(BURST, WIDE, WORKERS, waiting)
    assert best.cost == pytest.approx(cost, rel=1e-7)
    assert best.waiting <= waiting * (1 + 1e-7)
    assert sum(best.replicas) * best.step == pytest.approx(best.cost)
    # Nothing can be ready before t=10, so the replicas of the first 10 s only start up.
    assert best.replicas[0] > 0 and best.replicas[1] > 0


def test_burst_off_the_grid_is_a_lower_bound_close_to_the_paper_value() -> None:
    best = optimum_at_cost(BURST, WIDE, WORKERS, 1300.0)
    assert paper_waiting(1300.0) * 0.999 <= best.waiting <= paper_waiting(1300.0)


def test_burst_without_start_up_costs_the_work_it_does() -> None:
    # Start-up 0, p = 2, at most 10 replicas, 200 s: every replica-second busy does 2 messages,
    # so processing M messages costs M / 2, and waits least done at 20/s from t=0:
    # M (2,000 - M) / 40 while draining, then (1,000 - M) (200 - M / 20) for those left.
    # All of them (M = 1,000): 25,000 for 500; none below that exists. A waiting budget of
    # 89,000 is met by M = 600 (21,000 + 400 x 170), for 300.
    load = Load("burst", "1,000 at t=0", ((0.0, 1000),), duration=200.0)
    workers, bounds = WorkerModel(2.0, 0.0), Bounds(0, 10)
    assert optimum_at_waiting(load, bounds, workers, 25_000.0).cost == pytest.approx(500.0)
    assert optimum_at_waiting(load, bounds, workers, 89_000.0).cost == pytest.approx(300.0)
    assert optimum_at_waiting(load, bounds, workers, 200_000.0).cost == pytest.approx(0.0)
    assert optimum_at_cost(load, bounds, workers, 500.0).waiting == pytest.approx(25_000.0)
    with pytest.raises(OptimumError, match="no schedule meets a waiting of 24,000"):
        optimum_at_waiting(load, bounds, workers, 24_000.0)
    # 400 replica-seconds do 800 messages: at 20/s from t=0 until t=40 (an area of
    # (1,000 + 200) / 2 x 40 = 24,000), then 200 messages wait to the end, 160 s: 32,000.
    assert optimum_at_cost(load, bounds, workers, 400.0).waiting == pytest.approx(56_000.0)


def test_replicas_ready_at_the_start_work_at_once() -> None:
    # 5 replicas ready at t=0 (at most 5), 100 messages: 5/s drain them by t=20; waiting
    # 100 x 20 / 2 = 1,000, cost the work alone, 100 (they go when the queue is empty).
    load = Load("small", "100 at t=0", ((0.0, 100),), duration=100.0)
    bounds = Bounds(0, 5, initial_replicas=5)
    assert optimum_at_cost(load, bounds, WORKERS, 1000.0).waiting == pytest.approx(1000.0)
    assert optimum_at_waiting(load, bounds, WORKERS, 1000.0).cost == pytest.approx(100.0)
    # Without them, nothing works before t=10: at least 100 x 10 more waiting.
    cold = optimum_at_cost(load, Bounds(0, 5), WORKERS, 1000.0)
    assert cold.waiting == pytest.approx(2000.0)


def test_no_other_replica_is_ready_before_the_first_start_up() -> None:
    # 2 replicas ready at t=0 (of at most 20), 40 messages at t=0: the 2 drain 2/s until the
    # others asked for at t=0 are ready at 10 (20 left), then 20/s empty the queue by t=11:
    # (40 + 20) / 2 x 10 + 20 x 1 / 2 = 310, at any cost.
    load = Load("warm", "40 at t=0", ((0.0, 40),), duration=100.0)
    best = optimum_at_cost(load, Bounds(0, 20, initial_replicas=2), WORKERS, 5000.0)
    assert 310 * (1 - 1 / 128) <= best.waiting <= 310 + 1e-9
    # Its cost is where the bound is loose: on paper 20 replicas for [0, 11] (220); the bound
    # sees only step averages, so the work of [10, 11] needs the peak over [5, 10], not over
    # [0, 1] too: about one step (5 s) of start-up short for each of the 18 replicas added.
    cost = optimum_at_waiting(load, Bounds(0, 20, initial_replicas=2), WORKERS, 310.0).cost
    assert 220 - 18 * 5 <= cost <= 220


def test_min_replicas_are_paid_for_all_along() -> None:
    quiet = Load("quiet", "nothing", (), duration=100.0)
    bounds = Bounds(min_replicas=2, max_replicas=4)
    best = optimum_at_waiting(quiet, bounds, WORKERS, 0.0)
    assert best.cost == pytest.approx(200.0) and best.waiting == pytest.approx(0.0)
    with pytest.raises(OptimumError, match="no schedule meets a cost of 150"):
        optimum_at_cost(quiet, bounds, WORKERS, 150.0)


def test_frontier_is_monotone_and_convex() -> None:
    load = Load(
        "two-bursts",
        "300 at t=3, 500 at t=120",
        ((3.0, 300), (120.0, 500)),
        duration=600.0,
    )
    points = frontier(load, Bounds(0, 20), WORKERS, points=6)
    costs = [p.cost for p in points]
    waits = [p.waiting for p in points]
    assert costs == sorted(costs) and costs[0] == pytest.approx(0.0)
    assert all(a >= b - 1e-6 for a, b in zip(waits, waits[1:], strict=False))
    assert waits[0] == pytest.approx(300 * 597 + 500 * 480)  # nothing ever processed
    pairs = list(zip(costs, waits, strict=True))
    slopes = [(w2 - w1) / (c2 - c1) for (c1, w1), (c2, w2) in zip(pairs, pairs[1:], strict=False)]
    assert all(a <= b + 1e-6 for a, b in zip(slopes, slopes[1:], strict=False))
    # The last point waits least: 300 and 500 messages each drained at 20/s from the instant
    # replicas asked for 10 s before can be ready (t=10 for the first: the load starts at 0).
    assert waits[-1] == pytest.approx(300 * 7 + 300**2 / 40 + 500**2 / 40)
    with pytest.raises(OptimumError, match="2 points or more"):
        frontier(load, Bounds(0, 20), WORKERS, points=1)


def test_flood_never_beats_the_hand_lower_bound() -> None:
    # Whatever the cost: asked for at t=0 at the earliest, replicas are ready at 10, so the
    # 1,000 messages of t=1 wait 9 s each at least, and 20 replicas drain at most 20/s:
    # waiting >= 9,000 + 1,000^2 / 40 = 34,000. It takes 1,200 replica-seconds (20 replicas
    # from t=0 to 60); any less waits longer.
    flood = scenario("flood")
    bounds = Bounds(0, 20)
    for cost in (1200.0, 3000.0, 20_000.0):
        assert optimum_at_cost(flood, bounds, WORKERS, cost).waiting >= 34_000 - 1e-6
    assert optimum_at_cost(flood, bounds, WORKERS, 1200.0).waiting == pytest.approx(34_000)
    assert optimum_at_cost(flood, bounds, WORKERS, 1100.0).waiting > 34_000 + 1000
    assert optimum_at_waiting(flood, bounds, WORKERS, 34_000.0).cost == pytest.approx(1200)


@pytest.mark.parametrize("name", ["flood", "sawtooth", "bursty"])
def test_no_controller_beats_the_optimum(name: str) -> None:
    load, rule = scenario(name), compare.DEFAULT_RULE
    bounds = Bounds(rule.min_replicas, rule.max_replicas)
    for controller in (PolicyController(rule), KedaController(rule)):
        figures = simulate(controller, rule, load, WORKERS).summary
        mark = yardstick(
            load, bounds, WORKERS, figures.backlog_message_seconds, figures.replica_seconds
        )
        assert mark.optimum_waiting <= figures.backlog_message_seconds + 1e-6
        assert mark.optimum_cost <= figures.replica_seconds + 1e-6
        assert mark.waiting_ratio >= 1.0 and mark.cost_ratio >= 1.0
        assert mark.solve_seconds > 0


def test_deterministic() -> None:
    first = optimum_at_cost(scenario("bursty"), Bounds(0, 20), WORKERS, 20_000.0)
    again = optimum_at_cost(scenario("bursty"), Bounds(0, 20), WORKERS, 20_000.0)
    assert (first.waiting, first.cost, first.replicas) == (
        again.waiting,
        again.cost,
        again.replicas,
    )


def test_the_grid_divides_the_start_up_and_refines_where_messages_arrive() -> None:
    grid = make_grid(scenario("flood"), 900.0, startup=10.0)
    assert grid.step == 5.0 and grid.steps == 180 and grid.startup_steps == 2
    assert [s for s in grid.substeps if s[2] == 0] == [(float(j), 1.0, 0) for j in range(5)]
    assert [s for s in grid.substeps if s[2] == 1] == [(5.0, 5.0, 1)]  # no arrival: one piece
    odd = make_grid(scenario("flood"), 900.0, startup=7.0)
    assert odd.step == 3.5 and odd.startup_steps == 2


def test_bad_input_is_named() -> None:
    with pytest.raises(OptimumError, match="replica bounds"):
        optimum_at_cost(BURST, Bounds(5, 2), WORKERS, 1000.0)
    with pytest.raises(OptimumError, match="processing rate"):
        optimum_at_cost(BURST, WIDE, WorkerModel(0.0, 10.0), 1000.0)
    with pytest.raises(OptimumError, match="shorter than one step"):
        optimum_at_cost(BURST, WIDE, WORKERS, 1000.0, duration=2.0)


def test_arrivals_off_the_grid_count_from_their_instant() -> None:
    load = Load("odd", "10 at t=0.5, 4 at t=1", ((0.5, 10), (1.0, 4)), duration=10.0)
    pieces = ((0.0, 1.0, 0), (1.0, 1.0, 0), (2.0, 3.0, 0))
    assert arrival_areas(load, pieces) == [10 * 0.5, 14 * 1.0, 14 * 3.0]  # from t=0.5, t=1
    assert arrivals_before(load, [0.0, 0.5, 1.0, 2.0]) == [0.0, 0.0, 10.0, 14.0]
    # 5 replicas ready from t=0 (1 msg/s each) drain 5/s from t=0.5: 7.5 left at t=1, 11.5 with
    # the 4 more, empty at t=3.3. Waiting (10 + 7.5) / 2 x 0.5 + 11.5 x 2.3 / 2 = 17.6: the
    # sub-steps are cut at the arrivals, so the bound is tight (within its tangents' 1/128).
    best = optimum_at_cost(load, Bounds(0, 5, initial_replicas=5), WORKERS, 50.0)
    assert 17.6 * (1 - 1 / 128) <= best.waiting <= 17.6 + 1e-9
    grid = make_grid(load, 10.0, startup=10.0)
    assert [start for start, _, _ in grid.substeps[:4]] == [0.0, 0.5, 1.0, 2.0]


class WholePods:
    """A real schedule from the optimum's work: in each sub-step, enough whole replicas for its
    work, asked for a start-up earlier (on a 0.5 s grid). The true optimum lies between the
    bound and what this achieves."""

    label = "whole pods"

    def __init__(self, best: Optimum, workers: WorkerModel, floor: int) -> None:
        grid, startup = 0.5, workers.startup_seconds
        end = max(start + length for start, length, _ in best.work)
        need = [floor] * (int(end / grid) + 1)
        for start, length, done in best.work:
            pods = math.ceil(done / (workers.processing_rate * length) - 1e-6)
            first = max(0, math.floor((start - startup) / grid + 1e-9))
            for slot in range(first, math.ceil((start + length) / grid - 1e-9)):
                need[slot] = max(need[slot], pods)
        self.writes = [
            (slot * grid, pods)
            for slot, pods in enumerate(need)
            if slot == 0 or pods != need[slot - 1]
        ]
        self.next = 0

    def due(self, now: float) -> bool:
        return self.next < len(self.writes) and self.writes[self.next][0] <= now + 1e-9

    def next_wakeup(self, now: float, backlog: float, drain: float) -> float:
        return self.writes[self.next][0] if self.next < len(self.writes) else math.inf

    def tick(self, now: float, view: BacklogView, current: int) -> tuple[int, str]:
        self.next += 1
        return self.writes[self.next - 1][1], "whole pods"


@pytest.mark.parametrize(
    ("name", "cost", "gap"), [("flood", 6600.0, 1.0), ("bursty", 20_000.0, 1.05)]
)
def test_the_bound_is_close_to_a_real_schedule(name: str, cost: float, gap: float) -> None:
    load, rule = scenario(name), compare.DEFAULT_RULE
    best = optimum_at_cost(load, Bounds(0, 20), WORKERS, cost)
    real = simulate(WholePods(best, WORKERS, 0), rule, load, WORKERS).summary
    assert real.replica_seconds <= cost + 1e-6
    assert best.waiting <= real.backlog_message_seconds <= best.waiting * gap + 1e-6
