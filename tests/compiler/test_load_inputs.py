"""The ONNX frontend's input shapes: a dynamic batch set to 1 with a note, other dynamic dims
asking for --input-shape, given shapes checked against the model's fixed dims and rank."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from compiler.errors import ModelError
from compiler.frontend.load import load
from compiler.ir import Spec
from tests.compiler.load_models import RNG, F, assert_same_as_ort, init, model, x_feed

# --- input shapes -------------------------------------------------------------------------------


def _image_model(dims):
    return model([helper.make_node("Relu", ["x"], ["y"])], [("x", F, dims)], [("y", F, dims)])


def test_dynamic_batch_defaults_to_one_with_a_note():
    g = assert_same_as_ort(_image_model(["N", 3, 4, 4]), x_feed(1, 3, 4, 4))
    assert g.types["x"].shape == (1, 3, 4, 4)
    assert g.notes == ("input 'x': batch dimension 'N' set to 1",)


def test_dynamic_spatial_dims_need_a_shape():
    with pytest.raises(ModelError) as err:
        load(_image_model(["N", 3, "H", "W"]))
    assert str(err.value) == (
        "input x: dimension 2 ('H') is dynamic; pass --input-shape x=1x3x224x224 (guessed: "
        "'H', 'W' = 224, a common image side; give the sizes you run at)")


def test_example_shape_has_the_inputs_rank():
    m = model([helper.make_node("Gather", ["emb", "ids"], ["y"])],
              [("ids", TensorProto.INT64, ["batch", "seq"])], [("y", F, ["batch", "seq", 4])],
              [init("emb", np.zeros((10, 4), np.float32))])
    with pytest.raises(ModelError, match=r"dimension 1 \('seq'\) is dynamic; pass "
                                         r"--input-shape ids=1x128 \(guessed: 'seq' = 128, a "):
        load(m)


def test_input_shapes_fix_dynamic_dims():
    m = _image_model(["N", 3, "H", "W"])
    g = assert_same_as_ort(m, x_feed(2, 3, 5, 6), input_shapes={"x": (2, 3, 5, 6)})
    assert g.types["y"].shape == (2, 3, 5, 6) and g.notes == ()
    g = load(_image_model([1, 3, 8, 8]), {"x": [1, 3, 8, 8]})  # a fixed dim given as is
    assert g.types["x"].shape == (1, 3, 8, 8)


def test_a_given_shape_that_contradicts_a_fixed_dim_is_refused():
    """onnxruntime refuses to run such an input (the oracle), so edgesim must not cost,
    calibrate and emit the model at it (ddddocr's YOLOX is fixed at 416: at 320 the compile
    ended in an onnxruntime error, `inspect` counted 1.88 G MACs for 3.18 G)."""
    m = _image_model([1, 3, 8, 8])
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="dimensions"):
        sess.run(None, x_feed(1, 3, 4, 4))
    with pytest.raises(ModelError) as err:
        load(m, {"x": [1, 3, 4, 4]})
    assert str(err.value) == ("input x: dimension 2 is fixed at 8 by the model; the given "
                              "shape 1x3x4x4 has 4 there")


def test_int64_token_inputs_with_shapes():
    emb = RNG.standard_normal((10, 4)).astype(np.float32)
    m = model([helper.make_node("Gather", ["emb", "input_ids"], ["y"])],
              [("input_ids", TensorProto.INT64, ["batch", "seq"])],
              [("y", F, ["batch", "seq", 4])], [init("emb", emb)])
    feeds = {"input_ids": RNG.integers(0, 10, (1, 5)).astype(np.int64)}
    g = assert_same_as_ort(m, feeds, input_shapes={"input_ids": (1, 5)})
    assert g.types["input_ids"] == Spec((1, 5), "int64")


@pytest.mark.parametrize("shapes, message", [
    ({"z": (1, 3)}, "input z: no such graph input; the model's inputs are x"),
    ({"x": (1, 3)}, "input x: the model declares rank 4 but the given shape 1x3 has rank 2"),
    ({"x": (1, 3, -1, 4)}, "input x: shape [1, 3, -1, 4] has a negative dimension"),
])
def test_bad_input_shapes_are_rejected(shapes, message):
    with pytest.raises(ModelError) as err:
        load(_image_model(["N", 3, "H", "W"]), shapes)
    assert str(err.value) == message
