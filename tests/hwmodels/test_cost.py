"""The Cost type, bit-choice checks, memory figures and the evaluate dispatch."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwmodels import kinds, macarray
from hwmodels.cost import Cost, check_bits, evaluate, memory_bytes
from hwmodels.target import load_target
from tests.hwmodels.test_macarray import gemm, layer_table, stream


def _cost(cycles, latency, bound, util, **extra):
    cycles = np.asarray(cycles, dtype=float)
    return Cost(cycles=cycles, latency_s=np.asarray(latency, float),
                energy_pj_compute=cycles * 1.0, energy_pj_onchip=cycles * 2.0,
                energy_pj_dram=cycles * 3.0, bound=np.asarray(bound),
                util=np.asarray(util, float), **extra)


def test_fields_are_normalised_and_memory_defaults_to_zero():
    c = _cost([[1, 2]], [[0.1, 0.2]], [[0, 2]], [[0.5, 1.0]])
    assert c.cycles.dtype == np.float64 and c.bound.dtype == np.int8
    assert np.array_equal(c.weight_bytes, [[0.0, 0.0]])
    assert np.array_equal(c.energy_pj, [[6.0, 12.0]])  # 1 + 2 + 3 pJ per cycle here


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="util has shape"):
        _cost([[1, 2]], [[0.1, 0.2]], [[0, 0]], [0.5])


def test_total_sums_layers_and_weights_util_by_time():
    # 2 layers x 1 bit choice: layer 0 takes 3 s at util 0.2 (DRAM bound), layer 1 1 s at 1.0
    c = _cost([[30], [10]], [[3.0], [1.0]], [[2], [0]], [[0.2], [1.0]],
              weight_bytes=np.array([[5.0], [7.0]]), act_bytes=np.array([[100.0], [40.0]]))
    t = c.total()
    assert t.cycles.shape == (1,)
    assert t.cycles[0] == 40 and t.latency_s[0] == 4.0
    assert t.energy_pj_dram[0] == 3.0 * 40
    assert t.util[0] == pytest.approx((0.2 * 3 + 1.0 * 1) / 4)
    assert t.bound[0] == 2  # 3 of the 4 seconds are DRAM bound
    assert t.weight_bytes[0] == 12 and t.act_bytes[0] == 100  # weights add, activations peak


def test_total_reduces_the_layer_axis_of_config_sweeps():
    c = _cost(np.ones((3, 5, 2)), np.ones((3, 5, 2)), np.zeros((3, 5, 2), int),
              np.ones((3, 5, 2)))
    assert c.total().cycles.shape == (3, 2)
    assert np.all(c.total().cycles == 5)


def test_total_of_an_unsupported_choice_stays_infinite_without_nans():
    c = _cost([[np.inf], [np.inf]], [[np.inf], [np.inf]], [[0], [0]], [[0.0], [0.0]])
    t = c.total()
    assert np.isinf(t.latency_s[0]) and t.util[0] == 0.0


def test_add_runs_one_after_the_other():
    a = _cost([[10.0]], [[1.0]], [[0]], [[1.0]], act_bytes=np.array([[8.0]]))
    b = _cost([[20.0]], [[3.0]], [[2]], [[0.2]], act_bytes=np.array([[5.0]]))
    s = a + b
    assert s.cycles[0, 0] == 30 and s.latency_s[0, 0] == 4.0
    assert s.energy_pj_onchip[0, 0] == 60.0
    assert s.bound[0, 0] == 2  # the slower part (3 s) is DRAM bound
    assert s.util[0, 0] == pytest.approx((1.0 * 1 + 0.2 * 3) / 4)
    assert s.act_bytes[0, 0] == 8.0


@pytest.mark.parametrize("bits, match", [
    ([[8, 8, 8]], "shape"), ([8, 8], "shape"), ([[8, 8], [12, 8]], r"bits\[1\]"),
    ([[0, 8]], r"bits\[0\]"),
])
def test_check_bits_refuses_bad_choices(bits, match):
    with pytest.raises(ValueError, match=match):
        check_bits(np.array(bits))


def test_memory_bytes_by_hand():
    table = layer_table([gemm(m=10, n=20, k=50, w_elems=1000, a_in=500, a_out=200),
                         stream(ops=300, a_in=300, a_out=300, w_elems=64)])
    weight, act = memory_bytes(table, np.array([[4, 8], [32, 32]]))
    assert weight[0].tolist() == [1000 * 4 / 8, 1000 * 4]  # GEMM weights at w_bits
    assert weight[1].tolist() == [64 * 4, 64 * 4]  # a norm's fp32 constants stay fp32
    assert act[0].tolist() == [(500 + 200) * 1, (500 + 200) * 4]  # a_bits 8 -> 1 B, 32 -> 4 B


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 8), st.integers(1, 8), st.integers(1, 10_000))
def test_fewer_bits_never_more_weight_bytes(w1, w2, elems):
    table = layer_table([gemm(m=4, n=4, k=4, w_elems=elems, a_in=16, a_out=16)])
    weight, _ = memory_bytes(table, np.array([[min(w1, w2), 8], [max(w1, w2), 8]]))
    assert weight[0, 0] <= weight[0, 1]


def test_evaluate_dispatches_on_the_target_type():
    target = load_target("systolic-16x16")
    table = layer_table([gemm(m=64, n=32, k=48)])
    bits = np.array([[8, 8]])
    assert kinds.cost_model(target) is macarray.evaluate
    via_dispatch = evaluate(table, bits, target)
    direct = macarray.evaluate(table, bits, target)
    assert np.array_equal(via_dispatch.cycles, direct.cycles)
    assert via_dispatch.cycles.shape == (1, 1)


def test_evaluate_refuses_an_object_that_is_no_target():
    with pytest.raises(TypeError, match="no cost model for str"):
        evaluate(layer_table([gemm(m=4, n=4, k=4)]), np.array([[8, 8]]), "rpi5")
