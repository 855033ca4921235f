"""norm op family: layer, RMS, batch (inference) and instance normalisation, one `norm` kind.

The `fn` attribute picks the variant (conventions other code relies on):
- layer_norm: inputs (x, scale, bias?), attrs axis (non-negative), epsilon; normalises over
  axes [axis, rank), scale/bias broadcast against those trailing axes.
- rms_norm: inputs (x, scale), attrs axis, epsilon; like layer_norm without centring.
- batch_norm: inputs (x, scale, bias, mean, var), attr epsilon; per channel (axis 1).
- instance_norm: inputs (x, scale, bias), attr epsilon; per sample and channel over the
  spatial axes, scale/bias per channel.

Statistics are computed in at least float32 (ONNX's stash_type=1), in float64 when x is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from compiler.errors import ModelError
from compiler.ir import Facts, Layer, Spec, frozen_attrs
from compiler.ops.opdef import Lowered, LowerRule, Node, OpDef, single, unbroadcast

Array = np.ndarray
Grads = tuple[Array | None, ...]


# --- standardisation shared by layer/rms/instance norm ------------------------------------------


def _stash(x: Array) -> Array:
    """x in the statistics dtype: float32 at least, float64 if x is."""
    return x.astype(np.result_type(x.dtype, np.float32), copy=False)


def _standardize(x: Array, axes: tuple[int, ...], epsilon: float, center: bool
                 ) -> tuple[Array, Array]:
    """(x - mean) * rstd over `axes` (no mean when not `center`), and rstd (keepdims)."""
    x = _stash(x)
    xc = x - x.mean(axis=axes, keepdims=True) if center else x
    rstd = 1.0 / np.sqrt((xc * xc).mean(axis=axes, keepdims=True) + epsilon)
    return xc * rstd, rstd


def _standardize_vjp(gxhat: Array, xhat: Array, rstd: Array, axes: tuple[int, ...],
                     center: bool) -> Array:
    """Cotangent of x through `_standardize`, given the cotangent of its output."""
    proj = xhat * (gxhat * xhat).mean(axis=axes, keepdims=True)
    if center:
        proj = proj + gxhat.mean(axis=axes, keepdims=True)
    return rstd * (gxhat - proj)


def _trailing(x: Array, axis: int) -> tuple[int, ...]:
    return tuple(range(axis, x.ndim))


def _per_channel(v: Array, ndim: int) -> Array:
    """A [C] vector shaped to broadcast along axis 1 of an ndim tensor."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


# --- layer_norm / rms_norm ----------------------------------------------------------------------


def _layer_forward(x: Array, scale: Array, bias: Array | None = None, *, axis: int,
                   epsilon: float, center: bool = True) -> Array:
    xhat, _ = _standardize(x, _trailing(x, axis), epsilon, center)
    y = xhat * scale
    return y if bias is None else y + bias


def _layer_vjp(g: Array, x: Array, scale: Array, bias: Array | None = None, *, axis: int,
               epsilon: float, center: bool = True) -> Grads:
    axes = _trailing(x, axis)
    xhat, rstd = _standardize(x, axes, epsilon, center)
    gx = _standardize_vjp(g * scale, xhat, rstd, axes, center)
    gscale = unbroadcast(g * xhat, scale.shape)
    return gx, gscale, None if bias is None else unbroadcast(g, bias.shape)


def _rms_forward(x: Array, scale: Array, *, axis: int, epsilon: float) -> Array:
    return _layer_forward(x, scale, axis=axis, epsilon=epsilon, center=False)


def _rms_vjp(g: Array, x: Array, scale: Array, *, axis: int, epsilon: float) -> Grads:
    return _layer_vjp(g, x, scale, axis=axis, epsilon=epsilon, center=False)


# --- instance_norm ------------------------------------------------------------------------------


def _instance_forward(x: Array, scale: Array, bias: Array, *, epsilon: float) -> Array:
    xhat, _ = _standardize(x, _trailing(x, 2), epsilon, True)
    return xhat * _per_channel(scale, x.ndim) + _per_channel(bias, x.ndim)


def _instance_vjp(g: Array, x: Array, scale: Array, bias: Array, *, epsilon: float) -> Grads:
    axes = _trailing(x, 2)
    xhat, rstd = _standardize(x, axes, epsilon, True)
    gx = _standardize_vjp(g * _per_channel(scale, x.ndim), xhat, rstd, axes, True)
    others = (0,) + axes
    return gx, (g * xhat).sum(axis=others), g.sum(axis=others)


# --- batch_norm (inference) ---------------------------------------------------------------------


def _batch_forward(x: Array, scale: Array, bias: Array, mean: Array, var: Array, *,
                   epsilon: float) -> Array:
    rstd = 1.0 / np.sqrt(_stash(var) + epsilon)
    shift = bias - mean * scale * rstd
    return x * _per_channel(scale * rstd, x.ndim) + _per_channel(shift, x.ndim)


def _batch_vjp(g: Array, x: Array, scale: Array, bias: Array, mean: Array, var: Array, *,
               epsilon: float) -> Grads:
    def c(v: np.ndarray) -> np.ndarray:  # a local reshape shorthand
        return _per_channel(v, x.ndim)
    rstd = 1.0 / np.sqrt(_stash(var) + epsilon)
    others = (0,) + _trailing(x, 2)
    gsum = g.sum(axis=others)
    gxc = (g * (x - c(mean))).sum(axis=others)          # sum of g * (x - mean) per channel
    return (g * c(scale * rstd), gxc * rstd, gsum, -gsum * scale * rstd,
            -0.5 * gxc * scale * rstd ** 3)


# --- the norm kind: dispatch on fn --------------------------------------------------------------


@dataclass(frozen=True)
class _Variant:
    forward: Callable[..., Array]
    vjp: Callable[..., Grads]
    ops_per_element: int  # streaming ops per output element (stats, centre, scale, shift)


_VARIANTS: dict[str, _Variant] = {
    "layer_norm": _Variant(_layer_forward, _layer_vjp, 7),
    "rms_norm": _Variant(_rms_forward, _rms_vjp, 4),
    "batch_norm": _Variant(_batch_forward, _batch_vjp, 2),   # a per-channel affine map
    "instance_norm": _Variant(_instance_forward, _instance_vjp, 7),
}


def _shape(specs: Sequence[Spec | None], *, fn: str, **attrs: object) -> tuple[Spec, ...]:
    if fn not in _VARIANTS:
        raise ValueError(f"unknown norm fn {fn!r}")
    assert specs[0] is not None  # the normalised input
    return (specs[0],)


def _forward(*xs: Array | None, fn: str, **attrs: object) -> tuple[Array]:
    y = _VARIANTS[fn].forward(*xs, **attrs)
    assert xs[0] is not None
    return (np.asarray(y, dtype=xs[0].dtype),)


def _vjp(gs: Sequence[Array | None], xs: Sequence[Array | None], ys: Sequence[Array], *,
         fn: str, **attrs: object) -> Grads:
    g = gs[0] if gs[0] is not None else np.zeros_like(ys[0])
    grads = _VARIANTS[fn].vjp(_stash(g), *xs, **attrs)
    return tuple(None if v is None or gr is None else np.asarray(gr, dtype=v.dtype)
                 for v, gr in zip(xs, grads))


def _facts(specs_in: Sequence[Spec | None], specs_out: Sequence[Spec], *, fn: str,
           **attrs: object) -> Facts:
    return Facts(ops=specs_out[0].size * _VARIANTS[fn].ops_per_element)


# --- lowering -----------------------------------------------------------------------------------


def _axis(node: Node, axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise ModelError(node.name, f"axis {axis} is out of range for rank {rank}")
    return axis % rank


def _stat_layers(node: Node, axis: int, epsilon: float) -> tuple[Layer, ...]:
    """LayerNormalization's optional Mean and InvStdDev outputs, as reduce layers."""
    axes = tuple(range(axis, len(node.required_spec(0).shape)))
    wanted: tuple[tuple[str, dict[str, float]], ...] = (
        ("mean", {}), ("inv_std", {"epsilon": float(epsilon)}))
    return tuple(
        Layer(f"{node.name}.{fn}", "reduce", (node.inputs[0],), (out,),
              frozen_attrs({"fn": fn, "axes": axes, "keepdims": True, **extra}))
        for out, (fn, extra) in zip(node.outputs[1:], wanted) if out)


def lower_layer_norm(node: Node, axis: int = -1, epsilon: float = 1e-5,
                     stash_type: int = 1) -> Lowered:
    """ONNX LayerNormalization -> norm(layer_norm); Mean/InvStdDev outputs -> reduce layers."""
    axis = _axis(node, axis, len(node.required_spec(0).shape))
    main = single("norm", node, inputs=node.inputs[:3], outputs=node.outputs[:1],
                  fn="layer_norm", axis=axis, epsilon=float(epsilon))
    return Lowered(layers=main.layers + _stat_layers(node, axis, epsilon))


def lower_rms_norm(node: Node, axis: int = -1, epsilon: float = 1e-5,
                   stash_type: int = 1) -> Lowered:
    """ONNX RMSNormalization (opset 23) -> norm(rms_norm)."""
    axis = _axis(node, axis, len(node.required_spec(0).shape))
    return single("norm", node, inputs=node.inputs[:2], fn="rms_norm", axis=axis,
                  epsilon=float(epsilon))


def lower_batch_norm(node: Node, epsilon: float = 1e-5, momentum: float = 0.9,
                     training_mode: int = 0) -> Lowered:
    """ONNX BatchNormalization in inference mode -> norm(batch_norm)."""
    if training_mode or any(node.outputs[1:]):
        raise ModelError(node.name, "BatchNormalization in training mode (batch statistics, "
                         "running-stat outputs) is not supported; export the model for inference")
    return single("norm", node, fn="batch_norm", epsilon=float(epsilon))


def lower_instance_norm(node: Node, epsilon: float = 1e-5) -> Lowered:
    """ONNX InstanceNormalization -> norm(instance_norm)."""
    if len(node.required_spec(0).shape) < 3:
        raise ModelError(node.name, "InstanceNormalization needs x [N, C, *spatial]")
    return single("norm", node, fn="instance_norm", epsilon=float(epsilon))


OPS: tuple[OpDef, ...] = (OpDef("norm", shape=_shape, forward=_forward, vjp=_vjp, facts=_facts),)
LOWER: dict[str, LowerRule] = {
    "LayerNormalization": lower_layer_norm,
    "RMSNormalization": lower_rms_norm,
    "BatchNormalization": lower_batch_norm,
    "InstanceNormalization": lower_instance_norm,
}
