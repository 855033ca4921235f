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
