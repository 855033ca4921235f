"""numba's cache of a kernel goes stale when a helper it inlines, in another module, changes
(compiler.numba_cache): run, edit the helper's module, run again in a new process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# the kernel's module (numba's own stamp covers only this file)
KERNEL = """
from compiler.numba_cache import njit
from {pkg}.helper import helper


@njit(cache=True)
def kernel(x):
    return helper(x) + 1
"""
HELPER = """
from compiler.numba_cache import njit


@njit(cache=True)
def helper(x):
    return x * {factor}
"""
# a process that stamps the temp tree as numba_cache stamps the project's, runs the kernel and
# prints its answer and whether numba compiled it (no cached overload: a fresh signature)
RUN = """
import sys
from pathlib import Path
import compiler.numba_cache as nc
nc.ROOT, nc.SOURCE_DIRS = Path(sys.argv[1]), ("{pkg}",)
from {pkg}.kernel import kernel
print(kernel(3), kernel.stats.cache_hits.total())
"""


def _run(root: Path, pkg: str) -> tuple[int, int]:
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{REPO}"}
    env.pop("NUMBA_CACHE_DIR", None)
    out = subprocess.run([sys.executable, "-c", RUN.format(pkg=pkg), str(root)], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), int(out[1])


def _write(path: Path, text: str, mtime: float) -> None:
    path.write_text(text)
    os.utime(path, (mtime, mtime))


def test_editing_an_inlined_helper_recompiles_its_caller(tmp_path: Path) -> None:
    pkg = "nbcache_pkg"
    (tmp_path / pkg).mkdir()
    _write(tmp_path / pkg / "__init__.py", "", 1_000_000.0)
    _write(tmp_path / pkg / "kernel.py", KERNEL.format(pkg=pkg), 1_000_000.0)
    _write(tmp_path / pkg / "helper.py", HELPER.format(factor=2), 1_000_000.0)
    assert _run(tmp_path, pkg) == (3 * 2 + 1, 0)   # compiled
    assert _run(tmp_path, pkg) == (3 * 2 + 1, 1)   # from the cache: the stamp is stable
    # the helper changes; the kernel's file (numba's own stamp) does not
    _write(tmp_path / pkg / "helper.py", HELPER.format(factor=5), 2_000_000.0)
    assert _run(tmp_path, pkg) == (3 * 5 + 1, 0)
