"""reduce op family: axis reductions (`reduce`).

attrs fn (see `_REDUCERS`), axes (non-negative tuple; () reduces nothing, which ONNX's
noop_with_empty_axes asks for), keepdims (bool), epsilon (inv_std only). Max/min route gradient
to the first arg-extremum.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from compiler.errors import ModelError
from compiler.ir import Facts, Spec
from compiler.ops.opdef import Lowered, LowerRule, Node, OpDef, single

Array = np.ndarray
Ints = tuple[int, ...]


def lowest(dtype: np.dtype) -> float | int | bool:
    """The identity of max for `dtype` (ONNX's result for an empty reduction)."""
    if dtype.kind == "b":
        return False
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


def highest(dtype: np.dtype) -> float | int | bool:
    """The identity of min for `dtype`."""
    if dtype.kind == "b":
        return True
    return np.inf if dtype.kind == "f" else np.iinfo(dtype).max


def _count(x: Array, axes: Ints) -> int:
    return int(np.prod([x.shape[a] for a in axes]))


def _log_sum_exp(x: Array, axes: Ints, keep: bool) -> Array:
    top = np.max(x, axis=axes, keepdims=True, initial=-np.inf)
    top = np.where(np.isfinite(top), top, 0.0)
    y = np.log(np.sum(np.exp(x - top), axis=axes, keepdims=True)) + top
    return y if keep else np.squeeze(y, axis=axes)


def _inv_std(x: Array, axes: Ints, keep: bool, epsilon: float) -> Array:
    var = np.var(x.astype(np.result_type(x.dtype, np.float32)), axis=axes, keepdims=keep)
    return 1.0 / np.sqrt(var + epsilon)


_FORWARD: dict[str, Callable[..., Array]] = {
    "sum": lambda x, a, k: np.sum(x, axis=a, keepdims=k),
    # numpy's stubs type mean / prod of an untyped x as scalars; here they are arrays
    "mean": lambda x, a, k: np.mean(x, axis=a, keepdims=k),  # type: ignore[dict-item,return-value]
    "max": lambda x, a, k: np.max(x, axis=a, keepdims=k, initial=lowest(x.dtype)),
    "min": lambda x, a, k: np.min(x, axis=a, keepdims=k, initial=highest(x.dtype)),
    "prod": lambda x, a, k: np.prod(x, axis=a, keepdims=k),  # type: ignore[dict-item,return-value]
    "l1": lambda x, a, k: np.sum(np.abs(x), axis=a, keepdims=k),
    "l2": lambda x, a, k: np.sqrt(np.sum(x * x, axis=a, keepdims=k)),
    "sum_square": lambda x, a, k: np.sum(x * x, axis=a, keepdims=k),
    "log_sum": lambda x, a, k: np.log(np.sum(x, axis=a, keepdims=k)),
    "log_sum_exp": _log_sum_exp,
}


def _to_end(x: Array, axes: Ints) -> Array:
    """Move the reduced axes last and flatten them into one."""
    rest = [i for i in range(x.ndim) if i not in axes]
    moved = np.transpose(x, rest + list(axes))
    return moved.reshape(moved.shape[:len(rest)] + (-1,))


def _from_end(flat: Array, shape: Sequence[int], axes: Ints) -> Array:
    """Inverse of `_to_end`."""
    rest = [i for i in range(len(shape)) if i not in axes]
    moved = flat.reshape([shape[i] for i in rest] + [shape[i] for i in axes])
    return np.transpose(moved, np.argsort(rest + list(axes)))


def _extreme_vjp(pick: Callable[..., Array]) -> Callable[..., Array]:
    def vjp(g: Array, x: Array, y: Array, axes: Ints) -> Array:
        flat = _to_end(x, axes)
        hot = np.arange(flat.shape[-1]) == pick(flat, axis=-1)[..., None]
        return g * _from_end(hot, x.shape, axes)
    return vjp


def _prod_vjp(g: Array, x: Array, y: Array, axes: Ints) -> Array:
    # Product of the other elements, exact with zeros: exclusive prefix times suffix products.
    flat = _to_end(x, axes)
    ones = np.ones(flat.shape[:-1] + (1,), dtype=flat.dtype)
    before = np.cumprod(np.concatenate([ones, flat[..., :-1]], axis=-1), axis=-1)
    after = np.cumprod(np.concatenate([ones, flat[..., :0:-1]], axis=-1), axis=-1)[..., ::-1]
    return g * _from_end(before * after, x.shape, axes)


def _inv_std_vjp(g: Array, x: Array, y: Array, axes: Ints) -> Array:
    centred = x - x.mean(axis=axes, keepdims=True)
    return -g * y ** 3 * centred / _count(x, axes)


# Cotangent of x given g and y in keepdims layout (the caller broadcasts it to x's shape).
_VJP: dict[str, Callable[..., Array]] = {
    "sum": lambda g, x, y, a: g,
    "mean": lambda g, x, y, a: g / _count(x, a),
    "max": _extreme_vjp(np.argmax),
    "min": _extreme_vjp(np.argmin),
    "prod": _prod_vjp,
    "l1": lambda g, x, y, a: g * np.sign(x),
    "l2": lambda g, x, y, a: g * np.divide(x, y, out=np.zeros_like(x), where=y != 0),
    "sum_square": lambda g, x, y, a: 2.0 * g * x,
    "log_sum": lambda g, x, y, a: g * np.exp(-y),
    "log_sum_exp": lambda g, x, y, a: g * np.exp(x - y),
    "inv_std": _inv_std_vjp,
}


def _reduce_forward(x: Array, *, fn: str, axes: Ints, keepdims: bool, epsilon: float = 0.0
                    ) -> tuple[Array]:
    if fn == "inv_std":
        return (np.asarray(_inv_std(x, axes, keepdims, epsilon), dtype=x.dtype),)
    with np.errstate(divide="ignore"):   # log(0) = -inf is ONNX's empty log-sum
        return (np.asarray(_FORWARD[fn](x, axes, keepdims), dtype=x.dtype),)


def _reduce_vjp(gs: Sequence[Array | None], xs: Sequence[Array | None], ys: Sequence[Array],
                *, fn: str, axes: Ints, keepdims: bool, epsilon: float = 0.0
                ) -> tuple[Array | None]:
    x, y = xs[0], ys[0]
    assert x is not None
    if x.dtype.kind != "f":
        return (None,)
    g = gs[0] if gs[0] is not None else np.zeros_like(y)
    if not keepdims:
        g, y = np.expand_dims(g, axes), np.expand_dims(y, axes)
    return (np.array(np.broadcast_to(_VJP[fn](g, x, y, axes), x.shape), dtype=x.dtype),)


def _reduce_shape(specs: Sequence[Spec | None], *, fn: str, axes: Ints, keepdims: bool,
                  epsilon: float = 0.0) -> tuple[Spec, ...]:
    x = specs[0]
    assert x is not None
    if fn not in _VJP or any(not 0 <= a < len(x.shape) for a in axes):
        raise ValueError(f"reduce {fn} over axes {axes} of rank {len(x.shape)}")
    kept = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    out = kept if keepdims else tuple(d for i, d in enumerate(x.shape) if i not in axes)
    return (Spec(out, x.dtype),)


def _reduce_facts(specs_in: Sequence[Spec | None], specs_out: Sequence[Spec], **attrs: object
                  ) -> Facts:
    assert specs_in[0] is not None
    return Facts(ops=specs_in[0].size)  # one accumulate per input element


# --- lowering -----------------------------------------------------------------------------------


def _reduce_axes(node: Node, axes: Sequence[int] | None, noop: int) -> Ints:
    """Reduced axes from the attribute (opset < 18) or the constant second input."""
    rank = len(node.required_spec(0).shape)
    if node.input(1):
        value = node.const(1)
        if value is None:
            raise ModelError(node.name, f"{node.op_type} axes input must be constant")
        axes = [int(a) for a in np.asarray(value).reshape(-1)]
    if not axes:
        return () if noop else tuple(range(rank))
    if any(not -rank <= a < rank for a in axes):
        raise ModelError(node.name, f"axes {tuple(axes)} out of range for rank {rank}")
    return tuple(sorted({a % rank for a in axes}))


def _reduce_rule(fn: str) -> LowerRule:
    def rule(node: Node, axes: Sequence[int] | None = None, keepdims: int = 1,
             noop_with_empty_axes: int = 0) -> Lowered:
        return single("reduce", node, inputs=node.inputs[:1], fn=fn,
                      axes=_reduce_axes(node, axes, noop_with_empty_axes),
                      keepdims=bool(keepdims))
    rule.__doc__ = f"ONNX Reduce* -> reduce({fn})."
    return rule


OPS: tuple[OpDef, ...] = (
    OpDef("reduce", shape=_reduce_shape, forward=_reduce_forward, vjp=_reduce_vjp,
          facts=_reduce_facts),
)
_REDUCERS = {"ReduceSum": "sum", "ReduceMean": "mean", "ReduceMax": "max", "ReduceMin": "min",
             "ReduceProd": "prod", "ReduceL1": "l1", "ReduceL2": "l2",
             "ReduceSumSquare": "sum_square", "ReduceLogSum": "log_sum",
             "ReduceLogSumExp": "log_sum_exp"}
LOWER: dict[str, LowerRule] = {op: _reduce_rule(fn) for op, fn in _REDUCERS.items()}
