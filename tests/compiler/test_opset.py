"""The opset upgrade (`compiler.frontend.opset`): the converter is given the model without its
weights' bytes, and the result is onnx's own conversion of the whole model, byte for byte."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.frontend import opset

F = TensorProto.FLOAT


def _model() -> onnx.ModelProto:
    """Opset 12: a weight initializer, a Constant weight, a Constant inside an If branch
    and a Squeeze whose axes the upgrade moves from an attribute to an input."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(64, 64)).astype(np.float32), "w")
    c = numpy_helper.from_array(rng.normal(size=(64, 64)).astype(np.float32), "c")
    b = numpy_helper.from_array(rng.normal(size=(1, 64)).astype(np.float32), "b")
    then = helper.make_graph([helper.make_node("Constant", [], ["t"], value=b)], "then", [],
                             [helper.make_tensor_value_info("t", F, [1, 64])])
    other = helper.make_graph([helper.make_node("Neg", ["b_in"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", F, [1, 64])])
    nodes = [helper.make_node("Constant", [], ["cw"], value=c),
             helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("MatMul", ["h", "cw"], ["h2"]),
             helper.make_node("If", ["flag"], ["bias"], then_branch=then, else_branch=other),
             helper.make_node("Add", ["h2", "bias"], ["h3"]),
             helper.make_node("Unsqueeze", ["h3"], ["u"], axes=[0]),
             helper.make_node("Squeeze", ["u"], ["y"], axes=[0])]
    graph = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info("x", F, [1, 64]),
                     helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
                     helper.make_tensor_value_info("b_in", F, [1, 64])],
        [helper.make_tensor_value_info("y", F, [1, 64])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)], ir_version=7)


def test_the_converter_sees_no_weight_and_the_result_is_its_whole_conversion(monkeypatch):
    m = _model()
    source = m.SerializeToString()
    whole = onnx.version_converter.convert_version(m, opset.TARGET_OPSET).SerializeToString()
    seen: list[int] = []
    convert = onnx.version_converter.convert_version

    def watched(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
        seen.append(max(len(t.raw_data) for _, t in opset._keyed_tensors(model.graph)))
        return convert(model, version)

    monkeypatch.setattr(onnx.version_converter, "convert_version", watched)
    out = opset.upgrade_opset(m, "m")
    assert out.SerializeToString() == whole
    assert m.SerializeToString() == source  # the caller's model is as it was
    assert seen == [64 * 4]  # the largest tensor it saw: If's [1, 64] bias (64 x 64 left)


def test_a_weight_the_converter_renames_is_converted_whole(monkeypatch):
    m = _model()
    whole = onnx.version_converter.convert_version(m, opset.TARGET_OPSET).SerializeToString()
    convert = onnx.version_converter.convert_version

    def renaming(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
        out = convert(model, version)
        if not out.graph.initializer[0].raw_data:  # the weightless call: lose "w"'s name
            out.graph.initializer[0].name = "w_renamed"
        return out

    monkeypatch.setattr(onnx.version_converter, "convert_version", renaming)
    assert opset.upgrade_opset(m, "m").SerializeToString() == whole


@pytest.mark.parametrize("version", [17, 21])
def test_opset_17_and_newer_are_not_converted(version):
    m = _model()
    m.opset_import[0].version = version
    assert opset.upgrade_opset(m, "m") is m
