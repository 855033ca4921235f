"""Array layouts of the CPU cost kernel (columns of its inputs, outputs and accumulators),
its kernel-path codes and the constants of its formulas (sources in `hwmodels.kernels.cpu`)."""

from __future__ import annotations

import compiler.ir as ir

# Kind and category codes come from the IR (numba reads module-level ints as compile-time
# constants), so inserting a kind in compiler.ir.KINDS cannot shift them;
# tests/hwmodels/test_kind_codes.py checks every kernel's KIND_*/CATEGORY_* against the IR.
CATEGORY_GEMM, CATEGORY_STREAM = ir.CATEGORY_GEMM, ir.CATEGORY_STREAM
CATEGORY_COPY, CATEGORY_VIEW = ir.CATEGORY_COPY, ir.CATEGORY_VIEW
KIND_CONV, KIND_ACTIVATION = ir.KIND_CODE["conv"], ir.KIND_CODE["activation"]
KIND_SOFTMAX, KIND_GATHER = ir.KIND_CODE["softmax"], ir.KIND_CODE["gather"]
KIND_IDENTITY = ir.KIND_CODE["identity"]
KIND_CONCAT, KIND_TRANSPOSE = ir.KIND_CODE["concat"], ir.KIND_CODE["transpose"]
KIND_NORM, KIND_ELTWISE = ir.KIND_CODE["norm"], ir.KIND_CODE["eltwise"]

RUNTIME_ORT, RUNTIME_IDEAL, RUNTIME_NCNN, RUNTIME_XNNPACK = 0, 1, 2, 3

# layer columns of `lay` (int64 [L, NL])
L_KIND, L_CAT, L_M, L_N, L_K, L_G, L_MACS, L_OPS, L_WEL, L_AIN, L_AOUT, L_WB = range(12)
L_KH = 12  # a conv's kernel rows (LayerTable.kernel_rows; 1 where unknown)
L_TRANS = 13  # exp / log / tanh / erf evaluations (LayerTable.transcendentals)
L_FNODES = 14  # nodes of the layer's ONNX function body (LayerTable.function_nodes)
L_DQ_COPIES = 15  # DequantizeLinear copies onnxruntime runs on a float-out QLinear result
NL = 16

# params columns (float64 [H, NP])
(P_CLOCK_HZ, P_CORES, P_THREADS, P_LANES32, P_PIPES, P_TILE_M, P_TILE_N, P_GEMM_EFF,
 P_DRAM_BPC, P_OP_OVH, P_GEMM_OVH, P_RUN_OVH, P_THR_OVH, P_NLEVELS, P_E_INSTR, P_E_OP, P_E_DRAM,
 P_FP16, P_DRAM_ALL_BPC, P_PAR_EFF) = range(20)
# DRAM bytes per cycle one core reads when its prefetcher does not follow the pattern, 0: n/a
P_DRAM_MISS_BPC = 20
NP = 21

# cache columns (float64 [H, MAX_LEVELS, NC])
C_BYTES, C_BPC, C_SHARED, C_E_BYTE = range(4)
NC = 4
MAX_LEVELS = 4

# kernel paths (rows of `paths`; the glue picks one per config, layer and bit choice)
(PATH_FP32, PATH_FP16, PATH_QLINEAR, PATH_NBITS_INT8, PATH_NBITS_FP32, PATH_DQ_FP32,
 PATH_INT8, PATH_LUT, PATH_FP32_UNPACK) = range(9)
PATH_CONV_INTEGER = 9  # DynamicQuantizeLinear -> ConvInteger -> Cast -> Mul (quantize_dynamic)
PATH_NBITS_FLOAT_ZP = 10  # MatMulNBits that cannot prepack: scalar dequantise + fp32 GEMM
# ncnn int8 convs by where their input comes from and where their output goes (PATH_INT8:
# float in, float out; hwmodels.ncnn_int8): requantised int8 out, int8 in, both
PATH_NCNN_INT8_REQ, PATH_NCNN_INT8_IN, PATH_NCNN_INT8_IN_REQ = 11, 12, 13
# Q node -> MatMulIntegerToFloat (QGEMM writing float: no DQ node, no requantisation)
PATH_MATMUL_INT_FLOAT = 14
# onnxruntime QLinearConv inside an int8 chain (hwmodels.ort_int8): its DQ -> Q pairs removed,
# so it reads int8 (no Q node), writes int8 to QLinear readers only (no DQ node), or both
PATH_QLINEAR_IN, PATH_QLINEAR_OUT, PATH_QLINEAR_CHAIN = 15, 16, 17
# ncnn's float InnerProduct on an aarch64 core without fp16 arithmetic: fp16 weights, fp32
# arithmetic (row built in hwmodels.cpu_rates._path_rows; weight bytes and row layout per ncnn
# release: kernels.cpu_ncnn.fc_weight_bytes / fc_interleaved_rows)
PATH_NCNN_FC_FP16S = 18
NPATH = 19
PATH_NONE, PATH_FUSED = -1, NPATH  # non-GEMM layers: own pass, or fused into the GEMM before

# path attributes (columns of `paths`): MAC rate per core and cycle (LUT: at 1-bit weights),
# bytes per activation / weight / output element in the kernel (weight -1: stored width),
# k alignment, nodes it runs as, MAC energy (pJ), and the streams it adds per inference.
# A_W_DQ: fp32 bytes a run-time weight-dequantise pass writes and re-reads per weight.
(A_RATE, A_EB_A, A_EB_W, A_EB_O, A_K_ALIGN, A_NODES, A_E_MAC, A_Q_IN, A_DQ_OUT, A_A_QUANT,
 A_W_DQ, A_W_INLINE, A_IM2COL, A_FAKE_Q, A_A_PACK, A_REQUANT, A_WINOGRAD, A_WG_RATE) = range(18)
# ConvInteger (onnxruntime conv_integer.cc): A_DYN_Q min/max pass of DynamicQuantizeLinear,
# A_OUT_CAST the int32 output's Cast and Mul passes, A_B_PACK weights packed on every run
# (MlasGemm on an unpacked operand), A_GROUP_LOOP one im2col + GEMM call per group
A_DYN_Q, A_OUT_CAST, A_B_PACK, A_GROUP_LOOP = range(18, 22)
# A_W_DQ_CYC: cycles per weight of a scalar (not vectorised) weight-dequantise loop, 0 = none
A_W_DQ_CYC = 22
# A_DW_CHAIN_CYC: latency (cycles) of one tap in a direct depthwise kernel whose output blocks
# accumulate their taps as dependent FMA chains (x86 NCHWc), 0 = throughput-bound
A_DW_CHAIN_CYC = 23
# A_DW_VEC_CYC: cycles per (output pixel, tap, lane vector) of a direct depthwise kernel whose
# per-vector work exceeds one multiply-add (MLAS's AVX2 int8 one: hwmodels.cpu_x86), 0 = one
# A_GATHER_CYC: cycles per (output pixel, tap) the kernel spends gathering its input (an
# indirection-buffer entry or an im2col copy call), 0 = none
A_DW_VEC_CYC, A_GATHER_CYC = 24, 25
# A_IM2COL_CALL_CYC: cycles per copy call of an NHWC im2col (one per output pixel and kernel
# row: onnxruntime's Im2col<NHWC> memcpys a kernel row's kw x cin bytes at once), 0 = none
A_IM2COL_CALL_CYC = 26
# A_FC_ROWS: weight rows a batch-1 InnerProduct task reads side by side (ncnn before 2022-06:
# four unpacked rows, `kernels.cpu_ncnn.fc_interleaved_rows`), 0 = one packed stream
A_FC_ROWS = 27
# A_FMA_LAT: the core's dependent-FMA latency (cycles) for ncnn's direct fp16 convs, whose few
# accumulator chains it limits (`kernels.cpu_ncnn.chain_share`), 0 = not described
A_FMA_LAT = 28
# A_BIAS_ADD: a float Add of the bias after the output's Cast and Mul (the dynamic int8 conv:
# ConvInteger takes no bias), for layers that have one; 0 = bias in the kernel or none
A_BIAS_ADD = 29
# A_NCHWC: the path's convs run MLAS's NCHWc kernels (onnxruntime, x86 AVX2 / AVX-512:
# hwmodels.ort_layout), which take every thread whatever the work (snchwc.cpp MlasNchwcConv:
# `WorkBlock.tids = MlasGetMaximumThreadCount(ThreadPool)`, no THREAD_MACS threshold); 0 = no
A_NCHWC = 30
NA = 31
DW_NCHWC_OUTPUTS = 3.0  # output blocks per pass of SconvKernelFma3.S's "Depthwise" ComputeBlock
MINMAX_LANE_OPS = 2.0          # DynamicQuantizeLinear's range pass: a min and a max per element
CAST_MUL_LANE_OPS = 2.0        # int32 -> fp32 convert, then the scale multiply (two nodes)
BIAS_ADD_LANE_OPS = 1.0        # the bias Add node: one add per element

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
# vector ops per exp evaluation, from each runtime's kernel (`cpu_stream.exp_lane_ops`):
# onnxruntime: MLAS MlasComputeSumExpVector (core/mlas/lib/compute.cpp, the exp of its softmax;
# AVX2 / AVX-512 assembly kernels run the same steps on wider vectors): the max subtraction,
# a clamp, an FMA and a subtract rounding x / ln2, two FMAs for x - m ln2, a shift and an add
# building 2^m, a six-FMA polynomial, a multiply = 15 (its Exp op, MlasComputeExpVector: 20;
# Sigmoid, MlasLogisticKernel's rational approximation: 17, one of them a divide)
EXP_LANE_OPS_ORT = 15.0
# ncnn: exp_ps (src/layer/arm/neon_mathfun.h @a4d2ea1, aarch64 branch): a min and a max, an
# FMA and a floor (frintm) for n, two multiplies and two subtracts for x - n ln2, a square,
# a five-FMA polynomial, an FMA and an add, a convert, an add and a shift building 2^n, a
# multiply = 20 (sigmoid_ps adds a negate, an add and a divide, counted in the layer's ops)
EXP_LANE_OPS_NCNN = 20.0
EXP_LANE_OPS = 16.0            # assumed (XNNPACK, ideal): range reduction + polynomial
Q_LANE_OPS = 3.0               # quantise: scale, round-convert, add zero point (per element)
DQ_LANE_OPS = 2.0              # dequantise: convert, scale
UNPACK_LANE_OPS = 3.0          # weight dequantise: unpack nibbles, convert, scale
REQUANT_LANE_OPS = 4.0         # int32 -> int8 requantisation per output element
WINOGRAD_SLACK = 1.3           # input pixels / output pixels of a padded 3x3 stride-1 conv
WINOGRAD_MIN_CH = 8.0          # ncnn convolution_arm.cpp: Winograd needs cin or cout >= 8
WINOGRAD_MIN_CH_FP16 = 16.0    # ncnn convolution_arm_asimdhp.cpp:87,94 (fp16sa): 16, not 8
LLC_RESIDENT = 0.75            # assumed: weights stay cached across inferences below this share
PARALLEL_MIN_EVALS = 200_000   # below this, one thread beats numba's fork/join
