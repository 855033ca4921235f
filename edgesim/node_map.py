"""Which IR layer each node of onnxruntime's profiled, optimised graph ran (`edgesim validate`).

Nodes map to IR layers by node name first (`_named_layer`), then by tensor name: a node writing
an IR tensor (or named after one, as onnxruntime's NCHWc nodes are) belongs to the layer that
produces it; a node writing only tensors the IR does not have (a QuantizeLinear in front of a
conv) belongs to the layer its output feeds. IR layers onnxruntime fused away join the group
of the layer they feed (`layer_groups`).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI registers validate without loading the compiler
    from compiler.ir import Graph

# onnxruntime's NchwcTransformer (x86 AVX2 / AVX-512) renames a converted node's outputs
# ("reorder_token_N") and names the node after its original output plus this suffix
NCHWC_SUFFIX = "_nchwc"
# the profiler's name of a node with none: `<op_type>_<node index>` (`name_unnamed`)
UNNAMED = re.compile(r"(.+)_(\d+)")


def _named_layer(name: str, index: Mapping[str, int], producer: Mapping[str, int]) -> int | None:
    """The layer a node's name points at: onnxruntime keeps the emitted node name (the IR
    layer's, or `<layer>.<step>` for its Q / DQ nodes, onnxruntime appending `/duplicated` to a
    DQ it copies for a second consumer), adds `_token_<n>` to nodes it rewrites
    and names NCHWc nodes `<output tensor>_nchwc`."""
    base = re.sub(r"_token_\d+$", "", name)
    if base.endswith(NCHWC_SUFFIX):
        return producer.get(base[:-len(NCHWC_SUFFIX)])
    # layer names may hold dots themselves ("features.5.conv.2/Conv"): the longest dotted
    # prefix naming a layer wins ("features.5.conv.2/Conv.Conv.dequantize/duplicated")
    parts = base.split(".")
    for cut in range(len(parts), 0, -1):
        candidate = ".".join(parts[:cut])
        if candidate in index:
            return index[candidate]
    return None


def assign_nodes(nodes: Sequence[tuple[str, Sequence[str], Sequence[str]]],
                 graph: Graph) -> dict[str, int]:
    """Node name -> index of the IR layer it belongs to (see the module docstring); nodes
    that reach no IR layer are left out. `nodes`: (name, inputs, outputs) in graph order."""
    index = {layer.name: i for i, layer in enumerate(graph.layers)}
    producer = {t: i for i, layer in enumerate(graph.layers) for t in layer.outputs}
    consumers: dict[str, list[str]] = defaultdict(list)
    for name, inputs, _ in nodes:
        for t in inputs:
            consumers[t].append(name)
    outputs = {name: outs for name, _, outs in nodes}
    out: dict[str, int] = {}
    for name, _, _ in reversed(nodes):  # consumers first: a Q node inherits its consumer's
        own = [producer[t] for t in outputs[name] if t in producer]
        named = _named_layer(name, index, producer)
        fed = [out[c] for t in outputs[name] for c in consumers[t] if c in out]
        if named is not None:
            out[name] = named
        elif own or fed:
            out[name] = max(own) if own else min(fed)
    return out


def layer_groups(graph: Graph, ran: set[int]) -> list[int]:
    """Group id (a layer index that ran) of every layer: a layer no node ran joins the group
    of its first consumer, or of the layer before it when nothing consumes it."""
    users: dict[str, list[int]] = defaultdict(list)
    for i, layer in enumerate(graph.layers):
        for t in layer.inputs:
            users[t].append(i)
    group = list(range(len(graph.layers)))
    for i in reversed(range(len(graph.layers))):
        if i in ran:
            continue
        after = [j for t in graph.layers[i].outputs for j in users[t]]
        group[i] = group[min(after)] if after else group[i - 1] if i > 0 else i
    return group


def name_unnamed(nodes: Sequence[tuple[str, str, list[str], list[str]]],
                 profiled: Iterable[str]) -> list[tuple[str, list[str], list[str]]]:
    """(name, inputs, outputs) of `nodes` ((name, op_type, inputs, outputs) in graph order),
    the unnamed ones named as the profiler calls them: onnxruntime inlines the function body
    of an op it has no kernel for (HardSwish-14 as HardSigmoid + Mul) into nodes with empty
    names, kept so in the saved graph, while the profiler names such a node
    `<op_type>_<node index>`. The profiled names of that form matching no saved node go, per
    op type, to that op's unnamed nodes: in index order, as graph order (inlined nodes take
    indices in the order they are added)."""
    named = {name for name, *_ in nodes if name}
    spare: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for p in profiled:
        m = UNNAMED.fullmatch(p)
        if m and p not in named:
            spare[m.group(1)].append((int(m.group(2)), p))
    for names in spare.values():
        names.sort(reverse=True)  # popped from the end: lowest index first
    return [(name or (spare[op].pop()[1] if spare.get(op) else ""), ins, outs)
            for name, op, ins, outs in nodes]
