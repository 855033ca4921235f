"""Hardware design-space exploration: `edgesim sweep SPACE.yaml -o results/`.

- `space`: parse and check a space YAML; enumerate grid, random or Latin-hypercube points.
- `run`: evaluate points in batches (one vectorised cost call per batch and model), with fixed
  bits or the least sensitive allocation per design.
- `executors`: in-process, local process pool (default), Dask distributed.
- `store`: JSON-lines results with a header, appended as batches finish; resumable.
- `kinds`: the base target's sweep hooks (variant builder, batched cost call, area proxy), read
  from its kind's capabilities in `hwmodels.kinds`.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

from edgesim.errors import UserError
from edgesim.progress import PointsBar
from edgesim.sweep.executors import DaskExecutor, InlineExecutor, LocalExecutor, cpu_count
from edgesim.sweep.points import Point, enumerate_points
from edgesim.sweep.run import SweepSummary, run_sweep
from edgesim.sweep.space import Space, load_space


def sweep(space: str | Path, output: str | Path, *, workers: int | None = None,
          scheduler: str | None = None, dask_local: int | None = None,
          batch_size: int | None = None, progress: bool = True) -> SweepSummary:
    """Run (or resume) the sweep of a space file into a results directory.

    Args:
        space: the space YAML.
        output: results directory (`results.jsonl` inside); an existing one is resumed.
        workers: local process-pool workers (default: all cores if they pay for their start
            (`parallel_pays`), else none -- this process -- which is then printed).
        scheduler: a Dask scheduler address ("tcp://HOST:8786") instead of the local pool.
        dask_local: start a local Dask cluster of this many workers instead.
        batch_size: points per task (default: about eight batches per worker).
        progress: print points done, rate and ETA to stderr.

    Returns:
        A `SweepSummary`.

    Raises:
        UserError: a bad space file, conflicting options, or a results directory of another
            space.
    """
    if workers is not None and workers < 1:
        raise UserError("--workers", f"must be >= 1, got {workers}")
    if dask_local is not None and dask_local < 1:
        raise UserError("--dask-local", f"must be >= 1, got {dask_local}")
    if batch_size is not None and batch_size < 1:
        raise UserError("--batch-size", f"must be >= 1, got {batch_size}")
    dask = scheduler is not None or dask_local is not None
    if dask and workers is not None:
        raise UserError("--workers", "sets the local pool; not with --scheduler/--dask-local")
    parsed = load_space(space)
    executor = DaskExecutor(scheduler, dask_local) if dask else _local(parsed, workers)
    if isinstance(executor, InlineExecutor) and progress:
        print(inline_note(parsed), file=sys.stderr)
    with executor:
        return run_sweep(parsed, output, executor=executor, batch_size=batch_size,
                         progress=PointsBar() if progress else None)


# Serial or parallel is decided by size: the predicted work against what a pool worker's start
# costs. Both figures are measured by bench/bench_sweep.py (one core, CPU seconds, 2026-12):
# a (point, model) evaluation of the shipped macarray space (resnet50 / mobilenet_v2, per-design
# allocation) takes ~0.1 ms (0.35 CPU-s for 2000 points x 2 models); a spawned worker's start
# (interpreter, imports, numba's cached kernels) 1.8-2.0 CPU-s.
SECONDS_PER_EVALUATION = 1e-4
WORKER_START_S = 1.9


def predicted_work_s(space: Space) -> float:
    """CPU seconds the sweep's cost calls are expected to take on one core."""
    return len(enumerate_points(space)) * len(space.models) * SECONDS_PER_EVALUATION


def parallel_pays(work_s: float, workers: int) -> bool:
    """True if `workers` processes finish `work_s` of work sooner than this process alone: the
    time they save, work_s (1 - 1/workers), exceeds a worker's start (they start together)."""
    return workers > 1 and work_s * (1.0 - 1.0 / workers) > WORKER_START_S


def idle_cores() -> int:
    """Cores not busy with other work: the cores less the 1-minute load average, which counts
    this process too (a shared machine gives workers no core to run on: bench_sweep measured
    2 workers slower than this process alone at a load of 10-18 on 2 cores)."""
    busy_elsewhere = max(0.0, os.getloadavg()[0] - 1.0)
    return max(1, min(cpu_count(), math.floor(cpu_count() - busy_elsewhere + 0.5)))


def runs_inline(space: Space, workers: int | None) -> bool:
    """A sweep runs in this process unless pool workers are asked for or would pay."""
    return workers is None and not parallel_pays(predicted_work_s(space), idle_cores())


def inline_note(space: Space) -> str:
    """Why a sweep runs in this process (printed when it does without being asked)."""
    return (f"sweep: running in this process: ~{predicted_work_s(space):.1f} CPU-s of predicted "
            f"work, less than {idle_cores()} pool worker(s) on the idle cores would save after "
            f"their start "
            f"(~{WORKER_START_S} CPU-s each); --workers N forces a pool")


def _local(space: Space, workers: int | None) -> InlineExecutor | LocalExecutor:
    return InlineExecutor() if runs_inline(space, workers) else LocalExecutor(workers)


__all__ = ["WORKER_START_S", "DaskExecutor", "InlineExecutor", "LocalExecutor", "Point", "Space",
           "SweepSummary", "enumerate_points", "load_space", "parallel_pays", "predicted_work_s",
           "run_sweep", "runs_inline", "sweep"]
