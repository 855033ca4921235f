"""Edge CPUs (Arm / x86): the cost model's Python glue (the target schema lives in
`hwmodels.cpu_schema`; its classes are re-exported here).

The arithmetic lives in `hwmodels.kernels.cpu` (formulas and sources are listed there). This
module resolves a `CpuTarget` into the kernel's arrays -- scalar parameters, cache levels and
one row per kernel path (its MAC rate from the pipes and ISA, and the passes it adds) -- calls
the kernel once, and wraps the result in a `Cost`. What it derives is memoised: per target on
`CpuTarget.memo`, per table and bit-choice set on `LayerTable.memo` (`kernel_inputs`). It must
not import `hwmodels.target`.

Runtimes: `"onnxruntime"` models the kernels onnxruntime 1.31 takes for each emitted format;
`"ideal"` the best kernel the ISA allows (headroom); `"ncnn"` Tencent ncnn's Arm kernels
(fp16 storage and arithmetic on cores with fp16 arithmetic, Winograd F(6,3) / F(4,3) / F(2,3)
for 3x3 stride-1 convs, int8 models on its int8 kernels, each conv requantising to int8 or
dequantising to float by its neighbours, `hwmodels.ncnn_int8`);
`"xnnpack"` XNNPACK as TensorFlow Lite's CPU delegate runs a model (indirect convolution:
no im2col buffer, Dukhan 2019; fp32 graphs in fp32; int8 graphs end to end in int8 with
requantisation fused, no Q / DQ nodes; no Winograd).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from compiler.formats import (
    FORMAT_CODE,
    FORMATS,
    NBITS_BLOCK,
    WEIGHT_INPUT,
    Policy,
    emitted_bytes,
    nbits_container,
    resolve_codes,
    runs_as,
    table_geometry,
)
from compiler.ir import CATEGORY_GEMM, KIND_CODE, LayerTable
from hwmodels import cpu_x86, energy, ncnn_int8, ort_int8, ort_layout
from hwmodels.cost import Cost, bits_key, check_bits, held_once, memoised, memory_bytes
from hwmodels.cpu_schema import ISA_FEATURES as ISA_FEATURES
from hwmodels.cpu_schema import CacheLevel as CacheLevel
from hwmodels.cpu_schema import CpuTarget as CpuTarget
from hwmodels.cpu_schema import Dram as Dram
from hwmodels.cpu_schema import Power as Power
from hwmodels.kernels import cpu as kernel
from hwmodels.kernels import cpu_inserted, jit
from hwmodels.kernels import cpu_layout as K  # the kernel's array layout and path codes
from hwmodels.kernels import cpu_ncnn as ncnn_facts

RUNTIMES = {"onnxruntime": K.RUNTIME_ORT, "ideal": K.RUNTIME_IDEAL, "ncnn": K.RUNTIME_NCNN,
            "xnnpack": K.RUNTIME_XNNPACK}
# older releases a published measurement ran, accepted by `evaluate` but not offered for
# comparison: ncnn before 20230517 lacks the Cortex-A53 fp32 kernels
# (`cpu_ncnn.a53_fp32_load_share`)
LEGACY_RUNTIMES = {"ncnn-2022": K.RUNTIME_NCNN}
# int8 dot-product instructions and their MACs per instruction relative to sdot / vpdpbusd
# (smmla computes a 2x8 by 8x2 tile: twice sdot's 16 MACs per 128 bits; Arm ARM v8.6)
DOT_FEATURES = {"i8mm": 2.0, "dotprod": 1.0, "avx512_vnni": 1.0, "avxvnni": 1.0}
# k consumed per lane by one int8 instruction: smmla 8, sdot / vpdpbusd 4, widening pairs 2
DOT_K_ALIGN = {"i8mm": 8.0, "dotprod": 4.0, "avx512_vnni": 4.0, "avxvnni": 4.0}
# Horowitz (ISSCC 2014): ~70 pJ to fetch, decode and issue an instruction at 45 nm
INSTRUCTION_PJ_45NM = 70.0
LUT_MAX_M = 8     # T-MAC's table-lookup kernels target GEMV and small batches
_LINEAR_KINDS = (KIND_CODE["linear"], KIND_CODE["matmul"])



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
                dw_chain_cyc=cpu_x86.nchwc_depthwise_chain(target) if ort else 0.0)
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
                      "e_mac": _mac_pj(16, node),
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
                 "fma_lat": K.A_FMA_LAT, "bias_add": K.A_BIAS_ADD}
_ATTR_DEFAULTS = {"k_align": 1.0, "nodes": 1.0}


def path_table(target: CpuTarget, runtime: int, a53_kernels: bool = True) -> np.ndarray:
    """The kernel's path table, float64 [NPATH, NA] (`a53_kernels`: see `_path_rows`)."""
    table = np.zeros((K.NPATH, K.NA))
    for path, attrs in _path_rows(target, runtime, a53_kernels).items():
        for name, value in {**_ATTR_DEFAULTS, **attrs}.items():
            table[path, _ATTR_COLUMNS[name]] = float(value)
    return table


def _energy_scalars(target: CpuTarget) -> tuple[float, float, float]:
    """pJ per instruction, per fp32 lane op, per DRAM byte."""
    node = target.process_nm
    instr = target.instruction_energy_pj
    instr = INSTRUCTION_PJ_45NM * float(energy.node_scale(node)) if instr is None else instr
    dram = target.dram.energy_pj_per_byte
    dram = energy.dram_pj_per_byte() if dram is None else dram
    return instr, float(energy.add_pj(32, node)), dram


def params_row(target: CpuTarget, threads: int | None) -> np.ndarray:
    """The kernel's scalar parameters, float64 [NP]."""
    hz = target.clock_ghz * 1e9
    e_instr, e_op, e_dram = _energy_scalars(target)
    p = np.zeros(K.NP)
    p[[K.P_CLOCK_HZ, K.P_CORES, K.P_THREADS]] = hz, target.cores, resolve_threads(target, threads)
    p[[K.P_LANES32, K.P_PIPES]] = target.simd_bits / 32.0, target.fma_pipes
    p[[K.P_TILE_M, K.P_TILE_N, K.P_GEMM_EFF]] = (target.gemm_tile_m, target.gemm_tile_n,
                                                  target.gemm_efficiency)
    p[K.P_DRAM_BPC] = target.dram.sustained_bandwidth_gbps / target.clock_ghz
    all_core = target.dram.all_core_bandwidth_gbps or target.dram.sustained_bandwidth_gbps
    p[K.P_DRAM_ALL_BPC] = all_core / target.clock_ghz
    us = np.array([target.op_overhead_us, target.gemm_overhead_us, target.run_overhead_us,
                   target.thread_overhead_us])
    p[[K.P_OP_OVH, K.P_GEMM_OVH, K.P_RUN_OVH, K.P_THR_OVH]] = us * 1e-6 * hz
    p[[K.P_NLEVELS, K.P_E_INSTR, K.P_E_OP, K.P_E_DRAM]] = len(target.caches), e_instr, e_op, e_dram
    p[K.P_FP16] = 1.0 if "fp16" in target.isa else 0.0
    p[K.P_PAR_EFF] = target.parallel_efficiency
    pair_ns = target.dram.dual_random_read_ns
    if pair_ns is not None:
        p[K.P_DRAM_MISS_BPC] = latency_bound_bpc(pair_ns, target.caches[-1].line_bytes,
                                                 target.clock_ghz)
    return p


def latency_bound_bpc(pair_ns: float, line_bytes: int, clock_ghz: float) -> float:
    """DRAM bytes per core cycle one core reads when no prefetch runs ahead of it: two
    independent cache-line misses in flight (what tinymembench's "dual random read" times,
    `Dram.dual_random_read_ns`), so two lines per `pair_ns` (Little's law)."""
    return 2.0 * line_bytes / (pair_ns * clock_ghz)


def cache_rows(target: CpuTarget) -> np.ndarray:
    """The kernel's cache table, float64 [MAX_LEVELS, NC]."""
    rows = np.zeros((K.MAX_LEVELS, K.NC))
    for j, c in enumerate(target.caches):
        e = c.energy_pj_per_byte
        e = float(energy.sram_pj_per_byte(c.size_kib, target.process_nm)) if e is None else e
        rows[j] = c.size_kib * 1024.0, c.bandwidth_bytes_per_cycle, float(c.shared), e
    return rows


def resolve_threads(target: CpuTarget, threads: int | None) -> int:
    """Threads the model assumes: the target's cores by default, never more than the cores."""
    if threads is None:
        return target.cores
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    return min(int(threads), target.cores)


def layer_array(table: LayerTable) -> np.ndarray:
    """The kernel's layer input, int64 [L, NL] (column order = kernels.cpu.L_*)."""
    cols = (table.kind_code, table.category, table.m, table.n, table.k, table.groups,
            table.macs, table.ops, table.w_elems, table.a_in_elems, table.a_out_elems,
            table.w_bytes,
            np.ones(len(table), np.int64) if table.kernel_rows is None else table.kernel_rows)
    if not len(table):
        return np.zeros((0, K.NL), dtype=np.int64)
    return np.ascontiguousarray(np.stack(cols, axis=1), dtype=np.int64)


def _runtime_code(runtime: str) -> int:
    if runtime in LEGACY_RUNTIMES:
        return LEGACY_RUNTIMES[runtime]
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {sorted(RUNTIMES)}, got {runtime!r}")
    return RUNTIMES[runtime]


def container(w_bits: np.ndarray) -> np.ndarray:
    """onnxruntime's storage width for w-bit weights (`compiler.formats.nbits_container`);
    16 and 32 stay as they are."""
    w = np.asarray(w_bits)
    return np.where(w <= 8, np.vectorize(nbits_container, otypes=[np.int64])(np.minimum(w, 8)),
                    w)


def weight_store_bytes(w_bits: np.ndarray, runtime: int) -> np.ndarray:
    """Bytes per stored weight. onnxruntime: the container plus, below 8 bits, an fp32 scale
    and a packed zero point per block (MatMulNBits layout, DESIGN.md); ideal: exactly w bits
    plus an fp16 scale per block."""
    w = np.asarray(w_bits, dtype=np.float64)
    if runtime == K.RUNTIME_IDEAL:
        return w / 8 + np.where(w < 8, 2.0 / NBITS_BLOCK, 0.0)
    c = container(w)
    return np.where(c < 8, c / 8 + (4 + c / 8) / NBITS_BLOCK, c / 8)


def emitted_weight_bytes(table: LayerTable, bits: np.ndarray, target: CpuTarget) -> np.ndarray:
    """float64 [L, B]: the initializer bytes edgesim's emitter writes for each weighted layer's
    weight and bias at each bit choice (`compiler.formats.emitted_bytes` of its row, per
    channel or per `NBITS_BLOCK` block as planned by default); NaN for the other layers."""
    codes = format_codes(table, bits, target)
    weighted = np.isin(table.kind_code, [KIND_CODE[k] for k in WEIGHT_INPUT]) & (table.w_elems > 0)
    geo, out = table_geometry(table), np.full(codes.shape, np.nan)
    for code in np.unique(codes):
        f = FORMATS[code]
        gran = "per_block" if f.granularities == ("per_block",) else "per_channel"
        nbytes = emitted_bytes(f.name, bits[:, 0][None, :],
                               dataclasses.replace(geo, granularity=gran))
        out = np.where((codes == code) & weighted[:, None], nbytes, out)
    return out


# The cost path of every row of the format policy (compiler.formats.FORMATS) on onnxruntime.
ROW_PATH = {
    "float": K.PATH_FP32,
    "fp16": K.PATH_FP32,          # onnxruntime folds the Cast of a constant: fp32 compute
    "qlinear_conv": K.PATH_QLINEAR,
    "int8_linear": K.PATH_MATMUL_INT_FLOAT,      # Q(x) -> MatMulIntegerToFloat
    "int8_act_matmul": K.PATH_MATMUL_INT_FLOAT,  # Q(a), Q(b) -> MatMulIntegerToFloat
    "qdq_float": K.PATH_DQ_FP32,  # Q/DQ nodes around an fp32 op
    "qdq_float_transpose": K.PATH_DQ_FP32,
    "nbits_fp32": K.PATH_NBITS_FP32,
    "nbits_int8": K.PATH_NBITS_INT8,
    # not prepacked: B dequantised by a scalar loop to an fp32 buffer, then SGEMM, on every
    # run (#28552; cpu_x86.reorder_dequant_cycles)
    "nbits_float_zp": K.PATH_NBITS_FLOAT_ZP,
    "int_dq": K.PATH_FP32,        # Cast * scale of a constant is folded at load
    "int_dq_block": K.PATH_DQ_FP32,
    "gbq": K.PATH_FP32,
    # quantize_dynamic: DynamicQuantizeMatMul packs A and quantises it per run like QGEMM
    "dynamic_int8_linear": K.PATH_QLINEAR,
    # ConvInteger + Cast + Mul: its own path (conv_integer_row)
    "dynamic_int8_conv": K.PATH_CONV_INTEGER,
    "qlinear_linear": K.PATH_QLINEAR,
    "qlinear_act_matmul": K.PATH_QLINEAR,
}
_PATH_OF_CODE = np.array([ROW_PATH[name] for name in FORMAT_CODE], dtype=np.int64)


def format_policy(target: CpuTarget) -> Policy:
    """The format policy onnxruntime follows on `target` (its capabilities)."""
    return Policy(int8_dot=nbits_int8_available(target))


def format_codes(table: LayerTable, bits: np.ndarray, target: CpuTarget) -> np.ndarray:
    """The format-policy row (`compiler.formats.FORMAT_CODE`) of every layer and bit choice,
    int64 [L, B]: the planned row where the table carries one, else the policy's for the bits.
    Memoised on the table per bits and policy (a cost call's paths and emitted bytes both read
    it): read-only."""
    policy, bits = format_policy(target), np.asarray(bits, dtype=np.int64)
    key = ("cpu.format_codes", bits_key(bits), policy)
    return memoised(table.memo, key, lambda: _format_codes(table, bits, policy))


def planned_table(table: LayerTable, bits: np.ndarray, cols: np.ndarray,
                  target: CpuTarget) -> LayerTable:
    """`table` planned: layer i carries the format row of its own bit choice `bits[cols[i]]`,
    as a quantised model read back does. A cost column prices every layer at one bit choice,
    but onnxruntime's int8 chains (`hwmodels.ort_int8`) and inserted layout copies
    (`hwmodels.ort_layout`) depend on the neighbours' formats: a mixed plan is costed exactly
    on its planned table."""
    rows = np.arange(len(table))
    return dataclasses.replace(table, fmt_code=format_codes(table, bits, target)[rows, cols])


def _format_codes(table: LayerTable, bits: np.ndarray, policy: Policy) -> np.ndarray:
    codes = resolve_codes(table.kind_code, table.w_elems > 0, bits, policy)
    if table.fmt_code is not None:
        planned = np.asarray(table.fmt_code)[:, None]
        codes = np.where(planned >= 0, runs_as(policy)[np.maximum(planned, 0)], codes)
    codes.flags.writeable = False
    return codes


def kernel_paths(table: LayerTable, bits: np.ndarray, target: CpuTarget,
                 runtime: int) -> np.ndarray:
    """The kernel path (kernels.cpu.PATH_*) of every GEMM layer and bit choice, int64 [L, B].

    onnxruntime: the cost path of the format-policy row each layer runs as (`ROW_PATH`).
    ncnn / XNNPACK: fp16 or fp32 for float weights, their int8 kernels for a <= 8.
    Ideal: int8 kernels for a <= 8, T-MAC table lookup for weight-only GEMV (m <= LUT_MAX_M),
    else fp32 with weights unpacked in place.
    """
    if runtime == K.RUNTIME_ORT:
        paths: np.ndarray = _PATH_OF_CODE[format_codes(table, bits, target)]
        return paths
    has_w = (table.w_elems > 0)[:, None]
    a = np.broadcast_to(bits[None, :, 1], (len(table), len(bits)))
    w = np.where(has_w, bits[None, :, 0], a)  # activation x activation: both at a_bits
    float_w = w >= 16
    fp16 = float_w & ((w == 16) | (a == 16)) & ("fp16" in target.isa)
    if runtime == K.RUNTIME_NCNN:  # fp16 arithmetic where the core has it; int8 models on int8
        fc16 = float_w & _ncnn_fc_fp16s(table, target)[:, None]
        return np.select([float_w & ("fp16" in target.isa), fc16, float_w, a <= 8],
                         [K.PATH_FP16, K.PATH_NCNN_FC_FP16S, K.PATH_FP32, K.PATH_INT8],
                         K.PATH_FP32_UNPACK)
    if runtime == K.RUNTIME_XNNPACK:  # fp32 graphs in fp32 (fp16 only when asked for)
        return np.select([fp16, float_w, a <= 8], [K.PATH_FP16, K.PATH_FP32, K.PATH_INT8],
                         K.PATH_FP32_UNPACK)
    small_m = np.broadcast_to((table.m <= LUT_MAX_M)[:, None], w.shape)
    return np.select([fp16, float_w, a <= 8, small_m],
                     [K.PATH_FP16, K.PATH_FP32, K.PATH_INT8, K.PATH_LUT], K.PATH_FP32_UNPACK)


def _ncnn_fc_fp16s(table: LayerTable, target: CpuTarget) -> np.ndarray:
    """bool [L]: ncnn InnerProduct layers that store fp16 weights on a core without fp16
    arithmetic (`cpu_ncnn.fc_weight_bytes`)."""
    arm = target.arch == "arm64" and "fp16" not in target.isa
    return np.asarray((table.kind_code == KIND_CODE["linear"]) & arm, bool)


def fused_activations(table: LayerTable) -> np.ndarray:
    """bool [L]: clamp-like activations (relu, clip, leaky relu: <= 2 ops per element) that
    consume the output of a conv or linear layer (its producer, `LayerTable.reads`; the layer
    just before them where the table has no edges) that no other layer reads and that is no
    graph output. onnxruntime's ConvActivationFusion / GemmActivationFusion run them in that
    kernel's output loop wherever the graph lists them: a branchy graph (Basic Pitch) puts
    other layers between a conv and its ReLU."""
    gemm_kinds = (KIND_CODE["conv"], KIND_CODE["linear"])
    act = (table.kind_code == KIND_CODE["activation"]) & (table.ops <= 2 * table.a_out_elems)
    if table.reads is None:
        src, lone = np.arange(len(table)) - 1, np.ones(len(table), bool)
    else:
        src = table.reads[:, 0]
        readers = np.bincount(table.reads[table.reads >= 0], minlength=len(table))
        out = np.zeros(len(table), bool) if table.graph_output is None else table.graph_output
        lone = (readers == 1) & ~out
    at = np.maximum(src, 0)
    from_gemm = (src >= 0) & np.isin(table.kind_code[at], gemm_kinds)
    feeds = table.a_out_elems[at] == table.a_in_elems
    fused: np.ndarray = act & from_gemm & lone[at] & feeds
    return fused


def layer_choices(table: LayerTable, bits: np.ndarray, target: CpuTarget,
                  runtime: int) -> np.ndarray:
    """int64 [L, B]: kernel path of GEMM layers, PATH_FUSED for fused activations,
    PATH_NONE for the other layers."""
    gemm = (table.category == CATEGORY_GEMM)[:, None]
    fused = fused_activations(table)[:, None]
    paths = kernel_paths(table, bits, target, runtime)
    if runtime == K.RUNTIME_NCNN:
        paths = ncnn_int8.chain_paths(table, paths)
    elif runtime == K.RUNTIME_ORT:
        paths = ort_int8.chain_paths(table, paths)
    return np.where(gemm, paths, np.where(fused, K.PATH_FUSED, K.PATH_NONE))


def weights_resident(table: LayerTable, store: np.ndarray, target: CpuTarget) -> np.ndarray:
    """Per bit choice: whether the model's weights stay in the last cache level across runs
    (embedding tables are read by row and do not count)."""
    gemm_elems, other = memoised(table.memo, "cpu.weight_totals", lambda: _weight_totals(table))
    total = gemm_elems * store + other
    return total <= K.LLC_RESIDENT * target.caches[-1].size_kib * 1024


def _weight_totals(table: LayerTable) -> tuple[int, int]:
    """GEMM weight elements, and the bytes of other weights except embedding tables."""
    gemm = table.category == CATEGORY_GEMM
    other = table.w_bytes[~gemm & (table.kind_code != KIND_CODE["gather"])].sum()
    return table.w_elems[gemm].sum(), other


@dataclasses.dataclass(frozen=True, eq=False)  # holds arrays
class KernelInputs:
    """Everything the CPU kernel reads for one network, H configs and B bit choices
    (`kernels.cpu.evaluate`'s arguments), and the activation bytes the `Cost` carries."""

    lay: np.ndarray
    per_bit: np.ndarray
    resident: np.ndarray
    choice: np.ndarray
    params: np.ndarray
    caches: np.ndarray
    paths: np.ndarray
    runtime: int
    act_bytes: np.ndarray
    weight_bytes: np.ndarray  # [H, L, B] as emitted (onnxruntime), NaN: the kernel's figure
    # [H, L, B, NI] copies onnxruntime inserts between layouts (hwmodels.ort_layout); None
    # for other runtimes
    inserted: np.ndarray | None = None


def kernel_inputs(table: LayerTable, bits: np.ndarray, targets: Sequence[CpuTarget], *,
                  threads: int | None = None, runtime: str = "onnxruntime") -> KernelInputs:
    """Resolve the layers, bit choices and H CPU configs into the kernel's arrays (the glue of
    `evaluate_configs`; `hwmodels.prepared_cpu` keeps the result for repeated calls).

    What depends on the table alone, or on the table and the bits, is memoised on the table
    (`LayerTable.memo`), what depends on a target alone on the target (`CpuTarget.memo`), so a
    repeated call only looks them up; the arrays may be shared with those memos: read them only.
    """
    bits, code = check_bits(bits), _runtime_code(runtime)
    a53 = runtime not in LEGACY_RUNTIMES
    per_bit, store, act = memoised(table.memo, ("cpu.bits", code, bits_key(bits)),
                                   lambda: _bit_columns(table, bits, code))
    each = [_target_columns(table, bits, t, code, store) for t in targets]
    return KernelInputs(memoised(table.memo, "cpu.layer_array", lambda: layer_array(table)),
                        per_bit, _stack([e[0] for e in each]), _stack([e[1] for e in each]),
                        _stack([_params(t, threads) for t in targets]),
                        _stack([_caches(t) for t in targets]),
                        _stack([_paths(t, code, a53) for t in targets]), code, act,
                        _stack([e[2] for e in each]),
                        _stack([e[3] for e in each if e[3] is not None])
                        if code == K.RUNTIME_ORT else None)


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    # one config (every plain cost call): a view, not np.stack's copy
    return arrays[0][None] if len(arrays) == 1 else np.stack(arrays)


def _bit_columns(table: LayerTable, bits: np.ndarray,
                 runtime: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The kernel's per-bit columns [B, 3], stored bytes per weight [B], activation bytes."""
    store, act = weight_store_bytes(bits[:, 0], runtime), memory_bytes(table, bits)[1]
    per_bit = np.column_stack([bits.astype(np.float64), store])
    # the kernel reads per_bit (numba compiles read-only arrays as another type); `Cost`s
    # hand act to callers: read-only, so no caller can change the memo's copy
    store.flags.writeable = act.flags.writeable = False
    return per_bit, store, act


def _target_columns(table: LayerTable, bits: np.ndarray, target: CpuTarget, runtime: int,
                    store: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                np.ndarray | None]:
    """`weights_resident` as float64 [B], `layer_choices` as int64 [L, B], the emitted
    weight bytes [L, B] (`emitted_weight_bytes`; NaN off onnxruntime) and onnxruntime's
    inserted reorders / transposes [L, B, NI] (`ort_layout.inserted_table`; None elsewhere),
    memoised on the table per bits, runtime and the four target facts they read: the format
    policy (onnxruntime), fp16 arithmetic (the other runtimes), the last cache level's size
    and the NCHWc block."""
    policy, fp16, block = format_policy(target), "fp16" in target.isa, \
        ort_layout.nchwc_block(target)
    key = ("cpu.choices", runtime, bits_key(bits), policy, fp16, target.caches[-1].size_kib,
           block)
    return memoised(table.memo, key, lambda: _columns(table, bits, target, runtime, store))


def _columns(table: LayerTable, bits: np.ndarray, target: CpuTarget, runtime: int,
             store: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    choice = layer_choices(table, bits, target, runtime).astype(np.int64)
    return (weights_resident(table, store, target).astype(np.float64), choice,
            _emitted(table, bits, target, runtime),
            ort_layout.inserted_table(table, choice, target) if runtime == K.RUNTIME_ORT
            else None)


def _params(target: CpuTarget, threads: int | None) -> np.ndarray:
    key = ("params", resolve_threads(target, threads))  # None and cores give one row
    return memoised(target.memo, key, lambda: params_row(target, threads))


def _caches(target: CpuTarget) -> np.ndarray:
    return memoised(target.memo, ("caches",), lambda: cache_rows(target))


def _paths(target: CpuTarget, runtime: int, a53_kernels: bool) -> np.ndarray:
    key = ("paths", runtime, a53_kernels)
    return memoised(target.memo, key, lambda: path_table(target, runtime, a53_kernels))


def _emitted(table: LayerTable, bits: np.ndarray, target: CpuTarget,
             runtime: int) -> np.ndarray:
    """[L, B]: emitted weight bytes on onnxruntime (what edgesim writes), NaN elsewhere
    (the kernel's count); 0 where an earlier layer holds the weight (`held_once`)."""
    if runtime != K.RUNTIME_ORT:
        return held_once(table, np.full((len(table), len(bits)), np.nan))
    return held_once(table, emitted_weight_bytes(table, bits, target).astype(np.float64))


def run_kernel(x: KernelInputs, *, serial: bool = False,
               engine: str | None = None) -> np.ndarray:
    """Run the kernel on prepared inputs: float64 [kernels.cpu.NO, H, L, B] (`serial`: on
    this thread whatever the size, for callers that run many small calls or own the cores;
    `engine`: "python" or "numba", else picked by the work, `kernels.jit.engine`)."""
    out = np.empty((K.NO, len(x.params), len(x.lay), len(x.per_bit)))
    engine = jit.engine(out[0].size, engine)
    kernel.evaluate(x.lay, x.per_bit, x.resident, x.choice, x.params, x.caches, x.paths,
                    x.runtime, out, serial=serial, engine=engine)
    if x.inserted is not None:
        jit.choose(cpu_inserted.add_inserted, 0, engine)(x.inserted, x.params, x.caches, out)
    return out


def kernel_cost(out: np.ndarray, act_bytes: np.ndarray,
                weight_bytes: np.ndarray | None = None) -> Cost:
    """The `Cost` of the kernel's output (any leading shape after the field axis); its weight
    bytes are `weight_bytes` (as emitted) where given and not NaN, else the kernel's."""
    act_bytes = np.asarray(act_bytes, dtype=np.float64)
    if act_bytes.shape != out.shape[1:]:
        act_bytes = np.broadcast_to(act_bytes, out.shape[1:])
    wbytes = out[K.O_WBYTES]
    if weight_bytes is not None:
        wbytes = np.where(np.isnan(weight_bytes), wbytes, weight_bytes)
    # the kernel's fields precede O_WBYTES in `Cost`'s order (O_CYCLES ... O_UTIL)
    return Cost.from_kernel(out[:K.O_WBYTES], wbytes, act_bytes)


def evaluate_configs(table: LayerTable, bits: np.ndarray, targets: Sequence[CpuTarget], *,
                     threads: int | None = None, runtime: str = "onnxruntime",
                     engine: str | None = None) -> Cost:
    """Cost of every layer under every bit choice on H CPU configs, in one kernel call.

    Args:
        table: the model's layers.
        bits: int [B, 2] (w_bits, a_bits); 32 = float32, 16 = float16.
        targets: H CPU configurations (e.g. from `variants`).
        threads: threads per inference (None: each config's cores).
        runtime: "onnxruntime" or "ideal".
        engine: "python" or "numba" (`kernels.jit`; None: picked by the work).

    Returns:
        A `Cost` of [H, L, B] arrays.
    """
    x = kernel_inputs(table, bits, targets, threads=threads, runtime=runtime)
    return kernel_cost(run_kernel(x, engine=engine), x.act_bytes, x.weight_bytes)


def evaluate(table: LayerTable, bits: np.ndarray, target: CpuTarget, *,
             threads: int | None = None, runtime: str = "onnxruntime") -> Cost:
    """Cost of every layer under every bit choice on one CPU: [L, B] arrays.

    Args:
        table: the model's layers (`Graph.layer_table()`).
        bits: int [B, 2] (w_bits, a_bits).
        target: the CPU.
        threads: threads per inference (None: all cores).
        runtime: "onnxruntime" (the kernels onnxruntime takes) or "ideal" (ISA headroom).
    """
    from hwmodels import prepared_cpu  # lazy: it imports this module

    # the whole prepared call of this table, target and options, memoised on the table: a
    # repeated call (an allocator's, a simulation loop's) then costs a lookup and the kernel;
    # the bits are checked when the entry is built (a key of bad bits never gets stored)
    arr = np.asarray(bits, dtype=np.int64)
    key = ("cpu.call", target.token, threads, runtime, arr.tobytes(), arr.shape)
    call = memoised(table.memo, key, lambda: prepared_cpu.prepare(
        table, arr, target, threads=threads, runtime=runtime))
    return prepared_cpu.run(call, serial=False)


def power_time_energy_pj(cost: Cost, target: CpuTarget, threads: int | None = None, *,
                         include_idle: bool = True) -> np.ndarray:
    """Top-down energy: power x latency (`cost.latency_s` shape, picojoules).

    Power is the busy cores' share of (active - idle) power, plus idle power unless
    `include_idle` is False (the dynamic part a bottom-up switching model compares against).
    """
    busy = resolve_threads(target, threads) / target.cores
    watts = (target.power.active_w - target.power.idle_w) * busy
    watts += target.power.idle_w if include_idle else 0.0
    return cost.latency_s * watts * 1e12


def variants(target: CpuTarget, **axes: Sequence[Any]) -> list[CpuTarget]:
    """What-if configs: the cartesian product of replaced fields, for `evaluate_configs`.

    Top-level fields are replaced by name (`clock_ghz=[1.5, 2.4]`, `cores=[2, 4]`);
    `dram_gbps` sets the sustained DRAM bandwidth (and raises the theoretical one to match).
    """
    names = list(axes)
    return [_replace(target, dict(zip(names, combo)))
            for combo in itertools.product(*(axes[n] for n in names))]


def _replace(target: CpuTarget, changes: dict[str, Any]) -> CpuTarget:
    suffix = ",".join(f"{k}={v}" for k, v in changes.items())
    changes = dict(changes)
    if "dram_gbps" in changes:
        gbps = float(changes.pop("dram_gbps"))
        changes["dram"] = dataclasses.replace(
            target.dram, sustained_bandwidth_gbps=gbps,
            bandwidth_gbps=max(gbps, target.dram.bandwidth_gbps))
    return dataclasses.replace(target, name=f"{target.name}[{suffix}]", **changes)
