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
"""

from __future__ import annotations

import numpy as np

from compiler.quantizers import RangeStats

EPS = 1e-12  # stands in for Q = 0 where P > 0 (only the clipped last bin can be so)


def folded_hist(stats: RangeStats) -> np.ndarray:
    """Counts of |x| in bins of the `RangeStats` bin width, from 0 upwards."""
    centre = len(stats.hist) // 2
    return (stats.hist[centre:] + stats.hist[:centre][::-1]).astype(np.float64)


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
    kls = [kl_divergence(hist, int(i), levels) for i in widths]
    return float(widths[int(np.argmin(kls))] * width)


def entropy_range(stats: RangeStats, bits: int, symmetric: bool) -> tuple[float, float]:
    """The observed range clipped to +-`entropy_threshold`: 2^(bits-1) levels per sign, or
    2^bits - 1 for a non-negative tensor quantised asymmetrically (all codes on one side)."""
    one_sided = not symmetric and stats.min >= 0.0
    t = entropy_threshold(stats, 2**bits - 1 if one_sided else 2 ** (bits - 1))
    if symmetric:
        amax = min(t, max(-stats.min, stats.max))
        return -amax, amax
    return max(stats.min, -t), min(stats.max, t)
