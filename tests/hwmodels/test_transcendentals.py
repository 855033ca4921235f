"""Transcendental work is priced where a kernel evaluates an exp, and only there.

Oracles: which ONNX activations evaluate an exp / tanh / erf is their definition (HardSigmoid
and HardSwish are clamps of an affine map: ONNX operator spec; ncnn's `hardswish_arm.cpp` and
onnxruntime's HardSigmoid functor compute them with a multiply-add, a max and a min, and for
HardSwish a multiply); the cycle counts are hand arithmetic on `test_cpu`'s one-core target
(ops / 4 fp32 lanes, onnxruntime's EXP_LANE_OPS_ORT lane ops per exp, 1 us per node; HardSwish
runs as two onnxruntime nodes: tests/hwmodels/test_function_nodes.py) and on `test_mcu`'s
MCU (exp_cycles per evaluation).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from compiler.frontend import load
from hwmodels import cpu, mcu
from hwmodels.kernels.cpu_layout import EXP_LANE_OPS_ORT
from tests.hwmodels.test_cpu import OVH, simple_target
from tests.hwmodels.test_mcu import simple_mcu

SHAPE = (1, 8, 16, 16)
SIZE = int(np.prod(SHAPE))


def _model(op: str, **attrs: object) -> onnx.ModelProto:
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                        SHAPE)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


# per element: exp / tanh / erf evaluations by the op's definition
DEFINED = {"HardSwish": 0, "HardSigmoid": 0, "Relu": 0, "Sigmoid": 1, "Tanh": 1, "Exp": 1,
           "Log": 1, "Elu": 1, "Softplus": 2, "Softmax": 1}


@pytest.mark.parametrize("op", list(DEFINED))
def test_the_layer_table_counts_what_the_definition_evaluates(op: str) -> None:
    table = load(_model(op)).layer_table()
    assert table.transcendentals is not None
    assert int(table.transcendentals.sum()) == DEFINED[op] * SIZE


@pytest.mark.parametrize("op, exps, nodes", [("HardSwish", 0, 2), ("HardSigmoid", 0, 1),
                                             ("Sigmoid", 1, 1)])
def test_an_activation_pays_an_exp_only_where_it_evaluates_one(op: str, exps: int,
                                                               nodes: int) -> None:
    """Fails on the old kernel, which charged an exp to every activation of >= 3 ops per
    element (HardSwish, HardSigmoid included)."""
    table = load(_model(op)).layer_table()
    ops = int(table.ops.sum())
    cyc = cpu.evaluate(table, np.array([(32, 32)]), simple_target()).cycles
    assert cyc.sum() == pytest.approx((ops + exps * SIZE * EXP_LANE_OPS_ORT) / 4 + nodes * OVH)


def test_a_table_without_the_column_keeps_one_exp_per_softmax_element() -> None:
    table = load(_model("Softmax", axis=-1)).layer_table()
    bare = cpu.evaluate(dataclasses.replace(table, transcendentals=None),
                        np.array([(32, 32)]), simple_target()).cycles
    full = cpu.evaluate(table, np.array([(32, 32)]), simple_target()).cycles
    assert bare.sum() == full.sum() == pytest.approx(
        (int(table.ops.sum()) + SIZE * EXP_LANE_OPS_ORT) / 4 + OVH)


@pytest.mark.parametrize("op, exps", [("Sigmoid", 1), ("Tanh", 1), ("Softplus", 2),
                                      ("HardSwish", 0)])
def test_the_mcu_pays_exp_cycles_for_every_transcendental(op: str, exps: int) -> None:
    """simple_mcu at fp32: ops x 2 cycles + exps x 30 cycles per element + (in + out) x 4 B /
    4 B per cycle + 1000 dispatch. Fails on the old kernel, which charged exps to softmax
    only."""
    table = load(_model(op)).layer_table()
    cyc = mcu.evaluate(table, np.array([(32, 32)]), simple_mcu()).cycles
    want = int(table.ops.sum()) * 2.0 + exps * SIZE * 30 + 2 * SIZE * 4 / 4 + 1000
    assert cyc.sum() == pytest.approx(want)
