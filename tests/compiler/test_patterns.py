"""Fusion patterns: decomposed LayerNorm/RMSNorm/GELU/SiLU as PyTorch exports them, built with
onnx.helper, loaded, checked for the fused layer, and run against onnxruntime on the original.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from compiler.verify import verify
from tests.compiler.opcheck import check_load_vs_ort, graph_model

F = TensorProto.FLOAT
RNG = np.random.default_rng(1)
f32 = np.float32


def node(op, inputs, outputs, **attrs):
    return helper.make_node(op, inputs, outputs if isinstance(outputs, list) else [outputs],
                            **attrs)


def layers_of(g):
    """(kind, fn) of every layer, in order."""
    return [(layer.kind, layer.attrs.get("fn")) for layer in g.layers]


def run_case(nodes, shape, consts, outputs=("y",), opset=17):
    """Load the model y = nodes(x) and check it against onnxruntime; return the Graph."""
    m = graph_model(nodes, [("x", F, list(shape))], [(o, F, None) for o in outputs],
                    consts, opset=opset)
    g = check_load_vs_ort(m, {"x": RNG.standard_normal(shape).astype(f32)})
    verify(g)
    return g


# --- LayerNorm --------------------------------------------------------------------------------


def reduce_mean(x, y, axes, opset):
    """ReduceMean keeping dims: axes an attribute below opset 18, an input from 18 on."""
    if opset >= 18:
        return node("ReduceMean", [x, f"{y}_axes"], y, keepdims=1)
    return node("ReduceMean", [x], y, axes=list(axes), keepdims=1)


def layer_norm_nodes(square="pow", affine=True, axes=(-1,), opset=17):
    nodes = [reduce_mean("x", "mu", axes, opset), node("Sub", ["x", "mu"], "d"),
             node("Pow", ["d", "two"], "d2") if square == "pow" else node("Mul", ["d", "d"], "d2"),
             reduce_mean("d2", "var", axes, opset), node("Add", ["var", "eps"], "ve"),
             node("Sqrt", ["ve"], "sd"), node("Div", ["d", "sd"], "n" if affine else "y")]
    if affine:
        nodes += [node("Mul", ["n", "gamma"], "ng"), node("Add", ["ng", "beta"], "y")]
    return nodes


def ln_consts(gamma_shape=(8,), eps=1e-5, axes=(-1,)):
    return {"two": f32(2.0), "eps": f32(eps), "mu_axes": np.array(axes, np.int64),
            "var_axes": np.array(axes, np.int64),
            "gamma": RNG.standard_normal(gamma_shape).astype(f32),
            "beta": RNG.standard_normal(gamma_shape).astype(f32)}


@pytest.mark.parametrize("square, affine, gamma_shape, axes, opset", [
    ("pow", True, (8,), (-1,), 17),
    ("mul", True, (8,), (-1,), 17),
    ("pow", True, (1, 1, 8), (-1,), 17),      # gamma broadcast from a rank-3 constant
    ("pow", False, (8,), (-1,), 17),          # no affine: scale of ones
    ("pow", True, (4, 8), (-2, -1), 17),      # two trailing axes -> axis 1
    ("pow", True, (8,), (-1,), 18),           # ReduceMean axes as an input
])
def test_layer_norm_is_fused(square, affine, gamma_shape, axes, opset):
    g = run_case(layer_norm_nodes(square, affine, axes, opset), (2, 4, 8),
                 ln_consts(gamma_shape, axes=axes), opset=opset)
    assert layers_of(g) == [("norm", "layer_norm")]
    (layer,) = g.layers
    assert layer.attrs["axis"] == 3 - len(axes)
    assert math.isclose(layer.attrs["epsilon"], 1e-5, rel_tol=1e-6)
    assert len(layer.inputs) == (3 if affine else 2)


def test_layer_norm_gamma_along_another_axis_stays_a_mul():
    # gamma [4, 1] scales rows, not the normalised axis: LayerNorm fuses, the Mul stays.
    g = run_case(layer_norm_nodes(), (2, 4, 8), ln_consts((4, 1)))
    assert layers_of(g) == [("norm", "layer_norm"), ("eltwise", "mul"), ("eltwise", "add")]


def test_layer_norm_with_an_intermediate_output_is_not_fused():
    g = run_case(layer_norm_nodes(), (2, 4, 8), ln_consts(), outputs=("y", "var"))
    assert ("norm", "layer_norm") not in layers_of(g)
    assert ("norm", "rms_norm") not in layers_of(g)


def test_layer_norm_over_a_non_trailing_axis_is_not_fused():
    g = run_case(layer_norm_nodes(axes=(1,)), (2, 4, 8), ln_consts((8,), axes=(1,)))
    assert all(kind != "norm" for kind, _ in layers_of(g))


@settings(max_examples=20, deadline=None)
@given(shape=st.lists(st.integers(1, 5), min_size=2, max_size=4),
       eps=st.sampled_from([1e-12, 1e-6, 1e-5, 1e-3]), square=st.sampled_from(["pow", "mul"]))
def test_layer_norm_fusion_matches_ort_on_random_shapes(shape, eps, square):
    shape = (*shape[:-1], shape[-1] + 1)  # at least 2 elements to normalise over
    g = run_case(layer_norm_nodes(square), shape, ln_consts((shape[-1],), eps))
    assert layers_of(g) == [("norm", "layer_norm")]
    assert math.isclose(g.layers[0].attrs["epsilon"], float(f32(eps)), rel_tol=1e-6)


# --- RMSNorm ----------------------------------------------------------------------------------


RMS_RSQRT = {
    "div": [node("Sqrt", ["ve"], "sd"), node("Div", ["x", "sd"], "n")],
    "reciprocal": [node("Sqrt", ["ve"], "sd"), node("Reciprocal", ["sd"], "r"),
                   node("Mul", ["x", "r"], "n")],
    "one_over": [node("Sqrt", ["ve"], "sd"), node("Div", ["one", "sd"], "r"),
                 node("Mul", ["r", "x"], "n")],
    "pow": [node("Pow", ["ve", "minus_half"], "r"), node("Mul", ["x", "r"], "n")],
}


def rms_nodes(rsqrt, square="pow", gamma_first=False):
    sq = node("Pow", ["x", "two"], "x2") if square == "pow" else node("Mul", ["x", "x"], "x2")
    gamma = ["gamma", "n"] if gamma_first else ["n", "gamma"]
    return [sq, node("ReduceMean", ["x2"], "var", axes=[-1], keepdims=1),
            node("Add", ["eps", "var"], "ve"), *RMS_RSQRT[rsqrt], node("Mul", gamma, "y")]


RMS_CONSTS = {"two": f32(2.0), "eps": f32(1e-6), "one": f32(1.0), "minus_half": f32(-0.5),
              "gamma": RNG.standard_normal(16).astype(f32)}


@pytest.mark.parametrize("rsqrt", sorted(RMS_RSQRT))
@pytest.mark.parametrize("square, gamma_first", [("pow", False), ("mul", True)])
def test_rms_norm_is_fused(rsqrt, square, gamma_first):
    g = run_case(rms_nodes(rsqrt, square, gamma_first), (2, 3, 16), RMS_CONSTS)
    assert layers_of(g) == [("norm", "rms_norm")]
    assert g.layers[0].attrs["axis"] == 2
    assert g.layers[0].inputs == ("x", "gamma")


def test_rms_norm_with_shared_sqrt_is_not_fused():
    nodes = [*rms_nodes("div"), node("Add", ["y", "sd"], "z")]
    g = run_case(nodes, (2, 3, 16), RMS_CONSTS, outputs=("z",))
    assert all(kind != "norm" for kind, _ in layers_of(g))


def test_rms_norm_with_wrong_exponent_is_not_fused():
    consts = {**RMS_CONSTS, "minus_half": f32(-0.25)}
    g = run_case(rms_nodes("pow"), (2, 3, 16), consts)
    assert all(kind != "norm" for kind, _ in layers_of(g))


# --- GELU -------------------------------------------------------------------------------------


def gelu_tail(gate, association):
    """x * 0.5 * (1 + gate), three ways PyTorch/HF exports associate it."""
    one = node("Add", [gate, "one"], "g1")
    return {
        "x_first": [one, node("Mul", ["x", "g1"], "xg"), node("Mul", ["xg", "half"], "y")],
        "half_first": [one, node("Mul", ["g1", "half"], "gh"), node("Mul", ["gh", "x"], "y")],
        "half_x": [node("Mul", ["half", "x"], "hx"), one, node("Mul", ["hx", "g1"], "y")],
    }[association]


GELU_CONSTS = {"one": f32(1.0), "half": f32(0.5), "sqrt2": f32(math.sqrt(2)),
               "inv_sqrt2": f32(1 / math.sqrt(2)), "three": f32(3.0),
               "c": f32(0.044715), "k": f32(math.sqrt(2 / math.pi))}


def gelu_erf_nodes(association, scale="div"):
    pre = (node("Div", ["x", "sqrt2"], "u") if scale == "div"
           else node("Mul", ["inv_sqrt2", "x"], "u"))
    return [pre, node("Erf", ["u"], "e"), *gelu_tail("e", association)]


@pytest.mark.parametrize("association", ["x_first", "half_first", "half_x"])
@pytest.mark.parametrize("scale", ["div", "mul"])
def test_gelu_erf_is_fused(association, scale):
    g = run_case(gelu_erf_nodes(association, scale), (3, 10), GELU_CONSTS)
    assert layers_of(g) == [("activation", "gelu")]
    assert g.layers[0].attrs["approximate"] == "none"
    assert g.layers[0].inputs == ("x",)


def test_gelu_erf_with_wrong_half_is_not_fused():
    g = run_case(gelu_erf_nodes("x_first"), (3, 10), {**GELU_CONSTS, "half": f32(0.6)})
    assert ("activation", "gelu") not in layers_of(g)


def test_gelu_erf_with_erf_used_elsewhere_is_not_fused():
    g = run_case(gelu_erf_nodes("x_first"), (3, 10), GELU_CONSTS, outputs=("y", "e"))
    assert ("activation", "gelu") not in layers_of(g)


def cube_nodes(form):
    return {"pow": [node("Pow", ["x", "three"], "x3")],
            "mul": [node("Mul", ["x", "x"], "xx"), node("Mul", ["xx", "x"], "x3")]}[form]


def gelu_tanh_nodes(cube, association, c_first=True):
    cx3 = ["c", "x3"] if c_first else ["x3", "c"]
    return [*cube_nodes(cube), node("Mul", cx3, "cx3"), node("Add", ["x", "cx3"], "inner"),
            node("Mul", ["k", "inner"], "u"), node("Tanh", ["u"], "t"),
            *gelu_tail("t", association)]


@pytest.mark.parametrize("cube, association, c_first", [
    ("pow", "half_x", True),      # HF NewGELU: 0.5 * x * (1 + tanh(...pow(x, 3.0)))
    ("mul", "x_first", False),
    ("pow", "half_first", False),
])
def test_gelu_tanh_is_fused(cube, association, c_first):
    g = run_case(gelu_tanh_nodes(cube, association, c_first), (3, 10), GELU_CONSTS)
    assert layers_of(g) == [("activation", "gelu")]
    assert g.layers[0].attrs["approximate"] == "tanh"


def test_gelu_tanh_with_wrong_cubic_coefficient_is_not_fused():
    g = run_case(gelu_tanh_nodes("pow", "half_x"), (3, 10), {**GELU_CONSTS, "c": f32(0.05)})
    assert ("activation", "gelu") not in layers_of(g)


# --- SiLU -------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", [["x", "s"], ["s", "x"]])
def test_silu_is_fused(order):
    g = run_case([node("Sigmoid", ["x"], "s"), node("Mul", order, "y")], (2, 7), {})
    assert layers_of(g) == [("activation", "silu")]


def test_silu_with_sigmoid_output_used_elsewhere_is_not_fused():
    nodes = [node("Sigmoid", ["x"], "s"), node("Mul", ["x", "s"], "y")]
    g = run_case(nodes, (2, 7), {}, outputs=("y", "s"))
    assert layers_of(g) == [("activation", "sigmoid"), ("eltwise", "mul")]


def test_gate_on_another_tensor_is_not_silu():
    nodes = [node("Neg", ["x"], "nx"), node("Sigmoid", ["x"], "s"), node("Mul", ["nx", "s"], "y")]
    g = run_case(nodes, (2, 7), {})
    assert ("activation", "silu") not in layers_of(g)


# --- a block with several patterns and shared inputs ------------------------------------------


def renamed(nodes, prefix, mapping, consts):
    """Copy `nodes` with tensors renamed: `mapping` first, constants kept, others prefixed."""
    def name(t):
        return mapping.get(t, t if t in consts else f"{prefix}{t}")
    return [node(n.op_type, [name(t) for t in n.input], [name(t) for t in n.output],
                 **{a.name: helper.get_attribute_value(a) for a in n.attribute}) for n in nodes]


def test_transformer_mlp_block_fuses_every_pattern():
    """LN -> GELU(erf) -> residual add -> RMSNorm -> SiLU, names as the torch exporter gives."""
    consts = {**ln_consts((16,)), **GELU_CONSTS, **RMS_CONSTS}
    groups = {
        "ln": renamed(layer_norm_nodes(), "ln_", {"x": "x", "y": "h"}, consts),
        "gelu": renamed(gelu_erf_nodes("half_x"), "gelu_", {"x": "h", "y": "gl"}, consts),
        "res": [node("Add", ["gl", "x"], "res")],
        "rms": renamed(rms_nodes("reciprocal"), "rms_", {"x": "res", "y": "rn"}, consts),
        "silu": [node("Sigmoid", ["rn"], "sg"), node("Mul", ["rn", "sg"], "out")],
    }
    nodes = []
    for group, members in groups.items():
        for i, n in enumerate(members):
            n.name = f"/block/{group}/{n.op_type}_{i}"  # the torch exporter's naming
        nodes += members
    g = run_case(nodes, (2, 5, 16), consts, outputs=("out",))
    assert layers_of(g) == [("norm", "layer_norm"), ("activation", "gelu"),
                            ("eltwise", "add"), ("norm", "rms_norm"), ("activation", "silu")]
    names = [layer.name for layer in g.layers]
    assert names == ["/block/ln", "/block/gelu", "/block/res/Add_0", "/block/rms",
                     "/block/silu"]
    assert set(g.weights) == {"gamma", "beta"}
