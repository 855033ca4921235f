"""Entropy (KL-divergence) calibration: the clipping threshold of an activation whose
quantised distribution loses the least information, TensorRT's "entropy calibration"
(Migacz, "8-bit Inference with TensorRT", GTC 2017), which onnxruntime's `CalibrationMethod.
Entropy` also implements.

Over the |x| histogram of a `RangeStats` (the signed bins folded about 0), each candidate
threshold `i` bins wide gives
  P: the first i bins, with every count beyond the threshold added to the last one (clipping);
  Q: the same i bins merged into `levels` quantisation bins, each merged count spread evenly
     over the bins of P's slice that were non-empty;
and the threshold minimising KL(P || Q) is chosen. Candidates run from `levels` bins up to the
last non-empty bin.

The search scores every candidate in one numba pass over prefix sums (`_kl_sweep`,
O(levels) per candidate); the numpy version, O(bins) numpy calls per candidate, took 45 % of
silero's range search. The pass sums in another order than `kl_divergence`, so candidates
it scores within `TIE` of its minimum are rescored by `kl_divergence`: the chosen threshold
is exactly the numpy search's.
"""

from __future__ import annotations

import numpy as np

from compiler.activation_quant import RangeStats
from compiler.numba_cache import njit

EPS = 1e-12  # stands in for Q = 0 where P > 0 (only the clipped last bin can be so)
# KL terms are p * log(p / q) with p <= 1, |log| <= ~40 (q >= EPS) and prefix sums are of
# at most total * log(total): the two orders differ by ~1e-13 (measured on 300 random
# histograms up to 1e9 counts); candidates within 1e-8 of the least are rescored.
TIE = 1e-8


def folded_hist(stats: RangeStats) -> np.ndarray:
    """Counts of |x| in bins of the `RangeStats` bin width, from 0 upwards."""
    centre = len(stats.hist) // 2
    folded: np.ndarray = (stats.hist[centre:] + stats.hist[:centre][::-1]).astype(np.float64)
    return folded


def kl_divergence(hist: np.ndarray, i: int, levels: int) -> float:
    """KL(P || Q) of the threshold `i` bins wide (see the module docstring)."""
    kept = hist[:i]
    p = kept.copy()
    p[-1] += hist[i:].sum()
    full = kept > 0
    group = (np.arange(i) * levels) // i  # the quantisation bin of each histogram bin
    merged = np.bincount(group, weights=kept, minlength=levels)
    filled = np.bincount(group, weights=full, minlength=levels)
    q = np.where(full, merged[group] / np.maximum(filled[group], 1), 0.0)
    p, q = p / p.sum(), q / max(q.sum(), EPS)
    on = p > 0
    return float(np.sum(p[on] * np.log(p[on] / np.maximum(q[on], EPS))))


def candidates(hist: np.ndarray, levels: int) -> np.ndarray:
    """Threshold widths (in bins) to try: `levels` up to the last non-empty bin."""
    last = int(np.flatnonzero(hist)[-1]) + 1 if hist.any() else 1
    return np.arange(min(levels, last), last + 1)


def entropy_threshold(stats: RangeStats, levels: int = 128) -> float:
    """The |x| clipping threshold with the least KL divergence (an upper bin edge)."""
    hist = folded_hist(stats)
    width = 2.0 * stats.half_range / len(stats.hist)
    widths = candidates(hist, levels)
    return float(widths[_least_kl(hist, widths, levels)] * width)


def _least_kl(hist: np.ndarray, widths: np.ndarray, levels: int) -> int:
    """Index into `widths` of the first least `kl_divergence`, found by `_kl_sweep` and
    confirmed by `kl_divergence` among the near ties."""
    kls = _kl_sweep(hist, widths, levels)
    near = np.flatnonzero(kls <= kls.min() + TIE)
    if near.size == 1:
        return int(near[0])
    exact = [kl_divergence(hist, int(widths[k]), levels) for k in near]
    return int(near[int(np.argmin(exact))])


@njit(cache=True)
def _kl_sweep(hist: np.ndarray, widths: np.ndarray, levels: int) -> np.ndarray:
    """`kl_divergence(hist, i, levels)` for each `i` of `widths`, summed in another order:
    by group from prefix sums of counts, non-empty bins and h log h, O(levels) per `i`."""
    total, n = hist.sum(), hist.size
    counts, full, hlogh = np.zeros(n + 1), np.zeros(n + 1), np.zeros(n + 1)
    for j in range(n):
        h = hist[j]
        counts[j + 1] = counts[j] + h
        full[j + 1] = full[j] + (h > 0.0)
        hlogh[j + 1] = hlogh[j] + (h * np.log(h) if h > 0.0 else 0.0)
    kls = np.zeros(widths.size)
    for k in range(widths.size):
        if total > 0.0:
            kls[k] = _kl_one(hist, widths[k], levels, total, counts, full, hlogh) / total
    return kls


@njit(cache=True)
def _kl_one(hist: np.ndarray, i: int, levels: int, total: float, counts: np.ndarray,
            full: np.ndarray, hlogh: np.ndarray) -> float:
    """`total` * KL(P || Q) of one threshold `i` bins wide. In group g (bins b..e-1, those
    with g * i <= j * levels) every non-empty bin has q = merged / filled / kept, so its
    bins below the last add sum(h log h) - merged * log(total * max(q, EPS))."""
    kept = counts[i]
    qsum, acc = max(kept, EPS), 0.0  # Q's mass is what P keeps below the threshold
    q = 0.0
    for g in range(levels):
        b, e = (g * i + levels - 1) // levels, ((g + 1) * i + levels - 1) // levels
        merged = counts[e] - counts[b]
        if merged <= 0.0:
            continue
        q = merged / (full[e] - full[b]) / qsum
        if e == i:  # the last bin is scored below, with the clipped tail added
            merged, e = merged - hist[i - 1], i - 1
        acc += hlogh[e] - hlogh[b] - merged * np.log(total * max(q, EPS))
    p = hist[i - 1] + total - kept
    if p > 0.0:
        acc += p * np.log(p / total / max(q if hist[i - 1] > 0.0 else 0.0, EPS))
    return acc


def entropy_range(stats: RangeStats, bits: int, symmetric: bool) -> tuple[float, float]:
    """The observed range clipped to +-`entropy_threshold`: 2^(bits-1) levels per sign, or
    2^bits - 1 for a non-negative tensor quantised asymmetrically (all codes on one side)."""
    one_sided = not symmetric and stats.min >= 0.0
    t = entropy_threshold(stats, 2**bits - 1 if one_sided else 2 ** (bits - 1))
    if symmetric:
        amax = min(t, max(-stats.min, stats.max))
        return -amax, amax
    return max(stats.min, -t), min(stats.max, t)
