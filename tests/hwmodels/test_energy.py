"""Energy tables: Horowitz (ISSCC 2014) anchor values, interpolation, node scaling."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwmodels import energy
from hwmodels.configs import from_targets, pair_rates
from tests.hwmodels.test_macarray import FUSION, array


def test_horowitz_45nm_anchor_values():
    assert energy.mult_pj(8, 8, 45) == pytest.approx(0.2)
    assert energy.mult_pj(32, 32, 45) == pytest.approx(3.7)  # 32 = fp32
    assert energy.mult_pj(16, 16, 45) == pytest.approx(1.1)  # 16 = fp16
    assert energy.int_add_pj(8, 45) == pytest.approx(0.03)
    assert energy.int_add_pj(32, 45) == pytest.approx(0.1)
    assert energy.add_pj(32, 45) == pytest.approx(0.9)
    assert energy.add_pj(16, 45) == pytest.approx(0.4)


def test_mac_is_multiply_plus_accumulate():
    assert energy.mac_pj(8, 8, 45) == pytest.approx(0.2 + 0.1)  # int8 x int8 into int32
    assert energy.mac_pj(32, 32, 45) == pytest.approx(3.7 + 0.9)
    assert energy.mac_pj(16, 16, 45) == pytest.approx(1.1 + 0.4)
    assert energy.mac_pj(4, 32, 45) == pytest.approx(3.7 + 0.9)  # weight-only: fp32 MAC
    assert energy.mult_pj(4, 8, 45) == pytest.approx(0.2 / 2)  # multiplier ~ w_bits * a_bits


def test_sram_energy_passes_through_the_three_published_points():
    per_byte = energy.sram_pj_per_byte(np.array([8.0, 32.0, 1024.0]), 45)
    assert per_byte * 8 == pytest.approx([10.0, 20.0, 100.0])  # 64-bit access


@settings(max_examples=25, deadline=None)
@given(st.floats(1.0, 8192.0), st.floats(1.0, 8192.0))
def test_bigger_sram_never_costs_less_per_access(a, b):
    small, big = energy.sram_pj_per_byte(np.array([min(a, b), max(a, b)]), 45)
    assert small <= big


def test_logic_and_sram_scale_linearly_with_node_but_dram_does_not():
    assert energy.mac_pj(8, 8, 22.5) == pytest.approx(0.15)
    assert energy.sram_pj_per_byte(32.0, 90) == pytest.approx(2 * 20.0 / 8)
    assert energy.dram_pj_per_byte() == pytest.approx((1300 + 2600) / 2 / 8)


def test_fused_mixed_precision_energy_is_the_geometric_mean():
    target = array(precisions=FUSION, precision_scaling="fused")
    rate, pj = pair_rates(from_targets([target]), np.array([4, 8]), np.array([8, 8]))
    e4, e8 = energy.mac_pj(4, 4, 45), energy.mac_pj(8, 8, 45)
    assert pj[0].tolist() == pytest.approx([np.sqrt(e4 * e8), e8])
    assert rate[0].tolist() == [2.0, 1.0]
