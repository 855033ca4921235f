"""Exporter output cleaned into what `lower_model` takes (`clean`): local functions inlined,
stale `value_info` dropped, initializers listed as inputs treated as constants, pinned inputs
made constants, every input given a static shape, `Constant` nodes lifted to initializers,
`If` nodes with a known condition inlined (on data: both branches and a `Where`), LSTMs
unrolled, constant regions holding unsupported ops folded, and every unsupported op listed in
one error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx.inliner
from onnx import numpy_helper

from compiler.errors import ModelError
from compiler.frontend.expand_lstm import expand_lstms
from compiler.frontend.fold_constants import fold_constants
from compiler.frontend.inline_if import DEFAULT_DOMAINS, inline_ifs, select_if
from compiler.frontend.inputs import (
    BatchAxes,
    InputShapes,
    InputValues,
    fix_input_shapes,
    pin_inputs,
    resolve_batch_axes,
)
from compiler.ops import claims


@dataclass(frozen=True)
class Cleaned:
    """A cleaned model ready for `lower_model`, and what was decided on the user's behalf."""

    model: onnx.ModelProto
    notes: tuple[str, ...] = ()
    batch_axes: Mapping[str, int | None] = field(default_factory=dict)  # input -> axis


def clean(model: onnx.ModelProto, input_shapes: InputShapes | None = None,
          where: str = "model", input_values: InputValues | None = None,
          batch_axes: BatchAxes | None = None) -> Cleaned:
    """Turn exporter output into what `lower_model` takes; `model` itself is not modified.

    Local functions are inlined, stale `value_info` dropped, initializers listed as inputs
    treated as constants, inputs given static shapes, `Constant` nodes lifted to
    initializers, `If` nodes with a known condition inlined (on data: both branches and a
    `Where`), LSTMs unrolled and constant regions holding unsupported ops folded.

    Raises:
        ModelError: a dynamic dimension without a shape, an unknown name in `input_shapes`,
            `input_values` or `batch_axes`, a pinned value of the wrong shape, or
            unsupported ops (every one listed, with its nodes).
    """
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return clean_owned(copy, input_shapes, where, input_values, batch_axes)


def clean_owned(model: onnx.ModelProto, input_shapes: InputShapes | None, where: str,
                input_values: InputValues | None, batch_axes: BatchAxes | None) -> Cleaned:
    """`clean` on a model nobody else holds: it is changed in place, not copied (a copy
    of every weight)."""
    model = _inline_functions(model, where)
    graph = model.graph
    del graph.value_info[:]  # exporters leave stale shapes that contradict inference
    _densify_sparse_initializers(graph)
    _drop_initializer_inputs(graph)
    notes = pin_inputs(graph, input_values or {})
    axes = resolve_batch_axes(graph, batch_axes or {})
    notes += fix_input_shapes(graph, input_shapes or {}, axes)
    shapes: dict[str, tuple[int, ...]] = {}  # static shapes found so far, by tensor name
    selected: str | None = ""
    while selected is not None:
        while lift_constants(graph) | inline_ifs(model, shapes) | expand_lstms(model, shapes):
            pass
        selected = select_if(model, shapes)  # an If on data, once no If's condition is known
        notes += (selected,) if selected else ()
    fold_constants(model)  # constants built with ops edgesim does not lower (SwiftF0's DFT)
    check_supported(graph, where)
    return Cleaned(model, notes, axes)


def _inline_functions(model: onnx.ModelProto, where: str) -> onnx.ModelProto:
    if not model.functions:
        return model
    try:
        return onnx.inliner.inline_local_functions(model)
    except (RuntimeError, ValueError) as e:
        raise ModelError(where, f"cannot inline local functions: {e}") from e


def _densify_sparse_initializers(graph: onnx.GraphProto) -> None:
    dense = [numpy_helper.from_array(_sparse_to_array(t), t.values.name)
             for t in graph.sparse_initializer]
    del graph.sparse_initializer[:]
    graph.initializer.extend(dense)


def _drop_initializer_inputs(graph: onnx.GraphProto) -> None:
    consts = {t.name for t in graph.initializer}
    kept = [vi for vi in graph.input if vi.name not in consts]
    del graph.input[:]
    graph.input.extend(kept)



# --- Constant nodes -------------------------------------------------------------------------


def _sparse_to_array(sparse: onnx.SparseTensorProto) -> np.ndarray:
    values = numpy_helper.to_array(sparse.values)
    indices = numpy_helper.to_array(sparse.indices)
    dense = np.zeros(tuple(sparse.dims), dtype=values.dtype)
    # Indices come either flat ([nnz]) or as coordinates ([nnz, rank]).
    flat = indices if indices.ndim == 1 else np.ravel_multi_index(indices.T, dense.shape)
    dense.reshape(-1)[flat] = values
    return dense


# Constant's value attributes -> numpy value (string constants have no IR type: not lifted).
_CONSTANT_VALUES: dict[str, Callable[[onnx.AttributeProto], np.ndarray]] = {
    "value": lambda a: numpy_helper.to_array(a.t),
    "sparse_value": lambda a: _sparse_to_array(a.sparse_tensor),
    "value_float": lambda a: np.array(a.f, dtype=np.float32),
    "value_floats": lambda a: np.array(a.floats, dtype=np.float32),
    "value_int": lambda a: np.array(a.i, dtype=np.int64),
    "value_ints": lambda a: np.array(a.ints, dtype=np.int64),
}


def _constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    if node.op_type != "Constant" or node.domain not in DEFAULT_DOMAINS or not node.attribute:
        return None
    attr = node.attribute[0]
    convert = _CONSTANT_VALUES.get(attr.name)
    return None if convert is None else np.asarray(convert(attr))


def lift_constants(graph: onnx.GraphProto) -> bool:
    """Turn `Constant` nodes into initializers (in place); return whether any was lifted."""
    kept, lifted = [], []
    for node in graph.node:
        value = _constant_value(node)
        if value is None:
            kept.append(node)
        else:
            lifted.append(numpy_helper.from_array(value, node.output[0]))
    if lifted:
        del graph.node[:]
        graph.node.extend(kept)
        graph.initializer.extend(lifted)
    return bool(lifted)


# --- unsupported ops ------------------------------------------------------------------------


def _unsupported_key(node: onnx.NodeProto) -> str | None:
    if claims(node.op_type, node.domain):
        return None
    return f"{node.domain}::{node.op_type}" if node.domain not in DEFAULT_DOMAINS else node.op_type


def check_supported(graph: onnx.GraphProto, where: str) -> None:
    """Raise one ModelError listing every unsupported op with the nodes that use it."""
    found: dict[str, list[str]] = {}
    for i, node in enumerate(graph.node):
        key = _unsupported_key(node)
        if key is not None:
            found.setdefault(key, []).append(node.name or f"{node.op_type}_{i}")
    if found:
        listed = ", ".join(f"{op} ({'node' if len(names) == 1 else 'nodes'} {', '.join(names)})"
                           for op, names in sorted(found.items()))
        raise ModelError(where, f"unsupported ops: {listed}")
