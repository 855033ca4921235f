"""BatchNorm folding: the folded conv/linear equals BN(conv) by closed form, and whole models
equal onnxruntime on the original; BNs that cannot fold stay."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from compiler.passes.fold_batchnorm import fold_batchnorm, folded_params
from compiler.verify import verify
from tests.compiler.opcheck import check_load_vs_ort, graph_model

F = TensorProto.FLOAT
RNG = np.random.default_rng(2)


def bn_params(c, prefix="bn"):
    return {f"{prefix}_scale": RNG.uniform(0.5, 2.0, c).astype(np.float32),
            f"{prefix}_bias": RNG.standard_normal(c).astype(np.float32),
            f"{prefix}_mean": RNG.standard_normal(c).astype(np.float32),
            f"{prefix}_var": RNG.uniform(0.1, 3.0, c).astype(np.float32)}


def bn_node(x, y, prefix="bn", epsilon=1e-3):
    names = [f"{prefix}_{p}" for p in ("scale", "bias", "mean", "var")]
    return helper.make_node("BatchNormalization", [x, *names], [y], name=prefix, epsilon=epsilon)


def kinds(g):
    return [(layer.kind, layer.attrs.get("fn")) for layer in g.layers]


def load_and_compare(nodes, x_shape, consts, outputs=("y",)):
    m = graph_model(nodes, [("x", F, list(x_shape))], [(o, F, None) for o in outputs], consts)
    g = check_load_vs_ort(m, {"x": RNG.standard_normal(x_shape).astype(np.float32)})
    verify(g)
    return g


# --- the algebra, against BN's closed form in float64 -----------------------------------------


@settings(max_examples=25, deadline=None)
@given(out=st.integers(1, 6), inp=st.integers(1, 6), bias=st.booleans(),
       eps=st.sampled_from([1e-5, 1e-3, 0.1]), seed=st.integers(0, 2**16))
def test_folded_linear_equals_linear_then_batchnorm(out, inp, bias, eps, seed):
    rng = np.random.default_rng(seed)
    w, x = rng.standard_normal((out, inp)), rng.standard_normal((5, inp))
    b = rng.standard_normal(out) if bias else None
    gamma, beta, mean = (rng.standard_normal(out) for _ in range(3))
    var = rng.uniform(0.1, 2.0, out)
    y = x @ w.T + (0 if b is None else b)
    want = gamma * (y - mean) / np.sqrt(var + eps) + beta  # BN's definition, per channel
    w2, b2 = folded_params(w, b, gamma, beta, mean, var, eps)
    np.testing.assert_allclose(x @ w2.T + b2, want, rtol=1e-12, atol=1e-12)


def test_folded_params_keep_the_weight_dtype():
    w2, b2 = folded_params(np.ones((2, 3, 1, 1), np.float32), None, *np.ones((4, 2)), 1e-5)
    assert w2.dtype == b2.dtype == np.float32 and w2.shape == (2, 3, 1, 1) and b2.shape == (2,)


# --- whole models through the frontend ---------------------------------------------------------


@pytest.mark.parametrize("group, bias", [(1, True), (1, False), (4, True)])
def test_conv_batchnorm_relu_folds(group, bias):
    w = RNG.standard_normal((8, 4 // group, 3, 3)).astype(np.float32)
    consts = {"w": w, **bn_params(8), **({"b": RNG.standard_normal(8).astype(np.float32)}
                                          if bias else {})}
    nodes = [helper.make_node("Conv", ["x", "w", "b"] if bias else ["x", "w"], ["c"],
                              name="conv", pads=[1, 1, 1, 1], group=group),
             bn_node("c", "n"), helper.make_node("Relu", ["n"], ["y"])]
    g = load_and_compare(nodes, (1, 4, 6, 6), consts)
    assert kinds(g) == [("conv", None), ("activation", "relu")]
    conv = g.layers[0]
    assert conv.name == "conv" and conv.inputs == ("x", "conv.weight_bn", "conv.bias_bn")
    assert conv.outputs == ("n",)
    assert "w" not in g.weights and "bn_var" not in g.weights and "c" not in g.types


def test_gemm_batchnorm_folds_into_linear():
    consts = {"w": RNG.standard_normal((6, 5)).astype(np.float32),
              "b": RNG.standard_normal(6).astype(np.float32), **bn_params(6)}
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["c"], name="fc", transB=1),
             bn_node("c", "y")]
    g = load_and_compare(nodes, (3, 5), consts)
    assert kinds(g) == [("linear", None)]
    assert g.layers[0].inputs[1:] == ("fc.weight_bn", "fc.bias_bn")


def test_two_batchnorms_fold_independently():
    consts = {"w1": RNG.standard_normal((4, 3, 1, 1)).astype(np.float32),
              "w2": RNG.standard_normal((2, 4, 1, 1)).astype(np.float32),
              **bn_params(4, "bn1"), **bn_params(2, "bn2")}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1"),
             bn_node("c1", "n1", "bn1"),
             helper.make_node("Conv", ["n1", "w2"], ["c2"], name="conv2"),
             bn_node("c2", "y", "bn2")]
    g = load_and_compare(nodes, (1, 3, 4, 4), consts)
    assert kinds(g) == [("conv", None), ("conv", None)]


def _conv_bn_nodes(extra=()):
    return [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"), bn_node("c", "y"), *extra]


CONV_CONSTS = {"w": RNG.standard_normal((4, 3, 1, 1)).astype(np.float32), **bn_params(4)}


def test_conv_output_that_is_a_graph_output_does_not_fold():
    g = load_and_compare(_conv_bn_nodes(), (1, 3, 4, 4), CONV_CONSTS, outputs=("y", "c"))
    assert kinds(g) == [("conv", None), ("norm", "batch_norm")]


def test_conv_output_with_another_reader_does_not_fold():
    nodes = _conv_bn_nodes([helper.make_node("Add", ["y", "c"], ["z"])])
    g = load_and_compare(nodes, (1, 3, 4, 4), CONV_CONSTS, outputs=("z",))
    assert ("norm", "batch_norm") in kinds(g)


def test_batchnorm_after_relu_does_not_fold():
    nodes = [helper.make_node("Relu", ["x"], ["r"]), bn_node("r", "y")]
    g = load_and_compare(nodes, (1, 4, 3, 3), bn_params(4))
    assert kinds(g) == [("activation", "relu"), ("norm", "batch_norm")]


def test_batchnorm_on_a_rank3_matmul_does_not_fold():
    # BN normalises axis 1 (the sequence axis here), not the linear layer's output features.
    consts = {"w": RNG.standard_normal((5, 5)).astype(np.float32), **bn_params(3)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["c"]), bn_node("c", "y")]
    g = load_and_compare(nodes, (2, 3, 5), consts)
    assert ("norm", "batch_norm") in kinds(g)


def test_fold_batchnorm_leaves_a_graph_without_batchnorm_unchanged():
    consts = {"w": RNG.standard_normal((4, 3, 1, 1)).astype(np.float32)}
    g = load_and_compare([helper.make_node("Conv", ["x", "w"], ["y"])], (1, 3, 2, 2), consts)
    assert fold_batchnorm(g) is g
