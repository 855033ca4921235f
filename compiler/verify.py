"""`verify(graph)`: the IR's invariants, checked after every pass in tests and under --debug."""

from __future__ import annotations

import math

from compiler.errors import ModelError
from compiler.ir import KINDS, Graph, Layer, Quant
from compiler.ops import OPS

WEIGHT_BITS = (2, 3, 4, 5, 6, 7, 8, 16)
ACT_BITS = (4, 8, 16)
GRANULARITIES = ("per_tensor", "per_channel", "per_block")


def verify(graph: Graph) -> None:
    """Raise ModelError at the first broken invariant: unique names, topological order,
    known kinds, types matching each op's shape rule, legal quantisation annotations."""
    defined = set(graph.inputs) | set(graph.weights)
    names: set[str] = set()
    for layer in graph.layers:
        _check_layer(graph, layer, defined, names)
        defined.update(layer.outputs)
    missing = [t for t in graph.outputs if t not in defined]
    if missing:
        raise ModelError("graph outputs", f"{missing} are never produced")


def _check_layer(graph: Graph, layer: Layer, defined: set[str], names: set[str]) -> None:
    where = f"layer {layer.name}"
    if layer.name in names:
        raise ModelError(where, "duplicate layer name")
    names.add(layer.name)
    if layer.kind not in KINDS or layer.kind not in OPS:
        raise ModelError(where, f"unknown kind {layer.kind!r}")
    late = [t for t in layer.inputs if t and t not in defined]
    if late:
        raise ModelError(where, f"reads {late} before they are produced")
    redefined = [t for t in layer.outputs if t in defined]
    if redefined:
        raise ModelError(where, f"redefines {redefined}")
    specs = [graph.types[t] if t else None for t in layer.inputs]
    want = tuple(OPS[layer.kind].shape(specs, **layer.attrs))
    have = tuple(graph.types.get(t) for t in layer.outputs)
    if want != have:
        raise ModelError(where, f"output types {have} but the shape rule gives {want}")
    _check_quant(where, layer)


# Emission formats and the layer kinds each applies to (see compiler.emit for what they write).
QUANT_FORMATS = {
    "float": None,  # any kind
    "qdq": ("conv", "conv_transpose", "linear", "matmul"),
    "matmulnbits": ("linear",),
    "int_dq": ("conv", "conv_transpose"),
    "fp16": ("conv", "conv_transpose", "linear", "gather"),
    "gbq": ("gather",),
}


def _check_quant(where: str, layer: Layer) -> None:
    q = layer.quant
    if q.w_bits is not None and q.w_bits not in WEIGHT_BITS:
        raise ModelError(where, f"weight bits {q.w_bits} not in {WEIGHT_BITS}")
    if q.a_bits is not None and q.a_bits not in ACT_BITS:
        raise ModelError(where, f"activation bits {q.a_bits} not in {ACT_BITS}")
    if q.granularity not in GRANULARITIES:
        raise ModelError(where, f"granularity {q.granularity!r} not in {GRANULARITIES}")
    if (q.granularity == "per_block") != (q.block is not None):
        raise ModelError(where, "a block size goes with per_block granularity, and only there")
    _check_format(where, layer)
    _check_activation_params(where, q)


def _check_format(where: str, layer: Layer) -> None:
    q = layer.quant
    if q.fmt not in QUANT_FORMATS:
        raise ModelError(where, f"format {q.fmt!r} not in {tuple(QUANT_FORMATS)}")
    kinds = QUANT_FORMATS[q.fmt]
    if kinds is not None and layer.kind not in kinds:
        raise ModelError(where, f"format {q.fmt!r} does not apply to a {layer.kind} layer")
    if (q.fmt == "float") != (q.w_bits is None and q.a_bits is None):
        raise ModelError(where, f"format {q.fmt!r} with bits ({q.w_bits}, {q.a_bits})")


def _check_activation_params(where: str, q: Quant) -> None:
    if len(q.in_scale) != len(q.in_zero_point):
        raise ModelError(where, "one zero point per activation scale")
    if (q.a_bits is None) != (not q.in_scale):
        raise ModelError(where, "activation scales go with activation bits, and only there")
    if (q.out_scale is None) != (q.out_zero_point is None):
        raise ModelError(where, "an output scale goes with an output zero point")
    scales = q.in_scale + (() if q.out_scale is None else (q.out_scale,))
    if any(not (math.isfinite(s) and s > 0) for s in scales):
        raise ModelError(where, f"activation scales {scales} must be finite and positive")
