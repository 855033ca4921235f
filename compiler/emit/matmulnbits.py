"""Weight-only N-bit linear layers as com.microsoft::MatMulNBits.

The weight `[N, K]` is quantised per block of `block` along K on the narrow signed grid; the
codes shift by `2^(c-1)` (c = container bits: 2, 4 or 8) so that the op's default zero point
applies and no zero-point input is written. Blocks are packed by `compiler.packing` (the
single source of truth for the layout). The bias rides on the op's optional bias input.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from compiler.emit.builder import Builder
from compiler.emit.float_ops import Rule
from compiler.fake_quant import quant_names, row
from compiler.formats import nbits_container
from compiler.ir import Layer
from compiler.packing import MatMulNBitsBlob, pack_matmulnbits_codes


def blob(layer: Layer, weights: Mapping[str, np.ndarray]) -> MatMulNBitsBlob:
    """The packed MatMulNBits weight of a "matmulnbits" linear layer."""
    names, q = quant_names(layer.name), layer.quant
    assert q.w_bits is not None
    bits = nbits_container(q.w_bits)
    codes = weights[names.codes].astype(np.int16) + 2 ** (bits - 1)   # [N, K] unsigned
    assert q.block is not None
    return pack_matmulnbits_codes(codes.T, weights[names.scale], None, bits, q.block)


def accuracy_level(b: Builder, layer: Layer) -> int:
    """The plan's accuracy_level (4 where activations run int8 per block, else 0), unless the
    user forces one (`EmitOptions.accuracy_level`)."""
    if b.options.accuracy_level is not None:
        return b.options.accuracy_level
    return 4 if row(layer).act == "dynamic" else 0


def linear_matmulnbits(b: Builder, layer: Layer, ins: list[str]) -> None:
    """x @ dequant(W)^T + bias through MatMulNBits."""
    packed = blob(layer, b.graph.weights)
    bq = b.const(f"{layer.name}.B", packed.b)
    scales = b.const(f"{layer.name}.scales", packed.scales)
    bias = ["", "", ins[2]] if len(ins) > 2 and ins[2] else []
    b.node("MatMulNBits", [ins[0], bq, scales] + bias, list(layer.outputs), base=layer.name,
           domain="com.microsoft", accuracy_level=accuracy_level(b, layer), **packed.attrs())


def linear_matmulnbits_fzp(b: Builder, layer: Layer, ins: list[str]) -> None:
    """MatMulNBits with the default zero point written as a float input (the scales' dtype):
    the same values, on onnxruntime's non-prepacked path."""
    packed = blob(layer, b.graph.weights)
    bq = b.const(f"{layer.name}.B", packed.b)
    scales = b.const(f"{layer.name}.scales", packed.scales)
    assert layer.quant.w_bits is not None
    mid = float(2 ** (nbits_container(layer.quant.w_bits) - 1))
    zp = b.const(f"{layer.name}.zero_points", np.full_like(packed.scales, mid))
    bias = ["", ins[2]] if len(ins) > 2 and ins[2] else []
    b.node("MatMulNBits", [ins[0], bq, scales, zp] + bias, list(layer.outputs),
           base=layer.name, domain="com.microsoft", accuracy_level=0, **packed.attrs())


RULES: dict[tuple[str, str], Rule] = {("linear", "matmulnbits"): linear_matmulnbits,
                                      ("linear", "matmulnbits_fzp"): linear_matmulnbits_fzp}
