"""Start-up: the CLI's parser loads neither numba nor the compiler; a cold numba cache is
detected from the file system and announced once on stderr; sweep workers run numba on one
thread and small sweeps stay in this process; neither a sweep worker nor `simulate` imports
the MILP solver (scipy.optimize) or the sensitivity analysis they never run, and `simulate`
loads no scipy.special (issue 17)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from edgesim import cli
from edgesim.sweep import LocalExecutor, run_sweep, runs_inline
from edgesim.sweep.space import load_space
from edgesim.sweep.store import RESULTS_NAME, read_results
from hwmodels.kernels import cache_state

ROOT = Path(__file__).resolve().parents[2]


def test_building_the_parser_imports_no_numba_no_onnx_no_compiler() -> None:
    code = ("import sys; from edgesim import cli; cli.build_parser(); "
            "print(sorted(m for m in ('numba', 'onnx', 'compiler.frontend', 'edgesim.api', "
            "'hwmodels.cpu') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == "[]"


def _module(root: Path, name: str, mtime: float) -> None:
    src = root / f"{name}.py"
    src.write_text("@njit(cache=True)\ndef f(): pass\n")
    os.utime(src, (mtime, mtime))


def _index(root: Path, name: str, mtime: float) -> None:
    (root / "__pycache__").mkdir(exist_ok=True)
    index = root / "__pycache__" / f"{name}.f-1.py311.nbi"
    index.write_bytes(b"")
    os.utime(index, (mtime, mtime))


def test_cold_modules_reads_numba_index_files(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    for name in ("a", "b", "c"):
        _module(tmp_path, name, 1000.0)
    _index(tmp_path, "b", 2000.0)   # cached after the source was written: warm
    _index(tmp_path, "c", 500.0)    # cached before the source changed: stale
    assert cache_state.cold_modules(tmp_path, ("a", "b", "c")) == ["a", "c"]
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))  # cache elsewhere: nothing known
    assert cache_state.cold_modules(tmp_path, ("a", "b", "c")) == []


def test_a_cold_cache_is_announced_for_cost_commands_only(monkeypatch, capsys) -> None:  # noqa: ANN001
    monkeypatch.setattr(cache_state, "cold_modules", lambda: ["cpu"])
    cli.announce_compile(cli.parse_args(["simulate", "m.onnx", "--target", "rpi5"]))
    assert capsys.readouterr().err == "edgesim: compiling cost kernels (first run only)...\n"
    cli.announce_compile(cli.parse_args(["simulate", "m.onnx", "--target", "rpi5", "-q"]))
    cli.announce_compile(cli.parse_args(["targets"]))
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(cache_state, "cold_modules", lambda: [])
    cli.announce_compile(cli.parse_args(["simulate", "m.onnx", "--target", "rpi5"]))
    assert capsys.readouterr().err == ""


def numba_threads(shared: object, task: int) -> int:
    from hwmodels.kernels import threads

    return threads.available()


def test_pool_workers_run_numba_on_one_thread() -> None:
    before = os.environ.get("NUMBA_NUM_THREADS")
    with LocalExecutor(2) as ex:
        assert sorted(ex.map_unordered(numba_threads, None, [0, 1])) == [1, 1]
    assert os.environ.get("NUMBA_NUM_THREADS") == before  # this process's is left alone


def test_small_sweeps_stay_in_this_process() -> None:
    small = load_space(ROOT / "targets" / "spaces" / "cpu-whatif.yaml")  # 84 points x 2 models
    shipped = load_space(ROOT / "targets" / "spaces" / "macarray.yaml")  # 2000 points x 2 models
    assert runs_inline(small, None)
    assert not runs_inline(small, 1)  # workers asked for: a pool
    # the shipped space's choice depends on the idle cores (tests/edgesim/test_sweep_speed.py)
    assert not runs_inline(shipped, 2)


# what a sweep worker and `simulate` never run: HiGHS (sweeps solve by the exact front), the
# sensitivity analyses (the parent computes them once per model)
UNUSED = ("scipy.optimize", "compiler.sensitivity", "compiler.sensitivity.hawq")


def unused_modules(shared: object, task: int) -> list[str]:
    return [m for m in UNUSED if m in sys.modules]


def test_a_sweep_worker_imports_no_milp_solver_and_no_sensitivity(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"  # one design, one allocation solved in the worker
    space.write_text("base: jetson-orin-nano\nparameters:\n  op_overhead_us: [5]\n"
                     "models: [zoo:digits_cnn]\n"
                     "optimise: {allocate: {budget: bits=4, w_bits: [2, 4, 8], a_bits: 8}}\n")
    with LocalExecutor(1) as ex:  # a spawned process: it imports only what it unpickles
        run_sweep(load_space(str(space)), tmp_path / "out", executor=ex)
        left = list(ex.map_unordered(unused_modules, None, [0]))  # the same worker, after
    _, (record,), _ = read_results(tmp_path / "out" / RESULTS_NAME)
    assert "error" not in record and record["models"]["digits_cnn"]["alloc"]["w_bits"]
    assert left == [[]]


def test_simulate_imports_no_milp_solver_and_no_sensitivity() -> None:
    code = ("import sys; from edgesim.cli import main; "
            "code = main(['simulate', 'zoo:digits_cnn', '--target', 'rpi5', '-q']); "
            f"print(code, [m for m in {UNUSED!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip().splitlines()[-1] == "0 []"


def test_simulate_imports_no_scipy_special_and_reports_the_same() -> None:
    """scipy.special (~0.2 s of imports) loads on the first erf/sigmoid computed, which a
    simulation never computes; the result is the one computed in this process, where the
    executor's tests may have imported it."""
    from edgesim import api

    code = ("import sys; from edgesim.cli import main; "
            "main(['simulate', 'zoo:digits_cnn', '--target', 'rpi5', '--json']); "
            "print('scipy.special' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    report, loaded = out.stdout.strip().splitlines()[-2:]
    assert loaded == "False"
    here = api.simulate("zoo:digits_cnn", "rpi5").to_dict()
    assert json.loads(report) == json.loads(json.dumps(here))
