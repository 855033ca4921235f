"""The `--input-shape` hint for a dynamic dimension (compiler/frontend/shape_hint.py): it
always suggested 224 for an image side, so ddddocr's captcha reader (gray [1, 1, 64,
'image_width']) got "input1=1x1x64x224" with no word on where 224 came from."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.errors import ModelError
from compiler.frontend import load
from compiler.frontend.inputs import input_shape_hint
from edgesim import cli


def _conv_model(dims: list) -> object:
    """x (NCHW, 1 channel) -> Conv 3x3 stride 2 -> y."""
    w = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, "h", "w"])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_free_image_width_is_guessed_from_the_static_height_and_says_so() -> None:
    with pytest.raises(ModelError) as err:
        load(_conv_model([1, 1, 64, "image_width"]))
    message = str(err.value)
    assert message == (
        "input x: dimension 3 ('image_width') is dynamic; pass --input-shape x=1x1x64x64 "
        "(guessed: 'image_width' = 64, a square image, as the static height; give the sizes "
        "you run at)")
    # the suggested shape is one the CLI parses and the model loads at
    given = cli.parse_input_shapes([message.split("--input-shape ")[1].split()[0]])
    assert load(_conv_model([1, 1, 64, "image_width"]), given).types["y"].shape == (1, 2, 32, 32)


@pytest.mark.parametrize(("dims", "example", "why"), [
    (["batch", "height", "width", 3], "1x224x224x3",  # NHWC, both sides free
     "'batch' = 1, a batch; 'height', 'width' = 224, a common image side"),
    (["N", 3, "H", 320], "1x3x320x320", "'N' = 1, a batch; 'H' = 320, a square image, "
     "as the static width"),
    ([1, "seq", 768], "1x128x768", "'seq' = 128, a placeholder (a common sequence length)"),
    (["T", 80], "1x80", "'T' = 1, axis 0, taken as a batch"),
    ([1, 7, "H", "W"], "1x7x128x128",  # 7 channels: not taken as an image
     "'H', 'W' = 128, a placeholder (a common sequence length)"),
])
def test_each_guess_names_its_dimension_and_reason(dims: list, example: str, why: str) -> None:
    hint = input_shape_hint("x", dims)
    assert hint == f"--input-shape x={example} (guessed: {why}; give the sizes you run at)"


def test_a_fully_static_shape_has_nothing_to_explain() -> None:
    assert input_shape_hint("x", [1, 3, 8, 8]) == "--input-shape x=1x3x8x8"
