"""A graph output computed by a constant region edgesim does not lower (Range -> Sin) is folded
into an initializer that stays a graph output: the emitted file gives onnxruntime's value of it,
the headline fidelity is on the first output that depends on an input (not on the trivially
exact constant), and the other scored outputs are shown in report.md and report.html.
Oracle: onnxruntime on the float model, closed-form SQNR of a known additive error, and
report.json's figures for the report lines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.frontend import load
from edgesim import api
from edgesim import calibration as cal
from edgesim.fidelity import measure_fidelity
from edgesim.float_pass import float_pass

F = TensorProto.FLOAT
D = 16


def _model(constant_first: bool, relu: bool = False,
           error: np.ndarray | None = None) -> onnx.ModelProto:
    """y = x W^T (a linear layer; plus `error` if given), c = sin(range(0.5, 3, 0.5)) built
    from initializers, and with `relu` a third output r = relu(y)."""
    scalar = {"start": 0.5, "limit": 3.0, "delta": 0.5}
    nodes = [helper.make_node("Gemm", ["x", "w"], ["y" if error is None else "xw"], transB=1),
             helper.make_node("Range", list(scalar), ["r"]),
             helper.make_node("Sin", ["r"], ["c"])]
    outs = [helper.make_tensor_value_info("c", F, [5]),
            helper.make_tensor_value_info("y", F, [1, D])]
    w = np.random.default_rng(14).standard_normal((D, D)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"),
             *(numpy_helper.from_array(np.float32(v), k) for k, v in scalar.items())]
    if error is not None:
        nodes.append(helper.make_node("Add", ["xw", "err"], ["y"]))
        inits.append(numpy_helper.from_array(error.astype(np.float32), "err"))
    outs = outs if constant_first else outs[::-1]
    if relu:
        nodes.append(helper.make_node("Relu", ["y"], ["relu"]))
        outs.append(helper.make_tensor_value_info("relu", F, [1, D]))
    graph = helper.make_graph(nodes, "const_out", [helper.make_tensor_value_info("x", F, [1, D])],
                              outs, inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


@pytest.mark.ort
@pytest.mark.parametrize("constant_first", [True, False])
def test_a_folded_constant_output_keeps_onnxruntimes_value(tmp_path: Path,
                                                           constant_first: bool) -> None:
    m = _model(constant_first)
    g = load(m)
    assert "c" in g.outputs and not any("c" in x.outputs for x in g.layers)  # folded
    onnx.save(m, tmp_path / "m.onnx")
    x = np.random.default_rng(15).standard_normal((32, D)).astype(np.float32)
    r = api.compile(str(tmp_path / "m.onnx"), "rpi5", outdir=tmp_path / "o", method="uniform",
                    calib={"x": x}, quiet=True)
    names = ["c", "y"]
    want = ort.InferenceSession(str(tmp_path / "m.onnx")).run(names, {"x": x[:1]})
    got = ort.InferenceSession(r.files["model"]).run(names, {"x": x[:1]})
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got[0], np.sin(np.arange(0.5, 3.0, 0.5)), rtol=1e-6)
    np.testing.assert_allclose(got[1], want[1], rtol=0.1, atol=0.1)  # 8-bit linear layer


@pytest.mark.ort
def test_report_shows_every_scored_output(tmp_path: Path) -> None:
    onnx.save(_model(constant_first=True, relu=True), tmp_path / "m.onnx")
    x = np.random.default_rng(15).standard_normal((32, D)).astype(np.float32)
    api.compile(str(tmp_path / "m.onnx"), "rpi5", outdir=tmp_path / "o", method="uniform",
                calib={"x": x}, quiet=True)
    fid = json.loads((tmp_path / "o" / "report.json").read_text())["fidelity"]
    assert fid["output"] == "y" and set(fid["other_outputs"]) == {"relu"}
    r = fid["other_outputs"]["relu"]
    line = (f"fidelity of tensor output relu: cosine {r['cosine']:.5f}, "
            f"SQNR {r['sqnr_db']:.1f} dB")
    assert f"- {line}\n" in (tmp_path / "o" / "report.md").read_text()
    assert f"<li>{line}</li>" in (tmp_path / "o" / "report.html").read_text()


@pytest.mark.ort
def test_the_headline_fidelity_is_on_the_first_output_that_depends_on_an_input(
        tmp_path: Path) -> None:
    """A constant first output scores cosine 1 and SQNR inf whatever the quantiser did: the
    headline is on y, whose SQNR against a known additive error is closed-form."""
    g = load(_model(constant_first=True))
    x = np.random.default_rng(16).standard_normal((16, D)).astype(np.float32)
    data = cal.CalibrationData({"x": x}, "t")
    ref = float_pass(g, data, stats=False)
    w = np.random.default_rng(14).standard_normal((D, D)).astype(np.float32)
    np.testing.assert_allclose(ref.outputs, x @ w.T, rtol=1e-5, atol=1e-5)
    error = np.linspace(-1.0, 1.0, D).reshape(1, D)
    emitted = tmp_path / "emitted.onnx"
    onnx.save(_model(constant_first=True, error=error), emitted)
    fid = measure_fidelity(g, emitted, ref.outputs, data, None, others=ref.others)
    y = x.astype(np.float64) @ w.T.astype(np.float64)
    want = 10 * np.log10(np.sum(y ** 2) / (len(x) * np.sum(error ** 2)))
    assert fid["output"] == "y" and np.isfinite(want)
    assert fid["sqnr_db"] == pytest.approx(want, abs=1e-3)
