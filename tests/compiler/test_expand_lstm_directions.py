"""Reverse and bidirectional LSTMs unrolled (compiler.frontend.expand_lstm) against
onnxruntime's LSTM kernel: ddddocr's CRNN (common.onnx, PyPI ddddocr 1.6.1) reads its text
with a bidirectional LSTM, which was refused as "unsupported ops: LSTM (node LSTM_79)"."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.executor import run as execute
from compiler.frontend import load
from tests.compiler.test_expand_lstm import assert_unrolled_matches, feeds, run

SEQ, BATCH, IN, H = 4, 2, 5, 3


def lstm_model(direction: str, states: bool) -> onnx.ModelProto:
    """X [SEQ, BATCH, IN] (and h0, c0 [D, BATCH, H]) -> LSTM(direction) -> Y, Y_h, Y_c."""
    d = 2 if direction == "bidirectional" else 1
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("W", (d, 4 * H, IN)), ("R", (d, 4 * H, H)), ("B", (d, 8 * H)))]
    ins = ["X", "W", "R", "B", "", "h0" if states else "", "c0" if states else ""]
    node = helper.make_node("LSTM", ins, ["Y", "Y_h", "Y_c"], hidden_size=H, direction=direction)
    f32 = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("X", f32, [SEQ, BATCH, IN])]
    inputs += [helper.make_tensor_value_info(n, f32, [d, BATCH, H])
               for n in ("h0", "c0")] if states else []
    outputs = [helper.make_tensor_value_info("Y", f32, [SEQ, d, BATCH, H]),
               helper.make_tensor_value_info("Y_h", f32, [d, BATCH, H]),
               helper.make_tensor_value_info("Y_c", f32, [d, BATCH, H])]
    graph = helper.make_graph([node], "lstm", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("direction", ["reverse", "bidirectional"])
@pytest.mark.parametrize("states", [True, False])
def test_unrolled_directions_match_onnxruntime(direction: str, states: bool) -> None:
    model = lstm_model(direction, states)
    assert_unrolled_matches(model, feeds(model, seed=4))


def test_bidirectional_lowers_to_linear_layers_and_matches_onnxruntime() -> None:
    model = lstm_model("bidirectional", states=True)
    feed = feeds(model, seed=4)
    g = load(model)
    # per direction one input projection of the whole sequence and one h R^T per step: an
    # input MatMul per step would hold (once quantised) SEQ copies of W (ddddocr: 364 MB of
    # "fp32 weights" reported, a 92 MB W8 file emitted, from a 54 MB source)
    linear = [layer for layer in g.layers if layer.kind in ("linear", "matmul")]
    assert len(linear) == 2 * (1 + SEQ), [layer.name for layer in linear]
    got = execute(g, feed)
    for name, want in zip(("Y", "Y_h", "Y_c"), run(model, feed)):
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-5)
