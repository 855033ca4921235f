"""What a compile imports of numba: with its kernels cached, only what loading them needs, not
numba's compiler registries (`compiler.numba_start`; 0.13 CPU-s of every compile's start).
Oracle: sys.modules of the compile's own process, run as the CLI runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.compiler.test_numba_start import REGISTRIES

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # the first compile fills an empty kernel cache: ~10 s
def test_a_compile_with_cached_kernels_loads_no_compiler_registry(tmp_path: Path) -> None:
    """The first compile fills an empty kernel cache (compiling needs the registries); the
    second, the same command, loads every kernel from it and imports none of them."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    args = ["compile", "--example", "--quiet", "--force", "-o", str(tmp_path / "out")]
    code = (f"import sys; from edgesim import cli; rc = cli.main({args!r}); "
            f"print(rc, [m for m in {REGISTRIES!r} if m in sys.modules])")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=env, cwd=tmp_path) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr[-500:]
    cold, warm = (run.stdout.strip().splitlines()[-1] for run in runs)
    assert cold == f"0 {list(REGISTRIES)!r}"
    assert warm == "0 []"
