"""Which of ncnn's int8 convs requantise their output, read from a layer table's order.

ncnn's int8 conv (Tencent/ncnn @a4d2ea1 `src/layer/arm/convolution_arm.cpp`
`forward_int8_arm`; the depthwise one likewise) quantises a float input, runs the int8 GEMM
into an int32 blob, then either requantises it to int8 (`int8_scale_term > 100`,
`requantize_from_int32_to_int8`, activation fused) or dequantises it to float
(`dequantize_from_int32`) and runs the activation in place. `tools/quantize/ncnn2int8.cpp`
`fuse_requantize` sets the requantising flag on a conv whose output feeds another int8 conv,
directly or through a Split all of whose outputs feed int8 convs; that conv then reads int8
and skips the quantise pass.

A layer table has no edges, so the rule is applied to its order, blob sizes standing in for
blob names: a conv's consumer is the first later layer reading as many elements as it writes,
before any concat / eltwise (which would join its branch); a split's consumers are the next
layers reading its element count. Against the flags in ncnn's benchmark `*_int8.param` files
this agrees on 191 of 197 convs (bench/fidelity/layers.csv `ncnn_int8`): two GoogLeNet 1x1
branches and ResNet-18's four projection shortcuts, whose sizes equal a sibling conv's input,
are called requantising.
"""

from __future__ import annotations

import numpy as np

from compiler.ir import KIND_CODE, LayerTable
from hwmodels.kernels import cpu_layout as K

_CONV = KIND_CODE["conv"]
_SPLIT = KIND_CODE["identity"]
_JOINS = (KIND_CODE["concat"], KIND_CODE["eltwise"])


def _consumers(table: LayerTable, i: int) -> list[int]:
    """The layers reading conv i's output: its first reader, or a split's readers."""
    size = int(table.a_out_elems[i])
    for j in range(i + 1, len(table)):
        kind = int(table.kind_code[j])
        if kind in _JOINS:
            return [j]
        if int(table.a_in_elems[j]) != size:
            continue
        if kind != _SPLIT:
            return [j]
        return _split_readers(table, j, size)
    return []


def _split_readers(table: LayerTable, j: int, size: int) -> list[int]:
    """The next layers after split j reading `size` elements (a join ends the search)."""
    want, found = int(table.a_out_elems[j]) // max(size, 1), []
    for x in range(j + 1, len(table)):
        if int(table.kind_code[x]) in _JOINS or int(table.a_in_elems[x]) == size:
            found.append(x)
        if len(found) == want or int(table.kind_code[x]) in _JOINS:
            break
    return found if len(found) == want else [-1]


def requantising(table: LayerTable) -> tuple[np.ndarray, np.ndarray]:
    """(bool [L] conv writes int8 for the next int8 conv, bool [L] conv reads int8)."""
    out = np.zeros(len(table), bool)
    into = np.zeros(len(table), bool)
    for i in np.flatnonzero(table.kind_code == _CONV):
        readers = _consumers(table, int(i))
        if readers and all(r >= 0 and table.kind_code[r] == _CONV for r in readers):
            out[i] = True
            into[readers] = True
    return out, into


def chain_rows(row: dict[str, float]) -> dict[int, dict[str, float]]:
    """Path-table rows of the chain paths, from ncnn's float-in / float-out int8 conv row
    (`hwmodels.cpu_rates._ncnn_int8`): a requantising conv writes int8 in a pass (4 B in, 1 B out:
    the DQ_OUT pass's bytes) instead of dequantising and running the activation in place
    (OUT_CAST); a conv whose producer requantised reads int8 and skips the quantise pass."""
    req = {**row, "out_cast": 0, "dq_out": 1}
    return {K.PATH_NCNN_INT8_REQ: req, K.PATH_NCNN_INT8_IN: {**row, "q_in": 0},
            K.PATH_NCNN_INT8_IN_REQ: {**req, "q_in": 0}}


def chain_paths(table: LayerTable, paths: np.ndarray) -> np.ndarray:
    """int64 [L, B]: ncnn's int8 convs (PATH_INT8) moved onto their chain path."""
    out, into = (f[:, None] for f in requantising(table))
    chain = np.select([out & into, out, into],
                      [K.PATH_NCNN_INT8_IN_REQ, K.PATH_NCNN_INT8_REQ, K.PATH_NCNN_INT8_IN],
                      K.PATH_INT8)
    return np.asarray(np.where(paths == K.PATH_INT8, chain, paths))
