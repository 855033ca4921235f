"""LayerNorm and RMSNorm as exporters decompose them: num / sqrt(var + eps), scaled and
shifted (`match_layer_norm`, `match_rms_norm`; the machinery is `pattern_match`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from compiler.frontend.pattern_match import (
    Match,
    View,
    fused_match,
    is_kind,
    made_by,
    near,
    other_input,
    reduced_axes,
    shape_of,
    sole_user,
    suffix_axis,
    with_scalar,
)
from compiler.ir import Layer

# --- normalisations: num / sqrt(var + eps) --------------------------------------------------


@dataclass(frozen=True)
class Normalized:
    """`num * rsqrt(var + eps)` in one of its exported spellings."""

    num: str
    var: str
    eps: float
    layers: tuple[Layer, ...]


def _sqrt_of_var(v: View, tensor: str) -> tuple[str, float, tuple[Layer, ...]] | None:
    """`tensor = sqrt(var + eps)` -> (var, eps, layers)."""
    sqrt = made_by(v, tensor, "activation", "sqrt")
    add = sqrt and v.made.get(sqrt.inputs[0])
    found = with_scalar(v, add, "add")
    if found is None or found[1] < 0:
        return None
    assert add is not None and sqrt is not None  # _with_scalar matched add, made from sqrt
    return found[0], found[1], (add, sqrt)


def _rsqrt_of_var(v: View, tensor: str) -> tuple[str, float, tuple[Layer, ...]] | None:
    """`tensor = 1 / sqrt(var + eps)`: Reciprocal(Sqrt), Div(1, Sqrt) or Pow(-0.5)."""
    layer = v.made.get(tensor)
    if is_kind(layer, "activation", "reciprocal"):
        found = _sqrt_of_var(v, layer.inputs[0])
    elif (one := with_scalar(v, layer, "div", act_pos=1)) and near(one[1], 1.0):
        found = _sqrt_of_var(v, one[0])
    elif (power := with_scalar(v, layer, "pow", act_pos=0)) and near(power[1], -0.5):
        add = v.made.get(power[0])
        var_eps = with_scalar(v, add, "add")
        found = ((var_eps[0], var_eps[1], (add,))
                 if var_eps and var_eps[1] >= 0 and add is not None else None)
    else:
        found = None
    return (found[0], found[1], (*found[2], layer)) if found and layer is not None else None


def match_normalized(v: View, layer: Layer) -> Normalized | None:
    """Match `layer` as `num / sqrt(var + eps)` or `num * rsqrt(var + eps)`."""
    if not is_kind(layer, "eltwise") or len(layer.inputs) != 2:
        return None
    fn = layer.attrs.get("fn")
    a, b = layer.inputs
    tries = {"div": [(a, _sqrt_of_var, b)],
             "mul": [(a, _rsqrt_of_var, b), (b, _rsqrt_of_var, a)]}.get(fn or "", [])
    for num, spelling, den in tries:
        found = spelling(v, den) if num != den else None
        if found and shape_of(v, layer.outputs[0]) == shape_of(v, num):
            return Normalized(num, found[0], found[1], (*found[2], layer))
    return None


def _mean_of_square(v: View, tensor: str) -> tuple[str, tuple[int, ...], tuple[Layer, ...]] | None:
    """`tensor = mean(base ** 2, axes, keepdims)` with Pow(2) or Mul(base, base)."""
    mean = v.made.get(tensor)
    axes = reduced_axes(v, mean) if mean is not None else None
    square = mean and v.made.get(mean.inputs[0])
    if axes is None or square is None:
        return None
    assert mean is not None  # axes were read from it
    power = with_scalar(v, square, "pow", act_pos=0)
    if power is not None and near(power[1], 2.0):
        return power[0], axes, (square, mean)
    if is_kind(square, "eltwise", "mul") and square.inputs[0] == square.inputs[1]:
        return square.inputs[0], axes, (square, mean)
    return None


def _param(v: View, layer: Layer | None, fn: str, act: str,
           axis: int) -> tuple[str, np.ndarray] | None:
    """(name, value over the normalised dims) of a constant gamma/beta operand of `layer`."""
    other = other_input(layer, act) if is_kind(layer, "eltwise", fn) else None
    value = v.graph.weights.get(other) if other else None
    shape = shape_of(v, act)
    if (value is None or other is None or layer is None or value.ndim > len(shape)
            or shape_of(v, layer.outputs[0]) != shape):  # a value: `layer` matched `fn`
        return None
    full = value.reshape((1,) * (len(shape) - value.ndim) + value.shape)
    if any(d != 1 for d in full.shape[:axis]):
        return None  # gamma varies along a non-normalised axis: not a LayerNorm scale
    return other, np.broadcast_to(full.reshape(full.shape[axis:]), shape[axis:])


def _affine(v: View, tensor: str, axis: int, fns: Sequence[str]
            ) -> tuple[list[tuple[str, np.ndarray] | None], list[Layer]]:
    """Follow `tensor` through Mul gamma (then Add beta): the params found and their layers."""
    params: list[tuple[str, np.ndarray] | None] = []
    tail: list[Layer] = []
    for fn in fns:
        user = sole_user(v, tensor)
        param = _param(v, user, fn, tensor, axis)
        params.append(param)
        if param is not None and user is not None:  # a param: `user` matched
            tail.append(user)
            tensor = user.outputs[0]
    return params, tail


def _param_input(v: View, name: str, param: tuple[str, np.ndarray] | None, fill: float,
                 shape: tuple[int, ...], dtype: str, weights: dict[str, np.ndarray]) -> str:
    """Name of the fused layer's scale/bias input: the exporter's constant when it already has
    the normalised shape and dtype, else a new constant `name`."""
    if param is not None:
        own = v.graph.weights[param[0]]
        if own.shape == shape and own.dtype == np.dtype(dtype):
            return param[0]
    value = np.full(shape, fill, dtype) if param is None else param[1].astype(dtype)
    weights[name] = np.ascontiguousarray(value)
    return name


def _norm_match(v: View, core: Sequence[Layer], x: str, n: Normalized, axes: Sequence[int],
                fn: str, affine: Sequence[str]) -> Match | None:
    """Assemble a norm match: `core` layers plus the gamma (and beta) layers after them."""
    spec = v.graph.types[x]
    axis = suffix_axis(axes, len(spec.shape))
    if axis is None:
        return None
    params, tail = _affine(v, n.layers[-1].outputs[0], axis, affine)
    base = f"{n.layers[-1].name}.{fn}"
    weights: dict[str, np.ndarray] = {}
    scale = _param_input(v, f"{base}.scale", params[0], 1.0, spec.shape[axis:], spec.dtype, weights)
    inputs = [x, scale]
    if len(params) > 1 and params[1] is not None:
        inputs.append(_param_input(v, f"{base}.bias", params[1], 0.0, spec.shape[axis:],
                                   spec.dtype, weights))
    return fused_match(v, (*core, *n.layers, *tail), "norm", inputs, weights,
                  fn=fn, axis=axis, epsilon=n.eps)


def match_layer_norm(v: View, layer: Layer) -> Match | None:
    """(x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps) [* gamma [+ beta]] -> layer_norm."""
    n = match_normalized(v, layer)
    if n is None:
        return None
    square = _mean_of_square(v, n.var)
    centred = square and square[0] == n.num and made_by(v, n.num, "eltwise", "sub")
    if not centred or not square or len(centred.inputs) != 2:
        return None
    x, mu = centred.inputs
    mean = v.made.get(mu)
    if mean is None or mean.inputs[0] != x or reduced_axes(v, mean) != square[1]:
        return None
    return _norm_match(v, (mean, centred, *square[2]), x, n, square[1], "layer_norm",
                       ("mul", "add"))


def match_rms_norm(v: View, layer: Layer) -> Match | None:
    """x / sqrt(mean(x^2) + eps) [* gamma] (any rsqrt spelling) -> rms_norm."""
    n = match_normalized(v, layer)
    if n is None:
        return None
    square = _mean_of_square(v, n.var)
    if not square or square[0] != n.num:
        return None
    return _norm_match(v, square[2], n.num, n, square[1], "rms_norm", ("mul",))
