"""Loading a file reads it once and checks it once, without a serialised copy of its weights
(the checker sees a skeleton), keeps the checker's errors and the external-data rules, and
does not modify a caller's ModelProto."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.errors import ModelError
from compiler.executor import run
from compiler.frontend.load import load
from tests.compiler.opcheck import run_ort

F = TensorProto.FLOAT


def _matmul_model(w: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
        [helper.make_tensor_value_info("x", F, [1, w.shape[0]])],
        [helper.make_tensor_value_info("y", F, [1, w.shape[1]])],
        [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _checker_args(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    seen: list[object] = []
    real = onnx.checker.check_model

    def spy(model: object, *args: object, **kw: object) -> None:
        seen.append(model)
        real(model, *args, **kw)  # type: ignore[arg-type]
    monkeypatch.setattr(onnx.checker, "check_model", spy)
    return seen


def test_a_file_is_checked_once_without_its_weights_and_runs_like_onnxruntime(tmp_path,
                                                                              monkeypatch):
    w = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    path = tmp_path / "m.onnx"
    onnx.save(_matmul_model(w), path)
    seen = _checker_args(monkeypatch)
    opened: list[str] = []
    real_open = open

    def spy_open(file, *args, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        if os.fspath(file) == os.fspath(path):
            opened.append(os.fspath(file))
        return real_open(file, *args, **kw)
    monkeypatch.setattr("builtins.open", spy_open)
    g = load(path)
    assert opened == [os.fspath(path)]  # read once
    assert len(seen) == 1 and isinstance(seen[0], onnx.ModelProto)
    assert seen[0].ByteSize() < w.nbytes // 10  # the weight's 8 kB are not in it
    x = np.random.default_rng(1).standard_normal((1, 64)).astype(np.float32)
    np.testing.assert_allclose(run(g, {"x": x})["y"], run_ort(_matmul_model(w), {"x": x})[0],
                               rtol=1e-5, atol=1e-6)


def test_a_file_the_checker_rejects_still_names_the_node(tmp_path):
    graph = helper.make_graph([helper.make_node("Relu", ["x", "x"], ["y"], name="r1")], "g",
                              [helper.make_tensor_value_info("x", F, [2])],
                              [helper.make_tensor_value_info("y", F, [2])])
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(ModelError) as err:
        load(path)
    assert err.value.where.endswith("node r1")
    assert "input size 2" in err.value.what


def test_external_data_leaving_the_folder_is_refused_from_a_path(tmp_path):
    m = _matmul_model(np.ones((8, 4), np.float32))
    w = m.graph.initializer[0]
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    w.external_data.add(key="location", value="../outside.bin")
    (tmp_path / "outside.bin").write_bytes(np.ones(32, np.float32).tobytes())
    inner = tmp_path / "inner"
    inner.mkdir()
    onnx.save(m, inner / "m.onnx")
    with pytest.raises(ModelError, match="leaves the model's folder"):
        load(inner / "m.onnx")


def test_a_callers_model_proto_is_left_unchanged():
    m = _matmul_model(np.full((8, 4), 0.5, np.float32))
    before = m.SerializeToString()
    load(m)
    assert m.SerializeToString() == before
