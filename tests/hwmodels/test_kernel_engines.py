"""The cost kernels' two engines (`hwmodels.kernels.jit`, issue 17): plain Python and numba run
the same source and give the same numbers -- exactly, since no kernel uses fastmath -- on every
target kind (CPU under every runtime profile and one thread, MAC array, sparse MAC array, MCU)
for 4 zoo models x the shipped targets x bit sets; the entry points pick the engine by work
as `jit.engine` documents, and sweeps always run compiled."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from compiler.frontend import load
from edgesim import zoo
from hwmodels import cost, cpu, macarray, mcu, prepared, prepared_cpu
from hwmodels.kernels import jit
from hwmodels.target import list_targets, load_target
from tests.hwmodels.test_prepared_cpu import SMALL

ROOT = Path(__file__).resolve().parents[2]
MODELS = ("digits_cnn", "mobilenet_v2", "minilm", "llama")
BITS = np.array([[32, 32], [16, 16], [8, 8], [4, 8], [2, 8], [8, 16], [4, 32]])
TARGETS = [load_target(n) for n in list_targets()]
KINDED = [t for t in TARGETS if isinstance(t, cpu.CpuTarget | macarray.MacArrayTarget
                                            | mcu.McuTarget)]
RUNTIMES = (*cpu.RUNTIMES, *cpu.LEGACY_RUNTIMES)


@pytest.fixture(scope="module", params=MODELS)
def table(request):
    return load(zoo.build(request.param, **SMALL.get(request.param, {}))).layer_table()


def _both(monkeypatch, call, *args, **kw) -> tuple[cost.Cost, cost.Cost]:  # noqa: ANN001, ANN002, ANN003
    """`call(*args, **kw)` in the Python engine, then compiled."""
    monkeypatch.setenv(jit.ENGINE_ENV, "python")
    python = call(*args, **kw)
    monkeypatch.setenv(jit.ENGINE_ENV, "numba")
    return python, call(*args, **kw)


def _same(a: cost.Cost, b: cost.Cost, where: str) -> None:
    for name in cost.Cost.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape, (where, name)
        assert np.array_equal(x, y, equal_nan=True), (where, name, np.nanmax(abs(x - y)))


def test_the_shipped_targets_cover_every_kind() -> None:
    kinds = {type(t).__name__ for t in KINDED}
    assert kinds == {"CpuTarget", "MacArrayTarget", "McuTarget"}
    assert any(isinstance(t, macarray.MacArrayTarget) and t.sparsity != "none" for t in KINDED)


def test_both_engines_give_the_same_cost_on_every_target(table, monkeypatch) -> None:  # noqa: ANN001
    for target in KINDED:
        if isinstance(target, cpu.CpuTarget):
            for runtime in RUNTIMES:
                a, b = _both(monkeypatch, cost.evaluate, table, BITS, target, runtime=runtime)
                _same(a, b, f"{target.name} {runtime}")
            a, b = _both(monkeypatch, cost.evaluate, table, BITS, target, threads=1)
            _same(a, b, f"{target.name} threads=1")
        else:
            _same(*_both(monkeypatch, cost.evaluate, table, BITS, target), target.name)


def test_both_engines_agree_on_configs_and_prepared_calls(table, monkeypatch) -> None:  # noqa: ANN001
    rpi5, systolic = load_target("rpi5"), load_target("systolic-16x16")
    cpus = cpu.variants(rpi5, cores=[1, 4], clock_ghz=[1.5, 2.4])
    _same(*_both(monkeypatch, cpu.evaluate_configs, table, BITS, cpus), "cpu configs")
    p = prepared_cpu.prepare(table, BITS, rpi5)
    _same(*_both(monkeypatch, prepared_cpu.run, p), "prepared cpu")
    q = prepared.prepare(table, BITS, systolic)
    _same(*_both(monkeypatch, prepared.run, q), "prepared macarray")


def test_the_engine_follows_the_work(monkeypatch) -> None:
    """Small work: Python, counted; the call that brings the counted work to the threshold,
    and every call once numba is loaded: numba; forced names decide; bad names raise."""
    monkeypatch.delenv(jit.ENGINE_ENV, raising=False)
    monkeypatch.setattr(jit, "_NUMBA_MODULES", set())
    monkeypatch.setattr(jit._RENTAL, "work", 0)
    quarter = jit.NUMBA_MIN_WORK // 4
    assert [jit.engine(quarter) for _ in range(4)] == ["python"] * 3 + ["numba"]
    assert jit._RENTAL.work == 3 * quarter  # the numba call is not rented
    monkeypatch.setattr(jit._RENTAL, "work", 0)
    assert jit.engine(jit.NUMBA_MIN_WORK - 1) == "python"
    monkeypatch.setattr(jit._RENTAL, "work", 0)
    assert jit.engine(jit.NUMBA_MIN_WORK) == "numba"
    assert jit.engine(1, "numba") == "numba" and jit.engine(10**9, "python") == "python"
    monkeypatch.setattr(jit, "_NUMBA_MODULES", {"hwmodels.kernels.cpu"})
    assert jit.engine(1) == "numba"  # loaded: compiled code is the faster from here on
    monkeypatch.setenv(jit.ENGINE_ENV, "python")
    assert jit.engine(10**9) == "python"
    with pytest.raises(ValueError, match="EDGESIM_KERNELS"):
        jit.engine(1, "pypy")


# in a fresh process: which calls load numba
DISPATCH = """import sys
import numpy as np
from compiler.frontend import load
from edgesim import zoo
from hwmodels import cost, cpu, sweep_hooks
from hwmodels.kernels import jit
from hwmodels.target import load_target
table = load(zoo.build('digits_cnn')).layer_table()
rpi5 = load_target('rpi5')
steps = []
cost.evaluate(table, np.array([[8, 8]]), rpi5)
steps.append('numba' in sys.modules)
if sys.argv[1] == 'sweep':
    sweep_hooks.cpu_costs(table, np.array([[8, 8]]), [rpi5])
else:
    bits = np.array([[32, 32], [16, 16], [8, 8], [4, 8], [2, 8], [8, 16], [4, 32], [3, 8]])
    big = load(zoo.build('mobilenet_v2', resolution=32, num_classes=10)).layer_table()
    configs = 1 + jit.NUMBA_MIN_WORK // (len(big) * len(bits))
    cpu.evaluate_configs(big, bits, cpu.variants(rpi5, clock_ghz=[1.0 + i for i in
                                                                  range(configs)]))
steps.append('numba' in sys.modules)
print(steps)
"""


@pytest.mark.parametrize("case", ["large", "sweep"])
def test_small_calls_stay_in_python_large_ones_and_sweeps_load_numba(case: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(jit.ENGINE_ENV, None)
    out = subprocess.run([sys.executable, "-c", DISPATCH, case], capture_output=True, text=True,
                         check=True, env=env)
    assert out.stdout.strip().splitlines()[-1] == "[False, True]"
