"""Ops onnxruntime has no kernel for run as the nodes of their ONNX function body, and each of
those nodes is priced.

Oracles: onnxruntime's own optimised graph of the model edgesim emits (at
ORT_ENABLE_EXTENDED, the rewrites it applies on every CPU; ORT_ENABLE_ALL adds x86's NCHWc
layouts), the ONNX definition of HardSwish-14 (HardSigmoid(alpha=1/6, beta=1/2), then Mul by
x: a pass reading and writing n elements, then one reading 2n and writing n), and hand
arithmetic on `test_cpu`'s one-core target (ops / 4 fp32 lanes, 1 us per node, memory that
never limits).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from compiler.frontend import load
from edgesim.quantize import quantize_model
from hwmodels import cpu
from hwmodels.kernels.cpu_layout import EXP_LANE_OPS_ORT
from tests.hwmodels.test_cpu import OVH, simple_target

SHAPE = (1, 8, 16, 16)
SIZE = int(np.prod(SHAPE))


def _model(op: str, opset: int = 17) -> onnx.ModelProto:
    node = helper.make_node(op, ["x"], ["y"], name="act")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                        SHAPE)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _ort_nodes(model: onnx.ModelProto, tmp: Path) -> list[str]:
    """Op types of the nodes onnxruntime runs for edgesim's fp32 emission of `model`."""
    emitted = quantize_model(load(model), "fp32", out=tmp / "model.onnx").out
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(tmp / "optimised.onnx")
    ort.InferenceSession(str(emitted), opts, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(str(tmp / "optimised.onnx")).graph.node]


# Swish (opset 24) is emitted as Sigmoid + Mul, which onnxruntime fuses into one QuickGelu
OPS = [("HardSwish", 17), ("HardSwish", 14), ("HardSigmoid", 17), ("Sigmoid", 17),
       ("Relu", 17), ("Swish", 24)]


@pytest.mark.parametrize("op, opset", OPS)
def test_the_table_counts_the_nodes_onnxruntime_runs(op: str, opset: int,
                                                     tmp_path: Path) -> None:
    """Fails on the old table, which had no function_nodes column."""
    model = _model(op, opset)
    table = load(model).layer_table()
    assert table.function_nodes is not None
    assert int(table.function_nodes.sum()) == len(_ort_nodes(model, tmp_path))


def test_hardswish_runs_as_hardsigmoid_then_mul(tmp_path: Path) -> None:
    assert _ort_nodes(_model("HardSwish"), tmp_path) == ["HardSigmoid", "Mul"]


@pytest.mark.parametrize("op, exps", [("HardSwish", 0), ("HardSigmoid", 0), ("Sigmoid", 1)])
def test_onnxruntime_pays_a_node_for_each_node_it_runs(op: str, exps: int,
                                                       tmp_path: Path) -> None:
    """Cycles = lane ops / 4 + 1 us per node onnxruntime runs. Fails on the old kernel, which
    charged HardSwish one node."""
    model = _model(op)
    table = load(model).layer_table()
    cyc = cpu.evaluate(table, np.array([(32, 32)]), simple_target()).cycles
    nodes = len(_ort_nodes(model, tmp_path))
    ops = int(table.ops.sum()) + exps * SIZE * EXP_LANE_OPS_ORT
    assert cyc.sum() == pytest.approx(ops / 4 + nodes * OVH)


@pytest.mark.parametrize("runtime, ratio", [("onnxruntime", 5 / 2), ("ncnn", 1.0)])
def test_hardswish_moves_the_bytes_of_its_passes(runtime: str, ratio: float) -> None:
    """On-chip energy is bytes x pJ/byte: onnxruntime's HardSigmoid (n in, n out) then Mul
    (2n in, n out) move 5n elements to HardSigmoid's 2n; ncnn's HardSwish layer is one pass.
    Fails on the old kernel (one pass under onnxruntime: ratio 1)."""
    def onchip(op: str) -> float:
        table = load(_model(op)).layer_table()
        return float(cpu.evaluate(table, np.array([(32, 32)]), simple_target(),
                                  runtime=runtime).energy_pj_onchip.sum())

    assert onchip("HardSwish") / onchip("HardSigmoid") == pytest.approx(ratio)
