"""onnxruntime's int8 conv chains: which QLinearConvs keep their tensors in int8, and how
many DequantizeLinear copies one writing float runs (`dq_copies`).

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

from compiler.ir import KIND_CODE, LayerTable
from hwmodels.cost import memoised
from hwmodels.kernels import cpu_layout as K

# ops onnxruntime runs on uint8 between QLinear ops (QLinearAdd, QLinearGlobalAveragePool /
# QLinearAveragePool, DropQDQNodes for MaxPool); reshapes are looked through (`_readers`)
PASSTHROUGH_KINDS = tuple(KIND_CODE[k] for k in ("pool", "eltwise"))
_RESHAPE = KIND_CODE["reshape"]


def _source(table: LayerTable, i: int) -> int:
    """The GEMM whose result layer i carries: itself, or the GEMM a fused epilogue
    (Clip / Relu run in its output loop) belongs to."""
    of = table.epilogue_of
    return int(of[i]) if of is not None and of[i] >= 0 else i


def _readers(table: LayerTable) -> list[list[int]]:
    """The layers reading each row's result (a fused epilogue's readers count for its GEMM;
    the epilogue itself runs inside the GEMM and reads nothing), looking through reshapes:
    QDQPropagation moves a Q node up across a Reshape, so a reshape never holds a chain
    apart."""
    direct: list[list[int]] = [[] for _ in range(len(table))]
    epilogue = np.full(len(table), -1) if table.epilogue_of is None else table.epilogue_of
    reads = np.full((len(table), 2), -1) if table.reads is None else table.reads
    for j in range(len(table)):
        if epilogue[j] < 0:
            for p in {int(p) for p in reads[j] if p >= 0}:
                direct[_source(table, p)].append(j)
    out: list[list[int]] = [[] for _ in range(len(table))]
    for i in reversed(range(len(table))):  # readers come later: already expanded
        for j in direct[i]:
            out[i].extend(out[j] if table.kind_code[j] == _RESHAPE else [j])
    return out


def _edges(table: LayerTable) -> tuple[list[list[int]], list[list[int]]]:
    """`_readers` and every layer's `_sources`, once per table (`dq_copies` and each bit
    choice's `chain_paths` read them; read only)."""
    return memoised(table.memo, "ort_int8.edges", lambda: (
        _readers(table), [_sources(table, j) for j in range(len(table))]))


def _sources(table: LayerTable, j: int) -> list[int]:
    """The layers whose results layer j reads, looking back through reshapes."""
    reads = np.full((len(table), 2), -1) if table.reads is None else table.reads
    out = []
    for p in (int(p) for p in reads[j] if p >= 0):
        s = _source(table, p)
        out.extend(_sources(table, s) if table.kind_code[s] == _RESHAPE else [s])
    return out


def int8_passthrough(table: LayerTable, writes: np.ndarray, reads_q: np.ndarray,
                     readers: list[list[int]], sources: list[list[int]]) -> np.ndarray:
    """bool [L]: pool / Add layers that run on uint8 (QLinearAdd, QLinearGlobalAveragePool,
    a MaxPool with DQ -> MaxPool -> Q dropped): every input from a QLinear op (`writes`) and
    every reader one that quantises its input (`reads_q`). Only then does the emitted graph
    quantise the op's output alone (a residual Add feeding the next Add keeps a float edge,
    so its DQ -> Add -> Q does not fuse)."""
    out = np.zeros(len(table), bool)
    for j in np.flatnonzero(np.isin(table.kind_code, PASSTHROUGH_KINDS)):
        srcs = sources[j]
        out[j] = (bool(srcs) and all(writes[s] for s in srcs) and bool(readers[j])
                  and all(reads_q[r] for r in readers[j]))
    return out


def int8_edges(table: LayerTable, qlinear: np.ndarray, reads_q: np.ndarray,
               readers: list[list[int]], sources: list[list[int]]
               ) -> tuple[np.ndarray, np.ndarray]:
    """(bool [L] reads int8: no Q node, bool [L] writes int8 only: no DQ node) of the
    QLinear layers of one bit choice. `qlinear`: bool [L], the layers on the QLinearConv /
    QLinearMatMul path; `reads_q`: the other layers that quantise their input
    (MatMulIntegerToFloat's); `readers` / `sources`: `_readers(table)` and each layer's
    `_sources` (the same for every bit choice)."""
    reads_q = reads_q | qlinear
    int8 = qlinear | int8_passthrough(table, qlinear, reads_q, readers, sources)
    reads_int8 = np.array([bool(s) and all(int8[x] for x in s) for s in sources], bool)
    writes = np.array([bool(r) and all(reads_q[x] or int8[x] for x in r) for r in readers],
                      dtype=bool)
    return qlinear & reads_int8, qlinear & writes


def dq_copies(table: LayerTable) -> np.ndarray:
    """int64 [L]: the DequantizeLinear nodes onnxruntime runs on a layer's result where it is
    a QLinearConv writing float. edgesim emits one Q -> DQ per tensor; onnxruntime's
    EnsureUniqueDQForNodeUnit (qdq_transformer/ensure_unique_dq_for_node_unit.cc) gives every
    consumer of a DQ its own copy, and each copy is a pass over the tensor: one per reader that
    takes the float (not a QLinearConv, a MatMulIntegerToFloat quantising its input, or a pool /
    Add run on uint8), at least one (a graph output). Readers judged as at W8A8 (every
    weighted conv QLinear, every linear quantising its input), the same for every bit choice;
    1 where the table does not carry its edges. Checked against onnxruntime's optimised graph
    (tests/hwmodels/test_dq_copies.py; PicoDet layout_cdla W8A8: 194 DQ nodes, as counted)."""
    n = len(table)
    if table.reads is None:
        return np.ones(n, np.int64)
    readers, sources = _edges(table)
    conv = (table.kind_code == KIND_CODE["conv"]) & (table.w_elems > 0)
    reads_q = conv | (table.kind_code == KIND_CODE["linear"])
    int8 = conv | int8_passthrough(table, conv, reads_q, readers, sources)
    copies = [sum(1 for r in set(readers[i]) if not (reads_q[r] or int8[r])) for i in range(n)]
    return np.maximum(np.asarray(copies, np.int64), 1)


def chain_paths(table: LayerTable, paths: np.ndarray) -> np.ndarray:
    """int64 [L, B]: QLinearConvs (PATH_QLINEAR) moved onto their chain path."""
    out = np.asarray(paths).copy()
    if table.reads is None:
        return out
    readers, sources = _edges(table)
    for b in range(out.shape[1]):
        qlinear = out[:, b] == K.PATH_QLINEAR
        into, write = int8_edges(table, qlinear, out[:, b] == K.PATH_MATMUL_INT_FLOAT,
                                 readers, sources)
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
