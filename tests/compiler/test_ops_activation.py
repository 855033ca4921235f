"""activation ops (and Cast, Dropout): shapes vs ONNX shape inference, forward vs onnxruntime,
VJPs vs finite differences, facts vs hand arithmetic."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

from compiler.errors import ModelError
from compiler.ir import Spec
from compiler.ops import LOWER, OPS
from compiler.ops.opdef import Node
from tests.compiler.opcheck import Case, check_forward_vs_ort, check_vjp

RNG = np.random.default_rng(1)
ACT, CAST = OPS["activation"], OPS["cast"]


def _f32(*shape: int, low: float = -4.0, high: float = 4.0) -> np.ndarray:
    return RNG.uniform(low, high, shape).astype(np.float32)


def _scalar(v: float, dtype: str = "float32") -> np.ndarray:
    return np.array(v, dtype=dtype)




X = _f32(2, 3, 4)
POS = _f32(2, 3, 4, low=0.1, high=4.0)
CASES = [
    Case("Relu", {"x": X}),
    Case("Relu", {"x": RNG.integers(-9, 9, (5,)).astype(np.int8)}, opset=14),
    Case("LeakyRelu", {"x": X}),
    Case("LeakyRelu", {"x": X}, {"alpha": 0.3}),
    # PRelu: constant slopes all <= 1 (MTCNN's, of both signs: max form), all >= 1 (min
    # form), on both sides of 1 (where form), and a run-time slope
    Case("PRelu", {"x": X, "s": np.array([[-0.7], [0.0], [1.0]], np.float32)}, initializers=("s",)),
    Case("PRelu", {"x": X, "s": np.array([1.0, 1.5, 3.0, 2.0], np.float32)}, initializers=("s",)),
    Case("PRelu", {"x": X, "s": np.array([[-0.5], [0.2], [1.5]], np.float32)}, initializers=("s",)),
    Case("PRelu", {"x": X, "s": _f32(3, 4, low=-1, high=2)}),
    Case("Sigmoid", {"x": _f32(3, 5, low=-30, high=30)}),
    Case("Tanh", {"x": X}),
    Case("HardSigmoid", {"x": X}),
    Case("HardSigmoid", {"x": X}, {"alpha": 0.5, "beta": 0.6}),
    Case("HardSwish", {"x": _f32(4, 5, low=-5, high=5)}),
    Case("Gelu", {"x": X}, opset=20),
    Case("Gelu", {"x": X}, {"approximate": "tanh"}, opset=20),
    Case("Erf", {"x": X}),
    Case("Sqrt", {"x": POS}),
    Case("Exp", {"x": X}),
    Case("Log", {"x": POS}),
    Case("Neg", {"x": X}),
    Case("Neg", {"x": RNG.integers(-9, 9, (5,)).astype(np.int64)}),
    Case("Abs", {"x": X}),
    Case("Abs", {"x": RNG.integers(-9, 9, (5,)).astype(np.int32)}),
    Case("Reciprocal", {"x": POS}),
    Case("Softplus", {"x": _f32(3, 4, low=-30, high=30)}),
    Case("Elu", {"x": X}),
    Case("Elu", {"x": X}, {"alpha": 2.0}),
    Case("Selu", {"x": X}),
    Case("Selu", {"x": X}, {"alpha": 2.0, "gamma": 3.0}),
    Case("Softsign", {"x": X}),
    # Clip: constant bounds (inputs from opset 11), run-time bounds, one bound, attrs (opset 10)
    Case("Clip", {"x": X, "lo": _scalar(-1), "hi": _scalar(2)}, initializers=("lo", "hi")),
    Case("Clip", {"x": X, "lo": _scalar(-1), "hi": _scalar(2)}),
    Case("Clip", {"x": X, "lo": _scalar(3), "hi": _scalar(-1)}, initializers=("lo", "hi")),
    Case("Clip", {"x": X, "lo": _scalar(0)}, initializers=("lo",)),
    Case("Clip", {"x": X, "": np.zeros(0), "hi": _scalar(6)}, initializers=("hi",)),
    Case("Clip", {"x": X, "lo": _scalar(-1), "hi": _scalar(2)}, initializers=("hi",)),
    Case("Clip", {"x": X}),
    Case("Clip", {"x": RNG.integers(-9, 9, (6,)).astype(np.int8), "lo": _scalar(-2, "int8"),
                  "hi": _scalar(5, "int8")}, initializers=("lo", "hi"), opset=13),
    Case("Clip", {"x": X}, {"min": -0.5, "max": 0.5}, opset=10),
    Case("Clip", {"x": X}, {"max": 0.5}, opset=10),
    # Dropout at inference: identity (masks: see the reference-evaluator test below)
    Case("Dropout", {"x": X}),
    Case("Dropout", {"x": X}, {"ratio": 0.3}, opset=11),
    Case("Dropout", {"x": X, "r": _scalar(0.4), "t": np.array(False)}, initializers=("r", "t")),
    Case("Dropout", {"x": X, "r": _scalar(0.0), "t": np.array(True)}, initializers=("r", "t")),
    # Cast: float <-> float, float -> int truncates, -> bool, no-op
    Case("Cast", {"x": _f32(3, 4) * 100}, {"to": 10}),
    Case("Cast", {"x": X}, {"to": 11}),
    Case("Cast", {"x": _f32(3, 4) * 100}, {"to": 6}),
    Case("Cast", {"x": _f32(3, 4) * 100}, {"to": 7}),
    Case("Cast", {"x": np.array([0.0, -0.0, 2.5, -1.0], np.float32)}, {"to": 9}),
    Case("Cast", {"x": RNG.integers(-99, 99, (5,)).astype(np.int64)}, {"to": 1}),
    Case("Cast", {"x": RNG.integers(0, 255, (5,)).astype(np.uint8)}, {"to": 3}),
    Case("Cast", {"x": X}, {"to": 1}),
    Case("CastLike", {"x": X, "like": np.zeros(1, np.float16)}, initializers=("like",)),
]


@pytest.mark.ort
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.op)
def test_forward_matches_onnxruntime(case: Case) -> None:
    check_forward_vs_ort(case.op, case.inputs, case.n_outputs, case.attrs, case.initializers,
                         case.opset)


_DROPOUT_MASK_CASES = [
    ({"x": X}, {}, (), 17),
    ({"x": X}, {"ratio": 0.3}, (), 11),
    ({"x": X, "r": _scalar(0.4), "t": np.array(False)}, {}, ("r", "t"), 17),
    ({"x": X, "r": _scalar(0.0), "t": np.array(True)}, {}, ("r", "t"), 17),
]


@pytest.mark.parametrize(("inputs", "attrs", "inits", "opset"), _DROPOUT_MASK_CASES)
def test_dropout_mask_matches_onnx_reference(inputs: dict, attrs: dict, inits: tuple,
                                              opset: int) -> None:
    # onnxruntime's inference-mode mask is not reliable (all-false or all-true from run to
    # run); the ONNX reference implementation, which made the backend test data, says all true
    from onnx.reference import ReferenceEvaluator

    from tests.compiler.opcheck import lower_and_run, onnx_single_node

    model = onnx_single_node("Dropout", inputs, ["y", "mask"], attrs, inits, opset)
    feeds = {k: v for k, v in inputs.items() if k not in inits}
    y_ref, mask_ref = ReferenceEvaluator(model).run(None, feeds)
    (y, mask), _, _ = lower_and_run("Dropout", inputs, ["y", "mask"], attrs, inits)
    np.testing.assert_array_equal(y, y_ref)
    assert mask.dtype == mask_ref.dtype == np.bool_
    np.testing.assert_array_equal(mask, mask_ref)


def test_swish_matches_closed_form() -> None:
    # Swish is opset 24, newer than onnxruntime runs here: x * sigmoid(alpha x) by hand
    x = _f32(7).astype(np.float64)
    node = Node("s", "Swish", ("x",), ("y",), {"x": Spec((7,), "float64")}, {})
    (layer,) = LOWER["Swish"](node, alpha=1.5).layers
    (y,) = ACT.forward(x, **layer.attrs)
    np.testing.assert_allclose(y, x / (1 + np.exp(-1.5 * x)), rtol=1e-12)


def test_silu_is_x_times_sigmoid() -> None:
    x = _f32(10)
    (y,) = ACT.forward(x, fn="silu")
    (s,) = ACT.forward(x, fn="sigmoid")
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, x * s, rtol=1e-6)


# --- VJPs vs central finite differences (float64) ---

# fn -> (params, input sampler avoiding kinks and domain edges)
_VJP_FNS: dict[str, tuple[dict[str, Any], Any]] = {
    "relu": ({}, None), "sigmoid": ({}, None), "tanh": ({}, None), "erf": ({}, None),
    "clip": ({"min": -0.5, "max": 1.0}, None), "leaky_relu": ({"alpha": 0.1}, None),
    "hard_sigmoid": ({"alpha": 0.2, "beta": 0.5}, None), "hard_swish": ({}, None),
    "gelu": ({"approximate": "none"}, None), "silu": ({"alpha": 1.0}, None),
    "exp": ({}, None), "neg": ({}, None), "abs": ({}, None), "softplus": ({}, None),
    "elu": ({"alpha": 1.5}, None), "selu": ({}, None), "softsign": ({}, None),
    "sqrt": ({}, "positive"), "log": ({}, "positive"), "reciprocal": ({}, "positive"),
}
_VJP_EXTRA = [("gelu", {"approximate": "tanh"}), ("silu", {"alpha": 0.7}),
              ("clip", {"min": -math.inf, "max": 0.5})]


@settings(max_examples=30, deadline=None)
@given(shape=array_shapes(min_dims=0, max_dims=3, max_side=4),
       fn=st.sampled_from(sorted(_VJP_FNS)), seed=st.integers(0, 2**16))
def test_vjp_matches_finite_differences(shape: tuple[int, ...], fn: str, seed: int) -> None:
    params, domain = _VJP_FNS[fn]
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.2, 3.0, shape) if domain == "positive" else rng.uniform(-4, 4, shape)
    check_vjp(ACT, [x], {"fn": fn, **params}, seed=seed)


@pytest.mark.parametrize(("fn", "params"), _VJP_EXTRA)
def test_vjp_with_other_parameters(fn: str, params: dict[str, Any]) -> None:
    check_vjp(ACT, [np.linspace(-3.1, 3.3, 16)], {"fn": fn, **params})  # no point on a kink


def test_vjp_keeps_float32_and_skips_integers() -> None:
    x = _f32(5)
    ys = ACT.forward(x, fn="leaky_relu", alpha=0.1)
    (g,) = ACT.vjp((np.ones(5, np.float32),), (x,), ys, fn="leaky_relu", alpha=0.1)
    assert g.dtype == np.float32
    ix = np.arange(-2, 3)
    assert ACT.vjp((np.ones(5),), (ix,), ACT.forward(ix, fn="relu"), fn="relu") == (None,)


def test_cast_vjp_casts_back_between_floats_only() -> None:
    x = RNG.standard_normal(4)
    check_vjp(CAST, [x], {"to": "float64"})
    (g,) = CAST.vjp((np.ones(4, np.float32),), (x,), CAST.forward(x, to="float32"),
                    to="float32")
    assert g.dtype == np.float64
    assert CAST.vjp((np.ones(4),), (x,), CAST.forward(x, to="int32"), to="int32") == (None,)


# --- facts, lowering details, errors ---

def test_facts_count_elementwise_ops() -> None:
    s = [Spec((2, 8))]
    assert ACT.facts(s, s, fn="relu").ops == 16  # 16 elements x 1 max
    assert ACT.facts(s, s, fn="clip", min=0.0, max=6.0).ops == 16 * 2  # a max and a min
    assert ACT.facts(s, s, fn="relu").macs == 0
    assert CAST.facts(s, [Spec((2, 8), "float16")], to="float16").ops == 16


def _node(op: str, inputs: dict[str, Spec], consts: dict[str, np.ndarray] | None = None,
          outputs: tuple[str, ...] = ("y",)) -> Node:
    return Node("n", op, tuple(inputs), outputs, inputs, consts or {})


@pytest.mark.parametrize(("slope", "fns"), [
    ([-0.7, 0.0, 1.0], ["mul", "max"]), ([1.0, 1.5, 3.0], ["mul", "min"]),
    ([-0.5, 0.2, 1.5], ["less", "mul", "where"])])
def test_prelu_takes_the_two_layer_form_when_the_slopes_allow(slope: list, fns: list) -> None:
    s = np.array(slope, np.float32)
    node = Node("p", "PRelu", ("x", "s"), ("y",), {"x": Spec((2, 3), "float32"),
                                                  "s": Spec((3,), "float32")}, {"s": s})
    assert [layer.attrs["fn"] for layer in LOWER["PRelu"](node).layers] == fns


def test_clip_with_constant_bounds_is_one_activation() -> None:
    specs = {"x": Spec((3,)), "lo": Spec(()), "hi": Spec(())}
    consts = {"lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32)}
    (layer,) = LOWER["Clip"](_node("Clip", specs, consts)).layers
    assert (layer.kind, layer.inputs) == ("activation", ("x",))
    assert dict(layer.attrs) == {"fn": "clip", "min": 0.0, "max": 6.0}  # ReLU6, for fusion


def test_noop_cast_lowers_to_identity() -> None:
    (layer,) = LOWER["Cast"](_node("Cast", {"x": Spec((3,))}), to=1).layers
    assert layer.kind == "identity"


@pytest.mark.parametrize("to", [16, 17, 21, 22, 23, 8])  # bfloat16, float8, int4, fp4, string
def test_cast_to_types_numpy_cannot_hold_is_refused(to: int) -> None:
    with pytest.raises(ModelError, match="not supported"):
        LOWER["Cast"](_node("Cast", {"x": Spec((3,))}), to=to)


def test_dropout_in_training_mode_is_refused() -> None:
    specs = {"x": Spec((3,)), "r": Spec(()), "t": Spec((), "bool")}
    consts = {"r": np.array(0.5, np.float32), "t": np.array(True)}
    with pytest.raises(ModelError, match="training"):
        LOWER["Dropout"](_node("Dropout", specs, consts))
    with pytest.raises(ModelError, match="training"):  # mode known only at run time
        LOWER["Dropout"](_node("Dropout", specs, {"r": consts["r"]}))


def test_gelu_refuses_unknown_approximation() -> None:
    with pytest.raises(ModelError, match="approximate"):
        LOWER["Gelu"](_node("Gelu", {"x": Spec((3,))}), approximate="erf")


def test_float_only_activations_refuse_integers() -> None:
    with pytest.raises(ModelError, match="float"):
        LOWER["Sigmoid"](_node("Sigmoid", {"x": Spec((3,), "int64")}))
