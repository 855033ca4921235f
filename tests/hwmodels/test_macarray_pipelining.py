"""Pipelined folds (`fold_pipelining`): closed-form cycles against hand arithmetic.

Model (hwmodels.kernels.macarray): with pipelining a fold that another follows lasts
max(its work, R) -- the R-deep column chain that swaps the stationary (ws/is) or output (os)
tile is hidden behind a stream of at least R; the layer's last fold waits for no next tile --
and SCALE-Sim's per-fold fill/drain (os R + C - 2, ws/is 2R + C - 2) shows once per layer.
Without it every fold pays the fill (SCALE-Sim, test_macarray.py).
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwmodels import sparsity
from hwmodels.macarray import evaluate
from tests.hwmodels.test_macarray import INT8, array, gemm, layer_table


def _cycles(layer, **change) -> float:
    return float(evaluate(layer_table([layer]), INT8, array(**change)).cycles[0, 0])


@pytest.mark.parametrize("dataflow, expected", [
    ("os", 5 * 5 * 30 + (8 + 4 - 2)),  # Sr=M=40 -> 5, Sc=N=20 -> 5 folds of T=K=30 >= R
    ("ws", 4 * 5 * 40 + (2 * 8 + 4 - 2)),  # Sr=K=30 -> 4, Sc=N=20 -> 5 folds of T=M=40
    ("is", 4 * 10 * 20 + (2 * 8 + 4 - 2)),  # Sr=K=30 -> 4, Sc=M=40 -> 10 folds of T=N=20
])
def test_pipelined_folds_expose_the_fill_once(dataflow, expected):
    layer = gemm(40, 20, 30)
    assert _cycles(layer, dataflow=dataflow, rows=8, cols=4, fold_pipelining=True) == expected
    back_to_back = {"os": 25 * (8 + 4 + 30 - 2), "ws": 20 * (2 * 8 + 4 + 40 - 2),
                    "is": 40 * (2 * 8 + 4 + 20 - 2)}[dataflow]  # as test_macarray's cases
    assert _cycles(layer, dataflow=dataflow, rows=8, cols=4) == back_to_back


def test_a_stream_shorter_than_the_array_waits_for_the_tile_swap():
    # os 16x16, N=32 -> 2 column folds of T=K=4 < R=16: the first lasts R while its outputs
    # shift down the 16-deep column under the second; the last drains in the exposed fill
    layer = gemm(16, 32, 4)
    assert _cycles(layer, dataflow="os", fold_pipelining=True) == 16 + 4 + (16 + 16 - 2)
    assert _cycles(layer, dataflow="os") == 2 * (16 + 16 + 4 - 2)
    one = gemm(16, 16, 4)  # a single short fold is SCALE-Sim's fold
    assert _cycles(one, dataflow="os", fold_pipelining=True) == _cycles(one, dataflow="os")


def test_groups_follow_each_other_like_folds():
    # depthwise 3x3 over 8 channels of 7x7 on ws 16x16: per group one fold of T=M=49
    layer = gemm(m=49, n=1, k=9, groups=8, kind="conv")
    assert _cycles(layer, fold_pipelining=True) == 8 * 49 + (2 * 16 + 16 - 2)


def test_psum_chunks_each_swap_the_stationary_tile():
    # ws 4x4, K=8 -> 2 row folds, N=4 -> 1 column fold, T=M=64. A 0.25 KiB double-buffered
    # ofmap SRAM holds 128 B = 8 rows of 4 psums x 4 B, so T splits into 8 chunks of 8.
    layer = gemm(64, 4, 8)
    kw = dict(rows=4, cols=4, ofmap_sram_kib=0.25)
    assert _cycles(layer, **kw) == 8 * 2 * (2 * 4 + 4 - 2) + 2 * 64
    # pipelined: each chunk lasts max(8, R=4) = 8, so a fold lasts 64; fill once
    assert _cycles(layer, fold_pipelining=True, **kw) == 2 * 64 + (2 * 4 + 4 - 2)
    small = gemm(16, 4, 8)  # T=16 in 2 chunks of 8: still >= R
    assert _cycles(small, fold_pipelining=True, **kw) == 2 * 16 + 10


@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 80), n=st.integers(1, 80), k=st.integers(1, 80),
       rows=st.integers(2, 12), cols=st.integers(2, 12), df=st.sampled_from(["os", "ws", "is"]))
def test_pipelining_never_costs_cycles_and_a_single_long_fold_is_unchanged(m, n, k, rows, cols,
                                                                            df):
    layer = gemm(m, n, k)
    kw = dict(dataflow=df, rows=rows, cols=cols)
    on, off = _cycles(layer, fold_pipelining=True, **kw), _cycles(layer, **kw)
    assert on <= off  # R <= fill for cols >= 2, so max(T, R) + fill/F <= T + fill per fold
    sr, sc, t = {"os": (m, n, k), "ws": (k, n, m), "is": (k, m, n)}[df]
    if sr <= rows and sc <= cols:
        assert on == off


def test_sparse_folds_of_zeros_still_last_the_tile_swap():
    # os 4x4, skip_both, M=8 x K=16 activations all zero, N=8 dense weights: 4 folds with no
    # effectual work; the first three still last R=4 cycles pipelined (0 + fill back to back)
    target = array(dataflow="os", rows=4, cols=4, sparsity="skip_both", fold_pipelining=True)
    a, w = np.zeros((8, 16), bool), np.ones((16, 8), bool)
    assert sparsity.data_driven_cycles(a, w, target) == 3 * 4 + (4 + 4 - 2)
    # a middle group of a layer: no fill of its own, and its last fold waits for the next
    assert sparsity.data_driven_cycles(a, w, target, first=False, last=False) == 4 * 4
    assert sparsity.expected_cycles(8, 8, 16, 0.0, 1.0, target) == 3 * 4 + 6
    assert sparsity.lane_cycles(np.zeros((1, 8)), np.full((1, 8), 16), 16, target) == 18
    dense = np.ones((8, 16), bool)
    assert sparsity.data_driven_cycles(dense, w, target) == 4 * 16 + 6
    off = array(dataflow="os", rows=4, cols=4, sparsity="skip_both")
    assert sparsity.data_driven_cycles(a, w, off) == 4 * (0 + 6)


def test_lane_model_counts_the_fill_once_over_groups():
    # two groups of one 4x4 fold each, half-dense lanes: groups pipeline like folds
    target = array(dataflow="os", rows=4, cols=4, sparsity="skip_both", fold_pipelining=True)
    lanes, nnz = np.full((2, 4), 0.5), np.full((2, 4), 16)
    one = sparsity.lane_cycles(lanes[:1], nnz[:1], 16, target)
    assert sparsity.lane_cycles(lanes, nnz, 16, target) == pytest.approx(2 * one - 6)


@pytest.mark.parametrize("density", [0.0, 0.3, 1.0])
def test_kernel_and_statistical_model_agree_when_pipelined(density):
    target = array(dataflow="os", rows=8, cols=8, sparsity="skip_activations",
                   fold_pipelining=True)
    c = evaluate(layer_table([gemm(20, 12, 40, ad=density)]), INT8, target)
    assert c.cycles[0, 0] == pytest.approx(
        sparsity.expected_cycles(20, 12, 40, density, 1.0, target))


@pytest.mark.parametrize("m, n, k, hand", [
    (20, 12, 3, 5 * 8 + 3 + 14),  # 3 x 2 folds of T=3 < R=8: five wait for the swap
    (9, 30, 5, 7 * 8 + 5 + 14),  # 2 x 4 folds
    (16, 16, 40, 4 * 40 + 14),  # 2 x 2 folds of T=40 >= R
])
def test_kernel_matches_the_exact_model_on_dense_masks(m, n, k, hand):
    target = array(dataflow="os", rows=8, cols=8, sparsity="skip_both", fold_pipelining=True)
    exact = sparsity.data_driven_cycles(np.ones((m, k), bool), np.ones((k, n), bool), target)
    assert exact == hand
    assert evaluate(layer_table([gemm(m, n, k)]), INT8, target).cycles[0, 0] == hand
