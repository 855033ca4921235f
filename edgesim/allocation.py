"""`allocate`: bits per layer for a budget in the target's terms, exactly, with the whole front.

The steps: candidate (w_bits, a_bits) choices for the target; sensitivity omega[l, b] of each
quantisable layer (HAWQ, LRP, proxy or uniform); cost[l, b] from the target's cost model
(layers the target cannot run at a choice get that choice disallowed); then the exact
multiple-choice knapsack over the quantisable layers, with the other layers' cost as a constant.

The jobs live in their own modules: `edgesim.alloc_problem` builds the knapsack problem,
`edgesim.alloc_solve` solves it, `edgesim.settle_rule` is HAWQ's stopping rule in allocation
terms; this module is the public entry point (`sensitivity`, `allocate`, `choice_errors`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from compiler.formats import NBITS_BLOCK, nbits_container
from compiler.ir import Graph
from edgesim.alloc_problem import (
    FLOAT,
    Problem,
    build_problem,
    candidate_bits,
    candidate_choices,
    candidate_weight_bits,
    fixed_bits,
    knapsack_budget,
    metric_cost,
    quantisable_elems,
    rest_bits,
    tied,
    user_units,
)
from edgesim.alloc_solve import given, solve_problem, uniform_mark, with_point
from edgesim.budget import Budget
from edgesim.errors import UserError
from edgesim.settle_rule import LOW_END, SETTLE_Z, settled_rule
from edgesim.simulation import runnable
from edgesim.tables import EmittedBytes, emitted_embedding_bits, table_cost
from hwmodels import kinds
from hwmodels.cost import Cost
from hwmodels.target import Target

# compiler.sensitivity (~0.4 s of imports) is imported by the functions that measure or read
# sensitivities, not here (see `edgesim.alloc_problem`)
if TYPE_CHECKING:
    from compiler.sensitivity import Sensitivity

# the public API of allocation, whichever of its modules holds a name (no private names)
__all__ = [
    "DATA_METHODS", "FLOAT", "LOW_END", "SETTLE_Z", "AllocationResult", "allocate",
    "candidate_bits", "candidate_choices", "choice_errors", "container_note", "fixed_bits",
    "knapsack_budget", "metric_cost", "rest_bits", "sensitivity", "settled_rule", "user_units",
    "with_emitted_tables", "with_point",
]

DATA_METHODS = ("hawq", "lrp")  # the sensitivity methods that read calibration samples


@dataclass(frozen=True, eq=False)
class AllocationResult:
    """An assignment with its predicted cost and sensitivity, and the front it was chosen from.

    Attributes:
        bits: int [L, 2] per layer (w_bits, a_bits), aligned with `Graph.layers`.
        metric: the budget's metric ("latency", "energy", "size" or "bits").
        budget: the budget in base units, or None when the knee of the front was chosen.
        total: predicted total of `metric` for `bits` (base units): for a latency or energy
            budget the plan's own cost (each layer with the plan's neighbours, which the
            budget holds for), for a size budget its file's bytes, else the front's estimate.
        sensitivity: total omega of `bits`.
        front: [P, 2] (total metric, total omega) of the non-dominated assignments, by cost.
        chosen: index into `front` of the chosen assignment.
        marks: reference points (fp32, uniform-8, uniform-4) as (total metric, total omega).
        sens: the per-layer sensitivities.
        cost: per-layer cost [L, 1] at `bits`.
        notes: what was decided on the user's behalf.
        blocks: int [L], each layer's block where its row is per-block (0 elsewhere); None
            when no block choice was offered (every per-block row at `NBITS_BLOCK`).
        block_omega: with `blocks`, [Lq] each of `sens.layers`' omega at its chosen
            (bits, block); None otherwise (then `sens.omega` by weight bits holds it).
    """

    bits: np.ndarray
    metric: str
    budget: float | None
    total: float
    sensitivity: float
    front: np.ndarray
    chosen: int
    marks: Mapping[str, tuple[float, float]]
    sens: Sensitivity
    cost: Cost
    notes: tuple[str, ...]
    blocks: np.ndarray | None = None
    block_omega: np.ndarray | None = None


def with_emitted_tables(g: Graph, cost: Cost, bits: np.ndarray) -> Cost:
    """`cost` [L, 1] of `bits` with the embedding tables' weight bytes as emitted."""
    from edgesim.assignment import quantisable

    weight = np.array(cost.weight_bytes)  # Cost normalises None to zeros
    tables = table_cost(g, "size", weight[:, 0])
    if not tables.rows:
        return cost
    width = emitted_embedding_bits(bits[quantisable(g), 0])
    weight[list(tables.rows), 0] = tables.emitted[width]
    return replace(cost, weight_bytes=weight)


def _assignment(p: Problem, choices: np.ndarray, choice: np.ndarray) -> np.ndarray:
    choice = tied(p, choice)
    bits = p.fixed_bits.copy()
    bits[p.rows] = choices[choice, :2]
    return bits


def _layer_blocks(p: Problem, choices: np.ndarray, choice: np.ndarray, count: int
                  ) -> np.ndarray:
    """Int [count]: the chosen block of each layer whose chosen row is per-block, else 0."""
    out, choice = np.zeros(count, dtype=np.int64), tied(p, choice)
    on = p.blocked[np.arange(len(choice)), choice]
    out[p.rows[on]] = choices[choice[on], 2]
    return out


def _with_block_bytes(p: Problem, cost: Cost, choice: np.ndarray) -> Cost:
    """`cost` [L, 1] of the chosen assignment with each layer's weight bytes at its block."""
    weight, choice = np.array(cost.weight_bytes), tied(p, choice)
    weight[p.rows, 0] += p.block_bytes[np.arange(len(choice)), choice]
    return replace(cost, weight_bytes=weight)


# what onnxruntime stores a width in (the format policy's MatMulNBits containers)
CONTAINER = {w: nbits_container(w) for w in range(2, 9)}


def container_note(bits: np.ndarray, target: Target, runtime: str) -> tuple[str, ...]:
    """Say how widths onnxruntime has no format for are counted (issue: containers)."""
    odd = sorted({int(w) for w in bits[:, 0] if w in CONTAINER and CONTAINER[w] != w})
    if not odd:
        return ()
    held = ", ".join(f"{w}-bit in {CONTAINER[w]}-bit" for w in odd)
    if runtime == "onnxruntime" and runtime in kinds.capabilities(target).runtimes:
        return (f"the model holds {held} containers (no onnxruntime format for those widths);"
                " predicted size and cost count the containers",)
    return (f"the ONNX file holds {held} containers for onnxruntime; predicted size and cost "
            f"on {getattr(target, 'name', 'the target')} count the true bits",)


def sensitivity(g: Graph, method: str, calib_inputs: Mapping[str, np.ndarray] | None = None,
                labels: np.ndarray | None = None,
                weight_bits: Sequence[int] | None = None,
                observe: Callable[[Mapping[str, np.ndarray]], None] | None = None,
                analysis_budget_s: float | None = None,
                settled: Callable[[Any, np.ndarray], np.ndarray] | None = None,
                forward: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]
                | None = None) -> Sensitivity:
    """Per-layer sensitivity of `g` by `method` ("hawq", "lrp", "proxy", "uniform").

    `observe`, for "hawq", sees every tensor of each calibration chunk's forward pass;
    `analysis_budget_s` bounds HAWQ's and LRP's time; `settled` (e.g. `settled_rule`) stops
    HAWQ's probing where more precision cannot change the allocation (see
    `compiler.sensitivity.hawq.sensitivity`); `forward` computes HAWQ's forward passes (e.g.
    `edgesim.float_pass.onnxruntime_env`); the other methods do not take them.
    """
    from compiler.sensitivity import METHODS

    if method not in METHODS:
        raise UserError("--method", f"{method!r} is not one of {sorted(METHODS)}")
    needs_data = method in DATA_METHODS
    if needs_data and calib_inputs is None:
        raise UserError("--method", f"{method} needs calibration data")
    extra = {k: v for k, v in (("observe", observe), ("budget_s", analysis_budget_s),
                               ("settled", settled), ("forward", forward))
             if v is not None and method == "hawq"}
    if method == "lrp" and analysis_budget_s is not None:  # LRP's chunks are bounded too
        extra["budget_s"] = analysis_budget_s
    return METHODS[method](g, calib_inputs if needs_data else None, labels,
                           bits=tuple(candidate_weight_bits(weight_bits)), **extra)


def allocate(g: Graph, target: Target, *, method: str = "hawq", budget: Budget | None = None,
             calib_inputs: Mapping[str, np.ndarray] | None = None,
             labels: np.ndarray | None = None, analysis_graph: Graph | None = None,
             sens: Sensitivity | None = None,
             weight_bits: Sequence[int] | None = None, act_bits: Sequence[int] | None = None,
             metric: str = "latency", threads: int | None = None,
             runtime: str = "onnxruntime", pick: int | None = None,
             assignment: np.ndarray | None = None,
             act_errors: np.ndarray | None = None, blocks: Sequence[int] | None = None,
             assignment_blocks: np.ndarray | None = None,
             emitted: EmittedBytes | None = None) -> AllocationResult:
    """Choose bits per layer of `g` on `target`: least total sensitivity within `budget`
    (exact multiple-choice knapsack), or the knee of the Pareto front when no budget is given.

    Args:
        g: the model to deploy (its static shapes are the deployment's).
        target: a loaded target (see `edgesim.loading.resolve_target`).
        method: "hawq", "lrp", "proxy" or "uniform".
        budget: a `Budget`; its metric replaces `metric`.
        calib_inputs: samples by input name (HAWQ and LRP need them).
        labels: class labels of the samples (HAWQ uses cross-entropy with them).
        analysis_graph: `g` at the calibration batch size (faster sensitivity); default `g`.
        sens: precomputed sensitivities (then method, calib_inputs, labels are unused).
        weight_bits: candidate weight bits (float32 is always a candidate; default
            `compiler.sensitivity.DEFAULT_BITS`).
        act_bits: candidate activation bits (default: the target's runtime convention).
        metric: what the front trades against sensitivity when no budget is given.
        threads, runtime: passed to CPU cost models.
        pick: emit this point of the front (index, 0 = cheapest) instead of the knee or the
            budget's optimum.
        assignment: int [L, 2]: take these bits (`compile --assignment`), no solve.
        act_errors: [Lq, B] each quantisable layer's own output error at each candidate
            (`choice_errors`): activation handling becomes a measured choice
            (`compiler.sensitivity.act_term`); None: activations add no sensitivity.
        blocks: candidate block sizes of per-block rows (e.g. (32, 64, 128)); None: the one
            block `NBITS_BLOCK`, and `AllocationResult.blocks` is None.
        assignment_blocks: int [L], the given assignment's block per layer (0: the first).
        emitted: plans already emitted in this compile (`edgesim.tables.emitted_file_bytes`,
            e.g. by `settled_rule`'s): a size budget's file estimates reuse their bytes.

    Raises:
        UserError: unknown method, a budget no assignment meets (naming the smallest one).
    """
    metric = budget.metric if budget is not None else metric
    weight_bits = candidate_weight_bits(weight_bits)
    if sens is None:
        sens = sensitivity(analysis_graph or g, method, calib_inputs, labels, weight_bits)
    choices = candidate_choices(target, weight_bits, act_bits, blocks)
    p = build_problem(g, sens, choices, target, metric, threads, runtime, act_errors, emitted)
    w_elems_q = quantisable_elems(g.layer_table(), p)
    own = _own_cost(g, p, choices, target, metric, threads, runtime)
    best, front, fit_notes = solve_problem(p, budget, w_elems_q, pick, own)
    if assignment is not None:
        best = given(p, choices, assignment, g, assignment_blocks)
    bits, cost = runnable(g, _assignment(p, choices, best.choice), target, threads, runtime)
    cost = _with_block_bytes(p, cost, best.choice)
    cost = with_emitted_tables(g, cost, bits)
    front_arr, chosen = with_point(
        np.array([(a.total_cost + p.fixed, a.total_sens) for a in front]),
        (best.total_cost + p.fixed, best.total_sens))
    marks = {name: m for name, w in (("fp32", FLOAT), ("uniform-8", 8), ("uniform-4", 4))
             if (m := uniform_mark(p, choices, w)) is not None}
    notes = ((f"{sens.method}: {', '.join(sens.notes)}",) if sens.notes else ()) + (
        () if budget else (f"no budget given: chose the knee of the {metric}-sensitivity "
                           "front",)) + container_note(bits, target, runtime) + (
        (BLOCK_NOTE,) if blocks is not None else ()) + fit_notes + plan_gap_note(
        metric, cost, best.total_cost + p.fixed)
    return AllocationResult(bits, metric, None if budget is None else budget.value,
                            best.total_cost + p.fixed, best.total_sens, front_arr, chosen,
                            marks, sens, cost, notes,
                            *((None, None) if blocks is None else (
                                _layer_blocks(p, choices, best.choice, len(g.layers)),
                                p.omega[np.arange(len(best.choice)), best.choice])))


def _own_cost(g: Graph, p: Problem, choices: np.ndarray, target: Target, metric: str,
              threads: int | None, runtime: str) -> Callable[[np.ndarray], float]:
    """choice [Lq] -> the plan's own latency or energy (every layer with the plan's
    neighbours, `runnable`, as `simulate` costs the emitted file read back) less `p.fixed`."""
    def own(choice: np.ndarray) -> float:
        _, cost = runnable(g, _assignment(p, choices, choice), target, threads, runtime)
        total = cost.total()
        return float(total.latency_s[0] if metric == "latency" else total.energy_pj[0]) - p.fixed
    return own


PLAN_GAP_NOTE = "off its front point"


def plan_gap_note(metric: str, cost: Cost, estimate: float) -> tuple[str, ...]:
    """A note when the chosen plan's own latency or energy (`cost`, each layer with the plan's
    neighbours) differs from the front's estimate, which costs each layer with its neighbours
    at the same choice: onnxruntime's int8 chains (`hwmodels.ort_int8`) depend on them."""
    if metric not in ("latency", "energy"):
        return ()
    total = cost.total()
    exact = float((total.latency_s if metric == "latency" else total.energy_pj)[0])
    gap = exact / estimate - 1.0 if estimate else 0.0
    if abs(gap) < 1e-9:
        return ()
    return (f"the plan's {metric} is {gap:+.3%} {PLAN_GAP_NOTE}: the front costs each layer "
            "with its neighbours at the same choice, the result with the plan's own "
            "neighbours (onnxruntime's int8 chains)",)


BLOCK_NOTE = ("blocks are a per-layer choice: sizes count each layer's block exactly; latency "
              f"and energy are modelled at block {NBITS_BLOCK} (the cost models take no block)")


def choice_errors(g: Graph, target: Target, sens: Sensitivity, stats: Any,
                  batches: Iterable[Mapping[str, np.ndarray]], *,
                  weight_bits: Sequence[int] | None = None,
                  act_bits: Sequence[int] | None = None, options: Any = None) -> np.ndarray:
    """[Lq, B] output error of each of `sens`'s layers alone at each candidate of
    `candidate_bits(target, weight_bits, act_bits)`, on calibration `batches` with activation
    ranges `stats` (`CalibrationStats`): `allocate`'s `act_errors`."""
    from compiler.sensitivity.act_term import output_errors

    index = {layer.name: i for i, layer in enumerate(g.layers)}
    rows = [index[name] for name in sens.layers]
    choices = candidate_bits(target, candidate_weight_bits(weight_bits), act_bits)
    return output_errors(g, rows, choices, stats, batches, options)
