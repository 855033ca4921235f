"""Weight quantiser numerics: codes and reals against onnxruntime's QuantizeLinear /
DequantizeLinear, closed-form grid properties, brute-force clip searches written independently
here, and one-line errors for bad arguments and non-finite values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto

from compiler import activation_quant as A
from compiler import quantizers as Q
from compiler.clip_search import CLIP_RATIOS
from compiler.errors import ModelError
from tests.compiler.qdq_oracle import ort_qdq

# ----------------------------------------------------------------------------------------------
# Weights


@pytest.mark.ort
@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("granularity,axis,block", [("per_tensor", 0, None),
                                                    ("per_channel", 0, None),
                                                    ("per_channel", 1, None),
                                                    ("per_block", 0, 16),
                                                    ("per_block", 1, 32)])
def test_weight_codes_equal_onnxruntime_quantize_linear(bits: int, symmetric: bool,
                                                        granularity: str, axis: int,
                                                        block: int | None) -> None:
    """Our codes are what QuantizeLinear computes from our scales (8-bit storage holds every
    2..8-bit grid; minmax ranges never saturate), and DequantizeLinear gives our reals."""
    w = np.random.default_rng(bits).standard_normal((6, 40, 3)).astype(np.float32)
    qt = Q.quantize_weight(w, bits, granularity, axis=axis, block_size=block,
                           symmetric=symmetric)
    onnx_type = TensorProto.INT8 if symmetric else TensorProto.UINT8
    q, y = ort_qdq(w, qt.scale, qt.zero_point, onnx_type, qt.params.axis, block)
    np.testing.assert_array_equal(qt.q, q)
    np.testing.assert_array_equal(Q.dequantize(qt), y)
    lo, hi = Q.code_range(bits, symmetric)
    assert lo <= qt.q.min() and qt.q.max() <= hi


def test_symmetric_grid_is_narrow_and_hits_both_extremes() -> None:
    w = np.array([[-2.0, 0.5, 1.2], [3.0, -3.0, 0.0]], np.float32)
    qt = Q.quantize_weight(w, 4, "per_channel", axis=0)
    np.testing.assert_array_equal(qt.scale, np.float32([2 / 7, 3 / 7]))
    np.testing.assert_array_equal(qt.q, [[-7, 2, 4], [7, -7, 0]])  # 1.75 -> 2, 4.2 -> 4


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), bits=st.integers(2, 8), symmetric=st.booleans(),
       k=st.integers(1, 70), block=st.sampled_from([16, 32]))
def test_minmax_error_is_at_most_half_a_step(seed: int, bits: int, symmetric: bool, k: int,
                                             block: int) -> None:
    w = (np.random.default_rng(seed).standard_normal((3, k)) * 2).astype(np.float32)
    qt = Q.quantize_weight(w, bits, "per_block", axis=0, block_size=block, symmetric=symmetric)
    assert qt.scale.shape == (3, -(-k // block))
    step = np.repeat(qt.scale, block, axis=1)[:, :k].astype(np.float64)
    err = np.abs(Q.dequantize(qt).astype(np.float64) - w)
    assert np.all(err <= step * (0.5 + 1e-5))


def _brute_force_mse_scales(w: np.ndarray, bits: int) -> np.ndarray:
    """Per row, the symmetric scale of the candidate ratio with least error: a plain loop."""
    qmax = 2 ** (bits - 1) - 1
    best = []
    for row in w:
        errs = []
        for r in np.linspace(0.3, 1.0, 100):
            s = np.float32(r * np.abs(row).max() / qmax)
            deq = np.clip(np.round(row / s), -qmax, qmax) * s
            errs.append((np.sum((deq - row).astype(np.float64) ** 2), s))
        best.append(min(errs, key=lambda e: e[0])[1])
    return np.array(best, np.float32)


def test_mse_clip_equals_a_brute_force_search_and_beats_minmax() -> None:
    rng = np.random.default_rng(2)
    w = rng.standard_normal((12, 256)).astype(np.float32)
    w[3, 7] = 25.0  # one outlier channel
    qt = Q.quantize_weight(w, 4, "per_channel", axis=0, clip="mse")
    np.testing.assert_allclose(qt.scale, _brute_force_mse_scales(w, 4), rtol=1e-6)
    err_mse = ((Q.dequantize(qt) - w) ** 2).sum(axis=1)
    err_minmax = ((Q.fake_quant_weight(w, 4, "per_channel") - w) ** 2).sum(axis=1)
    assert np.all(err_mse <= err_minmax * (1 + 1e-6))
    assert err_mse[3] < 0.95 * err_minmax[3]


def _candidate_search(g: np.ndarray, bits: int, symmetric: bool) -> np.ndarray:
    """Per row, the best ratio of `CLIP_RATIOS`, each candidate through the public grid
    functions (`scale_zero_point`, `quantize_codes`, `dequantize_codes`), one row at a time."""
    qmin, qmax = Q.code_range(bits, symmetric)
    best = []
    for row in g:
        errs = []
        for r in CLIP_RATIOS:
            a = np.abs(row).max() * r
            lo, hi = (-a, a) if symmetric else (row.min() * r, row.max() * r)
            s, zp = Q.scale_zero_point(np.array(lo), np.array(hi), bits, symmetric)
            deq = Q.dequantize_codes(Q.quantize_codes(row, s, zp, qmin, qmax), s, zp)
            errs.append(float(np.sum((deq - row).astype(np.float64) ** 2)))
        best.append(CLIP_RATIOS[int(np.argmin(errs))])  # argmin: first of equal errors
    return np.array(best)


@pytest.mark.parametrize("bits,symmetric", [(4, True), (4, False), (3, False), (8, True)])
def test_mse_ratio_kernel_matches_the_candidate_by_candidate_search(bits: int,
                                                                     symmetric: bool) -> None:
    rng = np.random.default_rng(bits)
    g = (rng.standard_normal((40, 32)) * rng.uniform(0.01, 3, (40, 1))).astype(np.float32)
    g[0] = 0.0                      # empty range: scale 1, every ratio ties at error 0
    g[1] = 0.5                      # constant (one-sided) group
    g[2, 5] = 30.0                  # one outlier
    g[3] = np.abs(g[3])             # all positive: the asymmetric range is stretched to 0
    np.testing.assert_array_equal(Q._mse_ratio(g, bits, symmetric),
                                  _candidate_search(g, bits, symmetric))


def test_asymmetric_weights_represent_zero_exactly() -> None:
    w = np.random.default_rng(4).uniform(0.5, 2.0, (4, 33)).astype(np.float32)
    w[:, ::5] = 0.0
    fq = Q.fake_quant_weight(w, 3, "per_block", axis=0, block_size=16, symmetric=False)
    assert np.all(fq[:, ::5] == 0.0)


@pytest.mark.parametrize("kwargs,what", [
    ({"bits": 9}, "bits"), ({"bits": 4, "granularity": "per_row"}, "granularity"),
    ({"bits": 4, "clip": "kl"}, "clip"), ({"bits": 4, "granularity": "per_block"}, "per_block"),
    ({"bits": 4, "axis": 3}, "axis")])
def test_bad_weight_arguments_raise_model_error(kwargs: dict, what: str) -> None:
    with pytest.raises(ModelError, match=what):
        Q.quantize_weight(np.ones((4, 4), np.float32), **kwargs)


def test_non_finite_inputs_raise_model_error_naming_the_tensor() -> None:
    with pytest.raises(ModelError, match="relu_out"):
        A.range_stats(np.array([1.0, np.nan]), name="relu_out")
    with pytest.raises(ModelError, match="non-finite"):
        Q.quantize_weight(np.array([[np.inf, 1.0]]), 8)
    with pytest.raises(ModelError, match="no calibration"):
        A.activation_params(A.RangeStats())


def test_mse_ratio_over_many_tiles_equals_the_search_row_by_row() -> None:
    # the kernel reuses its residual buffer from row to row: nothing may leak between rows
    g = np.random.default_rng(9).standard_normal((600, 16)).astype(np.float32)
    whole = Q._mse_ratio(g, 4, False)
    alone = np.array([Q._mse_ratio(g[i:i + 1], 4, False)[0] for i in range(0, 600, 37)])
    np.testing.assert_array_equal(whole[::37], alone)
    assert len(set(whole.tolist())) > 5  # the groups chose different ratios


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("at", [0, 37, -1])
def test_quantize_weight_rejects_a_non_finite_value_anywhere(bad: float, at: int) -> None:
    w = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
    w.reshape(-1)[at] = bad
    with pytest.raises(ModelError, match="non-finite"):
        Q.quantize_weight(w, 4, "per_block", 0, 32, clip="mse")


def test_symmetric_range_is_the_largest_magnitude_per_group() -> None:
    """Ranges from max(max, -min) equal max|w| (brute force), here on rows whose largest
    magnitude is negative, positive, or zero."""
    w = np.array([[-5.0, 1.0, 2.0, 0.5], [3.0, -1.0, 0.0, 2.0], [0.0, 0.0, -0.0, 0.0]],
                 np.float32)
    qt = Q.quantize_weight(w, 8, "per_channel", 0)
    amax = np.array([max(abs(float(v)) for v in row) for row in w])
    want = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)  # empty range: scale 1
    np.testing.assert_array_equal(qt.params.scale, want)
