"""Score one bit assignment of a lowered model on one target: per-layer costs and totals."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from compiler.ir import Graph, Quant
from hwmodels import kinds
from hwmodels.cost import BOUND_NAMES, Cost, evaluate
from hwmodels.cpu import planned_table
from hwmodels.cpu_schema import CpuTarget
from hwmodels.target import Target

FP32 = np.array([[32, 32]])
# what a layer falls back to when the target cannot run its bits, in order of preference
FALLBACKS = ((8, 8), (4, 8), (2, 8), (16, 16), (32, 32))


@dataclass(frozen=True)
class LayerCost:
    """One layer's predicted cost at its assigned bits."""

    name: str
    kind: str
    w_bits: int
    a_bits: int
    macs: int
    cycles: float
    latency_ms: float
    energy_uj: float
    bound: str
    util: float
    weight_bytes: float


@dataclass(frozen=True)
class Totals:
    """Whole-model figures."""

    latency_ms: float
    energy_mj: float
    weight_bytes: float
    peak_act_bytes: float


@dataclass(frozen=True)
class Simulation:
    """Result of `simulate`: per-layer rows, totals, and the float32 baseline."""

    model: str
    target: str
    runtime: str
    threads: int | None
    layers: tuple[LayerCost, ...]
    total: Totals
    fp32: Totals
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def pick(cost: Cost, choice: np.ndarray) -> Cost:
    """Per-layer costs [L, 1] at each layer's chosen column of a [L, B] `Cost`."""
    rows = np.arange(len(choice))
    fields = {f: getattr(cost, f)[rows, choice][:, None] for f in cost.__dataclass_fields__}
    return Cost(**fields)


def runnable(graph: Graph, bits: np.ndarray, target: Target, threads: int | None = None,
             runtime: str = "onnxruntime") -> tuple[np.ndarray, Cost]:
    """Bits the target can run, and their cost [L, 1].

    A layer whose assigned bits the target cannot run (infinite predicted latency, e.g. float
    on an int8-only array) takes the first of `FALLBACKS` it can run; the cost model is the
    judge of what a target supports, so no target-specific rule lives here.
    """
    choices = np.unique(np.concatenate([bits, np.array(FALLBACKS)]), axis=0)
    table = graph.layer_table()
    full = evaluate(table, choices, target, threads=threads, runtime=runtime)
    column = {tuple(c): j for j, c in enumerate(choices)}
    out = bits.copy()
    for i, row in enumerate(bits):
        if not np.isfinite(full.latency_s[i, column[tuple(row)]]):
            ok = [f for f in FALLBACKS if np.isfinite(full.latency_s[i, column[f]])]
            out[i] = ok[0] if ok else row
    cols = np.array([column[tuple(r)] for r in out], dtype=np.int64)
    if isinstance(target, CpuTarget) and len(np.unique(cols)) > 1:
        # each layer with its own format, as the emitted model read back is (planned_table)
        full = evaluate(planned_table(table, choices, cols, target), choices, target,
                        threads=threads, runtime=runtime)
    return out, pick(full, cols)


def remap_note(before: np.ndarray, after: np.ndarray, target: Target) -> tuple[str, ...]:
    """A note saying how many layers run at other bits than assigned, and at which."""
    moved = np.any(before != after, axis=1)
    if not moved.any():
        return ()
    pairs = sorted({f"{w}/{a}" for w, a in after[moved]})
    return (f"{int(moved.sum())} layer(s) run at {', '.join(pairs)} (w/a bits): "
            f"{getattr(target, 'name', 'the target')} cannot run their assigned bits",)


def totals(cost: Cost) -> Totals:
    """Whole-model latency, energy, weight storage and peak live activations of a [L, 1] Cost."""
    t = cost.total()
    assert t.weight_bytes is not None and t.act_bytes is not None  # Cost fills them
    return Totals(float(t.latency_s[0]) * 1e3, float(t.energy_pj[0]) * 1e-9,
                  float(t.weight_bytes[0]), float(t.act_bytes[0]))


def unplanned(graph: Graph) -> Graph:
    """`graph` without its quantisation plan (a read-back quantized model's float self)."""
    return replace(graph, layers=tuple(replace(la, quant=Quant()) for la in graph.layers))


def planned_bits(graph: Graph) -> np.ndarray:
    """int [L, 2]: the (w_bits, a_bits) a planned (or read-back quantized) graph carries;
    32 where float."""
    return np.array([(la.quant.w_bits or 32, la.quant.a_bits or 32) for la in graph.layers],
                    dtype=np.int64).reshape(-1, 2)


def simulate_graph(graph: Graph, target: Target, bits: np.ndarray, *, threads: int | None = None,
                   runtime: str = "onnxruntime") -> Simulation:
    """Per-layer and total predicted cost of `graph` at `bits` ([L, 2]) on `target`."""
    run_bits, cost = runnable(graph, bits, target, threads, runtime)
    fp32 = np.repeat(FP32, len(graph.layers), axis=0)
    base_bits, base = runnable(unplanned(graph), fp32, target, threads, runtime)
    notes = fit_notes(graph, run_bits, target) + remap_note(bits, run_bits, target) + tuple(
        f"baseline: {n}" for n in remap_note(fp32, base_bits, target))
    bits = run_bits
    assert cost.weight_bytes is not None  # Cost fills it
    macs = graph.layer_table().macs
    rows = tuple(
        LayerCost(layer.name, layer.kind, int(bits[i, 0]), int(bits[i, 1]), int(macs[i]),
                  float(cost.cycles[i, 0]), float(cost.latency_s[i, 0]) * 1e3,
                  float(cost.energy_pj[i, 0]) * 1e-6, BOUND_NAMES[int(cost.bound[i, 0])],
                  float(cost.util[i, 0]), float(cost.weight_bytes[i, 0]))
        for i, layer in enumerate(graph.layers))
    return Simulation(graph.name, getattr(target, "name", "?"), runtime, threads, rows,
                      totals(cost), totals(base), notes)


def fit_notes(graph: Graph, bits: np.ndarray, target: Target) -> tuple[str, ...]:
    """What overflows the target's memories at `bits`, for kinds with a `memory_fit` check (an
    MCU holds the weights in flash and the largest layer's activations in its SRAM arena);
    latencies of a model that does not fit are not a deployment's."""
    check_fit = kinds.memory_fit(target)
    if check_fit is None:
        return ()
    from edgesim.budget import format_bytes

    fit = check_fit(graph.layer_table(), bits, target)
    out = []
    if fit.weight_bytes > fit.flash_bytes:
        out.append(f"WARNING: does not fit {target.name}: the weights take "
                   f"{format_bytes(fit.weight_bytes)}, flash holds {format_bytes(fit.flash_bytes)}")
    if fit.peak_act_bytes > fit.sram_bytes:
        out.append(f"WARNING: does not fit {target.name}: layer {fit.peak_layer}'s activations "
                   f"take {format_bytes(fit.peak_act_bytes)}, the SRAM arena holds "
                   f"{format_bytes(fit.sram_bytes)}")
    return tuple(out)
