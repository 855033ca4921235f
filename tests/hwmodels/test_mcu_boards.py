"""MCU boards (Cortex-M4 / M33 / M55): schema, sources and the cost arithmetic by hand."""

from __future__ import annotations

import numpy as np
import pytest

from hwmodels import mcu
from hwmodels.target import load_target
from tests.hwmodels.test_cpu import conv, linear, make_table

BOARDS = ("stm32l4r5", "nrf5340", "stm32u575", "cortex-m55", "ek-ra8d1")


@pytest.mark.parametrize("name", BOARDS)
def test_board_loads_with_an_int8_kernel_for_every_layer_class(name):
    t = load_target(name)
    assert t.kind == "mcu" and t.arena_kib <= t.sram_kib
    classes = {k.layer for k in t.kernels if (k.w_bits, k.a_bits) == (8, 8)}
    assert classes == {"conv", "depthwise", "linear"}
    assert {"kernels", "clock_mhz", "flash_wait_states"} <= set(t.sources)


def test_l4r5_linear_layer_matches_hand_arithmetic():
    # AD autoencoder's first layer, 640 -> 128 int8, on the Cortex-M4 @ 120 MHz:
    # compute 81920 MACs / 0.4 per cycle; no data cache -> weights streamed once (m = 1) at
    # (5 wait states + 1) flash cycles per 8-byte read = 0.75 cycles per byte; 2000 dispatch
    t = load_target("stm32l4r5")
    cyc = mcu.evaluate(make_table([linear(1, 640, 128)]), np.array([(8, 8)]), t).cycles[0, 0]
    assert cyc == pytest.approx(81920 / 0.4 + 81920 * 6 / 8 + 2000)


def test_m55_conv_runs_at_the_helium_rate_and_util_refers_to_its_peak():
    # 3x3 conv 16 -> 16 at 16x16: 589824 MACs at 3.0 per cycle; 2304 weight bytes fit the
    # 32 KB D-cache -> one pass at (3 + 1) * 400 / 200 / 16 = 0.5 cycles per byte
    t = load_target("cortex-m55")
    cost = mcu.evaluate(make_table([conv(16, 16, 16)]), np.array([(8, 8)]), t)
    macs = 16 * 16 * 16 * 144
    cycles = macs / 3.0 + 2304 * 0.5 + 3000
    assert cost.cycles[0, 0] == pytest.approx(cycles)
    assert t.peak_macs_per_cycle == 8.0  # dual-beat MVE: 16 int8 MACs per 2 cycles
    assert cost.util[0, 0] == pytest.approx(macs / (cycles * 8.0))


def test_ra8d1_runs_the_m55_kernels_at_480_mhz():
    # the same 3x3 conv on the EK-RA8D1 (Cortex-M85 @ 480 MHz, MLPerf Tiny v1.2 system file):
    # the cortex-m55 kernel rates; flash at half the core clock with 3 wait states again costs
    # (3 + 1) * 480 / 240 / 16 = 0.5 cycles per byte; seconds = cycles / 480 MHz
    t = load_target("ek-ra8d1")
    assert (t.core, t.clock_mhz, t.helium) == ("cortex-m85", 480, True)
    cost = mcu.evaluate(make_table([conv(16, 16, 16)]), np.array([(8, 8)]), t)
    cycles = 16 * 16 * 16 * 144 / 3.0 + 2304 * 0.5 + 3000
    assert cost.cycles[0, 0] == pytest.approx(cycles)
    assert cost.latency_s[0, 0] == pytest.approx(cycles / 480e6)


def test_m33_at_a_higher_clock_is_faster_in_seconds_not_in_cycles():
    nrf, u5 = load_target("nrf5340"), load_target("stm32u575")
    table, bits = make_table([conv(16, 32, 16, ksize=1)]), np.array([(8, 8)])
    a, b = mcu.evaluate(table, bits, nrf), mcu.evaluate(table, bits, u5)
    assert a.latency_s[0, 0] > b.latency_s[0, 0]
    # same kernel rates (same core): the compute cycles agree; only flash stalls differ
    assert nrf.kernels == u5.kernels
