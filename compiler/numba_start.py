"""numba's start-up without its BLAS probe.

The first numba kernel a process runs (compiled, or loaded from numba's on-disk cache) loads
numba's lowering registries, and one of them (`numba.np.arraymath`) probes for a BLAS by
importing scipy.linalg.cython_blas, which pulls in scipy.linalg, numpy.testing and numpy.f2py:
0.15-0.2 of the 0.25-0.33 CPU-s that first kernel cost a compile (measured on
`compiler.quantizers.quantize_weight`, shared 2-core machine). No edgesim kernel calls a BLAS
inside numba (np.dot and friends, what the probe is for; the arithmetic that needs a BLAS runs
in numpy, which has its own), so the probe is answered "absent" while the registries load,
and the module is importable again at once.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

BLAS_PROBE = "scipy.linalg.cython_blas"


@contextmanager
def blas_probe_absent() -> Iterator[None]:
    """While the body runs, importing scipy.linalg.cython_blas fails (ImportError), unless it
    was imported already; afterwards it imports as usual."""
    free = BLAS_PROBE not in sys.modules
    if free:
        sys.modules[BLAS_PROBE] = None  # type: ignore[assignment]  # import says: not installed
    try:
        yield
    finally:
        if free and sys.modules.get(BLAS_PROBE, 0) is None:
            del sys.modules[BLAS_PROBE]


def load_registries() -> None:
    """Load numba's CPU registries now, without the BLAS probe (once per process: later
    calls find them loaded)."""
    from numba.core.registry import cpu_target

    with blas_probe_absent():
        cpu_target.target_context.refresh()
