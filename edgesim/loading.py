"""Models and targets as the API takes them: an ONNX path, `zoo:NAME`, ModelProto or `Graph`
into the IR; a shipped target name, YAML path or loaded target into a target object.

Below `edgesim.api` (which re-exports these): the pipeline, quantizer, validator and sweeps load
through here, so no module imports the API back.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from compiler.ir import CATEGORY_GEMM, Graph
from edgesim.errors import UserError

if TYPE_CHECKING:
    from hwmodels.target import Target, TargetRef

ZOO_PREFIX = "zoo:"


def zoo_model(name: str) -> Any:
    """Build the zoo model `name` (an onnx.ModelProto)."""
    from edgesim import zoo

    if name not in zoo.ZOO:
        raise UserError(f"{ZOO_PREFIX}{name}", f"no such zoo model; choose from {sorted(zoo.ZOO)}")
    return zoo.build(name)


def load_graph(model: Any, input_shapes: Mapping[str, Sequence[int]] | None = None, *,
               input_values: Mapping[str, Any] | None = None,
               batch_axes: Mapping[str, int | None] | None = None,
               shapes_only: bool = False, arch: str | None = None) -> Graph:
    """Load an ONNX path, `zoo:NAME`, ModelProto or already lowered `Graph` into the IR.

    `input_values` pins inputs to constants (e.g. {"sr": 16000}); `batch_axes` declares the
    axis holding samples of inputs where it is not detected; `shapes_only` leaves external
    weight data unread; `arch` is the architecture whose onnxruntime runs a quantized file
    (None: this machine's; see `compiler.frontend.load`).
    """
    if isinstance(model, Graph):
        return model
    from compiler.frontend import load

    if isinstance(model, str) and model.startswith(ZOO_PREFIX):
        model = zoo_model(model[len(ZOO_PREFIX):])
    elif isinstance(model, str | os.PathLike) and not os.path.exists(model):
        raise UserError(str(model), "no such file")
    g = load(model, input_shapes, input_values=input_values, batch_axes=batch_axes,
             shapes_only=shapes_only, arch=arch)
    return costable(pinned_interface(g, input_shapes))


def float_graph(model: Any, input_shapes: Mapping[str, Sequence[int]] | None = None,
                **options: Any) -> Graph:
    """`load_graph` for the commands that quantize (compile, quantize): a model file or
    ModelProto that is already quantized is refused (`UserError`) -- re-quantising what the
    frontend reads back loses what the file's quantization folded in (a ReLU clipped by a
    QuantizeLinear's range: cosine 0.755 on a Conv-ReLU-Concat) and ended in a KeyError on
    the missing weight codes. A `Graph` is taken as given (validate plans its own)."""
    g = load_graph(model, input_shapes, **options)
    # the plan as `simulation.planned_bits` reads it, without importing the cost models
    # (quantize's W4 path loads no hwmodels: tests/edgesim/test_quantize_w4_path.py)
    quantized = [la for la in g.layers if la.quant.w_bits or la.quant.a_bits]
    if quantized and not isinstance(model, Graph):
        where = os.fspath(model) if isinstance(model, str | os.PathLike) else g.name
        kinds = Counter(la.quant.fmt for la in quantized)
        raise UserError(where, "already quantized (layers in quantized formats: "
                        f"{', '.join(f'{fmt} x{n}' for fmt, n in kinds.most_common())}, e.g. "
                        f"{quantized[0].name!r}); compile and quantize take the float model -- "
                        "simulate and validate read a quantized file as it is")
    return g


def pinned_interface(g: Graph, given: Mapping[str, Sequence[int]] | None) -> Graph:
    """`g` with the dims the user fixed (`--input-shape`) declared static in the interface
    emission keeps, except each input's batch axis; an output dim named by one of them too.

    The frontend folds shapes with the given sizes (Shape/Reshape/Slice constants), so the
    emitted graph runs at those sizes only: nudenet's YOLOv8 compiled at 320x320 kept
    'height'/'width' symbolic and failed in onnxruntime at 416x416, ddddocr's CRNN kept
    'image_width' and failed at any width but 160.
    """
    face = g.interface
    if face is None or not given:
        return g
    dims, pinned = dict(face.dims), set()
    for name in [n for n in g.inputs if n in given and n in dims]:
        keep, shape = g.batch_axis(name), g.types[name].shape
        pinned |= {d for i, d in enumerate(dims[name]) if isinstance(d, str) and i != keep}
        dims[name] = tuple(d if i == keep or not isinstance(d, str) else int(shape[i])
                           for i, d in enumerate(dims[name]))
    for name in [n for n in g.outputs if len(dims.get(n, ())) == len(g.types[n].shape)]:
        dims[name] = tuple(int(g.types[name].shape[i]) if _reads(d, pinned) else d
                           for i, d in enumerate(dims[name]))
    return replace(g, interface=replace(face, dims=MappingProxyType(dims)))


def _reads(dim: int | str, pinned: set[str]) -> bool:
    """Whether symbolic dim `dim` is a pinned name or a formula over one (shape inference
    writes YOLOv8's box count as '(floor(floor(floor(height/2 - 1/2)/2)/2) + 1)*...')."""
    return isinstance(dim, str) and (dim in pinned or bool(
        pinned & set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", dim))))


def costable(g: Graph) -> Graph:
    """`g` if edgesim can cost and quantise it: at least one layer, no empty input (both are
    valid ONNX, and the ONNX backend tests use them, but there is nothing to deploy)."""
    from compiler.frontend.inputs import input_shape_hint

    if not g.layers:  # e.g. only Identity nodes
        raise UserError(g.name, "the graph has no operations left after clean-up")
    for name in g.inputs:
        shape = list(g.types[name].shape)
        if 0 in shape:
            raise UserError(f"input {name}", f"shape {shape} has a zero dimension; pass "
                            f"{input_shape_hint(name, shape)}")
    for name, t in g.types.items():
        if 0 in t.shape:  # a cost model divides by tile counts of every operand
            raise UserError(f"{g.name}: tensor {name}", f"shape {list(t.shape)} is empty; "
                            "there is nothing to cost")
    try:
        table = g.layer_table()  # MACs and bytes as int64: declared sizes may not fit
    except OverflowError:
        raise UserError(g.name, "its layer sizes overflow 64-bit counts (dims too large)"
                        ) from None
    empty = (table.category == CATEGORY_GEMM) & ((table.m == 0) | (table.n == 0)
                                                 | (table.k == 0))
    if empty.any():  # e.g. an empty weight: a GEMM of no work
        raise UserError(f"{g.name}: layer {table.names[int(empty.argmax())]}", "multiplies an "
                        "empty operand; there is nothing to cost")
    return g


def resolve_target(target: TargetRef) -> Target:
    """A shipped target name, a YAML path, or an already loaded target object."""
    from hwmodels.target import load_target

    return load_target(os.fspath(target)) if isinstance(target, str | os.PathLike) else target
