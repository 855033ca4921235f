"""onnxruntime's `quantize_dynamic` patterns, read back for `compiler.frontend.quantized`.

Today's quantize_dynamic writes `DynamicQuantizeLinear -> MatMulInteger / ConvInteger -> Cast
-> Mul(x_scale * w_scale)`; `integer` reads it as MatMul / Conv on the dequantised weight,
W8A8 with activations quantised at run time. Files from onnxruntime's quantizer before its
operator classes were rewritten (producer "onnx.quantize" 0.1.0, e.g. ddddocr 1.6.1's
`common_old.onnx`) differ from today's in two places:

- **ConvInteger with a bias.** The bias is quantised at run time on the grid of the
  activation's dynamic scale and added in int32 before the output is scaled
  (`_dynamic_quantize_bias` and `get_bias_add_nodes` of onnxruntime's old `quantize.py`):

      b_q = Cast<int32>(Floor(b / Mul(x_scale, w_scale)))
      y = Mul(Cast<float>(Add(ConvInteger(x_q, w_q, x_zp, w_zp), Reshape(b_q, [1,-1,1,1]))),
              Mul(x_scale, w_scale))

  `conv_integer_bias` finds that subgraph; the layer is read as `Conv(x, w, b)`.
- **com.microsoft::DynamicQuantizeLSTM.** An LSTM whose W [D, input, 4H] and R [D, H, 4H]
  (transposed against ONNX's LSTM) are int8/uint8 codes with scales and zero points per
  direction ([D]) or per gate column ([D, 4H]); onnxruntime quantises the activations of
  each of its GEMMs to uint8 at run time (contrib_ops/cpu/quantization/
  dynamic_quantize_lstm.cc, `GemmWeights<uint8_t>`). `dynamic_lstm` writes the ONNX LSTM on
  the dequantised weights, which `compiler.frontend.expand_lstm` unrolls; its mark applies to
  the unrolled layers (`Mark.unrolled`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import helper

if TYPE_CHECKING:
    from compiler.frontend.quantized_reader import Reader

LSTM_INPUTS = 8  # X, W, R, B, sequence_lens, initial_h, initial_c, P (then the quant inputs)


@dataclass(frozen=True)
class ConvBias:
    """The run-time-quantised bias of an old-style ConvInteger.

    Attributes:
        bias: the float bias initializer.
        add: the int32 Add of the bias to ConvInteger's output.
        nodes: the nodes that quantise, reshape and add the bias (dropped on reading).
    """

    bias: str
    add: onnx.NodeProto
    nodes: tuple[onnx.NodeProto, ...]


def node_key(node: onnx.NodeProto) -> tuple[str, str]:
    """A node's identity for dropping: its op and first output (names may be empty)."""
    return node.op_type, node.output[0] if node.output else node.name


def _only_user(r: Reader, tensor: str, op: str) -> onnx.NodeProto | None:
    users = r.users.get(tensor, [])
    return users[0] if len(users) == 1 and users[0].op_type == op else None


def _made(r: Reader, tensor: str, op: str) -> onnx.NodeProto | None:
    """The node of type `op` that makes `tensor`, if `tensor` has one reader (a link of the
    pattern's chain, which nothing else reads)."""
    node = r.made.get(tensor)
    users = r.users.get(tensor, [])
    return node if node is not None and node.op_type == op and len(users) == 1 else None


def conv_integer_bias(r: Reader, out: str) -> ConvBias | None:
    """The bias subgraph added to ConvInteger output `out`, or None if there is none."""
    add = _only_user(r, out, "Add")
    if add is None:
        return None
    reshape = _made(r, next((t for t in add.input if t != out), ""), "Reshape")
    cast = reshape and _made(r, reshape.input[0], "Cast")
    floor = cast and _made(r, cast.input[0], "Floor")
    div = floor and _made(r, floor.input[0], "Div")
    step = div and _made(r, div.input[1], "Mul")
    if step is None or div is None or div.input[0] not in r.inits:
        return None
    assert reshape is not None and cast is not None and floor is not None
    return ConvBias(div.input[0], add, (step, div, floor, cast, reshape, add))


def float_bias(r: Reader, out: str, channels: int, rank: int = 4
               ) -> tuple[np.ndarray, onnx.NodeProto, tuple[onnx.NodeProto, ...]] | None:
    """The float bias Add after a dynamic conv's Cast -> Mul output `out` of `rank` (ConvInteger
    takes no bias; `compiler.emit.dynamic` and `quantize_dynamic` add it after the scales): the
    bias as [channels], the Add, and the Reshape feeding it (if any); None unless the Add's
    other input is a constant that broadcasts along axis 1 only."""
    add = _only_user(r, out, "Add")
    if add is None or len(add.input) != 2:
        return None
    other = add.input[1] if add.input[0] == out else add.input[0]
    value = r.array(other)
    extra: tuple[onnx.NodeProto, ...] = ()
    reshape = _made(r, other, "Reshape")
    if value is None and reshape is not None:
        data, shape = r.array(reshape.input[0]), r.array(reshape.input[1])
        if data is None or shape is None or data.size != channels:
            return None
        value, extra = data.reshape([channels if d == -1 else int(d) for d in shape]), (reshape,)
    # axis 1 of the output is axis -(rank - 1) of a right-aligned bias ([1, C, 1] on a Conv1d)
    if value is None or value.size != channels or value.ndim > rank or (
            value.ndim >= rank - 1 and value.shape[1 - rank] != channels):
        return None
    return np.asarray(value, np.float32).reshape(channels), add, extra


def integer(r: Reader, node: onnx.NodeProto, nodes: list[onnx.NodeProto]) -> str | None:
    """DynamicQuantizeLinear -> MatMulInteger / ConvInteger [-> Add(run-time bias)] -> Cast
    -> Mul(sx * sw) -> MatMul / Conv on the dequantised weight (+ the float bias), appended
    to `nodes`; the weight scales' granularity, or None if `node` is not in the pattern."""
    dql = r.made.get(node.input[0])
    wq = r.array(node.input[1])
    conv = node.op_type == "ConvInteger"
    bias = conv_integer_bias(r, node.output[0]) if conv else None
    cast = _only_user(r, bias.add.output[0] if bias else node.output[0], "Cast")
    mul = cast and _only_user(r, cast.output[0], "Mul")
    if dql is None or dql.op_type != "DynamicQuantizeLinear" or wq is None or mul is None:
        return None
    assert cast is not None
    step = r.made.get(next(t for t in mul.input if t != cast.output[0]))
    scale = None if step is None else next((t for t in step.input if t in r.inits), None)
    if scale is None:
        return None
    assert step is not None
    ws = np.asarray(r.constant(scale), np.float32)
    zero_point = node.input[3] if len(node.input) > 3 else ""
    w = r.add_stored((node.input[1], scale, zero_point), f"{node.name}.weight",
                     lambda: _integer_weight(r, node, wq, ws))
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute} if conv else {}
    inputs, outputs = [dql.input[0], w, *([bias.bias] if bias else [])], list(mul.output)
    after = float_bias(r, mul.output[0], len(wq), wq.ndim) if conv and not bias else None
    if after is not None:  # the float bias Add: the conv's own bias, as onnxruntime adds it
        r.add(f"{node.name}.bias", after[0])
        inputs, outputs = [*inputs, f"{node.name}.bias"], list(after[1].output)
    nodes.append(helper.make_node("Conv" if conv else "MatMul", inputs, outputs,
                                  name=node.name, **attrs))
    r.dropped.update(node_key(n) for n in (cast, mul, step, *(bias.nodes if bias else ()),
                                             *((after[1], *after[2]) if after else ())))
    return "per_tensor" if ws.size == 1 else "per_channel"


def _integer_weight(r: Reader, node: onnx.NodeProto, wq: np.ndarray,
                    ws: np.ndarray) -> np.ndarray:
    """MatMulInteger / ConvInteger's weight codes dequantised (ConvInteger's scale per output
    channel is along axis 0)."""
    wz = r.array(node.input[3]) if len(node.input) > 3 and node.input[3] else None
    w = wq.astype(np.float32) - (0.0 if wz is None else wz.astype(np.float32))
    per_out = node.op_type == "ConvInteger" and ws.size > 1
    return w * (ws.reshape(-1, *[1] * (w.ndim - 1)) if per_out else ws)


def _dequantized(r: Reader, codes: str, scale: str, zero_point: str) -> np.ndarray:
    """One DynamicQuantizeLSTM weight [D, K, 4H] dequantised, as ONNX's LSTM wants it:
    [D, 4H, K]."""
    q = r.constant(codes).astype(np.float32)
    s = r.constant(scale).astype(np.float32)
    z = r.constant(zero_point).astype(np.float32) if zero_point else np.zeros_like(s)
    s, z = (v.reshape(len(q), 1, -1) for v in (s, z))  # per direction, or per gate column
    return np.ascontiguousarray(((q - z) * s).transpose(0, 2, 1))


def dynamic_lstm(r: Reader, node: onnx.NodeProto) -> tuple[onnx.NodeProto, str]:
    """The ONNX LSTM (default domain) a DynamicQuantizeLSTM computes in float, on dequantised
    weights added to `r`, and the granularity of its weight scales."""
    ins = [*node.input, *[""] * (2 * LSTM_INPUTS - len(node.input))]
    name = node.name or f"{node.output[0]}.lstm"
    # one float weight per stored one: DynamicQuantizeLSTMs sharing codes share it (tagged:
    # transposed per direction, it is not the [K, N] a MatMulInteger of those codes reads)
    w = r.add_stored(("lstm", ins[1], ins[8], ins[9]), f"{name}.W",
                     lambda: _dequantized(r, ins[1], ins[8], ins[9]))
    rr = r.add_stored(("lstm", ins[2], ins[10], ins[11]), f"{name}.R",
                      lambda: _dequantized(r, ins[2], ins[10], ins[11]))
    inputs = [ins[0], w, rr, *ins[3:LSTM_INPUTS]]
    while not inputs[-1]:
        inputs.pop()
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    lstm = helper.make_node("LSTM", inputs, list(node.output), name=name, **attrs)
    return lstm, "per_tensor" if r.constant(ins[8]).ndim == 1 else "per_channel"
