"""Weights resident across inferences (`weights_resident`): closed-form DRAM bytes.

The whole model's weights at a layer's width (plus the vector unit's parameters) must fit the
usable filter SRAM (half of it when double buffered) for that layer's weights to stay on chip.
As in test_macarray_onchip.py, the 4x4 os array at 1 GHz moves 0.5 B/cycle at 1 pJ/B, so
DRAM bytes read straight off `energy_pj_dram`; activations stay on chip (huge buffers).
"""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hwmodels.macarray import evaluate, resident_bits, weight_regime
from hwmodels.target import load_target
from tests.hwmodels.test_macarray import FUSION, INT8, array, gemm, layer_table, stream

W8_W4 = np.array([[8, 8], [4, 4]])


def _target(**change):
    return array(dataflow="os", rows=4, cols=4, dram_bandwidth_gbps=0.5,
                 dram_energy_pj_per_byte=1.0, activations_on_chip=True, precisions=FUSION,
                 precision_scaling="fused", **change)


def _dram(layers, bits=INT8, **change) -> np.ndarray:
    return evaluate(layer_table(layers), bits, _target(**change)).energy_pj_dram


def test_weights_that_fit_are_not_fetched_per_inference():
    # two 16x16x16 layers: 256 + 256 B of int8 weights; 1 KiB double buffered = 512 B usable
    two = [gemm(16, 16, 16), gemm(16, 16, 16)]
    assert _dram(two, filter_sram_kib=1.0).tolist() == [[256], [256]]
    on = evaluate(layer_table(two), INT8, _target(filter_sram_kib=1.0, weights_resident=True))
    assert on.energy_pj_dram.tolist() == [[0], [0]]
    assert on.cycles[0, 0] == 16 * (4 + 4 + 16 - 2)  # compute only: 16 os folds
    assert on.bound[0, 0] == 0


def test_residency_is_decided_per_weight_width():
    # 0.75 KiB double buffered = 384 B: the model needs 512 B at int8, 256 B at int4
    two = [gemm(16, 16, 16), gemm(16, 16, 16)]
    d = _dram(two, W8_W4, filter_sram_kib=0.75, weights_resident=True)
    assert d.tolist() == [[256, 0], [256, 0]]
    # single buffered, the same SRAM holds 768 B: int8 fits too
    d = _dram(two, W8_W4, filter_sram_kib=0.75, weights_resident=True, double_buffered=False)
    assert d.tolist() == [[0, 0], [0, 0]]


def test_vector_unit_parameters_count_and_stay_resident_with_the_weights():
    # 512 B of int8 weights + 10 fp32 constants (40 B) > 512 B usable: nothing resident
    layers = [gemm(16, 16, 16), gemm(16, 16, 16), stream(256, 256, 256, w_elems=10)]
    assert _dram(layers, filter_sram_kib=1.0, weights_resident=True).tolist() == \
        [[256], [256], [40]]
    assert _dram(layers, filter_sram_kib=1.1, weights_resident=True).tolist() == \
        [[0], [0], [0]]  # 563 B usable


def test_a_second_activation_operand_is_never_resident():
    # attention-style matmul of two activations: with activations spilling (tiny ifmap SRAM)
    # its DRAM traffic is the same whether or not weights are resident
    layer = gemm(16, 16, 16, w_elems=0, a_in=2 * 256)
    kw = dict(ifmap_sram_kib=0.1, filter_sram_kib=1.0)
    assert _dram([layer], weights_resident=True, **kw).tolist() == _dram([layer], **kw).tolist()
    assert _dram([layer], **kw)[0, 0] > 0


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 24), min_size=1, max_size=5),
       picks=st.lists(st.integers(0, 1), min_size=5, max_size=5),
       kib=st.floats(0.05, 2.0))
def test_the_layers_kept_resident_always_fit_together(sizes, picks, kib):
    # a mixed plan (each layer at int8 or int4): the weights judged resident (no weight DRAM)
    # never exceed the usable filter SRAM, whatever widths the other layers take
    layers = [gemm(8, s, 8) for s in sizes]
    d = _dram(layers, W8_W4, filter_sram_kib=kib, weights_resident=True)
    kept = sum(8 * s * (8 if b == 0 else 4) / 8 for s, b, row in zip(sizes, picks, d)
               if row[b] == 0)
    assert kept <= kib * 1024 / 2
    table = layer_table(layers)
    w = resident_bits(table, _target(filter_sram_kib=kib, weights_resident=True))
    for b, width in enumerate((8, 4)):  # the report's widest width agrees with the kernel
        assert (d[:, b] == 0).all() == (width <= w)


def test_the_regime_is_stated():
    table = layer_table([gemm(16, 16, 16), gemm(16, 16, 16)])
    assert "every inference" in weight_regime(table, _target(filter_sram_kib=1.0))
    # 0.6 KiB double buffered = 307 B: 512 weights fit at 4 bits (256 B), not at 5 (320 B)
    text = weight_regime(table, _target(filter_sram_kib=0.6, weights_resident=True))
    assert "<= 4 bits" in text and "steady state" in text
    sparse = load_target("sparse-mac-32x32")
    assert sparse.weights_resident and sparse.fold_pipelining
