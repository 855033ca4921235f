"""Load an ONNX model: read it safely, validate it, clean up exporter output, lower it to the IR.

The steps, in order (each a small function below):

1. read the bytes and parse them (a truncated or garbage file is a `ModelError`);
2. check every external-data location stays inside the model's folder, then load the data;
3. `onnx.checker`; upgrade default-domain opsets below 17 to 17;
4. clean up (`clean`): drop stale `value_info`, treat initializers listed as inputs as
   constants, give every input a static shape, lift `Constant` nodes to initializers, inline
   `If` nodes whose condition is known, and list every unsupported op in one error;
5. lower to the IR, fuse decomposed LayerNorm/RMSNorm/GELU/SiLU, fold BatchNorm.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

import numpy as np
import onnx
import onnx.external_data_helper
import onnx.inliner
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from compiler.errors import ModelError
from compiler.frontend.checker import check
from compiler.frontend.expand_lstm import expand_lstms
from compiler.frontend.inline_if import DEFAULT_DOMAINS, inline_ifs, select_if
from compiler.frontend.inputs import BatchAxes, InputValues, pin_inputs, resolve_batch_axes
from compiler.frontend.inputs import declared_dims as _declared_dims
from compiler.frontend.lower import lower_model
from compiler.frontend.opset import default_opset, upgrade_opset
from compiler.frontend.patterns import fuse_patterns
from compiler.frontend.quantized import annotate, dequantize, is_quantized
from compiler.ir import MAX_TENSOR_ELEMS, Graph, Interface
from compiler.ops import claims
from compiler.passes.fold_batchnorm import fold_batchnorm

# Bounds checked before anything is allocated (a hostile file can declare any dims): elements
# of one graph input (2^31); one tensor's bound is `ir.MAX_TENSOR_ELEMS`
MAX_INPUT_ELEMS = 2**31
InputShapes = Mapping[str, Sequence[int]]
# symbolic dims that name a batch, wherever they sit (a hint gives them 1)
BATCH_NAMES = frozenset({"n", "b", "batch", "batch_size", "batchsize", "bs", "unk__0"})


@dataclass(frozen=True)
class Cleaned:
    """A cleaned model ready for `lower_model`, and what was decided on the user's behalf."""

    model: onnx.ModelProto
    notes: tuple[str, ...] = ()
    batch_axes: Mapping[str, int | None] = field(default_factory=dict)  # input -> axis


def load(model: str | os.PathLike[str] | onnx.ModelProto,
         input_shapes: InputShapes | None = None, *,
         input_values: InputValues | None = None,
         batch_axes: BatchAxes | None = None, shapes_only: bool = False) -> Graph:
    """Load, validate and clean an ONNX model and lower it to a fused `Graph`.

    Args:
        model: a path to an `.onnx` file (external data next to it), or a `ModelProto`.
        input_shapes: static shapes for graph inputs, overriding the declared ones; needed for
            every dynamic dimension except a batch dimension (which defaults to 1).
        input_values: inputs pinned to a value (e.g. {"sr": 16000}): they become constants
            and leave the model's inputs, so `If` nodes that test them are inlined.
        batch_axes: the axis holding samples per input, where it is not the detected one
            (None: no batch axis). Detected: axis 0, or, for an input whose first dimension
            is static while other inputs have a dynamic batch, its one dynamic dimension
            (or the one named like their batch dimension), e.g. a state [2, batch, H].
        shapes_only: leave external data unread: those weights become shape-only
            placeholders (zero-stride arrays of their shape and dtype, holding no memory),
            enough for simulation and allocation, which need shapes, not values.

    Returns:
        The lowered graph, with LayerNorm/RMSNorm/GELU/SiLU fused and BatchNorm folded.

    Raises:
        ModelError: the file is not a valid model, external data escapes the model's folder,
            the checker or the opset converter rejects it, a dynamic dimension has no shape,
            or ops are unsupported (all of them listed at once).
    """
    proto, where = read(model, shapes_only=shapes_only)
    interface = source_interface(proto)
    floated, marks = dequantize(proto) if is_quantized(proto) else (proto, {})  # read back
    name = _model_name(model, proto)
    del proto  # `read` and `dequantize` made these models: cleaned in place, not copied
    cleaned = _clean_owned(floated, input_shapes, where, input_values, batch_axes)
    del floated
    g = lower_model(cleaned.model, name)
    g = fold_batchnorm(fuse_patterns(g))
    g = annotate(g, marks) if marks else g                              # bits + format rows
    axes = {n: a for n, a in cleaned.batch_axes.items() if n in g.inputs and a != 0}
    return replace(g, notes=g.notes + cleaned.notes, batch_axes=MappingProxyType(axes),
                   interface=interface)


def source_interface(model: onnx.ModelProto) -> Interface:
    """The declared dims of the model's inputs and outputs, and its opset (emission keeps
    them; a source below opset 17 was upgraded to 17 on reading)."""
    dims = {vi.name: tuple(_declared_dims(vi) or ()) for vi in [*model.graph.input,
                                                             *model.graph.output]}
    producer = " ".join(p for p in (model.producer_name, model.producer_version) if p)
    return Interface(MappingProxyType(dims), default_opset(model), producer)


def read(model: str | os.PathLike[str] | onnx.ModelProto, *,
         shapes_only: bool = False) -> tuple[onnx.ModelProto, str]:
    """Parse, load external data (`shapes_only`: only check where it is), check and upgrade
    a model; return it with its display name.

    The file is read once, and the checker runs once, on a skeleton without the weights'
    data (`compiler.frontend.checker`). A `ModelProto` argument is copied, never modified.
    """
    if isinstance(model, onnx.ModelProto):
        proto, where, folder = _copy(model), model.graph.name or "model", None
    else:
        where, folder = os.fspath(model), os.path.dirname(os.path.abspath(model))
        proto = parse(_read_bytes(where), where)
    check_tensor_sizes(proto, where)
    # the quantized-model reader dequantises weights by value: it needs them
    load_external_data(proto, where, folder, shapes_only=shapes_only and not is_quantized(proto))
    check(proto, where)
    return upgrade_opset(proto, where), where


def _model_name(model: str | os.PathLike[str] | onnx.ModelProto, proto: onnx.ModelProto) -> str:
    if isinstance(model, onnx.ModelProto):
        return proto.graph.name or "model"
    return Path(model).stem


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


# --- 1. bytes -------------------------------------------------------------------------------


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ModelError(path, f"cannot read the model: {e.strerror or e}") from e


def parse(data: bytes, where: str) -> onnx.ModelProto:
    """Parse serialized model bytes; reject empty, corrupt or graph-less input."""
    if not data:
        raise ModelError(where, "not a valid ONNX model: the file is empty")
    try:
        proto = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise ModelError(where, f"not a valid ONNX model: {e}") from e
    # Protobuf happily parses some junk (and some truncations) into a message without a graph.
    if not proto.HasField("graph") or not proto.opset_import:
        raise ModelError(where, "not a valid ONNX model: it has no graph or no opset_import")
    return proto


def _elems(dims: Sequence[int]) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


_4BIT = {getattr(onnx.TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1")
         if hasattr(onnx.TensorProto, n)}
_ELEM_TYPES = set(onnx.TensorProto.DataType.values()) - {onnx.TensorProto.UNDEFINED}
_COMPLEX = {onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128}


def _stored_elems(t: onnx.TensorProto) -> int | None:
    """Elements the tensor's own data holds (None: external, strings or packed 4-bit fields)."""
    if t.data_location == onnx.TensorProto.EXTERNAL or t.data_type == onnx.TensorProto.STRING:
        return None
    if t.HasField("raw_data"):
        bits = 4 if t.data_type in _4BIT else \
            8 * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        return len(t.raw_data) * 8 // bits
    if t.data_type in _4BIT:
        return None
    n = len(getattr(t, onnx.helper.tensor_dtype_to_field(t.data_type)))
    return n // 2 if t.data_type in _COMPLEX else n


def _check_tensor(t: onnx.TensorProto, where: str) -> None:
    place = f"{where}: tensor {t.name or '(unnamed)'}"
    if any(d < 0 for d in t.dims):
        raise ModelError(place, f"negative dimension in {list(t.dims)}")
    n = _elems(t.dims)
    if n > MAX_TENSOR_ELEMS:
        raise ModelError(place, f"declares {n} elements (dims {list(t.dims)}); at most "
                         f"{MAX_TENSOR_ELEMS} are accepted")
    try:
        stored = _stored_elems(t)
    except (KeyError, ValueError, TypeError):
        raise ModelError(place, f"unknown data type {t.data_type}") from None
    # 4-bit data packs two per byte: an odd count leaves the last byte half used
    fits = stored in (n, n + 1) if t.data_type in _4BIT else stored == n
    if stored is not None and not fits:
        raise ModelError(place, f"holds {stored} elements but its dims {list(t.dims)} need {n}")


def check_tensor_sizes(model: onnx.ModelProto, where: str) -> None:
    """Every tensor's declared size is bounded and matches its data, before any is read."""
    for t in _all_tensors(model):
        _check_tensor(t, where)
    for vi in model.graph.input:
        if vi.type.tensor_type.elem_type not in _ELEM_TYPES:
            raise ModelError(f"{where}: input {vi.name}", "has no known tensor element type "
                             f"({vi.type.tensor_type.elem_type})")


# --- 2. external data -----------------------------------------------------------------------


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor in a graph: initializers and tensor attributes, subgraphs included."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        for attr in node.attribute:
            yield from _attr_tensors(attr)


def _attr_tensors(attr: onnx.AttributeProto) -> Iterator[onnx.TensorProto]:
    if attr.HasField("t"):
        yield attr.t
    yield from attr.tensors
    if attr.HasField("sparse_tensor"):
        yield from (attr.sparse_tensor.values, attr.sparse_tensor.indices)
    for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
        yield from _graph_tensors(sub)


def _all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            for attr in node.attribute:
                yield from _attr_tensors(attr)


def _external_location(tensor: onnx.TensorProto) -> str:
    return next((e.value for e in tensor.external_data if e.key == "location"), "")


def check_location(location: str, folder: str) -> str | None:
    """Why an external-data `location` is unsafe relative to `folder`, or None if it is safe.

    The resolved path (symlinks followed) must lie inside the model's folder, so a model can
    never make edgesim read an arbitrary file.
    """
    if not location:
        return "external data has no location"
    if "\x00" in location:
        return "external data location contains a NUL byte"
    if os.path.isabs(location) or location.startswith(("/", "\\")):
        return f"external data location '{location}' is an absolute path"
    root = os.path.realpath(folder)
    target = os.path.realpath(os.path.join(root, location))
    if os.path.commonpath([root, target]) != root:
        return f"external data location '{location}' leaves the model's folder"
    if not os.path.isfile(target):
        return f"external data file '{location}' does not exist"
    return None


def load_external_data(model: onnx.ModelProto, where: str, folder: str | None, *,
                       shapes_only: bool = False) -> None:
    """Validate every external-data location, then read the data into `model` (in place).

    `shapes_only`: validate but read nothing; the tensors stay external and lower to
    shape-only placeholders (`compiler.frontend.lower.const_value`).
    """
    external = [t for t in _all_tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL]
    if shapes_only and folder is None:
        return  # nothing will be read, so nothing needs finding
    for tensor in external:
        problem = ("the model was given in memory, so external data cannot be found"
                   if folder is None else check_location(_external_location(tensor), folder))
        if problem:
            raise ModelError(f"{where}: initializer {tensor.name}", problem)
    for tensor in [] if shapes_only else external:
        assert folder is not None  # in memory, the check above raised
        try:
            onnx.external_data_helper.load_external_data_for_tensor(tensor, folder)
        except (OSError, ValueError, RuntimeError) as e:
            raise ModelError(f"{where}: initializer {tensor.name}", f"external data: {e}") from e


# --- 3. checker (compiler.frontend.checker) and opset (compiler.frontend.opset) -------------


# --- 4. clean-up ----------------------------------------------------------------------------


def clean(model: onnx.ModelProto, input_shapes: InputShapes | None = None,
          where: str = "model", input_values: InputValues | None = None,
          batch_axes: BatchAxes | None = None) -> Cleaned:
    """Turn exporter output into what `lower_model` takes; `model` itself is not modified.

    Local functions are inlined, stale `value_info` dropped, initializers listed as inputs
    treated as constants, inputs given static shapes, `Constant` nodes lifted to
    initializers, `If` nodes with a known condition inlined (on data: both branches and a
    `Where`) and LSTMs unrolled.

    Raises:
        ModelError: a dynamic dimension without a shape, an unknown name in `input_shapes`,
            `input_values` or `batch_axes`, a pinned value of the wrong shape, or
            unsupported ops (every one listed, with its nodes).
    """
    return _clean_owned(_copy(model), input_shapes, where, input_values, batch_axes)


def _clean_owned(model: onnx.ModelProto, input_shapes: InputShapes | None, where: str,
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
    selected: str | None = ""
    while selected is not None:
        while lift_constants(graph) | inline_ifs(model) | expand_lstms(model):
            pass
        selected = select_if(model)  # an If on data, once no If's condition is known
        notes += (selected,) if selected else ()
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


# --- input shapes ---------------------------------------------------------------------------


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
    if _elems(shape) > MAX_INPUT_ELEMS:
        raise ModelError(f"input {name}", f"shape {shape} has {_elems(shape)} elements; at "
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
        dims, made = _static_dims(vi.name, _declared_dims(vi), input_shapes.get(vi.name), axis)
        _set_shape(vi, dims)
        notes.extend(made)
    return tuple(notes)


def _set_shape(vi: onnx.ValueInfoProto, dims: Sequence[int]) -> None:
    shape = vi.type.tensor_type.shape
    shape.Clear()
    for d in dims:
        shape.dim.add().dim_value = d


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
