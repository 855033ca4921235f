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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
import onnx.external_data_helper
import onnx.inliner
import onnx.reference
from google.protobuf.message import DecodeError
from onnx import helper, numpy_helper

from compiler.errors import ModelError
from compiler.frontend.lower import lower_model
from compiler.frontend.patterns import fuse_patterns
from compiler.ir import Graph
from compiler.ops import SUPPORTED_ONNX_OPS
from compiler.passes.fold_batchnorm import fold_batchnorm

TARGET_OPSET = 17
DEFAULT_DOMAINS = ("", "ai.onnx")
InputShapes = Mapping[str, Sequence[int]]


@dataclass(frozen=True)
class Cleaned:
    """A cleaned model ready for `lower_model`, and what was decided on the user's behalf."""

    model: onnx.ModelProto
    notes: tuple[str, ...] = ()


def load(model: str | os.PathLike | onnx.ModelProto,
         input_shapes: InputShapes | None = None) -> Graph:
    """Load, validate and clean an ONNX model and lower it to a fused `Graph`.

    Args:
        model: a path to an `.onnx` file (external data next to it), or a `ModelProto`.
        input_shapes: static shapes for graph inputs, overriding the declared ones; needed for
            every dynamic dimension except a leading batch dimension (which defaults to 1).

    Returns:
        The lowered graph, with LayerNorm/RMSNorm/GELU/SiLU fused and BatchNorm folded.

    Raises:
        ModelError: the file is not a valid model, external data escapes the model's folder,
            the checker or the opset converter rejects it, a dynamic dimension has no shape,
            or ops are unsupported (all of them listed at once).
    """
    proto, where = read(model)
    cleaned = clean(proto, input_shapes, where)
    g = lower_model(cleaned.model, _model_name(model, proto))
    g = fold_batchnorm(fuse_patterns(g))
    return replace(g, notes=g.notes + cleaned.notes)


def read(model: str | os.PathLike | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """Parse, load external data, check and upgrade a model; return it with its display name.

    A `ModelProto` argument is copied, never modified.
    """
    if isinstance(model, onnx.ModelProto):
        proto, where, folder = _copy(model), model.graph.name or "model", None
    else:
        where, folder = os.fspath(model), os.path.dirname(os.path.abspath(model))
        proto = parse(_read_bytes(where), where)
    load_external_data(proto, where, folder)
    check(proto, where)
    return upgrade_opset(proto, where), where


def _model_name(model: str | os.PathLike | onnx.ModelProto, proto: onnx.ModelProto) -> str:
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
    if os.path.isabs(location) or location.startswith(("/", "\\")):
        return f"external data location '{location}' is an absolute path"
    root = os.path.realpath(folder)
    target = os.path.realpath(os.path.join(root, location))
    if os.path.commonpath([root, target]) != root:
        return f"external data location '{location}' leaves the model's folder"
    if not os.path.isfile(target):
        return f"external data file '{location}' does not exist"
    return None


def load_external_data(model: onnx.ModelProto, where: str, folder: str | None) -> None:
    """Validate every external-data location, then read the data into `model` (in place)."""
    external = [t for t in _all_tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL]
    for tensor in external:
        problem = ("the model was given in memory, so external data cannot be found"
                   if folder is None else check_location(_external_location(tensor), folder))
        if problem:
            raise ModelError(f"{where}: initializer {tensor.name}", problem)
    for tensor in external:
        try:
            onnx.external_data_helper.load_external_data_for_tensor(tensor, folder)
        except (OSError, ValueError, RuntimeError) as e:
            raise ModelError(f"{where}: initializer {tensor.name}", f"external data: {e}") from e


# --- 3. checker and opset -------------------------------------------------------------------


def _checker_where(where: str, message: str) -> str:
    """Name the node the checker complains about, when its message says which."""
    marker = "Bad node spec for node. Name: "
    if marker not in message:
        return where
    name = message.split(marker, 1)[1].split(" OpType:", 1)[0].strip()
    return f"{where}: node {name}" if name else where


def check(model: onnx.ModelProto, where: str) -> None:
    """Run `onnx.checker` (structure and node schemas); raise ModelError on failure."""
    try:
        onnx.checker.check_model(model, full_check=False)
    except (onnx.checker.ValidationError, ValueError) as e:
        message = str(e).strip()
        # One line for the CLI: the checker's text without its multi-line context dump.
        what = " ".join(message.split("==> Context")[0].split()) or type(e).__name__
        raise ModelError(_checker_where(where, message), f"invalid ONNX model: {what}") from e


def default_opset(model: onnx.ModelProto) -> int:
    """The model's default-domain (ai.onnx) opset version."""
    return next((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), 0)


def upgrade_opset(model: onnx.ModelProto, where: str) -> onnx.ModelProto:
    """Convert a model below opset 17 up to 17; newer opsets are left as they are."""
    version = default_opset(model)
    if version >= TARGET_OPSET:
        return model
    try:
        return onnx.version_converter.convert_version(model, TARGET_OPSET)
    except (RuntimeError, ValueError, onnx.checker.ValidationError) as e:
        what = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(where, f"cannot convert opset {version} to {TARGET_OPSET}: {what}") from e


# --- 4. clean-up ----------------------------------------------------------------------------


def clean(model: onnx.ModelProto, input_shapes: InputShapes | None = None,
          where: str = "model") -> Cleaned:
    """Turn exporter output into what `lower_model` takes; `model` itself is not modified.

    Local functions are inlined, stale `value_info` dropped, initializers listed as inputs
    treated as constants, inputs given static shapes, `Constant` nodes lifted to
    initializers and `If` nodes with a known condition inlined.

    Raises:
        ModelError: a dynamic dimension without a shape, an unknown name in `input_shapes`,
            or unsupported ops (every one listed, with its nodes).
    """
    model = _inline_functions(_copy(model), where)
    graph = model.graph
    del graph.value_info[:]  # exporters leave stale shapes that contradict inference
    _densify_sparse_initializers(graph)
    _drop_initializer_inputs(graph)
    notes = fix_input_shapes(graph, input_shapes or {})
    while lift_constants(graph) | inline_ifs(model):
        pass
    check_supported(graph, where)
    return Cleaned(model, notes)


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


def _declared_dims(vi: onnx.ValueInfoProto) -> list[int | str] | None:
    """Declared dims: an int where static, the symbol (or "?") where dynamic; None if no shape."""
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in tt.shape.dim]


def _example(name: str, dims: Sequence[int | str]) -> str:
    """`--input-shape` example with the input's real rank: known dims kept, others guessed."""
    def guess(i: int) -> int:
        return 1 if i == 0 else 224 if len(dims) == 4 and i >= 2 else 128
    shown = [d if isinstance(d, int) else guess(i) for i, d in enumerate(dims)]
    return f"--input-shape {name}={'x'.join(str(d) for d in shown)}"


def _static_dims(name: str, dims: list[int | str] | None,
                 given: Sequence[int] | None) -> tuple[list[int], list[str]]:
    """Resolve one input's dims: the user's shape wins, a dynamic batch dim becomes 1."""
    if given is not None:
        return _given_dims(name, dims, given), []
    if dims is None:
        raise ModelError(f"input {name}", f"has no declared shape; pass {_example(name, ['?'])}")
    notes = []
    if dims and isinstance(dims[0], str):
        notes.append(f"input '{name}': batch dimension '{dims[0]}' set to 1")
        dims = [1, *dims[1:]]
    for i, d in enumerate(dims):
        if isinstance(d, str):
            raise ModelError(f"input {name}",
                             f"dimension {i} ('{d}') is dynamic; pass {_example(name, dims)}")
    return [int(d) for d in dims], notes


def _given_dims(name: str, dims: list[int | str] | None, given: Sequence[int]) -> list[int]:
    shape = [int(d) for d in given]
    if dims is not None and len(dims) != len(shape):
        raise ModelError(f"input {name}", f"the model declares rank {len(dims)} but the given "
                         f"shape {'x'.join(map(str, shape))} has rank {len(shape)}")
    if any(d < 0 for d in shape):
        raise ModelError(f"input {name}", f"shape {shape} has a negative dimension")
    return shape


def fix_input_shapes(graph: onnx.GraphProto, input_shapes: InputShapes) -> tuple[str, ...]:
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
        dims, made = _static_dims(vi.name, _declared_dims(vi), input_shapes.get(vi.name))
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
_CONSTANT_VALUES = {
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


# --- If nodes -------------------------------------------------------------------------------


def inline_ifs(model: onnx.ModelProto) -> bool:
    """Inline the first `If` whose condition is known (in place); return whether one was."""
    graph = model.graph
    for index, node in enumerate(graph.node):
        if node.op_type != "If" or node.domain not in DEFAULT_DOMAINS:
            continue
        cond = _condition(model, node.input[0])
        if cond is not None:
            wanted = "then_branch" if cond else "else_branch"
            _inline_branch(graph, index, next(a.g for a in node.attribute if a.name == wanted))
            return True
    return False


def _condition(model: onnx.ModelProto, name: str) -> bool | None:
    """The If condition's value: an initializer, or shape arithmetic on static shapes."""
    init = next((t for t in model.graph.initializer if t.name == name), None)
    value = numpy_helper.to_array(init) if init is not None else static_value(model, name)
    if value is None or np.size(value) != 1:
        return None
    return bool(np.asarray(value).reshape(-1)[0])


def _taken_names(graph: onnx.GraphProto) -> set[str]:
    names = {vi.name for vi in (*graph.input, *graph.output)}
    names.update(t.name for t in graph.initializer)
    names.update(t for n in graph.node for t in (*n.input, *n.output, n.name))
    return names


def _fresh(base: str, taken: set[str], prefix: str) -> str:
    """`base` if unused, else `prefix/base` with a counter: branch names must not collide."""
    name, k = base, 0
    while not name or name in taken:
        k += 1
        name = f"{prefix}/{base}" if k == 1 else f"{prefix}/{base}_{k}"
    taken.add(name)
    return name


def _branch_renames(node: onnx.NodeProto, branch: onnx.GraphProto,
                    taken: set[str]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Map branch-internal names to outer names; list the outputs needing an Identity."""
    made = [o for n in branch.node for o in n.output if o]
    renames: dict[str, str] = {}
    copies: list[tuple[str, str]] = []
    for out, target in zip(branch.output, node.output):
        if out.name in made and out.name not in renames and target:
            renames[out.name] = target  # the branch node writes the If's output directly
        elif target:
            copies.append((out.name, target))
    prefix = node.name or "If"
    for t in (*made, *(i.name for i in branch.initializer)):
        if t not in renames:
            renames[t] = _fresh(t, taken, prefix)
    return renames, copies


def _renamed_graph(g: onnx.GraphProto, renames: Mapping[str, str]) -> None:
    """Rename tensor references inside a nested subgraph (in place)."""
    for n in g.node:
        _rename_io(n, renames)
    for vi in g.output:
        vi.name = renames.get(vi.name, vi.name)


def _rename_io(node: onnx.NodeProto, renames: Mapping[str, str]) -> None:
    for field in (node.input, node.output):
        for i, t in enumerate(field):
            field[i] = renames.get(t, t)
    for attr in node.attribute:
        for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
            _renamed_graph(sub, renames)


def _inline_branch(graph: onnx.GraphProto, index: int, branch: onnx.GraphProto) -> None:
    """Replace node `index` (an If) by the nodes of its taken branch (in place).

    Outer-scope names keep their names; branch outputs become the If's outputs; other
    branch names are renamed only where they would collide.
    """
    node = graph.node[index]
    taken = _taken_names(graph)
    renames, copies = _branch_renames(node, branch, taken)
    new_nodes = []
    for n in branch.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(n)
        _rename_io(copy, renames)
        copy.name = _fresh(n.name or n.op_type, taken, node.name or "If")
        new_nodes.append(copy)
    for src, target in copies:
        name = _fresh(f"{target}.identity", taken, node.name or "If")
        new_nodes.append(helper.make_node("Identity", [renames.get(src, src)], [target], name))
    for init in branch.initializer:
        graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(init),
                                                         renames[init.name]))
    nodes = list(graph.node)
    nodes[index:index + 1] = new_nodes
    del graph.node[:]
    graph.node.extend(nodes)


# --- shape arithmetic for If conditions ----------------------------------------------------


def _static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Fully static tensor shapes according to ONNX shape inference (inputs are static now)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except (onnx.shape_inference.InferenceError, RuntimeError, ValueError):
        return {}
    g = inferred.graph
    shapes = {}
    for vi in (*g.input, *g.value_info, *g.output):
        dims = _declared_dims(vi)
        if dims is not None and all(isinstance(d, int) for d in dims):
            shapes[vi.name] = tuple(int(d) for d in dims)
    return shapes


def _shape_leaf(node: onnx.NodeProto, shapes: Mapping[str, tuple[int, ...]]) -> np.ndarray | None:
    """Value of a Shape/Size node whose input has a static shape."""
    shape = shapes.get(node.input[0]) if node.op_type in ("Shape", "Size") else None
    if shape is None:
        return None
    if node.op_type == "Size":
        return np.array(int(np.prod(shape)), dtype=np.int64)
    attrs = {a.name: a.i for a in node.attribute}
    return np.array(shape[attrs.get("start", 0):attrs.get("end", len(shape))], dtype=np.int64)


def _ancestry(graph: onnx.GraphProto, tensor: str, shapes: Mapping[str, tuple[int, ...]]
              ) -> tuple[list[onnx.NodeProto], dict[str, np.ndarray]] | None:
    """Nodes that compute `tensor` from constants and static shapes, with the shape values;
    None when it depends on input data."""
    made = {o: n for n in graph.node for o in n.output}
    consts = {t.name for t in graph.initializer}
    nodes, leaves, stack, seen = [], {}, [tensor], set()
    while stack:
        t = stack.pop()
        if not t or t in seen or t in consts:
            continue
        seen.add(t)
        node = made.get(t)
        if node is None or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                               for a in node.attribute):
            return None
        leaf = _shape_leaf(node, shapes)
        if leaf is not None:
            leaves[t] = leaf
        else:
            nodes.append(node)
            stack.extend(node.input)
    order = {id(n): i for i, n in enumerate(graph.node)}
    return sorted(nodes, key=lambda n: order[id(n)]), leaves


def static_value(model: onnx.ModelProto, tensor: str) -> np.ndarray | None:
    """Value of `tensor` if it follows from constants and static shapes alone, else None."""
    found = _ancestry(model.graph, tensor, _static_shapes(model))
    if found is None:
        return None
    nodes, leaves = found
    used = {t for n in nodes for t in n.input}
    inits = [t for t in model.graph.initializer if t.name in used]
    inits += [numpy_helper.from_array(v, t) for t, v in leaves.items()]
    out = helper.make_tensor_value_info(tensor, onnx.TensorProto.UNDEFINED, None)
    sub = helper.make_graph(nodes, "condition", [], [out], inits)
    probe = helper.make_model(sub, opset_imports=model.opset_import, ir_version=model.ir_version)
    try:
        return np.asarray(onnx.reference.ReferenceEvaluator(probe).run(None, {})[0])
    except Exception:  # noqa: BLE001 - the reference runtime raises anything; unknown = None
        return None


# --- unsupported ops ------------------------------------------------------------------------


def _unsupported_key(node: onnx.NodeProto) -> str | None:
    if node.domain not in DEFAULT_DOMAINS:
        return f"{node.domain}::{node.op_type}"
    return None if node.op_type in SUPPORTED_ONNX_OPS else node.op_type


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
