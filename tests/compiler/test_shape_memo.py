"""Clean-up's If folding keeps the static shapes it found: a second condition on a tensor whose
shape is known runs no shape inference of the whole model again, and the folded model
computes what onnxruntime computes on the original."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import compiler.frontend.static_shapes as static_shapes
from compiler.executor import run
from compiler.frontend import load


def _branches(k: int) -> dict[str, onnx.GraphProto]:
    """then: h * (k + 2); else: h * -1 (h is Relu(x), from the outer scope)."""
    def arm(name: str, factor: float) -> onnx.GraphProto:
        c = f"{name}{k}_c"
        return helper.make_graph(
            [helper.make_node("Mul", ["h", c], [f"{name}{k}_y"])], f"{name}{k}", [],
            [helper.make_tensor_value_info(f"{name}{k}_y", TensorProto.FLOAT, None)],
            [numpy_helper.from_array(np.array(factor, np.float32), c)])
    return {"then_branch": arm("then", k + 2.0), "else_branch": arm("else", -1.0)}


def two_shape_ifs() -> onnx.ModelProto:
    """y = If(width(h) == 6) + If(width(h) > 100) over h = Relu(x), x [1, 6]: each
    condition reads the shape of a computed tensor."""
    nodes = [helper.make_node("Relu", ["x"], ["h"]),
             helper.make_node("Shape", ["h"], ["shape"]),
             helper.make_node("Gather", ["shape", "one"], ["width"], axis=0),
             helper.make_node("Equal", ["width", "six"], ["c0"]),
             helper.make_node("Greater", ["width", "hundred"], ["c1"]),
             helper.make_node("If", ["c0"], ["y0"], name="if0", **_branches(0)),
             helper.make_node("If", ["c1"], ["y1"], name="if1", **_branches(1)),
             helper.make_node("Add", ["y0", "y1"], ["y"])]
    inits = [numpy_helper.from_array(np.array(v, np.int64), n)
             for n, v in (("one", 1), ("six", 6), ("hundred", 100))]
    graph = helper.make_graph(nodes, "two_ifs",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_second_condition_reuses_the_shapes_found(monkeypatch) -> None:
    calls = []
    inferred = static_shapes.inferred_shapes

    def counted(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
        calls.append(1)
        return inferred(model)

    monkeypatch.setattr(static_shapes, "inferred_shapes", counted)
    model = two_shape_ifs()
    g = load(model)
    assert len(calls) == 1  # the old code inferred once per condition: 2
    assert "If" not in {layer.kind for layer in g.layers}
    x = np.array([[-1.0, 2.0, -3.0, 4.0, 0.5, -0.5]], np.float32)
    want = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    # then (x2) for width 6, else (x-1) for width > 100: Relu(x) * (2 - 1)
    np.testing.assert_allclose(run(g, {"x": x})["y"], want, rtol=1e-6)
    np.testing.assert_allclose(want, np.maximum(x, 0) * 1.0, rtol=1e-6)
