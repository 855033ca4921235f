"""The CPU cost kernel's GEMM-class layers (conv, linear, matmul): the compute core of the
layer's kernel path (`cpu_gemm`) and the passes that path adds around it (Q / DQ nodes,
activation quantisation, A packing, im2col, weight dequantisation, ncnn's padded copy and
direct-conv passes). Formulas and sources in `hwmodels.kernels.cpu`."""

from __future__ import annotations

import numpy as np

from hwmodels.kernels.arith import cdiv
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
    A_NCHWC,
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
    ACC_LANE_OPS,
    ACC_NODES,
    ACC_T_COMPUTE,
    ACC_T_OVERHEAD,
    BIAS_ADD_LANE_OPS,
    CAST_MUL_LANE_OPS,
    DQ_LANE_OPS,
    KIND_CONV,
    L_AIN,
    L_AOUT,
    L_DQ_COPIES,
    L_G,
    L_K,
    L_KH,
    L_KIND,
    L_M,
    L_MACS,
    L_N,
    L_WEL,
    MINMAX_LANE_OPS,
    P_GEMM_OVH,
    P_LANES32,
    P_NLEVELS,
    P_PIPES,
    P_THR_OVH,
    P_THREADS,
    P_TILE_M,
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
    TILE_EDGE_K,
    chain_share,
    direct_fp16_kernel,
    direct_pass_bytes,
    fc_rows_unprefetched,
    padded_copy_bytes,
)
from hwmodels.kernels.cpu_roofline import (
    add_pass,
    blocked,
    fits_llc,
    home,
    kernel_lanes,
    on_calling_thread,
)
from hwmodels.kernels.cpu_stream import stream_elem_bytes
from hwmodels.kernels.jit import njit


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
        # onnxruntime: one DQ node, and pass, per float reader (L_DQ_COPIES; hwmodels.ort_int8),
        # each on the calling thread (DequantizeLinearApply takes no thread pool)
        dq = float(li[L_DQ_COPIES]) if runtime == RUNTIME_ORT else 1.0
        add_pass(dq * aout * 5.0, dq * aout * DQ_LANE_OPS, lanes, home(aout * 5.0, p, ch),
                 on_calling_thread(p) if runtime == RUNTIME_ORT else p, ch, traffic, acc)
        acc[ACC_NODES] += dq - 1.0
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
    nchwc = row[A_NCHWC] > 0 and li[L_KIND] == KIND_CONV  # MLAS NCHWc conv: every thread
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
                           row[A_DW_CHAIN_CYC], row[A_DW_VEC_CYC], row[A_GATHER_CYC], nchwc)
    else:
        chains, cin = direct_conv(li, row)
        oc_split = runtime == RUNTIME_NCNN and li[L_KIND] == KIND_CONV and li[L_M] > 1
        unpf = fc_rows_unprefetched(row[A_FC_ROWS], float(li[L_K]), ebw)
        # ncnn's float im2col tiles (not its direct convs) set up and store accumulators
        edge = TILE_EDGE_K if oc_split and chains == 0.0 and eba > 1.0 else 0.0
        t = gemm_core(li, rate * chain_share(chains, row[A_FMA_LAT], p[P_PIPES]), eba, ebw, ebo,
                      row[A_K_ALIGN], extra, wel * ebw, w_res, runtime, p, ch, traffic, acc,
                      oc_split, unpf, nchwc, edge_k=edge)
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
