"""Read quantized ONNX: the format policy read backwards.

`dequantize(model)` rewrites a quantized model into its float equivalent at the ONNX level and
records, per consuming node, what was quantized (`Mark`); after lowering, `annotate(g, marks)`
gives each IR layer its `Quant` with the row of `compiler.formats` it runs as. Recognised:

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
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compiler.errors import ModelError
from compiler.formats import Policy, resolve
from compiler.frontend.quantized_dynamic import dynamic_lstm, integer, node_key
from compiler.frontend.static_shapes import skeleton
from compiler.ir import Graph, Layer, Quant

_BITS: dict[int, int] = {TensorProto.INT8: 8, TensorProto.UINT8: 8, TensorProto.INT16: 16,
                         TensorProto.UINT16: 16, TensorProto.INT4: 4, TensorProto.UINT4: 4}
for _name, _b in (("INT2", 2), ("UINT2", 2)):  # onnx >= 1.18
    if hasattr(TensorProto, _name):
        _BITS[getattr(TensorProto, _name)] = _b
NBITS_UNPACKED = "MatMulNBits (float zero points / g_idx)"
QUANT_OPS = frozenset({"DequantizeLinear", "QuantizeLinear", "MatMulNBits",
                       "MatMulIntegerToFloat", "GatherBlockQuantized", "DynamicQuantizeLinear",
                       "MatMulInteger", "ConvInteger", "DynamicQuantizeLSTM"})
# ops whose activations onnxruntime quantises at run time (the policy's dynamic_int8 rows)
DYNAMIC_SOURCES = frozenset({"MatMulInteger", "ConvInteger", "DynamicQuantizeLSTM"})


@dataclass(frozen=True)
class Mark:
    """What one consuming node read quantized."""

    w_bits: int | None = None
    a_bits: int | None = None
    granularity: str = "per_channel"
    block: int | None = None
    dynamic: bool = False  # activations quantised inside the kernel (accuracy_level 4)
    source: str = ""       # the op it was read from
    requant: bool = False  # the output goes straight into a QuantizeLinear
    unrolled: bool = False  # on an LSTM: holds for the layers `<node name>/...` it unrolls to


def is_quantized(model: onnx.ModelProto) -> bool:
    """Whether the model holds any op this reader rewrites."""
    return any(n.op_type in QUANT_OPS for n in model.graph.node)


class _Reader:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.g = model.graph
        self.inits = {t.name: t for t in self.g.initializer}
        self.made = {o: n for n in self.g.node for o in n.output}
        self.users: dict[str, list[onnx.NodeProto]] = {}
        for n in self.g.node:
            for t in n.input:
                self.users.setdefault(t, []).append(n)
        self.dropped: set[tuple[str, str]] = set()  # node_key of nodes folded away
        self.rename: dict[str, str] = {}
        self.weights: dict[str, Mark] = {}   # float tensor -> weight mark
        self.acts: dict[str, int] = {}       # float tensor -> activation bits
        self.new_inits: list[onnx.TensorProto] = []

    def array(self, name: str) -> np.ndarray | None:
        t = self.inits.get(name)
        return None if t is None else numpy_helper.to_array(t)

    def constant(self, name: str) -> np.ndarray:
        """Initializer `name`, which the rewrite needs: ModelError if the graph computes it."""
        value = self.array(name)
        if value is None:
            raise ModelError(f"tensor {name or '(absent)'}", "must be an initializer here")
        return value

    def add(self, name: str, value: np.ndarray) -> None:
        self.new_inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    """Tensor ranks onnx's shape inference knows (contrib ops' outputs stay unknown)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton(model))  # no weights: fast
    except Exception:  # noqa: BLE001 - ranks are a hint; without them MatMul + Add is used
        return {}
    infos = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    return {v.name: len(v.type.tensor_type.shape.dim) for v in infos
            if v.type.tensor_type.HasField("shape")}


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:  # an ONNX attribute
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name),
                default)


def _dq_value(r: _Reader, node: onnx.NodeProto) -> tuple[np.ndarray, Mark] | None:
    """A DequantizeLinear of a constant: its float value and mark."""
    x = r.array(node.input[0])
    if x is None:
        return None
    scale = r.constant(node.input[1]).astype(np.float32)
    zp = r.array(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    zp = np.zeros_like(scale) if zp is None else zp.astype(np.float32)
    axis, block = int(_attr(node, "axis", 1)), int(_attr(node, "block_size", 0))
    if block:
        scale, zp = (np.repeat(v, block, axis=axis).take(range(x.shape[axis]), axis=axis)
                     for v in (scale, zp))
    elif scale.ndim == 1 and scale.size > 1:
        shape = [1] * x.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    gran = "per_block" if block else "per_tensor" if scale.size == 1 else "per_channel"
    mark = Mark(_BITS.get(r.inits[node.input[0]].data_type, 8), None, gran, block or None,
                source="DequantizeLinear")
    return (x.astype(np.float32) - zp) * scale, mark


def _cast_mul_value(r: _Reader, node: onnx.NodeProto) -> tuple[np.ndarray, Mark] | None:
    """`Cast(integer constant) * constant scale`: a weight-only integer weight."""
    ins = [r.made.get(t) for t in node.input]
    cast = next((n for n in ins if n is not None and n.op_type == "Cast"), None)
    if cast is None or cast.input[0] not in r.inits:
        return None
    other = [t for t in node.input if t != cast.output[0]]
    scale = r.array(other[0]) if other else None
    bits = _BITS.get(r.inits[cast.input[0]].data_type)
    if scale is None or bits is None:
        return None
    gran = "per_tensor" if scale.size == 1 else "per_channel"
    w = r.constant(cast.input[0]).astype(np.float32) * scale.astype(np.float32)
    return w, Mark(bits, None, gran, source="Cast*scale")


def _act_source(r: _Reader, name: str) -> tuple[str, int] | None:
    """If `name` is DequantizeLinear(QuantizeLinear(x)) or QuantizeLinear(x) codes:
    (x, bits)."""
    node = r.made.get(name)
    if node is not None and node.op_type == "DequantizeLinear":
        node = r.made.get(node.input[0])
    if node is None or node.op_type != "QuantizeLinear":
        return None
    zp = r.inits.get(node.input[2]) if len(node.input) > 2 else None
    return node.input[0], _BITS.get(zp.data_type, 8) if zp is not None else 8


def _nbits(r: _Reader, node: onnx.NodeProto, nodes: list[onnx.NodeProto]) -> None:
    from compiler.packing import MatMulNBitsBlob, dequantize_matmulnbits

    k, n = int(_attr(node, "K")), int(_attr(node, "N"))
    bits, block = int(_attr(node, "bits", 4)), int(_attr(node, "block_size"))
    ins = list(node.input) + [""] * (6 - len(node.input))
    zp = r.array(ins[3]) if ins[3] else None
    float_zp = zp is not None and zp.dtype.kind == "f"
    scales = r.constant(ins[2]).astype(np.float32).reshape(n, -1)
    blob = MatMulNBitsBlob(r.constant(ins[1]), scales, None if zp is None or float_zp
                           else zp.reshape(n, -1), k, n, bits, block)
    w = dequantize_matmulnbits(blob)  # [K, N], at the default zero point if it is float
    if float_zp:  # (q - 2^(b-1)) * s + (2^(b-1) - zp) * s
        assert zp is not None
        shift = (2.0 ** (bits - 1) - zp.astype(np.float32).reshape(n, -1)) * scales
        w = w + shift[:, np.arange(k) // block].T
    r.add(f"{node.name}.weight", w)
    acc = int(_attr(node, "accuracy_level", 0))
    mark = Mark(bits, 8 if acc == 4 else None, "per_block", block, acc == 4, "MatMulNBits")
    if float_zp or ins[4]:  # not prepacked: onnxruntime dequantises B per run (#28552)
        mark = replace(mark, a_bits=None, dynamic=False, source=NBITS_UNPACKED)
    _matmul(r, node, ins[0], f"{node.name}.weight", ins[5], mark, nodes)


def _matmul(r: _Reader, node: onnx.NodeProto, x: str, w: str, bias: str, mark: Mark,
            nodes: list[onnx.NodeProto]) -> None:
    """x @ w (+ bias) as MatMul (+ Add); `_as_gemm` makes it a Gemm where x is 2-D (the form
    a float linear layer is written in)."""
    out = node.output[0]
    mm_out = out if not bias else f"{out}.matmul"
    nodes.append(helper.make_node("MatMul", [x, w], [mm_out], name=node.name))
    if bias:
        nodes.append(helper.make_node("Add", [mm_out, bias], [out], name=f"{node.name}.bias"))
    r.weights[node.name] = mark


def _as_gemm(model: onnx.ModelProto, names: set[str]) -> None:
    """MatMul + bias Add written by the reader -> Gemm(transB) where the input is 2-D."""
    ranks = _ranks(model)
    inits = {t.name: t for t in model.graph.initializer}
    nodes, out = list(model.graph.node), []
    skip = set()
    for i, node in enumerate(nodes):
        nxt = nodes[i + 1] if i + 1 < len(nodes) else None
        if node.name in names and nxt is not None and nxt.name == f"{node.name}.bias" and \
                ranks.get(node.input[0]) == 2 and node.input[1] in inits:
            w = numpy_helper.to_array(inits[node.input[1]]).T
            model.graph.initializer.append(numpy_helper.from_array(w, f"{node.input[1]}.T"))
            out.append(helper.make_node("Gemm", [node.input[0], f"{node.input[1]}.T",
                                                 nxt.input[1]], list(nxt.output),
                                        name=node.name, transB=1))
            skip.add(i + 1)
        elif i not in skip:
            out.append(node)
    del model.graph.node[:]
    model.graph.node.extend(out)


def _integer_to_float(r: _Reader, node: onnx.NodeProto, nodes: list[onnx.NodeProto]) -> bool:
    ins = list(node.input) + [""] * (7 - len(node.input))
    src, wq = _act_source(r, ins[0]), r.array(ins[1])
    if src is None or wq is None:
        return False
    ws = r.constant(ins[3]).astype(np.float32)
    wz = r.constant(ins[5]).astype(np.float32) if ins[5] else np.zeros_like(ws)
    r.add(f"{node.name}.weight", (wq.astype(np.float32) - wz) * ws)
    gran = "per_tensor" if ws.size == 1 else "per_channel"
    _matmul(r, node, src[0], f"{node.name}.weight", ins[6], Mark(8, src[1], gran,
            source="MatMulIntegerToFloat"), nodes)
    return True


def _gather_block(r: _Reader, node: onnx.NodeProto, nodes: list[onnx.NodeProto]) -> bool:
    data, scale = r.array(node.input[0]), r.array(node.input[2])
    if data is None or scale is None:
        return False
    bits, block = int(_attr(node, "bits", 4)), int(_attr(node, "block_size", 128))
    zp = 128.0 if data.dtype == np.uint8 and bits == 8 else 0.0
    s = np.repeat(scale.astype(np.float32), block, axis=-1)[..., :data.shape[-1]]
    r.add(f"{node.name}.table", (data.astype(np.float32) - zp) * s)
    nodes.append(helper.make_node("Gather", [f"{node.name}.table", node.input[1]],
                                  list(node.output), name=node.name, axis=0))
    r.weights[node.name] = Mark(bits, None, "per_block", block, source="GatherBlockQuantized")
    return True


def _lstm(r: _Reader, node: onnx.NodeProto, nodes: list[onnx.NodeProto]) -> None:
    """DynamicQuantizeLSTM -> LSTM on the dequantised weights, marked for its unrolled layers:
    8-bit weights, activations quantised at run time."""
    lstm, gran = dynamic_lstm(r, node)
    nodes.append(lstm)
    r.weights[lstm.name] = Mark(8, 8, gran, None, True, node.op_type, unrolled=True)


def _fold_weight(r: _Reader, node: onnx.NodeProto, value: tuple[np.ndarray, Mark] | None) -> bool:
    """Record a dequantised constant (float array, its mark) as `node`'s output; False if
    `value` is None (the node does not dequantise a constant)."""
    if value is None:
        return False
    r.add(node.output[0], value[0])
    r.weights[node.output[0]] = value[1]
    return True


def _rewrite(r: _Reader, node: onnx.NodeProto, nodes: list[onnx.NodeProto]) -> None:
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
        if _fold_weight(r, node, _dq_value(r, node)):
            return
        src = _act_source(r, node.output[0])
        if src is not None:  # Q -> DQ on an activation: the float tensor itself
            r.rename[node.output[0]] = src[0]
            r.acts[node.output[0]] = src[1]
            return
    if op == "Mul" and _fold_weight(r, node, _cast_mul_value(r, node)):
        return
    if op == "Cast" and node.input[0] in r.inits and \
            r.inits[node.input[0]].data_type in _BITS:  # codes of a Cast * scale weight
        r.add(node.output[0], r.constant(node.input[0]).astype(np.float32))
        return
    if op == "QuantizeLinear":
        return  # read through by its DequantizeLinear / integer consumers
    if op == "MatMulNBits":
        return _nbits(r, node, nodes)
    if op == "MatMulIntegerToFloat" and _integer_to_float(r, node, nodes):
        return
    if op == "GatherBlockQuantized" and _gather_block(r, node, nodes):
        return
    if op == "DynamicQuantizeLSTM":
        return _lstm(r, node, nodes)
    nodes.append(node)


def dequantize(model: onnx.ModelProto) -> tuple[onnx.ModelProto, Mapping[str, Mark]]:
    """The float model of a quantized one, and what each consuming node read quantized.

    Returns:
        The rewritten model (a copy) and marks keyed by consuming ONNX node name.
    """
    r = _Reader(model)
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
    _as_gemm(out, {n.name for n in nodes if n.op_type == "MatMul"} & set(r.weights))
    return out, MappingProxyType(marks)


def _keep_outputs(model: onnx.ModelProto, r: _Reader) -> None:
    """Graph outputs that were DequantizeLinear outputs become Identity of the float tensor."""
    for o in model.graph.output:
        if o.name in r.rename:
            model.graph.node.append(helper.make_node("Identity", [r.rename[o.name]], [o.name],
                                                     name=f"{o.name}.identity"))


def _consumer_marks(model: onnx.ModelProto, r: _Reader) -> dict[str, Mark]:
    """Marks keyed by the node that reads the quantized weight / activations."""
    marks: dict[str, Mark] = {k: v for k, v in r.weights.items() if k not in r.inits and
                              not any(k in n.output for n in model.graph.node)}
    for node in model.graph.node:
        if node.op_type in QUANT_OPS:
            continue
        w = next((r.weights[t] for t in node.input if t in r.weights), None)
        a = max((r.acts[t] for t in node.input if t in r.acts), default=None)
        if any(_gemm_users(r, t) > 1 for t in node.input if t in r.acts):
            a = None
        if w is not None and w.source == "Cast*scale":
            a = None  # a Cast * scale weight is no DequantizeLinear: no QDQ unit, fp32 kernel
        users = r.users.get(node.output[0], []) if node.output else []
        requant = bool(users) and all(u.op_type == "QuantizeLinear" for u in users)
        if w is not None or a is not None:
            marks[node.name] = replace(w or Mark(None, None, "per_tensor"), a_bits=a,
                                       requant=requant and a is not None)
    return marks


_GEMM_OPS = frozenset({"MatMul", "Gemm", "Conv", "ConvTranspose"})


def _gemm_users(r: _Reader, tensor: str) -> int:
    """GEMM nodes reading one activation DequantizeLinear. Observed in onnxruntime 1.32's
    optimised graph (tests/edgesim/test_read_quantized.py checks it): when several GEMMs share
    it (quantize_static's q / k / v MatMuls on one normed input), none joins a QDQ node unit
    and each runs in float; a DequantizeLinear shared by one conv and an Add (edgesim's
    residual blocks) still fuses into QLinearConv."""
    return sum(u.op_type in _GEMM_OPS for u in r.users.get(tensor, ()))


def annotate(g: Graph, marks: Mapping[str, Mark], policy: Policy | None = None) -> Graph:
    """Give every marked layer the `Quant` of the format-policy row it runs as."""
    policy = policy or Policy(act_matmul_int8=True)  # the file quantises what it quantises
    unrolled = {f"{name}/": m for name, m in marks.items() if m.unrolled}
    layers = tuple(_annotated(g, layer, marks.get(layer.name) or _unrolled(layer, unrolled),
                              policy) for layer in g.layers)
    return replace(g, layers=layers)


def _unrolled(layer: Layer, marks: Mapping[str, Mark]) -> Mark | None:
    """The mark of the LSTM `layer` was unrolled from (`expand_lstm` names its nodes
    `<LSTM name>/...`); the policy leaves its element-wise layers float."""
    return next((m for prefix, m in marks.items() if layer.name.startswith(prefix)), None)


def _annotated(g: Graph, layer: Layer, mark: Mark | None, policy: Policy) -> Layer:
    if mark is None:
        return layer
    const = g.const_weight(layer)
    policy = replace(policy, dynamic_int8=mark.source in DYNAMIC_SOURCES,
                     requant_out=mark.requant, nbits_float_zp=mark.source == NBITS_UNPACKED)
    row = resolve(layer.kind, const, mark.w_bits, mark.a_bits, policy, mark.granularity)
    if row.name == "float":
        return layer
    w = mark.w_bits if row.w_bits != (None,) else None
    a = mark.a_bits if mark.a_bits in row.a_bits else None
    n_act = len([t for t in layer.inputs[:2] if t and t not in g.weights])
    scales = (1.0,) * n_act if row.act == "static" else ()
    out: tuple[float | None, int | None] = (1.0, 0) if row.requant else (None, None)  # any grid
    quant = Quant(w, a, mark.granularity if w is not None else "per_tensor", mark.block, True,
                  "minmax", row.fmt, scales, (0,) * len(scales), *out,
                  reason=f"read from {mark.source or 'QuantizeLinear'}: {row.pattern}")
    return replace(layer, quant=quant)
