"""Unroll ONNX `LSTM` nodes into MatMul / Add / Sigmoid / Tanh / Mul nodes, before lowering.

With the input shapes fixed, the sequence length is static, so a forward LSTM is one
MatMul of the whole sequence with the input weights, then a chain of `seq` cells, each one
MatMul with the recurrent weights (both constant: edgesim quantises them like any linear
layer) and element-wise gates (ONNX operator spec, gate order i, o, f, c):

    gates = (X W^T + Wb + Rb)[t] + h W_R^T;   i, o, f, c~ = split(gates)

(The input projection is one layer, not one per step: each unrolled layer holds its own
copy of its weights once quantised, so per-step input MatMuls multiplied W's size by `seq`.)
    C = sigmoid(f) * C + sigmoid(i) * tanh(c~);   h = sigmoid(o) * tanh(C)

Handled: "forward", "reverse" and "bidirectional" (each direction a chain of its own; the
reverse one walks the sequence backwards and its outputs are stored in input order, as the
spec's Y [seq, num_directions, batch, H]), default activations, no clip, no peepholes, no
`sequence_lens`, layout 0, weights that are constants (initializers or constant folds).
Other LSTMs stay and are reported as unsupported.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from compiler.frontend.static_shapes import known_shapes

DEFAULTS = {"layout": 0, "input_forget": 0}
DIRECTIONS = {b"forward": (False,), b"reverse": (True,), b"bidirectional": (False, True)}


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _plain(node: onnx.NodeProto) -> bool:
    """Only the LSTM variant this module unrolls: defaults apart from hidden_size."""
    attrs = _attrs(node)
    extra = set(attrs) - {"hidden_size", "direction", *DEFAULTS}
    return (node.op_type == "LSTM" and node.domain in ("", "ai.onnx") and not extra
            and all(attrs.get(k, v) == v for k, v in DEFAULTS.items())
            and attrs.get("direction", b"forward") in DIRECTIONS
            and not any(node.input[i] for i in (4, 7) if i < len(node.input)))


def _value(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    from compiler.frontend.inline_if import static_value

    init = next((t for t in model.graph.initializer if t.name == name), None)
    return numpy_helper.to_array(init) if init is not None else static_value(model, name)


class _Builder:
    """Nodes and initializers of one unrolled LSTM, names prefixed by the node's name;
    `model`'s initializers are there to reuse (`const`)."""

    def __init__(self, prefix: str, model: onnx.ModelProto) -> None:
        self.prefix, self.count = prefix, 0
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._known = {t.name: t for t in model.graph.initializer}  # and those made here

    def const(self, value: np.ndarray, key: str | None = None) -> str:
        """An initializer holding `value`. With `key` (a name derived from what it is made
        of), one that an earlier unroll made from the same source is reused: LSTMs sharing
        W, R and B then read one weight, which the layer table counts once, as the file
        stores it once."""
        if key is not None and key in self._known:
            if np.array_equal(numpy_helper.to_array(self._known[key]), value):
                return key
            key = None  # a tensor of the model's own that happens to have the name
        name = key or self.fresh("const")
        self.inits.append(numpy_helper.from_array(value.copy(order="C"), name))  # keeps 0-d
        self._known[name] = self.inits[-1]
        return name

    def fresh(self, what: str) -> str:
        self.count += 1
        return f"{self.prefix}/{what}_{self.count}"

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, out: list[str] | None = None,
           **attrs: object) -> list[str]:
        outs = out or [self.fresh(op_type) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.fresh(op_type + "_n"),
                                           **attrs))  # type: ignore[arg-type]
        return outs


def _cell(b: _Builder, gates: str, h: str | None, c: str | None,
          w: dict[str, str]) -> tuple[str, str]:
    """One step: new (h, C) from the step's input gates x_t W^T + B [batch, 4H] and the
    previous h, C (None = 0)."""
    if h is not None:
        gates = b.op("Add", [gates, b.op("MatMul", [h, w["R"]])[0]])[0]
    i, o, f, g = b.op("Split", [gates, w["split"]], n_out=4, axis=1)
    i, o, f = (b.op("Sigmoid", [t])[0] for t in (i, o, f))
    new_c = b.op("Mul", [i, b.op("Tanh", [g])[0]])[0]
    if c is not None:
        new_c = b.op("Add", [b.op("Mul", [f, c])[0], new_c])[0]
    return b.op("Mul", [o, b.op("Tanh", [new_c])[0]])[0], new_c


def _weights(b: _Builder, model: onnx.ModelProto, node: onnx.NodeProto, hidden: int,
             d: int) -> dict[str, str] | None:
    """Direction `d`'s W^T, R^T, summed bias and gate split, as constants."""
    ins = [*node.input, *[""] * (8 - len(node.input))]
    w, r = _value(model, ins[1]), _value(model, ins[2])
    bias = _value(model, ins[3]) if ins[3] else None
    if w is None or r is None or (ins[3] and bias is None):
        return None
    if d >= min(len(w), len(r), d + 1 if bias is None else len(bias)):
        return None  # weights of fewer directions than declared: onnxruntime refuses it too
    out = {"W": b.const(w[d].T, f"{ins[1]}.lstm_T{d}"), "R": b.const(r[d].T, f"{ins[2]}.lstm_T{d}"),
           "split": b.const(np.full(4, hidden, np.int64))}
    if bias is not None:
        out["B"] = b.const(bias[d, :4 * hidden] + bias[d, 4 * hidden:], f"{ins[3]}.lstm_sum{d}")
    return out


def _state(b: _Builder, name: str, d: int) -> str | None:
    """Direction `d`'s initial state of [num_directions, batch, H] as [batch, H]; None when
    absent (zero)."""
    return b.op("Gather", [name, b.const(np.array(d, np.int64))], axis=0)[0] if name else None


def _unroll(model: onnx.ModelProto, node: onnx.NodeProto, seq: int) -> _Builder | None:
    attrs = _attrs(node)
    hidden = int(attrs["hidden_size"])  # type: ignore[call-overload]
    b = _Builder(node.name or "LSTM", model)
    chains = []
    for d, backwards in enumerate(DIRECTIONS[attrs.get("direction", b"forward")]):  # type: ignore[index]
        w = _weights(b, model, node, hidden, d)
        if w is None:
            return None
        chains.append(_chain(b, node, w, d, range(seq)[::-1] if backwards else range(seq)))
    _outputs(b, node, chains)
    return b


def _chain(b: _Builder, node: onnx.NodeProto, w: dict[str, str], d: int,
           steps: range) -> tuple[list[str], str | None, str | None]:
    """One direction's cells over `steps`: its h per time step in input order [1, 1, batch,
    H], and its last h and C [batch, H]."""
    ins = [*node.input, *[""] * (8 - len(node.input))]
    h, c, ys = _state(b, ins[5], d), _state(b, ins[6], d), {}
    xw = b.op("MatMul", [ins[0], w["W"]])[0]  # [seq, batch, 4H]: every step's input gates
    if "B" in w:
        xw = b.op("Add", [xw, w["B"]])[0]
    for t in steps:
        gates = b.op("Gather", [xw, b.const(np.array(t, np.int64), f"lstm.step{t}")],
                     axis=0)[0]
        h, c = _cell(b, gates, h, c, w)
        ys[t] = b.op("Unsqueeze", [h, b.const(np.array([0, 1], np.int64))])[0]
    return [ys[t] for t in sorted(ys)], h, c


def _outputs(b: _Builder, node: onnx.NodeProto,
             chains: list[tuple[list[str], str | None, str | None]]) -> None:
    """Y [seq, num_directions, batch, H], Y_h and Y_c [num_directions, batch, H], under the
    LSTM's output names."""
    outs = [*node.output, *[""] * (3 - len(node.output))]
    zero = b.const(np.array([0], np.int64))

    def cat(parts: list[str], axis: int, out: str) -> None:
        if len(parts) > 1:
            b.op("Concat", parts, axis=axis, out=[out])
        else:
            b.op("Identity", parts, out=[out])

    if outs[0]:
        steps = [b.op("Concat", list(ys), axis=1)[0] if len(ys) > 1 else ys[0]
                 for ys in zip(*(ys for ys, _, _ in chains))]
        cat(steps, 0, outs[0])
    for k, out in ((1, outs[1]), (2, outs[2])):
        if out:
            cat([b.op("Unsqueeze", [chain[k], zero])[0] for chain in chains], 0, out)  # type: ignore[list-item]


def expand_lstms(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]] | None = None
                  ) -> bool:
    """Unroll the first plain LSTM whose sequence length is static (in place); return
    whether one was. `shapes`: static shapes found so far, used and added to
    (`known_shapes`)."""
    graph = model.graph
    for index, node in enumerate(graph.node):
        if not _plain(node):
            continue
        seq = known_shapes(model, (node.input[0],), shapes).get(node.input[0])
        built = None if not seq or seq[0] < 1 else _unroll(model, node, seq[0])
        if built is not None:
            nodes = list(graph.node)
            nodes[index:index + 1] = built.nodes
            del graph.node[:]
            graph.node.extend(nodes)
            graph.initializer.extend(built.inits)
            return True
    return False
