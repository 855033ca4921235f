"""Quantized layers of a model read back (`compiler.frontend.quantized`): `annotate` gives each
marked IR layer the `Quant` of the `compiler.formats` policy row it runs as.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from compiler.formats import Policy, resolve
from compiler.frontend.quantized_reader import NBITS_UNPACKED, Mark
from compiler.ir import Graph, Layer, Quant

DYNAMIC_SOURCES = frozenset({"MatMulInteger", "ConvInteger", "DynamicQuantizeLSTM"})


def annotate(g: Graph, marks: Mapping[str, Mark], policy: Policy | None = None) -> Graph:
    """Give every marked layer the `Quant` of the format-policy row it runs as."""
    policy = policy or Policy(act_matmul_int8=True)  # the file quantises what it quantises
    unrolled = {f"{name}/": m for name, m in marks.items() if m.unrolled}
    layers = tuple(_annotated(g, layer, marks.get(layer.name) or _unrolled(layer, unrolled),
                              policy) for layer in g.layers)
    return replace(g, layers=layers)


def _unrolled(layer: Layer, marks: Mapping[str, Mark]) -> Mark | None:
    """The mark of the LSTM `layer` was unrolled from (`expand_lstm` names its nodes
    `<LSTM name>/...`); the policy leaves its element-wise layers float."""
    return next((m for prefix, m in marks.items() if layer.name.startswith(prefix)), None)


def _annotated(g: Graph, layer: Layer, mark: Mark | None, policy: Policy) -> Layer:
    if mark is None:
        return layer
    const = g.const_weight(layer)
    policy = replace(policy, dynamic_int8=mark.source in DYNAMIC_SOURCES,
                     requant_out=mark.requant, nbits_float_zp=mark.source == NBITS_UNPACKED)
    row = resolve(layer.kind, const, mark.w_bits, mark.a_bits, policy, mark.granularity)
    if row.name == "float":
        return layer
    w = mark.w_bits if row.w_bits != (None,) else None
    a = mark.a_bits if mark.a_bits in row.a_bits else None
    n_act = len([t for t in layer.inputs[:2] if t and t not in g.weights])
    scales = (1.0,) * n_act if row.act == "static" else ()
    out: tuple[float | None, int | None] = (1.0, 0) if row.requant else (None, None)  # any grid
    quant = Quant(w, a, mark.granularity if w is not None else "per_tensor", mark.block, True,
                  "minmax", row.fmt, scales, (0,) * len(scales), *out,
                  reason=f"read from {mark.source or 'QuantizeLinear'}: {row.pattern}")
    return replace(layer, quant=quant)
