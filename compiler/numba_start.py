"""numba's start-up: cached kernels load without the compiler's registries, and without its
BLAS probe.

The first numba kernel a process runs, compiled or loaded from numba's on-disk cache, makes
numba "refresh" its CPU target: import and install every lowering and typing registry
(numba.np.arraymath, linalg, npdatetime, random, polynomial, typed containers, jitclass, ...)
and start its runtime (NRT). Registries are what numba compiles with; a kernel read from the
cache is machine code already, linked at load time against the runtime and the C helpers
numba registers when its target context is made. Loading cached kernels therefore needs the
runtime only (without it, the first kernel that allocates crashed: tried), and
`load_registries` has numba's cache loader skip the refresh until a kernel has to be
compiled (a cache miss: the refresh then runs first, as numba's own compiler would run it).
Measured (shared 2-core machine, CPU-s): the refresh 0.13, the runtime alone 0.04; a whole
compile's own process, interleaved with the eager start, 5 runs each at load 8-10: silero
1.01 -> 0.84, magika 2.14 -> 1.88 (medians).

One of those registries (`numba.np.arraymath`) probes for a BLAS by importing
scipy.linalg.cython_blas, which pulls in scipy.linalg, numpy.testing and numpy.f2py (0.15-0.2
CPU-s). No edgesim kernel calls a BLAS inside numba (np.dot and friends, what the probe is
for), so wherever the registries do load, the probe is answered "absent", and the module is
importable again at once.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

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


def _load_overload(cache: Any, sig: Any, target_context: Any) -> Any:
    """numba's `Cache.load_overload` without its unconditional target refresh: the kernel
    from the cache if it is there; on a miss the refresh the compile that follows needs
    (numba's compiler refreshes too: then it finds everything loaded)."""
    # unpickling a kernel's environment imports the modules it names (numba.np.arraymath
    # for some): the probe stays absent for those imports too
    with blas_probe_absent():
        with cache._guard_against_spurious_io_errors():
            loaded = cache._load_overload(sig, target_context)
        if loaded is None:
            target_context.refresh()
    return loaded


def load_registries() -> None:
    """Make this process ready to run numba kernels (once per process; later calls do
    nothing): start numba's runtime and let cached kernels load without the registries. On a
    numba whose cache loader is not the one `_load_overload` replaces, load the registries now
    instead, without the BLAS probe."""
    from numba.core import caching
    from numba.core.registry import cpu_target
    from numba.core.runtime import rtsys

    if caching.Cache.load_overload is _load_overload:
        return
    if not all(hasattr(caching.Cache, f) for f in ("_load_overload",
                                                    "_guard_against_spurious_io_errors")):
        with blas_probe_absent():
            cpu_target.target_context.refresh()
        return
    rtsys.initialize(cpu_target.target_context)
    import numba.cpython.hashing  # noqa: F401 - the hash secret's symbols, which kernels link to

    caching.Cache.load_overload = _load_overload  # type: ignore[method-assign]
