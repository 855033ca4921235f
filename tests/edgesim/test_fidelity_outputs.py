"""The compile's fidelity check scores every float output, not the first alone: a model whose
first output survives quantisation and whose second does not is flagged and fails
--min-fidelity. Oracle: closed-form SQNR and cosine of a known additive error."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.frontend import load
from edgesim import calibration as cal
from edgesim.errors import UserError
from edgesim.fidelity import check_fidelity, measure_fidelity

F = TensorProto.FLOAT
D = 8


def _two_outputs(error: np.ndarray) -> onnx.ModelProto:
    """y1 = x, y2 = 3 x + `error` (the float model has error 0)."""
    nodes = [helper.make_node("Identity", ["x"], ["y1"]),
             helper.make_node("Mul", ["x", "three"], ["s"]),
             helper.make_node("Add", ["s", "err"], ["y2"])]
    graph = helper.make_graph(
        nodes, "two", [helper.make_tensor_value_info("x", F, [1, D])],
        [helper.make_tensor_value_info("y1", F, [1, D]),
         helper.make_tensor_value_info("y2", F, [1, D])],
        [numpy_helper.from_array(np.full((1,), 3.0, np.float32), "three"),
         numpy_helper.from_array(error.astype(np.float32), "err")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.mark.ort
def test_a_collapsed_second_output_is_flagged_and_fails_the_minimum(tmp_path):
    x = np.random.default_rng(0).standard_normal((16, D)).astype(np.float32)
    error = np.linspace(-2.0, 2.0, D).reshape(1, D)
    emitted = tmp_path / "emitted.onnx"
    onnx.save(_two_outputs(error), emitted)
    g = load(_two_outputs(np.zeros((1, D))))
    fid = measure_fidelity(g, emitted, x.copy(), cal.CalibrationData({"x": x}, "t"), None,
                           others={"y2": 3 * x})

    want_sqnr = 10 * np.log10(np.sum((3.0 * x) ** 2) / (len(x) * np.sum(error ** 2)))
    test = 3 * x + error
    want_cos = np.mean(np.sum(3 * x * test, 1)
                       / (np.linalg.norm(3 * x, axis=1) * np.linalg.norm(test, axis=1)))
    second = fid["other_outputs"]["y2"]
    assert second["sqnr_db"] == pytest.approx(want_sqnr, abs=1e-3) and want_sqnr < 10
    assert second["cosine"] == pytest.approx(want_cos, abs=1e-5)
    assert fid["cosine"] == pytest.approx(1.0) and fid["output"] == "y1"  # the first is exact
    assert fid["collapsed"].startswith("output y2: the output's SQNR with fp32 is "
                                       f"{want_sqnr:.1f} dB")
    with pytest.raises(UserError, match=f"cosine of output y2 with fp32 is {want_cos:.4f}"):
        check_fidelity(fid, min(0.99, want_cos + 0.01))
    check_fidelity(fid, want_cos - 0.01)  # the worst output meets a lower minimum
