"""The one registry of target kinds: kind name -> the module holding its target class and model.

`hwmodels.target` (YAML `kind:` -> dataclass) and `hwmodels.cost` (dataclass -> `evaluate`)
both read `KINDS` here, so the two cannot disagree. A registered module that fails to import,
or lacks its class or `evaluate`, raises `KindRegistryError`: an internal error naming the
module and the cause, never "kind: must be one of [...]" blamed on the user's target file.

To add a kind: write its model module (a frozen target dataclass and
`evaluate(table, bits, target, *, threads, runtime) -> Cost`) and add one `KindEntry` below.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class KindRegistryError(RuntimeError):
    """A registered target kind whose module cannot provide its class or cost model (our bug)."""


@dataclass(frozen=True)
class KindEntry:
    """One target kind: the YAML `kind:` name, its module and its target dataclass's name."""

    kind: str
    module: str
    target_class: str


KINDS: tuple[KindEntry, ...] = (
    KindEntry("cpu", "hwmodels.cpu", "CpuTarget"),
    KindEntry("mcu", "hwmodels.mcu", "McuTarget"),
    KindEntry("macarray", "hwmodels.macarray", "MacArrayTarget"),
)


def kind_names() -> list[str]:
    """The registered kind names, sorted (what a target file's `kind:` may say)."""
    return sorted(e.kind for e in KINDS)


def _attr(entry: KindEntry, name: str) -> Any:
    try:
        mod = importlib.import_module(entry.module)
    except ImportError as exc:  # a broken model module is our bug, not the user's file
        raise KindRegistryError(f"target kind {entry.kind!r}: module {entry.module} failed "
                                f"to import: {type(exc).__name__}: {exc}") from exc
    if not hasattr(mod, name):
        raise KindRegistryError(f"target kind {entry.kind!r}: module {entry.module} has no "
                                f"{name!r} (registry entry in hwmodels/kinds.py)")
    return getattr(mod, name)


def target_class(kind: str) -> type:
    """The frozen target dataclass of a registered `kind` (KeyError if not registered)."""
    entry = next((e for e in KINDS if e.kind == kind), None)
    if entry is None:
        raise KeyError(kind)
    return _attr(entry, entry.target_class)


def target_classes() -> dict[str, type]:
    """Every registered kind -> its target dataclass (imports every kind's module)."""
    return {e.kind: target_class(e.kind) for e in KINDS}


def cost_model(target: object) -> Callable[..., Any]:
    """The `evaluate` function of the kind whose target class `target` is an instance of.

    Raises:
        TypeError: no registered kind has `type(target)` as its target class.
    """
    for entry in KINDS:
        if type(target) is target_class(entry.kind):
            return _attr(entry, "evaluate")
    raise TypeError(f"no cost model for {type(target).__name__}: no target kind in "
                    f"hwmodels/kinds.py registers it (registered: {', '.join(kind_names())})")
