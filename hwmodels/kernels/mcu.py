"""The microcontroller cost kernel: one call over layers x bit choices.

Formulas and their sources:
- GEMM layers run CMSIS-NN-like kernels (Lai, Suda, Chandra, "CMSIS-NN: Efficient Neural
  Network Kernels for Arm Cortex-M CPUs", 2018) at a measured or derived throughput in MACs
  per cycle per (layer class, w_bits, a_bits): cycles = macs / rate. Weight-only layers
  (float activations) run the fp32 kernel after dequantising each weight once
  (DEQUANT_CYCLES per weight).
- Weights live in flash. A flash line of `flash_line_bytes` costs (wait_states + 1) flash-clock
  cycles, i.e. (ws + 1) * clock / flash_clock core cycles; the in-order core stalls for it.
  Weights are read once if the layer's weights fit the data cache, else once per pass:
  CMSIS-NN's convolution re-reads the weights for every 2 output pixels (partial im2col of
  two columns, Lai et al. 2018 Sec. 3.2), fully connected layers once per batch row, and
  depthwise layers once per output pixel.
- Elementwise / pool / norm layers: ops * cycles_per_op, + exp_cycles per exp / log / tanh /
  erf evaluation (`LayerTable.transcendentals`: softmax, sigmoid, tanh, gelu, silu...);
  copies move `sram_bytes_per_cycle`; views are free. Every non-view layer pays the
  interpreter's `op_overhead_cycles` (TensorFlow Lite Micro-style dispatch).
- Energy: run power x time (datasheet current x supply), split into compute and memory time.
"""

from __future__ import annotations

import math

import numpy as np

from compiler.ir import CATEGORY_COPY, CATEGORY_GEMM, CATEGORY_VIEW
from hwmodels.kernels.jit import njit

# layer classes (rows of `rates`)
CLASS_CONV, CLASS_DEPTHWISE, CLASS_LINEAR = range(3)

# layer columns of `lay` (int64 [L, NL])
L_KIND, L_CAT, L_CLASS, L_M, L_N, L_K, L_G, L_MACS, L_OPS, L_WEL, L_AIN, L_AOUT, L_WB = range(13)
L_TRANS = 13  # exp / log / tanh / erf evaluations (LayerTable.exp_evaluations)
NL = 14

# params (float64 [NP])
(P_CLOCK_HZ, P_FLASH_CYC_PER_BYTE, P_DCACHE_BYTES, P_SRAM_BPC, P_STREAM_CPO, P_FLOAT_CPO,
 P_EXP_CYC, P_OP_OVH, P_POWER_W, P_PEAK) = range(10)
NP = 10

# per bit choice (float64 [NB, B]): weight bytes per element, dequantise flag, a bytes/elem
B_WSTORE, B_DEQUANT, B_ABYTES = range(3)
NB = 3

# outputs (float64 [NO, L, B])
O_CYCLES, O_LATENCY, O_E_COMPUTE, O_E_ONCHIP, O_E_DRAM, O_BOUND, O_UTIL, O_WBYTES = range(8)
NO = 8

BOUND_COMPUTE, BOUND_ONCHIP, BOUND_OVERHEAD = 0, 1, 3
DEQUANT_CYCLES = 2.0  # assumed: unpack + convert + scale one weight to fp32 (once per layer)
WEIGHT_REUSE = (2.0, 1.0, 1.0)  # output pixels (conv, depthwise) / rows (linear) per weight pass


@njit(cache=True)
def weight_passes(li: np.ndarray, w_bytes: float, p: np.ndarray) -> float:
    """How often a layer's weights are streamed from flash (see module docstring)."""
    if w_bytes <= p[P_DCACHE_BYTES]:
        return 1.0
    return max(1.0, math.ceil(li[L_M] / WEIGHT_REUSE[li[L_CLASS]]))


@njit(cache=True)
def gemm_cycles(li: np.ndarray, rate: float, wstore: float, dequant: float,
                p: np.ndarray) -> tuple[float, float, float]:
    """(compute cycles, flash stall cycles, weight bytes) of a conv / linear layer."""
    w_bytes = float(li[L_WEL]) * wstore
    if rate <= 0.0:
        return math.inf, 0.0, w_bytes
    comp = float(li[L_MACS]) / rate + dequant * float(li[L_WEL]) * DEQUANT_CYCLES
    stall = weight_passes(li, w_bytes, p) * w_bytes * p[P_FLASH_CYC_PER_BYTE]
    return comp, stall, w_bytes


@njit(cache=True)
def stream_cycles(li: np.ndarray, abytes: float, p: np.ndarray) -> tuple[float, float]:
    """(compute cycles, memory cycles) of an elementwise layer or a copy."""
    moved = float(li[L_AIN] + li[L_AOUT]) * abytes / p[P_SRAM_BPC]
    if li[L_CAT] == CATEGORY_COPY:
        return 0.0, moved
    cpo = p[P_FLOAT_CPO] if abytes >= 4.0 else p[P_STREAM_CPO]
    comp = float(li[L_OPS]) * cpo + float(li[L_TRANS]) * p[P_EXP_CYC]
    return comp, moved


@njit(cache=True)
def layer_cost(li: np.ndarray, rates: np.ndarray, per_b: np.ndarray, b: int, p: np.ndarray,
               res: np.ndarray) -> None:
    """Cost one layer at bit choice b into res [NO]."""
    cat, w_bytes = li[L_CAT], float(li[L_WB])
    comp, mem, over = 0.0, 0.0, 0.0
    if cat == CATEGORY_GEMM:
        comp, mem, w_bytes = gemm_cycles(li, rates[li[L_CLASS], b], per_b[B_WSTORE, b],
                                         per_b[B_DEQUANT, b], p)
    elif cat != CATEGORY_VIEW:
        comp, mem = stream_cycles(li, per_b[B_ABYTES, b], p)
    if cat != CATEGORY_VIEW:
        over = p[P_OP_OVH]
    cycles = comp + mem + over
    res[O_CYCLES], res[O_LATENCY] = cycles, cycles / p[P_CLOCK_HZ]
    joules_per_cycle = p[P_POWER_W] / p[P_CLOCK_HZ]
    res[O_E_COMPUTE] = (comp + over) * joules_per_cycle * 1e12
    res[O_E_ONCHIP] = mem * joules_per_cycle * 1e12
    res[O_BOUND] = BOUND_COMPUTE if comp >= max(mem, over) else (
        BOUND_ONCHIP if mem >= over else BOUND_OVERHEAD)
    macs = float(li[L_MACS])
    res[O_UTIL] = macs / (cycles * p[P_PEAK]) if cycles > 0 and math.isfinite(cycles) else 0.0
    res[O_WBYTES] = w_bytes


@njit(cache=True)
def evaluate(lay: np.ndarray, rates: np.ndarray, per_b: np.ndarray, p: np.ndarray,
             out: np.ndarray) -> None:
    """Fill out [NO, L, B]; rates [3, B] MACs/cycle per layer class and bit choice."""
    res = np.zeros(NO)
    for i in range(lay.shape[0]):
        for b in range(per_b.shape[1]):
            res[:] = 0.0
            layer_cost(lay[i], rates, per_b, b, p, res)
            for f in range(NO):
                out[f, i, b] = res[f]
