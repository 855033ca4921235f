"""The machinery of `compiler.frontend.patterns`: a graph's producer/consumer `View`, a
`Match` (the chain and the layer replacing it), the small queries patterns walk chains with,
the `closed` check, and `fuse`, which swaps every closed match of one pattern.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TypeGuard

import numpy as np

from compiler.ir import Graph, Layer, Spec, frozen_attrs, readonly
from compiler.passes.drop_dead import drop_dead

NAME_SEPARATORS = "/._-"
RTOL = 1e-4  # exporters write these constants in float32 (e.g. 1.4142135381698608)


@dataclass(frozen=True)
class View:
    """A graph with its producer/consumer maps, built once per fusion sweep."""

    graph: Graph
    made: Mapping[str, Layer]
    users: Mapping[str, list[Layer]]
    position: Mapping[str, int]
    outputs: frozenset[str]


def view(g: Graph) -> View:
    """Index `g` for matching."""
    position = {layer.name: i for i, layer in enumerate(g.layers)}
    return View(g, g.producers(), g.consumers(), position, frozenset(g.outputs))


@dataclass(frozen=True)
class Match:
    """A matched chain (in graph order) and the layer replacing it.

    `fused` writes the chain's final output; `weights` holds the new constants it reads.
    """

    layers: tuple[Layer, ...]
    fused: Layer
    weights: Mapping[str, np.ndarray] = field(default_factory=lambda: MappingProxyType({}))


Pattern = Callable[[View, Layer], "Match | None"]


# --- small queries --------------------------------------------------------------------------


def is_kind(layer: Layer | None, kind: str, fn: str | None = None) -> TypeGuard[Layer]:
    return layer is not None and layer.kind == kind and (fn is None or layer.attrs.get("fn") == fn)


def made_by(v: View, tensor: str, kind: str, fn: str | None = None) -> Layer | None:
    """The layer producing `tensor`, if it is of `kind` (and `fn`)."""
    layer = v.made.get(tensor)
    return layer if is_kind(layer, kind, fn) else None


def sole_user(v: View, tensor: str) -> Layer | None:
    """The one layer reading `tensor`, if exactly one does and it is not a graph output."""
    users = {layer.name: layer for layer in v.users.get(tensor, [])}
    if tensor in v.outputs or len(users) != 1:
        return None
    return next(iter(users.values()))


def shape_of(v: View, tensor: str) -> tuple[int, ...]:
    return v.graph.types[tensor].shape


def scalar_of(v: View, tensor: str) -> float | None:
    """The value of a constant whose elements are all equal (a scalar in disguise)."""
    value = v.graph.weights.get(tensor)
    if value is None or value.size == 0 or value.dtype.kind not in "fiu":
        return None
    first = value.reshape(-1)[0]
    return float(first) if np.all(value == first) else None


def near(x: float | None, want: float) -> TypeGuard[float]:
    """Whether constant `x` is the formula's `want`, within float32 rounding."""
    return x is not None and abs(x - want) <= RTOL * abs(want) + 1e-7


def with_scalar(v: View, layer: Layer | None, fn: str,
                 act_pos: int | None = None) -> tuple[str, float] | None:
    """(activation operand, scalar) of a binary eltwise `fn` with one scalar constant operand
    that does not broadcast the result; `act_pos` pins the activation's position."""
    if not is_kind(layer, "eltwise", fn) or len(layer.inputs) != 2:
        return None
    for pos in (0, 1) if act_pos is None else (act_pos,):
        act, const = layer.inputs[pos], layer.inputs[1 - pos]
        value = scalar_of(v, const)
        if (value is not None and act not in v.graph.weights
                and shape_of(v, layer.outputs[0]) == shape_of(v, act)):
            return act, value
    return None


def other_input(layer: Layer, tensor: str) -> str | None:
    """The other operand of a binary layer that reads `tensor` once."""
    a, b = layer.inputs[:2]
    if (a == tensor) == (b == tensor):
        return None
    return b if a == tensor else a


def reduced_axes(v: View, layer: Layer) -> tuple[int, ...] | None:
    """Axes of a keepdims mean reduction (reduce axes are explicit: () reduces nothing)."""
    if not is_kind(layer, "reduce", "mean") or not layer.attrs.get("keepdims", True):
        return None
    return tuple(sorted(layer.attrs.get("axes", ()))) or None


def suffix_axis(axes: Sequence[int], rank: int) -> int | None:
    """First axis, if `axes` are exactly the trailing axes (what LayerNorm's `axis` means)."""
    if not axes or tuple(axes) != tuple(range(axes[0], rank)):
        return None
    return axes[0]


# --- closing the match ----------------------------------------------------------------------


def closed(v: View, m: Match) -> bool:
    """Intermediate tensors are read only inside the chain and are not graph outputs."""
    names = {layer.name for layer in m.layers}
    kept = set(m.fused.outputs)
    for layer in m.layers:
        for t in layer.outputs:
            if t in kept:
                continue
            if t in v.outputs or any(u.name not in names for u in v.users.get(t, [])):
                return False
    return kept == set(m.layers[-1].outputs)


def _fused_name(layers: Sequence[Layer], taken: set[str]) -> str:
    """The chain's common name scope (e.g. '/encoder/ln' for '/encoder/ln/Sub', ...), else its
    last layer's name."""
    names = [layer.name for layer in layers]
    prefix = os.path.commonprefix(names)
    if any(len(n) > len(prefix) and n[len(prefix)] not in NAME_SEPARATORS for n in names):
        prefix = prefix[:max(prefix.rfind(c) for c in NAME_SEPARATORS) + 1]  # whole scopes only
    prefix = prefix.rstrip(NAME_SEPARATORS)
    name = prefix if prefix and prefix not in taken else names[-1]
    taken.add(name)
    return name


def fused_match(v: View, layers: Sequence[Layer], kind: str, inputs: Sequence[str],
           weights: Mapping[str, np.ndarray] | None = None, **attrs: object) -> Match:
    """A Match over `layers` (any order) fused into one `kind` layer writing the last output."""
    ordered = tuple(sorted(layers, key=lambda layer: v.position[layer.name]))
    fused = Layer(ordered[-1].name, kind, tuple(inputs), ordered[-1].outputs, frozen_attrs(attrs))
    return Match(ordered, fused, MappingProxyType(dict(weights or {})))


def replace_matches(g: Graph, matches: Sequence[Match]) -> Graph:
    """Swap each matched chain for its fused layer, placed where the chain's last layer was;
    drop the constants nothing reads any more."""
    removed = {layer.name for m in matches for layer in m.layers}
    taken = {layer.name for layer in g.layers if layer.name not in removed}
    at_last = {m.layers[-1].name: replace(m.fused, name=_fused_name(m.layers, taken))
               for m in matches}
    layers = tuple(at_last.get(layer.name, layer) for layer in g.layers
                   if layer.name in at_last or layer.name not in removed)
    new = {t: readonly(w) for m in matches for t, w in m.weights.items()}
    weights = {**g.weights, **new}
    types = {**g.types, **{t: Spec(tuple(w.shape), w.dtype.name) for t, w in new.items()}}
    return drop_dead(replace(g, layers=layers, weights=weights, types=types))


def fuse(g: Graph, pattern: Pattern) -> Graph:
    """Apply one pattern everywhere it matches (non-overlapping, closed matches)."""
    v = view(g)
    matches: list[Match] = []
    claimed: set[str] = set()
    for layer in g.layers:
        m = pattern(v, layer)
        names = {x.name for x in m.layers} if m is not None else set()
        if m is not None and not names & claimed and closed(v, m):
            claimed |= names
            matches.append(m)
    return replace_matches(g, matches) if matches else g
