"""How many threads numba's parallel kernels may use, read without starting its thread pool.

A sweep worker runs with NUMBA_NUM_THREADS=1 (the process pool owns the cores); its cost calls
then take the serial kernels, which need no thread pool and no second compiled variant.
"""

from __future__ import annotations

import numba


def available() -> int:
    """numba's thread count (NUMBA_NUM_THREADS, default: the cores), fixed at numba's import."""
    return int(numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]  # set at import
