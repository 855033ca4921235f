"""Dynamic W8A8 (format "dynamic"): activations quantised at run time, as onnxruntime's
quantize_dynamic writes them.

- linear: `DynamicQuantizeLinear(x) -> MatMulInteger(x codes, W^T codes) -> Cast -> Mul(sx *
  sw) (-> Add bias)`; onnxruntime fuses it into com.microsoft::DynamicQuantizeMatMul;
- conv: the same with `ConvInteger`, scales per output channel applied after the Cast.

Weights are UINT8 with zero point 128 (the signed narrow grid shifted): onnxruntime's CPU
ConvInteger takes uint8 x uint8 only, and u8s8 GEMMs on x86 without VNNI saturate their int16
pair sums (see `compiler.emit.qdq`); u8u8 accumulates exactly.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from compiler.emit.builder import Builder
from compiler.emit.float_ops import Rule
from compiler.fake_quant import quant_names
from compiler.ir import Layer

U8_ZERO = 128


def _quantized_input(b: Builder, layer: Layer, x: str) -> tuple[str, str, str]:
    y, scale, zero_point = b.node("DynamicQuantizeLinear", [x], 3, base=f"{layer.name}.x_dynamic")
    return y, scale, zero_point


def _scaled(b: Builder, layer: Layer, acc: str, xs: str, w_scale: np.ndarray, bias: str,
            shape: tuple[int, ...]) -> None:
    """Cast(acc) * (sx * sw) (+ bias), written to the layer's output."""
    real = b.node("Cast", [acc], base=f"{layer.name}.acc_cast", to=TensorProto.FLOAT)[0]
    sw = b.const(f"{layer.name}.w_scale", np.asarray(w_scale, np.float32).reshape(shape))
    step = b.node("Mul", [xs, sw], base=f"{layer.name}.scale")[0]
    out = list(layer.outputs) if not bias else 1
    (y,) = b.node("Mul", [real, step], out, base=f"{layer.name}.rescale")
    if bias:
        if len(shape) > 1:
            bias = b.node("Reshape", [bias, b.const(f"{layer.name}.bias_shape", np.array(
                shape, np.int64))], base=f"{layer.name}.bias")[0]
        b.node("Add", [y, bias], list(layer.outputs), base=f"{layer.name}.bias_add")


def dynamic_linear(b: Builder, layer: Layer, ins: list[str]) -> None:
    codes = b.graph.weights[quant_names(layer.name).codes]            # [N, K] int8
    scale = b.graph.weights[quant_names(layer.name).scale]
    xq, xs, xz = _quantized_input(b, layer, ins[0])
    wq = b.const(f"{layer.name}.w_codes",
                 np.ascontiguousarray((codes.astype(np.int16) + U8_ZERO).T).astype(np.uint8))
    wz = b.const(f"{layer.name}.w_zero_point", np.array(U8_ZERO, np.uint8))
    (acc,) = b.node("MatMulInteger", [xq, wq, xz, wz], base=layer.name)
    bias = ins[2] if len(ins) > 2 and ins[2] else ""
    _scaled(b, layer, acc, xs, np.asarray(scale).reshape(-1), bias, (-1,))


def dynamic_conv(b: Builder, layer: Layer, ins: list[str]) -> None:
    codes = b.graph.weights[quant_names(layer.name).codes]            # [Cout, Cin/g, kh, kw]
    scale = np.asarray(b.graph.weights[quant_names(layer.name).scale]).reshape(-1)
    xq, xs, xz = _quantized_input(b, layer, ins[0])
    wq = b.const(f"{layer.name}.w_codes", (codes.astype(np.int16) + U8_ZERO).astype(np.uint8))
    wz = b.const(f"{layer.name}.w_zero_point", np.array(U8_ZERO, np.uint8))
    a = layer.attrs
    (acc,) = b.node("ConvInteger", [xq, wq, xz, wz], base=layer.name,
                    strides=list(a["strides"]), pads=list(a["pads"]),
                    dilations=list(a["dilations"]), group=a["group"])
    bias = ins[2] if len(ins) > 2 and ins[2] else ""
    shape = (1, -1) + (1,) * (len(b.graph.types[layer.outputs[0]].shape) - 2)
    _scaled(b, layer, acc, xs, scale, bias, shape)


RULES: dict[tuple[str, str], Rule] = {("linear", "dynamic"): dynamic_linear,
                                      ("conv", "dynamic"): dynamic_conv}
