"""activation op family: unary elementwise functions, and Cast.

Kind "activation" has one input; its `fn` attribute picks the function and the remaining
attributes are that function's parameters (clip: min, max; leaky_relu/elu: alpha;
hard_sigmoid: alpha, beta; selu: alpha, gamma; gelu: approximate; silu: alpha, where
silu(x) = x * sigmoid(alpha * x)). Each function has a forward and a derivative dy/dx given
(x, y); the VJP is g * dy/dx. Kind "cast" converts dtypes (attr `to`, a numpy dtype name).

ONNX Dropout lowers to "identity" (inference: the input passes through, the mask is all ones).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from compiler.errors import ModelError
from compiler.ir import Facts, Layer, Spec, frozen_attrs
from compiler.ops.opdef import Lowered, LowerRule, Node, OpDef, single

Array = np.ndarray
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_CUBIC = 0.044715  # tanh approximation of GELU (Hendrycks & Gimpel 2016)
_SELU_ALPHA = 1.67326319217681884765625  # ONNX Selu defaults
_SELU_GAMMA = 1.05070102214813232421875


if TYPE_CHECKING:
    from scipy.special import erf as _erf
    from scipy.special import expit as _expit
else:  # scipy.special costs ~0.2 s to import, which `simulate` never needs: on first use

    def _erf(x: Array) -> Array:
        from scipy.special import erf

        return erf(x)

    def _expit(x: Array) -> Array:
        from scipy.special import expit

        return expit(x)


def _clip(x: Array, min: float = -math.inf, max: float = math.inf) -> Array:
    # bounds as x's own scalar type so integer tensors stay integer; min first, then max,
    # so that min > max gives max everywhere, as ONNX specifies
    out = x if min == -math.inf else np.maximum(x, x.dtype.type(min))
    return out if max == math.inf else np.minimum(out, x.dtype.type(max))


def _gelu(x: Array, approximate: str = "none") -> Array:
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(_SQRT_2_OVER_PI * (x + _GELU_CUBIC * x**3)))
    return 0.5 * x * (1 + _erf(x / math.sqrt(2.0)))


def _d_gelu(x: Array, y: Array, approximate: str = "none") -> Array:
    if approximate == "tanh":
        t = np.tanh(_SQRT_2_OVER_PI * (x + _GELU_CUBIC * x**3))
        du = _SQRT_2_OVER_PI * (1 + 3 * _GELU_CUBIC * x**2)
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du
    return 0.5 * (1 + _erf(x / math.sqrt(2.0))) + x * np.exp(-0.5 * x * x) / math.sqrt(
        2 * math.pi)


def _elu(x: Array, alpha: float = 1.0) -> Array:
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))  # min: no overflow off-branch


def _selu(x: Array, alpha: float = _SELU_ALPHA, gamma: float = _SELU_GAMMA) -> Array:
    return gamma * _elu(x, alpha)


def _d_elu(x: Array, y: Array, alpha: float = 1.0) -> Array:
    return np.where(x > 0, 1, alpha * np.exp(np.minimum(x, 0)))


def _d_selu(x: Array, y: Array, alpha: float = _SELU_ALPHA, gamma: float = _SELU_GAMMA) -> Array:
    return gamma * _d_elu(x, y, alpha)


def _silu(x: Array, alpha: float = 1.0) -> Array:
    return x * _expit(alpha * x)


def _d_silu(x: Array, y: Array, alpha: float = 1.0) -> Array:
    s = _expit(alpha * x)
    return s + alpha * x * s * (1 - s)


def _d_hard_sigmoid(x: Array, y: Array, alpha: float = 0.2, beta: float = 0.5) -> Array:
    v = alpha * x + beta
    return alpha * ((v > 0) & (v < 1))


def _threshold(x: Array, threshold: float = 0.0, center: float = 0.0) -> Array:
    # activation sparsification (compiler.passes.sparsify): values within `threshold` of
    # `center` become `center`, in x's own dtype, as the emitted Where(Abs(x - c) < t, c, x)
    c, t = x.dtype.type(center), x.dtype.type(threshold)
    return np.where(np.abs(x - c) < t, c, x)


class _Fn(NamedTuple):
    forward: Callable[..., Array]       # (x, **params) -> y
    derivative: Callable[..., Array]    # (x, y, **params) -> dy/dx
    ops: int                            # rough primitive operations per element, for facts
    # exp / log / tanh / erf evaluations per element (Facts.transcendentals); the hard_*
    # functions are clamps of an affine map, sqrt and reciprocal single instructions
    transcendentals: int = 0
    function_nodes: int = 1  # nodes of the ONNX function body (Facts.function_nodes)


_FNS: dict[str, _Fn] = {
    "relu": _Fn(lambda x: np.maximum(x, x.dtype.type(0)), lambda x, y: x > 0, 1),
    "clip": _Fn(_clip, lambda x, y, min=-math.inf, max=math.inf: (x > min) & (x < max), 2),
    "leaky_relu": _Fn(lambda x, alpha=0.01: np.where(x < 0, alpha * x, x),
                      lambda x, y, alpha=0.01: np.where(x > 0, 1, alpha), 2),
    "sigmoid": _Fn(_expit, lambda x, y: y * (1 - y), 4, 1),
    "tanh": _Fn(np.tanh, lambda x, y: 1 - y * y, 5, 1),
    "hard_sigmoid": _Fn(lambda x, alpha=0.2, beta=0.5: np.clip(alpha * x + beta, 0, 1),
                        _d_hard_sigmoid, 4),
    # ONNX HardSwish-14 is a function: HardSigmoid(alpha=1/6, beta=0.5), then Mul by x
    "hard_swish": _Fn(lambda x: x * np.clip(x / 6 + 0.5, 0, 1),
                      lambda x, y: np.where(x < -3, 0, np.where(x > 3, 1, x / 3 + 0.5)), 5,
                      function_nodes=2),
    "gelu": _Fn(_gelu, _d_gelu, 8, 1),
    "erf": _Fn(_erf, lambda x, y: 2 / math.sqrt(math.pi) * np.exp(-x * x), 5, 1),
    "silu": _Fn(_silu, _d_silu, 5, 1),
    "sqrt": _Fn(np.sqrt, lambda x, y: 0.5 / y, 1),
    "exp": _Fn(np.exp, lambda x, y: y, 1, 1),
    "log": _Fn(np.log, lambda x, y: 1 / x, 1, 1),
    "neg": _Fn(np.negative, lambda x, y: np.full_like(x, -1), 1),
    "abs": _Fn(np.abs, lambda x, y: np.sign(x), 1),
    "reciprocal": _Fn(np.reciprocal, lambda x, y: -y * y, 1),
    # numpy's stubs type logaddexp of an untyped x as a scalar; on arrays it is an array
    "softplus": _Fn(lambda x: np.logaddexp(0, x), lambda x, y: _expit(x), 3, 2),  # type: ignore[arg-type,return-value]
    "elu": _Fn(_elu, _d_elu, 3, 1),
    "selu": _Fn(_selu, _d_selu, 4, 1),
    "softsign": _Fn(lambda x: x / (1 + np.abs(x)), lambda x, y: 1 / (1 + np.abs(x)) ** 2, 3),
    "threshold": _Fn(_threshold, lambda x, y, threshold=0.0, center=0.0:
                     np.abs(x - center) >= threshold, 4),
}


def _forward(x: Array, *, fn: str, **params: Any) -> tuple[Array]:
    return (np.asarray(_FNS[fn].forward(x, **params)).astype(x.dtype, copy=False),)


def _shape(specs: Sequence[Spec], **attrs: Any) -> tuple[Spec]:
    return (specs[0],)


def _vjp(gs: Sequence[Array | None], xs: Sequence[Array], ys: Sequence[Array], *, fn: str,
         **params: Any) -> tuple[Array | None]:
    (g,), (x,), (y,) = gs, xs, ys
    if g is None or x.dtype.kind != "f":
        return (None,)
    return ((g * _FNS[fn].derivative(x, y, **params)).astype(x.dtype, copy=False),)


def _facts(specs_in: Sequence[Spec], specs_out: Sequence[Spec], *, fn: str,
           **params: Any) -> Facts:
    size = specs_out[0].size
    return Facts(ops=size * _FNS[fn].ops, transcendentals=size * _FNS[fn].transcendentals,
                 function_nodes=_FNS[fn].function_nodes)


# --- cast ---

def _cast_forward(x: Array, *, to: str) -> tuple[Array]:
    return (x.astype(to),)


def _cast_shape(specs: Sequence[Spec], *, to: str) -> tuple[Spec]:
    return (Spec(specs[0].shape, to),)


def _cast_vjp(gs: Sequence[Array | None], xs: Sequence[Array], ys: Sequence[Array], *,
              to: str) -> tuple[Array | None]:
    (g,), (x,) = gs, xs
    floats = x.dtype.kind == "f" and np.dtype(to).kind == "f"
    return (g.astype(x.dtype) if floats and g is not None else None,)


def _cast_facts(specs_in: Sequence[Spec], specs_out: Sequence[Spec], *, to: str) -> Facts:
    return Facts(ops=specs_out[0].size)


OPS: tuple[OpDef, ...] = (
    OpDef("activation", shape=_shape, forward=_forward, vjp=_vjp, facts=_facts),
    OpDef("cast", shape=_cast_shape, forward=_cast_forward, vjp=_cast_vjp, facts=_cast_facts),
)


# --- lowering ---

def _float_input(node: Node) -> None:
    if np.dtype(node.required_spec(0).dtype).kind != "f":
        raise ModelError(node.name, f"{node.op_type} needs a float input, "
                                    f"got {node.required_spec(0).dtype}")


def _unary(fn: str, floats_only: bool = True) -> LowerRule:
    """The lowering rule of an attribute-less ONNX op that maps onto activation `fn`."""
    def rule(node: Node) -> Lowered:
        if floats_only:
            _float_input(node)
        return single("activation", node, fn=fn)
    rule.__name__ = f"lower_{fn}"
    return rule


def lower_leaky_relu(node: Node, alpha: float = 0.01) -> Lowered:
    """ONNX LeakyRelu."""
    _float_input(node)
    return single("activation", node, fn="leaky_relu", alpha=float(alpha))


def lower_prelu(node: Node) -> Lowered:
    """ONNX PRelu as eltwise layers: max(x, slope * x) when every slope is a constant <= 1,
    min(x, slope * x) when every one is >= 1 (each equals PRelu then, whatever the sign of
    x), else where(x < 0, slope * x, x)."""
    _float_input(node)
    x, out, slope = node.inputs[0], node.outputs[0], node.const(1)
    scaled = f"{out}.scaled"
    mul = Layer(f"{node.name}.mul", "eltwise", (x, node.inputs[1]), (scaled,),
                frozen_attrs({"fn": "mul"}))
    for fn, holds in (("max", np.less_equal), ("min", np.greater_equal)):
        if slope is not None and bool(np.all(holds(slope, 1))):
            top = Layer(f"{node.name}.{fn}", "eltwise", (x, scaled), (out,),
                        frozen_attrs({"fn": fn}))
            return Lowered(layers=(mul, top))
    zero, neg = f"{out}.zero", f"{out}.negative"
    less = Layer(f"{node.name}.less", "eltwise", (x, zero), (neg,), frozen_attrs({"fn": "less"}))
    pick = Layer(f"{node.name}.where", "eltwise", (neg, scaled, x), (out,),
                 frozen_attrs({"fn": "where"}))
    zeros = {zero: np.zeros((), node.required_spec(0).dtype)}
    return Lowered(layers=(less, mul, pick), consts=zeros)


def lower_hard_sigmoid(node: Node, alpha: float = 0.2, beta: float = 0.5) -> Lowered:
    """ONNX HardSigmoid: max(0, min(1, alpha * x + beta))."""
    _float_input(node)
    return single("activation", node, fn="hard_sigmoid", alpha=float(alpha), beta=float(beta))


def lower_elu(node: Node, alpha: float = 1.0) -> Lowered:
    """ONNX Elu."""
    _float_input(node)
    return single("activation", node, fn="elu", alpha=float(alpha))


def lower_selu(node: Node, alpha: float = _SELU_ALPHA, gamma: float = _SELU_GAMMA) -> Lowered:
    """ONNX Selu."""
    _float_input(node)
    return single("activation", node, fn="selu", alpha=float(alpha), gamma=float(gamma))


def lower_gelu(node: Node, approximate: str = "none") -> Lowered:
    """ONNX Gelu (opset 20): exact (erf) or tanh approximation."""
    _float_input(node)
    if approximate not in ("none", "tanh"):
        raise ModelError(node.name, f"Gelu approximate={approximate!r} (want 'none' or 'tanh')")
    return single("activation", node, fn="gelu", approximate=approximate)


def lower_swish(node: Node, alpha: float = 1.0) -> Lowered:
    """ONNX Swish (opset 24): x * sigmoid(alpha * x), edgesim's silu."""
    _float_input(node)
    return single("activation", node, fn="silu", alpha=float(alpha))


# --- Clip: bounds are attributes before opset 11 and optional inputs from opset 11 ---

def _const_bound(node: Node, i: int, attr: float | None, default: float) -> float:
    value = node.const(i) if node.input(i) else attr
    return default if value is None else float(np.asarray(value).reshape(()))


def _clip_as_eltwise(node: Node) -> Lowered:
    """Clip with a bound computed at run time: max(x, lo) then min(., hi) as eltwise layers."""
    layers, x = [], node.inputs[0]
    steps = [(fn, node.input(i)) for fn, i in (("max", 1), ("min", 2)) if node.input(i)]
    for k, (fn, bound) in enumerate(steps):
        out = node.outputs[0] if k == len(steps) - 1 else f"{node.outputs[0]}.{fn}"
        layers.append(Layer(f"{node.name}.{fn}", "eltwise", (x, bound), (out,),
                            frozen_attrs({"fn": fn})))
        x = out
    return Lowered(layers=tuple(layers))


def lower_clip(node: Node, min: float | None = None, max: float | None = None) -> Lowered:
    """ONNX Clip; constant bounds become attributes, run-time bounds eltwise max/min."""
    if any(node.input(i) and node.const(i) is None for i in (1, 2)):
        return _clip_as_eltwise(node)
    lo = _const_bound(node, 1, min, -math.inf)
    hi = _const_bound(node, 2, max, math.inf)
    x = node.inputs[:1]
    if lo == -math.inf and hi == math.inf:
        return single("identity", node, inputs=x)
    return single("activation", node, inputs=x, fn="clip", min=lo, max=hi)


# --- Dropout (inference only) and Cast ---

def lower_dropout(node: Node, ratio: float = 0.5, seed: int | None = None) -> Lowered:
    """ONNX Dropout at inference: identity, and an all-true mask if the mask is asked for."""
    training = node.const(2) if node.input(2) else np.array(False)
    rate = node.const(1) if node.input(1) else np.array(ratio)
    if training is None or (np.any(training) and (rate is None or np.any(rate != 0))):
        raise ModelError(node.name, "Dropout in training mode is random; edgesim needs "
                                    "training_mode absent or constant false")
    lowered = single("identity", node, inputs=node.inputs[:1], outputs=node.outputs[:1])
    if len(node.outputs) > 1 and node.outputs[1]:
        mask = np.ones(node.required_spec(0).shape, dtype=bool)
        return Lowered(layers=lowered.layers, consts={node.outputs[1]: mask})
    return lowered


# ONNX TensorProto data types that numpy represents exactly (bfloat16, float8, int4 are not)
_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32",
                7: "int64", 9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64"}


def _lower_cast_to(node: Node, to: str) -> Lowered:
    source = node.required_spec(0).dtype
    for dtype, end in ((source, "from"), (to, "to")):
        if dtype not in _ONNX_DTYPES.values():
            raise ModelError(node.name, f"{node.op_type} {end} {dtype} is not supported")
    if source == to:  # a no-op cast (exporters emit many): keep the tensor as it is
        return single("identity", node, inputs=node.inputs[:1])
    return single("cast", node, inputs=node.inputs[:1], to=to)


def lower_cast(node: Node, to: int = 1, saturate: int = 1, round_mode: str = "up") -> Lowered:
    """ONNX Cast to a numpy-representable type (saturate/round_mode only matter for float8)."""
    if to not in _ONNX_DTYPES:
        raise ModelError(node.name, f"Cast to ONNX data type {to} is not supported "
                                    f"(supported: {sorted(_ONNX_DTYPES)})")
    return _lower_cast_to(node, _ONNX_DTYPES[to])


def lower_cast_like(node: Node, saturate: int = 1, round_mode: str = "up") -> Lowered:
    """ONNX CastLike: cast input 0 to input 1's type."""
    return _lower_cast_to(node, node.required_spec(1).dtype)


LOWER: dict[str, LowerRule] = {
    "Relu": _unary("relu", floats_only=False), "Clip": lower_clip,
    "LeakyRelu": lower_leaky_relu, "Sigmoid": _unary("sigmoid"), "Tanh": _unary("tanh"),
    "PRelu": lower_prelu,
    "HardSigmoid": lower_hard_sigmoid, "HardSwish": _unary("hard_swish"), "Gelu": lower_gelu,
    "Erf": _unary("erf"), "Sqrt": _unary("sqrt"), "Exp": _unary("exp"), "Log": _unary("log"),
    "Neg": _unary("neg", floats_only=False), "Abs": _unary("abs", floats_only=False),
    "Reciprocal": _unary("reciprocal"), "Softplus": _unary("softplus"), "Elu": lower_elu,
    "Selu": lower_selu, "Softsign": _unary("softsign"), "Swish": lower_swish,
    "Dropout": lower_dropout, "Cast": lower_cast, "CastLike": lower_cast_like,
}
