"""Squared weight-cotangent norms from a pruned, factored backward pass equal the squared norms
of the full gradients (the executor's plain vjp, itself finite-difference checked), in both
the Gram and the direct form, and the pruning skips exactly what leads to no probed weight."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.executor import backward, run
from compiler.frontend import load
from compiler.sensitivity import gauss_newton, weight_norms
from compiler.sensitivity.hawq import unique_weights
from compiler.sensitivity.proxy import check_quantisable


@pytest.mark.parametrize("m,k,p", [(7, 40, 3), (40, 7, 3), (3, 5, 200), (64, 96, 20)])
def test_product_sqnorm_equals_the_product_norm(m: int, k: int, p: int) -> None:
    """Gram form (few positions) and direct form (many) against ||a b^T||^2 in float64."""
    rng = np.random.default_rng(m * k * p)
    a, b = rng.standard_normal((2, m, p)), rng.standard_normal((2, k, p))
    want = sum(float(np.sum((a[i] @ b[i].T) ** 2)) for i in range(2))
    assert weight_norms.product_sqnorm(a, b) == pytest.approx(want, rel=1e-12)
    got32 = weight_norms.product_sqnorm(a.astype(np.float32), b.astype(np.float32))
    assert got32 == pytest.approx(want, rel=1e-4)


def _init(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> onnx.TensorProto:
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name)


def _net() -> onnx.ModelProto:
    """Conv (strided, padded) -> relu -> grouped conv -> depthwise conv -> a 1x1 conv applied
    twice (shared weight) -> 3x3 conv on few positions -> two linears on a 3-D input ->
    linear head. The last conv and the head take the Gram form, the others the direct one."""
    rng = np.random.default_rng(0)
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w1", "b1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),
        n("Relu", ["c1"], ["r1"]),
        n("Conv", ["r1", "w2"], ["c2"], group=2, pads=[1, 1, 1, 1]),
        n("Conv", ["c2", "w3"], ["c3"], group=8, pads=[1, 1, 1, 1], strides=[2, 2]),
        n("Conv", ["c3", "w5"], ["c5"]),
        n("Relu", ["c5"], ["r5"]),
        n("Conv", ["r5", "w5"], ["c6"]),
        n("Conv", ["c6", "w4"], ["c4"], pads=[1, 1, 1, 1]),
        n("Reshape", ["c4", "shape"], ["f"]),
        n("MatMul", ["f", "ws"], ["s1"]),
        n("Tanh", ["s1"], ["t1"]),
        n("MatMul", ["t1", "ws"], ["s2"]),
        n("Reshape", ["s2", "flat"], ["v"]),
        n("Gemm", ["v", "wh", "bh"], ["y"], transB=1),
    ]
    inits = [_init("w1", (8, 3, 3, 3), rng), _init("b1", (8,), rng),
             _init("w2", (8, 4, 3, 3), rng), _init("w3", (8, 1, 3, 3), rng),
             _init("w4", (40, 8, 3, 3), rng), _init("w5", (8, 8, 1, 1), rng),
             _init("ws", (10, 10), rng), _init("wh", (5, 640), rng), _init("bh", (5,), rng),
             numpy_helper.from_array(np.array([1, 64, 10], np.int64), "shape"),
             numpy_helper.from_array(np.array([1, 640], np.int64), "flat")]
    graph = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 15, 15])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("dtype,rel", [("float64", 1e-10), ("float32", 1e-4)])
def test_squared_norms_equal_the_full_gradients(dtype: str, rel: float) -> None:
    g = load(_net())
    names = unique_weights(check_quantisable(g))
    rng = np.random.default_rng(1)
    env = run(g, {"x": rng.standard_normal((1, 3, 15, 15))}, dtype=dtype, keep=True)
    seeds = {"y": rng.standard_normal((1, 5)).astype(dtype)}
    full = backward(g, env, seeds)
    want = np.array([float(np.sum(np.asarray(full[n], np.float64) ** 2)) for n in names])
    p = weight_norms.plan(g, names)
    np.testing.assert_allclose(weight_norms.squared_norms(g, env, seeds, p), want, rtol=rel)
    assert (want > 0).all()


def test_plan_prunes_the_input_and_factors_single_reader_gemm_weights() -> None:
    g = load(_net())
    names = unique_weights(check_quantisable(g))
    p = weight_norms.plan(g, names)
    factored = {layer.name for layer in g.layers if layer.name in p.factored}
    # w1 has a bias, but the bias is not probed: factored all the same; the depthwise conv,
    # the two convs sharing w5 and the two linears sharing ws (one weight since the lowering
    # shares a transposed initializer) take their norms from the full gradient
    shared = {layer.inputs[1] for layer in g.layers if layer.kind == "linear"
              and sum(x.inputs[1:2] == layer.inputs[1:2] for x in g.layers) == 2}
    assert len(shared) == 1
    assert factored == {layer.name for layer in g.layers if layer.kind in ("conv", "linear")
                        and layer.inputs[1] not in ("w3", "w5", *shared)}
    assert len(factored) == 4
    assert "x" not in p.needed and "b1" not in p.needed
    assert "r1" in p.needed  # downstream of w1


def test_later_probes_reuse_the_input_grams() -> None:
    """A second probe over the same forward pass, reusing the input sides' Gram matrices
    (no im2col), gives the full-gradient norms of its own seeds."""
    g = load(_net())
    names = unique_weights(check_quantisable(g))
    rng = np.random.default_rng(3)
    env = run(g, {"x": rng.standard_normal((1, 3, 15, 15))}, dtype="float64", keep=True)
    p, grams = weight_norms.plan(g, names), {}
    for _ in range(2):
        seeds = {"y": rng.standard_normal((1, 5))}
        full = backward(g, env, seeds)
        got = weight_norms.squared_norms(g, env, seeds, p, grams)
        np.testing.assert_allclose(got, [float(np.sum(full[n] ** 2)) for n in names],
                                   rtol=1e-10)
    last_conv = next(layer for layer in g.layers if layer.inputs[1:2] == ("w4",))
    head = [layer for layer in g.layers if layer.kind == "linear"][-1]
    assert set(grams) == {last_conv.name, head.name}


def test_chunk_samples_are_unchanged_by_the_plan() -> None:
    """One chunk's Gauss-Newton samples with the pruned, factored pass equal those of the
    plain backward pass (same probes), computed here from the full gradients."""
    g = load(_net())
    names = unique_weights(check_quantisable(g))
    feeds = {"x": np.random.default_rng(2).standard_normal((1, 3, 15, 15))}
    got = gauss_newton.chunk_samples(g, feeds, "kl", ["y"], names, 3, 4,
                                     np.random.default_rng(5), dtype="float64")
    env = run(g, feeds, dtype="float64", keep=True)
    factor = gauss_newton.output_factor("kl", env["y"], 4)
    rng = np.random.default_rng(5)
    for k in range(3):
        u = rng.choice(np.array([-1.0, 1.0]), env["y"].shape)
        full = backward(g, env, {"y": factor(u)})
        np.testing.assert_allclose(got[k], [float(np.sum(full[n] ** 2)) for n in names],
                                   rtol=1e-10)
