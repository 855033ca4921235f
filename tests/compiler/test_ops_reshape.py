"""reshape-family ops (views and copies): shapes vs ONNX shape inference, forward vs
onnxruntime, VJPs vs finite differences."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

from compiler.errors import ModelError
from compiler.ir import Facts, Spec
from compiler.ops import LOWER, OPS
from compiler.ops.opdef import Node
from tests.compiler.opcheck import Case, check_forward_vs_ort, check_vjp

RNG = np.random.default_rng(2)
INT_MAX = np.iinfo(np.int64).max


def _f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)




X = _f32(2, 3, 4)
X4 = _f32(1, 3, 4, 5)
CASES = [
    Case("Reshape", {"x": X, "s": _i64(4, 0, -1)}, initializers=("s",)),
    Case("Reshape", {"x": X, "s": _i64(-1)}, initializers=("s",)),
    Case("Reshape", {"x": X, "s": _i64(2, 0, 2, 2)}, initializers=("s",)),
    Case("Reshape", {"x": X, "s": _i64(3, 8)}, {"allowzero": 1}, ("s",), opset=14),
    Case("Flatten", {"x": X4}),
    Case("Flatten", {"x": X4}, {"axis": 0}),
    Case("Flatten", {"x": X4}, {"axis": 4}),
    Case("Flatten", {"x": X4}, {"axis": -1}),
    Case("Squeeze", {"x": _f32(1, 3, 1, 5), "a": _i64(-2)}, initializers=("a",)),
    Case("Squeeze", {"x": _f32(1, 3, 1, 5)}),
    Case("Squeeze", {"x": _f32(1, 3, 1, 5)}, {"axes": [0, 2]}, opset=11),
    Case("Unsqueeze", {"x": X, "a": _i64(4, 0, -3)}, initializers=("a",)),
    Case("Unsqueeze", {"x": X}, {"axes": [1]}, opset=11),
    Case("Identity", {"x": X}),
    Case("Transpose", {"x": X}),
    Case("Transpose", {"x": X4}, {"perm": [0, 2, 3, 1]}),
    Case("Concat", {"a": X, "b": _f32(2, 5, 4), "c": _f32(2, 1, 4)}, {"axis": 1},
         initializers=("c",)),
    Case("Concat", {"a": X, "b": _f32(2, 3, 2)}, {"axis": -1}),
    Case("Split", {"x": _f32(2, 6), "s": _i64(1, 5)}, {"axis": 1}, ("s",), n_outputs=2),
    Case("Split", {"x": _f32(6, 2)}, {"split": [2, 1, 3]}, opset=11, n_outputs=3),
    Case("Split", {"x": _f32(6, 2)}, n_outputs=3),
    Case("Split", {"x": _f32(2, 7)}, {"axis": -1, "num_outputs": 3}, opset=18, n_outputs=3),
    Case("Slice", {"x": _f32(20, 10, 5), "s": _i64(0, 0), "e": _i64(3, 10), "a": _i64(0, 1),
                   "st": _i64(1, 1)}, initializers=("s", "e", "a", "st")),
    Case("Slice", {"x": _f32(20, 10, 5), "s": _i64(20, 10, 4), "e": _i64(0, 0, 1),
                   "a": _i64(0, 1, 2), "st": _i64(-1, -3, -2)}, initializers=("s", "e", "a", "st")),
    Case("Slice", {"x": _f32(20, 10, 5), "s": _i64(-1), "e": _i64(-INT_MAX), "a": _i64(1),
                   "st": _i64(-1)}, initializers=("s", "e", "a", "st")),
    Case("Slice", {"x": _f32(20, 10, 5), "s": _i64(1000), "e": _i64(1000), "a": _i64(1)},
         initializers=("s", "e", "a")),
    Case("Slice", {"x": _f32(20, 10, 5), "s": _i64(0, 0, 3), "e": _i64(20, 10, 4)},
         initializers=("s", "e")),
    Case("Slice", {"x": _f32(20, 10, 5), "s": _i64(0, 0, 3), "e": _i64(-1, INT_MAX, 4),
                   "a": _i64(0, -2, -1)}, initializers=("s", "e", "a")),
    Case("Slice", {"x": _f32(6, 4)}, {"starts": [1], "ends": [-1], "axes": [1]}, opset=9),
    Case("Pad", {"x": X4, "p": _i64(0, 0, 1, 2, 0, 0, 3, 1), "v": np.array(1.5, np.float32)},
         initializers=("p", "v")),
    Case("Pad", {"x": X4, "p": _i64(0, 0, 1, 2, 0, 0, 3, 1), "v": np.array(1.5, np.float32)},
         initializers=("p",)),
    Case("Pad", {"x": X4, "p": _i64(0, 0, 2, 1, 0, 0, 1, 3)}, {"mode": "reflect"}, ("p",)),
    Case("Pad", {"x": X4, "p": _i64(0, 1, 2, 0, 0, 0, 1, 3)}, {"mode": "edge"}, ("p",)),
    Case("Pad", {"x": X4, "p": _i64(0, 0, 2, 1, 0, 0, 1, 3)}, {"mode": "wrap"}, ("p",),
         opset=19),
    Case("Pad", {"x": X4, "p": _i64(0, 0, -1, 2, 0, 0, 1, -2)}, initializers=("p",)),
    Case("Pad", {"x": X4, "p": _i64(1, 3, 0, 2), "": np.zeros(0), "a": _i64(2, -1)},
         initializers=("p", "a"), opset=18),
    Case("Pad", {"x": _f32(3, 4)}, {"pads": [1, 0, 0, 2], "value": 2.0}, opset=10),
    Case("Pad", {"x": RNG.integers(0, 9, (3, 4)).astype(np.int32), "p": _i64(1, 1, 1, 1)},
         {"mode": "reflect"}, ("p",)),
    Case("Expand", {"x": _f32(3, 1), "s": _i64(2, 1, 6)}, initializers=("s",)),
    Case("Expand", {"x": _f32(3, 1), "s": _i64(3, 4)}, initializers=("s",)),
    Case("Expand", {"x": _f32(3, 4), "s": _i64(1, 1)}, initializers=("s",)),
    Case("Tile", {"x": X, "r": _i64(2, 1, 3)}, initializers=("r",)),
    Case("Tile", {"x": X, "r": _i64(1, 1, 1)}, initializers=("r",)),
]


@pytest.mark.ort
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.op)
def test_forward_matches_onnxruntime(case: Case) -> None:
    check_forward_vs_ort(case.op, case.inputs, case.n_outputs, case.attrs, case.initializers,
                         case.opset)


# --- lowering details ---

def _node(op: str, inputs: dict[str, Spec], consts: dict[str, np.ndarray] | None = None,
          outputs: tuple[str, ...] = ("y",)) -> Node:
    return Node("n", op, tuple(inputs), outputs, inputs, consts or {})


def test_tile_lowers_to_reshape_expand_reshape() -> None:
    specs = {"x": Spec((2, 3)), "r": Spec((2,), "int64")}
    lowered = LOWER["Tile"](_node("Tile", specs, {"r": _i64(3, 2)}))
    assert [layer.kind for layer in lowered.layers] == ["reshape", "expand", "reshape"]
    assert lowered.layers[-1].attrs["shape"] == (6, 6) and lowered.layers[-1].outputs == ("y",)


# --- VJPs vs central finite differences (float64) ---

def _check(kind: str, xs: list, attrs: dict[str, Any], seed: int) -> None:
    check_vjp(OPS[kind], xs, attrs, seed=seed)


@settings(max_examples=20, deadline=None)
@given(shape=array_shapes(min_dims=1, max_dims=4, max_side=4), seed=st.integers(0, 2**16))
def test_view_and_transpose_vjps(shape: tuple[int, ...], seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    _check("reshape", [x], {"shape": (x.size,)}, seed)
    _check("identity", [x], {}, seed)
    _check("transpose", [x], {"perm": tuple(rng.permutation(len(shape)).tolist())}, seed)
    _check("expand", [x], {"shape": (2,) + tuple(1 if d == 1 else d for d in shape)}, seed)
    _check("expand", [x[..., :1]], {"shape": shape[:-1] + (3,)}, seed)


@settings(max_examples=20, deadline=None)
@given(shape=array_shapes(min_dims=1, max_dims=3, max_side=5), seed=st.integers(0, 2**16))
def test_concat_split_slice_vjps(shape: tuple[int, ...], seed: int) -> None:
    rng = np.random.default_rng(seed)
    axis = int(rng.integers(len(shape)))
    x = rng.standard_normal(shape)
    _check("concat", [x, rng.standard_normal(shape), x * 2], {"axis": axis}, seed)
    n = shape[axis]
    cut = int(rng.integers(0, n + 1))
    _check("split", [x], {"axis": axis, "sizes": (cut, n - cut)}, seed)
    step = int(rng.choice([-2, -1, 1, 2]))
    start, end = (n - 1, -1) if step < 0 else (0, n)
    _check("slice", [x], {"axes": (axis,), "starts": (start,), "ends": (end,),
                          "steps": (step,)}, seed)


@settings(max_examples=25, deadline=None)
@given(shape=array_shapes(min_dims=1, max_dims=3, min_side=2, max_side=4),
       mode=st.sampled_from(["constant", "reflect", "edge", "wrap"]), seed=st.integers(0, 2**16))
def test_pad_vjp(shape: tuple[int, ...], mode: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    r = len(shape)
    # pads in [-1, 2]: negatives crop; reflect needs pad < dim, which min_side=2..4 gives for 1
    hi = 1 if mode == "reflect" else 2
    pads = tuple(int(p) for p in rng.integers(-1, hi + 1, 2 * r))
    x = rng.standard_normal(shape)
    _check("pad", [x], {"pads": pads, "mode": mode, "value": 0.0}, seed)


def test_pad_vjp_reaches_a_runtime_fill_value() -> None:
    x, v = RNG.standard_normal((3, 4)), np.array(0.7)
    check_vjp(OPS["pad"], [x, v], {"pads": (1, 0, 2, -1), "mode": "constant", "value": 0.0})


def test_split_vjp_treats_missing_cotangents_as_zero() -> None:
    x = np.arange(6.0)
    ys = OPS["split"].forward(x, axis=0, sizes=(2, 4))
    (g,) = OPS["split"].vjp((None, np.ones(4)), (x,), ys, axis=0, sizes=(2, 4))
    assert g.tolist() == [0, 0, 1, 1, 1, 1]


# --- facts and errors ---

@pytest.mark.parametrize("kind", ["reshape", "identity", "transpose", "expand", "concat",
                                  "split", "slice", "pad"])
def test_copies_and_views_have_no_arithmetic(kind: str) -> None:
    assert OPS[kind].facts([Spec((2, 3))], [Spec((2, 3))]) == Facts()


def test_non_constant_shape_inputs_are_refused() -> None:
    specs = {"x": Spec((2, 3)), "s": Spec((2,), "int64")}
    for op in ("Reshape", "Expand", "Tile"):
        with pytest.raises(ModelError, match="must be constant"):
            LOWER[op](_node(op, specs))


def test_bad_shapes_are_refused() -> None:
    x = {"x": Spec((2, 3)), "a": Spec((1,), "int64")}
    with pytest.raises(ModelError, match="not all 1"):
        LOWER["Squeeze"](_node("Squeeze", x, {"a": _i64(0)}))
    with pytest.raises(ModelError, match="cannot reshape"):
        LOWER["Reshape"](_node("Reshape", x, {"a": _i64(4)}))
    with pytest.raises(ModelError, match="not supported"):
        LOWER["Pad"](_node("Pad", x, {"a": _i64(0, 0)}), mode="mirror")
    with pytest.raises(ModelError, match="invalid"):
        LOWER["Slice"](_node("Slice", {**x, "b": x["a"], "c": x["a"], "d": x["a"]},
                             {"a": _i64(0), "b": _i64(1), "c": _i64(0), "d": _i64(0)}))
    with pytest.raises(ModelError, match="Split"):
        LOWER["Split"](_node("Split", {"x": x["x"]}, outputs=("p", "q", "r", "s")), axis=1)


@pytest.mark.ort
def test_exporter_shape_arithmetic_folds_away() -> None:
    # x.view(x.size(0), -1, 4) as exporters write it: Shape -> Gather -> Unsqueeze -> Concat ->
    # Reshape. Every step but the Reshape is constant once shapes are static.
    from onnx import TensorProto, helper, numpy_helper, shape_inference

    from compiler.executor import run
    from compiler.frontend import lower_model
    from compiler.verify import verify
    from tests.compiler.opcheck import run_ort

    consts = {"zero": np.array(0, np.int64), "ax0": _i64(0), "rest": _i64(-1, 4)}
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "ax0"], ["batch1"]),
        helper.make_node("Concat", ["batch1", "rest"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["r"]),
        helper.make_node("Transpose", ["r"], ["y"], perm=[0, 2, 1]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (2, 3, 8))],
        [helper.make_tensor_value_info("y", TensorProto.UNDEFINED, None)],
        [numpy_helper.from_array(v, k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    x = _f32(2, 3, 8)
    (want,) = run_ort(shape_inference.infer_shapes(model), {"x": x})
    g = lower_model(model)
    verify(g)
    assert [layer.kind for layer in g.layers] == ["reshape", "transpose"]
    assert g.layers[0].attrs["shape"] == (2, 6, 4)
    np.testing.assert_array_equal(run(g, {"x": x})["y"], want)
    table = g.layer_table()
    assert table.macs.sum() == 0 and table.ops.sum() == 0  # views and copies: no arithmetic
