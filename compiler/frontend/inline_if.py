"""Inline `If` nodes whose condition is known before lowering.

The condition is an initializer, or shape arithmetic (Shape/Size/Gather/Concat/...) on the
now-static input shapes (`static_shapes.known_shapes`), evaluated with ONNX's reference
runtime. The taken branch's nodes
replace the `If`; outer-scope names keep their names, branch outputs become the If's outputs,
and other branch names are renamed only where they would collide.

An `If` whose condition depends on the input data (a detector's score gating a verifier, as in
openWakeWord's models) becomes both branches, inlined, and one `Where(cond, then, else)` per
output (`select_if`): the same values, at the cost of always running both branches. An `If`
on an integer or bool input (a mode, e.g. a sample rate) is left to be pinned instead.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from compiler.errors import ModelError
from compiler.frontend.static_shapes import inferred_shapes, known_shapes

DEFAULT_DOMAINS = ("", "ai.onnx")


# --- If nodes -------------------------------------------------------------------------------


def inline_ifs(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]] | None = None
               ) -> bool:
    """Inline the first `If` whose condition is known (in place); return whether one was.
    `shapes`: static shapes found so far, used and added to (`known_shapes`)."""
    graph = model.graph
    for index, node in enumerate(graph.node):
        if node.op_type != "If" or node.domain not in DEFAULT_DOMAINS:
            continue
        cond = _condition(model, node.input[0], shapes)
        if cond is not None:
            wanted = "then_branch" if cond else "else_branch"
            _inline_branch(graph, index, next(a.g for a in node.attribute if a.name == wanted))
            return True
    return False


def _condition(model: onnx.ModelProto, name: str,
               shapes: dict[str, tuple[int, ...]] | None) -> bool | None:
    """The If condition's value: an initializer, or shape arithmetic on static shapes."""
    init = next((t for t in model.graph.initializer if t.name == name), None)
    value = numpy_helper.to_array(init) if init is not None else static_value(model, name,
                                                                               shapes)
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


def select_if(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]] | None = None
              ) -> str | None:
    """Replace the first `If` whose condition is not known before run time by both branches
    and a `Where` per output (in place); return a note saying so, None if there is none.
    `shapes`: as `inline_ifs` takes them.

    Raises:
        ModelError: the condition holds more than one value, or the branches' outputs differ
            in shape (or have no static shape), so no `Where` can select between them.
    """
    graph = model.graph
    for index, node in enumerate(graph.node):
        if (node.op_type == "If" and node.domain in DEFAULT_DOMAINS
                and _condition(model, node.input[0], shapes) is None
                and not _mode_inputs(model, node.input[0])):
            _check_selectable(model, node, _select_branches(graph, index))
            return (f"If {node.name or node.output[0]}: its condition depends on the input "
                    f"data, so both branches run and Where picks each output (costs count both)")
    return None


# integer and bool inputs select a mode (silero's sample rate), not data: an If on one is
# left for the user to pin (`--input-value`), since running both modes costs neither
_MODE_TYPES = frozenset({onnx.TensorProto.BOOL, onnx.TensorProto.INT8, onnx.TensorProto.INT16,
                         onnx.TensorProto.INT32, onnx.TensorProto.INT64, onnx.TensorProto.UINT8,
                         onnx.TensorProto.UINT16, onnx.TensorProto.UINT32,
                         onnx.TensorProto.UINT64})


def _mode_inputs(model: onnx.ModelProto, tensor: str) -> list[str]:
    """The integer / bool graph inputs `tensor` is computed from (through any nodes)."""
    graph = model.graph
    made = {o: n for n in graph.node for o in n.output}
    modes = {i.name for i in graph.input if i.type.tensor_type.elem_type in _MODE_TYPES}
    found, stack, seen = [], [tensor], set()
    while stack:
        t = stack.pop()
        if not t or t in seen:
            continue
        seen.add(t)
        if t in modes:
            found.append(t)
        stack.extend(made[t].input if t in made else ())
    return found


def _select_branches(graph: onnx.GraphProto, index: int) -> list[tuple[str, str]]:
    """Node `index` (an If) -> its two branches inlined, each writing `OUT.then`/`OUT.else`,
    and `OUT = Where(reshape(cond, []), OUT.then, OUT.else)`."""
    node = onnx.NodeProto()
    node.CopyFrom(graph.node[index])
    taken, prefix = _taken_names(graph), node.name or "If"
    cond = _fresh(f"{node.input[0]}.scalar", taken, prefix)
    shape = _fresh(f"{cond}.shape", taken, prefix)
    graph.initializer.append(numpy_helper.from_array(np.zeros(0, np.int64), shape))
    added = [helper.make_node("Reshape", [node.input[0], shape], [cond],
                              _fresh(f"{prefix}.cond", taken, prefix))]
    arms = []
    for arm in ("then", "else"):
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = _fresh(f"{prefix}.{arm}", taken, prefix)
        copy.output[:] = [_fresh(f"{o}.{arm}", taken, prefix) for o in node.output]
        arms.append(copy)
    added += [helper.make_node("Where", [cond, a, b], [out], _fresh(f"{out}.where", taken, prefix))
              for a, b, out in zip(arms[0].output, arms[1].output, node.output)]
    nodes = list(graph.node)
    nodes[index:index + 1] = [*arms, *added]
    del graph.node[:]
    graph.node.extend(nodes)
    for arm, copy in zip(("then_branch", "else_branch"), arms):
        where = next(i for i, n in enumerate(graph.node) if n.name == copy.name)
        _inline_branch(graph, where, next(a.g for a in node.attribute if a.name == arm))
    return list(zip(arms[0].output, arms[1].output))


def _check_selectable(model: onnx.ModelProto, node: onnx.NodeProto,
                      arms: list[tuple[str, str]]) -> None:
    shapes = inferred_shapes(model)
    cond = shapes.get(node.input[0])
    if cond is not None and int(np.prod(cond)) != 1:  # e.g. a per-sample score at batch > 1
        raise ModelError(node.name or node.output[0], f"If condition {node.input[0]!r} has "
                         f"shape {cond}; an If takes one value (does the model run at batch 1 "
                         "only?)")
    for out, (a, b) in zip(node.output, arms):
        then, other = shapes.get(a), shapes.get(b)
        if then is None or then != other:
            raise ModelError(node.name or out, f"If output {out!r}: the condition depends on "
                             f"the input data and the branches give shapes {then} and {other}; "
                             "edgesim runs both and selects, which needs one static shape")


# --- shape arithmetic for If conditions ----------------------------------------------------


def _shape_leaf(node: onnx.NodeProto, shapes: Mapping[str, tuple[int, ...]]) -> np.ndarray | None:
    """Value of a Shape/Size node whose input has a static shape."""
    shape = shapes.get(node.input[0]) if node.op_type in ("Shape", "Size") else None
    if shape is None:
        return None
    if node.op_type == "Size":
        return np.array(int(np.prod(shape)), dtype=np.int64)
    attrs = {a.name: a.i for a in node.attribute}
    return np.array(shape[attrs.get("start", 0):attrs.get("end", len(shape))], dtype=np.int64)


def _ancestry(graph: onnx.GraphProto, tensor: str
              ) -> tuple[list[onnx.NodeProto], list[onnx.NodeProto]] | None:
    """Nodes that compute `tensor` from constants and Shape/Size nodes, and those Shape/Size
    nodes; None when it depends on input data."""
    made = {o: n for n in graph.node for o in n.output}
    consts = {t.name for t in graph.initializer}
    nodes, leaves, stack, seen = [], [], [tensor], set()
    while stack:
        t = stack.pop()
        if not t or t in seen or t in consts:
            continue
        seen.add(t)
        node = made.get(t)
        if node is None or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                               for a in node.attribute):
            return None
        if node.op_type in ("Shape", "Size"):
            leaves.append(node)
        else:
            nodes.append(node)
            stack.extend(node.input)
    order = {id(n): i for i, n in enumerate(graph.node)}
    return sorted(nodes, key=lambda n: order[id(n)]), leaves


def _leaf_values(model: onnx.ModelProto, leaves: list[onnx.NodeProto],
                 found: dict[str, tuple[int, ...]] | None) -> dict[str, np.ndarray] | None:
    """Values of the Shape/Size nodes, from static shapes (a reference run where inference
    leaves one open); None when one stays unknown."""
    consts = {t.name: tuple(t.dims) for t in model.graph.initializer}
    wanted = tuple(n.input[0] for n in leaves if n.input[0] not in consts)
    # inference (of the whole model, per condition) only where a leaf reads a computed tensor
    shapes = {**(known_shapes(model, wanted, found) if wanted else {}), **consts}
    values = {n.output[0]: _shape_leaf(n, shapes) for n in leaves}
    known = {t: v for t, v in values.items() if v is not None}
    return known if len(known) == len(values) else None


def static_value(model: onnx.ModelProto, tensor: str,
                 shapes: dict[str, tuple[int, ...]] | None = None) -> np.ndarray | None:
    """Value of `tensor` if it follows from constants and static shapes alone, else None.
    `shapes`: as `inline_ifs` takes them."""
    found = _ancestry(model.graph, tensor)
    leaves = None if found is None else _leaf_values(model, found[1], shapes)
    if found is None or leaves is None:
        return None
    nodes = found[0]
    used = {t for n in nodes for t in n.input}
    inits = [t for t in model.graph.initializer if t.name in used]
    inits += [numpy_helper.from_array(v, t) for t, v in leaves.items()]
    out = helper.make_tensor_value_info(tensor, onnx.TensorProto.UNDEFINED, None)
    sub = helper.make_graph(nodes, "condition", [], [out], inits)
    probe = helper.make_model(sub, opset_imports=model.opset_import, ir_version=model.ir_version)
    from onnx.reference import ReferenceEvaluator  # on demand: few models have an If to fold

    try:
        # run(None, feeds) returns the list of outputs (onnx annotates it as dict | list)
        return np.asarray(ReferenceEvaluator(probe).run(None, {})[0])  # type: ignore[index]
    except Exception:  # noqa: BLE001 - the reference runtime raises anything; unknown = None
        return None
