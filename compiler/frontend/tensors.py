"""Every tensor of an ONNX model, before any weight is read: declared sizes checked against
their data (`check_tensor_sizes`), and external data read only from inside the model's folder
(`load_external_data`, `check_location`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence

import onnx
import onnx.external_data_helper

from compiler.errors import ModelError
from compiler.ir import MAX_TENSOR_ELEMS


def _elems(dims: Sequence[int]) -> int:
    return math.prod(int(d) for d in dims)


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

