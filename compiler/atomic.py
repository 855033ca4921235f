"""The one atomic file writer of the code base: a temporary file in the destination's folder,
flushed and fsynced, then `os.replace`d over the destination.

Readers never see a half-written file; on any failure (an exception, Ctrl-C) the temporary file
is removed and a file already at the destination stays as it was. After `kill -9` at most a
hidden `.NAME.*.tmp` file is left beside the destination, never a truncated NAME.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

TMP_SUFFIX = ".tmp"


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside `path` for writing; on a clean exit it replaces `path`.

    Args:
        path: the destination; its folder must exist.
        mode: "wb" or "w" (text, UTF-8, "\\n" line ends).

    Yields:
        The open temporary file.
    """
    path = Path(path)
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open: mode must be 'wb' or 'w', not {mode!r}")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    except OSError as e:
        raise _naming(e, path) from e
    try:
        kwargs: dict[str, Any] = {} if mode == "wb" else {"encoding": "utf-8", "newline": ""}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; outputs are shared data
        try:
            os.replace(tmp, path)
        except OSError as e:
            raise _naming(e, path) from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _naming(e: OSError, path: Path) -> OSError:
    """`e` as the user's destination's error: the hidden temporary name means nothing to them."""
    return type(e)(e.errno, e.strerror, str(path))


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write `data` (bytes, or text as UTF-8) to `path` atomically and return the path."""
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    return Path(path)
