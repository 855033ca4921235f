"""The quantized-ONNX reader's state and the quantized values it reads: `Reader` (the graph's
initializers, producers and users, and what the rewrite records), `Mark` (what one consuming
node read quantized), and the values of a DequantizeLinear of a constant, a
`Cast(integer constant) * scale` weight and a QuantizeLinear'd activation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compiler.errors import ModelError

BITS: dict[int, int] = {TensorProto.INT8: 8, TensorProto.UINT8: 8, TensorProto.INT16: 16,
                         TensorProto.UINT16: 16, TensorProto.INT4: 4, TensorProto.UINT4: 4}
for _name, _b in (("INT2", 2), ("UINT2", 2)):  # onnx >= 1.18
    if hasattr(TensorProto, _name):
        BITS[getattr(TensorProto, _name)] = _b
NBITS_UNPACKED = "MatMulNBits (float zero points / g_idx)"


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
    # int8 activations whose QuantizeLinear has several readers: whether the GEMM runs int8 is
    # the target architecture's (`quantized_annotate.SHARED_INT8_FUSES`)
    shared_int8: bool = False


class Reader:
    """A quantized model's graph as the rewrite reads it (initializers, producers, users) and
    what the rewrite records (dropped nodes, renamed tensors, marks, new initializers)."""

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
        self.stored: dict[tuple[str, ...], str] = {}  # stored initializers -> their float weight

    def array(self, name: str) -> np.ndarray | None:
        """Initializer `name`'s value, None if the graph computes it."""
        t = self.inits.get(name)
        return None if t is None else numpy_helper.to_array(t)

    def constant(self, name: str) -> np.ndarray:
        """Initializer `name`, which the rewrite needs: ModelError if the graph computes it."""
        value = self.array(name)
        if value is None:
            raise ModelError(f"tensor {name or '(absent)'}", "must be an initializer here")
        return value

    def add(self, name: str, value: np.ndarray) -> None:
        """A new float32 initializer of the rewritten model."""
        self.new_inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))

    def add_stored(self, stored: tuple[str, ...], name: str,
                   value: Callable[[], np.ndarray]) -> str:
        """The float weight dequantised from initializers `stored` (codes, scales, zero
        points): added as `name` at its first reader, that reader's tensor at the others. A
        weight the file stores once and several nodes read stays one tensor, so the layer
        table counts its bytes once (`LayerTable.w_repeat`), as the file and the compile's
        report do."""
        if stored not in self.stored:
            self.add(name, value())
            self.stored[stored] = name
        return self.stored[stored]


def attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:  # an ONNX attribute
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name),
                default)


def dq_value(r: Reader, node: onnx.NodeProto) -> tuple[np.ndarray, Mark] | None:
    """A DequantizeLinear of a constant: its float value and mark."""
    x = r.array(node.input[0])
    if x is None:
        return None
    scale = r.constant(node.input[1]).astype(np.float32)
    zp = r.array(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    zp = np.zeros_like(scale) if zp is None else zp.astype(np.float32)
    axis, block = int(attr(node, "axis", 1)), int(attr(node, "block_size", 0))
    if block:
        scale, zp = (np.repeat(v, block, axis=axis).take(range(x.shape[axis]), axis=axis)
                     for v in (scale, zp))
    elif scale.ndim == 1 and scale.size > 1:
        shape = [1] * x.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    gran = "per_block" if block else "per_tensor" if scale.size == 1 else "per_channel"
    mark = Mark(BITS.get(r.inits[node.input[0]].data_type, 8), None, gran, block or None,
                source="DequantizeLinear")
    return (x.astype(np.float32) - zp) * scale, mark


def cast_mul_value(r: Reader, node: onnx.NodeProto) -> tuple[np.ndarray, Mark] | None:
    """`Cast(integer constant) * constant scale`: a weight-only integer weight."""
    ins = [r.made.get(t) for t in node.input]
    cast = next((n for n in ins if n is not None and n.op_type == "Cast"), None)
    if cast is None or cast.input[0] not in r.inits:
        return None
    other = [t for t in node.input if t != cast.output[0]]
    scale = r.array(other[0]) if other else None
    bits = BITS.get(r.inits[cast.input[0]].data_type)
    if scale is None or bits is None:
        return None
    gran = "per_tensor" if scale.size == 1 else "per_channel"
    w = r.constant(cast.input[0]).astype(np.float32) * scale.astype(np.float32)
    return w, Mark(bits, None, gran, source="Cast*scale")


def act_source(r: Reader, name: str) -> tuple[str, int] | None:
    """If `name` is DequantizeLinear(QuantizeLinear(x)) or QuantizeLinear(x) codes:
    (x, bits)."""
    node = r.made.get(name)
    if node is not None and node.op_type == "DequantizeLinear":
        node = r.made.get(node.input[0])
    if node is None or node.op_type != "QuantizeLinear":
        return None
    zp = r.inits.get(node.input[2]) if len(node.input) > 2 else None
    return node.input[0], BITS.get(zp.data_type, 8) if zp is not None else 8
