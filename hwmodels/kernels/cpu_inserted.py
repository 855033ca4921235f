"""Cost of the copies onnxruntime inserts between layouts (`hwmodels.ort_layout`), added to
the CPU kernel's output.

- NCHWc reorders (ReorderInput / ReorderOutput, MLAS snchwc.cpp `MlasReorderInputNchw` /
  `MlasReorderOutputNchw`): vector copies of an fp32 tensor, one read and one write per
  element, split over threads like an elementwise op: a memory-bound pass (`add_pass`).
- Transposes (onnxruntime core/providers/cpu/tensor/transpose.cc): moving one axis of a
  uint8 tensor calls `MlasTranspose`, which transposes 8 x 8 byte blocks with
  SSE2 / NEON unpacks (T_BLOCK_CYC per element) when the moved axis has >= 8 entries and
  falls back to a scalar loop (a load and a store per element: T_SCALAR_CYC) when it has
  fewer (the RGB input's 3 channels); a 4-byte tensor takes the scalar
  `SimpleTransposeSingleAxis{In,Out}wards<uint32_t>` loop. Each books max(those cycles,
  bytes / bandwidth of the level the tensor lives in). In onnxruntime 1.32 each of them runs
  on the session's threads: a 2-thread profile shows a parallel section for every single-axis
  Transpose of >= 2 rows, uint8 and fp32, either direction (`bench/bench_parallel_ops.py`);
  assumed: equal shares of the rows (MLAS's transpose work block partitions the M rows).
- The strided side of a transpose (`strided_pass`): `MlasTranspose` walks 8-column strips
  down every row of its M x N input (mlas/lib/transpose.cpp), reading 8 bytes per row and
  visit, and the scalar 4-byte loop writes one element to each of its C output rows in turn
  (transpose.cc `SimpleTransposeSingleAxisOutwards`). A line of that side is visited
  min(line, row bytes) / chunk times; between visits the walk touches one line per row, so
  when those `ws` bytes do not fit a cache level, every visit but the first fetches the line
  again from the first level that holds them: `ort_layout` books the extra bytes and `ws`.
  (uint8 [1, 112, 112, 64] NHWC -> NCHW: 802 KB of lines per strip, > a 512 KiB L2, so each
  of the 8 strips re-reads the input from L3; fp32 [1, 7, 7, 2048]: 2048 rows' lines, 128 KiB,
  > a 32 KiB L1, so every store refills its line from L2.) Not modelled: the L1 data TLB's
  reach. fp32 [1, 56, 56, 128..256] (one page per output row, 128-256 pages > the 64 entries
  of a Zen 2 L1 DTLB) measures 1.36-1.38 cycles per element here against 1.0; costing that
  needs a per-core figure for a TLB miss that hits the L2 TLB under many stores in flight,
  which no source at hand gives.
- Every inserted node pays `op_overhead_us`.
"""

from __future__ import annotations

import numpy as np

from hwmodels.kernels.cpu_layout import (
    ACC_INSTR,
    ACC_LANE_OPS,
    ACC_T_COMPUTE,
    ACC_T_OVERHEAD,
    BOUND_COMPUTE,
    BOUND_DRAM,
    BOUND_ONCHIP,
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
from hwmodels.kernels.cpu_roofline import (
    add_pass,
    dram_bandwidth,
    home,
    level_bandwidth,
    level_capacity,
)
from hwmodels.kernels.jit import njit

# columns of the inserted-copy table [L, B, NI]: fp32 elements reordered (NCHW <-> NCHWc),
# uint8 elements transposed by the scalar loop, uint8 elements transposed in 8 x 8 blocks,
# 4-byte elements transposed by the scalar loop, inserted nodes
I_REORDER, I_T_SCALAR, I_T_U8_BLOCK, I_T_SCALAR_F32, I_NODES = range(5)
# the strided side of the 8 x 8 block and 4-byte scalar transposes (`strided_pass`): bytes
# fetched again, and the bytes of lines one strip / row sweep touches (the largest of the
# layer's transposes of that kind)
I_U8_EXTRA, I_U8_WS, I_F32_EXTRA, I_F32_WS = range(5, 9)
NI = 9
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
    if ins[I_T_SCALAR] > 0:  # cycles as lane ops on 1 / pipes lanes: exactly `cycles` at t = 1
        nbytes = ins[I_T_SCALAR] * 2.0
        add_pass(nbytes, ins[I_T_SCALAR] * T_SCALAR_CYC, 1.0 / p[P_PIPES],
                 home(nbytes, p, ch), p, ch, traffic, acc)
    if ins[I_T_U8_BLOCK] > 0:
        strided_pass(ins[I_T_U8_BLOCK], 1.0, T_BLOCK_CYC, ins[I_U8_EXTRA], ins[I_U8_WS], p,
                     ch, traffic, acc)
    if ins[I_T_SCALAR_F32] > 0:
        strided_pass(ins[I_T_SCALAR_F32], 4.0, T_SCALAR_CYC, ins[I_F32_EXTRA], ins[I_F32_WS],
                     p, ch, traffic, acc)
    acc[ACC_T_OVERHEAD] += ins[I_NODES] * p[P_OP_OVH]


@njit(cache=True)
def serving_level(ws: float, fallback: int, ch: np.ndarray, t: float = 1.0) -> int:
    """The first cache level with room for `ws` bytes (strictly: the other stream needs lines
    too) when t threads sweep a share of them each, at most `fallback` (the level the tensor
    lives in)."""
    for j in range(fallback):
        if ws / t < level_capacity(ch, j, t):
            return j
    return fallback


@njit(cache=True)
def strided_pass(elems: float, eb: float, cyc: float, extra: float, ws: float, p: np.ndarray,
                 ch: np.ndarray, traffic: np.ndarray, acc: np.ndarray) -> None:
    """A transpose of `elems` elements of `eb` bytes at `cyc` cycles each on the session's
    threads, each taking an equal share of the rows, whose strided side fetches `extra` bytes
    again from the level `ws` fits (`serving_level`): max(compute, read + write bytes /
    bandwidth of the tensor's home, extra bytes / bandwidth of the serving level; one sum
    where they are the same level), levels at their t-thread bandwidth."""
    nbytes = elems * eb * 2.0
    nl, t = int(p[P_NLEVELS]), p[P_THREADS]
    lvl = home(nbytes, p, ch)
    j = serving_level(ws, lvl, ch, t)
    bw_home = level_bandwidth(ch, lvl, t) if lvl < nl else dram_bandwidth(p, t)
    bw_j = level_bandwidth(ch, j, t) if j < nl else dram_bandwidth(p, t)
    mem_home = (nbytes + (extra if j == lvl else 0.0)) / bw_home
    mem_j = extra / bw_j if j != lvl else 0.0
    comp = elems * cyc
    traffic[0] += nbytes + extra
    if lvl > 0:
        traffic[lvl] += nbytes
    if j > 0:
        traffic[j] += extra
    busy = max(comp / t, mem_home, mem_j)
    slow = lvl if mem_home >= mem_j else j
    bound = BOUND_COMPUTE if comp / t >= busy else (BOUND_ONCHIP if slow < nl else BOUND_DRAM)
    acc[ACC_T_COMPUTE + bound] += busy
    acc[ACC_LANE_OPS] += comp
    acc[ACC_INSTR] += comp * p[P_PIPES]  # as `add_pass` books `comp` lane ops on 1 / pipes lanes


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
