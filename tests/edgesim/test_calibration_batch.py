"""Fewer calibration samples than a model's static batch size: one line naming both, exit 2
(`calibration.whole_batch`), from `quantize` and `compile`, for a file and for random samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesim import cli


def _batch4(tmp: Path) -> Path:
    """One Conv on a static batch of 4."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3))
                                .astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="c")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4, 6, 6])],
                          [w])
    path = tmp / "b4.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("command", ["quantize", "compile"])
@pytest.mark.parametrize("source", ["file", "random"])
def test_too_few_samples_name_the_count_and_the_batch(
        command: str, source: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = _batch4(tmp_path)
    np.savez(tmp_path / "c.npz", x=np.ones((3, 3, 8, 8), np.float32))
    data = ["--calib", str(tmp_path / "c.npz")] if source == "file" else ["--calib-random", "3"]
    target = ["--target", "rpi5"] if command == "compile" else ["--bits", "8"]
    out = tmp_path / "out"
    assert cli.main(["-q", command, str(model), *target, *data, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "3 sample(s)" in err[0] and "batch size 4" in err[0], err
    assert not out.exists()


def test_a_full_batch_is_enough(tmp_path: Path) -> None:
    model = _batch4(tmp_path)
    out = tmp_path / "q.onnx"
    assert cli.main(["-q", "quantize", str(model), "--bits", "8", "--calib-random", "4",
                     "--kernel-check", "off", "-o", str(out)]) == 0
    assert out.exists()
