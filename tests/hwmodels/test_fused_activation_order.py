"""Which activations the CPU model runs inside their conv's output loop
(`hwmodels.cpu.fused_activations`), checked against the graph onnxruntime optimises: it fuses
a conv's lone ReLU reader wherever the ONNX file lists the ReLU. Found on Spotify's Basic Pitch
(tf2onnx: its note branch's ReLU comes after other layers), where the compile report costed
that ReLU at 0.41 ms while `edgesim simulate` of the emitted file, which has no ReLU, did not."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from compiler.frontend import load
from hwmodels import cpu

# conv_a's ReLU is listed after conv_b (not just after conv_a); conv_c's output has two
# readers (its ReLU and an Add), so onnxruntime cannot fuse that ReLU; conv_d's LeakyRelu (a
# fusable activation that an accelerator's epilogue would not take) comes last
NODES = (("Conv", ["x", "wa"], ["a"], "conv_a"), ("Conv", ["x", "wb"], ["b"], "conv_b"),
         ("Relu", ["a"], ["ra"], "relu_a"), ("Relu", ["b"], ["rb"], "relu_b"),
         ("Conv", ["x", "wc"], ["c"], "conv_c"), ("Relu", ["c"], ["rc"], "relu_c"),
         ("Conv", ["x", "wd"], ["d"], "conv_d"),
         ("Add", ["ra", "rb"], ["s"], "add_ab"), ("Add", ["s", "rc"], ["t"], "add_c"),
         ("Add", ["t", "c"], ["u"], "add_cc"), ("LeakyRelu", ["d"], ["rd"], "leaky_d"),
         ("Add", ["u", "rd"], ["y"], "add_out"))
ACTIVATIONS = {"relu_a", "relu_b", "relu_c", "leaky_d"}


def _model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(0, 0.3, (8, 4, 3, 3)).astype(np.float32), w)
               for w in ("wa", "wb", "wc", "wd")]
    nodes = [helper.make_node(op, i, o, name=n, pads=[1, 1, 1, 1]) if op == "Conv"
             else helper.make_node(op, i, o, name=n) for op, i, o, n in NODES]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _ort_standalone(tmp_path) -> set[str]:
    """The activations onnxruntime still runs as nodes of their own after optimising (the
    oracle)."""
    path, opt = tmp_path / "m.onnx", tmp_path / "opt.onnx"
    onnx.save(_model(), path)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(opt)
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return {n.name for n in onnx.load(str(opt)).graph.node if n.name in ACTIVATIONS}


def test_fused_activations_match_onnxruntime_wherever_they_are_listed(tmp_path):
    standalone = _ort_standalone(tmp_path)
    assert standalone == {"relu_c"}  # the graph exercises both rules
    table = load(_model()).layer_table()
    fused = {table.names[i] for i in np.flatnonzero(cpu.fused_activations(table))}
    assert fused == ACTIVATIONS - standalone
