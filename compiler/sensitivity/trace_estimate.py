"""Hutchinson trace estimates: per-probe samples, their mean and relative standard error, over
one sample set (`estimate`) or over calibration chunks probed apart (`pooled_estimate`, all
chunks; `sampled_estimate`, the first of them standing for all)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

MIN_DOF = 8  # degrees of freedom of the pooled variance before the first stopping test


@dataclass(frozen=True, eq=False)  # holds arrays
class TraceEstimate:
    """Hutchinson estimates of Tr(H_ww) for each weight tensor `names[i]`.

    Attributes:
        names: weight tensor names.
        trace: running mean of the per-iteration estimates [W].
        rse: relative standard error of that mean [W] (0 where every sample agreed).
        samples: the per-iteration estimates [iterations, W].
        cut_short: True if a time budget ended the estimate before its precision goal.
    """

    names: tuple[str, ...]
    trace: np.ndarray
    rse: np.ndarray
    samples: np.ndarray
    cut_short: bool = False

    @property
    def iterations(self) -> int:
        return len(self.samples)


def relative_se(samples: np.ndarray) -> np.ndarray:
    """Standard error of the column means over |mean| (inf for one sample; 0 if all agree)."""
    k = len(samples)
    if k < 2:
        return np.full(samples.shape[1], np.inf)
    return _rse(samples.std(axis=0, ddof=1) / np.sqrt(k), samples.mean(axis=0))


def estimate(names: Sequence[str], samples: Sequence[np.ndarray] | np.ndarray) -> TraceEstimate:
    """The `TraceEstimate` of per-iteration samples [iterations, W]."""
    arr = np.asarray(samples, dtype=np.float64)
    return TraceEstimate(tuple(names), arr.mean(axis=0), relative_se(arr), arr)


def sampled_estimate(names: Sequence[str], parts: Sequence[np.ndarray],
                     total: int) -> TraceEstimate:
    """Trace estimate from `len(parts)` of `total` chunks: (total / c) * the sum of their
    means. Its variance, over which chunks were drawn and over the probes, is
    total^2 / c * Var(chunk mean) (with replacement, so an upper bound for a sample without
    it), estimated by the spread of the chunk means (c - 1 degrees of freedom).
    """
    c = len(parts)
    means = np.stack([p.mean(axis=0) for p in parts])
    trace = means.sum(axis=0) * (total / c)
    var = (total ** 2 / c * means.var(axis=0, ddof=1) if c >= 2
           else np.full(len(names), np.inf))
    # parts is non-empty, so the sum is an array (typeshed's sum may return its start, 0)
    return TraceEstimate(tuple(names), trace, _rse(np.sqrt(var), trace),
                         cast(np.ndarray, sum(parts)) * (total / c))


def _rse(se: np.ndarray, trace: np.ndarray) -> np.ndarray:
    """Standard error over |trace| (0 where the error is 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(se == 0, 0.0, se / np.abs(trace))


def pooled_estimate(names: Sequence[str], parts: Sequence[np.ndarray]) -> TraceEstimate:
    """Trace estimate from each chunk's probe samples `parts[c]` [K, W] (same K): the sum of
    the chunk means.

    With K >= 2 its variance is pooled from the within-chunk variances (C * (K - 1) degrees of
    freedom, where the per-probe totals over chunks would give only K - 1). With K = 1 it is
    bounded from the spread between chunks: for chunk traces T_c and probe variances s_c^2,
    E[C/(C-1) * sum_c (x_c - mean x)^2] = sum_c s_c^2 + C/(C-1) * sum_c (T_c - mean T)^2, which
    is never below the variance sum_c s_c^2 it stands for (C - 1 degrees of freedom).
    """
    k, c = len(parts[0]), len(parts)
    trace = sum(p.mean(axis=0) for p in parts)
    if k >= 2:
        var = sum(p.var(axis=0, ddof=1) for p in parts) / k
    elif c >= 2:
        var = c * np.stack([p[0] for p in parts]).var(axis=0, ddof=1)
    else:
        var = np.full(len(names), np.inf)
    # parts is non-empty, so the sum is an array (typeshed's sum may return its start, 0)
    return TraceEstimate(tuple(names), trace, _rse(np.sqrt(var), trace),
                         cast(np.ndarray, sum(parts)))
