"""`allocate`: bits per layer for a budget in the target's terms, exactly, with the whole front.

The steps: candidate (w_bits, a_bits) choices for the target; sensitivity omega[l, b] of each
quantisable layer (HAWQ, LRP, proxy or uniform); cost[l, b] from the target's cost model
(layers the target cannot run at a choice get that choice disallowed); then the exact
multiple-choice knapsack over the quantisable layers, with the other layers' cost as a constant.

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
(`compiler.formats.block_bytes_delta`). Without `blocks`, every choice has the one block
`NBITS_BLOCK`, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from compiler.allocate import Allocation, InfeasibleBudget, knee, pareto_front, solve
from compiler.formats import (
    BLOCKED_CODES,
    NBITS_BLOCK,
    Policy,
    block_bytes_delta,
    check_block,
    nbits_container,
    resolve_codes,
)
from compiler.ir import Graph, LayerTable
from edgesim.budget import DECODER_METRICS, Budget, format_value
from edgesim.errors import UserError
from edgesim.simulation import runnable
from edgesim.tables import (
    EmittedBytes,
    TableCost,
    emitted_embedding_bits,
    file_overhead,
    fit_file,
    plan_file,
    solve_coupled,
    table_cost,
)
from hwmodels import kinds
from hwmodels.cost import Cost, evaluate
from hwmodels.target import Target

# compiler.sensitivity (its package imports HAWQ, the executor, scipy.special: ~0.4 s) is
# imported by the functions that measure or read sensitivities, not here: sweep workers and
# `simulate` use this module's budget arithmetic only
if TYPE_CHECKING:
    from compiler.sensitivity import Sensitivity

FLOAT = 32
FRONT_POINTS = 50


@dataclass(frozen=True, eq=False)
class AllocationResult:
    """An assignment with its predicted cost and sensitivity, and the front it was chosen from.

    Attributes:
        bits: int [L, 2] per layer (w_bits, a_bits), aligned with `Graph.layers`.
        metric: the budget's metric ("latency", "energy", "size" or "bits").
        budget: the budget in base units, or None when the knee of the front was chosen.
        total: predicted total of `metric` for `bits` (base units).
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


def _omega(sens: Sensitivity, choices: np.ndarray) -> np.ndarray:
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
class _Problem:
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


def _problem(g: Graph, sens: Sensitivity, choices: np.ndarray, target: Target, metric: str,
             threads: int | None, runtime: str, act_errors: np.ndarray | None = None,
             emitted: EmittedBytes | None = None) -> _Problem:
    from compiler.sensitivity.blocks import block_omega

    table = g.layer_table()
    blocked, extra = _blocked(table, choices, target)
    full = evaluate(table, choices[:, :2], target, threads=threads, runtime=runtime)
    full = replace(full, weight_bytes=np.asarray(full.weight_bytes) + extra)
    index = {layer.name: i for i, layer in enumerate(g.layers)}
    rows = np.array([index[name] for name in sens.layers], dtype=np.int64)
    # average bits count only the quantisable weights; other metrics count every layer
    w_elems = np.zeros(len(g.layers))
    w_elems[rows] = table.w_elems[rows]
    per = metric_cost(full, metric, w_elems, choices[:, 0].astype(np.float64))
    others = np.setdiff1d(np.arange(len(g.layers)), rows)
    others_bits, fixed_cost = runnable(g, fixed_bits(g, target), target, threads, runtime)
    counted = metric_cost(fixed_cost, metric, w_elems, others_bits[:, :1])[:, 0]
    fixed = float(counted[others].sum())
    # a block other than the first is a choice only where the row is per-block
    allowed = (np.isfinite(full.latency_s[rows]) & np.isfinite(per[rows])
               & (blocked[rows] | (choices[:, 2] == choices[0, 2])[None, :]))
    omega = _omega(sens, choices)
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
    return _Problem(rows, omega, cost, allowed, fixed, others_bits, tables, choices[:, 0],
                    blocked[rows], extra[rows], file_of)


def _tables_delta(p: _Problem, choice: np.ndarray) -> float:
    """What the plan's embedding tables add to its metric over the fp32 count in `fixed`."""
    return p.tables.delta(emitted_embedding_bits(p.w_bits[choice]))


def _true_front(p: _Problem, front: list[Allocation]) -> list[Allocation]:
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


def _assignment(p: _Problem, choices: np.ndarray, choice: np.ndarray) -> np.ndarray:
    bits = p.fixed_bits.copy()
    bits[p.rows] = choices[choice, :2]
    return bits


def _layer_blocks(p: _Problem, choices: np.ndarray, choice: np.ndarray, count: int
                  ) -> np.ndarray:
    """Int [count]: the chosen block of each layer whose chosen row is per-block, else 0."""
    out = np.zeros(count, dtype=np.int64)
    on = p.blocked[np.arange(len(choice)), choice]
    out[p.rows[on]] = choices[choice[on], 2]
    return out


def _with_block_bytes(p: _Problem, cost: Cost, choice: np.ndarray) -> Cost:
    """`cost` [L, 1] of the chosen assignment with each layer's weight bytes at its block."""
    weight = np.array(cost.weight_bytes)
    weight[p.rows, 0] += p.block_bytes[np.arange(len(choice)), choice]
    return replace(cost, weight_bytes=weight)


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


def _uniform_mark(p: _Problem, choices: np.ndarray, w_bits: int) -> tuple[float, float] | None:
    cols = [j for j, (w, *_) in enumerate(choices.tolist()) if w == w_bits]
    for j in cols:
        if p.allowed[:, j].all():
            delta = p.tables.delta(emitted_embedding_bits(np.array([w_bits])))
            return p.fixed + float(p.cost[:, j].sum()) + delta, float(p.omega[:, j].sum())
    return None


def _given(p: _Problem, choices: np.ndarray, bits: np.ndarray, g: Graph,
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


def _solve_budget(p: _Problem, limit: float) -> Allocation:
    """The exact optimum within `limit`, its total cost counting the tables as emitted; for
    a size budget, the optimum whose file fits (`edgesim.tables.fit_file`)."""
    if p.file_of is not None:
        return fit_file(lambda room: _solve_tables(p, room), limit, p.file_of)
    return _solve_tables(p, limit)


def _solve_tables(p: _Problem, limit: float) -> Allocation:
    if not p.tables.active():
        return solve(p.omega, p.cost, limit, allowed=p.allowed)
    best, width = solve_coupled(p.omega, p.cost, p.allowed, p.w_bits, limit, p.tables)
    return replace(best, total_cost=best.total_cost + p.tables.delta(width))


def _solve(p: _Problem, budget: Budget | None, w_elems_q: float, pick: int | None = None
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


DATA_METHODS = ("hawq", "lrp")  # the sensitivity methods that read calibration samples
SETTLE_Z = 2.0  # a trace is settled if its bits stay put anywhere within +-2 standard errors
# An interval reaching 0 is tested at this fraction of the estimate: at exactly 0 every bit
# choice of the layer ties, and a tie is broken arbitrarily
LOW_END = 1e-3


def _weight_bits(weight_bits: Sequence[int] | None) -> Sequence[int]:
    """The candidate weight bits; None: `compiler.sensitivity.DEFAULT_BITS`."""
    from compiler.sensitivity import DEFAULT_BITS

    return DEFAULT_BITS if weight_bits is None else weight_bits


def settled_rule(g: Graph, ga: Graph, target: Target, *, budget: Budget | None = None,
                 weight_bits: Sequence[int] | None = None,
                 act_bits: Sequence[int] | None = None, metric: str = "latency",
                 threads: int | None = None, runtime: str = "onnxruntime",
                 z: float = SETTLE_Z, emitted: EmittedBytes | None = None
                 ) -> Callable[[Any, np.ndarray], np.ndarray]:
    """HAWQ's stopping rule in allocation terms: (trace estimate, bool per weight tensor to
    test) -> bool per weight tensor, True where no value of that tensor's trace within `z`
    standard errors of the estimate changes the allocation (`allocate`'s exact answer for
    this budget, or the knee), and for every tensor not tested. A tensor's interval reaching
    0 is tested at `LOW_END` times the estimate instead.

    Args:
        g: the model to deploy; ga: the graph the analysis runs on (same weights).
        target, budget, weight_bits, act_bits, metric, threads, runtime: as `allocate`.
        z: the half-width of the interval, in standard errors.
        emitted: the compile's emitted plans (`edgesim.tables.emitted_file_bytes`), shared
            with its `allocate` call, so a size budget's uniform plans are emitted once.
    """
    built: list[tuple] = []  # built on first use: an analysis that meets tol never needs it
    bits = _weight_bits(weight_bits)

    def rule(est: Any, test: np.ndarray | None = None) -> np.ndarray:
        if not built:
            built.append(_settle_problem(g, ga, target, budget, bits, act_bits, metric,
                                         threads, runtime, emitted))
        choice, sizes, index = built[0]
        score, half = est.trace[index] / sizes, est.rse[index] * z
        if test is not None:  # a layer not tested is settled: interval of width 0
            half = np.where(test[index], half, 0.0)
        try:
            return _settled_weights(choice, score, half, index, len(est.trace))
        except UserError:  # an infeasible budget: the allocation will say so
            return np.zeros(len(est.trace), dtype=bool)
    return rule


def _settle_problem(g: Graph, ga: Graph, target: Target, budget: Budget | None,
                    weight_bits: Sequence[int], act_bits: Sequence[int] | None, metric: str,
                    threads: int | None, runtime: str, emitted: EmittedBytes | None = None
                    ) -> tuple[Callable[[np.ndarray], np.ndarray], np.ndarray, np.ndarray]:
    """(per-layer trace per weight -> chosen column per layer, n_l, weight index per layer)."""
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
    p = replace(_problem(g, blank, choices, target, budget.metric if budget else metric,
                         threads, runtime, emitted=emitted), file_of=None)
    w_elems_q = float(g.layer_table().w_elems[p.rows].sum())
    qerr = quant_errors(ga, layers, bits)
    weights = unique_weights(layers)

    def choice(score: np.ndarray) -> np.ndarray:
        sens = replace(blank, omega=np.maximum(score, 0.0)[:, None] * qerr)
        return _solve(replace(p, omega=_omega(sens, choices)), budget, w_elems_q)[0].choice
    return (choice, weight_sizes(ga, layers),
            np.array([weights.index(weight_name(layer)) for layer in layers]))


def _settled_weights(choice: Callable[[np.ndarray], np.ndarray], score: np.ndarray,
                     half: np.ndarray, index: np.ndarray, count: int) -> np.ndarray:
    """Per weight: every layer reading it keeps the whole assignment at both interval ends."""
    base = choice(score)
    ok = np.isfinite(half)
    for i in np.flatnonzero(ok & (half > 0)):
        for f in (max(1.0 - half[i], LOW_END), 1.0 + half[i]):
            moved = score.copy()
            moved[i] *= f
            if not np.array_equal(choice(moved), base):
                ok[i] = False
                break
    out = np.ones(count, dtype=bool)
    np.logical_and.at(out, index, ok)
    return out


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
    `edgesim.quantize.onnxruntime_env`); the other methods do not take them.
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
                           bits=tuple(_weight_bits(weight_bits)), **extra)


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
    weight_bits = _weight_bits(weight_bits)
    if sens is None:
        sens = sensitivity(analysis_graph or g, method, calib_inputs, labels, weight_bits)
    choices = candidate_choices(target, weight_bits, act_bits, blocks)
    p = _problem(g, sens, choices, target, metric, threads, runtime, act_errors, emitted)
    w_elems_q = float(g.layer_table().w_elems[p.rows].sum())
    best, front = _solve(p, budget, w_elems_q, pick)
    if assignment is not None:
        best = _given(p, choices, assignment, g, assignment_blocks)
    bits, cost = runnable(g, _assignment(p, choices, best.choice), target, threads, runtime)
    cost = _with_block_bytes(p, cost, best.choice)
    cost = with_emitted_tables(g, cost, bits)
    front_arr, chosen = with_point(
        np.array([(a.total_cost + p.fixed, a.total_sens) for a in front]),
        (best.total_cost + p.fixed, best.total_sens))
    marks = {name: m for name, w in (("fp32", FLOAT), ("uniform-8", 8), ("uniform-4", 4))
             if (m := _uniform_mark(p, choices, w)) is not None}
    notes = ((f"{sens.method}: {', '.join(sens.notes)}",) if sens.notes else ()) + (
        () if budget else (f"no budget given: chose the knee of the {metric}-sensitivity "
                           "front",)) + container_note(bits, target, runtime) + (
        (BLOCK_NOTE,) if blocks is not None else ())
    return AllocationResult(bits, metric, None if budget is None else budget.value,
                            best.total_cost + p.fixed, best.total_sens, front_arr, chosen,
                            marks, sens, cost, notes,
                            *((None, None) if blocks is None else (
                                _layer_blocks(p, choices, best.choice, len(g.layers)),
                                p.omega[np.arange(len(best.choice)), best.choice])))


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
    choices = candidate_bits(target, _weight_bits(weight_bits), act_bits)
    return output_errors(g, rows, choices, stats, batches, options)
