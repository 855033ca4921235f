"""gather op family: indexing (ONNX Gather, GatherElements) and the index arithmetic that
folds to constants (ONNX Shape, Size, ConstantOfShape, Range: static once shapes are known).

Kind "gather": inputs (data, indices), attrs axis (non-negative) and elements (bool). With
elements false it is ONNX Gather, `np.take(data, indices, axis)`, output shape
data[:axis] + indices + data[axis+1:]; with elements true it is ONNX GatherElements,
`np.take_along_axis`, output shape = indices'. Negative indices count from the end. The data
may be a constant table (a weight); the VJP scatter-adds into its cotangent, indices get None.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from compiler.errors import ModelError
from compiler.ir import MAX_TENSOR_ELEMS, Facts, Spec
from compiler.ops.opdef import Lowered, LowerRule, Node, OpDef, single

Array = np.ndarray


def _index_tuple(indices: Array, axis: int, elements: bool) -> tuple[Array | slice, ...]:
    """The numpy index that picks, from data, the gathered elements (in output order)."""
    if not elements:
        return (slice(None),) * axis + (indices,)
    grid: list[Array] = list(np.indices(indices.shape, sparse=True))
    grid[axis] = indices
    return tuple(grid)


def _forward(data: Array, indices: Array, *, axis: int, elements: bool = False) -> tuple[Array]:
    return (np.asarray(data[_index_tuple(indices, axis, elements)]),)  # 0-d: not a scalar


def _shape(specs: Sequence[Spec], *, axis: int, elements: bool = False) -> tuple[Spec]:
    data, indices = specs
    if elements:
        return (Spec(indices.shape, data.dtype),)
    return (Spec(data.shape[:axis] + indices.shape + data.shape[axis + 1:], data.dtype),)


def _vjp(gs: Sequence[Array | None], xs: Sequence[Array], ys: Sequence[Array], *, axis: int,
         elements: bool = False) -> tuple[Array | None, None]:
    (g,), (data, indices) = gs, xs
    if g is None or data.dtype.kind != "f":
        return None, None
    out = np.zeros_like(data)
    # repeated indices accumulate; a tuple index is valid, numpy's stubs list arrays only
    np.add.at(out, _index_tuple(indices, axis, elements), g)  # type: ignore[arg-type]
    return out, None


def _facts(specs_in: Sequence[Spec], specs_out: Sequence[Spec], **attrs: object) -> Facts:
    return Facts(ops=specs_out[0].size)  # one indexed load per output element


OPS: tuple[OpDef, ...] = (
    OpDef("gather", shape=_shape, forward=_forward, vjp=_vjp, facts=_facts),
)


# --- lowering ---

def _check(node: Node, axis: int) -> int:
    """Validate axis, index dtype and (when constant) index range; return the axis >= 0."""
    shape = node.required_spec(0).shape
    if not -len(shape) <= axis < len(shape):
        raise ModelError(node.name, f"{node.op_type} axis {axis} out of range for {shape}")
    axis %= len(shape)
    if node.required_spec(1).dtype not in ("int32", "int64"):
        raise ModelError(node.name, f"{node.op_type} indices must be int32/int64, "
                                    f"got {node.required_spec(1).dtype}")
    idx = node.const(1)
    n = shape[axis]
    if idx is not None and idx.size and (idx.min() < -n or idx.max() >= n):
        raise ModelError(node.name, f"{node.op_type} indices out of range [-{n}, {n - 1}]")
    return axis


def lower_gather(node: Node, axis: int = 0) -> Lowered:
    """ONNX Gather."""
    return single("gather", node, axis=_check(node, axis), elements=False)


def lower_gather_elements(node: Node, axis: int = 0) -> Lowered:
    """ONNX GatherElements (indices have data's rank)."""
    axis = _check(node, axis)
    data, indices = node.required_spec(0).shape, node.required_spec(1).shape
    if len(data) != len(indices) or any(
            i > d for k, (i, d) in enumerate(zip(indices, data)) if k != axis):
        raise ModelError(node.name, f"GatherElements indices {indices} do not fit data {data}")
    return single("gather", node, axis=axis, elements=True)


# --- shape arithmetic: values known at compile time, so the rules return constants ---

def _constants(node: Node, count: int) -> list[np.ndarray]:
    values = [node.const(i) for i in range(count)]
    if any(v is None for v in values):
        raise ModelError(node.name, f"{node.op_type} inputs {node.inputs[:count]} must be "
                                    "constant: edgesim needs static shapes")
    return [np.asarray(v) for v in values]


def lower_shape(node: Node, start: int = 0, end: int | None = None) -> Lowered:
    """ONNX Shape (start/end clamp like a Python slice)."""
    dims = node.required_spec(0).shape[start:end]
    return Lowered(consts={node.outputs[0]: np.array(dims, dtype=np.int64)})


def lower_size(node: Node) -> Lowered:
    """ONNX Size."""
    return Lowered(consts={node.outputs[0]: np.array(node.required_spec(0).size, dtype=np.int64)})


def lower_constant_of_shape(node: Node, value: np.ndarray | None = None) -> Lowered:
    """ONNX ConstantOfShape (default value: float32 zero)."""
    fill = np.zeros(1, dtype=np.float32) if value is None else np.asarray(value)
    (shape,) = _constants(node, 1)
    out = np.broadcast_to(fill.reshape(-1)[:1], tuple(int(d) for d in shape.reshape(-1)))  # 0 B
    return Lowered(consts={node.outputs[0]: out})


def lower_range(node: Node) -> Lowered:
    """ONNX Range with constant start, limit and delta."""
    start, limit, delta = (v.reshape(()) for v in _constants(node, 3))
    if delta == 0:
        raise ModelError(node.name, "Range delta is 0")
    count = max(math.ceil((float(limit) - float(start)) / float(delta)), 0)
    if count > MAX_TENSOR_ELEMS:  # bounded before arange allocates it
        raise ModelError(node.name, f"Range makes {count} elements; at most "
                                    f"{MAX_TENSOR_ELEMS} are accepted")
    # 0-d arrays keep their dtype in arange (numpy's stubs list Python scalars only)
    values = np.arange(start, limit, delta)  # type: ignore[call-overload]
    return Lowered(consts={node.outputs[0]: values.astype(start.dtype)})


LOWER: dict[str, LowerRule] = {
    "Gather": lower_gather, "GatherElements": lower_gather_elements, "Shape": lower_shape,
    "Size": lower_size, "ConstantOfShape": lower_constant_of_shape, "Range": lower_range,
}
