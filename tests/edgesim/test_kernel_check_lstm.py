"""Kernel check on a file onnxruntime's quantize_dynamic wrote from an LSTM model: its LSTM
becomes one com.microsoft::DynamicQuantizeLSTM node, which edgesim reads as unrolled int8
GEMM layers; the check names that node as what runs them (it found no node for any of them)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.frontend import load
from edgesim.kernel_check import check_kernels, optimized_graph

pytestmark = pytest.mark.ort
SEQ, IN, H = 4, 8, 16


def _float_lstm(direction: str) -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    d = 2 if direction == "bidirectional" else 1
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.3, n)
             for n, s in (("W", (d, 4 * H, IN)), ("R", (d, 4 * H, H)), ("B", (d, 8 * H)))]
    node = helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y"], name="rnn", hidden_size=H,
                            direction=direction)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "X", TensorProto.FLOAT, [SEQ, 1, IN])], [helper.make_tensor_value_info(
            "Y", TensorProto.FLOAT, [SEQ, d, 1, H])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_quantize_dynamic_lstm_is_named_as_the_kernel_of_its_steps(tmp_path, direction) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, out = tmp_path / "f.onnx", tmp_path / "dyn.onnx"
    onnx.save(_float_lstm(direction), src)
    quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8)
    model = onnx.load(out)
    (node,) = optimized_graph(model).graph.node  # the oracle: what onnxruntime runs
    assert node.op_type == "DynamicQuantizeLSTM"
    rows = check_kernels(load(out), model)
    gemms = [r for r in rows if r.kind == "linear"]
    d = 2 if direction == "bidirectional" else 1
    # per direction: the input projection and SEQ - 1 recurrent steps (h0 = 0 skips one)
    assert len(gemms) == d * SEQ
    assert all(r.layer.startswith(f"{node.name}/") for r in gemms)
    assert {(r.planned, r.onnxruntime) for r in gemms} == {
        ("MatMulIntegerToFloat", "DynamicQuantizeLSTM")}
    assert all(r.ok for r in rows), [r for r in rows if not r.ok]


def test_a_float_lstm_runs_its_steps_in_fp32(tmp_path) -> None:
    model = _float_lstm("forward")
    rows = check_kernels(load(model), model)
    gemms = [r for r in rows if r.kind == "linear"]
    assert gemms and {(r.planned, r.onnxruntime) for r in gemms} == {("fp32", "LSTM")}
    assert all(r.ok for r in rows)
