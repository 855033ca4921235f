"""Run a sweep: evaluate the points of a space in batches, store them as they finish.

Batches go to an executor (see `edgesim.sweep.executors`), which runs
`edgesim.sweep.evaluate.encoded_batch` on each; the result of a point depends on nothing but
the point, so every executor and batch size gives the same numbers. A results directory that
already holds some of the space's points resumes: only the rest are evaluated.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgesim.sweep.evaluate import Context, encoded_batch, model_context, proxy_sensitivity
from edgesim.sweep.points import Point, enumerate_points, fingerprint
from edgesim.sweep.space import Space
from edgesim.sweep.store import EncodedRecords, ResultStore, encode

SECONDS_PER_EVALUATION = 1e-4  # a (point, model) evaluation (see `edgesim.sweep`'s figures)


@dataclass(frozen=True)
class SweepSummary:
    """What a `run_sweep` call did.

    Attributes:
        path: the results file.
        points: points in the space.
        skipped: points already stored (resumed).
        computed: points evaluated by this call.
        errors: of those, points recorded with an error.
        setup_s: enumerating, opening the store, loading models and sensitivities.
        eval_s: evaluating and storing the points.
    """

    path: str
    points: int
    skipped: int
    computed: int
    errors: int
    setup_s: float
    eval_s: float

    @property
    def points_per_s(self) -> float:
        return self.computed / self.eval_s if self.eval_s > 0 else 0.0


def header(space: Space) -> dict[str, Any]:
    """The store's header: the space as parsed, its fingerprint, and software versions."""
    from importlib import metadata

    from edgesim import __version__

    versions: dict[str, str | None] = {"edgesim": __version__, "python": sys.version.split()[0]}
    for package in ("numpy", "numba", "scipy", "onnx"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"space": describe(space), "fingerprint": fingerprint(space), "versions": versions}


def describe(space: Space) -> dict[str, Any]:
    """The space as plain data (what the header records)."""
    from edgesim.sweep.kinds import to_raw

    return {"file": space.file, "name": space.name, "base": to_raw(space.base),
            "parameters": [{"name": p.name, "values": list(p.raw), "low": p.low, "high": p.high,
                            "log": p.log} for p in space.parameters],
            "search": to_raw(space.search), "models": [to_raw(m) for m in space.models],
            "optimise": {type(space.optimise).__name__: to_raw(space.optimise)},
            "runtime": space.runtime, "threads": space.threads}


# A batch pays a fixed cost besides its points' evaluations (building its targets' arrays, one
# allocation solve per distinct cost matrix): ~10 ms on the shipped macarray space, whose points
# cost ~0.16 ms each (2 models), measured by timing 2000 points in batches of 25 to 2000
# (1.08 CPU-s at 25, 0.40 at 250, 0.32 at 2000, bench/bench_sweep.py's space).
BATCH_FIXED_S = 0.01
BATCH_OVERHEAD = 0.1  # the largest share of a batch's time the fixed cost may take


def default_batch_size(todo: int, workers: int, point_s: float = 2e-4) -> int:
    """Points per batch: about four batches per worker (load balance, steady progress), but
    enough points that the fixed cost is at most `BATCH_OVERHEAD` of a batch's time
    (`point_s`: predicted seconds per point), no more than a worker's share, 4096 at most."""
    enough = math.ceil(BATCH_FIXED_S / BATCH_OVERHEAD / max(point_s, 1e-9))
    share = math.ceil(todo / max(1, workers))
    return max(1, min(4096, share, max(enough, math.ceil(todo / max(1, workers * 4)))))


def print_progress(done: int, total: int, elapsed_s: float) -> None:
    """Points done, rate and ETA on one stderr line (`edgesim.progress.PointsBar` draws a
    bar on a terminal)."""
    from edgesim.progress import points_line

    print(points_line(done, total, elapsed_s), file=sys.stderr, flush=True)


def run_sweep(space: Space, out_dir: str | Path, *, executor: Any = None,
              batch_size: int | None = None, progress: Callable[..., None] | None = None,
              sensitivity: Callable[..., Any] = proxy_sensitivity,
              task: Callable[..., Any] = encoded_batch) -> SweepSummary:
    """Evaluate every point of `space` not yet stored in `out_dir`, appending as batches finish.

    Args:
        space: a parsed space (`edgesim.sweep.space.load_space`).
        out_dir: results directory; re-running with the same space resumes.
        executor: an executor of `edgesim.sweep.executors` (default: a local process pool on
            all cores); it must be entered (`with`) by the caller.
        batch_size: points per task (default: `default_batch_size`).
        progress: `(done, total, elapsed_s)` callback after each stored batch.
        sensitivity: `(graph, w_bits) -> Sensitivity`, for `Allocate` spaces.
        task: the batch function `(context, points) -> records` or `EncodedRecords`
            (instrumentation hook).

    Returns:
        A `SweepSummary`.
    """
    from edgesim.sweep.executors import LocalExecutor

    start = time.perf_counter()
    points = enumerate_points(space)
    with ResultStore.open(out_dir, header(space)) as store:
        todo = [p for p in points if p.id not in store.done]
        errors, setup_s = 0, 0.0
        if todo:
            ctx = Context(space, tuple(model_context(space, i, sensitivity)
                                       for i in range(len(space.models))))
            setup_s = time.perf_counter() - start
            own = executor is None
            executor = LocalExecutor() if own else executor
            try:
                errors = _drive(executor, ctx, todo, batch_size, store, progress, task)
            finally:
                if own:
                    executor.close()
        total_s = time.perf_counter() - start
        return SweepSummary(str(store.path), len(points), len(points) - len(todo), len(todo),
                            errors, setup_s or total_s, total_s - (setup_s or total_s))


def _drive(executor: Any, ctx: Context, todo: list[Point], batch_size: int | None,
           store: ResultStore, progress: Callable[..., None] | None,
           task: Callable[..., Any]) -> int:
    point_s = len(ctx.models) * SECONDS_PER_EVALUATION
    size = batch_size or default_batch_size(len(todo), executor.workers, point_s)
    batches = [todo[i:i + size] for i in range(0, len(todo), size)]
    done = errors = 0
    start = time.perf_counter()
    for records in executor.map_unordered(task, ctx, batches):
        if not isinstance(records, EncodedRecords):  # a plain batch function's dicts
            records = encode(records)
        store.append_encoded(records)
        done += len(records)
        errors += records.errors
        if progress is not None:
            progress(done, len(todo), time.perf_counter() - start)
    return errors
