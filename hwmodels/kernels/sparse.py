"""Zero-skipping work per systolic fold: exact (from operand masks) and expected (from densities).

Model (stated once, used by both): a zero-skipping array has decoupled PEs with operand queues
(Eyeriss v2, Chen et al. JETCAS 2019; SCNN, Parashar et al. ISCA 2017): each PE's work in a fold
is its count of effectual operand pairs along the streamed dimension T, and the fold lasts as
long as its busiest PE (load imbalance counted), plus the dense fill/drain of the array (per
fold, or once per layer with a floor per fold when folds are pipelined:
`kernels.macarray_folds.fold_schedule`).

PE (i, j) and stream index t address the GEMM out[m, n] += a[m, k] * w[k, n] as SCALE-Sim maps
them (Samajdar et al., ISPASS 2020): os: (m, n, k); ws: (k, n, m); is: (k, m, n).
"""

from __future__ import annotations

import math

import numpy as np

from hwmodels.kernels.jit import njit

OS, WS, IS = 0, 1, 2
NONE, ZERO_GATING, SKIP_A, SKIP_W, SKIP_BOTH, STRUCTURED = 0, 1, 2, 3, 4, 5
# Bernstein's inequality, P(|X - tp| >= s) <= 2 exp(-s^2 / (2 (sd^2 + s / 3))), puts less than
# 1e-18 of a binomial's mass beyond s = 9.2 sd + 28 on either side: those terms are skipped
_TAIL_SDS, _TAIL_ABS = 9.2, 28.0


@njit(cache=True)
def is_skipping(mode: int) -> bool:
    """True for the modes that shorten folds by skipping zeros."""
    return mode == SKIP_A or mode == SKIP_W or mode == SKIP_BOTH


@njit(cache=True)
def expected_max_binomial(t: int, p: float, g: float) -> float:
    """E[max of g i.i.d. Binomial(t, p)]; g may be fractional (an expected group count).

    Exact order-statistic identity E[max] = sum_{x=0}^{t-1} (1 - F(x)^g), summed only where
    F is neither 0 nor 1 to within 1e-18 (see `_TAIL_SDS`); the pmf starts from lgamma.
    """
    if t <= 0 or p <= 0.0 or g <= 0.0:
        return 0.0
    if p >= 1.0:
        return float(t)
    sd = math.sqrt(t * p * (1.0 - p))
    lo = max(0, int(t * p - _TAIL_SDS * sd - _TAIL_ABS))
    hi = min(t, int(t * p + _TAIL_SDS * sd + _TAIL_ABS) + 1)
    log_pmf = (math.lgamma(t + 1.0) - math.lgamma(lo + 1.0) - math.lgamma(t - lo + 1.0)
               + lo * math.log(p) + (t - lo) * math.log1p(-p))
    pmf = math.exp(log_pmf)
    cdf = pmf
    total = float(lo)
    odds = p / (1.0 - p)
    for x in range(lo, hi):
        total += max(0.0, 1.0 - min(cdf, 1.0) ** g)
        pmf *= (t - x) / (x + 1.0) * odds
        cdf += pmf
    return total


@njit(cache=True)
def any_nonzero(p: float, count: float) -> float:
    """P(at least one of `count` Bernoulli(p) is nonzero)."""
    return 1.0 - (1.0 - p) ** count


@njit(cache=True)
def expected_tile_work(df: int, mode: int, r: int, c: int, t: int, pa: float,
                       pw: float) -> float:
    """Expected busiest-PE work of one fold using r rows and c columns, i.i.d. Bernoulli masks
    with densities pa (activations) and pw (weights).

    Exact where PEs of a row/column share one stream (their work is identical) and PEs are
    otherwise independent; skip_both with os treats the r*c PEs as independent (rows and
    columns share operands, so this slightly overstates the spread), and skip_both with ws/is
    counts rows holding at least one nonzero stationary operand in expectation.
    """
    if mode == SKIP_A:
        if df == IS:  # stationary activation: a PE idles for the fold iff its operand is zero
            return t * any_nonzero(pa, r * c)
        return expected_max_binomial(t, pa, r)  # os/ws: a row shares its activation stream
    if mode == SKIP_W:
        if df == WS:  # stationary weight
            return t * any_nonzero(pw, r * c)
        return expected_max_binomial(t, pw, c if df == OS else r)
    if df == OS:
        return expected_max_binomial(t, pa * pw, r * c)
    if df == WS:
        return expected_max_binomial(t, pa, r * any_nonzero(pw, c))
    return expected_max_binomial(t, pw, r * any_nonzero(pa, c))


@njit(cache=True)
def _effectual(mode: int, a: bool, w: bool) -> int:
    if mode == SKIP_A:
        return 1 if a else 0
    if mode == SKIP_W:
        return 1 if w else 0
    if mode == SKIP_BOTH:
        return 1 if (a and w) else 0
    return 1


@njit(cache=True)
def _pair(df: int, a_mask: np.ndarray, w_mask: np.ndarray, i: int, j: int,
          t: int) -> tuple[bool, bool]:
    # operand masks seen by PE (i, j) at stream step t, per the module's index mapping
    if df == OS:
        return a_mask[i, t], w_mask[t, j]
    if df == WS:
        return a_mask[t, i], w_mask[i, j]
    return a_mask[j, i], w_mask[i, t]


@njit(cache=True)
def tile_work(df: int, mode: int, a_mask: np.ndarray, w_mask: np.ndarray, r0: int, r1: int,
              c0: int, c1: int, t: int) -> int:
    """Exact busiest-PE effectual work over PEs [r0, r1) x [c0, c1) of one fold."""
    busiest = 0
    for i in range(r0, r1):
        for j in range(c0, c1):
            work = 0
            for s in range(t):
                a, w = _pair(df, a_mask, w_mask, i, j, s)
                work += _effectual(mode, a, w)
            busiest = max(busiest, work)
    return busiest


@njit(cache=True)
def data_driven_cycles(df: int, mode: int, a_mask: np.ndarray, w_mask: np.ndarray, rows: int,
                       cols: int, fill: int, rate: float, floor: float = 0.0,
                       last_free: bool = True) -> float:
    """Cycles of one GEMM from its operand masks: sum over folds of fill + busiest-PE work
    / rate (rate = MACs per PE per cycle at the precision), a fold lasting at least `floor`
    (pipelined folds, `kernels.macarray_folds.fold_schedule`) unless it is the last and
    `last_free` (no next tile to wait for)."""
    m, k = a_mask.shape
    n = w_mask.shape[1]
    sr, sc, t = (m, n, k) if df == OS else ((k, n, m) if df == WS else (k, m, n))
    total = 0.0
    for r0 in range(0, sr, rows):
        for c0 in range(0, sc, cols):
            work = tile_work(df, mode, a_mask, w_mask, r0, min(r0 + rows, sr), c0,
                             min(c0 + cols, sc), t)
            last = last_free and r0 + rows >= sr and c0 + cols >= sc
            total += fill + max(math.ceil(work / rate - 1e-9), 0.0 if last else floor)
    return total


@njit(cache=True)
def binomial_cdf(t: int, p: float, out: np.ndarray) -> None:
    """out[x] = P(Bin(t, p) <= x) for x in [0, out.size); the pmf starts from lgamma at the
    left edge of the mass (see `_TAIL_SDS`), so long streams never underflow."""
    if p <= 0.0 or t <= 0:
        out[:] = 1.0
        return
    if p >= 1.0:
        for x in range(out.size):
            out[x] = 1.0 if x >= t else 0.0
        return
    sd = math.sqrt(t * p * (1.0 - p))
    lo = max(0, int(t * p - _TAIL_SDS * sd - _TAIL_ABS))
    pmf = math.exp(math.lgamma(t + 1.0) - math.lgamma(lo + 1.0) - math.lgamma(t - lo + 1.0)
                   + lo * math.log(p) + (t - lo) * math.log1p(-p))
    odds, cdf = p / (1.0 - p), 0.0
    for x in range(out.size):
        if x >= lo:
            cdf = min(1.0, cdf + pmf)
            pmf *= (t - x) / (x + 1.0) * odds if x < t else 0.0
        out[x] = 1.0 if x >= t else cdf


@njit(cache=True)
def expected_max_lanes(t: np.ndarray, p: np.ndarray) -> float:
    """E[max_i X_i] for independent X_i ~ Binomial(t[i], p[i]) (lanes of unequal density).

    Order-statistic identity for non-negative integers: E[max] = sum_{x>=0} (1 - prod_i F_i(x)).
    """
    top = 0
    for i in range(t.size):
        top = max(top, t[i])
    if top == 0:
        return 0.0
    prod, cdf = np.ones(top), np.empty(top)
    for i in range(t.size):
        binomial_cdf(t[i], p[i], cdf)
        prod *= cdf
    return float((1.0 - prod).sum())


@njit(cache=True)
def lane_tile_work(mode: int, lane_p: np.ndarray, col_nnz: np.ndarray, k: int) -> float:
    """Expected busiest-PE work of one output-stationary fold from its lanes' activation
    densities `lane_p` (PE rows) and its columns' nonzero weight counts `col_nnz`.

    skip_activations: row i walks Bin(k, p_i); skip_weights: column j walks its nnz_j
    (known). skip_both: dense columns share row i's whole activation stream, so together
    they are one lane Bin(k, p_i) (exact); a pruned column j (nnz_j < k, e.g. N:M) meets a
    different subset of that stream, and is taken as its own independent lane Bin(nnz_j, p_i).
    """
    if mode == SKIP_W:
        return float(col_nnz.max())
    if mode == SKIP_A:
        return expected_max_lanes(np.full(lane_p.size, k, dtype=np.int64), lane_p)
    if mode != SKIP_BOTH:
        return float(k)
    pruned = col_nnz[col_nnz < k]
    dense = 1 if pruned.size < col_nnz.size else 0
    per_row = dense + pruned.size
    t = np.empty(lane_p.size * per_row, dtype=np.int64)
    p = np.empty(lane_p.size * per_row)
    for i in range(lane_p.size):
        p[i * per_row:(i + 1) * per_row] = lane_p[i]
        t[i * per_row:i * per_row + dense] = k
        t[i * per_row + dense:(i + 1) * per_row] = pruned
    return expected_max_lanes(t, p)


@njit(cache=True)
def lane_cycles(mode: int, lane_p: np.ndarray, col_nnz: np.ndarray, k: int, rows: int,
                cols: int, fill: int, rate: float, floor: float = 0.0,
                last_free: bool = True) -> float:
    """Expected cycles of one output-stationary GEMM group from per-lane statistics: every
    fold's own lanes and columns (its tile), fill + busiest-PE work / rate, at least `floor`
    (`floor` and `last_free` as in `data_driven_cycles`)."""
    total = 0.0
    for r0 in range(0, lane_p.size, rows):
        for c0 in range(0, col_nnz.size, cols):
            work = lane_tile_work(mode, lane_p[r0:r0 + rows], col_nnz[c0:c0 + cols], k)
            last = last_free and r0 + rows >= lane_p.size and c0 + cols >= col_nnz.size
            total += fill + max(math.ceil(work / rate - 1e-9), 0.0 if last else floor)
    return total
