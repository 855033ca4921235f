"""The installed `edgesim` entry point, driven as a user would (subprocess): one clear line and
exit code 2 for each kind of bad input, tracebacks only with --debug."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesim.cli import COMPILE_NOTICE

EDGESIM = Path(sys.executable).parent / "edgesim"


def edgesim(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    assert EDGESIM.exists(), f"the edgesim entry point is not installed beside {sys.executable}"
    return subprocess.run([str(EDGESIM), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def _one_line_error(res: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2 with one `edgesim: ...` line on stderr (besides `[i/n]` progress lines and the
    first-run compile notice, printed before the command runs)."""
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    err = "\n".join(line for line in res.stderr.strip().splitlines()  # a cold numba cache
                    if not re.match(r"^\[\d+/\d+\] ", line) and line != COMPILE_NOTICE)
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("edgesim: "), err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def _mlp(path: Path, dims: tuple = ("N", 4), ops: tuple[str, ...] = ("Relu",)) -> Path:
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm")]
    prev = "h"
    for i, op in enumerate(ops):
        nodes.append(helper.make_node(op, [prev], [f"a{i}"], name=f"{op.lower()}_{i}"))
        prev = f"a{i}"
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [dims[0], 3])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_inspect_prints_layers_and_totals(tmp_path: Path) -> None:
    res = edgesim("inspect", str(_mlp(tmp_path / "m.onnx")))
    assert res.returncode == 0, res.stderr
    assert "linear" in res.stdout and "total: 12 MACs" in res.stdout
    assert "batch dimension" in res.stdout  # the symbolic batch dim was set to 1 and said so


def test_inspect_json_parses(tmp_path: Path) -> None:
    res = edgesim("inspect", str(_mlp(tmp_path / "m.onnx")), "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["total_macs"] == 1 * 4 * 3  # x[1,4] @ w[4,3]
    assert report["total_params"] == 12
    assert [r["kind"] for r in report["layers"]] == ["linear", "activation"]


def test_missing_file() -> None:
    _one_line_error(edgesim("inspect", "no/such/model.onnx"), "no/such/model.onnx")


def test_garbage_file(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"\x00\xffnot a protobuf at all" * 10)
    _one_line_error(edgesim("inspect", str(bad)), "garbage.onnx")


def test_truncated_file(tmp_path: Path) -> None:
    good = _mlp(tmp_path / "m.onnx").read_bytes()
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(good[: len(good) // 2])
    _one_line_error(edgesim("inspect", str(bad)), "truncated.onnx")


def test_unsupported_ops_are_listed_together(tmp_path: Path) -> None:
    path = _mlp(tmp_path / "m.onnx", ops=("Relu", "Det", "Relu", "Det"))
    _one_line_error(edgesim("inspect", str(path)), "Det", "det_1", "det_3")


def test_dynamic_dim_needs_input_shape(tmp_path: Path) -> None:
    path = _mlp(tmp_path / "m.onnx", dims=("N", "features"))
    err = _one_line_error(edgesim("inspect", str(path)), "x", "--input-shape")
    assert "features" in err
    # with the shape given it loads (the shape must agree with the weight: 4 features)
    assert edgesim("inspect", str(path), "--input-shape", "x=1x4").returncode == 0


def test_bad_input_shape_flag(tmp_path: Path) -> None:
    path = _mlp(tmp_path / "m.onnx")
    _one_line_error(edgesim("inspect", str(path), "--input-shape", "x=1xfour"), "--input-shape")


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/passwd"])
def test_external_data_escaping_the_folder_is_refused(tmp_path: Path, location: str) -> None:
    path = _mlp(tmp_path / "m.onnx")
    model = onnx.load(path)
    w = model.graph.initializer[0]
    w.ClearField("raw_data")
    w.ClearField("float_data")
    w.data_location = TensorProto.EXTERNAL
    w.external_data.add(key="location", value=location)
    onnx.save(model, path)
    _one_line_error(edgesim("inspect", str(path)), "external data", location)


def test_debug_shows_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"junk" * 20)
    res = edgesim("--debug", "inspect", str(bad))
    assert res.returncode != 0 and "Traceback" in res.stderr


def test_quantize_writes_a_model_onnxruntime_runs(tmp_path: Path) -> None:
    import onnxruntime as ort

    out = tmp_path / "q.onnx"
    res = edgesim("quantize", "zoo:digits_cnn", "--bits", "8", "--calib-random", "8",
                  "-o", str(out), "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["calibration_random"] is True
    assert report["file_bytes"] == out.stat().st_size
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.zeros([d if isinstance(d, int) else 1 for d in sess.get_inputs()[0].shape], np.float32)
    (logits,) = sess.run(None, {sess.get_inputs()[0].name: x})
    assert logits.shape[-1] == 10 and np.isfinite(logits).all()


@pytest.mark.parametrize(("bits", "needle"), [("1", "--bits"), ("nope.json", "nope.json")])
def test_quantize_bad_bits_writes_nothing(tmp_path: Path, bits: str, needle: str) -> None:
    out = tmp_path / "q.onnx"
    _one_line_error(edgesim("quantize", "zoo:digits_cnn", "--bits", bits, "-o", str(out)), needle)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_ctrl_c_inside_an_extension_import_exits_as_interrupted(monkeypatch, capsys):
    """pybind11 modules (onnxruntime, matplotlib) turn a KeyboardInterrupt during their
    import into `ImportError("initialization failed")` raised from it: still Ctrl-C, 130."""
    import argparse

    from edgesim import cli

    def run(_args):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as e:
            raise ImportError("initialization failed") from e

    def namespace(run):
        return argparse.Namespace(run=run, debug=False, quiet=True, command="inspect")

    monkeypatch.setattr(cli, "parse_args", lambda argv: namespace(run))
    assert cli.main([]) == 130
    assert capsys.readouterr().err.strip() == "edgesim: interrupted"

    def broken(_args):
        raise ImportError("initialization failed")

    monkeypatch.setattr(cli, "parse_args", lambda argv: namespace(broken))
    assert cli.main([]) == 1  # a real import failure stays an internal error
