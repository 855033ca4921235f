"""Tensor sizes are bounded inside the graph too (not only inputs and initializers): a layer
whose output would hold more than MAX_TENSOR_ELEMS elements is refused by name before numpy
or onnxruntime allocates it, and before a cost model predicts for it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.errors import ModelError
from compiler.frontend import load
from compiler.frontend.lower import MAX_TENSOR_ELEMS

HUGE = [1, 10**6, 10**6]  # 10^12 elements: 4 TB of float32


def _model(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 1])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["a", "b", "c"])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_an_activation_beyond_the_bound_is_refused_by_node() -> None:
    # before: inspect / simulate accepted it (simulate predicted 1263 s and 8 TB of peak
    # activations on rpi5) and quantize died in onnxruntime's allocator (exit 1)
    shape = numpy_helper.from_array(np.array(HUGE, np.int64), "s")
    m = _model([helper.make_node("Expand", ["x", "s"], ["y"], name="ex"),
                helper.make_node("Relu", ["y"], ["z"], name="r")], [shape])
    with pytest.raises(ModelError, match=r"node ex: expand output \[1, 1000000, 1000000\] "
                                         r"has 1000000000000 elements"):
        load(m)


def test_a_constant_fold_beyond_the_bound_is_refused_before_allocating() -> None:
    # before: numpy's MemoryError inside the fold -> "internal error", exit 1
    shape = numpy_helper.from_array(np.array(HUGE, np.int64), "s")
    m = _model([helper.make_node("ConstantOfShape", ["s"], ["c"], name="cos",
                                 value=numpy_helper.from_array(np.ones(1, np.float32))),
                helper.make_node("Add", ["x", "c"], ["z"], name="add")], [shape])
    with pytest.raises(ModelError, match=r"node cos.*1000000000000 elements"):
        load(m)


def test_the_bound_itself_is_accepted() -> None:
    # a [2^17, 2^17] output is exactly 2^34 elements: typed, never allocated (shapes only)
    side = 2**17
    assert side * side == MAX_TENSOR_ELEMS
    shape = numpy_helper.from_array(np.array([1, side, side], np.int64), "s")
    m = _model([helper.make_node("Expand", ["x", "s"], ["z"], name="ex")], [shape])
    g = load(m)
    assert g.types["z"].shape == (1, side, side)


def test_a_constant_range_beyond_the_bound_is_refused_before_arange() -> None:
    # before: np.arange(0, 1e12, 1) ran inside the fold (4 TB of int32 for numpy to allocate)
    scalars = [numpy_helper.from_array(np.array(v, np.int64), k)
               for k, v in (("start", 0), ("limit", 10**12), ("delta", 1))]
    m = _model([helper.make_node("Range", ["start", "limit", "delta"], ["r"], name="rng"),
                helper.make_node("Cast", ["r"], ["rf"], to=TensorProto.FLOAT),
                helper.make_node("Add", ["x", "rf"], ["z"], name="add")], scalars)
    with pytest.raises(ModelError, match=r"rng: Range makes 1000000000000 elements"):
        load(m)
    small = [numpy_helper.from_array(np.array(v, np.int64), k)  # 3 elements: still folds
             for k, v in (("start", 5), ("limit", -1), ("delta", -2))]
    m = _model([helper.make_node("Range", ["start", "limit", "delta"], ["r"], name="rng"),
                helper.make_node("Cast", ["r"], ["rf"], to=TensorProto.FLOAT),
                helper.make_node("Add", ["x", "rf"], ["z"], name="add")], small)
    assert load(m).types["z"].shape == (1, 1, 3)
