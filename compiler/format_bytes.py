"""Initializer bytes each `compiler.formats` row's emitter writes for a layer's weight and bias.

`emitted_bytes` is the one count the cost models (`hwmodels.cpu_choice`), the allocator's block
choice (`block_bytes_delta`) and the LLM tables read; `tests/compiler/test_format_bytes.py`
checks it against the bytes the emitters actually write, row by row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

import numpy as np

from compiler.formats import BLOCKED_CODES, FORMATS, NBITS_BLOCK
from compiler.ir import KIND_CODE, LayerTable


@dataclass(frozen=True, eq=False)  # holds arrays
class WeightGeometry:
    """Layers' weights as the emitters lay them out (numpy arrays, or scalars, that broadcast).

    Attributes:
        elems: weight elements (the weight slot only).
        channels: output channels (per-channel scale count).
        k: length of the blocked axis (linear K, conv Cin/group, gather columns).
        bias: bias elements (0: no bias).
        rank: rank of the layer's output (dynamic conv reshapes its bias to it).
        granularity: weight scale granularity of the quantised rows.
        block: block length along `k` of per-block rows.
        held: the weight is stored by an earlier layer (`LayerTable.w_shared`): only what
            the layer's own bias adds is counted.
    """

    elems: np.ndarray | int
    channels: np.ndarray | int
    k: np.ndarray | int
    bias: np.ndarray | int = 0
    rank: np.ndarray | int = 4
    granularity: str = "per_channel"
    block: int = NBITS_BLOCK
    held: np.ndarray | bool = False


def _f64(x: object) -> np.ndarray:
    return np.asarray(x, np.float64)


def _like_w(x: object, w: np.ndarray) -> np.ndarray:
    """`x` broadcast against the weight widths (one figure per layer and width)."""
    return _f64(np.asarray(x) + np.zeros(np.shape(w)))


def _codes(w: np.ndarray, g: WeightGeometry) -> np.ndarray:
    """Signed codes in their INT4 / INT8 container (INT4 packed two per byte)."""
    return _f64(np.ceil(np.asarray(g.elems) * np.where(np.asarray(w) <= 4, 4, 8) / 8))


def _scales(g: WeightGeometry) -> np.ndarray:
    """Number of weight scales at the geometry's granularity."""
    rows = np.asarray(g.elems) // np.maximum(g.k, 1)
    by = {"per_tensor": np.ones_like(rows), "per_channel": np.asarray(g.channels) + 0 * rows,
          "per_block": rows * -(-np.asarray(g.k) // g.block)}
    return _f64(by[g.granularity])


def _float(w: np.ndarray, g: WeightGeometry) -> np.ndarray:
    return _like_w(4.0 * (np.asarray(g.elems) + g.bias), w)


def _fp16(w: np.ndarray, g: WeightGeometry) -> np.ndarray:
    return _like_w(2.0 * np.asarray(g.elems) + 4 * np.asarray(g.bias), w)


def _no_weight(w: np.ndarray, g: WeightGeometry) -> np.ndarray:
    return _f64(np.zeros(np.broadcast(np.asarray(w), np.asarray(g.elems)).shape))


def _u8(w: np.ndarray, g: WeightGeometry) -> np.ndarray:
    """UINT8 codes, fp32 scales, uint8 zero points per scale, the float bias."""
    return _like_w(np.asarray(g.elems) + 5.0 * _scales(g) + 4 * np.asarray(g.bias), w)


def _qlinear_conv(w: np.ndarray, g: WeightGeometry) -> np.ndarray:
    """UINT8 codes, scales and zero points; an int32 bias and its fp32 scale per weight scale."""
    bias = np.where(np.asarray(g.bias) > 0, 4.0 * np.asarray(g.bias) + 4 * _scales(g), 0.0)
    return _like_w(np.asarray(g.elems) + 5.0 * _scales(g) + bias, w)


def _int_codes(w: np.ndarray, g: WeightGeometry) -> np.ndarray:
    """INT4/INT8 codes and fp32 scales (a float weight where the row quantises none)."""
    w = np.asarray(w)
    quant = _codes(w, g) + 4.0 * _scales(g) + 4 * np.asarray(g.bias)
    return _f64(np.where((w > 0) & (w < 16), quant, _float(w, g)))


def _nbits(w: np.ndarray, g: WeightGeometry, zero_points: bool = False) -> np.ndarray:
    """MatMulNBits: per block the packed codes and an fp32 scale (and a float zero point)."""
    w = np.asarray(w)
    container = np.where(w == 2, 2, np.where(w <= 4, 4, 8))
    blocks = np.asarray(g.elems) // np.maximum(g.k, 1) * -(-np.asarray(g.k) // g.block)
    return _f64(blocks * (g.block * container / 8 + 4 + 4 * zero_points) + 4.0 * np.asarray(g.bias))


def _nbits_fzp(w: np.ndarray, g: WeightGeometry) -> np.ndarray:
    return _f64(_nbits(w, g, zero_points=True))


def _dynamic(w: np.ndarray, g: WeightGeometry) -> np.ndarray:
    """UINT8 codes, one zero point, fp32 scales, the float bias."""
    return _like_w(np.asarray(g.elems) + 1 + 4.0 * _scales(g) + 4 * np.asarray(g.bias), w)


def _dynamic_conv(w: np.ndarray, g: WeightGeometry) -> np.ndarray:
    """As `_dynamic`, plus the int64 shape the bias is reshaped to."""
    shape = np.where(np.asarray(g.bias) > 0, 8 * np.asarray(g.rank), 0)
    return _f64(_dynamic(w, g) + shape)


# Initializer bytes each row's emitter writes for a layer's weight and bias (codes, scales,
# zero points, bias, as emitted; activation grid parameters not included): f(w_bits, geometry).
ROW_BYTES: Mapping[str, Callable[[np.ndarray, WeightGeometry], np.ndarray]] = MappingProxyType({
    "float": _float, "fp16": _fp16, "qlinear_conv": _qlinear_conv, "int8_linear": _u8,
    "int8_act_matmul": _no_weight, "qdq_float": _int_codes, "qdq_float_transpose": _int_codes,
    "nbits_fp32": _nbits, "nbits_int8": _nbits, "nbits_float_zp": _nbits_fzp,
    "int_dq": _int_codes, "int_dq_block": _int_codes, "gbq": _int_codes,
    "dynamic_int8_linear": _dynamic, "dynamic_int8_conv": _dynamic_conv,
    "qlinear_linear": _u8, "qlinear_act_matmul": _no_weight,
})


def emitted_bytes(row: str, w_bits: np.ndarray | int, geometry: WeightGeometry) -> np.ndarray:
    """Initializer bytes the emitter of `row` writes for layers of `geometry` at `w_bits`.

    Args:
        row: a `FORMATS` row name.
        w_bits: the weight widths (broadcast against the geometry's arrays).
        geometry: the layers' weight shapes, granularity and block.
    """
    full = ROW_BYTES[row](np.asarray(w_bits), geometry)
    if not np.any(geometry.held):
        return full
    # a held weight's codes, scales and zero points are the first reader's; a bias (with
    # the int32 bias' scales, the reshape of a dynamic conv's bias) is the layer's own
    bare = ROW_BYTES[row](np.asarray(w_bits), replace(geometry, bias=0))
    return _f64(np.where(geometry.held, full - bare, full))


def table_geometry(table: LayerTable, block: int = NBITS_BLOCK,
                   granularity: str = "per_channel") -> WeightGeometry:
    """Weight shapes [L, 1] from a layer table: elems = groups x n x k, the rest of the
    constants the bias. conv's per-block axis is taken as k (Cin/g x taps: exact at 1x1), a
    bias-less conv_transpose's channels as n (Cout x taps), gather's rows as one."""
    gather = table.kind_code == KIND_CODE["gather"]
    elems = np.where(gather, table.w_elems, table.groups * table.n * table.k)
    bias = table.w_elems - elems
    transpose = table.kind_code == KIND_CODE["conv_transpose"]
    channels = np.where(transpose & (bias > 0), bias, table.groups * table.n)
    held = False if table.w_shared is None else table.w_shared[:, None]
    # a dynamic conv's bias is reshaped to its output's rank (3 for a Conv1d)
    rank = 4 if table.out_rank is None else table.out_rank[:, None]
    return WeightGeometry(elems[:, None], channels[:, None],
                          np.where(gather, np.maximum(elems, 1), table.k)[:, None], bias[:, None],
                          rank, granularity=granularity, block=block, held=held)


def block_bytes_delta(table: LayerTable, codes: np.ndarray, w_bits: np.ndarray,
                      blocks: np.ndarray) -> np.ndarray:
    """float64 [L, B]: emitted bytes at choice b's block less those at `NBITS_BLOCK` (what
    every cost model counts), for layers whose row (`codes` [L, B]) is per-block; else 0.

    Args:
        table: the layers; codes: their `FORMAT_CODE` at each choice;
        w_bits, blocks: int [B], each choice's weight bits and block.
    """
    out = np.zeros(np.shape(codes))
    base = table_geometry(table, NBITS_BLOCK, "per_block")
    for code in set(np.unique(codes).tolist()) & set(BLOCKED_CODES):
        name = FORMATS[code].name
        for block in np.unique(blocks).tolist():
            at = (codes == code) & (np.asarray(blocks) == block)[None, :]
            delta = (emitted_bytes(name, w_bits[None, :], replace(base, block=int(block)))
                     - emitted_bytes(name, w_bits[None, :], base))
            out = np.where(at, delta, out)
    return out
