"""The Python API; each CLI subcommand is a thin layer over one function here."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from compiler.ir import Graph
from edgesim.errors import UserError

ZOO_PREFIX = "zoo:"


def zoo_model(name: str) -> Any:
    """Build the zoo model `name` (an onnx.ModelProto)."""
    from edgesim import zoo

    if name not in zoo.ZOO:
        raise UserError(f"{ZOO_PREFIX}{name}", f"no such zoo model; choose from {sorted(zoo.ZOO)}")
    return zoo.build(name)


@dataclass(frozen=True)
class LayerSummary:
    """One row of `inspect`: what a layer is and what it costs in the abstract."""

    name: str
    kind: str
    detail: str          # e.g. the eltwise/activation function
    out_shape: tuple[int, ...]
    macs: int
    params: int
    in_bytes: int
    out_bytes: int


@dataclass(frozen=True)
class Inspection:
    """Result of `inspect`: per-layer rows and totals of a lowered model."""

    model: str
    notes: tuple[str, ...]
    layers: tuple[LayerSummary, ...]
    total_macs: int
    total_params: int
    weight_bytes: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def load_graph(model: Any, input_shapes: Mapping[str, Sequence[int]] | None = None) -> Graph:
    """Load an ONNX path, `zoo:NAME`, ModelProto or already lowered `Graph` into the IR."""
    if isinstance(model, Graph):
        return model
    from compiler.frontend import load

    if isinstance(model, str) and model.startswith(ZOO_PREFIX):
        return load(zoo_model(model[len(ZOO_PREFIX):]), input_shapes)
    if isinstance(model, str | os.PathLike) and not os.path.exists(model):
        raise UserError(str(model), "no such file")
    return load(model, input_shapes)


def inspect(model: Any, input_shapes: Mapping[str, Sequence[int]] | None = None) -> Inspection:
    """Lower `model` and summarise every layer (op, output shape, MACs, params, bytes)."""
    g = load_graph(model, input_shapes)
    t = g.layer_table()
    rows = tuple(
        LayerSummary(
            name=layer.name, kind=layer.kind, detail=str(layer.attrs.get("fn", "")),
            out_shape=g.types[layer.outputs[0]].shape, macs=int(t.macs[i]),
            params=int(t.w_elems[i]), in_bytes=int(t.in_bytes[i]), out_bytes=int(t.out_bytes[i]),
        )
        for i, layer in enumerate(g.layers)
    )
    params = sum(w.size for w in g.weights.values() if w.dtype.kind == "f")
    wbytes = sum(w.nbytes for w in g.weights.values())
    return Inspection(g.name, g.notes, rows, int(t.macs.sum()), int(params), int(wbytes))
