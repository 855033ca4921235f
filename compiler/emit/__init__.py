"""Emission: an annotated IR graph -> an ONNX model onnxruntime executes.

`emit(g)` walks the layers once and calls the rule of `(layer.kind, layer.quant.fmt)` in
`EMITTERS`. Formats:

- `float` (every kind in `KINDS`): standard ONNX ops (`float_ops`);
- `qdq` (conv, conv_transpose, linear, matmul): W8A8 in the forms onnxruntime runs as
  QLinearConv / MatMulIntegerToFloat (`qdq`);
- `matmulnbits` (linear): com.microsoft::MatMulNBits (`matmulnbits`);
- `int_dq` (conv, conv_transpose): DequantizeLinear on INT4/INT8 initializers
  (`int4_dequant`);
- `gbq` (gather): com.microsoft::GatherBlockQuantized (`int4_dequant`);
- `fp16` (conv, conv_transpose, linear, gather): float16 weights + Cast (`int4_dequant`).

The output keeps the source model's interface: input/output names, dtypes, a dynamic batch
where the file runs at every batch (`batch`: else the lowered one, and metadata
`edgesim.fixed_batch` says why; the other dims are the IR's static ones), and its
default-domain opset unless a node needs a newer one
(`Builder.opset`: 18 for Reduce* with axes as an input, 19 for AveragePool dilations, 21 for
INT4/UINT4/16-bit Q/DQ types and blocked DequantizeLinear); com.microsoft 1, IR version 10,
and it passes `onnx.checker.check_model(full_check=True)`. `write(model, path)` stores it
atomically.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import metadata
from types import MappingProxyType

import onnx

from compiler.emit import dynamic, int4_dequant, matmulnbits, qdq
from compiler.emit.builder import Builder, EmitOptions
from compiler.emit.float_ops import FLOAT_RULES, Rule
from compiler.emit.write import write
from compiler.errors import ModelError
from compiler.fake_quant import row
from compiler.formats import GEMM_KINDS
from compiler.ir import Graph, Layer, Quant

OPSET = 21
IR_VERSION = 10

EMITTERS: Mapping[tuple[str, str], Rule] = MappingProxyType({
    **{(kind, "float"): rule for kind, rule in FLOAT_RULES.items()},
    **qdq.RULES, **matmulnbits.RULES, **int4_dequant.RULES, **dynamic.RULES,
})
FORMATS: tuple[str, ...] = tuple(sorted({fmt for _, fmt in EMITTERS}))


DEFAULT_OPTIONS = EmitOptions()


def emit(g: Graph, options: EmitOptions = DEFAULT_OPTIONS, check: bool = True
         ) -> onnx.ModelProto:
    """The ONNX model of an (annotated) graph.

    Args:
        g: the graph, float or annotated by `compiler.passes.quantize.quantize`.
        options: emitter choices (MatMulNBits accuracy level).
        check: run `onnx.checker.check_model(full_check=True)` on the result.

    Raises:
        ModelError: if a layer's (kind, format) has no emitter, or the checker rejects the
            model (a bug in edgesim, reported with the checker's message).
    """
    b = Builder(g, options)
    views = float_readers(g)
    for layer in g.layers:
        rule = EMITTERS.get((layer.kind, layer.quant.fmt))
        if rule is None:
            raise ModelError(f"layer {layer.name}", f"no emitter for {layer.kind} in format "
                             f"{layer.quant.fmt!r}")
        rule(b, layer, _inputs(b, layer, views))
    model = b.model(b.opset(), IR_VERSION, "edgesim")
    provenance(model, g, options, b.batch.broken, b.folded)
    if check:
        _check(model)
    return model


def _float_gemm(layer: Layer) -> bool:
    return layer.kind in GEMM_KINDS and row(layer).kernel == "fp32" and not layer.quant.in_scale


def _propagates(layer: Layer) -> bool:
    """Float layers onnxruntime moves a per-tensor DequantizeLinear across (its
    QDQPropagationTransformer: MaxPool, Reshape, Transpose, Squeeze, Unsqueeze, Slice)."""
    if layer.quant.fmt != "float":
        return False
    return layer.kind in _MOVERS or layer.kind == "pool" and layer.attrs.get("fn") == "max"


_MOVERS = ("reshape", "transpose", "slice", "identity")


def float_readers(g: Graph) -> frozenset[str]:
    """Layers that must read activations off any per-tensor grid (`Builder.float_view`):
    layers the plan keeps float (conv, conv_transpose, linear, matmul), and the float
    data-movement layers onnxruntime would move a DequantizeLinear across into them."""
    made, out = g.producers(), set()
    stack = [layer for layer in g.layers if _float_gemm(layer)]
    while stack:
        layer = stack.pop()
        if layer.name in out:
            continue
        out.add(layer.name)
        stack += [made[t] for t in layer.inputs if t in made and _propagates(made[t])]
    return frozenset(out)


def _inputs(b: Builder, layer: Layer, views: frozenset[str]) -> list[str]:
    """Emitted input names; the activations of `views` layers come off per-tensor grids
    through a per-channel DequantizeLinear, so onnxruntime cannot fuse them to int8."""
    ins = b.inputs(layer.inputs)
    if layer.name not in views:
        return ins
    return [b.float_view(name, b.graph.types[t].shape, b.batch_axis(t))
            if t and t not in b.graph.weights
            else name for t, name in zip(layer.inputs, ins)]


@cache  # the installed distribution's metadata is read from disk: once per process
def _version() -> str:
    try:
        return metadata.version("edgesim")
    except metadata.PackageNotFoundError:
        return "unknown"


def plan_json(g: Graph) -> str:
    """The per-layer plan as JSON: bits, format-policy row, kernel, granularity and block of
    every planned layer."""
    rows = []
    for layer in g.layers:
        if layer.quant == Quant():
            continue
        q, r = layer.quant, row(layer)
        rows.append({"layer": layer.name, "kind": layer.kind, "w_bits": q.w_bits,
                     "a_bits": q.a_bits, "format": r.name, "kernel": r.kernel,
                     "granularity": q.granularity if q.w_bits else None, "block": q.block})
    return json.dumps(rows, separators=(",", ":"))


def provenance(model: onnx.ModelProto, g: Graph, options: EmitOptions,
               fixed_batch: str = "", folded: Mapping[str, str] = MappingProxyType({})
               ) -> None:
    """producer_name/version (edgesim's), and metadata_props: edgesim's version, the source
    model's producer, the per-layer plan, why a dynamic batch of the source was fixed
    (`compiler.emit.batch`), the layers written as no node (`FOLDED`), and the caller's
    entries (`EmitOptions.metadata`)."""
    version = _version()
    model.producer_name, model.producer_version = "edgesim", version
    source = g.interface.producer if g.interface else ""
    props = {"edgesim.version": version, "edgesim.plan": plan_json(g),
             **({"edgesim.source_producer": source} if source else {}),
             **({"edgesim.fixed_batch": fixed_batch} if fixed_batch else {}),
             **({FOLDED: json.dumps(dict(folded), separators=(",", ":"))} if folded else {}),
             **dict(options.metadata)}
    onnx.helper.set_model_props(model, props)


# metadata key: {layer: the layer (or graph input) making its output} of the IR layers the
# file has no node for (`Builder.fold`: a ReLU on a grid it cannot change)
FOLDED = "edgesim.folded"


def folded_layers(model: onnx.ModelProto) -> dict[str, str]:
    """The IR layers an emitted `model` writes as no node, each -> the layer (or graph
    input) whose output stands for its own (read from its metadata, `FOLDED`)."""
    props = {p.key: p.value for p in model.metadata_props}
    return dict(json.loads(props[FOLDED])) if FOLDED in props else {}


def _check(model: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ModelError(model.graph.name, f"emitted model fails onnx.checker: {e}") from None


__all__ = ["EMITTERS", "FORMATS", "EmitOptions", "emit", "folded_layers", "write"]
