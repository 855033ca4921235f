"""`edgesim evaluate --data` with a rank-0 model input (SwiftF0's fmin / fmax) stored as one
value: it stopped with "internal error (IndexError: list index out of range)". The value is
fed with every chunk; the accuracy is checked against the labels' closed form."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper


def _model() -> onnx.ModelProto:
    """scores [N, 2] = [x, gain - x] per sample: class 1 exactly where x < gain / 2."""
    graph = helper.make_graph(
        [helper.make_node("Sub", ["gain", "x"], ["rest"], name="rest"),
         helper.make_node("Concat", ["x", "rest"], ["scores"], name="cat", axis=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1]),
         helper.make_tensor_value_info("gain", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", 2])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _evaluate(tmp_path, **arrays) -> subprocess.CompletedProcess:
    model, npz = tmp_path / "m.onnx", tmp_path / "data.npz"
    onnx.save(_model(), model)
    np.savez(npz, **arrays)
    return subprocess.run([sys.executable, "-m", "edgesim", "evaluate", str(model), "--data",
                           str(npz), "--runs", "2", "--json"],
                          capture_output=True, text=True, timeout=300)


def test_a_scalar_input_is_fed_with_every_sample(tmp_path) -> None:
    x = np.linspace(0, 1, 10, dtype=np.float32)[:, None]
    gain = np.float32(1.2)
    labels = np.ones(10, np.int64)  # the truth says 1 everywhere; x < 0.6 scores 1
    run = _evaluate(tmp_path, x=x, gain=np.array(gain), labels=labels)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["samples"] == 10
    assert out["accuracy"] == np.mean(x[:, 0] < gain / 2)


def test_a_scalar_input_given_as_an_array_is_one_line(tmp_path) -> None:
    run = _evaluate(tmp_path, x=np.zeros((4, 1), np.float32), gain=np.ones(4, np.float32))
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "gain: shape [4], the model takes one value" in run.stderr
