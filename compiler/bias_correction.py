"""Empirical bias correction (Nagel et al., "Data-Free Quantization Through Weight
Equalization and Bias Correction", ICCV 2019, sec. 4.2, the empirical variant): a quantised
layer's output is shifted on average by E[y_q - y] per output channel over the calibration
data; subtracting that shift from the layer's float bias removes it.

Which layers: linear and conv layers whose format keeps a float bias (weight-only
MatMulNBits and DequantizeLinear -> float conv; W8A8 formats fold the bias into int32) at
`max_bits` weight bits or fewer, where rounding error is coarse enough for its mean to
matter. The shift is measured with the float model's own inputs to each layer (as
`compiler.layer_error` measures errors), with the layer computed as the emitted model computes
it (`compiler.fake_quant`), so it includes the activation rounding of MatMulNBits' int8 path.
A weight-only conv (DequantizeLinear -> float conv) is linear in its weight, so its shift is
(W_q - W) times the mean window of its input, with no second conv (W4 YOLOX at 416x416 ran 83
convs twice per sample: 33 of the 40 CPU-s of `edgesim quantize --bits 4`).
A layer without a bias gets one; a bias another layer also reads is copied, not changed.
Layers that emit one weight (the steps of an unrolled LSTM read one recurrent matrix, written
once) share one correction, the mean of their shifts, written once: ddddocr's CRNN at W4
wrote 40 per-step fp32 biases (327,680 bytes) for its two recurrent weights.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import replace
from types import MappingProxyType

import numpy as np

from compiler import fake_quant
from compiler.executor import run
from compiler.ir import Graph, Layer, Spec, readonly
from compiler.ops.conv import conv_out_size, shift_crop, window_view

FLOAT_BIAS_ROWS = frozenset({"nbits_fp32", "nbits_int8", "nbits_float_zp", "int_dq",
                             "int_dq_block"})
OUTPUT_AXIS = {"linear": -1, "conv": 1}  # the channel axis of each corrected kind's output
LINEAR_IN_WEIGHT = frozenset({"int_dq", "int_dq_block"})  # float activations: y(W) is linear


def eligible(layer: Layer, max_bits: int) -> bool:
    """Whether bias correction applies to `layer` (see the module docstring)."""
    q = layer.quant
    return (layer.kind in OUTPUT_AXIS and q.w_bits is not None and q.w_bits <= max_bits
            and q.fmt != "float" and fake_quant.row(layer).name in FLOAT_BIAS_ROWS)


def _channel_sums(y: np.ndarray, axis: int) -> np.ndarray:
    moved = np.moveaxis(np.asarray(y, np.float64), axis, -1)
    sums: np.ndarray = moved.reshape(-1, moved.shape[-1]).sum(axis=0)
    return sums


def _conv_shift_sums(layer: Layer, env: Mapping[str, np.ndarray]) -> np.ndarray:
    """Sum over samples and output positions of conv(x, W_q - W) per output channel: the
    weight change times the sum of the input's windows (as the conv reads them: padded,
    strided, dilated, per group), in float64."""
    a = layer.attrs
    x, w = env[layer.inputs[0]], env[layer.inputs[1]]
    kernel, n = w.shape[2:], w.ndim - 2
    spatial, pads = x.shape[2:], a["pads"]
    out = tuple(conv_out_size(s, k, st, d, pb + pe) for s, pb, pe, k, d, st in zip(
        spatial, pads[:n], pads[n:], kernel, a["dilations"], a["strides"]))
    xp = shift_crop(x.sum(axis=0, dtype=np.float64), [-p for p in pads[:n]],
                    [s + pb + pe for s, pb, pe in zip(spatial, pads[:n], pads[n:])])
    view = window_view(xp, kernel, a["strides"], a["dilations"], out)  # [C, *out, *k]
    windows = view.sum(axis=tuple(range(1, 1 + n)))  # [C, *k]
    g = a["group"]
    dw = np.asarray(fake_quant.dequant_weight(layer, env), np.float64) - w
    return np.einsum("gok,gk->go", dw.reshape(g, w.shape[0] // g, -1),
                     windows.reshape(g, -1)).reshape(-1)


def output_shifts(qg: Graph, batches: Iterable[Mapping[str, np.ndarray]],
                  layers: Iterable[Layer]) -> dict[str, np.ndarray]:
    """E[y_q - y] per output channel of each of `layers` over `batches` (float64)."""
    layers = tuple(layers)
    keep = {t for layer in layers for t in (*layer.inputs, *layer.outputs) if t}
    sums: dict[str, np.ndarray] = {layer.name: np.zeros(1) for layer in layers}
    rows = dict.fromkeys(sums, 0)
    for feeds in batches:
        env = {**qg.weights, **run(qg, feeds, dtype="float32", keep=keep)}
        for layer in layers:
            axis = OUTPUT_AXIS[layer.kind]
            ref = env[layer.outputs[0]]
            if layer.kind == "conv" and fake_quant.row(layer).name in LINEAR_IN_WEIGHT:
                shift = _conv_shift_sums(layer, env)
            else:
                shift = _channel_sums(fake_quant.forward(layer, env)[0] - ref, axis)
            sums[layer.name] = sums[layer.name] + shift
            rows[layer.name] += ref.size // ref.shape[axis]
    return {name: np.asarray(s) / max(rows[name], 1) for name, s in sums.items()
            if rows[name]}


def _bias(layer: Layer) -> str | None:
    return layer.inputs[2] if len(layer.inputs) > 2 and layer.inputs[2] else None


def _emitted_weight(qg: Graph, layer: Layer) -> tuple[object, ...]:
    """What identifies the weight `layer` emits: its float weight, bias, format and quantised
    data (the emitter writes equal contents once, `Builder.const`)."""
    names = fake_quant.quant_names(layer.name)
    data = tuple(hashlib.sha256(np.ascontiguousarray(qg.weights[n]).tobytes()).hexdigest()
                 for n in (names.codes, names.scale, names.zero_point) if n in qg.weights)
    return layer.inputs[1], _bias(layer), fake_quant.row(layer).name, data


def _shared_bias(qg: Graph, group: list[Layer], bias: np.ndarray, weights: dict[str, np.ndarray],
                 users: Mapping[str, list[Layer]]) -> tuple[str, dict[str, Spec]]:
    """The tensor `group` reads `bias` from: its old bias in place if only the group reads
    it, else one new tensor."""
    old = _bias(group[0])
    readers = {layer.name for layer in users.get(old, ())} if old else set()
    if old is not None and readers == {layer.name for layer in group}:
        weights[old] = readonly(bias.astype(qg.weights[old].dtype))
        return old, {}
    name = f"{group[0].name}.corrected_bias"
    weights[name] = readonly(bias.astype(np.float32))
    return name, {name: Spec(bias.shape, "float32")}


def correct_biases(qg: Graph, shifts: Mapping[str, np.ndarray]) -> Graph:
    """`qg` with each named layer's bias lowered by its measured shift; layers emitting one
    weight share one bias, lowered by the mean of their shifts."""
    groups: dict[tuple[object, ...], list[Layer]] = {}
    for layer in qg.layers:
        if layer.name in shifts:
            groups.setdefault(_emitted_weight(qg, layer), []).append(layer)
    weights, types, users = dict(qg.weights), dict(qg.types), qg.consumers()
    bias_of: dict[str, str] = {}  # layer -> the bias tensor it reads
    for group in groups.values():
        shift = np.mean([shifts[layer.name] for layer in group], axis=0)
        old = _bias(group[0])
        base = np.zeros(shift.shape) if old is None else qg.weights[old]
        name, new = _shared_bias(qg, group, np.asarray(base, np.float64) - shift, weights,
                                users)
        types.update(new)
        bias_of.update(dict.fromkeys((layer.name for layer in group), name))
    layers = tuple(layer if layer.name not in bias_of else replace(
        layer, inputs=(*layer.inputs[:2], bias_of[layer.name], *layer.inputs[3:]))
        for layer in qg.layers)
    return replace(qg, layers=layers, weights=MappingProxyType(weights),
                   types=MappingProxyType(types))


def bias_correct(qg: Graph, batches: Iterable[Mapping[str, np.ndarray]],
                 max_bits: int = 4) -> Graph:
    """`qg` with the biases of its eligible layers corrected over `batches`.

    Args:
        qg: a quantised graph (`compiler.passes.quantize.quantize`).
        batches: calibration feed dicts.
        max_bits: correct layers at this many weight bits or fewer.

    Returns:
        The corrected graph (`qg` itself if no layer is eligible).
    """
    layers = [layer for layer in qg.layers if eligible(layer, max_bits)]
    if not layers:
        return qg
    return correct_biases(qg, output_shifts(qg, batches, layers))
