"""linear and matmul (ONNX Gemm, MatMul): shapes vs ONNX shape inference, forward vs
onnxruntime (directly and end to end), VJPs vs finite differences, facts vs hand arithmetic,
and which layers each lowering chooses."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.errors import ModelError
from compiler.ir import Spec
from compiler.ops import OPS
from tests.compiler.opcheck import check_forward_vs_ort, check_vjp, lower_and_run

RNG = np.random.default_rng(11)
LINEAR, MATMUL = OPS["linear"], OPS["matmul"]


def _f32(*shape: int, rng: np.random.Generator = RNG) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


class Case(NamedTuple):
    op: str
    inputs: dict[str, np.ndarray]
    attrs: dict[str, Any] = {}
    initializers: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()   # the layers the lowering must produce, in order
    opset: int = 17


A, B, C = _f32(3, 4), _f32(4, 5), _f32(5)
CASES = [
    Case("MatMul", {"a": A, "b": B}, {}, ("b",), ("linear",)),
    Case("MatMul", {"a": _f32(2, 3, 4), "b": B}, {}, ("b",), ("linear",)),
    Case("MatMul", {"a": _f32(4), "b": B}, {}, ("b",), ("linear",)),
    Case("MatMul", {"a": A, "b": B}, {}, (), ("matmul",)),
    Case("MatMul", {"a": _f32(2, 1, 3, 4), "b": _f32(3, 4, 5)}, {}, (), ("matmul",)),
    Case("MatMul", {"a": _f32(2, 3, 4), "b": _f32(2, 4, 5)}, {}, ("b",), ("matmul",)),
    Case("MatMul", {"a": _f32(4), "b": _f32(2, 4, 5)}, {}, (), ("matmul",)),
    Case("MatMul", {"a": _f32(2, 3, 4), "b": _f32(4)}, {}, (), ("matmul",)),
    Case("MatMul", {"a": _f32(4), "b": _f32(4)}, {}, (), ("matmul",)),
    Case("Gemm", {"a": A, "b": B}, {}, ("b",), ("linear",)),
    Case("Gemm", {"a": A, "b": B.T.copy(), "c": C}, {"transB": 1}, ("b", "c"), ("linear",)),
    Case("Gemm", {"a": A, "b": B, "c": C}, {"alpha": 0.5, "beta": -2.0}, ("b", "c"), ("linear",)),
    Case("Gemm", {"a": A, "b": B, "c": np.float32(1.5).reshape(())}, {"beta": 3.0}, ("b", "c"),
         ("linear",)),
    Case("Gemm", {"a": A, "b": B, "c": _f32(1, 5)}, {}, ("b", "c"), ("linear",)),
    Case("Gemm", {"a": A, "b": B, "c": _f32(1)}, {}, ("b", "c"), ("linear",)),
    Case("Gemm", {"a": A, "b": B, "c": _f32(3, 1)}, {"beta": 0.5}, ("b", "c"),
         ("linear", "eltwise")),
    Case("Gemm", {"a": A, "b": B, "c": _f32(3, 5)}, {}, ("b", "c"), ("linear", "eltwise")),
    Case("Gemm", {"a": A, "b": B, "c": _f32(3, 5)}, {"beta": 2.0}, ("b",),
         ("linear", "eltwise", "eltwise")),
    Case("Gemm", {"a": A.T.copy(), "b": B, "c": C}, {"transA": 1}, ("b", "c"),
         ("transpose", "linear")),
    Case("Gemm", {"a": A, "b": B}, {}, (), ("matmul",)),
    Case("Gemm", {"a": A.T.copy(), "b": B.T.copy(), "c": _f32(3, 5)},
         {"transA": 1, "transB": 1, "alpha": 0.25, "beta": 0.35}, (),
         ("transpose", "transpose", "matmul", "eltwise", "eltwise", "eltwise")),
    Case("Gemm", {"a": A, "b": B, "c": C}, {"alpha": 2.0}, ("c",),
         ("matmul", "eltwise", "eltwise")),
    Case("Gemm", {"a": A, "b": B, "c": C}, {}, ("b", "c"), ("linear",), opset=11),
]


def _id(case: Case) -> str:
    return f"{case.op}-{'+'.join(case.kinds)}-{len(case.initializers)}c"


def _lower(case: Case) -> tuple[Any, dict]:
    _, lowered, specs = lower_and_run(case.op, case.inputs, ["y"], case.attrs,
                                      case.initializers)
    return lowered, specs


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_matches_onnx_shape_inference_and_onnxruntime(case: Case) -> None:
    check_forward_vs_ort(case.op, case.inputs, 1, case.attrs, case.initializers, case.opset)


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_lowering_chooses_linear_for_constant_weights(case: Case) -> None:
    lowered, _ = _lower(case)
    assert tuple(layer.kind for layer in lowered.layers) == case.kinds
    assert lowered.layers[-1].outputs == ("y",)
    names = [layer.name for layer in lowered.layers]
    assert len(set(names)) == len(names)


SINGLE = [c for c in CASES if len(c.kinds) == 1]


@pytest.mark.parametrize("case", SINGLE, ids=[_id(c) for c in SINGLE])
def test_vjp_matches_finite_differences(case: Case) -> None:
    lowered, _ = _lower(case)
    (layer,) = lowered.layers
    values = {**case.inputs, **lowered.consts}
    check_vjp(OPS[layer.kind], [values[t] for t in layer.inputs], layer.attrs)


def test_gemm_folds_alpha_beta_and_transb_into_linear_constants() -> None:
    # y = 0.5 * A @ B + (-2) * C  ->  linear(w = 0.5 * B.T, b = -2 * C)
    lowered, _ = _lower(CASES[11])
    (layer,) = lowered.layers
    _, w, b = layer.inputs
    np.testing.assert_allclose(lowered.consts[w], 0.5 * B.T)
    np.testing.assert_allclose(lowered.consts[b], -2.0 * C)


def test_matmul_weight_is_stored_transposed() -> None:
    lowered, _ = _lower(CASES[0])
    (layer,) = lowered.layers
    np.testing.assert_array_equal(lowered.consts[layer.inputs[1]], B.T)


# --- random shapes: vjp vs finite differences ------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(lead=st.lists(st.integers(1, 3), max_size=2), n_in=st.integers(1, 4),
       n_out=st.integers(1, 4), bias=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_random_linear_vjp(lead: list[int], n_in: int, n_out: int, bias: bool, seed: int
                           ) -> None:
    rng = np.random.default_rng(seed)
    xs = [_f32(*lead, n_in, rng=rng), _f32(n_out, n_in, rng=rng)]
    xs += [_f32(n_out, rng=rng)] if bias else []
    (y,) = LINEAR.forward(*xs)
    want = xs[0] @ xs[1].T + (xs[2] if bias else 0.0)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
    check_vjp(LINEAR, xs, {})


@st.composite
def matmul_shapes(draw: st.DrawFn) -> tuple[tuple[int, ...], tuple[int, ...]]:
    m, k, n = (draw(st.integers(1, 3)) for _ in range(3))
    batch = draw(st.lists(st.integers(1, 3), max_size=2))
    # each operand keeps a suffix of the batch dims, some broadcast as 1
    a_batch = [d if draw(st.booleans()) else 1 for d in batch[len(batch) - draw(
        st.integers(0, len(batch))):]]
    b_batch = batch[len(batch) - draw(st.integers(0, len(batch))):]
    a = (k,) if draw(st.booleans()) and not a_batch else (*a_batch, m, k)
    b = (k,) if draw(st.booleans()) and not b_batch else (*b_batch, k, n)
    return a, b


@settings(max_examples=30, deadline=None)
@given(matmul_shapes(), st.integers(0, 2**32 - 1))
def test_random_matmul_shape_forward_and_vjp(shapes: tuple, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = _f32(*shapes[0], rng=rng), _f32(*shapes[1], rng=rng)
    (y,) = MATMUL.forward(a, b)
    np.testing.assert_allclose(y, np.matmul(a, b), rtol=1e-5, atol=1e-6)
    assert MATMUL.shape([Spec(a.shape), Spec(b.shape)])[0].shape == y.shape
    check_vjp(MATMUL, [a, b], {})


# --- facts and errors ------------------------------------------------------------------------


def _facts(case: Case, index: int = 0) -> Any:
    lowered, specs = _lower(case)
    layer = lowered.layers[index]
    return OPS[layer.kind].facts([specs[t] for t in layer.inputs],
                                 [specs[t] for t in layer.outputs], **layer.attrs)


def test_linear_facts() -> None:
    f = _facts(CASES[1])  # [2, 3, 4] @ const [4, 5]: rows share the weight
    assert (f.m, f.n, f.k, f.groups, f.macs) == (2 * 3, 5, 4, 1, 2 * 3 * 5 * 4)


def test_matmul_facts() -> None:
    f = _facts(CASES[4])  # [2, 1, 3, 4] @ [3, 4, 5]: 2*3 independent [3,4]@[4,5] products
    assert (f.m, f.n, f.k, f.groups) == (3, 5, 4, 2 * 3)
    assert f.macs == 2 * 3 * 3 * 5 * 4
    f = _facts(CASES[3])  # [3, 4] @ [4, 5], both activations
    assert (f.m, f.n, f.k, f.groups, f.macs) == (3, 5, 4, 1, 60)


def test_gemm_rejects_c_that_does_not_broadcast() -> None:
    with pytest.raises(ModelError, match="broadcast"):
        lower_and_run("Gemm", {"a": A, "b": B, "c": _f32(4)}, ["y"], {}, ("b", "c"))


def test_gemm_rejects_non_matrix_operands() -> None:
    with pytest.raises(ModelError, match="2-D"):
        lower_and_run("Gemm", {"a": _f32(2, 3, 4), "b": B}, ["y"], {}, ("b",))
