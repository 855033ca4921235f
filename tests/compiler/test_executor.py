"""The reference executor on whole graphs: forward vs onnxruntime, graph-level VJP vs central
finite differences in float64, intermediates, and feed checking."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.errors import ModelError
from compiler.executor import run, vjp
from compiler.frontend import load
from compiler.verify import verify
from tests.compiler.opcheck import run_ort


def _small_cnn(seed: int = 0) -> onnx.ModelProto:
    """conv -> relu -> conv (+ residual) -> global pool -> flatten -> gemm -> softmax."""
    rng = np.random.default_rng(seed)
    init = {
        "w1": rng.standard_normal((4, 3, 3, 3)) * 0.3, "b1": rng.standard_normal(4) * 0.1,
        "w2": rng.standard_normal((4, 4, 3, 3)) * 0.3, "b2": rng.standard_normal(4) * 0.1,
        "wf": rng.standard_normal((5, 4)) * 0.5, "bf": rng.standard_normal(5) * 0.1,
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Add", ["c2", "r1"], ["s"], name="add"),
        helper.make_node("Sigmoid", ["s"], ["g"], name="sig"),
        helper.make_node("GlobalAveragePool", ["g"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], transB=1, name="fc"),
        helper.make_node("Softmax", ["logits"], ["prob"], axis=-1, name="softmax"),
    ]
    graph = helper.make_graph(
        nodes, "small_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 6, 6])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [2, 5])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in init.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="module")
def cnn() -> tuple[onnx.ModelProto, np.ndarray]:
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 6)).astype(np.float32)
    return _small_cnn(), x


def test_forward_matches_onnxruntime(cnn) -> None:
    model, x = cnn
    graph = load(model)
    verify(graph)
    ours = run(graph, {"x": x})["prob"]
    (ref,) = run_ort(model, {"x": x})
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)


def test_forward_float64_is_closer_to_float32_reference_than_tolerance(cnn) -> None:
    model, x = cnn
    graph = load(model)
    out64 = run(graph, {"x": x}, dtype="float64")["prob"]
    assert out64.dtype == np.float64
    np.testing.assert_allclose(out64, run_ort(model, {"x": x})[0], rtol=1e-4, atol=1e-5)


def test_keep_returns_intermediates(cnn) -> None:
    model, x = cnn
    graph = load(model)
    env = run(graph, {"x": x}, keep=["r1"])
    assert set(env) == {"prob", "r1"}
    assert (env["r1"] >= 0).all() and env["r1"].shape == (2, 4, 6, 6)


def _loss(graph, feeds, dtype="float64") -> float:
    return float(np.sum(run(graph, feeds, dtype=dtype)["prob"] * _COT))


_COT = np.random.default_rng(7).standard_normal((2, 5))


def test_graph_vjp_matches_finite_differences(cnn) -> None:
    model, x = cnn
    graph = load(model)
    x64 = x.astype(np.float64)
    grads = vjp(graph, {"x": x64}, {"prob": _COT})
    rng = np.random.default_rng(3)
    h = 1e-6
    for name in ["x", *sorted(graph.weights)]:
        base = x64 if name == "x" else graph.weights[name].astype(np.float64)
        d = rng.standard_normal(base.shape)

        def at(v, name=name):
            if name == "x":
                return _loss(graph, {"x": v})
            from dataclasses import replace
            return _loss(replace(graph, weights={**graph.weights, name: v}), {"x": x64})

        numeric = (at(base + h * d) - at(base - h * d)) / (2 * h)
        analytic = float(np.sum(grads[name] * d))
        assert np.isclose(analytic, numeric, rtol=1e-5, atol=1e-8), (name, analytic, numeric)


def test_feeds_are_checked(cnn) -> None:
    model, x = cnn
    graph = load(model)
    with pytest.raises(ModelError, match="missing"):
        run(graph, {})
    with pytest.raises(ModelError, match="shape"):
        run(graph, {"x": x[:1]})
    with pytest.raises(ModelError, match="dtype"):
        run(graph, {"x": x.astype(np.int64)})
