"""The folder lock (`edgesim.folder_lock`) counts only if the lock file's name still points at
the locked inode: a holder that unlinks the file (a sweep ending, `output_folder` undoing a
folder it made) between another run's open and its flock must not leave that run holding a
lock on a deleted file while a third run locks the new one. Oracle: the inode the name
points at, against the inode the returned descriptor holds."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from edgesim.output import MARKER, output_folder


def test_a_marker_unlinked_before_the_flock_is_locked_again_by_name(tmp_path, monkeypatch):
    real_flock, calls = fcntl.flock, []

    def flock_after_unlink(fd: int, op: int) -> None:
        # the first flock comes right after the holder removed the file this run opened
        if not calls:
            (tmp_path / "out" / MARKER).unlink()
        calls.append(fd)
        real_flock(fd, op)

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / MARKER).write_text("made by edgesim\n")
    monkeypatch.setattr(fcntl, "flock", flock_after_unlink)
    with output_folder(tmp_path / "out") as out:
        marker = Path(out) / MARKER
        assert marker.exists()
        held = [fd for fd in calls if _points_at(fd, marker)]
        assert held, "the lock is held on a file the folder no longer names"
    assert len(calls) == 2


def _points_at(fd: int, path: Path) -> bool:
    try:
        mine, st = os.fstat(fd), os.stat(path)
    except OSError:  # closed descriptor
        return False
    return (mine.st_dev, mine.st_ino) == (st.st_dev, st.st_ino)
