"""The quantize pass: a bit assignment + calibration -> a graph annotated for emission.

`quantize(g, bits, calib)` decides, layer by layer, what runs quantised and in which
onnxruntime format, and stores the quantised weights (codes, scales, zero points, int32
biases) in `Graph.weights` under `compiler.fake_quant.quant_names`. It never mutates `g`.

What gets quantised, and why:

- Only MAC layers (conv, conv_transpose, linear, matmul) take bits; everything else (norms,
  softmax, eltwise adds such as the attention mask, activations) stays float32, so no
  LayerNorm or Softmax input is ever quantised. onnxruntime's all-operator QDQ quantises
  exactly those and collapses a MiniLM's output (cosine 0.44); MatMul/Gemm/Conv-only QDQ
  reaches 0.94.
- W8A8 ("qdq"): weights per output channel, symmetric (narrow int8 grid, MSE-clipped by
  default), activations per tensor, unsigned with a zero point, from the calibration
  histogram. Conv requantises its output (that is what lets
  onnxruntime fuse it into QLinearConv); when a ReLU or Clip is the conv's only reader, the
  output range is the activation's, so the saturating requantisation does the ReLU's work.
  The range method is chosen per tensor by measured output error (`compiler.range_choice`)
  where the calibration statistics carry a choice (percentile otherwise).
  Linear layers keep a float output (MatMulIntegerToFloat): no second rounding.
- Activation x activation matmuls (attention scores, attention x values) stay float by
  default: both operands change with the input, their ranges are wide (softmax outputs span
  orders of magnitude), they hold no weights to shrink, and they are a small share of MACs.
  `QuantOptions.act_matmul="int8"` quantises them (MatMulIntegerToFloat).
- Weight-only N-bit: linear as MatMulNBits (per block of `block` along K), conv as
  DequantizeLinear on INT4/INT8 initializers (per output channel). Bits without an
  onnxruntime type (3, 5, 6, 7) keep their own grid inside the next container (4 or 8).
- Gather tables (embeddings) of at least `min_embedding` elements: weight-only int8/int4 via
  GatherBlockQuantized when `embedding_bits` is set; smaller tables stay float (reported).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import cast

import numpy as np

from compiler.errors import ModelError
from compiler.fake_quant import quant_names
from compiler.formats import (
    ACT_BITS,
    CHANNEL_AXIS,
    FLOAT_BITS,
    NBITS_BLOCK,
    WEIGHT_BITS,
    WEIGHT_INPUT,
    Format,
    Policy,
    int_container,
    nbits_container,
    resolve,
)
from compiler.gptq import gptq_round
from compiler.ir import CATEGORY_GEMM, KIND_CATEGORY, Graph, Layer, Quant, readonly
from compiler.passes.calibrate import METHODS, CalibrationStats, folds_into_requant
from compiler.quantizers import ClipMethod, Granularity, QuantizedTensor, quantize_weight

FLOAT = FLOAT_BITS
W_BITS = (*WEIGHT_BITS, FLOAT)
A_BITS = (*ACT_BITS, FLOAT)
INT32 = np.iinfo(np.int32)


@dataclass(frozen=True)
class QuantOptions:
    """How the quantize pass quantises (defaults: the accuracy-first choices above).

    Attributes:
        granularity: weight scales "auto" (per channel for W8A8 and conv, per block for
            weight-only linear), or force "per_tensor" / "per_channel" / "per_block" where the
            format allows it.
        block: block length along the reduction axis (MatMulNBits, per-block int4).
        layer_blocks: layer name -> its own block (a per-layer choice of the allocator);
            layers not named take `block`.
        clip: weight range "mse" (clip-ratio search), "minmax", or "auto": MSE at 6 bits
            and below, where clipping pays, min/max at 7 and 8 bits, where it gains
            little and the search costs most of the pass's time.
        act_method: activation range "percentile", "mse", "minmax", "entropy", or "auto":
            per tensor the one of those with the least measured output error where
            `CalibrationStats.chosen` holds a choice (`compiler.range_choice`), else
            percentile.
        percentile: kept mass (percent) for "percentile".
        act_matmul: "float" keeps activation x activation matmuls float; "int8" quantises.
        embedding_bits: bits of large gather tables (4 or 8 containers; None keeps float).
        min_embedding: tables with fewer elements stay float.
        int8_dot: the target runs MatMulNBits with int8 activations (accuracy_level 4);
            without it, linear layers planned at (w < 8, a8) run weight-only in fp32.
        dynamic_int8: W8A8 conv / linear with activations quantised at run time
            (MatMulInteger / ConvInteger, as quantize_dynamic writes) instead of calibrated.
        requant_out: W8A8 linear / matmul layers requantise their output (QGemm /
            QLinearMatMul, as quantize_static writes) instead of a float output.
        nbits_float_zp: weight-only linear layers as MatMulNBits with float zero points
            (onnxruntime's non-prepacked slow path, as some exporters write it).
        dynamic_layers: W8A8 layers planned with `dynamic_int8` whatever the option says (a
            per-layer choice: `edgesim.alloc_dynamic` names convs whose static output
            requantisation costs them most).
        bias_correction_bits: weight-only linear / conv layers at this many weight bits or
            fewer get their mean output shift removed from the bias on calibration data
            (`compiler.bias_correction`, run by `edgesim.quantize` after this pass); 0: off.
    """

    granularity: str = "auto"
    block: int = NBITS_BLOCK
    layer_blocks: Mapping[str, int] = field(default_factory=dict)
    clip: str = "auto"
    act_method: str = "auto"
    percentile: float = 99.99
    rounding: str = "rtn"  # weight codes: "rtn" (nearest) or "gptq" (needs calib grams)
    act_matmul: str = "float"
    embedding_bits: int | None = None
    min_embedding: int = 65536
    int8_dot: bool = True
    dynamic_int8: bool = False
    requant_out: bool = False
    nbits_float_zp: bool = False
    bias_correction_bits: int = 4
    dynamic_layers: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        checks = {
            "granularity": self.granularity in ("auto", "per_tensor", "per_channel", "per_block"),
            "block": self.block >= 16 and self.block & (self.block - 1) == 0,
            "layer_blocks": all(b >= 16 and b & (b - 1) == 0 for b in self.layer_blocks.values()),
            "clip": self.clip in ("auto", "mse", "minmax"),
            "act_method": self.act_method in METHODS,
            "rounding": self.rounding in ("rtn", "gptq"),
            "percentile": 50.0 < self.percentile <= 100.0,
            "act_matmul": self.act_matmul in ("float", "int8"),
            "embedding_bits": self.embedding_bits in (None, *WEIGHT_BITS),
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ModelError("quantize options", f"invalid {bad[0]}: {getattr(self, bad[0])!r}")


@dataclass(frozen=True)
class _Ctx:
    g: Graph
    calib: CalibrationStats | None
    opts: QuantOptions
    # weight -> the inputs of the linear layers reading it: GPTQ rounds a shared weight once,
    # against all their Gram matrices, so that every reader stores the same codes
    readers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # (layer, bits, granularity) -> its quantised weight, kept by a caller across calls
    # (`quantize`'s `weight_codes`); None: quantised afresh
    codes: dict[tuple[str, int, str], QuantizedTensor] | None = None
    # tensor -> the layers reading it (`Graph.consumers`), walked once per pass: once per
    # conv took 0.3 CPU-s of PP-OCR's range search (9 passes of 17 QLinearConvs)
    users: Mapping[str, Sequence[Layer]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Plan:
    """One layer's decision: its annotation and the weights it adds."""

    quant: Quant
    weights: Mapping[str, np.ndarray] = field(default_factory=dict)


def _kept(reason: str) -> _Plan:
    return _Plan(Quant(reason=reason))


# ----------------------------------------------------------------------------------------------
# Bits


def check_bits(g: Graph, bits: np.ndarray) -> np.ndarray:
    """Validate an assignment `[L, 2]` of (weight bits, activation bits); 32 means float.

    Raises:
        ModelError: on a wrong shape or unsupported bits, naming the layer.
    """
    bits = np.asarray(bits)
    if bits.shape != (len(g.layers), 2) or bits.dtype.kind not in "iu":
        raise ModelError("bits", f"expected integers of shape ({len(g.layers)}, 2), "
                         f"got {bits.dtype} {bits.shape}")
    for layer, (w, a) in zip(g.layers, bits.tolist()):
        if w not in W_BITS or a not in A_BITS:
            raise ModelError(f"layer {layer.name}", f"bits ({w}, {a}) not in weights {W_BITS} "
                             f"x activations {A_BITS}")
    return bits.astype(np.int64)


def _bits_or_none(b: int) -> int | None:
    return None if b == FLOAT else int(b)


# ----------------------------------------------------------------------------------------------
# Weights and activations


def _weight_plan(layer: Layer, qt: QuantizedTensor) -> dict[str, np.ndarray]:
    names = quant_names(layer.name)
    return {names.codes: readonly(qt.q), names.scale: readonly(qt.scale),
            names.zero_point: readonly(qt.zero_point)}


def clip_method(options: QuantOptions, bits: int) -> str:
    """The weight clip method used at `bits`."""
    if options.clip != "auto":
        return options.clip
    return "mse" if bits <= 6 else "minmax"


def _block(ctx: _Ctx, layer: Layer) -> int:
    """The block of `layer`'s per-block weight: its own choice, else the pass's."""
    return ctx.opts.layer_blocks.get(layer.name, ctx.opts.block)


def _quantize(ctx: _Ctx, layer: Layer, bits: int, granularity: str) -> QuantizedTensor:
    if ctx.codes is None:
        return _quantized(ctx, layer, bits, granularity)
    key = (layer.name, bits, granularity)
    if key not in ctx.codes:
        ctx.codes[key] = _quantized(ctx, layer, bits, granularity)
    return ctx.codes[key]


def _quantized(ctx: _Ctx, layer: Layer, bits: int, granularity: str) -> QuantizedTensor:
    w = ctx.g.weights[layer.inputs[WEIGHT_INPUT[layer.kind]]]
    block = _block(ctx, layer) if granularity == "per_block" else None
    # quantize_weight checks both strings (Literal-typed there)
    qt = quantize_weight(w, bits, cast(Granularity, granularity), CHANNEL_AXIS[layer.kind], block,
                         symmetric=True, clip=cast(ClipMethod, clip_method(ctx.opts, bits)))
    gram = _gram(ctx, layer) if (
        ctx.opts.rounding == "gptq" and layer.kind == "linear" and ctx.calib is not None) else None
    return qt if gram is None else gptq_round(w, gram, qt)  # GPTQ codes on RTN's grid


def _gram(ctx: _Ctx, layer: Layer) -> np.ndarray | None:
    """X^T X of every input the linear layer's weight multiplies (GPTQ's loss sums over the
    layers sharing the weight), None if one is missing."""
    assert ctx.calib is not None  # `_quantize` asks only with calibration statistics
    ins = ctx.readers.get(layer.inputs[1], (layer.inputs[0],))
    grams = [ctx.calib.grams[t] for t in ins if t in ctx.calib.grams]
    return np.sum(grams, axis=0) if grams and len(grams) == len(ins) else None


def _linear_readers(g: Graph) -> dict[str, tuple[str, ...]]:
    """Weight -> the inputs of the linear layers reading it (`_Ctx.readers`)."""
    out: dict[str, tuple[str, ...]] = {}
    for layer in g.layers:
        if layer.kind == "linear" and len(layer.inputs) > 1:
            out[layer.inputs[1]] = (*out.get(layer.inputs[1], ()), layer.inputs[0])
    return out


def _granularity(ctx: _Ctx, auto: str, allowed: tuple[str, ...]) -> str:
    g = ctx.opts.granularity
    return auto if g == "auto" or g not in allowed else g


def _act(ctx: _Ctx, layer: Layer, tensor: str, bits: int) -> tuple[float, int]:
    if ctx.calib is None:
        raise ModelError(f"layer {layer.name}", f"{bits}-bit activations need calibration "
                         "data (none was given)")
    p = ctx.calib.params(tensor, bits, ctx.opts.act_method, ctx.opts.percentile)
    return float(p.scale), int(p.zero_point)


def requant_tensor(g: Graph, layer: Layer,
                   users: Mapping[str, Sequence[Layer]] | None = None) -> str:
    """The tensor whose range sets a conv's requantised output: the output of a ReLU/Clip
    (min >= 0) that is its only reader, else its own output (`users`: `g.consumers()`,
    where the caller has it)."""
    out = layer.outputs[0]
    readers = (g.consumers() if users is None else users).get(out, [])
    if len(readers) == 1 and out not in g.outputs and folds_into_requant(readers[0]):
        return readers[0].outputs[0]
    return out


def _int32_bias(ctx: _Ctx, layer: Layer, qt: QuantizedTensor,
                in_scale: float) -> dict[str, np.ndarray]:
    if len(layer.inputs) < 3 or not layer.inputs[2]:
        return {}
    b = np.asarray(ctx.g.weights[layer.inputs[2]], np.float64)
    step = (np.float32(in_scale) * qt.scale.astype(np.float32)).astype(np.float64)
    q = np.clip(np.rint(b / step), INT32.min, INT32.max).astype(np.int32)
    return {quant_names(layer.name).bias: readonly(q)}


# ----------------------------------------------------------------------------------------------
# Per row of the format policy


def _qdq_weighted(ctx: _Ctx, layer: Layer, row: Format, w_bits: int, a_bits: int) -> _Plan:
    """W8A8-style: per-channel symmetric weights, per-tensor unsigned activations."""
    gran = _granularity(ctx, "per_channel", row.granularities)
    qt = _quantize(ctx, layer, w_bits, gran)
    scale, zp = _act(ctx, layer, layer.inputs[0], a_bits)
    quant = Quant(w_bits, a_bits, gran, None, True, clip_method(ctx.opts, w_bits), row.fmt,
                  (scale,), (zp,), reason=_REASONS[row.name])
    weights = _weight_plan(layer, qt)
    if row.requant:
        out_scale, out_zp = _act(ctx, layer, requant_tensor(ctx.g, layer, ctx.users), a_bits)
        quant = replace(quant, out_scale=out_scale, out_zero_point=out_zp)
    if row.name == "qlinear_conv":
        weights.update(_int32_bias(ctx, layer, qt, scale))
    return _Plan(quant, weights)


def _weight_only(ctx: _Ctx, layer: Layer, row: Format, w_bits: int, a_bits: int | None
                 ) -> _Plan:
    auto = "per_block" if "per_block" in row.granularities else "per_channel"
    gran = _granularity(ctx, auto, row.granularities)
    qt = _quantize(ctx, layer, w_bits, gran)
    block = _block(ctx, layer) if gran == "per_block" else None
    reason = _REASONS[row.name].format(bits=nbits_container(w_bits), c=int_container(w_bits),
                                       kind=layer.kind)
    quant = Quant(w_bits, a_bits if row.act == "dynamic" else None, gran, block, True,
                  clip_method(ctx.opts, w_bits), row.fmt, reason=reason)
    return _Plan(quant, _weight_plan(layer, qt))


def _dynamic(ctx: _Ctx, layer: Layer, row: Format, w_bits: int, a_bits: int) -> _Plan:
    """W8A8 with run-time activation ranges (onnxruntime's quantize_dynamic): symmetric int8
    weights, no calibrated activation scale."""
    gran = _granularity(ctx, "per_channel", row.granularities)
    qt = _quantize(ctx, layer, w_bits, gran)
    return _Plan(Quant(w_bits, a_bits, gran, None, True, clip_method(ctx.opts, w_bits), row.fmt,
                       reason=f"{row.kernel} (activations quantised at run time)"),
                 _weight_plan(layer, qt))


def _fp16(ctx: _Ctx, layer: Layer, row: Format, w_bits: int, a_bits: int | None) -> _Plan:
    w = ctx.g.weights[layer.inputs[WEIGHT_INPUT[layer.kind]]]
    what = "table, float32 output" if layer.kind == "gather" else "weights, float32 compute"
    return _Plan(Quant(16, None, "per_tensor", None, True, "minmax", row.fmt,
                       reason=f"float16 {what}"),
                 {quant_names(layer.name).codes: readonly(np.asarray(w, np.float16))})


def _act_matmul(ctx: _Ctx, layer: Layer, row: Format, w_bits: None, a_bits: int) -> _Plan:
    params = [_act(ctx, layer, t, a_bits) for t in layer.inputs[:2]]
    out: tuple[float | None, int | None] = (_act(ctx, layer, layer.outputs[0], a_bits)
                                            if row.requant else (None, None))
    return _Plan(Quant(None, a_bits, "per_tensor", None, True, "minmax", row.fmt,
                       tuple(s for s, _ in params), tuple(z for _, z in params), *out,
                       reason=_REASONS[row.name]))


def _qdq_any(ctx: _Ctx, layer: Layer, row: Format, w_bits: int | None, a_bits: int) -> _Plan:
    if layer.kind == "matmul":  # activation x activation: no weight bits
        return _act_matmul(ctx, layer, row, None, a_bits)
    assert w_bits is not None  # a weighted layer on a weighted row has weight bits
    return _qdq_weighted(ctx, layer, row, w_bits, a_bits)


def _gather_q(ctx: _Ctx, layer: Layer, row: Format, w_bits: int, a_bits: None) -> _Plan:
    qt = _quantize(ctx, layer, w_bits, "per_block")
    reason = f"GatherBlockQuantized {'INT4' if int_container(w_bits) == 4 else 'UINT8'}"
    quant = Quant(w_bits, None, "per_block", _block(ctx, layer), True,
                  clip_method(ctx.opts, w_bits), row.fmt, reason=reason)
    return _Plan(quant, _weight_plan(layer, qt))


def _float(ctx: _Ctx, layer: Layer, row: Format, w_bits: int | None, a_bits: int | None
           ) -> _Plan:
    if w_bits is None and a_bits is None:
        return _kept("float32 (assignment)")
    if layer.kind == "matmul" and ctx.g.const_weight(layer):
        return _kept("float32: matmul with a constant operand that is not a 2-D weight")
    if layer.kind == "matmul":
        return _kept("float32: activation x activation matmul (attention) kept float for "
                     "accuracy (QuantOptions.act_matmul)" if a_bits else
                     "float32: no constant weight for weight-only bits")
    return _kept("float32: activation-only quantisation of a weighted layer has no "
                 "onnxruntime integer kernel")


_REASONS = {
    "qlinear_conv": "QLinearConv (int8 in, int8 out)",
    "int8_linear": "MatMulIntegerToFloat (int8 in, float out)",
    "int8_act_matmul": "MatMulIntegerToFloat (int8 x int8, float out)",
    "qdq_float": "Q/DQ around a float op (no onnxruntime integer kernel)",
    "qdq_float_transpose": "Q/DQ around a float op (no onnxruntime integer kernel)",
    "nbits_fp32": "MatMulNBits {bits}-bit (accuracy_level 0: fp32 compute)",
    "nbits_int8": "MatMulNBits {bits}-bit (accuracy_level 4: int8 activations per block)",
    "nbits_float_zp": "MatMulNBits {bits}-bit, float zero points (B dequantised per run)",
    "int_dq": "DequantizeLinear INT{c} -> float {kind}",
    "int_dq_block": "blocked DequantizeLinear INT{c} -> float {kind}",
    "qlinear_linear": "QGemm / QLinearMatMul (int8 in, int8 out)",
    "qlinear_act_matmul": "QLinearMatMul (int8 x int8, int8 out)",
}
# (ctx, layer, row, w_bits, a_bits): each planner takes the bits its row guarantees (an int
# where the row needs them, else int | None or None), so the table's type leaves them open
Planner = Callable[..., _Plan]
# The quantizer of every row of compiler.formats.FORMATS.
PLANNERS: Mapping[str, Planner] = MappingProxyType({
    "float": _float, "fp16": _fp16, "qlinear_conv": _qdq_weighted,
    "int8_linear": _qdq_weighted, "int8_act_matmul": _act_matmul, "qdq_float": _qdq_any,
    "qdq_float_transpose": _qdq_weighted, "nbits_fp32": _weight_only,
    "nbits_int8": _weight_only, "nbits_float_zp": _weight_only, "int_dq": _weight_only,
    "int_dq_block": _weight_only,
    "gbq": _gather_q, "dynamic_int8_linear": _dynamic, "dynamic_int8_conv": _dynamic,
    "qlinear_linear": _qdq_weighted, "qlinear_act_matmul": _act_matmul,
})


def policy(options: QuantOptions) -> Policy:
    """The format policy these options choose."""
    gran = options.granularity if options.granularity != "auto" else "per_channel"
    return Policy(options.int8_dot, options.act_matmul == "int8", gran, options.dynamic_int8,
                  options.requant_out, options.nbits_float_zp)


def _row(ctx: _Ctx, layer: Layer, w_bits: int | None, a_bits: int | None) -> Format:
    pol, const = policy(ctx.opts), ctx.g.const_weight(layer)
    pol = replace(pol, dynamic_int8=True) if layer.name in ctx.opts.dynamic_layers else pol
    row = resolve(layer.kind, const, w_bits, a_bits, pol)
    forced = ctx.opts.granularity
    if forced != "auto" and row.name != "float" and forced not in row.granularities:
        other = resolve(layer.kind, const, w_bits, a_bits, pol, forced)
        row = other if other.name != "float" else row
    return row


def _gather_bits(ctx: _Ctx, layer: Layer, w_bits: int | None) -> int | None | _Plan:
    table = ctx.g.weights.get(layer.inputs[0])
    if table is None or table.dtype.kind != "f":
        return _Plan(Quant())
    if table.ndim != 2 or layer.attrs.get("axis") != 0 or layer.attrs.get("elements"):
        return _kept("float32: only 2-D tables gathered along rows are quantised")
    bits = w_bits if w_bits is not None else _embedding_bits(ctx, table)
    if bits is None:
        return _kept(f"float32: table of {table.size} elements (embedding_bits="
                     f"{ctx.opts.embedding_bits}, min_embedding={ctx.opts.min_embedding})")
    return bits


def _embedding_bits(ctx: _Ctx, table: np.ndarray) -> int | None:
    return ctx.opts.embedding_bits if table.size >= ctx.opts.min_embedding else None


def _plan(ctx: _Ctx, layer: Layer, w_bits: int | None, a_bits: int | None) -> _Plan:
    if layer.kind == "gather":
        gathered = _gather_bits(ctx, layer, w_bits)
        if isinstance(gathered, _Plan):
            return gathered
        w_bits = gathered
    elif KIND_CATEGORY[layer.kind] != CATEGORY_GEMM:
        if w_bits is not None or a_bits is not None:
            raise ModelError(f"layer {layer.name}", f"a {layer.kind} layer has no bits to "
                             "choose (only conv, linear, matmul and gather layers do)")
        return _Plan(Quant())
    row = _row(ctx, layer, w_bits, a_bits)
    bits = (w_bits, a_bits) if row.name == "float" else _row_bits(row, w_bits, a_bits)
    plan = PLANNERS[row.name](ctx, layer, row, *bits)
    if a_bits == 16:  # calibrated 16-bit grids have no onnxruntime kernel and ~fp32 accuracy
        note = f"{plan.quant.reason}; 16-bit activations run as float32"
        plan = replace(plan, quant=replace(plan.quant, reason=note))
    return plan


def _row_bits(row: Format, w_bits: int | None, a_bits: int | None
              ) -> tuple[int | None, int | None]:
    """The bits a row's planner quantises at (what the policy kept of the plan's)."""
    w = w_bits if row.w_bits != (None,) else None
    return w, a_bits if a_bits in row.a_bits else None


def quantize(g: Graph, bits: np.ndarray, calib: CalibrationStats | None = None,
             options: QuantOptions = QuantOptions(),
             weight_codes: dict[tuple[str, int, str], QuantizedTensor] | None = None) -> Graph:
    """Annotate every layer with its quantisation and store the quantised weights.

    Args:
        g: the float model.
        bits: int `[L, 2]` (weight bits, activation bits) aligned with `g.layers`; 32 = float.
        calib: calibration statistics (needed wherever activations are quantised).
        options: how to quantise (see `QuantOptions`).
        weight_codes: a dict the caller keeps across calls with the same `g`, `options` and
            Gram matrices, whose statistics differ only in activation ranges (the range
            search quantises one model under many): each weight is quantised into it once
            and read back after (the same arrays; weight codes do not depend on activation
            ranges). None: every call quantises every weight.

    Returns:
        A new graph whose layers carry `Quant` annotations and whose weights include the
        quantised codes, scales, zero points and int32 biases.

    Raises:
        ModelError: on unsupported bits, bits on a layer that has none to choose, or
            quantised activations without calibration statistics.
    """
    bits = check_bits(g, bits)
    ctx = _Ctx(g, calib, options, _linear_readers(g), weight_codes, g.consumers())
    layers, weights = [], dict(g.weights)
    for layer, (w, a) in zip(g.layers, bits.tolist()):
        plan = _plan(ctx, layer, _bits_or_none(w), _bits_or_none(a))
        layers.append(replace(layer, quant=plan.quant))
        weights.update(plan.weights)
    return replace(g, layers=tuple(layers), weights=MappingProxyType(weights))


# ----------------------------------------------------------------------------------------------
# Size


def _quant_bytes(g: Graph, layer: Layer) -> tuple[float, float]:
    """Bytes of one quantised weight: (bits x params / 8, scales and the zero points the
    emitted format writes -- shared by the layers that read the weight at the same
    quantisation; the layer's own int32-bias scales)."""
    q, names = layer.quant, quant_names(layer.name)
    codes = g.weights[names.codes]
    if q.fmt == "fp16":
        return codes.nbytes, 0.0
    scale = g.weights[names.scale]
    assert q.w_bits is not None  # a layer with weight codes has weight bits
    total = codes.size * q.w_bits / 8 + scale.nbytes
    if q.fmt == "qdq":  # uint8 zero points, and the int32 bias's dequantisation scale
        return total + scale.size, 4.0 * scale.size * (names.bias in g.weights)
    return total, 0.0


def _quant_key(layer: Layer, slot: int) -> tuple[object, ...]:
    """What a quantised weight's stored codes depend on besides the layer: layers with one
    key write one copy (`compiler.emit.builder.Builder.const`)."""
    q = layer.quant
    return (layer.inputs[slot], q.w_bits, q.granularity, q.block, q.clip, q.fmt)


def weight_bytes(g: Graph) -> int:
    """What the emitted model's constants should take on disk: float weights at their own
    width, quantised weights at `bits x params / 8` plus scales and zero points.

    Shared constants count once, and so do the codes of a weight several layers quantise
    alike; the float weight a quantised layer replaces counts not at all.
    """
    total, seen = 0.0, set[object]()
    for layer in g.layers:
        slot = WEIGHT_INPUT.get(layer.kind) if layer.quant.w_bits is not None else None
        for i, t in enumerate(layer.inputs):
            if t in g.weights and i != slot and t not in seen:
                seen.add(t)
                total += g.weights[t].nbytes
        if slot is not None:
            shared, own = _quant_bytes(g, layer)
            key = _quant_key(layer, slot)
            total += own + (shared if key not in seen else 0.0)
            seen.add(key)
    return int(round(total))
