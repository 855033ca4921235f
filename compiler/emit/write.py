"""Atomic model writing through `compiler.atomic` (temporary file, then `os.replace`).

Readers never see a half-written model, and on any failure nothing is left at the path (a
file already there stays as it was).
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx

from compiler.atomic import atomic_write
from compiler.errors import ModelError


def write(model: onnx.ModelProto, path: str | os.PathLike[str]) -> Path:
    """Serialise `model` to `path` atomically.

    Raises:
        ModelError: if the folder does not exist or the model cannot be serialised (for
            example, larger than protobuf's 2 GiB limit).
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise ModelError(str(path), f"folder {path.parent} does not exist")
    return atomic_write(path, _serialise(model, path))


def file_bytes(model: onnx.ModelProto) -> int:
    """The size `write` gives `model` on disk: its serialised length, exactly."""
    return int(model.ByteSize())


def _serialise(model: onnx.ModelProto, path: Path) -> bytes:
    try:
        return model.SerializeToString()
    except ValueError as e:  # protobuf refuses messages over 2 GiB
        raise ModelError(str(path), f"cannot serialise the model: {e}") from None
