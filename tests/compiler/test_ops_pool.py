"""pool (MaxPool, AveragePool, Global*Pool) and reduce (Reduce*): shapes vs ONNX shape
inference, forward vs onnxruntime (directly and end to end), VJPs vs finite differences,
facts vs hand arithmetic."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.errors import ModelError
from compiler.ops import OPS
from tests.compiler.opcheck import check_forward_vs_ort, check_vjp, lower_and_run

RNG = np.random.default_rng(9)
POOL, REDUCE = OPS["pool"], OPS["reduce"]


def _f32(*shape: int, low: float = -3.0, high: float = 3.0,
         rng: np.random.Generator = RNG) -> np.ndarray:
    return rng.uniform(low, high, shape).astype(np.float32)


def _axes(*axes: int) -> np.ndarray:
    return np.array(axes, dtype=np.int64)


class Case(NamedTuple):
    op: str
    inputs: dict[str, np.ndarray]
    attrs: dict[str, Any] = {}
    initializers: tuple[str, ...] = ("axes",)
    opset: int = 19

    @property
    def inits(self) -> tuple[str, ...]:
        return tuple(n for n in self.initializers if n in self.inputs)


X = _f32(2, 3, 9, 8)
MAXPOOL = Case("MaxPool", {"x": _f32(1, 3, 9, 9)}, {"kernel_shape": [3, 3], "strides": [2, 2]})
GLOBAL_AVG = Case("GlobalAveragePool", {"x": _f32(2, 3, 4, 5)})
POOL_CASES = [
    MAXPOOL,
    Case("MaxPool", {"x": X}, {"kernel_shape": [3, 2], "pads": [1, 0, 2, 1]}),
    Case("MaxPool", {"x": X}, {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    # ceil mode drops a last window that would start in the end padding: onnxruntime always
    # does, ONNX shape inference only from opset 22
    Case("MaxPool", {"x": _f32(1, 1, 2, 2)}, {"kernel_shape": [1, 1], "strides": [2, 2],
                                               "ceil_mode": 1}, opset=22),
    Case("MaxPool", {"x": X}, {"kernel_shape": [2, 2], "dilations": [2, 3], "pads": [1, 1, 1, 1]}),
    Case("MaxPool", {"x": X}, {"kernel_shape": [3, 3], "strides": [2, 2],
                               "auto_pad": "SAME_UPPER"}),
    Case("MaxPool", {"x": X}, {"kernel_shape": [2, 4], "strides": [2, 3],
                               "auto_pad": "SAME_LOWER"}),
    Case("MaxPool", {"x": X}, {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "VALID"}),
    Case("MaxPool", {"x": _f32(2, 3, 11)}, {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}),
    Case("MaxPool", {"x": _f32(1, 2, 5, 4, 6)}, {"kernel_shape": [2, 2, 3], "strides": [2, 1, 2],
                                                  "ceil_mode": 1}),
    Case("MaxPool", {"x": X}, {"kernel_shape": [2, 2], "storage_order": 1}, opset=11),
    Case("MaxPool", {"x": RNG.integers(0, 255, (1, 2, 6, 6)).astype(np.uint8)},
         {"kernel_shape": [2, 2], "pads": [1, 1, 0, 0]}),
    Case("AveragePool", {"x": X}, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    Case("AveragePool", {"x": X}, {"kernel_shape": [3, 3], "pads": [1, 2, 2, 1],
                                   "count_include_pad": 1}),
    Case("AveragePool", {"x": X}, {"kernel_shape": [3, 2], "strides": [2, 3], "ceil_mode": 1}),
    Case("AveragePool", {"x": X}, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
                                   "ceil_mode": 1, "count_include_pad": 1}),
    Case("AveragePool", {"x": X}, {"kernel_shape": [2, 2], "dilations": [2, 2],
                                   "pads": [1, 0, 1, 1]}),
    Case("AveragePool", {"x": X}, {"kernel_shape": [3, 3], "strides": [2, 2],
                                   "auto_pad": "SAME_UPPER"}),
    Case("AveragePool", {"x": X}, {"kernel_shape": [4, 3], "strides": [3, 2],
                                   "auto_pad": "SAME_LOWER", "count_include_pad": 1}),
    Case("AveragePool", {"x": _f32(2, 2, 7)}, {"kernel_shape": [2], "strides": [2],
                                               "ceil_mode": 1}),
    Case("AveragePool", {"x": _f32(1, 2, 4, 5, 6)}, {"kernel_shape": [2, 3, 2],
                                                      "pads": [1, 1, 0, 0, 1, 1]}, opset=11),
    GLOBAL_AVG,
    Case("GlobalAveragePool", {"x": _f32(1, 4, 3, 2, 5)}),
    Case("GlobalMaxPool", {"x": _f32(2, 3, 4, 5)}),
    Case("GlobalMaxPool", {"x": _f32(2, 3, 7)}),
]

R = _f32(2, 3, 4)
POSITIVE = _f32(2, 3, 4, low=0.5, high=2.0)
REDUCE_CASES = [
    Case("ReduceMean", {"x": R}, {"axes": [1]}, opset=17),
    Case("ReduceMean", {"x": R, "axes": _axes(0, 2)}, {"keepdims": 0}, opset=18),
    Case("ReduceSum", {"x": R, "axes": _axes(-1)}, {}, opset=13),
    Case("ReduceSum", {"x": R}, {"keepdims": 0}, opset=13),              # all axes
    Case("ReduceSum", {"x": R, "axes": _axes()}, {"noop_with_empty_axes": 1}, opset=13),
    Case("ReduceMax", {"x": R}, {"axes": [0, -1], "keepdims": 0}, opset=17),
    Case("ReduceMax", {"x": R, "axes": _axes(1)}, {}, opset=18),
    Case("ReduceMin", {"x": R}, {"axes": [2]}, opset=17),
    Case("ReduceMin", {"x": R}, {}, opset=18),
    Case("ReduceProd", {"x": POSITIVE, "axes": _axes(1, 2)}, {}, opset=18),
    Case("ReduceL1", {"x": R, "axes": _axes(0)}, {}, opset=18),
    Case("ReduceL2", {"x": R, "axes": _axes(2)}, {"keepdims": 0}, opset=18),
    Case("ReduceL2", {"x": R}, {"axes": [1]}, opset=13),
    Case("ReduceSumSquare", {"x": R, "axes": _axes(0, 1)}, {}, opset=18),
    Case("ReduceSumSquare", {"x": R, "axes": _axes()}, {"noop_with_empty_axes": 1}, opset=18),
    Case("ReduceLogSum", {"x": POSITIVE, "axes": _axes(1)}, {}, opset=18),
    Case("ReduceLogSumExp", {"x": R * 10, "axes": _axes(2)}, {"keepdims": 0}, opset=18),
    Case("ReduceMax", {"x": RNG.integers(-50, 50, (3, 4)).astype(np.int32)}, {"axes": [1]},
         opset=17),
    Case("ReduceSum", {"x": RNG.integers(-50, 50, (3, 4)).astype(np.int64)}, {}, opset=13),
]
CASES = POOL_CASES + REDUCE_CASES


def _id(case: Case) -> str:
    attrs = "-".join(f"{k}" for k in case.attrs) or "default"
    return f"{case.op}-{case.inputs['x'].shape}-{attrs}-{case.opset}"


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_matches_onnx_shape_inference_and_onnxruntime(case: Case) -> None:
    check_forward_vs_ort(case.op, case.inputs, 1, case.attrs, case.inits, case.opset)


FLOAT_CASES = [c for c in CASES if c.inputs["x"].dtype.kind == "f"]


@pytest.mark.parametrize("case", FLOAT_CASES, ids=[_id(c) for c in FLOAT_CASES])
def test_vjp_matches_finite_differences(case: Case) -> None:
    _, lowered, _ = lower_and_run(case.op, case.inputs, ["y"], case.attrs, case.inits)
    (layer,) = lowered.layers
    check_vjp(OPS[layer.kind], [case.inputs["x"]], layer.attrs)


# --- random geometries -------------------------------------------------------------------------


@st.composite
def pool_configs(draw: st.DrawFn) -> tuple[str, np.ndarray, dict]:
    op = draw(st.sampled_from(["MaxPool", "AveragePool"]))
    nsp = draw(st.integers(1, 2))
    kernel = [draw(st.integers(1, 3)) for _ in range(nsp)]
    dilations = [draw(st.integers(1, 2)) for _ in range(nsp)]
    pads = [draw(st.integers(0, k - 1)) for _ in range(2) for k in kernel]
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    spatial = [max(e, 2) + draw(st.integers(0, 3)) for e in eff]
    attrs = {"kernel_shape": kernel, "strides": [draw(st.integers(1, 3)) for _ in range(nsp)],
             "dilations": dilations, "pads": pads, "ceil_mode": int(draw(st.booleans()))}
    if op == "AveragePool":
        attrs["count_include_pad"] = int(draw(st.booleans()))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return op, _f32(draw(st.integers(1, 2)), 2, *spatial, rng=rng), attrs


@settings(max_examples=30, deadline=None)
@given(pool_configs())
def test_random_pool_matches_onnxruntime_and_finite_differences(config: tuple) -> None:
    op, x, attrs = config
    lowered = check_forward_vs_ort(op, {"x": x}, 1, attrs, (), 22)  # see the ceil-mode case
    check_vjp(POOL, [x], lowered.layers[0].attrs)


REDUCERS = ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
            "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp"]


@settings(max_examples=30, deadline=None)
@given(op=st.sampled_from(REDUCERS), shape=st.lists(st.integers(1, 3), min_size=1, max_size=4),
       data=st.data(), keepdims=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_random_reduce_matches_onnxruntime_and_finite_differences(
        op: str, shape: list[int], data: st.DataObject, keepdims: bool, seed: int) -> None:
    axes = data.draw(st.lists(st.integers(-len(shape), len(shape) - 1), max_size=len(shape),
                              unique_by=lambda a: a % len(shape)))
    positive = op in ("ReduceLogSum", "ReduceProd")
    x = _f32(*shape, low=0.5 if positive else -3.0, high=1.5 if positive else 3.0,
             rng=np.random.default_rng(seed))
    inputs = {"x": x, "axes": _axes(*axes)}
    lowered = check_forward_vs_ort(op, inputs, 1, {"keepdims": int(keepdims)}, ("axes",), 18)
    check_vjp(REDUCE, [x], lowered.layers[0].attrs)


# --- closed forms, facts, errors ---------------------------------------------------------------


@pytest.mark.parametrize("fn, identity", [
    ("sum", 0.0), ("prod", 1.0), ("max", -np.inf), ("min", np.inf), ("l1", 0.0), ("l2", 0.0),
    ("sum_square", 0.0), ("log_sum", -np.inf), ("log_sum_exp", -np.inf)])
def test_empty_reduction_gives_the_identity(fn: str, identity: float) -> None:
    # ONNX: reducing an empty set yields the operation's identity element
    (y,) = REDUCE.forward(np.zeros((2, 0, 3), np.float32), fn=fn, axes=(1,), keepdims=True)
    assert y.shape == (2, 1, 3) and y.dtype == np.float32
    np.testing.assert_array_equal(y, np.full((2, 1, 3), identity, np.float32))


def test_max_pool_vjp_routes_to_the_argmax() -> None:
    x = np.array([[[[1.0, 5.0], [3.0, 2.0]]]])
    (g,) = POOL.vjp((np.array([[[[7.0]]]]),), (x,), POOL.forward(
        x, fn="max", kernel_shape=(2, 2), strides=(1, 1), pads=(0,) * 4, dilations=(1, 1),
        ceil_mode=False, count_include_pad=False), fn="max", kernel_shape=(2, 2),
        strides=(1, 1), pads=(0,) * 4, dilations=(1, 1), ceil_mode=False,
        count_include_pad=False)
    np.testing.assert_array_equal(g, [[[[0.0, 7.0], [0.0, 0.0]]]])


def _windowwise_max_pool_vjp(x: np.ndarray, g: np.ndarray, kernel: tuple, strides: tuple,
                             pads: tuple, dilations: tuple) -> np.ndarray:
    """Max pool's vjp from its definition, one output position at a time: the cotangent goes
    to the window's first maximum (numpy's argmax), padding reading -inf."""
    nsp = x.ndim - 2
    # enough end padding for every window g has (ceil mode can reach past the end pads)
    ends = [max(pads[nsp + i], (o - 1) * s + (k - 1) * d + 1 - pads[i] - n)
            for i, (o, s, k, d, n) in enumerate(zip(g.shape[2:], strides, kernel, dilations,
                                                     x.shape[2:]))]
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0)] + list(zip(pads[:nsp], ends)),
                constant_values=-np.inf)
    gxp = np.zeros_like(xp)
    for pos in np.ndindex(*g.shape[2:]):
        window = tuple(slice(p * s, p * s + (k - 1) * d + 1, d)
                       for p, s, k, d in zip(pos, strides, kernel, dilations))
        first = xp[(Ellipsis,) + window].reshape(x.shape[:2] + (-1,)).argmax(axis=-1)
        for k, tap in enumerate(np.ndindex(*kernel)):
            at = tuple(p * s + t * d for p, s, t, d in zip(pos, strides, tap, dilations))
            gxp[(Ellipsis,) + at] += np.where(first == k, g[(Ellipsis,) + pos], 0.0)
    crop = tuple(slice(pads[i], pads[i] + x.shape[2 + i]) for i in range(nsp))
    return gxp[(Ellipsis,) + crop]


MAX_POOL_ORACLE_CASES = [  # x shape, attrs; every case has batch 2
    ((2, 3, 9, 9), {"kernel_shape": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1)}),
    ((2, 3, 9, 8), {"kernel_shape": (3, 2), "strides": (1, 1), "pads": (1, 0, 2, 1)}),
    ((2, 2, 8, 7), {"kernel_shape": (3, 3), "strides": (2, 2), "pads": (0, 0, 0, 0),
                    "ceil_mode": True}),
    ((2, 3, 9, 8), {"kernel_shape": (2, 2), "strides": (1, 2), "pads": (1, 1, 1, 1),
                    "dilations": (2, 3)}),
    ((2, 3, 11), {"kernel_shape": (3,), "strides": (2,), "pads": (1, 1)}),
    ((2, 2, 5, 4, 6), {"kernel_shape": (2, 2, 3), "strides": (2, 1, 2), "pads": (0,) * 6,
                       "ceil_mode": True}),
]


@pytest.mark.parametrize(("dtype", "tol"), [(np.float16, 2e-3), (np.float32, 1e-6),
                                           (np.float64, 1e-12)])
@pytest.mark.parametrize(("shape", "attrs"), MAX_POOL_ORACLE_CASES)
def test_max_pool_vjp_matches_windowwise_oracle_with_ties(shape, attrs, dtype, tol) -> None:
    rng = np.random.default_rng(4)
    n = len(shape) - 2
    attrs = {"fn": "max", "dilations": (1,) * n, "ceil_mode": False,
             "count_include_pad": False, **attrs}
    x = rng.integers(-2, 3, shape).astype(dtype)  # few values: most windows hold ties
    (y,) = POOL.forward(x, **attrs)
    g = rng.standard_normal(y.shape).astype(dtype)
    (gx,) = POOL.vjp((g,), (x,), (y,), **attrs)
    want = _windowwise_max_pool_vjp(x, g, attrs["kernel_shape"], attrs["strides"],
                                    attrs["pads"], attrs["dilations"])
    assert gx.dtype == dtype
    np.testing.assert_allclose(gx, want, rtol=tol, atol=tol * np.abs(want).max())


def _facts(case: Case) -> Any:
    _, lowered, specs = lower_and_run(case.op, case.inputs, ["y"], case.attrs, case.inits)
    layer = lowered.layers[0]
    return OPS[layer.kind].facts([specs["x"]], [specs["y"]], **layer.attrs)


def test_facts() -> None:
    assert _facts(MAXPOOL).ops == 1 * 3 * 4 * 4 * 3 * 3  # out elements × kernel taps (9 -> 4)
    assert _facts(GLOBAL_AVG).ops == 2 * 3 * 4 * 5       # one add per input element
    assert _facts(REDUCE_CASES[0]).ops == 2 * 3 * 4      # one accumulate per input element
    assert _facts(MAXPOOL).macs == 0


def test_global_pool_attrs_describe_the_whole_extent() -> None:
    _, lowered, _ = lower_and_run(GLOBAL_AVG.op, GLOBAL_AVG.inputs, ["y"])
    attrs = lowered.layers[0].attrs
    assert (attrs["fn"], attrs["kernel_shape"], attrs["pads"]) == ("global_avg", (4, 5), (0,) * 4)


def test_reduce_axes_are_normalised_and_sorted() -> None:
    _, lowered, _ = lower_and_run("ReduceMax", {"x": R}, ["y"], {"axes": [-1, 0]})
    assert lowered.layers[0].attrs["axes"] == (0, 2)


def test_max_pool_indices_output_is_refused() -> None:
    with pytest.raises(ModelError, match="Indices"):
        lower_and_run("MaxPool", {"x": X}, ["y", "i"], {"kernel_shape": [2, 2]})


def test_non_constant_reduce_axes_are_refused() -> None:
    with pytest.raises(ModelError, match="constant"):
        lower_and_run("ReduceSum", {"x": R, "axes": _axes(1)}, ["y"], {})
