"""The quantize pass: what it quantises, how, the weights it stores, and its errors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.errors import ModelError
from compiler.executor import run
from compiler.fake_quant import quant_names
from compiler.frontend import load
from compiler.passes.calibrate import calibrate
from compiler.passes.quant_bytes import weight_bytes
from compiler.passes.quantize import QuantOptions, quantize
from compiler.quantizers import dequantize_codes
from compiler.verify import verify
from edgesim import assignment, zoo
from tests.compiler.emit_cases import one_layer
from tests.compiler.test_calibrate import _conv_relu_gemm

RNG = np.random.default_rng(0)


def _cnn():
    g = load(_conv_relu_gemm(4))
    x = RNG.standard_normal((4, 3, 6, 6)).astype(np.float32)
    return g, calibrate(g, [{"x": x}]), x


def test_w8a8_annotations_and_weights() -> None:
    g, calib, x = _cnn()
    before = g.layers
    q = quantize(g, assignment.uniform(g, 8), calib, QuantOptions(act_method="minmax"))
    verify(q)
    assert g.layers is before and all(layer.quant.fmt == "float" for layer in g.layers)
    fmts = {layer.name: layer.quant.fmt for layer in q.layers}
    assert fmts == {"conv": "qdq", "relu": "float", "gap": "float", "flat": "float",
                    "fc": "qdq", "sig": "float"}
    conv, fc = q.layer("conv"), q.layer("fc")
    sx = calib.params("x", 8, "minmax").scale
    assert conv.quant.in_scale == (float(sx),)
    # the ReLU reading the conv sets its output grid: range [0, max], zero point 0
    relu = calib.params("r", 8, "minmax")
    assert (conv.quant.out_scale, conv.quant.out_zero_point) == (float(relu.scale), 0)
    assert fc.quant.out_scale is None  # linear: float output (MatMulIntegerToFloat)
    names = quant_names("conv")
    w, codes, sw = g.weights["w"], q.weights[names.codes], q.weights[names.scale]
    assert codes.dtype == np.int8 and np.abs(codes).max() == 127  # narrow grid, minmax
    np.testing.assert_allclose(sw, np.abs(w).reshape(4, -1).max(1) / 127, rtol=1e-6)
    deq = dequantize_codes(codes, sw.reshape(-1, 1, 1, 1), 0)
    assert np.all(np.abs(deq - w) <= sw.reshape(-1, 1, 1, 1) / 2 * (1 + 1e-6))
    bias = np.rint(g.weights["b"].astype(np.float64) / (np.float32(sx) * sw).astype(np.float64))
    np.testing.assert_array_equal(q.weights[names.bias], bias.astype(np.int32))


def test_weight_only_formats_and_grids() -> None:
    g, calib, _ = _cnn()
    for bits, grid in ((4, 7), (3, 3), (5, 15), (2, 1)):
        q = quantize(g, assignment.uniform(g, bits), calib)
        verify(q)
        conv, fc = q.layer("conv"), q.layer("fc")
        assert (conv.quant.fmt, conv.quant.granularity) == ("int_dq", "per_channel")
        assert (fc.quant.fmt, fc.quant.granularity, fc.quant.block) == ("matmulnbits",
                                                                         "per_block", 32)
        assert conv.quant.a_bits is None and fc.quant.a_bits is None
        for layer in (conv, fc):
            assert np.abs(q.weights[quant_names(layer.name).codes]).max() == grid


def test_fake_quant_tracks_float_model() -> None:
    g, calib, x = _cnn()
    ref = run(g, {"x": x})["out"]
    for bits, tol in ((8, 0.02), (4, 0.2)):
        q = quantize(g, assignment.uniform(g, bits), calib)
        sim = run(q, {"x": x}, fake_quant=True)["out"]
        assert 0 < np.abs(sim - ref).max() < tol  # quantised (not identical), and close


def test_attention_matmuls_stay_float_unless_asked() -> None:
    d = zoo.load_digits_data()
    g = load(zoo.build("digits_transformer"))
    calib = calibrate(g, [{"input": d["x_calib"][i:i + 1]} for i in range(4)])
    bits = assignment.uniform(g, 8)
    matmuls = [layer.name for layer in g.layers if layer.kind == "matmul"]
    assert len(matmuls) == 4
    q = quantize(g, bits, calib)
    for name in matmuls:
        assert q.layer(name).quant.fmt == "float" and "attention" in q.layer(name).quant.reason
    q8 = quantize(g, bits, calib, QuantOptions(act_matmul="int8"))
    for name in matmuls:
        assert q8.layer(name).quant.fmt == "qdq" and len(q8.layer(name).quant.in_scale) == 2
    norms = [layer for layer in q.layers if layer.kind in ("norm", "softmax", "eltwise")]
    assert norms and all(layer.quant.fmt == "float" for layer in norms)


def _constant_and_if_model() -> onnx.ModelProto:
    """Weights held in Constant nodes, and a Gemm inside an If with a constant condition."""
    rng = np.random.default_rng(1)
    wc = numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "wc")
    wm = numpy_helper.from_array(rng.standard_normal((64, 6)).astype(np.float32), "wm")
    then = helper.make_graph(
        [helper.make_node("Gemm", ["h", "wt"], ["yt"], transB=1, name="then_gemm")], "then", [],
        [helper.make_tensor_value_info("yt", TensorProto.FLOAT, [1, 5])],
        [numpy_helper.from_array(rng.standard_normal((5, 6)).astype(np.float32), "wt")])
    other = helper.make_graph(
        [helper.make_node("Identity", ["h5"], ["ye"], name="else_id")], "else", [],
        [helper.make_tensor_value_info("ye", TensorProto.FLOAT, [1, 5])])
    nodes = [
        helper.make_node("Constant", [], ["wc"], value=wc, name="const_wc"),
        helper.make_node("Conv", ["x", "wc"], ["c"], name="conv"),
        helper.make_node("Flatten", ["c"], ["f"], name="flat"),
        helper.make_node("Constant", [], ["wm"], value=wm, name="const_wm"),
        helper.make_node("MatMul", ["f", "wm"], ["h"], name="matmul"),
        helper.make_node("Slice", ["h", "s0", "s5", "s1"], ["h5"], name="slice"),
        helper.make_node("Constant", [], ["cond"], value=numpy_helper.from_array(
            np.array(True), "cond"), name="const_cond"),
        helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other, name="if"),
    ]
    ints = [numpy_helper.from_array(np.array([v], np.int64), n)
            for n, v in (("s0", 0), ("s5", 5), ("s1", 1))]
    graph = helper.make_graph(
        nodes, "ci", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], ints)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("bits", [8, 4])
def test_constant_node_and_if_layers_are_quantised(bits: int) -> None:
    g = load(_constant_and_if_model())
    macs = [layer for layer in g.layers if layer.kind in ("conv", "linear")]
    assert len(macs) == 3  # conv (Constant weights), matmul (Constant), the If's Gemm
    x = RNG.standard_normal((1, 2, 6, 6)).astype(np.float32)
    q = quantize(g, assignment.uniform(g, bits), calibrate(g, [{"x": x}]))
    assert all(q.layer(layer.name).quant.fmt != "float" for layer in macs)
    assert all(q.layer(layer.name).quant.w_bits == bits for layer in macs)


def _embedding_graph(rows: int):
    table = RNG.standard_normal((rows, 64)).astype(np.float32)
    ids = np.array([[0, rows - 1, 3]], np.int64)
    return one_layer("gather", dict(axis=0, elements=False),
                     [("table", table, True), ("ids", ids, False)])


def test_embedding_tables() -> None:
    big, _ = _embedding_graph(2048)     # 131072 elements >= min_embedding
    small, _ = _embedding_graph(64)
    bits, opts = np.full((1, 2), 32), QuantOptions(embedding_bits=4, clip="minmax")
    for g, fmt in ((big, "gbq"), (small, "float")):
        assert quantize(g, bits, None, opts).layers[0].quant.fmt == fmt
    assert "4096 elements" in quantize(small, bits, None, opts).layers[0].quant.reason
    q = quantize(big, bits, None, opts)
    codes = q.weights[quant_names("layer").codes]
    assert codes.shape == (2048, 64) and np.abs(codes).max() == 7
    assert q.weights[quant_names("layer").scale].shape == (2048, 2)  # blocks of 32 per row
    kept = quantize(big, bits, None)  # embedding_bits None: reported as kept
    assert kept.layers[0].quant.fmt == "float" and "embedding_bits=None" in \
        kept.layers[0].quant.reason


def test_weight_bytes_hand_arithmetic() -> None:
    g, feeds = one_layer("linear", {}, [("x", RNG.standard_normal((2, 32)).astype(np.float32),
                                          False),
                                         ("w", RNG.standard_normal((64, 32)).astype(np.float32),
                                          True),
                                         ("b", RNG.standard_normal(64).astype(np.float32), True)])
    assert weight_bytes(g) == 64 * 32 * 4 + 64 * 4
    w4 = quantize(g, np.array([[4, 32]]), None)
    assert weight_bytes(w4) == 64 * 32 * 4 // 8 + 64 * 1 * 4 + 64 * 4  # codes, scales, bias
    calib = calibrate(g, [feeds])
    w8 = quantize(g, np.array([[8, 8]]), calib)
    assert weight_bytes(w8) == 64 * 32 + 64 * 4 + 64 + 64 * 4  # codes, scales, zps, bias


def test_bad_bits_and_missing_calibration() -> None:
    g, calib, _ = _cnn()
    good = assignment.uniform(g, 8)
    with pytest.raises(ModelError, match="bits"):
        quantize(g, good[:-1], calib)
    bad = good.copy()
    bad[0] = (9, 8)
    with pytest.raises(ModelError, match="layer conv"):
        quantize(g, bad, calib)
    bad = good.copy()
    bad[1] = (8, 32)  # the relu
    with pytest.raises(ModelError, match="layer relu.*no bits"):
        quantize(g, bad, calib)
    with pytest.raises(ModelError, match="layer conv.*calibration"):
        quantize(g, good, None)
    with pytest.raises(ModelError, match="block"):
        QuantOptions(block=48)
