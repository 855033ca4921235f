"""Read onnxruntime's QOperator files (`quantize_static(quant_format=QuantFormat.QOperator)`)
by rewriting them into the QDQ form `compiler.frontend.quantized` reads.

A QOperator op computes on integer codes: `QLinearConv(x_q, x_scale, x_zp, w_q, w_scale, w_zp,
y_scale, y_zp, bias_int32)`. Its QDQ equivalent is `DequantizeLinear` of every quantized input,
the float op, and `QuantizeLinear` of the output with the op's own output scale and zero point:
exactly what onnxruntime fuses back into the QOperator op when it runs a QDQ file. So the file's
own plan is kept: 8-bit weights with their scales (per tensor or per channel), 8-bit
activations, a requantised output. The int32 bias becomes a float initializer
(`bias * x_scale * w_scale`).

Ops that move codes without arithmetic (`MaxPool`, `Reshape`, `Transpose`, ...) run on the
dequantised tensor and requantise with their input's scale, as quantize_static's QDQ form
writes them. The float op keeps the QOperator node's name, so `edgesim validate` maps
onnxruntime's profiled nodes of the file to the IR layers by name. Any other op that reads a
quantized tensor, and QOperator ops not in `QOPERATOR`, are refused by name.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from compiler.errors import ModelError
from compiler.frontend.quantized_reader import attr


@dataclass(frozen=True)
class Spec:
    """How one QOperator op reads: the float op it computes, where its quantized inputs are
    (data, scale, zero point), where its output scale and zero point are (None: float
    output), its int32 bias input, and the axis of a per-channel constant input."""

    float_op: str
    quantized: tuple[tuple[int, int, int], ...]
    out: tuple[int, int] | None
    bias: int | None = None
    channel_axis: int = 0


_BINARY = ((0, 1, 2), (3, 4, 5))
QOPERATOR: dict[str, Spec] = {
    "QLinearConv": Spec("Conv", ((0, 1, 2), (3, 4, 5)), (6, 7), bias=8),
    "QLinearMatMul": Spec("MatMul", _BINARY, (6, 7), channel_axis=-1),
    "QGemm": Spec("Gemm", _BINARY, (7, 8), bias=6),
    "QLinearAdd": Spec("Add", _BINARY, (6, 7)),
    "QLinearMul": Spec("Mul", _BINARY, (6, 7)),
    "QLinearSigmoid": Spec("Sigmoid", ((0, 1, 2),), (3, 4)),
    "QLinearLeakyRelu": Spec("LeakyRelu", ((0, 1, 2),), (3, 4)),
    "QLinearSoftmax": Spec("Softmax", ((0, 1, 2),), (3, 4)),
    "QLinearGlobalAveragePool": Spec("GlobalAveragePool", ((0, 1, 2),), (3, 4)),
    "QLinearAveragePool": Spec("AveragePool", ((0, 1, 2),), (3, 4)),
    "QLinearConcat": Spec("Concat", (), (0, 1)),  # then (data, scale, zp) per input
}
# ops that move codes without arithmetic: the same op on the dequantised tensor, requantised
# with the input's scale, is exact
MOVES_CODES = frozenset({
    "MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Split",
    "Gather", "Identity", "Pad", "Expand", "Tile", "DepthToSpace", "SpaceToDepth", "Resize",
    "Concat", "GlobalMaxPool"})
READS_SHAPE = frozenset({"Shape", "Size"})
_DROPPED_ATTRS = frozenset({"channels_last", "opset"})


def has_qoperator(model: onnx.ModelProto) -> bool:
    """Whether the model holds a QOperator op (one this module rewrites or refuses)."""
    return any(_is_qoperator(n) for n in model.graph.node)


def _is_qoperator(node: onnx.NodeProto) -> bool:
    return node.op_type in QOPERATOR or node.op_type.startswith("QLinear")


def to_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """The QDQ form of a QOperator model (a copy; the module docstring says how).

    Raises:
        ModelError: naming the QOperator ops this reader does not know, or a node that
            computes on quantized codes in a way it cannot read.
    """
    _refuse_unknown(model)
    rw = _Rewrite(model)
    nodes = _one_quantize_per_reader([new for node in model.graph.node for new in rw.node(node)])
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    read = {t for n in nodes for t in n.input}  # drop the int32 biases now read as floats
    kept = [t for t in out.graph.initializer if t.name in read or t.name not in rw.biases]
    del out.graph.initializer[:]
    out.graph.initializer.extend([*kept, *rw.new_inits])
    return out


def _one_quantize_per_reader(nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """`nodes` with a copy of each QuantizeLinear for every reader after its first. A QOperator
    op reads codes whoever else reads them, but a QDQ GEMM whose int8 QuantizeLinear has
    several readers runs in fp32 on x86 (`quantized._shared_int8`): one QuantizeLinear per
    reader keeps the file's own plan."""
    seen: dict[str, int] = {}
    copies: dict[str, list[onnx.NodeProto]] = {}
    quantized = {n.output[0]: n for n in nodes if n.op_type == "QuantizeLinear"}
    renamed = []
    for node in nodes:
        if any(t in quantized for t in node.input):
            node = _renamed(node, list(node.input), list(node.output))  # not the source's
        for k, t in enumerate(node.input):
            if t in quantized:
                seen[t] = seen.get(t, 0) + 1
                if seen[t] > 1:
                    q = _renamed(quantized[t], list(quantized[t].input), [f"{t}.{seen[t]}"])
                    q.name = f"{q.name}.{seen[t]}"
                    copies.setdefault(t, []).append(q)
                    node.input[k] = q.output[0]
        renamed.append(node)
    return [m for n in renamed
            for m in (n, *(copies.get(n.output[0], ()) if n.op_type == "QuantizeLinear" else ()))]


def _refuse_unknown(model: onnx.ModelProto) -> None:
    unknown = sorted({n.op_type for n in model.graph.node
                      if _is_qoperator(n) and n.op_type not in QOPERATOR})
    if unknown:
        raise ModelError(model.graph.name or "model", "QOperator ops edgesim does not read: "
                         f"{', '.join(unknown)} (quantize with QuantFormat.QDQ instead)")


class _Rewrite:
    """The rewrite's state: which tensors hold codes (their scale and zero point names), the
    graph's initializers, and the float initializers it adds."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.inits = {t.name: t for t in model.graph.initializer}
        self.codes: dict[str, tuple[str, ...]] = {}  # tensor -> (scale, zp) or (scale,)
        self.read_as = _read_as(model)
        self.new_inits: list[onnx.TensorProto] = []
        self.biases: set[str] = set()  # int32 biases replaced by float ones

    def node(self, node: onnx.NodeProto) -> Iterator[onnx.NodeProto]:
        """`node`'s QDQ equivalent (itself when it reads and writes no codes)."""
        if node.op_type == "QuantizeLinear":
            self.codes[node.output[0]] = tuple(t for t in node.input[1:3] if t)
            yield node
        elif node.op_type in QOPERATOR:
            yield from self._qoperator(node, QOPERATOR[node.op_type])
        elif node.op_type in MOVES_CODES and self._integer_constant(node.input[0]) and \
                node.output[0] in self.read_as:  # Gather of a quantized embedding table
            self.codes[node.input[0]] = self.read_as[node.output[0]]
            yield from self._moves_codes(node)
        elif node.op_type == "DequantizeLinear" or not any(t in self.codes for t in node.input):
            yield node
        elif node.op_type in MOVES_CODES | READS_SHAPE:
            yield from self._moves_codes(node)
        else:
            first = next(t for t in node.input if t in self.codes)
            raise ModelError(f"node {node.name or node.op_type}", f"{node.op_type} computes "
                             f"on the quantized codes {first}; edgesim does not read that")

    def _qoperator(self, node: onnx.NodeProto, spec: Spec) -> Iterator[onnx.NodeProto]:
        triples = _triples(node)
        inputs = []
        for k, (d, s, z) in enumerate(triples):
            inputs.append(f"{node.output[0]}/in{k}")
            axis = self._channel_axis(node, spec, k) if node.input[d] in self.inits else None
            yield _dq(node, k, [node.input[d], node.input[s], _opt(node, z)], inputs[-1], axis)
        if spec.bias is not None and _opt(node, spec.bias):
            inputs.append(self._float_bias(node, triples, spec.bias))
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute
                 if a.name not in _DROPPED_ATTRS}
        _check_supported(node)
        quantized_out = spec.out is not None and _opt(node, spec.out[0])
        y = f"{node.output[0]}/float" if quantized_out else node.output[0]
        yield helper.make_node(spec.float_op, inputs, [y], name=node.name, **attrs)
        if quantized_out and spec.out is not None:
            qparams = [node.input[spec.out[0]], _opt(node, spec.out[1])]
            yield self._q(node, y, node.output[0], qparams)

    def _integer_constant(self, name: str) -> bool:
        t = self.inits.get(name)
        return t is not None and t.data_type in (onnx.TensorProto.UINT8, onnx.TensorProto.INT8)

    def _moves_codes(self, node: onnx.NodeProto) -> Iterator[onnx.NodeProto]:
        inputs = list(node.input)
        qparams: tuple[str, ...] = ()
        for k, t in enumerate(node.input):
            if t in self.codes:
                qparams = qparams or self.codes[t]
                inputs[k] = f"{node.name or node.output[0]}/in{k}"
                yield _dq(node, k, [t, *self.codes[t]], inputs[k], None)
        if node.op_type in READS_SHAPE:
            yield _renamed(node, inputs, list(node.output))
            return
        floats = [f"{o}/float" if o else "" for o in node.output]
        yield _renamed(node, inputs, floats)
        for o, f in zip(node.output, floats):
            if o:
                yield self._q(node, f, o, list(qparams))

    def _q(self, node: onnx.NodeProto, x: str, y: str, qparams: list[str]) -> onnx.NodeProto:
        self.codes[y] = tuple(t for t in qparams if t)
        return helper.make_node("QuantizeLinear", [x, *self.codes[y]], [y],
                                name=f"{node.name or y}.quantize.{y}")

    def _channel_axis(self, node: onnx.NodeProto, spec: Spec, k: int) -> int | None:
        """The axis of input k's per-channel scale (None for a per-tensor one)."""
        if spec.float_op == "Gemm" and k == 1:
            return 0 if attr(node, "transB", 0) else 1
        return spec.channel_axis

    def _float_bias(self, node: onnx.NodeProto, triples: tuple[tuple[int, int, int], ...],
                    at: int) -> str:
        """The int32 bias as float: codes * x_scale * w_scale (onnxruntime's convention)."""
        (_, xs, _), (_, ws, _) = triples[:2]
        values = [self._constant(node, node.input[i]) for i in (at, xs, ws)]
        name = f"{node.input[at]}/float"
        self.biases.add(node.input[at])
        bias = values[0].astype(np.float64) * values[1].astype(np.float64) * values[2]
        self.new_inits.append(numpy_helper.from_array(bias.astype(np.float32), name))
        return name

    def _constant(self, node: onnx.NodeProto, name: str) -> np.ndarray:
        if name not in self.inits:
            raise ModelError(f"node {node.name or node.op_type}", f"{name} must be a constant")
        return numpy_helper.to_array(self.inits[name])


def _read_as(model: onnx.ModelProto) -> dict[str, tuple[str, ...]]:
    """Tensor -> the (scale, zero point) its QOperator or DequantizeLinear readers read it
    with (how a Gather of integer constants learns its table's scale)."""
    out: dict[str, tuple[str, ...]] = {}
    for node in model.graph.node:
        for d, s, z in _triples(node):
            out.setdefault(node.input[d], tuple(t for t in (node.input[s], _opt(node, z)) if t))
    return out


def _triples(node: onnx.NodeProto) -> tuple[tuple[int, int, int], ...]:
    """(data, scale, zero point) positions of the quantized inputs `node` reads."""
    if node.op_type == "DequantizeLinear":
        return ((0, 1, 2),)
    spec = QOPERATOR.get(node.op_type)
    if spec is None:
        return ()
    return spec.quantized or tuple((i, i + 1, i + 2) for i in range(2, len(node.input), 3))


def _check_supported(node: onnx.NodeProto) -> None:
    """Attributes whose meaning the float op cannot carry."""
    if attr(node, "channels_last", 0):
        raise ModelError(f"node {node.name or node.op_type}",
                         f"{node.op_type} with channels_last=1 is not read")
    if node.op_type == "QLinearSoftmax" and attr(node, "opset", 13) < 13 and \
            attr(node, "axis", 1) != -1:
        raise ModelError(f"node {node.name or node.op_type}", "QLinearSoftmax of opset < 13 "
                         "(coerced to 2-D) is read only with axis=-1")


def _opt(node: onnx.NodeProto, i: int) -> str:
    """Input i's name, '' when absent."""
    return node.input[i] if i < len(node.input) else ""


def _dq(node: onnx.NodeProto, k: int, ins: list[str], out: str,
        axis: int | None) -> onnx.NodeProto:
    """DequantizeLinear of one input, named after its consumer (one per consumer: a shared
    DequantizeLinear can keep a GEMM off its integer kernel, `quantized._shared_int8`)."""
    while not ins[-1]:  # an absent zero point: DequantizeLinear's default (0)
        ins = ins[:-1]
    dq = helper.make_node("DequantizeLinear", ins, [out],
                          name=f"{node.name or out}.dequantize.{k}")
    if axis is not None:
        dq.attribute.append(helper.make_attribute("axis", axis))
    return dq


def _renamed(node: onnx.NodeProto, inputs: list[str], outputs: list[str]) -> onnx.NodeProto:
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    copy.input[:] = inputs
    copy.output[:] = outputs
    return copy
