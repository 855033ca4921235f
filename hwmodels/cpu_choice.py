"""Edge CPUs: which kernel path each layer takes at each bit choice -- onnxruntime's format
policy rows (`compiler.formats`) mapped to cost paths, ncnn / XNNPACK / ideal choices, fused
activations, int8 chains -- and the weight bytes it stores or the emitter writes."""

from __future__ import annotations

import dataclasses

import numpy as np

from compiler.format_bytes import emitted_bytes, table_geometry
from compiler.formats import (
    FORMAT_CODE,
    FORMATS,
    NBITS_BLOCK,
    WEIGHT_INPUT,
    Policy,
    nbits_container,
    resolve_codes,
    runs_as,
)
from compiler.ir import ACTIVATIONS, CATEGORY_GEMM, KIND_CODE, LayerTable
from hwmodels import ncnn_int8, ort_int8
from hwmodels.cost import bits_key, memoised
from hwmodels.cpu_rates import nbits_int8_available
from hwmodels.cpu_schema import CpuTarget
from hwmodels.kernels import cpu_layout as K  # the kernel's array layout and path codes

LUT_MAX_M = 8     # T-MAC's table-lookup kernels target GEMV and small batches


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


# Activations each runtime runs in the output loop of the conv / linear kernel before them.
# onnxruntime: ConvActivationFusion (core/optimizer/conv_activation_fusion.cc) fuses a float
# Conv's lone consumer, when the Conv's output is no graph output, into FusedConv if it is
# Relu, Sigmoid, Tanh, LeakyRelu or Clip with constant bounds (and, in 1.32, HardSigmoid); the
# NCHWc transformer (nchwc_transformer.cc, TransformActivation: a single-use NCHWc Conv with
# no activation yet) fuses into its convs on x86. GemmActivationFusion fuses what FusedGemm's
# MLAS activations take -- Relu, LeakyRelu, Sigmoid, Tanh, HardSigmoid, Elu, Selu, Softplus,
# Softsign, not Clip -- after a Gemm (the 2-D linear edgesim emits); a MatMul fuses nothing.
# onnxruntime 1.32's optimised graphs, at ORT_ENABLE_EXTENDED and ORT_ENABLE_ALL, fuse exactly
# these (tests/hwmodels/test_fused_activations.py). Other runtimes: the clamps (ReLU, clip,
# leaky ReLU), as before.
ORT_CONV_FUSED = frozenset({"relu", "clip", "leaky_relu", "sigmoid", "tanh", "hard_sigmoid"})
ORT_GEMM_FUSED = frozenset({"relu", "leaky_relu", "sigmoid", "tanh", "hard_sigmoid", "elu",
                            "selu", "softplus", "softsign"})
CLAMPS = frozenset({"relu", "clip", "leaky_relu"})


def fused_activations(table: LayerTable, runtime: int = K.RUNTIME_ORT) -> np.ndarray:
    """bool [L]: activations that consume the output of a float conv or linear layer (their
    producer, `producers`: wherever the graph lists it -- a branchy graph, Basic Pitch, puts
    other layers between a conv and its ReLU), which no other layer reads and which is no
    graph output, and that `runtime` runs in that kernel's output loop (the lists above). A
    table that does not name its activations (`LayerTable.activation` None) fuses the
    clamp-like ones (<= 2 ops per element) after either."""
    conv, linear = KIND_CODE["conv"], KIND_CODE["linear"]
    src, lone = producers(table), _lone_reader(table)
    at = np.maximum(src, 0)
    prev = np.where(src >= 0, table.kind_code[at], -1)
    feeds = (src >= 0) & (table.a_out_elems[at] == table.a_in_elems) & lone
    act = table.kind_code == KIND_CODE["activation"]
    if table.activation is None:
        clamp = act & (table.ops <= 2 * table.a_out_elems)
        return np.asarray(clamp & np.isin(prev, (conv, linear)) & feeds, bool)
    lists = (ORT_CONV_FUSED, ORT_GEMM_FUSED) if runtime == K.RUNTIME_ORT else (CLAMPS, CLAMPS)
    gemm = prev == linear
    if runtime == K.RUNTIME_ORT and table.out_rank is not None:  # a MatMul fuses nothing
        gemm &= np.where(src >= 0, table.out_rank[at], 0) == 2
    fusable = np.where(prev == conv, _named(table, lists[0]), gemm & _named(table, lists[1]))
    return np.asarray(act & fusable & feeds, bool)


def producers(table: LayerTable) -> np.ndarray:
    """int [L]: the layer whose output each layer reads first (`LayerTable.reads`; the layer
    just before it where the table carries no edges); -1 for a graph input. A fused
    activation runs in this layer's output loop."""
    if table.reads is None:
        return np.arange(len(table)) - 1
    return np.asarray(table.reads)[:, 0]


def ort_fused(table: LayerTable, paths: np.ndarray) -> np.ndarray:
    """bool [L, B]: the activations onnxruntime runs inside the GEMM before them, per bit
    choice (`paths`: the GEMM kernel paths). Only a float Conv / Gemm fuses (ConvActivation-
    Fusion checks the float type); a quantised conv (QLinearConv) absorbs a ReLU or clip,
    which edgesim's emitter folds into its output quantisation (an Identity onnxruntime
    drops); after MatMulIntegerToFloat, MatMulNBits, ConvInteger or a Q/DQ pair the
    activation runs as its own node (onnxruntime 1.32's optimised graphs:
    tests/hwmodels/test_fused_activations.py)."""
    fused, src = fused_activations(table, K.RUNTIME_ORT), producers(table)
    prev = np.where((src >= 0)[:, None], paths[np.maximum(src, 0)], K.PATH_NONE)
    clamps = fused if table.activation is None else \
        fused & _named(table, frozenset({"relu", "clip"}))
    qlinear = np.isin(prev, (K.PATH_QLINEAR, K.PATH_QLINEAR_IN, K.PATH_QLINEAR_OUT,
                             K.PATH_QLINEAR_CHAIN))
    out: np.ndarray = (fused[:, None] & (prev == K.PATH_FP32)) | (clamps[:, None] & qlinear)
    return out


def _named(table: LayerTable, names: frozenset[str]) -> np.ndarray:
    """bool [L]: activation layers whose function is one of `names`."""
    assert table.activation is not None
    codes = [ACTIVATIONS.index(n) for n in names]
    return np.asarray(np.isin(table.activation, codes), bool)


def _lone_reader(table: LayerTable) -> np.ndarray:
    """bool [L]: layer i's producer (`producers`) has no other reader (among the layers' first
    two inputs: `LayerTable.reads`) and its output is no graph output (True where the table
    carries no edges)."""
    n = len(table)
    if table.reads is None:
        return np.ones(n, bool)
    reads = np.asarray(table.reads)
    src = reads[:, 0]
    readers = np.bincount(reads[reads >= 0], minlength=n)  # a layer reading it twice: 2
    out = np.zeros(n, bool) if table.graph_output is None else \
        np.asarray(table.graph_output, bool)
    at = np.maximum(src, 0)
    return np.asarray((src >= 0) & (readers[at] == 1) & ~out[at], bool)


def layer_choices(table: LayerTable, bits: np.ndarray, target: CpuTarget,
                  runtime: int) -> np.ndarray:
    """int64 [L, B]: kernel path of GEMM layers, PATH_FUSED for fused activations,
    PATH_NONE for the other layers."""
    gemm = (table.category == CATEGORY_GEMM)[:, None]
    fused = fused_activations(table, runtime)[:, None]
    paths = kernel_paths(table, bits, target, runtime)
    if runtime == K.RUNTIME_NCNN:
        paths = ncnn_int8.chain_paths(table, paths)
    elif runtime == K.RUNTIME_ORT:
        paths = ort_int8.chain_paths(table, paths)
        fused = ort_fused(table, paths)
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

