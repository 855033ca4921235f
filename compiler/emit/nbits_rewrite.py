"""Rewrite chosen float MatMuls of an ONNX model into com.microsoft::MatMulNBits, in place of
a full emission: the rest of the graph (a KV-cache decoder's past / present interface, its
attention ops, dynamic dims) is kept as the exporter wrote it.

A candidate linear is a default-domain `MatMul` whose second input is a 2-D float32
initializer [K, N]; it is named by its node name (its first output when unnamed). Its weight
is quantised per block along K and packed by `compiler.packing.pack_matmulnbits` (the single
source of truth for the layout), symmetric blocks without a zero-point input.

The token embedding -- a default-domain `Gather` (axis 0) of a 2-D float32 initializer [V, D]
-- can likewise become `com.microsoft::GatherBlockQuantized` (`rewrite_embedding`): the table
packed as MatMulNBits packs a [K = D, N = V] weight, its B [V, k_blocks, blob] reshaped to
[V, k_blocks * blob] as the uint8 data (quantize_axis 1, blocks along D), the scales [V,
k_blocks] and packed zero points as they are (onnxruntime's GatherBlockQuantized reads that
layout for 2 / 4 / 8 bits), and a Slice back to D when D is not a whole number of blocks.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from compiler.errors import ModelError
from compiler.packing import pack_matmulnbits

MS = "com.microsoft"


def _key(node: onnx.NodeProto) -> str:
    return node.name or node.output[0]


def float_linears(model: onnx.ModelProto) -> dict[str, tuple[int, int]]:
    """Name -> (K, N) of every MatMul by a 2-D float32 initializer, in graph order."""
    inits = {t.name: t for t in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        w = inits.get(node.input[1]) if node.op_type == "MatMul" and not node.domain else None
        if w is not None and len(w.dims) == 2 and w.data_type == onnx.TensorProto.FLOAT:
            out[_key(node)] = (int(w.dims[0]), int(w.dims[1]))
    return out


def rewrite_matmuls(model: onnx.ModelProto, plan: Mapping[str, tuple[int, int, bool]],
                    accuracy_level: int = 4) -> onnx.ModelProto:
    """A copy of `model` with each linear of `plan` (name -> (bits, block, symmetric)) as
    MatMulNBits; initializers no node reads any more are dropped.

    Raises:
        ModelError: `plan` names a node that is not a float linear of the model.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    known, inits = float_linears(out), {t.name: t for t in out.graph.initializer}
    for node in out.graph.node:
        if _key(node) in plan:
            w = numpy_helper.to_array(inits[node.input[1]])
            _to_nbits(out, node, w, *plan[_key(node)], accuracy_level)
    missing = [n for n in plan if n not in known]
    if missing:
        raise ModelError(missing[0], "is not a float MatMul linear of the model")
    _drop_unused(out)
    return out


def embedding_gathers(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Every default-domain Gather (axis 0) of a 2-D float32 initializer, in graph order."""
    inits = {t.name: t for t in model.graph.initializer}
    out = []
    for node in model.graph.node:
        t = inits.get(node.input[0]) if node.op_type == "Gather" and not node.domain else None
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if t is not None and len(t.dims) == 2 and t.data_type == onnx.TensorProto.FLOAT \
                and axis == 0:
            out.append(node)
    return out


def rewrite_embedding(model: onnx.ModelProto, table: str, bits: int, block: int,
                      symmetric: bool) -> onnx.ModelProto:
    """A copy of `model` whose Gathers of the float initializer `table` [V, D] are
    GatherBlockQuantized over it packed in (bits, block, symmetric) (module docstring).

    Raises:
        ModelError: no Gather reads `table` as an embedding.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = [n for n in embedding_gathers(out) if n.input[0] == table]
    if not nodes:
        raise ModelError(table, "is not a float table a Gather reads on axis 0")
    w = numpy_helper.to_array(next(t for t in out.graph.initializer if t.name == table))
    blob = pack_matmulnbits(w.T, bits, block, symmetric=symmetric)
    vocab, dim = w.shape
    consts = [(f"{table}.qdata", blob.b.reshape(vocab, -1)), (f"{table}.scales", blob.scales)]
    if blob.zero_points is not None:
        consts.append((f"{table}.zero_points", blob.zero_points))
    out.graph.initializer.extend(numpy_helper.from_array(v, n) for n, v in consts)
    for node in nodes:
        _to_gbq(out, node, [n for n, _ in consts], bits, block, dim)
    _drop_unused(out)
    return out


def _to_gbq(model: onnx.ModelProto, node: onnx.NodeProto, consts: list[str], bits: int,
            block: int, dim: int) -> None:
    """Replace Gather `node` in place (its output name kept)."""
    padded = -(-dim // block) * block != dim
    y = f"{node.output[0]}.padded" if padded else node.output[0]
    gbq = helper.make_node("GatherBlockQuantized", [consts[0], node.input[1], *consts[1:]], [y],
                           node.name, None, MS, None, gather_axis=0, quantize_axis=1,
                           block_size=block, bits=bits)
    if not padded:
        node.CopyFrom(gbq)
        return
    bounds = [(f"{y}.{k}", [v]) for k, v in (("starts", 0), ("ends", dim), ("axes", -1))]
    model.graph.initializer.extend(numpy_helper.from_array(np.array(v, np.int64), n)
                                   for n, v in bounds)
    cut = helper.make_node("Slice", [y, *(n for n, _ in bounds)], list(node.output),
                           f"{node.name}/Slice")
    index = list(model.graph.node).index(node)
    node.CopyFrom(gbq)
    model.graph.node.insert(index + 1, cut)


def _drop_unused(model: onnx.ModelProto) -> None:
    """Drop initializers no node reads; declare the com.microsoft opset."""
    used = {i for n in model.graph.node for i in n.input}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    if not any(o.domain == MS for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS, 1))


def _to_nbits(model: onnx.ModelProto, node: onnx.NodeProto, w: object, bits: int, block: int,
              symmetric: bool, accuracy_level: int) -> None:
    blob = pack_matmulnbits(w, bits, block, symmetric=symmetric)  # type: ignore[arg-type]
    key = _key(node)
    consts = [(f"{key}.B", blob.b), (f"{key}.scales", blob.scales)]
    if blob.zero_points is not None:
        consts.append((f"{key}.zero_points", blob.zero_points))
    model.graph.initializer.extend(numpy_helper.from_array(v, n) for n, v in consts)
    attrs: dict[str, int] = {"accuracy_level": accuracy_level, **blob.attrs()}
    node.CopyFrom(helper.make_node("MatMulNBits", [node.input[0], *(n for n, _ in consts)],
                                   list(node.output), node.name, None, MS, None, **attrs))
