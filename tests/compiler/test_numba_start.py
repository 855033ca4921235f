"""numba's start-up without its BLAS probe (`compiler.numba_start`): scipy.linalg is
not imported, kernels still run and give numpy's answer, and the probe's module imports as
usual afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CODE = """
import sys
import numpy as np
from compiler.numba_start import load_registries
load_registries()
from compiler.quantizers import quantize_weight, dequantize
w = np.linspace(-1.0, 1.0, 64 * 8, dtype=np.float32).reshape(64, 8)
q = quantize_weight(w, 8, "per_channel", 0)
print("scipy.linalg" in sys.modules)
# oracle: symmetric 8-bit per row, step max|w| / 127 (closed form)
step = np.abs(w).max(axis=1, keepdims=True) / 127
print(bool(np.allclose(dequantize(q), np.round(w / step) * step, atol=1e-6)))
import scipy.linalg.cython_blas
print("cython_blas imports")
"""


def test_registries_load_without_scipy_linalg_and_the_probe_imports_after() -> None:
    run = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr[-500:]
    assert run.stdout.split("\n")[:3] == ["False", "True", "cython_blas imports"]


# compiler registries numba's refresh imports and nothing else does (numba 0.6x)
REGISTRIES = ("numba.np.polynomial.polynomial_functions", "numba.typed.listobject",
              "numba.np.npdatetime", "numba.np.random.generator_methods")

KERNELS = """
import sys
import numpy as np
from compiler.numba_start import load_registries
load_registries()
from compiler.quantizers import quantize_weight, dequantize
from compiler.window_kernels import scatter_planes
w = np.linspace(-1.0, 1.0, 64 * 8, dtype=np.float32).reshape(64, 8)
step = np.abs(w).max(axis=1, keepdims=True) / 127  # symmetric 8-bit per row (closed form)
print(bool(np.allclose(dequantize(quantize_weight(w, 8, "per_channel", 0)),
                       np.round(w / step) * step, atol=1e-6)))
# a parallel kernel (its thread pool starts on reload): numpy's fancy indexing as the oracle
x, where = np.arange(12.0).reshape(3, 4), np.array([2, -1, 0, 5])
xp = np.empty((3, 6))
scatter_planes(x, where, -7.0, xp)
want = np.full((3, 6), -7.0)
want[:, where[where >= 0]] = x[:, where >= 0]
print(bool(np.array_equal(xp, want)))
print([m for m in ("scipy.linalg", *REGISTRIES) if m in sys.modules])
""".replace("*REGISTRIES", ", ".join(map(repr, REGISTRIES)))


def test_cached_kernels_load_without_the_compiler_registries(tmp_path: Path) -> None:
    """A cold cache compiles (registries loaded, probe still absent); a warm one only loads:
    same answers, no registry imported (the old start loaded them all: 0.13 CPU-s)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_CACHE_DIR": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", KERNELS], capture_output=True, text=True,
                           env=env) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr[-500:]
    cold, warm = (run.stdout.split("\n")[:3] for run in runs)
    assert cold == ["True", "True", repr(list(REGISTRIES))]
    assert warm == ["True", "True", "[]"]
