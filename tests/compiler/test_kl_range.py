"""Entropy (KL) calibration: the chosen threshold against a brute-force search written from
the raw samples, and its behaviour on distributions whose right answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from compiler import activation_quant as Q
from compiler.kl_range import entropy_range, entropy_threshold

RNG = np.random.default_rng(7)


def _brute_force_kl(x: np.ndarray, threshold: float, bins: int, levels: int) -> float:
    """KL(P || Q) straight from the samples: P = histogram of min(|x|, threshold) in `bins`
    equal bins (so clipped values land in the last), Q = P's unclipped counts merged into
    `levels` groups and spread over each group's non-empty bins."""
    a = np.abs(x.astype(np.float64))
    width = threshold / bins
    inside = np.floor(a[a < threshold] / width).astype(int)
    kept = np.bincount(inside, minlength=bins)[:bins].astype(float)
    p = kept.copy()
    p[-1] += np.count_nonzero(a >= threshold)
    q = np.zeros(bins)
    for j in range(levels):
        members = [b for b in range(bins) if (b * levels) // bins == j]
        full = [b for b in members if kept[b] > 0]
        for b in full:
            q[b] = kept[members].sum() / len(full)
    p, q = p / p.sum(), q / q.sum()
    on = p > 0
    return float(np.sum(p[on] * np.log(p[on] / np.maximum(q[on], 1e-12))))


@pytest.mark.parametrize("seed", [0, 1])
def test_threshold_is_the_brute_force_kl_minimum(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.laplace(0, 1, 8_000), rng.normal(0, 15, 12)]).astype(np.float32)
    stats = Q.range_stats(x, nbins=256)
    width = 2 * stats.half_range / 256
    levels = 16
    last = int(np.ceil(np.abs(x).max() / width))
    grid = np.arange(levels, last + 1)
    kls = [_brute_force_kl(x, i * width, int(i), levels) for i in grid]
    best = grid[int(np.argmin(kls))] * width
    assert entropy_threshold(stats, levels) == pytest.approx(best)


def test_no_outliers_keep_nearly_the_whole_range() -> None:
    x = RNG.uniform(-1, 1, 50_000).astype(np.float32)
    t = entropy_threshold(Q.range_stats(x), 128)
    assert 0.9 <= t <= 1.0 + 2 / 1024  # within a bin of max|x|


def test_an_outlier_is_clipped_and_the_bulk_kept() -> None:
    x = np.concatenate([RNG.standard_normal(100_000), [400.0]]).astype(np.float32)
    stats = Q.range_stats(x)
    lo, hi = entropy_range(stats, 8, symmetric=True)
    assert 3.0 <= hi <= 100.0 and lo == -hi
    ent = Q.activation_params(stats, 8, "entropy", symmetric=True)
    mm = Q.activation_params(stats, 8, "minmax", symmetric=True)
    bulk = x[:-1]

    def err(p: Q.ActivationParams) -> float:
        return float(np.mean((Q.fake_quant_activation(bulk, p.scale, p.zero_point, 8, True)
                              - bulk) ** 2))
    # a 400 sigma outlier wastes minmax's codes; the 2048-bin histogram spans 512, so the
    # least threshold (128 bins of 0.5) is 64: the gain is bounded by that resolution
    assert err(ent) < 0.1 * err(mm)


def test_non_negative_tensors_use_every_code_on_one_side() -> None:
    x = np.maximum(RNG.standard_normal(50_000), 0).astype(np.float32)  # a ReLU output
    stats = Q.range_stats(x)
    lo, hi = entropy_range(stats, 8, symmetric=False)
    assert lo == 0.0 and 1.5 < hi < x.max()
    p = Q.activation_params(stats, 8, "entropy", symmetric=False)
    assert p.zero_point == 0 and p.scale == pytest.approx(hi / 255, rel=1e-6)


def _reference_kl(hist: np.ndarray, i: int, levels: int) -> float:
    """KL(P || Q) of threshold `i` from the runs of bins each group covers: P = the first
    `i` bins with the tail added to the last; Q = each group's count spread over its
    non-empty bins."""
    p = hist[:i].copy()
    p[-1] += hist[i:].sum()
    group = (np.arange(i) * levels) // i
    starts = np.flatnonzero(np.diff(group, prepend=-1))  # groups are runs of bins
    full = hist[:i] > 0
    spread = np.add.reduceat(hist[:i], starts) / np.maximum(np.add.reduceat(full, starts), 1)
    q = np.where(full, np.repeat(spread, np.diff(starts, append=i)), 0.0)
    p, q = p / p.sum(), q / max(q.sum(), 1e-12)
    on = p > 0
    return float(np.sum(p[on] * np.log(p[on] / np.maximum(q[on], 1e-12))))


def _reference_threshold(hist: np.ndarray, width: float, levels: int) -> float:
    """The first least-KL candidate, `levels` bins up to the last non-empty bin."""
    last = int(np.flatnonzero(hist)[-1]) + 1
    grid = np.arange(min(levels, last), last + 1)
    kls = [_reference_kl(hist, int(i), levels) for i in grid]
    return float(grid[int(np.argmin(kls))] * width)


def _stats_of_folded(folded: np.ndarray) -> Q.RangeStats:
    """RangeStats whose |x| histogram is `folded` (all counts on the positive side)."""
    hist = np.concatenate([np.zeros(len(folded), np.int64), folded.astype(np.int64)])
    return Q.RangeStats(int(folded.sum()), 0.0, float(len(folded)), float(len(folded)), hist)


def _random_folded(rng: np.random.Generator, bins: int) -> np.ndarray:
    """Decaying counts with random holes, a spike and far outliers (realistic and ragged)."""
    decay = rng.exponential(500, bins) * np.exp(-np.arange(bins) / rng.uniform(5, bins))
    h = np.floor(decay) * (rng.random(bins) < rng.uniform(0.3, 1.0))
    h[rng.integers(0, bins // 4)] += rng.integers(0, 5000)
    h[rng.integers(bins // 2, bins, 3)] += 1
    return h


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("levels", [8, 128, 255])
def test_threshold_equals_the_reference_search(seed: int, levels: int) -> None:
    rng = np.random.default_rng(seed)
    folded = _random_folded(rng, int(rng.choice([128, 320, 512])))
    stats = _stats_of_folded(folded)  # bin width 1
    assert entropy_threshold(stats, levels) == _reference_threshold(folded, 1.0, levels)


@pytest.mark.parametrize("levels", [8, 128])
def test_exact_ties_choose_the_first_candidate(levels: int) -> None:
    # all mass in the first bins plus one far count: every threshold below the far count
    # clips the same mass into an empty bin, so those candidates tie exactly
    folded = np.zeros(512)
    folded[[0, 3, 400]] = [1000, 5, 1]
    stats = _stats_of_folded(folded)
    assert entropy_threshold(stats, levels) == _reference_threshold(folded, 1.0, levels)
    assert entropy_threshold(stats, levels) == levels  # the first candidate


@pytest.mark.parametrize("seed", range(3))
def test_huge_counts_clamp_q_like_the_reference(seed: int) -> None:
    # a 1e13 bulk makes a lone count's Q fall below 1e-12: the clamp must act the same way
    rng = np.random.default_rng(seed)
    folded = np.zeros(384)
    folded[:40] = np.floor(1e13 * np.exp(-np.arange(40) / 6.0))
    folded[rng.integers(40, 384, 12)] = 1
    stats = _stats_of_folded(folded)
    assert entropy_threshold(stats, 64) == _reference_threshold(folded, 1.0, 64)
