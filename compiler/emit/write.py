"""Atomic model writing: a temporary file in the target's folder, then `os.replace`.

Readers never see a half-written model, and on any failure nothing is left at the path (a
file already there stays as it was).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx

from compiler.errors import ModelError


def write(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Serialise `model` to `path` atomically.

    Raises:
        ModelError: if the folder does not exist or the model cannot be serialised (for
            example, larger than protobuf's 2 GiB limit).
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise ModelError(str(path), f"folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_serialise(model, path))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; a model is shared data
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _serialise(model: onnx.ModelProto, path: Path) -> bytes:
    try:
        return model.SerializeToString()
    except ValueError as e:  # protobuf refuses messages over 2 GiB
        raise ModelError(str(path), f"cannot serialise the model: {e}") from None
