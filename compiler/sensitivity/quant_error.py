"""`||Q_b(W) - W||^2` for every bit choice of one weight, without the quantised copies.

`proxy.quant_error` spells the error out: quantise (codes), dequantise, subtract in float64,
sum. Every sensitivity method and the allocator's settle rule ask for it for every layer and
bit choice, i.e. L x B weight-sized codes, dequantised arrays and float64 differences (2.7 s
of PP-OCR's analysis, 1.9 s of resnet18's, asked twice per compile). Here one numba pass per
(grid, bits) computes the same sum from the groups (rows sharing a scale): the group ranges
once per grid, the scales by `quantizers.scale_zero_point` (the same rounding as emission),
codes and dequantisation in float32 as `quantize_codes` / `dequantize_codes`, the difference
in float64. Only the order of the float64 sum differs (sequential, not BLAS's).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from compiler.numba_cache import njit
from compiler.quantizers import _to_groups, code_range, scale_zero_point

GridOf = Callable[[int], tuple[str, int, int | None]]  # bits -> (granularity, axis, block)


def bit_errors(w: np.ndarray, bits: Sequence[int], grid_of: GridOf) -> np.ndarray | None:
    """The squared quantisation error of `w` at each of `bits` (float64 [B]), on the grid
    `grid_of(b)` (symmetric, min-max ranges: `fake_quant_weight`'s defaults); None if `w` is
    empty or not finite (the caller's full path raises the error that names it)."""
    w32 = np.asarray(w, np.float32)
    if w32.size == 0:
        return None
    out, groups = np.empty(len(bits)), {}
    for i, b in enumerate(bits):
        grid = grid_of(int(b))
        if grid not in groups:
            groups[grid] = _groups_and_amax(w32, *grid)
        g, amax = groups[grid]
        if not np.isfinite(amax).all():
            return None
        scale, _ = scale_zero_point(-amax, amax, int(b), True)
        out[i] = _grid_sq_error(g, scale, np.float32(code_range(int(b), True)[1]))
    return out


def _groups_and_amax(w: np.ndarray, granularity: str, axis: int, block_size: int | None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The rows of `w` that share a scale (C-contiguous) and their max |w| (as
    `quantizers._group_ranges`: max(max, -min), NaN-propagating)."""
    g, _ = _to_groups(w, granularity, axis, block_size)
    g = np.ascontiguousarray(g)
    return g, np.maximum(g.max(axis=1), -g.min(axis=1))


@njit(cache=True)
def _grid_sq_error(g: np.ndarray, scale: np.ndarray, qmax: np.float32) -> float:
    """sum over rows i, columns j of (float32 code * scale[i] - g[i, j])^2, the difference in
    float64; code = clip(rint(g / scale), -qmax, qmax) in float32 (zero point 0)."""
    total = 0.0
    for i in range(g.shape[0]):
        s = scale[i]
        for j in range(g.shape[1]):
            q = min(max(np.rint(g[i, j] / s), -qmax), qmax)
            d = np.float64(q * s) - np.float64(g[i, j])
            total += d * d
    return total
