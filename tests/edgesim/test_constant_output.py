"""A graph output computed by a constant region edgesim does not lower (Range -> Sin) is folded
into an initializer that stays a graph output: the emitted file gives onnxruntime's value of it,
and the other output, first or not, is scored and shown in report.md and report.html.
Oracle: onnxruntime on the float model, and report.json's figures for the report lines."""

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

F = TensorProto.FLOAT
D = 16


def _model(constant_first: bool) -> onnx.ModelProto:
    """y = x W^T (a linear layer) and c = sin(range(0.5, 3, 0.5)), built from initializers."""
    scalar = {"start": 0.5, "limit": 3.0, "delta": 0.5}
    nodes = [helper.make_node("Gemm", ["x", "w"], ["y"], transB=1),
             helper.make_node("Range", list(scalar), ["r"]),
             helper.make_node("Sin", ["r"], ["c"])]
    outs = [helper.make_tensor_value_info("c", F, [5]),
            helper.make_tensor_value_info("y", F, [1, D])]
    w = np.random.default_rng(14).standard_normal((D, D)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"),
             *(numpy_helper.from_array(np.float32(v), k) for k, v in scalar.items())]
    graph = helper.make_graph(nodes, "const_out", [helper.make_tensor_value_info("x", F, [1, D])],
                              outs if constant_first else outs[::-1], inits)
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
    onnx.save(_model(constant_first=True), tmp_path / "m.onnx")
    x = np.random.default_rng(15).standard_normal((32, D)).astype(np.float32)
    api.compile(str(tmp_path / "m.onnx"), "rpi5", outdir=tmp_path / "o", method="uniform",
                calib={"x": x}, quiet=True)
    fid = json.loads((tmp_path / "o" / "report.json").read_text())["fidelity"]
    assert fid["output"] == "c" and set(fid["other_outputs"]) == {"y"}
    y = fid["other_outputs"]["y"]
    line = f"fidelity of tensor output y: cosine {y['cosine']:.5f}, SQNR {y['sqnr_db']:.1f} dB"
    assert f"- {line}\n" in (tmp_path / "o" / "report.md").read_text()
    assert f"<li>{line}</li>" in (tmp_path / "o" / "report.html").read_text()
