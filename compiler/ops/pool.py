"""pool op family: windowed and global pooling (`pool`) and axis reductions (`reduce`).

pool: attrs fn in {"max", "avg", "global_avg", "global_max"}, kernel_shape, strides, pads
(begins..., ends...), dilations, ceil_mode, count_include_pad (global pools carry the whole
spatial extent as their kernel). Windows come from conv.py's strided views, so pooling is
vectorised over batch, channels and output positions; the average vjp scatters per kernel tap,
the max vjp is one numba pass (compiler/window_kernels.py) that finds each window's argmax and
routes its cotangent there.

reduce: attrs fn (see `_REDUCERS`), axes (non-negative tuple; () reduces nothing, which ONNX's
noop_with_empty_axes asks for), keepdims (bool). Max/min route gradient to the first arg-extremum.
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

Array = np.ndarray
Ints = tuple[int, ...]


def _lowest(dtype: np.dtype) -> float | int | bool:
    """The identity of max for `dtype` (ONNX's result for an empty reduction)."""
    if dtype.kind == "b":
        return False
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


def _highest(dtype: np.dtype) -> float | int | bool:
    if dtype.kind == "b":
        return True
    return np.inf if dtype.kind == "f" else np.iinfo(dtype).max


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
        return (_fold_taps(geo.windows(x, _lowest(x.dtype)), n, np.maximum),)
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
    xp = pw.planes(x, _lowest(x.dtype), acc)
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


# --- reduce -------------------------------------------------------------------------------------


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
    "max": lambda x, a, k: np.max(x, axis=a, keepdims=k, initial=_lowest(x.dtype)),
    "min": lambda x, a, k: np.min(x, axis=a, keepdims=k, initial=_highest(x.dtype)),
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
    OpDef("pool", shape=_pool_shape, forward=_pool_forward, vjp=_pool_vjp, facts=_pool_facts),
    OpDef("reduce", shape=_reduce_shape, forward=_reduce_forward, vjp=_reduce_vjp,
          facts=_reduce_facts),
)
_REDUCERS = {"ReduceSum": "sum", "ReduceMean": "mean", "ReduceMax": "max", "ReduceMin": "min",
             "ReduceProd": "prod", "ReduceL1": "l1", "ReduceL2": "l2",
             "ReduceSumSquare": "sum_square", "ReduceLogSum": "log_sum",
             "ReduceLogSumExp": "log_sum_exp"}
LOWER: dict[str, LowerRule] = {
    "MaxPool": lower_max_pool,
    "AveragePool": lower_average_pool,
    "GlobalAveragePool": _global_rule("global_avg"),
    "GlobalMaxPool": _global_rule("global_max"),
    **{op: _reduce_rule(fn) for op, fn in _REDUCERS.items()},
}
