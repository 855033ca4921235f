"""Read quantized ONNX: the format policy read backwards.

`dequantize(model)` rewrites a quantized model into its float equivalent at the ONNX level and
records, per consuming node, what was quantized (`Mark`); after lowering,
`compiler.frontend.quantized_annotate.annotate(g, marks)` gives each IR layer its `Quant` with
the row of `compiler.formats` it runs as. The reader and the values it reads are in
`quantized_reader`, the contrib ops' rewrites in `quantized_contrib`. Recognised:

- `DequantizeLinear` of a constant (int8/uint8/int16/uint16/int4/uint4/int2/uint2, per
  tensor, per channel or blocked): the weight, dequantised; its bits and granularity;
- `QuantizeLinear -> DequantizeLinear` on activations: the float tensor; 8/16-bit activations
  of the consumer (static, calibrated);
- `Cast(INT4/INT8 constant) * scale` (edgesim's weight-only conv): the weight, dequantised;
- `com.microsoft::MatMulNBits` (2/4/8 bits, any block, with or without zero points, any
  accuracy_level): `MatMul` (+ `Add` bias) on the dequantised weight; accuracy_level 4 means
  int8 activations per block; float zero points or a g_idx input mark the layer
  `nbits_float_zp` (onnxruntime's non-prepacked path; g_idx is read as the identity order);
- `com.microsoft::MatMulIntegerToFloat` on `QuantizeLinear` codes: `MatMul` on the
  dequantised weight (+ bias), activations 8-bit;
- `com.microsoft::GatherBlockQuantized`: `Gather` on the dequantised table;
- `DynamicQuantizeLinear -> MatMulInteger / ConvInteger -> Cast -> Mul(sx * sw)`
  (onnxruntime's quantize_dynamic): `MatMul` / `Conv` on the dequantised weight, W8A8 with
  activations quantised at run time; older quantize_dynamic files, with ConvInteger's bias
  quantised at run time (Div / Floor / Cast / Reshape / Add) and
  `com.microsoft::DynamicQuantizeLSTM`, as `compiler.frontend.quantized_dynamic` reads them.

Only what the simulation needs is kept: bits, granularity, block and format; the float
weights are the dequantised ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType

import numpy as np
import onnx
from onnx import helper

from compiler.frontend.quantized_contrib import (
    as_gemm,
    gather_block,
    integer_to_float,
    lstm,
    nbits,
)
from compiler.frontend.quantized_dynamic import integer, node_key
from compiler.frontend.quantized_reader import (
    BITS,
    Mark,
    Reader,
    act_source,
    cast_mul_value,
    dq_value,
)

QUANT_OPS = frozenset({"DequantizeLinear", "QuantizeLinear", "MatMulNBits",
                       "MatMulIntegerToFloat", "GatherBlockQuantized", "DynamicQuantizeLinear",
                       "MatMulInteger", "ConvInteger", "DynamicQuantizeLSTM"})


def is_quantized(model: onnx.ModelProto) -> bool:
    """Whether the model holds any op this reader rewrites."""
    return any(n.op_type in QUANT_OPS for n in model.graph.node)


def _fold_weight(r: Reader, node: onnx.NodeProto, value: tuple[np.ndarray, Mark] | None) -> bool:
    """Record a dequantised constant (float array, its mark) as `node`'s output; False if
    `value` is None (the node does not dequantise a constant)."""
    if value is None:
        return False
    r.add(node.output[0], value[0])
    r.weights[node.output[0]] = value[1]
    return True


def _rewrite(r: Reader, node: onnx.NodeProto, nodes: list[onnx.NodeProto]) -> None:
    """Append `node`'s float equivalent (or nothing, for a node folded into a tensor)."""
    op = node.op_type
    if op == "DynamicQuantizeLinear" or node_key(node) in r.dropped:
        return
    if op in ("MatMulInteger", "ConvInteger"):
        gran = integer(r, node, nodes)
        if gran is not None:
            r.weights[node.name] = Mark(8, 8, gran, None, True, op)
            return
    if op == "DequantizeLinear":
        if _fold_weight(r, node, dq_value(r, node)):
            return
        src = act_source(r, node.output[0])
        if src is not None:  # Q -> DQ on an activation: the float tensor itself
            r.rename[node.output[0]] = src[0]
            r.acts[node.output[0]] = src[1]
            return
    if op == "Mul" and _fold_weight(r, node, cast_mul_value(r, node)):
        return
    if op == "Cast" and node.input[0] in r.inits and \
            r.inits[node.input[0]].data_type in BITS:  # codes of a Cast * scale weight
        r.add(node.output[0], r.constant(node.input[0]).astype(np.float32))
        return
    if op == "QuantizeLinear":
        return  # read through by its DequantizeLinear / integer consumers
    if op == "MatMulNBits":
        return nbits(r, node, nodes)
    if op == "MatMulIntegerToFloat" and integer_to_float(r, node, nodes):
        return
    if op == "GatherBlockQuantized" and gather_block(r, node, nodes):
        return
    if op == "DynamicQuantizeLSTM":
        return lstm(r, node, nodes)
    nodes.append(node)


def dequantize(model: onnx.ModelProto) -> tuple[onnx.ModelProto, Mapping[str, Mark]]:
    """The float model of a quantized one, and what each consuming node read quantized.

    Returns:
        The rewritten model (a copy) and marks keyed by consuming ONNX node name.
    """
    r = Reader(model)
    nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        _rewrite(r, node, nodes)
    nodes = [n for n in nodes if node_key(n) not in r.dropped]
    marks = _consumer_marks(model, r)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    for node in nodes:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.input[:] = [r.rename.get(t, t) for t in node.input]
        out.graph.node.append(copy)
    out.graph.initializer.extend(r.new_inits)
    _keep_outputs(out, r)
    as_gemm(out, {n.name for n in nodes if n.op_type == "MatMul"} & set(r.weights))
    return out, MappingProxyType(marks)


def _keep_outputs(model: onnx.ModelProto, r: Reader) -> None:
    """Graph outputs that were DequantizeLinear outputs become Identity of the float tensor."""
    for o in model.graph.output:
        if o.name in r.rename:
            model.graph.node.append(helper.make_node("Identity", [r.rename[o.name]], [o.name],
                                                     name=f"{o.name}.identity"))


def _consumer_marks(model: onnx.ModelProto, r: Reader) -> dict[str, Mark]:
    """Marks keyed by the node that reads the quantized weight / activations."""
    marks: dict[str, Mark] = {k: v for k, v in r.weights.items() if k not in r.inits and
                              not any(k in n.output for n in model.graph.node)}
    for node in model.graph.node:
        if node.op_type in QUANT_OPS:
            continue
        w = next((r.weights[t] for t in node.input if t in r.weights), None)
        a = max((r.acts[t] for t in node.input if t in r.acts), default=None)
        shared = any(_shared_int8(r, t) for t in node.input if t in r.acts)
        if w is not None and w.source == "Cast*scale":
            a = None  # a Cast * scale weight is no DequantizeLinear: no QDQ unit, fp32 kernel
        users = r.users.get(node.output[0], []) if node.output else []
        requant = bool(users) and all(u.op_type == "QuantizeLinear" for u in users)
        if w is not None or a is not None:
            marks[node.name] = replace(w or Mark(None, None, "per_tensor"), a_bits=a,
                                       requant=requant and a is not None, shared_int8=shared)
    return marks


def _shared_int8(r: Reader, tensor: str) -> bool:
    """Whether activation DequantizeLinear `tensor` has int8 codes and its QuantizeLinear more
    than one reader: the condition under which the GEMM reading it runs fp32 on x86
    onnxruntime and int8 on Arm (`quantized_annotate.SHARED_INT8_FUSES` applies the target's
    rule). onnxruntime gives each reader its own DequantizeLinear (EnsureUniqueDQForNodeUnit);
    on x86 int8 activations reach QLinearConv / QLinearMatMul only through
    QDQS8ToU8Transformer, which converts a QuantizeLinear with exactly one consumer
    (onnxruntime 1.32, qdq_s8_to_u8.cc): quantize_static's q / k / v MatMuls on one normed
    input and its residual blocks' first convs (the input also feeds the Add). uint8
    activations fuse however often they are read (tests/edgesim/test_read_quantized_shared.py
    checks both)."""
    quant = r.made.get(r.made[tensor].input[0])
    if quant is None or len(quant.input) < 3 or quant.input[2] not in r.inits or \
            r.inits[quant.input[2]].data_type != onnx.TensorProto.INT8:
        return False
    readers = sum(len(r.users.get(u.output[0], ())) if u.op_type == "DequantizeLinear" else 1
                  for u in r.users.get(quant.output[0], ()))
    return readers > 1
