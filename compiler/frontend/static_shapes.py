"""Static shapes of every tensor once the inputs' shapes are fixed.

ONNX shape inference leaves some shapes symbolic even then: a Pad or Slice whose pads or
ends are computed from other shapes (silero-vad's STFT front end) gets fresh symbols. Where
inference leaves a shape open, the model is run once with ONNX's reference runtime on zero
inputs of the static shapes and the shapes are read off the intermediates. That is exact
when no op's output shape depends on data values (NonZero, Unique, ...): the fallback is
skipped for such graphs and for large ones (the reference runtime is slow).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper

Shapes = Mapping[str, tuple[int, ...]]
DATA_DEPENDENT = frozenset({"NonZero", "Unique", "Compress", "Loop", "Scan", "TopK",
                            "NonMaxSuppression", "RandomNormal", "RandomUniform",
                            "RandomNormalLike", "RandomUniformLike", "Multinomial"})
MAX_RUN_BYTES = 64 << 20  # weights the reference runtime is asked to carry at most


SKELETON_ELEMS = 1024  # initializers larger than this are weights, not shape arithmetic


def skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` for shape inference: initializers of more than SKELETON_ELEMS elements become
    graph inputs of their type and shape. Inference serialises the model it is given; on an
    87 MB ResNet that took ~1.2 s, and 0.03 s without the weights (same shapes)."""
    g = model.graph
    big = [t for t in g.initializer if math.prod(t.dims) > SKELETON_ELEMS]
    kept = [t for t in g.initializer if math.prod(t.dims) <= SKELETON_ELEMS]
    weights = [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in big]
    graph = helper.make_graph(g.node, g.name, [*g.input, *weights], g.output, kept,
                              value_info=g.value_info, sparse_initializer=g.sparse_initializer)
    out = helper.make_model(graph, opset_imports=model.opset_import, functions=model.functions)
    out.ir_version = model.ir_version
    return out


def inferred_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Fully static tensor shapes according to ONNX shape inference."""
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton(model), data_prop=True)
    except (onnx.shape_inference.InferenceError, RuntimeError, ValueError):
        return {}
    g = inferred.graph
    shapes = {}
    for vi in (*g.input, *g.value_info, *g.output):
        tt = vi.type.tensor_type
        if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
            shapes[vi.name] = tuple(d.dim_value for d in tt.shape.dim)
    return shapes


def _runnable(model: onnx.ModelProto) -> bool:
    g = model.graph
    ops = {n.op_type for n in g.node}
    weights = sum(t.ByteSize() for t in g.initializer)
    return not ops & DATA_DEPENDENT and weights <= MAX_RUN_BYTES and all(
        all(d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim) for vi in g.input)


def _zeros(vi: onnx.ValueInfoProto) -> np.ndarray:
    tt = vi.type.tensor_type
    dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
    return np.zeros([d.dim_value for d in tt.shape.dim], dtype)


def run_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Shapes of every top-level tensor from one reference run on zero inputs ({} when the
    graph is not `_runnable` or the run fails)."""
    if not _runnable(model):
        return {}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outs = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_tensor_value_info(t, onnx.TensorProto.UNDEFINED, None)
                              for n in model.graph.node for t in n.output if t and t not in outs)
    names = [o.name for o in probe.graph.output]
    from onnx.reference import ReferenceEvaluator  # on demand: few models need it

    try:
        values = ReferenceEvaluator(probe).run(None, {vi.name: _zeros(vi)
                                                      for vi in model.graph.input})
    except Exception:  # noqa: BLE001 - the reference runtime raises anything; unknown = {}
        return {}
    return {n: tuple(np.shape(v)) for n, v in zip(names, values)}


def known_shapes(model: onnx.ModelProto, wanted: tuple[str, ...] = (),
                 found: dict[str, tuple[int, ...]] | None = None) -> Shapes:
    """Static shapes by inference, completed by a reference run where a `wanted` tensor's
    shape is left open.

    `found`: shapes of `model`'s tensors found by earlier calls while the graph was rewritten
    around them (clean-up inlines Ifs and unrolls LSTMs: a tensor keeps its name and shape,
    and new names never reuse old ones). Where it holds every `wanted` tensor nothing runs
    (silero-vad: 7 inferences and 3 reference runs of the whole model -> 2 and 2); what does
    run is added to it.
    """
    if found is not None and wanted and all(t in found for t in wanted):
        return found
    shapes = inferred_shapes(model)
    if not all(t in shapes for t in wanted):
        shapes = {**run_shapes(model), **shapes}
    if found is None:
        return shapes
    found.update(shapes)
    return found
