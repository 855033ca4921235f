"""The field checks of a space YAML: each returns the value or raises
`UserError("<file>: <dotted field>", what)`, which the CLI prints as one line (exit 2)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from edgesim.errors import UserError


def err(file: str, field: str, what: str) -> UserError:
    """The error for `field` of space file `file` (one line from the CLI, exit 2)."""
    return UserError(f"{file}: {field}", what)


def as_mapping(v: Any, file: str, field: str, keys: Sequence[str]) -> dict[str, Any]:
    """`v` if it is a mapping whose keys are all in `keys`; else the error for `field`."""
    if not isinstance(v, dict):
        raise err(file, field, f"expected a mapping, got {type(v).__name__}")
    unknown = [k for k in v if k not in keys]
    if unknown:
        where = f"{field}.{unknown[0]}" if field != "(top)" else str(unknown[0])
        raise err(file, where, f"unknown key (known: {', '.join(keys)})")
    return v


def as_int(v: Any, file: str, field: str, low: int = 1) -> int:
    """`v` if it is an integer (not a bool) >= `low`."""
    if not isinstance(v, int) or isinstance(v, bool):
        raise err(file, field, f"expected an integer, got {type(v).__name__} {v!r}")
    if v < low:
        raise err(file, field, f"must be >= {low}, got {v}")
    return v


def as_number(v: Any, file: str, field: str) -> float:
    """`v` if it is a finite int or float (not a bool)."""
    if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
        raise err(file, field, f"expected a finite number, got {type(v).__name__} {v!r}")
    return v


def as_text(v: Any, file: str, field: str, choices: Sequence[str] | None = None) -> str:
    """`v` if it is a non-empty string, among `choices` where given."""
    if not isinstance(v, str) or not v.strip():
        raise err(file, field, f"expected a non-empty string, got {type(v).__name__} {v!r}")
    if choices is not None and v not in choices:
        raise err(file, field, f"must be one of {list(choices)}, got {v!r}")
    return v
