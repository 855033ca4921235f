"""A rank-0 model input (SwiftF0's fmin / fmax: scalars in Hz) given in the calibration .npz as
one value: `edgesim quantize` stopped with "internal error (RuntimeError: Unable to handle
object of type <class 'numpy.float32'>)" (onnxruntime refuses numpy scalars as feeds). The
quantised file is checked against the float model run in onnxruntime on the same inputs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def _model() -> onnx.ModelProto:
    """y = (x * gain) @ w: x [1, 16], gain a scalar input, w [16, 8]."""
    w = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "gain"], ["h"], name="scale"),
         helper.make_node("MatMul", ["h", "w"], ["y"], name="proj")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16]),
         helper.make_tensor_value_info("gain", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_quantize_takes_a_scalar_input_from_the_calibration_file(tmp_path) -> None:
    model, npz, out = tmp_path / "m.onnx", tmp_path / "calib.npz", tmp_path / "q.onnx"
    onnx.save(_model(), model)
    x = np.random.default_rng(1).standard_normal((8, 16)).astype(np.float32)
    gain = np.array(0.5, np.float32)
    np.savez(npz, x=x, gain=gain)
    run = subprocess.run([sys.executable, "-m", "edgesim", "quantize", str(model), "--bits", "8",
                          "--calib", str(npz), "-o", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    ref = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    names = {i.name for i in got.get_inputs()}
    for row in x:
        feed = {"x": row[None], "gain": gain}
        a = ref.run(None, feed)[0]
        b = got.run(None, {k: v for k, v in feed.items() if k in names})[0]
        # 8-bit weights and activations: within a few percent of the output's scale
        assert np.abs(a - b).max() < 0.05 * np.abs(a).max()
