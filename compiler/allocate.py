"""Exact mixed-precision bit allocation: a multiple-choice knapsack (MCKP) and its Pareto front.

Given per-layer sensitivities `sens[l, b]` and costs `cost[l, b]` for every bit choice `b`
(bytes, seconds, joules or bit-parameters: the allocator knows no target), pick one choice per
layer to

    minimise  sum_l sens[l, b_l]   subject to   sum_l cost[l, b_l] <= budget.

A choice is excluded by `allowed[l, b] = False` or by `sens[l, b] = +inf` (a layer that must stay
fp32 has exactly one allowed choice).

Two exact methods share one preprocessing step, which drops choices that another choice of the
same layer dominates (no more cost and no more sensitivity: swapping never hurts):

* `method="milp"` (default): binary x[l, b], one-hot per layer, one budget row, solved to a zero
  relative gap by HiGHS through `scipy.optimize.milp`. A MILP solver works within feasibility
  tolerances, so the chosen assignment is re-checked in float arithmetic; if HiGHS returns one
  a rounding error over budget (or fails), the exact front method below answers instead.
* `method="front"`: the Pareto-state dynamic programme of Nemhauser & Ullmann (1969, Management
  Science 15(9)): add layers one at a time, keeping only non-dominated (cost, sens) pairs of
  partial assignments with back-pointers, and drop partial assignments that cannot meet the
  budget even with every remaining layer at its cheapest choice. It is exact for any real costs
  (no integer scaling, so no integer-cost DP is needed): no assignment on the optimal front is
  ever pruned, because a partial assignment that is dominated stays dominated after the same
  completion. It is the cross-check of the MILP in the tests and its fallback.

`pareto_front` runs the same dynamic programme without a budget: its result is every
non-dominated (total cost, total sens) pair, one assignment each, thinned evenly in cost on
request; `knee` picks the default budget from it.

Totals are float sums over layers, always in layer order (`_totals`, and the DP's running sums
bit for bit), so an assignment's `total_cost` compares with a budget exactly as `solve` checks it:
the smallest feasible budget reported by `InfeasibleBudget` is itself feasible, every front
point's own cost is a budget it meets, and the front is non-dominated in the reported totals.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from compiler.errors import ModelError
from compiler.pareto import add_layer

MAX_CHOICES = 127  # back-pointers store the column index as int8
OBJECTIVE_TOP = 1e6  # the largest sensitivity increment as HiGHS sees it (see _solve_milp)
T = TypeVar("T")


@dataclass(frozen=True, eq=False)  # eq on arrays is ambiguous; compare fields explicitly
class Allocation:
    """One bit choice per layer and what it adds up to.

    Attributes:
        choice: int [L], read-only: the column of `sens`/`cost` chosen for each layer.
        total_sens: sum over layers of the chosen sensitivities.
        total_cost: sum over layers of the chosen costs (<= the budget it was solved for).
        status: "optimal": no assignment with total cost within the budget (for a front point:
            within its own total cost) has a lower total sensitivity.
    """

    choice: np.ndarray
    total_sens: float
    total_cost: float
    status: str = "optimal"


class InfeasibleBudget(ValueError):
    """The budget is below the cost of every layer at its cheapest allowed choice.

    Attributes:
        budget: the budget asked for.
        smallest_feasible: the smallest budget that has a solution (itself feasible).
    """

    def __init__(self, budget: float, smallest_feasible: float) -> None:
        a, b = _distinct(budget, smallest_feasible)
        super().__init__(f"budget {a} is below the smallest feasible {b} "
                         "(every layer at its cheapest choice)")
        self.budget = budget
        self.smallest_feasible = smallest_feasible


def _distinct(a: float, b: float) -> tuple[str, str]:
    """Format two numbers in scientific notation with the fewest digits (>= 3) that tell them
    apart, so "1.53e+06 is below 1.53e+06" never happens."""
    for digits in range(2, 17):
        fa, fb = f"{a:.{digits}e}", f"{b:.{digits}e}"
        if fa != fb:
            return fa, fb
    return repr(a), repr(b)


@dataclass(frozen=True)
class _Problem:
    """Validated float64 inputs and, per layer, the undominated allowed columns sorted by cost
    ascending (sens strictly descending): first is the cheapest, last the least sensitive."""

    sens: np.ndarray
    cost: np.ndarray
    options: tuple[np.ndarray, ...]


def _prepare(sens: np.ndarray, cost: np.ndarray, allowed: np.ndarray | None) -> _Problem:
    s = np.asarray(sens, dtype=np.float64)
    c = np.asarray(cost, dtype=np.float64)
    if s.ndim != 2 or s.shape != c.shape or 0 in s.shape:
        raise ModelError("allocate", f"sens {s.shape} and cost {c.shape} must both be [L, B]")
    if s.shape[1] > MAX_CHOICES:
        raise ModelError("allocate", f"{s.shape[1]} bit choices; at most {MAX_CHOICES}")
    ok = _allowed_mask(s, c, allowed)
    return _Problem(s, c, tuple(_layer_options(s[l], c[l], ok[l]) for l in range(s.shape[0])))


def _allowed_mask(s: np.ndarray, c: np.ndarray, allowed: np.ndarray | None) -> np.ndarray:
    ok = np.ones(s.shape, dtype=bool) if allowed is None else np.asarray(allowed, dtype=bool)
    if ok.shape != s.shape:
        raise ModelError("allowed", f"mask {ok.shape} does not match sens {s.shape}")
    ok = ok & (s != np.inf) & (c != np.inf)
    bad = ok & ~(np.isfinite(s) & np.isfinite(c))  # NaN or -inf would make the optimum meaningless
    if bad.any():
        l, b = np.argwhere(bad)[0]
        raise ModelError(f"layer {l}", f"choice {b} has sens {s[l, b]} and cost {c[l, b]}")
    empty = np.flatnonzero(~ok.any(axis=1))
    if empty.size:
        raise ModelError(f"layer {empty[0]}", "no allowed bit choice (all masked or +inf)")
    return ok


def _layer_options(s: np.ndarray, c: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Allowed columns of one layer that no other allowed column dominates (exact ties keep the
    lowest column), sorted by cost."""
    cols = np.flatnonzero(ok)
    cols = cols[np.lexsort((cols, s[cols], c[cols]))]
    before = np.concatenate(([np.inf], np.minimum.accumulate(s[cols])[:-1]))
    return cols[s[cols] < before]


def _totals(p: _Problem, choices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Total sens and cost of assignments int [n, L], summed layer by layer from layer 0: the
    one summation used everywhere, and the order in which the front DP accumulates its sums."""
    total_s, total_c = np.zeros(choices.shape[0]), np.zeros(choices.shape[0])
    for l in range(choices.shape[1]):
        total_s += p.sens[l, choices[:, l]]
        total_c += p.cost[l, choices[:, l]]
    return total_s, total_c


def _allocations(choices: np.ndarray, total_s: np.ndarray,
                 total_c: np.ndarray) -> list[Allocation]:
    choices.flags.writeable = False  # each row handed out is a read-only view
    return [Allocation(row, ts, tc)
            for row, ts, tc in zip(choices, total_s.tolist(), total_c.tolist())]


def _allocation(p: _Problem, choice: np.ndarray) -> Allocation:
    return _allocations(choice[None], *_totals(p, choice[None]))[0]


def _pick(p: _Problem, end: int) -> np.ndarray:
    """Per layer the cheapest (end=0) or least sensitive (end=-1) undominated column."""
    return np.array([o[end] for o in p.options], dtype=np.int64)


def smallest_feasible_budget(sens: np.ndarray, cost: np.ndarray,
                             allowed: np.ndarray | None = None) -> float:
    """The total cost with every layer at its cheapest allowed choice.

    Args:
        sens: float [L, B]; +inf marks a choice that is not allowed.
        cost: float [L, B].
        allowed: optional bool [L, B] mask.
    """
    p = _prepare(sens, cost, allowed)
    return float(_totals(p, _pick(p, 0)[None])[1][0])


def solve(sens: np.ndarray, cost: np.ndarray, budget: float,
          allowed: np.ndarray | None = None, method: str = "milp") -> Allocation:
    """Choose one bit choice per layer minimising total sensitivity within a cost budget.

    Args:
        sens: float [L, B], sensitivity of layer l at choice b; +inf where not allowed.
        cost: float [L, B], in whatever unit the budget is in.
        budget: the largest total cost allowed (inclusive).
        allowed: optional bool [L, B]; False excludes a choice.
        method: "milp" (HiGHS, the default) or "front" (Pareto-state dynamic programme); both
            are exact, see the module docstring.

    Returns:
        An optimal `Allocation`; among equally sensitive optima, any one.

    Raises:
        InfeasibleBudget: the budget is below the smallest feasible budget.
        ModelError: malformed inputs (shapes, NaN, a layer with no allowed choice, method).
    """
    if method not in _METHODS:
        raise ModelError("method", f"unknown allocation method {method!r}; use {list(_METHODS)}")
    p = _prepare(sens, cost, allowed)
    budget = float(budget)
    if np.isnan(budget):
        raise ModelError("budget", "is not a number")
    cheapest, calmest = _pick(p, 0), _pick(p, -1)
    low, high = _totals(p, np.stack([cheapest, calmest]))[1]
    if budget < low:
        raise InfeasibleBudget(budget, float(low))
    if high <= budget:  # the unconstrained optimum fits: nothing to trade
        return _allocation(p, calmest)
    return _allocation(p, _METHODS[method](p, budget))


def milp(c: np.ndarray, **kwargs: Any) -> Any:
    """`scipy.optimize.milp`, imported on first use: scipy.optimize costs ~0.3 s to import and
    sweep workers (method "front") and `simulate` never solve a MILP."""
    from scipy.optimize import milp as scipy_milp

    return scipy_milp(c, **kwargs)


def _solve_milp(p: _Problem, budget: float) -> np.ndarray:
    """HiGHS on the layers that still have a choice to make; exact-front fallback on doubt."""
    from scipy.optimize import Bounds, LinearConstraint
    from scipy.sparse import csr_array

    choice = _pick(p, 0)
    free = np.array([l for l, o in enumerate(p.options) if o.size > 1])
    cols = np.concatenate([p.options[l] for l in free])
    row = np.repeat(np.arange(free.size), [p.options[l].size for l in free])
    objective, weight, room = _milp_coefficients(p, free[row], cols, budget)
    one_hot = csr_array((np.ones(cols.size), (row, np.arange(cols.size))))
    rows = [LinearConstraint(one_hot, 1, 1), LinearConstraint(weight[None], -np.inf, room)]
    res = _quietly(lambda: milp(objective, integrality=np.ones(cols.size, np.int64),
                                bounds=Bounds(0, 1),
                                constraints=rows, options={"mip_rel_gap": 0.0}))
    if res.x is None:
        return _solve_front(p, budget)
    choice[free] = cols[_one_hot_argmax(res.x, row, free.size)]
    feasible = _totals(p, choice[None])[1][0] <= budget
    return choice if feasible else _solve_front(p, budget)


def _milp_coefficients(p: _Problem, layer: np.ndarray, cols: np.ndarray,
                       budget: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Objective, budget row and its bound for the variables (layer, cols), as increments over
    each layer's least sensitive / cheapest option: the constant part leaves the model."""
    d_sens = p.sens[layer, cols] - p.sens[layer, _pick(p, -1)[layer]]
    d_cost = p.cost[layer, cols] - p.cost[layer, _pick(p, 0)[layer]]
    room = budget - _totals(p, _pick(p, 0)[None])[1][0]
    # HiGHS takes reduced costs below 1e-7 for zero and stops at an absolute gap of 1e-6: with
    # the largest increment at 1e6 both are ~1e-13 of it, so small sensitivities still count
    # (at [0, 1] it returns answers 1e-4 off when traces span decades; see the tests).
    s_scale, c_scale = _scale(d_sens) / OBJECTIVE_TOP, _scale(d_cost)
    return d_sens / s_scale, d_cost / c_scale, room / c_scale


def _quietly(run: Callable[[], T]) -> T:
    """Run with file descriptor 1 sent to /dev/null. HiGHS up to 1.12 printf()s a debug line
    ("transformNewIntegerFeasibleSolution tmpSolver.run();", ERGO-Code/HiGHS#2783) that no
    option silences; on the CLI's stdout it would corrupt JSON output."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no stdout at all: nothing to protect
        return run()
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    try:
        return run()
    finally:
        _flush_c_stdio()  # else a pipe's C buffer would reach the real stdout later
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)


def _flush_c_stdio() -> None:
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError, TypeError):  # no C runtime reachable this way (Windows)
        pass


def _scale(v: np.ndarray) -> float:
    top = float(np.abs(v).max())
    return top if top > 0 else 1.0


def _one_hot_argmax(x: np.ndarray, group: np.ndarray, groups: int) -> np.ndarray:
    """Index into x of the largest entry of each group (x is ~0/1 within HiGHS's tolerance)."""
    order = np.lexsort((-x, group))
    first = np.searchsorted(group[order], np.arange(groups))
    return order[first]


def _solve_front(p: _Problem, budget: float) -> np.ndarray:
    """Exact: the budget-pruned Pareto-state DP, then the least sensitive point that fits."""
    cheapest = p.cost[np.arange(p.sens.shape[0]), _pick(p, 0)]
    still_needed = np.concatenate((np.cumsum(cheapest[::-1])[::-1][1:], [0.0]))
    # A little slack, as `budget - still_needed` rounds; the final front's costs are exactly
    # the `_totals` ones, so the pick below needs none.
    slack = 1e-9 * (abs(budget) + float(np.abs(cheapest).sum()))
    c, _, trail = _front_states(p, budget - still_needed + slack)
    last_fitting = int(np.searchsorted(c, budget, side="right")) - 1
    return _backtrack(trail, np.array([last_fitting]))[0]


_METHODS: dict[str, Callable[[_Problem, float], np.ndarray]] = {
    "milp": _solve_milp,
    "front": _solve_front,
}


def _front_states(p: _Problem, limits: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """Run the Pareto-state DP; returns the final (cost, sens) front and per-layer
    (parent, choice) back-pointers."""
    c, s = np.zeros(1), np.zeros(1)
    trail: list[tuple[np.ndarray, np.ndarray]] = []
    for l, opts in enumerate(p.options):
        c, s, parent, choice = add_layer(c, s, p.cost[l, opts], p.sens[l, opts],
                                         opts.astype(np.int8), float(limits[l]))
        trail.append((parent, choice))
    return c, s, trail


def _backtrack(trail: list[tuple[np.ndarray, np.ndarray]], idx: np.ndarray) -> np.ndarray:
    """Assignments int [n, L] of the final front points `idx`, following back-pointers."""
    out = np.empty((len(trail), idx.size), dtype=np.int8)  # filled row by row, then turned
    for l in range(len(trail) - 1, -1, -1):
        parent, choice = trail[l]
        out[l] = choice[idx]
        idx = parent[idx]
    return out.T.astype(np.int64)


def pareto_front(sens: np.ndarray, cost: np.ndarray, allowed: np.ndarray | None = None,
                 max_points: int | None = None) -> list[Allocation]:
    """Every non-dominated (total cost, total sens) trade-off, one assignment each.

    Args:
        sens: float [L, B]; +inf where not allowed.
        cost: float [L, B].
        allowed: optional bool [L, B] mask.
        max_points: thin the front to at most this many points, the nearest to evenly spaced
            costs (from 2 on, the cheapest and the least sensitive are always kept).

    Returns:
        Allocations sorted by total cost ascending, total sens strictly descending; each is
        optimal for its own total cost as the budget.
    """
    if max_points is not None and max_points < 1:
        raise ModelError("max_points", f"must be at least 1, got {max_points}")
    p = _prepare(sens, cost, allowed)
    c, s, trail = _front_states(p, np.full(p.sens.shape[0], np.inf))
    keep = _thin(c, max_points)
    # The DP's running sums are the layer-by-layer totals of `_totals`, bit for bit.
    return _allocations(_backtrack(trail, keep), s[keep], c[keep])


def _thin(c: np.ndarray, max_points: int | None) -> np.ndarray:
    """Indices of at most max_points points of the sorted costs c, nearest to evenly spaced
    costs from the first to the last."""
    if max_points is None or c.size <= max_points:
        return np.arange(c.size)
    targets = np.linspace(c[0], c[-1], max_points)
    right = np.clip(np.searchsorted(c, targets), 1, c.size - 1)
    nearer_left = targets - c[right - 1] <= c[right] - targets
    return np.unique(np.where(nearer_left, right - 1, right))


def knee(front: Sequence[Allocation]) -> Allocation:
    """The knee of a front: the point farthest below the chord joining its extremes, with cost
    and sens each scaled to [0, 1].

    This is the maximum of the difference curve of Kneedle (Satopaa, Albrecht, Irwin, Raghavan,
    "Finding a 'Kneedle' in a Haystack", ICDCS workshops 2011) for a decreasing convex curve,
    without its sensitivity threshold. Ties go to the cheaper point.

    Args:
        front: allocations, as returned by `pareto_front`.

    Returns:
        The knee allocation (for one or two points: the cheapest).
    """
    if not front:
        raise ModelError("front", "empty Pareto front has no knee")
    c = np.array([a.total_cost for a in front])
    s = np.array([a.total_sens for a in front])
    x = (c - c.min()) / _scale(c - c.min())
    y = (s - s.min()) / _scale(s - s.min())
    below_chord = 1.0 - x - y  # chord from (0, 1) to (1, 0); distance is this over sqrt(2)
    best = np.flatnonzero(below_chord == below_chord.max())
    return front[int(best[np.argmin(c[best])])]


def joint_choices(sens_bits: np.ndarray, sens_levels: np.ndarray, cost: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Bits x sparsity choices as one [L, B * S] problem for `solve` and `pareto_front`.

    Column b * S + s is bit choice b with sparsity level s. Sensitivities add (the harm of
    rounding a layer's weights and of thresholding its input are taken as independent);
    costs are given per pair, since sparsity changes what a bit width costs.

    Args:
        sens_bits: [L, B]; sens_levels: [L, S] (0 where the level changes nothing);
        cost: [L, B, S].

    Raises:
        ModelError: on mismatched shapes.
    """
    sb, sl, c = (np.asarray(x, dtype=np.float64) for x in (sens_bits, sens_levels, cost))
    if sb.ndim != 2 or sl.ndim != 2 or c.shape != (sb.shape[0], sb.shape[1], sl.shape[1]):
        raise ModelError("allocate", f"sens_bits {sb.shape}, sens_levels {sl.shape} and cost "
                         f"{c.shape} must be [L, B], [L, S] and [L, B, S]")
    sens = sb[:, :, None] + sl[:, None, :]
    return sens.reshape(sb.shape[0], -1), c.reshape(sb.shape[0], -1)


def split_choice(choice: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """(bit choice, sparsity level) per layer of a `joint_choices` column index."""
    return np.divmod(np.asarray(choice), levels)
