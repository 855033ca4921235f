"""Bit packing: the single source of truth for every sub-byte layout edgesim writes.

Low bits first everywhere: element `i` of a run packed `8 // bits` to a byte sits in bits
`(i % (8 // bits)) * bits ...` of byte `i // (8 // bits)`, as in ONNX INT4/UINT4 and
`com.microsoft::MatMulNBits`. The layouts:

- `MatMulNBits` (bits 2, 4, 8; onnxruntime 1.31 rejects 3 and other widths): `B` uint8
  `[N, k_blocks, block_size * bits // 8]`, row `n` = output `n`'s K weights (W transposed),
  blocked along K and padded to `k_blocks * block_size` with the block's zero point, so that
  padding dequantises to 0 for kernels that read whole blocks (onnxruntime's kernel ignores
  codes past K; its own quantiser leaves them 0); `scales` float32 `[N, k_blocks]`;
  `zero_points` uint8 `[N, ceil(k_blocks * bits / 8)]` packed the same way, or None for the
  default `2^(bits-1)`. Dequantised weight: `(q - zp) * scale`. Checked against onnxruntime's
  kernel: accuracy_level 0/1 (fp32 compute) equals `A @ W` up to fp32 summation order;
  accuracy_level 4 (A quantised to int8 per block) stays within 2% of max|Y| in the tests.
- ONNX INT4/UINT4 tensors: two per byte, first in the low nibble, odd counts padded with 0.
- NEON split-lane interleave, for the B operand of table-lookup / sdot kernels: in
  `compiler.packing_neon`.

The kernels are `@njit(cache=True)` over arrays; the wrappers validate and reshape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
from numba import prange

from compiler.errors import ModelError
from compiler.formats import MATMULNBITS_BITS
from compiler.numba_cache import njit
from compiler.quantizers import ClipMethod, QuantizedTensor, quantize_weight

# ----------------------------------------------------------------------------------------------
# Kernels


@njit(cache=True)
def pack_rows(codes: np.ndarray, bits: int) -> np.ndarray:  # codes uint8 [R, L]
    """Pack each row low bits first; the last byte of a row is padded with zeros."""
    per = 8 // bits
    rows, length = codes.shape
    out = np.zeros((rows, (length + per - 1) // per), np.uint8)
    for r in range(rows):
        for i in range(length):
            out[r, i // per] |= np.uint8(codes[r, i] << ((i % per) * bits))
    return out


@njit(cache=True)
def unpack_rows(packed: np.ndarray, bits: int, length: int) -> np.ndarray:
    """Inverse of `pack_rows`: the first `length` codes of each packed row."""
    per = 8 // bits
    mask = (1 << bits) - 1
    out = np.empty((packed.shape[0], length), np.uint8)
    for r in range(packed.shape[0]):
        for i in range(length):
            out[r, i] = (packed[r, i // per] >> ((i % per) * bits)) & mask
    return out


# serial: MiniLM's 37 weights take ~30 ms in all, the same CPU as a parallel loop, which
# started numba's OpenMP workers (spinning beside the clip search's threads) for nothing
@njit(cache=True)
def pack_transposed(codes: np.ndarray, zps: np.ndarray, bits: int, block_size: int,
                    out: np.ndarray) -> None:
    """MatMulNBits B from `[K, N]` codes: row n of `out` packs column n of `codes`, padded to
    whole blocks with the block's zero point (`zps` `[N, k_blocks]`). Transpose, padding and
    packing in one pass over 64x64 tiles, so that both the reads and the writes stay in cache."""
    per = 8 // bits
    k, n_cols = codes.shape
    tile = 64  # a multiple of every `per`: no byte straddles two tiles
    for t in range((n_cols + tile - 1) // tile):
        for k0 in range(0, out.shape[1] * per, tile):
            for n in range(t * tile, min(n_cols, (t + 1) * tile)):
                for kk in range(k0, min(k0 + tile, out.shape[1] * per), per):
                    byte = 0
                    for j in range(per):
                        i = kk + j
                        code = codes[i, n] if i < k else zps[n, i // block_size]
                        byte |= code << (j * bits)
                    out[n, kk // per] = byte


@njit(cache=True)
def _dequant_row(b_row: np.ndarray, scales: np.ndarray, zps: np.ndarray, bits: int,
                 block_size: int, w: np.ndarray) -> None:
    """Dequantise one MatMulNBits row (`[k_blocks, blob]` bytes) into `w` (padded K)."""
    per = 8 // bits
    mask = (1 << bits) - 1
    for blk in range(scales.size):
        zp = np.int32(zps[blk])
        s = scales[blk]
        for j in range(block_size):
            code = (b_row[blk, j // per] >> ((j % per) * bits)) & mask
            w[blk * block_size + j] = np.float32(np.int32(code) - zp) * s


@njit(cache=True, fastmath={"reassoc", "contract"})
def _dot(a_row: np.ndarray, w: np.ndarray, k: int) -> np.float32:
    # Reassociation lets LLVM vectorise the sum; the order then differs from onnxruntime's
    # SGEMM by rounding only, which the stated tolerance of packed_gemm_matmulnbits covers.
    acc = np.float32(0.0)
    for i in range(k):
        acc += a_row[i] * w[i]
    return acc


@njit(cache=True, parallel=True)
def _gemm_kernel(a: np.ndarray, b: np.ndarray, scales: np.ndarray, zps: np.ndarray,
                 bits: int, block_size: int, out: np.ndarray) -> None:
    k = a.shape[1]
    for n in prange(b.shape[0]):  # one output column per task: its row of B is dequantised once
        w = np.empty(scales.shape[1] * block_size, np.float32)
        _dequant_row(b[n], scales[n], zps[n], bits, block_size, w)
        for m in range(a.shape[0]):
            out[m, n] = _dot(a[m], w, k)


# ----------------------------------------------------------------------------------------------
# MatMulNBits


@dataclass(frozen=True, eq=False)  # holds arrays: compare fields
class MatMulNBitsBlob:
    """The constant inputs and shape attributes of one `com.microsoft::MatMulNBits` node."""

    b: np.ndarray                   # uint8 [N, k_blocks, block_size * bits // 8]
    scales: np.ndarray              # float32 [N, k_blocks]
    zero_points: np.ndarray | None  # uint8 [N, ceil(k_blocks * bits / 8)]; None = 2^(bits-1)
    k: int
    n: int
    bits: int
    block_size: int

    @property
    def k_blocks(self) -> int:
        return -(-self.k // self.block_size)

    def attrs(self) -> dict[str, int]:
        """The node's attributes (accuracy_level is the emitter's choice)."""
        return {"K": self.k, "N": self.n, "bits": self.bits, "block_size": self.block_size}

    def unpacked_zero_points(self) -> np.ndarray:
        """The zero points as uint8 `[N, k_blocks]` (the default 2^(bits-1) when none)."""
        if self.zero_points is None:
            return _default_zero_points(self.n, self.k_blocks, self.bits)
        return unpack_rows(self.zero_points, self.bits, self.k_blocks)


def _check_nbits(bits: int, block_size: int, where: str = "MatMulNBits") -> None:
    if bits not in MATMULNBITS_BITS:
        raise ModelError(where, f"bits must be one of {MATMULNBITS_BITS}, got {bits}")
    if block_size < 16 or block_size & (block_size - 1):
        raise ModelError(where, f"block_size must be a power of two >= 16, got {block_size}")


def check_codes(codes: np.ndarray, bits: int, where: str) -> np.ndarray:
    """`codes` as contiguous uint8, checked to lie in [0, 2^bits - 1] (ModelError at `where`)."""
    codes = np.asarray(codes)
    if codes.size and (codes.min() < 0 or codes.max() >= 2**bits):
        raise ModelError(where, f"codes must lie in [0, {2**bits - 1}] for {bits} bits")
    return np.ascontiguousarray(codes, np.uint8)


def _default_zero_points(n: int, k_blocks: int, bits: int) -> np.ndarray:
    return np.full((n, k_blocks), 2 ** (bits - 1), np.uint8)


def pack_matmulnbits_codes(codes: np.ndarray, scales: np.ndarray,
                           zero_points: np.ndarray | None, bits: int,
                           block_size: int) -> MatMulNBitsBlob:
    """Lay out unsigned codes of a MatMul weight in MatMulNBits form.

    Args:
        codes: `[K, N]` integers in `[0, 2^bits - 1]` (the orientation of MatMul's B).
        scales: `[N, k_blocks]` per-block scales.
        zero_points: `[N, k_blocks]` unpacked integer zero points, or None for `2^(bits-1)`.
        bits: 2, 4 or 8.
        block_size: power of two >= 16.

    Returns:
        The packed blob; zero points are packed, or None if none were given.
    """
    _check_nbits(bits, block_size)
    codes = check_codes(codes, bits, "MatMulNBits.B")
    k, n = codes.shape
    k_blocks = -(-k // block_size)
    zps = _default_zero_points(n, k_blocks, bits) if zero_points is None \
        else check_codes(zero_points, bits, "MatMulNBits.zero_points")
    if np.shape(scales) != (n, k_blocks) or zps.shape != (n, k_blocks):
        raise ModelError("MatMulNBits", f"scales and zero points must be [{n}, {k_blocks}]")
    b = np.empty((n, k_blocks, block_size * bits // 8), np.uint8)
    pack_transposed(codes, zps, bits, block_size, b.reshape(n, -1))
    packed_zp = None if zero_points is None else pack_rows(zps, bits)
    return MatMulNBitsBlob(b, np.ascontiguousarray(scales, np.float32), packed_zp, k, n, bits,
                           block_size)


def pack_matmulnbits_quantized(qt: QuantizedTensor) -> MatMulNBitsBlob:
    """MatMulNBits blob of a `[K, N]` weight quantised per block along K (`axis=1` channels).

    Symmetric (signed) codes shift by `2^(bits-1)` so the default zero point applies and no
    zero-point input is written; asymmetric codes keep their zero points.
    """
    qp = qt.params
    if qp.granularity != "per_block" or qt.q.ndim != 2 or qp.axis != 0:
        raise ModelError("MatMulNBits", "needs a [K, N] weight quantised per block along K")
    assert qp.block_size is not None
    if qp.symmetric:
        codes = qt.q.astype(np.int16) + 2 ** (qp.bits - 1)
        return pack_matmulnbits_codes(codes, qp.scale.T, None, qp.bits, qp.block_size)
    return pack_matmulnbits_codes(qt.q, qp.scale.T, qp.zero_point.T, qp.bits, qp.block_size)


def pack_matmulnbits(w: np.ndarray, bits: int, block_size: int, symmetric: bool = True,
                     clip: str = "minmax") -> MatMulNBitsBlob:
    """Quantise a float `[K, N]` MatMul weight per block along K and pack it for MatMulNBits.

    Args:
        w: float weight `[K, N]` (B of `Y = A @ B`).
        bits: 2, 4 or 8.
        block_size: power of two >= 16.
        symmetric: see `compiler.quantizers`; symmetric writes no zero points.
        clip: "minmax" or "mse" (per-block clip search).
    """
    _check_nbits(bits, block_size)
    qt = quantize_weight(w, bits, "per_block", axis=1, block_size=block_size,
                         symmetric=symmetric, clip=cast(ClipMethod, clip))  # checked there
    return pack_matmulnbits_quantized(qt)


def unpack_matmulnbits(blob: MatMulNBitsBlob) -> tuple[np.ndarray, np.ndarray]:
    """Unsigned codes `[K, N]` and unpacked zero points `[N, k_blocks]` of a blob."""
    rows = blob.b.reshape(blob.n, -1)
    codes = unpack_rows(rows, blob.bits, blob.k_blocks * blob.block_size)[:, :blob.k]
    return np.ascontiguousarray(codes.T), blob.unpacked_zero_points()


def dequantize_matmulnbits(blob: MatMulNBitsBlob) -> np.ndarray:
    """The float32 `[K, N]` weight a blob stands for: `(q - zp) * scale`."""
    codes, zps = unpack_matmulnbits(blob)
    block = np.arange(blob.k) // blob.block_size
    diff = codes.astype(np.int32) - zps[:, block].T.astype(np.int32)
    return diff.astype(np.float32) * blob.scales[:, block].T


def packed_gemm_matmulnbits(a: np.ndarray, blob: MatMulNBitsBlob) -> np.ndarray:
    """`A @ dequant(B)` straight from the packed bytes, one block dequantised at a time.

    Matches onnxruntime's MatMulNBits (accuracy_level 0, fp32 compute) to rtol 1e-5 and
    atol 1e-5 * max|A| * sum_k |W[k, n]|: the two differ only in summation order.

    Args:
        a: float32 `[M, K]`.
        blob: the packed weight.

    Returns:
        float32 `[M, N]`.
    """
    a = np.ascontiguousarray(a, np.float32)
    if a.ndim != 2 or a.shape[1] != blob.k:
        raise ModelError("MatMulNBits.A", f"expected [M, {blob.k}], got {list(a.shape)}")
    out = np.empty((a.shape[0], blob.n), np.float32)
    _gemm_kernel(a, blob.b, blob.scales, np.ascontiguousarray(blob.unpacked_zero_points()),
                 blob.bits, blob.block_size, out)
    return out


# ----------------------------------------------------------------------------------------------
# ONNX INT4 / UINT4


@dataclass(frozen=True)
class Int4Raw:
    """What `onnx.helper.make_tensor(name, INT4 | UINT4, dims, raw, raw=True)` takes."""

    raw: bytes
    dims: tuple[int, ...]
    signed: bool

    @property
    def data_type_name(self) -> str:
        return "INT4" if self.signed else "UINT4"


def pack_int4(values: np.ndarray, signed: bool) -> np.ndarray:
    """Pack int4 values ([-8, 7], signed) or uint4 values ([0, 15]) two per byte, first
    element of each pair in the low nibble; an odd count is padded with a zero nibble."""
    v = np.asarray(values).ravel()
    lo, hi = (-8, 7) if signed else (0, 15)
    if v.size and (v.min() < lo or v.max() > hi):
        raise ModelError("int4", f"values must lie in [{lo}, {hi}]")
    nibbles = (v.astype(np.int16) & 0x0F).astype(np.uint8)  # two's complement nibble if signed
    return pack_rows(nibbles.reshape(1, -1), 4).ravel()


def unpack_int4(packed: np.ndarray, count: int, signed: bool) -> np.ndarray:
    """First `count` values of packed int4 (int8 out) or uint4 (uint8 out) bytes."""
    nibbles = unpack_rows(np.asarray(packed, np.uint8).reshape(1, -1), 4, count).ravel()
    if signed:
        return ((nibbles.astype(np.int8) ^ 8) - 8).astype(np.int8)  # sign-extend bit 3
    return nibbles


def int4_raw(values: np.ndarray, signed: bool) -> Int4Raw:
    """Raw bytes and dims of an ONNX INT4/UINT4 initializer holding `values`."""
    return Int4Raw(pack_int4(values, signed).tobytes(), tuple(np.shape(values)), signed)
