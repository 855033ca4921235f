"""api.quantize reads a model as compile does (input shapes, pinned values, batch axes), and
its random calibration feeds every input at its batch: a hand-built model with silero's
interface, an input [B, 8] and a state [2, B, 4] whose samples are on axis 1."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesim import api
from edgesim.errors import UserError
from tests.edgesim.test_cli import _one_line_error, edgesim

pytestmark = pytest.mark.ort


def _stateful(batch: int) -> onnx.ModelProto:
    """y = x @ W; new_state = state * 0.5 + y (broadcast over the state's first axis)."""
    w = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="proj/MatMul"),
             helper.make_node("Mul", ["state", "half"], ["kept"], name="keep"),
             helper.make_node("Add", ["kept", "y"], ["new_state"], name="mix")]
    graph = helper.make_graph(
        nodes, "stateful",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 8]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, batch, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4]),
         helper.make_tensor_value_info("new_state", TensorProto.FLOAT, [2, batch, 4])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.float32(0.5), "half")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(path, feed):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


@pytest.mark.parametrize("batch", [1, 3])
def test_quantize_takes_batch_axes_and_calibrates_state_on_its_axis(tmp_path, batch: int
                                                                     ) -> None:
    """Old code: api.quantize took no batch_axes, and random calibration fed state
    [1, 1, 4] (onnxruntime: 'state' index 0 got 1, expected 2)."""
    src = tmp_path / "f.onnx"
    onnx.save(_stateful(batch), src)
    out = tmp_path / "q.onnx"
    r = api.quantize(str(src), 8, out, calib_random=2 * batch, batch_axes={"state": 1})
    assert r.calibration_random and any(la.w_bits == 8 for la in r.layers)
    rng = np.random.default_rng(1)
    feed = {"x": rng.standard_normal((batch, 8)).astype(np.float32),
            "state": rng.standard_normal((2, batch, 4)).astype(np.float32)}
    want, got = _run(src, feed), _run(out, feed)
    for a, b in zip(want, got, strict=True):
        assert b.shape == a.shape
        assert np.abs(b - a).max() < 0.1 * np.abs(a).max()  # 8-bit error, not a wrong layout


def test_state_read_with_batch_on_axis_0_is_refused_in_one_line(tmp_path) -> None:
    """Without batch_axes the state's axis 0 (size 2) reads as its batch, the input's is 1."""
    src = tmp_path / "f.onnx"
    onnx.save(_stateful(1), src)
    with pytest.raises(UserError) as e:
        api.quantize(str(src), 8, tmp_path / "q.onnx", calib_random=2)
    assert "\n" not in str(e.value) and "state axis 0 = 2" in str(e.value)
    assert not (tmp_path / "q.onnx").exists()


def test_batch_axes_on_a_read_graph_are_refused(tmp_path) -> None:
    from edgesim.loading import load_graph

    g = load_graph(_stateful(1), batch_axes={"state": 1})
    with pytest.raises(UserError, match="already read"):
        api.quantize(g, 8, tmp_path / "q.onnx", calib_random=2, batch_axes={"state": 1})


def test_quantize_cli_takes_the_batch_axis(tmp_path) -> None:
    """`edgesim quantize --batch-axis` as `compile` takes it (old code: unrecognized argument);
    without it, the refusal is one line, exit 2."""
    src, out = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(_stateful(1), src)
    args = ("quantize", str(src), "--bits", "8", "--calib-random", "2", "-o", str(out))
    _one_line_error(edgesim(*args), "state axis 0 = 2", "--batch-axis")
    res = edgesim(*args, "--batch-axis", "state=1")
    assert res.returncode == 0, res.stderr
    feed = {"x": np.ones((1, 8), np.float32), "state": np.ones((2, 1, 4), np.float32)}
    assert [a.shape for a in _run(out, feed)] == [(1, 4), (2, 1, 4)]
