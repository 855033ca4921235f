"""The calibration statistics' kernels (`compiler.activation_quant`) against numpy oracles:
the histogram's int32 rows carried into int64 counts block by block, the one-pass float32
min/max (NaN, infinities, signed zeros as numpy's np.min / np.max give them), and the rebinning
of a merge against np.histogram over the union of the batches."""

from __future__ import annotations

import math

import numpy as np
import pytest

from compiler import activation_quant as A
from compiler.errors import ModelError


def _oracle_hist(x: np.ndarray, nbins: int, half: float) -> np.ndarray:
    edges = -half + np.arange(nbins + 1) * (2.0 * half / nbins)  # powers of two: exact
    return np.histogram(np.asarray(x, np.float64), bins=edges)[0]


@pytest.mark.parametrize("block", [1, 3, 4, 5, 7, 64, 1 << 32])
@pytest.mark.parametrize("n", [1, 6, 103])
def test_histogram_blocks_carry_every_count(block: int, n: int) -> None:
    # ReLU-like runs of one bin and values on bin edges (width 2^-4 over [-4, 4), 128 bins)
    rng = np.random.default_rng(n)
    x = np.maximum(rng.standard_normal(n), 0).astype(np.float32)
    x[::5] = (rng.integers(-64, 64, x[::5].size) / 16.0).astype(np.float32)
    got = A._histogram(x, 128, 128 / 8.0, block)
    np.testing.assert_array_equal(got, _oracle_hist(x, 128, 4.0))
    assert got.dtype == np.int64


@pytest.mark.parametrize("values", [
    [0.0, -0.0], [-0.0, 0.0], [0.0] * 40 + [-0.0], [-0.0] + [0.0] * 40,
    [-0.0, 1.0, 0.0], [-2.0, -0.0, 0.0], [-0.0] * 5, [0.0] * 5,
    [1e-45, -1e-45], [3.4e38, -3.4e38, 1.0], [-1.5, -2.5, -0.5],
])
def test_float32_min_max_equal_numpy_bit_for_bit(values: list[float]) -> None:
    x = np.array(values, np.float32)
    lo, hi = A._float32_range(x)
    for got, want in ((lo, x.min()), (hi, x.max())):
        assert got == float(want) and math.copysign(1, got) == math.copysign(1, float(want))


@pytest.mark.parametrize("bad", [np.nan, -np.nan, np.inf, -np.inf,
                                 np.array(0x7F800001, np.int32).view(np.float32),  # sNaN
                                 np.array(-1, np.int32).view(np.float32)])  # NaN, sign set
@pytest.mark.parametrize("at", [0, 77, 299])
def test_float32_min_max_flag_every_non_finite(bad: float, at: int) -> None:
    x = np.random.default_rng(at).standard_normal(300).astype(np.float32)
    x[at] = bad
    lo, hi = A._float32_range(x)
    assert not (math.isfinite(lo) and math.isfinite(hi))
    with pytest.raises(ModelError, match="t9.*non-finite"):
        A.range_stats(x, name="t9")


def test_float32_min_max_equal_numpy_on_random_layouts() -> None:
    rng = np.random.default_rng(2)
    for size in (1, 2, 15, 16, 17, 1000, 4099):
        x = (rng.standard_normal(size) * 10.0 ** rng.uniform(-40, 38, size)).astype(np.float32)
        assert A._float32_range(x) == (float(x.min()), float(x.max()))


@pytest.mark.parametrize("nbins", [2048, 6, 2046, 2])
@pytest.mark.parametrize("spreads", [(1.0, 3.0), (1e-3, 1e3), (1e-30, 1e30), (5.0, 0.1)])
def test_merges_rebin_to_the_histogram_of_the_union(nbins: int,
                                                    spreads: tuple[float, float]) -> None:
    rng = np.random.default_rng(nbins)
    parts = [(rng.standard_normal(257) * s).astype(np.float32) for s in spreads]
    merged = A.merge_stats(A.range_stats(parts[0], nbins), A.range_stats(parts[1], nbins))
    x = np.concatenate(parts)
    assert merged.half_range / 2 <= np.abs(x).max() < merged.half_range
    np.testing.assert_array_equal(merged.hist, _oracle_hist(x, nbins, merged.half_range))
    assert merged.hist.dtype == np.int64
