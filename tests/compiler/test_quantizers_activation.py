"""Activation quantiser numerics: fake quantisation bit-exact with onnxruntime's QuantizeLinear ->
DequantizeLinear, parameters equal to onnxruntime's compute_scale_zp, and the calibration
statistics (merging, histograms, percentiles, MSE ranges) against numpy and brute force."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import TensorProto
from onnxruntime.quantization.quant_utils import compute_scale_zp

from compiler import activation_quant as A
from compiler.errors import ModelError
from tests.compiler.qdq_oracle import SIGNED_TYPE, UNSIGNED_TYPE, ort_qdq

# ----------------------------------------------------------------------------------------------
# Activations: bit-exact against onnxruntime's QuantizeLinear -> DequantizeLinear


def _probe_values(scale: np.float32, rng: np.random.Generator) -> np.ndarray:
    """Random values, exact rounding ties k + 0.5 (in units of scale), extremes and infinities."""
    ties = (np.arange(-300, 300) + 0.5).astype(np.float32) * scale
    return np.concatenate([(rng.standard_normal(4000) * 300 * scale).astype(np.float32), ties,
                           np.array([np.inf, -np.inf, 0.0, -0.0, 1e6], np.float32)])


@pytest.mark.ort
@pytest.mark.parametrize("bits,signed,zp", [(8, False, 0), (8, False, 131), (8, True, 0),
                                            (8, True, -5), (4, False, 9), (4, True, 0),
                                            (4, True, -3)])
def test_fake_quant_activation_is_bit_exact_with_onnxruntime(bits: int, signed: bool,
                                                             zp: int) -> None:
    scale = np.float32(0.0371)
    x = _probe_values(scale, np.random.default_rng(bits + zp))
    onnx_type = (SIGNED_TYPE if signed else UNSIGNED_TYPE)[bits]
    _, y = ort_qdq(x, scale, np.array(zp), onnx_type)
    np.testing.assert_array_equal(A.fake_quant_activation(x, scale, zp, bits, signed), y)


@pytest.mark.ort
@settings(max_examples=20, deadline=None)
@given(scale=st.floats(0.0009765625, 10.0, width=32), zp=st.integers(0, 255),
       seed=st.integers(0, 99))
def test_fake_quant_uint8_matches_onnxruntime_for_any_scale(scale: float, zp: int,
                                                            seed: int) -> None:
    x = _probe_values(np.float32(scale), np.random.default_rng(seed))
    _, y = ort_qdq(x, np.float32(scale), np.array(zp), TensorProto.UINT8)
    np.testing.assert_array_equal(A.fake_quant_activation(x, scale, zp, 8, False), y)


@pytest.mark.ort
@pytest.mark.parametrize("bits", [8, 4])
def test_minmax_activation_params_equal_onnxruntime_compute_scale_zp(bits: int) -> None:
    rng = np.random.default_rng(bits)
    for lo, hi in [(-1.3, 4.7), (0.2, 3.0), (-2.0, -0.5), (-1e-3, 7e-4)]:
        x = rng.uniform(lo, hi, 1000).astype(np.float32)
        params = A.activation_params(A.range_stats(x), bits=bits)
        zp, scale = compute_scale_zp(x.min(), x.max(), np.uint8(0), np.uint8(2**bits - 1))
        assert params.scale == scale and params.scale.dtype == np.float32
        assert params.zero_point == int(zp) and not params.signed


def test_symmetric_activation_params_map_the_extreme_to_the_top_code() -> None:
    x = np.array([-3.0, 0.5, 2.0], np.float32)
    params = A.activation_params(A.range_stats(x), bits=8, symmetric=True)
    assert params.scale == np.float32(3.0 / 127) and params.zero_point == 0 and params.signed
    fq = A.fake_quant_activation(x, params.scale, 0, 8, True)
    assert fq[0] == np.float32(-127) * params.scale  # -3.0 lands on code -127


# ----------------------------------------------------------------------------------------------
# Calibration statistics


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), cuts=st.lists(st.integers(1, 399), max_size=4),
       spread=st.sampled_from([1e-3, 1.0, 37.0, 1e4]))
def test_range_stats_merge_in_any_order_equals_one_pass(seed: int, cuts: list[int],
                                                        spread: float) -> None:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(400) * spread * rng.uniform(0.01, 1, 400)).astype(np.float32)
    parts = np.split(x, sorted(set(cuts)))
    order = rng.permutation(len(parts))
    merged = A.RangeStats()
    for i in order:
        merged = merged.update(parts[i])
    whole = A.range_stats(x)
    assert (merged.count, merged.min, merged.max) == (400, float(x.min()), float(x.max()))
    assert merged.half_range == whole.half_range
    np.testing.assert_array_equal(merged.hist, whole.hist)


def test_range_stats_histogram_counts_match_numpy_histogram() -> None:
    x = np.random.default_rng(3).standard_normal(5000).astype(np.float32)
    stats = A.range_stats(x, nbins=64)
    edges = np.linspace(-stats.half_range, stats.half_range, 65)
    np.testing.assert_array_equal(stats.hist, np.histogram(x, bins=edges)[0])
    assert stats.half_range / 2 <= np.abs(x).max() < stats.half_range  # next power of two


def _oracle_range_stats(x: np.ndarray, nbins: int) -> tuple:
    """(count, min, max, half_range, hist) written independently: the half range by doubling
    from the smallest float64, the counts by np.histogram over exact power-of-two edges."""
    x64 = np.asarray(x, np.float64).ravel()
    m = float(np.abs(x64).max())
    half = 2.0**-1074
    while half <= m:
        half *= 2.0
    half = 2.0**-126 if m == 0.0 else half
    edges = -half + np.arange(nbins + 1) * (2.0 * half / nbins)  # exact: powers of two
    return (x64.size, float(x64.min()), float(x64.max()), half,
            np.histogram(x64, bins=edges)[0])


def _edge_cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    width = 2.0**-9  # max|x| = 1.5 below: half range 2, 2048 bins of 2^-9
    edges = (np.arange(-3 * 256, 3 * 256) * width).astype(np.float32)
    below = np.nextafter(edges, np.float32(-np.inf))
    tiny = np.float32(np.finfo(np.float32).smallest_subnormal)
    return {
        "normal": rng.standard_normal((4, 3, 17, 5)).astype(np.float32),
        "exact bin edges": np.concatenate([edges, below, [1.5, -1.5]]).astype(np.float32),
        "max is a power of two": np.array([1.0, -0.25, 0.5, 0.0], np.float32),
        "negative zero": np.array([-0.0, 0.0, -0.0, 1e-3, -1e-3], np.float32),
        "only negative zeros": np.full(7, -0.0, np.float32),
        "all zero": np.zeros((3, 5), np.float32),
        "subnormals": np.array([tiny, -tiny, 3 * tiny, -7 * tiny, 0.0], np.float32),
        "largest subnormal": np.array([np.finfo(np.float32).tiny - tiny, -tiny], np.float32),
        "float32 extremes": np.array([np.finfo(np.float32).max, np.finfo(np.float32).min,
                                      tiny, -1.0], np.float32),
        "wide spread": (rng.standard_normal(3000) * 10.0 ** rng.uniform(-30, 30, 3000))
        .astype(np.float32),
        "transposed": rng.standard_normal((6, 9)).astype(np.float32).T,
        "strided": rng.standard_normal((40, 7)).astype(np.float32)[::3, 1:5],
        "float64": rng.standard_normal(999) * 1e-3,
        "float64 below float32 range": np.array([1e-310, -3e-320, 5e-324, -5e-324]),
        "float16": rng.standard_normal(100).astype(np.float16),
        "integers": np.arange(-5, 40),
    }


@pytest.mark.parametrize("case", list(_edge_cases()))
@pytest.mark.parametrize("nbins", [2048, 64])
def test_range_stats_equal_an_independent_oracle(case: str, nbins: int) -> None:
    x = _edge_cases()[case]
    got = A.range_stats(x, nbins=nbins)
    count, lo, hi, half, hist = _oracle_range_stats(x, nbins)
    assert (got.count, got.min, got.max, got.half_range) == (count, lo, hi, half)
    np.testing.assert_array_equal(got.hist, hist)
    assert got.hist.dtype == np.int64 and got.hist.sum() == count


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(max_dims=3, max_side=20),
                  elements=st.floats(width=32, allow_nan=False, allow_infinity=False)))
def test_range_stats_equal_the_oracle_on_any_finite_float32(x: np.ndarray) -> None:
    got = A.range_stats(x, nbins=32)
    count, lo, hi, half, hist = _oracle_range_stats(x, 32)
    assert (got.count, got.min, got.max, got.half_range) == (count, lo, hi, half)
    np.testing.assert_array_equal(got.hist, hist)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("at", [0, 517, -1])
def test_range_stats_reject_nan_and_infinity_anywhere(dtype: type, bad: float, at: int) -> None:
    x = np.random.default_rng(at % 7).standard_normal(1000).astype(dtype)
    x[at] = bad
    with pytest.raises(ModelError, match="act7.*non-finite"):
        A.range_stats(x, name="act7")
    with pytest.raises(ModelError, match="act7.*non-finite"):
        A.range_stats(np.array([np.inf, -np.inf, np.nan], dtype), name="act7")


def test_range_stats_reject_empty_batches_and_odd_bin_counts() -> None:
    with pytest.raises(ModelError, match="empty"):
        A.range_stats(np.zeros((0, 3), np.float32))
    with pytest.raises(ModelError, match="nbins must be even"):
        A.range_stats(np.ones(4, np.float32), nbins=63)


@pytest.mark.parametrize("pct", [99.0, 99.9])
def test_percentile_range_is_within_one_bin_of_numpy(pct: float) -> None:
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.standard_normal(20_000), rng.standard_normal(20) * 50]).astype(
        np.float32)
    stats = A.range_stats(x)
    width = 2 * stats.half_range / len(stats.hist)
    assert abs(A.quantile(stats, pct / 100) - np.percentile(x, pct)) <= width
    assert abs(A.abs_quantile(stats, pct / 100) - np.percentile(np.abs(x), pct)) <= width
    params = A.activation_params(stats, method="percentile", percentile=pct)
    lo, hi = np.percentile(x, 100 - pct), np.percentile(x, pct)
    assert abs(params.scale - (hi - lo) / 255) <= 2 * width / 255


def _true_error(x: np.ndarray, lo: float, hi: float) -> float:
    """Squared error of uint8 fake quantisation over [lo, hi], written out independently."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = np.float32((hi - lo) / 255)
    zp = np.clip(np.round(-lo / scale), 0, 255)
    q = np.clip(np.round(x / scale) + zp, 0, 255)
    return float(np.sum(((q - zp) * scale - x) ** 2))


def test_mse_activation_range_is_near_the_brute_force_optimum() -> None:
    rng = np.random.default_rng(11)
    x = np.concatenate([rng.standard_normal(50_000), [40.0, -25.0]]).astype(np.float32)
    params = A.activation_params(A.range_stats(x), method="mse")
    lo = -params.scale * params.zero_point
    hi = params.scale * (255 - params.zero_point)
    errs = [_true_error(x, r * x.min(), r * x.max()) for r in np.linspace(0.3, 1.0, 100)]
    assert _true_error(x, lo, hi) <= 1.1 * min(errs)
    assert _true_error(x, lo, hi) < 0.95 * errs[-1]  # the outliers make clipping worth it
