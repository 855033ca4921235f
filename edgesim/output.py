"""Output folders that never lose a user's data.

`edgesim compile -o DIR` (and the API's `outdir`) writes into DIR only if DIR is new, empty, or
was made by edgesim (it holds the marker file `.edgesim`); a non-empty folder edgesim did not
make is refused unless `force`. edgesim never deletes a file it did not write: outputs are
written into a hidden staging folder inside DIR and each is renamed over its own name at the
end (`os.replace`, atomic per file), so a failed, interrupted or killed run leaves the user's
files as they were. The marker is also a lock (`edgesim.folder_lock`) held for the whole run:
a second run into the same folder is refused instead of interleaving its files with the
first's.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from compiler.atomic import current_umask
from edgesim.errors import UserError
from edgesim.folder_lock import lock_file

MARKER = ".edgesim"
STAGING_PREFIX = ".edgesim-staging-"
MARKER_TEXT = ("This folder was made by edgesim, which writes its outputs here and never "
               "deletes other files.\n")


@contextmanager
def output_folder(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Claim `path` for one run's outputs: checked, created if new, marked and locked.

    Everything is checked before the caller does any work (e.g. `-o .` in a foreign folder or
    an unwritable parent fails at once). A folder this call created is removed again if the
    run fails before publishing anything into it.

    Raises:
        UserError: the parent is missing or unwritable, `path` is a file, a non-empty foreign
            folder without `force`, or another edgesim run holds it.
    """
    path = Path(path)
    created = _create_or_check(path, force)
    fd = _lock(path)
    try:
        _remove_stale_staging(path)
        yield path
    except BaseException:
        if created:
            _remove_if_only_marker(path)
        raise
    finally:
        os.close(fd)


@contextmanager
def staging(outdir: Path) -> Iterator[Path]:
    """A private folder inside `outdir` to write into; `publish` moves its files into place.
    It is removed on every exit (what was not published is dropped)."""
    folder = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=outdir))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def publish(folder: Path, outdir: Path) -> list[Path]:
    """Rename every file of the staging `folder` over its name in `outdir` (atomic per file)."""
    done = []
    for f in sorted(folder.iterdir()):
        os.chmod(f, 0o666 & ~current_umask())
        os.replace(f, outdir / f.name)
        done.append(outdir / f.name)
    return done


def output_file(path: str | os.PathLike) -> Path:
    """Check, before any work, that `path` can be written as one file (`quantize -o`,
    `target probe -o`): not a folder, in an existing writable folder.

    Raises:
        UserError: naming `path` (the write itself would fail after the work, naming only
            its hidden temporary file).
    """
    path = Path(path)
    parent = path.absolute().parent
    if path.is_dir():
        raise UserError(str(path), "is a folder; give the name of the file to write")
    if not parent.is_dir():
        raise UserError(str(path), f"parent folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(str(path), f"cannot write a file in {parent}")
    return path


def _create_or_check(path: Path, force: bool) -> bool:
    """Make `path` (True) or check the existing folder may be written into (False)."""
    parent = path.absolute().parent
    if not parent.is_dir():
        raise UserError(str(path), f"parent folder {parent} does not exist")
    try:
        path.mkdir()
        return True
    except FileExistsError:
        pass
    except PermissionError:
        raise UserError(str(path), f"cannot create a folder in {parent}") from None
    if not path.is_dir():
        raise UserError(str(path), "exists and is not a folder")
    if not force and not (path / MARKER).exists() and any(path.iterdir()):
        raise UserError(str(path), "is a non-empty folder edgesim did not make; choose a new "
                        "or empty folder, or pass --force to add edgesim's files to it "
                        "(nothing else in it is deleted)")
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(str(path), "folder is not writable")
    return False


def _lock(path: Path) -> int:
    """Take the marker's exclusive lock (creating the marker); the fd holds the lock."""
    fd, _ = lock_file(path / MARKER, "another edgesim run is writing into this folder; wait "
                      "for it or choose another folder", 0o666)
    if os.fstat(fd).st_size == 0:
        os.write(fd, MARKER_TEXT.encode())
    return fd


def _remove_stale_staging(path: Path) -> None:
    """Staging folders left by a killed run (the lock says no run is using them now)."""
    for stale in path.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)


def _remove_if_only_marker(path: Path) -> None:
    """Undo a folder this run made, if the run put nothing else in it."""
    if {p.name for p in path.iterdir()} <= {MARKER}:
        (path / MARKER).unlink(missing_ok=True)
        path.rmdir()
