"""Integer calibration inputs that index an embedding table are checked against the table:
g2p-id's phoneme BERT given token 99 for its 32-row table stopped `edgesim compile` inside the
HAWQ analysis with onnxruntime's "indices element out of data bounds", reported as "internal
error ... this is a bug in edgesim" (exit 1). onnxruntime is the oracle of which indices a
Gather accepts."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.frontend import load
from edgesim import calibration as cal
from edgesim.errors import UserError

ROWS = 10


def _model() -> onnx.ModelProto:
    """ids [1, 4] int64 -> Gather from a [ROWS, 8] table -> MatMul [8, 4]."""
    rng = np.random.default_rng(0)
    table = numpy_helper.from_array(rng.standard_normal((ROWS, 8)).astype(np.float32), "table")
    w = numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["e"], name="embed"),
         helper.make_node("MatMul", ["e", "w"], ["y"], name="proj")], "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4])], [table, w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _ort_accepts(ids: np.ndarray) -> bool:
    sess = ort.InferenceSession(_model().SerializeToString(), providers=["CPUExecutionProvider"])
    try:
        for i in range(len(ids)):
            sess.run(None, {"ids": ids[i:i + 1]})
    except Exception:  # onnxruntime's InvalidArgument (its exception classes are not public)
        return False
    return True


CASES = {"in range": ([0, 3, 9, 1], True), "negative, from the end": ([-10, -1, 0, 2], True),
         "one past the end": ([0, 10, 1, 2], False), "below -rows": ([-11, 0, 1, 2], False),
         "far out (a vocabulary too large)": ([99, 0, 1, 2], False)}


@pytest.mark.parametrize("name", list(CASES))
def test_indices_are_checked_as_onnxruntime_does(name: str) -> None:
    values, valid = CASES[name]
    ids = np.array([values, [1, 2, 3, 4]], np.int64)
    assert _ort_accepts(ids) == valid  # the oracle agrees with the case's label
    g = load(_model())
    if valid:
        np.testing.assert_array_equal(cal.validate(g, {"ids": ids}, "calib.npz")["ids"], ids)
    else:
        with pytest.raises(UserError, match=r"calib\.npz: ids.*table of 10 rows"):
            cal.validate(g, {"ids": ids}, "calib.npz")


def test_compile_refuses_out_of_range_ids_in_one_line(tmp_path) -> None:
    model, npz = tmp_path / "m.onnx", tmp_path / "calib.npz"
    onnx.save(_model(), model)
    np.savez(npz, ids=np.array([[0, 1, 2, 99]] * 4, np.int64))
    out = subprocess.run([sys.executable, "-m", "edgesim", "compile", str(model), "--target",
                          "rpi5", "--calib", str(npz), "-o", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("edgesim:")]
    assert len(lines) == 1 and "ids: values 0..99 index a table of 10 rows" in lines[0]
    assert "Traceback" not in out.stderr and not (tmp_path / "out").exists()
