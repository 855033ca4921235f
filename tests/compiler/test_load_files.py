"""The ONNX frontend's reading of files: external data (inside the model's folder only), and
truncated, garbage, missing or checker-failing files refused with a ModelError naming them."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import helper

from compiler.errors import ModelError
from compiler.frontend.load import load
from tests.compiler.load_models import RNG, F, assert_same_as_ort, init, model, x_feed

# --- external data ------------------------------------------------------------------------------


def _external_model(folder, w, location="w.bin"):
    """Save y = x + w with w stored externally in `folder`; return the model path."""
    m = model([helper.make_node("Add", ["x", "w"], ["y"])],
              [("x", F, [4, 8])], [("y", F, [4, 8])], [init("w", w)])
    path = os.path.join(folder, "m.onnx")
    onnx.save(m, path, save_as_external_data=True, location=location, size_threshold=0)
    return path


def _point_external_data_at(path, location):
    m = onnx.load(path, load_external_data=False)
    for entry in m.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    onnx.save(m, path)


def test_external_data_inside_the_folder_loads(tmp_path):
    w = RNG.standard_normal((4, 8)).astype(np.float32)
    path = _external_model(str(tmp_path), w)
    g = assert_same_as_ort(path, x_feed(4, 8))
    np.testing.assert_array_equal(g.weights["w"], w)


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_external_data_outside_the_folder_is_rejected(tmp_path, kind):
    inner = tmp_path / "model"
    inner.mkdir()
    path = _external_model(str(inner), np.ones((4, 8), np.float32))
    (tmp_path / "x").write_bytes(np.zeros(32, np.float32).tobytes())
    location = {"dotdot": "../x", "absolute": str(tmp_path / "x"), "symlink": "link.bin"}[kind]
    if kind == "symlink":
        os.symlink(tmp_path / "x", inner / "link.bin")
    _point_external_data_at(path, location)
    with pytest.raises(ModelError) as err:
        load(path)
    assert err.value.where == f"{path}: initializer w"
    reason = "is an absolute path" if kind == "absolute" else "leaves the model's folder"
    assert err.value.what == f"external data location '{location}' {reason}"


def test_external_data_of_an_in_memory_model_is_rejected(tmp_path):
    path = _external_model(str(tmp_path), np.ones((4, 8), np.float32))
    with pytest.raises(ModelError, match="initializer w"):
        load(onnx.load(path, load_external_data=False))


# --- bad files ----------------------------------------------------------------------------------


def _valid_bytes():
    w = init("w", RNG.standard_normal((16, 16)).astype(np.float32))
    m = model([helper.make_node("Add", ["x", "w"], ["y"])],
              [("x", F, [16, 16])], [("y", F, [16, 16])], [w])
    return m.SerializeToString()


@pytest.mark.parametrize("content", [
    pytest.param(lambda: _valid_bytes()[: len(_valid_bytes()) // 2], id="truncated"),
    pytest.param(lambda: bytes(range(256)) * 4, id="garbage"),
    pytest.param(lambda: b"", id="empty"),
    pytest.param(lambda: b"hello, this is text", id="text"),
])
def test_invalid_files_raise_model_error(tmp_path, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content())
    with pytest.raises(ModelError, match="not a valid ONNX model") as err:
        load(str(path))
    assert err.value.where == str(path)


def test_missing_file_raises_model_error(tmp_path):
    with pytest.raises(ModelError, match="cannot read"):
        load(tmp_path / "nope.onnx")


def test_checker_failure_names_the_node():
    m = model([helper.make_node("Relu", ["x", "x"], ["y"], name="r1")],
              [("x", F, [2])], [("y", F, [2])])
    with pytest.raises(ModelError) as err:
        load(m)
    assert err.value.where.endswith("node r1")
    assert "input size 2" in err.value.what
