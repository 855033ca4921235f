"""Operand sparsity of MAC layers, measured on calibration data: the statistics that set the
cycles of a zero-skipping MAC array.

A lock-step array assigns one *lane* per row of the streamed activation operand (the im2col
row `a[i, :]` of a conv, one token of a linear layer); a fold lasts as long as its busiest lane.
So the mean density alone under-predicts cycles where lanes differ (borders of a padded conv,
dead channels, silent tokens). `operand_stats` keeps, per MAC layer and group:

- `lane_density [G, m]`: the mean over samples of each activation row's nonzero fraction
  (its distribution over the array's tiles is the statistical model's input);
- `w_col_nnz [G, n]`: the nonzero weights of each output column (weights are constants, so
  this is exact; N:M-pruned weights show here as columns of k * N / M);
- `density`: the mean activation density, for the mean-only estimate beside it.

`gemm_masks` gives the exact per-sample operand masks (the data-driven model's input), and
`delta_density` the temporal sparsity of a stream between consecutive samples under a delta
threshold (delta networks, Neil et al. 2017).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from compiler.errors import ModelError
from compiler.executor import run
from compiler.ir import CATEGORY_GEMM, KIND_CATEGORY, Graph, Layer


@dataclass(frozen=True, eq=False)
class OperandStats:
    """Operand sparsity of one MAC layer (see the module docstring).

    Attributes:
        layer: the layer's name.
        k: the reduction length (the stream each lane walks on an output-stationary array).
        density: mean fraction of nonzero activations in the im2col operand.
        lane_density: float [G, m], per-row nonzero fraction averaged over samples.
        w_col_nnz: int [G, n], nonzero weights per output column (activation operand's
            nonzeros for an activation x activation matmul, averaged and rounded).
        samples: how many calibration samples were measured.
    """

    layer: str
    k: int
    density: float
    lane_density: np.ndarray
    w_col_nnz: np.ndarray
    samples: int


def mac_layers(g: Graph) -> tuple[Layer, ...]:
    """The MAC (GEMM-category) layers of `g`, in graph order."""
    return tuple(x for x in g.layers if KIND_CATEGORY[x.kind] == CATEGORY_GEMM)


def _conv_rows(x: np.ndarray, w_shape: tuple[int, ...], attrs: Mapping[str, Any]) -> np.ndarray:
    """im2col of a 2-D conv input: [G, N*oh*ow, Cg*kh*kw], rows in (n, oh, ow) order and
    columns in (c, kh, kw) order, the order of `w.reshape(G, Cout/G, -1)`."""
    if x.ndim != 4:
        raise ModelError("sparsity", f"conv input of rank {x.ndim}; only 2-D convs are measured")
    t, l, b, r = attrs["pads"][0], attrs["pads"][1], attrs["pads"][2], attrs["pads"][3]
    xp = np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)))
    (sh, sw), (dh, dw), group = attrs["strides"], attrs["dilations"], attrs["group"]
    kh, kw = w_shape[2:]
    span = ((kh - 1) * dh + 1, (kw - 1) * dw + 1)
    win = np.lib.stride_tricks.sliding_window_view(xp, span, axis=(2, 3))
    win = win[:, :, ::sh, ::sw, ::dh, ::dw]  # [N, C, oh, ow, kh, kw]
    n, c, oh, ow = win.shape[:4]
    win = win.reshape(n, group, c // group, oh, ow, kh * kw).transpose(1, 0, 3, 4, 2, 5)
    return win.reshape(group, n * oh * ow, -1)


def gemm_operands(layer: Layer, xs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The GEMM operands a [G, m, k] and w [G, k, n] of a MAC layer's inputs `xs` (its
    activation first, then weight or second activation), batch folded into m.

    Raises:
        ModelError: for a conv_transpose or a conv that is not 2-D.
    """
    x, w = xs[0], xs[1]
    if layer.kind == "conv":
        group = layer.attrs["group"]
        return (_conv_rows(x, w.shape, layer.attrs),
                w.reshape(group, w.shape[0] // group, -1).transpose(0, 2, 1))
    if layer.kind == "linear":  # w: [out, in]
        return x.reshape(1, -1, x.shape[-1]), w.T[None]
    if layer.kind == "matmul":
        lead = np.broadcast_shapes(x.shape[:-2], w.shape[:-2])
        a = np.broadcast_to(x, lead + x.shape[-2:]).reshape(-1, *x.shape[-2:])
        return a, np.broadcast_to(w, lead + w.shape[-2:]).reshape(-1, *w.shape[-2:])
    raise ModelError(f"layer {layer.name}", f"{layer.kind} operands are not measured")


def gemm_masks(g: Graph, env: Mapping[str, np.ndarray], layer: Layer
               ) -> tuple[np.ndarray, np.ndarray]:
    """Nonzero masks (bool a [G, m, k], w [G, k, n]) of `layer`'s operands in `env` (a forward
    pass that kept the layer's inputs). An input thresholded around a centre c counts its
    values equal to c as zeros: the array computes W (x - c) and folds W c into the bias."""
    xs = [env[t] if t in env else g.weights[t] for t in layer.inputs[:2]]
    a, w = gemm_operands(layer, xs)
    made = g.producers().get(layer.inputs[0])
    center = made.attrs.get("center", 0.0) if made is not None and \
        made.attrs.get("fn") == "threshold" else 0.0
    return a != a.dtype.type(center), w != 0


@dataclass
class _Acc:
    lane_sum: np.ndarray | None = None
    w_nnz: np.ndarray | None = None
    samples: int = 0
    k: int = 0


def _accumulate(acc: _Acc, a: np.ndarray, w: np.ndarray, samples: int, batched: bool) -> None:
    # the batch is folded into the groups (`batched`, a matmul's leading axes) or into m
    g, m, k = a.shape
    if batched:
        per = a.mean(axis=2).reshape(samples, g // samples, m).sum(axis=0)
        nnz = w.sum(axis=1).reshape(samples, g // samples, -1).sum(axis=0)
    else:
        per = a.reshape(g, samples, m // samples, k).mean(axis=3).sum(axis=1)
        nnz = w.sum(axis=1) * samples  # the same weights every sample
    acc.lane_sum = per if acc.lane_sum is None else acc.lane_sum + per
    acc.w_nnz = nnz if acc.w_nnz is None else acc.w_nnz + nnz
    acc.samples += samples
    acc.k = k


def operand_stats(g: Graph, batches: Iterable[Mapping[str, np.ndarray]],
                  layers: Iterable[str] | None = None) -> dict[str, OperandStats]:
    """Per-MAC-layer operand statistics over calibration batches (one sample per batch row).

    Args:
        g: the model (a sparsified graph measures its thresholded operands).
        batches: feed dicts; every batch's leading axis is the sample axis.
        layers: names of the MAC layers to measure (default all).

    Raises:
        ModelError: if there are no batches.
    """
    wanted = mac_layers(g) if layers is None else tuple(g.layer(n) for n in layers)
    keep = {t for x in wanted for t in x.inputs[:2] if t not in g.weights}
    accs = {x.name: _Acc() for x in wanted}
    for feeds in batches:
        env = run(g, feeds, dtype="float32", keep=keep)
        samples = int(np.shape(next(iter(feeds.values())))[0])
        for x in wanted:
            _accumulate(accs[x.name], *gemm_masks(g, env, x), samples, x.kind == "matmul")
    if not wanted or accs[wanted[0].name].samples == 0:
        raise ModelError("sparsity", "no calibration batches were given")
    return {x.name: _stats(x.name, accs[x.name]) for x in wanted}


def _stats(name: str, acc: _Acc) -> OperandStats:
    assert acc.lane_sum is not None and acc.w_nnz is not None  # samples > 0: accumulated
    lanes = acc.lane_sum / acc.samples
    nnz = np.rint(acc.w_nnz / acc.samples).astype(np.int64)
    return OperandStats(name, acc.k, float(lanes.mean()), lanes, nnz, acc.samples)


def delta_density(frames: np.ndarray, threshold: float) -> float:
    """Fraction of elements a delta rule sends over a stream of frames [T, ...].

    The rule (Neil et al., "Delta Networks", ICML 2017): each element keeps the last value
    it sent (zero before the first frame); at each frame it sends x when
    |x - sent| >= threshold (and updates `sent`), else nothing (a zero delta).
    """
    frames = np.asarray(frames)
    sent = np.zeros_like(frames[0])
    count = 0
    for x in frames:
        fire = np.abs(x - sent) >= threshold
        sent = np.where(fire, x, sent)
        count += int(fire.sum())
    return count / frames.size
