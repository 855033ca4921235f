"""The format policy: one table from a layer's bits to what is emitted and what onnxruntime runs.

Every decision "which ONNX pattern does a (kind, weight bits, activation bits, granularity)
layer become on a target with these capabilities, and which kernel does onnxruntime run for
it" is a row of `FORMATS`. The quantize pass picks its planner by row, the fake-quant
simulation its rule, `compiler.verify` the legal annotations, `compiler.emit` the emitter (by
`Format.fmt`), the readers of quantized ONNX recognise rows backwards, and the cost models map
`Format.kernel` to their kernel paths. `Graph.layer_table()` carries the resolved row per layer
(`LayerTable.fmt_code`), so no cost model re-derives it.

Adding a format is one row here plus its quantizer, fake-quant rule, emitter, cost path and
byte count (`compiler.format_bytes.ROW_BYTES`; `tests/compiler/test_formats.py` and
`tests/compiler/test_format_bytes.py` check that each row has all of them).

The numbers that used to be repeated across modules live here once: the legal bit widths, the
MatMulNBits block size, the containers onnxruntime stores N-bit codes in, and where each layer
kind keeps its weight.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import numpy as np

from compiler.errors import ModelError
from compiler.ir import KINDS, Layer

FLOAT_BITS = 32                           # "float32" in a bit assignment
WEIGHT_BITS = (2, 3, 4, 5, 6, 7, 8, 16)   # quantised weight widths (16 = float16 storage)
ACT_BITS = (4, 8, 16)                     # quantised activation widths
NBITS_BLOCK = 32        # MatMulNBits / blocked DequantizeLinear block along K (onnxruntime-genai)
# Blocks a per-layer choice may offer (`--blocks`): larger blocks store fewer scales (4.5 bits
# per 4-bit weight at 32, 4.25 at 64, 4.125 at 128 with fp32 scales) at more rounding error
BLOCK_CHOICES = (32, 64, 128)
MATMULNBITS_BITS = (2, 4, 8)              # MatMulNBits `bits` onnxruntime accepts
GRANULARITIES = ("per_tensor", "per_channel", "per_block")
# Where each quantisable kind keeps its weight among its inputs, and its output-channel axis
# (conv_transpose weights are [Cin, Cout/g]).
WEIGHT_INPUT: Mapping[str, int] = MappingProxyType(
    {"conv": 1, "conv_transpose": 1, "linear": 1, "gather": 0})
CHANNEL_AXIS: Mapping[str, int] = MappingProxyType(
    {"conv": 0, "conv_transpose": 1, "linear": 0, "gather": 0})
# Which inputs carry activations that a calibrated format quantises (order of Quant.in_scale).
ACT_INPUTS: Mapping[str, tuple[int, ...]] = MappingProxyType(
    {"conv": (0,), "conv_transpose": (0,), "linear": (0,), "matmul": (0, 1)})
GEMM_KINDS = ("conv", "conv_transpose", "linear", "matmul")
_INT = (2, 3, 4, 5, 6, 7, 8)
_SUB8 = (2, 3, 4)  # widths whose MatMulNBits container is below 8 bits


def int_container(bits: int) -> int:
    """Storage width of `bits`-bit codes in ONNX integer initializers: INT4 or INT8."""
    return 4 if bits <= 4 else 8


def nbits_container(bits: int) -> int:
    """MatMulNBits `bits` holding a `bits`-bit grid: 2, 4 or 8 (3 -> 4, 5..7 -> 8)."""
    return 2 if bits == 2 else int_container(bits)


@dataclass(frozen=True)
class Format:
    """One row of the policy.

    Attributes:
        name: unique row name (the quantizer and fake-quant rules are keyed by it).
        fmt: emitter family (`Quant.fmt`; `compiler.emit.EMITTERS` is keyed by (kind, fmt)).
        kinds: layer kinds the row applies to.
        w_bits: weight widths; `(None,)` = float weights.
        a_bits: activation widths; `(None,)` = float activations.
        granularities: weight scale granularities the row takes.
        const_weight: True if the layer must read a constant weight, False if it must not,
            None if either.
        act: how activations are quantised: "none", "static" (calibrated scale in the
            model), "dynamic" (per block at run time, inside the kernel).
        pattern: the ONNX the emitter writes.
        kernel: the operator onnxruntime runs after its graph optimisation ("fp32" = the
            float op itself); `edgesim.kernel_check` compares it with the optimised graph.
        needs: runtime capability the row requires ("int8_dot": MLAS's int8 MatMulNBits).
        fallback: the row onnxruntime runs instead on a target without `needs`.
        opset: lowest default-domain opset the pattern needs.
        opt_in: the `Policy` flag that must be set for the row to be planned (it shares its
            bits with a default row); readers of quantized ONNX set the flag they read.
    """

    name: str
    fmt: str
    kinds: tuple[str, ...]
    w_bits: tuple[int | None, ...]
    a_bits: tuple[int | None, ...]
    granularities: tuple[str, ...]
    const_weight: bool | None
    act: str
    pattern: str
    kernel: str
    needs: str = ""
    fallback: str = ""
    opset: int = 13
    opt_in: str = ""  # a Policy flag: planned only where the policy asks for the row
    requant: bool = False  # the output is requantised to int8 (Quant.out_scale set)

    def matches(self, kind: str, const_weight: bool, w: int | None, a: int | None,
                granularity: str) -> bool:
        """Whether a layer so annotated is this row (the policy read backwards)."""
        return (kind in self.kinds and w in self.w_bits and a in self.a_bits
                and granularity in self.granularities
                and self.const_weight in (None, const_weight))


_PC = ("per_tensor", "per_channel")
FORMATS: tuple[Format, ...] = (
    Format("float", "float", KINDS, (None,), (None,), GRANULARITIES, None, "none",
           "the float op", "fp32"),
    Format("fp16", "fp16", ("conv", "conv_transpose", "linear", "gather"), (16,), (None,),
           GRANULARITIES, True, "none", "float16 initializer -> Cast -> float op",
           "fp32"),  # onnxruntime folds the Cast of a constant: fp32 compute
    Format("qlinear_conv", "qdq", ("conv",), _INT, (8,), _PC, True, "static",
           "Q/DQ(x), DQ(uint8 w), DQ(int32 b) -> Conv -> Q -> DQ", "QLinearConv",
           requant=True),
    Format("int8_linear", "qdq", ("linear",), _INT, (8,), _PC, True, "static",
           "Q(x) -> MatMulIntegerToFloat", "MatMulIntegerToFloat"),
    Format("int8_act_matmul", "qdq", ("matmul",), (None,), (8,), ("per_tensor",), False,
           "static", "Q(a), Q(b) -> MatMulIntegerToFloat", "MatMulIntegerToFloat"),
    Format("qdq_float", "qdq", GEMM_KINDS, (None, *_INT), (4,), GRANULARITIES, None,
           "static", "Q/DQ(x), DQ(w) -> float op (no integer kernel at 4-bit activations)",
           "fp32"),
    Format("qdq_float_transpose", "qdq", ("conv_transpose",), _INT, (8,), _PC, True, "static",
           "Q/DQ(x), DQ(w) -> ConvTranspose", "fp32"),
    Format("nbits_fp32", "matmulnbits", ("linear",), (*_INT,), (None,), ("per_block",), True,
           "none", "MatMulNBits accuracy_level 0", "MatMulNBits"),
    Format("nbits_int8", "matmulnbits", ("linear",), _SUB8, (8,), ("per_block",), True,
           "dynamic", "MatMulNBits accuracy_level 4", "MatMulNBits", needs="int8_dot",
           fallback="nbits_fp32"),
    # float zero points (or g_idx): onnxruntime cannot prepack B and takes its slow path,
    # dequantising B to fp32 and running an fp32 GEMM on every run (microsoft/onnxruntime
    # #28552); only readers of such files plan it (opt-in)
    Format("nbits_float_zp", "matmulnbits_fzp", ("linear",), (*_INT,), (None,), ("per_block",),
           True, "none", "MatMulNBits with float zero points (B not prepacked)", "MatMulNBits",
           opt_in="nbits_float_zp"),
    Format("int_dq", "int_dq", ("conv", "conv_transpose"), _INT, (None,), _PC, True, "none",
           "INT4/INT8 initializer -> Cast * scale (folded at load) -> float op", "fp32"),
    Format("int_dq_block", "int_dq", ("conv", "conv_transpose"), _INT, (None,),
           ("per_block",), True, "none", "INT4/INT8 initializer -> blocked DequantizeLinear "
           "-> float op", "fp32", opset=21),
    Format("gbq", "gbq", ("gather",), _INT, (None,), ("per_block",), True, "none",
           "com.microsoft::GatherBlockQuantized", "GatherBlockQuantized"),
    # onnxruntime's quantize_dynamic: activations quantised per tensor at run time
    Format("dynamic_int8_linear", "dynamic", ("linear",), (8,), (8,), _PC, True, "dynamic",
           "DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul", "MatMulIntegerToFloat",
           opt_in="dynamic_int8"),  # DynamicQuantizeMatMul, or MatMulIntegerToFloat if shared
    Format("dynamic_int8_conv", "dynamic", ("conv",), (8,), (8,), _PC, True,
           "dynamic", "DynamicQuantizeLinear -> ConvInteger -> Cast -> Mul", "ConvInteger",
           opt_in="dynamic_int8"),
    # QDQ with a requantised output (onnxruntime's quantize_static on Gemm / MatMul): QGemm
    # for a 2-D input, QLinearMatMul otherwise (one int8 GEMM with an int8 output)
    Format("qlinear_linear", "qdq", ("linear",), _INT, (8,), _PC, True, "static",
           "Q/DQ(x), DQ(w) -> Gemm / MatMul -> Q -> DQ", "QLinearMatMul",
           opt_in="requant_out", requant=True),
    Format("qlinear_act_matmul", "qdq", ("matmul",), (None,), (8,), ("per_tensor",), False,
           "static", "Q/DQ(a), Q/DQ(b) -> MatMul -> Q -> DQ", "QLinearMatMul",
           opt_in="requant_out", requant=True),
)
BY_NAME: Mapping[str, Format] = MappingProxyType({f.name: f for f in FORMATS})
FORMAT_CODE: Mapping[str, int] = MappingProxyType({f.name: i for i, f in enumerate(FORMATS)})
# Rows whose weight is quantised per block: the block is a choice of theirs
BLOCKED_CODES = tuple(FORMAT_CODE[f.name] for f in FORMATS if f.granularities == ("per_block",))
NO_FORMAT = -1  # LayerTable.fmt_code of a layer that was never planned (resolve from bits)


def check_block(block: int, where: str = "block") -> int:
    """`block` if MatMulNBits / blocked DequantizeLinear take it (a power of two >= 16).

    Raises:
        ModelError: naming `where`, for any other value.
    """
    if not (isinstance(block, int | np.integer) and block >= 16 and block & (block - 1) == 0):
        raise ModelError(where, f"block size must be a power of two >= 16, got {block!r}")
    return int(block)


@dataclass(frozen=True)
class Policy:
    """The choices that are not a layer's bits: the target's capabilities and user options.

    Attributes:
        int8_dot: the runtime has MLAS's int8 MatMulNBits kernel (Arm dotprod, x86 AVX2):
            weight-only linear layers planned with 8-bit activations run accuracy_level 4.
        act_matmul_int8: quantise activation x activation matmuls at 8-bit activations
            (default: they stay float, see `compiler.passes.quantize`).
        conv_granularity: weight granularity of weight-only conv layers.
        dynamic_int8: W8A8 with activations quantised at run time (DynamicQuantizeLinear:
            MatMulInteger / ConvInteger), as onnxruntime's quantize_dynamic writes.
        requant_out: W8A8 linear / matmul layers requantise their output (QGemm).
        nbits_float_zp: weight-only linear layers as MatMulNBits with float zero points
            (onnxruntime's non-prepacked slow path; set by the reader of such files).
    """

    int8_dot: bool = True
    act_matmul_int8: bool = False
    conv_granularity: str = "per_channel"
    dynamic_int8: bool = False
    requant_out: bool = False
    nbits_float_zp: bool = False


def _auto_granularity(kind: str, w: int | None, a: int | None, policy: Policy) -> str:
    if w is None:
        return "per_tensor"
    if kind in ("linear", "gather") and a is None or (kind == "linear" and a == 8 and w <= 4):
        return "per_block"
    return policy.conv_granularity if a is None else "per_channel"


def _effective(kind: str, const_weight: bool, w: int | None, a: int | None,
               policy: Policy) -> tuple[int | None, int | None]:
    """The (w, a) the policy runs: 16-bit activations run float; a weighted layer without
    weight bits runs float (no activation-only integer kernel); activation x activation
    matmuls hold no weight and stay float at 8 bits unless asked; weight-only linear layers
    (in a 2- or 4-bit container) drop a8 without the int8 MatMulNBits kernel."""
    a = None if a == 16 else a
    if kind == "matmul":
        keep = not const_weight and (a != 8 or policy.act_matmul_int8)
        return None, a if keep else None
    if w is None or w == 16:
        return w, None
    if kind == "linear" and w in _SUB8 and a == 8 and not policy.int8_dot:
        return w, None
    return w, a


def resolve(kind: str, const_weight: bool, w_bits: int | None, a_bits: int | None,
            policy: Policy = Policy(), granularity: str | None = None) -> Format:
    """The row a layer of `kind` runs as at (w_bits, a_bits); None or 32 = float.

    Args:
        kind: the layer kind.
        const_weight: whether the layer reads a constant weight in its weight slot.
        w_bits, a_bits: the plan's bits.
        policy: target capabilities and options.
        granularity: the weight granularity, or None for the policy's default.
    """
    w = None if w_bits in (None, FLOAT_BITS) else int(w_bits)
    a = None if a_bits in (None, FLOAT_BITS) else int(a_bits)
    if kind != "matmul" and (kind not in WEIGHT_INPUT or not const_weight):
        w, a = None, None
    w, a = _effective(kind, const_weight, w, a, policy)
    gran = granularity or _auto_granularity(kind, w, a, policy)
    rows = [r for r in FORMATS if r.opt_in and getattr(policy, r.opt_in)]
    for row in rows + [r for r in FORMATS if not r.opt_in]:
        if row.matches(kind, const_weight, w, a, gran) and (not row.needs or policy.int8_dot):
            return row
    return BY_NAME["float"]


def of_layer(layer: Layer, const_weight: bool) -> Format:
    """The row of an annotated layer (its `Quant` read backwards), or "float"."""
    q = layer.quant
    for row in FORMATS:
        if row.fmt == q.fmt and row.requant == (q.out_scale is not None) and row.matches(
                layer.kind, const_weight, q.w_bits, q.a_bits, q.granularity):
            return row
    return BY_NAME["float"]


def runs_as(policy: Policy = Policy()) -> np.ndarray:
    """int64 [len(FORMATS)]: the code each planned row runs as under `policy` (a row whose
    capability the target lacks runs as its fallback, as onnxruntime's kernel selection does)."""
    return np.array([FORMAT_CODE[f.fallback] if f.needs and not policy.int8_dot else i
                     for i, f in enumerate(FORMATS)], dtype=np.int64)


def resolve_codes(kind_code: np.ndarray, const_weight: np.ndarray, bits: np.ndarray,
                  policy: Policy = Policy()) -> np.ndarray:
    """`FORMAT_CODE` of every layer at every bit choice, int64 [L, B].

    Args:
        kind_code: int [L] (`LayerTable.kind_code`).
        const_weight: bool [L], the layer reads a constant weight.
        bits: int [B, 2] (w_bits, a_bits); 32 = float.
        policy: target capabilities and options.
    """
    out = np.zeros((len(kind_code), len(bits)), dtype=np.int64)
    keys = np.stack([np.asarray(kind_code, np.int64), np.asarray(const_weight, np.int64)], 1)
    uniq, inverse = np.unique(keys.reshape(-1, 2), axis=0, return_inverse=True)
    for u, (k, c) in enumerate(uniq.tolist()):
        codes = [FORMAT_CODE[resolve(KINDS[k], bool(c), w, a, policy).name]
                 for w, a in np.asarray(bits).tolist()]
        out[inverse.reshape(-1) == u] = codes
    return out


def host_arch(machine: str | None = None) -> Literal["arm64", "x86_64"]:
    """This machine's architecture as a target's `arch` (`platform.machine()` by default):
    the key of the per-ISA rules of which kernel a quantized layer runs."""
    machine = platform.machine() if machine is None else machine
    return "arm64" if machine.lower() in ("aarch64", "arm64") else "x86_64"
