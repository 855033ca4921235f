"""index ops (GatherND, ArgMax, ArgMin): shapes vs ONNX shape inference, forward vs
onnxruntime, the GatherND VJP vs finite differences, lowering errors."""

from __future__ import annotations

import numpy as np
import pytest

from compiler.errors import ModelError
from compiler.ir import Spec
from compiler.ops import LOWER, OPS
from compiler.ops.opdef import Node
from tests.compiler.opcheck import Case, check_forward_vs_ort, check_vjp

RNG = np.random.default_rng(3)


def _f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


_TIES = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, -1.0, -1.0]], np.float32)
CASES = [
    Case("GatherND", {"d": _f32(3, 4), "i": np.array([[2, 1], [0, -1]], np.int64)}),
    Case("GatherND", {"d": _f32(3, 4, 2), "i": np.array([[[1]], [[2]]], np.int64)}),
    Case("GatherND", {"d": _f32(2, 5, 3), "i": np.array([[[4], [0], [2]], [[1], [1], [-2]]],
                                                        np.int64)}, {"batch_dims": 1}),
    Case("GatherND", {"d": RNG.integers(0, 2, (2, 6)).astype(np.int64),
                      "i": np.array([[[0], [5]], [[3], [2]]], np.int64)},
         {"batch_dims": 1}, initializers=("i",)),
    Case("ArgMax", {"x": _f32(2, 5, 3)}, {"axis": 1, "keepdims": 0}),
    Case("ArgMax", {"x": _TIES}, {"axis": -1, "select_last_index": 1}),
    Case("ArgMax", {"x": _TIES}, {"axis": 1}),
    Case("ArgMin", {"x": _TIES}, {"axis": 0, "select_last_index": 1}),
    Case("ArgMin", {"x": RNG.integers(-5, 5, (3, 4)).astype(np.int32)}, {"axis": 1}),
]


@pytest.mark.ort
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.op)
def test_forward_matches_onnxruntime(case: Case) -> None:
    check_forward_vs_ort(case.op, case.inputs, attrs=case.attrs,
                         initializers=case.initializers, opset=case.opset)


@pytest.mark.parametrize("batch_dims,indices", [
    (0, np.array([[2, 1], [0, 3], [2, 1]], np.int64)),  # a repeated coordinate accumulates
    (1, np.array([[[1], [1]], [[0], [2]], [[3], [-1]]], np.int64)),
])
def test_gather_nd_vjp_matches_finite_differences(batch_dims: int, indices: np.ndarray) -> None:
    check_vjp(OPS["gather_nd"], [_f32(3, 4, 2), indices], {"batch_dims": batch_dims})


def test_arg_reduce_has_no_cotangent_and_counts_compares() -> None:
    op = OPS["arg_reduce"]
    attrs = dict(fn="max", axis=1, keepdims=True)
    x = _f32(2, 3)
    assert op.vjp((np.ones((2, 1)),), (x,), op.forward(x, **attrs), **attrs) == (None,)
    out = op.shape([Spec((2, 3))], **attrs)
    assert out == (Spec((2, 1), "int64"),)
    assert op.facts([Spec((2, 3))], out, **attrs).ops == 6


def _node(op: str, specs: dict[str, Spec]) -> Node:
    return Node("n", op, tuple(specs), ("y",), specs, {})


def test_gather_nd_refuses_indices_that_do_not_fit() -> None:
    with pytest.raises(ModelError, match="do not fit"):
        LOWER["GatherND"](_node("GatherND", {"d": Spec((3, 4)), "i": Spec((2, 3), "int64")}))
    with pytest.raises(ModelError, match="int64"):
        LOWER["GatherND"](_node("GatherND", {"d": Spec((3, 4)), "i": Spec((2, 1), "int32")}))


def test_logic_ops_refuse_non_bool_inputs() -> None:
    with pytest.raises(ModelError, match="must be bool"):
        LOWER["And"](_node("And", {"a": Spec((2,), "bool"), "b": Spec((2,), "int64")}))
