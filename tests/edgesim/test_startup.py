"""Start-up: the CLI's parser loads neither numba nor the compiler; a cold numba cache is
detected from the file system and announced once on stderr; sweep workers run numba on one
thread and small sweeps stay in this process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from edgesim import cli
from edgesim.sweep import LocalExecutor, runs_inline
from edgesim.sweep.space import load_space
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
    # ~0.4 CPU-s of work: no worker pays for its start (tests/edgesim/test_sweep_speed.py)
    assert runs_inline(shipped, None)
