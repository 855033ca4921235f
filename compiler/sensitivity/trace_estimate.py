"""Hutchinson trace estimates: per-probe samples, their mean and relative standard error."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


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
    se = samples.std(axis=0, ddof=1) / np.sqrt(k)
    mean = np.abs(samples.mean(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(se == 0, 0.0, se / mean)


def estimate(names: Sequence[str], samples: Sequence[np.ndarray] | np.ndarray) -> TraceEstimate:
    """The `TraceEstimate` of per-iteration samples [iterations, W]."""
    arr = np.asarray(samples, dtype=np.float64)
    return TraceEstimate(tuple(names), arr.mean(axis=0), relative_se(arr), arr)
