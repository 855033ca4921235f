"""Fold constant subgraphs that hold ops edgesim does not lower.

A model may build constants with ops edgesim has no lowering for: SwiftF0 builds its STFT's DFT
matrices from Range/Sin/Cos/ScatterElements on initializers alone. Such a node computes the
same value on every run, so it is run once, with ONNX's reference runtime (as `inline_if`
evaluates If conditions: the frontend does not depend on onnxruntime), and its value becomes an
initializer. Only constant regions that hold an unsupported op are folded: a constant node
edgesim lowers stays a node, so the plans and costs of models it already takes are unchanged.

A region is folded only when shape inference gives every tensor it computes a static shape and
they total at most MAX_FOLD_BYTES (a constant Expand or Tile could otherwise materialise far
more than the model holds); otherwise it is left, and the support check names its ops.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper, numpy_helper

from compiler.frontend.inline_if import DEFAULT_DOMAINS
from compiler.frontend.static_shapes import inferred_shapes
from compiler.ops import claims

MAX_FOLD_BYTES = 64 << 20  # what one fold may materialise (SwiftF0's DFT matrices: 1.1 MB)
# a node with constant inputs whose value still differs run to run
RANDOM = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                    "Multinomial", "Bernoulli"})


def fold_constants(model: onnx.ModelProto) -> bool:
    """Replace every constant region that holds an unsupported op by initializers (in place);
    return whether one was folded."""
    graph = model.graph
    constant = _constant_nodes(graph)
    region = _region(graph, constant)
    if not region:
        return False
    nodes = [n for i, n in enumerate(graph.node) if i in region]
    outside = {t for i, n in enumerate(graph.node) if i not in region for t in n.input}
    outside |= {o.name for o in graph.output}
    wanted = [t for n in nodes for t in n.output if t in outside]
    values = _evaluate(model, nodes)
    if values is None:
        return False
    kept = [n for i, n in enumerate(graph.node) if i not in region]
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(numpy_helper.from_array(values[t], t) for t in wanted)
    return True


def _constant_nodes(graph: onnx.GraphProto) -> set[int]:
    """Indices of the nodes whose inputs are all initializers or outputs of such nodes."""
    known = {t.name for t in graph.initializer} | {""}  # "": an omitted optional input
    constant = set()
    for i, node in enumerate(graph.node):  # nodes are in topological order (checked)
        if (node.domain in DEFAULT_DOMAINS and node.input and node.op_type not in RANDOM
                and not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                            for a in node.attribute)
                and all(t in known for t in node.input)):
            constant.add(i)
            known.update(node.output)
    return constant


def _region(graph: onnx.GraphProto, constant: set[int]) -> set[int]:
    """The constant nodes that are unsupported, with their constant ancestors and
    descendants."""
    producer = {t: i for i in constant for t in graph.node[i].output}
    consumers: dict[str, list[int]] = {}
    for i in constant:
        for t in graph.node[i].input:
            consumers.setdefault(t, []).append(i)
    seeds = [i for i in constant if not claims(graph.node[i].op_type, graph.node[i].domain)]
    region: set[int] = set()
    stack = list(seeds)
    while stack:
        i = stack.pop()
        if i in region:
            continue
        region.add(i)
        node = graph.node[i]
        stack.extend(producer[t] for t in node.input if t in producer)
        stack.extend(j for t in node.output for j in consumers.get(t, ()))
    return region


def _evaluate(model: onnx.ModelProto, nodes: list[onnx.NodeProto]
              ) -> dict[str, np.ndarray] | None:
    """Every output of `nodes` by one reference run; None when a size is unknown, the total
    is above MAX_FOLD_BYTES, or the run fails."""
    outputs = [t for n in nodes for t in n.output if t]
    used = {t for n in nodes for t in n.input}
    inits = [t for t in model.graph.initializer if t.name in used]
    sub = helper.make_graph(nodes, "constants", [],
                            [helper.make_tensor_value_info(t, onnx.TensorProto.UNDEFINED, None)
                             for t in outputs], inits)
    probe = helper.make_model(sub, opset_imports=model.opset_import, ir_version=model.ir_version)
    shapes = inferred_shapes(probe)
    if not all(t in shapes for t in outputs):
        return None
    # 8 bytes an element bounds every numeric type's size
    if sum(8 * math.prod(shapes[t]) for t in outputs) > MAX_FOLD_BYTES:
        return None
    from onnx.reference import ReferenceEvaluator  # on demand: few models need it

    try:
        # run(None, feeds) returns the list of outputs (onnx annotates it as dict | list)
        values = ReferenceEvaluator(probe).run(None, {})
    except Exception:  # noqa: BLE001 - the reference runtime raises anything; unknown = None
        return None
    return {t: np.asarray(v) for t, v in zip(outputs, values)}
