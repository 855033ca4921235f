"""Edge CPUs: per-core MAC rates and the cost kernel's path table (one row per kernel path:
its MAC rate from the pipes and ISA, operand widths, and the passes it adds), per runtime.
Formulas and sources of the kernel arithmetic are in `hwmodels.kernels.cpu`; the ncnn loop
facts in `hwmodels.kernels.cpu_ncnn`. The glue that calls the kernel is `hwmodels.cpu`."""

from __future__ import annotations

import numpy as np

from hwmodels import cpu_x86, energy, ncnn_int8, ort_int8, ort_layout
from hwmodels.cpu_schema import CpuTarget
from hwmodels.kernels import cpu_layout as K  # the kernel's array layout and path codes
from hwmodels.kernels import cpu_ncnn as ncnn_facts

# int8 dot-product instructions and their MACs per instruction relative to sdot / vpdpbusd
# (smmla computes a 2x8 by 8x2 tile: twice sdot's 16 MACs per 128 bits; Arm ARM v8.6)
DOT_FEATURES = {"i8mm": 2.0, "dotprod": 1.0, "avx512_vnni": 1.0, "avxvnni": 1.0}
# k consumed per lane by one int8 instruction: smmla 8, sdot / vpdpbusd 4, widening pairs 2
DOT_K_ALIGN = {"i8mm": 8.0, "dotprod": 4.0, "avx512_vnni": 4.0, "avxvnni": 4.0}


def peak_macs_per_cycle(target: CpuTarget) -> dict[str, float]:
    """Per-core MAC rates of the target's kernel families (MACs per cycle per core)."""
    lanes8 = target.simd_bits / 8.0
    dot = max((DOT_FEATURES[f] for f in target.isa if f in DOT_FEATURES), default=0.0)
    # without dot products: smull/smlal (Arm) or pmaddubsw+pmaddwd (x86) give simd_bits/16
    # products per multiply instruction (MLAS QGEMM NEON / AVX2 kernels)
    int8 = dot * target.dot_pipes * lanes8 if dot else target.int_mul_pipes * lanes8 / 2.0
    return {
        "fp32": target.fma_pipes * lanes8 / 4.0,
        "fp16": target.fma_pipes * lanes8 / 2.0 if "fp16" in target.isa else 0.0,
        "int8": int8,
        # T-MAC (Wei et al., EuroSys 2025): one table lookup resolves lanes8 groups of 4
        # one-bit weights and one add accumulates them -> 2 * lanes8 MACs per pipe at 1 bit
        "lut_1bit": target.fma_pipes * lanes8 * 2.0,
    }


def nbits_int8_available(target: CpuTarget) -> bool:
    """MLAS has a MatMulNBits CompInt8 kernel: Arm needs dotprod, x86 AVX2 or better."""
    return "dotprod" in target.isa if target.arch == "arm64" else "avx2" in target.isa


def _int8_k_align(target: CpuTarget) -> float:
    return max((DOT_K_ALIGN[f] for f in target.isa if f in DOT_K_ALIGN), default=2.0)


def _mac_pj(bits: int, node: float) -> float:
    return float(energy.mac_pj(bits, bits, node))


def _a53_class(target: CpuTarget) -> bool:
    """An in-order Cortex-A53-class core: Arm, 128-bit vector loads that hold the issue
    (`vector_load_cycles`), no fp16 arithmetic (the A55 has it, and its own kernels)."""
    return (target.arch == "arm64" and target.vector_load_cycles is not None
            and "fp16" not in target.isa)


def _path_rows(target: CpuTarget, runtime: int,
               a53_kernels: bool = True) -> dict[int, dict[str, float]]:
    """Kernel paths: MAC rate, operand widths in the kernel, and the passes each adds.
    `a53_kernels`: the ncnn release has its Cortex-A53 fp32 GEMM kernels (20230517 on), and
    so its fp16-weight InnerProduct (2022-06-24 on, `cpu_ncnn.fc_weight_bytes`)."""
    r, node = peak_macs_per_cycle(target), target.process_nm
    kal = _int8_k_align(target)
    ort, ncnn = runtime == K.RUNTIME_ORT, runtime == K.RUNTIME_NCNN
    # x86 with AVX2 / AVX-512: onnxruntime's NchwcTransformer runs convs as direct NCHWc
    # kernels; elsewhere MLAS expands the input (im2col) into per-thread tiles (1), ncnn
    # into one whole matrix, 1x1 convs included (2; kernels.cpu_ncnn)
    im2col = (2 if ncnn else 1) if (ort or ncnn) and target.arch == "arm64" else 0
    # ncnn's loops on an in-order A53: their operand loads do not dual-issue (cpu_ncnn)
    a53 = ncnn and _a53_class(target)
    q_load = target.vector_load_cycles or 0.0
    fp32_rate = r["fp32"] * (ncnn_facts.a53_fp32_load_share(1.0 / target.fma_pipes, q_load,
                                                            a53_kernels) if a53 else 1.0)
    fp32 = dict(rate=fp32_rate, eb_a=4, eb_w=4, eb_o=4, e_mac=_mac_pj(32, node),
                im2col=im2col, winograd=6 if ncnn else 0,
                dw_chain_cyc=cpu_x86.nchwc_depthwise_chain(target) if ort else 0.0,
                nchwc=int(ort and ort_layout.nchwc_block(target) > 0))
    int8_rate = r["int8"] * (ncnn_facts.a53_int8_load_share(1.0 / target.int_mul_pipes, q_load)
                             if a53 else 1.0)
    int8 = dict(rate=int8_rate, eb_a=1, eb_w=1, eb_o=1, k_align=kal, e_mac=_mac_pj(8, node),
                requant=1)
    nbits_rate = r["int8"] if nbits_int8_available(target) else 0.0
    # x86, VNNI or not: MLAS's U8U8 multiply-add QGEMM kernels for uint8 weights (edgesim's
    # codes; ConvInteger, registered for uint8 weights in onnxruntime's conv_integer.cc
    # through 1.2x and written so by bench_conv_integer), hwmodels.cpu_x86
    avx2 = ort and cpu_x86.is_x86_qgemm(target)
    qlinear_rate = cpu_x86.qgemm_rate(target) if avx2 else r["int8"]
    qlinear = {**int8, "rate": qlinear_rate, "nodes": 3, "q_in": 1, "dq_out": 1, "a_pack": 1,
               "im2col": 1, **(_ort_x86_int8(target) if ort else {})}
    return {
        K.PATH_FP32: fp32,
        K.PATH_FP16: {**fp32, "rate": r["fp16"], "eb_a": 2, "eb_w": 2, "eb_o": 2,
                      "e_mac": _mac_pj(16, node), "nchwc": 0,
                      # ncnn's direct fp16 convs: their accumulator chains wait on the FMA
                      "fma_lat": (target.fma_latency_cycles or 0.0) if ncnn else 0.0},
        # Q node -> QLinearConv/MatMul (packs A, requantises) -> DQ node; QLinearConv always
        # expands (no NCHWc int8 conv)
        K.PATH_QLINEAR: qlinear,
        **(ort_int8.chain_rows(qlinear) if ort else {}),
        # Q node -> MatMulIntegerToFloat: the same QGEMM, its output processor converts the
        # int32 sums to float and scales them in the kernel's output loop (requant's lane
        # ops, a float store); no DQ node, no requantisation to int8 (compiler.formats)
        K.PATH_MATMUL_INT_FLOAT: {**int8, "rate": qlinear_rate, "nodes": 2, "q_in": 1,
                                  "a_pack": 1, "eb_o": 4},
        # MatMulNBits CompInt8: A quantised per block, nibbles unpacked in registers
        K.PATH_NBITS_INT8: {**int8, "rate": nbits_rate, "eb_w": -1, "eb_o": 4, "requant": 0,
                            "a_quant": 1, "w_inline": 1},
        # MatMulNBits CompFp32: dequantise B per block to fp32 (in registers when M = 1)
        K.PATH_NBITS_FP32: {**fp32, "im2col": 0, "fake_q": 0, "w_dq": 4, "w_inline": 1},
        # DequantizeLinear node writes fp32 weights; MLAS packs that non-constant B (r+w);
        # a Q -> DQ pair in front of the float op where activations are on a grid (the
        # format policy's qdq_float rows; a layer it keeps float has no Q/DQ: PATH_FP32)
        K.PATH_DQ_FP32: {**fp32, "nodes": 2, "w_dq": 12, "fake_q": ort},
        K.PATH_INT8: _ncnn_int8(target, int8, im2col) if ncnn else {**int8, "eb_w": -1,
                                                                      "w_inline": 1},
        **(ncnn_int8.chain_rows(_ncnn_int8(target, int8, im2col)) if ncnn else {}),
        K.PATH_NCNN_FC_FP16S: {**fp32, "eb_w": ncnn_facts.fc_weight_bytes(a53_kernels),
                               "fc_rows": ncnn_facts.fc_interleaved_rows(a53_kernels)},
        K.PATH_LUT: dict(rate=r["lut_1bit"], eb_a=1, eb_w=-1, eb_o=4, k_align=4, a_quant=1,
                         e_mac=float(energy.add_pj(16, node))),
        K.PATH_FP32_UNPACK: {**fp32, "eb_w": -1, "w_inline": 1},
        K.PATH_CONV_INTEGER: conv_integer_row({**int8, "rate": qlinear_rate}),
        K.PATH_NBITS_FLOAT_ZP: {**fp32, "nodes": 1, "w_dq": 12,
                                "w_dq_cyc": cpu_x86.reorder_dequant_cycles()},
    }


def _ort_x86_int8(target: CpuTarget) -> dict[str, float]:
    """QLinearConv's x86 epilogue and depthwise kernel (`hwmodels.cpu_x86`)."""
    generic = K.REQUANT_LANE_OPS * 4.0  # the kernel's requantise lane ops per int8 output
    return {"requant": cpu_x86.requant_weight(target, generic, target.fma_pipes),
            "dw_vec_cyc": cpu_x86.qdw_vector_cycles(target),
            "gather_cyc": cpu_x86.indirection_cycles(target),
            "im2col_call_cyc": cpu_x86.im2col_call_cycles(target)}


def conv_integer_row(int8: dict[str, float]) -> dict[str, float]:
    """onnxruntime's dynamic int8 conv, read from its CPU kernels: DynamicQuantizeLinear
    (quantization/dynamicquantizelinear.cc: a min/max pass, then a quantise pass), ConvInteger
    (quantization/conv_integer.cc: per image and group, a uint8 im2col buffer unless the conv
    is 1x1 / stride 1 / unpadded, then MlasGemm on unpacked operands -- both are packed on
    every run, core/mlas/lib/qgemm.cpp -- writing int32), then Cast and Mul nodes, and an Add
    of the bias where the conv has one. No requantisation, no NCHWc or depthwise kernel:
    groups loop over GEMM calls. Nodes as `compiler.emit.dynamic` and `quantize_dynamic`
    write them: DynamicQuantizeLinear, the Mul of the two scales, ConvInteger, Cast, Mul."""
    return {**int8, "eb_o": 4, "requant": 0, "nodes": 5, "q_in": 1, "dyn_q": 1,
            "out_cast": 1, "a_pack": 1, "b_pack": 1, "group_loop": 1, "im2col": 1,
            "bias_add": 1}


def _ncnn_int8(target: CpuTarget, int8: dict[str, float], im2col: int) -> dict[str, float]:
    """ncnn's int8 conv: quantises its float input (q_in), im2col + packed int8 GEMM, and
    dequantises int32 to a float output in the kernel (eb_o 4, requant); without dotprod,
    3x3 stride-1 convs take Winograd F(4,3) on int16 products (convolution_arm.cpp
    create_pipeline_int8): widening multiplies of 16-bit lanes into 32-bit accumulators,
    simd_bits / 32 MACs per instruction."""
    # the GEMM writes int32 (eb_o 4) that a pass dequantises to float, then the activation
    # runs in place (forward_int8_arm): read 4 + write 4, read 4 + write 4 bytes (OUT_CAST)
    row = {**int8, "im2col": im2col, "q_in": 1, "eb_o": 4, "requant": 0, "out_cast": 1}
    if "dotprod" in target.isa:
        return row
    wg_rate = target.int_mul_pipes * target.simd_bits / 32.0
    if _a53_class(target):
        wg_rate *= ncnn_facts.a53_int8_winograd_load_share(1.0 / target.int_mul_pipes,
                                                           target.vector_load_cycles or 0.0)
    return {**row, "winograd": 4, "wg_rate": wg_rate}


_ATTR_COLUMNS = {"rate": K.A_RATE, "eb_a": K.A_EB_A, "eb_w": K.A_EB_W, "eb_o": K.A_EB_O,
                 "k_align": K.A_K_ALIGN, "nodes": K.A_NODES, "e_mac": K.A_E_MAC,
                 "q_in": K.A_Q_IN, "dq_out": K.A_DQ_OUT, "a_quant": K.A_A_QUANT,
                 "w_dq": K.A_W_DQ, "w_inline": K.A_W_INLINE, "im2col": K.A_IM2COL,
                 "fake_q": K.A_FAKE_Q, "a_pack": K.A_A_PACK, "requant": K.A_REQUANT,
                 "winograd": K.A_WINOGRAD, "wg_rate": K.A_WG_RATE, "dyn_q": K.A_DYN_Q,
                 "out_cast": K.A_OUT_CAST, "b_pack": K.A_B_PACK, "group_loop": K.A_GROUP_LOOP,
                 "w_dq_cyc": K.A_W_DQ_CYC, "dw_chain_cyc": K.A_DW_CHAIN_CYC,
                 "dw_vec_cyc": K.A_DW_VEC_CYC, "gather_cyc": K.A_GATHER_CYC,
                 "im2col_call_cyc": K.A_IM2COL_CALL_CYC, "fc_rows": K.A_FC_ROWS,
                 "fma_lat": K.A_FMA_LAT, "bias_add": K.A_BIAS_ADD, "nchwc": K.A_NCHWC}
_ATTR_DEFAULTS = {"k_align": 1.0, "nodes": 1.0}


def path_table(target: CpuTarget, runtime: int, a53_kernels: bool = True) -> np.ndarray:
    """The kernel's path table, float64 [NPATH, NA] (`a53_kernels`: see `_path_rows`)."""
    table = np.zeros((K.NPATH, K.NA))
    for path, attrs in _path_rows(target, runtime, a53_kernels).items():
        for name, value in {**_ATTR_DEFAULTS, **attrs}.items():
            table[path, _ATTR_COLUMNS[name]] = float(value)
    return table

