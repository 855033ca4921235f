"""Fuse the decomposed forms exporters emit back into single layers.

PyTorch exports LayerNorm, RMSNorm, GELU and SiLU as chains of elementwise ops
(ReduceMean -> Sub -> Pow -> ... -> Add beta). Each pattern here is a `match_*` function that
starts at one layer and walks producers/consumers to collect the chain and the constants it
uses, checking each constant against the value the formula needs. A generic `closed` check
then makes sure no intermediate tensor is used outside the chain or is a graph output, and
`replace_matches` swaps every chain for its fused layer. No general pattern language: each
pattern is plain code.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TypeGuard

import numpy as np

from compiler.ir import Graph, Layer, Spec, frozen_attrs, readonly
from compiler.passes.drop_dead import drop_dead

SQRT2 = math.sqrt(2.0)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
GELU_TANH_CUBIC = 0.044715
NAME_SEPARATORS = "/._-"
RTOL = 1e-4  # exporters write these constants in float32 (e.g. 1.4142135381698608)


@dataclass(frozen=True)
class View:
    """A graph with its producer/consumer maps, built once per fusion sweep."""

    graph: Graph
    made: Mapping[str, Layer]
    users: Mapping[str, list[Layer]]
    position: Mapping[str, int]
    outputs: frozenset[str]


def view(g: Graph) -> View:
    """Index `g` for matching."""
    position = {layer.name: i for i, layer in enumerate(g.layers)}
    return View(g, g.producers(), g.consumers(), position, frozenset(g.outputs))


@dataclass(frozen=True)
class Match:
    """A matched chain (in graph order) and the layer replacing it.

    `fused` writes the chain's final output; `weights` holds the new constants it reads.
    """

    layers: tuple[Layer, ...]
    fused: Layer
    weights: Mapping[str, np.ndarray] = field(default_factory=lambda: MappingProxyType({}))


Pattern = Callable[[View, Layer], "Match | None"]


# --- small queries --------------------------------------------------------------------------


def _is(layer: Layer | None, kind: str, fn: str | None = None) -> TypeGuard[Layer]:
    return layer is not None and layer.kind == kind and (fn is None or layer.attrs.get("fn") == fn)


def _made(v: View, tensor: str, kind: str, fn: str | None = None) -> Layer | None:
    """The layer producing `tensor`, if it is of `kind` (and `fn`)."""
    layer = v.made.get(tensor)
    return layer if _is(layer, kind, fn) else None


def _sole_user(v: View, tensor: str) -> Layer | None:
    """The one layer reading `tensor`, if exactly one does and it is not a graph output."""
    users = {layer.name: layer for layer in v.users.get(tensor, [])}
    if tensor in v.outputs or len(users) != 1:
        return None
    return next(iter(users.values()))


def _shape(v: View, tensor: str) -> tuple[int, ...]:
    return v.graph.types[tensor].shape


def _scalar(v: View, tensor: str) -> float | None:
    """The value of a constant whose elements are all equal (a scalar in disguise)."""
    value = v.graph.weights.get(tensor)
    if value is None or value.size == 0 or value.dtype.kind not in "fiu":
        return None
    first = value.reshape(-1)[0]
    return float(first) if np.all(value == first) else None


def near(x: float | None, want: float) -> TypeGuard[float]:
    """Whether constant `x` is the formula's `want`, within float32 rounding."""
    return x is not None and abs(x - want) <= RTOL * abs(want) + 1e-7


def _with_scalar(v: View, layer: Layer | None, fn: str,
                 act_pos: int | None = None) -> tuple[str, float] | None:
    """(activation operand, scalar) of a binary eltwise `fn` with one scalar constant operand
    that does not broadcast the result; `act_pos` pins the activation's position."""
    if not _is(layer, "eltwise", fn) or len(layer.inputs) != 2:
        return None
    for pos in (0, 1) if act_pos is None else (act_pos,):
        act, const = layer.inputs[pos], layer.inputs[1 - pos]
        value = _scalar(v, const)
        if (value is not None and act not in v.graph.weights
                and _shape(v, layer.outputs[0]) == _shape(v, act)):
            return act, value
    return None


def _other(layer: Layer, tensor: str) -> str | None:
    """The other operand of a binary layer that reads `tensor` once."""
    a, b = layer.inputs[:2]
    if (a == tensor) == (b == tensor):
        return None
    return b if a == tensor else a


def _reduced_axes(v: View, layer: Layer) -> tuple[int, ...] | None:
    """Axes of a keepdims mean reduction (reduce axes are explicit: () reduces nothing)."""
    if not _is(layer, "reduce", "mean") or not layer.attrs.get("keepdims", True):
        return None
    return tuple(sorted(layer.attrs.get("axes", ()))) or None


def _suffix_axis(axes: Sequence[int], rank: int) -> int | None:
    """First axis, if `axes` are exactly the trailing axes (what LayerNorm's `axis` means)."""
    if not axes or tuple(axes) != tuple(range(axes[0], rank)):
        return None
    return axes[0]


# --- closing the match ----------------------------------------------------------------------


def closed(v: View, m: Match) -> bool:
    """Intermediate tensors are read only inside the chain and are not graph outputs."""
    names = {layer.name for layer in m.layers}
    kept = set(m.fused.outputs)
    for layer in m.layers:
        for t in layer.outputs:
            if t in kept:
                continue
            if t in v.outputs or any(u.name not in names for u in v.users.get(t, [])):
                return False
    return kept == set(m.layers[-1].outputs)


def _fused_name(layers: Sequence[Layer], taken: set[str]) -> str:
    """The chain's common name scope (e.g. '/encoder/ln' for '/encoder/ln/Sub', ...), else its
    last layer's name."""
    names = [layer.name for layer in layers]
    prefix = os.path.commonprefix(names)
    if any(len(n) > len(prefix) and n[len(prefix)] not in NAME_SEPARATORS for n in names):
        prefix = prefix[:max(prefix.rfind(c) for c in NAME_SEPARATORS) + 1]  # whole scopes only
    prefix = prefix.rstrip(NAME_SEPARATORS)
    name = prefix if prefix and prefix not in taken else names[-1]
    taken.add(name)
    return name


def _chain(v: View, layers: Sequence[Layer], kind: str, inputs: Sequence[str],
           weights: Mapping[str, np.ndarray] | None = None, **attrs: object) -> Match:
    """A Match over `layers` (any order) fused into one `kind` layer writing the last output."""
    ordered = tuple(sorted(layers, key=lambda layer: v.position[layer.name]))
    fused = Layer(ordered[-1].name, kind, tuple(inputs), ordered[-1].outputs, frozen_attrs(attrs))
    return Match(ordered, fused, MappingProxyType(dict(weights or {})))


def replace_matches(g: Graph, matches: Sequence[Match]) -> Graph:
    """Swap each matched chain for its fused layer, placed where the chain's last layer was;
    drop the constants nothing reads any more."""
    removed = {layer.name for m in matches for layer in m.layers}
    taken = {layer.name for layer in g.layers if layer.name not in removed}
    at_last = {m.layers[-1].name: replace(m.fused, name=_fused_name(m.layers, taken))
               for m in matches}
    layers = tuple(at_last.get(layer.name, layer) for layer in g.layers
                   if layer.name in at_last or layer.name not in removed)
    new = {t: readonly(w) for m in matches for t, w in m.weights.items()}
    weights = {**g.weights, **new}
    types = {**g.types, **{t: Spec(tuple(w.shape), w.dtype.name) for t, w in new.items()}}
    return drop_dead(replace(g, layers=layers, weights=weights, types=types))


def fuse(g: Graph, pattern: Pattern) -> Graph:
    """Apply one pattern everywhere it matches (non-overlapping, closed matches)."""
    v = view(g)
    matches: list[Match] = []
    claimed: set[str] = set()
    for layer in g.layers:
        m = pattern(v, layer)
        names = {x.name for x in m.layers} if m is not None else set()
        if m is not None and not names & claimed and closed(v, m):
            claimed |= names
            matches.append(m)
    return replace_matches(g, matches) if matches else g


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
    sqrt = _made(v, tensor, "activation", "sqrt")
    add = sqrt and v.made.get(sqrt.inputs[0])
    found = _with_scalar(v, add, "add")
    if found is None or found[1] < 0:
        return None
    assert add is not None and sqrt is not None  # _with_scalar matched add, made from sqrt
    return found[0], found[1], (add, sqrt)


def _rsqrt_of_var(v: View, tensor: str) -> tuple[str, float, tuple[Layer, ...]] | None:
    """`tensor = 1 / sqrt(var + eps)`: Reciprocal(Sqrt), Div(1, Sqrt) or Pow(-0.5)."""
    layer = v.made.get(tensor)
    if _is(layer, "activation", "reciprocal"):
        found = _sqrt_of_var(v, layer.inputs[0])
    elif (one := _with_scalar(v, layer, "div", act_pos=1)) and near(one[1], 1.0):
        found = _sqrt_of_var(v, one[0])
    elif (power := _with_scalar(v, layer, "pow", act_pos=0)) and near(power[1], -0.5):
        add = v.made.get(power[0])
        var_eps = _with_scalar(v, add, "add")
        found = ((var_eps[0], var_eps[1], (add,))
                 if var_eps and var_eps[1] >= 0 and add is not None else None)
    else:
        found = None
    return (found[0], found[1], (*found[2], layer)) if found and layer is not None else None


def match_normalized(v: View, layer: Layer) -> Normalized | None:
    """Match `layer` as `num / sqrt(var + eps)` or `num * rsqrt(var + eps)`."""
    if not _is(layer, "eltwise") or len(layer.inputs) != 2:
        return None
    fn = layer.attrs.get("fn")
    a, b = layer.inputs
    tries = {"div": [(a, _sqrt_of_var, b)],
             "mul": [(a, _rsqrt_of_var, b), (b, _rsqrt_of_var, a)]}.get(fn or "", [])
    for num, spelling, den in tries:
        found = spelling(v, den) if num != den else None
        if found and _shape(v, layer.outputs[0]) == _shape(v, num):
            return Normalized(num, found[0], found[1], (*found[2], layer))
    return None


def _mean_of_square(v: View, tensor: str) -> tuple[str, tuple[int, ...], tuple[Layer, ...]] | None:
    """`tensor = mean(base ** 2, axes, keepdims)` with Pow(2) or Mul(base, base)."""
    mean = v.made.get(tensor)
    axes = _reduced_axes(v, mean) if mean is not None else None
    square = mean and v.made.get(mean.inputs[0])
    if axes is None or square is None:
        return None
    assert mean is not None  # axes were read from it
    power = _with_scalar(v, square, "pow", act_pos=0)
    if power is not None and near(power[1], 2.0):
        return power[0], axes, (square, mean)
    if _is(square, "eltwise", "mul") and square.inputs[0] == square.inputs[1]:
        return square.inputs[0], axes, (square, mean)
    return None


def _param(v: View, layer: Layer | None, fn: str, act: str,
           axis: int) -> tuple[str, np.ndarray] | None:
    """(name, value over the normalised dims) of a constant gamma/beta operand of `layer`."""
    other = _other(layer, act) if _is(layer, "eltwise", fn) else None
    value = v.graph.weights.get(other) if other else None
    shape = _shape(v, act)
    if (value is None or other is None or layer is None or value.ndim > len(shape)
            or _shape(v, layer.outputs[0]) != shape):  # a value: `layer` matched `fn`
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
        user = _sole_user(v, tensor)
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
    axis = _suffix_axis(axes, len(spec.shape))
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
    return _chain(v, (*core, *n.layers, *tail), "norm", inputs, weights,
                  fn=fn, axis=axis, epsilon=n.eps)


def match_layer_norm(v: View, layer: Layer) -> Match | None:
    """(x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps) [* gamma [+ beta]] -> layer_norm."""
    n = match_normalized(v, layer)
    if n is None:
        return None
    square = _mean_of_square(v, n.var)
    centred = square and square[0] == n.num and _made(v, n.num, "eltwise", "sub")
    if not centred or not square or len(centred.inputs) != 2:
        return None
    x, mu = centred.inputs
    mean = v.made.get(mu)
    if mean is None or mean.inputs[0] != x or _reduced_axes(v, mean) != square[1]:
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


# --- activations ----------------------------------------------------------------------------


def _gelu_tail(v: View, gate: str, x: str) -> list[Layer] | None:
    """`x * 0.5 * (1 + gate)` in any association, with g1 = gate + 1:
    (x * g1) * 0.5, (g1 * 0.5) * x or g1 * (x * 0.5)."""
    one = _sole_user(v, gate)
    plus = _with_scalar(v, one, "add")
    g1 = one.outputs[0] if plus and near(plus[1], 1.0) and one is not None else None
    mul = _sole_user(v, g1) if g1 else None
    other = _other(mul, g1) if _is(mul, "eltwise", "mul") and g1 else None
    if other is None:
        return None
    assert one is not None and mul is not None  # other: mul matched, after one's g1
    last = _sole_user(v, mul.outputs[0])
    if other == x:
        half = _with_scalar(v, last, "mul")
        return [one, mul, last] if half and near(half[1], 0.5) and last is not None else None
    if near(_scalar(v, other), 0.5):
        by_x = _is(last, "eltwise", "mul") and _other(last, mul.outputs[0]) == x
        return [one, mul, last] if by_x and last is not None else None
    half_x = v.made.get(other)
    half = _with_scalar(v, half_x, "mul")
    found = half and half[0] == x and near(half[1], 0.5)
    return [half_x, one, mul] if found and half_x is not None else None


def _scaled(v: View, tensor: str, factor: float) -> tuple[str, Layer] | None:
    """`tensor = x * factor` or `x / (1 / factor)` -> (x, layer)."""
    layer = v.made.get(tensor)
    product = _with_scalar(v, layer, "mul")
    if product and near(product[1], factor) and layer is not None:
        return product[0], layer
    quotient = _with_scalar(v, layer, "div", act_pos=0)
    if quotient and near(quotient[1], 1.0 / factor) and layer is not None:
        return quotient[0], layer
    return None


def match_gelu_erf(v: View, layer: Layer) -> Match | None:
    """x * 0.5 * (1 + erf(x / sqrt(2))) -> activation gelu, approximate "none"."""
    if not _is(layer, "activation", "erf"):
        return None
    scaled = _scaled(v, layer.inputs[0], 1.0 / SQRT2)
    tail = scaled and _gelu_tail(v, layer.outputs[0], scaled[0])
    if not tail or not scaled:
        return None
    return _chain(v, (scaled[1], layer, *tail), "activation", [scaled[0]],
                  fn="gelu", approximate="none")


def _cube(v: View, tensor: str, x: str) -> list[Layer] | None:
    """`tensor = x ** 3`, as Pow(x, 3), Mul(x, x*x) or Mul(x*x, x) (x*x maybe Pow(x, 2))."""
    layer = v.made.get(tensor)
    power = _with_scalar(v, layer, "pow", act_pos=0)
    if power is not None:
        return [layer] if power[0] == x and near(power[1], 3.0) and layer is not None else None
    square = _other(layer, x) if _is(layer, "eltwise", "mul") else None
    inner = v.made.get(square) if square else None
    squared = _with_scalar(v, inner, "pow", act_pos=0)
    if layer is None or inner is None:  # inner: `layer` matched a mul
        return None
    if squared and squared[0] == x and near(squared[1], 2.0):
        return [inner, layer]
    if _is(inner, "eltwise", "mul") and inner.inputs[:2] == (x, x):
        return [inner, layer]
    return None


def _cubic_poly(v: View, tensor: str) -> tuple[str, list[Layer]] | None:
    """`tensor = x + 0.044715 * x**3` -> (x, layers)."""
    add = v.made.get(tensor)
    if not _is(add, "eltwise", "add") or len(add.inputs) != 2:
        return None
    for x, term in (add.inputs, add.inputs[::-1]):
        scaled = _with_scalar(v, v.made.get(term), "mul")
        cube = (scaled and near(scaled[1], GELU_TANH_CUBIC)
                and _cube(v, scaled[0], x))
        if cube:
            return x, [*cube, v.made[term], add]
    return None


def match_gelu_tanh(v: View, layer: Layer) -> Match | None:
    """0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))) -> gelu, approximate "tanh"."""
    if not _is(layer, "activation", "tanh"):
        return None
    scaled = _with_scalar(v, v.made.get(layer.inputs[0]), "mul")
    if not scaled or not near(scaled[1], SQRT_2_OVER_PI):
        return None
    poly = _cubic_poly(v, scaled[0])
    tail = poly and _gelu_tail(v, layer.outputs[0], poly[0])
    if not tail or not poly:
        return None
    return _chain(v, (*poly[1], v.made[layer.inputs[0]], layer, *tail), "activation",
                  [poly[0]], fn="gelu", approximate="tanh")


def match_silu(v: View, layer: Layer) -> Match | None:
    """x * sigmoid(x) (either operand order) -> activation silu."""
    if not _is(layer, "activation", "sigmoid"):
        return None
    x = layer.inputs[0]
    mul = _sole_user(v, layer.outputs[0])
    if not _is(mul, "eltwise", "mul") or _other(mul, layer.outputs[0]) != x:
        return None
    return _chain(v, (layer, mul), "activation", [x], fn="silu")


# LayerNorm before RMSNorm: an RMSNorm chain is the tail end of a LayerNorm chain.
PATTERNS: tuple[Pattern, ...] = (
    match_layer_norm, match_rms_norm, match_gelu_erf, match_gelu_tanh, match_silu)


def fuse_patterns(g: Graph) -> Graph:
    """Fuse every decomposed LayerNorm, RMSNorm, GELU (erf and tanh forms) and SiLU in `g`."""
    for pattern in PATTERNS:
        g = fuse(g, pattern)
    return g
