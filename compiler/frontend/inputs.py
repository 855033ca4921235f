"""Graph inputs the user pins to a value, and the axis of each input that holds samples.

Both are decided before lowering (`compiler.frontend.load.clean`): a pinned input becomes an
initializer, so that `If` nodes testing it (silero-vad's `sr == 16000`) are inlined; a batch
axis other than 0 (a recurrent state `[2, batch, H]`) is detected from the declared shapes or
declared by the user, and travels on `Graph.batch_axes` to calibration.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from compiler.errors import ModelError

InputValues = Mapping[str, object]  # input name -> array-like value
BatchAxes = Mapping[str, int | None]  # input name -> axis holding samples (None: none)


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


def resolve_batch_axes(graph: onnx.GraphProto, declared: BatchAxes) -> dict[str, int | None]:
    """The batch axis of every graph input: declared by the user, else detected.

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
    for name, axis in declared.items():
        rank = len(dims[name] or ())
        if axis is not None and not -rank <= axis < rank:
            raise ModelError(f"input {name}", f"batch axis {axis} out of range for rank {rank}")
        axes[name] = None if axis is None else axis % rank
    return axes
