"""Which activations onnxruntime runs inside the conv / linear kernel before them.

Oracle: onnxruntime's own optimised graph of the fp32 model edgesim emits (ConvActivationFusion
and GemmActivationFusion run at ORT_ENABLE_EXTENDED; ORT_ENABLE_ALL adds x86's NCHWc
transformer, which fuses the same activations into its convs): an activation is fused when
its node is gone from that graph.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.frontend import load
from compiler.ir import KIND_CODE
from edgesim.quantize import quantize_model
from hwmodels.cpu_choice import fused_activations, layer_choices
from hwmodels.kernels import cpu_layout as K
from tests.hwmodels.test_cpu import simple_target

ACTS = ["Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "Elu", "Selu",
        "Softplus", "Softsign", "Sqrt", "Abs", "Neg", "Reciprocal", "Exp", "Erf"]
LEVELS = [ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
          ort.GraphOptimizationLevel.ORT_ENABLE_ALL]
RNG = np.random.default_rng(0)


def _model(first: str, act: str, fan_out: bool = False) -> onnx.ModelProto:
    """`first` (a 3x3 Conv, a 2-D Gemm or a 3-D MatMul with a constant weight) feeding `act`;
    with `fan_out` the first node's output also feeds a graph output through an Add."""
    if first == "Conv":
        x, y = [1, 4, 8, 8], [1, 8, 8, 8]
        w = numpy_helper.from_array(RNG.standard_normal((8, 4, 3, 3)).astype(np.float32), "w")
        node = helper.make_node("Conv", ["x", "w"], ["h"], pads=[1, 1, 1, 1])
    else:
        x, y = ([2, 16], [2, 8]) if first == "Gemm" else ([2, 3, 16], [2, 3, 8])
        w = numpy_helper.from_array(RNG.standard_normal((16, 8)).astype(np.float32), "w")
        node = helper.make_node(first, ["x", "w"], ["h"])
    inits, ins = [w], ["h"]
    if act == "Clip":
        inits += [numpy_helper.from_array(np.array(v, np.float32), n)
                  for n, v in (("lo", 0.0), ("hi", 6.0))]
        ins += ["lo", "hi"]
    nodes = [node, helper.make_node(act, ins, ["y"])]
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, y)]
    if fan_out:
        nodes.append(helper.make_node("Add", ["h", "h"], ["y2"]))
        outs.append(helper.make_tensor_value_info("y2", TensorProto.FLOAT, y))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                        x)], outs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _ort_ops(model: onnx.ModelProto, tmp: Path, level: ort.GraphOptimizationLevel) -> list[str]:
    """Op types of the nodes onnxruntime runs for edgesim's fp32 emission of `model`."""
    emitted = quantize_model(load(model), "fp32", out=tmp / "model.onnx").out
    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    opts.optimized_model_filepath = str(tmp / "optimised.onnx")
    opts.log_severity_level = 3  # ORT_ENABLE_ALL warns that NCHWc graphs are host-specific
    ort.InferenceSession(str(emitted), opts, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(str(tmp / "optimised.onnx")).graph.node]


def _fused(model: onnx.ModelProto) -> bool:
    table = load(model).layer_table()
    (row,) = np.flatnonzero(table.kind_code == KIND_CODE["activation"])
    return bool(fused_activations(table, K.RUNTIME_ORT)[row])


@pytest.mark.parametrize("first", ["Conv", "Gemm", "MatMul"])
@pytest.mark.parametrize("act", ACTS)
def test_fused_as_onnxruntime_fuses(first: str, act: str, tmp_path: Path) -> None:
    """Fails on the old rule (every <= 2-op activation after a conv or linear: Sqrt, Abs, Neg,
    Reciprocal fused, Sigmoid, Tanh, HardSigmoid not; Clip after a Gemm, any after a MatMul)."""
    model = _model(first, act)
    for level in LEVELS:
        assert _fused(model) == (act not in _ort_ops(model, tmp_path, level)), level


@pytest.mark.parametrize("act", ["Relu", "Sigmoid"])
def test_a_conv_output_read_twice_is_not_fused(act: str, tmp_path: Path) -> None:
    """Fails on the old rule, which did not look at the conv's other readers."""
    model = _model("Conv", act, fan_out=True)
    assert act in _ort_ops(model, tmp_path, LEVELS[0])
    assert not _fused(model)


def test_other_runtimes_fuse_the_clamps() -> None:
    """ncnn / XNNPACK / ideal keep ReLU, clip and leaky ReLU only."""
    assert not fused_activations(load(_model("Conv", "Sigmoid")).layer_table(), K.RUNTIME_NCNN)[1]
    assert fused_activations(load(_model("Conv", "Relu")).layer_table(), K.RUNTIME_NCNN)[1]


# edgesim's bit choices -> (w_bits, a_bits) columns of a cost call
BITS = {"fp32": (32, 32), "8": (8, 8), "4": (4, 32)}


@pytest.mark.parametrize("bits", ["8", "4"])
@pytest.mark.parametrize("first", ["Conv", "Gemm"])
@pytest.mark.parametrize("act", ["Relu", "Clip", "LeakyRelu", "Sigmoid"])
def test_quantised_gemms_fuse_as_onnxruntime_does(act: str, first: str, bits: str,
                                                  tmp_path: Path) -> None:
    """Only a float conv / Gemm fuses; a QLinearConv absorbs ReLU and clip (emitted into its
    output quantisation). Fails on the old rule, which fused the clamps after any path."""
    model = _model(first, act)
    table = load(model).layer_table()
    emitted = quantize_model(load(model), bits, out=tmp_path / "model.onnx").out
    opts = ort.SessionOptions()
    opts.graph_optimization_level = LEVELS[0]
    opts.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(str(emitted), opts, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "optimised.onnx")).graph.node]
    choices = layer_choices(table, np.array([BITS[bits]]), simple_target(), K.RUNTIME_ORT)
    assert (choices[1, 0] == K.PATH_FUSED) == (act not in ops), ops


@pytest.mark.parametrize("after", ["pool", "add"])
def test_layout_copies_see_through_a_fused_sigmoid(after: str, tmp_path: Path) -> None:
    """A fused activation that is no MAC-array epilogue (Sigmoid: `epilogue_of` -1) still
    carries its conv's NCHWc layout (`hwmodels.ort_layout`): as many reorders as onnxruntime's
    optimised graph on this AVX2 host (2: the input's and the output's). Fails on the old
    layout rules, which took the Sigmoid's result for a graph input (3)."""
    from tests.hwmodels.test_ort_layout import _modelled, _on_avx2_host, _ort_inserted

    assert _on_avx2_host()
    w = [numpy_helper.from_array(RNG.standard_normal((16, 16, 3, 3)).astype(np.float32), n)
         for n in ("w", "w2")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["a"], ["b"])]
    if after == "pool":
        nodes += [helper.make_node("MaxPool", ["b"], ["c"], kernel_shape=[2, 2], strides=[2, 2]),
                  helper.make_node("Conv", ["c", "w2"], ["y"], pads=[1, 1, 1, 1])]
    else:
        nodes += [helper.make_node("Conv", ["b", "w2"], ["c"], pads=[1, 1, 1, 1]),
                  helper.make_node("Add", ["b", "c"], ["y"])]
    side = 8 if after == "pool" else 16
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, side, side])], w)
    g = load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    oracle = sum(_ort_inserted(tmp_path, g, "fp32").values())
    assert oracle == 2
    assert sum(_modelled(g, [32, 32]).values()) == oracle


def test_the_ir_names_every_activation_function() -> None:
    """`LayerTable.activation` codes index `compiler.ir.ACTIVATIONS`: every function the
    activation op computes must be there (layer_table would fail on a missing one)."""
    from compiler.ir import ACTIVATIONS
    from compiler.ops import activation

    assert ACTIVATIONS == tuple(activation._FNS)
