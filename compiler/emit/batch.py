"""Where the batch lives in an emitted model whose source declared a dynamic batch.

The IR is static (lowered at one batch, usually 1), and every size an emitted node holds
(a Reshape's target, a Resize's sizes, a Slice's ends) was folded there. The file runs at
another batch only where each such size leaves the batch free, so the emitter follows the
batch from the inputs: `flow(g)` gives, for every tensor that carries it, the axis whose
outermost factor is the batch. Row-major order keeps it there through a Reshape as long as
the axes before it are kept, so a Reshape is written with -1 on that axis (PP-OCR's SVTR
flattens [1, 8, 40, 40] to [320, 40] and back: a literal 320 failed at batch 3).

Each layer is checked by its own shape rule at twice the lowered batch: an output must come
out either unchanged or doubled along exactly one axis. A weight of size 1 on the batch
axis that a Concat joins to the batch is expanded to it (the frontend folded the source's
Expand at batch 1). A layer that moves the batch where no single axis carries it, drops it
(a Gather of one sample, a Resize by sizes) or meets a batch-sized constant breaks the
flow, and the emitted file then declares the batch it was lowered at (`declared`): a file
must run at every batch it declares.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from compiler.errors import ModelError
from compiler.ir import Graph, Layer, Spec
from compiler.ops import OPS

Dims = tuple[int | str, ...]


@dataclass(frozen=True)
class BatchFlow:
    """The batch through a graph.

    Attributes:
        axes: tensor -> the axis whose outermost factor is the batch (tensors that carry it).
        broken: "" if the emitted model runs at any batch, else the layer that fixes the
            batch and why.
        symbol: the source's name for the batch dim (the first dynamic input's).
    """

    axes: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    broken: str = ""
    symbol: str = ""

    @property
    def dynamic(self) -> bool:
        return bool(self.axes) and not self.broken


# Reshapes that add or drop axes of size 1 leave the batch on one of several axes
# ([1(N), 128] unsqueezed to [1, 1, 128]: silero's LSTM input is [seq 1, N, 128]); the walk
# takes the first and comes back to the others when a later layer breaks the batch, up to
# this many walks (silero takes 18; a 1,700-layer chain with 100 such reshapes before a layer
# that fixes the batch spends 0.37 CPU-s per emit at this bound, 1.46 s at 256).
MAX_WALKS = 64


def flow(g: Graph) -> BatchFlow:
    """Follow the batch from the inputs the source declared with a symbolic batch dim."""
    dims = g.interface.dims if g.interface else {}
    seeds: dict[str, int] = {}
    for name in g.inputs:
        axis = g.batch_axis(name)
        declared = dims.get(name, ())
        if axis is not None and len(declared) == len(g.types[name].shape) \
                and isinstance(declared[axis], str):
            seeds[name] = axis
    if not seeds:
        return BatchFlow()
    first = next(iter(seeds))
    symbol = str(dims[first][seeds[first]])
    pending, failed = [(0, seeds)], None
    for _ in range(MAX_WALKS):
        if not pending:
            break
        start, axes = pending.pop()
        why, later = _walk(g, start, axes, g.types[first].shape[seeds[first]])
        if not why:
            return BatchFlow(MappingProxyType(axes), "", symbol)
        failed = failed or BatchFlow(MappingProxyType(axes), why, symbol)
        pending += later  # (popped last first: the latest choice is revisited first)
    assert failed is not None  # (the first walk ran and failed)
    return failed


def _walk(g: Graph, start: int, axes: dict[str, int], batch: int
          ) -> tuple[str, list[tuple[int, dict[str, int]]]]:
    """Follow the batch (lowered at size `batch`) through layers `start`... into `axes`;
    why it breaks ("" if it does not), and the walks a reshape's other choices start."""
    later: list[tuple[int, dict[str, int]]] = []
    for i in range(start, len(g.layers)):
        layer = g.layers[i]
        if not any(t in axes for t in layer.inputs if t):
            continue
        if layer.kind == "reshape":  # (its only input)
            x, y = layer.inputs[0], layer.outputs[0]
            ks = reshape_axes(g.types[x].shape, axes[x], g.types[y].shape, batch)
            if not ks or 0 in g.types[y].shape:
                return f"layer {layer.name}: the reshape mixes the batch with other axes", later
            later += [(i + 1, {**axes, y: k}) for k in reversed(ks[1:])]  # best on top
            axes[y] = ks[0]
            continue
        why = _follow(g, layer, axes)
        if why:
            return f"layer {layer.name}: {why}", later
    dims = g.interface.dims if g.interface else {}
    fixed = [t for t in g.outputs if t in axes and len(dims.get(t, ())) == len(
        g.types[t].shape) and not isinstance(dims[t][axes[t]], str)]
    return (f"output {fixed[0]}: the source declares its batch axis fixed" if fixed else "",
            later)


def reshape_axes(src: tuple[int, ...], axis: int, out: tuple[int, ...], batch: int
                 ) -> list[int]:
    """The axes of a reshape's output `out` that can carry the batch of `src`'s `axis`:
    those whose preceding axes hold as many elements as the ones before `axis` (row-major:
    the batch stays their outermost factor). Best first: an axis holding just the batch
    (`batch`, the lowered size), `axis` itself, then in order; an axis that merges the batch
    with other data last (PP-OCR's [40 N, 6625] -> [1, 40, 6625] is [N, 40, 6625])."""
    before = math.prod(src[:axis])
    ks = [k for k in range(len(out)) if math.prod(out[:k]) == before]
    return sorted(ks, key=lambda k: (out[k] != batch, k != axis, k))


def _spec(g: Graph, t: str, axes: Mapping[str, int]) -> Spec | None:
    """`t`'s type at twice the lowered batch."""
    if not t:
        return None
    spec = g.types[t] if t in g.types else Spec(tuple(g.weights[t].shape),
                                                  str(g.weights[t].dtype))
    if t not in axes:
        return spec
    shape = list(spec.shape)
    shape[axes[t]] *= 2
    return Spec(tuple(shape), spec.dtype)


def _follow(g: Graph, layer: Layer, axes: dict[str, int]) -> str:
    """Add `layer`'s outputs that carry the batch to `axes`; why not, if they cannot."""
    x = layer.inputs[0]
    along = layer.inputs if layer.kind == "concat" else layer.inputs[:1]
    if layer.kind in ("concat", "split", "gather") and any(
            axes.get(t) == layer.attrs["axis"] for t in along):
        return f"{layer.kind} along the batch axis"
    if layer.kind == "slice" and x in axes and not _whole(g, layer, axes[x]):
        return "slice of the batch axis"
    specs = [_spec(g, t, axes) for t in layer.inputs]
    if layer.kind == "concat":
        axis = next(axes[u] for u in layer.inputs if u in axes)
        specs = [_broadcast(g, t, spec, axis) for t, spec in zip(layer.inputs, specs)]
    try:
        twice = OPS[layer.kind].shape(specs, **_attrs(g, layer, axes))
    except (ValueError, ModelError, IndexError, KeyError) as e:
        return f"its shapes do not follow the batch ({e})"
    found = False
    for out, spec in zip(layer.outputs, twice):
        once = g.types[out].shape
        grown = [a for a, (n, m) in enumerate(zip(once, spec.shape)) if n != m]
        if len(spec.shape) != len(once) or len(grown) > 1 \
                or grown and spec.shape[grown[0]] != 2 * once[grown[0]]:
            return f"output {out} is {spec.shape} at twice the batch, {once} at the batch"
        if grown:
            axes[out], found = grown[0], True
    # a reduction over the batch axis reduces whatever batch it gets, as the source's does
    return "" if found or layer.kind in ("reduce", "arg_reduce") else \
        "no output carries the batch"


def _broadcast(g: Graph, t: str, spec: Spec | None, axis: int) -> Spec | None:
    """A concat input's type at twice the batch: a weight of size 1 on the batch axis is
    broadcast to the batch (`float_ops.concat` expands it). The frontend folded the source's
    Expand of it to the batch (Shape -> ... -> Expand: vit_tiny's CLS token) at batch 1."""
    if spec is None or t not in g.weights or len(spec.shape) <= axis or spec.shape[axis] != 1:
        return spec
    return Spec(spec.shape[:axis] + (2,) + spec.shape[axis + 1:], spec.dtype)


def _whole(g: Graph, layer: Layer, axis: int) -> bool:
    """Whether a slice keeps all of the batch axis (emitted to INT64_MAX, `float_ops`)."""
    a, n = layer.attrs, g.types[layer.inputs[0]].shape[axis]
    return all((s, t, e) == (0, 1, n) for x, s, e, t in
               zip(a["axes"], a["starts"], a["ends"], a["steps"]) if x == axis)


def _attrs(g: Graph, layer: Layer, axes: Mapping[str, int]) -> dict[str, object]:
    """The layer's attributes as the emitted node applies them at twice the batch: a whole
    slice of the batch axis and a Resize written by scales follow the input."""
    a = dict(layer.attrs)
    x = layer.inputs[0] if layer.inputs else ""
    if x not in axes:
        return a
    twice = _spec(g, x, axes)
    assert twice is not None  # a carried tensor
    if layer.kind == "slice":
        a["ends"] = tuple(twice.shape[ax] if ax == axes[x] else e
                          for ax, e in zip(a["axes"], a["ends"]))
    if layer.kind == "resize" and not by_sizes(g.types[x].shape, a["scales"], a["sizes"]):
        a["sizes"] = tuple(int(math.floor(d * s)) for d, s in zip(twice.shape, a["scales"]))
    return a


def by_sizes(shape: tuple[int, ...], scales: tuple[float, ...], sizes: tuple[int, ...]) -> bool:
    """Whether a Resize is written with `sizes` (they fix every dim, the batch too): when
    float32 scales do not give the sizes exactly but sizes / input does (`float_ops.resize`)."""
    exact = all(float(s) * d == n for d, s, n in zip(shape, np.asarray(scales, np.float32),
                                                     sizes))
    return not exact and all(math.isclose(d * s, n, rel_tol=1e-9)
                             for d, s, n in zip(shape, scales, sizes))


def declared(g: Graph, batch: BatchFlow) -> dict[str, Dims]:
    """The dims the emitted model declares for its inputs and outputs: the IR's static
    shape, with the source's batch symbol on the axis that carries the batch where it
    flows through the whole graph."""
    out: dict[str, Dims] = {}
    face = g.interface.dims if g.interface else {}
    for name in (*g.inputs, *g.outputs):
        shape: list[int | str] = list(g.types[name].shape)
        if batch.dynamic and name in batch.axes:
            k, source = batch.axes[name], face.get(name, ())
            shape[k] = source[k] if len(source) == len(shape) else batch.symbol
        out[name] = tuple(shape)
    return out
