"""MCU cost model and fit check: hand arithmetic, CMSIS-NN's published CIFAR-10 latency."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwmodels import cost as cost_mod
from hwmodels import mcu
from hwmodels.mcu import McuKernel, McuTarget
from hwmodels.target import load_target
from tests.hwmodels.test_cpu import conv, layer, linear, make_table

M7 = Path(__file__).resolve().parents[2] / "targets" / "cortex-m7.yaml"


def simple_mcu(**changes: object) -> McuTarget:
    """100 MHz, zero-wait flash at the core clock (1/32 cycle per byte), 1000-cycle dispatch."""
    kernels = (McuKernel("conv", 8, 8, 0.5), McuKernel("linear", 8, 8, 1.0),
               McuKernel("conv", 4, 8, 0.25), McuKernel("conv", 32, 32, 0.2),
               McuKernel("linear", 32, 32, 0.25), McuKernel("depthwise", 8, 8, 0.5))
    base = McuTarget(name="m", description="test", sources={}, core="cortex-m7", clock_mhz=100,
                     fpu="sp", dsp=True, sram_kib=256, arena_kib=128, dcache_kib=1024,
                     flash_kib=1024, flash_wait_states=0, flash_clock_mhz=100,
                     flash_line_bytes=32, sram_bytes_per_cycle=4, kernels=kernels,
                     stream_cycles_per_op=0.5, float_cycles_per_op=2.0, exp_cycles=30,
                     op_overhead_cycles=1000, run_power_mw=100)
    return dataclasses.replace(base, **changes)


def mcu_cycles(rows: list[dict], bits: list[tuple[int, int]], target: McuTarget) -> np.ndarray:
    return mcu.evaluate(make_table(rows), np.array(bits), target).cycles


def test_conv_cycles_are_macs_over_rate_plus_flash_and_dispatch():
    c = conv(16, 32, 8)  # 64 px x 32 filters x 144 = 294912 MACs, 4608 int8 weights
    cyc = mcu_cycles([c], [(8, 8)], simple_mcu())
    assert cyc[0, 0] == 294912 / 0.5 + 4608 / 32 + 1000  # weights fit the D-cache: read once


def test_weights_beyond_the_dcache_are_refetched_every_two_pixels():
    c = conv(16, 32, 8)
    small_cache = simple_mcu(dcache_kib=1.0)  # 4608 B of weights > 1 KiB
    cyc = mcu_cycles([c], [(8, 8)], small_cache)
    assert cyc[0, 0] == 294912 / 0.5 + (64 / 2) * 4608 / 32 + 1000  # ceil(64 px / 2) passes


def test_kernel_selection_by_bits():
    rows = [linear(1, 256, 64)]
    target = simple_mcu()
    cyc = mcu_cycles(rows, [(8, 8), (3, 32), (8, 16)], target)
    assert cyc[0, 0] == 16384 / 1.0 + 16384 / 32 + 1000  # int8 linear kernel
    # weight-only: dequantise each weight (2 cycles) then the fp32 kernel; 3-bit packs as int4
    assert cyc[0, 1] == 16384 / 0.25 + 16384 * 2 + 16384 * 0.5 / 32 + 1000
    assert np.isinf(cyc[0, 2])  # no int16-activation linear kernel on this MCU
    assert mcu.evaluate(make_table(rows), np.array([(8, 16)]), target).util[0, 0] == 0


def test_int4_weights_use_the_narrowest_kernel_that_fits():
    assert mcu.kernel_rate(simple_mcu(), "conv", 3, 8) == (0.25, False)
    assert mcu.kernel_rate(simple_mcu(), "conv", 6, 8) == (0.5, False)
    assert mcu.kernel_rate(simple_mcu(), "conv", 8, 32) == (0.2, True)


def test_energy_is_run_power_times_latency():
    cost = mcu.evaluate(make_table([conv(16, 32, 8), linear(1, 64, 10)]),
                        np.array([(8, 8), (32, 32)]), simple_mcu())
    np.testing.assert_allclose(cost.energy_pj, cost.latency_s * 0.1 * 1e12)  # 100 mW


def test_cmsis_nn_cifar10_latency_within_25_percent():
    # Lai et al. 2018 (CMSIS-NN), CIFAR-10 CNN on a Cortex-M7 (STM32F746 @ 216 MHz): 99.1 ms.
    # F746: flash on the 216 MHz AXI bus with 7 wait states (RM0385), 4 KB D-cache.
    f746 = dataclasses.replace(load_target(str(M7)), clock_mhz=216, flash_clock_mhz=216,
                               flash_wait_states=7, dcache_kib=4)

    def pool(c: int, hw: int) -> dict:  # 3x3 max pool, stride 2
        return layer("pool", ops=c * (hw // 2) ** 2 * 9, a_in=c * hw * hw, a_out=c * (hw // 2) ** 2)

    def relu(c: int, hw: int) -> dict:
        return layer("activation", ops=c * hw * hw, a_in=c * hw * hw, a_out=c * hw * hw)

    net = [conv(3, 32, 32, 5), relu(32, 32), pool(32, 32), conv(32, 32, 16, 5), relu(32, 16),
           pool(32, 16), conv(32, 64, 8, 5), relu(64, 8), pool(64, 8), linear(1, 1024, 10)]
    latency = mcu.evaluate(make_table(net), np.array([(8, 8)]), f746).latency_s.sum()
    assert latency == pytest.approx(99.1e-3, rel=0.25)


def test_check_fit_reports_overflows_in_bytes():
    target = simple_mcu(flash_kib=64, arena_kib=32, sram_kib=64)
    big = linear(1, 256, 257)  # 65792 int8 weights: 256 B over 64 KiB of flash
    act = layer("eltwise", ops=1, a_in=20000, a_out=20000)
    table = make_table([big, act])
    rep = mcu.check_fit(table, [8, 8], target)
    assert rep.weight_overflow_bytes == 256 * 257 - 64 * 1024
    assert rep.peak_layer == "l1" and rep.peak_act_bytes == 40000
    assert rep.act_overflow_bytes == 40000 - 32 * 1024 and not rep.fits
    packed = mcu.check_fit(table, [(4, 8), (8, 8)], target)  # per-layer bits, int4 packs 2/byte
    assert packed.weight_bytes == (256 * 257 + 1) // 2 and packed.weight_overflow_bytes == 0


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5000), st.integers(1, 5000)), min_size=1, max_size=6),
       st.sampled_from([2, 4, 8, 16, 32]))
def test_peak_activation_is_the_largest_layer(sizes, a_bits):
    rows = [layer("eltwise", ops=1, a_in=i, a_out=o) for i, o in sizes]
    rep = mcu.check_fit(make_table(rows), [8, a_bits], simple_mcu())
    width = {2: 8, 4: 8, 8: 8, 16: 16, 32: 32}[a_bits]  # int8 / int16 / fp32 activations
    assert rep.peak_act_bytes == max((i + o) * width // 8 for i, o in sizes)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 64), st.integers(1, 512), st.integers(1, 512), st.floats(1.1, 3.0),
       st.sampled_from([(8, 8), (4, 8), (32, 32), (4, 32)]))
def test_higher_clock_never_slower_and_fewer_bits_never_bigger(m, k, n, factor, bits):
    m7 = load_target(str(M7))
    table, b = make_table([linear(m, k, n), conv(8, 16, 8)]), np.array([bits])
    base = mcu.evaluate(table, b, m7)
    fast = mcu.evaluate(table, b, dataclasses.replace(m7, clock_mhz=m7.clock_mhz * factor))
    assert (fast.latency_s <= base.latency_s * (1 + 1e-12)).all()
    sizes = [mcu.check_fit(table, [w, 8], m7).weight_bytes for w in (2, 4, 6, 8, 16, 32)]
    assert sizes == sorted(sizes)


def test_dispatch_and_shipped_target():
    m7 = load_target(str(M7))
    table, bits = make_table([conv(3, 8, 16)]), np.array([(8, 8)])
    via = cost_mod.evaluate(table, bits, m7, threads=4)
    np.testing.assert_array_equal(via.cycles, mcu.evaluate(table, bits, m7).cycles)
    assert m7.peak_macs_per_cycle == 2.0  # SMLAD: two 16-bit MACs per cycle
