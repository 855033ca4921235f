"""The MSE clip search of weight quantisation: per group of weights, the clip ratio of
`CLIP_RATIOS` whose asymmetric or symmetric integer grid gives the least squared error.

numba kernels; the arithmetic is that of `compiler.quantizers` (`scale_zero_point`,
`quantize_codes`, `dequantize_codes`) on each candidate, with candidates that provably cannot
win skipped.
"""

from __future__ import annotations

import itertools
import os
import threading

import numpy as np

from compiler.numba_cache import njit

CLIP_RATIOS = np.linspace(0.3, 1.0, 100)  # candidate clip ratios of the MSE search; 1.0 = minmax
CLIP_RATIOS.flags.writeable = False
TINY = np.float32(np.finfo(np.float32).tiny)  # scales below it are empty groups


def best_ratios(g: np.ndarray, qmin: float, qmax: float, symmetric: bool) -> np.ndarray:
    """Per group (row of `g`), the clip ratio of `CLIP_RATIOS` with the least squared error.

    Same arithmetic as `scale_zero_point`, `quantize_codes` and `dequantize_codes` applied to
    each candidate (float64 ranges, float32 codes and dequantisation, float64 error sums in
    element order), and the same choice as trying every candidate; but candidates that
    provably cannot win are skipped (`_search_row`): ~30 of the 100 are evaluated on a
    trained MiniLM's 32-value blocks, ~1 us per block in all (the exhaustive numba search:
    ~4 CPU-us; numpy's candidate-by-candidate version took 88 % of a W4 MiniLM quantisation).
    Tensors of `_THREAD_ROWS` groups or more are searched on several threads (`_threaded`).
    """
    g = np.ascontiguousarray(g, np.float32)
    args = (np.asarray(CLIP_RATIOS), float(qmin), float(qmax), symmetric, float(TINY))
    threads = min(search_threads(), -(-g.shape[0] // _CHUNK_ROWS))
    if threads < 2 or g.shape[0] < (_THREAD_ROWS if idle_core(threads) else _BUSY_ROWS):
        return _mse_ratio_kernel(g, *args)
    return _threaded(g, args, threads)


# Groups from which the search splits over threads: ~2.5 ms of work at ~1.2 us per 32-value
# group, some 25x a thread's start, when a core is idle; on a busy machine only from ~40 ms
# of work, where a piece held by a descheduled thread costs little (MiniLM's 37 linear
# weights, load 12: 1.1-1.3 s wall serial, 1.4-1.7 s on 2 threads). The pieces threads take
# in turn are `_CHUNK_ROWS` groups (~1.2 ms): a thread that other processes slow down takes
# fewer. Plain threads on a `nogil` kernel, not numba's parallel loop: with OpenMP's workers
# spinning between calls, those weights took 2x the CPU on a loaded 2-core machine (load 10:
# 0.70 vs 0.36 CPU-s); these threads cost no CPU.
_THREAD_ROWS = 2048
_BUSY_ROWS = 32768
_CHUNK_ROWS = 1024
_MAX_THREADS = 8


def idle_core(threads: int) -> bool:
    """Whether the machine's 1-minute load average leaves a core for a helper thread."""
    try:
        return os.getloadavg()[0] < threads  # ours counts: below it another runs at most
    except OSError:  # no load average on this platform
        return False


def search_threads() -> int:
    """Threads the search of a large tensor uses: the cores this process may run on (at
    most `_MAX_THREADS`)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, _MAX_THREADS))


def _threaded(g: np.ndarray, args: tuple[np.ndarray, float, float, bool, float],
              threads: int) -> np.ndarray:
    """`_mse_ratio_kernel` over pieces of `_CHUNK_ROWS` rows of `g`, taken in turn by this
    thread and `threads - 1` others (rows are independent, so the result is the serial one).

    This thread waits for the pieces, never for a helper to start: on a loaded machine a new
    thread may first run after this one has done every piece (waiting to join it cost MiniLM
    ~10 ms per weight at load 13); it then finds none left and ends."""
    n, starts = g.shape[0], itertools.count(0, _CHUNK_ROWS)
    best, pieces = np.empty(n), -(-n // _CHUNK_ROWS)
    done: list[int] = []  # one entry per finished piece
    errors: list[BaseException] = []
    settled = threading.Condition()

    def work() -> None:
        for start in starts:  # one shared count: each piece goes to one thread
            if start >= n:
                return
            try:
                best[start:start + _CHUNK_ROWS] = _mse_ratio_kernel(
                    g[start:start + _CHUNK_ROWS], *args)
            except BaseException as e:  # noqa: BLE001 -- raised again in the calling thread
                errors.append(e)
            with settled:
                done.append(start)
                settled.notify_all()
    for _ in range(threads - 1):
        threading.Thread(target=work, daemon=True).start()
    work()
    with settled:
        settled.wait_for(lambda: len(done) == pieces)
    if errors:
        raise errors[0]
    return best


@njit(cache=True)
def _candidate_grid(lo_raw: float, hi_raw: float, ratio: float, qmin: float, qmax: float,
                    symmetric: bool, tiny: float) -> tuple[np.float32, np.float32]:
    """`scale_zero_point` of the range `ratio * [lo_raw, hi_raw]` for one group."""
    lo, hi = min(lo_raw * ratio, 0.0), max(hi_raw * ratio, 0.0)
    scale = max(-lo, hi) / qmax if symmetric else (hi - lo) / (qmax - qmin)
    if scale < tiny:
        return np.float32(1.0), np.float32(0.0)
    zp = 0.0 if symmetric else min(max(np.rint(qmin - lo / scale), qmin), qmax)
    return np.float32(scale), np.float32(zp)


@njit(cache=True)
def _grid_residuals(row: np.ndarray, scale: np.float32, zp: np.float32, qmin: np.float32,
                    qmax: np.float32, out: np.ndarray, c: int) -> None:
    """`dequantize_codes(quantize_codes(row)) - row` into `out[c]`, all in float32: codes and
    zero points are integers below 2^24, so float32 holds them exactly (and the loop
    vectorises)."""
    for j in range(row.size):
        q = min(max(np.rint(row[j] / scale) + zp, qmin), qmax)
        out[c, j] = (q - zp) * scale - row[j]


# (lo_raw, hi_raw, qmin, qmax, symmetric, tiny): `_candidate_grid`'s arguments but the ratio
_Grid = tuple[float, float, float, float, bool, float]
# Candidates evaluated side by side: their float64 sums form independent add chains.
_LANES = 8


@njit(cache=True)
def _sum_squares(e: np.ndarray, out: np.ndarray) -> None:
    """`out[c]` = the sum of squares of row `c` of the 8-row `e`, each in float64 in element
    order: that order makes every candidate's sum, and so each tie, the same in any search
    order. Eight rows side by side give the CPU independent add chains (one row alone
    waits on each add in turn: 20 ns per 32-value row here, 8 rows take ~50 ns)."""
    e0 = e1 = e2 = e3 = e4 = e5 = e6 = e7 = 0.0
    for j in range(e.shape[1]):
        v0, v1, v2, v3 = (np.float64(e[0, j]), np.float64(e[1, j]), np.float64(e[2, j]),
                          np.float64(e[3, j]))
        v4, v5, v6, v7 = (np.float64(e[4, j]), np.float64(e[5, j]), np.float64(e[6, j]),
                          np.float64(e[7, j]))
        e0 += v0 * v0
        e1 += v1 * v1
        e2 += v2 * v2
        e3 += v3 * v3
        e4 += v4 * v4
        e5 += v5 * v5
        e6 += v6 * v6
        e7 += v7 * v7
    out[0], out[1], out[2], out[3] = e0, e1, e2, e3
    out[4], out[5], out[6], out[7] = e4, e5, e6, e7


@njit(cache=True, fastmath={"reassoc"})
def _clip_error(row: np.ndarray, scale: np.float32, zp: np.float32, qmin: np.float32,
                qmax: np.float32) -> float:
    """A lower bound of the squared error of one candidate grid: the squared residuals of
    the values beyond its ends alone. A value above the top `t = (qmax - zp) * scale`
    (float32, as `_grid_residuals` computes it) rounds to qmax or beyond (x / scale >= qmax
    to within float32 rounding), so its residual is exactly `t - x` there; the others add
    >= 0. Only the sum is reordered (`reassoc`), which `_PRUNE_MARGIN` covers."""
    top, bottom, total = (qmax - zp) * scale, (qmin - zp) * scale, 0.0
    for j in range(row.size):
        over = np.float64(max(row[j] - top, np.float32(0.0)))
        under = np.float64(max(bottom - row[j], np.float32(0.0)))
        total += over * over + under * under
    return total


# Relative margin on the pruning bound: a float64 sum of n non-negative terms, in any order,
# is within n * 2^-53 of the exact sum (1e-7 even for per-tensor groups of 10^9 values), so
# a candidate is pruned only if its bound exceeds the best by far more than both sums' error.
_PRUNE_MARGIN = 1.0 + 1e-6


@njit(cache=True, nogil=True)  # nogil: `_threaded` runs it on several threads at once
def _mse_ratio_kernel(g: np.ndarray, ratios: np.ndarray, qmin: float, qmax: float,
                      symmetric: bool, tiny: float) -> np.ndarray:
    """Per row of `g`, the ratio of the ascending `ratios` with the least squared error (the
    smallest of equal ones), on one thread."""
    best, errs = np.ones(g.shape[0]), np.empty(_LANES)
    buf = np.zeros((_LANES, g.shape[1]), np.float32)
    for i in range(g.shape[0]):
        best[i] = _search_row(g[i], ratios, qmin, qmax, symmetric, tiny, buf, errs)
    return best


@njit(cache=True)
def _row_range(row: np.ndarray) -> tuple[float, float]:
    """min and max of a finite row (a plain loop: numpy's NaN-aware reductions cost ~70 ns
    on a 32-value block, more than evaluating a candidate)."""
    lo = hi = row[0]
    for v in row:
        lo, hi = min(lo, v), max(hi, v)
    return np.float64(lo), np.float64(hi)


@njit(cache=True)
def _search_row(row: np.ndarray, ratios: np.ndarray, qmin: float, qmax: float,
                symmetric: bool, tiny: float, buf: np.ndarray, errs: np.ndarray) -> float:
    """The best ratio for one group, `_LANES` candidates at a time from the largest ratio
    down.

    Exact pruning: a candidate whose clipping error alone (`_clip_error`) exceeds the best
    error so far cannot win (`_cannot_win`). Ties go to the smaller ratio (`<=` while
    descending), as in the ascending exhaustive search with a strict `<`.
    """
    lo_raw, hi_raw = _row_range(row)
    if symmetric:
        hi_raw = max(-lo_raw, hi_raw)
        lo_raw = -hi_raw
    grid = (lo_raw, hi_raw, qmin, qmax, symmetric, tiny)
    best, best_err, top = 1.0, np.inf, ratios.size
    while top > 0:
        first = max(top - _LANES, 0)
        if best_err < np.inf and _cannot_win(row, ratios, grid, first, top, best_err):
            if symmetric:  # clipping only grows as the ratio shrinks (the scale shrinks)
                break
        else:
            for k in range(top - 1, first - 1, -1):
                scale, zp = _candidate_grid(lo_raw, hi_raw, ratios[k], qmin, qmax, symmetric,
                                            tiny)
                _grid_residuals(row, scale, zp, np.float32(qmin), np.float32(qmax), buf,
                                top - 1 - k)
            _sum_squares(buf, errs)
            for c in range(top - first):
                if errs[c] <= best_err:
                    best_err, best = errs[c], ratios[top - 1 - c]
        top = first
    return best


@njit(cache=True)
def _cannot_win(row: np.ndarray, ratios: np.ndarray, grid: _Grid, first: int, top: int,
                best_err: float) -> bool:
    """Whether every candidate `first:top` clips more than `best_err` (symmetric: the top
    one clips least, so it alone decides; asymmetric grids move their zero point)."""
    lo_raw, hi_raw, qmin, qmax, symmetric, tiny = grid
    for k in range(top - 1, first - 1, -1):
        scale, zp = _candidate_grid(lo_raw, hi_raw, ratios[k], qmin, qmax, symmetric, tiny)
        if _clip_error(row, scale, zp, np.float32(qmin), np.float32(qmax)) \
                <= best_err * _PRUNE_MARGIN:
            return False
        if symmetric:
            return True
    return True
