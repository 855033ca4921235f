"""The CPU cost kernel: one call over hardware configs x layers x bit choices.

The glue (`hwmodels.cpu`) resolves a target into `params` [H, NP], `caches` [H, MAX_LEVELS, NC]
and `paths` [H, NPATH, NA] (per kernel path: MAC rate and the passes it adds). Sources:

- Kernel path per (layer, bits): `ort_path` follows onnxruntime 1.31's CPU kernels (DESIGN.md
  "Facts about onnxruntime"); `ideal_path` the fastest the ISA allows (T-MAC table lookup
  for low-bit weight-only GEMV: Wei et al., EuroSys 2025).
- GEMM (Goto & van de Geijn, TOMS 2008; Low et al., TOMS 2016, "Analytical modeling is enough
  for high-performance BLIS"): compute = ceil(units / threads) * tile_m * tile_n * k_padded /
  (rate * eff), units = ceil(m / tile_m) * ceil(n / tile_n) * groups (edge tiles cost a full
  tile). Blocking kc / mc / nc fills half of L1 / L2 / last level. Bytes served: L1 the
  register-tile reloads macs * (eb_a / tile_n + eb_w / tile_m); L2 the A micro-panels
  macs * eb_a / tile_n plus C tiles per kc block; last level the B panels per A block and A
  per B block; DRAM the compulsory bytes of operands living there, re-read when they exceed
  the last level. Roofline per level (Williams et al., CACM 2009): max over all of them.
- Threads: onnxruntime gives each thread >= MLAS_SGEMM_THREAD_COMPLEXITY = 64K MACs
  (core/mlas/lib/mlasi.h); a parallel op pays `thread_overhead_us` once. Compute on t threads
  takes 1 / (1 + (t - 1) * parallel_efficiency) of one thread's (`serial_share`: contention
  for the shared cache and memory, barriers); DRAM serves the one-thread sustained bandwidth
  at t = 1 and the all-core figure at t = cores, linear in between (`dram_bandwidth`).
  ncnn splits its im2col conv GEMMs over output-channel blocks and depthwise convs over
  channel packs, on 8 x 12 register tiles, and writes the whole im2col matrix (1x1 convs
  included) before the GEMM (`hwmodels.kernels.cpu_ncnn`, each fact cited there).
- Winograd (ncnn profile): 3x3 stride-1 convs run as F(r, 3) (`winograd_tile`,
  `winograd_core`; Lavin & Gray, CVPR 2016): (r + 2)^2 GEMMs over the tiles plus input and
  output transform passes.
- Passes (Q/DQ, activation quantisation, A packing, im2col, weight dequantisation, elementwise,
  norm, softmax, copies): max(lane_ops / (lanes * pipes), bytes / bandwidth) from the last
  level when they fit it, else DRAM; blocked buffers from L2. exp costs EXP_LANE_OPS.
- Overhead: per onnxruntime node, `gemm_overhead_us` (conv / matmul) or `op_overhead_us`
  (others, incl. Q and DQ nodes); `run_overhead_us` per inference, booked on the first layer.
- Energy (Horowitz, ISSCC 2014): instructions * pJ + MACs * pJ + lane ops * pJ (compute),
  bytes per cache level * pJ/byte (on-chip), DRAM bytes * pJ/byte.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from hwmodels.kernels import cpu_ncnn as ncnn

CATEGORY_GEMM, CATEGORY_STREAM, CATEGORY_COPY, CATEGORY_VIEW = 0, 1, 2, 3  # = compiler.ir
KIND_CONV, KIND_ACTIVATION, KIND_SOFTMAX, KIND_GATHER, KIND_IDENTITY = 0, 5, 7, 11, 20  # KINDS

RUNTIME_ORT, RUNTIME_IDEAL, RUNTIME_NCNN, RUNTIME_XNNPACK = 0, 1, 2, 3

# layer columns of `lay` (int64 [L, NL])
L_KIND, L_CAT, L_M, L_N, L_K, L_G, L_MACS, L_OPS, L_WEL, L_AIN, L_AOUT, L_WB = range(12)
NL = 12

# params columns (float64 [H, NP])
(P_CLOCK_HZ, P_CORES, P_THREADS, P_LANES32, P_PIPES, P_TILE_M, P_TILE_N, P_GEMM_EFF,
 P_DRAM_BPC, P_OP_OVH, P_GEMM_OVH, P_RUN_OVH, P_THR_OVH, P_NLEVELS, P_E_INSTR, P_E_OP, P_E_DRAM,
 P_FP16, P_DRAM_ALL_BPC, P_PAR_EFF) = range(20)
NP = 20

# cache columns (float64 [H, MAX_LEVELS, NC])
C_BYTES, C_BPC, C_SHARED, C_E_BYTE = range(4)
NC = 4
MAX_LEVELS = 4

# kernel paths (rows of `paths`; the glue picks one per config, layer and bit choice)
(PATH_FP32, PATH_FP16, PATH_QLINEAR, PATH_NBITS_INT8, PATH_NBITS_FP32, PATH_DQ_FP32,
 PATH_INT8, PATH_LUT, PATH_FP32_UNPACK) = range(9)
NPATH = 9
PATH_NONE, PATH_FUSED = -1, NPATH  # non-GEMM layers: own pass, or fused into the GEMM before

# path attributes (columns of `paths`): MAC rate per core and cycle (LUT: at 1-bit weights),
# bytes per activation / weight / output element in the kernel (weight -1: stored width),
# k alignment, nodes it runs as, MAC energy (pJ), and the streams it adds per inference.
# A_W_DQ: fp32 bytes a run-time weight-dequantise pass writes and re-reads per weight.
(A_RATE, A_EB_A, A_EB_W, A_EB_O, A_K_ALIGN, A_NODES, A_E_MAC, A_Q_IN, A_DQ_OUT, A_A_QUANT,
 A_W_DQ, A_W_INLINE, A_IM2COL, A_FAKE_Q, A_A_PACK, A_REQUANT, A_WINOGRAD, A_WG_RATE) = range(18)
NA = 18

# outputs (float64 [NO, H, L, B])
O_CYCLES, O_LATENCY, O_E_COMPUTE, O_E_ONCHIP, O_E_DRAM, O_BOUND, O_UTIL, O_WBYTES = range(8)
NO = 8

BOUND_COMPUTE, BOUND_ONCHIP, BOUND_DRAM, BOUND_OVERHEAD = 0, 1, 2, 3
# per-evaluation accumulators (float64 [NACC]): time per bound class, lane ops, vector
# instructions, MAC energy, onnxruntime nodes and the MAC-rate peak of the path
(ACC_T_COMPUTE, ACC_T_ONCHIP, ACC_T_DRAM, ACC_T_OVERHEAD, ACC_LANE_OPS, ACC_INSTR, ACC_E_MAC,
 ACC_NODES, ACC_PEAK) = range(9)
NACC = 9

THREAD_MACS = 65536.0          # MLAS_SGEMM_THREAD_COMPLEXITY (mlasi.h)
STREAM_BYTES_PER_THREAD = 65536.0  # assumed: elementwise ops split in 64 KiB chunks per thread
EXP_LANE_OPS = 16.0            # assumed: ~16 vector ops per exp (range reduction + polynomial)
Q_LANE_OPS = 3.0               # quantise: scale, round-convert, add zero point (per element)
DQ_LANE_OPS = 2.0              # dequantise: convert, scale
UNPACK_LANE_OPS = 3.0          # weight dequantise: unpack nibbles, convert, scale
REQUANT_LANE_OPS = 4.0         # int32 -> int8 requantisation per output element
WINOGRAD_SLACK = 1.3           # input pixels / output pixels of a padded 3x3 stride-1 conv
WINOGRAD_MIN_CH = 8.0          # ncnn convolution_arm.cpp: Winograd needs cin or cout >= 8
LLC_RESIDENT = 0.75            # assumed: weights stay cached across inferences below this share
PARALLEL_MIN_EVALS = 200_000   # below this, one thread beats numba's fork/join


@njit(cache=True)
def cdiv(a: float, b: float) -> float:
    """ceil(a / b) for positive b, tolerant of float rounding."""
    return float(math.ceil(a / b - 1e-9))


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
    (one per 64 KiB): book max(lane_ops / (lanes * pipes * t), bytes / bandwidth)."""
    t = max(1.0, min(p[P_THREADS], cdiv(nbytes, STREAM_BYTES_PER_THREAD)))
    nl = int(p[P_NLEVELS])
    comp = lane_ops / (lanes * p[P_PIPES] * t) * serial_share(p, t)
    mem = nbytes / (level_bandwidth(ch, level, t) if level < nl else dram_bandwidth(p, t))
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
def gemm_threads(macs: float, units: float, runtime: int, p: np.ndarray) -> float:
    """Threads a GEMM runs on: MLAS gives each thread >= 64K MACs; never more than units."""
    t = p[P_THREADS]
    if runtime == RUNTIME_ORT:
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
def book_core(comp: float, dram_bytes: float, t: float, p: np.ndarray, ch: np.ndarray,
              traffic: np.ndarray, acc: np.ndarray) -> None:
    """Book a kernel's roofline time, max(compute, slowest cache level, DRAM), to its bound."""
    nl = int(p[P_NLEVELS])
    onchip = 0.0
    for j in range(nl):
        onchip = max(onchip, traffic[j] / level_bandwidth(ch, j, t))
    traffic[nl] += dram_bytes
    dram = dram_bytes / dram_bandwidth(p, t)
    if comp >= onchip and comp >= dram:
        acc[ACC_T_COMPUTE] += comp
    elif onchip >= dram:
        acc[ACC_T_ONCHIP] += onchip
    else:
        acc[ACC_T_DRAM] += dram


@njit(cache=True)
def core_dram_bytes(li: np.ndarray, w_bytes: float, w_res: bool, eba: float, ebo: float,
                    ebw: float, refetch_a: float, refetch_b: float, p: np.ndarray,
                    ch: np.ndarray) -> float:
    """Compulsory DRAM bytes of a GEMM's operands that live in DRAM, times their refetches
    when the operand itself exceeds the last cache level."""
    llc = ch[int(p[P_NLEVELS]) - 1, C_BYTES]
    g, n, k = float(li[L_G]), float(li[L_N]), float(li[L_K])
    a_bytes, o_bytes = float(li[L_AIN]) * eba, float(li[L_AOUT]) * ebo
    dram = 0.0
    if not w_res:
        dram += w_bytes * (refetch_a if k * n * g * ebw > llc else 1.0)
    if not fits_llc(a_bytes + o_bytes, p, ch):
        dram += a_bytes * (refetch_b if a_bytes > llc else 1.0) + o_bytes
    return dram


@njit(cache=True)
def gemm_core(li: np.ndarray, rate: float, eba: float, ebw: float, ebo: float, k_align: float,
              extra_ops: float, w_bytes: float, w_res: bool, runtime: int, p: np.ndarray,
              ch: np.ndarray, traffic: np.ndarray, acc: np.ndarray,
              oc_split: bool = False) -> float:
    """Blocked GEMM on the register tile: book its roofline time; return its threads.
    `extra_ops` are in-kernel lane ops (weight unpacking, requantisation) at the kernel's
    lanes; they share the vector pipes with the MACs. `oc_split`: ncnn's im2col conv GEMM
    (tiles and thread split of `kernels.cpu_ncnn.conv_gemm_split`)."""
    m, n, k, g = float(li[L_M]), float(li[L_N]), float(li[L_K]), float(li[L_G])
    tm = p[P_TILE_M] if m > 1 else 1.0  # M = 1 runs the GEMV kernel
    tn = p[P_TILE_N]
    kp = cdiv(k, k_align) * k_align
    units = cdiv(m, tm) * cdiv(n, tn) * g
    t = gemm_threads(float(li[L_MACS]), units, runtime, p)
    busy = cdiv(units, t) * tm * tn * kp  # register-tile MACs of the busiest thread
    if oc_split:  # ncnn im2col GEMM: 8 x 12 tiles, threads over output-channel blocks
        t, busy = ncnn.conv_gemm_split(int(m), int(n), kp, int(g), int(p[P_THREADS]),
                                     int(p[P_CORES]), eba)
        tm, tn = (ncnn.TILE_PIX_INT8 if eba == 1.0 else ncnn.TILE_PIX), float(ncnn.TILE_OC)
        units = cdiv(m, tm) * cdiv(n, tn) * g
    comp = busy / (rate * p[P_GEMM_EFF])
    comp = (comp + extra_ops / (kernel_lanes(eba, p) * p[P_PIPES] * t)) * serial_share(p, t)
    mp = units * tm * tn * kp
    ra, rb = blocked_traffic(m, n, k, g, mp, tm, tn, eba, ebw, t, p, ch, traffic)
    dram = core_dram_bytes(li, w_bytes, w_res, eba, ebo, ebw, ra, rb, p, ch)
    book_core(comp, dram, t, p, ch, traffic, acc)
    acc[ACC_INSTR] += mp / rate * p[P_PIPES] + traffic[0] / (4.0 * p[P_LANES32])
    acc[ACC_PEAK] = rate
    return t


@njit(cache=True)
def depthwise_core(li: np.ndarray, eba: float, ebo: float, extra_ops: float, w_bytes: float,
                   w_res: bool, runtime: int, p: np.ndarray, ch: np.ndarray, traffic: np.ndarray,
                   acc: np.ndarray) -> float:
    """Depthwise conv (n = 1 per group): lanes over channels, one input load per lane MAC,
    split over output pixels. int8 widens to 16-bit lanes."""
    m, k, g = float(li[L_M]), float(li[L_K]), float(li[L_G])
    lanes = p[P_LANES32] * 4.0 / max(eba, 2.0)
    if runtime == RUNTIME_NCNN:  # threads over channel packs, each thread all pixels
        t, vectors = ncnn.depthwise_split(int(g), int(p[P_THREADS]), int(lanes))
        comp = m * k * vectors / (p[P_PIPES] * p[P_GEMM_EFF])
    else:
        t = gemm_threads(float(li[L_MACS]), m, runtime, p)
        comp = cdiv(m, t) * k * cdiv(g, lanes) / (p[P_PIPES] * p[P_GEMM_EFF])
    comp = (comp + extra_ops / (kernel_lanes(eba, p) * p[P_PIPES] * t)) * serial_share(p, t)
    traffic[0] += m * k * g * eba + m * g * ebo
    dram = core_dram_bytes(li, w_bytes, w_res, eba, ebo, eba, 1.0, 1.0, p, ch)
    book_core(comp, dram, t, p, ch, traffic, acc)
    acc[ACC_INSTR] += m * k * cdiv(g, lanes) * 2.0  # one FMA + one load per vector
    acc[ACC_PEAK] = lanes * p[P_PIPES]
    return t


@njit(cache=True)
def winograd_tile(li: np.ndarray, r_max: float) -> float:
    """Output tile edge r of the Winograd F(r x r, 3 x 3) ncnn runs a 3x3 stride-1 conv with;
    0 when the layer is not one. ncnn (src/layer/arm/convolution_arm.cpp), fp32 / fp16
    (r_max 6): F(6,3) when cin and cout <= 128, else F(4,3) when both >= 8, else F(2,3); none
    unless cin or cout >= 8. int8 (r_max 4): F(4,3) when both >= 8, else none. The GEMM view
    shows a 3x3 stride-1 conv as k = 9 cin with as many input pixels as output pixels (padding
    adds at most WINOGRAD_SLACK)."""
    if li[L_KIND] != KIND_CONV or li[L_G] != 1 or li[L_K] % 9 != 0 or li[L_M] < 1:
        return 0.0
    m, n, cin = float(li[L_M]), float(li[L_N]), float(li[L_K] // 9)
    ratio = float(li[L_AIN]) / (m * cin)
    if ratio < 1.0 - 1e-9 or ratio > WINOGRAD_SLACK or max(cin, n) < WINOGRAD_MIN_CH:
        return 0.0
    if r_max >= 6.0 and cin <= 128 and n <= 128:
        return 6.0
    if min(cin, n) >= WINOGRAD_MIN_CH:
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
    transforms of r + 2 taps, about half of them zero). Returns the GEMM's threads."""
    m, n, cin, a = float(li[L_M]), float(li[L_N]), float(li[L_K] // 9), r + 2.0
    tiles = cdiv(math.sqrt(m), r) ** 2
    wg = li.copy()
    wg[L_M], wg[L_K], wg[L_WEL] = int(tiles * a * a), int(cin), int(a * a * cin * n)
    wg[L_MACS] = wg[L_M] * wg[L_N] * wg[L_K]
    wg[L_AIN], wg[L_AOUT] = wg[L_M] * wg[L_K], wg[L_M] * wg[L_N]
    t = gemm_core(wg, rate, eba, ebw, ebo, 1.0, extra_ops, float(wg[L_WEL]) * ebw, w_res,
                  runtime, p, ch, traffic, acc)
    lanes, blk = kernel_lanes(eba, p), blocked(p)
    t_in, t_out = float(wg[L_AIN]), float(wg[L_AOUT])
    add_pass((float(li[L_AIN]) + t_in) * eba, t_in * a, lanes, blk, p, ch, traffic, acc)
    add_pass((t_out + float(li[L_AOUT])) * ebo, t_out * a, lanes, blk, p, ch, traffic, acc)
    return t


@njit(cache=True)
def gemm_streams(li: np.ndarray, row: np.ndarray, a: int, eba: float, ebw: float, w_store: float,
                 w_res: bool, inline: bool, direct: bool, p: np.ndarray, ch: np.ndarray,
                 traffic: np.ndarray, acc: np.ndarray) -> None:
    """The passes a kernel path adds around its GEMM (Q/DQ nodes, activation quantisation,
    A packing, im2col, weight dequantisation, run-time B packing)."""
    m, n, k, g = float(li[L_M]), float(li[L_N]), float(li[L_K]), float(li[L_G])
    ain, aout, wel = float(li[L_AIN]), float(li[L_AOUT]), float(li[L_WEL])
    lanes, mk, blk = p[P_LANES32], m * k * g, blocked(p)
    if row[A_Q_IN] > 0:       # QuantizeLinear node: fp32 in, int8 out
        add_pass(ain * 5.0, ain * Q_LANE_OPS, lanes, home(ain * 5.0, p, ch), p, ch, traffic, acc)
    if row[A_DQ_OUT] > 0:     # DequantizeLinear node: int8 in, fp32 out
        add_pass(aout * 5.0, aout * DQ_LANE_OPS, lanes, home(aout * 5.0, p, ch), p, ch, traffic,
                 acc)
    if row[A_FAKE_Q] > 0 and a <= 8:  # Q -> DQ pair left in front of a float kernel
        add_pass(ain * 10.0, ain * (Q_LANE_OPS + DQ_LANE_OPS), lanes, home(ain * 10.0, p, ch), p,
                 ch, traffic, acc)
        acc[ACC_NODES] += 2.0
    if row[A_A_QUANT] > 0:    # activations quantised per block (MatMulNBits CompInt8, LUT build)
        add_pass(mk * 5.0, mk * Q_LANE_OPS, lanes, blk, p, ch, traffic, acc)
    if row[A_A_PACK] > 0:     # QGEMM packs A and computes its row sums
        add_pass(mk * 2.0 * eba, mk, kernel_lanes(eba, p), blk, p, ch, traffic, acc)
    depthwise = g > 1 and n == 1  # direct depthwise and Winograd kernels need no im2col
    whole = row[A_IM2COL] > 1.5  # ncnn: writes the whole im2col matrix, 1x1 convs included
    if (row[A_IM2COL] > 0 and li[L_KIND] == KIND_CONV and (whole or abs(mk - ain) > 0.5)
            and not depthwise and not direct):
        nbytes = (ain + mk) * eba  # MLAS expands into per-thread tiles (blocked level)
        add_pass(nbytes, 0.0, lanes, home(nbytes, p, ch) if whole else blk, p, ch, traffic, acc)
    if wel > 0 and row[A_W_DQ] > 0 and not inline:  # weights dequantised to an fp32 buffer
        nl = int(p[P_NLEVELS])
        add_pass(wel * (w_store + row[A_W_DQ]), wel * UNPACK_LANE_OPS, lanes,
                 nl - 1 if w_res else nl, p, ch, traffic, acc)
    if wel == 0:              # both operands are activations: B is packed at run time
        add_pass(k * n * g * ebw * 2.0, 0.0, lanes, blk, p, ch, traffic, acc)


@njit(cache=True)
def gemm_layer(li: np.ndarray, path: int, w: int, a: int, w_store: float, runtime: int,
               model_w_res: bool, p: np.ndarray, ch: np.ndarray, paths: np.ndarray,
               traffic: np.ndarray, acc: np.ndarray) -> float:
    """Cost a conv / linear / matmul layer on its kernel path; return its weight bytes.
    `w_store`: bytes per stored weight at w bits."""
    w = w if li[L_WEL] > 0 else a  # both operands are activations
    m, wel = float(li[L_M]), float(li[L_WEL])
    row = paths[path]
    inline = row[A_W_INLINE] > 0 and w < 8 and (m <= 1 or row[A_W_DQ] == 0)
    eba, ebo = row[A_EB_A], row[A_EB_O]
    ebw = w_store if (row[A_EB_W] < 0 or inline) else row[A_EB_W]
    # B as the kernel reads it: the stored weights, or an fp32 buffer a dequantise pass wrote
    w_res = model_w_res if ebw == w_store else fits_llc(wel * ebw, p, ch)
    rate = row[A_RATE] / (w if path == PATH_LUT else 1.0)
    extra = wel * cdiv(m, p[P_TILE_M]) * UNPACK_LANE_OPS if inline else 0.0
    if row[A_REQUANT] > 0:   # requantise int32 accumulators (fp32 lanes -> kernel lanes)
        extra += float(li[L_AOUT]) * REQUANT_LANE_OPS * 4.0 / eba
    r = winograd_tile(li, row[A_WINOGRAD]) if row[A_WINOGRAD] > 0 else 0.0
    if r > 0:  # the transformed GEMM may run at another rate (ncnn int8: int16 products)
        wg_rate = row[A_WG_RATE] if row[A_WG_RATE] > 0 else rate
        t = winograd_core(li, r, wg_rate, eba, ebw, ebo, extra, w_res, runtime, p, ch, traffic,
                          acc)
    elif li[L_G] > 1 and li[L_N] == 1:
        t = depthwise_core(li, eba, ebo, extra, wel * ebw, w_res, runtime, p, ch, traffic, acc)
    else:
        oc_split = runtime == RUNTIME_NCNN and li[L_KIND] == KIND_CONV and li[L_M] > 1
        t = gemm_core(li, rate, eba, ebw, ebo, row[A_K_ALIGN], extra, wel * ebw, w_res, runtime,
                      p, ch, traffic, acc, oc_split)
    acc[ACC_LANE_OPS] += extra
    gemm_streams(li, row, a, eba, ebw, w_store, model_w_res, inline, r > 0, p, ch, traffic, acc)
    acc[ACC_NODES] += row[A_NODES] - 1.0  # Q / DQ nodes; the GEMM node costs more:
    acc[ACC_T_OVERHEAD] += p[P_GEMM_OVH] + (p[P_THR_OVH] if t > 1 else 0.0)
    acc[ACC_E_MAC] += float(li[L_MACS]) * row[A_E_MAC]
    return wel * w_store


@njit(cache=True)
def stream_elem_bytes(a: int, runtime: int, p: np.ndarray) -> float:
    """Element width of non-GEMM layers: onnxruntime runs them in fp32 (fp16 where the ISA
    has fp16 arithmetic and a = 16), ncnn in fp16 wherever the core has fp16 arithmetic (its
    default fp16 storage), else fp32; ideal keeps the activation dtype (int8 for a <= 8)."""
    if runtime == RUNTIME_ORT:
        return 2.0 if (a == 16 and p[P_FP16] > 0) else 4.0
    if runtime == RUNTIME_NCNN:  # fp16 storage where the core has fp16 arithmetic
        return 2.0 if p[P_FP16] > 0 else 4.0
    if a <= 8:
        return 1.0
    return 2.0 if (a == 16 and p[P_FP16] > 0) else 4.0


@njit(cache=True)
def exp_lane_ops(li: np.ndarray) -> float:
    """Transcendental work: one exp per softmax element; activations whose op count shows more
    than a clamp (sigmoid, tanh, gelu, silu, ...) pay one exp per element."""
    aout, kind = float(li[L_AOUT]), li[L_KIND]
    if kind == KIND_SOFTMAX or (kind == KIND_ACTIVATION and li[L_OPS] >= 3 * li[L_AOUT]):
        return aout * EXP_LANE_OPS
    return 0.0


@njit(cache=True)
def stream_layer(li: np.ndarray, a: int, runtime: int, p: np.ndarray, ch: np.ndarray,
                 traffic: np.ndarray, acc: np.ndarray) -> float:
    """Elementwise / norm / softmax / pool / gather / copy layers as one bandwidth-bound pass;
    return the layer's constant bytes (norm scales, biases) at their IR size."""
    eb = stream_elem_bytes(a, runtime, p)
    ain, aout = float(li[L_AIN]), float(li[L_AOUT])
    if li[L_KIND] == KIND_GATHER:  # reads only the gathered rows, not the whole table
        nbytes = 2.0 * aout * eb
    else:
        nbytes = (ain + aout) * eb + float(li[L_WB]) * eb / 4.0
    lane_ops = float(li[L_OPS]) + exp_lane_ops(li)
    add_pass(nbytes, lane_ops, kernel_lanes(eb, p), home(nbytes, p, ch), p, ch, traffic, acc)
    acc[ACC_NODES] += 1.0
    return float(li[L_WB])


@njit(cache=True)
def view_layer(li: np.ndarray, runtime: int, acc: np.ndarray) -> float:
    """Reshape-likes move no data; onnxruntime still dispatches a Reshape node (Identity is
    removed by its graph optimiser)."""
    if runtime == RUNTIME_ORT and li[L_KIND] != KIND_IDENTITY:
        acc[ACC_NODES] += 1.0
    return float(li[L_WB])


@njit(cache=True)
def finish(macs: float, p: np.ndarray, ch: np.ndarray, traffic: np.ndarray, acc: np.ndarray,
           w_bytes: float, res: np.ndarray) -> None:
    """Fill one result column: cycles, latency, energy split, bound, utilisation."""
    acc[ACC_T_OVERHEAD] += acc[ACC_NODES] * p[P_OP_OVH]
    cycles, bound = 0.0, BOUND_COMPUTE
    for b in range(4):
        cycles += acc[b]
        if acc[b] > acc[bound]:
            bound = b
    nl = int(p[P_NLEVELS])
    onchip = 0.0
    for j in range(nl):
        onchip += traffic[j] * ch[j, C_E_BYTE]
    res[O_CYCLES], res[O_LATENCY] = cycles, cycles / p[P_CLOCK_HZ]
    res[O_E_COMPUTE] = (acc[ACC_INSTR] * p[P_E_INSTR] + acc[ACC_E_MAC]
                        + acc[ACC_LANE_OPS] * p[P_E_OP])
    res[O_E_ONCHIP], res[O_E_DRAM] = onchip, traffic[nl] * p[P_E_DRAM]
    res[O_BOUND], res[O_WBYTES] = bound, w_bytes
    peak = acc[ACC_PEAK] * p[P_CORES]
    res[O_UTIL] = min(1.0, macs / (cycles * peak)) if cycles > 0 and peak > 0 else 0.0


@njit(cache=True)
def layer_cost(li: np.ndarray, path: int, w: int, a: int, w_store: float, runtime: int,
               w_res: bool, first: bool, p: np.ndarray, ch: np.ndarray, paths: np.ndarray,
               scratch: np.ndarray) -> None:
    """Cost one layer at (w, a) bits on one config into scratch[:NO] (the rest of `scratch`
    holds the traffic per level and the accumulators). The first layer also carries the
    runtime's per-inference overhead."""
    scratch[:] = 0.0
    res = scratch[:NO]
    traffic = scratch[NO:NO + MAX_LEVELS + 1]
    acc = scratch[NO + MAX_LEVELS + 1:]
    if first and runtime == RUNTIME_ORT:
        acc[ACC_T_OVERHEAD] += p[P_RUN_OVH]
    cat = li[L_CAT]
    if path == PATH_FUSED:   # runs in the previous kernel's output loop: no node, no pass
        w_bytes = float(li[L_WB])
    elif cat == CATEGORY_GEMM:
        w_bytes = gemm_layer(li, path, w, a, w_store, runtime, w_res, p, ch, paths, traffic,
                             acc)
    elif cat == CATEGORY_VIEW:
        w_bytes = view_layer(li, runtime, acc)
    else:
        w_bytes = stream_layer(li, a, runtime, p, ch, traffic, acc)
    finish(float(li[L_MACS]), p, ch, traffic, acc, w_bytes, res)


@njit(cache=True)
def evaluate_pair(hb: int, lay: np.ndarray, per_bit: np.ndarray, resident: np.ndarray,
                  choice: np.ndarray, params: np.ndarray, caches: np.ndarray, paths: np.ndarray,
                  runtime: int, out: np.ndarray) -> None:
    """Cost every layer for config h and bit choice b (hb = h * B + b) into out[:, h, :, b].
    The glue's decisions: `per_bit` [B, 3] (w_bits, a_bits, stored bytes per weight),
    `resident` [H, B] (weights stay in the last cache level), `choice` [H, L, B] (path)."""
    h, b = hb // per_bit.shape[0], hb % per_bit.shape[0]
    w, a, store = int(per_bit[b, 0]), int(per_bit[b, 1]), per_bit[b, 2]
    scratch = np.zeros(NO + MAX_LEVELS + 1 + NACC)
    for i in range(lay.shape[0]):
        layer_cost(lay[i], int(choice[h, i, b]), w, a, store, runtime, resident[h, b] > 0,
                   i == 0, params[h], caches[h], paths[h], scratch)
        for f in range(NO):
            out[f, h, i, b] = scratch[f]


@njit(cache=True)
def evaluate_serial(lay: np.ndarray, per_bit: np.ndarray, resident: np.ndarray,
                    choice: np.ndarray, params: np.ndarray, caches: np.ndarray,
                    paths: np.ndarray, runtime: int, out: np.ndarray) -> None:
    """Fill out [NO, H, L, B] on one thread."""
    for hb in range(params.shape[0] * per_bit.shape[0]):
        evaluate_pair(hb, lay, per_bit, resident, choice, params, caches, paths, runtime, out)


@njit(cache=True, parallel=True)
def evaluate_parallel(lay: np.ndarray, per_bit: np.ndarray, resident: np.ndarray,
                      choice: np.ndarray, params: np.ndarray, caches: np.ndarray,
                      paths: np.ndarray, runtime: int, out: np.ndarray) -> None:
    """Fill out [NO, H, L, B] on numba's threads, one (config, bit choice) pair per task."""
    for hb in prange(params.shape[0] * per_bit.shape[0]):
        evaluate_pair(hb, lay, per_bit, resident, choice, params, caches, paths, runtime, out)


def evaluate(lay: np.ndarray, per_bit: np.ndarray, resident: np.ndarray, choice: np.ndarray,
             params: np.ndarray, caches: np.ndarray, paths: np.ndarray, runtime: int,
             out: np.ndarray) -> None:
    """Fill out [NO, H, L, B]; threads only pay off on large sweeps (their fork/join costs
    milliseconds on a loaded machine)."""
    work = params.shape[0] * lay.shape[0] * per_bit.shape[0]
    parallel = work >= PARALLEL_MIN_EVALS and params.shape[0] * per_bit.shape[0] > 1
    run = evaluate_parallel if parallel else evaluate_serial
    run(lay, per_bit, resident, choice, params, caches, paths, runtime, out)
