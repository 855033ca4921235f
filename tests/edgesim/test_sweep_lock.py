"""The sweep folder's lock (`<out>/.lock`): held by one sweep at a time, and gone when no sweep
holds it, so a refused or finished sweep leaves the folder as it found it (oracle: the folder's
listing before and after; mutual exclusion observed from separate processes)."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgesim.errors import UserError
from edgesim.sweep.store import HEADER_NAME, LOCK_NAME, RESULTS_NAME, ResultStore

HEADER = {"space": {"name": "s"}, "fingerprint": "f"}
HOLD = """
import sys, time
from edgesim.sweep.store import ResultStore
with ResultStore.open(sys.argv[1], {"space": {"name": "s"}, "fingerprint": "f"}):
    print("held", flush=True)
    sys.stdin.readline()
"""
SPACE = "base: systolic-16x16\nparameters:\n  rows: [8, 16]\nmodels: [zoo:digits_cnn]\n"


def test_a_refused_sweep_leaves_no_lock(tmp_path: Path) -> None:
    # before: the refusal left <out>/.lock in the user's folder
    (tmp_path / HEADER_NAME).write_text('{"title": "my notes"}')
    with pytest.raises(UserError, match="not a sweep's header"):
        ResultStore.open(tmp_path, HEADER)
    assert sorted(p.name for p in tmp_path.iterdir()) == [HEADER_NAME]
    other = tmp_path / "other"
    with ResultStore.open(other, HEADER):
        assert (other / LOCK_NAME).exists()
    assert sorted(p.name for p in other.iterdir()) == [HEADER_NAME, RESULTS_NAME]
    with pytest.raises(UserError, match="different space"):
        ResultStore.open(other, {**HEADER, "fingerprint": "g"})
    assert sorted(p.name for p in other.iterdir()) == [HEADER_NAME, RESULTS_NAME]


def test_a_users_own_lock_file_is_kept(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).write_text("mine")
    with ResultStore.open(tmp_path, HEADER):
        pass
    assert (tmp_path / LOCK_NAME).read_text() == "mine"


def test_a_second_sweep_is_refused_while_the_first_runs(tmp_path: Path) -> None:
    """Process A holds the folder; `edgesim sweep -o` in process B exits 2 in one line and
    leaves A's lock in force; when A ends the lock is gone and a new sweep runs."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    a = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert a.stdout is not None and a.stdout.readline() == "held\n"
        (tmp_path / "space.yaml").write_text(SPACE)
        b = subprocess.run([sys.executable, "-m", "edgesim", "sweep", str(tmp_path / "space.yaml"),
                            "-o", str(out), "--workers", "1", "-q"], capture_output=True,
                           text=True, env=env, timeout=300)
        assert b.returncode == 2
        assert b.stderr.count("\n") == 1 and "another sweep" in b.stderr
        assert (out / LOCK_NAME).exists()
        with pytest.raises(UserError, match="another sweep"):  # still held after B's refusal
            ResultStore.open(out, HEADER)
    finally:
        a.communicate("\n", timeout=60)
    assert a.returncode == 0 and not (out / LOCK_NAME).exists()
    with ResultStore.open(out, HEADER):
        pass
    assert not (out / LOCK_NAME).exists()


def _contend(out: str, rounds: int, overlaps: multiprocessing.Queue) -> None:
    """Open and close the store `rounds` times; record if another holder was inside."""
    held = 0
    for _ in range(rounds):
        try:
            store = ResultStore.open(out, HEADER)
        except UserError:
            continue
        with store:
            try:  # O_EXCL: fails if another process holds the lock at the same time
                fd = os.open(os.path.join(out, "inside"), os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                overlaps.put(1)
                continue
            held += 1
            time.sleep(0.001)
            os.close(fd)
            os.unlink(os.path.join(out, "inside"))
    overlaps.put(-held)


def test_processes_racing_for_the_lock_never_hold_it_together(tmp_path: Path) -> None:
    """Removing the lock file on release must not let two processes hold it: one that
    locked the removed file re-checks the name and starts again."""
    out = tmp_path / "out"
    ResultStore.open(out, HEADER).close()
    ctx = multiprocessing.get_context("fork")
    overlaps: multiprocessing.Queue = ctx.Queue()
    procs = [ctx.Process(target=_contend, args=(str(out), 200, overlaps)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    results = [overlaps.get(timeout=10) for _ in range(4)]
    while not overlaps.empty():
        results.append(overlaps.get())
    assert [r for r in results if r > 0] == []
    assert -sum(r for r in results if r <= 0) > 0  # the lock was taken at all
    assert not (out / LOCK_NAME).exists()
