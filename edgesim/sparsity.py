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
from compiler.ir import Graph
from compiler.sparsity import OperandStats, gemm_masks
from hwmodels.macarray import MacArrayTarget
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
