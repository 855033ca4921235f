"""reshape op family: views, data movement, and shape arithmetic.

Kinds and their attributes (all static; edgesim needs static shapes):

- "reshape" (shape: output shape) for ONNX Reshape, Flatten, Squeeze, Unsqueeze;
- "identity" for ONNX Identity;
- "transpose" (perm), "concat" (axis), "split" (axis, sizes), "expand" (shape: output shape);
- "slice" (axes, starts, ends, steps: one entry per sliced axis, clamped as ONNX specifies;
  with a negative step, end == -1 means "through index 0").

Tile lowers to reshape + expand + reshape. (Pad has its own family, `pad.py`; Shape, Size,
ConstantOfShape and Range, which fold to constants, live with the other index arithmetic in
`gather.py`.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from compiler.errors import ModelError
from compiler.ir import Layer, Spec, frozen_attrs
from compiler.ops.opdef import Lowered, LowerRule, Node, OpDef, no_facts, single, unbroadcast

Array = np.ndarray
Cots = tuple[Array | None, ...]


def _zeros_if_none(g: Array | None, like: Spec | Array) -> Array:
    return np.zeros(like.shape, dtype=getattr(like, "dtype", None)) if g is None else g


# --- reshape, identity, transpose, expand ---

def _reshape_shape(specs: Sequence[Spec], *, shape: tuple[int, ...]) -> tuple[Spec]:
    if int(np.prod(shape)) != specs[0].size:
        raise ValueError(f"cannot reshape {specs[0].shape} into {shape}")
    return (Spec(tuple(shape), specs[0].dtype),)


def _reshape_vjp(gs: Cots, xs: Sequence[Array], ys: Sequence[Array], **attrs: Any) -> Cots:
    return (None if gs[0] is None else gs[0].reshape(xs[0].shape),)


def _transpose_shape(specs: Sequence[Spec], *, perm: tuple[int, ...]) -> tuple[Spec]:
    return (Spec(tuple(specs[0].shape[p] for p in perm), specs[0].dtype),)


def _transpose_vjp(gs: Cots, xs: Sequence[Array], ys: Sequence[Array], *,
                   perm: tuple[int, ...]) -> Cots:
    return (None if gs[0] is None else gs[0].transpose(np.argsort(perm)),)


def _expand_shape(specs: Sequence[Spec], *, shape: tuple[int, ...]) -> tuple[Spec]:
    return (Spec(np.broadcast_shapes(specs[0].shape, tuple(shape)), specs[0].dtype),)


def _expand_forward(x: Array, *, shape: tuple[int, ...]) -> tuple[Array]:
    return (np.array(np.broadcast_to(x, shape)),)  # a writable copy, not a strided view


def _expand_vjp(gs: Cots, xs: Sequence[Array], ys: Sequence[Array], **attrs: Any) -> Cots:
    return (None if gs[0] is None else unbroadcast(gs[0], xs[0].shape),)


# --- concat, split ---

def _concat_shape(specs: Sequence[Spec], *, axis: int) -> tuple[Spec]:
    shapes = [list(s.shape) for s in specs]
    total = sum(s[axis] for s in shapes)
    for s in shapes:
        s[axis] = total
    if any(s != shapes[0] for s in shapes):
        raise ValueError(f"concat along axis {axis} of {[sp.shape for sp in specs]}")
    return (Spec(tuple(shapes[0]), specs[0].dtype),)


def _concat_vjp(gs: Cots, xs: Sequence[Array], ys: Sequence[Array], *, axis: int) -> Cots:
    if gs[0] is None:
        return (None,) * len(xs)
    cuts = np.cumsum([x.shape[axis] for x in xs])[:-1]
    return tuple(np.split(gs[0], cuts, axis=axis))


def _split_shape(specs: Sequence[Spec], *, axis: int, sizes: tuple[int, ...]) -> tuple[Spec, ...]:
    x = specs[0]
    if sum(sizes) != x.shape[axis]:
        raise ValueError(f"split sizes {sizes} do not add up to {x.shape[axis]}")
    return tuple(Spec(x.shape[:axis] + (n,) + x.shape[axis + 1:], x.dtype) for n in sizes)


def _split_forward(x: Array, *, axis: int, sizes: tuple[int, ...]) -> tuple[Array, ...]:
    return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


def _split_vjp(gs: Cots, xs: Sequence[Array], ys: Sequence[Array], *, axis: int,
               sizes: tuple[int, ...]) -> Cots:
    if all(g is None for g in gs):
        return (None,)
    return (np.concatenate([_zeros_if_none(g, y) for g, y in zip(gs, ys)], axis=axis),)


# --- slice ---

def _slices(ndim: int, axes: Sequence[int], starts: Sequence[int], ends: Sequence[int],
            steps: Sequence[int]) -> tuple[slice, ...]:
    out = [slice(None)] * ndim
    for a, s, e, st in zip(axes, starts, ends, steps):
        out[a] = slice(s, None if e < 0 else e, st)  # e == -1 only with st < 0: through 0
    return tuple(out)


def _slice_shape(specs: Sequence[Spec], *, axes: tuple[int, ...], starts: tuple[int, ...],
                 ends: tuple[int, ...], steps: tuple[int, ...]) -> tuple[Spec]:
    shape = list(specs[0].shape)
    for a, s, e, st in zip(axes, starts, ends, steps):
        shape[a] = len(range(s, e, st))
    return (Spec(tuple(shape), specs[0].dtype),)


def _slice_forward(x: Array, **attrs: tuple[int, ...]) -> tuple[Array]:
    return (x[_slices(x.ndim, **attrs)],)


def _slice_vjp(gs: Cots, xs: Sequence[Array], ys: Sequence[Array], **attrs: Any) -> Cots:
    if gs[0] is None:
        return (None,)
    out = np.zeros_like(xs[0])
    out[_slices(out.ndim, **attrs)] = gs[0]
    return (out,)


OPS: tuple[OpDef, ...] = (
    OpDef("reshape", shape=_reshape_shape, forward=lambda x, *, shape: (x.reshape(shape),),
          vjp=_reshape_vjp, facts=no_facts),
    OpDef("identity", shape=lambda specs: (specs[0],), forward=lambda x: (x,),
          vjp=lambda gs, xs, ys: (gs[0],), facts=no_facts),
    OpDef("transpose", shape=_transpose_shape, vjp=_transpose_vjp, facts=no_facts,
          forward=lambda x, *, perm: (np.transpose(x, perm),)),
    OpDef("expand", shape=_expand_shape, forward=_expand_forward, vjp=_expand_vjp,
          facts=no_facts),
    OpDef("concat", shape=_concat_shape, vjp=_concat_vjp, facts=no_facts,
          forward=lambda *xs, axis: (np.concatenate(xs, axis=axis),)),
    OpDef("split", shape=_split_shape, forward=_split_forward, vjp=_split_vjp, facts=no_facts),
    OpDef("slice", shape=_slice_shape, forward=_slice_forward, vjp=_slice_vjp, facts=no_facts),
)


# --- lowering helpers ---

def _reshape_to(node: Node, shape: Sequence[int]) -> Lowered:
    if int(np.prod(shape)) != node.required_spec(0).size:
        raise ModelError(node.name,
                         f"cannot reshape {node.required_spec(0).shape} into {tuple(shape)}")
    return single("reshape", node, inputs=node.inputs[:1], shape=tuple(int(d) for d in shape))


def _reshape_target(node: Node, target: Sequence[int], allowzero: int) -> list[int]:
    x = node.required_spec(0).shape
    if not allowzero and any(d == 0 and i >= len(x) for i, d in enumerate(target)):
        raise ModelError(node.name, f"Reshape target {tuple(target)} copies (0) a dimension "
                         f"input {tuple(x)} does not have")
    shape = [x[i] if d == 0 and not allowzero else d for i, d in enumerate(target)]
    if shape.count(-1) > 1:
        raise ModelError(node.name, f"Reshape target {tuple(target)} has several -1")
    if -1 in shape:
        known = int(np.prod([d for d in shape if d != -1]))
        if known == 0 or node.required_spec(0).size % known:
            raise ModelError(node.name, f"cannot reshape {x} into {tuple(target)}")
        shape[shape.index(-1)] = node.required_spec(0).size // known
    return shape


# --- lowering rules: views ---

def lower_reshape(node: Node, allowzero: int = 0) -> Lowered:
    """ONNX Reshape (0 copies the input dim unless allowzero; -1 is inferred)."""
    return _reshape_to(node, _reshape_target(node, node.required_ints(1, "shape"), allowzero))


def lower_flatten(node: Node, axis: int = 1) -> Lowered:
    """ONNX Flatten to 2-D at `axis`."""
    x = node.required_spec(0).shape
    if not -len(x) <= axis <= len(x):
        raise ModelError(node.name, f"Flatten axis {axis} out of range for rank {len(x)}")
    axis = axis + len(x) if axis < 0 else axis
    return _reshape_to(node, (int(np.prod(x[:axis])), int(np.prod(x[axis:]))))


def lower_squeeze(node: Node, axes: Sequence[int] | None = None) -> Lowered:
    """ONNX Squeeze; axes an attribute before opset 13, an input from 13; none: all 1-dims."""
    x = node.required_spec(0).shape
    axes = node.ints(1, "axes") if axes is None else axes
    picked = {i for i, d in enumerate(x) if d == 1} if axes is None else {
        node.axis(a, len(x)) for a in axes}
    if any(x[a] != 1 for a in picked):
        raise ModelError(node.name, f"Squeeze axes {sorted(picked)} of shape {x} are not all 1")
    return _reshape_to(node, [d for i, d in enumerate(x) if i not in picked])


def lower_unsqueeze(node: Node, axes: Sequence[int] | None = None) -> Lowered:
    """ONNX Unsqueeze; axes an attribute before opset 13, an input from 13."""
    x = node.required_spec(0).shape
    axes = node.ints(1, "axes") if axes is None else axes
    if axes is None:
        raise ModelError(node.name, "Unsqueeze needs axes")
    rank = len(x) + len(axes)
    picked = {node.axis(a, rank) for a in axes}
    if len(picked) != len(axes):
        raise ModelError(node.name, f"Unsqueeze axes {tuple(axes)} repeat")
    rest = iter(x)
    return _reshape_to(node, [1 if i in picked else next(rest) for i in range(rank)])


def lower_identity(node: Node) -> Lowered:
    """ONNX Identity."""
    return single("identity", node)


# --- lowering rules: data movement ---

def lower_transpose(node: Node, perm: Sequence[int] | None = None) -> Lowered:
    """ONNX Transpose (default perm reverses the axes)."""
    rank = len(node.required_spec(0).shape)
    perm = tuple(reversed(range(rank))) if perm is None else tuple(int(p) for p in perm)
    if sorted(perm) != list(range(rank)):
        raise ModelError(node.name, f"Transpose perm {perm} is not a permutation of {rank} axes")
    return single("transpose", node, perm=perm)


def lower_concat(node: Node, axis: int = 0) -> Lowered:
    """ONNX Concat."""
    return single("concat", node, axis=node.axis(axis, len(node.required_spec(0).shape)))


def _split_sizes(node: Node, n: int, split: Sequence[int] | None,
                 num_outputs: int | None) -> tuple[int, ...]:
    sizes = node.ints(1, "split") if split is None else tuple(int(s) for s in split)
    if sizes is not None:
        return sizes
    parts = len(node.outputs) if num_outputs is None else num_outputs
    chunk = -(-n // parts)  # opset 18: ceil-sized chunks, the last one smaller
    if num_outputs is None and n % parts:
        raise ModelError(node.name, f"Split of {n} into {parts} equal parts")
    return tuple(min(chunk, n - i * chunk) for i in range(parts))


def lower_split(node: Node, axis: int = 0, split: Sequence[int] | None = None,
                num_outputs: int | None = None) -> Lowered:
    """ONNX Split: sizes from the `split` attribute (< opset 13) or input, num_outputs
    (opset 18), or equal parts over the outputs."""
    x = node.required_spec(0).shape
    axis = node.axis(axis, len(x))
    sizes = _split_sizes(node, x[axis], split, num_outputs)
    if sum(sizes) != x[axis] or len(sizes) != len(node.outputs) or min(sizes) < 0:
        raise ModelError(node.name, f"Split sizes {sizes} for {len(node.outputs)} outputs of "
                                    f"dim {x[axis]}")
    return single("split", node, inputs=node.inputs[:1], axis=axis, sizes=sizes)


def _clamp_slice(dim: int, start: int, end: int, step: int) -> tuple[int, int]:
    start, end = start + dim if start < 0 else start, end + dim if end < 0 else end
    if step > 0:
        return min(max(start, 0), dim), min(max(end, 0), dim)
    return min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)


def lower_slice(node: Node, starts: Sequence[int] | None = None,
                ends: Sequence[int] | None = None, axes: Sequence[int] | None = None) -> Lowered:
    """ONNX Slice: starts/ends/axes attributes before opset 10, constant inputs from 10."""
    x = node.required_spec(0).shape
    if starts is None:
        starts, ends = node.required_ints(1, "starts"), node.required_ints(2, "ends")
        axes = node.ints(3, "axes")
    if ends is None:
        raise ModelError(node.name, "Slice has starts but no ends")
    steps = node.ints(4, "steps") or (1,) * len(starts)
    axes = tuple(range(len(starts))) if axes is None else tuple(node.axis(a, len(x))
                                                                  for a in axes)
    if len(set(axes)) != len(axes) or 0 in steps or not len(starts) == len(ends) == len(steps):
        raise ModelError(node.name, f"Slice axes {axes} / steps {steps} are invalid")
    bounds = [_clamp_slice(x[a], s, e, st) for a, s, e, st in zip(axes, starts, ends, steps)]
    return single("slice", node, inputs=node.inputs[:1], axes=axes,
                  starts=tuple(b[0] for b in bounds), ends=tuple(b[1] for b in bounds),
                  steps=tuple(int(s) for s in steps))


def lower_expand(node: Node) -> Lowered:
    """ONNX Expand (bidirectional broadcast to a constant shape)."""
    target = node.required_ints(1, "shape")
    try:
        shape = np.broadcast_shapes(node.required_spec(0).shape, target)
    except ValueError as e:
        raise ModelError(node.name, f"Expand {node.required_spec(0).shape} to {target}: {e}") from e
    return single("expand", node, inputs=node.inputs[:1], shape=tuple(shape))


def lower_tile(node: Node) -> Lowered:
    """ONNX Tile as reshape (1, d0, 1, d1, ...) -> expand (r0, d0, r1, d1, ...) -> reshape."""
    x, reps = node.required_spec(0).shape, node.required_ints(1, "repeats")
    if len(reps) != len(x) or min(reps, default=0) < 0:
        raise ModelError(node.name, f"Tile repeats {reps} for shape {x}")
    lifted = tuple(v for d in x for v in (1, d))
    grown = tuple(v for r, d in zip(reps, x) for v in (r, d))
    a, b, out = f"{node.outputs[0]}.lifted", f"{node.outputs[0]}.grown", node.outputs[0]
    layers = (
        Layer(f"{node.name}.lift", "reshape", (node.inputs[0],), (a,), frozen_attrs(
            {"shape": lifted})),
        Layer(f"{node.name}.expand", "expand", (a,), (b,), frozen_attrs({"shape": grown})),
        Layer(node.name, "reshape", (b,), (out,), frozen_attrs(
            {"shape": tuple(r * d for r, d in zip(reps, x))})),
    )
    return Lowered(layers=layers)


LOWER: dict[str, LowerRule] = {
    "Reshape": lower_reshape, "Flatten": lower_flatten, "Squeeze": lower_squeeze,
    "Unsqueeze": lower_unsqueeze, "Identity": lower_identity, "Transpose": lower_transpose,
    "Concat": lower_concat, "Split": lower_split, "Slice": lower_slice,
    "Expand": lower_expand, "Tile": lower_tile,
}
