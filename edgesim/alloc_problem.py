"""The allocation's knapsack problem: candidate choices, omega and cost per layer and choice.

`build_problem` turns a graph, its sensitivities and a target into a `Problem` (omega[l, b],
cost[l, b] in the budget's metric, the allowed choices, the fixed layers' cost, the embedding
tables, and a size budget's file estimate); `edgesim.alloc_solve` solves it.

Activation bits: on targets whose kind has `float_rest` (CPUs running onnxruntime), 8-bit
weights pair with 8-bit activations (QDQ, integer kernels) and lower weight bits run weight-only
(float activations: MatMulNBits / DequantizeLinear); other kinds (MCUs, MAC arrays) run 8-bit
activations throughout. `act_bits` overrides
this with an explicit candidate set. Sensitivities measure weight quantisation error; the
activation bits of a choice do not change its omega.

Blocks: a choice is (w_bits, a_bits, block). With `blocks` given, each quantised pair is offered
once per block to the layers whose format row is per-block (MatMulNBits, blocked
DequantizeLinear); their omega is measured on that block's grid
(`compiler.sensitivity.blocks`) and their size counts that block's scales
(`compiler.format_bytes.block_bytes_delta`). Without `blocks`, every choice has the one block
`NBITS_BLOCK`, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from compiler.format_bytes import block_bytes_delta
from compiler.formats import (
    BLOCKED_CODES,
    NBITS_BLOCK,
    Policy,
    check_block,
    resolve_codes,
)
from compiler.ir import Graph, LayerTable
from edgesim.budget import DECODER_METRICS
from edgesim.errors import UserError
from edgesim.simulation import runnable
from edgesim.tables import EmittedBytes, TableCost, file_overhead, plan_file, table_cost
from hwmodels import kinds
from hwmodels.cost import Cost, evaluate
from hwmodels.target import Target

# compiler.sensitivity (its package imports HAWQ, the executor, scipy.special: ~0.4 s) is
# imported by the functions that measure or read sensitivities, not here: sweep workers and
# `simulate` use this module's budget arithmetic only
if TYPE_CHECKING:
    from compiler.sensitivity import Sensitivity

FLOAT = 32


def rest_bits(count: int, float_rest: bool, a_bits: int = 8) -> np.ndarray:
    """Int [count, 2]: the bits of layers without a chosen width, in the target's convention:
    float32 where its kind has `float_rest` (onnxruntime runs them as float ops); else the
    full-integer pipeline's (a_bits, a_bits). `compile`, `allocate` and sweeps share this rule."""
    pair = (FLOAT, FLOAT) if float_rest else (a_bits, a_bits)
    return np.tile(np.array(pair, dtype=np.int64), (count, 1))


def fixed_bits(g: Graph, target: Target) -> np.ndarray:
    """Bits of the layers of `g` the allocator does not choose for (`rest_bits`)."""
    return rest_bits(len(g.layers), kinds.capabilities(target).float_rest)


def candidate_bits(target: Target, weight_bits: Sequence[int],
                   act_bits: Sequence[int] | None) -> np.ndarray:
    """Int [B, 2] candidate (w_bits, a_bits) choices, float32 first (see the module doc)."""
    if act_bits is not None:
        pairs = [(w, a) for w in weight_bits for a in act_bits]
    elif kinds.capabilities(target).float_rest:
        pairs = [(w, 8 if w == 8 else FLOAT) for w in weight_bits]
    else:
        pairs = [(w, 8) for w in weight_bits]
    return np.array([(FLOAT, FLOAT), *sorted(set(pairs), reverse=True)], dtype=np.int64)


def candidate_choices(target: Target, weight_bits: Sequence[int],
                      act_bits: Sequence[int] | None,
                      blocks: Sequence[int] | None = None) -> np.ndarray:
    """Int [B, 3] (w_bits, a_bits, block): each `candidate_bits` pair with quantised weights
    once per block of `blocks` (ascending: the smallest is every other row's block and wins
    ties), the others once; `blocks` None: `NBITS_BLOCK` alone (see the module doc)."""
    sizes = sorted({check_block(b, "--blocks") for b in blocks or (NBITS_BLOCK,)})
    return np.array([(w, a, b) for w, a in candidate_bits(target, weight_bits, act_bits).tolist()
                     for b in (sizes if w < 16 else sizes[:1])], dtype=np.int64)


def metric_cost(cost: Cost, metric: str, w_elems: np.ndarray, w_bits: np.ndarray) -> np.ndarray:
    """Per-layer contribution to a budget `metric` (base units), shaped like `cost`'s arrays
    ([L, B], or [H, L, B] in sweeps). "bits" counts weight bits, `w_elems` [L] times `w_bits`
    (broadcast against the cost arrays); give 0 elements for weights the average leaves out.
    `compile`, `allocate` and sweeps all read budgets through this table."""
    table: dict[str, Callable[[], np.ndarray]] = {
        "latency": lambda: cost.latency_s,
        "energy": lambda: cost.energy_pj,
        "size": lambda: np.asarray(cost.weight_bytes),  # normalised to an array by Cost
        "bits": lambda: np.broadcast_to(w_elems[:, None] * w_bits, cost.latency_s.shape),
    }
    if metric in DECODER_METRICS:  # prefill / decode / RAM: `edgesim.llm.budgets`
        raise UserError("--budget", f"{metric} budgets apply to decoders (zoo:tiny_lm, a "
                        "KV-cache decoder); use size, latency, energy or bits here")
    return table[metric]()


def knapsack_budget(metric: str, value: float, fixed: float, w_elems_q: float) -> float:
    """The knapsack's budget: the user's `value` (base units; bits: mean bits per quantisable
    weight, of which there are `w_elems_q`) less what the fixed layers take (`fixed`)."""
    total = value * w_elems_q if metric == "bits" else value
    return total - fixed


def user_units(metric: str, total: float, w_elems_q: float) -> float:
    """A metric total in the user's units (the inverse of `knapsack_budget`'s scaling)."""
    return total / max(w_elems_q, 1.0) if metric == "bits" else total


def candidate_weight_bits(weight_bits: Sequence[int] | None) -> Sequence[int]:
    """The candidate weight bits; None: `compiler.sensitivity.DEFAULT_BITS`."""
    from compiler.sensitivity import DEFAULT_BITS

    return DEFAULT_BITS if weight_bits is None else weight_bits


def candidate_omega(sens: Sensitivity, choices: np.ndarray) -> np.ndarray:
    """[Lq, B] omega for every candidate choice (float32 weights: 0)."""
    column = {int(b): j for j, b in enumerate(sens.bits)}
    out = np.zeros((len(sens.layers), len(choices)))
    for j, (w, *_) in enumerate(choices.tolist()):
        if w < FLOAT:
            if w not in column:
                raise UserError("--weight-bits", f"{w} has no sensitivity (computed for "
                                f"{sorted(column)})")
            out[:, j] = sens.omega[:, column[w]]
    return out


@dataclass(frozen=True, eq=False)
class Problem:
    rows: np.ndarray       # [Lq] layer indices of the quantisable layers
    omega: np.ndarray      # [Lq, B]
    cost: np.ndarray       # [Lq, B] metric contributions
    allowed: np.ndarray    # [Lq, B]
    fixed: float           # metric of every other layer
    fixed_bits: np.ndarray  # [L, 2] bits of the other layers (after target fallbacks)
    tables: TableCost      # embedding tables at the width each plan gives them
    w_bits: np.ndarray     # [B] the candidates' weight widths
    blocked: np.ndarray    # [Lq, B] the layer's row at the choice is per-block
    block_bytes: np.ndarray  # [Lq, B] weight bytes the choice's block adds over NBITS_BLOCK's
    file_of: Callable[[np.ndarray], float] | None = None  # size: a plan's file bytes - fixed
    # [Lq] the row whose choice each row takes: the first reader of a weight several layers
    # share (`tied_rows`); None: every row its own
    tie: np.ndarray | None = None


def tied(p: Problem, choice: np.ndarray) -> np.ndarray:
    """A solver's `choice` [Lq] with every row at its tie's choice (`Problem.tie`): the
    layers sharing a weight quantise it once, so they are one allocation unit."""
    return np.asarray(choice) if p.tie is None else np.asarray(choice)[p.tie]


def quantisable_elems(table: LayerTable, p: Problem) -> float:
    """Weight elements of the quantisable layers, a shared weight once (the "bits" budget's
    denominator)."""
    own = np.ones(len(p.rows), dtype=bool) if p.tie is None else p.tie == np.arange(len(p.rows))
    return float(table.w_elems[p.rows[own]].sum())


def _main_weight(g: Graph, row: int) -> str | None:
    """The largest constant a layer reads (its weight), None if it reads none."""
    consts = [t for t in g.layers[row].inputs if t in g.weights]
    return max(consts, key=lambda t: g.types[t].size) if consts else None


def tied_rows(g: Graph, rows: np.ndarray) -> np.ndarray:
    """Int [Lq]: for each of `rows`, the index (into `rows`) of the first one that reads the
    same weight (itself if none earlier does)."""
    first: dict[str, int] = {}
    return np.array([first.setdefault(_main_weight(g, int(r)) or f"#{i}", i)
                     for i, r in enumerate(rows)], dtype=np.int64)


def tied_omega(p: Problem, omega: np.ndarray) -> np.ndarray:
    """omega [Lq, B] with each tie group's carried by its first row (`_fold_ties`)."""
    if p.tie is None:
        return omega
    return _fold_ties(omega, p.cost, np.ones_like(p.allowed), p.tie)[0]


def _fold_ties(omega: np.ndarray, cost: np.ndarray, allowed: np.ndarray, tie: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(omega, cost, allowed) with each tie group carried by its first row: the choices every
    member allows, the members' costs summed (each streams the weight; its bytes count at the
    first, `hwmodels.cost.stored_once`), omega the largest member's (HAWQ scores the shared
    tensor once: each reader shows its trace); the other members cost and weigh nothing."""
    first = tie == np.arange(len(tie))
    ok = np.ones_like(allowed)
    np.logical_and.at(ok, tie, allowed)
    summed, worst = np.zeros_like(cost), np.zeros_like(omega)
    np.add.at(summed, tie, cost)
    np.maximum.at(worst, tie, omega)
    allowed = ok[tie]
    return (np.where(first[:, None], worst, 0.0),
            np.where(allowed & first[:, None], summed, 0.0), allowed)


def _blocked(table: LayerTable, choices: np.ndarray, target: Target
             ) -> tuple[np.ndarray, np.ndarray]:
    """([L, B] the layer's row at the choice is per-block, [L, B] the weight bytes its block
    adds over `NBITS_BLOCK`'s), rows resolved by the format policy the emitter follows."""
    codes = resolve_codes(table.kind_code, table.w_elems > 0, choices[:, :2],
                          Policy(int8_dot=kinds.int8_dot(target)))
    return (np.isin(codes, BLOCKED_CODES),
            block_bytes_delta(table, codes, choices[:, 0], choices[:, 2]))


def _pair_index(choices: np.ndarray) -> np.ndarray:
    """Int [B]: each choice's (w_bits, a_bits) pair, numbered in order of first appearance
    (the order of `candidate_bits`, whose columns `choice_errors` measures)."""
    first: dict[tuple[int, int], int] = {}
    return np.array([first.setdefault((w, a), len(first)) for w, a, _ in choices.tolist()],
                    dtype=np.int64)


def _pair_columns(choices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int [B] each choice's pair (`_pair_index`), int [P] each pair's first column):
    `x[..., first][..., pair]` gives every block of a pair its first block's value."""
    pair = _pair_index(choices)
    return pair, np.unique(pair, return_index=True)[1]


def _with_act(omega: np.ndarray, act_errors: np.ndarray, choices: np.ndarray) -> np.ndarray:
    """`with_act_term` per (w, a) pair at its first block, its activation term added to every
    block of the pair (the activation error does not depend on the weight's block)."""
    from compiler.sensitivity.act_term import with_act_term

    pair, first = _pair_columns(choices)
    base = omega[:, first]
    added = with_act_term(base, act_errors, choices[first, :2]) - base
    return np.maximum(omega + added[:, pair], 0.0)


def build_problem(g: Graph, sens: Sensitivity, choices: np.ndarray, target: Target, metric: str,
             threads: int | None, runtime: str, act_errors: np.ndarray | None = None,
             emitted: EmittedBytes | None = None) -> Problem:
    from compiler.sensitivity.blocks import block_omega

    table = g.layer_table()
    blocked, extra = _blocked(table, choices, target)
    if table.w_repeat is not None:  # a shared weight's scales are stored once too
        extra = np.where(table.w_repeat[:, None], 0.0, extra)
    full = evaluate(table, choices[:, :2], target, threads=threads, runtime=runtime)
    full = replace(full, weight_bytes=np.asarray(full.weight_bytes) + extra)
    index = {layer.name: i for i, layer in enumerate(g.layers)}
    rows = np.array([index[name] for name in sens.layers], dtype=np.int64)
    # average bits count only the quantisable weights; other metrics count every layer
    w_elems = np.zeros(len(g.layers))
    w_elems[rows] = table.w_elems[rows]
    if table.w_repeat is not None:  # a shared weight's elements count once
        w_elems[table.w_repeat] = 0
    per = metric_cost(full, metric, w_elems, choices[:, 0].astype(np.float64))
    others = np.setdiff1d(np.arange(len(g.layers)), rows)
    others_bits, fixed_cost = runnable(g, fixed_bits(g, target), target, threads, runtime)
    counted = metric_cost(fixed_cost, metric, w_elems, others_bits[:, :1])[:, 0]
    fixed = float(counted[others].sum())
    # a block other than the first is a choice only where the row is per-block
    allowed = (np.isfinite(full.latency_s[rows]) & np.isfinite(per[rows])
               & (blocked[rows] | (choices[:, 2] == choices[0, 2])[None, :]))
    omega = candidate_omega(sens, choices)
    if (choices[:, 2] != NBITS_BLOCK).any():  # each block measured on its own grid
        omega = block_omega(g, sens, omega, choices[:, 0], choices[:, 2], blocked[rows])
    if act_errors is not None:  # activation handling is a choice: its measured error term
        omega = _with_act(omega, act_errors, choices)
    cost = np.where(allowed, per[rows], 0.0)
    tables = table_cost(g, metric, counted)
    onnx_file = runtime == "onnxruntime" and runtime in kinds.capabilities(target).runtimes
    file_of = None  # other runtimes' sizes are the device's bytes, not an ONNX file's
    if metric == "size" and onnx_file:  # the budget holds for the file, graph and all
        file_of = plan_file(g, others_bits, rows, choices, fixed, emitted)
        # the uniform plans: every quantisable layer at one column the target runs on all
        uniform = np.flatnonzero(allowed.all(axis=0) & (choices[:, 2] == choices[0, 2]))
        tables, share = file_overhead(tables, {int(j): float(cost[:, j].sum()) for j in uniform},
                                      lambda j: file_of(np.full(len(rows), j)),
                                      choices[:, 0], len(rows))
        pair, first = _pair_columns(choices)
        share = share[first][pair]  # a pair's other blocks write the same graph around it
        cost = np.where(allowed, cost + share[None], 0.0)
    tie = tied_rows(g, rows)
    omega, cost, allowed = _fold_ties(omega, cost, allowed, tie)
    file_tied = None if file_of is None else _tied_file(file_of, tie)
    return Problem(rows, omega, cost, allowed, fixed, others_bits, tables, choices[:, 0],
                    blocked[rows], extra[rows], file_tied, tie)


def _tied_file(file_of: Callable[[np.ndarray], float], tie: np.ndarray
               ) -> Callable[[np.ndarray], float]:
    """`file_of` of a solver's choice with its tie groups at their first row's choice."""
    return lambda choice: file_of(np.asarray(choice)[tie])
