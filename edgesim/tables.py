"""Embedding tables in a size budget: counted at the format emission writes them in.

The quantize pass writes gather tables of at least `QuantOptions.min_embedding` elements as
com.microsoft::GatherBlockQuantized when the plan quantises anything: in the container of the
plan's narrowest quantised MAC weight (`emitted_embedding_bits`, the "auto" rule of
`edgesim.quantize`). The cost models count a gather's table at its IR size (fp32), so a size
budget that reads them alone over-counts a model whose embedding dominates (all-MiniLM-L6-v2:
47 MB of fp32 table, 12 MB emitted). `TableCost` holds, per embedding width, what the tables
add to the size metric over that fp32 count, and `solve_coupled` solves the knapsack exactly
although that width depends on the plan (one solve per width, with the width's constraint).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from compiler.allocate import Allocation, InfeasibleBudget, smallest_feasible_budget, solve
from compiler.formats import WeightGeometry, emitted_bytes, int_container
from compiler.ir import Graph

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

    def delta(self, width: int | None) -> float:
        """Metric to add to the cost model's total for tables at `width`."""
        return float(sum(self.emitted[width]) - sum(self.counted))

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
