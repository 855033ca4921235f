"""conv op family: N-d convolution (grouped, dilated, strided), and the window and GEMM helpers
conv_transpose.py shares.

conv runs as one batched GEMM per call on channel-major im2col matrices `[G, Cg*K, N*out]`
(rows: channel, then kernel tap; columns: sample, then output position). numba kernels build
them from, and sum them back (col2im: conv's input gradient, conv_transpose's forward) onto,
the polyphase plane layout of compiler/window_kernels.py, where each kernel tap reads one
contiguous run per output row. A pointwise conv's matrices are its input itself. Depthwise
convs skip the GEMM: one numba pass per plane, forward and vjp. `window_view` and
`scatter_windows`, numpy's strided windows and their adjoint, serve pool.py.

Layer conventions: conv inputs (x, w[Cout, Cin/g, *k], b?), attrs strides, pads (begins...,
ends...), dilations, group.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from compiler.errors import ModelError
from compiler.ir import Facts, Spec
from compiler.ops.opdef import Lowered, LowerRule, Node, OpDef, single

if TYPE_CHECKING:
    from compiler.window_kernels import PlaneWindows

Ints = tuple[int, ...]


# --- window machinery (shared with pool.py) ---------------------------------------------------


def effective_kernel(kernel: Sequence[int], dilations: Sequence[int]) -> Ints:
    """Extent of each dilated kernel axis: (k - 1) * d + 1."""
    return tuple((k - 1) * d + 1 for k, d in zip(kernel, dilations))


def shift_crop(x: np.ndarray, begins: Sequence[int], sizes: Sequence[int],
               fill: float = 0.0) -> np.ndarray:
    """Window `[b, b + size)` of each trailing axis of `x`, reading `fill` outside `x`.

    A negative begin or a window past the end pads; `shift_crop(g, -b, len)` is the adjoint
    of `shift_crop(x, b, size)` (for fill 0), so it serves padding, cropping and their vjps.
    """
    n = len(begins)
    spatial = x.shape[x.ndim - n:]
    before = [max(0, -b) for b in begins]
    after = [max(0, b + s - length) for b, s, length in zip(begins, sizes, spatial)]
    if any(before) or any(after):
        widths = [(0, 0)] * (x.ndim - n) + list(zip(before, after))
        x = np.pad(x, widths, constant_values=fill)
    lead = (slice(None),) * (x.ndim - n)
    return x[lead + tuple(slice(b + p, b + p + s) for b, p, s in zip(begins, before, sizes))]


def window_view(xp: np.ndarray, kernel: Sequence[int], strides: Sequence[int],
                dilations: Sequence[int], out: Sequence[int]) -> np.ndarray:
    """Strided view `[..., *out, *kernel]` of the windows of the trailing axes of `xp`."""
    n = len(kernel)
    axes = tuple(range(xp.ndim - n, xp.ndim))
    view = sliding_window_view(xp, effective_kernel(kernel, dilations), axis=axes)
    starts = tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(out, strides))
    taps = tuple(slice(None, None, d) for d in dilations)
    return view[(Ellipsis,) + starts + taps]


def scatter_windows(windows: np.ndarray, acc: np.ndarray, strides: Sequence[int],
                    dilations: Sequence[int]) -> np.ndarray:
    """Adjoint of `window_view`: add windows given tap-first, `[*kernel, ..., *out]`, into
    `acc` `[..., *spatial]` in place; returns `acc`.

    Tap-first so that each strided add reads one tap's whole `[..., *out]` slab, which is
    contiguous along the output positions in the layouts conv and pool pass.
    """
    n = len(strides)
    kernel, out = windows.shape[:n], windows.shape[windows.ndim - n:]
    for tap in np.ndindex(*kernel):
        dst = tuple(slice(t * d, t * d + (o - 1) * s + 1, s)
                    for t, d, o, s in zip(tap, dilations, out, strides))
        acc[(Ellipsis,) + dst] += windows[tap]
    return acc


def conv_out_size(size: int, kernel: int, stride: int, dilation: int, pad: int,
                  ceil_mode: bool = False) -> int:
    """Output length of a strided window sweep over `size` elements plus `pad` padding."""
    span = size + pad - ((kernel - 1) * dilation + 1)
    return (-(-span // stride) if ceil_mode else span // stride) + 1


def auto_pads(auto_pad: str, spatial: Sequence[int], kernel: Sequence[int],
              strides: Sequence[int], dilations: Sequence[int],
              pads: Sequence[int] | None, where: str) -> Ints:
    """Explicit (begins..., ends...) pads for ONNX's auto_pad modes (conv and pool)."""
    n = len(spatial)
    if auto_pad in ("NOTSET", ""):
        return tuple(pads) if pads is not None else (0,) * (2 * n)
    if auto_pad == "VALID":
        return (0,) * (2 * n)
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise ModelError(where, f"auto_pad {auto_pad!r} is not an ONNX mode")
    eff = effective_kernel(kernel, dilations)
    # SAME: out = ceil(in / stride); the extra padding goes at the end for SAME_UPPER.
    total = [max(0, (-(-i // s) - 1) * s + e - i) for i, s, e in zip(spatial, strides, eff)]
    small = [t // 2 for t in total]
    big = [t - t // 2 for t in total]
    return tuple(small + big) if auto_pad == "SAME_UPPER" else tuple(big + small)


# --- im2col GEMM layout -------------------------------------------------------------------------


def channel_major(y: np.ndarray, group: int) -> np.ndarray:
    """Activations `[N, C, *sp]` -> GEMM operands `[G, C/G, N*prod(sp)]`."""
    n, c = y.shape[:2]
    g = y.reshape(n, group, c // group, -1).transpose(1, 2, 0, 3)
    return g.reshape(group, c // group, -1)


def batch_major(rows: np.ndarray, n: int, spatial: Sequence[int]) -> np.ndarray:
    """Inverse of `channel_major`: `[G, Cg, N*prod(sp)]` -> `[N, G*Cg, *sp]`."""
    group, cg = rows.shape[:2]
    y = rows.reshape(group * cg, n, -1).transpose(1, 0, 2)
    return y.reshape((n, group * cg) + tuple(spatial))


def gram(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`a @ b^T` for `[G, M, K]` and `[G, N, K]` with a long shared axis K (samples times
    positions, as in a weight gradient), asking BLAS for the taller orientation of the result:
    on a CPU shared with other work, OpenBLAS's threaded GEMM stalls at its per-K-block
    synchronisation for up to ~30x longer when the output is short and wide."""
    if a.shape[1] >= b.shape[1]:
        return a @ b.transpose(0, 2, 1)
    return (b @ a.transpose(0, 2, 1)).transpose(0, 2, 1)


def bias_shape(b: np.ndarray, nsp: int) -> np.ndarray:
    return b.reshape((1, -1) + (1,) * nsp)


def spatial_sum(g: np.ndarray) -> np.ndarray:
    """Bias cotangent: sum over batch and spatial axes."""
    return g.sum(axis=(0,) + tuple(range(2, g.ndim)))


# --- conv ---------------------------------------------------------------------------------------


def _conv_out(spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
              pads: Sequence[int], dilations: Sequence[int]) -> Ints:
    n = len(spatial)
    return tuple(conv_out_size(spatial[i], kernel[i], strides[i], dilations[i],
                               pads[i] + pads[n + i]) for i in range(n))


def _conv_shape(specs: Sequence[Spec | None], *, strides: Ints, pads: Ints, dilations: Ints,
                group: int) -> tuple[Spec, ...]:
    x, w = specs[0], specs[1]
    assert x is not None
    assert w is not None
    out = _conv_out(x.shape[2:], w.shape[2:], strides, pads, dilations)
    if x.shape[1] != w.shape[1] * group or min(out, default=1) < 1:
        raise ValueError(f"conv of {x.shape} with weights {w.shape} (group {group}) is empty "
                         "or mismatched")
    return (Spec((x.shape[0], w.shape[0]) + out, x.dtype),)


def _pointwise(kernel: Ints, strides: Ints, pads: Ints) -> bool:
    return all(k == 1 for k in kernel) and all(s == 1 for s in strides) and not any(pads)


def _columns(x: np.ndarray, kernel: Ints, strides: Ints, pads: Ints, dilations: Ints,
             group: int, dtype: np.dtype) -> tuple[np.ndarray, Ints, PlaneWindows | None]:
    """The im2col matrices `[G, Cg*prod(k), N*prod(out)]` of `x` in `dtype`, the output
    spatial shape, and the windows they came from (None for a pointwise conv, whose matrices
    are its input, channel-major: a view at batch 1)."""
    if _pointwise(kernel, strides, pads):
        return channel_major(x.astype(dtype, copy=False), group), tuple(x.shape[2:]), None
    pw = _plane_windows(x, kernel, strides, pads, dilations)
    cols = pw.columns(x, dtype)
    return cols.reshape(group, -1, cols.shape[1]), pw.out, pw


def _uncolumns(cols: np.ndarray, x_shape: Sequence[int], pw: PlaneWindows | None
               ) -> np.ndarray:
    """Adjoint of `_columns` (col2im): `[G, Cg*prod(k), N*prod(out)]` -> `[N, C, *spatial]`."""
    if pw is None:
        return batch_major(cols, x_shape[0], x_shape[2:])
    return pw.add_columns(cols.reshape(-1, cols.shape[-1]), x_shape[:2])


def _weight_rows(w: np.ndarray, group: int) -> np.ndarray:
    """Conv weights `[Cout, Cg, *k]` -> `[G, Cout/G, Cg*prod(k)]` (a view)."""
    return w.reshape(group, w.shape[0] // group, -1)


def _one_channel_groups(x: np.ndarray, w: np.ndarray, group: int) -> bool:
    return is_depthwise(x.shape, w.shape, group)


def _plane_windows(x: np.ndarray, kernel: Ints, strides: Ints, pads: Ints, dilations: Ints
                   ) -> PlaneWindows:
    from compiler.window_kernels import plane_windows  # numba loads with the first use

    nsp = x.ndim - 2
    padded = tuple(s + pads[i] + pads[nsp + i] for i, s in enumerate(x.shape[2:]))
    return plane_windows(x.shape[2:], tuple(pads[:nsp]), padded,
                         tuple(kernel), tuple(strides), tuple(dilations),
                         _conv_out(x.shape[2:], kernel, strides, pads, dilations))


def _depthwise_forward(x: np.ndarray, w: np.ndarray, strides: Ints, pads: Ints,
                       dilations: Ints) -> np.ndarray:
    from compiler.window_kernels import depthwise_window_forward

    pw = _plane_windows(x, w.shape[2:], strides, pads, dilations)
    y = np.empty((x.shape[0] * w.shape[0], pw.run), dtype=x.dtype)
    depthwise_window_forward(pw.planes(x, 0, x.dtype), w.reshape(w.shape[0], -1), pw.taps, y)
    return pw.outputs(y).reshape((x.shape[0], w.shape[0]) + pw.out)


def _conv_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, *, strides: Ints,
                  pads: Ints, dilations: Ints, group: int) -> tuple[np.ndarray]:
    acc = np.promote_types(x.dtype, np.float32)  # fp16 accumulates in fp32, as onnxruntime does
    w, xa = w.astype(acc, copy=False), x.astype(acc, copy=False)
    if _one_channel_groups(x, w, group):
        y = _depthwise_forward(xa, w, strides, pads, dilations)
    else:
        cols, out, _ = _columns(xa, w.shape[2:], strides, pads, dilations, group, acc)
        y = batch_major(_weight_rows(w, group) @ cols, x.shape[0], out)
    if b is not None:
        y += bias_shape(b.astype(acc, copy=False), y.ndim - 2)  # y is new: in place
    return (y.astype(x.dtype, copy=False),)


def _depthwise_vjp(g: np.ndarray, x: np.ndarray, w: np.ndarray, strides: Ints, pads: Ints,
                   dilations: Ints) -> tuple[np.ndarray, np.ndarray]:
    """(gx, gw) of a conv with one input channel per group, in one numba pass per plane."""
    from compiler.window_kernels import depthwise_window_vjp

    n = x.shape[0]
    acc = np.promote_types(x.dtype, np.float32)  # numba has no float16 arithmetic
    pw = _plane_windows(x, w.shape[2:], strides, pads, dilations)
    xp = pw.planes(x, 0, acc)
    gxp = np.empty_like(xp)
    gw = np.empty((n * w.shape[0], len(pw.taps)), dtype=acc)
    depthwise_window_vjp(xp, pw.grid(g, acc), np.ascontiguousarray(w, dtype=acc).reshape(
        w.shape[0], -1), pw.taps, gxp, gw)
    gx = pw.unplanes(gxp, x.shape[:2]).astype(x.dtype, copy=False)
    return gx, gw.reshape((n,) + w.shape).sum(axis=0)


def conv_grad_factors(g: np.ndarray, x: np.ndarray, w: np.ndarray, *, strides: Ints,
                      pads: Ints, dilations: Ints, group: int, need_x: bool = True,
                      need_cols: bool = True
                      ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """A (non-depthwise) conv's input cotangent and the factors of its weight cotangent.

    Args:
        g: output cotangent `[N, Cout, *out]`.
        x, w: the conv's input and weights; strides, pads, dilations, group: its attributes.
        need_x: False skips the input cotangent (e.g. the model's input needs none).
        need_cols: False skips the im2col matrices (a caller that kept what it needs of them).

    Returns:
        (gx or None, grows `[G, Cout/G, N*prod(out)]`, cols `[G, Cg*prod(k), N*prod(out)]` or
        None), in float32 or wider: the weight cotangent is `grows @ cols^T`, reshaped to
        `w`'s shape.
    """
    acc = np.promote_types(x.dtype, np.float32)  # fp16 accumulates in fp32, as forward does
    kernel = w.shape[2:]
    if need_cols:
        cols, _, pw = _columns(x, kernel, strides, pads, dilations, group, acc)
    else:
        cols, pw = None, (None if _pointwise(kernel, strides, pads)
                          else _plane_windows(x, kernel, strides, pads, dilations))
    grows = channel_major(g.astype(acc, copy=False), group)       # [G, Cout/G, N*out]
    if not need_x:
        return None, grows, cols
    wm = _weight_rows(w.astype(acc, copy=False), group)             # [G, Cout/G, Cg*k]
    gx = _uncolumns(wm.transpose(0, 2, 1) @ grows, x.shape, pw)
    return gx.astype(x.dtype, copy=False), grows, cols


def is_depthwise(x_shape: Sequence[int], w_shape: Sequence[int], group: int) -> bool:
    """Depthwise (with any channel multiplier): a window kernel per plane beats a batched GEMM
    with an inner dimension of prod(k), and its windows copy, by ~10x."""
    return bool(w_shape[1] == 1 and group == x_shape[1])


def _conv_vjp(gs: Sequence[np.ndarray | None], xs: Sequence[np.ndarray | None],
              ys: Sequence[np.ndarray], *, strides: Ints, pads: Ints, dilations: Ints,
              group: int) -> tuple[np.ndarray | None, ...]:
    x, w, b = xs[0], xs[1], xs[2] if len(xs) > 2 else None
    g = gs[0] if gs[0] is not None else np.zeros_like(ys[0])
    gb = None if b is None else spatial_sum(g).astype(b.dtype)
    assert x is not None and w is not None
    if _one_channel_groups(x, w, group):
        gx, gw = _depthwise_vjp(g, x, w, strides, pads, dilations)
        return (gx, gw.astype(w.dtype, copy=False), gb)[:len(xs)]
    gxg, grows, cols = conv_grad_factors(g, x, w, strides=strides, pads=pads,
                                         dilations=dilations, group=group)
    assert cols is not None
    gw = gram(grows, cols).reshape(w.shape)
    return (gxg, gw.astype(w.dtype, copy=False), gb)[:len(xs)]


def _conv_facts(specs_in: Sequence[Spec | None], specs_out: Sequence[Spec], *, strides: Ints,
                pads: Ints, dilations: Ints, group: int) -> Facts:
    w, y = specs_in[1], specs_out[0]
    m = y.shape[0] * int(np.prod(y.shape[2:], dtype=np.int64))
    assert w is not None
    n = w.shape[0] // group
    k = int(np.prod(w.shape[1:], dtype=np.int64))
    return Facts(m=m, n=n, k=k, groups=group, macs=group * m * n * k)


# --- lowering -----------------------------------------------------------------------------------


def conv_operands(node: Node, op: str) -> tuple[Spec, Spec]:
    x, w = node.spec(0), node.spec(1)
    if x is None or w is None or len(x.shape) < 3 or len(w.shape) != len(x.shape):
        raise ModelError(node.name, f"{op} needs x [N, C, *spatial] and w of the same rank")
    return x, w


def spatial_attr(node: Node, name: str, value: Sequence[int] | None, n: int,
                  default: int) -> Ints:
    if value is None:
        return (default,) * n
    if len(value) != n or min(value) < 1:
        raise ModelError(node.name, f"{name} {tuple(value)} must be {n} positive integers")
    return tuple(int(v) for v in value)


def check_kernel(node: Node, kernel_shape: Sequence[int] | None, w: Spec) -> None:
    if kernel_shape is not None and tuple(kernel_shape) != w.shape[2:]:
        raise ModelError(node.name, f"kernel_shape {tuple(kernel_shape)} does not match the "
                         f"weights' {w.shape[2:]}")


def lower_conv(node: Node, auto_pad: str = "NOTSET", dilations: Sequence[int] | None = None,
               group: int = 1, kernel_shape: Sequence[int] | None = None,
               pads: Sequence[int] | None = None, strides: Sequence[int] | None = None
               ) -> Lowered:
    """ONNX Conv -> conv, with auto_pad resolved to explicit pads."""
    x, w = conv_operands(node, "Conv")
    nsp = len(x.shape) - 2
    check_kernel(node, kernel_shape, w)
    strides = spatial_attr(node, "strides", strides, nsp, 1)
    dilations = spatial_attr(node, "dilations", dilations, nsp, 1)
    pads = auto_pads(auto_pad, x.shape[2:], w.shape[2:], strides, dilations, pads, node.name)
    if len(pads) != 2 * nsp or min(pads) < 0:
        raise ModelError(node.name, f"pads {pads} must be {2 * nsp} non-negative integers")
    if x.shape[1] != w.shape[1] * group or w.shape[0] % group:
        raise ModelError(node.name, f"Conv channels: x {x.shape}, w {w.shape}, group {group}")
    return single("conv", node, strides=strides, pads=pads, dilations=dilations,
                  group=int(group))


OPS: tuple[OpDef, ...] = (
    OpDef("conv", shape=_conv_shape, forward=_conv_forward, vjp=_conv_vjp, facts=_conv_facts),
)
LOWER: dict[str, LowerRule] = {"Conv": lower_conv}
