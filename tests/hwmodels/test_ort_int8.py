"""onnxruntime's int8 conv chains (hwmodels.ort_int8): which QLinearConvs keep a Q node in
front and a DQ node behind, checked against the graph onnxruntime itself optimises, and the
residual-Add rule on hand-built tables."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from compiler.ir import KIND_CODE
from hwmodels import cpu, ort_int8
from hwmodels.kernels import cpu_layout as K
from hwmodels.target import load_target
from tests.hwmodels.test_cpu import conv, layer, make_table

# (Q node in front, DQ node behind) of each chain path
NODES_OF_PATH = {K.PATH_QLINEAR: (True, True), K.PATH_QLINEAR_IN: (False, True),
                 K.PATH_QLINEAR_OUT: (True, False), K.PATH_QLINEAR_CHAIN: (False, False)}


def _through_transposes(node, nodes, forward: bool):
    """The nodes next to `node` (its readers, or its input's writer), looking through the
    Transposes onnxruntime's NHWC transformer puts around QLinearConvs."""
    if forward:
        out = [n for n in nodes if node.output[0] in n.input]
    else:
        out = [n for n in nodes if node.input[0] in n.output]
    return [x for n in out for x in
            (_through_transposes(n, nodes, forward) if n.op_type == "Transpose" else [n])]


def _ort_q_dq(tmp_path, graph) -> dict[str, tuple[bool, bool]]:
    """Per QLinearConv of onnxruntime's optimised W8A8 graph (the oracle): whether a
    QuantizeLinear writes its input and whether a DequantizeLinear reads its output."""
    import onnx
    import onnxruntime as ort

    from edgesim.quantize import quantize_model

    path = quantize_model(graph, 8, calib_random=2, out=tmp_path / "m.onnx").out
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    nodes = list(onnx.load(str(tmp_path / "opt.onnx")).graph.node)
    return {n.name.rsplit("_token_", 1)[0]: (
        any(x.op_type == "QuantizeLinear" for x in _through_transposes(n, nodes, False)),
        any(x.op_type == "DequantizeLinear" for x in _through_transposes(n, nodes, True)))
        for n in nodes if n.op_type == "QLinearConv"}


@pytest.mark.ort
def test_chain_paths_match_the_q_and_dq_nodes_onnxruntime_keeps(tmp_path):
    from edgesim.api import load_graph

    g = load_graph("zoo:digits_cnn")  # conv -> relu -> conv -> relu -> maxpool -> conv -> ...
    table = g.layer_table()
    paths = cpu.layer_choices(table, np.array([[8, 8]]), load_target("rpi5"),
                              cpu.RUNTIMES["onnxruntime"])[:, 0]
    oracle = _ort_q_dq(tmp_path, g)
    assert len(oracle) == 3
    for name, q_dq in oracle.items():
        assert NODES_OF_PATH[int(paths[table.names.index(name)])] == q_dq, name
    # the first conv quantises the graph input; the int8 MaxPool keeps conv2 -> conv3 int8
    assert oracle["conv1/Conv"][0] and not oracle["conv3/Conv"][0]


def _residual(add_feeds_add: bool):
    """conv0 -> conv1 -> add(conv1, conv0) -> conv3, and optionally add -> add(conv3, add):
    a residual Add whose output also feeds the next Add (MobileNetV2's repeated blocks)."""
    add = layer("eltwise", 0, 0, 0, a_in=2 * 64, a_out=64, ops=64)
    rows = [conv(4, 4, 4, 1), conv(4, 4, 4, 1), add, conv(4, 4, 4, 1)]
    reads = [[-1, -1], [0, -1], [1, 0], [2, -1]]
    if add_feeds_add:
        rows.append(dict(add))
        reads.append([3, 2])
    t = make_table(rows)
    return dataclasses.replace(t, reads=np.array(reads, dtype=np.int64),
                               epilogue_of=np.full(len(rows), -1, dtype=np.int64))


def test_an_add_between_qlinear_convs_alone_runs_int8():
    t = _residual(add_feeds_add=False)
    paths = np.where(t.kind_code == KIND_CODE["conv"], K.PATH_QLINEAR, K.PATH_NONE)[:, None]
    got = ort_int8.chain_paths(t, paths)[:, 0]
    # QLinearAdd: conv0 writes int8 (Q in front: graph input), conv1 int8 both sides,
    # conv3 reads the QLinearAdd's int8 and writes the graph output (DQ)
    assert list(got[[0, 1, 3]]) == [K.PATH_QLINEAR_OUT, K.PATH_QLINEAR_CHAIN, K.PATH_QLINEAR_IN]


def test_an_add_feeding_another_add_keeps_its_float_edges():
    t = _residual(add_feeds_add=True)
    paths = np.where(t.kind_code == KIND_CODE["conv"], K.PATH_QLINEAR, K.PATH_NONE)[:, None]
    got = ort_int8.chain_paths(t, paths)[:, 0]
    # the first Add feeds a float Add: float; conv0 and conv1 keep their DQ nodes, conv3
    # quantises the float Add's output and dequantises for the second Add
    assert list(got[[0, 1, 3]]) == [K.PATH_QLINEAR, K.PATH_QLINEAR_IN, K.PATH_QLINEAR]


def test_chain_rows_drop_the_q_and_dq_passes_and_their_nodes():
    rows = ort_int8.chain_rows({"q_in": 1, "dq_out": 1, "nodes": 3})
    assert rows[K.PATH_QLINEAR_CHAIN] == {"q_in": 0, "dq_out": 0, "nodes": 1}
    assert rows[K.PATH_QLINEAR_IN] == {"q_in": 0, "dq_out": 1, "nodes": 2}
    assert rows[K.PATH_QLINEAR_OUT] == {"q_in": 1, "dq_out": 0, "nodes": 2}


def test_a_chained_conv_costs_less_than_the_same_conv_with_q_and_dq():
    # conv1 of the QLinearAdd block runs int8 in and out; without edges (reads=None) the
    # same layer pays a Q pass on its input and a DQ pass on its output (onnxruntime profile)
    t = _residual(add_feeds_add=False)
    chained = cpu.evaluate(t, np.array([[8, 8]]), load_target("rpi5"), threads=1)
    alone = cpu.evaluate(dataclasses.replace(t, reads=None), np.array([[8, 8]]),
                         load_target("rpi5"), threads=1)
    assert chained.cycles[1, 0] < alone.cycles[1, 0]
