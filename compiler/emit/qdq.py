"""W8A8 emission (format "qdq"): activations per tensor through QuantizeLinear, weights as
integer codes, in the forms onnxruntime turns into integer kernels.

- conv: `DQ(x) , DQ(w), DQ(int32 bias) -> Conv -> Q -> DQ`; onnxruntime fuses it into
  QLinearConv. Weights are UINT8 with zero point 128 (the narrow signed grid shifted): on x86
  CPUs without VNNI onnxruntime's u8s8 kernels use `vpmaddubsw`, whose int16 pair sums
  saturate (measured here: outputs off by up to 108 quantisation steps); u8u8 accumulates
  exactly everywhere, and ARM's dot-product kernels take either at the same speed.
- linear: `Q(x) -> com.microsoft::MatMulIntegerToFloat(x codes, W^T codes, scales, zero
  points, bias)`: int8 GEMM with a float output, so no second rounding. (onnxruntime 1.31
  does not fuse `DQ -> MatMul` without an output Q into it; it runs such a MatMul in fp32.)
- matmul (activation x activation, when quantised): MatMulIntegerToFloat on two Q'd inputs.
- anything else ("qdq" at 4 or 16 activation bits, conv_transpose): Q/DQ around the float op.

The fake-quant simulation (`compiler.fake_quant`) computes exactly these.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from compiler.emit.builder import Builder
from compiler.emit.float_ops import FLOAT_RULES, Rule
from compiler.emit.int4_dequant import dequantized_weight
from compiler.fake_quant import quant_names, row
from compiler.formats import ACT_INPUTS, WEIGHT_INPUT
from compiler.ir import Layer

U8_ZERO = 128  # zero point that maps the signed narrow grid onto uint8


def _u8_codes(b: Builder, layer: Layer, transpose: bool = False) -> tuple[str, str, str]:
    """UINT8 weight codes (zero point 128), their scale and zero point initializers."""
    names = quant_names(layer.name)
    codes = b.graph.weights[names.codes]
    codes = codes.T if transpose else codes
    scale = np.asarray(b.graph.weights[names.scale], np.float32)
    q = b.const(f"{layer.name}.w_codes", (codes.astype(np.int16) + U8_ZERO).astype(np.uint8))
    s = b.const(f"{layer.name}.w_scale", scale)
    z = b.const(f"{layer.name}.w_zero_point", np.full(scale.shape, U8_ZERO, np.uint8))
    return q, s, z


def _channel_attrs(layer: Layer) -> dict[str, Any]:  # ONNX node attributes
    return {"axis": 0} if layer.quant.granularity == "per_channel" else {}


def _qlinear_conv(b: Builder, layer: Layer, ins: list[str]) -> None:
    q = layer.quant
    x = b.fake_quantize(ins[0], q.in_scale[0], q.in_zero_point[0], 8)
    wq, ws, wz = _u8_codes(b, layer)
    w = b.node("DequantizeLinear", [wq, ws, wz], base=f"{layer.name}.w_dequantize",
               **_channel_attrs(layer))[0]
    conv_ins = [x, w]
    bias = quant_names(layer.name).bias
    if bias in b.graph.weights:
        step = np.float32(q.in_scale[0]) * np.asarray(b.graph.weights[quant_names(
            layer.name).scale], np.float32)
        bq = b.const(f"{layer.name}.bias_int32", b.graph.weights[bias])
        bs = b.const(f"{layer.name}.bias_scale", np.asarray(step, np.float32))
        conv_ins.append(b.node("DequantizeLinear", [bq, bs], base=f"{layer.name}.b_dequantize",
                               **_channel_attrs(layer))[0])
    a = layer.attrs
    (y,) = b.node("Conv", conv_ins, base=layer.name, strides=list(a["strides"]),
                  pads=list(a["pads"]), dilations=list(a["dilations"]), group=a["group"])
    assert q.out_scale is not None and q.out_zero_point is not None
    b.fake_quantize(y, q.out_scale, q.out_zero_point, 8, out=layer.outputs[0])


def _scalar_params(b: Builder, layer: Layer, i: int) -> tuple[str, str]:
    q = layer.quant
    s = b.const(f"{layer.name}.in{i}_scale", np.array(q.in_scale[i], np.float32))
    z = b.const(f"{layer.name}.in{i}_zero_point", np.array(q.in_zero_point[i], np.uint8))
    return s, z


def _integer_linear(b: Builder, layer: Layer, ins: list[str]) -> None:
    q = layer.quant
    xq = b.codes(ins[0], q.in_scale[0], q.in_zero_point[0], 8)
    wq, ws, wz = _u8_codes(b, layer, transpose=True)
    s, z = _scalar_params(b, layer, 0)
    bias = [ins[2]] if len(ins) > 2 and ins[2] else []
    b.node("MatMulIntegerToFloat", [xq, wq, s, ws, z, wz] + bias, list(layer.outputs),
           base=layer.name, domain="com.microsoft")


def _integer_matmul(b: Builder, layer: Layer, ins: list[str]) -> None:
    q = layer.quant
    aq = b.codes(ins[0], q.in_scale[0], q.in_zero_point[0], 8)
    bq = b.codes(ins[1], q.in_scale[1], q.in_zero_point[1], 8)
    (sa, za), (sb, zb) = _scalar_params(b, layer, 0), _scalar_params(b, layer, 1)
    b.node("MatMulIntegerToFloat", [aq, bq, sa, sb, za, zb], list(layer.outputs),
           base=layer.name, domain="com.microsoft")


def _requant_matmul(b: Builder, layer: Layer, ins: list[str]) -> None:
    """QLinearMatMul form: Q/DQ(x), DQ(uint8 W^T codes, per output column) -> MatMul -> Q -> DQ,
    then the float bias (onnxruntime fuses the middle into QLinearMatMul)."""
    q = layer.quant
    x = b.fake_quantize(ins[0], q.in_scale[0], q.in_zero_point[0], 8)
    if layer.kind == "matmul":
        w = b.fake_quantize(ins[1], q.in_scale[1], q.in_zero_point[1], 8)
    else:
        wq, ws, wz = _u8_codes(b, layer, transpose=True)
        axis: dict[str, Any] = {"axis": 1} if q.granularity == "per_channel" else {}
        w = b.node("DequantizeLinear", [wq, ws, wz], base=f"{layer.name}.w_dequantize",
                   **axis)[0]
    bias = ins[2] if len(ins) > 2 and ins[2] else ""
    (y,) = b.node("MatMul", [x, w], base=layer.name)
    out = layer.outputs[0]
    assert q.out_scale is not None and q.out_zero_point is not None
    if not bias:
        b.fake_quantize(y, q.out_scale, q.out_zero_point, 8, out=out)
        return
    y = b.fake_quantize(y, q.out_scale, q.out_zero_point, 8)
    b.node("Add", [y, bias], [out], base=f"{layer.name}.bias")


def _qdq_float(b: Builder, layer: Layer, ins: list[str]) -> None:
    """Q/DQ on the activations, DQ on the weight, the float op, Q/DQ on a requantised out."""
    q, ins = layer.quant, list(ins)
    for slot, s, z in zip(ACT_INPUTS[layer.kind], q.in_scale, q.in_zero_point):
        assert q.a_bits is not None  # a layer with activation scales has their bits
        ins[slot] = b.fake_quantize(ins[slot], s, z, q.a_bits)
    if q.w_bits is not None:
        ins[WEIGHT_INPUT[layer.kind]] = dequantized_weight(b, layer)
    if q.out_scale is None:
        FLOAT_RULES[layer.kind](b, layer, ins)
        return
    out = layer.outputs[0]
    pre = b.fresh(f"{out}.float")
    FLOAT_RULES[layer.kind](b, _renamed_output(layer, pre), ins)
    assert q.out_zero_point is not None and q.a_bits is not None  # requantised output
    b.fake_quantize(pre, q.out_scale, q.out_zero_point, q.a_bits, out=out)


def _renamed_output(layer: Layer, name: str) -> Layer:
    return replace(layer, outputs=(name,))


# The emitter of each "qdq" row of compiler.formats.FORMATS.
ROWS: dict[str, Rule] = {
    "qlinear_conv": _qlinear_conv,
    "int8_linear": _integer_linear,
    "int8_act_matmul": _integer_matmul,
    "qdq_float": _qdq_float,
    "qdq_float_transpose": _qdq_float,
    "qlinear_linear": _requant_matmul,
    "qlinear_act_matmul": _requant_matmul,
}


def qdq(b: Builder, layer: Layer, ins: list[str]) -> None:
    """Emit a "qdq" layer in the form its integer kernel needs (see the module docstring)."""
    ROWS[row(layer).name](b, layer, ins)


RULES: dict[tuple[str, str], Rule] = {
    (kind, "qdq"): qdq for kind in ("conv", "conv_transpose", "linear", "matmul")}
