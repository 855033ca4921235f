"""norm (layer, RMS, batch, instance normalisation): shapes vs ONNX shape inference, forward vs
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

RNG = np.random.default_rng(5)
NORM = OPS["norm"]


def _f32(*shape: int, low: float = -3.0, high: float = 3.0,
         rng: np.random.Generator = RNG) -> np.ndarray:
    return rng.uniform(low, high, shape).astype(np.float32)


def _bn_inputs(x: np.ndarray, rng: np.random.Generator = RNG) -> dict[str, np.ndarray]:
    c = x.shape[1]
    return {"x": x, "s": _f32(c, rng=rng), "b": _f32(c, rng=rng), "mean": _f32(c, rng=rng),
            "var": _f32(c, low=0.2, rng=rng)}


class Case(NamedTuple):
    op: str
    inputs: dict[str, np.ndarray]
    attrs: dict[str, Any] = {}
    initializers: tuple[str, ...] = ("s", "b", "mean", "var")
    opset: int = 17
    n_outputs: int = 1

    @property
    def inits(self) -> tuple[str, ...]:
        return tuple(n for n in self.initializers if n in self.inputs)


X4 = _f32(2, 3, 4, 5)
LAYER = Case("LayerNormalization", {"x": X4, "s": _f32(5), "b": _f32(5)})
CASES = [
    LAYER,
    Case("LayerNormalization", {"x": X4, "s": _f32(3, 4, 5), "b": _f32(3, 4, 5)}, {"axis": 1}),
    Case("LayerNormalization", {"x": X4, "s": _f32(4, 5)}, {"axis": -2, "epsilon": 1e-2}),
    Case("LayerNormalization", {"x": _f32(3, 4), "s": _f32(3, 4), "b": _f32(3, 4)}, {"axis": 0}),
    Case("LayerNormalization", {"x": X4, "s": _f32(5), "b": _f32(5)}, {}, ()),
    Case("LayerNormalization", {"x": X4, "s": _f32(4, 5), "b": _f32(4, 5)}, {"axis": 2},
         n_outputs=3),
    Case("LayerNormalization", {"x": _f32(2, 6), "s": _f32(6), "b": _f32(6)},
         {"epsilon": 0.5}, n_outputs=3),
    Case("RMSNormalization", {"x": X4, "s": _f32(5)}, {}, opset=23),
    Case("RMSNormalization", {"x": X4, "s": _f32(4, 5)}, {"axis": 2, "epsilon": 0.1}, opset=23),
    Case("RMSNormalization", {"x": _f32(3, 4), "s": _f32(3, 4)}, {"axis": -2}, (), opset=23),
    Case("BatchNormalization", _bn_inputs(X4)),
    Case("BatchNormalization", _bn_inputs(_f32(4, 3)), {"epsilon": 1e-2, "momentum": 0.5}),
    Case("BatchNormalization", _bn_inputs(_f32(2, 3, 7)), {}, ("var",), opset=14),
    Case("InstanceNormalization", {"x": X4, "s": _f32(3), "b": _f32(3)}),
    Case("InstanceNormalization", {"x": _f32(2, 4, 6), "s": _f32(4), "b": _f32(4)},
         {"epsilon": 0.3}),
]


def _id(case: Case) -> str:
    return f"{case.op}-{'-'.join(f'{k}' for k in case.attrs) or 'default'}-{case.n_outputs}"


def _outputs(case: Case) -> list[str]:
    return [f"y{i}" for i in range(case.n_outputs)]


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_matches_onnx_shape_inference_and_onnxruntime(case: Case) -> None:
    check_forward_vs_ort(case.op, case.inputs, case.n_outputs, case.attrs, case.inits,
                         case.opset)


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_vjp_matches_finite_differences(case: Case) -> None:
    _, lowered, _ = lower_and_run(case.op, case.inputs, _outputs(case), case.attrs, case.inits)
    for layer in lowered.layers:   # the norm, plus reduce layers for Mean / InvStdDev
        check_vjp(OPS[layer.kind], [case.inputs[t] if t else None for t in layer.inputs],
                  layer.attrs)


def test_layer_norm_attrs_are_normalised() -> None:
    _, lowered, _ = lower_and_run(CASES[2].op, CASES[2].inputs, ["y"], CASES[2].attrs)
    (layer,) = lowered.layers
    assert dict(layer.attrs) == {"fn": "layer_norm", "axis": 2, "epsilon": 1e-2}


def test_layer_norm_statistics_outputs_become_reduce_layers() -> None:
    case = CASES[5]
    _, lowered, _ = lower_and_run(case.op, case.inputs, _outputs(case), case.attrs, case.inits)
    assert [layer.kind for layer in lowered.layers] == ["norm", "reduce", "reduce"]
    assert [layer.attrs["fn"] for layer in lowered.layers[1:]] == ["mean", "inv_std"]
    assert all(layer.attrs["axes"] == (2, 3) for layer in lowered.layers[1:])


def test_forward_is_dtype_preserving() -> None:
    xs = list(LAYER.inputs.values())
    attrs = {"fn": "layer_norm", "axis": 3, "epsilon": 1e-5}
    assert NORM.forward(*xs, **attrs)[0].dtype == np.float32
    (y64,) = NORM.forward(*[x.astype(np.float64) for x in xs], **attrs)
    assert y64.dtype == np.float64
    # closed form in float64: (x - mean) / sqrt(var + eps) * s + b over the last axis
    x, s, b = (v.astype(np.float64) for v in xs)
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    np.testing.assert_allclose(y64, (x - mu) / np.sqrt(var + 1e-5) * s + b, rtol=1e-12)


# --- random shapes -----------------------------------------------------------------------------


@st.composite
def shape_and_axis(draw: st.DrawFn, min_rank: int = 2) -> tuple[tuple[int, ...], int]:
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=min_rank, max_size=4)))
    return shape, draw(st.integers(-len(shape), len(shape) - 1))


@settings(max_examples=20, deadline=None)
@given(shape_and_axis(), st.booleans(), st.integers(0, 2**32 - 1))
def test_random_layer_norm(config: tuple, with_bias: bool, seed: int) -> None:
    shape, axis = config
    rng = np.random.default_rng(seed)
    normalized = shape[axis % len(shape):]
    inputs = {"x": _f32(*shape, rng=rng), "s": _f32(*normalized, rng=rng)}
    if with_bias:
        inputs["b"] = _f32(*normalized, rng=rng)
    lowered = check_forward_vs_ort("LayerNormalization", inputs, 1, {"axis": axis},
                                   tuple(inputs)[1:])
    check_vjp(NORM, list(inputs.values()), lowered.layers[0].attrs)


@settings(max_examples=20, deadline=None)
@given(shape_and_axis(min_rank=3), st.integers(0, 2**32 - 1))
def test_random_batch_and_instance_norm(config: tuple, seed: int) -> None:
    shape, _ = config
    rng = np.random.default_rng(seed)
    bn = _bn_inputs(_f32(*shape, rng=rng), rng)
    lowered = check_forward_vs_ort("BatchNormalization", bn, 1, {}, ("s", "b", "mean", "var"))
    check_vjp(NORM, list(bn.values()), lowered.layers[0].attrs)
    inorm = {"x": bn["x"], "s": bn["s"], "b": bn["b"]}
    got, lowered, _ = lower_and_run("InstanceNormalization", inorm, ["y"], {}, ("s", "b"))
    # the float64 closed form is the oracle on every draw
    np.testing.assert_allclose(got[0], _instance_norm64(**inorm), rtol=1e-4, atol=1e-5)
    if _cancellation(bn["x"]) < 1e3:
        # onnxruntime computes the variance in float32; where mean(x^2) / var is large it loses
        # digits to cancellation (e.g. two values 2.750, 2.747: 2.6e-4 relative), so it is a
        # second oracle only on well-conditioned instances
        check_forward_vs_ort("InstanceNormalization", inorm, 1, {}, ("s", "b"))
    check_vjp(NORM, list(inorm.values()), lowered.layers[0].attrs)


def _instance_norm64(x: np.ndarray, s: np.ndarray, b: np.ndarray, eps: float = 1e-5
                     ) -> np.ndarray:
    x64, axes = x.astype(np.float64), tuple(range(2, x.ndim))
    bcast = (1, -1) + (1,) * (x.ndim - 2)
    y = (x64 - x64.mean(axes, keepdims=True)) / np.sqrt(x64.var(axes, keepdims=True) + eps)
    return y * s.reshape(bcast) + b.reshape(bcast)


def _cancellation(x: np.ndarray, eps: float = 1e-5) -> float:
    """How much a float32 E[x^2] - E[x]^2 variance amplifies rounding, worst instance."""
    x64, axes = x.astype(np.float64), tuple(range(2, x.ndim))
    return float(((x64 ** 2).mean(axes) / (x64.var(axes) + eps)).max())


@settings(max_examples=20, deadline=None)
@given(shape_and_axis(), st.integers(0, 2**32 - 1))
def test_random_rms_norm(config: tuple, seed: int) -> None:
    shape, axis = config
    rng = np.random.default_rng(seed)
    inputs = {"x": _f32(*shape, rng=rng), "s": _f32(*shape[axis % len(shape):], rng=rng)}
    lowered = check_forward_vs_ort("RMSNormalization", inputs, 1, {"axis": axis}, ("s",),
                                   opset=23)
    check_vjp(NORM, list(inputs.values()), lowered.layers[0].attrs)


# --- facts and errors --------------------------------------------------------------------------


def _facts(case: Case) -> Any:
    _, lowered, specs = lower_and_run(case.op, case.inputs, ["y"], case.attrs, case.inits)
    layer = lowered.layers[0]
    return NORM.facts([specs[t] for t in layer.inputs], [specs["y"]], **layer.attrs)


def test_facts_count_streaming_ops() -> None:
    # layer norm: per element mean, centre, square, variance sum, rstd multiply, scale, shift
    assert _facts(LAYER).ops == 2 * 3 * 4 * 5 * 7
    assert (_facts(LAYER).macs, _facts(LAYER).m) == (0, 0)
    # inference batch norm is a per-channel affine map: one multiply, one add per element
    assert _facts(CASES[10]).ops == 2 * 3 * 4 * 5 * 2
    # rms norm: square, mean sum, rstd multiply, scale
    assert _facts(CASES[7]).ops == 2 * 3 * 4 * 5 * 4


def test_batch_norm_training_mode_is_refused() -> None:
    with pytest.raises(ModelError, match="training"):
        lower_and_run("BatchNormalization", _bn_inputs(X4), ["y", "m", "v"],
                      {"training_mode": 1})


def test_layer_norm_axis_out_of_range_is_refused() -> None:
    with pytest.raises(ModelError, match="axis"):
        lower_and_run(LAYER.op, LAYER.inputs, ["y"], {"axis": 4})
