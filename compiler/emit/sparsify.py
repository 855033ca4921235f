"""Emission of activation thresholds (`compiler.passes.sparsify`) as standard ONNX ops.

A threshold layer (kind "activation", fn "threshold") becomes

    Where(Less(Abs(Sub(x, c)), t), c, x)

in x's dtype, so onnxruntime runs the sparsified model and its accuracy is measured, not
assumed. onnxruntime gains no speed from it: its CPU kernels have no sparse-activation path,
and the four ops cost a little time; the gain is on a zero-skipping MAC array.
"""

from __future__ import annotations

import numpy as np

from compiler.emit.builder import Builder
from compiler.ir import Layer


def threshold(b: Builder, layer: Layer, x: str) -> None:
    """Emit `layer` (fn "threshold", attrs `threshold` and `center`) reading ONNX tensor `x`."""
    dtype = np.dtype(b.graph.types[layer.outputs[0]].dtype)
    c = b.const(f"{layer.name}.center", np.asarray(layer.attrs.get("center", 0.0), dtype))
    t = b.const(f"{layer.name}.threshold", np.asarray(layer.attrs["threshold"], dtype))
    (d,) = b.node("Sub", [x, c], base=layer.name)
    (a,) = b.node("Abs", [d], base=layer.name)
    (near,) = b.node("Less", [a, t], base=layer.name)
    b.node("Where", [near, c, x], list(layer.outputs), base=layer.name)
