"""Weight-only emission through `DequantizeLinear` on integer initializers (opset 21).

- ("conv", "int_dq"), ("conv_transpose", "int_dq"): the codes as an INT4 (bits <= 4) or INT8
  initializer, dequantised per tensor or per output channel (as `Cast * scale`, which
  onnxruntime folds at load) or per block (blocked `DequantizeLinear`), then the float op.
  onnxruntime runs the Conv in fp32: INT4 saves storage, not compute.
- ("gather", "gbq"): embedding tables as com.microsoft::GatherBlockQuantized (INT4 data, or
  UINT8 data with the default zero point 128), which dequantises only the gathered rows.
- (kind, "fp16"): float16 weights cast to float32.

Codes on a 3-bit grid travel in INT4, 5..7-bit grids in INT8 (the next container).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
from onnx import TensorProto

from compiler.emit.builder import Builder
from compiler.emit.float_ops import FLOAT_RULES, Rule
from compiler.fake_quant import quant_names, weight_params
from compiler.formats import WEIGHT_INPUT
from compiler.formats import int_container as container
from compiler.ir import Layer


def codes_initializer(b: Builder, layer: Layer, codes: np.ndarray, base: str) -> str:
    """Signed codes in their container: INT4 (packed two per byte) or INT8."""
    assert layer.quant.w_bits is not None
    if container(layer.quant.w_bits) == 4:  # onnx packs ml_dtypes.int4 itself, low nibble first
        return b.const(base, np.asarray(codes).astype(ml_dtypes.int4))
    return b.const(base, np.asarray(codes, np.int8))


def dequantized_weight(b: Builder, layer: Layer) -> str:
    """The layer's quantised weight in float32, as `DequantizeLinear` computes it
    (symmetric codes: `float32(q) * scale`).

    Per tensor and per channel it is written as `Cast(codes) * scale`, the same arithmetic,
    because onnxruntime constant-folds that at load (the Conv then runs at fp32 speed with
    4-bit storage on disk) while it keeps a `DequantizeLinear` on an initializer and runs it
    on every inference. Per block it is a blocked `DequantizeLinear` (opset 21).
    """
    env, names, q = b.graph.weights, quant_names(layer.name), layer.quant
    params = weight_params(layer, env)
    codes = codes_initializer(b, layer, env[names.codes], f"{layer.name}.w_codes")
    scale = np.asarray(params.scale, np.float32)
    if q.granularity == "per_block":
        s = b.const(f"{layer.name}.w_scale", scale)
        return b.node("DequantizeLinear", [codes, s], base=f"{layer.name}.w_dequantize",
                      axis=params.axis, block_size=q.block)[0]
    if params.axis is not None:  # broadcast the per-channel scale along its axis
        shape = [1] * env[names.codes].ndim
        shape[params.axis] = -1
        scale = scale.reshape(shape)
    real = b.node("Cast", [codes], base=f"{layer.name}.w_cast", to=TensorProto.FLOAT)[0]
    return b.node("Mul", [real, b.const(f"{layer.name}.w_scale", scale)],
                  base=f"{layer.name}.w_dequantize")[0]


def _replace_weight(b: Builder, layer: Layer, ins: list[str], weight: str) -> None:
    ins = list(ins)
    ins[WEIGHT_INPUT[layer.kind]] = weight
    FLOAT_RULES[layer.kind](b, layer, ins)


def int_dq(b: Builder, layer: Layer, ins: list[str]) -> None:
    """Conv / ConvTranspose on a dequantised INT4/INT8 weight."""
    _replace_weight(b, layer, ins, dequantized_weight(b, layer))


def fp16(b: Builder, layer: Layer, ins: list[str]) -> None:
    """A float16 weight, cast to float32 in front of the float op."""
    half = b.const(f"{layer.name}.w_fp16", b.graph.weights[quant_names(layer.name).codes])
    cast = b.node("Cast", [half], base=f"{layer.name}.w_cast", to=TensorProto.FLOAT)[0]
    _replace_weight(b, layer, ins, cast)


def gather_block_quantized(b: Builder, layer: Layer, ins: list[str]) -> None:
    """com.microsoft::GatherBlockQuantized over rows of a table quantised per block."""
    env, names, q = b.graph.weights, quant_names(layer.name), layer.quant
    codes = env[names.codes]
    assert q.w_bits is not None
    if container(q.w_bits) == 4:
        data, bits = codes_initializer(b, layer, codes, f"{layer.name}.table"), 4
    else:  # UINT8 data: signed codes shifted onto the default zero point 128
        data = b.const(f"{layer.name}.table", (codes.astype(np.int16) + 128).astype(np.uint8))
        bits = 8
    scale = b.const(f"{layer.name}.table_scale", np.asarray(env[names.scale], np.float32))
    b.node("GatherBlockQuantized", [data, ins[1], scale], list(layer.outputs), base=layer.name,
           domain="com.microsoft", bits=bits, block_size=q.block, gather_axis=0,
           quantize_axis=1)


RULES: dict[tuple[str, str], Rule] = {
    ("conv", "int_dq"): int_dq,
    ("conv_transpose", "int_dq"): int_dq,
    ("gather", "gbq"): gather_block_quantized,
    **{(kind, "fp16"): fp16 for kind in ("conv", "conv_transpose", "linear", "gather")},
}
