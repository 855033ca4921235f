"""Weight preload across layers (`weight_preload`): closed-form cycles against hand arithmetic.

Model (hwmodels.kernels.macarray): with pipelined folds, ws shifts the next layer's first
weight tile in under this layer's last fold (TPU v1's Weight FIFO and double-buffered tile),
so that fold lasts at least R like every other and the once-per-layer fill loses its R
preload cycles (2R + C - 2 -> R + C - 2). os preloads nothing and is's stationary tile is the
previous layer's output: both unchanged. Without pipelining nothing changes (SCALE-Sim mode).
"""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.ir import CATEGORY_GEMM
from hwmodels import sparsity
from hwmodels.macarray import evaluate
from hwmodels.target import load_target
from tests.hwmodels.test_macarray import INT8, array, gemm, layer_table
from tests.hwmodels.test_prepared_batch import (
    batch_equals_full,
    full_costs,
    random_designs,
    random_table,
)


def _cycles(layer, **change) -> float:
    return float(evaluate(layer_table([layer]), INT8, array(**change)).cycles[0, 0])


def test_ws_long_last_fold_hides_the_whole_preload():
    # ws 8x4: Sr=K=30 -> 4 row folds, Sc=N=20 -> 5 column folds of T=M=40 >= R=8
    layer, kw = gemm(40, 20, 30), dict(dataflow="ws", rows=8, cols=4, fold_pipelining=True)
    assert _cycles(layer, **kw) == 20 * 40 + (2 * 8 + 4 - 2)
    assert _cycles(layer, weight_preload=True, **kw) == 20 * 40 + (8 + 4 - 2)


def test_ws_short_last_fold_hides_only_its_own_length():
    # ws 16x16, one fold of T=M=4: the next layer's 16-cycle shift-in runs under it, so the
    # fold lasts max(4, 16) = 16 and the fill drops from 2*16+16-2 = 46 to 30: 4 cycles saved
    layer, kw = gemm(4, 16, 16), dict(dataflow="ws", fold_pipelining=True)
    assert _cycles(layer, **kw) == 4 + 46
    assert _cycles(layer, weight_preload=True, **kw) == 16 + 30


@pytest.mark.parametrize("dataflow", ["os", "is"])
def test_os_and_is_have_nothing_to_preload(dataflow):
    layer = gemm(40, 20, 30)
    kw = dict(dataflow=dataflow, rows=8, cols=4, fold_pipelining=True)
    assert _cycles(layer, weight_preload=True, **kw) == _cycles(layer, **kw)


def test_without_pipelining_preload_changes_nothing():
    # SCALE-Sim's back-to-back folds: 20 folds of 2*8 + 4 + 40 - 2 (test_macarray's case)
    layer, kw = gemm(40, 20, 30), dict(dataflow="ws", rows=8, cols=4)
    assert _cycles(layer, weight_preload=True, **kw) == 20 * (2 * 8 + 4 + 40 - 2)


@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 80), n=st.integers(1, 80), k=st.integers(1, 80),
       rows=st.integers(2, 12), cols=st.integers(2, 12), df=st.sampled_from(["os", "ws", "is"]),
       kib=st.sampled_from([1e6, 0.25, 1.0]))
def test_preload_never_costs_cycles_and_saves_at_most_r(m, n, k, rows, cols, df, kib):
    layer = gemm(m, n, k)
    kw = dict(dataflow=df, rows=rows, cols=cols, fold_pipelining=True, ofmap_sram_kib=kib)
    on, off = _cycles(layer, weight_preload=True, **kw), _cycles(layer, **kw)
    assert off - rows <= on <= off
    if df != "ws":
        assert on == off


def test_exact_and_expected_models_share_the_schedule():
    # ws 4x4, skip_weights, K=8 x N=4 weights, M=3 rows of activations: 2 row folds of T=3;
    # pipelined: first fold max(3, 4) = 4, last 3, fill 2*4+4-2 = 10; preloaded: 4 + 4 + 6
    base = array(dataflow="ws", rows=4, cols=4, sparsity="skip_weights", fold_pipelining=True)
    pre = dataclasses.replace(base, weight_preload=True)
    a, w = np.ones((3, 8), bool), np.ones((8, 4), bool)
    assert sparsity.data_driven_cycles(a, w, base) == 4 + 3 + 10
    assert sparsity.data_driven_cycles(a, w, pre) == 4 + 4 + 6
    assert sparsity.expected_cycles(3, 4, 8, 1.0, 1.0, pre) == 4 + 4 + 6
    table = layer_table([gemm(3, 4, 8)])
    assert evaluate(table, INT8, pre).cycles[0, 0] == 4 + 4 + 6
    # a middle group of a layer: no fill, and its last fold waits for the next either way
    assert sparsity.data_driven_cycles(a, w, pre, first=False, last=False) == 8


def test_batched_kernel_equals_full_kernel_with_preload() -> None:
    rng = np.random.default_rng(16)
    table = random_table(rng, 60)
    designs = [dataclasses.replace(d, fold_pipelining=bool(i % 2), weight_preload=i % 3 > 0)
               for i, d in enumerate(random_designs(rng, 30))]
    full = batch_equals_full(table, designs, rng)
    # preload did change some ws design's GEMM cycles (the test is not vacuous)
    base = full_costs(table, [dataclasses.replace(d, weight_preload=False) for d in designs])
    gemm_rows = table.category == CATEGORY_GEMM
    assert (full[0][:, gemm_rows] < base[0][:, gemm_rows]).any()
    assert (full[0] <= base[0]).all()


def test_shipped_targets():
    # sparse-mac-32x32 is output stationary: its weights stream, there is no tile to preload
    assert load_target("sparse-mac-32x32").dataflow == "os"
    assert not load_target("systolic-16x16").weight_preload  # SCALE-Sim mode stays off


def test_cycle_terms_split_the_pipelined_schedule():
    # os 4x4 skip_both pipelined, M=8 lanes x N=8 columns, K=16: 2 x 2 folds. All-zero lanes:
    # no work, the first three folds wait R=4 for the swap, the fill 4+4-2 = 6 shows once
    target = array(dataflow="os", rows=4, cols=4, sparsity="skip_both", fold_pipelining=True)
    nnz = np.full((1, 8), 16)
    zero = sparsity.lane_terms(np.zeros((1, 8)), nnz, 16, target)
    assert (zero.fill, zero.swap, zero.work) == (6, 3 * 4, 0)
    dense = sparsity.lane_terms(np.ones((1, 8)), nnz, 16, target)
    assert (dense.fill, dense.swap, dense.work) == (6, 0, 4 * 16)
    assert dense.total == sparsity.lane_cycles(np.ones((1, 8)), nnz, 16, target)
    # back to back (SCALE-Sim): every fold pays its fill, nothing waits for a swap
    off = dataclasses.replace(target, fold_pipelining=False)
    zero = sparsity.expected_terms(8, 8, 16, 0.0, 1.0, off)
    assert (zero.fill, zero.swap, zero.work) == (4 * 6, 0, 0)
