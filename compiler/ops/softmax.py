"""softmax op family: Softmax and LogSoftmax along one axis (ONNX opset-13 semantics; the
frontend upgrades older models, whose softmax flattened the trailing axes, before lowering).

Layer convention: inputs (x,), attrs axis (non-negative), log (bool, LogSoftmax).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from compiler.errors import ModelError
from compiler.ir import Facts, Spec
from compiler.ops.opdef import Lowered, LowerRule, Node, OpDef, single

Array = np.ndarray

# Streaming ops per element: max, subtract, exp, sum, divide (or log + subtract).
_OPS_PER_ELEMENT = 5


def _shape(specs: Sequence[Spec | None], *, axis: int, log: bool) -> tuple[Spec, ...]:
    x = specs[0]
    assert x is not None
    if not 0 <= axis < len(x.shape):
        raise ValueError(f"softmax axis {axis} out of range for rank {len(x.shape)}")
    return (x,)


def _forward(x: Array, *, axis: int, log: bool) -> tuple[Array]:
    shifted = x - np.max(x, axis=axis, keepdims=True)   # exp never overflows
    e = np.exp(shifted)
    total = np.sum(e, axis=axis, keepdims=True)
    y = shifted - np.log(total) if log else e / total
    return (y.astype(x.dtype, copy=False),)


def _vjp(gs: Sequence[Array | None], xs: Sequence[Array | None], ys: Sequence[Array], *,
         axis: int, log: bool) -> tuple[Array | None]:
    y = ys[0]
    g = gs[0] if gs[0] is not None else np.zeros_like(y)
    if log:
        gx = g - np.exp(y) * np.sum(g, axis=axis, keepdims=True)
    else:
        gx = y * (g - np.sum(g * y, axis=axis, keepdims=True))
    assert xs[0] is not None
    return (gx.astype(xs[0].dtype, copy=False),)


def _facts(specs_in: Sequence[Spec | None], specs_out: Sequence[Spec], *, axis: int,
           log: bool) -> Facts:
    size = specs_out[0].size  # one exp per element (log-softmax: its log is one per row)
    return Facts(ops=size * _OPS_PER_ELEMENT, transcendentals=size)


def _rule(log: bool) -> LowerRule:
    def rule(node: Node, axis: int = -1) -> Lowered:
        rank = len(node.required_spec(0).shape)
        if not -rank <= axis < rank:
            raise ModelError(node.name, f"{node.op_type} axis {axis} out of range for rank {rank}")
        return single("softmax", node, axis=axis % rank, log=log)
    rule.__doc__ = f"ONNX {'LogSoftmax' if log else 'Softmax'} (opset >= 13) -> softmax."
    return rule


OPS: tuple[OpDef, ...] = (
    OpDef("softmax", shape=_shape, forward=_forward, vjp=_vjp, facts=_facts),
)
LOWER: dict[str, LowerRule] = {"Softmax": _rule(False), "LogSoftmax": _rule(True)}
