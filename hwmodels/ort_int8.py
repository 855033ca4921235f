"""onnxruntime's int8 conv chains: which QLinearConvs keep their tensors in int8.

edgesim emits W8A8 convs as QDQ: Q -> DQ around every conv input and output. onnxruntime's
QDQ transformers (core/optimizer/qdq_transformer: QDQPropagation, DoubleQDQPairsRemover and
the QDQ selector-action fusions) turn each DQ -> Conv -> Q into a QLinearConv and drop a
DQ -> Q pair between two of them (same scale and zero point: edgesim quantises a tensor once),
and a Clip / Relu between a conv and its Q folds into the quantised range (ClipQuantFusion).
So a QLinearConv whose input another QLinearConv wrote reads int8 (no Q node), and one whose
readers are all QLinearConvs writes int8 (no DQ node); a reader that is not one (a float Add,
a graph output) keeps the DQ node. Checked against the graph onnxruntime optimises
(tests/hwmodels/test_ort_int8.py: MobileNetV2 W8A8, 52 QLinearConvs, Q / DQ nodes only around
its residual Adds, the input and the output).
"""

from __future__ import annotations

import numpy as np

from compiler.ir import LayerTable
from hwmodels.kernels import cpu_layout as K


def _source(table: LayerTable, i: int) -> int:
    """The GEMM whose result layer i carries: itself, or the GEMM a fused epilogue
    (Clip / Relu run in its output loop) belongs to."""
    of = table.epilogue_of
    return int(of[i]) if of is not None and of[i] >= 0 else i


def int8_edges(table: LayerTable, qlinear: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bool [L] reads int8 from a QLinear producer, bool [L] writes int8 only) for one bit
    choice; `qlinear`: bool [L], the layers on the QLinearConv path."""
    reads_int8, float_reader = np.zeros(len(table), bool), np.zeros(len(table), bool)
    has_reader = np.zeros(len(table), bool)
    epilogue = np.full(len(table), -1) if table.epilogue_of is None else table.epilogue_of
    for j in range(len(table)):
        if epilogue[j] >= 0:  # runs inside its GEMM: not a reader of it
            continue
        for p in table.reads[j] if table.reads is not None else ():
            if p < 0 or not qlinear[_source(table, int(p))]:
                continue
            g = _source(table, int(p))
            has_reader[g] = True
            if qlinear[j]:
                reads_int8[j] = True
            else:
                float_reader[g] = True
    return reads_int8 & qlinear, qlinear & has_reader & ~float_reader


def chain_paths(table: LayerTable, paths: np.ndarray) -> np.ndarray:
    """int64 [L, B]: QLinearConvs (PATH_QLINEAR) moved onto their chain path."""
    out = np.asarray(paths).copy()
    if table.reads is None:
        return out
    for b in range(out.shape[1]):
        qlinear = out[:, b] == K.PATH_QLINEAR
        into, write = int8_edges(table, qlinear)
        out[:, b] = np.select([into & write, write, into],
                              [K.PATH_QLINEAR_CHAIN, K.PATH_QLINEAR_OUT, K.PATH_QLINEAR_IN],
                              out[:, b])
    return out


def chain_rows(row: dict[str, float]) -> dict[int, dict[str, float]]:
    """Path-table rows of the chain paths, from the QLinearConv row (Q, conv, DQ nodes)."""
    nodes = row.get("nodes", 3.0)
    return {K.PATH_QLINEAR_IN: {**row, "q_in": 0, "nodes": nodes - 1},
            K.PATH_QLINEAR_OUT: {**row, "dq_out": 0, "nodes": nodes - 1},
            K.PATH_QLINEAR_CHAIN: {**row, "q_in": 0, "dq_out": 0, "nodes": nodes - 2}}
