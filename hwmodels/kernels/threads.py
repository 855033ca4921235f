"""Thread counts: how many threads numba's parallel kernels may use, read without starting its
thread pool; and how onnxruntime's thread pool splits a cost-gated elementwise loop.

A sweep worker runs with NUMBA_NUM_THREADS=1 (the process pool owns the cores); its cost calls
then take the serial kernels, which need no thread pool and no second compiled variant.

onnxruntime's elementwise kernels (Add / Mul / Relu / Sigmoid ..., core/providers/cpu) run
`ThreadPool::TryParallelFor(n, TensorOpCost{bytes_loaded, bytes_stored, compute}, fn)`
(core/common/threadpool.cc `ParallelFor`): the loop stays on the calling thread unless Eigen's
`TensorCostModel::numThreads` (unsupported/Eigen/CXX11/src/Tensor/TensorCostModel.h) asks
for more than one, int((n * c - kStartupCycles) / kPerThreadCycles + 0.9) >= 2 with
c = (bytes_loaded + bytes_stored) * 11 / 64 + compute cycles per element; then all threads
claim blocks of `CalculateParallelForBlock`'s size (max(n / (4 t), kTaskSize / c), coarsened
while the blocks still divide evenly over the threads), so the busiest thread runs
ceil(blocks / t) of them (`parallel_for_share`).
"""

from __future__ import annotations

import math
import os
import sys

from hwmodels.kernels.jit import njit

EIGEN_STARTUP_CYCLES = 100_000.0     # TensorCostModel kStartupCycles
EIGEN_PER_THREAD_CYCLES = 100_000.0  # TensorCostModel kPerThreadCycles
EIGEN_TASK_CYCLES = 40_000.0         # TensorCostModel kTaskSize
EIGEN_BYTE_CYCLES = 11.0 / 64.0      # TensorCostModel kLoadCycles = kStoreCycles
MAX_OVERSHARDING = 4.0               # CalculateParallelForBlock max_oversharding_factor
# compute cycles per element the functors declare (TensorOpCost compute_cycles): 1 for
# Add / Mul / Relu / Tanh, 2 for Sigmoid; read off onnxruntime 1.32's own choice, the loop
# size at which a 2-thread session's profile first shows a parallel block (88,425 elements
# for Add, Mul, Relu, Tanh: c = 2.375; 62,224 for Sigmoid: c = 3.375), which
# tests/hwmodels/test_parallel_for.py re-checks against onnxruntime
ELTWISE_COMPUTE_CYCLES = 1.0
EXP_COMPUTE_CYCLES = 2.0


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


@njit(cache=True)
def parallel_for_cost(eb: float, compute: float) -> float:
    """Eigen cost per element of an elementwise loop reading and writing `eb` bytes."""
    return 2.0 * eb * EIGEN_BYTE_CYCLES + compute


@njit(cache=True)
def parallel_for_splits(n: float, cost: float) -> bool:
    """Whether onnxruntime's ParallelFor runs `n` elements of `cost` on more than one thread."""
    want = (n * cost - EIGEN_STARTUP_CYCLES) / EIGEN_PER_THREAD_CYCLES + 0.9
    return n > 1.0 and math.floor(want) >= 2.0


@njit(cache=True)
def _efficiency(blocks: float, t: float) -> float:
    return blocks / (math.ceil(blocks / t) * t)


@njit(cache=True)
def parallel_for_block(n: float, cost: float, t: float) -> float:
    """`CalculateParallelForBlock`: the block size ParallelFor hands out to t threads."""
    block = min(n, max(math.ceil(n / (MAX_OVERSHARDING * t)),
                       math.floor(EIGEN_TASK_CYCLES / cost)))
    max_block = min(n, 2.0 * block)
    best = _efficiency(math.ceil(n / block), t)
    prev = math.ceil(n / block)
    while best < 1.0 and prev > 1.0:  # coarser blocks while they divide no worse
        coarser = math.ceil(n / (prev - 1.0))
        if coarser > max_block:
            break
        prev = math.ceil(n / coarser)
        eff = _efficiency(prev, t)
        if eff + 0.01 >= best:
            block, best = coarser, max(best, eff)
    return block


@njit(cache=True)
def parallel_for_share(n: float, cost: float, t: float) -> float:
    """Share of the `n` elements the busiest of t threads runs (1 when the loop stays on the
    calling thread): ceil(blocks / t) blocks of `parallel_for_block`, the last one short."""
    if t <= 1.0 or not parallel_for_splits(n, cost):
        return 1.0
    block = parallel_for_block(n, cost, t)
    return min(n, math.ceil(math.ceil(n / block) / t) * block) / n
