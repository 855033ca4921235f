"""Every format row's predicted weight bytes (`compiler.format_bytes.emitted_bytes`) equal, exactly,
the bytes of the initializers the emitter writes for the layer's weight and bias (codes,
scales, zero points, bias), read back from the emitted ONNX; and the CPU cost model reports
those bytes."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest

from compiler import format_bytes, formats
from compiler.emit import emit
from compiler.fake_quant import row
from compiler.format_bytes import WeightGeometry, emitted_bytes
from compiler.formats import WEIGHT_INPUT
from compiler.ir import Graph, Layer
from compiler.passes.calibrate import calibrate
from compiler.passes.quantize import QuantOptions, quantize
from hwmodels import cpu
from tests.compiler.test_emit import CONV, f32, one_layer, w_, x_
from tests.compiler.test_formats import CASES, LAYERS, TARGETS

# Layers beyond test_formats' own: a grouped conv without bias, a linear without bias.
EXTRA = {
    "conv": ("conv", dict(CONV, group=2), [x_(1, 40, 7, 6), w_("w", f32(8, 20, 3, 1))]),
    "linear": ("linear", {}, [x_(3, 96), w_("w", f32(24, 96))]),
}
# Names of the initializers a layer's emission writes for its weight and bias; the others
# it writes (`layer.in0_scale`, `layer.Conv.zero_point`, `x.scale`) are activation grids.
WEIGHT_SIDE = re.compile(r"^layer\.(w_|B$|scales$|zero_points$|bias|table)")


def _cases() -> list[tuple[str, str, int]]:
    out = []
    for name, (kind, (w, _), _) in CASES.items():
        widths = [b for b in formats.BY_NAME[name].w_bits if b is not None and b < 16] or [w]
        for bits in sorted({w, min(widths), max(widths)}):
            out += [(name, kind, bits), *[(name, "extra", bits) for k in EXTRA if k == kind]]
    return out


def _quantized(name: str, layer_key: str, w: int) -> Graph:
    kind, (_, a), opts = CASES[name]
    spec = EXTRA[kind] if layer_key == "extra" else LAYERS[kind]
    g, feeds = one_layer(*spec)
    calib = calibrate(g, [feeds]) if a < 32 else None
    return quantize(g, np.array([(w, a)]), calib, QuantOptions(clip="minmax", **opts))


def _geometry(g: Graph, layer: Layer) -> tuple[int, WeightGeometry]:
    """(w_bits, geometry) of the layer, read off its IR weight (an independent route from the
    cost model's layer table)."""
    slot = WEIGHT_INPUT.get(layer.kind)
    if slot is None:
        return 32, WeightGeometry(0, 0, 1)
    shape = g.weights[layer.inputs[slot]].shape
    bias = g.weights[layer.inputs[2]].size if len(layer.inputs) > 2 and layer.inputs[2] else 0
    channels = {"conv": shape[0], "linear": shape[0], "gather": shape[0],
                "conv_transpose": shape[1] * layer.attrs.get("group", 1)}[layer.kind]
    q = layer.quant
    return (q.w_bits or 32, WeightGeometry(
        int(np.prod(shape)), channels, shape[1], bias, len(g.types[layer.outputs[0]].shape),
        q.granularity, q.block or formats.NBITS_BLOCK))


def _written(model: onnx.ModelProto, g: Graph, layer: Layer) -> int:
    ir = {t for t in layer.inputs if t in g.weights}
    inits = [i for i in model.graph.initializer if i.name in ir or WEIGHT_SIDE.match(i.name)]
    assert all(i.raw_data for i in inits)  # sizes as stored in the file
    return sum(len(i.raw_data) for i in inits)


@pytest.mark.parametrize(("name", "layer_key", "w"), _cases())
def test_predicted_bytes_equal_the_emitted_initializers(name: str, layer_key: str,
                                                        w: int) -> None:
    g = _quantized(name, layer_key, w)
    (layer,) = g.layers
    planned = row(layer).name  # the row at these bits (w2a8 linear is MatMulNBits, not W8A8)
    assert planned == name or w != CASES[name][1][0]
    bits, geometry = _geometry(g, layer)
    assert emitted_bytes(planned, bits, geometry) == _written(emit(g), g, layer)


def test_every_row_has_a_byte_count() -> None:
    assert set(format_bytes.ROW_BYTES) == set(formats.BY_NAME)


@pytest.mark.parametrize("name", ["qlinear_conv", "int8_linear", "nbits_fp32", "fp16", "float"])
def test_cpu_cost_reports_the_emitted_bytes(name: str) -> None:
    g = _quantized(name, "layer", CASES[name][1][0])
    (layer,) = g.layers
    cost = cpu.evaluate(g.layer_table(), np.array([CASES[name][1]]), TARGETS[0])
    assert cost.weight_bytes is not None
    assert cost.weight_bytes[0, 0] == _written(emit(g), g, layer)


BLOCKED = [("nbits_fp32", "layer"), ("nbits_int8", "layer"), ("nbits_int8", "extra"),
           ("int_dq_block", "layer"), ("gbq", "layer")]


@pytest.mark.parametrize("block", [16, 32, 64, 128])
@pytest.mark.parametrize(("name", "layer_key"), BLOCKED)
def test_a_layers_own_block_is_emitted_and_predicted(name: str, layer_key: str,
                                                     block: int) -> None:
    """A per-layer block (`QuantOptions.layer_blocks`, the allocator's choice) reaches the
    annotation and the emitted initializers; both byte predictions equal them: the row's
    bytes at that block, and the block-32 bytes plus `block_bytes_delta` (what the allocator
    adds to the cost model's figure)."""
    kind, (w, a), opts = CASES[name]
    spec = EXTRA[kind] if layer_key == "extra" else LAYERS[kind]
    g, feeds = one_layer(*spec)
    calib = calibrate(g, [feeds]) if a < 32 else None
    options = QuantOptions(clip="minmax", **opts, layer_blocks={"layer": block})
    q = quantize(g, np.array([(w, a)]), calib, options)
    (layer,) = q.layers
    assert (row(layer).name, layer.quant.block) == (name, block)
    written = _written(emit(q), q, layer)
    bits, geometry = _geometry(q, layer)
    assert emitted_bytes(name, bits, geometry) == written
    if kind != "linear":  # the allocator's choices: linear, and 1x1 convs (see below; the
        return            # table blocks Cin/g x taps, and gather tables are not its layers)
    table = g.layer_table()
    at32 = emitted_bytes(name, bits, format_bytes.table_geometry(table, 32, "per_block"))[0, 0]
    code = np.array([[formats.FORMAT_CODE[name]]])
    delta = format_bytes.block_bytes_delta(table, code, np.array([bits]), np.array([block]))
    assert at32 + delta[0, 0] == written


def test_a_1x1_conv_block_delta_is_exact() -> None:
    """The layer table has no taps, so a conv's blocks are counted along Cin/g x taps: exact
    for 1x1 convs (pointwise layers, most of a MobileNet's weights)."""
    spec = ("conv", dict(CONV, strides=(1, 1), pads=(0, 0, 0, 0)),
            [x_(1, 96, 5, 5), w_("w", f32(8, 96, 1, 1)), w_("b", f32(8))])
    g, _ = one_layer(*spec)
    code = np.array([[formats.FORMAT_CODE["int_dq_block"]] * 3])
    delta = format_bytes.block_bytes_delta(g.layer_table(), code, np.array([4] * 3),
                                      np.array([16, 32, 64]))
    written = []
    for block in (16, 32, 64):
        opts = QuantOptions(clip="minmax", granularity="per_block", layer_blocks={"layer": block})
        q = quantize(g, np.array([(4, 32)]), None, opts)
        written.append(_written(emit(q), q, q.layers[0]))
    assert (delta[0] + written[1]).tolist() == written
