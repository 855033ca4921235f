"""The ONNX frontend's clean-up, against onnxruntime on the original model: Constant nodes,
opset upgrades, stale value_info, initializers listed as inputs, unsupported ops, sparse
initializers and local functions.

Every case is a small model built with onnx.helper (tests/compiler/load_models.py); where the
loaded graph runs, its outputs are compared with onnxruntime running the ORIGINAL model.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.errors import ModelError
from compiler.executor import run
from compiler.frontend.clean import clean
from compiler.frontend.load import load, read
from compiler.frontend.opset import default_opset
from tests.compiler.load_models import RNG, F, assert_same_as_ort, init, model, x_feed

# --- Constant nodes ---------------------------------------------------------------------------


def test_constant_nodes_become_initializers_and_match_ort():
    w = RNG.standard_normal((2, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w)),
        helper.make_node("Constant", [], ["s"], value_float=2.5),
        helper.make_node("Constant", [], ["shape"], value_ints=[3, 2]),
        helper.make_node("Constant", [], ["k"], value_int=1),
        helper.make_node("Constant", [], ["sp"], sparse_value=helper.make_sparse_tensor(
            numpy_helper.from_array(np.array([5.0, 7.0], np.float32)),
            numpy_helper.from_array(np.array([1, 5], np.int64)), [2, 3])),
        helper.make_node("Add", ["x", "sp"], ["x1"]),
        helper.make_node("Add", ["x1", "w"], ["a"]),
        helper.make_node("Mul", ["a", "s"], ["b"]),
        helper.make_node("Reshape", ["b", "shape"], ["y"]),
    ]
    m = model(nodes, [("x", F, [2, 3])], [("y", F, [3, 2])])
    cleaned = clean(m).model
    assert [n.op_type for n in cleaned.graph.node] == ["Add", "Add", "Mul", "Reshape"]
    inits = {t.name: numpy_helper.to_array(t) for t in cleaned.graph.initializer}
    np.testing.assert_array_equal(inits["w"], w)
    assert inits["s"].dtype == np.float32 and float(inits["s"]) == 2.5
    assert inits["shape"].tolist() == [3, 2] and inits["k"] == 1
    assert inits["sp"].tolist() == [[0, 5, 0], [0, 0, 7]]  # sparse: flat indices 1 and 5
    assert len(m.graph.node) == 9  # the caller's model is untouched
    assert_same_as_ort(m, x_feed(2, 3))


# --- opset, value_info, initializer inputs ----------------------------------------------------


def test_opset_11_model_is_upgraded_to_17():
    nodes = [helper.make_node("Unsqueeze", ["x"], ["u"], axes=[0]),
             helper.make_node("Split", ["u"], ["a", "b"], axis=2, split=[1, 2]),
             helper.make_node("Squeeze", ["b"], ["y"], axes=[0])]
    m = model(nodes, [("x", F, [2, 3])], [("a", F, [1, 2, 1]), ("y", F, [2, 2])], opset=11,
              ir_version=6)
    proto, _ = read(m)
    assert default_opset(proto) == 17
    cleaned = clean(proto).model
    assert [len(n.input) for n in cleaned.graph.node] == [2, 2, 2]  # attributes became inputs
    assert_same_as_ort(m, x_feed(2, 3))


def test_opset_conversion_failure_names_the_opset():
    m = model([helper.make_node("Cast", ["x"], ["y"], to="FLOAT")],
              [("x", F, [2])], [("y", F, [2])], opset=1, ir_version=3)
    with pytest.raises(ModelError, match="cannot convert opset 1 to 17"):
        load(m)


def test_newer_opsets_are_left_alone():
    m = model([helper.make_node("Relu", ["x"], ["y"])], [("x", F, [2])], [("y", F, [2])],
              opset=21, ir_version=10)
    assert default_opset(read(m)[0]) == 21


def test_stale_value_info_is_dropped():
    stale = [helper.make_tensor_value_info("a", F, [7, 7, 7])]
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["a"], ["y"])]
    m = model(nodes, [("x", F, [2, 3])], [("y", F, [2, 3])], value_info=stale)
    assert len(clean(m).model.graph.value_info) == 0
    fresh = onnx.ModelProto()
    fresh.CopyFrom(m)
    del fresh.graph.value_info[:]
    g = assert_same_as_ort(m, x_feed(2, 3), ort_model=fresh)
    assert g.types["a"].shape == (2, 3)


def test_initializers_listed_as_inputs_are_constants():
    w = RNG.standard_normal(3).astype(np.float32)
    m = model([helper.make_node("Add", ["x", "w"], ["y"])],
              [("x", F, [2, 3]), ("w", F, [3])], [("y", F, [2, 3])], [init("w", w)],
              ir_version=3)
    g = assert_same_as_ort(m, x_feed(2, 3))
    assert g.inputs == ("x",)


# --- unsupported ops ----------------------------------------------------------------------------


def test_all_unsupported_ops_are_listed_in_one_error():
    f, i64 = F, TensorProto.INT64
    nodes = [
        helper.make_node("TopK", ["x", "k"], ["v0", "i0"], name="topk_0"),
        helper.make_node("NonMaxSuppression", ["boxes", "scores"], ["sel"], name="nms_1"),
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("TopK", ["r", "k"], ["v3", "i3"], name="topk_3"),
        helper.make_node("Foo", ["x"], ["q"], name="foo", domain="com.example"),
    ]
    m = model(nodes, [("x", f, [2, 5]), ("boxes", f, [1, 3, 4]), ("scores", f, [1, 1, 3])],
              [("v0", f, [2, 2]), ("v3", f, [2, 2]), ("sel", i64, [3, 3]), ("q", f, [2, 5])],
              [init("k", np.array([2], np.int64))])
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(ModelError) as err:
        load(m)
    assert err.value.what == ("unsupported ops: NonMaxSuppression (node nms_1), "
                              "TopK (nodes topk_0, topk_3), com.example::Foo (node foo)")


# --- sparse initializers, local functions -------------------------------------------------------


def test_sparse_initializer_becomes_dense():
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.array([2.0, -1.0], np.float32), "w"),
        numpy_helper.from_array(np.array([[0, 1], [1, 2]], np.int64)), [2, 3])
    m = model([helper.make_node("Add", ["x", "w"], ["y"])], [("x", F, [2, 3])],
              [("y", F, [2, 3])])
    m.graph.sparse_initializer.append(sparse)
    g = load(m)
    want = np.array([[0, 2, 0], [0, 0, -1]], np.float32)  # coordinates (0, 1) and (1, 2)
    np.testing.assert_array_equal(g.weights["w"], want)
    feeds = x_feed(2, 3)
    np.testing.assert_allclose(run(g, feeds)["y"], feeds["x"] + want, rtol=1e-6)


def test_local_functions_are_inlined():
    body = [helper.make_node("Relu", ["a"], ["r"]), helper.make_node("Neg", ["r"], ["b"])]
    fn = helper.make_function("com.local", "NegRelu", ["a"], ["b"], body,
                              [helper.make_opsetid("", 17)])
    m = model([helper.make_node("NegRelu", ["x"], ["y"], domain="com.local")],
              [("x", F, [2, 3])], [("y", F, [2, 3])])
    m.opset_import.append(helper.make_opsetid("com.local", 1))
    m.functions.append(fn)
    g = assert_same_as_ort(m, x_feed(2, 3))
    assert [layer.attrs["fn"] for layer in g.layers] == ["relu", "neg"]
