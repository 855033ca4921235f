"""Solving the allocation's knapsack problem (`edgesim.alloc_problem.Problem`): the front at
true cost (embedding tables included), the budget's exact optimum (a size budget's file fits; a
latency or energy budget holds for the plan's own cost, `fit_exact`), the knee, a picked
point, a given assignment, and the uniform reference points.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from compiler.allocate import Allocation, InfeasibleBudget, knee, pareto_front, solve
from compiler.ir import Graph
from edgesim.alloc_problem import Problem, knapsack_budget, tied, user_units
from edgesim.budget import Budget, format_value
from edgesim.errors import UserError
from edgesim.tables import emitted_embedding_bits, fit_file, solve_coupled

FRONT_POINTS = 50
# re-solves `fit_exact` tries with a tightened budget before it walks the front: on
# mobilenet_v2 (rpi5, rpi4; latency, energy) the first plan that fits came within 3 re-solves
# for every budget between the cheapest plan and fp32 (bench/bench_budget_exact.py --refine 0)
EXACT_ROUNDS = 4
# bisections of the room between the first plan that meets the budget and the last that did
# not: the first tightening overshoots by as much as the gap changes between the two plans
REFINE_ROUNDS = 3
# the budgets whose plan cost is not the sum of the front's per-layer costs on every target
EXACT_METRICS = ("latency", "energy")


def _tables_delta(p: Problem, choice: np.ndarray) -> float:
    """What the plan's embedding tables add to its metric over the fp32 count in `fixed`."""
    return p.tables.delta(emitted_embedding_bits(p.w_bits[tied(p, choice)]))


def _true_front(p: Problem, front: list[Allocation]) -> list[Allocation]:
    """The front's points at their true cost (tables included), the dominated ones dropped."""
    if not p.tables.active():
        return front
    moved = sorted((replace(a, total_cost=a.total_cost + _tables_delta(p, a.choice))
                    for a in front), key=lambda a: (a.total_cost, a.total_sens))
    kept: list[Allocation] = []
    for a in moved:
        if not kept or a.total_sens < kept[-1].total_sens:
            kept.append(a)
    return kept


def with_point(front: np.ndarray, point: tuple[float, float]) -> tuple[np.ndarray, int]:
    """Insert an optimal (cost, sensitivity) point into a thinned front; return the front and
    the point's index. Optimality means no front point is cheaper with less sensitivity, so
    only points it weakly dominates (no cheaper, no less sensitive) leave."""
    cost, sens = point
    keep = ~((front[:, 0] >= cost) & (front[:, 1] >= sens))
    merged = np.vstack([front[keep], [point]])
    order = np.lexsort((merged[:, 1], merged[:, 0]))
    merged = merged[order]
    return merged, int(np.flatnonzero(order == len(merged) - 1)[0])


def uniform_mark(p: Problem, choices: np.ndarray, w_bits: int) -> tuple[float, float] | None:
    cols = [j for j, (w, *_) in enumerate(choices.tolist()) if w == w_bits]
    for j in cols:
        if p.allowed[:, j].all():
            delta = p.tables.delta(emitted_embedding_bits(np.array([w_bits])))
            return p.fixed + float(p.cost[:, j].sum()) + delta, float(p.omega[:, j].sum())
    return None


def given(p: Problem, choices: np.ndarray, bits: np.ndarray, g: Graph,
           blocks: np.ndarray | None = None) -> Allocation:
    """The allocation of a given assignment (`--assignment`): its column per layer, at the
    layer's given block where `blocks` [L] names one (> 0), else at the first block."""
    column = {tuple(c): j for j, c in enumerate(choices.tolist())}
    choice: list[int] = []
    for r in p.rows:
        block = int(blocks[r]) if blocks is not None and blocks[r] > 0 else int(choices[0, 2])
        j = column.get((*(int(b) for b in bits[r]), block))
        if j is None or not p.allowed[len(choice), j]:
            raise UserError("--assignment", f"layer {g.layers[r].name}: bits "
                            f"{tuple(int(b) for b in bits[r])} (block {block}) are not a "
                            f"candidate the target runs (candidates {sorted(column)})")
        choice.append(j)
    idx = (np.arange(len(choice)), np.array(choice, dtype=np.int64))
    return Allocation(idx[1], float(p.omega[idx].sum()),
                      float(p.cost[idx].sum()) + _tables_delta(p, idx[1]), "given")


def _pick(front: list, pick: int) -> Allocation:
    if not -len(front) <= pick < len(front):
        raise UserError("--pick", f"the front has {len(front)} points (0 = cheapest); "
                        f"got {pick}")
    return front[pick]


def _solve_budget(p: Problem, limit: float) -> Allocation:
    """The exact optimum within `limit`, its total cost counting the tables as emitted; for
    a size budget, the optimum whose file fits (`edgesim.tables.fit_file`)."""
    if p.file_of is not None:
        return fit_file(lambda room: _solve_tables(p, room), limit, p.file_of)
    return _solve_tables(p, limit)


def _solve_tables(p: Problem, limit: float) -> Allocation:
    if not p.tables.active():
        return solve(p.omega, p.cost, limit, allowed=p.allowed)
    best, width = solve_coupled(p.omega, p.cost, p.allowed, p.w_bits, limit, p.tables)
    return replace(best, total_cost=best.total_cost + p.tables.delta(width))


@dataclass(frozen=True, eq=False)
class ExactFit:
    """A budget's plan checked at its own cost (`fit_exact`).

    Attributes:
        best: the plan; its `total_cost` is its own cost (less `Problem.fixed`).
        first: (estimate, own cost) of the budget's optimum by the front's estimate.
        evaluations: how many plans' own costs were computed.
    """

    best: Allocation
    first: tuple[float, float]
    evaluations: int


class ExactInfeasible(ValueError):
    """No plan found meets the budget at its own cost; `smallest` is the least own cost seen
    (less `Problem.fixed`)."""

    def __init__(self, limit: float, smallest: float) -> None:
        super().__init__(f"no plan's own cost is within {limit:.6g}; smallest {smallest:.6g}")
        self.smallest = smallest


def fit_exact(solve_within: Callable[[float], Allocation], limit: float,
              own_cost: Callable[[np.ndarray], float], front: list[Allocation]) -> ExactFit:
    """The optimum of `solve_within(room)` whose own cost, `own_cost(choice)` (in `limit`'s
    terms), meets `limit`. Each round lowers the room by what the last plan's own cost
    exceeded its estimate, strictly below that estimate (so no plan comes back); the first
    plan that fits is improved by bisecting the room between it and the last that did not
    (`REFINE_ROUNDS`). After `EXACT_ROUNDS` with none, the front's points within `limit` are
    tried from the least sensitive down.

    Raises:
        InfeasibleBudget: from the first solve (no plan's estimate meets `limit`).
        ExactInfeasible: a plan's estimate meets `limit` but no plan found does at its own cost.
    """
    seen: dict[bytes, float] = {}

    def own(a: Allocation) -> float:
        key = np.asarray(a.choice).tobytes()
        if key not in seen:
            seen[key] = own_cost(a.choice)
        return seen[key]

    tried = _tightened(solve_within, limit, own)
    first = (tried[0][1].total_cost, own(tried[0][1]))
    fits = [i for i, (_, a) in enumerate(tried) if own(a) <= limit]
    if fits:
        i = fits[0]
        best = tried[i][1] if i == 0 else _refined(solve_within, limit, own, tried[i],
                                                   tried[i - 1][0])
        return ExactFit(replace(best, total_cost=own(best)), first, len(seen))
    for a in reversed([a for a in front if a.total_cost <= limit]):
        if own(a) <= limit:
            return ExactFit(replace(a, total_cost=own(a), status="front"), first, len(seen))
    raise ExactInfeasible(limit, min(seen.values()))


def _tightened(solve_within: Callable[[float], Allocation], limit: float,
               own: Callable[[Allocation], float]) -> list[tuple[float, Allocation]]:
    """(room, optimum) at `limit`, then at each tightened room while the last optimum's own
    cost exceeds `limit` (at most `EXACT_ROUNDS` re-solves; stops where a room is
    infeasible)."""
    out = [(limit, solve_within(limit))]
    for _ in range(EXACT_ROUNDS):
        last = out[-1][1]
        if own(last) <= limit:
            break
        # the estimate must leave room for this plan's gap; strictly below its estimate
        room = min(np.nextafter(last.total_cost, -np.inf), limit - (own(last) - last.total_cost))
        try:
            out.append((room, replace(solve_within(room), status="tightened")))
        except InfeasibleBudget:
            break
    return out


def _refined(solve_within: Callable[[float], Allocation], limit: float,
             own: Callable[[Allocation], float], fit: tuple[float, Allocation],
             over_room: float) -> Allocation:
    """The least sensitive plan that meets `limit` among `fit` (room, plan) and the optima of
    rooms bisected between its room and `over_room` (where the optimum did not meet it)."""
    ok_room, best = fit
    for _ in range(REFINE_ROUNDS):
        room = (ok_room + over_room) / 2  # above a plan's estimate: feasible
        a = solve_within(room)
        if own(a) > limit:
            over_room = room
            continue
        ok_room = room
        if a.total_sens < best.total_sens:
            best = replace(a, status="tightened")
    return best


def _exact_error(budget: Budget, smallest: float) -> UserError:
    """The infeasible-budget error, naming the smallest own cost found (rounded up, so that
    figure given as the budget is met)."""
    return UserError("--budget", f"{budget} cannot be met by the plans' own cost (each layer "
                     "with the plan's neighbours); the smallest feasible budget found is "
                     f"{budget.metric}={format_value(budget.metric, smallest, up=True)}")


def _gap_note(fit: ExactFit, budget: Budget, fixed: float) -> tuple[str, ...]:
    estimate, own = fit.first
    if budget.met(own + fixed):
        return ()
    return (f"the {budget.metric} budget's optimum by the front's estimate "
            f"({format_value(budget.metric, estimate + fixed)}) takes "
            f"{format_value(budget.metric, own + fixed)} with the plan's own neighbours "
            f"(onnxruntime's int8 chains): re-solved with the budget tightened, the plan "
            f"meets {budget} at its own cost ({fit.evaluations} plans costed)",)


def solve_problem(p: Problem, budget: Budget | None, w_elems_q: float, pick: int | None = None,
                  own_cost: Callable[[np.ndarray], float] | None = None
                  ) -> tuple[Allocation, list, tuple[str, ...]]:
    """The chosen allocation, the front, and notes; costs exclude `p.fixed` and include what
    the embedding tables add at the width the plan gives them (`edgesim.tables`).

    `own_cost` (choice -> the plan's own cost less `p.fixed`): a latency or energy budget is
    met at that cost (`fit_exact`), and the chosen total is it; None: by the front's estimate.
    """
    front = _true_front(p, pareto_front(p.omega, p.cost, allowed=p.allowed,
                                        max_points=FRONT_POINTS))
    if pick is not None:
        return _pick(front, pick), front, ()
    if budget is None:
        return knee(front), front, ()
    exact = own_cost is not None and budget.metric in EXACT_METRICS
    try:
        limit = knapsack_budget(budget.metric, budget.value, p.fixed, w_elems_q)
        if own_cost is None or not exact:
            return _solve_budget(p, limit), front, ()
        fit = fit_exact(lambda room: _solve_budget(p, room), limit, own_cost, front)
        return fit.best, front, _gap_note(fit, budget, p.fixed)
    except InfeasibleBudget as e:
        if own_cost is not None and exact:  # the cheapest estimate may not hold either
            smallest = _smallest_own(p, e.smallest_feasible, own_cost, front)
            raise _exact_error(budget, smallest + p.fixed) from None
        smallest = user_units(budget.metric, e.smallest_feasible + p.fixed, w_elems_q)
        raise UserError("--budget", f"{budget} cannot be met; the smallest feasible budget is "
                        f"{budget.metric}={format_value(budget.metric, smallest, up=True)}"
                        ) from None
    except ExactInfeasible as e:
        raise _exact_error(budget, e.smallest + p.fixed) from None


def _smallest_own(p: Problem, cheapest: float, own_cost: Callable[[np.ndarray], float],
                  front: list[Allocation]) -> float:
    """The smallest limit found to hold at a plan's own cost, given the cheapest estimate: that
    estimate if some plan within it meets it (a budget below it has no plan by the estimate),
    else the least own cost `fit_exact` saw."""
    try:
        fit_exact(lambda room: _solve_budget(p, room), cheapest, own_cost, front)
    except ExactInfeasible as e:
        return e.smallest
    except InfeasibleBudget:  # float rounding at the cheapest estimate: it stands
        pass
    return cheapest
