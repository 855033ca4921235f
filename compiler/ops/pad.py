"""pad op family: "pad" (pads: (begin..., end...) for every axis, negatives crop; mode:
constant, reflect, edge or wrap; value: the constant), optionally a second input holding a
run-time value.

Negative pads crop first; the vjp scatters the cotangent back through per-axis source indices
(which input index each output position copies).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from compiler.errors import ModelError
from compiler.ir import Spec
from compiler.ops.opdef import Lowered, LowerRule, Node, OpDef, no_facts, single

Array = np.ndarray
Cots = tuple[Array | None, ...]


def _pad_shape(specs: Sequence[Spec], *, pads: tuple[int, ...], **attrs: Any) -> tuple[Spec]:
    r = len(specs[0].shape)
    shape = tuple(d + pads[i] + pads[i + r] for i, d in enumerate(specs[0].shape))
    return (Spec(shape, specs[0].dtype),)


def _crop(x: Array, pads: Sequence[int]) -> Array:
    r = x.ndim
    return x[tuple(slice(max(-pads[i], 0), x.shape[i] - max(-pads[i + r], 0)) for i in range(r))]


def _pad_forward(x: Array, fill: Array | None = None, *, pads: tuple[int, ...], mode: str,
                 value: float = 0.0) -> tuple[Array]:
    r, pad_value = x.ndim, value if fill is None else fill.reshape(())
    width = [(max(pads[i], 0), max(pads[i + r], 0)) for i in range(r)]
    kw = {"constant_values": pad_value} if mode == "constant" else {}
    # numpy's stubs take mode as a Literal; lower_pad checked this ONNX string
    padded = np.pad(_crop(x, pads), width, mode=mode, **kw)  # type: ignore[call-overload]
    return (padded.astype(x.dtype, copy=False),)


def _source_index(n: int, begin: int, end: int, mode: str) -> Array:
    """For each output position along one axis, the input index it copies (-1: the value)."""
    kept = np.arange(max(-begin, 0), n - max(-end, 0))
    kw = {"constant_values": -1} if mode == "constant" else {}
    # numpy's stubs take mode as a Literal; lower_pad checked this ONNX string
    return np.pad(kept, (max(begin, 0), max(end, 0)), mode=mode, **kw)  # type: ignore[call-overload]


def _scatter_axis(g: Array, index: Array, n: int, axis: int) -> Array:
    valid = index >= 0
    g = np.compress(valid, g, axis=axis)
    out = np.zeros(g.shape[:axis] + (n,) + g.shape[axis + 1:], dtype=g.dtype)
    # a tuple index (slices, then an index array) is valid; numpy's stubs list arrays only
    np.add.at(out, (slice(None),) * axis + (index[valid],), g)  # type: ignore[arg-type]
    return out


def _pad_vjp(gs: Cots, xs: Sequence[Array | None], ys: Sequence[Array], *,
             pads: tuple[int, ...], mode: str, value: float = 0.0) -> Cots:
    (g,), x, fill = gs, xs[0], xs[1] if len(xs) > 1 else None
    if g is None:
        return (None,) * len(xs)
    assert x is not None
    gx, r = g, x.ndim
    for a in range(r):
        gx = _scatter_axis(gx, _source_index(x.shape[a], pads[a], pads[a + r], mode),
                           x.shape[a], a)
    if fill is None:
        return (gx,)
    gv = np.asarray(g.sum() - gx.sum(), dtype=fill.dtype).reshape(fill.shape)
    return gx, gv  # every output element not copied from x holds the fill value


OPS: tuple[OpDef, ...] = (
    OpDef("pad", shape=_pad_shape, forward=_pad_forward, vjp=_pad_vjp, facts=no_facts),
)


# --- lowering -----------------------------------------------------------------------------------


def _full_pads(node: Node, pads: Sequence[int], rank: int) -> tuple[int, ...]:
    axes = node.ints(3, "axes")
    axes = tuple(range(rank)) if axes is None else tuple(node.axis(a, rank) for a in axes)
    if len(pads) != 2 * len(axes):
        raise ModelError(node.name, f"Pad has {len(pads)} pads for {len(axes)} axes")
    full = [0] * (2 * rank)
    for i, a in enumerate(axes):
        full[a], full[a + rank] = int(pads[i]), int(pads[i + len(axes)])
    return tuple(full)


def lower_pad(node: Node, mode: str = "constant", pads: Sequence[int] | None = None,
              value: float = 0.0) -> Lowered:
    """ONNX Pad: pads/value attributes before opset 11, inputs (pads, constant_value, axes)
    from 11; a run-time constant_value stays a second input."""
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise ModelError(node.name, f"Pad mode {mode!r} is not supported")
    x = node.spec(0)
    assert x is not None
    full = _full_pads(node, node.required_ints(1, "pads") if pads is None else pads,
                      len(x.shape))
    if any(d + full[i] + full[i + len(x.shape)] < 0 for i, d in enumerate(x.shape)):
        raise ModelError(node.name, f"Pad pads {full} crop more than shape {x.shape}")
    fill = node.const(2) if node.input(2) else np.asarray(value)
    inputs = node.inputs[:1] if fill is not None or mode != "constant" else node.inputs[:3:2]
    const_value = 0.0 if fill is None else np.asarray(fill).reshape(()).item()
    return single("pad", node, inputs=inputs, pads=full, mode=mode, value=const_value)


LOWER: dict[str, LowerRule] = {"Pad": lower_pad}
