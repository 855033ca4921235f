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
- **Activations**: `compiler.activation_quant` (per tensor, from calibration histograms).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from compiler.clip_search import TINY, best_ratios
from compiler.errors import ModelError
from compiler.numba_cache import njit

Granularity = Literal["per_tensor", "per_channel", "per_block"]
ClipMethod = Literal["minmax", "mse"]


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

