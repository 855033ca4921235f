"""The load's one checker run, on a skeleton without the weights' data, rejects exactly the
models `onnx.checker` rejects whole, with the checker's own message (oracle: the checker on
the whole model); plain initializers reach it as one-element stand-ins."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.errors import ModelError
from compiler.frontend.checker import check, skeleton
from compiler.frontend.tensors import check_tensor_sizes

F = TensorProto.FLOAT


def _model(nodes: list[onnx.NodeProto] | None = None, inits: list[onnx.TensorProto] | None = None,
           inputs: list[onnx.ValueInfoProto] | None = None, ir: int = 8) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "w")
    graph = helper.make_graph(
        nodes or [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
        inputs or [helper.make_tensor_value_info("x", F, [1, 4])],
        [helper.make_tensor_value_info("y", F, [1, 3])], [w] if inits is None else inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = ir
    return m


def _w(name: str = "w", **fields: object) -> onnx.TensorProto:
    t = numpy_helper.from_array(np.ones((4, 3), np.float32), name)
    for k, v in fields.items():
        if isinstance(v, list):
            getattr(t, k).extend(v)
        else:
            setattr(t, k, v)
    return t


def _string_raw() -> onnx.TensorProto:
    return onnx.TensorProto(name="s", data_type=TensorProto.STRING, dims=[1], raw_data=b"ab")


CASES: dict[str, Callable[[], onnx.ModelProto]] = {
    "valid": _model,
    "initializer-also-an-input": lambda: _model(inputs=[
        helper.make_tensor_value_info("x", F, [1, 4]), helper.make_tensor_value_info("w", F,
                                                                                    [4, 3])]),
    "int4-initializer": lambda: _model(inits=[_w(), helper.make_tensor(
        "q", TensorProto.INT4, [3], [1, 2, 3])]),
    "wrong-input-count": lambda: _model([helper.make_node("Relu", ["x", "x"], ["y"],
                                                          name="r1")]),
    "undefined-input": lambda: _model([helper.make_node("MatMul", ["x", "nope"], ["y"],
                                                        name="mm")]),
    "unknown-op": lambda: _model([helper.make_node("NoSuchOp", ["x"], ["y"], name="n")]),
    "duplicate-initializers": lambda: _model(inits=[_w(), _w()]),
    "nameless-initializer": lambda: _model(inits=[_w(), _w("")]),
    "unnamed-initializer": lambda: _model(inits=[_w(), onnx.TensorProto(
        data_type=F, dims=[1], raw_data=b"\0" * 4)]),
    "ir3-initializer-not-an-input": lambda: _model(ir=3),
    "ir3-initializer-an-input": lambda: _model(ir=3, inputs=[
        helper.make_tensor_value_info("x", F, [1, 4]), helper.make_tensor_value_info("w", F,
                                                                                    [4, 3])]),
    "undefined-type": lambda: _model(inits=[_w(data_type=TensorProto.UNDEFINED)]),
    "two-data-fields": lambda: _model(inits=[_w(float_data=[1.0] * 12)]),
    "string-in-raw-data": lambda: _model(inits=[_w(), _string_raw()]),
    "empty-with-data": lambda: _model(inits=[_w(), onnx.TensorProto(
        name="e", data_type=F, dims=[0, 3], raw_data=b"\0" * 4)]),
}


def _checker_error(m: onnx.ModelProto) -> str | None:
    try:
        onnx.checker.check_model(m)
    except (onnx.checker.ValidationError, ValueError) as e:
        return " ".join(str(e).strip().split("==> Context")[0].split())
    return None


@pytest.mark.parametrize("case", list(CASES))
def test_the_skeleton_fails_exactly_where_the_whole_model_fails(case: str) -> None:
    m = CASES[case]()
    want = _checker_error(m)
    if want is None:
        check(m, "m")
        return
    with pytest.raises(ModelError) as err:
        check(m, "m")
    assert err.value.what == f"invalid ONNX model: {want}"
    assert "\n" not in str(err.value)


def test_plain_initializers_reach_the_checker_as_one_element_stand_ins() -> None:
    big = numpy_helper.from_array(np.ones((256, 64), np.float32), "w")
    q = helper.make_tensor("q", TensorProto.INT4, [3], [1, 2, 3])
    m = _model(inits=[big, q])
    check_tensor_sizes(m, "m")
    s = skeleton(m)
    got = {t.name: t for t in s.graph.initializer}
    assert [t.name for t in s.graph.initializer] == ["w", "q"]  # order and names kept
    assert list(got["w"].dims) == [] and len(got["w"].raw_data) == 4
    assert got["w"].data_type == F
    assert got["q"] == q  # a sub-byte type is checked whole
    assert s.graph.node == m.graph.node and s.opset_import == m.opset_import
    assert s.ByteSize() < 1024 < big.ByteSize()
    assert m.graph.initializer[0] == big  # the model itself is left as it was
