"""Solving the allocation's knapsack problem (`edgesim.alloc_problem.Problem`): the front at
true cost (embedding tables included), the budget's exact optimum (a size budget's file fits),
the knee, a picked point, a given assignment, and the uniform reference points.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from compiler.allocate import Allocation, InfeasibleBudget, knee, pareto_front, solve
from compiler.ir import Graph
from edgesim.alloc_problem import Problem, knapsack_budget, user_units
from edgesim.budget import Budget, format_value
from edgesim.errors import UserError
from edgesim.tables import emitted_embedding_bits, fit_file, solve_coupled

FRONT_POINTS = 50


def _tables_delta(p: Problem, choice: np.ndarray) -> float:
    """What the plan's embedding tables add to its metric over the fp32 count in `fixed`."""
    return p.tables.delta(emitted_embedding_bits(p.w_bits[choice]))


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


def solve_problem(p: Problem, budget: Budget | None, w_elems_q: float, pick: int | None = None
           ) -> tuple[Allocation, list]:
    """The chosen allocation and the front; costs exclude `p.fixed` and include what the
    embedding tables add at the width the plan gives them (`edgesim.tables`)."""
    front = _true_front(p, pareto_front(p.omega, p.cost, allowed=p.allowed,
                                        max_points=FRONT_POINTS))
    if pick is not None:
        return _pick(front, pick), front
    if budget is None:
        return knee(front), front
    try:
        limit = knapsack_budget(budget.metric, budget.value, p.fixed, w_elems_q)
        return _solve_budget(p, limit), front
    except InfeasibleBudget as e:
        smallest = user_units(budget.metric, e.smallest_feasible + p.fixed, w_elems_q)
        raise UserError("--budget", f"{budget} cannot be met; the smallest feasible budget is "
                        f"{budget.metric}={format_value(budget.metric, smallest)}") from None
