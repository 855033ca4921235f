"""A thresholded plan's predicted latency on a zero-skipping MAC array: per layer, split by
cause, and per (layer, bit pair, sparsity level) for the joint choice.

MAC layers are costed by the per-lane model (`hwmodels.sparsity`) from measured operand
statistics (`compiler.sparsity.OperandStats`); other layers by the array's cost model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from compiler.ir import Graph, Layer
from compiler.passes.sparsify import Threshold, sparsify
from compiler.sparsity import OperandStats, operand_stats
from hwmodels import configs
from hwmodels.macarray import MacArrayTarget
from hwmodels.macarray import evaluate as macarray_evaluate
from hwmodels.sparsity import lane_terms
from hwmodels.target import Target

Feeds = Mapping[str, np.ndarray]
TERMS = ("work", "fill", "swap", "dram", "vector")  # the causes `latency_terms` splits


def skips_activations(target: Target) -> bool:
    """True if `target` turns activation zeros into saved cycles (a zero-skipping array)."""
    return getattr(target, "sparsity", "none") in ("skip_activations", "skip_both")


def latency_terms(gs: Graph, stats: Mapping[str, OperandStats],
                  chosen: Mapping[str, tuple[int, int]], target: MacArrayTarget
                  ) -> dict[str, np.ndarray]:
    """`plan_latency_s` split by cause: per term of `TERMS`, seconds per layer of `gs`.

    MAC layers: `work` (busiest-PE streaming), `fill` (skew/fill/drain) and `swap` (pipelined
    folds waiting for the tile swap) from the per-lane model (`hwmodels.sparsity.CycleTerms`),
    and `dram`, the DRAM time compute does not hide (all of it unless double buffered); other
    layers: `vector`, the array's cost model (vector unit). The terms sum to the latency."""
    table = gs.layer_table()
    density = np.array([stats[n].density if n in stats else d
                        for n, d in zip(table.names, table.a_density)])
    pairs = sorted({(8, 8), *chosen.values()})
    cost = macarray_evaluate(dataclasses.replace(table, a_density=density), np.array(pairs),
                             target)
    hz = target.clock_ghz * 1e9
    dram_s = cost.energy_pj_dram / dram_pj_per_byte(target) / (target.dram_bandwidth_gbps * 1e9)
    folded = skips_activations(target)
    out = {t: np.zeros(len(gs.layers)) for t in TERMS}
    for i, x in enumerate(gs.layers):
        b = pairs.index(chosen.get(x.name, (8, 8)))
        if x.name in stats:
            s = stats[x.name]
            terms = lane_terms(s.lane_density, s.w_col_nnz, s.k, target, pairs[b])
            out["work"][i], out["fill"][i] = terms.work / hz, terms.fill / hz
            out["swap"][i] = terms.swap / hz
            hidden = terms.total / hz if target.double_buffered else 0.0
            out["dram"][i] = max(0.0, dram_s[i, b] - hidden)
        else:
            out["vector"][i] = 0.0 if folded and _is_threshold(x) else cost.latency_s[i, b]
    return out


def plan_latency_s(gs: Graph, stats: Mapping[str, OperandStats],
                   chosen: Mapping[str, tuple[int, int]], target: MacArrayTarget) -> np.ndarray:
    """Per layer of `gs` (a batch-1 graph, thresholds included), predicted latency of one
    sample on `target`. MAC layers: the per-lane model's compute cycles at their bits (8/8
    where not chosen; `stats` are per sample) against the DRAM cycles the array's cost model
    gives at their measured density (compressed operands), overlapped when double buffered
    (none for weights the target keeps resident: `hwmodels.macarray.weight_regime`); other
    layers: the array's cost model (vector unit). The sum of `latency_terms`."""
    terms = latency_terms(gs, stats, chosen, target)
    return np.sum([terms[t] for t in TERMS], axis=0)


def _is_threshold(layer: Layer) -> bool:
    # assumed: an array that skips zero activations already compares every input against
    # zero where it compresses them (Eyeriss v2's CSC encoder, SCNN's sparse format); the
    # threshold is that comparison with |x - c| < t, so it adds no cycles there. Elsewhere
    # (a dense array, a CPU) it runs as the four elementwise ops it is.
    return layer.kind == "activation" and layer.attrs.get("fn") == "threshold"


def dram_pj_per_byte(target: MacArrayTarget) -> float:
    """The target's DRAM energy per byte (what turns a cost's DRAM energy back into bytes)."""
    return float(configs.from_targets([target]).cfg_f[0, 2])


def joint_costs(g: Graph, per_level_stats: Sequence[Mapping[str, OperandStats]],
                per_level: list[dict[str, Threshold]], layers: tuple[str, ...],
                bit_pairs: tuple[tuple[int, int], ...], target: MacArrayTarget) -> np.ndarray:
    """[L, B, S] latency of each allocated layer (its threshold layer included) at each bit
    pair and sparsity level, for one sample (`g` at batch 1); the model's other layers are
    a constant left out."""
    out = np.zeros((len(layers), len(bit_pairs), len(per_level)))
    for s, (stats, th) in enumerate(zip(per_level_stats, per_level)):
        gs = sparsify(g, th)
        names = [x.name for x in gs.layers]
        for b, bits in enumerate(bit_pairs):
            lat = plan_latency_s(gs, stats, dict.fromkeys(layers, bits), target)
            for i, n in enumerate(layers):
                cut = f"{n}/sparsify"
                out[i, b, s] = lat[names.index(n)] + (lat[names.index(cut)] if cut in names
                                                       else 0.0)
    return out


def plan_pair(g: Graph, gs: Graph, feeds: list[Feeds], stats: Mapping[str, OperandStats],
              bits: np.ndarray | None, target: MacArrayTarget
              ) -> tuple[dict[str, float], dict[str, float]]:
    """Per MAC layer, the per-lane model's latency at the chosen bits, dense and with the
    thresholds (each thresholded layer's own threshold counted with it)."""
    mac = set(stats)
    rows = np.asarray(bits).tolist() if bits is not None else [(8, 8)] * len(g.layers)
    chosen = {x.name: (w, a) if w < 32 and a < 32 else (8, 8)
              for x, (w, a) in zip(g.layers, rows) if x.name in mac}
    dense = plan_latency_s(g, operand_stats(g, feeds), chosen, target)
    sparse = plan_latency_s(gs, stats, chosen, target)
    at = {x.name: t for x, t in zip(gs.layers, sparse)}
    return ({x.name: float(t) for x, t in zip(g.layers, dense) if x.name in mac},
            {n: float(at[n] + at.get(f"{n}/sparsify", 0.0)) for n in mac})
