"""`drop_dead(g)`: remove layers no graph output depends on, and the weights and types that
nothing refers to any more (after lowering folded constants, after fusions)."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

from compiler.ir import Graph, Layer


def drop_dead(g: Graph) -> Graph:
    """Drop layers no output depends on, and weights and types nothing refers to."""
    needed = set(g.outputs)
    kept: list[Layer] = []
    for layer in reversed(g.layers):
        if needed.intersection(layer.outputs):
            kept.append(layer)
            needed.update(t for t in layer.inputs if t)
    live = needed | set(g.inputs) | {t for layer in kept for t in layer.outputs}
    return replace(
        g, layers=tuple(reversed(kept)),
        weights=MappingProxyType({t: w for t, w in g.weights.items() if t in needed}),
        types=MappingProxyType({t: s for t, s in g.types.items() if t in live}))
