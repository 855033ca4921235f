"""What a sweep needs of its base target: the fields it may vary, how a variant is built, how
H configurations are evaluated in one call, and the area proxy -- all read from the kind's
capabilities in `hwmodels.kinds` (`Capabilities.sweep`), never from its kind name.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

from edgesim.errors import UserError
from hwmodels import kinds
from hwmodels.target import TargetError, load_target, target_from_dict

_META_FIELDS = ("name", "kind", "description", "sources")


def hooks(base: Any) -> kinds.Sweep:
    """The sweep hooks of `base`'s kind (ValueError if it cannot be swept: `load_base`
    refuses such a base first)."""
    found = kinds.sweep(base)
    if found is None:
        raise ValueError(f"{type(base).__name__} targets cannot be swept")
    return found


def load_base(ref: str, root: Path, file: str) -> Any:
    """The base target of a space: a shipped name, or a YAML path relative to the space file."""
    is_path = ref.endswith((".yaml", ".yml")) or "/" in ref
    try:
        base = load_target(str(root / ref) if is_path else ref)
    except TargetError as e:
        raise UserError(f"{file}: base", str(e)) from None
    if kinds.sweep(base) is None:
        raise UserError(f"{file}: base", f"a {base.kind} target cannot be swept; sweeps take "
                        f"{', '.join(kinds.sweepable_kinds())} targets")
    return base


def sweepable(base: Any) -> tuple[str, ...]:
    """Parameter names a space may vary for this base: its fields and the kind's aliases."""
    names = [f.name for f in dataclasses.fields(base) if f.name not in _META_FIELDS]
    return (*names, *hooks(base).aliases)


def field_is_integer(base: Any, name: str) -> bool:
    """True if the field holds an int (distribution draws are then rounded)."""
    value = getattr(base, name, None)
    return isinstance(value, int) and not isinstance(value, bool)


def to_raw(obj: Any) -> Any:
    """A target as the plain data its YAML holds (dataclasses -> dicts, tuples -> lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_raw(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [to_raw(x) for x in obj]
    if isinstance(obj, dict):
        return {k: to_raw(v) for k, v in obj.items()}
    return obj


def check_value(base: Any, name: str, value: Any, file: str, where: str) -> Any:
    """Validate `name = value` on `base` as a target file would; return the typed value.

    Raises:
        UserError: `<file>: <where>` and what the target validator said.
    """
    alias = hooks(base).aliases.get(name)
    try:
        if alias is not None:
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise TargetError(file, name, f"expected {alias.__name__}, got "
                                  f"{type(value).__name__} {value!r}")
            raw = to_raw(hooks(base).variant(base, {name: alias(value)}, name))
        else:
            raw = {**to_raw(base), name: value}
        checked = target_from_dict(raw, file)
    except TargetError as e:
        what = e.what if e.field == name else f"{e.field}: {e.what}"
        raise UserError(f"{file}: {where}", what) from None
    except ValueError as e:  # a cross-field rule while building the variant
        raise UserError(f"{file}: {where}", str(e)) from None
    return alias(value) if alias is not None else getattr(checked, name)


def build_target(base: Any, typed: tuple[tuple[str, Any], ...], label: str) -> Any:
    """The variant of `base` with the point's typed parameter values, named by `label`."""
    return hooks(base).variant(base, dict(typed), label)


def fingerprint_target(base: Any) -> Any:
    """The base target as plain data, for the space fingerprint."""
    return to_raw(base)


def model_digest(ref: str) -> str:
    """`zoo:NAME` itself, or the sha256 of an ONNX file's bytes (a changed file is a new model)."""
    if ref.startswith("zoo:"):
        return ref
    return hashlib.sha256(Path(ref).read_bytes()).hexdigest()
