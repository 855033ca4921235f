"""Older onnxruntime quantize_dynamic files read back (compiler/frontend/quantized_dynamic.py).

ddddocr 1.6.1's `common_old.onnx` (producer "onnx.quantize" 0.1.0) was refused as
"unsupported ops: ConvInteger, Floor, com.microsoft::DynamicQuantizeLSTM": its convs add a
bias quantised at run time (Div / Floor / Cast / Reshape / Add, onnxruntime's old
`_dynamic_quantize_bias` + `get_bias_add_nodes`) and its LSTM is a DynamicQuantizeLSTM. The
graphs are built here node for node as that quantizer wrote them; onnxruntime runs them as
the oracle, and a float model on weights the test dequantises itself checks the IR's forward.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.executor import run as execute
from compiler.formats import of_layer
from compiler.frontend import load
from edgesim import api
from edgesim.kernel_check import check_kernels

pytestmark = pytest.mark.ort
MS = "com.microsoft"
CIN, COUT, HW = 3, 4, 6


def _init(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _old_conv(x: str, y: str, w_q: np.ndarray, w_zp: int, w_scale: float, bias: np.ndarray,
              tag: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """A Conv as onnxruntime's old quantize_dynamic wrote it (names as in common_old.onnx)."""
    n = helper.make_node
    nodes = [
        n("DynamicQuantizeLinear", [x], [f"{x}_quantized", f"{x}_scale", f"{x}_zero_point"],
          f"{x}_QuantizeLinear"),
        n("Mul", [f"{x}_scale", f"{tag}w_scale"], [f"{tag}b_scale"], f"{tag}b_scale_node"),
        n("Div", [f"{tag}b", f"{tag}b_scale"], [f"{tag}b_tmp_quant:0"], f"{tag}b_tmp_qaunt"),
        n("Floor", [f"{tag}b_tmp_quant:0"], [f"{tag}b_rounded"], f"{tag}b_quant_rounded"),
        n("Cast", [f"{tag}b_rounded"], [f"{tag}b_quantized"], f"{tag}b_quantized_node",
          to=TensorProto.INT32),
        n("ConvInteger", [f"{x}_quantized", f"{tag}w_quantized", f"{x}_zero_point",
                          f"{tag}w_zero_point"], [f"{tag}out_q"], f"{tag}Conv_quant",
          kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1], dilations=[1, 1], group=1),
        n("Reshape", [f"{tag}b_quantized", f"{tag}b_shape"], [f"{tag}b_reshape"],
          f"{tag}b_quantizedreshape"),
        n("Add", [f"{tag}out_q", f"{tag}b_reshape"], [f"{tag}bias_add"], f"{tag}bias_add"),
        n("Cast", [f"{tag}bias_add"], [f"{tag}cast_out"], f"{tag}bias_add_cast",
          to=TensorProto.FLOAT),
        n("Mul", [f"{x}_scale", f"{tag}w_scale"], [f"{tag}scales"], f"{tag}Conv_quant_scales_mul"),
        n("Mul", [f"{tag}cast_out", f"{tag}scales"], [y], f"{tag}Conv_quant_output_scale_mul"),
    ]
    inits = [_init(f"{tag}w_quantized", w_q), _init(f"{tag}w_zero_point", np.uint8(w_zp)),
             _init(f"{tag}w_scale", np.float32(w_scale)), _init(f"{tag}b", bias),
             _init(f"{tag}b_shape", np.array([1, -1, 1, 1], np.int64))]
    return nodes, inits


def _conv_weights(seed: int, cin: int) -> tuple[np.ndarray, int, float, np.ndarray]:
    rng = np.random.default_rng(seed)
    w_q = rng.integers(0, 256, (COUT, cin, 3, 3)).astype(np.uint8)
    return w_q, int(rng.integers(100, 156)), float(rng.uniform(0.002, 0.01)), \
        rng.uniform(-0.5, 0.5, COUT).astype(np.float32)


def old_conv_model() -> tuple[onnx.ModelProto, list[tuple[np.ndarray, int, float, np.ndarray]]]:
    """x -> old ConvInteger(+bias) -> Relu -> old ConvInteger(+bias) -> y, at opset 12 (as
    ddddocr's file)."""
    params = [_conv_weights(1, CIN), _conv_weights(2, COUT)]
    a, inits_a = _old_conv("x", "c1", *params[0], tag="A")
    b, inits_b = _old_conv("r1", "y", *params[1], tag="B")
    relu = helper.make_node("Relu", ["c1"], ["r1"], "Relu_1")
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        [*a, relu, *b], "old_dynamic_conv",
        [helper.make_tensor_value_info("x", f32, [1, CIN, HW, HW])],
        [helper.make_tensor_value_info("y", f32, [1, COUT, HW, HW])], [*inits_a, *inits_b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)],
                              producer_name="onnx.quantize", producer_version="0.1.0")
    return model, params


def _float_conv_model(params: list[tuple[np.ndarray, int, float, np.ndarray]]) -> onnx.ModelProto:
    """The same network in float, on weights dequantised here: (w_q - zp) * scale."""
    nodes, inits = [], []
    for i, (w_q, zp, scale, bias) in enumerate(params):
        x, y = ("x", "c1") if i == 0 else ("r1", "y")
        inits += [_init(f"w{i}", ((w_q.astype(np.float32) - zp) * scale).astype(np.float32)),
                  _init(f"b{i}", bias)]
        nodes.append(helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [y], pads=[1, 1, 1, 1]))
        if i == 0:
            nodes.append(helper.make_node("Relu", ["c1"], ["r1"]))
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(nodes, "float", [helper.make_tensor_value_info(
        "x", f32, [1, CIN, HW, HW])], [helper.make_tensor_value_info("y", f32, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _ort(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


def test_old_conv_integer_with_run_time_bias_reads_as_dynamic_int8_conv() -> None:
    model, params = old_conv_model()
    g = load(model)
    convs = [layer for layer in g.layers if layer.kind == "conv"]
    # the bias subgraph (Mul / Div / Floor / Cast / Reshape / Add) folds into each conv
    assert [layer.kind for layer in g.layers if layer.kind != "activation"] == ["conv", "conv"]
    assert all(of_layer(la, True).name == "dynamic_int8_conv" for la in convs)
    assert all((la.quant.w_bits, la.quant.a_bits, la.quant.granularity) ==
               (8, 8, "per_tensor") for la in convs)
    assert all(r.ok and r.planned == "ConvInteger" for r in check_kernels(g, model))
    sim = {r.name: r for r in api.simulate(g, "rpi5").layers}  # the file's own plan
    assert all((sim[la.name].w_bits, sim[la.name].a_bits) == (8, 8) for la in convs)
    x = np.random.default_rng(0).standard_normal((1, CIN, HW, HW)).astype(np.float32)
    got = execute(g, {"x": x})["y"]
    np.testing.assert_allclose(got, _ort(_float_conv_model(params), {"x": x})[0],
                               rtol=1e-5, atol=1e-5)


def test_old_conv_integer_float_forward_is_within_the_int8_error_of_onnxruntime() -> None:
    """One conv: onnxruntime's uint8 run differs from the float conv by at most the
    activation's rounding (half a step per tap, times |w|) plus the bias' Floor (one step
    of sx * sw), per output channel."""
    w_q, zp, scale, bias = _conv_weights(1, CIN)
    nodes, inits = _old_conv("x", "y", w_q, zp, scale, bias, tag="A")
    f32 = TensorProto.FLOAT
    model = helper.make_model(helper.make_graph(
        nodes, "one", [helper.make_tensor_value_info("x", f32, [1, CIN, HW, HW])],
        [helper.make_tensor_value_info("y", f32, [1, COUT, HW, HW])], inits),
        opset_imports=[helper.make_opsetid("", 12)])
    x = np.random.default_rng(5).standard_normal((1, CIN, HW, HW)).astype(np.float32)
    got = execute(load(model), {"x": x})["y"]
    step = (max(x.max(), 0) - min(x.min(), 0)) / 255  # DynamicQuantizeLinear's uint8 scale
    w = (w_q.astype(np.float32) - zp) * scale
    bound = step / 2 * np.abs(w).sum(axis=(1, 2, 3)) + step * scale
    err = np.abs(_ort(model, {"x": x})[0] - got).max(axis=(0, 2, 3))
    assert np.all(err <= bound * 1.01 + 1e-6), (err, bound)
    assert err.max() > 0  # the oracle really is the integer run


SEQ, BATCH, IN, H = 5, 2, 6, 4


def dynamic_lstm_model(signed: bool, per_channel: bool) -> tuple[onnx.ModelProto, np.ndarray,
                                                                  np.ndarray, np.ndarray]:
    """X -> com.microsoft::DynamicQuantizeLSTM (bidirectional, with h0 / c0) -> Y, Y_h, Y_c;
    also the float W, R [D, 4H, K] (ONNX LSTM layout) and B the codes stand for."""
    rng = np.random.default_rng(7)
    d, dtype = 2, np.int8 if signed else np.uint8
    # int8 codes in 7 bits, as quantize_dynamic's reduce_range writes them: x86's u8 x s8
    # kernel (AVX2 VPMADDUBSW) saturates int16 pair sums of full-range codes; Arm does not
    lo, hi, zp = (-64, 64, 0) if signed else (0, 256, 131)
    shape = (d, 4 * H) if per_channel else (d,)
    ws, rs = (rng.uniform(0.002, 0.005, shape).astype(np.float32) for _ in range(2))
    zps = np.full(shape, zp, dtype)  # onnxruntime wants one uint8 zero point per tensor
    w_q = rng.integers(lo, hi, (d, IN, 4 * H)).astype(dtype)
    r_q = rng.integers(lo, hi, (d, H, 4 * H)).astype(dtype)
    bias = rng.uniform(-0.3, 0.3, (d, 8 * H)).astype(np.float32)

    def deq(q: np.ndarray, s: np.ndarray) -> np.ndarray:
        s = s.reshape(d, 1, -1)
        return ((q.astype(np.float32) - zp) * s).transpose(0, 2, 1).astype(np.float32)

    inits = [_init("W_q", w_q), _init("R_q", r_q), _init("B", bias), _init("W_scale", ws),
             _init("W_zp", zps), _init("R_scale", rs), _init("R_zp", zps)]
    node = helper.make_node("DynamicQuantizeLSTM", ["X", "W_q", "R_q", "B", "", "h0", "c0", "",
                                                    "W_scale", "W_zp", "R_scale", "R_zp"],
                            ["Y", "Y_h", "Y_c"], "LSTM_quant", domain=MS, hidden_size=H,
                            direction="bidirectional")
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        [node], "dq_lstm", [helper.make_tensor_value_info("X", f32, [SEQ, BATCH, IN]),
                            helper.make_tensor_value_info("h0", f32, [d, BATCH, H]),
                            helper.make_tensor_value_info("c0", f32, [d, BATCH, H])],
        [helper.make_tensor_value_info("Y", f32, [SEQ, d, BATCH, H]),
         helper.make_tensor_value_info("Y_h", f32, [d, BATCH, H]),
         helper.make_tensor_value_info("Y_c", f32, [d, BATCH, H])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12),
                                                    helper.make_opsetid(MS, 1)])
    return model, deq(w_q, ws), deq(r_q, rs), bias


def _float_lstm(w: np.ndarray, r: np.ndarray, b: np.ndarray) -> onnx.ModelProto:
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "", "h0", "c0"], ["Y", "Y_h", "Y_c"],
                            hidden_size=H, direction="bidirectional")
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        [node], "lstm", [helper.make_tensor_value_info(n, f32, s) for n, s in
                         (("X", [SEQ, BATCH, IN]), ("h0", [2, BATCH, H]), ("c0", [2, BATCH, H]))],
        [helper.make_tensor_value_info(n, f32, None) for n in ("Y", "Y_h", "Y_c")],
        [_init("W", w), _init("R", r), _init("B", b)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _lstm_feed() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    return {"X": rng.standard_normal((SEQ, BATCH, IN)).astype(np.float32),
            "h0": rng.uniform(-0.5, 0.5, (2, BATCH, H)).astype(np.float32),
            "c0": rng.uniform(-0.5, 0.5, (2, BATCH, H)).astype(np.float32)}


@pytest.mark.parametrize(("signed", "per_channel"), [(True, False), (False, True)])
def test_dynamic_quantize_lstm_reads_as_its_float_lstm(signed: bool, per_channel: bool) -> None:
    model, w, r, b = dynamic_lstm_model(signed, per_channel)
    feed = _lstm_feed()
    g = load(model)
    got = execute(g, feed)
    for name, want in zip(("Y", "Y_h", "Y_c"), _ort(_float_lstm(w, r, b), feed)):
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-5)
    # onnxruntime's own run quantises each GEMM's activations to uint8: 0.002 from the float
    # LSTM here, while reading R untransposed (0.06) or W's gates out of order (0.11) is not
    for name, want in zip(("Y", "Y_h", "Y_c"), _ort(model, feed)):
        assert np.abs(got[name] - want).max() < 0.01, name


def test_dynamic_quantize_lstm_layers_are_w8a8_dynamic_and_store_r_once() -> None:
    """Every unrolled GEMM (one input projection and SEQ recurrent steps per direction) is
    W8A8 with run-time activations, as onnxruntime's DynamicQuantizeLSTM runs it; the gates'
    element-wise layers stay float; the steps share one R per direction, counted once."""
    model, *_ = dynamic_lstm_model(signed=True, per_channel=False)
    g = load(model)
    gemms = [la for la in g.layers if la.kind in ("linear", "matmul")]
    assert len(gemms) == 2 * (1 + SEQ)
    assert {of_layer(la, True).name for la in gemms} == {"dynamic_int8_linear"}
    assert all(la.quant.w_bits is None for la in g.layers if la not in gemms)
    rows = {x.name: x.weight_bytes for x in api.simulate(g, "rpi5").layers}
    for d in range(2):  # per direction: the input projection, then SEQ steps sharing R
        w, r_first, *r_rest = (rows[la.name] for la in gemms[d * (1 + SEQ):(d + 1) * (1 + SEQ)])
        assert r_rest == [0.0] * (SEQ - 1)
        assert w - r_first == (IN - H) * 4 * H  # uint8 codes of W^T vs R^T; same scales
        assert r_first >= H * 4 * H + 1 + 4  # codes, a zero point, a scale
