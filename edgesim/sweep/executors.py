"""Where sweep batches run: in this process, a local process pool, or Dask distributed.

Every executor has `workers` and `map_unordered(fn, shared, tasks)`, which yields
`fn(shared, task)` for every task as each finishes (in any order), and is a context manager.
`shared` (the models and the base target) is sent once per task to a process pool and once per
worker to Dask (`scatter(broadcast=True)`). Dask is the optional extra `dist`, imported only
when a Dask executor is made. When a Dask worker dies, the scheduler reruns its tasks
elsewhere, and tasks it cancels instead are submitted again; the batch function is pure, so a
rerun gives the same records.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, CancelledError, ProcessPoolExecutor, wait
from multiprocessing.context import BaseContext
from typing import Any

# The fork server imports these once, before it forks any worker (see `pool_context`): the
# parent's main module (as a spawned worker would re-import it) and the sweep with its kernels.
PRELOAD = ("__main__", "edgesim.sweep.preload")


def cpu_count() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def _child_environment(**variables: str) -> Iterator[None]:
    """Environment variables set while child processes are spawned (a spawned child copies
    this process's environment), restored afterwards."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _start_worker() -> None:
    """A worker's start: load the cost kernels before the first batch."""
    from edgesim.sweep.warm import warm_kernels

    try:
        warm_kernels()
    except Exception:  # noqa: BLE001 - only a head start: a real fault shows in the batches
        logging.getLogger(__name__).debug("warming the cost kernels failed", exc_info=True)


def _ready() -> None:
    """The task that makes the pool spawn a worker."""


def forkserver_available() -> bool:
    """Whether pool workers come from a fork server here (see `pool_context`)."""
    return "forkserver" in multiprocessing.get_all_start_methods()


def pool_context() -> BaseContext:
    """Where pool workers come from: a fork server where the platform has one, else spawn.

    A spawned worker starts an interpreter, imports the sweep and loads the kernels (~1.3
    CPU-s, bench/bench_sweep.py), each worker again. The fork server does that once
    (`edgesim.sweep.preload`) and forks every worker from itself, a fresh single-threaded
    process. This process is never forked: numba's threads do not survive a fork.
    """
    if not forkserver_available():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOAD))  # read when the server starts
    return context


class InlineExecutor:
    """Runs every task in this process, in order (debugging, tracebacks, tiny sweeps)."""

    workers = 1

    def map_unordered(self, fn: Callable[[Any, Any], Any], shared: Any,
                      tasks: Sequence[Any]) -> Iterator[Any]:
        """Yield fn(shared, task) for each task."""
        for task in tasks:
            yield fn(shared, task)

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> InlineExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalExecutor:
    """A local process pool, its workers forked from a fork server (`pool_context`).

    The workers start when the executor is made, not at the first task: the fork server
    imports the sweep and loads the cost kernels from numba's cache (`edgesim.sweep.preload`)
    while this process goes on loading models, and everything runs numba on one thread, since
    the pool owns the cores (two workers each starting a thread per core made sweeps slower,
    not faster).

    Args:
        workers: processes (default: every core).
    """

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or cpu_count()
        self._pool = ProcessPoolExecutor(self.workers, mp_context=pool_context(),
                                         initializer=_start_worker)
        # read by numba at its import, in the fork server (started by the first submit) or in
        # each spawned worker
        with _child_environment(NUMBA_NUM_THREADS="1"):
            for _ in range(self.workers):  # each submit spawns one worker now
                self._pool.submit(_ready)

    def map_unordered(self, fn: Callable[[Any, Any], Any], shared: Any,
                      tasks: Sequence[Any]) -> Iterator[Any]:
        """Yield fn(shared, task) as tasks finish; at most two queued per worker, so the
        parent never pickles the whole sweep up front."""
        pending: set[Any] = set()  # futures of the executor
        queue = list(reversed(tasks))
        while queue or pending:
            while queue and len(pending) < 2 * self.workers:
                pending.add(self._pool.submit(fn, shared, queue.pop()))
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                yield future.result()

    def close(self) -> None:
        """Stop the pool (cancelling tasks not started)."""
        self._pool.shutdown(cancel_futures=True)

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


RESUBMITS = 3  # times DaskExecutor submits a task again after the scheduler cancelled it


class DaskExecutor:
    """Dask distributed: a running scheduler, or a LocalCluster on the loopback interface.

    The workers of a remote cluster need the same edgesim installed; the models (as layer
    tables) and the base target travel with the work, so they need no model or target files.

    Args:
        scheduler: address of a running scheduler, e.g. "tcp://HOST:8786".
        local_workers: start a LocalCluster of this many single-threaded worker processes on
            127.0.0.1 instead (closed with the executor).
        client: an existing `distributed.Client` to use (not closed with the executor).
    """

    def __init__(self, scheduler: str | None = None, local_workers: int | None = None,
                 client: Any = None) -> None:
        from edgesim.errors import UserError

        if sum(x is not None for x in (scheduler, local_workers, client)) != 1:
            raise UserError("--scheduler/--dask-local", "give exactly one of them")
        try:
            import distributed
        except ImportError:
            raise UserError("--scheduler/--dask-local", "Dask is not installed; install the "
                            "'dist' extra: pip install 'edgesim[dist]'") from None
        self._cluster, self._own_client = None, client is None
        if local_workers is not None:
            self._cluster = distributed.LocalCluster(
                n_workers=local_workers, threads_per_worker=1, processes=True,
                host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR,
                env={"NUMBA_NUM_THREADS": "1"})  # one process per core (LocalExecutor)
        self.client = client or distributed.Client(scheduler or self._cluster)
        self.workers = max(1, len(self.client.scheduler_info()["workers"]))
        for address in self.client.scheduler_info()["workers"]:  # warm while models load
            distributed.fire_and_forget(self.client.submit(
                _start_worker, workers=[address], allow_other_workers=False, pure=False))

    def map_unordered(self, fn: Callable[[Any, Any], Any], shared: Any,
                      tasks: Sequence[Any]) -> Iterator[Any]:
        """Yield fn(shared, task) as tasks finish.

        The scheduler reruns a task whose worker dies. A task it cancels instead (when a dying
        worker took the last copy of the scattered `shared` data with it, the scheduler forgets
        the tasks that need it) is submitted again, with `shared` scattered anew, at most
        RESUBMITS times.
        """
        from distributed import as_completed

        data = [self.client.scatter(shared, broadcast=True, hash=False)]
        tries: dict[object, tuple[Any, int]] = {}  # future key -> (task, attempt)

        def submit(task: Any, attempt: int) -> Any:
            future = self.client.submit(fn, data[0], task, pure=False)
            tries[future.key] = (task, attempt)
            return future

        pending = as_completed([submit(task, 0) for task in tasks])
        for future in pending:
            task, attempt = tries.pop(future.key)
            try:
                result = future.result()
            except CancelledError:
                if attempt >= RESUBMITS:
                    raise
                data[0] = self.client.scatter(shared, broadcast=True, hash=False)
                pending.add(submit(task, attempt + 1))
                continue
            future.release()
            yield result

    def close(self) -> None:
        """Close the client and a LocalCluster this executor started."""
        if self._own_client:
            self.client.close()
        if self._cluster is not None:
            self._cluster.close()

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
