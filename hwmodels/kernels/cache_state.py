"""Whether numba's on-disk cache holds the cost kernels, read from the file system without
importing numba (the CLI asks before it loads them, to announce a first-run compile).

numba writes one index file (`<module>.<function>-<line>.py311.nbi`) per cached function
next to the source, in `__pycache__`, and recompiles when any project source changed since
(the stamp covers the whole tree: `compiler.numba_cache`); a module with no index, or only
indexes older than the newest project source, compiles.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from compiler.numba_cache import newest_source

KERNELS = HOME = Path(__file__).resolve().parent
# per target kind (`hwmodels.kinds`), the kernel modules its compiled cost calls run whose
# first compile takes long enough to announce (`kernels.jit` logs the compile of a cold one of
# COST_KERNELS; the CLI prints it); the MCU and SCALE-Sim-mode kernels are small and compile in
# seconds, the roofline kind is numpy only (tests/edgesim/test_startup.py checks this table
# against the numba dispatchers a compiled simulate of each kind actually loads)
KIND_KERNELS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "cpu": ("arith", "cpu", "cpu_gemm", "cpu_gemm_layer", "cpu_ncnn", "cpu_roofline",
            "cpu_stream"),
    "macarray": ("arith", "macarray", "macarray_folds", "macarray_traffic", "sparse"),
    "mcu": (),
    "roofline": (),
})
COST_KERNELS = tuple(dict.fromkeys(name for names in KIND_KERNELS.values() for name in names))


def kernels_of(kind: str | None) -> tuple[str, ...]:
    """The kernel modules a cost call for a target of `kind` runs (all of them for None or a
    kind this table does not know)."""
    return COST_KERNELS if kind is None else KIND_KERNELS.get(kind, COST_KERNELS)


def cold_modules(root: Path = KERNELS, modules: tuple[str, ...] = COST_KERNELS) -> list[str]:
    """Of `modules` under `root`, those numba will compile on their next use (empty when
    NUMBA_CACHE_DIR moves the cache elsewhere: then nothing is known)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return []
    cache = root / "__pycache__"
    # the tree's sources stamp this tree's kernels; a kernels folder elsewhere (a test's copy)
    # is judged by its own files only
    newest = newest_source() if root.resolve() == HOME else 0.0
    return [name for name in modules if _stale(root / f"{name}.py", cache, newest)]


def _stale(src: Path, cache: Path, newest: float) -> bool:
    stamps = [index.stat().st_mtime for index in cache.glob(f"{src.stem}.*.nbi")]
    return not stamps or max(stamps) < max(newest, src.stat().st_mtime)
