"""Findings of a new user's run on trained models from PyPI packages (round 11, brief R):
each test failed before its fix. Driven through `edgesim.cli.main` in-process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesim import api
from edgesim.cli import main


def _refuse_work(*args: object, **kwargs: object) -> None:
    raise AssertionError("the command started its work before checking -o")


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("command", [["quantize", "zoo:digits_cnn", "--bits", "8"],
                                     ["target", "probe"]])
def test_dash_o_onto_a_folder_is_refused_before_the_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        command: list[str]) -> None:
    # before: quantize ran to the end, then failed on its hidden temporary file's name
    # ("edgesim: /tmp/.../.out.f0gt3_0s.tmp: Is a directory"), not the user's path
    monkeypatch.setattr(api, "quantize", _refuse_work)
    monkeypatch.setattr(api, "probe_target", _refuse_work)
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    assert main([*command, "-o", str(folder)]) == 2
    err = _one_line(capsys)
    assert err.startswith(f"edgesim: {folder}: ") and "folder" in err, err
    assert [p.name for p in folder.iterdir()] == ["keep.txt"]
    assert (folder / "keep.txt").read_text() == "mine"


def test_dash_o_in_a_missing_folder_is_refused_before_the_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(api, "quantize", _refuse_work)
    out = tmp_path / "nope" / "q.onnx"
    assert main(["quantize", "zoo:digits_cnn", "--bits", "8", "-o", str(out)]) == 2
    err = _one_line(capsys)
    assert err.startswith(f"edgesim: {out}: ") and "does not exist" in err, err
    assert not (tmp_path / "nope").exists()


def _fixed_batch_concat() -> onnx.ModelProto:
    """x [N, 3] concatenated with a constant [1, 3] on axis 1: runs at N = 1 only (as the
    batch-1 reshapes inside YOLOv8's exported head, nudenet's 320n.onnx)."""
    c = numpy_helper.from_array(np.ones((1, 3), np.float32), "c")
    node = helper.make_node("Concat", ["x", "c"], ["y"], name="cat", axis=1)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6])], [c])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_batched_probe_that_fails_prints_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    # before: compile/quantize on nudenet printed onnxruntime's red ERROR log line of the
    # batched run that run_chunks tries and catches (it falls back to batch 1)
    from edgesim.evaluate import session

    sess = session(_fixed_batch_concat())
    with pytest.raises(Exception, match="Concat"):
        sess.run(None, {"x": np.zeros((2, 3), np.float32)})
    assert sess.run(None, {"x": np.zeros((1, 3), np.float32)})[0].shape == (1, 6)
    assert capfd.readouterr().err == ""


def test_pareto_never_announces_a_cost_kernel_compile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # before: "edgesim: compiling cost kernels (first run only)..." on every `pareto` call
    # while the MAC-array kernels were cold (e.g. after a CPU sweep), which pareto never runs
    from edgesim import cli
    from hwmodels.kernels import cache_state, jit

    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    for name in cache_state.COST_KERNELS:  # sources, no cache: every kernel is cold
        (tmp_path / f"{name}.py").write_text("")
    monkeypatch.setattr(cache_state, "KERNELS", tmp_path)

    def notice(argv: list[str]) -> str:  # stderr while a cold MAC-array module compiles
        with cli.announce_compile(cli.parse_args(argv)):
            jit._announce("hwmodels.kernels.macarray")
        return capsys.readouterr().err

    assert notice(["pareto", "results"]) == ""
    assert notice(["simulate", "m.onnx", "--target", "rpi5"]) == cli.COMPILE_NOTICE + "\n"


def test_top_level_help_speaks_to_a_user(capsys: pytest.CaptureFixture[str]) -> None:
    # before: "The `edgesim` command line: argparse subcommands, each mapped to one
    # `edgesim.api` function." -- the module docstring, written for developers
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "argparse" not in out and "edgesim.api" not in out
    assert "ONNX" in out and "edgesim compile --example" in out


def test_sweep_onto_a_file_names_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # before: "edgesim: afile: File exists" (mkdir's OSError)
    target = tmp_path / "afile"
    target.write_text("precious")
    assert main(["sweep", "cpu-whatif", "-o", str(target), "-q"]) == 2
    err = _one_line(capsys)
    assert err == f"edgesim: {target}: exists and is not a folder; -o takes the results folder"
    assert target.read_text() == "precious"


def _dynamic_hw_cnn(path: Path) -> Path:
    """x [N, 3, H, W] -> Conv 3x3 -> Flatten -> MatMul (K = 4*8*8, fixed by its weight): the
    graph runs only at the H, W its weight was made for (8x8), as exported CNNs whose head
    reshapes by the spatial size."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.standard_normal((4 * 8 * 8, 5)).astype(np.float32), "fc")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Flatten", ["c"], ["f"], name="flat", axis=1),
             helper.make_node("MatMul", ["f", "fc"], ["y"], name="head")]
    graph = helper.make_graph(
        nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], [w, fc])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path


def test_dims_the_user_fixed_are_declared_static_in_the_emitted_model(tmp_path: Path) -> None:
    # before: the emitted model declared x as [N, 3, 'H', 'W'] but, its shapes folded at the
    # given 8x8, failed in onnxruntime at any other size (nudenet at 416, ddddocr at W != 160)
    import onnxruntime as ort

    out = tmp_path / "q.onnx"
    api.quantize(str(_dynamic_hw_cnn(tmp_path / "m.onnx")), 8, out, calib_random=2,
                 input_shapes={"x": [1, 3, 8, 8]})
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (x,) = sess.get_inputs()
    assert x.shape == ["N", 3, 8, 8]  # the batch stays dynamic, as the source declared it
    assert sess.get_outputs()[0].shape == ["N", 5]
    (y,) = sess.run(None, {"x": np.ones((1, 3, 8, 8), np.float32)})
    assert y.shape == (1, 5)


@pytest.mark.parametrize("argv", [
    ["simulate", "zoo:digits_cnn", "--target", "rpi5", "--threads", "0"],
    ["compile", "--example", "--threads", "0"],
    ["evaluate", "m.onnx", "--threads", "-2"],
    ["validate", "m.onnx", "--target", "rpi5", "--threads", "0"],
    ["generate", "zoo:kv_decoder", "--prompt", "a", "--threads", "x"],
])
def test_thread_counts_below_one_are_bad_flags(argv: list[str],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    # before: simulate/compile --threads 0 -> "internal error (ValueError: threads must be
    # >= 1, got 0); this is a bug in edgesim", exit 1; LLM simulate took 0 as "all counts"
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 2
    assert "argument --threads: expected an integer >= 1" in capsys.readouterr().err
