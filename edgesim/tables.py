"""Embedding tables in a size budget: counted at the format emission writes them in.

The quantize pass writes gather tables of at least `QuantOptions.min_embedding` elements as
com.microsoft::GatherBlockQuantized when the plan quantises anything: in the container of the
plan's narrowest quantised MAC weight (`emitted_embedding_bits`, the "auto" rule of
`edgesim.quantize`). The cost models count a gather's table at its IR size (fp32), so a size
budget that reads them alone over-counts a model whose embedding dominates (all-MiniLM-L6-v2:
47 MB of fp32 table, 12 MB emitted). `TableCost` holds, per embedding width, what the tables
add to the size metric over that fp32 count, and `solve_coupled` solves the knapsack exactly
although that width depends on the plan (one solve per width, with the width's constraint).

A size budget holds for the file, not only for its weights: the graph around them (nodes,
names, activation scales, shape constants, metadata) takes 3-6 % of a small model's file.
`file_overhead` emits the uniform plan of every candidate once (weights quantised to
nearest, every activation on a grid of its own, bias correction's biases in place): the float
plan's bytes beyond the cost model's weight bytes are a constant, and each quantisable layer
at a candidate adds an equal share of that candidate's uniform plan's excess over it. That
estimate steers the knapsack; `fit_file` then emits the chosen plan the same way and solves
again with less room until its own bytes fit.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np

from compiler.allocate import Allocation, InfeasibleBudget, smallest_feasible_budget, solve
from compiler.format_bytes import WeightGeometry, emitted_bytes
from compiler.formats import int_container
from compiler.ir import Graph

if TYPE_CHECKING:
    from compiler.emit import EmitOptions
    from compiler.passes.calibrate import CalibrationStats

FLOAT = 32
# embedding width -> the weight widths a plan with that width may use, and the widths of
# which it must use at least one (the "auto" rule read backwards); None = float tables
WIDTH_RULE: Mapping[int | None, tuple[tuple[int, ...], tuple[int, ...]]] = MappingProxyType({
    4: ((2, 3, 4, 5, 6, 7, 8, 16, FLOAT), (2, 3, 4)),
    8: ((5, 6, 7, 8, 16, FLOAT), (5, 6, 7, 8)),
    None: ((16, FLOAT), ()),
})


def emitted_embedding_bits(w_bits: np.ndarray) -> int | None:
    """The width emission gives large gather tables: the container (4 or 8) of the narrowest
    quantised MAC weight width in `w_bits` (the MAC layers' weight bits), None if none is."""
    w = np.asarray(w_bits)
    w = w[w < 16]
    return None if w.size == 0 else int_container(int(w.min()))


def quantised_tables(g: Graph) -> tuple[tuple[int, tuple[int, ...]], ...]:
    """(layer index, table shape) of the gather layers whose table emission quantises: a
    constant 2-D float table gathered along rows, of at least `min_embedding` elements (the
    quantize pass's conditions)."""
    from compiler.passes.quantize import QuantOptions

    out = []
    for i, layer in enumerate(g.layers):
        spec = g.types.get(layer.inputs[0]) if layer.kind == "gather" else None
        if (spec is None or layer.inputs[0] not in g.weights or len(spec.shape) != 2
                or not np.issubdtype(np.dtype(spec.dtype), np.floating)
                or layer.attrs.get("axis", 0) != 0 or layer.attrs.get("elements")):
            continue
        if spec.size >= QuantOptions.min_embedding:
            out.append((i, spec.shape))
    return tuple(out)


def table_bytes(shape: tuple[int, ...], bits: int | None, block: int | None = None) -> float:
    """Bytes of a [V, D] table as emitted: fp32, or GatherBlockQuantized's `bits`-bit codes
    and one fp32 scale per block of `block` along D (`compiler.formats`' "gbq" row)."""
    from compiler.passes.quantize import QuantOptions

    rows, cols = shape
    geometry = WeightGeometry(elems=rows * cols, channels=rows, k=cols,
                              granularity="per_block", block=block or QuantOptions.block)
    return float(emitted_bytes("float" if bits is None else "gbq", bits or FLOAT, geometry))


@dataclass(frozen=True)
class TableCost:
    """What the quantised tables add to a budget metric, per embedding width.

    Attributes:
        rows: layer indices of the tables.
        emitted: per table [T], per width: the metric as emitted.
        counted: per table [T]: the metric the cost model counts (fp32 tables).
    """

    rows: tuple[int, ...]
    emitted: Mapping[int | None, tuple[float, ...]]
    counted: tuple[float, ...]
    # per width: file bytes beyond the weights (`file_overhead`); size budgets only
    overhead: Mapping[int | None, float] = field(default_factory=lambda: MappingProxyType({}))

    def delta(self, width: int | None) -> float:
        """Metric to add to the cost model's total for tables at `width` (and, for size,
        the graph around the weights)."""
        return float(sum(self.emitted[width]) - sum(self.counted)
                     + self.overhead.get(width, 0.0))

    def active(self) -> bool:
        """Whether the width changes the metric at all."""
        return any(self.delta(w) != 0.0 for w in WIDTH_RULE)


def table_cost(g: Graph, metric: str, counted: np.ndarray) -> TableCost:
    """The tables' `TableCost` for a budget `metric`; `counted` [L] is the metric per layer as
    the cost model counts it. Only "size" changes with the width (a gather reads its rows
    whatever their format; the cost models price that pass alone)."""
    tables = quantised_tables(g)
    rows = tuple(i for i, _ in tables)
    base = tuple(float(counted[i]) for i in rows)
    if metric != "size":
        return TableCost(rows, {w: base for w in WIDTH_RULE}, base)
    return TableCost(rows, {w: tuple(table_bytes(s, w) for _, s in tables) for w in WIDTH_RULE},
                     base)


def width_masks(w_bits: np.ndarray, width: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Bool [B] per candidate weight width: (a plan at `width` may use it, needs one of)."""
    may, need = WIDTH_RULE[width]
    return np.isin(w_bits, may), np.isin(w_bits, need)


def _relaxed(solver: Callable[[np.ndarray], Allocation], allowed: np.ndarray,
             need: np.ndarray) -> Allocation | None:
    """The best allocation within `allowed` that picks a `need` column on some layer."""
    try:
        first = solver(allowed)
    except InfeasibleBudget:
        return None
    if not need.any() or need[first.choice].any():
        return first
    best = None
    for layer in np.flatnonzero((allowed & need[None]).any(axis=1)):
        try:
            cand = solver(_forced(allowed, need, layer))
        except InfeasibleBudget:
            continue
        if best is None or cand.total_sens < best.total_sens:
            best = cand
    return best


def solve_coupled(omega: np.ndarray, cost: np.ndarray, allowed: np.ndarray, w_bits: np.ndarray,
                  limit: float, tables: TableCost) -> tuple[Allocation, int | None]:
    """The least-sensitive allocation whose cost plus its tables' (at the width the plan
    gives them) is within `limit`, and that width. Exact: each width's plans are a
    multiple-choice knapsack with a budget less that width's tables, restricted to the
    weight widths that give it and needing one of its narrowest; the "needs one" constraint
    is met by forcing each layer in turn when the unconstrained optimum misses it.

    Raises:
        InfeasibleBudget: no width's plans fit; its smallest feasible budget is the least
            over the widths.
    """
    found: list[tuple[Allocation, int | None]] = []
    for width in WIDTH_RULE:
        may, need = width_masks(w_bits, width)
        room = limit - tables.delta(width)
        if not (allowed & may[None]).any(axis=1).all():
            continue  # some layer cannot run at any width this table width allows

        def solver(mask: np.ndarray, room: float = room) -> Allocation:
            return solve(omega, cost, room, allowed=mask)
        best = _relaxed(solver, allowed & may[None], need)
        if best is not None:
            found.append((best, width))
    if not found:
        raise InfeasibleBudget(limit, smallest_coupled(cost, allowed, w_bits, tables))
    return min(found, key=lambda f: (f[0].total_sens, f[0].total_cost + tables.delta(f[1])))


def smallest_coupled(cost: np.ndarray, allowed: np.ndarray, w_bits: np.ndarray,
                     tables: TableCost) -> float:
    """The smallest budget `solve_coupled` meets (itself met, to the last float): per width,
    every layer at its cheapest allowed column, one of them moved onto a needed column."""
    best = np.inf
    zero = np.zeros_like(cost)
    for width in WIDTH_RULE:
        may, need = width_masks(w_bits, width)
        ok = allowed & may[None]
        if not ok.any(axis=1).all():
            continue
        masks = [ok] if not need.any() else [_forced(ok, need, layer) for layer in
                                             np.flatnonzero((ok & need[None]).any(axis=1))]
        for mask in masks:
            plan = smallest_feasible_budget(zero, cost, mask)
            best = min(best, _covering(plan, tables.delta(width)))
    return best


def _forced(ok: np.ndarray, need: np.ndarray, layer: int | np.integer) -> np.ndarray:
    out = ok.copy()
    out[layer] &= need
    return out


def _covering(plan: float, delta: float) -> float:
    """The least float v with v - delta >= plan (the room `solve_coupled` computes)."""
    v = plan + delta
    while v - delta < plan:
        v = float(np.nextafter(v, np.inf))
    return v


# What `edgesim.pipeline` writes into metadata_props besides the plan: target, method and
# budget (counted at this many characters each, assumed wider than any real one) and each
# layer's predicted latency in ms to 6 decimals (counted at this figure's width: < 10 s).
PROVENANCE_TEXT = 32
LATENCY_FIGURE = 1234.567891


def spread_stats(g: Graph) -> CalibrationStats:
    """Range statistics with a range of its own on every float activation of `g`: no two
    activation grids coincide, so the emitter shares no grid parameters between tensors
    (real data can only let it share more, and write less)."""
    from compiler.activation_quant import RangeStats
    from compiler.passes.calibrate import CalibrationStats, folds_into_requant

    floats = [t for t, s in g.types.items()
              if t not in g.weights and np.issubdtype(np.dtype(s.dtype), np.floating)]
    # ReLU-like outputs are >= 0 on any data (their grids start at 0, as the emitter's
    # identity and requantisation folds expect)
    positive = {t for layer in g.layers if folds_into_requant(layer) for t in layer.outputs}
    stats = {t: RangeStats().update(np.array([0.0 if t in positive else -1.0 - i / 64,
                                              1.0 + i / 64], np.float32), t)
             for i, t in enumerate(floats)}
    return CalibrationStats(MappingProxyType(stats), 1, "spread ranges (file size only)")


def _provenance(g: Graph) -> EmitOptions:
    from compiler.emit import EmitOptions

    latency = json.dumps({layer.name: LATENCY_FIGURE for layer in g.layers},
                         separators=(",", ":"))
    text = "x" * PROVENANCE_TEXT
    return EmitOptions(metadata=(("edgesim.target", text), ("edgesim.method", text),
                                 ("edgesim.budget", text),
                                 ("edgesim.predicted_latency_ms", latency)))


def plan_file_bytes(g: Graph, bits: np.ndarray, width: int | None,
                    blocks: Mapping[str, int] | None = None) -> int:
    """Bytes of the file `edgesim compile` writes for plan `bits` [L, 2] (and per-layer
    `blocks`, layer name -> block) with embedding tables at `width`, with every activation on
    a grid of its own (`spread_stats`) and a bias on every layer bias correction may correct;
    exact for the weights and the graph."""
    from compiler.bias_correction import OUTPUT_AXIS, correct_biases, eligible
    from compiler.emit import emit
    from compiler.emit.write import file_bytes
    from compiler.passes.quantize import QuantOptions, quantize

    opts = QuantOptions(act_method="minmax", embedding_bits=width,
                        layer_blocks=dict(blocks or {}))
    qg = quantize(g, bits, spread_stats(g), opts)
    shifts = {layer.name: np.zeros(qg.types[layer.outputs[0]].shape[OUTPUT_AXIS[layer.kind]])
              for layer in qg.layers if eligible(layer, opts.bias_correction_bits)}
    return file_bytes(emit(correct_biases(qg, shifts), _provenance(g), check=False))


# plan -> its file bytes, for one compile: (id of the graph, bits dtype, shape and bytes,
# embedding width, blocks); made by the caller and dropped with it (the graph outlives it)
EmittedBytes = dict[tuple[object, ...], int]


def emitted_file_bytes(emitted: EmittedBytes | None, g: Graph, bits: np.ndarray,
                       width: int | None, blocks: Mapping[str, int] | None = None) -> int:
    """`plan_file_bytes`, each plan emitted once per `emitted`: HAWQ's settle rule and the
    allocation price the same uniform plans (~0.5 s of emission each on a small model).
    None: no reuse."""
    if emitted is None:
        return plan_file_bytes(g, bits, width, blocks)
    key = (id(g), bits.dtype.str, bits.shape, bits.tobytes(), width,
           tuple(sorted((blocks or {}).items())))
    if key not in emitted:
        emitted[key] = plan_file_bytes(g, bits, width, blocks)
    return emitted[key]


def file_overhead(tables: TableCost, predicted: Mapping[int, float],
                  plan_bytes: Callable[[int], float], w_bits: np.ndarray, layers: int
                  ) -> tuple[TableCost, np.ndarray]:
    """The file bytes beyond the predicted size, estimated: (a) `tables` with the float
    plan's as a constant; (b) per candidate column [B], what each of the `layers` quantisable
    layers adds over it at that column: an equal share of its uniform plan's excess.
    `predicted` maps each candidate column with a uniform plan to that plan's predicted size
    (cost model weight bytes, before `tables.delta`), `plan_bytes` to its file bytes (in the
    same terms, e.g. `plan_file`'s). Exact for the uniform plans; a mixed plan is off by how
    unequally its layers' nodes and names differ from the shares, which `fit_file` corrects
    with the plan's own bytes."""
    over: dict[int, float] = {}
    for col, size in predicted.items():
        width = emitted_embedding_bits(np.array([w_bits[col]]))
        over[col] = plan_bytes(col) - size - tables.delta(width)
    share = np.zeros(len(w_bits))
    if not over:
        return tables, share
    floats = [c for c in over if w_bits[c] >= FLOAT]
    base = over[floats[0]] if floats else min(over.values())
    for col, v in over.items():
        share[col] = (v - base) / max(layers, 1)
    return replace(tables, overhead=MappingProxyType({w: base for w in WIDTH_RULE})), share


FIT_ROUNDS = 6  # solves `fit_file` tries before it gives up on a budget


def fit_file(solve_within: Callable[[float], Allocation], limit: float,
             file_of: Callable[[np.ndarray], float]) -> Allocation:
    """The optimum of `solve_within(room)` whose file, `file_of(choice)` (bytes less the
    fixed layers', as `limit`), fits `limit`: each round lowers the room by what the last
    plan's file exceeded its estimate. The returned total cost is the plan's file bytes.

    Raises:
        InfeasibleBudget: no plan found fits within `FIT_ROUNDS` solves, or `solve_within`'s.
    """
    room = limit
    for _ in range(FIT_ROUNDS):
        try:
            best = solve_within(room)
        except InfeasibleBudget as e:  # in the user's terms: the room taken off added back
            raise InfeasibleBudget(limit, e.smallest_feasible + (limit - room)) from None
        size = file_of(best.choice)
        if size <= limit:
            return replace(best, total_cost=size)
        # the next plan's estimate must leave room for this one's error (at least a byte less)
        room = min(room - 1.0, limit - (size - best.total_cost))
    raise InfeasibleBudget(limit, limit + (limit - room))


def plan_file(g: Graph, fixed_bits: np.ndarray, rows: np.ndarray, choices: np.ndarray,
              fixed: float, emitted: EmittedBytes | None = None) -> Callable[[np.ndarray], float]:
    """choice [Lq] (a column of `choices` [B, 3] (w_bits, a_bits, block) per quantisable
    layer `rows`) -> its file bytes (`plan_file_bytes`, tables at the plan's width, each
    layer at its block) less `fixed`; `emitted`: see `emitted_file_bytes`."""
    def file_of(choice: np.ndarray) -> float:
        bits = fixed_bits.copy()
        bits[rows] = choices[choice, :2]
        width = emitted_embedding_bits(choices[choice, 0])
        blocks = {g.layers[r].name: int(b) for r, b in zip(rows, choices[choice, 2])}
        return emitted_file_bytes(emitted, g, bits, width, blocks) - fixed
    return file_of
