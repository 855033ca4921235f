"""softmax (ONNX Softmax, LogSoftmax): shapes vs ONNX shape inference, forward vs onnxruntime
(directly and end to end), VJPs vs finite differences, facts vs hand arithmetic."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.errors import ModelError
from compiler.ops import OPS
from tests.compiler.opcheck import check_forward_vs_ort, check_vjp, lower_and_run

RNG = np.random.default_rng(3)
SOFTMAX = OPS["softmax"]


def _f32(*shape: int, scale: float = 3.0) -> np.ndarray:
    return (scale * RNG.standard_normal(shape)).astype(np.float32)


class Case(NamedTuple):
    op: str
    x: np.ndarray
    attrs: dict[str, Any] = {}
    opset: int = 17


CASES = [
    Case(op, x, attrs, opset)
    for op in ("Softmax", "LogSoftmax")
    for x, attrs, opset in [
        (_f32(3, 5), {}, 17),
        (_f32(2, 3, 4), {"axis": 0}, 17),
        (_f32(2, 3, 4), {"axis": 1}, 13),
        (_f32(2, 3, 4), {"axis": -2}, 17),
        (_f32(7), {}, 17),
        (_f32(2, 4, scale=1000.0), {}, 17),   # large logits: the max shift must keep it finite
    ]
]


def _id(case: Case) -> str:
    return f"{case.op}-{case.x.shape}-{case.attrs.get('axis', 'default')}"


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_matches_onnx_shape_inference_and_onnxruntime(case: Case) -> None:
    check_forward_vs_ort(case.op, {"x": case.x}, 1, case.attrs, (), case.opset)


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_vjp_matches_finite_differences(case: Case) -> None:
    _, lowered, _ = lower_and_run(case.op, {"x": case.x}, ["y"], case.attrs)
    (layer,) = lowered.layers
    x = case.x if case.x.max() < 100 else case.x / 1000   # keep finite differences meaningful
    check_vjp(SOFTMAX, [x], layer.attrs)


def test_axis_is_normalised_and_log_flag_set() -> None:
    _, lowered, _ = lower_and_run("LogSoftmax", {"x": _f32(2, 3, 4)}, ["y"], {"axis": -2})
    assert dict(lowered.layers[0].attrs) == {"axis": 1, "log": True}


@settings(max_examples=25, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), data=st.data(),
       log=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_random_softmax_sums_to_one_and_vjp(shape: list[int], data: st.DataObject,
                                            log: bool, seed: int) -> None:
    axis = data.draw(st.integers(0, len(shape) - 1))
    x = np.random.default_rng(seed).standard_normal(shape)
    (y,) = SOFTMAX.forward(x, axis=axis, log=log)
    probs = np.exp(y) if log else y
    np.testing.assert_allclose(probs.sum(axis=axis), 1.0, rtol=1e-12)
    assert y.dtype == np.float64
    check_vjp(SOFTMAX, [x], {"axis": axis, "log": log})


def test_facts() -> None:
    _, lowered, specs = lower_and_run("Softmax", {"x": _f32(2, 3, 4)}, ["y"], {})
    f = SOFTMAX.facts([specs["x"]], [specs["y"]], **lowered.layers[0].attrs)
    assert f.ops == 2 * 3 * 4 * 5  # elements × (max, subtract, exp, sum, divide)
    assert f.macs == 0


def test_axis_out_of_range_is_refused() -> None:
    with pytest.raises(ModelError, match="axis"):
        lower_and_run("Softmax", {"x": _f32(2, 3)}, ["y"], {"axis": 2})
