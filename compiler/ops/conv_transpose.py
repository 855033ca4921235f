"""conv_transpose op family: N-d transposed convolution (grouped, dilated, strided).

The adjoint of conv.py's conv: its forward is one batched GEMM whose columns are summed back
(col2im) onto the uncropped output, then cropped by the pads; its vjp builds conv's im2col
columns from the output gradient. Layer conventions: inputs (x, w[Cin, Cout/g, *k], b?),
attrs strides, pads (begins..., ends...), dilations, group, output_padding; pads may be
negative (an explicit `output_shape` larger than the natural one extends the output with
zeros).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from compiler.errors import ModelError
from compiler.ir import Facts, Spec
from compiler.ops.conv import (
    Ints,
    batch_major,
    bias_shape,
    channel_major,
    check_kernel,
    conv_operands,
    effective_kernel,
    gram,
    shift_crop,
    spatial_attr,
    spatial_sum,
)
from compiler.ops.opdef import Lowered, LowerRule, Node, OpDef, single

if TYPE_CHECKING:
    from compiler.window_kernels import PlaneWindows


def _full_size(spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
               dilations: Sequence[int]) -> Ints:
    """Length of the uncropped transposed-conv output: s*(in-1) + eff_kernel."""
    eff = effective_kernel(kernel, dilations)
    return tuple(s * (i - 1) + e for i, s, e in zip(spatial, strides, eff))


def _convt_out(spatial: Sequence[int], kernel: Sequence[int], strides: Ints, pads: Ints,
               dilations: Ints, output_padding: Ints) -> Ints:
    n, full = len(spatial), _full_size(spatial, kernel, strides, dilations)
    return tuple(full[i] + output_padding[i] - pads[i] - pads[n + i] for i in range(n))


def _convt_shape(specs: Sequence[Spec | None], *, strides: Ints, pads: Ints, dilations: Ints,
                 group: int, output_padding: Ints) -> tuple[Spec, ...]:
    x, w = specs[0], specs[1]
    assert x is not None
    assert w is not None
    out = _convt_out(x.shape[2:], w.shape[2:], strides, pads, dilations, output_padding)
    if x.shape[1] != w.shape[0] or w.shape[0] % group or min(out, default=1) < 1:
        raise ValueError(f"conv_transpose of {x.shape} with weights {w.shape} (group {group}) "
                         "is empty or mismatched")
    return (Spec((x.shape[0], w.shape[1] * group) + out, x.dtype),)


def _full_windows(spatial: Ints, kernel: Ints, strides: Ints, dilations: Ints,
                  begins: Ints | int, plane: Ints | None = None) -> PlaneWindows:
    """The windows a transposed conv's input positions cover on its uncropped output: the
    output `plane` (default the uncropped output itself) sits `begins` elements into it."""
    from compiler.window_kernels import plane_windows

    full = _full_size(spatial, kernel, strides, dilations)
    begins = (begins,) * len(spatial) if isinstance(begins, int) else tuple(begins)
    return plane_windows(tuple(plane or full), begins, full, tuple(kernel), tuple(strides),
                         tuple(dilations), tuple(spatial))


def _convt_weight(w: np.ndarray, group: int) -> np.ndarray:
    """ConvTranspose weights `[Cin, Cout/G, *k]` -> `[G, Cin/G, Cout/G*prod(k)]`."""
    return w.reshape(group, w.shape[0] // group, -1)


def _convt_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, *, strides: Ints,
                   pads: Ints, dilations: Ints, group: int, output_padding: Ints
                   ) -> tuple[np.ndarray]:
    nsp, kernel = x.ndim - 2, w.shape[2:]
    wm = _convt_weight(w.astype(x.dtype, copy=False), group)
    cols = wm.transpose(0, 2, 1) @ channel_major(x, group)         # [G, Cout/G*k, N*in]
    full = _full_windows(x.shape[2:], kernel, strides, dilations, 0).add_columns(
        cols.reshape(-1, cols.shape[-1]), (x.shape[0], w.shape[1] * group))
    out = _convt_out(x.shape[2:], kernel, strides, pads, dilations, output_padding)
    y = shift_crop(full, pads[:nsp], out)
    if b is not None:
        y = y + bias_shape(b.astype(x.dtype, copy=False), nsp)
    return (y.astype(x.dtype, copy=False),)


def _convt_vjp(gs: Sequence[np.ndarray | None], xs: Sequence[np.ndarray | None],
               ys: Sequence[np.ndarray], *, strides: Ints, pads: Ints, dilations: Ints,
               group: int, output_padding: Ints) -> tuple[np.ndarray | None, ...]:
    x, w, b = xs[0], xs[1], xs[2] if len(xs) > 2 else None
    g = gs[0] if gs[0] is not None else np.zeros_like(ys[0])
    assert w is not None and x is not None
    nsp, kernel = x.ndim - 2, w.shape[2:]
    pw = _full_windows(x.shape[2:], kernel, strides, dilations, pads[:nsp], g.shape[2:])
    gcols = pw.columns(g, g.dtype)                                  # [Cout*k, N*in]
    gcols = gcols.reshape(group, -1, gcols.shape[-1])              # [G, Cout/G*k, N*in]
    wm = _convt_weight(w, group)                                   # [G, Cin/G, Cout/G*k]
    gx = batch_major(wm @ gcols, x.shape[0], x.shape[2:])
    gw = gram(channel_major(x, group), gcols).reshape(w.shape)
    gb = None if b is None else spatial_sum(g).astype(b.dtype)
    return (gx.astype(x.dtype, copy=False), gw.astype(w.dtype, copy=False), gb)[:len(xs)]


def _convt_facts(specs_in: Sequence[Spec | None], specs_out: Sequence[Spec], *, strides: Ints,
                 pads: Ints, dilations: Ints, group: int, output_padding: Ints) -> Facts:
    x, w = specs_in[0], specs_in[1]
    # GEMM view: each input pixel's Cin/G channels times a [Cin/G, Cout/G*prod(k)] weight.
    assert x is not None
    m = x.shape[0] * int(np.prod(x.shape[2:], dtype=np.int64))
    assert w is not None
    n = int(np.prod(w.shape[1:], dtype=np.int64))
    k = w.shape[0] // group
    return Facts(m=m, n=n, k=k, groups=group, macs=group * m * n * k)


# --- lowering -----------------------------------------------------------------------------------


def _convt_pads(auto_pad: str, spatial: Ints, kernel: Ints, strides: Ints, dilations: Ints,
                output_padding: Ints, output_shape: Sequence[int] | None) -> Ints:
    """Pads that make ConvTranspose produce `output_shape` (ONNX's rule for total padding)."""
    n = len(spatial)
    target = (tuple(output_shape)[-n:] if output_shape is not None
              else tuple(i * s for i, s in zip(spatial, strides)))
    full = _full_size(spatial, kernel, strides, dilations)
    total = [f + p - t for f, p, t in zip(full, output_padding, target)]
    small = [t // 2 for t in total]
    big = [t - t // 2 for t in total]
    return tuple(small + big) if auto_pad == "SAME_UPPER" else tuple(big + small)


def lower_conv_transpose(node: Node, auto_pad: str = "NOTSET",
                         dilations: Sequence[int] | None = None, group: int = 1,
                         kernel_shape: Sequence[int] | None = None,
                         output_padding: Sequence[int] | None = None,
                         output_shape: Sequence[int] | None = None,
                         pads: Sequence[int] | None = None,
                         strides: Sequence[int] | None = None) -> Lowered:
    """ONNX ConvTranspose -> conv_transpose, with output_shape/auto_pad resolved to pads."""
    x, w = conv_operands(node, "ConvTranspose")
    nsp = len(x.shape) - 2
    check_kernel(node, kernel_shape, w)
    strides = spatial_attr(node, "strides", strides, nsp, 1)
    dilations = spatial_attr(node, "dilations", dilations, nsp, 1)
    outpad = (0,) * nsp if output_padding is None else tuple(int(p) for p in output_padding)
    if len(outpad) != nsp:
        raise ModelError(node.name, f"output_padding {outpad} must have {nsp} entries")
    if output_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = _convt_pads(auto_pad, x.shape[2:], w.shape[2:], strides, dilations, outpad,
                           output_shape)
    elif auto_pad in ("NOTSET", "VALID", ""):
        pads = (0,) * (2 * nsp) if pads is None or auto_pad == "VALID" else tuple(pads)
    else:
        raise ModelError(node.name, f"auto_pad {auto_pad!r} is not an ONNX mode")
    if len(pads) != 2 * nsp or x.shape[1] != w.shape[0] or w.shape[0] % group:
        raise ModelError(node.name, f"ConvTranspose: x {x.shape}, w {w.shape}, group {group}, "
                         f"pads {pads}")
    return single("conv_transpose", node, strides=strides, pads=tuple(int(p) for p in pads),
                  dilations=dilations, group=int(group), output_padding=outpad)


OPS: tuple[OpDef, ...] = (
    OpDef("conv_transpose", shape=_convt_shape, forward=_convt_forward, vjp=_convt_vjp,
          facts=_convt_facts),
)
LOWER: dict[str, LowerRule] = {"ConvTranspose": lower_conv_transpose}
