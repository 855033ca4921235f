"""The CPU cost kernel: one call over hardware configs x layers x bit choices.

Modules: `cpu_layout` (array layouts, path codes, constants), `cpu_roofline` (cache levels,
DRAM roof, threads, passes, roofline booking), `cpu_gemm` (GEMM, depthwise and Winograd
cores), `cpu_ncnn` (ncnn's tiles and thread split); this one costs layers and runs the sweep.
The formulas and their sources are listed here for all of them. numba's on-disk cache keys a
function on its own file only: after editing one of the imported modules, clear
`hwmodels/kernels/__pycache__` (or touch this file) so the callers here recompile.

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
  at t = 1 and the all-core figure at t = cores, linear in between (`dram_bandwidth`); on
  t > 1 threads a kernel's compute side also waits dram * (1 - s / t) for that shared roof
  (s its growth from 1 to t threads; `contended`), so DRAM-heavy ops scale less than
  compute-bound ones (one-thread predictions unchanged). ncnn sizes its GEMM tiles from the
  whole L2 at any thread count, so its operand refetches are those of one thread, and its
  micro-kernel's operand panels come from L2 once they exceed L1 (`ncnn_panel_bytes`);
  ncnn's GEMMs also wait for a shared cache level as for DRAM (`shared_wait`).
  onnxruntime's elementwise / activation kernels split only when Eigen's cost model asks for
  a second thread, in CalculateParallelForBlock's blocks (`threads.parallel_for_share`).
  Its DequantizeLinear takes no thread pool at all (quantize_linear.cc
  `DequantizeLinearApply`: one loop on the calling thread; a 2-thread session's profile
  shows no parallel section for it at any size), so a DQ node's pass runs on one thread.
  ncnn splits its im2col conv GEMMs over output-channel blocks and depthwise convs over
  channel packs, on 8 x 12 register tiles, and writes the whole im2col matrix (1x1 convs
  included) before the GEMM (`hwmodels.kernels.cpu_ncnn`, each fact cited there).
- Winograd (ncnn profile): 3x3 stride-1 convs run as F(r, 3) (`winograd_tile`,
  `winograd_core`; Lavin & Gray, CVPR 2016): (r + 2)^2 GEMMs over the tiles plus input and
  output transform passes.
- Passes (Q/DQ, activation quantisation, A packing, im2col, weight dequantisation, elementwise,
  norm, softmax, copies): max(lane_ops / (lanes * pipes), bytes / bandwidth) from the last
  level when they fit it, else DRAM; blocked buffers from L2. exp costs EXP_LANE_OPS.
- onnxruntime int8 (x86 terms in `hwmodels.cpu_x86`, chains in `hwmodels.ort_int8`): a
  QLinearConv inside an int8 chain has no Q / DQ pass; its int32 sums pass through MLAS's SSE2
  requantise loop (A_REQUANT weighs it); the AVX2 int8 depthwise kernel spends 10 uops per tap
  and 16 channels (A_DW_VEC_CYC) plus an indirection entry per tap (A_GATHER_CYC), packs no A;
  the NHWC im2col pays a memcpy call per output pixel and kernel row (A_IM2COL_CALL_CYC).
- Layout copies (onnxruntime): NCHWc reorders and NHWC Transposes its optimiser inserts
  (`hwmodels.ort_layout` places them, `cpu_inserted` costs them) are added to the output
  of this kernel by the glue (`hwmodels.cpu.run_kernel`).
- Overhead: per onnxruntime node, `gemm_overhead_us` (conv / matmul) or `op_overhead_us`
  (others, incl. Q and DQ nodes); `run_overhead_us` per inference, booked on the first layer.
- Energy (Horowitz, ISSCC 2014): instructions * pJ + MACs * pJ + lane ops * pJ (compute),
  bytes per cache level * pJ/byte (on-chip), DRAM bytes * pJ/byte.
"""

from __future__ import annotations

import numpy as np

from hwmodels.kernels import cpu_gemm, cpu_layout, cpu_roofline, jit, threads
from hwmodels.kernels.cpu_gemm import (
    depthwise_core,
    gemm_core,
    winograd_core,
    winograd_tile,
)
from hwmodels.kernels.cpu_layout import (
    A_A_PACK,
    A_A_QUANT,
    A_B_PACK,
    A_BIAS_ADD,
    A_DQ_OUT,
    A_DW_CHAIN_CYC,
    A_DW_VEC_CYC,
    A_DYN_Q,
    A_E_MAC,
    A_EB_A,
    A_EB_O,
    A_EB_W,
    A_FAKE_Q,
    A_FC_ROWS,
    A_FMA_LAT,
    A_GATHER_CYC,
    A_GROUP_LOOP,
    A_IM2COL,
    A_IM2COL_CALL_CYC,
    A_K_ALIGN,
    A_NODES,
    A_OUT_CAST,
    A_Q_IN,
    A_RATE,
    A_REQUANT,
    A_W_DQ,
    A_W_DQ_CYC,
    A_W_INLINE,
    A_WG_RATE,
    A_WINOGRAD,
    ACC_E_MAC,
    ACC_INSTR,
    ACC_LANE_OPS,
    ACC_NODES,
    ACC_PEAK,
    ACC_T_COMPUTE,
    ACC_T_OVERHEAD,
    BIAS_ADD_LANE_OPS,
    BOUND_COMPUTE,
    C_E_BYTE,
    CAST_MUL_LANE_OPS,
    CATEGORY_GEMM,
    CATEGORY_VIEW,
    DQ_LANE_OPS,
    EXP_LANE_OPS,
    KIND_ACTIVATION,
    KIND_CONCAT,
    KIND_CONV,
    KIND_ELTWISE,
    KIND_GATHER,
    KIND_IDENTITY,
    KIND_NORM,
    KIND_SOFTMAX,
    KIND_TRANSPOSE,
    L_AIN,
    L_AOUT,
    L_CAT,
    L_G,
    L_K,
    L_KH,
    L_KIND,
    L_M,
    L_MACS,
    L_N,
    L_OPS,
    L_WB,
    L_WEL,
    MAX_LEVELS,
    MINMAX_LANE_OPS,
    NACC,
    NO,
    O_BOUND,
    O_CYCLES,
    O_E_COMPUTE,
    O_E_DRAM,
    O_E_ONCHIP,
    O_LATENCY,
    O_UTIL,
    O_WBYTES,
    P_CLOCK_HZ,
    P_CORES,
    P_E_DRAM,
    P_E_INSTR,
    P_E_OP,
    P_FP16,
    P_GEMM_OVH,
    P_LANES32,
    P_NLEVELS,
    P_OP_OVH,
    P_PIPES,
    P_RUN_OVH,
    P_THR_OVH,
    P_THREADS,
    P_TILE_M,
    PARALLEL_MIN_EVALS,
    PATH_FUSED,
    PATH_LUT,
    Q_LANE_OPS,
    REQUANT_LANE_OPS,
    RUNTIME_NCNN,
    RUNTIME_ORT,
    UNPACK_LANE_OPS,
    WINOGRAD_MIN_CH,
    WINOGRAD_MIN_CH_FP16,
)
from hwmodels.kernels.cpu_ncnn import (
    chain_share,
    direct_fp16_kernel,
    direct_pass_bytes,
    fc_rows_unprefetched,
    lrn_layout_bytes,
    padded_copy_bytes,
)
from hwmodels.kernels.cpu_roofline import (
    add_pass,
    blocked,
    cdiv,
    fits_llc,
    home,
    kernel_lanes,
    on_calling_thread,
)
from hwmodels.kernels.jit import njit, prange


@njit(cache=True)
def gemm_streams(li: np.ndarray, row: np.ndarray, a: int, eba: float, ebw: float, w_store: float,
                 w_res: bool, inline: bool, direct: bool, runtime: int, p: np.ndarray,
                 ch: np.ndarray, traffic: np.ndarray, acc: np.ndarray) -> None:
    """The passes a kernel path adds around its GEMM (Q/DQ nodes, activation quantisation,
    A packing, im2col, weight dequantisation, run-time B packing)."""
    m, n, k, g = float(li[L_M]), float(li[L_N]), float(li[L_K]), float(li[L_G])
    ain, aout, wel = float(li[L_AIN]), float(li[L_AOUT]), float(li[L_WEL])
    lanes, mk, blk = p[P_LANES32], m * k * g, blocked(p)
    # float tensors between ops: fp32, or ncnn's fp16 storage on fp16 cores
    feb = stream_elem_bytes(a, runtime, p) if runtime == RUNTIME_NCNN else 4.0
    if row[A_Q_IN] > 0:       # QuantizeLinear node: float in, int8 out
        add_pass(ain * (feb + 1.0), ain * Q_LANE_OPS, lanes, home(ain * (feb + 1.0), p, ch), p,
                 ch, traffic, acc)
    if row[A_DYN_Q] > 0:      # DynamicQuantizeLinear's range pass (its Q pass is A_Q_IN)
        add_pass(ain * 4.0, ain * MINMAX_LANE_OPS, lanes, home(ain * 4.0, p, ch), p, ch,
                 traffic, acc)
    if row[A_OUT_CAST] > 0:   # Cast int32 -> float, then Mul (ncnn: activation) in place
        ob = 4.0 + 3.0 * feb  # int32 in, float out; float in and out: 16 B at fp32
        add_pass(aout * ob, aout * CAST_MUL_LANE_OPS, lanes, home(aout * ob, p, ch), p, ch,
                 traffic, acc)
    if row[A_BIAS_ADD] > 0 and wel > n * k * g + 0.5:  # a float Add node of the bias
        add_pass(aout * 2.0 * feb, aout * BIAS_ADD_LANE_OPS, lanes, home(aout * 2.0 * feb, p, ch),
                 p, ch, traffic, acc)
        acc[ACC_NODES] += 1.0
    if row[A_DQ_OUT] > 0:     # DequantizeLinear node: int8 in, fp32 out
        add_pass(aout * 5.0, aout * DQ_LANE_OPS, lanes, home(aout * 5.0, p, ch),
                 on_calling_thread(p) if runtime == RUNTIME_ORT else p, ch, traffic, acc)
    if row[A_FAKE_Q] > 0 and a <= 8:  # Q -> DQ pair left in front of a float kernel
        add_pass(ain * 10.0, ain * (Q_LANE_OPS + DQ_LANE_OPS), lanes, home(ain * 10.0, p, ch), p,
                 ch, traffic, acc)
        acc[ACC_NODES] += 2.0
    if row[A_A_QUANT] > 0:    # activations quantised per block (MatMulNBits CompInt8, LUT build)
        add_pass(mk * 5.0, mk * Q_LANE_OPS, lanes, blk, p, ch, traffic, acc)
    # direct depthwise and Winograd kernels need no im2col; ConvInteger has neither
    depthwise = g > 1 and n == 1 and row[A_GROUP_LOOP] == 0
    if row[A_A_PACK] > 0 and not depthwise:  # QGEMM packs A and computes its row sums
        # (MlasConvDepthwise reads its input through pointers: nothing packed)
        add_pass(mk * 2.0 * eba, mk, kernel_lanes(eba, p), blk, p, ch, traffic, acc)
    whole = row[A_IM2COL] > 1.5  # ncnn: writes the whole im2col matrix, 1x1 convs included
    if (row[A_IM2COL] > 0 and li[L_KIND] == KIND_CONV and (whole or abs(mk - ain) > 0.5)
            and not depthwise and not direct):
        nbytes = (ain + mk) * eba  # MLAS expands into per-thread tiles (blocked level)
        add_pass(nbytes, 0.0, lanes, home(nbytes, p, ch) if whole else blk, p, ch, traffic, acc)
        # NHWC im2col: one memcpy call per output pixel and kernel row, split over threads
        acc[ACC_T_COMPUTE] += (m * float(li[L_KH]) * row[A_IM2COL_CALL_CYC]
                               / max(1.0, p[P_THREADS]))
    if wel > 0 and row[A_W_DQ] > 0 and not inline:  # weights dequantised to an fp32 buffer
        nl = int(p[P_NLEVELS])
        # vector lanes, or a scalar loop of A_W_DQ_CYC cycles per weight (one "lane" per
        # 1 / pipes so that add_pass books exactly wel * cycles / threads)
        cyc = row[A_W_DQ_CYC]
        ops, dq_lanes = (wel * cyc, 1.0 / p[P_PIPES]) if cyc > 0 else (wel * UNPACK_LANE_OPS,
                                                                         lanes)
        add_pass(wel * (w_store + row[A_W_DQ]), ops, dq_lanes, nl - 1 if w_res else nl, p, ch,
                 traffic, acc)
    if wel == 0 or row[A_B_PACK] > 0:  # activations, or unpacked weights: packed per run
        add_pass(k * n * g * ebw * 2.0, 0.0, lanes, blk, p, ch, traffic, acc)


@njit(cache=True)
def direct_conv(li: np.ndarray, row: np.ndarray) -> tuple[float, float]:
    """(accumulator chains, input channels) of the direct fp16 conv kernel ncnn runs the layer
    with (`cpu_ncnn.direct_fp16_kernel`); (0, 0) on paths without a described FMA latency
    (A_FMA_LAT: ncnn's fp16 arithmetic only), for other kinds and other kernels."""
    if row[A_FMA_LAT] <= 0.0 or row[A_EB_A] != 2.0 or li[L_KIND] != KIND_CONV:
        return 0.0, 0.0
    return direct_fp16_kernel(float(li[L_M]), float(li[L_N]), float(li[L_K]), float(li[L_G]),
                              float(li[L_AIN]))


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
    if row[A_REQUANT] > 0:   # requantise int32 accumulators (fp32 lanes -> kernel lanes);
        # A_REQUANT weighs the runtime's requantise loop against REQUANT_LANE_OPS
        extra += float(li[L_AOUT]) * REQUANT_LANE_OPS * 4.0 / eba * row[A_REQUANT]
    min_ch = WINOGRAD_MIN_CH_FP16 if eba == 2.0 else WINOGRAD_MIN_CH
    r = winograd_tile(li, row[A_WINOGRAD], min_ch) if row[A_WINOGRAD] > 0 else 0.0
    if r > 0:  # the transformed GEMM may run at another rate (ncnn int8: int16 products)
        wg_rate = row[A_WG_RATE] if row[A_WG_RATE] > 0 else rate
        t = winograd_core(li, r, wg_rate, eba, ebw, ebo, extra, w_res, runtime, p, ch, traffic,
                          acc)
    elif li[L_G] > 1 and li[L_N] == 1 and row[A_GROUP_LOOP] == 0:
        t = depthwise_core(li, eba, ebo, extra, wel * ebw, w_res, runtime, p, ch, traffic, acc,
                           row[A_DW_CHAIN_CYC], row[A_DW_VEC_CYC], row[A_GATHER_CYC])
    else:
        chains, cin = direct_conv(li, row)
        oc_split = runtime == RUNTIME_NCNN and li[L_KIND] == KIND_CONV and li[L_M] > 1
        unpf = fc_rows_unprefetched(row[A_FC_ROWS], float(li[L_K]), ebw)
        t = gemm_core(li, rate * chain_share(chains, row[A_FMA_LAT], p[P_PIPES]), eba, ebw, ebo,
                      row[A_K_ALIGN], extra, wel * ebw, w_res, runtime, p, ch, traffic, acc,
                      oc_split, unpf)
        if chains > 0:  # direct conv: no im2col; its input and accumulator passes instead
            r = -1.0
            add_pass(direct_pass_bytes(float(li[L_AIN]), float(li[L_AOUT]), float(li[L_N]),
                                       cin, eba), 0.0,
                     p[P_LANES32], blocked(p), p, ch, traffic, acc)
    if runtime == RUNTIME_NCNN and li[L_KIND] == KIND_CONV:  # make_padding's bordered copy
        pad = padded_copy_bytes(m, float(li[L_K]), float(li[L_G]), float(li[L_AIN]), eba)
        if pad > 0:
            add_pass(pad, 0.0, p[P_LANES32], home(pad, p, ch), p, ch, traffic, acc)
    acc[ACC_LANE_OPS] += extra
    gemm_streams(li, row, a, eba, ebw, w_store, model_w_res, inline, r != 0.0, runtime, p, ch,
                 traffic, acc)
    acc[ACC_NODES] += row[A_NODES] - 1.0  # Q / DQ nodes; the GEMM node costs more:
    acc[ACC_T_OVERHEAD] += p[P_GEMM_OVH] + (p[P_THR_OVH] if t > 1 else 0.0)
    if row[A_GROUP_LOOP] > 0:  # one im2col + MlasGemm call per group (conv_integer.cc);
        # assumed: each call costs a GEMM node's dispatch
        acc[ACC_T_OVERHEAD] += (float(li[L_G]) - 1.0) * p[P_GEMM_OVH]
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
def ort_eltwise_cost(li: np.ndarray, eb: float) -> float:
    """Eigen cost per element onnxruntime's elementwise kernel declares (`threads`): exp-class
    activations (`exp_lane_ops`) as Sigmoid, the rest as Add / Relu."""
    exp = li[L_KIND] == KIND_ACTIVATION and li[L_OPS] >= 3 * li[L_AOUT]
    return threads.parallel_for_cost(eb, threads.EXP_COMPUTE_CYCLES if exp
                                     else threads.ELTWISE_COMPUTE_CYCLES)


@njit(cache=True)
def stream_layer(li: np.ndarray, a: int, runtime: int, p: np.ndarray, ch: np.ndarray,
                 traffic: np.ndarray, acc: np.ndarray) -> float:
    """Elementwise / norm / softmax / pool / gather / copy layers as one bandwidth-bound pass;
    return the layer's constant bytes (norm scales, biases) at their IR size."""
    eb = stream_elem_bytes(a, runtime, p)
    ain, aout = float(li[L_AIN]), float(li[L_AOUT])
    if runtime == RUNTIME_NCNN and li[L_KIND] == KIND_NORM:  # LRN: fp32, pack 1 (cpu_ncnn)
        add_pass(ain * lrn_layout_bytes(eb == 2.0), ain * 2.0, kernel_lanes(4.0, p),
                 home(ain * 4.0, p, ch), p, ch, traffic, acc)
        eb = 4.0
    if li[L_KIND] == KIND_GATHER:  # reads only the gathered rows, not the whole table
        nbytes = 2.0 * aout * eb
    else:
        nbytes = (ain + aout) * eb + float(li[L_WB]) * eb / 4.0
    lane_ops = float(li[L_OPS]) + exp_lane_ops(li)
    if runtime == RUNTIME_NCNN and (li[L_KIND] == KIND_CONCAT or li[L_KIND] == KIND_TRANSPOSE):
        # ncnn @a4d2ea1: channel Concat is a memcpy per input on the calling thread
        # (concat_arm.cpp, dims 3 axis 0: no omp), ShuffleChannel a serial loop
        # (shufflechannel_arm.cpp: no omp; ONNX channel shuffles convert to it)
        p = p.copy()
        p[P_THREADS] = 1.0
    if runtime == RUNTIME_ORT and (li[L_KIND] == KIND_ELTWISE or li[L_KIND] == KIND_ACTIVATION):
        p = p.copy()  # onnxruntime's cost-gated ParallelFor: threads the busiest one sets
        p[P_THREADS] = 1.0 / threads.parallel_for_share(aout, ort_eltwise_cost(li, eb), p[
            P_THREADS])
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
             out: np.ndarray, *, serial: bool = False, engine: str | None = None) -> None:
    """Fill out [NO, H, L, B] in the engine `jit.engine` picks for this work (or `engine`);
    threads only pay off on large sweeps (their fork/join costs milliseconds on a loaded
    machine), never with `serial`."""
    work = params.shape[0] * lay.shape[0] * per_bit.shape[0]
    if jit.engine(work, engine) == "python":
        jit.python(evaluate_serial)(lay, per_bit, resident, choice, params, caches, paths,
                                    runtime, out)
        return
    parallel = (not serial and work >= PARALLEL_MIN_EVALS
                and params.shape[0] * per_bit.shape[0] > 1 and threads.available() > 1)
    run = jit.compiled(evaluate_parallel if parallel else evaluate_serial)
    run(lay, per_bit, resident, choice, params, caches, paths, runtime, out)


def __getattr__(name: str) -> object:
    """The array layout and the memory / compute helpers keep their address here
    (`hwmodels.kernels.cpu.P_CORES`, `.winograd_tile`) while living in one module each."""
    for module in (cpu_layout, cpu_roofline, cpu_gemm):
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
