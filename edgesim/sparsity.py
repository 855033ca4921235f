"""Activation sparsity in the product: cycles of MAC layers from measured operand statistics,
checked against the exact (mask-driven) model, and the joint bits x sparsity choices.

Only this module wires `compiler.sparsity` / `compiler.passes.sparsify` to
`hwmodels.sparsity`; the compiler knows no target and the cost models know no executor.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from compiler.executor import run
from compiler.ir import Graph, Layer
from compiler.passes.calibrate import CalibrationStats
from compiler.passes.quantize import quantize
from compiler.passes.sparsify import Threshold, calibrate_sequential, sparsify
from compiler.sensitivity.loss import kl_divergence
from compiler.sparsity import OperandStats, gemm_masks
from hwmodels.macarray import MacArrayTarget
from hwmodels.macarray import evaluate as macarray_evaluate
from hwmodels.sparsity import data_driven_cycles, expected_cycles, lane_cycles


@dataclass(frozen=True)
class LayerCycles:
    """Compute cycles of one MAC layer three ways.

    Attributes:
        layer: its name.
        density: mean activation density measured.
        exact: the data-driven model on every sample's masks, averaged over samples.
        lanes: the statistical model from per-lane densities (`hwmodels.sparsity.lane_cycles`).
        mean_only: the statistical model from the mean densities alone.
    """

    layer: str
    density: float
    exact: float
    lanes: float
    mean_only: float


def exact_cycles(g: Graph, samples: Iterable[Mapping[str, np.ndarray]], layers: Iterable[str],
                 target: MacArrayTarget, bits: tuple[int, int] = (8, 8)) -> dict[str, float]:
    """The data-driven model's cycles of `layers`, averaged over single-sample feeds."""
    names = tuple(layers)
    keep = {t for n in names for t in g.layer(n).inputs[:2] if t not in g.weights}
    total, count = dict.fromkeys(names, 0.0), 0
    for feeds in samples:
        env = run(g, feeds, dtype="float32", keep=keep)
        for n in names:
            a, w = gemm_masks(g, env, g.layer(n))
            total[n] += sum(data_driven_cycles(a[i], w[i], target, bits) for i in range(len(a)))
        count += 1
    return {n: c / count for n, c in total.items()}


def statistical_cycles(stats: OperandStats, target: MacArrayTarget,
                       bits: tuple[int, int] = (8, 8)) -> tuple[float, float]:
    """(per-lane model, mean-density-only model) cycles of one layer from its statistics."""
    lanes = lane_cycles(stats.lane_density, stats.w_col_nnz, stats.k, target, bits)
    groups, m = stats.lane_density.shape
    w_density = float(stats.w_col_nnz.mean()) / stats.k if stats.k else 1.0
    mean = groups * expected_cycles(m, stats.w_col_nnz.shape[1], stats.k, stats.density,
                                    w_density, target, bits)
    return lanes, mean


def compare_cycles(g: Graph, stats: Mapping[str, OperandStats],
                   samples: Iterable[Mapping[str, np.ndarray]], target: MacArrayTarget,
                   bits: tuple[int, int] = (8, 8)) -> list[LayerCycles]:
    """Per MAC layer in `stats`: exact cycles on `g` (batch 1) over `samples` beside both
    statistical estimates (`stats` measured on the same samples)."""
    exact = exact_cycles(g, samples, stats, target, bits)
    out = []
    for name, s in stats.items():
        lanes, mean = statistical_cycles(s, target, bits)
        out.append(LayerCycles(name, s.density, exact[name], lanes, mean))
    return out


# --- joint bits x sparsity ------------------------------------------------------------------

LEVELS = (0.0, 0.25, 0.5, 0.625, 0.75)  # target activation sparsity per MAC input
Feeds = Mapping[str, np.ndarray]


def level_thresholds(g: Graph, batches: list[Feeds], layers: tuple[str, ...],
                     levels: tuple[float, ...] = LEVELS, mode: str = "magnitude"
                     ) -> list[dict[str, Threshold]]:
    """Per level, every layer's threshold, calibrated with all layers at that level (level
    0 has none)."""
    return [calibrate_sequential(g, batches, dict.fromkeys(layers, lvl), mode) if lvl > 0
            else {} for lvl in levels]


def output_kl(g: Graph, batches: list[Feeds], reference: list[np.ndarray],
              fake_quant: bool = False) -> float:
    """Mean KL(softmax(reference) || softmax(g's first output)) over the batches."""
    losses = [kl_divergence(run(g, feeds, dtype="float32", fake_quant=fake_quant)
                            [g.outputs[0]], ref)[0] for feeds, ref in zip(batches, reference)]
    return float(np.mean(losses))


def level_sensitivity(g: Graph, batches: list[Feeds], reference: list[np.ndarray],
                      per_level: list[dict[str, Threshold]], layers: tuple[str, ...]
                      ) -> np.ndarray:
    """[L, S]: the KL increase when layer l alone is thresholded at level s."""
    base = output_kl(g, batches, reference)
    return np.array([[output_kl(sparsify(g, {n: th[n]}), batches, reference) - base
                      if n in th else 0.0 for th in per_level] for n in layers])


def plan_bits(g: Graph, chosen: Mapping[str, tuple[int, int]]) -> np.ndarray:
    """The quantize pass's [L, 2] bits: `chosen` per named MAC layer, float elsewhere."""
    return np.array([chosen.get(x.name, (32, 32)) for x in g.layers], dtype=np.int64)


def bits_sensitivity(g: Graph, batches: list[Feeds], reference: list[np.ndarray],
                     calib: CalibrationStats, layers: tuple[str, ...],
                     bit_pairs: tuple[tuple[int, int], ...]) -> np.ndarray:
    """[L, B]: the KL increase when layer l alone is quantised to bit pair b (fake-quant)."""
    base = output_kl(g, batches, reference)
    return np.array([[output_kl(quantize(g, plan_bits(g, {n: b}), calib), batches, reference,
                                fake_quant=True) - base for b in bit_pairs] for n in layers])


def plan_latency_s(gs: Graph, stats: Mapping[str, OperandStats],
                   chosen: Mapping[str, tuple[int, int]], target: MacArrayTarget) -> np.ndarray:
    """Per layer of `gs` (a batch-1 graph, thresholds included), predicted latency of one
    sample on `target`: MAC layers from the per-lane model at their bits (8/8 where not
    chosen; `stats` are per sample), other layers from the array's cost model."""
    cost = macarray_evaluate(gs.layer_table(), np.array([[8, 8]]), target).latency_s[:, 0]
    hz = target.clock_ghz * 1e9
    folded = target.sparsity in ("skip_activations", "skip_both")
    return np.array([lane_cycles(stats[x.name].lane_density, stats[x.name].w_col_nnz,
                                 stats[x.name].k, target, chosen.get(x.name, (8, 8))) / hz
                     if x.name in stats else 0.0 if folded and _is_threshold(x) else c
                     for x, c in zip(gs.layers, cost)])


def _is_threshold(layer: Layer) -> bool:
    # assumed: an array that skips zero activations already compares every input against
    # zero where it compresses them (Eyeriss v2's CSC encoder, SCNN's sparse format); the
    # threshold is that comparison with |x - c| < t, so it adds no cycles there. Elsewhere
    # (a dense array, a CPU) it runs as the four elementwise ops it is.
    return layer.kind == "activation" and layer.attrs.get("fn") == "threshold"


def joint_costs(g: Graph, per_level_stats: list[Mapping[str, OperandStats]],
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
