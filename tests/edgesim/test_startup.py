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

import pytest

from edgesim import cli
from edgesim.sweep import LocalExecutor, run_sweep, runs_inline
from edgesim.sweep.space import load_space
from edgesim.sweep.store import RESULTS_NAME, read_results
from hwmodels.kernels import cache_state, jit

ROOT = Path(__file__).resolve().parents[2]


def test_building_the_parser_imports_no_numba_no_onnx_no_compiler() -> None:
    code = ("import sys; from edgesim import cli; cli.build_parser(); "
            "print(sorted(m for m in ('numba', 'onnx', 'compiler.frontend', 'edgesim.api', "
            "'hwmodels.cpu', 'edgesim.validate', 'edgesim.zoo') if m in sys.modules))")
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


def _stamps(root: Path, cold: tuple[str, ...]) -> Path:
    """A kernels folder where every cost kernel module is cached except those in `cold`."""
    for name in cache_state.COST_KERNELS:
        _module(root, name, 1000.0)
        if name not in cold:
            _index(root, name, 2000.0)
    return root


SIM_RPI5 = ["simulate", "m.onnx", "--target", "rpi5"]
NOTICE = "edgesim: compiling cost kernels (first run only)...\n"


def _notice(argv: list[str], kernels: Path, modules: tuple[str, ...], capsys,  # noqa: ANN001
            monkeypatch) -> str:  # noqa: ANN001
    """stderr of a command that compiles `modules` (as `kernels.jit` announces each one it
    builds), with `kernels` as the kernels' folder."""
    monkeypatch.setattr(cache_state, "KERNELS", kernels)
    with cli.announce_compile(cli.parse_args(argv)):
        for name in modules:
            jit._announce(f"hwmodels.kernels.{name}")
    return capsys.readouterr().err


def test_a_cold_cache_is_announced_once_for_cost_commands_only(tmp_path: Path, monkeypatch,  # noqa: ANN001
                                                               capsys) -> None:  # noqa: ANN001
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    kernels = _stamps(tmp_path, cold=("cpu", "cpu_gemm"))
    both = ("cpu", "cpu_gemm")
    assert _notice(SIM_RPI5, kernels, both, capsys, monkeypatch) == NOTICE  # once for both
    assert _notice([*SIM_RPI5, "-q"], kernels, both, capsys, monkeypatch) == ""
    assert _notice(["targets"], kernels, both, capsys, monkeypatch) == ""
    assert _notice(SIM_RPI5, kernels, (), capsys, monkeypatch) == ""  # nothing compiled
    _index(kernels, "cpu", 2000.0)
    _index(kernels, "cpu_gemm", 2000.0)  # now cached
    assert _notice(SIM_RPI5, kernels, both, capsys, monkeypatch) == ""
    _module(kernels, "cpu_gemm", 3000.0)  # a CPU kernel edited after it was cached
    assert _notice(SIM_RPI5, kernels, both, capsys, monkeypatch) == NOTICE


def test_only_slow_kernels_are_announced(tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    """The MCU and SCALE-Sim-mode kernels compile in seconds: their cold cache is not
    announced; the MAC array's is."""
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    kernels = _stamps(tmp_path, cold=("macarray",))
    for name in ("mcu", "scalesim"):
        _module(kernels, name, 1000.0)
    assert _notice(SIM_RPI5, kernels, ("mcu", "scalesim", "cpu"), capsys, monkeypatch) == ""
    assert _notice(SIM_RPI5, kernels, ("macarray",), capsys, monkeypatch) == NOTICE


def test_the_kernel_table_names_every_kind() -> None:
    from hwmodels import kinds

    assert sorted(cache_state.KIND_KERNELS) == kinds.kind_names()
    assert all((cache_state.KERNELS / f"{m}.py").is_file() for m in cache_state.COST_KERNELS)


# a simulate with every kernel module cold (a temporary folder of stamps): the engine
# decides whether numba is imported and whether the notice is printed
COLD = """import os, sys, tempfile
from pathlib import Path
from hwmodels.kernels import cache_state, jit
root = Path(tempfile.mkdtemp())
(root / '__pycache__').mkdir()
for name in cache_state.COST_KERNELS:
    (root / f'{name}.py').write_text('')
cache_state.KERNELS = root
from edgesim.cli import main
code = main(['simulate', 'zoo:digits_cnn', '--target', sys.argv[1]])
print(code, 'numba' in sys.modules)
"""


def _cold_simulate(target: str, engine: str) -> tuple[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGESIM_KERNELS": engine}
    env.pop("NUMBA_CACHE_DIR", None)
    out = subprocess.run([sys.executable, "-c", COLD, target], capture_output=True, text=True,
                         check=True, env=env)
    return out.stdout.strip().splitlines()[-1], out.stderr


def test_simulate_of_a_small_network_imports_no_numba_and_announces_nothing() -> None:
    """digits_cnn costs ~100 layer-evaluations: the Python engine runs them (auto)."""
    for target in ("rpi5", "systolic-16x16"):
        last, err = _cold_simulate(target, "auto")
        assert last == "0 False"
        assert "compiling" not in err
    last, err = _cold_simulate("rpi5", "numba")  # forced: numba loads and says so, once
    assert last == "0 True"
    assert err.count("compiling cost kernels") == 1


USED = """import sys
from hwmodels.kernels import jit
from edgesim import api
api.simulate('zoo:digits_cnn', sys.argv[1])
print(sorted({n.rsplit('.', 1)[1] for n, m in list(sys.modules.items())
              if n.startswith('hwmodels.kernels.') for v in vars(m).values()
              if isinstance(v, jit.Kernel) and v.__module__ == n and jit.is_loaded(v)
              and jit.compiled(v).signatures}))
"""


def test_each_kind_runs_no_slow_kernel_its_table_row_leaves_out() -> None:
    """Oracle: the numba dispatchers a simulate (compiled engine) loaded, per module."""
    targets = {"rpi5": "cpu", "systolic-16x16": "macarray", "cortex-m7": "mcu"}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGESIM_KERNELS": "numba"}
    procs = {t: subprocess.Popen([sys.executable, "-c", USED, t], stdout=subprocess.PIPE,
                                 text=True, env=env) for t in targets}
    for target, kind in targets.items():
        used = set(json.loads(procs[target].communicate()[0].strip().replace("'", '"')))
        assert procs[target].returncode == 0
        assert used & set(cache_state.COST_KERNELS) <= set(cache_state.kernels_of(kind))
        assert used  # the simulate ran a kernel (the oracle sees something)


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


# what `simulate` of a CPU target never runs either (issue 17): the other kinds' models and
# kernels, the quantizers and MatMulNBits packing (the zoo's decoder builder packs), the
# validate, sweep, report and plot commands
NOT_SIMULATE = ("hwmodels.macarray", "hwmodels.kernels.macarray", "hwmodels.kernels.sparse",
                "hwmodels.kernels.macarray_folds", "hwmodels.kernels.macarray_traffic",
                "hwmodels.mcu", "hwmodels.kernels.mcu", "compiler.packing",
                "compiler.packing_neon", "compiler.quantizers", "compiler.activation_quant",
                "edgesim.validate", "edgesim.sweep", "edgesim.report", "edgesim.plot",
                "matplotlib", "edgesim.pipeline")


def test_simulate_imports_no_milp_solver_and_no_sensitivity() -> None:
    code = ("import sys; from edgesim.cli import main; "
            "code = main(['simulate', 'zoo:digits_cnn', '--target', 'rpi5', '-q']); "
            f"print(code, [m for m in {UNUSED + NOT_SIMULATE!r} if m in sys.modules])")
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


def test_the_zoo_imports_a_builder_when_it_is_looked_up() -> None:
    code = ("import sys; from edgesim import zoo; names = sorted(zoo.ZOO); "
            "before = [m for m in ('onnx', 'edgesim.zoo.cnn', 'edgesim.zoo.decoder') "
            "if m in sys.modules]; from edgesim.zoo import cnn; "
            "print(before, names, zoo.ZOO['resnet18'] is cnn.resnet18)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    before, rest = out.stdout.strip().split("] ", 1)
    assert before == "[" and rest.endswith(" True")
    assert "'digits_cnn'" in rest and "'mobilenet_v2'" in rest


def test_a_cli_call_reads_its_target_file_once(monkeypatch, capsys) -> None:  # noqa: ANN001
    """The first-run notice no longer loads the target to read its kind (issue 17: the
    pure-Python YAML parse is ~30 ms a load); the command's own load is the only one."""
    from hwmodels import target

    reads: list[str] = []
    real = target.read_yaml

    def counted(path: Path, label: str) -> object:
        reads.append(Path(path).name)
        return real(path, label)

    monkeypatch.setattr(target, "read_yaml", counted)
    assert cli.main(["simulate", "zoo:digits_cnn", "--target", "rpi5"]) == 0
    assert reads.count("rpi5.yaml") == 1
    capsys.readouterr()


@pytest.mark.parametrize("argv", [
    ["compile", "--example", "--method", "proxy", "--quiet", "-o", "{tmp}/out"],
    ["quantize", "zoo:digits_transformer", "--bits", "4", "--quiet", "-o", "{tmp}/q.onnx"]])
def test_compile_and_quantize_import_no_scipy_linalg(tmp_path: Path, argv: list[str]) -> None:
    """numba's first kernel probed for a BLAS through scipy.linalg (0.15-0.2 CPU-s); no
    step of either command needs it (`compiler.numba_start`)."""
    args = [a.format(tmp=tmp_path) for a in argv]
    code = (f"import sys; from edgesim import cli; rc = cli.main({args!r}); "
            "print(rc, 'scipy.linalg' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip().splitlines()[-1] == "0 False"


def test_collection_paused_runs_no_collection_and_freezes_what_the_body_made() -> None:
    import gc

    started: list[int] = []

    def seen(phase: str, info: dict) -> None:
        if phase == "start":
            started.append(info["generation"])

    gc.callbacks.append(seen)
    frozen = gc.get_freeze_count()
    try:
        with cli.collection_paused():
            made = [[i] for i in range(20_000)]  # 20 k containers: gen 0 collects every 700
        assert started == [] and gc.isenabled()
        assert gc.get_freeze_count() >= frozen + len(made)
        gc.disable()
        with cli.collection_paused():
            pass
        assert not gc.isenabled()  # off before: left off
    finally:
        gc.enable()
        gc.unfreeze()
        gc.callbacks.remove(seen)


def test_no_collection_runs_while_the_compile_imports_its_modules(tmp_path: Path) -> None:
    """From the first of the modules the compile's load phase uses to the last, the
    collector stays off (`cli.collection_paused` in `commands.compile.cmd_compile`)."""
    code = ("import gc, sys\n"
            "during = []\n"
            "def seen(phase, info):\n"
            "    if phase == 'start' and 'edgesim.float_pass' in sys.modules \\\n"
            "            and 'edgesim.sparsity' not in sys.modules:\n"
            "        during.append(info['generation'])\n"
            "gc.callbacks.append(seen)\n"
            "from edgesim import cli\n"
            "rc = cli.main(['compile', '--example', '--method', 'proxy', '--quiet', '-o', "
            f"{str(tmp_path / 'out')!r}])\n"
            "print(rc, during)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip().splitlines()[-1] == "0 []"

