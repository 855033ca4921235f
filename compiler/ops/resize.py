"""resize op family: ONNX Resize in nearest and (bi/tri)linear modes.

Resize is separable and linear: each resized axis applies an interpolation matrix
`W[out, in]` built from the coordinate transform (as ONNX's reference implementation does).
Nearest gathers `W.argmax(1)` (exact for any dtype), linear contracts with `W`, and the vjp
applies `W.T` along the same axes in reverse order: the transposed interpolation.

Layer convention: inputs (x,), attrs mode ("nearest" | "linear"),
coordinate_transformation_mode, nearest_mode, scales (float per axis, the scale the
coordinate transform divides by) and sizes (the output shape).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from compiler.errors import ModelError
from compiler.ir import Facts, Spec
from compiler.ops.opdef import Lowered, LowerRule, Node, OpDef, single

Array = np.ndarray


# Coordinate transforms map output index y to a source coordinate. As in ONNX's reference,
# the resized length they use is `scale * n_in` (fractional when scales are given), while
# `n_out` is the integer output length.


def _half_pixel(y: Array, scale: float, n_in: int, n_out: int) -> Array:
    return (y + 0.5) / scale - 0.5


def _pytorch_half_pixel(y: Array, scale: float, n_in: int, n_out: int) -> Array:
    if scale * n_in == 1:
        return np.full_like(y, -0.5)
    return _half_pixel(y, scale, n_in, n_out)


def _align_corners(y: Array, scale: float, n_in: int, n_out: int) -> Array:
    length = scale * n_in
    return y * (n_in - 1) / (length - 1) if length != 1 else np.zeros_like(y)


def _half_pixel_symmetric(y: Array, scale: float, n_in: int, n_out: int) -> Array:
    # Centre the (fractional) resized extent on the output canvas (opset 19).
    offset = n_in / 2 * (1 - n_out / (scale * n_in))
    return offset + _half_pixel(y, scale, n_in, n_out)


# Output index -> source coordinate, per ONNX coordinate_transformation_mode.
_COORDINATES: dict[str, Callable[[Array, float, int, int], Array]] = {
    "half_pixel": _half_pixel,
    "pytorch_half_pixel": _pytorch_half_pixel,
    "align_corners": _align_corners,
    "asymmetric": lambda y, scale, n_in, n_out: y / scale,
    "half_pixel_symmetric": _half_pixel_symmetric,
    "tf_half_pixel_for_nn": lambda y, scale, n_in, n_out: (y + 0.5) / scale,  # opset 11 only
}

# Source coordinate -> nearest index, per ONNX nearest_mode.
_ROUNDING: dict[str, Callable[[Array], Array]] = {
    "round_prefer_floor": lambda x: np.ceil(x - 0.5),
    "round_prefer_ceil": lambda x: np.floor(x + 0.5),
    "floor": np.floor,
    "ceil": np.ceil,
}


def _axis_matrix(n_in: int, n_out: int, scale: float, mode: str, transform: str,
                 nearest_mode: str) -> Array:
    """Interpolation matrix `[n_out, n_in]` (float64) of one axis; edges clamp."""
    x = _COORDINATES[transform](np.arange(n_out, dtype=np.float64), scale, n_in, n_out)
    w = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    if mode == "nearest":
        w[rows, np.clip(_ROUNDING[nearest_mode](x), 0, n_in - 1).astype(np.intp)] = 1.0
        return w
    lo = np.floor(x)
    frac = x - lo
    np.add.at(w, (rows, np.clip(lo, 0, n_in - 1).astype(np.intp)), 1.0 - frac)
    np.add.at(w, (rows, np.clip(lo + 1, 0, n_in - 1).astype(np.intp)), frac)
    return w


def _matrices(shape: Sequence[int], mode: str, coordinate_transformation_mode: str,
              nearest_mode: str, scales: tuple[float, ...], sizes: tuple[int, ...]
              ) -> list[tuple[int, Array]]:
    """(axis, matrix) for every axis that actually changes."""
    return [(a, _axis_matrix(shape[a], sizes[a], scales[a], mode,
                             coordinate_transformation_mode, nearest_mode))
            for a in range(len(shape)) if sizes[a] != shape[a] or scales[a] != 1.0]


def _contract(x: Array, w: Array, axis: int) -> Array:
    """Apply `w[out, in]` along `axis` of `x`."""
    return np.moveaxis(np.tensordot(w.astype(x.dtype), x, axes=([1], [axis])), 0, axis)


def _forward(x: Array, *, mode: str, coordinate_transformation_mode: str, nearest_mode: str,
             scales: tuple[float, ...], sizes: tuple[int, ...]) -> tuple[Array]:
    y = x
    for axis, w in _matrices(x.shape, mode, coordinate_transformation_mode, nearest_mode,
                             scales, sizes):
        y = np.take(y, w.argmax(axis=1), axis=axis) if mode == "nearest" else _contract(y, w, axis)
    return (np.asarray(y, dtype=x.dtype),)


def _vjp(gs: Sequence[Array | None], xs: Sequence[Array | None], ys: Sequence[Array], *,
         mode: str, coordinate_transformation_mode: str, nearest_mode: str,
         scales: tuple[float, ...], sizes: tuple[int, ...]) -> tuple[Array | None]:
    x = xs[0]
    assert x is not None
    if x.dtype.kind != "f":
        return (None,)
    g = gs[0] if gs[0] is not None else np.zeros_like(ys[0])
    for axis, w in reversed(_matrices(x.shape, mode, coordinate_transformation_mode,
                                      nearest_mode, scales, sizes)):
        g = _contract(g, w.T, axis)
    return (np.asarray(g, dtype=x.dtype),)


def _shape(specs: Sequence[Spec | None], *, mode: str, coordinate_transformation_mode: str,
           nearest_mode: str, scales: tuple[float, ...], sizes: tuple[int, ...]
           ) -> tuple[Spec, ...]:
    x = specs[0]
    assert x is not None
    if len(sizes) != len(x.shape) or min(sizes, default=1) < 1:
        raise ValueError(f"resize of {x.shape} to {sizes}")
    return (Spec(tuple(sizes), x.dtype),)


def _facts(specs_in: Sequence[Spec | None], specs_out: Sequence[Spec], *, mode: str,
           sizes: tuple[int, ...], **attrs: object) -> Facts:
    assert specs_in[0] is not None
    changed = sum(1 for a, b in zip(specs_in[0].shape, sizes) if a != b)
    taps = 2 ** changed if mode == "linear" else 1   # weighted reads per output element
    return Facts(ops=specs_out[0].size * taps)


# --- lowering -----------------------------------------------------------------------------------


def _optional_const(node: Node, i: int, what: str) -> Array | None:
    """Constant input `i` (an empty tensor counts as absent)."""
    if not node.input(i):
        return None
    value = node.const(i)
    if value is None:
        raise ModelError(node.name, f"Resize {what} must be constant")
    return value if value.size else None


def _resize_axes(node: Node, axes: Sequence[int] | None, rank: int) -> tuple[int, ...]:
    if axes is None:
        return tuple(range(rank))
    if any(not -rank <= a < rank for a in axes):
        raise ModelError(node.name, f"Resize axes {tuple(axes)} out of range for rank {rank}")
    return tuple(a % rank for a in axes)


def _from_sizes(node: Node, shape: Sequence[int], axes: tuple[int, ...], sizes: Array,
                policy: str) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """Scales and output shape for a `sizes` input, honouring keep_aspect_ratio_policy."""
    out, scales = list(shape), [1.0] * len(shape)
    for a, s in zip(axes, sizes):
        out[a], scales[a] = int(s), int(s) / shape[a]
    if policy == "stretch":
        return tuple(scales), tuple(out)
    pick = {"not_larger": min, "not_smaller": max}.get(policy)
    if pick is None:
        raise ModelError(node.name, f"keep_aspect_ratio_policy {policy!r} is not an ONNX mode")
    common = pick(scales[a] for a in axes)
    for a in axes:   # ONNX rounds half up here
        out[a], scales[a] = int(common * shape[a] + 0.5), common
    return tuple(scales), tuple(out)


def _from_scales(shape: Sequence[int], axes: tuple[int, ...], given: Array
                 ) -> tuple[tuple[float, ...], tuple[int, ...]]:
    scales = [1.0] * len(shape)
    for a, s in zip(axes, given):
        scales[a] = float(s)
    return tuple(scales), tuple(int(np.floor(d * s)) for d, s in zip(shape, scales))


def _check_modes(node: Node, mode: str, transform: str, nearest_mode: str, dtype: str) -> None:
    if mode not in ("nearest", "linear"):
        raise ModelError(node.name, f"Resize mode {mode!r} is not supported (nearest, linear)")
    if transform not in _COORDINATES:
        raise ModelError(node.name, f"Resize coordinate_transformation_mode {transform!r} is "
                         f"not supported ({', '.join(_COORDINATES)})")
    if nearest_mode not in _ROUNDING:
        raise ModelError(node.name, f"Resize nearest_mode {nearest_mode!r} is not an ONNX mode")
    if mode == "linear" and np.dtype(dtype).kind != "f":
        raise ModelError(node.name, f"Resize linear on {dtype} input is not supported")


def lower_resize(node: Node, antialias: int = 0, axes: Sequence[int] | None = None,
                 coordinate_transformation_mode: str = "half_pixel",
                 cubic_coeff_a: float = -0.75, exclude_outside: int = 0,
                 extrapolation_value: float = 0.0, keep_aspect_ratio_policy: str = "stretch",
                 mode: str = "nearest", nearest_mode: str = "round_prefer_floor") -> Lowered:
    """ONNX Resize (opset >= 11) with constant scales or sizes -> resize.

    exclude_outside and cubic_coeff_a only change cubic mode (refused); with edge clamping,
    exclude_outside gives linear the same weights.
    """
    x = node.spec(0)
    assert x is not None
    _check_modes(node, mode, coordinate_transformation_mode, nearest_mode, x.dtype)
    rank, picked = len(x.shape), _resize_axes(node, axes, len(x.shape))
    scales, sizes = _optional_const(node, 2, "scales"), _optional_const(node, 3, "sizes")
    if (scales is None) == (sizes is None):
        raise ModelError(node.name, "Resize needs exactly one of scales and sizes")
    given = sizes if sizes is not None else scales
    assert given is not None
    if given.size != len(picked):
        raise ModelError(node.name, f"Resize has {given.size} scales/sizes for {len(picked)} axes")
    if sizes is not None:
        scales_t, sizes_t = _from_sizes(node, x.shape, picked, sizes, keep_aspect_ratio_policy)
    else:
        assert scales is not None  # exactly one of scales and sizes (checked above)
        scales_t, sizes_t = _from_scales(x.shape, picked, scales)
    if antialias and mode == "linear" and min(scales_t) < 1.0:
        raise ModelError(node.name, "Resize antialias when downsampling is not supported")
    if min(scales_t) <= 0 or min(sizes_t, default=1) < 1 or len(sizes_t) != rank:
        raise ModelError(node.name, f"Resize to {sizes_t} (scales {scales_t}) is empty")
    return single("resize", node, inputs=node.inputs[:1], mode=mode,
                  coordinate_transformation_mode=coordinate_transformation_mode,
                  nearest_mode=nearest_mode, scales=scales_t, sizes=sizes_t)


OPS: tuple[OpDef, ...] = (OpDef("resize", shape=_shape, forward=_forward, vjp=_vjp, facts=_facts),)
LOWER: dict[str, LowerRule] = {"Resize": lower_resize}
