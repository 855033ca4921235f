"""Activation ranges chosen per tensor by the error they cause where they are read.

No single range method wins everywhere: on a transformer's LayerNorm output a few outlier
channels carry signal, and clipping them (percentile, entropy, histogram MSE) costs far more
than the coarser grid of the full min/max range (all-MiniLM-L6-v2, W8A8: percentile 0.929
mean cosine, minmax 0.993); on a CNN's ReLU output the long tail is rare and clipping it pays.

`choose_methods(g, stats, batches)` therefore scores every candidate range of every
calibrated tensor on calibration data by what its readers compute: for each MAC reader with
a constant weight (conv, linear, matmul), the squared error of the reader's float output when
the tensor is fake-quantised on that range (everything else exact); a tensor without such a
reader is scored by its own squared error. The candidate with the least summed error wins.
Candidate ranges come from the merged histograms (`CalibrationStats.params`), so the chosen
range is one of those the named methods give.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from types import MappingProxyType

import numpy as np

from compiler.executor import run
from compiler.ir import CATEGORY_GEMM, KIND_CATEGORY, Graph, Layer
from compiler.ops import OPS
from compiler.passes.calibrate import CalibrationStats, Forward
from compiler.quantizers import ActivationParams, fake_quant_activation

CANDIDATES = ("minmax", "percentile", "mse", "entropy")


def weighted_readers(g: Graph, tensor: str) -> tuple[Layer, ...]:
    """MAC layers with a constant weight that read `tensor` as an activation."""
    return tuple(r for r in g.consumers().get(tensor, ())
                 if KIND_CATEGORY[r.kind] == CATEGORY_GEMM and g.const_weight(r)
                 and tensor not in g.weights)


def _squares(y: np.ndarray) -> float:
    flat = np.ravel(y)
    return float(np.dot(flat, flat))  # float32 BLAS: ample for ranking candidates


def _reader_error(layer: Layer, env: Mapping[str, np.ndarray], tensor: str,
                  d: np.ndarray) -> float:
    """||reader(x + d) - reader(x)||^2: the reader is linear in `tensor` with its other inputs
    fixed, so that is its output for input `d` without the bias."""
    xs = [d if t == tensor else (env[t] if t else None) for t in layer.inputs]
    if len(xs) > 2 and tensor != layer.inputs[2]:
        xs[2] = None
    y = OPS[layer.kind].forward(*xs, **layer.attrs)[0]
    return _squares(y)


def _fake(x: np.ndarray, p: ActivationParams) -> np.ndarray:
    return fake_quant_activation(x, float(p.scale), p.zero_point, p.bits, p.signed)


def tensor_errors(g: Graph, env: Mapping[str, np.ndarray], tensor: str,
                  params: Mapping[str, ActivationParams]) -> dict[str, float]:
    """Squared output error of `tensor`'s weighted readers (or of the tensor itself, if it
    has none) on one batch `env`, per candidate in `params`."""
    x = env[tensor]
    readers = weighted_readers(g, tensor)
    full = {**g.weights, **env}
    out = {}
    for m, p in params.items():
        d = _fake(x, p) - x
        out[m] = (sum(_reader_error(r, full, tensor, d) for r in readers) if readers
                  else _squares(d))
    return out


def candidate_params(stats: CalibrationStats, tensor: str, bits: int,
                     percentile: float) -> dict[str, ActivationParams]:
    """`tensor`'s asymmetric parameters by every candidate method."""
    return {m: stats.params(tensor, bits, m, percentile) for m in CANDIDATES}


def choose_methods(g: Graph, stats: CalibrationStats,
                   batches: Iterable[Mapping[str, np.ndarray]], bits: int = 8,
                   percentile: float = 99.99, forward: Forward | None = None,
                   tensors: Iterable[str] | None = None) -> dict[str, str]:
    """Per calibrated tensor of `stats`, the candidate method whose range causes the least
    summed output error over `batches` (see the module docstring).

    Args:
        g: the float model `stats` were collected on.
        stats: merged range statistics (candidate ranges come from them).
        batches: feed dicts of calibration data (a few are enough).
        bits: activation bits the ranges are for.
        percentile: the kept mass of the percentile candidate.
        forward: `forward(feeds, names)` -> at least the tensors `names` and the weighted
            readers' other inputs; default the reference executor in float32.
        tensors: the tensors to choose for (default: every one `stats` holds).

    Returns:
        tensor -> method name; empty if `batches` is empty.
    """
    tensors = tuple(t for t in (stats.stats if tensors is None else tensors)
                    if t in stats.stats and stats.stats[t].count and t in g.types)
    params = {t: candidate_params(stats, t, bits, percentile) for t in tensors}
    needed = tuple(dict.fromkeys(
        [*tensors, *(i for t in tensors for r in weighted_readers(g, t) for i in r.inputs
                     if i and i not in g.weights)]))
    forward = forward or (lambda feeds, names: run(g, feeds, dtype="float32", keep=names))
    total = {t: dict.fromkeys(CANDIDATES, 0.0) for t in tensors}
    seen = 0
    for feeds in batches:
        env = forward(feeds, needed)
        seen += 1
        for t in tensors:
            for m, e in tensor_errors(g, env, t, params[t]).items():
                total[t][m] += e
    if not seen:
        return {}
    # ties (e.g. two methods giving the same range) go to the first candidate listed
    return {t: min(CANDIDATES, key=total[t].__getitem__) for t in tensors}


def with_choices(stats: CalibrationStats, chosen: Mapping[str, str], bits: int = 8
                 ) -> CalibrationStats:
    """`stats` carrying the chosen method per tensor at `bits` (read by method "auto")."""
    merged = {**stats.chosen, **{(t, bits): m for t, m in chosen.items()}}
    return replace(stats, chosen=MappingProxyType(merged))
