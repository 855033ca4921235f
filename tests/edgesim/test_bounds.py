"""Loaders bound what they accept before allocating: declared tensor and input sizes, .npz
array headers, YAML size/depth/aliases, sweep-space cardinality -- each refused at once with
the project's one-line error, never a MemoryError, RecursionError or a long hang."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from compiler.errors import ModelError
from compiler.frontend import load
from edgesim import calibration as cal
from edgesim.api import load_graph
from edgesim.errors import UserError
from edgesim.sweep import load_space
from hwmodels.target import TargetError, load_target


def _model(x_dims: list, w_dims: list, raw: bytes) -> onnx.ModelProto:
    w = helper.make_tensor("w", TensorProto.FLOAT, [len(raw) // 4], raw, raw=True)
    del w.dims[:]
    w.dims.extend(w_dims)  # what a hostile file may declare (onnx's helper would refuse it)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_dims)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["M", "K"])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_declared_tensor_sizes_are_checked_against_their_data() -> None:
    ok = np.ones((4, 3), np.float32).tobytes()
    assert load(_model([1, 4], [4, 3], ok)).layers
    with pytest.raises(ModelError, match="holds 12 elements but its dims"):
        load(_model([1, 4], [4, 30], ok))
    with pytest.raises(ModelError, match="at most"):
        load(_model([1, 4], [2**40, 2**30], ok))  # 2^70 elements declared


def test_input_dimensions_are_bounded() -> None:
    ok = np.ones((4, 3), np.float32).tobytes()
    with pytest.raises(ModelError, match="at most 2147483648"):
        load(_model([2**20, 2**20, 4], [4, 3], ok))
    assert load(_model([0, 4], [4, 3], ok)).layers  # an empty tensor is valid ONNX ...
    with pytest.raises(UserError, match="zero dimension; pass --input-shape x=1x4"):
        load_graph(_model([0, 4], [4, 3], ok))  # ... but nothing to cost or deploy


def _npz_declaring(shape: tuple[int, ...]) -> bytes:
    """An .npz whose `input` member's header declares `shape` but holds 16 bytes."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": shape})
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("input.npy", header.getvalue() + b"\0" * 16)  # the header holds the magic
    return out.getvalue()


def test_npz_headers_are_bounded_before_loading(tmp_path: Path) -> None:
    g = load_graph("zoo:digits_cnn")
    path = tmp_path / "c.npz"
    path.write_bytes(_npz_declaring((10**9, 1, 8, 8)))  # 256 GB declared
    with pytest.raises(UserError, match="declares 256000000000 bytes"):
        cal.read_labelled(g, path)


def test_yaml_alias_bombs_deep_nesting_and_size(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("a: &a [x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi")))
    with pytest.raises(TargetError, match="aliases"):
        load_target(str(bomb))
    deep = tmp_path / "deep.yaml"
    deep.write_text("[" * 100_000)
    with pytest.raises(TargetError, match="nested deeper than 16"):
        load_target(str(deep))
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (1 << 20) + "\nkind: cpu\n")
    with pytest.raises(TargetError, match="larger than"):
        load_target(str(big))
    space = tmp_path / "space.yaml"
    space.write_text("[" * 100_000)
    with pytest.raises(UserError, match="nested deeper"):
        load_space(space)


@pytest.mark.parametrize(("params", "needle"), [
    ("rows: {range: [1, 1000000000], step: 1}", "more than 10000 values"),
    ("rows: {range: [1, 100], num: 100000000}", "at most 10000"),
    ("rows: {range: [1, 1000], step: 1}\n  cols: {range: [1, 1000], step: 1}",
     "the grid has 1000000"),
])
def test_sweep_space_cardinality_is_bounded(tmp_path: Path, params: str, needle: str) -> None:
    space = tmp_path / "s.yaml"
    space.write_text(f"base: systolic-16x16\nparameters:\n  {params}\nmodels: [zoo:digits_cnn]\n")
    if "grid has" in needle:  # 1000 x 1000 = 10^6 points: exactly the bound, accepted
        load_space(space)
        text = space.read_text().replace("[1, 1000], step: 1}\n", "[1, 1001], step: 1}\n", 1)
        space.write_text(text)
        needle = "the grid has 1001000"
    with pytest.raises(UserError, match=needle):
        load_space(space)
