"""Energy per operation and per memory access, from Horowitz (ISSCC 2014), scaled by process node.

Reference: M. Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014,
45 nm figures: 8-bit int add 0.03 pJ, 32-bit int add 0.1 pJ, 8-bit mult 0.2 pJ, 32-bit mult
3.1 pJ, fp16 add 0.4 / mult 1.1 pJ, fp32 add 0.9 / mult 3.7 pJ; SRAM 64-bit access 10 pJ (8 KB),
20 pJ (32 KB), 100 pJ (1 MB); DRAM 64-bit access 1.3-2.6 nJ.

Node scaling rule (documented assumption): logic and SRAM energy scale linearly with feature
size, E(node) = E(45 nm) * node / 45 -- switched capacitance shrinks with the node while supply
voltage has stayed roughly flat since 45 nm. DRAM energy is *not* scaled: it is dominated by
the off-chip interface, not by the logic node of the accelerator.

Horowitz's DRAM figure is a DDR3-era module access (244 pJ/B at its midpoint). For LPDDR4
parts `lpddr4_pj_per_byte` derives the device's energy per byte in closed form from a
datasheet's IDD currents (the method of Micron TN-53-01 / DRAMPower): burst current above
the active-standby current, times its rail's voltage, over the burst's bandwidth, plus the
activate energy of a row spread over the row's bytes.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

HOROWITZ_NODE_NM = 45.0
INT8_ADD_PJ, INT32_ADD_PJ = 0.03, 0.1
INT8_MULT_PJ = 0.2
FP16_ADD_PJ, FP16_MULT_PJ = 0.4, 1.1
FP32_ADD_PJ, FP32_MULT_PJ = 0.9, 3.7
SRAM_64BIT_PJ = ((8.0, 10.0), (32.0, 20.0), (1024.0, 100.0))  # (size KiB, pJ per 64-bit access)
DRAM_64BIT_PJ = (1300.0 + 2600.0) / 2  # midpoint of Horowitz's 1.3-2.6 nJ range
FLOAT_BITS = (16, 32)


def node_scale(node_nm: npt.ArrayLike) -> float | np.ndarray:
    """Energy factor from Horowitz's 45 nm to `node_nm` (linear in feature size; see module)."""
    return np.asarray(node_nm, dtype=np.float64) / HOROWITZ_NODE_NM


def mult_pj(w_bits: npt.ArrayLike, a_bits: npt.ArrayLike, node_nm: npt.ArrayLike) -> np.ndarray:
    """Multiply energy, pJ. Integers: array-multiplier energy grows with w_bits * a_bits, anchored
    at Horowitz's 8x8 = 0.2 pJ. A float on either side promotes both operands to that float."""
    w, a = np.asarray(w_bits, np.float64), np.asarray(a_bits, np.float64)
    wide = np.maximum(w, a)
    floats = np.where(wide >= 32, FP32_MULT_PJ, FP16_MULT_PJ)
    ints = INT8_MULT_PJ * w * a / 64.0
    return np.where(wide >= 16, floats, ints) * node_scale(node_nm)


def int_add_pj(bits: npt.ArrayLike, node_nm: npt.ArrayLike) -> np.ndarray:
    """Integer add energy, pJ, for any width (accumulators included): linear in width through
    Horowitz's 8-bit 0.03 / 32-bit 0.1 pJ points (ripple-carry energy ~ width)."""
    b = np.asarray(bits, np.float64)
    slope = (INT32_ADD_PJ - INT8_ADD_PJ) / 24.0
    pj = np.where(b <= 8, INT8_ADD_PJ * b / 8.0, INT8_ADD_PJ + slope * (b - 8.0))
    return pj * node_scale(node_nm)


def add_pj(bits: npt.ArrayLike, node_nm: npt.ArrayLike) -> np.ndarray:
    """Add energy, pJ, in the bit-choice convention: 16 and 32 are fp16 / fp32, 1-8 integers."""
    b = np.asarray(bits, np.float64)
    floats = np.where(b >= 32, FP32_ADD_PJ, FP16_ADD_PJ) * node_scale(node_nm)
    return np.where(np.isin(b, FLOAT_BITS), floats, int_add_pj(b, node_nm))


def mac_pj(w_bits: npt.ArrayLike, a_bits: npt.ArrayLike, node_nm: npt.ArrayLike) -> np.ndarray:
    """One multiply-accumulate, pJ: multiply plus an accumulate add. Integer products accumulate
    in 32 bits (Horowitz's 32-bit add); float products in the float's own adder."""
    w, a = np.asarray(w_bits, np.float64), np.asarray(a_bits, np.float64)
    wide = np.maximum(w, a)
    acc = np.where(wide >= 16, add_pj(wide, node_nm), int_add_pj(32.0, node_nm))
    return mult_pj(w, a, node_nm) + acc


def sram_pj_per_byte(size_kib: npt.ArrayLike, node_nm: npt.ArrayLike) -> np.ndarray:
    """SRAM read/write energy per byte for a buffer of `size_kib`: log-log interpolation of
    Horowitz's 64-bit access energies (8 KB, 32 KB, 1 MB), extrapolated with the end slopes."""
    sizes = np.log([s for s, _ in SRAM_64BIT_PJ])
    pjs = np.log([e for _, e in SRAM_64BIT_PJ])
    x = np.log(np.maximum(np.asarray(size_kib, np.float64), 1e-3))
    lo = pjs[0] + (x - sizes[0]) * (pjs[1] - pjs[0]) / (sizes[1] - sizes[0])
    hi = pjs[2] + (x - sizes[2]) * (pjs[2] - pjs[1]) / (sizes[2] - sizes[1])
    inside = np.interp(x, sizes, pjs)
    log_pj = np.where(x < sizes[0], lo, np.where(x > sizes[2], hi, inside))
    return np.exp(log_pj) / 8.0 * node_scale(node_nm)


def dram_pj_per_byte() -> float:
    """DRAM access energy per byte (Horowitz's 64-bit access midpoint / 8); not node-scaled."""
    return DRAM_64BIT_PJ / 8.0


# Micron 6 Gb LPDDR4-3200 x16 channel, as DRAMPower ships it (tukl-msd/DRAMPower
# memspecs/MICRON_6Gb_LPDDR4-3200_32bit_A.json): currents in mA per rail (VDD1 1.8 V, VDD2
# 1.1 V, VDDQ 1.1 V), timings in clocks of 1600 MHz, a 16-bit channel at 2 transfers per
# clock, 1024 columns of 16 bits per row
LPDDR4_VDD1, LPDDR4_VDD2, LPDDR4_VDDQ = 1.8, 1.1, 1.1
LPDDR4_IDD = {"idd0": (3.5, 45.0), "idd2n": (2.0, 27.0), "idd3n": (2.25, 30.0),
              "idd4r": (2.25, 275.0), "idd4w": (2.25, 210.0)}  # (VDD1, VDD2) mA
LPDDR4_IDD4RQ, LPDDR4_IDD4WQ = 150.0, 55.0  # VDDQ mA during read / write bursts
LPDDR4_CLK_MHZ, LPDDR4_RAS, LPDDR4_RC = 1600.0, 68, 97
LPDDR4_WIDTH_BITS, LPDDR4_ROW_BYTES = 16, 1024 * 16 // 8


def lpddr4_pj_per_byte() -> dict[str, float]:
    """LPDDR4 device energy per byte, pJ: "read", "write" (burst above active standby, I/O
    rail included, plus one activate per 2 KiB row: streaming access) and "mean" of the two
    (what a cost model charging one figure per byte moved uses). Background, refresh and
    the SoC's PHY / controller are not included: the board's idle power holds the first two,
    and no citable PHY figure was found (so this is a lower bound on the system's cost)."""
    bytes_per_ns = LPDDR4_WIDTH_BITS * 2 * LPDDR4_CLK_MHZ * 1e-3 / 8.0
    (v1_3n, v2_3n), (v1_2n, v2_2n) = LPDDR4_IDD["idd3n"], LPDDR4_IDD["idd2n"]

    def burst(key: str, q_ma: float) -> float:  # mW / (B / ns) = pJ / B
        v1, v2 = LPDDR4_IDD[key]
        mw = (v1 - v1_3n) * LPDDR4_VDD1 + (v2 - v2_3n) * LPDDR4_VDD2 + q_ma * LPDDR4_VDDQ
        return mw / bytes_per_ns

    # DRAMPower's activate energy: IDD0 over tRC less the standby currents it replaces
    (a1, a2), ras, pre = LPDDR4_IDD["idd0"], LPDDR4_RAS, LPDDR4_RC - LPDDR4_RAS
    ma_clk = ((a1 * LPDDR4_RC - v1_3n * ras - v1_2n * pre) * LPDDR4_VDD1
              + (a2 * LPDDR4_RC - v2_3n * ras - v2_2n * pre) * LPDDR4_VDD2)
    act = ma_clk * 1e3 / LPDDR4_CLK_MHZ / LPDDR4_ROW_BYTES  # mW x clocks / MHz = pJ
    read = burst("idd4r", LPDDR4_IDD4RQ) + act
    write = burst("idd4w", LPDDR4_IDD4WQ) + act
    return {"read": read, "write": write, "mean": (read + write) / 2.0}
