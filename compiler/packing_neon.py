"""NEON split-lane packing: MatMulNBits' B in the order onnxruntime's ARM64 kernels repack it
to (`pack_neon`), and an `.npz` side file holding a blob in that order.

Low bits first within a byte, as every edgesim layout (`compiler.packing`); the split-lane
order only changes which element sits in which byte of a vector. The kernels are
`@njit(cache=True)` over arrays; the wrappers validate and reshape.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from compiler.atomic import atomic_open
from compiler.errors import ModelError
from compiler.formats import MATMULNBITS_BITS
from compiler.numba_cache import njit
from compiler.packing import MatMulNBitsBlob, check_codes, pack_rows, unpack_rows


@njit(cache=True)
def interleave_rows(codes: np.ndarray, bits: int, lane_bytes: int) -> np.ndarray:
    """NEON split-lane packing of rows whose length is a multiple of `lane_bytes * 8 // bits`:
    element `e` of each group goes to byte `e % lane_bytes`, slot `e // lane_bytes`."""
    group = lane_bytes * (8 // bits)
    rows, length = codes.shape
    out = np.zeros((rows, length * bits // 8), np.uint8)
    for r in range(rows):
        for i in range(length):
            g, e = i // group, i % group
            out[r, g * lane_bytes + e % lane_bytes] |= np.uint8(
                codes[r, i] << ((e // lane_bytes) * bits))
    return out


@njit(cache=True)
def deinterleave_rows(packed: np.ndarray, bits: int, lane_bytes: int) -> np.ndarray:
    """Inverse of `interleave_rows`."""
    group = lane_bytes * (8 // bits)
    mask = (1 << bits) - 1
    length = packed.shape[1] * 8 // bits
    out = np.empty((packed.shape[0], length), np.uint8)
    for r in range(packed.shape[0]):
        for i in range(length):
            g, e = i // group, i % group
            byte = packed[r, g * lane_bytes + e % lane_bytes]
            out[r, i] = (byte >> ((e // lane_bytes) * bits)) & mask
    return out


def neon_group(bits: int, lane_bytes: int = 16) -> int:
    """Elements per `lane_bytes`-byte vector: 32 for 4 bits in a 128-bit register."""
    return lane_bytes * 8 // bits


def pack_neon(codes: np.ndarray, bits: int, lane_bytes: int = 16) -> np.ndarray:
    """Pack unsigned codes `[R, L]` into NEON split-lane vectors `[R, ceil(L / G), lane_bytes]`.

    With `G = lane_bytes * 8 // bits` elements per vector, element `e` of a group goes to byte
    `e % lane_bytes` at bit `(e // lane_bytes) * bits`. For 4 bits and 128-bit lanes:

        byte:     0       1       2     ...    15
        bits 0-3: e0      e1      e2    ...    e15     <- vand(v, 0x0F) gives e0..e15
        bits 4-7: e16     e17     e18   ...    e31     <- vshr(v, 4)    gives e16..e31

    so one AND and one shift yield two int8 vectors of consecutive elements (for 2 bits four
    vectors: e0..15, e16..31, e32..47, e48..63). This is onnxruntime's ARM64 repacking of
    MatMulNBits B for its int8 (sdot) path (`SQ4BitGemmPackQuantBData`, sub-block 32 in
    mlas/lib/qnbitgemm_kernel_neon.cpp); `lane_bytes=8` gives its fp32-path variant
    (sub-block 16: byte i holds e_i and e_{i+8}). Rows are padded with zero codes to a whole
    number of groups; unpack with the original `L`.
    """
    codes = check_codes(codes, bits, "neon")
    if codes.ndim != 2 or bits not in MATMULNBITS_BITS:
        raise ModelError("neon", "needs 2-D codes of 2, 4 or 8 bits")
    group = neon_group(bits, lane_bytes)
    padded = np.zeros((codes.shape[0], -(-codes.shape[1] // group) * group), np.uint8)
    padded[:, :codes.shape[1]] = codes
    return interleave_rows(padded, bits, lane_bytes).reshape(codes.shape[0], -1, lane_bytes)


def unpack_neon(packed: np.ndarray, bits: int, length: int) -> np.ndarray:
    """Inverse of `pack_neon`: the first `length` codes of each row."""
    rows = np.asarray(packed, np.uint8)
    flat = rows.reshape(rows.shape[0], -1)
    return deinterleave_rows(flat, bits, rows.shape[-1])[:, :length]


def neon_from_matmulnbits(blob: MatMulNBitsBlob, lane_bytes: int = 16) -> np.ndarray:
    """A blob's B in NEON split-lane order, `[N, k_blocks, block_size * bits // 8]`.

    Vectors never straddle a block, so `block_size` must be a multiple of the group length.
    """
    group = neon_group(blob.bits, lane_bytes)
    if blob.block_size % group:
        raise ModelError("neon", f"block_size {blob.block_size} is not a multiple of {group}")
    codes = unpack_rows(blob.b.reshape(blob.n, -1), blob.bits, blob.k_blocks * blob.block_size)
    return pack_neon(codes, blob.bits, lane_bytes).reshape(blob.b.shape)


def write_neon_sidecar(path: str | os.PathLike[str], blob: MatMulNBitsBlob,
                       lane_bytes: int = 16) -> Path:
    """Write a blob's NEON-interleaved B with its scales and zero points to an `.npz` side
    file, atomically (temporary file in the same directory, then `os.replace`)."""
    path = Path(path)
    arrays = {"b_neon": neon_from_matmulnbits(blob, lane_bytes), "scales": blob.scales,
              "zero_points": blob.unpacked_zero_points(),
              "shape": np.array([blob.k, blob.n, blob.bits, blob.block_size, lane_bytes]),
              "has_zero_points": np.array(blob.zero_points is not None)}
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stubs mistype **kwds arrays
    return path


def read_neon_sidecar(path: str | os.PathLike[str]) -> MatMulNBitsBlob:
    """The MatMulNBits blob a NEON side file holds (B back in MatMulNBits order)."""
    with np.load(path) as z:
        k, n, bits, block_size, lane_bytes = (int(v) for v in z["shape"])
        k_blocks = -(-k // block_size)
        codes = unpack_neon(z["b_neon"].reshape(n, -1, lane_bytes), bits, k_blocks * block_size)
        zps = z["zero_points"] if bool(z["has_zero_points"]) else None
        return MatMulNBitsBlob(
            pack_rows(codes, bits).reshape(n, k_blocks, -1), z["scales"].copy(),
            None if zps is None else pack_rows(zps, bits), k, n, bits, block_size)
