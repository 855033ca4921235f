"""`edgesim sweep` storage and execution: resume after SIGKILL and torn writes, one writer per
folder, and identical results from the in-process, process-pool and Dask executors (with a
worker killed mid-sweep)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgesim.errors import UserError
from edgesim.sweep import DaskExecutor, InlineExecutor, LocalExecutor, run_sweep, sweep
from edgesim.sweep.evaluate import evaluate_batch
from edgesim.sweep.points import point_id
from edgesim.sweep.run import print_progress
from edgesim.sweep.space import load_space
from edgesim.sweep.store import HEADER_NAME, RESULTS_NAME, ResultStore, read_results
from tests.edgesim.sweep_spaces import (
    GRID,
    inline_sweep,
    no_duplicates,
    stored_records,
    write_space,
)

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- store and resume


KILLED = """
import sys, time
from edgesim.sweep import LocalExecutor, load_space, run_sweep
from edgesim.sweep.evaluate import evaluate_batch
from edgesim.sweep.run import print_progress

def slow(ctx, points):
    time.sleep(0.1)
    return evaluate_batch(ctx, points)

if __name__ == "__main__":
    with LocalExecutor(1) as ex:
        run_sweep(load_space(sys.argv[1]), sys.argv[2], executor=ex, batch_size=3, task=slow)
"""


def test_sigkill_mid_sweep_then_resume_gives_the_uninterrupted_set(tmp_path: Path) -> None:
    space = write_space(tmp_path, GRID)
    script = tmp_path / "sweep_script.py"
    script.write_text(KILLED)
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(script), str(space), str(out)], env=env,
                            start_new_session=True, stderr=subprocess.DEVNULL)
    stored = 0
    deadline = time.monotonic() + 60
    while stored < 1 + 9 and time.monotonic() < deadline:  # header + 3 batches of 3
        time.sleep(0.02)
        path = out / RESULTS_NAME
        stored = len(path.read_bytes().splitlines()) if path.exists() else 0
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its pool worker, mid-way
    assert proc.wait(timeout=30) == -signal.SIGKILL
    partial_ids = set(stored_records(out))
    assert 9 <= len(partial_ids) < 36
    resumed = inline_sweep(space, out)
    full = inline_sweep(space, tmp_path / "full")
    assert resumed == full and len(full) == 36
    no_duplicates(out)


@settings(max_examples=12, deadline=None)
@given(cut=st.floats(0.0, 1.0, exclude_max=True))
def test_a_torn_results_file_resumes_to_the_same_set(tmp_path_factory, cut: float) -> None:
    tmp = tmp_path_factory.mktemp("torn")
    space = write_space(tmp, GRID)
    full = inline_sweep(space, tmp / "full")
    data = (tmp / "full" / RESULTS_NAME).read_bytes()
    (tmp / "torn").mkdir()
    (tmp / "torn" / RESULTS_NAME).write_bytes(data[:int(cut * len(data))])  # kill -9 anywhere
    # the header is written (atomically) before the first point, so it is always there
    (tmp / "torn" / HEADER_NAME).write_bytes((tmp / "full" / HEADER_NAME).read_bytes())
    assert inline_sweep(space, tmp / "torn") == full
    no_duplicates(tmp / "torn")


def test_rerun_computes_nothing_and_other_spaces_are_refused(tmp_path: Path) -> None:
    space = write_space(tmp_path, GRID)
    inline_sweep(space, tmp_path / "out")
    with InlineExecutor() as ex:
        again = run_sweep(load_space(space), tmp_path / "out", executor=ex)
    assert (again.points, again.skipped, again.computed) == (36, 36, 0)
    other = write_space(tmp_path, GRID.replace("digits_cnn", "digits_transformer"), "other.yaml")
    with pytest.raises(UserError, match="different space"):
        inline_sweep(other, tmp_path / "out")


def test_one_writer_per_directory(tmp_path: Path) -> None:
    header = {"fingerprint": "x"}
    with ResultStore.open(tmp_path, header) as store:
        with pytest.raises(UserError, match="another sweep"):
            ResultStore.open(tmp_path, header)
        store.append([{"id": "a", "v": 1}, {"id": "b", "v": 2}])
        store.append([{"id": "a", "v": 3}])  # already stored: never written twice
    assert [r["v"] for r in read_results(tmp_path / RESULTS_NAME)[1]] == [1, 2]
    assert point_id({"a": 1, "b": 2.0}) == point_id({"b": 2.0, "a": 1})


# ---------------------------------------------------------------- executors


def test_batch_size_and_process_pool_do_not_change_results(tmp_path: Path) -> None:
    space = write_space(tmp_path, GRID)
    reference = inline_sweep(space, tmp_path / "inline", batch_size=36)
    assert inline_sweep(space, tmp_path / "small", batch_size=5) == reference
    with LocalExecutor(2) as ex:
        run_sweep(load_space(space), tmp_path / "pool", executor=ex, batch_size=4)
    assert stored_records(tmp_path / "pool") == reference


def test_sweep_options_and_progress_line(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    space = write_space(tmp_path, GRID)
    for kw, flag in (({"workers": 0}, "--workers"), ({"batch_size": 0}, "--batch-size"),
                     ({"workers": 2, "dask_local": 2}, "--workers"),
                     ({"dask_local": 0}, "--dask-local")):
        with pytest.raises(UserError, match=f"^{flag}: "):
            sweep(space, tmp_path / "out", **kw)
    print_progress(250, 1000, 2.0)  # 125 points/s, 750 left: 6 s
    assert capsys.readouterr().err.strip() == "sweep: 250/1000 points, 125 points/s, ETA 6 s"


def die_once(marker: str, ctx, points):  # noqa: ANN001, ANN201 - a Dask task
    """The first task to run kills its worker process (SIGKILL) mid-task."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return evaluate_batch(ctx, points)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def cancelled_once(marker: str, ctx, points):  # noqa: ANN001, ANN201 - a Dask task
    """The first task to run has the scheduler cancel it for every client, as the scheduler
    does to tasks whose scattered inputs died with a worker; it finishes regardless."""
    from distributed import Future, get_client, get_worker

    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return evaluate_batch(ctx, points)
    client = get_client()
    client.cancel([Future(get_worker().get_current_task(), client)], force=True)
    return evaluate_batch(ctx, points)


def test_dask_submits_a_cancelled_task_again(tmp_path: Path) -> None:
    space = write_space(tmp_path, GRID)
    reference = inline_sweep(space, tmp_path / "inline")
    marker = tmp_path / "cancelled"
    with DaskExecutor(local_workers=2) as ex:
        run_sweep(load_space(space), tmp_path / "dask", executor=ex, batch_size=4,
                  task=partial(cancelled_once, str(marker)))
    assert marker.exists()  # a task really was cancelled
    assert stored_records(tmp_path / "dask") == reference  # and its batch was evaluated again
    no_duplicates(tmp_path / "dask")


def test_dask_local_cluster_matches_the_pool_even_when_a_worker_dies(tmp_path: Path) -> None:
    space = write_space(tmp_path, GRID)
    reference = inline_sweep(space, tmp_path / "inline")
    marker = tmp_path / "killed.pid"
    with DaskExecutor(local_workers=2) as ex:
        assert ex.workers == 2
        run_sweep(load_space(space), tmp_path / "dask", executor=ex, batch_size=4)
        run_sweep(load_space(space), tmp_path / "dask-kill", executor=ex, batch_size=4,
                  task=partial(die_once, str(marker)))
    assert stored_records(tmp_path / "dask") == reference
    assert marker.exists()  # a worker really died holding a task
    assert stored_records(tmp_path / "dask-kill") == reference  # its lost task was rerun
    no_duplicates(tmp_path / "dask-kill")
