"""Rewrite chosen float MatMuls of an ONNX model into com.microsoft::MatMulNBits, in place of
a full emission: the rest of the graph (a KV-cache decoder's past / present interface, its
attention ops, dynamic dims) is kept as the exporter wrote it.

A candidate linear is a default-domain `MatMul` whose second input is a 2-D float32
initializer [K, N]; it is named by its node name (its first output when unnamed). Its weight
is quantised per block along K and packed by `compiler.packing.pack_matmulnbits` (the single
source of truth for the layout), symmetric blocks without a zero-point input.
"""

from __future__ import annotations

from collections.abc import Mapping

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
    used = {i for n in out.graph.node for i in n.input}
    keep = [t for t in out.graph.initializer if t.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(keep)
    if not any(o.domain == MS for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid(MS, 1))
    return out


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
