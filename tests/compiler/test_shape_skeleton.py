"""Shape inference on a weightless skeleton: the same static shapes as on the full model
(onnx's own inference is the oracle), without carrying the weights."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compiler.frontend.static_shapes import SKELETON_ELEMS, inferred_shapes, skeleton

F = TensorProto.FLOAT


def _model() -> onnx.ModelProto:
    """x [2, 64] @ w [64, 64] -> Reshape by a computed shape (needs data propagation of the
    small shape initializer and of Shape) -> Conv with a [16, 1, 3, 3] weight (144 elems)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((16, 1, 3, 3)).astype(np.float32), "k"),
             numpy_helper.from_array(np.array([-1, 1, 8, 16], np.int64), "shape")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Reshape", ["h", "shape"], ["r"]),
             helper.make_node("Conv", ["r", "k"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Shape", ["c"], ["s"]),
             helper.make_node("Reshape", ["c", "s"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, [2, 64])],
                              [helper.make_tensor_value_info("y", F, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_skeleton_drops_only_the_large_weights():
    m = _model()
    s = skeleton(m)
    assert [t.name for t in s.graph.initializer] == ["k", "shape"]  # 144 and 4 elems stay
    assert 64 * 64 > SKELETON_ELEMS and s.ByteSize() < m.ByteSize() / 4
    w = next(i for i in s.graph.input if i.name == "w")
    assert [d.dim_value for d in w.type.tensor_type.shape.dim] == [64, 64]
    assert len(m.graph.initializer) == 3  # the caller's model is untouched


def test_inferred_shapes_match_inference_on_the_full_model():
    m = _model()
    full = onnx.shape_inference.infer_shapes(m, data_prop=True)
    want = {v.name: tuple(d.dim_value for d in v.type.tensor_type.shape.dim)
            for v in (*full.graph.value_info, *full.graph.output)}
    got = inferred_shapes(m)
    assert want == {"h": (2, 64), "r": (1, 1, 8, 16), "c": (1, 16, 8, 16), "s": (4,),
                    "y": (1, 16, 8, 16)}
    assert {k: got[k] for k in want} == want
