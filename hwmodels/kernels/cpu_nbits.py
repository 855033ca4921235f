"""MatMulNBits GEMMs (weight-only n-bit blocks, accuracy_level 4 = CompInt8) on Arm dot-product
CPUs, costed from the kernels onnxruntime runs, plus llama.cpp's analogue for comparisons.

onnxruntime's `MlasQNBitGemmBatch` (onnxruntime/core/mlas/lib/qnbitgemm.cpp @ 001d12d2) runs a
CompInt8 MatMulNBits of M rows in three steps, each costed here:

1. **Quantise A to int8** (`InitializeWorkspace_CompInt8`): one `MlasTrySimpleParallel` task
   per GEMM in the batch (BatchN = 1), so one thread quantises all M x K activations (MLAS's
   own source notes parallelising over BatchN * M as future work): a serial term. Per 32
   fp32 values (8 q-registers) ~46 vector instructions: min/max, scale, round-convert,
   narrow (counted from KleidiAI's `lhs_quant_pack_qai8dxp_f32`, per-row dynamic
   quantisation).
2. **Partition**: rows in StrideM = 128 slices, columns split so that ~8 tasks per thread
   exist (`MlasGetMaximumThreadCount * 8`, N rounded to MLAS_QGEMM_STRIDEN_THREAD_ALIGN = 16),
   at least one task per MLAS_QGEMM_THREAD_COMPLEXITY = 64K MACs; tasks are spread over the
   threads, the slowest thread sets the time.
3. **Micro-kernel**: 4-bit symmetric weights with block % 32 == 0 go to KleidiAI
   (qnbitgemm_kernel_neon.cpp @ e8232f64 `UseKleidiAI`; kai_ukernel_interface.cpp @ 4a36087e
   `GetKleidiAIGemmUKernel`): without i8mm (Cortex-A76) the GEMM ukernel is
   `matmul_clamp_f32_qai8dxp4x4_qsi4c32p4x4_16x4_neon_dotprod` (16 x 4 output tile, sdot by
   lane), M = 1 takes the `..._1x4_neon_dotprod` GEMV. 8-bit weights run
   `MlasQ8Int8GemmKernelNeon` (4 x 8 column packing, `Q8PackQuantB`) plus two fp32
   `MlasSgemmKernelAdd` passes over the block sums (unsigned-A zero-point correction on
   dotprod). A kernel's efficiency is its sdot share of the vector instructions of one
   32-deep step of its tile: sdots = tile_m * tile_n * 32 / 16 (16 MACs per 128-bit sdot),
   against the nibble unpacking (2 per 16 weight bytes) and the per-block int32 -> fp32
   convert and scaled accumulate (2 per output register, + loading the block scales).

Memory: each row slice streams all of B from DRAM once (the tiles' re-reads of a task's
columns are assumed to hit in L2 / L3), A and C once; a GEMM takes the longer of its compute
and this traffic over the bandwidth. Nothing here is fitted.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from hwmodels.cpu_schema import CpuTarget

STRIDE_M = 128            # MlasQNBitGemmBatch: rows per task
TASKS_PER_THREAD = 8      # MlasGetMaximumThreadCount(ThreadPool) * 8
STRIDE_N_ALIGN = 16       # MLAS_QGEMM_STRIDEN_THREAD_ALIGN
THREAD_COMPLEXITY = 65536  # MLAS_QGEMM_THREAD_COMPLEXITY: MACs per extra task
SDOT_MACS = 16            # one 128-bit sdot: 4 lanes x 4 int8 products
BLOCK_DEPTH = 32          # k per scale block of the kernels' inner step
QUANT_A_OPS_PER_VALUE = 46.0 / 32.0


@dataclass(frozen=True)
class NbitsKernel:
    """One int8-dot micro-kernel family: its output tile and the non-sdot vector instructions
    of one 32-deep step of that tile."""

    name: str
    tile_m: int
    tile_n: int
    unpack_ops: float      # weight unpacking per step (0 for 8-bit weights)
    scale_ops: float       # per-block convert + scaled accumulate + scale loads per step
    fp32_passes: int = 0   # extra fp32 M x N x K/32 block-sum GEMMs (MLAS 8-bit)
    source: str = ""
    dot_emulation_ops: float = 0.0  # per step, when a build without dotprod emulates sdots

    def sdots(self) -> float:
        """sdot instructions per 32-deep step of the tile."""
        return self.tile_m * self.tile_n * BLOCK_DEPTH / SDOT_MACS

    def efficiency(self) -> float:
        """Share of vector issue slots that are sdots."""
        s = self.sdots()
        return s / (s + self.unpack_ops + self.scale_ops + self.dot_emulation_ops)


def _scale_ops(tile_m: int, tile_n: int, extra: float) -> float:
    regs = tile_m * tile_n / 4.0   # int32 accumulator q-registers of the tile
    return 2.0 * regs + extra       # scvtf + fmla per register, + scale loads / widening


# unpack: 4-bit B of tile_n columns x 32 k = tile_n * 16 bytes, 2 ops (shl / and) per 16 bytes
KLEIDIAI_Q4_GEMM = NbitsKernel(
    "kleidiai qai8dxp4x4_qsi4c32p4x4_16x4 (sdot)", 16, 4, unpack_ops=2.0 * 4,
    scale_ops=_scale_ops(16, 4, 2.0),
    source="KleidiAI kai_matmul_clamp_f32_qai8dxp4x4_qsi4c32p4x4_16x4_neon_dotprod.c @ d2a22ce2 "
           "(m_step 16, n_step 4, kr 8, bl 32); picked by onnxruntime kai_ukernel_interface.cpp "
           "@ 4a36087e without i8mm")
KLEIDIAI_Q4_GEMV = NbitsKernel(
    "kleidiai qai8dxp1x4_qsi4c32p4x4_1x4 (sdot)", 1, 4, unpack_ops=2.0 * 4,
    scale_ops=_scale_ops(1, 4, 2.0),
    source="onnxruntime kai_ukernel_interface.cpp @ 4a36087e GetKleidiAIGemvUKernel (M = 1)")
# 4-bit weights KleidiAI does not take (zero points, or block % 32 != 0) run MLAS's own NEON
# kernel: 4 x 2 output tiles, one 4-lane accumulator per output, so each block also reduces
# 8 accumulators across lanes (8 pairwise adds) besides convert + fmla; unpack subtracts
# the zero point (2 ops per column register more)
MLAS_Q4_4X2 = NbitsKernel(
    "mlas SQ4BitGemm_CompInt8_Compute4x2 (sdot)", 4, 2, unpack_ops=2.0 * 2 + 2.0,
    scale_ops=8.0 + 2.0 * 8 + 2.0,
    source="onnxruntime sqnbitgemm_kernel_neon_int8.cpp SQ4BitGemm_CompInt8_Compute4x2 (used "
           "when qnbitgemm_kernel_neon.cpp @ e8232f64 UseKleidiAI is false: zero points, or "
           "block % 32 != 0)")
MLAS_Q8_GEMM = NbitsKernel(
    "mlas MlasQ8Int8GemmKernelNeon 4x8 (sdot)", 4, 8, unpack_ops=0.0,
    scale_ops=_scale_ops(4, 8, 2.0), fp32_passes=2,
    source="onnxruntime qnbitgemm_kernel_neon.cpp @ e8232f64 SQ8BitGemmKernel_BlkSum_CompInt8 "
           "(Q8PackQuantB 4 x 8 packing; two MlasSgemmKernelAdd block-sum passes on dotprod)")
MLAS_Q8_GEMV = NbitsKernel(
    "mlas MlasQ8Int8GemmKernelNeon 1x8 (sdot)", 1, 8, unpack_ops=0.0,
    scale_ops=_scale_ops(1, 8, 2.0), fp32_passes=2, source=MLAS_Q8_GEMM.source)
# llama.cpp's Q4_0 on a dotprod-only Arm core is repacked to Q4_0 4x4 and multiplied by
# ggml_gemm_q4_0_4x4_q8_0 (4 x 4 tile, sdot by lane, activations quantised to Q8_0 per 32
# by all threads); besides convert + fmla, each block multiplies A's and B's fp16 scales
# (2 loads, 2 widenings, 1 outer fmul); M = 1 runs ggml_gemv_q4_0_4x4_q8_0 (1 x 4)
_GGML_SRC = ("llama.cpp ggml/src/ggml-cpu/arch/arm/repack.cpp ggml_gemm_q4_0_4x4_q8_0 / "
             "ggml_gemv_q4_0_4x4_q8_0 (Q4_0 repacked at load on dotprod cores)")
GGML_Q4_0_4X4 = NbitsKernel("ggml gemm_q4_0_4x4_q8_0 (sdot)", 4, 4, unpack_ops=2.0 * 4,
                            scale_ops=_scale_ops(4, 4, 5.0), source=_GGML_SRC)
GGML_Q4_0_1X4 = NbitsKernel("ggml gemv_q4_0_4x4_q8_0 (sdot)", 1, 4, unpack_ops=2.0 * 4,
                            scale_ops=_scale_ops(1, 4, 5.0), source=_GGML_SRC)
# Q8_0 weights on a dotprod core are repacked to Q8_0 4x4 too (llama.cpp PR 18096, in every build
# since Dec 2025: ggml/src/ggml-cpu/repack.cpp ggml_repack_get_optimal_repack_type takes
# q8_0_4x4_q8_0 when the core has dotprod and not i8mm, N % 4 == 0; a tied output table included,
# as llama_model loads it as a duplicated output tensor): the same tiles and per-block scale
# work as Q4_0's, B's bytes fed to sdot as loaded (no shl / and). ggml_gemv_q8_0_4x4_q8_0
# (arch/arm/repack.cpp, __ARM_FEATURE_DOTPROD branch): per block 8 sdots by lane, then
# scvtf + fmla and the A x B fp16 scale product, as gemv_q4_0_4x4 less its 8 unpack ops
_GGML_Q8_SRC = ("llama.cpp ggml/src/ggml-cpu/arch/arm/repack.cpp ggml_gemv_q8_0_4x4_q8_0 / "
                "ggml_gemm_q8_0_4x4_q8_0 (PR 18096: Q8_0 repacked at load on dotprod cores)")
GGML_Q8_0_4X4 = dataclasses.replace(GGML_Q4_0_4X4, name="ggml gemm_q8_0_4x4_q8_0 (sdot)",
                                    unpack_ops=0.0, source=_GGML_Q8_SRC)
GGML_Q8_0_1X4 = dataclasses.replace(GGML_Q4_0_1X4, name="ggml gemv_q8_0_4x4_q8_0 (sdot)",
                                    unpack_ops=0.0, source=_GGML_Q8_SRC)
# llama.cpp before Q4_0 was repacked at load (2024 builds, e.g. T-MAC's baseline) runs every
# Q4_0 row through ggml_vec_dot_q4_0_q8_0: one output per call, per 32-deep block 2 sdots
# against and + ushr + 2 sub (unpack) and a zeroed accumulator, scvtf, 2 scalar fp16 -> fp32
# scale converts, their fmul and the by-element fmla (6)
GGML_Q4_0_VEC_DOT = NbitsKernel(
    "ggml vec_dot_q4_0_q8_0 (sdot)", 1, 1, unpack_ops=4.0, scale_ops=6.0,
    source="llama.cpp ggml-quants.c ggml_vec_dot_q4_0_q8_0 (__ARM_FEATURE_DOTPROD branch)")
# The same loop built without +dotprod (T-MAC's 2024 llama.cpp: -march=armv8.2a+fp16,
# kaleid-liner/llama.cpp @ 0358ebc1 CMakeLists.txt; v8.2-A leaves dotprod optional):
# ggml-impl.h's ggml_vdotq_s32 stands in for each sdot with smull + smull2 + 2 saddlp + 2 add,
# the first of the two chained calls adding to zero (one add folded): 11 instructions for the
# block's 2 sdots, 9 more. Its 4 smulls run on V0 only (1 per cycle), inside the 10.5 cycles
# the 21 instructions take on two pipes, so issue, not the multiplier, bounds it.
GGML_Q4_0_VEC_DOT_NO_DOTPROD = dataclasses.replace(
    GGML_Q4_0_VEC_DOT, name="ggml vec_dot_q4_0_q8_0 (no dotprod: smull/saddlp)",
    dot_emulation_ops=9.0,
    source="kaleid-liner/llama.cpp @ 0358ebc1 ggml-quants.c ggml_vec_dot_q4_0_q8_0 "
           "(__ARM_NEON branch) with ggml-impl.h ggml_vdotq_s32 (!__ARM_FEATURE_DOTPROD)")
# Q4_K on a dotprod-only core is repacked to q4_K_8x4 (llama.cpp PR 17494, merged Nov 2025):
# ggml_gemv_q4_K_8x4_q8_K (arch/arm/repack.cpp, __ARM_FEATURE_DOTPROD branch), 1 x 8 tile, per
# 64-deep sub-block: 32 sdots by lane; unpack and + ushr per 16 weight bytes (32); scale work
# 34: two 6-bit scale/min decodes (a vmovl_u8 and 2 GPR -> vector moves each: 6), the scales
# reloaded and widened (4), per 4-column group 2 vmovl_s16 + 2 mul + add + scvtf + fmla (14),
# the min correction's 2 dups + 4 smlal (6), 4 zeroed accumulators; per 256-deep super-block
# 23 more (4 fp16 scale loads + 4 converts, dup + 4 fmul, 2 zeroed, bsums 2 loads + addp +
# store, 2 scvtf + 2 fmls), 5.75 per sub-block. Halved to the 32-deep step.
GGML_Q4_K_8X4_GEMV = NbitsKernel(
    "ggml gemv_q4_K_8x4_q8_K (sdot)", 1, 8, unpack_ops=32.0 / 2,
    scale_ops=(6.0 + 4.0 + 14.0 + 6.0 + 4.0 + 23.0 / 4) / 2,
    source="llama.cpp ggml/src/ggml-cpu/arch/arm/repack.cpp ggml_gemv_q4_K_8x4_q8_K "
           "(PR 17494: Q4_K repacked at load on dotprod cores)")
LLAMA_CPP_RUNTIMES = ("llama.cpp", "llama.cpp q4_K", "llama.cpp vec_dot",
                      "llama.cpp vec_dot no-dotprod")


MLAS_BITS = (4, 8)                 # GetQNBitGemmVariant: CompInt8 variants exist for these
MLAS_BLOCKS = (16, 32, 64, 128, 256)


def has_kernel(bits: int, block: int) -> bool:
    """Whether MLAS has a CompInt8 QNBitGemm for these weights (qnbitgemm.cpp @ 001d12d2
    GetQNBitGemmVariant); others (2-bit) fall back to dequantising B and an fp32 GEMM."""
    return bits in MLAS_BITS and block in MLAS_BLOCKS


def nbits_kernel(bits: int, m: int, runtime: str = "onnxruntime", block: int = 32,
                 zero_point: bool = False) -> NbitsKernel:
    """The micro-kernel a CompInt8 GEMM of `m` rows and `bits`-bit weights runs (llama.cpp:
    Q8_0 for 8 bits, else Q4_0; "llama.cpp q4_K": Q4_K's GEMV, its GEMM not counted, so Q4_0's
    (assumed); its vec_dot runtimes are the Q4_0 loops only)."""
    if runtime == "llama.cpp q4_K" and bits == 4 and m == 1:
        return GGML_Q4_K_8X4_GEMV
    if runtime == "llama.cpp q4_K":
        runtime = "llama.cpp"
    if runtime == "llama.cpp vec_dot":
        return GGML_Q4_0_VEC_DOT
    if runtime == "llama.cpp vec_dot no-dotprod":
        return GGML_Q4_0_VEC_DOT_NO_DOTPROD
    if runtime == "llama.cpp" and bits == 8:
        return GGML_Q8_0_1X4 if m == 1 else GGML_Q8_0_4X4
    if runtime == "llama.cpp":
        return GGML_Q4_0_1X4 if m == 1 else GGML_Q4_0_4X4
    if bits == 8:
        return MLAS_Q8_GEMV if m == 1 else MLAS_Q8_GEMM
    if zero_point or block % 32:
        return MLAS_Q4_4X2
    return KLEIDIAI_Q4_GEMV if m == 1 else KLEIDIAI_Q4_GEMM


def task_grid(m: int, n: np.ndarray, k: np.ndarray, threads: int) -> tuple[int, np.ndarray]:
    """MlasQNBitGemmBatch's partition: (row slices, column width per task) of each GEMM."""
    target = np.minimum(m * n * k // THREAD_COMPLEXITY + 1, threads * TASKS_PER_THREAD)
    slices = -(-m // STRIDE_M)
    max_nc = -(-(n * slices) // np.maximum(target, 1))
    nc = np.where((target > 1) & (max_nc < n),
                  -(-max_nc // STRIDE_N_ALIGN) * STRIDE_N_ALIGN, n)
    return slices, np.minimum(nc, n)


def core_macs_per_s(target: CpuTarget, kernel: NbitsKernel) -> float:
    """One core's MAC rate in `kernel`: sdot peak x the kernel's sdot share x the target's
    `gemm_efficiency` (the share of issue slots a tuned GEMM loop sustains, as for every CPU
    GEMM of the project)."""
    peak = target.dot_pipes * target.simd_bits / 8.0 * target.clock_ghz * 1e9
    return peak * kernel.efficiency() * target.gemm_efficiency


def gemm_seconds(m: int, n: np.ndarray, k: np.ndarray, bits: int, block: int,
                 target: CpuTarget, threads: int, bandwidth: float,
                 runtime: str = "onnxruntime", zero_point: bool = False) -> np.ndarray:
    """Seconds of each CompInt8 GEMM (M = `m`, arrays of N and K), module docstring.

    Args:
        m: rows of A (prompt length in a prefill, 1 in a decode).
        n, k: output and reduction widths, int arrays of equal shape.
        bits, block: the weights' MatMulNBits bits and block size (scale: fp32).
        target: an Arm CPU with dot products.
        threads: intra-op threads.
        bandwidth: DRAM read bytes/s at `threads`.
        runtime: "onnxruntime" (MLAS / KleidiAI), "llama.cpp" (its Q4_0 / Q8_0 4x4 kernels),
            "llama.cpp q4_K" (Q4_K repacked 8x4),
            "llama.cpp vec_dot" (Q4_0 not repacked: one row per vec_dot call) or
            "llama.cpp vec_dot no-dotprod" (that loop built without dotprod).
        zero_point: the weights carry zero points (asymmetric blocks).
    """
    n, k = np.asarray(n, np.int64), np.asarray(k, np.int64)
    kern = nbits_kernel(bits, m, runtime, block, zero_point)
    slices, nc = task_grid(m, n, k, threads)
    tasks = slices * -(-n // nc)
    rows = min(m, STRIDE_M)
    pad_m = -(-rows // kern.tile_m) * kern.tile_m
    pad_n = -(-nc // kern.tile_n) * kern.tile_n
    task_s = pad_m * pad_n * k / core_macs_per_s(target, kern)
    # the fp32 block-sum passes: M x N x K/32 FMAs at the fp32 rate
    fp32_rate = target.fma_pipes * target.simd_bits / 32.0 * target.clock_ghz * 1e9
    task_s = task_s + kern.fp32_passes * rows * nc * (k / BLOCK_DEPTH) / fp32_rate
    compute = -(-tasks // threads) * task_s
    # B from DRAM once per row slice; its re-reads by the tiles of a slice are cache hits
    # a block's scale: fp32 in MatMulNBits, fp16 in ggml's block_q4_0 / block_q8_0
    scale = 2.0 if runtime in LLAMA_CPP_RUNTIMES else 4.0
    b_bytes = n * k * (bits / 8.0 + (scale + zero_point * bits / 8.0) / block)
    memory = (b_bytes * slices + m * k * 4.0 + m * n * 4.0) / bandwidth
    # ops counted on 128-bit registers; MLAS quantises A on one thread, ggml on all
    ops = m * k * QUANT_A_OPS_PER_VALUE * 128.0 / target.simd_bits
    quant_a = ops / (target.fma_pipes * target.clock_ghz * 1e9)
    serial = quant_a / (threads if runtime in LLAMA_CPP_RUNTIMES else 1)
    return np.asarray(np.maximum(compute, memory) + serial, np.float64)
