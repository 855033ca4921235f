"""gather ops and shape arithmetic: shapes vs ONNX shape inference, forward vs onnxruntime,
VJPs vs finite differences and a brute-force scatter, facts vs hand arithmetic."""

from __future__ import annotations

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

RNG = np.random.default_rng(3)
GATHER = OPS["gather"]




DATA = RNG.standard_normal((5, 4, 3)).astype(np.float32)
TABLE = RNG.standard_normal((10, 6)).astype(np.float32)  # an embedding table
CASES = [
    Case("Gather", {"d": DATA, "i": np.array([0, 4, 2], np.int64)}),
    Case("Gather", {"d": DATA, "i": np.array([[1, -1], [0, -4]], np.int64)}, {"axis": 1}),
    Case("Gather", {"d": DATA, "i": np.array(2, np.int64)}, {"axis": -1}),
    Case("Gather", {"d": DATA, "i": np.array([2, 2, 0], np.int32)}, {"axis": 2}, ("i",)),
    Case("Gather", {"d": TABLE, "i": np.array([[3, 1, 3, 9]], np.int64)}, initializers=("d",)),
    Case("Gather", {"d": np.arange(12, dtype=np.int64).reshape(3, 4),
                    "i": np.array([-1, 0], np.int64)}, {"axis": 1}),
    Case("GatherElements", {"d": TABLE[:3, :3], "i": np.array([[0, 1], [2, -1]], np.int64)},
         {"axis": 1}),
    Case("GatherElements", {"d": DATA, "i": RNG.integers(-5, 5, (2, 4, 3)).astype(np.int64)}),
    Case("GatherElements", {"d": DATA, "i": RNG.integers(-3, 3, (5, 4, 2)).astype(np.int32)},
         {"axis": -1}, ("i",)),
    # shape arithmetic: folded to constants
    Case("Shape", {"x": DATA}),
    Case("Shape", {"x": DATA}, {"start": 1}, opset=15),
    Case("Shape", {"x": DATA}, {"start": -10, "end": -1}, opset=15),
    Case("Shape", {"x": DATA}, {"start": 2, "end": 1}, opset=15),
    Case("Size", {"x": DATA}),
    Case("Range", {"s": np.array(1.0, np.float32), "l": np.array(5.5, np.float32),
                   "d": np.array(0.75, np.float32)}, initializers=("s", "l", "d")),
    Case("Range", {"s": np.array(10, np.int32), "l": np.array(-3, np.int32),
                   "d": np.array(-4, np.int32)}, initializers=("s", "l", "d")),
]


@pytest.mark.ort
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.op)
def test_forward_matches_onnxruntime(case: Case) -> None:
    check_forward_vs_ort(case.op, case.inputs, attrs=case.attrs, initializers=case.initializers,
                         opset=case.opset)


@pytest.mark.ort
@pytest.mark.parametrize("value", [None, np.array([7], np.int32), np.array([0.5], np.float32)])
def test_constant_of_shape_matches_onnxruntime(value: np.ndarray | None) -> None:
    # the tensor attribute needs a TensorProto for ONNX: run the frontend, which converts it
    from onnx import helper, numpy_helper, shape_inference

    from compiler.executor import run
    from compiler.frontend import lower_model
    from tests.compiler.opcheck import run_ort

    attrs = {} if value is None else {"value": numpy_helper.from_array(value)}
    node = helper.make_node("ConstantOfShape", ["s"], ["y"], **attrs)
    graph = helper.make_graph([node], "g", [], [helper.make_tensor_value_info("y", 0, None)],
                              [numpy_helper.from_array(np.array([2, 3], np.int64), "s")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (want,) = run_ort(shape_inference.infer_shapes(model), {})
    got = run(lower_model(model), {})["y"]
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_shape_and_size_are_constants() -> None:
    spec = {"x": Spec((2, 3, 4))}
    assert LOWER["Shape"](_one("Shape", spec)).consts["y"].tolist() == [2, 3, 4]
    assert LOWER["Shape"](_one("Shape", spec), start=-2).consts["y"].tolist() == [3, 4]
    size = LOWER["Size"](_one("Size", spec))
    assert size.layers == () and int(size.consts["y"]) == 24 and size.consts["y"].ndim == 0


def test_range_needs_constant_inputs() -> None:
    specs = {n: Spec((), "int64") for n in "sld"}
    with pytest.raises(ModelError, match="must be constant"):
        LOWER["Range"](_one("Range", specs, {"s": np.array(0), "l": np.array(4)}))


def _one(op: str, specs: dict[str, Spec], consts: dict[str, np.ndarray] | None = None) -> Node:
    return Node("n", op, tuple(specs), ("y",), specs, consts or {})


# --- VJPs ---

@settings(max_examples=25, deadline=None)
@given(shape=array_shapes(min_dims=1, max_dims=3, max_side=4),
       index_shape=array_shapes(min_dims=0, max_dims=2, max_side=5), seed=st.integers(0, 2**16))
def test_gather_vjp_matches_finite_differences(shape: tuple[int, ...],
                                               index_shape: tuple[int, ...], seed: int) -> None:
    rng = np.random.default_rng(seed)
    axis = int(rng.integers(len(shape)))
    n = shape[axis]
    indices = rng.integers(-n, n, index_shape)  # negative and repeated indices
    check_vjp(GATHER, [rng.standard_normal(shape), indices], {"axis": axis}, seed=seed)


@settings(max_examples=20, deadline=None)
@given(shape=array_shapes(min_dims=1, max_dims=3, max_side=4), seed=st.integers(0, 2**16))
def test_gather_elements_vjp_matches_finite_differences(shape: tuple[int, ...],
                                                        seed: int) -> None:
    rng = np.random.default_rng(seed)
    axis = int(rng.integers(len(shape)))
    n = shape[axis]
    indices = rng.integers(-n, n, shape[:axis] + (int(rng.integers(1, 5)),) + shape[axis + 1:])
    check_vjp(GATHER, [rng.standard_normal(shape), indices], {"axis": axis, "elements": True},
              seed=seed)


def test_embedding_vjp_accumulates_repeated_rows() -> None:
    table = RNG.standard_normal((5, 3))
    ids = np.array([[1, 3, 1], [4, 1, 0]])
    g = RNG.standard_normal((2, 3, 3))
    ys = GATHER.forward(table, ids, axis=0)
    d_table, d_ids = GATHER.vjp((g,), (table, ids), ys, axis=0)
    brute = np.zeros_like(table)
    for (b, t), row in np.ndenumerate(ids):
        brute[row] += g[b, t]
    np.testing.assert_allclose(d_table, brute, rtol=1e-12)
    assert d_ids is None


def test_integer_data_has_no_cotangent() -> None:
    data, idx = np.arange(6).reshape(2, 3), np.array([1])
    ys = GATHER.forward(data, idx, axis=1)
    assert GATHER.vjp((np.ones((2, 1)),), (data, idx), ys, axis=1) == (None, None)


# --- facts and lowering ---

def test_facts_count_one_load_per_output_element() -> None:
    ins = [Spec((1000, 64)), Spec((2, 16), "int64")]
    out = GATHER.shape(ins, axis=0)
    assert out == (Spec((2, 16, 64)),)
    assert GATHER.facts(ins, out, axis=0).ops == 2 * 16 * 64  # tokens x embedding width
    assert GATHER.facts(ins, out, axis=0).macs == 0


def _node(op: str, data: Spec, idx: Spec, consts: dict[str, np.ndarray] | None = None) -> Node:
    return Node("n", op, ("d", "i"), ("y",), {"d": data, "i": idx}, consts or {})


def test_lowering_normalises_the_axis() -> None:
    (layer,) = LOWER["Gather"](_node("Gather", Spec((4, 5)), Spec((2,), "int64")),
                               axis=-1).layers
    assert dict(layer.attrs) == {"axis": 1, "elements": False}


def test_constant_indices_out_of_range_are_refused() -> None:
    node = _node("Gather", Spec((4, 5)), Spec((2,), "int64"), {"i": np.array([0, 5])})
    with pytest.raises(ModelError, match="out of range"):
        LOWER["Gather"](node, axis=1)


def test_bad_axis_and_index_dtype_are_refused() -> None:
    with pytest.raises(ModelError, match="axis"):
        LOWER["Gather"](_node("Gather", Spec((4, 5)), Spec((2,), "int64")), axis=2)
    with pytest.raises(ModelError, match="int32/int64"):
        LOWER["Gather"](_node("Gather", Spec((4, 5)), Spec((2,), "float32")))
    with pytest.raises(ModelError, match="do not fit"):
        LOWER["GatherElements"](_node("GatherElements", Spec((4, 5)), Spec((4, 6), "int64")))
