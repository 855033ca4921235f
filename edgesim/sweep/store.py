"""Sweep results on disk: JSON lines appended as batches finish, so a sweep resumes.

`<out>/results.jsonl` holds one JSON object per point, keyed by the point's `id`, and nothing
else, so `pandas.read_json(path, lines=True)` reads it as a table; the header (the space, its
fingerprint and the software versions) is `<out>/header.json`, written atomically before the
first point. (Files of older versions, whose first line is `{"header": {...}}`, still resume.) Each
batch is appended with one `write` to an `O_APPEND` descriptor and fsync'd, so after a crash
(even `kill -9` mid-write) the file is every finished batch plus at most one torn last line.
Opening the store drops that torn tail (its points are simply computed again), refuses results
of a different space (fingerprint), and reports the ids already done. A lock file
(`<out>/.lock`, flock) keeps two sweeps from writing one directory at once; it exists only while
a sweep holds it (see `_lock`), so a finished or refused sweep leaves none behind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compiler.atomic import atomic_write
from edgesim.errors import UserError
from edgesim.folder_lock import lock_file

RESULTS_NAME = "results.jsonl"
HEADER_NAME = "header.json"
LOCK_NAME = ".lock"
LOCK_TEXT = b"edgesim sweep lock: a sweep is writing to this folder\n"
HEADER_KEY = "header"


def read_results(path: str | Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]], int]:
    """Parse a results file, tolerating a torn last line.

    Returns:
        (header or None, point records with duplicate ids dropped (first kept), the byte
        length of the complete lines: everything after it is a torn tail).

    Raises:
        UserError: a complete line that is not a JSON object (the file is not ours or was
            edited), naming the line.
    """
    data = Path(path).read_bytes()
    good = data.rfind(b"\n") + 1  # a line without its newline was cut by a crash
    header, records, seen = _header_file(Path(path)), [], set()
    for number, line in enumerate(data[:good].splitlines(), start=1):
        obj = _parse(line, path, number)
        if number == 1 and HEADER_KEY in obj:
            header = obj[HEADER_KEY]
        elif obj.get("id") not in seen:
            seen.add(obj.get("id"))
            records.append(obj)
    return header, records, good


@dataclass(frozen=True)
class EncodedRecords:
    """A batch's records as the JSON lines the store writes: what a pool worker sends back
    (one bytes object pickles in microseconds; thousands of nested dicts took ~0.15 ms per
    point to pickle and unpickle, more than costing the point, bench/bench_sweep.py).

    Attributes:
        ids: the records' ids, in order.
        lines: one JSON line per record.
        errors: records holding an `error`.
    """

    ids: tuple[str, ...]
    lines: bytes
    errors: int

    def __len__(self) -> int:
        return len(self.ids)


def encode(records: Sequence[dict[str, Any]]) -> EncodedRecords:
    """Records as JSON lines (allow_nan=False: NaN / Infinity are not JSON; a record holding
    one is a bug to surface)."""
    data = "".join(json.dumps(r, separators=(",", ":"), allow_nan=False) + "\n"
                   for r in records).encode()
    return EncodedRecords(tuple(r["id"] for r in records), data,
                          sum("error" in r for r in records))


def _header_file(results: Path) -> dict[str, Any] | None:
    path = results.with_name(HEADER_NAME)
    if not path.exists():
        return None
    obj = _parse(path.read_bytes(), path, 1)
    return obj.get(HEADER_KEY)


def _parse(line: bytes, path: str | Path, number: int) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except ValueError:
        obj = None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: line {number}", "not a JSON object (not a sweep results file?)")
    return obj


class ResultStore:
    """An open, locked results file of one sweep (use as a context manager).

    Attributes:
        path: the results file.
        header: the header it holds.
        done: ids of the points already stored.
    """

    def __init__(self, path: Path, fd: int, lock_fd: int, header: dict[str, Any],
                 done: set[str]) -> None:
        self.path, self.header, self.done = path, header, done
        self._fd, self._lock_fd = fd, lock_fd

    @classmethod
    def open(cls, out_dir: str | Path, header: dict[str, Any]) -> ResultStore:
        """Open (creating or resuming) the results in `out_dir` for a space with `header`.

        Raises:
            UserError: `out_dir` is a file, another sweep holds the directory, or it holds
                a different space.
        """
        out = Path(out_dir)
        if out.exists() and not out.is_dir():  # mkdir's own error says only "File exists"
            raise UserError(str(out), "exists and is not a folder; -o takes the results folder")
        out.mkdir(parents=True, exist_ok=True)
        lock_fd = _lock(out)
        try:
            path = out / RESULTS_NAME
            done = _resume(path, header) if path.exists() else None
            if done is None:
                _check_header_is_a_sweeps(out / HEADER_NAME)
                atomic_write(out / HEADER_NAME, json.dumps({HEADER_KEY: header}) + "\n")
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except BaseException:
            _unlock(out, lock_fd)
            raise
        return cls(path, fd, lock_fd, header, done or set())

    def append(self, records: Sequence[dict[str, Any]]) -> None:
        """Store finished points; ids already stored are skipped, never written twice."""
        new = [r for r in records if r["id"] not in self.done]
        if new:
            self._write(new)
            self.done.update(r["id"] for r in new)

    def append_encoded(self, batch: EncodedRecords) -> None:
        """`append` for records a worker already encoded (`encode`)."""
        lines = batch.lines.splitlines(keepends=True)
        new = [(i, line) for i, line in zip(batch.ids, lines) if i not in self.done]
        if new:
            self._write_bytes(b"".join(line for _, line in new))
            self.done.update(i for i, _ in new)

    def _write(self, objs: Iterable[dict[str, Any]]) -> None:
        self._write_bytes(encode(list(objs)).lines)

    def _write_bytes(self, data: bytes) -> None:
        view = memoryview(data)
        while view:  # os.write may write less than asked (signals, pipes)
            view = view[os.write(self._fd, view):]
        os.fsync(self._fd)

    def close(self) -> None:
        """Close the file and release the directory lock."""
        os.close(self._fd)
        _unlock(self.path.parent, self._lock_fd)

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_header_is_a_sweeps(path: Path) -> None:
    """Refuse to replace a `header.json` that a sweep did not write (the user's own file in
    the `-o` folder); a sweep's header of a run that stored no point yet is replaced.

    Raises:
        UserError: `path` exists and is not a JSON object with the sweep's header key.
    """
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        return
    except (OSError, ValueError):
        raw = None
    if not (isinstance(raw, dict) and isinstance(raw.get(HEADER_KEY), dict)):
        raise UserError(str(path), "exists and is not a sweep's header; choose another -o "
                        "folder (a sweep never replaces files it did not write)")


def _lock(out: Path) -> int:
    """Take `<out>/.lock` (`edgesim.folder_lock`) and return its descriptor, or refuse:
    another sweep holds it. The file is marked (`LOCK_TEXT`) by the sweep that created it,
    and only a marked file is ever removed (`_unlock`): a `.lock` of the user's own is
    locked, never written or deleted.
    """
    fd, created = lock_file(out / LOCK_NAME, "another sweep is writing to this directory",
                            0o644)
    if created:
        os.write(fd, LOCK_TEXT)
    return fd


def _unlock(out: Path, fd: int) -> None:
    """Release the lock `fd` holds, first removing `<out>/.lock` if a sweep made it (while
    still holding it, so no other sweep can be between its flock and its check)."""
    try:
        if os.pread(fd, len(LOCK_TEXT) + 1, 0) == LOCK_TEXT:
            (out / LOCK_NAME).unlink(missing_ok=True)
    finally:
        os.close(fd)


def _resume(path: Path, header: dict[str, Any]) -> set[str] | None:
    """Ids already stored in `path` (None if it holds no complete header: start afresh);
    drops a torn last line."""
    old, records, good = read_results(path)
    if old is None:
        if records:
            raise UserError(str(path), "has results but no header; not a sweep store")
        os.truncate(path, 0)
        return None
    if old.get("fingerprint") != header["fingerprint"]:
        raise UserError(str(path), "holds results of a different space (base target, models "
                        "or optimisation differ); write to another directory")
    if good < path.stat().st_size:
        os.truncate(path, good)
    return {r["id"] for r in records}
