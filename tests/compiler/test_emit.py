"""Emission of float graphs: every IR kind back to ONNX (vs the executor, in onnxruntime), the
model header, atomic writing, and node names kept."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from compiler.emit import EMITTERS, IR_VERSION, emit, write
from compiler.errors import ModelError
from compiler.executor import run
from compiler.frontend import load
from compiler.ir import KINDS
from tests.compiler.emit_cases import CONV, RNG, f32, one_layer, ort_run, w_, x_

pytestmark = pytest.mark.ort


POOL = dict(kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1), dilations=(1, 1),
            ceil_mode=True, count_include_pad=False)
RESIZE = dict(mode="linear", coordinate_transformation_mode="half_pixel",
              nearest_mode="round_prefer_floor")
# (id, kind, attrs, inputs): one case per kind at least, several where kinds branch.
CASES = [
    ("conv", "conv", CONV, [x_(1, 4, 7, 6), w_("w", f32(6, 4, 3, 3)), w_("b", f32(6))]),
    ("conv_dw", "conv", dict(CONV, group=4), [x_(1, 4, 7, 6), w_("w", f32(8, 1, 3, 3)),
                                              ("", None, False)]),
    ("conv_transpose", "conv_transpose", dict(strides=(2, 2), pads=(0, 1, 1, 0),
                                              dilations=(1, 1), group=1, output_padding=(1, 0)),
     [x_(1, 3, 4, 4), w_("w", f32(3, 2, 3, 3)), w_("b", f32(2))]),
    ("conv_transpose_grow", "conv_transpose", dict(strides=(1, 1), pads=(-1, 0, 0, -2),
                                                   dilations=(1, 1), group=1,
                                                   output_padding=(0, 0)),
     [x_(1, 2, 3, 3), w_("w", f32(2, 3, 2, 2)), w_("b", f32(3))]),
    ("linear2d", "linear", {}, [x_(3, 5), w_("w", f32(4, 5)), w_("b", f32(4))]),
    ("linear3d", "linear", {}, [x_(2, 3, 5), w_("w", f32(4, 5))]),
    ("matmul", "matmul", {}, [x_(2, 3, 4), ("z", f32(2, 4, 5), False)]),
    ("add", "eltwise", dict(fn="add"), [x_(2, 3), w_("c", f32(3))]),
    ("sum3", "eltwise", dict(fn="add"), [x_(2, 3), ("z", f32(2, 3), False), w_("c", f32(1))]),
    ("div", "eltwise", dict(fn="div"), [x_(2, 3), w_("c", np.full(3, 1.5, np.float32))]),
    ("max", "eltwise", dict(fn="max"), [x_(2, 3), ("z", f32(2, 3), False)]),
    ("less", "eltwise", dict(fn="less"), [x_(2, 3), ("z", f32(2, 3), False)]),
    ("where", "eltwise", dict(fn="where"), [("c", RNG.random((2, 3)) > 0.5, False), x_(2, 3),
                                            ("z", f32(2, 3), False)]),
    *[(f"act_{fn}", "activation", dict(fn=fn, **p), [x_(2, 5)]) for fn, p in [
        ("relu", {}), ("clip", dict(min=-0.5, max=math.inf)), ("leaky_relu", dict(alpha=0.1)),
        ("sigmoid", {}), ("tanh", {}), ("hard_sigmoid", dict(alpha=0.3, beta=0.4)),
        ("hard_swish", {}), ("gelu", dict(approximate="none")),
        ("gelu", dict(approximate="tanh")), ("erf", {}), ("silu", dict(alpha=1.0)),
        ("silu", dict(alpha=1.7)), ("exp", {}), ("neg", {}), ("abs", {}),
        ("softplus", {}), ("elu", dict(alpha=0.5)), ("selu", dict(alpha=1.5, gamma=1.1)),
        ("softsign", {})]],
    ("act_sqrt", "activation", dict(fn="sqrt"), [("x", RNG.random((2, 5)).astype(np.float32)
                                                   + 0.1, False)]),
    ("layer_norm", "norm", dict(fn="layer_norm", axis=1, epsilon=1e-5),
     [x_(2, 3, 4), w_("s", f32(3, 4)), w_("b", f32(3, 4))]),
    ("rms_norm", "norm", dict(fn="rms_norm", axis=2, epsilon=1e-6), [x_(2, 3, 8), w_("s", f32(8))]),
    ("batch_norm", "norm", dict(fn="batch_norm", epsilon=1e-3),
     [x_(2, 3, 4, 4), w_("s", f32(3)), w_("b", f32(3)), w_("m", f32(3)),
      w_("v", RNG.random(3).astype(np.float32) + 0.5)]),
    ("instance_norm", "norm", dict(fn="instance_norm", epsilon=1e-5),
     [x_(2, 3, 4, 4), w_("s", f32(3)), w_("b", f32(3))]),
    ("softmax", "softmax", dict(axis=1, log=False), [x_(2, 5, 3)]),
    ("log_softmax", "softmax", dict(axis=2, log=True), [x_(2, 5, 3)]),
    ("max_pool", "pool", dict(POOL, fn="max"), [x_(1, 2, 8, 7)]),
    ("avg_pool", "pool", dict(POOL, fn="avg"), [x_(1, 2, 8, 7)]),
    ("global_avg", "pool", dict(POOL, fn="global_avg", kernel_shape=(8, 7)), [x_(1, 2, 8, 7)]),
    ("global_max", "pool", dict(POOL, fn="global_max", kernel_shape=(8, 7)), [x_(1, 2, 8, 7)]),
    ("reduce_mean", "reduce", dict(fn="mean", axes=(1,), keepdims=False), [x_(2, 3, 4)]),
    ("reduce_l2", "reduce", dict(fn="l2", axes=(0, 2), keepdims=True), [x_(2, 3, 4)]),
    ("reduce_lse", "reduce", dict(fn="log_sum_exp", axes=(2,), keepdims=True), [x_(2, 3, 4)]),
    ("reduce_noop", "reduce", dict(fn="sum", axes=(), keepdims=True), [x_(2, 3)]),
    ("inv_std", "reduce", dict(fn="inv_std", axes=(2,), keepdims=True, epsilon=1e-5),
     [x_(2, 3, 4)]),
    ("resize_scales", "resize", dict(RESIZE, scales=(1.0, 1.0, 2.0, 1.5), sizes=(1, 2, 8, 6)),
     [x_(1, 2, 4, 4)]),
    ("resize_sizes", "resize", dict(RESIZE, mode="nearest", scales=(1.0, 1.0, 7 / 3, 1.0),
                                    sizes=(1, 2, 7, 4)), [x_(1, 2, 3, 4)]),
    ("gather", "gather", dict(axis=0, elements=False),
     [w_("t", f32(10, 4)), ("i", np.array([[1, 9], [-1, 0]], np.int64), False)]),
    ("gather_elements", "gather", dict(axis=1, elements=True),
     [x_(2, 4), ("i", np.array([[3, 0], [1, 1]], np.int64), False)]),
    ("cast", "cast", dict(to="int32"), [x_(2, 3)]),
    ("transpose", "transpose", dict(perm=(2, 0, 1)), [x_(2, 3, 4)]),
    ("concat", "concat", dict(axis=1), [x_(2, 3), ("z", f32(2, 2), False)]),
    ("split", "split", dict(axis=1, sizes=(1, 3)), [x_(2, 4)]),
    ("slice", "slice", dict(axes=(0, 1), starts=(1, 4), ends=(2, -1), steps=(1, -2)),
     [x_(3, 5)]),
    ("pad", "pad", dict(pads=(1, -1, 0, 2), mode="constant", value=0.5), [x_(2, 3)]),
    ("pad_reflect", "pad", dict(pads=(0, 1, 0, 2), mode="reflect", value=0.0), [x_(2, 4)]),
    ("expand", "expand", dict(shape=(2, 3, 4)), [x_(3, 1)]),
    ("reshape", "reshape", dict(shape=(4, 3)), [x_(2, 6)]),
    ("identity", "identity", {}, [x_(2, 3)]),
    ("and", "eltwise", dict(fn="and"), [("c", RNG.random((2, 3)) > 0.5, False),
                                        ("d", RNG.random((3,)) > 0.5, False)]),
    ("not", "eltwise", dict(fn="not"), [("c", RNG.random((2, 3)) > 0.5, False)]),
    ("gather_nd", "gather_nd", dict(batch_dims=1),
     [x_(2, 4, 3), ("i", np.array([[[3], [0]], [[1], [-1]]], np.int64), False)]),
    ("argmax", "arg_reduce", dict(fn="max", axis=1, keepdims=False), [x_(2, 5, 3)]),
    ("argmin_last", "arg_reduce", dict(fn="min", axis=0, keepdims=True, select_last_index=True),
     [("x", np.array([[1.0, 2.0], [1.0, 0.0]], np.float32), False)]),
    ("attention_gqa_past", "attention",
     dict(scale=0.35, causal=True, q_heads=0, kv_heads=0, softcap=0.0),
     [("q", f32(1, 4, 3, 8), False), ("k", f32(1, 2, 3, 8), False), ("v", f32(1, 2, 3, 8), False),
      ("", None, False), ("pk", f32(1, 2, 2, 8), False), ("pv", f32(1, 2, 2, 8), False)]),
    ("attention_3d_softcap", "attention",
     dict(scale=0.25, causal=False, q_heads=2, kv_heads=1, softcap=3.0),
     [("q", f32(2, 3, 16), False), ("k", f32(2, 4, 8), False), ("v", f32(2, 4, 8), False)]),
    ("rotary_positions", "rotary", dict(num_heads=2, rotary_dim=0, interleaved=False),
     [("x", f32(2, 3, 16), False), ("cos", f32(6, 4), True), ("sin", f32(6, 4), True),
      ("p", np.array([[0, 1, 2], [3, 4, 5]], np.int64), False)]),
    ("rotary_interleaved_partial", "rotary", dict(num_heads=0, rotary_dim=4, interleaved=True),
     [("x", f32(1, 2, 3, 8), False), ("cos", f32(1, 3, 2), True), ("sin", f32(1, 3, 2), True)]),
]


def test_every_kind_has_a_float_emitter() -> None:
    assert {k for k, f in EMITTERS if f == "float"} == set(KINDS)
    assert {c[1] for c in CASES} == set(KINDS)  # and every kind is checked below


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_float_emitter_matches_executor(case: tuple) -> None:
    _, kind, attrs, inputs = case
    g, feeds = one_layer(kind, attrs, inputs)
    model = emit(g)  # also passes onnx.checker (full check)
    got, want = ort_run(model, feeds), run(g, feeds)
    for name in g.outputs:
        assert got[name].dtype == want[name].dtype and got[name].shape == want[name].shape
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5)


def test_model_header() -> None:
    g, _ = one_layer("identity", {}, [x_(2, 3)])
    model = emit(g)
    assert model.ir_version == IR_VERSION == 10
    # no source model (and nothing newer needed): the IR's opset, 17
    assert {(o.domain, o.version) for o in model.opset_import} == {("", 17),
                                                                    ("com.microsoft", 1)}


# ----------------------------------------------------------------------------------------------
# Atomic writing


def test_write_is_atomic(tmp_path) -> None:
    g, _ = one_layer("identity", {}, [x_(2, 3)])
    good = emit(g)
    path = tmp_path / "out.onnx"
    write(good, path)
    before = path.read_bytes()

    class Exploding:  # fails while being written, as a full disk would
        def SerializeToString(self) -> bytes:  # noqa: N802 - protobuf's name
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write(Exploding(), path)
    with pytest.raises(RuntimeError):
        write(Exploding(), tmp_path / "new.onnx")
    assert path.read_bytes() == before  # the old model is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]  # no leftovers
    assert onnx.load(path).graph.node[0].op_type == "Identity"


def test_write_into_missing_folder(tmp_path) -> None:
    g, _ = one_layer("identity", {}, [x_(2, 3)])
    with pytest.raises(ModelError, match="does not exist"):
        write(emit(g), tmp_path / "nope" / "m.onnx")


def test_a_layer_named_like_its_output_keeps_its_name_in_the_emitted_file() -> None:
    """Keras exports name a Dense node and its output tensor alike (MTCNN's `dense_5`); the
    emitted node must keep the name, so `simulate` of the file names the layers as the
    report does (it said `dense_5_1`)."""
    from onnx import TensorProto, helper

    w = numpy_helper.from_array(np.ones((3, 2), np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["dense_5"], name="dense_5"),
             helper.make_node("Relu", ["dense_5"], ["y"], name="y")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
                              [w])
    source = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    g = load(source)
    emitted = emit(g)
    assert [n.name for n in emitted.graph.node] == ["dense_5", "y"]
    assert [layer.name for layer in load(emitted).layers] == [layer.name for layer in g.layers]
