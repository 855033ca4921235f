"""Sliding windows laid out so that every kernel tap reads one contiguous run, and the numba
kernels that sweep them: depthwise conv (forward and vjp), max-pool's vjp, and im2col with its
adjoint col2im for the GEMM convs.

`PlaneWindows` copies each (sample, channel) plane, padded, into a *polyphase* layout: an
axis with stride s is split into its s phases, so that consecutive windows read consecutive
elements whatever the stride. All windows of a plane are then one run on a grid whose rows
have the plane's pitch: tap k of window p reads element `taps[k] + p`. Grid positions past
the end of an output row are padding; the kernels compute them (their cotangents are zero)
rather than branch, so every inner loop is one unit-stride loop over the whole plane, which
LLVM vectorises. One layout serves every spatial rank, stride and dilation.

Kernels run in parallel over planes (no two planes share an output element) and are compiled
once per dtype and cached on disk. They release the GIL: HAWQ's backward passes call them
while its worker threads run forward passes and observers (`compiler.sensitivity.forward_ahead`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property, lru_cache
from itertools import product

import numba
import numpy as np
from numba import prange

from compiler.numba_cache import njit

Ints = tuple[int, ...]

# Reassociation lets LLVM vectorise the dot products; NaN and infinity semantics are kept.
_FAST = {"reassoc", "contract"}


@dataclass(frozen=True)
class PlaneWindows:
    """The windows over the trailing axes of `[..., *spatial]` tensors.

    The padded plane spans `extent` per axis and starts `begins` elements before the input
    (input beyond the extent is cut off, as ceil-mode pooling can); window `o` of an axis
    starts at `o * stride` of the padded plane and its taps are `dilation` apart.
    """

    spatial: Ints
    begins: Ints
    extent: Ints
    kernel: Ints
    strides: Ints
    dilations: Ints
    out: Ints

    @cached_property
    def _walked(self) -> tuple[Ints, ...]:
        """(spatial, begins, extent, kernel, strides, dilations, out) over the axes the layout
        walks: an axis where input, padded plane, window and output all have one element
        moves no flat position, but walking it would cut every output row to one element (a
        1-D conv written as [N, C, L, 1] with a (k, 1) kernel: L rows of one element each,
        magika's 512-long conv 1.7x slower in im2col + col2im). At least one axis stays."""
        fields = (self.spatial, self.begins, self.extent, self.kernel, self.strides,
                  self.dilations, self.out)
        unit = [all(f[a] == 1 for f in (self.spatial, self.extent, self.kernel, self.out))
                and self.begins[a] == 0 for a in range(len(self.spatial))]
        axes = [a for a, u in enumerate(unit) if not u] or [len(unit) - 1]
        return tuple(tuple(f[a] for a in axes) for f in fields)

    @cached_property
    def _lengths(self) -> Ints:
        """Elements per phase along each walked axis."""
        _, _, extent, _, strides, _, _ = self._walked
        return tuple(-(-e // s) for e, s in zip(extent, strides))

    @cached_property
    def _block(self) -> int:
        return int(np.prod(self._lengths))

    @cached_property
    def taps(self) -> np.ndarray:
        """Flat offset of each tap (C order) from its window's grid position."""
        _, _, _, kernel, strides, dilations, _ = self._walked
        n, lengths = len(kernel), self._lengths
        pitch = [int(np.prod(lengths[a + 1:])) for a in range(n)]
        phase = [int(np.prod(strides[a + 1:])) * self._block for a in range(n)]
        offsets = [sum((t * d % s) * f + (t * d // s) * p
                       for t, d, s, f, p in zip(tap, dilations, strides, phase, pitch))
                   for tap in product(*map(range, kernel))]
        return np.asarray(offsets, dtype=np.intp)

    @cached_property
    def run(self) -> int:
        """Grid positions per plane: the output rows at the plane's pitch."""
        return self._walked[6][0] * int(np.prod(self._lengths[1:]))

    @cached_property
    def plane_size(self) -> int:
        """Elements per laid-out plane, with room for the last grid row's overhang."""
        size = int(np.prod(self._walked[4])) * self._block
        return max(size, int(self.taps.max()) + self.run)

    @cached_property
    def _where(self) -> np.ndarray:
        """Flat laid-out position of each input element (C order); -1 where the extent cuts
        the input off."""
        spatial, begins, extent, _, strides, _, _ = self._walked
        lengths = self._lengths
        where, inside = np.zeros((), dtype=np.intp), np.ones((), dtype=bool)
        for a, (b, i, e, s) in enumerate(zip(begins, spatial, extent, strides)):
            padded = np.arange(i) + b
            phase = int(np.prod(strides[a + 1:])) * self._block
            pos = (padded % s) * phase + (padded // s) * int(np.prod(lengths[a + 1:]))
            where = np.add.outer(where, pos)
            inside = np.logical_and.outer(inside, padded < e)
        return np.where(inside, where, -1).ravel()

    def planes(self, x: np.ndarray, fill: float, dtype: np.dtype) -> np.ndarray:
        """`x` `[..., *spatial]` padded with `fill` and laid out: `[planes, plane_size]`."""
        count = int(np.prod(x.shape[:x.ndim - len(self.spatial)]))
        xp = np.empty((count, self.plane_size), dtype=dtype)
        scatter_planes(np.ascontiguousarray(x, dtype=dtype).reshape(count, -1), self._where,
                       xp.dtype.type(fill), xp)
        return xp

    def unplanes(self, gxp: np.ndarray, lead: Sequence[int]) -> np.ndarray:
        """Adjoint of `planes` (for fill 0): `[planes, plane_size]` -> `[*lead, *spatial]`."""
        gx = np.empty((gxp.shape[0], self._where.size), dtype=gxp.dtype)
        gather_planes(gxp, self._where, gx)
        return gx.reshape(tuple(lead) + self.spatial)

    @cached_property
    def row_starts(self) -> np.ndarray:
        """Grid position of the first window of each output row (C order over the walked
        `out[:-1]`); a row's windows follow at consecutive positions."""
        out = self._walked[6]
        pitch = [int(np.prod(self._lengths[a + 1:])) for a in range(len(out))]
        starts = np.zeros((), dtype=np.intp)
        for o, p in zip(out[:-1], pitch[:-1]):
            starts = np.add.outer(starts, np.arange(o) * p)
        return starts.ravel()

    def columns(self, x: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """im2col of `x` `[N, C, *spatial]` (zero padding): `[C*prod(kernel), N*prod(out)]`,
        row c*K + k holding tap k of channel c at every output position, batch-major."""
        n, c = x.shape[:2]
        cols = np.empty((c * len(self.taps), n * int(np.prod(self.out))), dtype=dtype)
        sweep_columns(self.planes(x, 0, dtype), cols, self.taps, self.row_starts, n, True)
        return cols

    def add_columns(self, cols: np.ndarray, lead: Sequence[int]) -> np.ndarray:
        """Adjoint of `columns`: col2im, every column summed back onto the input positions
        it read; `[*lead, *spatial]` with lead = (N, C)."""
        gxp = np.empty((int(np.prod(lead)), self.plane_size), dtype=cols.dtype)
        sweep_columns(gxp, cols, self.taps, self.row_starts, lead[0], False)
        return self.unplanes(gxp, lead)

    def grid(self, g: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """Output-shaped `g` `[..., *out]` on the grid, zero at the padding: `[planes, run]`."""
        count = int(np.prod(g.shape[:g.ndim - len(self.out)]))
        grid = np.zeros((count, self.run), dtype=dtype)
        self.outputs(grid)[...] = g.reshape((count,) + self._walked[6])
        return grid

    def outputs(self, grid: np.ndarray) -> np.ndarray:
        """The output positions of a `[planes, run]` grid: a `[planes, *out]` view over the
        walked axes (reshape it to `out`: the same elements in the same order)."""
        out = self._walked[6]
        rows = grid.reshape((grid.shape[0], out[0]) + self._lengths[1:])
        return rows[(slice(None), slice(None)) + tuple(slice(0, o) for o in out[1:])]


@contextmanager
def serial() -> Iterator[None]:
    """These kernels' parallel loops on one thread (of the calling thread) while inside.

    A batch-1 analysis calls them thousands of times on small planes; their threads then wait
    at each loop's barrier longer than they work, worst on a CPU shared with other processes
    (PP-OCR's depthwise layers: `planes` 1.0 ms on one thread vs 1.5-1.7 ms on two, and
    ~7 ms a call in a compile profiled on the loaded 2-core machine). Results are identical:
    every loop iteration writes its own rows.
    """
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)


@lru_cache(maxsize=128)
def plane_windows(spatial: Ints, begins: Ints, extent: Ints, kernel: Ints, strides: Ints,
                  dilations: Ints, out: Ints) -> PlaneWindows:
    """`PlaneWindows(...)`, built once per geometry: a model's layers ask for the same ones
    on every pass, and the layout's index arrays cost more to build than to use."""
    return PlaneWindows(spatial, begins, extent, kernel, strides, dilations, out)


@njit(cache=True, parallel=True, nogil=True)
def scatter_planes(x: np.ndarray, where: np.ndarray, fill: float, xp: np.ndarray) -> None:
    """`xp[r]` = `fill` with `x[r, i]` at `where[i]` (skipping where it is -1)."""
    for r in prange(x.shape[0]):
        xr, pr = x[r], xp[r]
        pr[:] = fill
        for i in range(where.size):
            if where[i] >= 0:
                pr[where[i]] = xr[i]


@njit(cache=True, parallel=True, nogil=True)
def gather_planes(xp: np.ndarray, where: np.ndarray, x: np.ndarray) -> None:
    """`x[r, i]` = `xp[r, where[i]]`, or 0 where it is -1: the adjoint of `scatter_planes`."""
    for r in prange(x.shape[0]):
        xr, pr = x[r], xp[r]
        for i in range(where.size):
            xr[i] = pr[where[i]] if where[i] >= 0 else 0


@njit(cache=True, nogil=True, fastmath=_FAST)
def _add(x: np.ndarray, y: np.ndarray) -> None:
    """y += x (unit-stride slices: vector code)."""
    for j in range(x.size):
        y[j] += x[j]


@njit(cache=True, parallel=True, nogil=True, fastmath=_FAST)
def sweep_columns(planes: np.ndarray, cols: np.ndarray, taps: np.ndarray,
                  row_starts: np.ndarray, batch: int, to_columns: bool) -> None:
    """im2col and its adjoint, one walk over (plane, tap, output row).

    planes: [N*C, plane_size] laid out (plane b*C + c); cols: [C*K, N*P], where column b*P + p
    of row c*K + k is tap k of output position p of plane b*C + c. `to_columns` copies planes
    into cols; otherwise (col2im) each plane is zeroed, then every column added back where it
    was read.
    """
    channels, k_taps = planes.shape[0] // batch, taps.size
    positions = cols.shape[1] // batch
    width = positions // row_starts.size
    for q in prange(planes.shape[0]):
        b, c = q // channels, q % channels
        x = planes[q]
        if not to_columns:
            x[:] = 0
        for k in range(k_taps):
            row = cols[c * k_taps + k]
            for i in range(row_starts.size):
                lo, at = taps[k] + row_starts[i], b * positions + i * width
                if to_columns:
                    row[at:at + width] = x[lo:lo + width]
                else:
                    _add(row[at:at + width], x[lo:lo + width])


@njit(cache=True, parallel=True, nogil=True, fastmath=_FAST)
def max_window_scatter(xp: np.ndarray, g: np.ndarray, taps: np.ndarray, gxp: np.ndarray
                       ) -> None:
    """Max pooling's vjp: `gxp[r]` gets `g[r, p]` at the first maximum of window `p` of plane
    `xp[r]` (ties go to the earliest tap, as the forward's running max keeps them).

    xp: [planes, plane_size] laid-out inputs; g: [planes, run] output cotangents on the grid;
    taps: `PlaneWindows.taps`; gxp: [planes, plane_size] written (each plane is zeroed here,
    while it is in cache, rather than by the caller).
    """
    run = g.shape[1]
    for r in prange(xp.shape[0]):
        x, gx = xp[r], gxp[r]
        gx[:] = 0
        best = x[taps[0]:taps[0] + run].copy()
        arg = np.full(run, taps[0])
        for k in range(1, taps.size):
            xs = x[taps[k]:taps[k] + run]
            tk = taps[k]
            for p in range(run):
                if xs[p] > best[p]:
                    best[p] = xs[p]
                    arg[p] = tk
        gr = g[r]
        for p in range(run):
            gx[p + arg[p]] += gr[p]


@njit(cache=True, parallel=True, nogil=True, fastmath=_FAST)
def depthwise_window_forward(xp: np.ndarray, w: np.ndarray, taps: np.ndarray, y: np.ndarray
                             ) -> None:
    """Conv with one input channel per group (depthwise, with M = len(y) / len(xp) filters
    per channel), one pass per output plane.

    xp: [N*C, plane_size] laid-out input; w: [C*M, prod(kernel)] filters; taps:
    `PlaneWindows.taps`. Written: y [N*C*M, run], the outputs on the grid; output plane r
    reads input plane r // M through filter r % (C*M).
    """
    mult = y.shape[0] // xp.shape[0]
    run = y.shape[1]
    for r in prange(y.shape[0]):
        x, wr, yr = xp[r // mult], w[r % w.shape[0]], y[r]
        yr[:] = 0
        for k in range(taps.size):
            xs = x[taps[k]:taps[k] + run]
            wk = wr[k]
            for p in range(run):
                yr[p] += xs[p] * wk


@njit(cache=True, parallel=True, nogil=True, fastmath=_FAST)
def depthwise_window_vjp(xp: np.ndarray, g: np.ndarray, w: np.ndarray, taps: np.ndarray,
                         gxp: np.ndarray, gw: np.ndarray) -> None:
    """The vjp of `depthwise_window_forward`, one pass per input plane.

    xp: [N*C, plane_size] laid-out input; g: [N*C*M, run] output cotangents on the grid (zero
    at its padding); w: [C*M, prod(kernel)] filters; taps: `PlaneWindows.taps`.
    Written: gxp [N*C, plane_size], the input gradient, laid out (each plane zeroed here, in
    cache); gw [N*C*M, prod(kernel)], each output plane's share of the filter gradient (the
    caller sums over N), accumulated in gw's dtype: with `_FAST`'s reassociation the sum runs
    in vector lanes (float32: 1.3-2x faster than a float64 accumulator, within 3e-7 of it on
    mobilenet_v2's planes), so no long serial chain of float32 rounding builds up.
    """
    mult = g.shape[0] // xp.shape[0]
    run = g.shape[1]
    for q in prange(xp.shape[0]):
        x, gx = xp[q], gxp[q]
        gx[:] = 0
        for r in range(q * mult, (q + 1) * mult):
            wr, gr = w[r % w.shape[0]], g[r]
            for k in range(taps.size):
                xs = x[taps[k]:taps[k] + run]
                gxs = gx[taps[k]:taps[k] + run]
                wk = wr[k]
                gw[r, k] = 0
                acc = gw[r, k]  # gw's dtype
                for p in range(run):
                    acc += xs[p] * gr[p]
                    gxs[p] += gr[p] * wk
                gw[r, k] = acc
