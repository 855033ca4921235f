"""HAWQ's settle rule in allocation terms (`settled_rule`): a weight's trace is settled once no
value within its confidence interval changes the allocation it feeds by more than `SETTLE_EPS`.

The guarantee, per weight tensor: at both ends of the interval estimate +- `SETTLE_Z` standard
errors (about 95 % coverage for a normal mean), the plan chosen from the estimate is either the
plan that end would choose, or one *equivalent* to it there: its total omega (evaluated at that
end's traces) and its cost each within `SETTLE_EPS` of that plan's. A layer whose trace sits at
a tie between two plans that differ by less than that is settled (further probes could only
flip a coin between near-equal plans), whatever its relative error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from compiler.allocate import Allocation
from compiler.ir import Graph
from edgesim.alloc_problem import (
    build_problem,
    candidate_choices,
    candidate_omega,
    candidate_weight_bits,
    quantisable_elems,
    tied_omega,
)
from edgesim.alloc_solve import solve_problem
from edgesim.budget import Budget
from edgesim.errors import UserError
from edgesim.tables import EmittedBytes
from hwmodels.target import Target

SETTLE_Z = 2.0  # a trace is settled if its bits stay put anywhere within +-2 standard errors
# ... or move only to a plan within 1 % of the chosen one in total omega and in cost: a
# difference well below what the estimate of omega itself can resolve at tol = 5 %
SETTLE_EPS = 0.01
# An interval reaching 0 is tested at this fraction of the estimate: at exactly 0 every bit
# choice of the layer ties, and a tie is broken arbitrarily
LOW_END = 1e-3


def settled_rule(g: Graph, ga: Graph, target: Target, *, budget: Budget | None = None,
                 weight_bits: Sequence[int] | None = None,
                 act_bits: Sequence[int] | None = None, metric: str = "latency",
                 threads: int | None = None, runtime: str = "onnxruntime",
                 z: float = SETTLE_Z, eps: float = SETTLE_EPS,
                 emitted: EmittedBytes | None = None
                 ) -> Callable[[Any, np.ndarray], np.ndarray]:
    """HAWQ's stopping rule in allocation terms: (trace estimate, bool per weight tensor to
    test) -> bool per weight tensor, True where no value of that tensor's trace within `z`
    standard errors of the estimate changes the allocation (`allocate`'s exact answer for
    this budget, or the knee) to a plan that differs from it by more than `eps` (see the
    module docstring), and for every tensor not tested. A tensor's interval reaching 0 is
    tested at `LOW_END` times the estimate instead.

    Args:
        g: the model to deploy; ga: the graph the analysis runs on (same weights).
        target, budget, weight_bits, act_bits, metric, threads, runtime: as `allocate`.
        z: the half-width of the interval, in standard errors.
        eps: relative difference in total omega and in cost below which two plans are
            equivalent (0: only the same plan is).
        emitted: the compile's emitted plans (`edgesim.tables.emitted_file_bytes`), shared
            with its `allocate` call, so a size budget's uniform plans are emitted once.
    """
    built: list[tuple] = []  # built on first use: an analysis that meets tol never needs it
    bits = candidate_weight_bits(weight_bits)

    def rule(est: Any, test: np.ndarray | None = None) -> np.ndarray:
        if not built:
            built.append(_settle_problem(g, ga, target, budget, bits, act_bits, metric,
                                         threads, runtime, emitted))
        solve, sizes, index = built[0]
        score, half = est.trace[index] / sizes, est.rse[index] * z
        if test is not None:  # a layer not tested is settled: interval of width 0
            half = np.where(test[index], half, 0.0)
        try:
            return _settled_weights(solve, score, half, index, len(est.trace), eps)
        except UserError:  # an infeasible budget: the allocation will say so
            return np.zeros(len(est.trace), dtype=bool)
    return rule


# per-layer score -> (the chosen plan, the candidates' omega [Lq, B] at that score)
Solve = Callable[[np.ndarray], tuple[Allocation, np.ndarray]]


def _settle_problem(g: Graph, ga: Graph, target: Target, budget: Budget | None,
                    weight_bits: Sequence[int], act_bits: Sequence[int] | None, metric: str,
                    threads: int | None, runtime: str, emitted: EmittedBytes | None = None
                    ) -> tuple[Solve, np.ndarray, np.ndarray]:
    """(per-layer score -> (plan, omega), n_l, weight index per layer)."""
    from compiler.sensitivity import Sensitivity
    from compiler.sensitivity.hawq import unique_weights
    from compiler.sensitivity.proxy import (
        bit_choices,
        check_quantisable,
        quant_errors,
        weight_name,
        weight_sizes,
    )

    layers, bits = check_quantisable(ga), bit_choices(weight_bits)
    choices = candidate_choices(target, weight_bits, act_bits)
    blank = Sensitivity(tuple(layer.name for layer in layers), bits,
                        np.zeros((len(layers), len(bits))), np.zeros(len(layers)), "hawq")
    # probes steer by the estimate (no file_of); its uniform plans' bytes stay in `emitted`
    p = replace(build_problem(g, blank, choices, target, budget.metric if budget else metric,
                         threads, runtime, emitted=emitted), file_of=None)
    w_elems_q = quantisable_elems(g.layer_table(), p)
    qerr = quant_errors(ga, layers, bits)
    weights = unique_weights(layers)

    def solve(score: np.ndarray) -> tuple[Allocation, np.ndarray]:
        # by the front's estimate: `allocate` then checks a latency / energy budget's plan at
        # its own cost (`fit_exact`), which would add a few cost-model calls to every probe
        sens = replace(blank, omega=np.maximum(score, 0.0)[:, None] * qerr)
        omega = tied_omega(p, candidate_omega(sens, choices))
        return solve_problem(replace(p, omega=omega), budget, w_elems_q)[0], omega
    return (solve, weight_sizes(ga, layers),
            np.array([weights.index(weight_name(layer)) for layer in layers]))


def equivalent(chosen: Allocation, other: Allocation, omega: np.ndarray, eps: float) -> bool:
    """Whether plan `chosen` is within `eps` of plan `other` (the one the traces behind
    `omega` choose) in total omega at those traces and in cost: the same plan always is."""
    if np.array_equal(chosen.choice, other.choice):
        return True
    rows = np.arange(len(omega))
    mine, theirs = (float(omega[rows, a.choice].sum()) for a in (chosen, other))
    return (abs(mine - theirs) <= eps * max(mine, theirs)
            and abs(chosen.total_cost - other.total_cost)
            <= eps * max(abs(chosen.total_cost), abs(other.total_cost)))


def _settled_weights(solve: Solve, score: np.ndarray, half: np.ndarray, index: np.ndarray,
                     count: int, eps: float = 0.0) -> np.ndarray:
    """Per weight: every layer reading it keeps the assignment, or an `eps`-equivalent one,
    at both interval ends."""
    base = solve(score)[0]
    ok = np.isfinite(half)
    for i in np.flatnonzero(ok & (half > 0)):
        for f in (max(1.0 - half[i], LOW_END), 1.0 + half[i]):
            moved = score.copy()
            moved[i] *= f
            if not equivalent(base, *solve(moved), eps):
                ok[i] = False
                break
    out = np.ones(count, dtype=bool)
    np.logical_and.at(out, index, ok)
    return out
