"""eltwise ops: shapes vs ONNX shape inference, forward vs onnxruntime, VJPs vs finite
differences, facts vs hand arithmetic."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

from compiler.errors import ModelError
from compiler.ir import Spec
from compiler.ops import LOWER, OPS
from compiler.ops.opdef import Node
from tests.compiler.opcheck import Case, check_forward_vs_ort, check_vjp

RNG = np.random.default_rng(0)
ELTWISE = OPS["eltwise"]


def _f32(*shape: int, low: float = -3.0, high: float = 3.0) -> np.ndarray:
    return RNG.uniform(low, high, shape).astype(np.float32)


def _ints(dtype: str, *shape: int, low: int = -20, high: int = 20) -> np.ndarray:
    return RNG.integers(low, high, shape).astype(dtype)




_NONZERO = np.array([[3, -7, 7, -3], [5, 1, -1, 9]], dtype=np.int32)
CASES = [
    Case("Add", {"a": _f32(2, 3, 4), "b": _f32(4)}),
    Case("Add", {"a": _f32(2, 1, 4), "b": _f32(3, 1)}, initializers=("b",)),
    Case("Add", {"a": _ints("int8", 3, 4, low=-128, high=127),
                 "b": _ints("int8", 3, 4, low=-128, high=127)}),  # int8 wraps around
    Case("Add", {"a": _ints("uint8", 3, 4, low=0, high=255),
                 "b": _ints("uint8", 3, 4, low=0, high=255)}),
    Case("Sub", {"a": _f32(2, 3), "b": _f32(2, 1)}),
    Case("Sub", {"a": _ints("int64", 5), "b": _ints("int64", 1)}),
    Case("Mul", {"a": _f32(1, 3, 1), "b": _f32(2, 1, 5)}),
    Case("Mul", {"a": _ints("int32", 4), "b": _ints("int32", 4)}),
    Case("Div", {"a": _f32(2, 3), "b": _f32(3, low=0.5, high=2.0)}),
    Case("Div", {"a": np.array([[7, -7, 8, -9], [-1, 1, 0, 5]], np.int32), "b": _NONZERO}),
    Case("Div", {"a": _ints("int64", 2, 4), "b": _NONZERO.astype(np.int64)}),
    Case("Div", {"a": _ints("uint8", 6, low=0, high=255),
                 "b": _ints("uint8", 6, low=1, high=9)}),
    Case("Pow", {"a": _f32(2, 3, low=0.1, high=3), "b": _f32(3)}),
    Case("Pow", {"a": _f32(4), "b": np.array([0, 1, 2, 3], np.int64)}),
    Case("Pow", {"a": np.array([1, 2, 3, -2], np.int64), "b": np.array([4, 3, 2, 3], np.int64)}),
    Case("Pow", {"a": np.array([1, 2, 3], np.int32), "b": np.array([2.5, 1.5, 0.5], np.float32)}),
    Case("Max", {"a": _f32(2, 3), "b": _f32(3), "c": _f32(2, 1)}),
    Case("Max", {"a": _f32(4)}),
    Case("Max", {"a": _ints("int8", 5), "b": _ints("int8", 5)}),
    Case("Min", {"a": _f32(2, 3), "b": _f32(2, 3)}),
    Case("Min", {"a": _ints("uint8", 5, low=0), "b": _ints("uint8", 1, low=0)}),
    Case("Sum", {"a": _f32(2, 3), "b": _f32(3), "c": _f32(2, 3)}),
    Case("Sum", {"a": _f32(3)}),
    Case("Mean", {"a": _f32(2, 3), "b": _f32(1, 3), "c": _f32(2, 1)}),
    Case("Mean", {"a": _f32(3), "b": _f32(3)}, opset=11),
    Case("Where", {"c": RNG.random((2, 3)) > 0.5, "x": _f32(2, 3), "y": _f32(3)}),
    Case("Where", {"c": RNG.random((3,)) > 0.5, "x": _ints("int64", 2, 3), "y": _ints("int64", 1)}),
    Case("Equal", {"a": _ints("int32", 3, 4, low=0, high=3),
                   "b": _ints("int32", 4, low=0, high=3)}),
    Case("Less", {"a": _f32(3, 4), "b": _f32(4)}),
    Case("Greater", {"a": _f32(3, 4), "b": _f32(3, 1)}),
    Case("LessOrEqual", {"a": _ints("int64", 6, low=0, high=3), "b": _ints("int64", 6, low=0,
                                                                           high=3)}),
    Case("GreaterOrEqual", {"a": _f32(2, 2), "b": _f32(2, 2)}),
    Case("And", {"a": RNG.random((2, 3)) > 0.5, "b": RNG.random((3,)) > 0.5}),
    Case("Or", {"a": RNG.random((2, 1)) > 0.5, "b": RNG.random((1, 3)) > 0.5}),
    Case("Xor", {"a": RNG.random((4,)) > 0.5, "b": RNG.random((4,)) > 0.5}),
    Case("Not", {"a": RNG.random((2, 3)) > 0.5}),
]


@pytest.mark.ort
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.op}-{len(c.inputs)}")
def test_forward_matches_onnxruntime(case: Case) -> None:
    check_forward_vs_ort(case.op, case.inputs, attrs=case.attrs,
                         initializers=case.initializers, opset=case.opset)


def test_integer_div_truncates_toward_zero() -> None:
    a = np.array([7, -7, 7, -7, 6], np.int64)
    b = np.array([2, 2, -2, -2, 3], np.int64)
    (q,) = ELTWISE.forward(a, b, fn="div")
    assert q.tolist() == [3, -3, -3, 3, 2]  # C-style truncation, not numpy's floor


def test_pow_keeps_the_base_dtype() -> None:
    (y,) = ELTWISE.forward(np.array([2, 3], np.int64), np.array([0.5, 2.0], np.float32),
                           fn="pow")
    assert y.dtype == np.int64 and y.tolist() == [1, 9]  # trunc(sqrt 2) = 1, 3^2 = 9


# --- VJPs vs central finite differences (float64) ---

@settings(max_examples=25, deadline=None)
@given(shapes=mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3),
       fn=st.sampled_from(["add", "sub", "mul", "div", "pow", "max", "min", "mean"]),
       seed=st.integers(0, 2**16))
def test_binary_vjp_matches_finite_differences(shapes: Any, fn: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.5, 2.0, shapes.input_shapes[0])  # positive: pow's d/db needs log(a)
    b = rng.uniform(0.5, 2.0, shapes.input_shapes[1]) * (1 if fn != "sub" else -1)
    check_vjp(ELTWISE, [a, b], {"fn": fn}, seed=seed)


@settings(max_examples=20, deadline=None)
@given(shapes=mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=3),
       fn=st.sampled_from(["add", "max", "min", "mean"]), seed=st.integers(0, 2**16))
def test_variadic_vjp_matches_finite_differences(shapes: Any, fn: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal(s) for s in shapes.input_shapes]
    check_vjp(ELTWISE, xs, {"fn": fn}, seed=seed)


@settings(max_examples=40, deadline=None)
@given(shapes=mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3),
       fn=st.sampled_from(["add", "sub", "mul", "div", "pow", "max", "mean", "where"]),
       need=st.tuples(st.booleans(), st.booleans()), seed=st.integers(0, 2**16))
def test_vjp_of_needed_inputs_equals_the_full_vjp(shapes: Any, fn: str,
                                                  need: tuple[bool, bool], seed: int) -> None:
    """The pruned backward's per-input cotangents are the full vjp's (itself checked against
    finite differences above), bit for bit, and None for the inputs not needed."""
    rng = np.random.default_rng(seed)
    xs = [rng.uniform(0.5, 2.0, s).astype(np.float32) for s in shapes.input_shapes]
    if fn == "where":
        xs = [rng.random(shapes.input_shapes[0]) < 0.5, *xs]
    flags = (False, *need) if fn == "where" else need
    (y,) = ELTWISE.forward(*xs, fn=fn)
    g = rng.standard_normal(y.shape).astype(np.float32)
    full = ELTWISE.vjp((g,), xs, (y,), fn=fn)
    some = ELTWISE.vjp_needed((g,), xs, (y,), flags, fn=fn)
    for f, s_, n in zip(full, some, flags):
        if n and f is not None:
            assert s_ is not None and s_.dtype == f.dtype
            np.testing.assert_array_equal(s_, f)
        else:
            assert s_ is None


@settings(max_examples=20, deadline=None)
@given(shapes=mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=3),
       seed=st.integers(0, 2**16))
def test_where_vjp_matches_finite_differences(shapes: Any, seed: int) -> None:
    rng = np.random.default_rng(seed)
    c, x, y = (rng.standard_normal(s) for s in shapes.input_shapes)
    check_vjp(ELTWISE, [c > 0, x, y], {"fn": "where"}, seed=seed)
    cots = ELTWISE.vjp((np.ones(shapes.result_shape),), (c > 0, x, y),
                       ELTWISE.forward(c > 0, x, y, fn="where"), fn="where")
    assert cots[0] is None  # the condition is not differentiable


def test_max_routes_the_cotangent_to_the_first_winner_on_ties() -> None:
    a, b = np.array([1.0, 5.0, 2.0]), np.array([1.0, 3.0, 4.0])
    ys = ELTWISE.forward(a, b, fn="max")
    ga, gb = ELTWISE.vjp((np.array([10.0, 20.0, 30.0]),), (a, b), ys, fn="max")
    assert ga.tolist() == [10.0, 20.0, 0.0] and gb.tolist() == [0.0, 0.0, 30.0]


def test_comparisons_and_integer_ops_have_no_cotangents() -> None:
    a, b = np.array([1.0, 2.0]), np.array([2.0, 1.0])
    ys = ELTWISE.forward(a, b, fn="less")
    assert ELTWISE.vjp((np.ones(2),), (a, b), ys, fn="less") == (None, None)
    ia = np.array([1, 2])
    assert ELTWISE.vjp((np.ones(2),), (ia, ia), (ia + ia,), fn="add") == (None, None)


def test_vjp_keeps_float32() -> None:
    a, b = _f32(2, 3), _f32(3)
    ys = ELTWISE.forward(a, b, fn="mul")
    assert all(g.dtype == np.float32 for g in ELTWISE.vjp(ys, (a, b), ys, fn="mul"))


# --- facts, shapes, errors ---

def test_facts_count_one_op_per_combine() -> None:
    ins = [Spec((2, 3)), Spec((3,)), Spec((2, 1))]
    out = ELTWISE.shape(ins, fn="add")
    assert out == (Spec((2, 3)),)
    assert ELTWISE.facts(ins, out, fn="add").ops == 6 * 2  # 6 outputs x 2 adds
    assert ELTWISE.facts(ins, out, fn="mean").ops == 6 * 3  # 2 adds + 1 divide
    assert ELTWISE.facts(ins[:2], out, fn="pow").ops == 6
    assert ELTWISE.facts(ins, out, fn="add").macs == 0


def test_comparison_shape_is_bool() -> None:
    assert ELTWISE.shape([Spec((4, 1), "int64"), Spec((3,), "int64")], fn="greater") == (
        Spec((4, 3), "bool"),)


def _node(op: str, specs: dict[str, Spec]) -> Node:
    return Node("n", op, tuple(specs), ("y",), specs, {})


def test_where_needs_a_bool_condition() -> None:
    specs = {"c": Spec((2,), "float32"), "x": Spec((2,)), "y": Spec((2,))}
    with pytest.raises(ModelError, match="bool"):
        LOWER["Where"](_node("Where", specs))


def test_string_tensors_are_refused() -> None:
    specs = {"a": Spec((2,), "object"), "b": Spec((2,), "object")}
    with pytest.raises(ModelError, match="not supported"):
        LOWER["Equal"](_node("Equal", specs))


def test_lowering_keeps_inputs_and_sets_fn() -> None:
    specs = {"a": Spec((2,)), "b": Spec((2,)), "c": Spec((2,))}
    (layer,) = LOWER["Sum"](_node("Sum", specs)).layers
    assert (layer.kind, layer.inputs, dict(layer.attrs)) == ("eltwise", ("a", "b", "c"),
                                                             {"fn": "add"})


def test_zero_d_operands_give_arrays_not_numpy_scalars() -> None:
    (y,) = ELTWISE.forward(np.array(2.0, np.float32), np.array(3.0, np.float32), fn="mul")
    assert isinstance(y, np.ndarray) and y.shape == () and y.dtype == np.float32 and y == 6.0
    x = np.array([1.0])
    (same,) = ELTWISE.forward(x, fn="max")
    assert same is not x and same.tolist() == [1.0]  # one-input Max: a fresh array
