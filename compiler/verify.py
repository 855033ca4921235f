"""`verify(graph)`: the IR's invariants, checked after every pass in tests and under --debug."""

from __future__ import annotations

import math

from compiler.errors import ModelError
from compiler.formats import ACT_BITS, FORMATS, GRANULARITIES, WEIGHT_BITS, Format, of_layer
from compiler.ir import KINDS, Graph, Layer, Quant
from compiler.ops import OPS


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
    _check_quant(where, layer, graph.const_weight(layer))


def _check_quant(where: str, layer: Layer, const_weight: bool) -> None:
    q = layer.quant
    if q.w_bits is not None and q.w_bits not in WEIGHT_BITS:
        raise ModelError(where, f"weight bits {q.w_bits} not in {WEIGHT_BITS}")
    if q.a_bits is not None and q.a_bits not in ACT_BITS:
        raise ModelError(where, f"activation bits {q.a_bits} not in {ACT_BITS}")
    if q.granularity not in GRANULARITIES:
        raise ModelError(where, f"granularity {q.granularity!r} not in {GRANULARITIES}")
    if (q.granularity == "per_block") != (q.block is not None):
        raise ModelError(where, "a block size goes with per_block granularity, and only there")
    row = _check_format(where, layer, const_weight)
    _check_activation_params(where, q, row)


def _check_format(where: str, layer: Layer, const_weight: bool) -> Format:
    """The annotation must be a row of the format policy (compiler.formats.FORMATS)."""
    q = layer.quant
    fmts = sorted({f.fmt for f in FORMATS})
    if q.fmt not in fmts:
        raise ModelError(where, f"format {q.fmt!r} not in {tuple(fmts)}")
    row = of_layer(layer, const_weight)
    if row.fmt != q.fmt or not row.matches(layer.kind, const_weight, q.w_bits, q.a_bits,
                                           q.granularity):
        raise ModelError(where, f"format {q.fmt!r} with bits ({q.w_bits}, {q.a_bits}), "
                         f"{q.granularity}, is no row of the format policy for a "
                         f"{layer.kind} layer")
    return row


def _check_activation_params(where: str, q: Quant, row: Format) -> None:
    if len(q.in_scale) != len(q.in_zero_point):
        raise ModelError(where, "one zero point per activation scale")
    if (row.act == "static") != bool(q.in_scale):
        raise ModelError(where, "activation scales go with calibrated activation bits, and "
                         "only there")
    if (q.out_scale is None) != (q.out_zero_point is None):
        raise ModelError(where, "an output scale goes with an output zero point")
    scales = q.in_scale + (() if q.out_scale is None else (q.out_scale,))
    if any(not (math.isfinite(s) and s > 0) for s in scales):
        raise ModelError(where, f"activation scales {scales} must be finite and positive")
