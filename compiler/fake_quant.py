"""Fake-quantisation: what an emitted quantised model computes, simulated in numpy.

`compiler.executor.run(..., fake_quant=True)` calls `forward` for every layer whose `Quant`
format is not "float". This simulation is the oracle the emitted ONNX model is checked
against, so each format mirrors what onnxruntime really computes (see `compiler.emit`):

- weights are `DequantizeLinear(codes)` exactly (`compiler.quantizers.dequantize`);
- activations are `DequantizeLinear(QuantizeLinear(x))` bit for bit
  (`compiler.activation_quant.fake_quant_activation`);
- "qdq" conv with a requantised int8 output runs as onnxruntime's fused QLinearConv: exact
  integer accumulation of the centred codes plus the int32 bias, then
  `q = clip(rint(float32(acc) * float32(sx * sw / sy)) + zy)`;
- "qdq" linear and matmul run as com.microsoft::MatMulIntegerToFloat:
  `float32(acc) * float32(sx * sw) + bias`;
- other formats compute in float32 on the dequantised tensors (MatMulNBits at
  accuracy_level 0, DequantizeLinear -> Conv, GatherBlockQuantized).

Integer accumulations run in float64, which is exact below 2^53.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from compiler.activation_quant import fake_quant_activation
from compiler.formats import ACT_INPUTS, CHANNEL_AXIS, WEIGHT_INPUT, Format, of_layer
from compiler.ir import Layer
from compiler.ops import OPS
from compiler.quantizers import Granularity, QuantizedTensor, QuantParams, dequantize, storage_range

Array = np.ndarray


@dataclass(frozen=True)
class QuantNames:
    """Names, in `Graph.weights`, of one layer's quantised weight and requantised bias."""

    codes: str
    scale: str
    zero_point: str
    bias: str


def quant_names(layer_name: str) -> QuantNames:
    """The `Graph.weights` names the quantize pass stores layer `layer_name`'s data under."""
    return QuantNames(f"{layer_name}::w_codes", f"{layer_name}::w_scale",
                      f"{layer_name}::w_zero_point", f"{layer_name}::bias_int32")


def weight_params(layer: Layer, env: Mapping[str, Array]) -> QuantParams:
    """The `QuantParams` of a layer's quantised weight, read from `env`."""
    q, names = layer.quant, quant_names(layer.name)
    axis = CHANNEL_AXIS[layer.kind]
    dq_axis = {"per_tensor": None, "per_channel": axis, "per_block": 1 - axis}[q.granularity]
    assert q.w_bits is not None
    return QuantParams(scale=env[names.scale], zero_point=env[names.zero_point],
                       bits=q.w_bits, symmetric=q.symmetric,
                       granularity=cast(Granularity, q.granularity),  # Quant keeps a str
                       axis=dq_axis, block_size=q.block)


def dequant_weight(layer: Layer, env: Mapping[str, Array]) -> Array:
    """The float32 weight the emitted model computes with."""
    codes = env[quant_names(layer.name).codes]
    if layer.quant.fmt == "fp16":
        return codes.astype(np.float32)
    return dequantize(QuantizedTensor(codes, weight_params(layer, env)))


def _inputs(layer: Layer, env: Mapping[str, Array]) -> list[Array | None]:
    return [env[t] if t else None for t in layer.inputs]


def _with_weight(layer: Layer, env: Mapping[str, Array]) -> list[Array | None]:
    """The layer's inputs with its weight replaced by the dequantised one."""
    xs = _inputs(layer, env)
    if layer.quant.w_bits is not None and layer.kind in WEIGHT_INPUT:
        xs[WEIGHT_INPUT[layer.kind]] = dequant_weight(layer, env)
    return xs


def _act_slots(layer: Layer) -> tuple[int, ...]:
    """Indices of the activation inputs the layer's `in_scale` entries belong to."""
    return ACT_INPUTS[layer.kind][:len(layer.quant.in_scale)]


def _codes(x: Array, scale: float, zero_point: int, bits: int) -> Array:
    """Centred activation codes `QuantizeLinear(x) - zero_point`, as float64 integers."""
    qmin, qmax = storage_range(bits, False)
    ratio = np.asarray(x, np.float32) / np.float32(scale)
    return np.clip(np.rint(ratio) + zero_point, qmin, qmax).astype(np.float64) - zero_point


def _weight_codes(layer: Layer, env: Mapping[str, Array]) -> Array:
    """Centred weight codes (per-channel or per-tensor zero points), as float64 integers."""
    names = quant_names(layer.name)
    codes, zp = env[names.codes].astype(np.float64), env[names.zero_point].astype(np.float64)
    if zp.ndim == 1:
        zp = zp.reshape([-1 if a == CHANNEL_AXIS[layer.kind] else 1 for a in range(codes.ndim)])
    return codes - zp


def _weight_scale(layer: Layer, env: Mapping[str, Array]) -> Array:
    return np.asarray(env[quant_names(layer.name).scale], np.float32)


def _conv_requant(layer: Layer, env: Mapping[str, Array]) -> tuple[Array]:
    """onnxruntime's QLinearConv: integer conv of centred codes + int32 bias, requantised."""
    q, xs = layer.quant, _inputs(layer, env)
    assert q.a_bits is not None and xs[0] is not None
    xc = _codes(xs[0], q.in_scale[0], q.in_zero_point[0], q.a_bits)
    acc = OPS["conv"].forward(xc, _weight_codes(layer, env), None, **layer.attrs)[0]
    bias = quant_names(layer.name).bias
    if bias in env:
        acc = acc + env[bias].astype(np.float64).reshape((1, -1) + (1,) * (acc.ndim - 2))
    mult = (np.float32(q.in_scale[0]) * _weight_scale(layer, env)) / np.float32(q.out_scale)
    mult = np.asarray(mult, np.float32).reshape((1, -1) + (1,) * (acc.ndim - 2))
    qmin, qmax = storage_range(q.a_bits, False)
    codes = np.clip(np.rint(acc.astype(np.float32) * mult) + q.out_zero_point, qmin, qmax)
    y = (codes - q.out_zero_point).astype(np.float32) * np.float32(q.out_scale)
    return (y.astype(xs[0].dtype, copy=False),)


def _linear_integer(layer: Layer, env: Mapping[str, Array]) -> tuple[Array]:
    """com.microsoft::MatMulIntegerToFloat: float32(acc) * (sx * sw) + bias."""
    q, xs = layer.quant, _inputs(layer, env)
    assert q.a_bits is not None and xs[0] is not None
    xc = _codes(xs[0], q.in_scale[0], q.in_zero_point[0], q.a_bits)
    acc = xc @ _weight_codes(layer, env).T
    y = acc.astype(np.float32) * (np.float32(q.in_scale[0]) * _weight_scale(layer, env))
    if len(xs) > 2 and xs[2] is not None:
        y = y + xs[2].astype(np.float32)
    return (y.astype(xs[0].dtype, copy=False),)


def _matmul_integer(layer: Layer, env: Mapping[str, Array]) -> tuple[Array]:
    """MatMulIntegerToFloat on two activations: float32(acc) * (sa * sb)."""
    q, (a, b) = layer.quant, _inputs(layer, env)
    assert a is not None and q.a_bits is not None
    ac = _codes(a, q.in_scale[0], q.in_zero_point[0], q.a_bits)
    assert b is not None
    bc = _codes(b, q.in_scale[1], q.in_zero_point[1], q.a_bits)
    step = np.float32(q.in_scale[0]) * np.float32(q.in_scale[1])
    y = np.matmul(ac, bc).astype(np.float32) * step
    return (y.astype(a.dtype, copy=False),)


def _requant_matmul(layer: Layer, env: Mapping[str, Array]) -> tuple[Array]:
    """QLinearMatMul: integer product of the centred codes, requantised to the output grid
    (`q = clip(rint(float32(acc) * float32(sx * sw / sy)) + zy)`), then the float bias."""
    q, xs = layer.quant, _inputs(layer, env)
    assert q.a_bits is not None and xs[0] is not None
    xc = _codes(xs[0], q.in_scale[0], q.in_zero_point[0], q.a_bits)
    assert xs[1] is not None
    step: np.ndarray | np.floating[Any]
    if layer.kind == "matmul":
        acc = np.matmul(xc, _codes(xs[1], q.in_scale[1], q.in_zero_point[1], q.a_bits))
        step = np.float32(q.in_scale[0]) * np.float32(q.in_scale[1])
    else:
        acc = xc @ _weight_codes(layer, env).T
        step = np.float32(q.in_scale[0]) * _weight_scale(layer, env)
    mult = (np.asarray(step, np.float32) / np.float32(q.out_scale)).astype(np.float32)
    qmin, qmax = storage_range(q.a_bits, False)
    codes = np.clip(np.rint(acc.astype(np.float32) * mult) + q.out_zero_point, qmin, qmax)
    y = (codes - q.out_zero_point).astype(np.float32) * np.float32(q.out_scale)
    if layer.kind == "linear" and len(xs) > 2 and xs[2] is not None:
        y = y + xs[2].astype(np.float32)
    return (y.astype(xs[0].dtype, copy=False),)


def _float_qdq(layer: Layer, env: Mapping[str, Array]) -> tuple[Array, ...]:
    """Q/DQ on the activation inputs, the float op on dequantised tensors, and Q/DQ on the
    output if it is requantised (no fused integer kernel takes these)."""
    q, xs = layer.quant, _with_weight(layer, env)
    assert xs[0] is not None
    dtype = xs[0].dtype
    for slot, s, z in zip(_act_slots(layer), q.in_scale, q.in_zero_point):
        x_slot = xs[slot]
        assert q.a_bits is not None and x_slot is not None  # an activation input and its bits
        xs[slot] = fake_quant_activation(x_slot, s, z, q.a_bits, False)
    xs = [x if x is None else x.astype(np.float32) for x in xs]
    ys = OPS[layer.kind].forward(*xs, **layer.attrs)
    if q.out_scale is not None:
        assert q.out_zero_point is not None and q.a_bits is not None  # requantised output
        ys = tuple(fake_quant_activation(y, q.out_scale, q.out_zero_point, q.a_bits, False)
                   for y in ys)
    return tuple(y.astype(dtype, copy=False) for y in ys)


def row(layer: Layer) -> Format:
    """The format-policy row of an annotated layer (a layer reading a weight slot holds its
    weight there; act x act matmuls do not)."""
    return of_layer(layer, layer.kind != "matmul")


def _dynamic_blocks(x: Array, block: int) -> Array:
    """MLAS CompInt8's A: symmetric int8 per block of `block` along the last axis,
    scale = max|a| / 127, round to nearest even (onnxruntime's QuantizeARow_CompInt8)."""
    k = x.shape[-1]
    pad = -k % block
    xp = np.pad(np.asarray(x, np.float32), [(0, 0)] * (x.ndim - 1) + [(0, pad)])
    blocks = xp.reshape(*x.shape[:-1], -1, block)
    scale = np.abs(blocks).max(axis=-1, keepdims=True) / np.float32(127)
    inv = np.where(scale > 0, np.float32(1) / np.where(scale > 0, scale, 1), 0).astype(np.float32)
    q = np.clip(np.rint(blocks * inv), -127, 127) * scale
    return q.reshape(*x.shape[:-1], -1)[..., :k].astype(np.float32)


def _nbits_int8(layer: Layer, env: Mapping[str, Array]) -> tuple[Array, ...]:
    """MatMulNBits at accuracy_level 4: A quantised per block to int8, then the product."""
    xs = _with_weight(layer, env)
    assert xs[0] is not None
    dtype = xs[0].dtype
    assert layer.quant.block is not None
    xs[0] = _dynamic_blocks(xs[0], layer.quant.block)
    return tuple(y.astype(dtype, copy=False) for y in OPS[layer.kind].forward(*xs, **layer.attrs))


def _weight_only(layer: Layer, env: Mapping[str, Array]) -> tuple[Array, ...]:
    xs = _with_weight(layer, env)
    dtype = next(x.dtype for x in xs if x is not None and x.dtype.kind == "f")
    xs = [x if x is None or x.dtype.kind != "f" else x.astype(np.float32) for x in xs]
    return tuple(y.astype(dtype, copy=False) for y in OPS[layer.kind].forward(*xs, **layer.attrs))


def dynamic_grid(x: Array) -> tuple[np.float32, float]:
    """DynamicQuantizeLinear's uint8 grid of `x`: scale = (max(0, max x) - min(0, min x)) /
    255, zero point = saturate(round(-min / scale)) (round half to even)."""
    lo, hi = min(0.0, float(np.min(x))), max(0.0, float(np.max(x)))
    scale = np.float32((np.float32(hi) - np.float32(lo)) / np.float32(255))
    zp = float(np.clip(np.rint(-np.float32(lo) / scale), 0, 255)) if scale > 0 else 0.0
    return scale, zp


def _dynamic_int8(layer: Layer, env: Mapping[str, Array]) -> tuple[Array]:
    """DynamicQuantizeLinear -> MatMulInteger / ConvInteger -> Cast -> Mul (+ bias):
    float32(acc) * (sx * sw) + bias."""
    xs = _inputs(layer, env)
    assert xs[0] is not None
    scale, zp = dynamic_grid(xs[0])
    ratio = np.asarray(xs[0], np.float32) / scale if scale > 0 else np.zeros_like(xs[0])
    xc = np.clip(np.rint(ratio) + zp, 0, 255).astype(np.float64) - zp
    wc = _weight_codes(layer, env)
    if layer.kind == "conv":
        acc = OPS["conv"].forward(xc, wc, None, **layer.attrs)[0]
        step = (scale * _weight_scale(layer, env)).astype(np.float32)
        y = acc.astype(np.float32) * step.reshape((1, -1) + (1,) * (acc.ndim - 2))
        if len(xs) > 2 and xs[2] is not None:
            y = y + xs[2].astype(np.float32).reshape((1, -1) + (1,) * (acc.ndim - 2))
    else:
        y = (xc @ wc.T).astype(np.float32) * (scale * _weight_scale(layer, env))
        if len(xs) > 2 and xs[2] is not None:
            y = y + xs[2].astype(np.float32)
    return (y.astype(xs[0].dtype, copy=False),)


# The fake-quant rule of every row of compiler.formats.FORMATS except "float" (the executor
# runs float layers itself).
RULES: Mapping[str, Callable[[Layer, Mapping[str, Array]], tuple[Array, ...]]] = {
    "fp16": _weight_only, "qlinear_conv": _conv_requant, "int8_linear": _linear_integer,
    "int8_act_matmul": _matmul_integer, "qdq_float": _float_qdq,
    "qdq_float_transpose": _float_qdq, "nbits_fp32": _weight_only, "nbits_int8": _nbits_int8,
    "nbits_float_zp": _weight_only,
    "int_dq": _weight_only, "int_dq_block": _weight_only, "gbq": _weight_only,
    "dynamic_int8_linear": _dynamic_int8, "dynamic_int8_conv": _dynamic_int8,
    "qlinear_linear": _requant_matmul, "qlinear_act_matmul": _requant_matmul,
}


def forward(layer: Layer, env: Mapping[str, Array]) -> tuple[Array, ...]:
    """Outputs of a quantised layer as the emitted model computes them.

    Args:
        layer: a layer whose `quant.fmt` is not "float".
        env: the executor's tensors so far (graph weights included).
    """
    return RULES[row(layer).name](layer, env)
