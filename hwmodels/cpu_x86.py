"""onnxruntime's x86 integer kernels (MLAS), read from their code: the facts the CPU cost
model's glue (`hwmodels.cpu`) needs for x86 hosts and nothing else.

QLinearConv / QLinearMatMul on x86 run MLAS QGEMM (core/mlas/lib/qgemm.cpp dispatch,
`MlasGemmQuantGetDispatch`). Which kernel runs depends on the weight dtype:

- uint8 weights (what edgesim emits: uint8 codes with zero point 128) take the U8U8 kernel,
  `MlasGemmU8U8KernelAvx2` (x86_64/QgemmU8U8KernelAvx2.S): A is zero-extended to 16 bits
  when packed (`MlasGemmU8U8CopyPackAAvx2`), and for every K pair of its 6 x 16 tile the
  `ComputeBlock` macro issues one `vpbroadcastd` (a load) per row and, per row and 8-column
  half, one `vpmaddwd` (simd_bits / 32 pairs = simd_bits / 16 MACs) plus one `vpaddd`:
  12 multiplies and 24 vector-ALU uops for 192 MACs.
- int8 weights (onnxruntime's quantizers' default QInt8) take the U8S8 kernel
  (`MlasGemmU8S8KernelAvx2`, QgemmU8S8KernelAvx2.S): `vpmaddubsw` + `vpmaddwd` (by ones) +
  `vpaddd` per simd_bits / 8 MACs: 2 multiplies and 3 vector-ALU uops.
- VNNI changes the int8-weight kernel only: onnxruntime 1.3x's MLAS platform.cpp swaps in
  `MlasGemmU8S8KernelAvxVnni` / `...Avx512Vnni` (one `vpdpbusd` per simd_bits / 8 MACs)
  for U8S8, while U8U8 keeps `MlasGemmU8U8KernelAvx2`, or on AVX-512 (BW/DQ/VL) hosts
  `MlasGemmU8U8KernelAvx512Core`: the same vpmaddwd + vpaddd steps on 512-bit vectors
  (only AVX-VNNI-INT8 hosts, which `isa` does not describe, get a U8U8 dot-product kernel).
  Measured on this project's AVX-512 + VNNI Zen 5 host: a uint8-weight QLinearMatMul
  384 x 384 x 384 runs 43 MACs/cycle at the probed 4.32 GHz (48 from the steps, x the
  probed 0.9 GEMM efficiency: 43), an int8-weight one 92.

The kernel's MAC rate is the lower of its multiply-pipe bound and its vector-issue bound.
"""

from __future__ import annotations

from hwmodels.cpu_schema import CpuTarget

# assumed: vector-ALU uops an x86 core sustains per cycle in these integer loops. Intel
# Haswell .. Ice Lake issue vector ALU uops on ports 0, 1 and 5 (Intel 64 and IA-32
# Architectures Optimization Reference Manual, "Haswell microarchitecture" execution ports).
# AMD Zen 3 has four FP/vector pipes; 3 is kept for it too because one measurement on this
# project's Zen 3 host (EPYC, family 25; QLinearConv 3x3, 64 channels, 56x56, 1 thread,
# fastest of 15 runs) ran at ~20 MACs/cycle, below the 32 four pipes would allow (fitted to
# that one layer: not a primary source).
VECTOR_ISSUE_PER_CYCLE = 3.0
# uops per kernel step (QgemmU8U8KernelAvx2.S / QgemmU8S8KernelAvx2.S, see module docstring)
U8U8_MUL_PER_STEP, U8U8_ALU_PER_STEP = 1.0, 2.0   # vpmaddwd, + vpaddd: simd_bits/16 MACs
U8S8_MUL_PER_STEP, U8S8_ALU_PER_STEP = 2.0, 3.0   # vpmaddubsw, vpmaddwd, + vpaddd: simd_bits/8


# FMA latency in cycles: 4 on AMD Zen 2 / Zen 3 and Intel Skylake or later (AMD Software
# Optimization Guide for family 19h, FP pipe latencies; Agner Fog, instruction tables)
FMA_LATENCY_CYCLES = 4.0


def nchwc_depthwise_chain(target: CpuTarget) -> float:
    """Cycles per tap of onnxruntime's fp32 NCHWc depthwise kernel on x86 AVX2 / AVX-512
    (its NchwcTransformer runs depthwise convs there): one dependent FMA per tap
    (`hwmodels.kernels.cpu_gemm.nchwc_depthwise_cycles`); 0 elsewhere (Arm: no NCHWc)."""
    nchwc = target.arch == "x86_64" and any(f in target.isa for f in ("avx2", "avx512f"))
    return FMA_LATENCY_CYCLES if nchwc else 0.0


def is_x86_qgemm(target: CpuTarget) -> bool:
    """Whether onnxruntime runs uint8-weight QGEMMs in MLAS's x86 multiply-add kernels
    (every AVX2 host, VNNI or not: see the module docstring)."""
    return target.arch == "x86_64" and "avx2" in target.isa


def qgemm_rate(target: CpuTarget, *, signed_weights: bool = False) -> float:
    """MACs per cycle per core of MLAS's AVX2 QGEMM kernel (uint8 or int8 weights).

    min(multiply pipes / multiplies per step, vector issue / ALU uops per step) x MACs per
    step; `target.int_mul_pipes` are the vector-multiply pipes the probe records.
    """
    if signed_weights:
        macs, mul, alu = target.simd_bits / 8.0, U8S8_MUL_PER_STEP, U8S8_ALU_PER_STEP
    else:
        macs, mul, alu = target.simd_bits / 16.0, U8U8_MUL_PER_STEP, U8U8_ALU_PER_STEP
    return min(target.int_mul_pipes / mul, VECTOR_ISSUE_PER_CYCLE / alu) * macs


# MatMulNBits that cannot prepack B (float zero points or g_idx; microsoft/onnxruntime#28552)
# runs MatMulNBits<float>::ComputeBUnpacked (contrib_ops/cpu/quantization/matmul_nbits.cc),
# which dequantises B on every run with DequantizeBlockwise<float, float>
# (matmul_nbits_impl.cc): a CUDA kernel ported as plain loops, `Dequantize4BitsKernelReOrder`
# per 8 weights. Portable C++ (the same on Arm); measured on x86 in bench_formats.
REORDER_DIVS_PER_CALL = 4.0  # group_id, scales_shape_x, n_idx (+ kb_idx), out_x (+ out_y)
REORDER_OPS_PER_WEIGHT = 9.0  # scale, zp loads; shift, and, convert, mul, mul, add; store
# assumed: a 32-bit integer division costs ~20 cycles when its result feeds the next one
# (Agner Fog, instruction tables: DIV r32 latency 10-14 on AMD Zen 3, ~26 on Intel Skylake)
IDIV_CYCLES = 20.0
SCALAR_IPC = 4.0  # assumed: scalar ops per cycle of a 4-wide x86 / A76-class core


def reorder_dequant_cycles(weights_per_call: float = 8.0) -> float:
    """Cycles per weight of `Dequantize4BitsKernelReOrder`'s scalar loop (one call per 8
    weights: its integer divisions, then ~9 scalar ops per weight)."""
    return (REORDER_DIVS_PER_CALL * IDIV_CYCLES / weights_per_call
            + REORDER_OPS_PER_WEIGHT / SCALAR_IPC)


# QLinearConv's int8 epilogue and depthwise kernel on x86 (onnxruntime qlinearconv.cc: every
# GEMM / depthwise call writes int32 sums that MlasRequantizeOutput turns into uint8).
# MlasRequantizeOutput, SSE2 path (core/mlas/lib/quantize.cpp), per 16 outputs: 4 bias adds,
# 4 int -> float converts, 4 scale multiplies, 4 max, 4 min, 4 float -> int converts, 4 zero
# point adds and 3 packs (31 vector uops) on 128-bit vectors, whatever the host's width.
REQUANT_UOPS_PER_16 = 31.0
# MlasConvDepthwiseKernelAvx2 (intrinsics/avx2/qdwconv_avx2.cpp), per tap and 16 channels:
# 2 vpmovzxbw (input, filter), 2 vpsubw (zero points), vpmullw + vpmulhw, 2 vpunpck and
# 2 vpaddd into the int32 accumulators (10 vector uops for 16 MACs).
QDW_UOPS_PER_VECTOR = 10.0
QDW_CHANNELS_PER_STEP = 16.0  # one ymm of int16: the kernel's channel step on every x86 host
# assumed: scalar ops per entry of the depthwise input indirection buffer (Im2col<NHWC> with
# indirection, math_cpu.cc: address, bounds check, select of the padding row, store)
INDIRECTION_OPS = 4.0


def _avx2_int8(target: CpuTarget) -> bool:
    return target.arch == "x86_64" and "avx2" in target.isa


def requant_weight(target: CpuTarget, lane_ops_per_output: float, pipes: float) -> float:
    """Weight of onnxruntime's x86 requantise loop against the cost kernel's generic term
    (`lane_ops_per_output` on the host's int8 lanes and `pipes`): its cycles per output,
    31 uops / 16 outputs at VECTOR_ISSUE_PER_CYCLE, over the generic term's; 1 elsewhere."""
    if not _avx2_int8(target):
        return 1.0
    x86 = REQUANT_UOPS_PER_16 / 16.0 / VECTOR_ISSUE_PER_CYCLE
    return x86 / (lane_ops_per_output / (target.simd_bits / 8.0 * pipes))


def qdw_vector_cycles(target: CpuTarget) -> float:
    """Cycles per (output pixel, tap, host vector of simd_bits / 16 int16 lanes) of MLAS's
    AVX2 int8 depthwise kernel (vector-issue bound: its 10 uops at VECTOR_ISSUE_PER_CYCLE per
    16 channels; 0 elsewhere). The kernel is AVX2 on AVX-512 hosts too (platform.cpp has no
    AVX-512 ConvDepthwiseU8U8Kernel), so a 512-bit host's vector (the cost kernel's
    `depthwise_core` counts in those) is two of its 16-channel steps."""
    steps = target.simd_bits / 16.0 / QDW_CHANNELS_PER_STEP
    return QDW_UOPS_PER_VECTOR / VECTOR_ISSUE_PER_CYCLE * steps if _avx2_int8(target) else 0.0


def indirection_cycles(target: CpuTarget) -> float:
    """Cycles per (output pixel, tap) to fill the depthwise indirection buffer (x86 only:
    the Arm int8 depthwise path is not modelled at this grain)."""
    return INDIRECTION_OPS / SCALAR_IPC if _avx2_int8(target) else 0.0


# assumed: cycles per memcpy call of an NHWC im2col row (< 64 bytes for the stem convs where it
# matters: the call, glibc's size dispatch and the loop's bounds checks in Im2col<NHWC>,
# math_cpu.cc); the one layer measured, MobileNetV2's 3-channel stem (W8A8, this project's
# Zen 3 host, fastest of 5 runs), leaves ~28 cycles per call after its GEMM and requantise
IM2COL_CALL_CYCLES = 25.0


def im2col_call_cycles(target: CpuTarget) -> float:
    """Cycles per memcpy call of QLinearConv's NHWC im2col on x86; 0 elsewhere (not
    measured on Arm)."""
    return IM2COL_CALL_CYCLES if _avx2_int8(target) else 0.0
