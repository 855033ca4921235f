"""LPDDR4 energy per byte from datasheet currents, and the Pis that use it.

Oracle: hand arithmetic on the Micron 6 Gb LPDDR4-3200 x16 currents as DRAMPower ships them
(memspecs/MICRON_6Gb_LPDDR4-3200_32bit_A.json; mA): a read burst draws IDD4R2 275 on VDD2
(1.1 V) and IDD4RQ 150 on VDDQ (1.1 V) against an active standby of IDD3N2 30; a write
IDD4W2 210 and IDD4WQ 55. The channel moves 16 bit x 2 x 1600 MHz = 6.4 GB/s, so
mW / 6.4 = pJ per byte. An activate (IDD0 3.5 / 45 mA over tRC 97 clocks, less standby:
IDD3N 2.25 / 30 over tRAS 68, IDD2N 2.0 / 27 over the 29 clocks of precharge) costs
1.8 V x 128.5 + 1.1 V x 1542 mA-clocks x 0.625 ns = 1204.7 pJ per 2048-byte row.
"""

import numpy as np
import pytest

from edgesim import assignment
from edgesim.api import load_graph
from edgesim.simulation import runnable, unplanned
from hwmodels import cpu, energy
from hwmodels.target import load_target
from tests.hwmodels.test_cpu import linear, make_table

ACT = (1.8 * (3.5 * 97 - 2.25 * 68 - 2.0 * 29) + 1.1 * (45 * 97 - 30 * 68 - 27 * 29)) * 0.625
READ = ((275 - 30) * 1.1 + 150 * 1.1) / 6.4 + ACT / 2048  # 67.89 + 0.59
WRITE = ((210 - 30) * 1.1 + 55 * 1.1) / 6.4 + ACT / 2048  # 40.39 + 0.59


def test_lpddr4_energy_per_byte_from_the_datasheet_currents():
    e = energy.lpddr4_pj_per_byte()
    assert ACT == pytest.approx(1204.6875)
    assert e["read"] == pytest.approx(READ, rel=1e-9)
    assert e["write"] == pytest.approx(WRITE, rel=1e-9)
    assert e["mean"] == pytest.approx((READ + WRITE) / 2, rel=1e-9)


@pytest.mark.parametrize("name", ["rpi4", "rpi5"])
def test_the_lpddr4_pis_charge_the_datasheet_figure_not_horowitz_ddr3(name):
    """The Pi 4 (LPDDR4-3200) and Pi 5 (LPDDR4X-4267) charge DRAM bytes at the datasheet
    figure (54.7 pJ/B), not Horowitz's DDR3-era 244 pJ/B: an all-DRAM copy's energy is its
    bytes times that figure."""
    t = load_target(name)
    assert t.dram.energy_pj_per_byte == pytest.approx((READ + WRITE) / 2, abs=0.05)
    cost = cpu.evaluate(make_table([linear(1, 4096, 4096)]), np.array([(32, 32)]), t)
    # a 64 MiB fp32 weight matrix streams from DRAM once: at least its bytes are charged
    weights = 4096 * 4096 * 4
    assert cost.energy_pj_dram[0, 0] >= weights * t.dram.energy_pj_per_byte * 0.999
    assert cost.energy_pj_dram[0, 0] < weights * energy.dram_pj_per_byte() * 0.5


def test_pi5_dram_power_stays_within_what_its_lpddr4x_can_draw():
    """Board oracle: the Pi 5's 32-bit LPDDR4X is two x16 channels; reading flat out, one
    draws at most (IDD4R2 - IDD3N2) x VDD2 + IDD4RQ x VDDQ = 434.5 mW at 3200 MT/s
    (datasheet currents above), about 1.16 W for both at 4267 MT/s if the burst currents
    scale with the rate. ncnn's W8A8 mobilenet_v2 (the most DRAM-heavy rpi5 run: 63 MB per
    inference) was charged 15.4 mJ of DRAM in 9.9 ms, 1.57 W -- more than the chips can
    draw."""
    ceiling_w = 2 * ((275 - 30) * 1.1 + 150 * 1.1) * 1e-3 * 4267 / 3200
    g = unplanned(load_graph("zoo:mobilenet_v2", None, shapes_only=True))
    t = load_target("rpi5")
    for runtime in ("ncnn", "onnxruntime"):
        for bits in ("fp32", 8):
            _, cost = runnable(g, assignment.resolve(g, bits), t, None, runtime)
            watts = cost.energy_pj_dram[:, 0].sum() * 1e-12 / cost.latency_s[:, 0].sum()
            assert watts < ceiling_w, (runtime, bits, watts)
