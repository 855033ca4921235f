"""Graph inputs: the values the user pins, the axis of each that holds samples, and the
static shape each is given (`fix_input_shapes`).

All are decided before lowering (`compiler.frontend.clean`): a pinned input becomes an
initializer, so that `If` nodes testing it (silero-vad's `sr == 16000`) are inlined; a batch
axis other than 0 (a recurrent state `[2, batch, H]`) is detected from the declared shapes or
declared by the user, and travels on `Graph.batch_axes` to calibration.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from compiler.errors import ModelError

InputValues = Mapping[str, object]  # input name -> array-like value
BatchAxes = Mapping[str, int | None]  # input name -> axis holding samples (None: none)
InputShapes = Mapping[str, Sequence[int]]  # input name -> static shape


def declared_dims(vi: onnx.ValueInfoProto) -> list[int | str] | None:
    """Declared dims: an int where static, the symbol (or "?") where dynamic; None if no shape."""
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in tt.shape.dim]


def _pinned_value(vi: onnx.ValueInfoProto, value: object) -> np.ndarray:
    """`value` as the input's dtype, checked against its declared shape."""
    dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
    try:
        array = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise ModelError(f"input {vi.name}", f"cannot pin to {value!r}: {e}") from e
    dims = declared_dims(vi)
    if dims is not None and (len(dims) != array.ndim or any(
            isinstance(d, int) and d != n for d, n in zip(dims, array.shape))):
        raise ModelError(f"input {vi.name}", f"pinned value of shape {list(array.shape)} does "
                         f"not fit the declared shape {dims}")
    return array


def pin_inputs(graph: onnx.GraphProto, values: InputValues) -> tuple[str, ...]:
    """Turn the inputs named in `values` into initializers holding those values (in place).

    Raises:
        ModelError: a name that is not a graph input, or a value that does not fit it.
    """
    inputs = {vi.name: vi for vi in graph.input}
    unknown = sorted(set(values) - set(inputs))
    if unknown:
        raise ModelError(f"input {unknown[0]}",
                         f"no such graph input to pin; the model's inputs are {list(inputs)}")
    pinned = {n: _pinned_value(inputs[n], v) for n, v in values.items()}
    kept = [vi for vi in graph.input if vi.name not in pinned]
    del graph.input[:]
    graph.input.extend(kept)
    graph.initializer.extend(numpy_helper.from_array(v, n) for n, v in pinned.items())
    return tuple(f"input '{n}' pinned to {v.tolist()!r}: a constant, no longer a model input"
                 for n, v in pinned.items())


def _detected_axis(dims: list[int | str] | None, batch_names: set[str]) -> int | None:
    """The batch axis of an input whose first dim is static, when other inputs have a dynamic
    batch: the dim named like theirs, else its only dynamic dim (a state [2, ?, H])."""
    if not dims or isinstance(dims[0], str) or not batch_names:
        return 0
    dynamic = [i for i, d in enumerate(dims) if isinstance(d, str)]
    named = [i for i in dynamic if dims[i] in batch_names - {"?"}]
    return named[0] if named else dynamic[0] if len(dynamic) == 1 else 0


# ONNX recurrences whose layout 0 (the default) puts the batch on axis 1: X [seq, batch, in]
# and the initial states [directions, batch, hidden] (input positions 0 and 5..6)
_RECURRENT_BATCH_INPUTS = {"LSTM": (0, 5, 6), "GRU": (0, 5), "RNN": (0, 5)}


def _recurrent_axes(graph: onnx.GraphProto) -> dict[str, int]:
    """Axis 1 for each graph input a layout-0 LSTM/GRU/RNN reads as its sequence or initial
    state: its axis 0 is time steps or directions, never samples."""
    inputs = {vi.name for vi in graph.input}
    axes: dict[str, int] = {}
    for node in graph.node:
        layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
        if node.domain in ("", "ai.onnx") and layout == 0:
            for i in _RECURRENT_BATCH_INPUTS.get(node.op_type, ()):
                if i < len(node.input) and node.input[i] in inputs:
                    axes[node.input[i]] = 1
    return axes


def resolve_batch_axes(graph: onnx.GraphProto, declared: BatchAxes) -> dict[str, int | None]:
    """The batch axis of every graph input: declared by the user, else detected (axis 1 for
    a sequence-first recurrence's inputs).

    Raises:
        ModelError: a declared name that is not a graph input, or an axis out of range.
    """
    dims = {vi.name: declared_dims(vi) for vi in graph.input}
    unknown = sorted(set(declared) - set(dims))
    if unknown:
        raise ModelError(f"input {unknown[0]}",
                         f"no such graph input; the model's inputs are {list(dims)}")
    batch_names = {d[0] for d in dims.values() if d and isinstance(d[0], str)}
    axes = {n: _detected_axis(d, batch_names) for n, d in dims.items()}
    axes.update({n: a for n, a in _recurrent_axes(graph).items() if len(dims[n] or ()) > a})
    for name, axis in declared.items():
        rank = len(dims[name] or ())
        if axis is not None and not -rank <= axis < rank:
            raise ModelError(f"input {name}", f"batch axis {axis} out of range for rank {rank}")
        axes[name] = None if axis is None else axis % rank
    return axes


# Bound checked before anything is allocated (a hostile file can declare any dims): elements
# of one graph input (2^31); one tensor's bound is `ir.MAX_TENSOR_ELEMS`
MAX_INPUT_ELEMS = 2**31
# symbolic dims that name a batch, wherever they sit (a hint gives them 1)
BATCH_NAMES = frozenset({"n", "b", "batch", "batch_size", "batchsize", "bs", "unk__0"})


def input_shape_hint(name: str, dims: Sequence[int | str]) -> str:
    """An `--input-shape` example the CLI accepts (every dim >= 1), with the input's real
    rank: known positive dims kept, each guessed one named with its reason
    (`compiler.frontend.shape_hint`; `['?']`: no declared shape)."""
    from compiler.frontend.shape_hint import input_shape_hint as hint

    if list(dims) == ["?"]:
        return f"--input-shape {name}=1 (the model declares no shape: give the one you run at)"
    return hint(name, dims, BATCH_NAMES)


def _static_dims(name: str, dims: list[int | str] | None, given: Sequence[int] | None,
                 axis: int | None = 0) -> tuple[list[int], list[str]]:
    """Resolve one input's dims: the user's shape wins, a dynamic batch dim becomes 1."""
    if given is not None:
        return _given_dims(name, dims, given), []
    if dims is None:
        raise ModelError(f"input {name}",
                         f"has no declared shape; pass {input_shape_hint(name, ['?'])}")
    notes = []
    if axis is not None and axis < len(dims) and isinstance(dims[axis], str):
        where = "" if axis == 0 else f" (axis {axis})"
        notes.append(f"input '{name}': batch dimension '{dims[axis]}'{where} set to 1")
        dims = [*dims[:axis], 1, *dims[axis + 1:]]
    for i, d in enumerate(dims):
        if isinstance(d, str):
            raise ModelError(f"input {name}", f"dimension {i} ('{d}') is dynamic; pass "
                             f"{input_shape_hint(name, dims)}")
    return _bounded(name, [int(d) for d in dims]), notes


def _bounded(name: str, shape: list[int]) -> list[int]:
    """An input shape with no negative dim and at most MAX_INPUT_ELEMS elements (empty
    tensors are valid ONNX; the product layer refuses them for costing)."""
    if any(d < 0 for d in shape):
        raise ModelError(f"input {name}", f"shape {shape} has a negative dimension")
    if math.prod(shape) > MAX_INPUT_ELEMS:
        raise ModelError(f"input {name}", f"shape {shape} has {math.prod(shape)} elements; at "
                         f"most {MAX_INPUT_ELEMS} are accepted")
    return shape


def _given_dims(name: str, dims: list[int | str] | None, given: Sequence[int]) -> list[int]:
    shape = [int(d) for d in given]
    if dims is not None and len(dims) != len(shape):
        raise ModelError(f"input {name}", f"the model declares rank {len(dims)} but the given "
                         f"shape {'x'.join(map(str, shape))} has rank {len(shape)}")
    for i, (d, g) in enumerate(zip(dims or (), shape)):
        # onnxruntime refuses a run whose input differs from a fixed dim: the model would be
        # costed, calibrated and emitted at a size it cannot run
        if isinstance(d, int) and d > 0 and d != g:
            raise ModelError(f"input {name}", f"dimension {i} is fixed at {d} by the model; "
                             f"the given shape {'x'.join(map(str, shape))} has {g} there")
    return _bounded(name, shape)


def fix_input_shapes(graph: onnx.GraphProto, input_shapes: InputShapes,
                     batch_axes: BatchAxes | None = None) -> tuple[str, ...]:
    """Write a static shape into every graph input (in place); return the notes made.

    Raises:
        ModelError: a name in `input_shapes` that is not a graph input, or a dynamic
            non-batch dimension without a given shape.
    """
    names = [vi.name for vi in graph.input]
    unknown = sorted(set(input_shapes) - set(names))
    if unknown:
        raise ModelError(f"input {unknown[0]}",
                         f"no such graph input; the model's inputs are {', '.join(names)}")
    notes: list[str] = []
    for vi in graph.input:
        axis = (batch_axes or {}).get(vi.name, 0)
        dims, made = _static_dims(vi.name, declared_dims(vi), input_shapes.get(vi.name), axis)
        _set_shape(vi, dims)
        notes.extend(made)
    return tuple(notes)


def _set_shape(vi: onnx.ValueInfoProto, dims: Sequence[int]) -> None:
    shape = vi.type.tensor_type.shape
    shape.Clear()
    for d in dims:
        shape.dim.add().dim_value = d
