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
from dataclasses import dataclass
from pathlib import Path

from edgesim.errors import UserError
from edgesim.progress import PointsBar
from edgesim.sweep.executors import (
    DaskExecutor,
    InlineExecutor,
    LocalExecutor,
    cpu_count,
    forkserver_available,
)
from edgesim.sweep.points import Point, enumerate_points
from edgesim.sweep.run import SECONDS_PER_EVALUATION, SweepSummary, run_sweep
from edgesim.sweep.space import Allocate, Space, load_space


def sweep(space: str | Path, output: str | Path, *, workers: int | None = None,
          scheduler: str | None = None, dask_local: int | None = None,
          batch_size: int | None = None, progress: bool = True) -> SweepSummary:
    """Run (or resume) the sweep of a space file into a results directory.

    Args:
        space: the space YAML.
        output: results directory (`results.jsonl` inside); an existing one is resumed.
        workers: local process-pool workers (default: as many as `auto_workers` predicts
            fastest, from none -- this process, which is then printed -- to the idle cores).
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


# Serial or parallel, and how many workers, is decided by predicted wall time. The figures are
# CPU seconds on one core, measured by bench/bench_sweep.py and by timing the parts in fresh
# processes (2026-12-07, a shared 2-core machine at load 9-14, which inflates CPU time too;
# zoo resnet50 and mobilenet_v2, the shipped macarray space):
# - a (point, model) evaluation with a per-design allocation: 78-100 us (0.31-0.40 CPU-s for
#   2000 points x 2 models, in batches of 500 or more);
# - loading a model: 0.1-1.5 CPU-s, its proxy sensitivity (allocating spaces only) 0.3-2.2
#   (mobilenet_v2 .. resnet50; 4.0-4.2 CPU-s for both): per model 0.7 + 1.4 on average;
# - a pool's start: the fork server's interpreter, imports and cached kernels, 1.2 CPU-s from
#   making the pool to its workers' first task (1.21 with 1 worker, 1.20 with 2), paid once
#   for any number of workers (`executors.pool_context`); FORK_S per worker is an allowance
#   (a spawned worker, where there is no fork server, pays the whole start itself).
MODEL_LOAD_S = 0.7
MODEL_SENSITIVITY_S = 1.4
POOL_START_S = 1.2
FORK_S = 0.05
WORKER_START_S = POOL_START_S  # what one worker's start costs (`inline_note`)


@dataclass(frozen=True)
class Timings:
    """A sweep's predicted parts, CPU seconds on one idle core.

    Attributes:
        setup_s: this process loading the models and their sensitivities.
        work_s: evaluating every point (cost calls, allocation solves).
        start_s: a pool's start before its first worker can run (0 for none).
        per_worker_s: each worker's own start on top of `start_s`.
    """

    setup_s: float
    work_s: float
    start_s: float = POOL_START_S
    per_worker_s: float = FORK_S


def point_count(space: Space) -> int:
    """The points a space enumerates, without enumerating them (at most: duplicates are
    dropped then); an LHS draw imports scipy.stats, ~0.9 CPU-s before the pool could start."""
    if space.search.method == "grid":
        return math.prod(len(p.raw) for p in space.parameters)
    return space.search.samples or 0


def predicted_work_s(space: Space) -> float:
    """CPU seconds the sweep's cost calls are expected to take on one core."""
    return point_count(space) * len(space.models) * SECONDS_PER_EVALUATION


def predicted_timings(space: Space) -> Timings:
    """The `Timings` of a space (from the constants above; no model is loaded)."""
    per_model = MODEL_LOAD_S + (MODEL_SENSITIVITY_S if isinstance(space.optimise, Allocate)
                                else 0.0)
    if forkserver_available():
        return Timings(len(space.models) * per_model, predicted_work_s(space))
    return Timings(len(space.models) * per_model, predicted_work_s(space), 0.0,
                   POOL_START_S)  # spawned workers: each starts on its own


def predicted_wall_s(t: Timings, workers: int, cores: int) -> float:
    """Seconds until the last point is stored, with `workers` pool processes (0: this process
    alone) on `cores` idle cores.

    The pool starts while this process loads the models (the executor is made first): on two
    or more cores side by side, so the first phase takes the longer of the two, or their
    summed CPU time shared by the cores if that is longer; on one core one after the other.
    Then the workers share the work, at most one per core.
    """
    if workers == 0:
        return t.setup_s + t.work_s
    start_cpu = t.start_s + workers * t.per_worker_s
    one_start = t.start_s + t.per_worker_s  # a worker waits for its own start only
    first = max(t.setup_s, one_start, (t.setup_s + start_cpu) / max(1, cores))
    return first + t.work_s / min(workers, max(1, cores))


# a pool must save more predicted wall time than this: two batches' fixed cost (~10 ms each,
# bench_sweep), which the prediction leaves out; below it a pool only adds processes
POOL_GAIN_S = 0.02


def best_workers(t: Timings, cores: int, most: int | None = None) -> int:
    """The number of pool workers (0: this process) with the shortest predicted wall time, the
    fewest processes on a tie; up to `most` workers (default: `cores`). A pool is chosen only
    when it saves more than `POOL_GAIN_S`."""
    options = range(0, max(1, most or cores) + 1)
    best = min(options, key=lambda n: (round(predicted_wall_s(t, n, cores), 9), n))
    saved = predicted_wall_s(t, 0, cores) - predicted_wall_s(t, best, cores)
    return best if saved > POOL_GAIN_S else 0


def idle_cores() -> int:
    """Cores not busy with other work: the cores less the 1-minute load average, which counts
    this process too (a shared machine gives workers no core to run on: bench_sweep measured
    2 workers slower than this process alone at a load of 10-18 on 2 cores)."""
    busy_elsewhere = max(0.0, os.getloadavg()[0] - 1.0)
    return max(1, min(cpu_count(), math.floor(cpu_count() - busy_elsewhere + 0.5)))


def auto_workers(space: Space) -> int:
    """The pool workers `edgesim sweep` uses when not told (0: this process)."""
    return best_workers(predicted_timings(space), idle_cores(), cpu_count())


def runs_inline(space: Space, workers: int | None) -> bool:
    """A sweep runs in this process unless pool workers are asked for or would be faster."""
    return workers is None and auto_workers(space) == 0


def inline_note(space: Space) -> str:
    """Why a sweep runs in this process (printed when it does without being asked)."""
    t = predicted_timings(space)
    return (f"sweep: running in this process: predicted {predicted_wall_s(t, 0, 1):.1f} s "
            f"(~{t.work_s:.1f} CPU-s of cost calls after ~{t.setup_s:.1f} s of models), no "
            f"faster with pool workers on the {idle_cores()} idle core(s) after their start "
            f"(~{WORKER_START_S} CPU-s); --workers N forces a pool")


def _local(space: Space, workers: int | None) -> InlineExecutor | LocalExecutor:
    count = workers if workers is not None else auto_workers(space)
    return InlineExecutor() if count == 0 else LocalExecutor(count)


__all__ = ["POOL_GAIN_S", "WORKER_START_S", "DaskExecutor", "InlineExecutor", "LocalExecutor",
           "Point", "Space",
           "SweepSummary", "Timings", "auto_workers", "best_workers", "enumerate_points",
           "idle_cores", "load_space", "point_count", "predicted_timings", "predicted_wall_s",
           "predicted_work_s", "run_sweep", "runs_inline", "sweep"]
