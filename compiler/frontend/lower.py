"""Lower a cleaned ONNX model into the IR, node by node, folding constants as it goes.

`load.py` hands over a model whose graph inputs have static shapes, whose constants are
initializers and whose control flow is inlined. Each node goes through its rule in
`compiler.ops.LOWER`; each produced layer is typed by its op's shape rule, and a layer whose
inputs are all constant is evaluated on the spot (that is how Shape/Gather/Concat shape
arithmetic, constant masks and exporter noise disappear).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import onnx
from onnx import helper, numpy_helper

from compiler.errors import ModelError
from compiler.ir import MAX_TENSOR_ELEMS, Graph, Layer, Spec, readonly
from compiler.ops import OPS, rule_for
from compiler.ops.opdef import Lowered, Node
from compiler.passes.drop_dead import drop_dead


def const_value(t: onnx.TensorProto) -> np.ndarray:
    """An initializer's value, read-only; for external data left unread (`load(...,
    shapes_only=True)`), a shape-only placeholder: zeros broadcast to its shape, which hold
    no memory, so layer facts and cost models see the shape without the weights."""
    if t.data_location == onnx.TensorProto.EXTERNAL and not t.raw_data:  # never read
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.data_type)
        return np.broadcast_to(np.zeros((), dtype=dtype), tuple(t.dims))  # read-only view
    return readonly(numpy_helper.to_array(t))


def lower_model(model: onnx.ModelProto, name: str | None = None) -> Graph:
    """Lower a cleaned, statically shaped ONNX model to a `Graph`.

    Raises:
        ModelError: an unsupported op or attribute, or a layer whose shapes do not check.
    """
    g = model.graph
    consts = {t.name: const_value(t) for t in g.initializer}
    specs: dict[str, Spec] = {n: Spec(tuple(v.shape), v.dtype.name) for n, v in consts.items()}
    inputs = tuple(vi.name for vi in g.input if vi.name not in consts)
    specs.update({vi.name: _input_spec(vi) for vi in g.input if vi.name not in consts})
    layers: list[Layer] = []
    outputs = tuple(o.name for o in g.output)
    uses, read = _use_counts(g), set(outputs)
    derived: dict[str, str] = {}  # derivation key -> the one const holding it
    for node, node_name in zip(g.node, _unique_names(g.node)):
        lowered = _shared(_lower_node(node, node_name, specs, consts), derived)
        for t, v in lowered.consts.items():
            _check_size(node_name, node.op_type, v.shape)
            consts[t] = readonly(v)
            specs[t] = Spec(tuple(v.shape), v.dtype.name)
        start = len(layers)
        for layer in lowered.layers:
            _add_layer(layer, specs, consts, layers)
        read.update(t for layer in layers[start:] for t in layer.inputs)
        _drop_spent(node, uses, read, consts)
    return drop_dead(Graph(name or g.name or "model", inputs, outputs, tuple(layers), consts,
                           specs))


def _shared(lowered: Lowered, derived: dict[str, str]) -> Lowered:
    """`lowered` reading the const an earlier node derived the same way (`Lowered.derived`)
    instead of its own copy, so that layers reading one initializer share one weight (an
    unrolled LSTM's steps, tied heads): one tensor to quantise, emit and count."""
    alias = {}
    for name, key in lowered.derived.items():
        alias[name] = derived.setdefault(key, name)
    alias = {a: b for a, b in alias.items() if a != b}
    if not alias:
        return lowered
    layers = tuple(replace(x, inputs=tuple(alias.get(t, t) for t in x.inputs))
                   for x in lowered.layers)
    consts = {t: v for t, v in lowered.consts.items() if t not in alias}
    return replace(lowered, layers=layers, consts=consts)


def _use_counts(graph: onnx.GraphProto) -> dict[str, int]:
    """Tensor name -> how many top-level nodes read it; names a subgraph reads (from the
    enclosing scope, without listing them as inputs) are never spent."""
    uses: dict[str, int] = {}
    for node in graph.node:
        for t in node.input:
            uses[t] = uses.get(t, 0) + 1
    for t in _subgraph_names(graph):
        uses[t] = -1
    return uses


def _subgraph_names(graph: onnx.GraphProto) -> set[str]:
    names: set[str] = set()
    for node in graph.node:
        for a in node.attribute:
            for sub in (*([a.g] if a.HasField("g") else []), *a.graphs):
                names.update(t for n in sub.node for t in n.input)
                names |= _subgraph_names(sub)
    return names


def _drop_spent(node: onnx.NodeProto, uses: dict[str, int], read: set[str],
                consts: dict[str, np.ndarray]) -> None:
    """Forget the constants `node` was the last reader of, unless a layer or a graph output
    reads them: `drop_dead` would drop them at the end anyway, and until then they hold
    memory (a MatMul weight next to the transposed copy its `linear` layer keeps)."""
    for t in node.input:
        uses[t] = uses.get(t, 0) - 1
        if uses[t] == 0 and t not in read:
            consts.pop(t, None)


def _input_spec(vi: onnx.ValueInfoProto) -> Spec:
    tt = vi.type.tensor_type
    if not all(d.HasField("dim_value") for d in tt.shape.dim):
        raise ModelError(f"input {vi.name}", "shape is not static")
    dims = tuple(d.dim_value for d in tt.shape.dim)
    return Spec(dims, helper.tensor_dtype_to_np_dtype(tt.elem_type).name)


def _unique_names(nodes: Sequence[onnx.NodeProto]) -> list[str]:
    seen: set[str] = set()
    names = []
    for i, node in enumerate(nodes):
        base = node.name or f"{node.op_type}_{i}"
        name = base if base not in seen else f"{base}_{i}"
        seen.add(name)
        names.append(name)
    return names


def _attr_value(a: onnx.AttributeProto) -> object:
    """ONNX attribute as a plain Python value: ints/floats/str/tuples/ndarray."""
    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, onnx.TensorProto):
        return numpy_helper.to_array(v)
    if isinstance(v, list):
        return tuple(x.decode() if isinstance(x, bytes) else x for x in v)
    return v


def _lower_node(node: onnx.NodeProto, name: str, specs: Mapping[str, Spec],
                consts: Mapping[str, np.ndarray]) -> Lowered:
    rule = rule_for(node.op_type, node.domain)
    if rule is None:
        domain = node.domain or "ai.onnx"
        raise ModelError(f"node {name}", f"unsupported op {domain}::{node.op_type}")
    attrs = {a.name: _attr_value(a) for a in node.attribute}
    unknown = sorted(set(attrs) - set(inspect.signature(rule).parameters))
    if unknown:
        raise ModelError(f"node {name}", f"{node.op_type} attribute(s) {unknown} not supported")
    missing = [t for t in node.input if t and t not in specs]
    if missing:
        raise ModelError(f"node {name}", f"input(s) {missing} are not produced earlier")
    view = Node(name, node.op_type, tuple(node.input), tuple(node.output), specs, consts)
    return rule(view, **attrs)


def _add_layer(layer: Layer, specs: dict[str, Spec], consts: dict[str, np.ndarray],
               layers: list[Layer]) -> None:
    """Type `layer`'s outputs; fold it into constants when every input is constant."""
    op = OPS[layer.kind]
    present = [t for t in layer.inputs if t]
    if all(t in consts for t in present):
        _bounded_fold(layer, specs)
        values = op.forward(*[consts[t] if t else None for t in layer.inputs], **layer.attrs)
        for t, v in zip(layer.outputs, values):
            consts[t] = readonly(np.asarray(v))
            specs[t] = Spec(tuple(consts[t].shape), consts[t].dtype.name)
        return
    try:
        outs = op.shape([specs[t] if t else None for t in layer.inputs], **layer.attrs)
    except (ValueError, IndexError) as e:
        raise ModelError(f"node {layer.name}", f"{layer.kind}: {e}") from e
    for out in outs:
        _check_size(layer.name, layer.kind, out.shape)
    specs.update(zip(layer.outputs, outs))
    layers.append(layer)


def _bounded_fold(layer: Layer, specs: Mapping[str, Spec]) -> None:
    """Check the outputs of a layer about to be folded before numpy allocates them (a
    ConstantOfShape / Expand to 10^12 elements); a shape rule that cannot type constants
    leaves the check to the forward, as before."""
    try:
        outs = OPS[layer.kind].shape([specs[t] if t else None for t in layer.inputs],
                                     **layer.attrs)
    except Exception:  # noqa: BLE001 - value-dependent shapes are typed by the forward
        return
    for out in outs:
        _check_size(layer.name, layer.kind, out.shape)


def _check_size(name: str, kind: str, shape: Sequence[int]) -> None:
    """Bound every tensor a layer makes, as the loader bounds inputs and initializers: a
    declared 4 TB activation is bad input, not a cost to predict or an array to allocate."""
    n = math.prod(int(d) for d in shape)  # Python ints: np.prod wraps around past 2^63
    if n > MAX_TENSOR_ELEMS:
        raise ModelError(f"node {name}", f"{kind} output {[int(d) for d in shape]} has {n} "
                         f"elements; at most {MAX_TENSOR_ELEMS} are accepted")
