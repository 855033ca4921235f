"""Sparsity: exact (mask-driven) and statistical cycles, gating, N:M structured speed-up."""

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from hwmodels.kernels.sparse import expected_max_binomial
from hwmodels.macarray import Precision, evaluate
from hwmodels.sparsity import data_driven_cycles, expected_cycles, is_n_of_m
from tests.hwmodels.test_macarray import array, gemm, layer_table

SKIPS = ("skip_activations", "skip_weights", "skip_both")
FILL = {"os": lambda r, c: r + c - 2, "ws": lambda r, c: 2 * r + c - 2,
        "is": lambda r, c: 2 * r + c - 2}
DIMS = {"os": lambda m, n, k: (m, n, k), "ws": lambda m, n, k: (k, n, m),
        "is": lambda m, n, k: (k, m, n)}


def _dense_cycles(df, rows, cols, m, n, k):
    sr, sc, t = DIMS[df](m, n, k)  # SCALE-Sim's mapping, hand-written here
    return math.ceil(sr / rows) * math.ceil(sc / cols) * (FILL[df](rows, cols) + t)


def _masks(m, k, n, pa, pw, seed):
    rng = np.random.default_rng(seed)
    return rng.random((m, k)) < pa, rng.random((k, n)) < pw


@pytest.mark.parametrize("t, p, g", [(10, 0.3, 1), (40, 0.5, 2), (7, 0.9, 3), (60, 0.05, 2)])
def test_expected_max_of_binomials_against_scipy(t, p, g):
    x = np.arange(t + 1)
    cdf = stats.binom.cdf(x, t, p)
    prev = np.concatenate([[0.0], cdf[:-1]])
    exact = float((x * (cdf ** g - prev ** g)).sum())  # pmf of the max, then its mean
    assert expected_max_binomial(t, p, g) == pytest.approx(exact, rel=1e-9)


def test_expected_max_for_long_streams_and_trivial_cases():
    t, p, g = 20000, 0.3, 16
    x = np.arange(t + 1)
    cdf = stats.binom.cdf(x, t, p)
    exact = float((1.0 - cdf[:-1] ** g).sum())
    assert expected_max_binomial(t, p, g) == pytest.approx(exact, rel=1e-9)
    assert expected_max_binomial(50, 1.0, 4) == 50
    assert expected_max_binomial(50, 0.0, 4) == 0
    assert expected_max_binomial(50, 0.4, 1) == pytest.approx(50 * 0.4)  # mean of one


@pytest.mark.parametrize("df", ["os", "ws", "is"])
@pytest.mark.parametrize("mode", ["none", "zero_gating", *SKIPS])
def test_full_masks_give_the_dense_scalesim_cycles(df, mode):
    a, w = np.ones((20, 30), bool), np.ones((30, 12), bool)
    target = array(dataflow=df, rows=8, cols=4, sparsity=mode)
    assert data_driven_cycles(a, w, target) == _dense_cycles(df, 8, 4, 20, 12, 30)


def test_busiest_pe_sets_the_fold_time_by_hand():
    # os on a 2x2 array, m = n = 2, k = 4: one fold, fill 2 + 2 - 2 = 2
    a = np.array([[1, 1, 1, 0], [1, 0, 0, 0]], bool)
    w = np.array([[1, 1], [0, 1], [1, 1], [0, 1]], bool)
    target = array(dataflow="os", rows=2, cols=2)
    cycles = {mode: data_driven_cycles(a, w, dataclasses.replace(target, sparsity=mode))
              for mode in ("none", *SKIPS)}
    assert cycles["none"] == 2 + 4
    assert cycles["skip_activations"] == 2 + 3  # row 0 has 3 nonzero activations
    assert cycles["skip_weights"] == 2 + 4  # column 1 of w is dense
    assert cycles["skip_both"] == 2 + 3  # PE(0, 1): a0 & w[:, 1] = 3 pairs; PE(0, 0): 2


@pytest.mark.parametrize("df", ["os", "ws", "is"])
@pytest.mark.parametrize("mode", SKIPS)
@pytest.mark.parametrize("pa, pw", [(0.5, 0.5), (0.3, 0.8)])
def test_statistical_matches_data_driven_on_uniform_masks(df, mode, pa, pw):
    # Tolerance: 5%, except os skip_both, whose statistical model treats the r*c PEs of a
    # fold as independent (they share rows of a and columns of w) and overstates by <= 10%
    m, k, n = 64, 64, 40
    a, w = _masks(m, k, n, pa, pw, seed=7)
    target = array(dataflow=df, rows=16, cols=16, sparsity=mode)
    exact = data_driven_cycles(a, w, target)
    expected = expected_cycles(m, n, k, pa, pw, target)
    tolerance = 0.10 if (df, mode) == ("os", "skip_both") else 0.05
    assert expected == pytest.approx(exact, rel=tolerance)


@pytest.mark.parametrize("df", ["os", "ws", "is"])
@pytest.mark.parametrize("mode", SKIPS)
def test_all_zero_operands_with_skipping_leave_only_fill(df, mode):
    m, n, k = 40, 20, 30
    folds = math.prod(math.ceil(s / d) for s, d in zip(DIMS[df](m, n, k)[:2], (8, 4)))
    target = array(dataflow=df, rows=8, cols=4, sparsity=mode)
    zeros = np.zeros((m, k), bool), np.zeros((k, n), bool)
    skipped = data_driven_cycles(*zeros, target)
    assert skipped == folds * FILL[df](8, 4)
    assert skipped <= _dense_cycles(df, 8, 4, m, n, k)
    assert expected_cycles(m, n, k, 0.0, 0.0, target) == skipped


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 24), st.integers(1, 24), st.integers(1, 24),
       st.sampled_from(["os", "ws", "is"]), st.sampled_from(SKIPS), st.integers(0, 2**31))
def test_skipping_is_never_slower_than_dense(m, n, k, df, mode, seed):
    a, w = _masks(m, k, n, 0.5, 0.5, seed)
    target = array(dataflow=df, rows=4, cols=4)
    dense = data_driven_cycles(a, w, target)
    assert data_driven_cycles(a, w, dataclasses.replace(target, sparsity=mode)) <= dense


def test_zero_gating_never_changes_cycles():
    a, w = _masks(48, 40, 24, 0.3, 0.6, seed=3)
    for df in ("os", "ws", "is"):
        dense, gated = array(dataflow=df), array(dataflow=df, sparsity="zero_gating")
        assert data_driven_cycles(a, w, gated) == data_driven_cycles(a, w, dense)
        assert expected_cycles(48, 24, 40, 0.3, 0.6, gated) == _dense_cycles(df, 16, 16, 48,
                                                                              24, 40)


def _two_of_four(k, n, seed):
    rng = np.random.default_rng(seed)
    w = np.zeros((k, n), bool)
    for group in range(k // 4):
        for j in range(n):
            w[4 * group + rng.choice(4, 2, replace=False), j] = True
    return w


def test_two_of_four_structured_weights_stream_exactly_twice_as_fast():
    a, w = np.ones((32, 64), bool), _two_of_four(64, 32, seed=1)
    assert is_n_of_m(w, 2, 4)
    for df in ("os", "ws", "is"):
        dense = data_driven_cycles(a, w, array(dataflow=df))
        sparse = data_driven_cycles(a, w, array(dataflow=df, sparsity="structured"))
        if df == "os":  # T = K: per fold 14 + 64 -> 14 + 32, 2 x 2 folds of 16 x 16
            assert (dense - 4 * 30, sparse - 4 * 30) == (4 * 64, 4 * 32)
        else:  # K maps to the rows: 64 / 16 = 4 row folds -> 2, compute exactly halves
            assert dense == 2 * sparse


def test_structured_mode_needs_the_pattern_and_the_density():
    a = np.ones((8, 8), bool)
    with pytest.raises(ValueError, match="not 2:4 structured"):
        data_driven_cycles(a, np.ones((8, 8), bool), array(sparsity="structured"))
    target = array(dataflow="os", sparsity="structured")
    assert expected_cycles(16, 16, 64, 1.0, 0.5, target) == 16 + 16 - 2 + 32  # 2:4 -> K/2
    assert expected_cycles(16, 16, 64, 1.0, 0.6, target) == 16 + 16 - 2 + 64  # not pruned


def test_layer_model_uses_the_statistical_cycles():
    target = array(dataflow="ws", sparsity="skip_both")
    c = evaluate(layer_table([gemm(200, 48, 96, wd=0.4, ad=0.6)]), np.array([[8, 8]]), target)
    assert c.cycles[0, 0] == expected_cycles(200, 48, 96, 0.6, 0.4, target)
    assert c.cycles[0, 0] < _dense_cycles("ws", 16, 16, 200, 48, 96)


def test_precision_rate_divides_the_busiest_pe_work():
    a, w = _masks(16, 64, 16, 0.5, 1.0, seed=5)
    fused = array(dataflow="os", precisions=(Precision(8, 1.0), Precision(4, 4.0)),
                  precision_scaling="fused", sparsity="skip_activations")
    busiest = int(a.sum(axis=1).max())
    assert data_driven_cycles(a, w, fused, bits=(4, 4)) == 30 + math.ceil(busiest / 4)
    assert data_driven_cycles(a, w, fused, bits=(2, 8)) == 30 + math.ceil(busiest / 2)
    with pytest.raises(ValueError, match="W32A32 is not supported"):
        data_driven_cycles(a, w, fused, bits=(32, 32))
