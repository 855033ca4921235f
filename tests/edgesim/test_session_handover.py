"""`edgesim.evaluate.session` hands a ModelProto's large initializers to onnxruntime as
in-memory external files instead of serialising them (`_handed_over`): the session computes
what onnxruntime computes from the model saved to a file, small and already external
initializers are kept as they were, and the caller's model is not changed."""

from __future__ import annotations

import gc

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesim.evaluate import HANDED_BYTES, _handed_over, session

pytestmark = pytest.mark.ort


def _model() -> onnx.ModelProto:
    """y = relu(x @ W1 + b) @ W2 + c: W1 (100 KiB) and W2 (75 KiB) large enough to hand
    over, b and c not."""
    rng = np.random.default_rng(3)
    n = 160  # 160 x 160 float32 = 100 KiB > HANDED_BYTES
    inits = [numpy_helper.from_array(rng.standard_normal((n, n)).astype(np.float32), "W1"),
             numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), "b"),
             numpy_helper.from_array(rng.standard_normal((n, 120)).astype(np.float32) * 0.1,
                                     "W2"),
             numpy_helper.from_array(np.arange(120, dtype=np.float32), "c")]
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"]),
             helper.make_node("Add", ["h", "b"], ["hb"]),
             helper.make_node("Relu", ["hb"], ["r"]),
             helper.make_node("MatMul", ["r", "W2"], ["m"]),
             helper.make_node("Add", ["m", "c"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         [2, n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 120])],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_outputs_equal_onnxruntime_on_the_saved_file(tmp_path) -> None:
    model = _model()
    before = model.SerializeToString()
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    x = {"x": np.random.default_rng(4).standard_normal((2, 160)).astype(np.float32)}
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, x)
    sess = session(model)
    gc.collect()  # the handed-over buffers are gone: onnxruntime copied them
    assert np.array_equal(sess.run(None, x)[0], want[0])
    assert model.SerializeToString() == before  # the caller's model is as it was


def test_only_large_raw_initializers_leave_the_protobuf() -> None:
    model = _model()
    data, buffers = _handed_over(model, ort.SessionOptions())
    light = onnx.ModelProto.FromString(data)
    stored = {i.name: i for i in light.graph.initializer}
    assert [i.name for i in light.graph.initializer] == ["W1", "b", "W2", "c"]
    for name in ("W1", "W2"):
        init = stored[name]
        assert init.data_location == TensorProto.EXTERNAL and not init.raw_data
        where = {e.key: e.value for e in init.external_data}
        original = next(i for i in model.graph.initializer if i.name == name)
        assert buffers[int(where["location"])] == original.raw_data
        assert int(where["length"]) == len(original.raw_data) >= HANDED_BYTES
    for name in ("b", "c"):
        assert stored[name] == next(i for i in model.graph.initializer if i.name == name)
    assert len(data) < 4096  # nodes and small constants only
