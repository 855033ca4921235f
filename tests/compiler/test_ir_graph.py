"""`Graph.to_nx` against the layer list it is built from."""

from __future__ import annotations

import networkx as nx

from compiler.frontend import load
from edgesim import zoo


def test_to_nx_is_the_layer_dataflow() -> None:
    g = load(zoo.build("digits_transformer"))
    made = {t: layer.name for layer in g.layers for t in layer.outputs}
    want = {(made[t], layer.name, t) for layer in g.layers for t in layer.inputs if t in made}
    d = g.to_nx()
    assert set(d.nodes) == {layer.name for layer in g.layers}
    assert set(d.edges) == {(a, b) for a, b, _ in want}
    assert all((a, b, e["tensor"]) in want for a, b, e in d.edges(data=True))
    assert nx.is_directed_acyclic_graph(d)
    order = {layer.name: i for i, layer in enumerate(g.layers)}
    assert all(order[a] < order[b] for a, b in d.edges)  # the layers are in topological order
