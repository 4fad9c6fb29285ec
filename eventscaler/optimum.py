"""The yardstick: the best schedule any controller could run, knowing the whole load in advance.

For a load and the simulator's worker model (each ready replica processes `processing_rate`
messages per second; a replica asked for at t works from t + `startup_seconds`; the backlog is a
fluid), this module solves, as a linear program (SciPy's HiGHS, through `linprog`):

- `optimum_at_cost`: the least waiting (backlog message-seconds) for a cost budget
  (replica-seconds), and
- `optimum_at_waiting`: the least cost for a waiting budget;
- `frontier`: a few points of the trade-off between the two.

It is a LOWER BOUND, on purpose, so that "ours is within x of the optimum" can never flatter us:

- replicas are real numbers in [minReplicas, maxReplicas], not whole pods;
- time is cut into steps of `step` seconds (5 s by default, adjusted so the start-up is a whole
  number of steps) and the backlog into sub-steps of about 1 s, and every constraint of the
  program is one that ANY schedule satisfies, whenever it scales (proofs beside each one below).
  Each step's replicas are that step's average, so the cost is exact; the waiting is bounded
  from below within each sub-step, as if the sub-step's work were done as early as the ready
  replicas allow. Nothing is approximated upwards.

So no controller, ours, the KEDA model or any future one, can beat the figure this module gives
on the same load and worker model. The gap to an achievable schedule is the discretization:
exact on the bursts the tests solve by hand, within a few per cent of whole pods replaying its
work, loosest on the start-up cost of work shorter than a step (up to one step of start-up per
replica). docs/simulate.md explains the method and lists the caveats.

SciPy is a tooling dependency (requirements-dev.txt): it is imported only to solve, so the daemon
and `simulate` without `--compare` never need it, and the daemon's modules never import this one
(.importlinter).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from eventscaler.scenarios import Load

DEFAULT_STEP = 5.0  # seconds per replica step: an hour is 720 steps
DEFAULT_SUBSTEP = 1.0  # seconds per backlog sub-step, at most
MAX_STEPS = 4_000  # beyond these the grid coarsens (still a lower bound, a looser one)
MAX_SUBSTEPS = 12_000
TANGENTS = 4  # tangent planes of the within-sub-step waiting bound (see _Program._waiting)
# HiGHS's dual simplex is fastest with a cost budget, its interior point with a waiting budget
# (measured here: 1 s against 6 s, and 22 s against 6 s, on an hour's load).
AT_COST_METHOD = "highs-ds"
AT_WAITING_METHOD = "highs-ipm"
_EPS = 1e-9


class OptimumError(Exception):
    """No schedule meets the budget, or the solver failed; the message says which."""


class Workers(Protocol):
    """The worker model (simulate.WorkerModel is one)."""

    @property
    def processing_rate(self) -> float: ...

    @property
    def startup_seconds(self) -> float: ...


@dataclass(frozen=True)
class Bounds:
    """The rule's bounds and the replicas running (and ready) at t=0."""

    min_replicas: int
    max_replicas: int
    initial_replicas: int = 0


@dataclass(frozen=True)
class Optimum:
    """One optimal schedule: its figures (lower bounds) and the replicas of each step.

    The figure that was optimized is the bound; the other only meets its budget (a schedule at
    the least waiting for a cost may spend less than the budget, or all of it, for the same
    waiting)."""

    waiting: float  # backlog message-seconds
    cost: float  # replica-seconds
    step: float  # seconds per entry of `replicas`
    replicas: tuple[float, ...]  # the replicas paid for in each step (their average)
    solve_seconds: float
    # (start, seconds, messages processed) of each sub-step: the work the bound assumes
    work: tuple[tuple[float, float, float], ...] = ()


@dataclass(frozen=True)
class _Grid:
    step: float  # seconds per replica step
    steps: int
    startup_steps: int  # whole steps within the start-up
    # The backlog's sub-steps, (start, length, step): about 1 s in a step where messages arrive,
    # cut at their arrivals too; the whole step where none do (the backlog then only falls,
    # which the bound follows well).
    substeps: tuple[tuple[float, float, int], ...]


def make_grid(load: Load, duration: float, startup: float, step: float = DEFAULT_STEP) -> _Grid:
    """Steps that divide the start-up when they can (the start-up bounds are then exact), a
    horizon rounded down to whole steps (dropping a tail only lowers both figures)."""
    if startup >= 2 * DEFAULT_SUBSTEP:
        step = startup / max(2, math.ceil(startup / step - _EPS))
    steps = int(math.floor(duration / step + _EPS))
    if steps > MAX_STEPS:
        step, steps = duration / MAX_STEPS, MAX_STEPS
    if steps < 1:
        raise OptimumError(f"the horizon {duration:g}s is shorter than one step ({step:g}s)")
    fine = max(1, math.ceil(step / DEFAULT_SUBSTEP - _EPS))
    busy: dict[int, set[float]] = {}
    for when, _ in load.arrivals:
        busy.setdefault(int(math.floor(when / step + _EPS)), set()).add(when)
    if len(busy) * fine > MAX_SUBSTEPS:
        fine = max(1, MAX_SUBSTEPS // len(busy))
    substeps: list[tuple[float, float, int]] = []
    for k in range(steps):
        cuts = [k * step + j * step / fine for j in range(fine)] if k in busy else [k * step]
        # Cut at the arrivals too (a few per second at most), so that messages arrive at the
        # start of a sub-step, where the bound on their waiting is tightest.
        arrivals = busy.get(k, set())
        if len(arrivals) <= 3 * fine:
            cuts = sorted({round(c, 9) for c in (*cuts, *arrivals)})
        ends = [*cuts[1:], (k + 1) * step]
        substeps += [(a, b - a, k) for a, b in zip(cuts, ends, strict=True) if b - a > _EPS]
    return _Grid(step, steps, int(math.floor(startup / step + _EPS)), tuple(substeps))


class _Program:
    """The linear program's rows and columns (scipy.sparse COO triplets).

    Columns: X[k] replicas paid for in step k (their average), Y[k] ready replicas (average),
    H[k] the most replicas ready at any instant of step k, D[i] messages processed by the start
    of sub-step i (cumulative), w[i] the waiting during sub-step i.
    """

    def __init__(self, load: Load, bounds: Bounds, workers: Workers, grid: _Grid) -> None:
        self.load, self.bounds, self.workers, self.grid = load, bounds, workers, grid
        k, n = grid.steps, len(grid.substeps)
        self.x, self.y, self.h = 0, k, 2 * k
        self.d, self.w = 3 * k, 3 * k + n + 1
        self.columns = 3 * k + 2 * n + 1
        self.rows: list[int] = []
        self.cols: list[int] = []
        self.vals: list[float] = []
        self.rhs: list[float] = []
        self.low = [0.0] * self.columns
        self.high: list[float | None] = [None] * self.columns

    def row(self, entries: Sequence[tuple[int, float]], rhs: float) -> None:
        """Add sum(value x column) <= rhs."""
        index = len(self.rhs)
        for column, value in entries:
            self.rows.append(index)
            self.cols.append(column)
            self.vals.append(value)
        self.rhs.append(rhs)

    def build(self) -> None:
        self._replica_bounds()
        self._start_up()
        self._processing()
        self._waiting()

    def _replica_bounds(self) -> None:
        b, k = self.bounds, self.grid.steps
        for step in range(k):
            self.low[self.x + step], self.high[self.x + step] = b.min_replicas, b.max_replicas
            self.high[self.y + step] = self.high[self.h + step] = b.max_replicas
            # The average ready count is at most the most ready at any instant.
            self.row(((self.y + step, 1.0), (self.h + step, -1.0)), 0.0)

    def _start_up(self) -> None:
        """A replica ready at t has existed (been paid for) since t - startup at least, so with
        y(t) ready and x(t) paid for: y(t) <= x(t - j step) whenever j step <= startup.
        Averaged over step k: Y[k] <= X[k - j], j = 0..startup_steps. For the most ready in
        step k, every instant of step k - j lies within the start-up of every instant of step
        k when (j + 1) step <= startup: H[k] <= X[k - j], j = 1..startup_steps - 1. Before
        t=0 the replicas paid for are the initial ones, which are ready: in a step that ends
        within the first start-up no others are ready at any instant, H[k] <= initial."""
        grid, initial = self.grid, self.bounds.initial_replicas
        for step in range(grid.steps):
            for lag in range(grid.startup_steps + 1):
                self._at_most(self.y + step, step - lag, initial)
            for lag in range(1, grid.startup_steps):
                self._at_most(self.h + step, step - lag, initial)
            if step < grid.startup_steps:
                self._at_most(self.h + step, -1, initial)

    def _at_most(self, column: int, step: int, initial: int) -> None:
        if step >= 0:
            self.row(((column, 1.0), (self.x + step, -1.0)), 0.0)
        else:
            high = self.high[column]
            self.high[column] = initial if high is None else min(high, initial)

    def _processing(self) -> None:
        """D only grows, never past what has arrived (it is continuous, so D[i] <= the arrivals
        strictly before t_i), at most p H per second within a step and p Y on average."""
        grid, rate = self.grid, self.workers.processing_rate
        starts = [start for start, _, _ in grid.substeps] + [grid.steps * grid.step]
        for i, arrived in enumerate(arrivals_before(self.load, starts)):
            self.high[self.d + i] = arrived
        self.high[self.d] = 0.0  # the load starts with an empty queue
        first_of: dict[int, int] = {}
        for i, (_, length, step) in enumerate(grid.substeps):
            first_of.setdefault(step, i)
            self.row(((self.d + i, 1.0), (self.d + i + 1, -1.0)), 0.0)
            self.row(
                ((self.d + i + 1, 1.0), (self.d + i, -1.0), (self.h + step, -rate * length)), 0.0
            )
        first_of[grid.steps] = len(grid.substeps)
        for step in range(grid.steps):
            first, last = first_of[step], first_of[step + 1]
            self.row(
                ((self.d + last, 1.0), (self.d + first, -1.0), (self.y + step, -rate * grid.step)),
                0.0,
            )

    def _waiting(self) -> None:
        """Within sub-step i (length s, from t_i), D(t) <= D[i+1] and D(t) <= D[i] + p H (t -
        t_i), so with u = D[i+1] - D[i] the processed area is at most s D[i+1] - u^2 / (2 p H),
        and the waiting w[i] = (area of arrivals) - (area processed) is at least
        s A_i - s D[i+1] + u^2 / (2 p H). The last term is convex in (u, H); each tangent plane
        (r / p) u - (r^2 / 2p) H, r in [0, p s], lies below it, so every tangent row holds."""
        rate = self.workers.processing_rate
        areas = arrival_areas(self.load, self.grid.substeps)
        for i, ((_, s, step), area) in enumerate(zip(self.grid.substeps, areas, strict=True)):
            w, before, after = self.w + i, self.d + i, self.d + i + 1
            for j in range(TANGENTS + 1):
                r = rate * s * j / TANGENTS  # messages per peak replica in this sub-step
                entries = (
                    (w, -1.0),
                    (after, r / rate - s),
                    (before, -r / rate),
                    (self.h + step, -r * r / (2 * rate)),
                )
                self.row(entries, -area)

    def cost_row(self) -> list[tuple[int, float]]:
        return [(self.x + step, self.grid.step) for step in range(self.grid.steps)]

    def waiting_row(self) -> list[tuple[int, float]]:
        return [(self.w + i, 1.0) for i in range(len(self.grid.substeps))]


def arrivals_before(load: Load, instants: Sequence[float]) -> list[float]:
    """Messages arrived strictly before each instant (instants in increasing order)."""
    result, total, next_arrival = [], 0, 0
    arrivals = load.arrivals
    for instant in instants:
        while next_arrival < len(arrivals) and arrivals[next_arrival][0] < instant - _EPS:
            total += arrivals[next_arrival][1]
            next_arrival += 1
        result.append(float(total))
    return result


def arrival_areas(load: Load, substeps: Sequence[tuple[float, float, int]]) -> list[float]:
    """The integral of the cumulative arrivals over each sub-step (start, length, _)."""
    areas, total, next_arrival = [], 0.0, 0
    arrivals = load.arrivals
    for start, length, _ in substeps:
        end = start + length
        area = total * length
        while next_arrival < len(arrivals) and arrivals[next_arrival][0] < end - _EPS:
            when, messages = arrivals[next_arrival]
            area += messages * (end - max(when, start))
            total += messages
            next_arrival += 1
        areas.append(area)
    return areas


def optimum_at_cost(
    load: Load,
    bounds: Bounds,
    workers: Workers,
    cost: float,
    duration: float | None = None,
    step: float = DEFAULT_STEP,
) -> Optimum:
    """The least waiting any schedule can reach spending at most `cost` replica-seconds."""
    program = _program(load, bounds, workers, duration, step)
    program.row(program.cost_row(), cost)
    return _solve(
        program, program.waiting_row(), f"a cost of {cost:,.0f} replica-seconds", AT_COST_METHOD
    )


def optimum_at_waiting(
    load: Load,
    bounds: Bounds,
    workers: Workers,
    waiting: float,
    duration: float | None = None,
    step: float = DEFAULT_STEP,
) -> Optimum:
    """The least cost of any schedule that waits at most `waiting` message-seconds."""
    program = _program(load, bounds, workers, duration, step)
    program.row(program.waiting_row(), waiting)
    budget = f"a waiting of {waiting:,.0f} message-seconds"
    return _solve(program, program.cost_row(), budget, AT_WAITING_METHOD)


def least_waiting(
    load: Load,
    bounds: Bounds,
    workers: Workers,
    duration: float | None = None,
    step: float = DEFAULT_STEP,
) -> Optimum:
    """The least waiting at any cost (maxReplicas all the time is not always needed for it)."""
    program = _program(load, bounds, workers, duration, step)
    return _solve(program, program.waiting_row(), "no budget", AT_COST_METHOD)


def frontier(
    load: Load,
    bounds: Bounds,
    workers: Workers,
    points: int = 6,
    duration: float | None = None,
    step: float = DEFAULT_STEP,
) -> list[Optimum]:
    """`points` optimal schedules from the cheapest useful one to the least waiting, cost rising
    and waiting falling: the trade-off any controller lives on or above."""
    if points < 2:
        raise OptimumError(f"a frontier needs 2 points or more, got {points}")
    best = least_waiting(load, bounds, workers, duration, step)
    # The least cost of that least waiting (a hair above it, for the solver's tolerance).
    top = optimum_at_waiting(
        load, bounds, workers, best.waiting * (1 + 1e-7) + 1e-6, duration, step
    )
    floor = bounds.min_replicas * len(top.replicas) * top.step  # minReplicas all along
    budgets = [floor + (top.cost - floor) * j / (points - 1) for j in range(points - 1)]
    return [optimum_at_cost(load, bounds, workers, c, duration, step) for c in budgets] + [top]


@dataclass(frozen=True)
class Yardstick:
    """A controller's figures beside the optimum's at the same cost and at the same waiting."""

    waiting: float  # the controller's backlog message-seconds
    cost: float  # the controller's replica-seconds
    optimum_waiting: float  # the least waiting at the controller's cost
    optimum_cost: float  # the least cost at the controller's waiting
    solve_seconds: float

    @property
    def waiting_ratio(self) -> float:
        """How many times the optimum's waiting, at equal cost: 1.0 is the best possible."""
        return _ratio(self.waiting, self.optimum_waiting)

    @property
    def cost_ratio(self) -> float:
        """How many times the optimum's cost, at equal waiting."""
        return _ratio(self.cost, self.optimum_cost)


def _ratio(value: float, best: float) -> float:
    if best > _EPS:
        return value / best
    return 1.0 if value <= _EPS else math.inf


def yardstick(
    load: Load,
    bounds: Bounds,
    workers: Workers,
    waiting: float,
    cost: float,
    duration: float | None = None,
    step: float = DEFAULT_STEP,
) -> Yardstick:
    """The optimum at a controller's cost and at its waiting (both budgets are feasible: the
    controller's own schedule meets them)."""
    # A hair of slack, for the solver's tolerance when the controller is itself optimal.
    at_cost = optimum_at_cost(load, bounds, workers, cost * (1 + 1e-9) + 1e-6, duration, step)
    at_waiting = optimum_at_waiting(
        load, bounds, workers, waiting * (1 + 1e-9) + 1e-6, duration, step
    )
    seconds = at_cost.solve_seconds + at_waiting.solve_seconds
    return Yardstick(waiting, cost, at_cost.waiting, at_waiting.cost, seconds)


def _horizon(load: Load, duration: float | None) -> float:
    return load.duration if duration is None else duration


def _program(
    load: Load, bounds: Bounds, workers: Workers, duration: float | None, step: float
) -> _Program:
    if not 0 <= bounds.min_replicas <= bounds.max_replicas or bounds.initial_replicas < 0:
        raise OptimumError(f"replica bounds must be 0 <= min <= max, got {bounds}")
    if workers.processing_rate <= 0 or workers.startup_seconds < 0:
        raise OptimumError("the processing rate must be > 0 and the start-up >= 0")
    grid = make_grid(load, _horizon(load, duration), workers.startup_seconds, step)
    program = _Program(load, bounds, workers, grid)
    program.build()
    return program


def _solve(
    program: _Program, objective: Sequence[tuple[int, float]], budget: str, method: str
) -> Optimum:
    # Imported here: SciPy is a tooling dependency, and this module is imported by `simulate`.
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix

    costs = [0.0] * program.columns
    for column, value in objective:
        costs[column] = value
    matrix = coo_matrix(
        (program.vals, (program.rows, program.cols)), shape=(len(program.rhs), program.columns)
    ).tocsr()
    started = time.process_time()
    result: Any = linprog(
        costs,
        A_ub=matrix,
        b_ub=program.rhs,
        bounds=list(zip(program.low, program.high, strict=True)),
        method=method,
    )
    elapsed = time.process_time() - started
    if result.status == 2:
        raise OptimumError(f"no schedule meets {budget} on this load")
    if result.status != 0:
        raise OptimumError(f"the solver stopped without an optimum for {budget}: {result.message}")
    return _optimum(program, result.x, elapsed)


def _optimum(program: _Program, solution: Sequence[float], elapsed: float) -> Optimum:
    grid = program.grid
    replicas = tuple(float(v) for v in solution[program.x : program.x + grid.steps])
    waiting = float(sum(solution[program.w : program.w + len(grid.substeps)]))
    done = [float(v) for v in solution[program.d : program.d + len(grid.substeps) + 1]]
    work = tuple(
        (start, length, max(after - before, 0.0))
        for (start, length, _), before, after in zip(
            grid.substeps, done[:-1], done[1:], strict=True
        )
    )
    return Optimum(waiting, sum(replicas) * grid.step, grid.step, replicas, elapsed, work)
