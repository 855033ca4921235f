"""pool op family: windowed and global pooling (`pool`).

attrs fn in {"max", "avg", "global_avg", "global_max"}, kernel_shape, strides, pads
(begins..., ends...), dilations, ceil_mode, count_include_pad (global pools carry the whole
spatial extent as their kernel). Windows come from conv.py's strided views, so pooling is
vectorised over batch, channels and output positions; the average vjp scatters per kernel tap,
the max vjp is one numba pass (compiler/window_kernels.py) that finds each window's argmax and
routes its cotangent there.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from compiler.errors import ModelError
from compiler.ir import Facts, Spec
from compiler.ops.conv import (
    auto_pads,
    conv_out_size,
    effective_kernel,
    scatter_windows,
    shift_crop,
    window_view,
)
from compiler.ops.opdef import Lowered, LowerRule, Node, OpDef, single
from compiler.ops.reduce import lowest

Array = np.ndarray
Ints = tuple[int, ...]


# --- windowed pooling ---------------------------------------------------------------------------


def pool_out_size(size: int, kernel: int, stride: int, dilation: int, begin: int, end: int,
                  ceil_mode: bool) -> int:
    """Output length; in ceil mode a last window that would start in the end padding is
    dropped (ONNX and onnxruntime agree on this)."""
    out = conv_out_size(size, kernel, stride, dilation, begin + end, ceil_mode)
    return out - 1 if ceil_mode and (out - 1) * stride >= size + begin else out


def _out_shape(spatial: Sequence[int], kernel_shape: Ints, strides: Ints, pads: Ints,
               dilations: Ints, ceil_mode: bool) -> Ints:
    n = len(spatial)
    return tuple(pool_out_size(spatial[i], kernel_shape[i], strides[i], dilations[i], pads[i],
                               pads[n + i], ceil_mode) for i in range(n))


@dataclass(frozen=True)
class _Geometry:
    """Where the windows of one pooling layer sit on its input."""

    kernel: Ints
    strides: Ints
    dilations: Ints
    begins: Ints   # leading padding per spatial axis
    extent: Ints   # padded extent the windows cover (ceil mode may reach past the end pads)
    out: Ints

    def pad(self, x: Array, fill: float | int | bool) -> Array:
        """`x` padded (or cropped) to the extent the windows cover."""
        return shift_crop(x, [-b for b in self.begins], self.extent, fill=fill)

    def windows(self, x: Array, fill: float | int | bool) -> Array:
        return window_view(self.pad(x, fill), self.kernel, self.strides, self.dilations,
                           self.out)

    def unpad(self, acc: Array, spatial: Sequence[int]) -> Array:
        """Adjoint of `pad`: the part of `acc` `[..., *extent]` that lies on the input."""
        return shift_crop(acc, self.begins, spatial)


def _geometry(spatial: Sequence[int], kernel_shape: Ints, strides: Ints, pads: Ints,
              dilations: Ints, ceil_mode: bool) -> _Geometry:
    out = _out_shape(spatial, kernel_shape, strides, pads, dilations, ceil_mode)
    eff = effective_kernel(kernel_shape, dilations)
    extent = tuple((o - 1) * s + e for o, s, e in zip(out, strides, eff))
    return _Geometry(tuple(kernel_shape), tuple(strides), tuple(dilations),
                     tuple(pads[:len(spatial)]), extent, out)


def _window_axes(n: int, ndim: int) -> Ints:
    return tuple(range(ndim - n, ndim))


def _avg_count(geo: _Geometry, spatial: Sequence[int], pads: Ints, include_pad: bool
               ) -> Array:
    """Divisor per output position: the real (or real + explicit pad) elements each window
    covers; ceil-mode overhang past the end pads never counts."""
    n = len(spatial)
    masks = []
    for e, b, size, end in zip(geo.extent, geo.begins, spatial, pads[n:]):
        pos = np.arange(e)  # padded coordinate; input coordinate is pos - b
        lo, hi = (0, b + size + end) if include_pad else (b, b + size)
        masks.append(((pos >= lo) & (pos < hi)).astype(np.float64))
    mask = functools.reduce(np.multiply, np.ix_(*masks))
    win = window_view(mask, geo.kernel, geo.strides, geo.dilations, geo.out)
    return win.sum(axis=_window_axes(n, 2 * n))


def _pool_forward(x: Array, *, fn: str, kernel_shape: Ints, strides: Ints, pads: Ints,
                  dilations: Ints, ceil_mode: bool, count_include_pad: bool) -> tuple[Array]:
    n = len(kernel_shape)
    if fn in _GLOBAL:
        return (_GLOBAL[fn](x, axis=_window_axes(n, x.ndim), keepdims=True).astype(x.dtype),)
    geo = _geometry(x.shape[2:], kernel_shape, strides, pads, dilations, ceil_mode)
    if fn == "max":
        return (_fold_taps(geo.windows(x, lowest(x.dtype)), n, np.maximum),)
    total = _fold_taps(geo.windows(x, 0), n, np.add)
    count = _avg_count(geo, x.shape[2:], pads, count_include_pad)
    return ((total / count).astype(x.dtype),)


def _fold_taps(win: Array, n: int, ufunc: np.ufunc) -> Array:
    """Reduce windows `[..., *out, *kernel]` over the kernel, one strided tap at a time: ~30x
    faster than a numpy reduction over the small, non-contiguous kernel axes."""
    taps = np.ndindex(*win.shape[win.ndim - n:])
    acc = win[(Ellipsis,) + next(taps)].copy()
    for tap in taps:
        ufunc(acc, win[(Ellipsis,) + tap], out=acc)
    return acc


def _one_hot(idx: Array, kernel: Sequence[int]) -> Array:
    """`idx` [...] -> one-hot [..., *kernel]."""
    return (idx[..., None] == np.arange(int(np.prod(kernel)))).reshape(idx.shape + tuple(kernel))


def _pool_vjp(gs: Sequence[Array | None], xs: Sequence[Array | None], ys: Sequence[Array], *,
              fn: str, kernel_shape: Ints, strides: Ints, pads: Ints, dilations: Ints,
              ceil_mode: bool, count_include_pad: bool) -> tuple[Array | None]:
    x = xs[0]
    g = gs[0] if gs[0] is not None else np.zeros_like(ys[0])
    assert x is not None
    if fn == "global_avg":
        return (np.broadcast_to(g / np.prod(x.shape[2:]), x.shape).astype(x.dtype),)
    if fn == "global_max":
        flat = x.reshape(x.shape[:2] + (-1,))
        return ((_one_hot(flat.argmax(axis=-1), x.shape[2:]) * g).astype(x.dtype),)
    geo = _geometry(x.shape[2:], kernel_shape, strides, pads, dilations, ceil_mode)
    if fn == "max":
        return (_max_pool_vjp(g, x, geo),)
    share = (g / _avg_count(geo, x.shape[2:], pads, count_include_pad)).astype(x.dtype)
    acc = np.zeros(x.shape[:2] + geo.extent, dtype=x.dtype)
    scatter_windows(np.broadcast_to(share, geo.kernel + share.shape), acc, geo.strides,
                    geo.dilations)
    return (geo.unpad(acc, x.shape[2:]),)


def _max_pool_vjp(g: Array, x: Array, geo: _Geometry) -> Array:
    """Each output's cotangent goes to the first maximum of its window; padding reads the
    dtype's lowest value, as in the forward, and what reaches it is dropped."""
    # Imported here so that numba loads with the first max-pool backward, not with the op table.
    from compiler.window_kernels import max_window_scatter, plane_windows

    acc = np.promote_types(x.dtype, np.float32)  # numba has no float16 arithmetic
    pw = plane_windows(tuple(x.shape[2:]), geo.begins, geo.extent, geo.kernel, geo.strides,
                       geo.dilations, geo.out)
    xp = pw.planes(x, lowest(x.dtype), acc)
    gxp = np.empty_like(xp)
    max_window_scatter(xp, pw.grid(g, acc), pw.taps, gxp)
    return pw.unplanes(gxp, x.shape[:2]).astype(x.dtype, copy=False)


_GLOBAL: dict[str, Callable[..., Array]] = {"global_avg": np.mean, "global_max": np.max}


def _pool_shape(specs: Sequence[Spec | None], *, fn: str, kernel_shape: Ints, strides: Ints,
                pads: Ints, dilations: Ints, ceil_mode: bool, count_include_pad: bool
                ) -> tuple[Spec, ...]:
    x = specs[0]
    assert x is not None
    if fn in _GLOBAL:
        return (Spec(x.shape[:2] + (1,) * (len(x.shape) - 2), x.dtype),)
    out = _out_shape(x.shape[2:], kernel_shape, strides, pads, dilations, ceil_mode)
    if min(out, default=1) < 1:
        raise ValueError(f"{fn} pool of {x.shape} with kernel {kernel_shape} is empty")
    return (Spec(x.shape[:2] + out, x.dtype),)


def _pool_facts(specs_in: Sequence[Spec | None], specs_out: Sequence[Spec], *, fn: str,
                kernel_shape: Ints, **attrs: object) -> Facts:
    assert specs_in[0] is not None
    if fn in _GLOBAL:
        return Facts(ops=specs_in[0].size)   # one add/compare per input element
    return Facts(ops=specs_out[0].size * int(np.prod(kernel_shape)))  # one per window tap


# --- lowering -----------------------------------------------------------------------------------


def _pool_attrs(node: Node, auto_pad: str, kernel_shape: Sequence[int] | None,
                strides: Sequence[int] | None, pads: Sequence[int] | None,
                dilations: Sequence[int] | None, ceil_mode: int) -> dict[str, Any]:
    x = node.spec(0)
    if x is None or len(x.shape) < 3 or kernel_shape is None:
        raise ModelError(node.name, f"{node.op_type} needs x [N, C, *spatial] and kernel_shape")
    n = len(x.shape) - 2
    kernel = tuple(int(k) for k in kernel_shape)
    strides = tuple(strides) if strides is not None else (1,) * n
    dilations = tuple(dilations) if dilations is not None else (1,) * n
    if not len(kernel) == len(strides) == len(dilations) == n:
        raise ModelError(node.name, f"kernel_shape/strides/dilations must have {n} entries")
    pads = auto_pads(auto_pad, x.shape[2:], kernel, strides, dilations, pads, node.name)
    if len(pads) != 2 * n or min(pads) < 0:
        raise ModelError(node.name, f"pads {pads} must be {2 * n} non-negative integers")
    # With auto_pad the output size is fixed (ceil(in / stride) or the VALID count).
    ceil = bool(ceil_mode) and auto_pad in ("NOTSET", "")
    return {"kernel_shape": kernel, "strides": strides, "pads": tuple(pads),
            "dilations": dilations, "ceil_mode": ceil}


def lower_max_pool(node: Node, auto_pad: str = "NOTSET", ceil_mode: int = 0,
                   dilations: Sequence[int] | None = None,
                   kernel_shape: Sequence[int] | None = None, pads: Sequence[int] | None = None,
                   storage_order: int = 0, strides: Sequence[int] | None = None) -> Lowered:
    """ONNX MaxPool -> pool(max); the optional Indices output is not supported."""
    if any(node.outputs[1:]):
        raise ModelError(node.name, "MaxPool's Indices output is not supported")
    attrs = _pool_attrs(node, auto_pad, kernel_shape, strides, pads, dilations, ceil_mode)
    return single("pool", node, outputs=node.outputs[:1], fn="max", count_include_pad=False,
                  **attrs)


def lower_average_pool(node: Node, auto_pad: str = "NOTSET", ceil_mode: int = 0,
                       count_include_pad: int = 0, dilations: Sequence[int] | None = None,
                       kernel_shape: Sequence[int] | None = None,
                       pads: Sequence[int] | None = None,
                       strides: Sequence[int] | None = None) -> Lowered:
    """ONNX AveragePool -> pool(avg)."""
    attrs = _pool_attrs(node, auto_pad, kernel_shape, strides, pads, dilations, ceil_mode)
    return single("pool", node, fn="avg", count_include_pad=bool(count_include_pad), **attrs)


def _global_rule(fn: str) -> LowerRule:
    def rule(node: Node) -> Lowered:
        x = node.spec(0)
        if x is None or len(x.shape) < 3:
            raise ModelError(node.name, f"{node.op_type} needs x [N, C, *spatial]")
        n = len(x.shape) - 2
        return single("pool", node, fn=fn, kernel_shape=x.shape[2:], strides=(1,) * n,
                      pads=(0,) * (2 * n), dilations=(1,) * n, ceil_mode=False,
                      count_include_pad=False)
    rule.__doc__ = f"ONNX Global pooling -> pool({fn})."
    return rule


OPS: tuple[OpDef, ...] = (
    OpDef("pool", shape=_pool_shape, forward=_pool_forward, vjp=_pool_vjp, facts=_pool_facts),
)
LOWER: dict[str, LowerRule] = {
    "MaxPool": lower_max_pool,
    "AveragePool": lower_average_pool,
    "GlobalAveragePool": _global_rule("global_avg"),
    "GlobalMaxPool": _global_rule("global_max"),
}
