"""Unrolled LSTMs (compiler.frontend.expand_lstm) against onnxruntime's LSTM kernel, and an
`If` whose condition needs a shape that ONNX shape inference leaves open (silero-vad's STFT
front end computes its Slice ends from shapes)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.executor import run as execute
from compiler.frontend import load
from compiler.frontend.expand_lstm import expand_lstms
from compiler.frontend.static_shapes import inferred_shapes, run_shapes

SEQ, BATCH, IN, H = 3, 2, 5, 4


def lstm_model(states: bool, bias: bool, weights_by_constant: bool = False) -> onnx.ModelProto:
    """X [SEQ, BATCH, IN] (and h0, c0 [1, BATCH, H]) -> LSTM -> Y, Y_h, Y_c."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((1, 4 * H, IN)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal((1, 4 * H, H)).astype(np.float32), "R"),
             numpy_helper.from_array(rng.standard_normal((1, 8 * H)).astype(np.float32), "B")]
    nodes = []
    if weights_by_constant:  # exporters build W by Slice/Concat of constants: fold it
        inits[0].name = "W_half"
        nodes.append(helper.make_node("Concat", ["W_half", "W_half"], ["W_both"], axis=0))
        nodes.append(helper.make_node("Slice", ["W_both", "zero", "one", "zero"], ["W"]))
        inits += [numpy_helper.from_array(np.array([0], np.int64), "zero"),
                  numpy_helper.from_array(np.array([1], np.int64), "one")]
    ins = ["X", "W", "R", "B" if bias else "", "", "h0" if states else "", "c0" if states else ""]
    nodes.append(helper.make_node("LSTM", ins, ["Y", "Y_h", "Y_c"], hidden_size=H))
    f32 = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("X", f32, [SEQ, BATCH, IN])]
    inputs += [helper.make_tensor_value_info(n, f32, [1, BATCH, H])
               for n in ("h0", "c0")] if states else []
    outputs = [helper.make_tensor_value_info("Y", f32, [SEQ, 1, BATCH, H]),
               helper.make_tensor_value_info("Y_h", f32, [1, BATCH, H]),
               helper.make_tensor_value_info("Y_c", f32, [1, BATCH, H])]
    graph = helper.make_graph(nodes, "lstm", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def feeds(model: onnx.ModelProto, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {vi.name: rng.standard_normal([d.dim_value for d in vi.type.tensor_type.shape.dim])
            .astype(np.float32) for vi in model.graph.input}


def run(model: onnx.ModelProto, feed: dict) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


@pytest.mark.parametrize("states,bias,folded", [(True, True, False), (False, True, False),
                                                (True, False, False), (True, True, True)])
def test_unrolled_lstm_matches_onnxruntime(states: bool, bias: bool, folded: bool) -> None:
    model = lstm_model(states, bias, folded)
    assert_unrolled_matches(model, feeds(model))


def assert_unrolled_matches(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> None:
    """`model`'s LSTMs unrolled leave no LSTM, pass the checker and give onnxruntime's outputs."""
    want = run(model, feed)
    unrolled = onnx.ModelProto()
    unrolled.CopyFrom(model)
    assert expand_lstms(unrolled)
    assert "LSTM" not in {n.op_type for n in unrolled.graph.node}
    onnx.checker.check_model(unrolled)
    for w, g in zip(want, run(unrolled, feed)):
        assert w.shape == g.shape
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_lstm_lowers_to_linear_layers_and_matches_onnxruntime() -> None:
    model = lstm_model(states=True, bias=True)
    feed = feeds(model)
    g = load(model)
    assert sum(layer.kind == "linear" for layer in g.layers) >= SEQ  # x W per step, quantisable
    got = execute(g, feed)
    for name, want in zip(("Y", "Y_h", "Y_c"), run(model, feed)):
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-5)


def test_a_bidirectional_lstm_with_one_direction_of_weights_is_left_alone() -> None:
    # (well-formed reverse and bidirectional LSTMs: test_expand_lstm_directions.py)
    model = lstm_model(states=False, bias=True)
    model.graph.node[-1].attribute.append(helper.make_attribute("direction", "bidirectional"))
    assert not expand_lstms(model)


def shape_if_model() -> onnx.ModelProto:
    """x [1, 8] -> Slice(x, 0, n) with n = Shape(x)[1] // 2 computed at run time -> the If
    tests Shape(sliced)[1] == 4: Double when true, Neg when false."""
    i64 = lambda v, name: numpy_helper.from_array(np.array(v, np.int64), name)  # noqa: E731
    then_g = helper.make_graph([helper.make_node("Add", ["y", "y"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 4])])
    else_g = helper.make_graph([helper.make_node("Neg", ["y"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", TensorProto.FLOAT, [1, 4])])
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "one"], ["w"], axis=0),
             helper.make_node("Div", ["w", "two"], ["half"]),
             helper.make_node("Cast", ["half"], ["halff"], to=TensorProto.FLOAT),
             helper.make_node("Sqrt", ["halff"], ["root"]),  # data_prop stops here
             helper.make_node("Mul", ["root", "root"], ["sq"]),
             helper.make_node("Cast", ["sq"], ["n"], to=TensorProto.INT64),  # sqrt(4)^2: exact
             helper.make_node("Unsqueeze", ["n", "zero"], ["end"]),
             helper.make_node("Slice", ["x", "zero", "end", "axis1"], ["y"]),
             helper.make_node("Shape", ["y"], ["ys"]),
             helper.make_node("Gather", ["ys", "one"], ["yw"], axis=0),
             helper.make_node("Equal", ["yw", "four"], ["cond"]),
             helper.make_node("If", ["cond"], ["out"], then_branch=then_g, else_branch=else_g)]
    graph = helper.make_graph(
        nodes, "shape_if", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4])],
        [i64([0], "zero"), i64(1, "one"), i64([1], "axis1"), i64(2, "two"), i64(4, "four")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_if_on_a_shape_inference_leaves_open_is_inlined() -> None:
    model = shape_if_model()
    assert "y" not in inferred_shapes(model)  # the case the reference-run fallback is for
    assert run_shapes(model)["y"] == (1, 4)
    x = np.arange(8, dtype=np.float32)[None]
    g = load(model)
    np.testing.assert_allclose(execute(g, {"x": x})["out"], run(model, {"x": x})[0])
    np.testing.assert_allclose(execute(g, {"x": x})["out"], 2 * x[:, :4])
