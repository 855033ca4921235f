"""Every quantised layer of a graph on its own, as one graph (`isolated_layers`).

Each quantised layer reads its activation inputs from graph inputs of the same names (the
float model's tensors, fed by the caller) and writes a renamed output, so no layer reads
another's quantised result: run once per batch (e.g. in onnxruntime), it gives each layer's
output as the emitted model computes it from float inputs, what `compiler.layer_error`
measures (the reference fake-quant executor computes the same, in numpy).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from types import MappingProxyType

from compiler.ir import Graph, Layer


def isolated_output(tensor: str) -> str:
    """The name under which `isolated_layers` writes `tensor`."""
    return f"{tensor}#isolated"


def isolated_layers(qg: Graph, chosen: Callable[[Layer], bool]) -> Graph | None:
    """The layers of `qg` that `chosen` picks, each reading its non-weight inputs from
    graph inputs and writing `isolated_output(<its first output>)`; None if none is picked
    or a picked layer has more than one output."""
    layers = [layer for layer in qg.layers if chosen(layer)]
    if not layers or any(len(layer.outputs) != 1 for layer in layers):
        return None
    copies = tuple(replace(layer, outputs=(isolated_output(layer.outputs[0]),))
                   for layer in layers)
    ins = tuple(dict.fromkeys(t for layer in layers for t in layer.inputs
                              if t and t not in qg.weights))
    used = {t for layer in layers for t in layer.inputs if t in qg.weights}
    weights = {t: w for t, w in qg.weights.items()
               if t in used or any(t.startswith(f"{layer.name}::") for layer in layers)}
    types = {**{t: qg.types[t] for t in ins},
             **{c.outputs[0]: qg.types[layer.outputs[0]] for layer, c in zip(layers, copies)}}
    return Graph(f"{qg.name}.isolated", ins, tuple(c.outputs[0] for c in copies), copies,
                 MappingProxyType(weights), MappingProxyType(types))
