"""Targets: YAML files validated into frozen dataclasses, with a source for every number.

A target file names its `kind`; the registry `hwmodels.kinds` maps the kind to a frozen dataclass
(`CpuTarget`, `McuTarget`, `MacArrayTarget`), and one generic validator checks the YAML
against that dataclass's annotations (ZigZag's YAML -> validate -> factory, in plain code).

Supported field types: `int`, `float` (an int is accepted), `str`, `bool`, `X | None`,
`Literal[...]` choices, nested frozen dataclasses, `tuple[T, ...]` of any of these, and
`dict[str, T]`. Numbers must be > 0 unless the field says otherwise through its metadata:
`field(metadata={"ge": 0})` allows zero. A dataclass checks cross-field rules in
`__post_init__` by raising `ValueError("<field>: <what>")`; the loader names the file.

Every target has `name`, `kind`, `description` and `sources`: a flat map from a dotted field
path (`precisions[0].energy_pj_per_mac`, the same without the index, or any enclosing path such
as `precisions`) to a citation or the word `assumed`; a key naming no field is an error.

Model classes must not import this module (it imports them).
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Protocol, Union, get_args, get_origin, get_type_hints

import yaml

from hwmodels import kinds

_TOP = "(top)"  # field path used for errors about the whole document


class TargetError(ValueError):
    """A target file that does not validate, with the file and the dotted field path (""
    when the error has none: an unknown shipped name)."""

    def __init__(self, file: str, field: str, what: str) -> None:
        super().__init__(f"{file}: {field}: {what}" if field else f"{file}: {what}")
        self.file = file
        self.field = field
        self.what = what


class Target(Protocol):
    """What every target kind's frozen dataclass has (the classes `hwmodels.kinds` registers:
    `CpuTarget`, `McuTarget`, `MacArrayTarget`, ...); kind-specific fields are read after
    asking the kind or the class."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def sources(self) -> dict[str, str]: ...


# How the API takes a target: a shipped name, a YAML path (with an optional variant) or a
# loaded target.
TargetRef = Union[str, "os.PathLike[str]", Target]


def __getattr__(name: str) -> Mapping[str, type]:
    """`TARGET_KINDS`, kind -> target dataclass, read from the one registry `hwmodels.kinds`
    (a kind module that fails to import raises there). Built on first use: it imports every
    kind's model and kernels, which loading one target does not need (PEP 562)."""
    if name == "TARGET_KINDS":
        return types.MappingProxyType(kinds.target_classes())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_target(name_or_path: str | os.PathLike[str]) -> Target:
    """Load and validate a target.

    Args:
        name_or_path: a shipped target's name (`"rpi5"` -> `targets/rpi5.yaml`) or a path to a
            `.yaml` file, optionally followed by a variant, `":field=value,..."` (see
            `split_variant`), e.g. `"rpi4:clock_ghz=1.5"` for a Pi 4 B0 at its stock clock.

    Returns:
        The frozen target dataclass for the file's `kind`.

    Raises:
        TargetError: the file is missing, not YAML, or does not validate.
    """
    base, changes = split_variant(str(name_or_path))
    path, label = _locate(base)
    return target_from_dict(apply_variant(read_yaml(path, label), changes, label), label)


# A target or space file is a page of numbers: bounds that no real one nears, checked on the
# event stream before anything is built (deep nesting would overflow the recursive composer;
# aliases can expand exponentially, so they are refused outright).
MAX_YAML_BYTES = 1 << 20
MAX_YAML_DEPTH = 16
MAX_YAML_EVENTS = 200_000


def read_yaml(path: Path, label: str) -> Any:
    """Read a small YAML file safely: bounded size, depth and length, no aliases.

    Raises:
        TargetError: unreadable, too large or deep, an alias, or not valid YAML.
    """
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise TargetError(label, _TOP, f"larger than {MAX_YAML_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TargetError(label, _TOP, f"cannot read: {getattr(e, 'strerror', None) or e}"
                          ) from None
    try:
        _check_events(yaml.parse(text, Loader=yaml.SafeLoader), label)
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise TargetError(label, _TOP, f"not valid YAML: {str(e).splitlines()[0]}") from None


def _check_events(events: Any, label: str) -> None:
    depth = 0
    for count, event in enumerate(events):
        if isinstance(event, yaml.AliasEvent):
            raise TargetError(label, _TOP, "YAML aliases (*name) are not accepted")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise TargetError(label, _TOP, f"nested deeper than {MAX_YAML_DEPTH} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        if count > MAX_YAML_EVENTS:
            raise TargetError(label, _TOP, f"more than {MAX_YAML_EVENTS} YAML nodes")


def split_variant(spec: str) -> tuple[str, dict[str, str]]:
    """`"rpi4:clock_ghz=1.5,cores=2"` -> `("rpi4", {"clock_ghz": "1.5", "cores": "2"})`.

    A variant derives a target without copying its file: each `key=value` replaces one field
    (a dotted key reaches a nested one, e.g. `dram.sustained_bandwidth_gbps=4`).
    """
    base, sep, rest = spec.partition(":")
    if not sep:
        return spec, {}
    changes = {}
    for item in rest.split(","):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise TargetError(base, f"variant {item!r}", "expected key=value")
        changes[key.strip()] = value.strip()
    return base, changes


def apply_variant(raw: Any, changes: Mapping[str, str], file: str) -> Any:
    """The parsed document with the variant's fields replaced (values parsed as YAML), its
    name extended and each replaced field cited as set by the user; validated afterwards."""
    if not changes or not isinstance(raw, dict):
        return raw
    doc = {**raw, "sources": dict(raw.get("sources") or {})}
    for key, text in changes.items():
        *parents, leaf = key.split(".")
        node = doc
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise TargetError(file, key, "variant names no nested field")
            node[part] = dict(node[part])
            node = node[part]
        node[leaf] = yaml.safe_load(text)
        doc["sources"][key] = f"variant: set by the user ({key}={text})"
    spec = ",".join(f"{k}={v}" for k, v in changes.items())
    doc["name"] = f"{raw.get('name')}:{spec}"
    return doc


def list_targets() -> list[str]:
    """Names of the shipped targets (files `targets/*.yaml`), sorted."""
    return sorted(p.name[:-5] for p in shipped_dir().iterdir() if p.name.endswith(".yaml"))


def shipped_dir() -> Path:
    """The folder of the shipped target YAMLs (and `spaces/`).

    Installed, it is the package data `hwmodels/targets/` (pyproject maps the repository's
    top-level `targets/` there); in a source checkout it is that `targets/` folder itself.
    Found from this file, never through `sys.path`: a user's own `targets/` folder next to
    their script or in the current folder cannot shadow it.
    """
    here = Path(__file__).resolve().parent
    installed = here / "targets"
    return installed if installed.is_dir() else here.parent / "targets"



def target_from_dict(raw: Any, file: str) -> Target:
    """Validate an already-parsed YAML document; `file` labels the errors."""
    if not isinstance(raw, dict):
        raise TargetError(file, _TOP, f"expected a mapping, got {type(raw).__name__}")
    kind = raw.get("kind")
    if not isinstance(kind, str) or kind not in kinds.kind_names():
        raise TargetError(file, "kind", f"must be one of {kinds.kind_names()}, got {kind!r}")
    target = validate_dataclass(kinds.target_class(kind), raw, "", file)
    _check_sources(target, file)
    return target


def _locate(name: str) -> tuple[Path, str]:
    if name.endswith((".yaml", ".yml")) or "/" in name:
        return Path(name), name
    shipped = shipped_dir() / f"{name}.yaml"
    if not shipped.is_file():
        raise TargetError(f"target {name!r}", "", "no such shipped target (nor a .yaml "
                          f"path); known targets: {', '.join(list_targets())}")
    return Path(str(shipped)), f"targets/{name}.yaml"


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def validate_dataclass(cls: type, raw: Any, path: str, file: str) -> Any:
    """Build frozen dataclass `cls` from parsed YAML `raw`, checking every field.

    Args:
        cls: the dataclass (annotations as listed in the module docstring).
        raw: the parsed mapping.
        path: dotted path of `raw` inside the document ("" at the top).
        file: the file name errors report.

    Raises:
        TargetError: naming `file` and the dotted path of the first bad field.
    """
    if not isinstance(raw, dict):
        raise TargetError(file, path or _TOP, f"expected a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields), key=str)
    if unknown:
        raise TargetError(file, _join(path, str(unknown[0])),
                          f"unknown field (known: {', '.join(fields)})")
    hints = get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        if name in raw:
            values[name] = _value(hints[name], raw[name], _join(path, name), file, f.metadata)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise TargetError(file, _join(path, name), "missing")
    try:
        return cls(**values)
    except ValueError as e:  # a __post_init__ cross-field rule: "<field>: <what>"
        name, _, what = str(e).partition(": ")
        if name in fields and what:
            raise TargetError(file, _join(path, name), what) from None
        raise TargetError(file, path or _TOP, str(e)) from None


def _value(tp: Any, v: Any, where: str, file: str, meta: Mapping[str, Any]) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        if v not in args or (isinstance(v, bool) and bool not in map(type, args)):
            raise TargetError(file, where, f"must be one of {list(args)}, got {v!r}")
        return v
    if origin in (Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]  # only `X | None` is supported
        return _value(inner, v, where, file, meta)
    if origin is tuple:
        return _sequence(args[0], v, where, file, meta)
    if origin in (dict, Mapping):
        return _mapping(args[1], v, where, file, meta)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return validate_dataclass(tp, v, where, file)
    return _scalar(tp, v, where, file, meta)


def _sequence(tp: Any, v: Any, where: str, file: str, meta: Mapping[str, Any]) -> tuple[Any, ...]:
    if not isinstance(v, list):
        raise TargetError(file, where, f"expected a list, got {type(v).__name__}")
    return tuple(_value(tp, x, f"{where}[{i}]", file, meta) for i, x in enumerate(v))


def _mapping(tp: Any, v: Any, where: str, file: str, meta: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise TargetError(file, where, f"expected a mapping, got {type(v).__name__}")
    bad = [k for k in v if not isinstance(k, str)]
    if bad:
        raise TargetError(file, where, f"keys must be strings, got {bad[0]!r}")
    return {k: _value(tp, x, _join(where, k), file, meta) for k, x in v.items()}


def _scalar(tp: type, v: Any, where: str, file: str, meta: Mapping[str, Any]) -> Any:
    # bool is an int subclass in Python, so it is checked first and never counts as a number
    ok = {bool: isinstance(v, bool), str: isinstance(v, str),
          int: isinstance(v, int) and not isinstance(v, bool),
          float: isinstance(v, (int, float)) and not isinstance(v, bool)}[tp]
    if not ok:
        raise TargetError(file, where, f"expected {tp.__name__}, got {type(v).__name__} {v!r}")
    if tp in (int, float):
        _check_range(float(v), where, file, meta)
    return float(v) if tp is float else v


def _check_range(x: float, where: str, file: str, meta: Mapping[str, Any]) -> None:
    if not math.isfinite(x):
        raise TargetError(file, where, f"must be finite, got {x}")
    low = meta.get("ge")
    if low is None and x <= 0:
        raise TargetError(file, where, f"must be > 0, got {_num(x)}")
    if low is not None and x < low:
        raise TargetError(file, where, f"must be >= {low}, got {_num(x)}")


def _num(x: float) -> str:
    return str(int(x)) if x.is_integer() else str(x)


def field_paths(target: Target) -> set[str]:
    """Every path a `sources` key may name: leaves, enclosing fields, with and without indices."""
    paths: set[str] = set()
    _walk(target, "", paths)
    return paths | {_strip_indices(p) for p in paths}


def _walk(v: Any, path: str, out: set[str]) -> None:
    if path:
        out.add(path)
    if dataclasses.is_dataclass(v):
        for f in dataclasses.fields(v):
            if f.name != "sources" or path:
                _walk(getattr(v, f.name), _join(path, f.name), out)
    elif isinstance(v, tuple):
        for i, x in enumerate(v):
            _walk(x, f"{path}[{i}]", out)


def _strip_indices(path: str) -> str:
    while "[" in path:
        a = path.index("[")
        path = path[:a] + path[path.index("]", a) + 1:]
    return path


def _check_sources(target: Target, file: str) -> None:
    known = field_paths(target)
    for key, cite in target.sources.items():
        if key not in known:
            raise TargetError(file, f"sources.{key}", "names no field of this target")
        if not cite.strip():
            raise TargetError(file, f"sources.{key}",
                              "empty citation (cite a source or say 'assumed')")
