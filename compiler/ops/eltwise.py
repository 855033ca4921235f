"""eltwise op family: elementwise arithmetic, comparisons and Where, with numpy broadcasting.

One layer kind, "eltwise", whose `fn` attribute picks the operation:

- binary: "sub", "div", "pow", "mul", comparisons "equal", "less", "less_equal", "greater",
  "greater_equal" (bool output, no cotangents);
- variadic (one or more inputs, ONNX Sum/Max/Min/Mean): "add", "max", "min", "mean";
- "where": inputs (cond, x, y), cond bool;
- logic on bool tensors (ONNX And/Or/Xor, bool output): "and", "or", "xor"; unary "not".

Integer tensors compute in integer arithmetic as ONNX does: Div truncates toward zero, Pow
returns the base's dtype.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np

from compiler.errors import ModelError
from compiler.ir import Facts, Spec
from compiler.ops.opdef import Lowered, LowerRule, Node, OpDef, single, unbroadcast

Array = np.ndarray


def _div(a: Array, b: Array) -> Array:
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        # ONNX integer Div truncates toward zero; numpy's // floors, so step back where needed.
        q, r = np.divmod(a, b)
        return q + ((r != 0) & ((a < 0) != (b < 0))).astype(q.dtype)
    return np.divide(a, b)


def _pow(a: Array, b: Array) -> Array:
    return np.power(a, b).astype(a.dtype, copy=False)  # ONNX Pow: output has the base's type


_BINARY: dict[str, Callable[[Array, Array], Array]] = {
    "sub": np.subtract, "mul": np.multiply, "div": _div, "pow": _pow,
    "equal": np.equal, "less": np.less, "less_equal": np.less_equal,
    "greater": np.greater, "greater_equal": np.greater_equal,
    "and": np.logical_and, "or": np.logical_or, "xor": np.logical_xor,
}
_VARIADIC: dict[str, Callable[[Array, Array], Array]] = {
    "add": np.add, "max": np.maximum, "min": np.minimum, "mean": np.add,
}
_COMPARE = frozenset({"equal", "less", "less_equal", "greater", "greater_equal",
                      "and", "or", "xor", "not"})  # bool output, no cotangents


def _compute(*xs: Array, fn: str) -> Array:
    if fn == "where":  # the one ternary op; a table entry would need its own arity anyway
        return np.where(*xs)
    if fn == "not":  # the one unary op
        return np.logical_not(xs[0])
    if fn in _BINARY:
        return _BINARY[fn](*xs)
    out = functools.reduce(_VARIADIC[fn], xs[1:], xs[0])
    return (out / len(xs)).astype(xs[0].dtype, copy=False) if fn == "mean" else out


def _forward(*xs: Array, fn: str) -> tuple[Array]:
    out = _compute(*xs, fn=fn)
    # ufuncs give numpy scalars for 0-d operands, and one-input Max/Sum return the input itself
    return (np.array(out) if len(xs) == 1 or not isinstance(out, np.ndarray) else out,)


def _shape(specs: Sequence[Spec], *, fn: str) -> tuple[Spec, ...]:
    shape = np.broadcast_shapes(*(s.shape for s in specs))
    if fn in _COMPARE:
        return (Spec(shape, "bool"),)
    return (Spec(shape, specs[1 if fn == "where" else 0].dtype),)


# --- vector-Jacobian products: raw cotangents at the output shape, unbroadcast afterwards ---

def _vjp_pow(g: Array, xs: Sequence[Array], y: Array) -> tuple[Array, Array]:
    a, b = xs
    log_a = np.log(np.where(a > 0, a, 1))  # d/db a^b = a^b ln a, defined for a > 0 only
    return g * b * np.power(a, b - 1), g * y * log_a


def _vjp_extremum(g: Array, xs: Sequence[Array], y: Array) -> tuple[Array, ...]:
    taken = np.zeros(y.shape, dtype=bool)
    out = []
    for x in xs:  # the first input that attains the extremum gets the whole cotangent
        win = (x == y) & ~taken
        taken |= win
        out.append(g * win)
    return tuple(out)


_RAW_VJP: dict[str, Callable[[Array, Sequence[Array], Array], tuple[Array | None, ...]]] = {
    "add": lambda g, xs, y: (g,) * len(xs),
    "mean": lambda g, xs, y: (g / len(xs),) * len(xs),
    "sub": lambda g, xs, y: (g, -g),
    "mul": lambda g, xs, y: (g * xs[1], g * xs[0]),
    "div": lambda g, xs, y: (g / xs[1], -g * y / xs[1]),
    "pow": _vjp_pow,
    "max": _vjp_extremum,
    "min": _vjp_extremum,
    "where": lambda g, xs, y: (None, np.where(xs[0], g, 0), np.where(xs[0], 0, g)),
}


def _vjp(gs: Sequence[Array | None], xs: Sequence[Array], ys: Sequence[Array], *,
         fn: str) -> tuple[Array | None, ...]:
    g, y = gs[0], ys[0]
    if g is None or fn in _COMPARE or y.dtype.kind != "f":
        return (None,) * len(xs)
    raw = _RAW_VJP[fn](g, xs, y)
    return tuple(None if r is None or x.dtype.kind != "f"
                 else unbroadcast(r, x.shape).astype(x.dtype, copy=False)
                 for r, x in zip(raw, xs))


# input i's raw cotangent alone, for the arithmetic whose inputs' cotangents are independent
_ONE_VJP: dict[str, Callable[[Array, Sequence[Array], Array, int], Array]] = {
    "add": lambda g, xs, y, i: g,
    "mean": lambda g, xs, y, i: g / len(xs),
    "sub": lambda g, xs, y, i: g if i == 0 else -g,
    "mul": lambda g, xs, y, i: g * xs[1 - i],
    "div": lambda g, xs, y, i: g / xs[1] if i == 0 else -g * y / xs[1],
}


def _vjp_needed(gs: Sequence[Array | None], xs: Sequence[Array], ys: Sequence[Array],
                need: Sequence[bool], *, fn: str) -> tuple[Array | None, ...]:
    """`_vjp` for the inputs flagged in `need` only: a constant operand's cotangent (a
    multiply and a reduction over the whole output) is not computed when nobody reads it."""
    g, y = gs[0], ys[0]
    if fn not in _ONE_VJP:
        return tuple(v if n else None for v, n in zip(_vjp(gs, xs, ys, fn=fn), need))
    if g is None or y.dtype.kind != "f":
        return (None,) * len(xs)
    return tuple(unbroadcast(_ONE_VJP[fn](g, xs, y, i), x.shape).astype(x.dtype, copy=False)
                 if n and x.dtype.kind == "f" else None
                 for i, (x, n) in enumerate(zip(xs, need)))


def _facts(specs_in: Sequence[Spec], specs_out: Sequence[Spec], *, fn: str) -> Facts:
    n = len(specs_in)
    # per output element: n-1 combines for variadic ops (+1 divide for mean), else one op
    per_element = n if fn == "mean" else (n - 1 if fn in _VARIADIC else 1)
    return Facts(ops=specs_out[0].size * per_element)


OPS: tuple[OpDef, ...] = (
    OpDef("eltwise", shape=_shape, forward=_forward, vjp=_vjp, facts=_facts,
          vjp_needed=_vjp_needed),
)


# --- lowering ---

_NUMERIC_KINDS = "biuf"


def _check_numeric(node: Node) -> None:
    for i, name in enumerate(node.inputs):
        dtype = np.dtype(node.required_spec(i).dtype) if name else None
        if dtype is not None and dtype.kind not in _NUMERIC_KINDS:
            raise ModelError(node.name, f"{node.op_type} on {dtype} tensor {name!r} is not "
                                        "supported (numeric and bool tensors only)")


def _lower_as(fn: str) -> LowerRule:
    """The lowering rule of an attribute-less ONNX op that maps onto eltwise `fn`."""
    def rule(node: Node) -> Lowered:
        _check_numeric(node)
        return single("eltwise", node, fn=fn)
    rule.__name__ = f"lower_{fn}"
    return rule


def lower_where(node: Node) -> Lowered:
    """ONNX Where(cond, x, y); cond must be bool."""
    _check_numeric(node)
    if node.required_spec(0).dtype != "bool":
        raise ModelError(node.name,
                         f"Where condition must be bool, got {node.required_spec(0).dtype}")
    return single("eltwise", node, fn="where")


def _lower_logic(fn: str) -> LowerRule:
    """The lowering rule of ONNX And/Or/Xor/Not: bool inputs only, as ONNX types them."""
    def rule(node: Node) -> Lowered:
        for i, name in enumerate(node.inputs):
            if node.required_spec(i).dtype != "bool":
                raise ModelError(node.name, f"{node.op_type} input {name!r} must be bool, got "
                                            f"{node.required_spec(i).dtype}")
        return single("eltwise", node, fn=fn)
    rule.__name__ = f"lower_{fn}"
    return rule


LOWER: dict[str, LowerRule] = {
    "Add": _lower_as("add"), "Sum": _lower_as("add"),
    "Sub": _lower_as("sub"), "Mul": _lower_as("mul"), "Div": _lower_as("div"),
    "Pow": _lower_as("pow"),
    "Max": _lower_as("max"), "Min": _lower_as("min"), "Mean": _lower_as("mean"),
    "Equal": _lower_as("equal"), "Less": _lower_as("less"), "Greater": _lower_as("greater"),
    "LessOrEqual": _lower_as("less_equal"), "GreaterOrEqual": _lower_as("greater_equal"),
    "Where": lower_where,
    "And": _lower_logic("and"), "Or": _lower_logic("or"), "Xor": _lower_logic("xor"),
    "Not": _lower_logic("not"),
}
