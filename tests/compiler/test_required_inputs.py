"""Inputs an op needs, absent from the node: a ModelError naming the node, not a crash deep in
a rule (found by mypy, issue 19: the rules read `Node.spec` / constant inputs typed `| None`)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from compiler.errors import ModelError
from compiler.frontend.quantized_reader import Reader
from compiler.ir import Spec
from compiler.ops.opdef import Node
from compiler.ops.reshape import lower_expand, lower_reshape, lower_slice, lower_tile

X = Spec((2, 3, 4))


def _node(op_type: str, inputs: tuple[str, ...]) -> Node:
    return Node(f"my_{op_type.lower()}", op_type, inputs, ("y",), {"x": X}, {})


def test_required_spec_names_the_node_and_input() -> None:
    node = _node("Relu", ("",))
    assert node.spec(0) is None
    with pytest.raises(ModelError, match=r"^my_relu: Relu needs input 0, which is absent$"):
        node.required_spec(0)
    assert _node("Relu", ("x",)).required_spec(0) == X


@pytest.mark.parametrize(("op_type", "rule"), [("Reshape", lower_reshape),
                                                ("Expand", lower_expand), ("Tile", lower_tile)])
def test_absent_shape_input_is_a_model_error(op_type: str, rule: Callable[[Node], object]) -> None:
    """Before: `None` reached the shape arithmetic (TypeError)."""
    with pytest.raises(ModelError, match=rf"^my_{op_type.lower()}: {op_type} needs its "):
        rule(_node(op_type, ("x", "")))


def test_slice_with_starts_but_no_ends() -> None:
    """Slice-1 keeps starts / ends as attributes; only starts given used to crash in zip."""
    with pytest.raises(ModelError, match="^my_slice: Slice has starts but no ends$"):
        lower_slice(_node("Slice", ("x",)), starts=(0,))
    lowered = lower_slice(_node("Slice", ("x",)), starts=(1,), ends=(2,), axes=(0,))
    assert lowered.layers[0].attrs["starts"] == (1,)


def test_quantized_reader_needs_constant_initializers() -> None:
    """A DequantizeLinear scale the graph computes cannot be folded into a weight."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["s_in"], ["scale"])], "g",
        [helper.make_tensor_value_info("s_in", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("scale", TensorProto.FLOAT, [1])],
        [onnx.numpy_helper.from_array(np.array([2.0], np.float32), "w")])
    reader = Reader(helper.make_model(graph))
    np.testing.assert_array_equal(reader.constant("w"), [2.0])
    with pytest.raises(ModelError, match="^tensor scale: must be an initializer here$"):
        reader.constant("scale")
