"""What the sparsity step says: the notes it adds to the graph (each threshold, the density
it leaves, the predicted latency with and without) and the report's sparsity column."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from compiler.executor import run
from compiler.ir import Graph, Layer
from compiler.passes.sparsify import Threshold
from compiler.sparsity import OperandStats, gemm_operands
from edgesim.sparsity_costs import Feeds, plan_pair
from hwmodels.macarray import MacArrayTarget, weight_regime


def threshold_notes(g: Graph, gs: Graph, feeds: list[Feeds], th: Mapping[str, Threshold],
                    stats: Mapping[str, OperandStats], bits: np.ndarray | None,
                    target: MacArrayTarget) -> tuple[str, ...]:
    """The notes of `gs` (`g` with thresholds `th`, its operand `stats` over `feeds`): one
    per threshold (or that every layer stays dense), then the predicted MAC latency dense
    and with them at `bits` (default 8/8)."""
    shares = threshold_shares(gs, feeds, tuple(th))
    notes = tuple(f"sparsity: {n} input thresholded at |x - {t.center:.4g}| < {t.threshold:.4g}"
                  f" (target {t.target:.0%}, measured {shares[n]:.1%} of its elements on the "
                  f"float model; {_operand_words(gs, n, stats[n])}); "
                  "onnxruntime runs it at no speed gain" for n, t in th.items())
    return (notes or ("sparsity: every layer stays dense",)) + (
        _latency_note(g, gs, feeds, stats, bits, target),)


def threshold_shares(gs: Graph, feeds: list[Feeds], layers: tuple[str, ...]
                     ) -> dict[str, float]:
    """Per thresholded MAC layer of `gs`, the share of its input tensor's elements equal to
    the threshold's centre over `feeds`: the figure its target sparsity is calibrated to
    (the im2col operand `OperandStats.density` counts also repeats each element per tap and
    adds the conv's padding taps)."""
    cuts = {n: gs.layer(f"{n}/sparsify") for n in layers}
    keep = {c.outputs[0] for c in cuts.values()}
    hits, total = dict.fromkeys(layers, 0), dict.fromkeys(layers, 0)
    for f in feeds:
        env = run(gs, f, dtype="float32", keep=keep)
        for n, c in cuts.items():
            x = env[c.outputs[0]]
            hits[n] += int(np.count_nonzero(x == x.dtype.type(c.attrs.get("center", 0.0))))
            total[n] += x.size
    return {n: hits[n] / total[n] for n in layers}


def _operand_words(gs: Graph, name: str, stats: OperandStats) -> str:
    # the array skips the im2col operand's zeros: a padded conv's border taps are zeros too,
    # so its density sits below (1 - element share) -- say by how much, or the two figures
    # read as a threshold that overshot (digits_cnn conv3: 4x4 input, 3x3 pad 1 -> 0.694)
    layer = gs.layer(name)
    text = f"array operand density {stats.density:.3f}"
    if layer.kind != "conv" or not any(layer.attrs["pads"]):
        return text
    shape = (1, *gs.types[layer.inputs[0]].shape[1:])
    ones = np.ones(shape, np.float32)
    a, _ = gemm_operands(layer, [ones, gs.weights[layer.inputs[1]]])
    return (f"array operand (im2col) density {stats.density:.3f}, its padding taps counted as"
            f" zeros ({float(a.mean()):.3f} from padding alone)")


def _latency_note(g: Graph, gs: Graph, feeds: list[Feeds], stats: Mapping[str, OperandStats],
                  bits: np.ndarray | None, target: MacArrayTarget) -> str:
    # the allocation's predicted latency uses mean densities of the dense model
    dense, sparse = plan_pair(g, gs, feeds, stats, bits, target)
    d, s = sum(dense.values()), sum(sparse.values())
    folds = "pipelined folds" if target.fold_pipelining else "back-to-back folds"
    return (f"sparsity: per-lane model at the chosen bits, MAC layers: {d * 1e3:.4g} ms dense "
            f"-> {s * 1e3:.4g} ms with the thresholds ({d / s:.3f}x); {folds}; "
            f"{weight_regime(g.layer_table(), target)}")


def sparsity_column(rows: tuple, gs: Graph, stats: Mapping[str, OperandStats] | None = None
                    ) -> tuple:
    """Report rows (`edgesim.report.LayerRow`) with each thresholded layer's `sparsity`."""
    cuts = {x.name.removesuffix("/sparsify"): x for x in gs.layers
            if x.kind == "activation" and x.attrs.get("fn") == "threshold"}
    return tuple(replace(r, sparsity=_describe(cuts[r.name], stats, r.name))
                 if r.name in cuts else r for r in rows)


def _describe(cut: Layer, stats: Mapping[str, OperandStats] | None, name: str) -> str:
    c, t = cut.attrs.get("center", 0.0), cut.attrs["threshold"]
    where = f"abs(x - {c:.3g}) < {t:.3g}" if c else f"abs(x) < {t:.3g}"  # no "|": markdown
    return where + (f", density {stats[name].density:.2f}" if stats and name in stats else "")
