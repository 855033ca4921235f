"""onnxruntime runs one DequantizeLinear per float reader of a QLinearConv's result
(EnsureUniqueDQForNodeUnit copies the one DQ edgesim emits), and the CPU model prices each.

Oracles: the DequantizeLinear nodes in onnxruntime's optimised graph of edgesim's W8A8
emission, and hand arithmetic on `test_cpu`'s one-core target (a DQ pass: 2 lane ops per
element over 4 fp32 lanes, 1 us per node, memory that never limits).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.frontend import load
from edgesim.quantize import quantize_model
from hwmodels import cpu, ort_int8
from hwmodels.kernels import cpu_layout as K
from hwmodels.kernels.cpu_layout import DQ_LANE_OPS
from tests.hwmodels.test_cpu import OVH, simple_target

OUT = (1, 8, 8, 8)
RNG = np.random.default_rng(0)


def _fan_out(readers: list[str]) -> onnx.ModelProto:
    """A 3x3 conv whose output each of `readers` (an op type, or "Conv" for a 1x1 conv) reads;
    every reader's output is a graph output."""
    w = numpy_helper.from_array(RNG.standard_normal((8, 4, 3, 3)).astype(np.float32), "w")
    w2 = numpy_helper.from_array(RNG.standard_normal((8, 8, 1, 1)).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["x", "w"], ["h"], pads=[1, 1, 1, 1])]
    for i, r in enumerate(readers):
        nodes.append(helper.make_node(r, ["h", "w2"] if r == "Conv" else ["h"], [f"o{i}"]))
    outs = [helper.make_tensor_value_info(f"o{i}", TensorProto.FLOAT, OUT)
            for i in range(len(readers))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, (1, 4, 8, 8))], outs, [w, w2])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _ort_dq_nodes(model: onnx.ModelProto, tmp: Path) -> int:
    emitted = quantize_model(load(model), "8", out=tmp / "model.onnx").out
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(tmp / "optimised.onnx")
    ort.InferenceSession(str(emitted), opts, providers=["CPUExecutionProvider"])
    ops = Counter(n.op_type for n in onnx.load(str(tmp / "optimised.onnx")).graph.node)
    return ops["DequantizeLinear"]


READERS = [["Sigmoid"], ["Sigmoid", "Tanh"], ["Sigmoid", "Tanh", "Abs"],
           ["Conv", "Sigmoid", "Tanh"], ["Conv", "Conv"], ["HardSwish"]]


@pytest.mark.parametrize("readers", READERS)
def test_one_dq_per_float_reader(readers: list[str], tmp_path: Path) -> None:
    """onnxruntime's DQ nodes are the table's copies summed over the QLinearConvs that write
    float (path with a DQ node). Fails on the old model (one DQ per tensor: 1 where
    onnxruntime runs 2 or 3). HardSwish, which onnxruntime runs as HardSigmoid and Mul, is
    one reader (one DQ)."""
    model = _fan_out(readers)
    table = load(model).layer_table()
    paths = cpu.layer_choices(table, np.array([(8, 8)]), simple_target(),
                              K.RUNTIME_ORT)[:, 0]
    float_out = np.isin(paths, (K.PATH_QLINEAR, K.PATH_QLINEAR_IN))
    assert int(ort_int8.dq_copies(table)[float_out].sum()) == _ort_dq_nodes(model, tmp_path)


@pytest.mark.parametrize("copies", [2, 3])
def test_each_dq_copy_is_a_priced_pass_and_node(copies: int,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Each copy beyond the first costs the conv one more DQ pass and node: (n elements x 2
    lane ops) / 4 lanes + 1 us; ncnn, which dequantises once, pays nothing more. Fails on the
    old kernel (no copies)."""
    def conv_cycles(n_copies: int, runtime: str) -> float:
        monkeypatch.setattr(ort_int8, "dq_copies", lambda t: np.full(len(t), n_copies))
        table = load(_fan_out(["Sigmoid"])).layer_table()
        return float(cpu.evaluate(table, np.array([(8, 8)]), simple_target(),
                                  runtime=runtime).cycles[0, 0])

    n = int(np.prod(OUT))
    extra = conv_cycles(copies, "onnxruntime") - conv_cycles(1, "onnxruntime")
    assert extra == pytest.approx((copies - 1) * (n * DQ_LANE_OPS / 4 + OVH))
    assert conv_cycles(copies, "ncnn") == conv_cycles(1, "ncnn")
