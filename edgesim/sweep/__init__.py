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

from pathlib import Path

from edgesim.errors import UserError
from edgesim.progress import PointsBar
from edgesim.sweep.executors import DaskExecutor, InlineExecutor, LocalExecutor
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
        workers: local process-pool workers (default: all cores, or none -- this process --
            for a sweep of fewer than `INLINE_MAX_EVALUATIONS` point-model pairs).
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
    with executor:
        return run_sweep(parsed, output, executor=executor, batch_size=batch_size,
                         progress=PointsBar() if progress else None)


# Below this many (point, model) evaluations a sweep runs in this process: a pool worker's
# start (imports, numba's cached kernels: ~1.5 CPU-s measured by bench_sweep) costs more than
# the whole sweep's cost calls (the shipped cpu-whatif space, 84 points x 2 models)
INLINE_MAX_EVALUATIONS = 1000


def runs_inline(space: Space, workers: int | None) -> bool:
    """A small sweep runs in this process, unless pool workers are asked for."""
    small = len(enumerate_points(space)) * len(space.models) < INLINE_MAX_EVALUATIONS
    return workers is None and small


def _local(space: Space, workers: int | None) -> InlineExecutor | LocalExecutor:
    return InlineExecutor() if runs_inline(space, workers) else LocalExecutor(workers)


__all__ = ["DaskExecutor", "InlineExecutor", "LocalExecutor", "Point", "Space", "SweepSummary",
           "enumerate_points", "load_space", "run_sweep", "runs_inline", "sweep"]
