"""Quantiser numerics: weight grids, activation ranges and ONNX-exact fake quantisation.

Conventions decided here (every emitter and the executor's fake-quant simulation follow them):

- **Weights, symmetric**: signed codes on the *narrow* grid `[-(2^(b-1)-1), 2^(b-1)-1]` (4-bit:
  [-7, 7]), zero point 0, `scale = clip_ratio * max|w| / (2^(b-1)-1)` per group. The narrow grid
  gives up one level (-8 at 4 bits) so that negation is exact and a channel's positive and
  negative extremes are treated alike. (onnxruntime's own MatMulNBits quantiser instead maps the
  signed extreme onto -2^(b-1); we do not copy that.) For `MatMulNBits` the packer shifts the
  codes by 2^(b-1) into [1, 2^b-1] so that the op's default zero point 2^(b-1) applies; for ONNX
  INT4 the codes are stored as they are with zero point 0.
- **Weights, asymmetric**: unsigned codes `[0, 2^b-1]`, `scale = (hi - lo) / (2^b-1)` and an
  integer zero point, with `[lo, hi]` stretched to contain 0 so that 0 (and zero padding) is
  exact. This is onnxruntime's `compute_scale_zp` rule.
- **Granularity**: `per_tensor` (scale shape `()`), `per_channel` (1-D scale along the output
  channel `axis`), `per_block` (blocks of `block_size` along the reduction axis, which is 1 when
  `axis == 0`, else 0; scale in ONNX blocked-`DequantizeLinear` layout: the weight's shape with
  the block axis divided by `block_size`, rounded up). `QuantParams.axis` is the axis that
  `DequantizeLinear` takes: the channel axis for per_channel, the block axis for per_block.
- **Rounding**: `q = clip(rint(w / scale) + zp, qmin, qmax)` with float32 division and round
  half to even, as onnxruntime's `QuantizeLinear` computes it; dequantisation is
  `float32(q - zp) * scale`, as `DequantizeLinear` computes it.
- **Activations**: per tensor, ONNX `QuantizeLinear` semantics; asymmetric means unsigned codes
  (uint8 / uint4) with a zero point, symmetric means signed codes with zero point 0 and
  `scale = max|x| / (2^(b-1)-1)`; saturation is to the full signed range as in onnxruntime.
  Calibration ranges come from mergeable `RangeStats` histograms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numba import njit

from compiler.clip_search import CLIP_RATIOS, TINY, best_ratios
from compiler.errors import ModelError

Granularity = Literal["per_tensor", "per_channel", "per_block"]
ClipMethod = Literal["minmax", "mse"]
ActMethod = Literal["minmax", "percentile", "mse", "entropy"]

NBINS = 2048  # histogram bins of RangeStats


@dataclass(frozen=True, eq=False)  # holds arrays: compare fields
class QuantParams:
    """How codes map back to reals: `real = float32(q - zero_point) * scale`.

    `scale` (float32) and `zero_point` (dtype of the codes) have shape `()` per tensor, `(C,)`
    per channel, or the ONNX blocked layout per block; `axis` is `DequantizeLinear`'s axis.
    """

    scale: np.ndarray
    zero_point: np.ndarray
    bits: int
    symmetric: bool
    granularity: Granularity
    axis: int | None
    block_size: int | None


@dataclass(frozen=True, eq=False)  # holds arrays: compare fields
class QuantizedTensor:
    """Integer codes (int8 if symmetric else uint8, values on the `bits` grid) and params."""

    q: np.ndarray
    params: QuantParams

    @property
    def scale(self) -> np.ndarray:
        return self.params.scale

    @property
    def zero_point(self) -> np.ndarray:
        return self.params.zero_point


@dataclass(frozen=True)
class ActivationParams:
    """Per-tensor `QuantizeLinear` parameters of one activation."""

    scale: np.float32
    zero_point: int
    bits: int
    signed: bool


def code_range(bits: int, symmetric: bool) -> tuple[int, int]:
    """Codes a weight may take: the narrow signed grid if symmetric, else [0, 2^b-1]."""
    if symmetric:
        return -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def storage_range(bits: int, signed: bool) -> tuple[int, int]:
    """Saturation range of a `bits`-wide ONNX integer type (int4/uint4/int8/uint8...)."""
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


def scale_zero_point(lo: np.ndarray, hi: np.ndarray, bits: int,
                     symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    """Scale (float32) and integer zero point (int64) of ranges `[lo, hi]`, elementwise.

    The range is stretched to contain 0; an empty range gets scale 1 so nothing divides by 0.
    As onnxruntime's `compute_scale_zp`, the zero point comes from the float64 scale, which is
    rounded to float32 afterwards.
    """
    lo = np.minimum(np.asarray(lo, np.float64), 0.0)
    hi = np.maximum(np.asarray(hi, np.float64), 0.0)
    qmin, qmax = code_range(bits, symmetric)
    scale = np.maximum(-lo, hi) / qmax if symmetric else (hi - lo) / (qmax - qmin)
    empty = scale < TINY
    scale = np.where(empty, 1.0, scale)
    zp = np.zeros(scale.shape) if symmetric else np.clip(np.rint(qmin - lo / scale), qmin, qmax)
    return scale.astype(np.float32), np.where(empty, 0, zp).astype(np.int64)


def quantize_codes(x: np.ndarray, scale: np.ndarray | np.generic, zp: np.ndarray | np.generic,
                   qmin: int,
                   qmax: int) -> np.ndarray:
    """`clip(rint(x / scale) + zp, qmin, qmax)` in float32, as onnxruntime's QuantizeLinear."""
    ratio = np.asarray(np.asarray(x, np.float32) / np.asarray(scale, np.float32))
    # in place, in float32: rint's integers and the zero points are exact there (saturation
    # happens the same for anything beyond 2^24), and a weight-sized float64 temporary would
    # double the peak memory of quantising an embedding table
    np.rint(ratio, out=ratio)
    ratio += np.asarray(zp, np.float32)
    np.clip(ratio, qmin, qmax, out=ratio)
    return ratio.astype(np.int32)


def dequantize_codes(q: np.ndarray, scale: np.ndarray | np.generic,
                     zp: np.ndarray | np.generic) -> np.ndarray:
    """`float32(q - zp) * scale`, as onnxruntime's DequantizeLinear."""
    diff = np.asarray(q, np.int32) - np.asarray(zp, np.int32)
    return diff.astype(np.float32) * np.asarray(scale, np.float32)


# ----------------------------------------------------------------------------------------------
# Weights: reshape into groups [G, L], choose one (scale, zp) per group, reshape back.


def block_axis_of(axis: int) -> int:
    """The reduction axis blocks run along, for output channel axis `axis`."""
    return 1 if axis == 0 else 0


def _to_groups(w: np.ndarray, granularity: str, axis: int,
               block_size: int | None) -> tuple[np.ndarray, tuple[int, ...]]:
    """Rows of `w` that share one scale (zero padded), and the shape of the params array
    before moving axes back."""
    if granularity == "per_tensor":
        return w.reshape(1, -1), ()
    if granularity == "per_channel":
        moved = np.moveaxis(w, axis, 0)
        return moved.reshape(moved.shape[0], -1), (moved.shape[0],)
    assert block_size is not None  # per_block params carry their block size
    moved = np.moveaxis(w, block_axis_of(axis), -1)
    blocks = -(-moved.shape[-1] // block_size)
    pad = [(0, 0)] * (moved.ndim - 1) + [(0, blocks * block_size - moved.shape[-1])]
    # Zero padding is exact (0 lies on every grid), so it changes neither ranges nor errors.
    padded = np.pad(moved, pad) if pad[-1][1] else moved  # np.pad copies even for no padding
    return padded.reshape(-1, block_size), (*moved.shape[:-1], blocks)


def _from_groups(params: np.ndarray, shape: tuple[int, ...], granularity: str,
                 axis: int) -> np.ndarray:
    """Per-group values back into the ONNX `DequantizeLinear` scale layout."""
    params = params.reshape(shape)
    if granularity == "per_block":
        return np.moveaxis(params, -1, block_axis_of(axis))
    return params


def _expand(params: np.ndarray, w_shape: tuple[int, ...], qp: QuantParams) -> np.ndarray:
    """Broadcast scale or zero point over the weight's shape."""
    if qp.granularity == "per_tensor":
        return params
    assert qp.axis is not None
    if qp.granularity == "per_channel":
        shape = [1] * len(w_shape)
        shape[qp.axis] = -1
        return params.reshape(shape)
    assert qp.block_size is not None
    full = np.repeat(params, qp.block_size, axis=qp.axis)
    return np.take(full, np.arange(w_shape[qp.axis]), axis=qp.axis)


def _group_ranges(g: np.ndarray, ratio: float | np.ndarray,
                  symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    if symmetric:  # max |g| as max(max, -min): no weight-sized |g| temporary
        amax = np.maximum(g.max(axis=1), -g.min(axis=1)) * ratio
        return -amax, amax
    return g.min(axis=1) * ratio, g.max(axis=1) * ratio


def _mse_ratio(g: np.ndarray, bits: int, symmetric: bool) -> np.ndarray:
    """Per group (row of `g`), the clip ratio of `CLIP_RATIOS` with the least squared error
    (`compiler.clip_search.best_ratios`)."""
    qmin, qmax = code_range(bits, symmetric)
    return best_ratios(g, float(qmin), float(qmax), symmetric)


def _check_weight_args(w: np.ndarray, bits: int, granularity: str, axis: int,
                       block_size: int | None, clip: str) -> None:
    where = "quantize_weight"
    if not 2 <= bits <= 8:
        raise ModelError(where, f"bits must be in 2..8, got {bits}")
    if granularity not in ("per_tensor", "per_channel", "per_block"):
        raise ModelError(where, f"unknown granularity {granularity!r}")
    if clip not in ("minmax", "mse"):
        raise ModelError(where, f"unknown clip method {clip!r}")
    if granularity != "per_tensor" and not 0 <= axis < w.ndim:
        raise ModelError(where, f"axis {axis} out of range for a {w.ndim}-D weight")
    if granularity == "per_block" and (w.ndim < 2 or not block_size or block_size < 1):
        raise ModelError(where, "per_block needs a 2-D or larger weight and a block_size >= 1")
    # min and max are finite only if every value is (NaN propagates): no boolean temporary
    if w.size == 0 or not (np.isfinite(w.min()) and np.isfinite(w.max())):
        raise ModelError(where, "weight is empty or holds non-finite values")


def quantize_weight(w: np.ndarray, bits: int, granularity: Granularity = "per_channel",
                    axis: int = 0, block_size: int | None = None, symmetric: bool = True,
                    clip: Literal["minmax", "mse"] = "minmax") -> QuantizedTensor:
    """Quantise a weight onto a `bits`-wide grid (see the module docstring for the grids).

    Args:
        w: the float weight, e.g. `[out, in]` (Gemm/linear), `[O, I, kh, kw]` (conv) or
            `[K, N]` (MatMul's B, with `axis=1`).
        bits: 2..8.
        granularity: one scale per tensor, per output channel, or per block of `block_size`
            elements along the reduction axis (1 if `axis == 0`, else 0).
        axis: the output channel axis.
        block_size: block length for `per_block` (typically 32, 64 or 128).
        symmetric: signed narrow grid with zero point 0, or unsigned grid with a zero point.
        clip: `minmax` uses the full range; `mse` searches `CLIP_RATIOS` per group for the
            range with the least squared error.

    Returns:
        The codes and their `QuantParams`.

    Raises:
        ModelError: on bad arguments or non-finite weights.
    """
    w = np.asarray(w, np.float32)
    _check_weight_args(w, bits, granularity, axis, block_size, clip)
    g, shape = _to_groups(w, granularity, axis, block_size)
    ratio = _mse_ratio(g, bits, symmetric) if clip == "mse" else 1.0
    scale, zp = scale_zero_point(*_group_ranges(g, ratio, symmetric), bits, symmetric)
    code_dtype = np.int8 if symmetric else np.uint8
    params = QuantParams(
        scale=_from_groups(scale, shape, granularity, axis),
        zero_point=_from_groups(zp, shape, granularity, axis).astype(code_dtype),
        bits=bits, symmetric=symmetric, granularity=granularity,
        axis=_dq_axis(granularity, axis), block_size=block_size if granularity == "per_block"
        else None)
    qmin, qmax = code_range(bits, symmetric)
    q = np.empty(g.shape, code_dtype)
    _group_codes(g, scale, zp.astype(np.float32), np.float32(qmin), np.float32(qmax), q)
    return QuantizedTensor(q=_ungroup(q, w.shape, granularity, axis, block_size),
                           params=params)


@njit(cache=True)
def _group_codes(g: np.ndarray, scale: np.ndarray, zp: np.ndarray, qmin: np.float32,
                 qmax: np.float32, out: np.ndarray) -> None:
    """`quantize_codes` of each group row with its own scale and zero point, straight into
    the code dtype (no weight-sized float temporaries)."""
    for i in range(g.shape[0]):
        for j in range(g.shape[1]):
            out[i, j] = min(max(np.rint(g[i, j] / scale[i]) + zp[i], qmin), qmax)


def _ungroup(rows: np.ndarray, shape: tuple[int, ...], granularity: str, axis: int,
             block_size: int | None) -> np.ndarray:
    """Inverse of `_to_groups`: group rows back into the weight's `shape`."""
    if granularity == "per_tensor":
        return rows.reshape(shape)
    if granularity == "per_channel":
        moved = (shape[axis], *shape[:axis], *shape[axis + 1:])
        return np.ascontiguousarray(np.moveaxis(rows.reshape(moved), 0, axis))
    red = block_axis_of(axis)
    moved = (*shape[:red], *shape[red + 1:], -1)
    full = rows.reshape(moved)[..., :shape[red]]  # drop the zero padding of the last block
    return np.ascontiguousarray(np.moveaxis(full, -1, red))


def _dq_axis(granularity: str, axis: int) -> int | None:
    return {"per_tensor": None, "per_channel": axis,
            "per_block": block_axis_of(axis)}[granularity]


def dequantize(qt: QuantizedTensor) -> np.ndarray:
    """Float32 reals of `qt`, exactly as ONNX `DequantizeLinear` computes them."""
    qp = qt.params
    return dequantize_codes(qt.q, _expand(qp.scale, qt.q.shape, qp),
                            _expand(qp.zero_point, qt.q.shape, qp))


def fake_quant_weight(w: np.ndarray, bits: int, granularity: Granularity = "per_channel",
                      axis: int = 0, block_size: int | None = None, symmetric: bool = True,
                      clip: Literal["minmax", "mse"] = "minmax") -> np.ndarray:
    """`dequantize(quantize_weight(...))`: the float32 weight the quantised model computes with."""
    return dequantize(quantize_weight(w, bits, granularity, axis, block_size, symmetric, clip))


# ----------------------------------------------------------------------------------------------
# Calibration statistics: min/max and a histogram that merges exactly across batches.


@dataclass(frozen=True, eq=False)  # holds arrays: compare fields
class RangeStats:
    """Running statistics of one tensor over calibration batches.

    The histogram covers `[-half_range, half_range)` in `len(hist)` equal bins, where
    `half_range` is a power of two strictly above max|x|. Bin width is then a power of two too,
    so `floor(x / width)` is exact and widening the range merges whole bins: merging batch
    statistics in any order gives the same histogram as one pass over all the data.
    """

    count: int = 0
    min: float = np.inf
    max: float = -np.inf
    half_range: float = 0.0
    hist: np.ndarray = field(default_factory=lambda: np.zeros(NBINS, np.int64))

    def update(self, x: np.ndarray, name: str = "activation") -> RangeStats:
        """These statistics merged with those of batch `x`."""
        return merge_stats(self, range_stats(x, len(self.hist), name))


def _power_of_two_above(m: float) -> float:
    if m == 0.0:
        return 2.0**-126  # all-zero batch: the smallest range, any real data widens it
    _, exp = math.frexp(m)  # m = f * 2^exp with f in [0.5, 1), so 2^exp > m
    return math.ldexp(1.0, exp)


@njit(cache=True, nogil=True)  # compile's HAWQ analysis runs it beside its backward passes
def _histogram(x: np.ndarray, nbins: int, inv_width: float) -> np.ndarray:
    """Counts of `floor(v * inv_width) + nbins // 2` over the 1-D float32/float64 `x`.

    The product is taken in float64 and `inv_width` is a power of two, so it is exact (even for
    float32 subnormals) and the bin equals `floor(v / width)` as `RangeStats` requires.
    """
    centre = nbins // 2
    # four interleaved counter rows, summed at the end: with one row, runs of values in one
    # bin (a ReLU's zeros) make each increment wait for the previous store to the same
    # counter (2M float32 values: 6.3 ms with one row, 1.9 ms with four, ReLU or Gaussian)
    hist = np.zeros((4, nbins), np.int64)
    n4 = x.size - x.size % 4
    for i in range(0, n4, 4):
        for r in range(4):
            hist[r, np.int64(np.floor(np.float64(x[i + r]) * inv_width)) + centre] += 1
    for i in range(n4, x.size):
        hist[0, np.int64(np.floor(np.float64(x[i]) * inv_width)) + centre] += 1
    counts: np.ndarray = hist.sum(axis=0)
    return counts


def range_stats(x: np.ndarray, nbins: int = NBINS, name: str = "activation") -> RangeStats:
    """Statistics of one batch. Float32 and float64 are read in place (no float64 copy);
    other dtypes are cast to float64 first.

    Raises:
        ModelError: if `nbins` is not even and positive (the bins must split evenly about 0),
            or `x` is empty or holds NaN or infinity (named by `name`).
    """
    if nbins < 2 or nbins % 2:
        raise ModelError("range_stats", f"nbins must be even and positive, got {nbins}")
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    x = x.ravel(order="K")  # a view for any dense layout; the order does not matter here
    # numpy's SIMD min/max propagate NaN, and an infinity is the min or the max: so both are
    # finite exactly when every value is
    lo, hi = (float(x.min()), float(x.max())) if x.size else (math.nan, math.nan)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ModelError(name, "calibration batch is empty or holds non-finite values")
    half = _power_of_two_above(max(-lo, hi))
    inv_width = nbins / (2.0 * half)
    if not math.isfinite(inv_width):  # float64 data below ~2^-1000: scale up 2^64 (exact)
        x, inv_width = x * 2.0**64, nbins / (2.0 * half * 2.0**64)
    return RangeStats(int(x.size), lo, hi, half, _histogram(x, nbins, inv_width))


def _rebin(stats: RangeStats, half: float) -> np.ndarray:
    """Histogram of `stats` over the wider range `half` (a power-of-two multiple)."""
    if half == stats.half_range:  # the common case once the range has settled
        return stats.hist
    centre = len(stats.hist) // 2
    shift = min(int(round(np.log2(half / stats.half_range))), 40)  # 2^40 bins: all collapse
    target = np.floor_divide(np.arange(len(stats.hist)) - centre, 2**shift) + centre
    return np.bincount(target, weights=stats.hist, minlength=len(stats.hist)).astype(np.int64)


def merge_stats(a: RangeStats, b: RangeStats) -> RangeStats:
    """Statistics of the union of the batches behind `a` and `b` (exact, order-free)."""
    if a.count == 0 or b.count == 0:
        return b if a.count == 0 else a
    if len(a.hist) != len(b.hist):
        raise ModelError("RangeStats", f"cannot merge {len(a.hist)} and {len(b.hist)} bins")
    half = max(a.half_range, b.half_range)
    return RangeStats(a.count + b.count, min(a.min, b.min), max(a.max, b.max), half,
                      _rebin(a, half) + _rebin(b, half))


def _bin_width(stats: RangeStats) -> float:
    return 2.0 * stats.half_range / len(stats.hist)


def bin_centers(stats: RangeStats) -> np.ndarray:
    """Centre of every histogram bin."""
    return -stats.half_range + (np.arange(len(stats.hist)) + 0.5) * _bin_width(stats)


def _hist_quantile(counts: np.ndarray, start: float, width: float, q: float) -> float:
    """Quantile `q` of a histogram, linear within the bin where it falls."""
    cum = np.cumsum(counts)
    target = q * cum[-1]
    i = min(int(np.searchsorted(cum, target, side="left")), len(counts) - 1)
    frac = (target - (cum[i] - counts[i])) / counts[i] if counts[i] else 1.0
    return float(start + width * (i + frac))


def quantile(stats: RangeStats, q: float) -> float:
    """Quantile `q` (0..1) of the values seen, to within one bin."""
    return _hist_quantile(stats.hist, -stats.half_range, _bin_width(stats), q)


def abs_quantile(stats: RangeStats, q: float) -> float:
    """Quantile `q` (0..1) of |x|, to within one bin (the signed bins folded about 0)."""
    centre = len(stats.hist) // 2
    folded = stats.hist[centre:] + stats.hist[:centre][::-1]
    return _hist_quantile(folded, 0.0, _bin_width(stats), q)


# ----------------------------------------------------------------------------------------------
# Activations: per-tensor parameters from calibration statistics.


def _check_activation_args(stats: RangeStats, bits: int, method: str) -> None:
    if bits not in (4, 8):
        raise ModelError("activation_params", f"activation bits must be 4 or 8, got {bits}")
    if method not in ("minmax", "percentile", "mse", "entropy"):
        raise ModelError("activation_params", f"unknown method {method!r}")
    if stats.count == 0:
        raise ModelError("activation_params", "no calibration data was collected")


def _percentile_range(stats: RangeStats, percentile: float,
                      symmetric: bool) -> tuple[float, float]:
    if symmetric:
        amax = min(abs_quantile(stats, percentile / 100.0), max(-stats.min, stats.max))
        return -amax, amax
    lo = max(quantile(stats, 1.0 - percentile / 100.0), stats.min)
    return lo, min(quantile(stats, percentile / 100.0), stats.max)


def _mse_range(stats: RangeStats, bits: int, symmetric: bool) -> tuple[float, float]:
    """Clip ratio of the min/max range with the least squared error over the histogram, each
    bin represented by its centre. Vectorised over [candidates, bins]."""
    lo, hi = (-max(-stats.min, stats.max), max(-stats.min, stats.max)) if symmetric \
        else (stats.min, stats.max)
    scale, zp = scale_zero_point(lo * CLIP_RATIOS, hi * CLIP_RATIOS, bits, symmetric)
    x = bin_centers(stats)[None, :]
    qmin, qmax = storage_range(bits, symmetric)
    err = dequantize_codes(quantize_codes(x, scale[:, None], zp[:, None], qmin, qmax),
                           scale[:, None], zp[:, None]) - x
    best = int(np.argmin((err.astype(np.float64) ** 2) @ stats.hist))
    return lo * CLIP_RATIOS[best], hi * CLIP_RATIOS[best]


def _entropy_range(stats: RangeStats, bits: int, symmetric: bool) -> tuple[float, float]:
    from compiler.kl_range import entropy_range  # it builds on this module's RangeStats

    return entropy_range(stats, bits, symmetric)


def activation_params(stats: RangeStats, bits: int = 8,
                      method: Literal["minmax", "percentile", "mse", "entropy"] = "minmax",
                      symmetric: bool = False, percentile: float = 99.99) -> ActivationParams:
    """Per-tensor `QuantizeLinear` scale and zero point from calibration statistics.

    Args:
        stats: merged `RangeStats` of the tensor over the calibration set.
        bits: 8 (uint8/int8) or 4 (uint4/int4).
        method: `minmax` (observed range), `percentile` (clip the tails beyond `percentile`),
            `mse` (clip ratio with the least squared error over the histogram), or `entropy`
            (the threshold with the least KL divergence, `compiler.kl_range`).
        symmetric: signed codes with zero point 0; otherwise unsigned with a zero point.
        percentile: for `percentile`, the kept mass in percent.

    Returns:
        `ActivationParams` (float32 scale, integer zero point).

    Raises:
        ModelError: on bad arguments or empty statistics.
    """
    _check_activation_args(stats, bits, method)
    ranges = {
        "minmax": lambda: (stats.min, stats.max),
        "percentile": lambda: _percentile_range(stats, percentile, symmetric),
        "mse": lambda: _mse_range(stats, bits, symmetric),
        "entropy": lambda: _entropy_range(stats, bits, symmetric),
    }
    lo, hi = ranges[method]()
    scale, zp = scale_zero_point(np.array(lo), np.array(hi), bits, symmetric)
    return ActivationParams(np.float32(scale), int(zp), bits, symmetric)


def fake_quant_activation(x: np.ndarray, scale: float, zero_point: int, bits: int,
                          signed: bool) -> np.ndarray:
    """`DequantizeLinear(QuantizeLinear(x))` bit for bit as onnxruntime computes it.

    Float32 division, round half to even, saturation to the full `bits`-wide range. One
    known difference: onnxruntime 1.31's 4-bit QuantizeLinear overflows (wraps) when
    |x / scale| >= 2^31, where this function saturates.
    """
    qmin, qmax = storage_range(bits, signed)
    scale32 = np.float32(scale)
    q = quantize_codes(x, scale32, np.int32(zero_point), qmin, qmax)
    return dequantize_codes(q, scale32, np.int32(zero_point))
