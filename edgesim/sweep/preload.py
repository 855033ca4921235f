"""What the pool's fork server loads before it forks any worker (`edgesim.sweep.executors`):
the modules a batch runs and the cost kernels of every sweepable kind. Each worker is a fork of
that server and inherits them, so a pool of N workers pays one start, not N.

Importing this module does the loading: that is its only purpose (multiprocessing's fork
server takes module names to import, not functions to call). The server is started with
NUMBA_NUM_THREADS=1, so the kernels it loads are the serial ones and no numba thread pool
exists when it forks.
"""

from __future__ import annotations

import gc
import logging

# numba's BLAS probe (~0.2 of the server's ~1.2 CPU-s start, bench/bench_sweep.py) is
# answered "absent" while the kernels load (`compiler.numba_start`)
from compiler.numba_start import blas_probe_absent

try:
    with blas_probe_absent():
        from edgesim.sweep import evaluate  # noqa: F401 - what every batch runs
        from edgesim.sweep.warm import warm_kernels

        warm_kernels()
except Exception:  # noqa: BLE001 - only a head start: a real fault shows in the batches
    logging.getLogger(__name__).debug("preloading the sweep failed", exc_info=True)

# what is loaded now is shared by every forked worker: keep the cyclic collector from walking
# (and so copying, page by page) those objects in each of them
gc.freeze()
