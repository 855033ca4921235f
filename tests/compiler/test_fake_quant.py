"""Fake-quant simulation against onnxruntime's integer kernels, built by hand here (not by
edgesim's emitter): QLinearConv (via Q/DQ fusion) and MatMulIntegerToFloat, bit for bit."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from compiler.executor import run
from compiler.fake_quant import quant_names, row
from compiler.frontend import load
from compiler.passes.calibrate import calibrate
from compiler.passes.quantize import QuantOptions, quantize
from edgesim import assignment, zoo
from tests.compiler.emit_cases import one_layer

pytestmark = pytest.mark.ort
ort.set_default_logger_severity(3)


def _ort(nodes: list, inits: dict, x: np.ndarray, out_shape: tuple) -> np.ndarray:
    graph = helper.make_graph(
        nodes, "oracle", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 10
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})[0]


def _quantised(kind: str, attrs: dict, x: np.ndarray, w: np.ndarray, b: np.ndarray):
    g, feeds = one_layer(kind, attrs, [("x", x, False), ("w", w, True), ("b", b, True)])
    calib = calibrate(g, [feeds])
    q = quantize(g, np.array([[8, 8]]), calib, QuantOptions(act_method="minmax"))
    return q, q.layers[0], feeds


def _weights(q, layer) -> tuple[np.ndarray, np.ndarray]:
    names = quant_names(layer.name)
    return q.weights[names.codes], q.weights[names.scale]


def _qlinear_conv_oracle(q, layer, x: np.ndarray, out_shape: tuple) -> np.ndarray:
    """DQ(x), DQ(uint8 w, zp 128), DQ(int32 bias) -> Conv -> Q -> DQ, as ONNX spells it."""
    codes, sw = _weights(q, layer)
    qa, a = layer.quant, layer.attrs
    inits = {"sx": np.float32(qa.in_scale[0]), "zx": np.uint8(qa.in_zero_point[0]),
             "wq": (codes.astype(np.int16) + 128).astype(np.uint8), "sw": sw,
             "zw": np.full(sw.shape, 128, np.uint8), "bq": q.weights[quant_names("layer").bias],
             "sb": (np.float32(qa.in_scale[0]) * sw).astype(np.float32),
             "sy": np.float32(qa.out_scale), "zy": np.uint8(qa.out_zero_point)}
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "sw", "zw"], ["wd"], axis=0),
        helper.make_node("DequantizeLinear", ["bq", "sb"], ["bd"], axis=0),
        helper.make_node("Conv", ["xd", "wd", "bd"], ["c"], strides=list(a["strides"]),
                         pads=list(a["pads"]), dilations=list(a["dilations"]), group=a["group"]),
        helper.make_node("QuantizeLinear", ["c", "sy", "zy"], ["cq"]),
        helper.make_node("DequantizeLinear", ["cq", "sy", "zy"], ["y"]),
    ]
    return _ort(nodes, inits, x, out_shape)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 6), st.integers(1, 3), st.sampled_from([1, 2]), st.booleans(),
       st.integers(0, 2**31 - 1))
def test_qlinear_conv_matches_onnxruntime(cin: int, k: int, stride: int, depthwise: bool,
                                          seed: int) -> None:
    rng = np.random.default_rng(seed)
    group, cout = (cin, 2 * cin) if depthwise else (1, 5)
    x = (rng.standard_normal((2, cin, 7, 6)) * rng.uniform(0.1, 5) + rng.uniform(-1, 1))
    w = rng.standard_normal((cout, cin // group, k, k)) * rng.uniform(0.01, 1)
    attrs = dict(strides=(stride, stride), pads=(k // 2,) * 4, dilations=(1, 1), group=group)
    q, layer, feeds = _quantised("conv", attrs, x.astype(np.float32), w.astype(np.float32),
                                 rng.standard_normal(cout).astype(np.float32))
    assert row(layer).name == "qlinear_conv"
    sim = run(q, feeds, fake_quant=True)["y0"]
    np.testing.assert_array_equal(_qlinear_conv_oracle(q, layer, feeds["x"], sim.shape), sim)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 40), st.integers(1, 20), st.integers(1, 3), st.integers(0, 2**31 - 1))
def test_integer_linear_matches_onnxruntime(k: int, n: int, rows: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, 3, k)) * rng.uniform(0.1, 5)).astype(np.float32)
    w = (rng.standard_normal((n, k)) * rng.uniform(0.01, 1)).astype(np.float32)
    q, layer, feeds = _quantised("linear", {}, x, w, rng.standard_normal(n).astype(np.float32))
    assert row(layer).name == "int8_linear"
    codes, sw = _weights(q, layer)
    qa = layer.quant
    inits = {"sx": np.float32(qa.in_scale[0]), "zx": np.uint8(qa.in_zero_point[0]),
             "wq": (codes.T.astype(np.int16) + 128).astype(np.uint8), "sw": sw,
             "zw": np.full(sw.shape, 128, np.uint8), "b": q.weights["b"]}
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("MatMulIntegerToFloat", ["xq", "wq", "sx", "sw", "zx", "zw", "b"],
                              ["y"], domain="com.microsoft")]
    sim = run(q, feeds, fake_quant=True)["y0"]
    got = _ort(nodes, inits, x, sim.shape)
    np.testing.assert_allclose(got, sim, rtol=1e-6, atol=1e-6 * np.abs(sim).max())


def test_weight_only_is_the_float_op_on_dequantised_weights() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 3, 5, 5)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    attrs = dict(strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1), group=1)
    g, feeds = one_layer("conv", attrs, [("x", x, False), ("w", w, True)])
    q = quantize(g, np.array([[4, 32]]), None)
    codes, sw = _weights(q, q.layers[0])
    wd = codes.astype(np.float32) * sw.reshape(-1, 1, 1, 1)  # DequantizeLinear, symmetric
    g2, _ = one_layer("conv", attrs, [("x", x, False), ("w", wd, True)])
    np.testing.assert_array_equal(run(q, feeds, fake_quant=True)["y0"], run(g2, feeds)["y0"])
    assert not np.array_equal(wd, w)


def test_float_annotations_change_nothing() -> None:
    g = load(zoo.build("digits_cnn"))
    x = zoo.load_digits_data()["x_test"][:1]
    q = quantize(g, assignment.uniform(g, 32), None)
    np.testing.assert_array_equal(run(q, {"input": x}, fake_quant=True)["logits"],
                                  run(g, {"input": x})["logits"])


def test_simulated_w8a8_accuracy() -> None:
    """The simulation alone scores an assignment: digits CNN W8A8 within 0.5 points."""
    d = zoo.load_digits_data()
    m = zoo.build("digits_cnn")
    calib = calibrate(load(m, {"input": (200, 1, 8, 8)}), [{"input": d["x_calib"]}])
    g = load(m, {"input": (360, 1, 8, 8)})
    q = quantize(g, assignment.uniform(g, 8), calib)
    acc = [np.mean(run(h, {"input": d["x_test"]}, fake_quant=True)["logits"].argmax(1)
                   == d["y_test"]) for h in (g, q)]
    assert acc[0] - acc[1] <= 0.005


def test_sim_is_not_the_float_model() -> None:
    """Guard against a hook that never fires: W8A8 changes the outputs, a little."""
    x = zoo.load_digits_data()["x_test"][:8]
    g8 = load(zoo.build("digits_cnn"), {"input": (8, 1, 8, 8)})
    calib = calibrate(g8, [{"input": x}])
    q = quantize(g8, assignment.uniform(g8, 8), calib)
    ref, sim = run(g8, {"input": x})["logits"], run(q, {"input": x}, fake_quant=True)["logits"]
    assert 0 < np.abs(sim - ref).max() < 0.05 * np.abs(ref).max()
