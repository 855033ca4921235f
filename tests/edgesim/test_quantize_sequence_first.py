"""`edgesim quantize --calib-random` on a sequence-first recurrence: the LSTM's input [T, B, I]
(layout 0) holds samples on axis 1, so random calibration makes [T, 1, I] feeds rather than
asking for T samples per batch (it used to fail: "no calibration batches were given")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from compiler.frontend.inputs import resolve_batch_axes
from edgesim import api

STEPS, IN, HIDDEN = 20, 64, 16


def lstm_model(layout: int) -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    weights = {"W": (1, 4 * HIDDEN, IN), "R": (1, 4 * HIDDEN, HIDDEN), "B": (1, 8 * HIDDEN)}
    inits = [numpy_helper.from_array((0.2 * rng.standard_normal(s)).astype(np.float32), n)
             for n, s in weights.items()]
    x_shape = [STEPS, 1, IN] if layout == 0 else [1, STEPS, IN]
    y_shape = [STEPS, 1, 1, HIDDEN] if layout == 0 else [1, STEPS, 1, HIDDEN]
    node = helper.make_node("LSTM", ["x", "W", "R", "B"], ["y"], hidden_size=HIDDEN,
                            layout=layout)
    graph = helper.make_graph([node], "lstm", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, x_shape)], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, y_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    return model


def test_batch_axis_of_a_recurrence_input_follows_its_layout() -> None:
    assert resolve_batch_axes(lstm_model(0).graph, {}) == {"x": 1}
    assert resolve_batch_axes(lstm_model(1).graph, {}) == {"x": 0}
    assert resolve_batch_axes(lstm_model(0).graph, {"x": 0}) == {"x": 0}  # declared wins


def test_quantize_sequence_first_lstm_with_random_calibration(tmp_path: Path) -> None:
    source, out = tmp_path / "lstm.onnx", tmp_path / "q.onnx"
    onnx.save(lstm_model(0), source)
    api.quantize(str(source), 8, out, calib_random=4, kernel_check="off")
    x = np.random.default_rng(0).standard_normal((STEPS, 1, IN)).astype(np.float32)
    run = lambda path: ort.InferenceSession(  # noqa: E731
        str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    want, got = run(source), run(out)
    assert got.shape == want.shape
    # W8A8 of a tanh-bounded recurrence: within a few int8 steps of onnxruntime's float LSTM
    assert np.abs(got - want).max() < 0.1
