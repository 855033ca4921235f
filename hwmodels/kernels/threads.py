"""How many threads numba's parallel kernels may use, read without starting its thread pool.

A sweep worker runs with NUMBA_NUM_THREADS=1 (the process pool owns the cores); its cost calls
then take the serial kernels, which need no thread pool and no second compiled variant.
"""

from __future__ import annotations

import os
import sys


def available() -> int:
    """numba's thread count (NUMBA_NUM_THREADS, default: the cores), fixed at numba's import;
    before numba is imported (`kernels.jit` imports it on demand), what its config will read."""
    numba = sys.modules.get("numba")
    if numba is not None:
        return int(numba.config.NUMBA_NUM_THREADS)
    value = os.environ.get("NUMBA_NUM_THREADS", "")
    return int(value) if value.strip().isdigit() and int(value) > 0 else _cores()


def _cores() -> int:
    # numba.core.config.num_threads_default (0.59-0.68): the affinity mask, else the CPUs
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)
