"""Evaluate a batch of a sweep's points: their records (`edgesim.sweep.run` drives the batches).

A batch of points becomes H targets, and each model's cost is one vectorised call over
(H configs x L layers x bit choices) (`hwmodels.macarray.evaluate_configs`,
`hwmodels.cpu.evaluate_configs`), so numba, not Python per point, does the work.

Bits: with `FixedBits`, every weighted conv/linear/matmul runs at (w_bits, a_bits). With
`Allocate`, each design gets the least sensitive weight bits (`compiler.allocate.solve`, exact)
whose total `metric` meets the budget; sensitivities are computed once per model, not per
design, and designs with identical cost matrices share one solve (a weight-bytes budget
depends on the design only through which precisions it can run, so a whole sweep needs a few
solves). Other layers take `edgesim.allocation.rest_bits`, as in `compile`: (a_bits, a_bits) on
full-integer kinds, float32 where the kind has `hwmodels.kinds.Capabilities.float_rest`.

Each record: `id`, `index`, `params`, the area proxy, and per model `latency_s`, `energy_j`,
`throughput_ips` (single-stream inferences per second, 1 / latency), `util` (latency-weighted
MAC utilisation), `bound`, `weight_bytes`, `peak_act_bytes`, and with `Allocate` an `alloc`
summary (total sensitivity, mean weight bits per parameter, layers per width, the bits of each
chosen layer). A point that cannot be built or run records `error` instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from compiler.ir import Graph, LayerTable
from edgesim.alloc_problem import knapsack_budget, metric_cost, rest_bits, user_units
from edgesim.sweep.kinds import hooks
from edgesim.sweep.points import Point
from edgesim.sweep.space import Allocate, FixedBits, Space
from edgesim.sweep.store import EncodedRecords, encode
from hwmodels import kinds

FIGURES = ("latency_s", "energy_j", "throughput_ips", "util", "weight_bytes", "peak_act_bytes")
CANNOT_RUN = {"error": "cannot run: a layer's precision is not supported by this design"}


@dataclass(frozen=True, eq=False)  # holds arrays
class ModelContext:
    """One model, reduced to what a batch needs.

    Attributes:
        label: the model's name in the records.
        table: its layer table.
        chosen: int [Q], layers whose weight bits the sweep sets.
        omega: float [Q, B] sensitivity at `Allocate.w_bits` (None with fixed bits).
    """

    label: str
    table: LayerTable
    chosen: np.ndarray
    omega: np.ndarray | None = None


@dataclass(frozen=True)
class Context:
    """What every batch shares: the space (its base target, what is optimised, the host
    runtime and threads) and its models, loaded."""

    space: Space
    models: tuple[ModelContext, ...]


def proxy_sensitivity(g: Graph, bits: Sequence[int]) -> Any:
    """The data-free default: `compiler.sensitivity.proxy.sensitivity` at `bits`."""
    from compiler.sensitivity import proxy

    return proxy.sensitivity(g, bits=bits)


def model_context(space: Space, index: int, sensitivity: Callable[..., Any]) -> ModelContext:
    """Load model `index` of the space; with `Allocate`, compute its sensitivity once."""
    from compiler.sensitivity.proxy import quantisable_layers
    from edgesim.loading import load_graph

    spec = space.models[index]
    g = load_graph(spec.ref, dict(spec.input_shapes) or None)
    position = {layer.name: i for i, layer in enumerate(g.layers)}
    if isinstance(space.optimise, FixedBits):
        rows = [position[layer.name] for layer in quantisable_layers(g)]
        return ModelContext(spec.label, g.layer_table(), np.array(rows, dtype=np.int64))
    sens = sensitivity(g, space.optimise.w_bits)
    if [int(b) for b in sens.bits] != list(space.optimise.w_bits):
        raise ValueError(f"sensitivity columns {list(sens.bits)} are not the requested weight "
                         f"bits {list(space.optimise.w_bits)}")
    order = np.array([position[name] for name in sens.layers], dtype=np.int64)
    return ModelContext(spec.label, g.layer_table(), order, np.asarray(sens.omega, float))


def bit_plan(table: LayerTable, chosen: np.ndarray, w_bits: Sequence[int], a_bits: int,
             float_rest: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bit choices to evaluate and where each layer reads them; layers without a choice take
    `edgesim.allocation.rest_bits`, as in `compile`.

    Returns:
        (choices int [C, 2], rest int [L]: each layer's column when it has no choice,
        w_cols int [len(w_bits)]: the columns of (w, a_bits) for w in w_bits).
    """
    rest_pair = tuple(int(b) for b in rest_bits(1, float_rest, a_bits)[0])
    choices = list(dict.fromkeys([(w, a_bits) for w in w_bits] + [rest_pair]))
    col = {pair: i for i, pair in enumerate(choices)}
    rest = np.full(len(table), col[rest_pair], dtype=np.int64)
    w_cols = np.array([col[(w, a_bits)] for w in w_bits], dtype=np.int64)
    rest[chosen] = w_cols[0]
    return np.array(choices, dtype=np.int64), rest, w_cols


def _pick(arr: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """arr [H, L, C] at columns cols [L] (every design alike) or [H, L] -> [H, L], C-ordered.

    C order matters: numpy sums each design's contiguous row of L layers pairwise, the same
    way whatever H is, so a design's totals do not depend on the batch it was evaluated in
    (fancy indexing may return another layout, whose reduction order depends on H).
    """
    if cols.ndim == 1:
        return np.ascontiguousarray(arr[:, np.arange(cols.size), cols])
    return np.ascontiguousarray(np.take_along_axis(arr, cols[:, :, None], axis=2)[:, :, 0])


def _totals(cost: Any, cols: np.ndarray) -> Any:
    """Whole-model `Cost` [H, 1] with layer l at column cols[l] or, per design, cols[h, l]."""
    from hwmodels.cost import Cost

    fields = {name: _pick(getattr(cost, name), cols)[:, :, None]
              for name in cost.__dataclass_fields__}
    return Cost(**fields).total()


def _w_elems_q(m: ModelContext) -> float:
    """Weight elements of the layers whose bits the sweep chooses (the bits budget's unit)."""
    return float(m.table.w_elems[m.chosen].sum())


def _solve_design(m: ModelContext, opt: Allocate, q_cost: np.ndarray,
                  fixed: float) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Least sensitive choice [Q] (indices into w_bits) for one design, and its summary; the
    budget arithmetic is `edgesim.allocation`'s, as for `compile` and `allocate`."""
    from compiler.allocate import solve

    finite = np.isfinite(q_cost)
    if not math.isfinite(fixed) or not finite.any(axis=1).all():
        return None, {"error": "cannot run: a layer has no precision this design supports"}
    runnable_bits = np.where(finite, np.asarray(opt.w_bits)[None, :], -1)
    widest = runnable_bits.argmax(axis=1)  # each layer's widest choice this design can run
    reference = fixed + float(q_cost[np.arange(len(widest)), widest].sum())
    w_q = _w_elems_q(m)
    assert m.omega is not None  # an Allocate design has sensitivities
    budget = (opt.value if opt.value is not None
              else float(opt.fraction or 0.0) * user_units(opt.metric, reference, w_q))
    try:
        a = solve(m.omega, q_cost, knapsack_budget(opt.metric, budget, fixed, w_q),
                  method="front")
    except ValueError as e:  # InfeasibleBudget, or a layer with no allowed choice
        return None, {"error": f"allocation: {e}"}
    bits = np.asarray(opt.w_bits)[a.choice]
    return a.choice, {"metric": opt.metric, "budget": budget, "total_sens": a.total_sens,
                      **_bits_summary(m, bits)}


def _allocate(cost: Any, m: ModelContext, opt: Allocate, choices: np.ndarray, rest: np.ndarray,
              w_cols: np.ndarray) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Per design: the chosen column of every layer [H, L] and the allocation summaries."""
    w_elems = np.zeros(len(m.table))
    w_elems[m.chosen] = m.table.w_elems[m.chosen]  # the bits metric counts the chosen weights
    metric = metric_cost(cost, opt.metric, w_elems, choices[:, 0].astype(np.float64))
    h_count, layers = metric.shape[0], metric.shape[1]
    fixed_layers = np.setdiff1d(np.arange(layers), m.chosen)
    # C order: the same summation order for a design whatever the batch (see `_pick`)
    fixed = np.ascontiguousarray(metric[:, fixed_layers, rest[fixed_layers]]).sum(axis=1)
    q_costs = metric[:, m.chosen][:, :, w_cols]
    cols = np.tile(rest, (h_count, 1))
    solved: dict[bytes, tuple[np.ndarray | None, dict[str, Any]]] = {}
    summaries = []
    for h in range(h_count):
        key = q_costs[h].tobytes() + np.float64(fixed[h]).tobytes()
        if key not in solved:  # identical cost matrices have identical optima
            solved[key] = _solve_design(m, opt, q_costs[h], float(fixed[h]))
        choice, summary = solved[key]
        if choice is not None:
            cols[h, m.chosen] = w_cols[choice]
        summaries.append(dict(summary))  # records are independent objects
    return cols, summaries


def _bits_summary(m: ModelContext, bits: np.ndarray) -> dict[str, Any]:
    params = m.table.w_elems[m.chosen].astype(np.float64)
    widths, counts = np.unique(bits, return_counts=True)
    return {"mean_w_bits": float((bits * params).sum() / max(params.sum(), 1.0)),
            "layers_per_w_bits": {str(int(w)): int(c) for w, c in zip(widths, counts)},
            "w_bits": [int(b) for b in bits]}


def _model_records(ctx: Context, m: ModelContext, targets: list) -> list[dict[str, Any]]:
    """One record per design for model m."""
    opt = ctx.space.optimise
    w_bits = (opt.w_bits,) if isinstance(opt, FixedBits) else opt.w_bits
    float_rest = kinds.capabilities(ctx.space.base).float_rest
    choices, rest, w_cols = bit_plan(m.table, m.chosen, w_bits, opt.a_bits, float_rest)
    host = kinds.host_options(ctx.space.base, ctx.space.threads, ctx.space.runtime)
    kind = hooks(ctx.space.base)
    if isinstance(opt, FixedBits) and kind.picked is not None:
        # one column per layer is all fixed bits need: cost only that (the same numbers)
        picked = kind.picked(m.table, choices, targets, rest, **host)
        return _figures(picked.total(), [{} for _ in targets])
    cost = kind.costs(m.table, choices, targets, **host)
    if isinstance(opt, FixedBits):
        cols, extra = rest, [dict[str, Any]() for _ in targets]
    else:
        cols, extra = _allocate(cost, m, opt, choices, rest, w_cols)
    total = _totals(cost, cols)
    return _figures(total, extra)


def _figures(total: Any, allocs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per design, the whole-model figures of a `Cost` [H, 1] (plus its allocation summary)."""
    from hwmodels.cost import BOUND_NAMES

    latency = total.latency_s[:, 0]
    with np.errstate(divide="ignore"):
        columns = (latency, total.energy_pj[:, 0] * 1e-12, 1.0 / latency, total.util[:, 0],
                   total.weight_bytes[:, 0], total.act_bytes[:, 0])
    rows = zip(*(c.tolist() for c in columns))  # Python floats: exact in JSON
    bounds = [BOUND_NAMES[b] for b in total.bound[:, 0].tolist()]
    out = []
    for values, bound, alloc in zip(rows, bounds, allocs):
        if "error" in alloc or not 0 < values[0] < math.inf:
            out.append(alloc if "error" in alloc else dict(CANNOT_RUN))
            continue
        figures = {**dict(zip(FIGURES, values)), "bound": bound}
        out.append({**figures, "alloc": alloc} if alloc else figures)
    return out


def evaluate_batch(ctx: Context, points: Sequence[Point]) -> list[dict[str, Any]]:
    """Records of a batch of points (in the batch's order); pure, so safe to retry."""
    kind = hooks(ctx.space.base)  # resolved once per batch, not per point
    records, built, targets = [], [], []
    for p in points:
        record: dict[str, Any] = {"id": p.id, "index": p.index, "params": dict(p.params)}
        records.append(record)
        try:
            target = kind.variant(ctx.space.base, dict(p.typed), p.id)
        except ValueError as e:  # a combination the target's cross-field rules refuse
            record["error"] = f"invalid design: {e}"
            continue
        record.update(kind.area(target))
        built.append(record)
        targets.append(target)
    if targets:
        per_model = [_model_records(ctx, m, targets) for m in ctx.models]
        for h, record in enumerate(built):
            record["models"] = {m.label: rows[h] for m, rows in zip(ctx.models, per_model)}
            failed = [f"{label}: {r['error']}" for label, r in record["models"].items()
                      if "error" in r]
            if failed:
                record["error"] = "; ".join(failed)
    return records


def encoded_batch(ctx: Context, points: Sequence[Point]) -> EncodedRecords:
    """`evaluate_batch`, returned as the JSON lines the store writes (what a pool worker sends
    back: compact to pickle, and the encoding work done in the worker, not the parent)."""
    return encode(evaluate_batch(ctx, points))
