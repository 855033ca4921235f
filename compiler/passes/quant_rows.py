"""The quantize pass's planners: per row of the format policy (`compiler.formats.FORMATS`),
how a layer is quantised in that row's onnxruntime format -- its `Quant` annotation and the
quantised weights (codes, scales, zero points, int32 biases) it adds
(`compiler.passes.quantize` picks the row and calls its planner, `PLANNERS`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, cast

import numpy as np

from compiler.errors import ModelError
from compiler.fake_quant import quant_names
from compiler.formats import CHANNEL_AXIS, WEIGHT_INPUT, Format, int_container, nbits_container
from compiler.gptq import gptq_round
from compiler.ir import Graph, Layer, Quant, readonly
from compiler.passes.calibrate import CalibrationStats, folds_into_requant
from compiler.quantizers import ClipMethod, Granularity, QuantizedTensor, quantize_weight

if TYPE_CHECKING:  # the pass's options; that module imports this one
    from compiler.passes.quantize import QuantOptions

INT32 = np.iinfo(np.int32)


@dataclass(frozen=True)
class Ctx:
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
class Plan:
    """One layer's decision: its annotation and the weights it adds."""

    quant: Quant
    weights: Mapping[str, np.ndarray] = field(default_factory=dict)


def kept(reason: str) -> Plan:
    return Plan(Quant(reason=reason))



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


def _block(ctx: Ctx, layer: Layer) -> int:
    """The block of `layer`'s per-block weight: its own choice, else the pass's."""
    return ctx.opts.layer_blocks.get(layer.name, ctx.opts.block)


def _quantize(ctx: Ctx, layer: Layer, bits: int, granularity: str) -> QuantizedTensor:
    if ctx.codes is None:
        return _quantized(ctx, layer, bits, granularity)
    key = (layer.name, bits, granularity)
    if key not in ctx.codes:
        ctx.codes[key] = _quantized(ctx, layer, bits, granularity)
    return ctx.codes[key]


def _quantized(ctx: Ctx, layer: Layer, bits: int, granularity: str) -> QuantizedTensor:
    w = ctx.g.weights[layer.inputs[WEIGHT_INPUT[layer.kind]]]
    block = _block(ctx, layer) if granularity == "per_block" else None
    # quantize_weight checks both strings (Literal-typed there)
    qt = quantize_weight(w, bits, cast(Granularity, granularity), CHANNEL_AXIS[layer.kind], block,
                         symmetric=True, clip=cast(ClipMethod, clip_method(ctx.opts, bits)))
    gram = _gram(ctx, layer) if (
        ctx.opts.rounding == "gptq" and layer.kind == "linear" and ctx.calib is not None) else None
    return qt if gram is None else gptq_round(w, gram, qt)  # GPTQ codes on RTN's grid


def _gram(ctx: Ctx, layer: Layer) -> np.ndarray | None:
    """X^T X of every input the linear layer's weight multiplies (GPTQ's loss sums over the
    layers sharing the weight), None if one is missing."""
    assert ctx.calib is not None  # `_quantize` asks only with calibration statistics
    ins = ctx.readers.get(layer.inputs[1], (layer.inputs[0],))
    grams = [ctx.calib.grams[t] for t in ins if t in ctx.calib.grams]
    return np.sum(grams, axis=0) if grams and len(grams) == len(ins) else None


def linear_readers(g: Graph) -> dict[str, tuple[str, ...]]:
    """Weight -> the inputs of the linear layers reading it (`Ctx.readers`)."""
    out: dict[str, tuple[str, ...]] = {}
    for layer in g.layers:
        if layer.kind == "linear" and len(layer.inputs) > 1:
            out[layer.inputs[1]] = (*out.get(layer.inputs[1], ()), layer.inputs[0])
    return out


def _granularity(ctx: Ctx, auto: str, allowed: tuple[str, ...]) -> str:
    g = ctx.opts.granularity
    return auto if g == "auto" or g not in allowed else g


def _act(ctx: Ctx, layer: Layer, tensor: str, bits: int) -> tuple[float, int]:
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


def _int32_bias(ctx: Ctx, layer: Layer, qt: QuantizedTensor,
                in_scale: float) -> dict[str, np.ndarray]:
    if len(layer.inputs) < 3 or not layer.inputs[2]:
        return {}
    b = np.asarray(ctx.g.weights[layer.inputs[2]], np.float64)
    step = (np.float32(in_scale) * qt.scale.astype(np.float32)).astype(np.float64)
    q = np.clip(np.rint(b / step), INT32.min, INT32.max).astype(np.int32)
    return {quant_names(layer.name).bias: readonly(q)}


# ----------------------------------------------------------------------------------------------
# Per row of the format policy


def _qdq_weighted(ctx: Ctx, layer: Layer, row: Format, w_bits: int, a_bits: int) -> Plan:
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
    return Plan(quant, weights)


def _weight_only(ctx: Ctx, layer: Layer, row: Format, w_bits: int, a_bits: int | None
                 ) -> Plan:
    auto = "per_block" if "per_block" in row.granularities else "per_channel"
    gran = _granularity(ctx, auto, row.granularities)
    qt = _quantize(ctx, layer, w_bits, gran)
    block = _block(ctx, layer) if gran == "per_block" else None
    reason = _REASONS[row.name].format(bits=nbits_container(w_bits), c=int_container(w_bits),
                                       kind=layer.kind)
    quant = Quant(w_bits, a_bits if row.act == "dynamic" else None, gran, block, True,
                  clip_method(ctx.opts, w_bits), row.fmt, reason=reason)
    return Plan(quant, _weight_plan(layer, qt))


def _dynamic(ctx: Ctx, layer: Layer, row: Format, w_bits: int, a_bits: int) -> Plan:
    """W8A8 with run-time activation ranges (onnxruntime's quantize_dynamic): symmetric int8
    weights, no calibrated activation scale."""
    gran = _granularity(ctx, "per_channel", row.granularities)
    qt = _quantize(ctx, layer, w_bits, gran)
    return Plan(Quant(w_bits, a_bits, gran, None, True, clip_method(ctx.opts, w_bits), row.fmt,
                       reason=f"{row.kernel} (activations quantised at run time)"),
                 _weight_plan(layer, qt))


def _fp16(ctx: Ctx, layer: Layer, row: Format, w_bits: int, a_bits: int | None) -> Plan:
    w = ctx.g.weights[layer.inputs[WEIGHT_INPUT[layer.kind]]]
    what = "table, float32 output" if layer.kind == "gather" else "weights, float32 compute"
    return Plan(Quant(16, None, "per_tensor", None, True, "minmax", row.fmt,
                       reason=f"float16 {what}"),
                 {quant_names(layer.name).codes: readonly(np.asarray(w, np.float16))})


def _act_matmul(ctx: Ctx, layer: Layer, row: Format, w_bits: None, a_bits: int) -> Plan:
    params = [_act(ctx, layer, t, a_bits) for t in layer.inputs[:2]]
    out: tuple[float | None, int | None] = (_act(ctx, layer, layer.outputs[0], a_bits)
                                            if row.requant else (None, None))
    return Plan(Quant(None, a_bits, "per_tensor", None, True, "minmax", row.fmt,
                       tuple(s for s, _ in params), tuple(z for _, z in params), *out,
                       reason=_REASONS[row.name]))


def _qdq_any(ctx: Ctx, layer: Layer, row: Format, w_bits: int | None, a_bits: int) -> Plan:
    if layer.kind == "matmul":  # activation x activation: no weight bits
        return _act_matmul(ctx, layer, row, None, a_bits)
    assert w_bits is not None  # a weighted layer on a weighted row has weight bits
    return _qdq_weighted(ctx, layer, row, w_bits, a_bits)


def _gather_q(ctx: Ctx, layer: Layer, row: Format, w_bits: int, a_bits: None) -> Plan:
    qt = _quantize(ctx, layer, w_bits, "per_block")
    reason = f"GatherBlockQuantized {'INT4' if int_container(w_bits) == 4 else 'UINT8'}"
    quant = Quant(w_bits, None, "per_block", _block(ctx, layer), True,
                  clip_method(ctx.opts, w_bits), row.fmt, reason=reason)
    return Plan(quant, _weight_plan(layer, qt))


def _float(ctx: Ctx, layer: Layer, row: Format, w_bits: int | None, a_bits: int | None
           ) -> Plan:
    if w_bits is None and a_bits is None:
        return kept("float32 (assignment)")
    if layer.kind == "matmul" and ctx.g.const_weight(layer):
        return kept("float32: matmul with a constant operand that is not a 2-D weight")
    if layer.kind == "matmul":
        return kept("float32: activation x activation matmul (attention) kept float for "
                     "accuracy (QuantOptions.act_matmul)" if a_bits else
                     "float32: no constant weight for weight-only bits")
    return kept("float32: activation-only quantisation of a weighted layer has no "
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
Planner = Callable[..., Plan]
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
