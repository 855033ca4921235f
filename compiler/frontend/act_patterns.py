"""GELU (erf and tanh forms) and SiLU as exporters decompose them (`match_gelu_erf`,
`match_gelu_tanh`, `match_silu`; the machinery is `pattern_match`).
"""

from __future__ import annotations

import math

from compiler.frontend.pattern_match import (
    Match,
    View,
    fused_match,
    is_kind,
    near,
    other_input,
    scalar_of,
    sole_user,
    with_scalar,
)
from compiler.ir import Layer

SQRT2 = math.sqrt(2.0)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
GELU_TANH_CUBIC = 0.044715


# --- activations ----------------------------------------------------------------------------


def _gelu_tail(v: View, gate: str, x: str) -> list[Layer] | None:
    """`x * 0.5 * (1 + gate)` in any association, with g1 = gate + 1:
    (x * g1) * 0.5, (g1 * 0.5) * x or g1 * (x * 0.5)."""
    one = sole_user(v, gate)
    plus = with_scalar(v, one, "add")
    g1 = one.outputs[0] if plus and near(plus[1], 1.0) and one is not None else None
    mul = sole_user(v, g1) if g1 else None
    other = other_input(mul, g1) if is_kind(mul, "eltwise", "mul") and g1 else None
    if other is None:
        return None
    assert one is not None and mul is not None  # other: mul matched, after one's g1
    last = sole_user(v, mul.outputs[0])
    if other == x:
        half = with_scalar(v, last, "mul")
        return [one, mul, last] if half and near(half[1], 0.5) and last is not None else None
    if near(scalar_of(v, other), 0.5):
        by_x = is_kind(last, "eltwise", "mul") and other_input(last, mul.outputs[0]) == x
        return [one, mul, last] if by_x and last is not None else None
    half_x = v.made.get(other)
    half = with_scalar(v, half_x, "mul")
    found = half and half[0] == x and near(half[1], 0.5)
    return [half_x, one, mul] if found and half_x is not None else None


def _scaled(v: View, tensor: str, factor: float) -> tuple[str, Layer] | None:
    """`tensor = x * factor` or `x / (1 / factor)` -> (x, layer)."""
    layer = v.made.get(tensor)
    product = with_scalar(v, layer, "mul")
    if product and near(product[1], factor) and layer is not None:
        return product[0], layer
    quotient = with_scalar(v, layer, "div", act_pos=0)
    if quotient and near(quotient[1], 1.0 / factor) and layer is not None:
        return quotient[0], layer
    return None


def match_gelu_erf(v: View, layer: Layer) -> Match | None:
    """x * 0.5 * (1 + erf(x / sqrt(2))) -> activation gelu, approximate "none"."""
    if not is_kind(layer, "activation", "erf"):
        return None
    scaled = _scaled(v, layer.inputs[0], 1.0 / SQRT2)
    tail = scaled and _gelu_tail(v, layer.outputs[0], scaled[0])
    if not tail or not scaled:
        return None
    return fused_match(v, (scaled[1], layer, *tail), "activation", [scaled[0]],
                  fn="gelu", approximate="none")


def _cube(v: View, tensor: str, x: str) -> list[Layer] | None:
    """`tensor = x ** 3`, as Pow(x, 3), Mul(x, x*x) or Mul(x*x, x) (x*x maybe Pow(x, 2))."""
    layer = v.made.get(tensor)
    power = with_scalar(v, layer, "pow", act_pos=0)
    if power is not None:
        return [layer] if power[0] == x and near(power[1], 3.0) and layer is not None else None
    square = other_input(layer, x) if is_kind(layer, "eltwise", "mul") else None
    inner = v.made.get(square) if square else None
    squared = with_scalar(v, inner, "pow", act_pos=0)
    if layer is None or inner is None:  # inner: `layer` matched a mul
        return None
    if squared and squared[0] == x and near(squared[1], 2.0):
        return [inner, layer]
    if is_kind(inner, "eltwise", "mul") and inner.inputs[:2] == (x, x):
        return [inner, layer]
    return None


def _cubic_poly(v: View, tensor: str) -> tuple[str, list[Layer]] | None:
    """`tensor = x + 0.044715 * x**3` -> (x, layers)."""
    add = v.made.get(tensor)
    if not is_kind(add, "eltwise", "add") or len(add.inputs) != 2:
        return None
    for x, term in (add.inputs, add.inputs[::-1]):
        scaled = with_scalar(v, v.made.get(term), "mul")
        cube = (scaled and near(scaled[1], GELU_TANH_CUBIC)
                and _cube(v, scaled[0], x))
        if cube:
            return x, [*cube, v.made[term], add]
    return None


def match_gelu_tanh(v: View, layer: Layer) -> Match | None:
    """0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))) -> gelu, approximate "tanh"."""
    if not is_kind(layer, "activation", "tanh"):
        return None
    scaled = with_scalar(v, v.made.get(layer.inputs[0]), "mul")
    if not scaled or not near(scaled[1], SQRT_2_OVER_PI):
        return None
    poly = _cubic_poly(v, scaled[0])
    tail = poly and _gelu_tail(v, layer.outputs[0], poly[0])
    if not tail or not poly:
        return None
    return fused_match(v, (*poly[1], v.made[layer.inputs[0]], layer, *tail), "activation",
                  [poly[0]], fn="gelu", approximate="tanh")


def match_silu(v: View, layer: Layer) -> Match | None:
    """x * sigmoid(x) (either operand order) -> activation silu."""
    if not is_kind(layer, "activation", "sigmoid"):
        return None
    x = layer.inputs[0]
    mul = sole_user(v, layer.outputs[0])
    if not is_kind(mul, "eltwise", "mul") or other_input(mul, layer.outputs[0]) != x:
        return None
    return fused_match(v, (layer, mul), "activation", [x], fn="silu")
