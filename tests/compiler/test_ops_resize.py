"""resize (ONNX Resize, nearest and linear): shapes vs ONNX shape inference, forward vs
onnxruntime (directly and end to end), VJPs vs finite differences, facts vs hand arithmetic."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.errors import ModelError
from compiler.ops import OPS
from tests.compiler.opcheck import check_forward_vs_ort, check_vjp, lower_and_run

RNG = np.random.default_rng(13)
RESIZE = OPS["resize"]
NONE = np.zeros(0, np.float32)   # an empty roi / scales input counts as absent


def _f32(*shape: int, rng: np.random.Generator = RNG) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def _scales(*s: float) -> np.ndarray:
    return np.array(s, np.float32)


def _sizes(*s: int) -> np.ndarray:
    return np.array(s, np.int64)


class Case(NamedTuple):
    x: np.ndarray
    scales: np.ndarray
    sizes: np.ndarray | None = None
    attrs: dict[str, Any] = {}
    opset: int = 19

    @property
    def inputs(self) -> dict[str, np.ndarray]:
        extra = {"sizes": self.sizes} if self.sizes is not None else {}
        return {"x": self.x, "roi": NONE, "scales": self.scales, **extra}


def _nearest(transform: str, rounding: str) -> dict[str, str]:
    return {"mode": "nearest", "coordinate_transformation_mode": transform,
            "nearest_mode": rounding}


def _linear(transform: str) -> dict[str, str]:
    return {"mode": "linear", "coordinate_transformation_mode": transform}


X = _f32(1, 2, 3, 4)
UP = Case(X, _scales(1, 1, 2, 3))
CASES = [
    UP,
    Case(X, _scales(1, 1, 0.6, 0.6)),
    Case(X, NONE, _sizes(1, 2, 7, 5)),
    Case(X, NONE, _sizes(1, 2, 2, 3)),
    Case(X, NONE, _sizes(1, 2, 8, 9), _nearest("align_corners", "floor")),
    Case(X, _scales(1, 1, 2, 2), None, _nearest("asymmetric", "round_prefer_ceil")),
    Case(X, NONE, _sizes(1, 2, 5, 7), _nearest("half_pixel", "ceil")),
    Case(X, NONE, _sizes(1, 2, 5, 7), _nearest("pytorch_half_pixel", "round_prefer_floor")),
    Case(X, _scales(1, 1, 2, 2), None, _linear("half_pixel")),
    Case(X, _scales(1, 1, 2, 2), None, _linear("align_corners")),
    Case(X, _scales(1, 1, 3, 1.5), None, _linear("asymmetric")),
    Case(X, NONE, _sizes(1, 2, 1, 6), _linear("pytorch_half_pixel")),  # length-1 axis
    Case(X, NONE, _sizes(1, 2, 5, 3), _linear("half_pixel")),
    Case(X, _scales(1, 1, 0.75, 1.5), None, _linear("half_pixel_symmetric")),
    Case(X, _scales(1, 1, 1.7, 0.8), None, _nearest("half_pixel_symmetric",
                                                    "round_prefer_floor")),
    Case(_f32(1, 1, 2, 3, 4), _scales(1, 1, 2, 1.5, 0.5), None, _linear("half_pixel")),
    Case(X, NONE, _sizes(7, 5), {"axes": [2, 3]}),
    Case(X, NONE, _sizes(5, 7), {"axes": [3, -2], **_linear("align_corners")}),
    Case(X, _scales(2, 3), None, {"axes": [2, 3]}),
    Case(X, NONE, _sizes(1, 2, 7, 7), {"keep_aspect_ratio_policy": "not_larger"}),
    Case(X, NONE, _sizes(6, 6), {"axes": [2, 3], "keep_aspect_ratio_policy": "not_smaller",
                                 **_linear("half_pixel")}),
    Case(X, NONE, _sizes(1, 2, 6, 8), _nearest("tf_half_pixel_for_nn", "round_prefer_floor"),
         opset=11),
    Case(X, NONE, _sizes(1, 2, 5, 6), _linear("asymmetric"), opset=11),
    Case(X, _scales(1, 1, 2, 2), None, {"antialias": 1, **_linear("half_pixel")}, opset=18),
    Case(RNG.integers(0, 255, (1, 3, 4, 4)).astype(np.uint8), _scales(1, 1, 2, 2)),
]


def _id(case: Case) -> str:
    given = case.sizes if case.sizes is not None else case.scales
    return f"{case.attrs.get('mode', 'nearest')}-{case.x.shape}-{given.tolist()}-{case.opset}"


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_matches_onnx_shape_inference_and_onnxruntime(case: Case) -> None:
    check_forward_vs_ort("Resize", case.inputs, 1, case.attrs,
                         ("roi", "scales", "sizes")[:len(case.inputs) - 1], case.opset)


FLOAT_CASES = [c for c in CASES if c.x.dtype.kind == "f"]


@pytest.mark.parametrize("case", FLOAT_CASES, ids=[_id(c) for c in FLOAT_CASES])
def test_vjp_matches_finite_differences(case: Case) -> None:
    (layer,) = _lower(case).layers
    check_vjp(RESIZE, [case.x], layer.attrs)


def _lower(case: Case) -> Any:
    _, lowered, _ = lower_and_run("Resize", case.inputs, ["y"], case.attrs,
                                  ("roi", "scales", "sizes"))
    return lowered


# --- random resizes ----------------------------------------------------------------------------


@st.composite
def resize_configs(draw: st.DrawFn) -> tuple[np.ndarray, dict, dict]:
    shape = (1, 2, draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    x = _f32(*shape, rng=np.random.default_rng(draw(st.integers(0, 2**32 - 1))))
    # powers of two keep nearest's ties exact in onnxruntime's float32 coordinates too
    factors = [draw(st.sampled_from([0.5, 1.0, 2.0, 4.0])) for _ in range(2)]
    # whole output lengths: with fractional ones (scales given) onnxruntime departs from ONNX
    # in align_corners (see the fractional-length test below)
    factors = [f if (d * f).is_integer() and d * f >= 1 else 1.0
               for d, f in zip(shape[2:], factors)]
    if draw(st.booleans()):
        given = {"roi": NONE, "scales": _scales(1, 1, *factors)}
    else:
        sizes = [int(d * f) for d, f in zip(shape[2:], factors)]
        given = {"roi": NONE, "scales": NONE, "sizes": _sizes(1, 2, *sizes)}
    mode = draw(st.sampled_from(["nearest", "linear"]))
    attrs = {"mode": mode, "coordinate_transformation_mode": draw(st.sampled_from(
        ["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"]))}
    if mode == "nearest":
        attrs["nearest_mode"] = draw(st.sampled_from(
            ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]))
    return x, given, attrs


@settings(max_examples=30, deadline=None)
@given(resize_configs())
def test_random_resize_matches_onnxruntime_and_finite_differences(config: tuple) -> None:
    x, given, attrs = config
    lowered = check_forward_vs_ort("Resize", {"x": x, **given}, 1, attrs, tuple(given), 19)
    check_vjp(RESIZE, [x], lowered.layers[0].attrs)


# --- closed forms, facts, errors ---------------------------------------------------------------


def test_nearest_upsample_repeats_pixels() -> None:
    x = np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)
    (y,), _, _ = lower_and_run("Resize", {"x": x, "roi": NONE, "scales": _scales(1, 1, 2, 2)},
                               ["y"], {}, ("roi", "scales"))
    np.testing.assert_array_equal(y, x.repeat(2, axis=2).repeat(2, axis=3))


def test_linear_vjp_is_the_transposed_interpolation() -> None:
    # align_corners 2 -> 3: y = [x0, (x0 + x1) / 2, x1], so g -> [g0 + g1/2, g1/2 + g2]
    attrs = {"mode": "linear", "coordinate_transformation_mode": "align_corners",
             "nearest_mode": "round_prefer_floor", "scales": (1.5,), "sizes": (3,)}
    (y,) = RESIZE.forward(np.array([2.0, 4.0]), **attrs)
    np.testing.assert_allclose(y, [2.0, 3.0, 4.0])
    (gx,) = RESIZE.vjp((np.array([1.0, 10.0, 100.0]),), (np.array([2.0, 4.0]),), (y,), **attrs)
    np.testing.assert_allclose(gx, [6.0, 105.0])


def test_fractional_length_align_corners_follows_the_onnx_reference() -> None:
    # scales 0.6 on width 4: the output has floor(2.4) = 2 columns, and ONNX (spec and
    # reference) divides by the fractional length 2.4 - 1, so column 1 samples x = 3 / 1.4.
    # onnxruntime divides by 2 - 1 instead; edgesim follows ONNX's backend tests here.
    from onnx.reference import ReferenceEvaluator

    from tests.compiler.opcheck import onnx_single_node

    inputs = {"x": X, "roi": NONE, "scales": _scales(1, 1, 0.6, 0.6)}
    attrs = _linear("align_corners")
    model = onnx_single_node("Resize", inputs, ["y"], attrs, ("roi", "scales"), 19)
    (want,) = ReferenceEvaluator(model).run(None, {"x": X})
    (got,), _, _ = lower_and_run("Resize", inputs, ["y"], attrs, ("roi", "scales"))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(got[..., 0, 1], X[..., 0, 2] * (1 - 1 / 7) + X[..., 0, 3] / 7,
                               rtol=1e-6)   # 3 / 1.4 = 2 + 1/7


def test_facts() -> None:
    lowered = _lower(CASES[8])   # linear, [1,2,3,4] -> [1,2,6,8], two resized axes
    layer = lowered.layers[0]
    from compiler.ir import Spec
    f = RESIZE.facts([Spec((1, 2, 3, 4))], [Spec((1, 2, 6, 8))], **layer.attrs)
    assert f.ops == 1 * 2 * 6 * 8 * 4  # output elements × 2x2 bilinear taps
    assert layer.attrs["sizes"] == (1, 2, 6, 8) and layer.attrs["scales"] == (1, 1, 2, 2)


@pytest.mark.parametrize("attrs, given, message", [
    ({"mode": "cubic"}, {"scales": _scales(1, 1, 2, 2)}, "cubic"),
    ({"coordinate_transformation_mode": "tf_crop_and_resize"}, {"scales": _scales(1, 1, 2, 2)},
     "tf_crop_and_resize"),
    ({"mode": "linear", "antialias": 1}, {"scales": _scales(1, 1, 0.5, 0.5)}, "antialias"),
    ({}, {"scales": NONE}, "exactly one"),
    ({}, {"scales": _scales(1, 2)}, "2 scales/sizes for 4 axes"),
])
def test_unsupported_variants_are_refused(attrs: dict, given: dict, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        lower_and_run("Resize", {"x": X, "roi": NONE, **given}, ["y"], attrs,
                      ("roi", "scales"))


def test_non_constant_scales_are_refused() -> None:
    with pytest.raises(ModelError, match="constant"):
        lower_and_run("Resize", {"x": X, "roi": NONE, "scales": _scales(1, 1, 2, 2)}, ["y"])
