"""Cost of the copies onnxruntime inserts between layouts (`hwmodels.ort_layout`), added to
the CPU kernel's output.

- NCHWc reorders (ReorderInput / ReorderOutput, MLAS snchwc.cpp `MlasReorderInputNchw` /
  `MlasReorderOutputNchw`): vector copies of an fp32 tensor, one read and one write per
  element, split over threads like an elementwise op: a memory-bound pass (`add_pass`).
- Transposes (onnxruntime core/providers/cpu/tensor/transpose.cc, single-threaded): moving
  one axis of a uint8 tensor calls `MlasTranspose`, which transposes 8 x 8 byte blocks with
  SSE2 / NEON unpacks (T_BLOCK_CYC per element) when the moved axis has >= 8 entries and
  falls back to a scalar loop (a load and a store per element: T_SCALAR_CYC) when it has
  fewer (the RGB input's 3 channels); a 4-byte tensor takes the scalar
  `SimpleTransposeSingleAxis{In,Out}wards<uint32_t>` loop. Each books max(those cycles,
  bytes / bandwidth of the level the tensor lives in) on one thread.
- Every inserted node pays `op_overhead_us`.
"""

from __future__ import annotations

import numpy as np

from hwmodels.kernels.cpu_layout import (
    ACC_INSTR,
    ACC_LANE_OPS,
    ACC_T_OVERHEAD,
    C_E_BYTE,
    MAX_LEVELS,
    NACC,
    O_CYCLES,
    O_E_COMPUTE,
    O_E_DRAM,
    O_E_ONCHIP,
    O_LATENCY,
    O_UTIL,
    P_CLOCK_HZ,
    P_E_DRAM,
    P_E_INSTR,
    P_E_OP,
    P_LANES32,
    P_NLEVELS,
    P_OP_OVH,
    P_PIPES,
    P_THREADS,
)
from hwmodels.kernels.cpu_roofline import add_pass, home
from hwmodels.kernels.jit import njit

# columns of the inserted-copy table [L, B, NI]: fp32 elements reordered (NCHW <-> NCHWc),
# uint8 elements transposed by the scalar loop, uint8 elements transposed in 8 x 8 blocks,
# 4-byte elements transposed by the scalar loop, inserted nodes
I_REORDER, I_T_SCALAR, I_T_U8_BLOCK, I_T_SCALAR_F32, I_NODES = range(5)
NI = 5
# assumed: the scalar transpose loop retires one element per cycle (one load and one store:
# a single store port bounds it on Zen 2/3 and Skylake-class cores and on the A76)
T_SCALAR_CYC = 1.0
# MlasTranspose8x8Block (SSE2, mlas/lib/transpose.cpp): 8 loads, 24 unpack uops (3 rounds of
# 8) and 8 stores per 64 bytes, at 3 vector uops per cycle (hwmodels.cpu_x86
# VECTOR_ISSUE_PER_CYCLE)
T_BLOCK_CYC = (8.0 + 24.0 + 8.0) / 64.0 / 3.0


@njit(cache=True)
def copy_cycles(ins: np.ndarray, p: np.ndarray, ch: np.ndarray, traffic: np.ndarray,
                acc: np.ndarray) -> None:
    """Book the inserted copies of one layer (`ins`: one row of NI columns) into `traffic`
    and `acc` (the kernel's accumulators)."""
    if ins[I_REORDER] > 0:
        nbytes = ins[I_REORDER] * 8.0  # fp32 read + write
        add_pass(nbytes, 0.0, p[P_LANES32], home(nbytes, p, ch), p, ch, traffic, acc)
    one = p.copy()
    one[P_THREADS] = 1.0  # onnxruntime's Transpose kernel runs on the calling thread
    # cycles booked as lane ops on 1 / pipes lanes: add_pass books exactly `cycles` at t = 1
    for col, eb, cyc in ((I_T_SCALAR, 1.0, T_SCALAR_CYC), (I_T_U8_BLOCK, 1.0, T_BLOCK_CYC),
                         (I_T_SCALAR_F32, 4.0, T_SCALAR_CYC)):
        if ins[col] > 0:
            nbytes = ins[col] * eb * 2.0
            add_pass(nbytes, ins[col] * cyc, 1.0 / p[P_PIPES], home(nbytes, p, ch), one, ch,
                     traffic, acc)
    acc[ACC_T_OVERHEAD] += ins[I_NODES] * p[P_OP_OVH]


@njit(cache=True)
def add_inserted(ins: np.ndarray, params: np.ndarray, caches: np.ndarray,
                 out: np.ndarray) -> None:
    """Add the inserted copies `ins` [H, L, B, NI] to the kernel's output [NO, H, L, B]:
    cycles, latency, energy; utilisation scaled to the longer time."""
    for h in range(ins.shape[0]):
        p, ch = params[h], caches[h]
        nl = int(p[P_NLEVELS])
        for i in range(ins.shape[1]):
            for b in range(ins.shape[2]):
                if ins[h, i, b, I_NODES] == 0:
                    continue
                traffic, acc = np.zeros(MAX_LEVELS + 1), np.zeros(NACC)
                copy_cycles(ins[h, i, b], p, ch, traffic, acc)
                cycles = acc[0] + acc[1] + acc[2] + acc[3]
                old = out[O_CYCLES, h, i, b]
                out[O_CYCLES, h, i, b] = old + cycles
                out[O_LATENCY, h, i, b] += cycles / p[P_CLOCK_HZ]
                out[O_E_COMPUTE, h, i, b] += acc[ACC_INSTR] * p[P_E_INSTR] + acc[
                    ACC_LANE_OPS] * p[P_E_OP]
                for j in range(nl):
                    out[O_E_ONCHIP, h, i, b] += traffic[j] * ch[j, C_E_BYTE]
                out[O_E_DRAM, h, i, b] += traffic[nl] * p[P_E_DRAM]
                if old + cycles > 0:
                    out[O_UTIL, h, i, b] *= old / (old + cycles)
