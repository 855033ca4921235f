"""Activation sparsity in the product: cycles of MAC layers from measured operand statistics,
checked against the exact (mask-driven) model, the joint bits x sparsity choices, and the
compile pipeline's step that applies them.

Only this module and its two parts -- `edgesim.sparsity_costs` (a thresholded plan's latency)
and `edgesim.sparsity_notes` (what the step says) -- wire `compiler.sparsity` /
`compiler.passes.sparsify` to `hwmodels.sparsity`; the compiler knows no target and the cost
models know no executor.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from compiler.allocate import solve
from compiler.executor import run
from compiler.ir import Graph
from compiler.passes.calibrate import CalibrationStats
from compiler.passes.quantize import quantize
from compiler.passes.sparsify import Threshold, calibrate_sequential, sparsifiable, sparsify
from compiler.sensitivity.loss import kl_divergence, loss_outputs
from compiler.sparsity import OperandStats, gemm_masks, operand_stats
from edgesim.errors import UserError
from edgesim.sparsity_costs import Feeds, joint_costs, plan_pair, skips_activations
from edgesim.sparsity_notes import threshold_notes
from hwmodels.macarray import MacArrayTarget
from hwmodels.sparsity import data_driven_cycles, expected_cycles, lane_cycles
from hwmodels.target import Target

if TYPE_CHECKING:
    from edgesim.report import CompileResult


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
            total[n] += sum(data_driven_cycles(a[i], w[i], target, bits, first=i == 0,
                                               last=i == len(a) - 1) for i in range(len(a)))
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


def level_thresholds(g: Graph, batches: list[Feeds], layers: tuple[str, ...],
                     levels: tuple[float, ...] = LEVELS, mode: str = "magnitude"
                     ) -> list[dict[str, Threshold]]:
    """Per level, every layer's threshold, calibrated with all layers at that level (level
    0 has none)."""
    return [calibrate_sequential(g, batches, dict.fromkeys(layers, lvl), mode) if lvl > 0
            else {} for lvl in levels]


def kl_logits(g: Graph) -> str:
    """The tensor `output_kl` reads: g's first output, or the logits behind it where it is
    already a softmax (a second softmax would flatten the KL of confident samples)."""
    return loss_outputs(g, "kl", None)[0]


def output_kl(g: Graph, batches: list[Feeds], reference: list[np.ndarray],
              fake_quant: bool = False) -> float:
    """Mean KL(softmax(reference) || softmax(logits)) over the batches, `reference` being the
    dense model's `kl_logits`."""
    name = kl_logits(g)
    losses = [kl_divergence(run(g, feeds, dtype="float32", keep=(name,),
                                fake_quant=fake_quant)[name], ref)[0]
              for feeds, ref in zip(batches, reference)]
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


# --- the compile pipeline's step (after the bits) --------------------------------------------

MAX_SAMPLES = 32  # calibration samples the threshold search runs over
# assumed: a mean KL of 0.002 nats to the dense model's outputs moves top-1 decisions by well
# under a point on the digits models (bench_sparsity's fronts); the bound for the whole plan
MAX_KL = 0.002


def _feeds(g: Graph, samples: Mapping[str, np.ndarray]) -> list[Feeds]:
    batch = g.types[g.inputs[0]].shape[0]
    count = min(MAX_SAMPLES, len(next(iter(samples.values())))) // batch * batch
    return [{k: v[i:i + batch] for k, v in samples.items()} for i in range(0, count, batch)]


def choose_levels(g: Graph, feeds: list[Feeds], levels: tuple[float, ...],
                  target: MacArrayTarget) -> dict[str, float]:
    """Per sparsifiable layer, the level of the plan with the least MAC latency (at 8/8 bits)
    whose summed KL increase to the dense model stays within `MAX_KL`, chosen exactly over
    all layers by `compiler.allocate` (latency and KL swap the roles of sens and cost)."""
    layers = tuple(x.name for x in sparsifiable(g))
    per_level = level_thresholds(g, feeds, layers, levels)
    logits = kl_logits(g)
    ref = [run(g, f, dtype="float32", keep=(logits,))[logits] for f in feeds]
    sens = level_sensitivity(g, feeds, ref, per_level, layers)
    stats = [operand_stats(sparsify(g, th), feeds) for th in per_level]
    cost = joint_costs(g, stats, per_level, layers, ((8, 8),), target)[:, 0, :]
    pick = solve(cost, np.maximum(sens, 0.0), MAX_KL).choice  # level 0 costs 0: feasible
    return {n: levels[s] for n, s in zip(layers, pick)}


def apply_sparsity(g: Graph, target: Target, samples: Mapping[str, np.ndarray],
                   levels: tuple[float, ...], bits: np.ndarray | None = None) -> Graph:
    """`g` with calibrated thresholds in front of its MAC layers where they pay on `target`,
    and notes saying what was done (or why nothing was) and what it predicts.

    Args:
        g: the float model (batch as deployed).
        target: the target; only zero-skipping MAC arrays gain from sparsity.
        samples: calibration samples per input ([S, ...]); the first 32 are used.
        levels: candidate target sparsities per layer (0 = leave the layer dense).
        bits: the chosen [L, 2] bits of `g` (for the predicted latency note; default 8/8).
    """
    if not skips_activations(target):
        return replace(g, notes=g.notes + (
            f"sparsity: not applied: {target.name} gains nothing from activation zeros "
            "(onnxruntime's CPU kernels have no sparse-activation path)",))
    assert isinstance(target, MacArrayTarget)  # only a zero-skipping MAC array skips them
    feeds = _feeds(g, samples)
    chosen = {n: lvl for n, lvl in choose_levels(g, feeds, tuple(levels), target).items()
              if lvl > 0}
    th = calibrate_sequential(g, feeds, chosen)
    gs = sparsify(g, th)
    notes = threshold_notes(g, gs, feeds, th, operand_stats(gs, feeds), bits, target)
    return replace(gs, notes=gs.notes + notes)


def with_sparse_costs(result: CompileResult, g: Graph, gs: Graph,
                      samples: Mapping[str, np.ndarray], bits: np.ndarray, target: Target
                      ) -> CompileResult:
    """A compile result (`edgesim.report.CompileResult`) whose thresholded MAC layers are
    costed at the density their thresholds leave: each layer's latency is scaled by the
    per-lane model's sparse/dense ratio at the chosen bits, and the headline total with it
    (the allocation itself was costed at the dense model's densities)."""
    if gs is g or not isinstance(target, MacArrayTarget) or not skips_activations(target):
        return result
    feeds = _feeds(g, samples)
    dense, sparse = plan_pair(g, gs, feeds, operand_stats(gs, feeds), bits, target)
    ratio = {n: sparse[n] / dense[n] for n in dense if dense[n] > 0 and f"{n}/sparsify"
             in {x.name for x in gs.layers}}
    if not ratio:
        return result
    layers = tuple(replace(x, latency_ms=x.latency_ms * ratio[x.name],
                           cycles=x.cycles * ratio[x.name]) if x.name in ratio else x
                   for x in result.layers)
    before, after = result.result.latency_ms, sum(x.latency_ms for x in layers)
    note = (f"sparsity: latency with the thresholds' measured densities {before:.4g} -> "
            f"{after:.4g} ms ({before / after:.3f}x) over {len(ratio)} thresholded layer(s); "
            "energy stays at the dense densities")
    return replace(result, layers=layers,
                   result=replace(result.result, latency_ms=after),
                   notes=(*result.notes, note))


def expand_bits(g: Graph, gs: Graph, bits: np.ndarray) -> np.ndarray:
    """`bits` [L, 2] of `g` realigned to `gs` (`g` plus threshold layers, which stay float)."""
    by_name = {x.name: b for x, b in zip(g.layers, np.asarray(bits).tolist())}
    return np.array([by_name.get(x.name, (32, 32)) for x in gs.layers], dtype=np.int64)


def parse_levels(text: str | None) -> tuple[float, ...]:
    """`--sparsity 0,0.25,0.5` -> (0.0, 0.25, 0.5); None or "" -> () (no sparsification).

    Raises:
        UserError: for a value that is not a number in [0, 1).
    """
    if not text:
        return ()
    try:
        levels = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UserError("--sparsity", f"{text!r} is not a comma-separated list of numbers"
                        ) from None
    bad = [v for v in levels if not 0.0 <= v < 1.0]
    if bad:
        raise UserError("--sparsity", f"{bad[0]} is not a sparsity in [0, 1)")
    return tuple(sorted({0.0, *levels}))
