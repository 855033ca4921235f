"""One edgesim writer per folder: an exclusive, non-blocking `flock` on a file inside it.

Both users take it the same way: `output_folder` on the `.edgesim` marker of a compile's
output folder, the sweep store on `<out>/.lock`. A holder may unlink its lock file (the
sweep's does when it ends, `output_folder` when it undoes a folder it made), so a lock only
counts if the name still points at the locked inode afterwards; otherwise the file was
removed between our open and our flock, and the lock is taken again on the new file.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from edgesim.errors import UserError


def lock_file(path: Path, busy: str, mode: int) -> tuple[int, bool]:
    """Open `path` (created with `mode` if missing) and take its exclusive lock, held by the
    returned descriptor until it is closed; also whether this call created the file.

    Raises:
        UserError: naming `path`'s folder: it is not writable, or `busy` (another run holds
            the lock).
    """
    while True:
        fd, created = _open(path, mode)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(str(path.parent), busy) from None
        if _same_file(fd, path):
            return fd, created
        os.close(fd)


def _open(path: Path, mode: int) -> tuple[int, bool]:
    """Open `path`, creating it if missing: (descriptor, whether this call created it)."""
    while True:
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode), True
        except FileExistsError:
            pass
        except PermissionError:
            raise UserError(str(path.parent), "folder is not writable") from None
        try:
            return os.open(path, os.O_RDWR), False
        except FileNotFoundError:  # its holder just removed it
            continue
        except PermissionError:
            raise UserError(str(path.parent), "folder is not writable") from None


def _same_file(fd: int, path: Path) -> bool:
    """Whether `path` still names the file open as `fd`."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)
