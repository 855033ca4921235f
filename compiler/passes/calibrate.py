"""Calibration: activation ranges of the tensors a quantised model needs, over a data set.

`calibrate(g, batches)` runs the model over the calibration batches (the reference executor, or
any `forward` the caller gives, e.g. onnxruntime on the emitted float model), keeping only the
tensors whose ranges quantisation can use (`calibration_tensors`), and merges their `RangeStats`
histograms batch by batch. The merge is exact and order-free (see
`compiler.activation_quant.RangeStats`), so statistics of parts of a data set combine into those of
the whole. The min/max, percentile, MSE or entropy (KL) range is chosen later, from the
histogram, by `CalibrationStats.params`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import cast

import numpy as np

from compiler.activation_quant import (
    ActivationParams,
    ActMethod,
    RangeStats,
    activation_params,
    merge_stats,
    range_stats,
)
from compiler.errors import ModelError
from compiler.executor import run
from compiler.ir import CATEGORY_GEMM, KIND_CATEGORY, Graph, Layer

METHODS = ("minmax", "percentile", "mse", "entropy", "auto")
# "auto": the method `compiler.range_choice` chose for the tensor by measured output error;
# this one where it chose none (no data was scored).
AUTO_FALLBACK = "percentile"
# forward(feeds, names) -> at least the tensors `names` of `g` on one batch
Forward = Callable[[Mapping[str, np.ndarray], tuple[str, ...]], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class CalibrationStats:
    """Merged range statistics per tensor, and what data they came from."""

    stats: Mapping[str, RangeStats] = field(default_factory=lambda: MappingProxyType({}))
    samples: int = 0
    source: str = ""  # e.g. "calib.npz (200 samples)" or "256 random samples"
    # tensor -> X^T X over its rows (last axis = channels), float64: GPTQ's Hessians
    grams: Mapping[str, np.ndarray] = field(default_factory=lambda: MappingProxyType({}))
    # (tensor, bits) -> method chosen by `compiler.range_choice` (read by method "auto"); a
    # choice holds for the data it was made on, so `merge` drops it
    chosen: Mapping[tuple[str, int], str] = field(default_factory=lambda: MappingProxyType({}))
    # (tensor, bits) -> the parameters of the chosen method, computed once where the choice
    # was made (an entropy range costs ~0.2 s; the end-to-end search reads each many times)
    resolved: Mapping[tuple[str, int], ActivationParams] = field(
        default_factory=lambda: MappingProxyType({}))

    def merge(self, other: CalibrationStats) -> CalibrationStats:
        """Statistics of the union of both data sets (exact)."""
        names = set(self.stats) | set(other.stats)
        merged = {t: merge_stats(self.stats.get(t, RangeStats()), other.stats.get(t, RangeStats()))
                  for t in sorted(names)}
        grams = {t: np.asarray(self.grams.get(t, 0.0) + other.grams.get(t, 0.0))
                 for t in sorted(set(self.grams) | set(other.grams))}
        source = " + ".join(s for s in (self.source, other.source) if s)
        return CalibrationStats(MappingProxyType(merged), self.samples + other.samples, source,
                                MappingProxyType(grams))

    def params(self, tensor: str, bits: int = 8, method: str = "percentile",
               percentile: float = 99.99) -> ActivationParams:
        """Asymmetric (unsigned) `QuantizeLinear` parameters of `tensor`.

        Raises:
            ModelError: if no statistics were collected for `tensor`.
        """
        if tensor not in self.stats or self.stats[tensor].count == 0:
            raise ModelError(f"tensor {tensor}", "no calibration statistics were collected")
        if method == "auto" and (tensor, bits) in self.resolved:
            return self.resolved[tensor, bits]
        if method == "auto":
            method = self.chosen.get((tensor, bits), AUTO_FALLBACK)
        return activation_params(self.stats[tensor], bits, cast(ActMethod, method), symmetric=False,
                                 percentile=percentile)


def _float(g: Graph, tensor: str) -> bool:
    return bool(tensor) and tensor not in g.weights and np.dtype(g.types[tensor].dtype).kind == "f"


def folds_into_requant(layer: Layer) -> bool:
    """A ReLU or a Clip with min >= 0: saturating requantisation of the MAC output it reads
    can do its work (its output range sets the MAC layer's output grid)."""
    fn = layer.attrs.get("fn")
    return layer.kind == "activation" and (
        fn == "relu" or (fn == "clip" and layer.attrs.get("min", -np.inf) >= 0.0))


def calibration_tensors(g: Graph) -> tuple[str, ...]:
    """Float activations whose ranges quantisation may use: the activation inputs and the
    output of every MAC layer, and the output of a ReLU/Clip reading a MAC output."""
    mac_out: set[str] = set()
    wanted: dict[str, None] = {}  # insertion-ordered set
    for layer in g.layers:
        if KIND_CATEGORY[layer.kind] == CATEGORY_GEMM:
            for t in (*layer.inputs, *layer.outputs):
                if _float(g, t):
                    wanted[t] = None
            mac_out.update(layer.outputs)
        elif folds_into_requant(layer) and layer.inputs[0] in mac_out:
            wanted[layer.outputs[0]] = None
    return tuple(wanted)


def _batch_size(feeds: Mapping[str, np.ndarray]) -> int:
    first = next(iter(feeds.values()), None)
    return int(np.shape(first)[0]) if first is not None and np.ndim(first) else 1


class RangeCollector:
    """Range statistics of some tensors, merged batch by batch as forward passes produce them
    (`calibrate` runs its own passes through one; others can feed one theirs)."""

    def __init__(self, tensors: Iterable[str], grams: Iterable[str] = ()) -> None:
        self._stats = {t: RangeStats() for t in tensors}
        self._grams: dict[str, np.ndarray | float] = dict.fromkeys(grams, 0.0)
        self.samples = 0

    def batch_stats(self, env: Mapping[str, np.ndarray]) -> dict[str, RangeStats]:
        """One batch's statistics of every collected tensor, for `add` here and in another
        collector of the same tensors (merging is exact in any order: `RangeStats`), so that
        a batch two collectors take is histogrammed once.

        Raises:
            ModelError: if a collected tensor holds NaN or infinity.
        """
        return {t: range_stats(env[t], len(s.hist), f"tensor {t}")
                for t, s in self._stats.items()}

    def add(self, env: Mapping[str, np.ndarray], samples: int,
            batch: Mapping[str, RangeStats] | None = None) -> None:
        """Merge one batch of `samples` samples: `env` holds at least every collected tensor;
        `batch`: its `batch_stats`, where already computed.

        Raises:
            ModelError: if a collected tensor holds NaN or infinity.
        """
        batch = self.batch_stats(env) if batch is None else batch
        self._stats = {t: merge_stats(s, batch[t]) for t, s in self._stats.items()}
        for t, gram in self._grams.items():
            x = np.asarray(env[t], np.float64)
            rows = x.reshape(-1, x.shape[-1])
            self._grams[t] = gram + rows.T @ rows
        self.samples += samples

    def result(self, source: str = "") -> CalibrationStats:
        grams = {t: g for t, g in self._grams.items() if isinstance(g, np.ndarray)}
        return CalibrationStats(MappingProxyType(dict(self._stats)), self.samples, source,
                                MappingProxyType(grams))


def _executor_forward(g: Graph) -> Forward:
    return lambda feeds, names: run(g, feeds, dtype="float32", keep=names)


def gram_tensors(g: Graph) -> tuple[str, ...]:
    """Inputs of linear layers with a constant weight: the tensors whose X^T X GPTQ needs."""
    return tuple(dict.fromkeys(
        layer.inputs[0] for layer in g.layers
        if layer.kind == "linear" and layer.inputs[1] in g.weights and _float(g, layer.inputs[0])))


def calibrate(g: Graph, batches: Iterable[Mapping[str, np.ndarray]], *,
              tensors: Iterable[str] | None = None, source: str = "",
              forward: Forward | None = None, grams: Iterable[str] = ()) -> CalibrationStats:
    """Run `g` over calibration batches and collect range statistics.

    Args:
        g: the float model.
        batches: feed dicts, each giving every graph input at its static shape.
        tensors: which tensors to collect (default `calibration_tensors(g)`).
        source: where the data came from, kept for reports.
        forward: `forward(feeds, names)` computes `g` on one batch and returns at least the
            tensors `names`; default the reference executor in float32.
        grams: tensors whose X^T X to accumulate too (e.g. `gram_tensors(g)`, for GPTQ).

    Returns:
        The merged statistics.

    Raises:
        ModelError: if there are no batches, a feed is malformed, or a kept tensor holds
            NaN or infinity.
    """
    grams = tuple(grams)
    names = tuple(calibration_tensors(g) if tensors is None else tensors)
    forward = forward or _executor_forward(g)
    collector = RangeCollector(names, grams)
    names = tuple(dict.fromkeys((*names, *grams)))
    for feeds in batches:
        # a temporary, so one batch's tensors are freed before the next batch is computed
        collector.add(forward(feeds, names), _batch_size(feeds))
    if collector.samples == 0:
        raise ModelError("calibration", "no calibration batches were given")
    return collector.result(source)
