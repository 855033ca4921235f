"""numba kernels of the activation range choice (`compiler.range_choice`)."""

from __future__ import annotations

import numpy as np

from compiler.numba_cache import njit


@njit(cache=True)
def _rounding_error(x: np.ndarray, scale: np.float32, lo: np.float32, hi: np.float32,
                    out: np.ndarray) -> None:  # pragma: no cover -- compiled
    # the numpy sequence x / scale, rint, clip, * scale, - x, in float32 and in one pass;
    # NaN stays NaN as np.clip leaves it (both comparisons are false)
    for i in range(x.size):
        d = np.rint(x[i] / scale)
        if d < lo:
            d = lo
        elif d > hi:
            d = hi
        out[i] = d * scale - x[i]


def rounding_error(x: np.ndarray, scale: np.float32, lo: int, hi: int) -> np.ndarray:
    """`clip(rint(x / scale), lo, hi) * scale - x` in float32, element by element exactly
    as numpy's float32 ufuncs compute it (IEEE division and rounding half to even), in one
    pass instead of five."""
    flat = np.ascontiguousarray(x, np.float32).reshape(-1)
    out = np.empty_like(flat)
    _rounding_error(flat, np.float32(scale), np.float32(lo), np.float32(hi), out)
    return out.reshape(np.shape(x))
