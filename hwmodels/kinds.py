"""The one registry of target kinds: kind name -> its module, target class and capabilities.

`hwmodels.target` (YAML `kind:` -> dataclass), `hwmodels.cost` (dataclass -> `evaluate`) and
the product layer (`edgesim`: allocation, memory checks, sweeps) all read `KINDS` here, so
they cannot disagree, and `edgesim` asks a target's `Capabilities`, never its kind name. A
registered module that fails to import, or lacks a named class or function, raises
`KindRegistryError`: an internal error naming the module and the cause, never
"kind: must be one of [...]" blamed on the user's target file.

The steps to add a target kind are in `docs/adding-a-target-kind.md`.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class KindRegistryError(RuntimeError):
    """A registered target kind whose module cannot provide its class or cost model (our bug)."""


@dataclass(frozen=True)
class SweepHooks:
    """What `edgesim sweep` needs of a kind, as "module:function" references.

    Attributes:
        variant: `(base, changes: dict[str, Any], label: str) -> target`: `base` with changed
            fields, named by `label`; raises ValueError for a combination it refuses.
        costs: `(table, bits, targets, **host) -> Cost` of [H, L, B] arrays for H targets of
            the kind, in one vectorised call (`host`: see `host_options`).
        area: `(target) -> dict[str, float]` with at least `area_proxy` (relative silicon
            cost, for ranking designs).
        aliases: extra parameter names a space may vary, with their type (e.g. `dram_gbps`).
        picked: optional `(table, bits, targets, cols) -> Cost` of [H, L, 1] arrays: `costs`
            with layer l of target h at bit choice cols[h, l] only (cols [L]: all alike).
    """

    variant: str
    costs: str
    area: str
    aliases: tuple[tuple[str, type], ...] = ()
    picked: str | None = None


@dataclass(frozen=True)
class Capabilities:
    """What the product layer may ask of a kind (it never asks the kind's name).

    Attributes:
        runtimes: inference runtimes the cost model can assume (a host CPU running
            onnxruntime, ...); () for a device that runs its own compiled program. The
            `runtime` option, and onnxruntime's odd-width containers, apply only if non-empty.
        threads: the cost depends on a host thread count (the `threads` option applies).
        float_rest: layers without a chosen width run in float32 and low-bit weights pair
            with float activations except in int8 kernels (a CPU running onnxruntime's QDQ
            and weight-only formats); False: a full-integer pipeline at 8-bit activations.
        int8_dot: "module:function" `(target) -> bool`: onnxruntime takes the int8
            (accuracy_level 4) MatMulNBits path on it; None: never.
        memory_fit: "module:function" `(table, bits [L, 2], target) -> FitReport` (weights
            in flash, peak activations in an SRAM arena); None: not checked.
        sweep: how sweeps vary the kind; None: it cannot be swept.
    """

    runtimes: tuple[str, ...] = ()
    threads: bool = False
    float_rest: bool = False
    int8_dot: str | None = None
    memory_fit: str | None = None
    sweep: SweepHooks | None = None


@dataclass(frozen=True)
class KindEntry:
    """One target kind: the YAML `kind:` name, its module, its target dataclass's name (the
    module also holds `evaluate`) and its capabilities."""

    kind: str
    module: str
    target_class: str
    capabilities: Capabilities = Capabilities()


_CPU_RUNTIMES = ("onnxruntime", "ideal", "ncnn", "xnnpack")  # hwmodels.cpu.RUNTIMES

KINDS: tuple[KindEntry, ...] = (
    KindEntry("cpu", "hwmodels.cpu", "CpuTarget", Capabilities(
        runtimes=_CPU_RUNTIMES, threads=True, float_rest=True,
        int8_dot="hwmodels.cpu:nbits_int8_available",
        sweep=SweepHooks("hwmodels.sweep_hooks:cpu_variant", "hwmodels.sweep_hooks:cpu_costs",
                         "hwmodels.sweep_hooks:cpu_area", aliases=(("dram_gbps", float),),
                         picked="hwmodels.sweep_hooks:cpu_picked"))),
    KindEntry("mcu", "hwmodels.mcu", "McuTarget", Capabilities(
        memory_fit="hwmodels.mcu:check_fit")),
    KindEntry("macarray", "hwmodels.macarray", "MacArrayTarget", Capabilities(
        sweep=SweepHooks("hwmodels.sweep_hooks:macarray_variant",
                         "hwmodels.sweep_hooks:macarray_costs",
                         "hwmodels.sweep_hooks:macarray_area",
                         picked="hwmodels.sweep_hooks:macarray_picked"))),
    KindEntry("roofline", "hwmodels.roofline", "RooflineTarget", Capabilities(
        sweep=SweepHooks("hwmodels.roofline:variant", "hwmodels.roofline:evaluate_configs",
                         "hwmodels.roofline:area"))),
)


def kind_names() -> list[str]:
    """The registered kind names, sorted (what a target file's `kind:` may say)."""
    return sorted(e.kind for e in KINDS)


def _import(entry: KindEntry, module: str) -> Any:
    loaded = sys.modules.get(module)  # every cost call dispatches here; import_module locks
    if loaded is not None:
        return loaded
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # a broken model module is our bug, not the user's file
        raise KindRegistryError(f"target kind {entry.kind!r}: module {module} failed "
                                f"to import: {type(exc).__name__}: {exc}") from exc


def _attr(entry: KindEntry, name: str, module: str | None = None) -> Any:
    mod = _import(entry, module or entry.module)
    if not hasattr(mod, name):
        raise KindRegistryError(f"target kind {entry.kind!r}: module {mod.__name__} has no "
                                f"{name!r} (registry entry in hwmodels/kinds.py)")
    return getattr(mod, name)


def _ref(entry: KindEntry, ref: str) -> Callable[..., Any]:
    """The function a "module:function" reference of `entry`'s capabilities names."""
    module, _, name = ref.partition(":")
    fn: Callable[..., Any] = _attr(entry, name, module)
    return fn


def target_class(kind: str) -> type:
    """The frozen target dataclass of a registered `kind` (KeyError if not registered)."""
    entry = next((e for e in KINDS if e.kind == kind), None)
    if entry is None:
        raise KeyError(kind)
    cls: type = _attr(entry, entry.target_class)
    return cls


def target_classes() -> dict[str, type]:
    """Every registered kind -> its target dataclass (imports every kind's module)."""
    return {e.kind: target_class(e.kind) for e in KINDS}


def entry_of(target: object) -> KindEntry:
    """The registry entry whose target class `target` is an instance of.

    Raises:
        TypeError: no registered kind has `type(target)` as its target class.
    """
    cls: type = type(target)
    entry, registry = _entry_of_type(cls)
    if registry is not KINDS:  # the registry was replaced (tests do): look up afresh
        _entry_of_type.cache_clear()
        entry, registry = _entry_of_type(cls)
    return entry


@functools.lru_cache(maxsize=64)  # every cost call dispatches here; a few target classes
def _entry_of_type(cls: type) -> tuple[KindEntry, tuple[KindEntry, ...]]:
    """(the entry registering `cls`, the registry it was found in)."""
    for entry in KINDS:
        if cls is target_class(entry.kind):
            return entry, KINDS
    raise TypeError(f"no cost model for {cls.__name__}: no target kind in "
                    f"hwmodels/kinds.py registers it (registered: {', '.join(kind_names())})")


def cost_model(target: object) -> Callable[..., Any]:
    """The `evaluate` function of `target`'s kind (TypeError if none registers it)."""
    entry = entry_of(target)
    fn: Callable[..., Any] = _attr(entry, "evaluate")
    return fn


def host_options(target: object, threads: int | None, runtime: str) -> dict[str, Any]:
    """The keyword options `target`'s cost model and sweep costs take: `threads` and `runtime`
    only for kinds whose capabilities say they describe a host CPU; {} for the others."""
    caps = capabilities(target)
    host: dict[str, Any] = {"threads": threads} if caps.threads else {}
    if caps.runtimes:
        host["runtime"] = runtime
    return host


def capabilities(target: object) -> Capabilities:
    """What `target`'s kind can do (TypeError if no kind registers its class)."""
    return entry_of(target).capabilities


def memory_fit(target: object) -> Callable[..., Any] | None:
    """`target`'s kind's memory-fit check `(table, bits, target) -> FitReport`, or None."""
    entry = entry_of(target)
    ref = entry.capabilities.memory_fit
    return None if ref is None else _ref(entry, ref)


def int8_dot(target: object) -> bool:
    """True if onnxruntime takes the int8 MatMulNBits path on `target`."""
    entry = entry_of(target)
    ref = entry.capabilities.int8_dot
    return False if ref is None else bool(_ref(entry, ref)(target))


@dataclass(frozen=True)
class Sweep:
    """A kind's resolved `SweepHooks` (see there for the signatures)."""

    variant: Callable[..., Any]
    costs: Callable[..., Any]
    area: Callable[[Any], dict[str, float]]
    aliases: Mapping[str, type]
    picked: Callable[..., Any] | None = None


def sweep(target: object) -> Sweep | None:
    """The sweep hooks of `target`'s kind, or None if the kind cannot be swept."""
    entry = entry_of(target)
    hooks = entry.capabilities.sweep
    if hooks is None:
        return None
    picked = None if hooks.picked is None else _ref(entry, hooks.picked)
    return Sweep(_ref(entry, hooks.variant), _ref(entry, hooks.costs), _ref(entry, hooks.area),
                 dict(hooks.aliases), picked)


def sweepable_kinds() -> list[str]:
    """Names of the kinds a sweep can vary, sorted."""
    return sorted(e.kind for e in KINDS if e.capabilities.sweep is not None)
