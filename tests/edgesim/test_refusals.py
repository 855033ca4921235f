"""Requests compile and quantize refuse with one line and exit 2 (the CLI's oracle: its exit
code and message): an already quantized model, zero random samples, a --min-fidelity no
model can meet, an unknown target name."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesim import api
from edgesim.errors import UserError
from edgesim.fidelity import check_minimum
from tests.edgesim.test_cli import _one_line_error, edgesim

SHAPE = [1, 4, 8, 8]


def _relu_cat(path: Path) -> Path:
    """Conv -> Relu -> Concat with the input: a float model onnxruntime can quantize."""
    w = np.random.default_rng(0).standard_normal((4, 4, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Concat", ["r", "x"], ["y"], name="cat", axis=1)]
    graph = helper.make_graph(
        nodes, "relu_cat", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _ort_quantized(float_path: Path, out: Path, dynamic: bool) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, quantize_dynamic, quantize_static

    if dynamic:
        quantize_dynamic(str(float_path), str(out))
        return out

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(1)
            self.feeds = iter([{"x": rng.standard_normal(SHAPE).astype(np.float32)}
                               for _ in range(4)])

        def get_next(self) -> dict | None:
            return next(self.feeds, None)

    quantize_static(str(float_path), str(out), Reader())
    return out


@pytest.fixture(scope="module")
def quantized_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The float model and three quantized versions: edgesim's own W8A8 file, onnxruntime's
    QDQ quantize_static and its ConvInteger quantize_dynamic files."""
    d = tmp_path_factory.mktemp("quantized")
    src = _relu_cat(d / "relu_cat.onnx")
    res = edgesim("quantize", str(src), "--bits", "8", "--calib-random", "4",
                  "-o", str(d / "edgesim_w8a8.onnx"))
    assert res.returncode == 0, res.stderr
    return {"float": src, "edgesim": d / "edgesim_w8a8.onnx",
            "ort_static": _ort_quantized(src, d / "ort_static.onnx", dynamic=False),
            "ort_dynamic": _ort_quantized(src, d / "ort_dynamic.onnx", dynamic=True)}


@pytest.mark.parametrize("which", ["edgesim", "ort_static", "ort_dynamic"])
def test_quantize_and_compile_refuse_a_quantized_model(quantized_files, which, tmp_path):
    # a KeyError ('conv::w_codes') and exit 1 before: the read-back graph has no weight codes
    path = str(quantized_files[which])
    for command in (["quantize", path, "--bits", "8", "--calib-random", "4",
                     "-o", str(tmp_path / "q.onnx")],
                    ["compile", path, "--method", "uniform", "--budget", "bits=8",
                     "--calib-random", "4", "-o", str(tmp_path / "out")]):
        err = _one_line_error(edgesim(*command), path, "already quantized", "conv",
                              "float model")
        assert "internal error" not in err
    assert not (tmp_path / "q.onnx").exists()
    assert not list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


def test_simulate_still_reads_a_quantized_file(quantized_files):
    """The refusal is the quantizing commands' only: simulate costs the file's own plan."""
    sim = api.simulate(str(quantized_files["ort_static"]), "rpi5")
    conv = next(r for r in sim.layers if r.kind == "conv")
    # int8 weights and activations on the Pi 5: x's int8 QuantizeLinear is read by the conv
    # and the Concat, which x86 onnxruntime runs as a float Conv (check_kernels) but an Arm
    # build runs int8 (QDQIsInt8Allowed; tests/edgesim/test_read_quantized_shared.py)
    assert (conv.w_bits, conv.a_bits) == (8, 8)


def test_zero_random_samples_are_refused(quantized_files, tmp_path):
    # compile took --calib-random 0 for "not given" and ran on 32 random samples
    out = tmp_path / "out"
    _one_line_error(edgesim("compile", str(quantized_files["float"]), "--method", "uniform",
                            "--budget", "bits=8", "--calib-random", "0", "-o", str(out)),
                    "--calib-random", "got 0")
    assert not out.exists()  # refused before the output folder is claimed
    with pytest.raises(UserError, match="--calib-random"):  # the API's allocate too
        api.allocate(str(quantized_files["float"]), method="hawq", calib_random=0)


def test_unmeetable_min_fidelity_is_refused_up_front(tmp_path):
    # 1.5 ran the whole compile before failing on the emitted model's agreement (<= 1); a
    # model that does not exist shows the order: the flag is checked before it is loaded
    missing, out = tmp_path / "missing.onnx", tmp_path / "out"
    _one_line_error(edgesim("compile", str(missing), "--min-fidelity", "1.5", "-o", str(out)),
                    "--min-fidelity", "<= 1", "1.5")
    assert not out.exists()
    _one_line_error(edgesim("compile", str(missing), "--min-fidelity", "0.9", "-o", str(out)),
                    str(missing), "no such file")  # a reachable minimum goes on to the load


@pytest.mark.parametrize(("minimum", "custom", "refused"), [
    (1.0, False, False), (1.0000001, False, True), (math.nan, False, True),
    (-1.0, False, False), (5.0, True, False), (math.nan, True, True)])
def test_check_minimum(minimum, custom, refused):
    """Agreements and cosine lie in [-1, 1]; a user's metric may exceed 1; NaN never passes."""
    if refused:
        with pytest.raises(UserError, match="--min-fidelity"):
            check_minimum(minimum, custom)
    else:
        check_minimum(minimum, custom)


def test_unknown_target_names_itself_and_the_known_ones(tmp_path):
    # was "targets/rpi9.yaml: (top): no shipped target 'rpi9'": a file the user never named
    err = _one_line_error(edgesim("simulate", "zoo:digits_cnn", "--target", "rpi9"),
                          "target 'rpi9'", "rpi5", "cortex-m7")
    assert "(top)" not in err and "rpi9.yaml" not in err
