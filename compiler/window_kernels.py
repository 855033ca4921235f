"""numba kernels over sliding windows, for the backward passes numpy cannot vectorise well.

Windows are addressed by flat offsets into each zero- or fill-padded plane (one row per
(sample, channel)): `starts[p]` is where window `p` begins and `taps[k]` where its tap `k`
sits relative to that, both in elements of the flattened padded spatial axes. Offsets make one
kernel serve every spatial rank, stride and dilation; `window_offsets` computes them.

Kernels run in parallel over planes (no two planes share an output element) and are compiled
once per dtype and cached on disk.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit, prange


def window_offsets(extent: Sequence[int], out: Sequence[int], kernel: Sequence[int],
                   strides: Sequence[int], dilations: Sequence[int]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Flat window starts `[prod(out)]` and tap offsets `[prod(kernel)]` (both C order) of the
    windows `window_view` cuts from a padded plane of shape `extent`."""
    step = np.cumprod((1,) + tuple(extent[:0:-1]))[::-1]       # element stride of each axis
    starts = np.zeros((), dtype=np.intp)
    taps = np.zeros((), dtype=np.intp)
    for o, k, s, d, st in zip(out, kernel, strides, dilations, step):
        starts = np.add.outer(starts, np.arange(o) * (s * st))
        taps = np.add.outer(taps, np.arange(k) * (d * st))
    return starts.ravel(), taps.ravel()


@njit(cache=True, parallel=True)
def max_window_scatter(xp: np.ndarray, g: np.ndarray, starts: np.ndarray, taps: np.ndarray,
                       gxp: np.ndarray) -> None:
    """Max pooling's vjp: `gxp[r]` gets `g[r, p]` at the first maximum of window `p` of plane
    `xp[r]` (ties go to the earliest tap, as the forward's running max keeps them).

    xp: [planes, prod(extent)] padded inputs; g: [planes, prod(out)] output cotangents;
    starts, taps: from `window_offsets`; gxp: [planes, prod(extent)] written (each plane is
    zeroed here, while it is in cache, rather than by the caller).
    """
    for r in prange(xp.shape[0]):
        gxp[r, :] = 0
        for p in range(starts.size):
            base = starts[p]
            best = xp[r, base + taps[0]]
            arg = taps[0]
            for k in range(1, taps.size):
                v = xp[r, base + taps[k]]
                if v > best:
                    best = v
                    arg = taps[k]
            gxp[r, base + arg] += g[r, p]


@njit(cache=True, parallel=True)
def depthwise_window_vjp(xp: np.ndarray, g: np.ndarray, w: np.ndarray, starts: np.ndarray,
                         taps: np.ndarray, gxp: np.ndarray, gw: np.ndarray) -> None:
    """Depthwise conv's vjp (one filter per channel), one pass per (sample, channel) plane.

    xp: [N*C, prod(extent)] zero-padded input; g: [N*C, prod(out)] output cotangents;
    w: [C, prod(kernel)] filters; starts, taps: from `window_offsets`.
    Written: gxp [N*C, prod(extent)], the padded input gradient (each plane zeroed here, in
    cache); gw [N*C, prod(kernel)], each plane's share of the filter gradient (the caller sums
    over N), accumulated in float64.
    """
    channels = w.shape[0]
    for r in prange(xp.shape[0]):
        c = r % channels
        gxp[r, :] = 0
        for k in range(taps.size):
            off = taps[k]
            wk = w[c, k]
            acc = 0.0
            for p in range(starts.size):
                q = starts[p] + off
                gv = g[r, p]
                acc += xp[r, q] * gv
                gxp[r, q] += gv * wk
            gw[r, k] = acc
