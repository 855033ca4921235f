"""W8A8 linear layers on onnxruntime run as Q -> MatMulIntegerToFloat (compiler.formats
`int8_linear`, checked against onnxruntime's optimised graph by edgesim.kernel_check): the
QGEMM writes float, so there is no DequantizeLinear node and no DQ pass, unlike QLinearConv."""

from __future__ import annotations

import dataclasses

import numpy as np

from compiler.formats import FORMAT_CODE
from hwmodels import cpu
from hwmodels.kernels import cpu as K
from tests.hwmodels.test_cpu import OVH, linear, make_table, simple_target


def total_cycles(fmt: str) -> float:
    table = dataclasses.replace(make_table([linear(4, 64, 64)]),
                                fmt_code=np.array([FORMAT_CODE[fmt]]))
    return float(cpu.evaluate(table, np.array([(8, 8)]), simple_target()).cycles.sum())


def test_int8_linear_rows_run_as_matmul_integer_to_float():
    assert cpu.ROW_PATH["int8_linear"] == K.PATH_MATMUL_INT_FLOAT
    assert cpu.ROW_PATH["int8_act_matmul"] == K.PATH_MATMUL_INT_FLOAT
    row = cpu.path_table(simple_target(), K.RUNTIME_ORT)[K.PATH_MATMUL_INT_FLOAT]
    # two nodes (Q, MatMulIntegerToFloat), float output, no DQ node
    assert (row[K.A_NODES], row[K.A_EB_O], row[K.A_DQ_OUT], row[K.A_Q_IN]) == (2, 4, 0, 1)


def test_matmul_integer_to_float_saves_the_dq_node_and_its_pass():
    # same QGEMM; QLinearMatMul's path adds a DequantizeLinear node (1 us = OVH cycles) and
    # its pass over the 4 x 64 output: 2 lane ops per element on 4 fp32 lanes x 1 pipe
    # (memory unlimited) = 256 * 2 / 4 = 128 cycles
    assert total_cycles("qlinear_linear") - total_cycles("int8_linear") == OVH + 128
