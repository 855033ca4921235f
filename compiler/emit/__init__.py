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

The output uses opset 21 of the default domain and com.microsoft 1, IR version 10 (what
opset 21 belongs to; onnx's checker rejects opset 21 under an older IR version), and passes
`onnx.checker.check_model(full_check=True)`. `write(model, path)` stores it atomically.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import onnx

from compiler.emit import int4_dequant, matmulnbits, qdq
from compiler.emit.builder import Builder, EmitOptions
from compiler.emit.float_ops import FLOAT_RULES, Rule
from compiler.emit.write import write
from compiler.errors import ModelError
from compiler.ir import Graph

OPSET = 21
IR_VERSION = 10

EMITTERS: Mapping[tuple[str, str], Rule] = MappingProxyType({
    **{(kind, "float"): rule for kind, rule in FLOAT_RULES.items()},
    **qdq.RULES, **matmulnbits.RULES, **int4_dequant.RULES,
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
    for layer in g.layers:
        rule = EMITTERS.get((layer.kind, layer.quant.fmt))
        if rule is None:
            raise ModelError(f"layer {layer.name}", f"no emitter for {layer.kind} in format "
                             f"{layer.quant.fmt!r}")
        rule(b, layer, b.inputs(layer.inputs))
    model = b.model(OPSET, IR_VERSION, "edgesim")
    if check:
        _check(model)
    return model


def _check(model: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ModelError(model.graph.name, f"emitted model fails onnx.checker: {e}") from None


__all__ = ["EMITTERS", "FORMATS", "EmitOptions", "emit", "write"]
