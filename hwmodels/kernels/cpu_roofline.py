"""The CPU cost kernel's memory and thread side: cache levels, the shared DRAM roof, the
thread model, passes over memory and the roofline booking of a GEMM (formulas and sources in
`hwmodels.kernels.cpu`)."""

from __future__ import annotations

import math

import numpy as np

from hwmodels.kernels.arith import cdiv
from hwmodels.kernels.cpu_layout import (
    ACC_INSTR,
    ACC_LANE_OPS,
    ACC_T_COMPUTE,
    ACC_T_DRAM,
    ACC_T_ONCHIP,
    BOUND_COMPUTE,
    BOUND_DRAM,
    BOUND_ONCHIP,
    C_BPC,
    C_BYTES,
    C_SHARED,
    L_AIN,
    L_AOUT,
    L_G,
    L_K,
    L_N,
    LLC_RESIDENT,
    P_CORES,
    P_DRAM_ALL_BPC,
    P_DRAM_BPC,
    P_DRAM_MISS_BPC,
    P_LANES32,
    P_NLEVELS,
    P_PAR_EFF,
    P_PIPES,
    P_THREADS,
    RUNTIME_ORT,
    STREAM_BYTES_PER_THREAD,
    THREAD_MACS,
)
from hwmodels.kernels.jit import njit


@njit(cache=True)
def level_capacity(ch: np.ndarray, j: int, t: float) -> float:
    """Bytes of cache level j one thread can use (a shared level is split among threads)."""
    return ch[j, C_BYTES] / t if ch[j, C_SHARED] > 0 else ch[j, C_BYTES]


@njit(cache=True)
def level_bandwidth(ch: np.ndarray, j: int, t: float) -> float:
    """Bytes per cycle level j serves to t threads (private levels scale with threads)."""
    return ch[j, C_BPC] if ch[j, C_SHARED] > 0 else ch[j, C_BPC] * t


@njit(cache=True)
def serial_share(p: np.ndarray, t: float) -> float:
    """Compute time at t threads relative to a perfect 1 / t split: each thread beyond the
    first adds `parallel_efficiency` of a core (shared L2 / DRAM contention, barriers)."""
    return t / (1.0 + (t - 1.0) * p[P_PAR_EFF])


@njit(cache=True)
def on_calling_thread(p: np.ndarray) -> np.ndarray:
    """The parameters of a kernel onnxruntime runs on the calling thread alone, whatever the
    session's threads (its DequantizeLinear takes no thread pool)."""
    one = p.copy()
    one[P_THREADS] = 1.0
    return one


@njit(cache=True)
def dram_bandwidth(p: np.ndarray, t: float) -> float:
    """DRAM bytes per cycle t threads draw together: the one-thread sustained figure at t = 1,
    the all-core figure at t = cores, linear in between (a shared roof that saturates)."""
    if p[P_CORES] <= 1.0:
        return p[P_DRAM_BPC]
    share = min(1.0, (t - 1.0) / (p[P_CORES] - 1.0))
    return p[P_DRAM_BPC] + (p[P_DRAM_ALL_BPC] - p[P_DRAM_BPC]) * share


@njit(cache=True)
def fits_llc(nbytes: float, p: np.ndarray, ch: np.ndarray) -> bool:
    """Whether `nbytes` stay in the last cache level between ops."""
    return nbytes <= LLC_RESIDENT * ch[int(p[P_NLEVELS]) - 1, C_BYTES]


@njit(cache=True)
def home(nbytes: float, p: np.ndarray, ch: np.ndarray) -> int:
    """Where a tensor passed between ops lives: the last cache level if it fits, else DRAM."""
    nl = int(p[P_NLEVELS])
    return nl - 1 if fits_llc(nbytes, p, ch) else nl


@njit(cache=True)
def blocked(p: np.ndarray) -> int:
    """Level serving per-thread blocked buffers (im2col, packed panels): L2, or L1 alone."""
    return min(1, int(p[P_NLEVELS]) - 1)


@njit(cache=True)
def add_pass(nbytes: float, lane_ops: float, lanes: float, level: int, p: np.ndarray,
             ch: np.ndarray, traffic: np.ndarray, acc: np.ndarray) -> None:
    """A pass served by cache `level` (n_levels = DRAM) on the threads an elementwise op gets
    (one per 64 KiB): book max(lane_ops / (lanes * pipes * t), bytes / bandwidth), the
    compute side waiting for a contended DRAM roof as in `book_core`."""
    t = max(1.0, min(p[P_THREADS], cdiv(nbytes, STREAM_BYTES_PER_THREAD)))
    nl = int(p[P_NLEVELS])
    comp = lane_ops / (lanes * p[P_PIPES] * t) * serial_share(p, t)
    mem = nbytes / (level_bandwidth(ch, level, t) if level < nl else dram_bandwidth(p, t))
    if level == nl:
        comp = contended(comp, mem, t, p)
    traffic[0] += nbytes
    if level > 0:
        traffic[level] += nbytes
    bound = BOUND_COMPUTE if comp >= mem else (BOUND_ONCHIP if level < nl else BOUND_DRAM)
    acc[ACC_T_COMPUTE + bound] += max(comp, mem)
    acc[ACC_LANE_OPS] += lane_ops
    acc[ACC_INSTR] += lane_ops / lanes


@njit(cache=True)
def kernel_lanes(eb: float, p: np.ndarray) -> float:
    """SIMD lanes at an element width of `eb` bytes."""
    return p[P_LANES32] * 4.0 / eb


@njit(cache=True)
def gemm_threads(macs: float, units: float, runtime: int, p: np.ndarray,
                 all_threads: bool = False) -> float:
    """Threads a GEMM runs on: MLAS gives each thread >= 64K MACs (`all_threads`: MLAS's
    NCHWc convs, every thread, A_NCHWC); never more than units."""
    t = p[P_THREADS]
    if runtime == RUNTIME_ORT and not all_threads:
        t = min(t, math.floor(macs / THREAD_MACS) + 1.0)
    return max(1.0, min(t, units))


@njit(cache=True)
def blocked_traffic(m: float, n: float, k: float, g: float, mp: float, tm: float, tn: float,
                    eba: float, ebw: float, t: float, p: np.ndarray, ch: np.ndarray,
                    traffic: np.ndarray) -> tuple[float, float]:
    """Goto/BLIS blocking: book the bytes each cache level serves; return the A-block and
    B-block refetch counts (ceil(m / mc), ceil(n / nc)) for operands that spill to DRAM."""
    nl = int(p[P_NLEVELS])
    la, lb = min(1, nl - 1), nl - 1
    kc = min(k, max(1.0, math.floor(level_capacity(ch, 0, t) / 2.0 / (tn * ebw))))
    mc = min(m, max(tm, math.floor(level_capacity(ch, la, t) / 2.0 / (kc * eba))))
    nc = min(n, max(tn, math.floor(level_capacity(ch, lb, t) / 2.0 / (kc * ebw))))
    traffic[0] += mp * (eba / tn + ebw / tm)                    # register-tile reloads
    traffic[la] += mp * eba / tn + m * n * g * 8.0 * cdiv(k, kc)  # A micro-panels, C tiles
    traffic[lb] += k * n * g * ebw * cdiv(m, mc) + m * k * g * eba * cdiv(n, nc)
    return cdiv(m, mc), cdiv(n, nc)


@njit(cache=True)
def contended(comp: float, dram: float, t: float, p: np.ndarray) -> float:
    """Compute time of a kernel on t threads whose DRAM bytes take `dram` at the t threads'
    shared roof. Alone, a thread overlaps its share of the transfers (dram * s / t, s the
    roof's growth from 1 to t threads) with its compute; contending for a roof that grows
    less than t-fold, each thread waits for the rest, dram * (1 - s / t), and that wait does
    not shrink with more threads. t = 1: comp unchanged (the one-thread roofline)."""
    if t <= 1.0:
        return comp
    s = dram_bandwidth(p, t) / dram_bandwidth(p, 1.0)
    return comp + dram * max(0.0, 1.0 - s / t)


@njit(cache=True)
def shared_wait(traffic: np.ndarray, t: float, p: np.ndarray, ch: np.ndarray) -> float:
    """What each of t threads waits for the shared cache levels: a shared level's bandwidth
    does not grow with threads (`level_bandwidth`), so as for the DRAM roof (`contended`,
    s = 1) each thread waits for the others' share, time * (1 - 1 / t); the busiest level."""
    wait = 0.0
    for j in range(int(p[P_NLEVELS])):
        if ch[j, C_SHARED] > 0 and t > 1.0:
            wait = max(wait, traffic[j] / ch[j, C_BPC] * (1.0 - 1.0 / t))
    return wait


@njit(cache=True)
def miss_bound_bandwidth(t: float, p: np.ndarray) -> float:
    """DRAM bytes per cycle t threads draw when no prefetch runs ahead of their reads: each
    core keeps its own few misses in flight (Little's law, `hwmodels.cpu.latency_bound_bpc`),
    so the rate grows with the threads until the shared roof binds; 0 where the target gives
    no figure."""
    return t * p[P_DRAM_MISS_BPC]


@njit(cache=True)
def book_core(comp: float, dram_bytes: float, t: float, p: np.ndarray, ch: np.ndarray,
              traffic: np.ndarray, acc: np.ndarray, shared: bool = False,
              unprefetched: bool = False) -> None:
    """Book a kernel's roofline time, max(compute, slowest cache level, DRAM), to its bound;
    on several threads the compute side waits for the shared DRAM roof (`contended`) or,
    with `shared` (ncnn's GEMMs), for the shared cache levels (`shared_wait`), the longer.
    `unprefetched`: the kernel's DRAM reads escape the core's prefetcher, so each thread
    draws at most its latency-bound rate (`miss_bound_bandwidth`)."""
    nl = int(p[P_NLEVELS])
    onchip = 0.0
    for j in range(nl):
        onchip = max(onchip, traffic[j] / level_bandwidth(ch, j, t))
    traffic[nl] += dram_bytes
    roof = dram_bandwidth(p, t)
    miss = miss_bound_bandwidth(t, p) if unprefetched else 0.0
    wait = shared_wait(traffic, t, p, ch) if shared else 0.0
    if 0.0 < miss < roof:  # each thread waits on its own misses, not on the others
        dram = dram_bytes / miss
        comp = comp + wait
    else:
        dram = dram_bytes / roof
        comp = max(contended(comp, dram, t, p), comp + wait)
    if comp >= onchip and comp >= dram:
        acc[ACC_T_COMPUTE] += comp
    elif onchip >= dram:
        acc[ACC_T_ONCHIP] += onchip
    else:
        acc[ACC_T_DRAM] += dram


@njit(cache=True)
def core_dram_bytes(li: np.ndarray, w_bytes: float, w_res: bool, eba: float, ebo: float,
                    ebw: float, refetch_a: float, refetch_b: float, p: np.ndarray,
                    ch: np.ndarray, scratch_live: float = -1.0) -> float:
    """Compulsory DRAM bytes of a GEMM's operands that live in DRAM, times their refetches
    when the operand itself exceeds the last cache level. `scratch_live` >= 0: the output
    never exists whole, each thread keeps its part in a scratch buffer it writes and reads
    back (ncnn's Winograd, `cpu_ncnn.winograd_scratch_live`): input and output stay on chip
    while those working-set bytes fit the last level; beyond it the input comes from DRAM
    and the scratch is written back and read again (twice the output's bytes)."""
    llc = ch[int(p[P_NLEVELS]) - 1, C_BYTES]
    g, n, k = float(li[L_G]), float(li[L_N]), float(li[L_K])
    a_bytes, o_bytes = float(li[L_AIN]) * eba, float(li[L_AOUT]) * ebo
    live, o_dram = a_bytes + o_bytes, o_bytes
    if scratch_live >= 0.0:
        live, o_dram = scratch_live, 2.0 * o_bytes
    dram = 0.0
    if not w_res:
        dram += w_bytes * (refetch_a if k * n * g * ebw > llc else 1.0)
    if not fits_llc(live, p, ch):
        dram += a_bytes * (refetch_b if a_bytes > llc else 1.0) + o_dram
    return dram
