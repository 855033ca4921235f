"""The CPU cost kernel's compute cores: blocked GEMM on the register tile, direct
depthwise, Winograd F(r, 3) (formulas and sources in `hwmodels.kernels.cpu`)."""

from __future__ import annotations

import math

import numpy as np

from hwmodels.kernels import cpu_ncnn as ncnn
from hwmodels.kernels.arith import cdiv
from hwmodels.kernels.cpu_layout import (
    ACC_INSTR,
    ACC_PEAK,
    C_BYTES,
    DW_NCHWC_OUTPUTS,
    KIND_CONV,
    L_AIN,
    L_AOUT,
    L_G,
    L_K,
    L_KIND,
    L_M,
    L_MACS,
    L_N,
    L_WEL,
    P_CORES,
    P_GEMM_EFF,
    P_LANES32,
    P_PIPES,
    P_THREADS,
    P_TILE_M,
    P_TILE_N,
    RUNTIME_NCNN,
    WINOGRAD_MIN_CH,
    WINOGRAD_SLACK,
)
from hwmodels.kernels.cpu_roofline import (
    add_pass,
    blocked,
    blocked_traffic,
    book_core,
    core_dram_bytes,
    gemm_threads,
    home,
    kernel_lanes,
    serial_share,
)
from hwmodels.kernels.jit import njit


@njit(cache=True)
def gemm_core(li: np.ndarray, rate: float, eba: float, ebw: float, ebo: float, k_align: float,
              extra_ops: float, w_bytes: float, w_res: bool, runtime: int, p: np.ndarray,
              ch: np.ndarray, traffic: np.ndarray, acc: np.ndarray,
              oc_split: bool = False, unprefetched: bool = False,
              all_threads: bool = False, a_sweeps: float = 0.0,
              edge_k: float = 0.0) -> float:
    """Blocked GEMM on the register tile: book its roofline time; return its threads.
    `extra_ops` are in-kernel lane ops (weight unpacking, requantisation) at the kernel's
    lanes; they share the vector pipes with the MACs. `oc_split`: ncnn's im2col conv GEMM
    (tiles and thread split of `kernels.cpu_ncnn.conv_gemm_split`). `unprefetched`: its
    weight reads escape the prefetcher (`kernels.cpu_ncnn.fc_rows_unprefetched`).
    `all_threads`: an NCHWc conv (`gemm_threads`). `a_sweeps` > 0: the times A is read from
    DRAM when it exceeds the last cache level, in place of the blocking's refetch count
    (ncnn's Winograd GEMM, `kernels.cpu_ncnn.winograd_input_sweeps`). `edge_k`: k steps each
    register tile spends setting up and storing its accumulators (`cpu_ncnn.TILE_EDGE_K`)."""
    m, n, k, g = float(li[L_M]), float(li[L_N]), float(li[L_K]), float(li[L_G])
    tm = p[P_TILE_M] if m > 1 else 1.0  # M = 1 runs the GEMV kernel
    tn = p[P_TILE_N]
    kp = cdiv(k, k_align) * k_align
    units = cdiv(m, tm) * cdiv(n, tn) * g
    t = gemm_threads(float(li[L_MACS]), units, runtime, p, all_threads)
    busy = cdiv(units, t) * tm * tn * kp  # register-tile MACs of the busiest thread
    if oc_split:  # ncnn im2col GEMM: 8 x 12 tiles, threads over output-channel blocks
        t, busy = ncnn.conv_gemm_split(int(m), int(n), kp, int(g), int(p[P_THREADS]),
                                     int(p[P_CORES]), eba)
        tm, tn = (ncnn.TILE_PIX_INT8 if eba == 1.0 else ncnn.TILE_PIX), float(ncnn.TILE_OC)
        units = cdiv(m, tm) * cdiv(n, tn) * g
    busy *= (kp + edge_k) / kp
    comp = busy / (rate * p[P_GEMM_EFF])
    comp = (comp + extra_ops / (kernel_lanes(eba, p) * p[P_PIPES] * t)) * serial_share(p, t)
    mp = units * tm * tn * kp
    # ncnn sizes its tiles from the whole L2 whatever the thread count (get_optimal_tile_mnk:
    # get_cpu_level2_cache_size(); only TILE_M is divided by nT): refetches as at 1 thread
    t_cap = 1.0 if runtime == RUNTIME_NCNN else t
    ra, rb = blocked_traffic(m, n, k, g, mp, tm, tn, eba, ebw, t_cap, p, ch, traffic)
    rb = a_sweeps if a_sweeps > 0.0 else rb
    if oc_split:  # ncnn: the micro-kernel's operand panels may not fit L1 (ncnn_panel_bytes)
        ncnn_panel_bytes(kp, mp, tm, tn, eba, ebw, p, ch, traffic)
    dram = core_dram_bytes(li, w_bytes, w_res, eba, ebo, ebw, ra, rb, p, ch)
    book_core(comp, dram, t, p, ch, traffic, acc, runtime == RUNTIME_NCNN, unprefetched)
    acc[ACC_INSTR] += mp / rate * p[P_PIPES] + traffic[0] / (4.0 * p[P_LANES32])
    acc[ACC_PEAK] = rate
    return t


@njit(cache=True)
def ncnn_panel_bytes(kp: float, mp: float, tm: float, tn: float, eba: float, ebw: float,
                     p: np.ndarray, ch: np.ndarray, traffic: np.ndarray) -> None:
    """ncnn sizes TILE_K from the whole L2 (`cpu_ncnn`: get_optimal_tile_mnk), so one
    micro-kernel call walks k over a tm x k and a tn x k operand panel; when the two exceed
    L1 its per-k operand loads come from L2: the register-tile reload bytes are L2 bytes."""
    if (tm * eba + tn * ebw) * kp > ch[0, C_BYTES]:
        traffic[blocked(p)] += mp * (eba / tn + ebw / tm)


@njit(cache=True)
def depthwise_core(li: np.ndarray, eba: float, ebo: float, extra_ops: float, w_bytes: float,
                   w_res: bool, runtime: int, p: np.ndarray, ch: np.ndarray, traffic: np.ndarray,
                   acc: np.ndarray, chain_cyc: float = 0.0, vec_cyc: float = 0.0,
                   gather_cyc: float = 0.0, all_threads: bool = False) -> float:
    """Depthwise conv (n = 1 per group): lanes over channels, one input load per lane MAC
    (two in ncnn's generic loop), split over output pixels (ncnn: over channel packs). int8
    widens to 16-bit lanes. `vec_cyc`: cycles per (pixel, tap, lane vector) where the kernel
    spends more than one multiply-add on each; `gather_cyc`: cycles per (pixel, tap) to
    fill its input indirection buffer (`hwmodels.cpu_x86`). `all_threads`: an NCHWc conv
    (`gemm_threads`)."""
    m, k, g = float(li[L_M]), float(li[L_K]), float(li[L_G])
    lanes = p[P_LANES32] * 4.0 / max(eba, 2.0)
    if runtime == RUNTIME_NCNN:  # threads over channel packs, each thread all pixels
        t, vectors = ncnn.depthwise_split(int(g), int(p[P_THREADS]), int(lanes))
        comp = m * k * vectors / (p[P_PIPES] * p[P_GEMM_EFF])
    else:
        t = gemm_threads(float(li[L_MACS]), m, runtime, p, all_threads)
        comp = cdiv(m, t) * k * cdiv(g, lanes) / (p[P_PIPES] * p[P_GEMM_EFF])
        if chain_cyc > 0:
            comp = max(comp, nchwc_depthwise_cycles(m, k, g, lanes, chain_cyc) / t)
        comp = max(comp, cdiv(m, t) * k * cdiv(g, lanes) * vec_cyc) + cdiv(m, t) * k * gather_cyc
    comp = (comp + extra_ops / (kernel_lanes(eba, p) * p[P_PIPES] * t)) * serial_share(p, t)
    loads = 1.0  # input vector per tap; ncnn's generic loop also reloads the weight vector
    if runtime == RUNTIME_NCNN and ncnn.depthwise_generic(int(k), float(li[L_AIN]) / (m * g)):
        loads = 2.0
    traffic[0] += m * k * g * eba * loads + m * g * ebo
    dram = core_dram_bytes(li, w_bytes, w_res, eba, ebo, eba, 1.0, 1.0, p, ch)
    book_core(comp, dram, t, p, ch, traffic, acc)
    acc[ACC_INSTR] += m * k * cdiv(g, lanes) * 2.0  # one FMA + one load per vector
    acc[ACC_PEAK] = lanes * p[P_PIPES]
    return t


@njit(cache=True)
def nchwc_depthwise_cycles(m: float, k: float, g: float, lanes: float, chain_cyc: float) -> float:
    """onnxruntime's x86 NCHWc depthwise kernel (MLAS SconvKernelFma3.S, "Depthwise"
    ComputeBlock): per tap one filter load and one FMA into each of up to 3 output blocks, so
    each block's taps form a dependent FMA chain; the output blocks whose window meets the
    padding (assumed: one on each side of each of the sqrt(m) rows) run one at a time
    (MlasConvDepthwiseFloatSingle...). Cycles per channel block x channel blocks."""
    edges = min(m, 2.0 * math.sqrt(m))
    slots = (m - edges) / DW_NCHWC_OUTPUTS + edges
    return slots * k * chain_cyc * cdiv(g, lanes)


@njit(cache=True)
def winograd_tile(li: np.ndarray, r_max: float, min_ch: float = WINOGRAD_MIN_CH) -> float:
    """Output tile edge r of the Winograd F(r x r, 3 x 3) ncnn runs a 3x3 stride-1 conv with;
    0 when the layer is not one. ncnn (src/layer/arm/convolution_arm.cpp), fp32 / fp16
    (r_max 6): F(6,3) when cin and cout <= 128, else F(4,3) when both >= 8, else F(2,3); none
    unless cin or cout >= 8. int8 (r_max 4): F(4,3) when both >= 8, else none. The GEMM view
    shows a 3x3 stride-1 conv as k = 9 cin with as many input pixels as output pixels (padding
    adds at most WINOGRAD_SLACK). `min_ch` is 8 in those paths and 16 in ncnn's fp16
    arithmetic path (WINOGRAD_MIN_CH_FP16). A grouped (not depthwise) conv is judged per
    group: ncnn runs it as one Convolution op per group (`convolutiondepthwise_arm.cpp`
    create_group_ops), each choosing its own kernel."""
    depthwise = li[L_G] > 1 and li[L_N] == 1
    if li[L_KIND] != KIND_CONV or depthwise or li[L_K] % 9 != 0 or li[L_M] < 1:
        return 0.0
    m, n, cin = float(li[L_M]), float(li[L_N]), float(li[L_K] // 9)
    ratio = float(li[L_AIN]) / (m * cin * float(li[L_G]))
    if ratio < 1.0 - 1e-9 or ratio > WINOGRAD_SLACK or max(cin, n) < min_ch:
        return 0.0
    if r_max >= 6.0 and cin <= 128 and n <= 128:
        return 6.0
    if min(cin, n) >= min_ch:
        return 4.0
    return 2.0 if r_max >= 6.0 else 0.0


@njit(cache=True)
def winograd_core(li: np.ndarray, r: float, rate: float, eba: float, ebw: float, ebo: float,
                  extra_ops: float, w_res: bool, runtime: int, p: np.ndarray, ch: np.ndarray,
                  traffic: np.ndarray, acc: np.ndarray) -> float:
    """Winograd F(r, 3) (Lavin & Gray, CVPR 2016): the H x W output (H = W = sqrt(m)) splits
    into ceil(H / r) * ceil(W / r) tiles; (r + 2)^2 independent GEMMs [tiles x cin] x
    [cin x cout] replace the 9-tap GEMM (r = 6: 64 / 324 of its MACs). The input and output
    transforms are passes over the transformed tensors, r + 2 lane ops per element (two 1-D
    transforms of r + 2 taps, about half of them zero). Returns the GEMM's threads.
    ncnn: a transformed input larger than the last cache level is read from DRAM once per
    round of output-channel tasks (`kernels.cpu_ncnn.winograd_input_sweeps`); its input
    transform writes a B_tile that `conv3x3s1_winograd_transpose_pack_B_tile` (@a4d2ea1, fp32
    / fp16 / int8, `omp parallel for` over the (r + 2)^2 positions, loads, uzp / zip and
    stores only) reads and repacks into BT: one more read and write of the transformed
    input, from the last cache level when it fits, else DRAM."""
    m, n, cin, a = float(li[L_M]), float(li[L_N]), float(li[L_K] // 9), r + 2.0
    g = li[L_G]  # a grouped conv: one Winograd conv per group, run one after another
    tiles = cdiv(math.sqrt(m), r) ** 2
    wg = li.copy()
    wg[L_M], wg[L_K], wg[L_WEL] = int(tiles * a * a), int(cin), int(a * a * cin * n) * g
    wg[L_MACS] = wg[L_M] * wg[L_N] * wg[L_K] * g
    wg[L_AIN], wg[L_AOUT] = wg[L_M] * wg[L_K] * g, wg[L_M] * wg[L_N] * g
    # ncnn: each output-channel task sweeps the whole transformed input (`cpu_ncnn`)
    sweeps = ncnn.winograd_input_sweeps(n, p[P_THREADS]) if runtime == RUNTIME_NCNN else 0.0
    t = gemm_core(wg, rate, eba, ebw, ebo, 1.0, extra_ops, float(wg[L_WEL]) * ebw, w_res,
                  runtime, p, ch, traffic, acc, a_sweeps=sweeps)
    lanes, blk = kernel_lanes(eba, p), blocked(p)
    t_in, t_out = float(wg[L_AIN]), float(wg[L_AOUT])
    add_pass((float(li[L_AIN]) + t_in) * eba, t_in * a, lanes, blk, p, ch, traffic, acc)
    if runtime == RUNTIME_NCNN:  # conv3x3s1_winograd_transpose_pack_B_tile: B_tile -> BT
        add_pass(2.0 * t_in * eba, 0.0, lanes, home(t_in * eba, p, ch), p, ch, traffic, acc)
    add_pass((t_out + float(li[L_AOUT])) * ebo, t_out * a, lanes, blk, p, ch, traffic, acc)
    return t
