"""`edgesim quantize --bits 4` (issue 17): the weight-only path imports none of what it does
not run (the range search, bias correction, the per-layer error check, the cost models,
onnxruntime with the kernel check off, numba's parallel threading layer); bad models still
end in one line and exit 2 with nothing written; the console script freezes the heap at exit
(so shutdown does not trace numba's registries), and only the console script does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesim import cli, zoo

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

# modules the W4 weight-only path must not load (each one is another path's work)
NOT_ON_THE_W4_PATH = ("compiler.range_choice", "compiler.range_search", "compiler.bias_correction",
                      "compiler.layer_error", "compiler.sensitivity", "hwmodels",
                      "onnxruntime", "matplotlib", "numba.np.ufunc.omppool",
                      "numba.np.ufunc.tbbpool", "numba.np.ufunc.workqueue")


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=ENV, cwd=ROOT, timeout=600)


def test_the_w4_path_imports_nothing_it_does_not_run(tmp_path: Path) -> None:
    src, out = tmp_path / "m.onnx", tmp_path / "m.w4.onnx"
    onnx.save(zoo.build("minilm", vocab=500, seq=16, d=64, depth=1, heads=2, hidden=128,
                        seed=3), src)
    code = ("import sys; from edgesim import cli; "
            "code = cli.main(['quantize', sys.argv[1], '--bits', '4', '--kernel-check', 'off', "
            "'-q', '-o', sys.argv[2]]); "
            f"print(code, sorted(m for m in sys.modules if m.startswith({NOT_ON_THE_W4_PATH!r})))")
    got = _python(code, str(src), str(out))
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip().splitlines()[-1] == "0 []"
    # the file holds MatMulNBits weights: the run did the 4-bit work
    assert {n.op_type for n in onnx.load(out).graph.node} >= {"MatMulNBits"}


def _matmul(nodes: list[onnx.NodeProto] | None = None,
            inits: list[onnx.TensorProto] | None = None) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    graph = helper.make_graph(
        nodes or [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [w] if inits is None else inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _outside(folder: Path) -> Path:
    m = _matmul()
    w = m.graph.initializer[0]
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    w.external_data.add(key="location", value="../outside.bin")
    (folder / "outside.bin").write_bytes(np.ones(12, np.float32).tobytes())
    (folder / "inner").mkdir()
    onnx.save(m, folder / "inner" / "m.onnx")
    return folder / "inner" / "m.onnx"


def _saved(folder: Path, m: onnx.ModelProto) -> Path:
    onnx.save(m, folder / "m.onnx")
    return folder / "m.onnx"


def _truncated(folder: Path) -> Path:
    data = _matmul().SerializeToString()
    (folder / "m.onnx").write_bytes(data[: len(data) // 2])
    return folder / "m.onnx"


BAD = {
    "truncated": (_truncated, "not a valid ONNX model"),
    "checker-rejects-a-node": (lambda f: _saved(f, _matmul(
        [helper.make_node("Relu", ["x", "x"], ["y"], name="r1")])), "node r1: invalid ONNX"),
    "duplicate-initializers": (lambda f: _saved(f, _matmul(inits=[
        numpy_helper.from_array(np.ones((4, 3), np.float32), "w")] * 2)),
        "initializer name is not unique"),
    "size-mismatch": (lambda f: _saved(f, _matmul(inits=[onnx.TensorProto(
        name="w", data_type=TensorProto.FLOAT, dims=[4, 30],
        raw_data=np.ones(12, np.float32).tobytes())])), "holds 12 elements but its dims"),
    "external-data-outside": (_outside, "leaves the model's folder"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_model_is_one_line_and_exit_2_with_nothing_written(
        case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make, needle = BAD[case]
    src, out = make(tmp_path), tmp_path / "out.onnx"
    assert cli.main(["quantize", str(src), "--bits", "4", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("edgesim: ") and needle in err, err
    assert not out.exists()


def test_the_process_exits_2_on_a_bad_model(tmp_path: Path) -> None:
    src = _saved(tmp_path, _matmul([helper.make_node("Relu", ["x", "x"], ["y"], name="r1")]))
    got = subprocess.run([sys.executable, "-m", "edgesim", "quantize", str(src), "--bits", "4",
                          "-o", str(tmp_path / "out.onnx")], capture_output=True, text=True,
                         env=ENV, cwd=ROOT, timeout=600)
    assert got.returncode == 2
    assert len(got.stderr.strip().splitlines()) == 1 and "node r1" in got.stderr


# an atexit handler registered before `main` runs after main's own (last in, first out)
_AT_EXIT = ("import atexit, gc, sys, weakref\nfrom edgesim import cli\n"
            "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0))\n"
            "class Held: pass\n"
            "held = Held(); weakref.finalize(held, print, 'finalized')\n"
            "sys.argv = ['edgesim', '--version']\n"
            "try:\n    cli.main({argv})\nexcept SystemExit:\n    pass\n")


def test_the_console_script_freezes_the_heap_at_exit_and_finalizers_still_run() -> None:
    got = _python(_AT_EXIT.format(argv=""))
    assert got.returncode == 0, got.stderr
    lines = got.stdout.split()
    assert "finalized" in lines
    assert got.stdout.strip().endswith("frozen True")


def test_a_call_with_arguments_leaves_the_heap_alone() -> None:
    got = _python(_AT_EXIT.format(argv="['--version']"))
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip().endswith("frozen False")
