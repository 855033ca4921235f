"""The report's rows are the emitted file's layers: a ReLU whose input is already on a uint8
grid with zero point 0 (a W8A8 conv's output) is written as no node (`Builder.fold`), so
report.json lists no row for it and says in one note what it was folded into; where its output
is a graph output, the file's Identity writing that name is its node, under its name. Either
way `simulate` of the file gives the report's rows (SwiftF0: 176 report rows for 167).

Oracles: the node names of the emitted file, the op types of onnxruntime's optimised graph (no
Relu runs), and `simulate` reading the file back.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgesim import api

pytestmark = pytest.mark.ort
RNG = np.random.default_rng(0)


def conv_relu(then_conv: bool) -> onnx.ModelProto:
    """x[1,4,12,12] -> Conv `conv` -> Relu `relu` (-> Conv `conv2` -> Sigmoid `sigmoid` if
    `then_conv`) -> y."""
    def weight(name: str, c_in: int) -> onnx.TensorProto:
        return numpy_helper.from_array(RNG.normal(0, 0.3, (8, c_in, 3, 3)).astype(np.float32),
                                       name)

    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r" if then_conv else "y"], name="relu")]
    inits = [weight("w", 4)]
    if then_conv:
        # (a float last layer: the reader of a file whose output a DequantizeLinear writes
        # adds an Identity layer of its own, compiler/frontend/quantized.py `_keep_outputs`)
        nodes += [helper.make_node("Conv", ["r", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
                  helper.make_node("Sigmoid", ["c2"], ["y"], name="sigmoid")]
        inits.append(weight("w2", 8))
    graph = helper.make_graph(
        nodes, "conv_relu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 12, 12])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("then_conv", [True, False], ids=["inside", "graph_output"])
def test_report_rows_are_the_emitted_files_layers(tmp_path, then_conv: bool) -> None:
    src = tmp_path / "m.onnx"
    onnx.save(conv_relu(then_conv), src)
    r = api.compile(str(src), "rpi5", outdir=tmp_path / "o", weight_bits=(8,), act_bits=(8,),
                    calib_random=8, budget="bits=8", quiet=True)
    emitted = onnx.load(r.files["model"])
    nodes = {n.name: n.op_type for n in emitted.graph.node}
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(r.files["model"], opts, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(tmp_path / "opt.onnx").graph.node]
    assert "Relu" not in ops and ops.count("QLinearConv") == 1 + then_conv  # int8 convs only

    report = json.loads((tmp_path / "o" / "report.json").read_text())
    rows = [x["name"] for x in report["layers"]]
    assert set(rows) <= set(nodes)  # every row is a node of the file
    assert [x.name for x in api.simulate(r.files["model"], "rpi5").layers] == rows
    folded = [n for n in report["notes"] if "relu into conv" in n]
    if then_conv:
        assert rows == ["conv", "conv2", "sigmoid"] and "relu" not in nodes and len(folded) == 1
    else:  # the file writes `y` with an Identity: the relu's node
        assert rows == ["conv", "relu"] and nodes["relu"] == "Identity" and not folded
