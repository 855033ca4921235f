"""conv and conv_transpose: shapes vs ONNX shape inference, forward vs onnxruntime (directly and
end to end), VJPs vs finite differences, facts vs hand arithmetic."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.errors import ModelError
from compiler.ir import Spec
from compiler.ops import OPS
from compiler.ops.conv import shift_crop
from tests.compiler.opcheck import check_forward_vs_ort, check_vjp, lower_and_run

RNG = np.random.default_rng(7)
CONV, CONVT = OPS["conv"], OPS["conv_transpose"]


def _f32(*shape: int, rng: np.random.Generator = RNG) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


class Case(NamedTuple):
    op: str
    inputs: dict[str, np.ndarray]
    attrs: dict[str, Any] = {}
    initializers: tuple[str, ...] = ("w", "b")
    opset: int = 17

    @property
    def inits(self) -> tuple[str, ...]:
        return tuple(n for n in self.initializers if n in self.inputs)


BASIC = Case("Conv", {"x": _f32(1, 3, 8, 8), "w": _f32(16, 3, 3, 3), "b": _f32(16)},
             {"pads": [1, 1, 1, 1]})
GROUPED = Case("Conv", {"x": _f32(2, 4, 7, 7), "w": _f32(6, 2, 3, 3), "b": _f32(6)},
               {"group": 2})
DEPTHWISE = Case("Conv", {"x": _f32(1, 4, 6, 6), "w": _f32(4, 1, 3, 3)},
                 {"group": 4, "pads": [1, 1, 1, 1]})
TRANSPOSED = Case("ConvTranspose",
                  {"x": _f32(1, 2, 3, 3), "w": _f32(2, 3, 3, 3), "b": _f32(3)})
CASES = [
    BASIC, GROUPED, DEPTHWISE, TRANSPOSED,
    Case("Conv", {"x": _f32(2, 3, 9, 7), "w": _f32(4, 3, 3, 2)},
         {"strides": [2, 3], "pads": [0, 1, 2, 0]}),
    Case("Conv", {"x": _f32(1, 2, 9, 9), "w": _f32(3, 2, 3, 3), "b": _f32(3)},
         {"dilations": [2, 3], "pads": [2, 1, 0, 3]}),
    Case("Conv", {"x": _f32(2, 4, 6, 5), "w": _f32(8, 1, 3, 2), "b": _f32(8)},  # multiplier 2
         {"group": 4, "strides": [2, 1], "dilations": [1, 2]}),
    Case("Conv", {"x": _f32(1, 3, 8, 8), "w": _f32(4, 3, 3, 3)},
         {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    Case("Conv", {"x": _f32(1, 3, 8, 7), "w": _f32(4, 3, 4, 2)},
         {"auto_pad": "SAME_LOWER", "strides": [2, 2]}),
    Case("Conv", {"x": _f32(1, 3, 7, 7), "w": _f32(4, 3, 3, 3)},
         {"auto_pad": "VALID", "strides": [2, 2]}),
    Case("Conv", {"x": _f32(2, 3, 11), "w": _f32(4, 3, 3), "b": _f32(4)},   # 1-D
         {"strides": [2], "dilations": [2], "pads": [1, 2]}),
    Case("Conv", {"x": _f32(1, 2, 5, 6, 4), "w": _f32(3, 2, 2, 3, 2), "b": _f32(3)},  # 3-D
         {"pads": [1, 0, 1, 0, 1, 1], "strides": [1, 2, 1]}),
    Case("Conv", {"x": _f32(1, 6, 5, 5), "w": _f32(6, 3, 1, 1)}, {"group": 2}),
    Case("Conv", {"x": _f32(1, 3, 6, 6), "w": _f32(5, 3, 3, 3)},           # weight is an input
         {"kernel_shape": [3, 3]}, initializers=()),
    Case("Conv", {"x": _f32(1, 3, 6, 6), "w": _f32(5, 3, 3, 3)}, {}, opset=11),
    Case("ConvTranspose", {"x": _f32(2, 2, 4, 3), "w": _f32(2, 3, 3, 3)},
         {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]}),
    Case("ConvTranspose", {"x": _f32(1, 1, 3, 3), "w": _f32(1, 2, 3, 3)},
         {"strides": [3, 2], "output_shape": [10, 8]}),
    Case("ConvTranspose", {"x": _f32(1, 1, 3, 3), "w": _f32(1, 2, 3, 3)},
         {"strides": [3, 2], "output_shape": [8, 6]}),
    Case("ConvTranspose", {"x": _f32(1, 2, 3, 4), "w": _f32(2, 2, 3, 3)},
         {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    Case("ConvTranspose", {"x": _f32(1, 2, 3, 4), "w": _f32(2, 2, 3, 3)},
         {"auto_pad": "SAME_LOWER", "strides": [2, 2]}),
    Case("ConvTranspose", {"x": _f32(1, 4, 3, 3), "w": _f32(4, 3, 2, 3), "b": _f32(6)},
         {"group": 2, "dilations": [2, 2], "strides": [2, 1], "pads": [0, 1, 1, 0]}),
    Case("ConvTranspose", {"x": _f32(2, 3, 5), "w": _f32(3, 2, 4)},      # 1-D
         {"strides": [3], "pads": [1, 2], "output_padding": [2]}),
    Case("ConvTranspose", {"x": _f32(1, 2, 2, 3, 2), "w": _f32(2, 2, 2, 2, 3)},  # 3-D
         {"strides": [2, 1, 2]}),
    Case("ConvTranspose", {"x": _f32(1, 2, 3, 3), "w": _f32(2, 2, 3, 3)}, initializers=()),
]


def _id(case: Case) -> str:
    return f"{case.op}-{'-'.join(f'{k}' for k in case.attrs) or 'default'}"


def _lowered_layer(case: Case) -> Any:
    _, lowered, _ = lower_and_run(case.op, case.inputs, ["y"], case.attrs, case.inits)
    (layer,) = lowered.layers
    return layer


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_matches_onnx_shape_inference_and_onnxruntime(case: Case) -> None:
    check_forward_vs_ort(case.op, case.inputs, 1, case.attrs, case.inits, case.opset)


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_vjp_matches_finite_differences(case: Case) -> None:
    layer = _lowered_layer(case)
    check_vjp(OPS[layer.kind], list(case.inputs.values()), layer.attrs)


def test_forward_is_dtype_preserving() -> None:
    layer = _lowered_layer(BASIC)
    x64 = [v.astype(np.float64) for v in BASIC.inputs.values()]
    (y,) = CONV.forward(*x64, **layer.attrs)
    assert y.dtype == np.float64
    (y32,) = CONV.forward(*BASIC.inputs.values(), **layer.attrs)
    assert y32.dtype == np.float32


# --- random geometries: forward vs onnxruntime, vjp vs finite differences ---------------------


@st.composite
def conv_configs(draw: st.DrawFn, transpose: bool) -> tuple[dict, dict]:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    nsp = draw(st.integers(1, 2))
    group = draw(st.integers(1, 3))
    cin, cout = group * draw(st.integers(1, 2)), group * draw(st.integers(1, 3))
    kernel = [draw(st.integers(1, 3)) for _ in range(nsp)]
    strides = [draw(st.integers(1, 3)) for _ in range(nsp)]
    dilations = [draw(st.integers(1, 2)) for _ in range(nsp)]
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    if transpose:
        # pads of at most (eff - 1) / 2 a side keep the output non-empty
        pads = [draw(st.integers(0, (e - 1) // 2)) for _ in range(2) for e in eff]
        outpad = [draw(st.integers(0, s - 1)) for s in strides]
        spatial = [draw(st.integers(1, 4)) for _ in range(nsp)]
        w_shape = (cin, cout // group, *kernel)
        attrs = {"strides": strides, "dilations": dilations, "pads": pads, "group": group,
                 "output_padding": outpad}
    else:
        pads = [draw(st.integers(0, 2)) for _ in range(2 * nsp)]
        spatial = [max(1, e - pads[i] - pads[nsp + i]) + draw(st.integers(0, 4))
                   for i, e in enumerate(eff)]
        w_shape = (cout, cin // group, *kernel)
        attrs = {"strides": strides, "dilations": dilations, "pads": pads, "group": group}
    n = draw(st.integers(1, 2))
    inputs = {"x": _f32(n, cin, *spatial, rng=rng), "w": _f32(*w_shape, rng=rng)}
    if draw(st.booleans()):
        inputs["b"] = _f32(cout, rng=rng)
    return inputs, attrs


@settings(max_examples=25, deadline=None)
@given(conv_configs(transpose=False))
def test_random_conv_matches_onnxruntime_and_finite_differences(config: tuple) -> None:
    inputs, attrs = config
    lowered = check_forward_vs_ort("Conv", inputs, 1, attrs, ("w", "b")[:len(inputs) - 1])
    check_vjp(CONV, list(inputs.values()), lowered.layers[0].attrs)


@settings(max_examples=25, deadline=None)
@given(conv_configs(transpose=True))
def test_random_conv_transpose_matches_onnxruntime_and_finite_differences(config: tuple) -> None:
    inputs, attrs = config
    lowered = check_forward_vs_ort("ConvTranspose", inputs, 1, attrs,
                                   ("w", "b")[:len(inputs) - 1])
    check_vjp(CONVT, list(inputs.values()), lowered.layers[0].attrs)


def test_conv_is_adjoint_of_conv_transpose() -> None:
    # <conv(x), y> == <x, conv_transpose(y)> for the same weights (no bias): the defining
    # identity of the transposed convolution.
    x, w, y = _f32(2, 4, 7, 6), _f32(6, 2, 3, 2), _f32(2, 6, 3, 3)
    geo = {"strides": (2, 2), "pads": (1, 0, 0, 1), "dilations": (1, 2), "group": 2}
    (cx,) = CONV.forward(x.astype(np.float64), w.astype(np.float64), **geo)
    assert cx.shape == y.shape
    # conv_transpose with these pads maps 3x3 back to 7x6 (output_padding (1, 0) restores the
    # last row, which the strided conv never read)
    (ty,) = CONVT.forward(y.astype(np.float64), w.astype(np.float64), output_padding=(1, 0),
                          **geo)
    assert ty.shape == x.shape
    assert np.isclose(np.sum(cx * y), np.sum(x * ty), rtol=1e-10)


# --- facts, lowering decisions, errors -------------------------------------------------------


def _facts(case: Case) -> Any:
    _, lowered, specs = lower_and_run(case.op, case.inputs, ["y"], case.attrs, case.inits)
    layer = lowered.layers[0]
    return OPS[layer.kind].facts([specs[t] for t in layer.inputs], [specs["y"]], **layer.attrs)


def test_conv_facts() -> None:
    f = _facts(BASIC)  # x [1,3,8,8], w [16,3,3,3], pads 1 -> y [1,16,8,8]
    assert (f.m, f.n, f.k, f.groups) == (1 * 8 * 8, 16, 3 * 3 * 3, 1)
    assert f.macs == 1 * 8 * 8 * 16 * 3 * 3 * 3  # N*OH*OW*Cout*Cin*KH*KW


def test_grouped_and_depthwise_conv_facts() -> None:
    f = _facts(GROUPED)  # x [2,4,7,7], w [6,2,3,3], group 2 -> y [2,6,5,5]
    assert (f.m, f.n, f.k, f.groups) == (2 * 5 * 5, 3, 2 * 3 * 3, 2)
    assert f.macs == 2 * 5 * 5 * 6 * 2 * 3 * 3  # N*OH*OW*Cout*(Cin/g)*KH*KW
    f = _facts(DEPTHWISE)  # depthwise: x [1,4,6,6], w [4,1,3,3], pads 1 -> y [1,4,6,6]
    assert (f.m, f.n, f.k, f.groups, f.macs) == (36, 1, 9, 4, 4 * 36 * 9)


def test_conv_transpose_facts() -> None:
    f = _facts(TRANSPOSED)  # x [1,2,3,3], w [2,3,3,3]: every input pixel scatters 3x3x3
    assert (f.m, f.n, f.k, f.groups) == (1 * 3 * 3, 3 * 3 * 3, 2, 1)
    assert f.macs == 1 * 3 * 3 * 2 * 3 * 3 * 3  # N*H*W*Cin*Cout*KH*KW


def test_auto_pad_resolves_to_explicit_pads() -> None:
    # in 8, stride 2, kernel 4 -> out 4, total pad (4-1)*2 + 4 - 8 = 2; in 7 -> out 4, total 3
    layer = _lowered_layer(Case("Conv", {"x": _f32(1, 1, 8, 7), "w": _f32(1, 1, 4, 4)},
                                {"auto_pad": "SAME_LOWER", "strides": [2, 2]}))
    assert layer.attrs["pads"] == (1, 2, 1, 1)  # SAME_LOWER puts the odd pad first
    assert CONV.shape([Spec((1, 1, 8, 7)), Spec((1, 1, 4, 4))], **layer.attrs)[0].shape == (
        1, 1, 4, 4)


def test_same_pad_with_dilation_uses_the_dilated_kernel() -> None:
    # onnxruntime refuses SAME with dilations; ONNX's rule: eff = (3-1)*2+1 = 5, out = 5,
    # total pad = (5-1)*1 + 5 - 5 = 4 -> 2 a side. Explicit pads (2, 2, 2, 2) run in onnxruntime.
    inputs = {"x": _f32(1, 3, 5, 5), "w": _f32(2, 3, 3, 3)}
    same = {"auto_pad": "SAME_UPPER", "dilations": [2, 2]}
    assert _lowered_layer(Case("Conv", inputs, same)).attrs["pads"] == (2, 2, 2, 2)
    explicit = {"pads": [2, 2, 2, 2], "dilations": [2, 2]}
    check_forward_vs_ort("Conv", inputs, 1, explicit, ("w",))
    (got,), _, _ = lower_and_run("Conv", inputs, ["y"], same, ("w",))
    (want,), _, _ = lower_and_run("Conv", inputs, ["y"], explicit, ("w",))
    np.testing.assert_array_equal(got, want)


def test_shift_crop_pads_crops_and_is_its_own_adjoint() -> None:
    x = np.arange(5.0)
    np.testing.assert_array_equal(shift_crop(x, [-2], [9]), [0, 0, 0, 1, 2, 3, 4, 0, 0])
    np.testing.assert_array_equal(shift_crop(x, [1], [3]), [1, 2, 3])
    a, g = RNG.standard_normal(5), RNG.standard_normal(4)
    # <crop(a), g> == <a, crop^T(g)> with crop^T = shift_crop(., -b, len)
    assert np.isclose(shift_crop(a, [2], [4]) @ g, a @ shift_crop(g, [-2], [5]))


@pytest.mark.parametrize("attrs, inputs, message", [
    ({"pads": [1, -1, 0, 0]}, {"x": _f32(1, 2, 4, 4), "w": _f32(2, 2, 3, 3)}, "non-negative"),
    ({"group": 3}, {"x": _f32(1, 4, 4, 4), "w": _f32(2, 2, 3, 3)}, "channels"),
    ({"kernel_shape": [2, 2]}, {"x": _f32(1, 2, 4, 4), "w": _f32(2, 2, 3, 3)}, "kernel_shape"),
    ({"auto_pad": "SAME"}, {"x": _f32(1, 2, 4, 4), "w": _f32(2, 2, 3, 3)}, "auto_pad"),
    ({"strides": [1]}, {"x": _f32(1, 2, 4, 4), "w": _f32(2, 2, 3, 3)}, "strides"),
])
def test_conv_rejects_bad_attributes(attrs: dict, inputs: dict, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        lower_and_run("Conv", inputs, ["y"], attrs, ("w",))


@pytest.mark.parametrize(("shape", "attrs"), [
    ((2, 3, 7, 6), {"strides": (1, 1), "pads": (1, 1, 1, 1), "dilations": (1, 1)}),
    ((1, 4, 9, 8), {"strides": (2, 1), "pads": (0, 1, 2, 0), "dilations": (1, 2)}),
    ((2, 5, 11), {"strides": (3,), "pads": (2, 1), "dilations": (2,)}),
])
def test_depthwise_vjp_fast_path_matches_finite_differences(shape, attrs) -> None:
    rng = np.random.default_rng(1)
    c, nsp = shape[1], len(shape) - 2
    x, w = rng.standard_normal(shape), rng.standard_normal((c, 1) + (3,) * nsp)
    check_vjp(CONV, [x, w, rng.standard_normal(c)], {**attrs, "group": c})


# --- vjp vs a loop-over-windows oracle, in float16, float32 and float64 ----------------------


def _windowwise_conv_vjp(x: np.ndarray, w: np.ndarray, g: np.ndarray, strides: tuple,
                         pads: tuple, dilations: tuple, group: int
                         ) -> tuple[np.ndarray, np.ndarray]:
    """(gx, gw) of conv straight from its definition, one output position at a time in
    float64: each window's input slice gets g @ w, each weight gets g times the window."""
    nsp = x.ndim - 2
    x, w, g = x.astype(np.float64), w.astype(np.float64), g.astype(np.float64)
    xp = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[nsp + i]) for i in range(nsp)])
    gxp, gw = np.zeros_like(xp), np.zeros_like(w)
    cg, mg = w.shape[1], w.shape[0] // group
    for pos in np.ndindex(*g.shape[2:]):
        window = tuple(slice(p * s, p * s + (k - 1) * d + 1, d)
                       for p, s, k, d in zip(pos, strides, w.shape[2:], dilations))
        for j in range(group):
            cin = (slice(None), slice(j * cg, (j + 1) * cg)) + window
            cout = slice(j * mg, (j + 1) * mg)
            gy = g[(slice(None), cout) + pos]                                 # [N, M]
            gw[cout] += np.tensordot(gy, xp[cin], axes=(0, 0))
            gxp[cin] += np.tensordot(gy, w[cout], axes=(1, 0))
    crop = tuple(slice(pads[i], pads[i] + x.shape[2 + i]) for i in range(nsp))
    return gxp[(Ellipsis,) + crop], gw


ORACLE_CASES = [  # x shape, w shape, attrs; every case has batch 2
    ((2, 3, 9, 8), (4, 3, 3, 2), {"strides": (2, 3), "pads": (0, 1, 2, 0), "dilations": (1, 2)}),
    ((2, 4, 7, 7), (6, 2, 3, 3), {"strides": (1, 2), "pads": (1, 1, 0, 1), "dilations": (2, 1),
                                  "group": 2}),
    ((2, 5, 9, 8), (5, 1, 3, 3), {"strides": (2, 1), "pads": (1, 0, 2, 1), "dilations": (1, 2),
                                  "group": 5}),                           # depthwise
    ((2, 3, 8, 8), (3, 1, 5, 3), {"strides": (3, 2), "pads": (2, 1, 2, 1), "dilations": (1, 1),
                                  "group": 3}),                           # depthwise
    ((2, 2, 7, 6), (4, 1, 3, 3), {"strides": (1, 1), "pads": (1, 1, 1, 1), "dilations": (1, 1),
                                  "group": 2}),                           # multiplier 2
    ((2, 4, 13), (4, 1, 3), {"strides": (2,), "pads": (2, 1), "dilations": (3,), "group": 4}),
    ((2, 2, 5, 6, 4), (3, 2, 2, 3, 2), {"strides": (1, 2, 1), "pads": (1, 0, 1, 0, 1, 1),
                                         "dilations": (1, 1, 2)}),
    ((2, 4, 7, 7), (6, 4, 1, 1), {"strides": (2, 2), "pads": (0, 0, 0, 0),
                                  "dilations": (1, 1)}),
    ((2, 4, 5, 6), (6, 2, 1, 1), {"strides": (1, 1), "pads": (0, 0, 0, 0),
                                  "dilations": (1, 1), "group": 2}),        # pointwise
]


@pytest.mark.parametrize(("dtype", "tol"), [(np.float16, 2e-3), (np.float32, 1e-5),
                                           (np.float64, 1e-12)])
@pytest.mark.parametrize(("x_shape", "w_shape", "attrs"), ORACLE_CASES)
def test_conv_vjp_matches_windowwise_oracle(x_shape, w_shape, attrs, dtype, tol) -> None:
    rng = np.random.default_rng(3)
    attrs = {"group": 1, **attrs}
    x, w = rng.standard_normal(x_shape).astype(dtype), rng.standard_normal(w_shape).astype(dtype)
    (y,) = CONV.forward(x, w, **attrs)
    g = rng.standard_normal(y.shape).astype(dtype)
    gx, gw = CONV.vjp((g,), (x, w), (y,), **attrs)
    want_gx, want_gw = _windowwise_conv_vjp(x, w, g, **attrs)
    assert gx.dtype == gw.dtype == dtype
    np.testing.assert_allclose(gx, want_gx, rtol=tol, atol=tol * np.abs(want_gx).max())
    np.testing.assert_allclose(gw, want_gw, rtol=tol, atol=tol * np.abs(want_gw).max())
