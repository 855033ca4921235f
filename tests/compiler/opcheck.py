"""Independent oracles for op tests: central finite differences and onnxruntime.

- `check_vjp(op, xs, attrs)`: the op's VJP against central finite differences in float64,
  along random directions (one directional derivative per differentiable input).
- `onnx_single_node(...)`: a one-node ONNX model; `run_ort(model, feeds)` runs it in
  onnxruntime; `infer_specs(model)` gives ONNX shape inference's output shapes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compiler.ops.opdef import OpDef


def _directional_fd(op: OpDef, xs: list, attrs: Mapping, i: int, d: np.ndarray,
                    gs: Sequence[np.ndarray], h: float) -> float:
    plus, minus = list(xs), list(xs)
    plus[i] = xs[i] + h * d
    minus[i] = xs[i] - h * d
    yp = op.forward(*plus, **attrs)
    ym = op.forward(*minus, **attrs)
    return sum(float(np.sum(g * (a - b))) for g, a, b in zip(gs, yp, ym)) / (2 * h)


def check_vjp(op: OpDef, xs: Sequence[np.ndarray | None], attrs: Mapping[str, Any],
              seed: int = 0, h: float = 1e-6, rtol: float = 1e-5, atol: float = 1e-7,
              wrt: Sequence[int] | None = None) -> None:
    """Assert that `op.vjp` matches central finite differences of `op.forward` in float64.

    `wrt` lists the input positions to check (default: every float input that is present).
    Raises AssertionError naming the input on mismatch.
    """
    rng = np.random.default_rng(seed)
    xs = [None if x is None else (x.astype(np.float64) if x.dtype.kind == "f" else x)
          for x in xs]
    ys = op.forward(*xs, **attrs)
    gs = [rng.standard_normal(y.shape) if y.dtype.kind == "f" else np.zeros(y.shape)
          for y in ys]
    cots = op.vjp(tuple(gs), tuple(xs), tuple(ys), **attrs)
    assert len(cots) == len(xs), f"{op.kind}: {len(cots)} cotangents for {len(xs)} inputs"
    positions = wrt if wrt is not None else [
        i for i, x in enumerate(xs) if x is not None and x.dtype.kind == "f"]
    for i in positions:
        assert cots[i] is not None, f"{op.kind}: vjp gave no cotangent for input {i}"
        assert cots[i].shape == xs[i].shape, (
            f"{op.kind}: cotangent {i} has shape {cots[i].shape}, input {xs[i].shape}")
        d = rng.standard_normal(xs[i].shape)
        numeric = _directional_fd(op, xs, attrs, i, d, gs, h)
        analytic = float(np.sum(cots[i] * d))
        assert np.isclose(analytic, numeric, rtol=rtol, atol=atol), (
            f"{op.kind}: input {i}: vjp·d = {analytic!r}, finite difference = {numeric!r}")


class Case(NamedTuple):
    """One row of an op family's CASES table: an ONNX node and how to build it."""

    op: str
    inputs: dict[str, np.ndarray]
    attrs: dict[str, Any] = {}
    initializers: tuple[str, ...] = ()
    opset: int = 17
    n_outputs: int = 1


_NP_TO_ONNX = {
    np.dtype("float32"): TensorProto.FLOAT, np.dtype("float64"): TensorProto.DOUBLE,
    np.dtype("int64"): TensorProto.INT64, np.dtype("int32"): TensorProto.INT32,
    np.dtype("bool"): TensorProto.BOOL, np.dtype("float16"): TensorProto.FLOAT16,
    np.dtype("uint8"): TensorProto.UINT8, np.dtype("int8"): TensorProto.INT8,
}


def onnx_single_node(op_type: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str],
                     attrs: Mapping[str, Any] | None = None, initializers: Sequence[str] = (),
                     opset: int = 17, domain: str = "") -> onnx.ModelProto:
    """A one-node model. `inputs` in node order (name -> value; "" keys are absent inputs);
    the names listed in `initializers` become constant initializers, the rest graph inputs."""
    names = list(inputs)
    node = helper.make_node(op_type, names, list(outputs), domain=domain, **(attrs or {}))
    graph_inputs = [
        helper.make_tensor_value_info(n, _NP_TO_ONNX[v.dtype], v.shape)
        for n, v in inputs.items() if n and n not in initializers]
    inits = [numpy_helper.from_array(inputs[n], n) for n in initializers]
    outs = [helper.make_tensor_value_info(n, TensorProto.UNDEFINED, None) for n in outputs]
    graph = helper.make_graph([node], f"{op_type}_test", graph_inputs, outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(domain, opset)])
    model.ir_version = 8
    return model


def run_ort(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Run `model` in onnxruntime's CPU provider with all graph optimisations off."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    wanted = {i.name for i in sess.get_inputs()}
    return sess.run(None, {k: v for k, v in feeds.items() if k in wanted})


def infer_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """ONNX shape inference's output shapes (strict mode, data propagation on)."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    out = {}
    for vi in inferred.graph.output:
        dims = vi.type.tensor_type.shape.dim
        out[vi.name] = tuple(d.dim_value for d in dims)
    return out


def lower_and_run(op_type: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str],
                  attrs: Mapping[str, Any] | None = None, initializers: Sequence[str] = ()
                  ) -> tuple[list[np.ndarray], Any, dict]:
    """Lower one ONNX node with `compiler.ops.LOWER` (no frontend), type every produced layer
    with its shape rule and run its forward rule.

    `inputs` are in node order ("" keys or None values are absent inputs); the names in
    `initializers` are constants the rule may read. List-valued attrs are passed as tuples,
    as the frontend does.
    Returns the node's output values, the `Lowered` result and every tensor's `Spec`; asserts
    that each forward output has the shape and dtype its shape rule promised.
    """
    from compiler.ir import Spec
    from compiler.ops import LOWER, OPS
    from compiler.ops.opdef import Node

    present = {n: v for n, v in inputs.items() if n and v is not None}
    specs = {n: Spec(tuple(v.shape), v.dtype.name) for n, v in present.items()}
    consts = {n: present[n] for n in initializers if n in present}
    names = tuple(n if n in present else "" for n in inputs)
    node = Node("node", op_type, names, tuple(outputs), specs, consts)
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in (attrs or {}).items()}
    lowered = LOWER[op_type](node, **kwargs)
    values = {**present, **lowered.consts}
    specs.update({n: Spec(tuple(v.shape), v.dtype.name) for n, v in lowered.consts.items()})
    for layer in lowered.layers:
        op = OPS[layer.kind]
        outs = op.shape([specs[t] if t else None for t in layer.inputs], **layer.attrs)
        ys = op.forward(*[values[t] if t else None for t in layer.inputs], **layer.attrs)
        assert isinstance(ys, tuple) and len(ys) == len(layer.outputs) == len(outs), layer
        for t, y, s in zip(layer.outputs, ys, outs):
            assert (tuple(y.shape), y.dtype.name) == (s.shape, s.dtype), (t, y.shape, s)
        values.update(zip(layer.outputs, ys))
        specs.update(zip(layer.outputs, outs))
    return [values[t] for t in outputs], lowered, specs


def check_forward_vs_ort(op_type: str, inputs: Mapping[str, np.ndarray], n_outputs: int = 1,
                         attrs: Mapping[str, Any] | None = None, initializers: Sequence[str] = (),
                         opset: int = 17, rtol: float = 1e-4, atol: float = 1e-5) -> Any:
    """One ONNX node, three ways against onnxruntime and ONNX shape inference.

    (1) `lower_and_run` (rule + OpDefs directly): every output's shape equals ONNX shape
    inference's and its dtype and values equal onnxruntime's; (2) the same end to end through
    `compiler.frontend.lower_model` and `compiler.executor.run`. Outputs are named y0, y1, ...
    Returns the `Lowered` result of (1) for further checks.
    """
    from compiler.executor import run
    from compiler.frontend import lower_model

    outputs = [f"y{i}" for i in range(n_outputs)]
    model = onnx_single_node(op_type, inputs, outputs, attrs, initializers, opset)
    # onnxruntime refuses outputs of UNDEFINED type: give them their inferred types first
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    feeds = {n: v for n, v in inputs.items() if n and n not in initializers}
    want = run_ort(model, feeds)
    shapes = infer_shapes(model)
    got, lowered, _ = lower_and_run(op_type, inputs, outputs, attrs, initializers)
    graph = lower_model(model)
    e2e = run(graph, {n: v for n, v in feeds.items() if n in graph.inputs})
    for name, ref, mine in zip(outputs, want, got):
        assert tuple(mine.shape) == shapes[name], (name, mine.shape, shapes[name])
        for result in (mine, e2e[name]):
            assert result.dtype == ref.dtype, (name, result.dtype, ref.dtype)
            np.testing.assert_allclose(result, ref, rtol=rtol, atol=atol, err_msg=name)
    return lowered


def graph_model(nodes: Sequence[onnx.NodeProto], inputs: Sequence[tuple],
                outputs: Sequence[tuple], initializers: Mapping[str, np.ndarray] | None = None,
                opset: int = 17, ir_version: int = 8) -> onnx.ModelProto:
    """A model from nodes; `inputs`/`outputs` are (name, TensorProto elem type, dims) triples
    (output dims None: filled in by ONNX shape inference, since onnx.checker requires a shape
    on graph outputs) and `initializers` maps names to values."""
    graph = helper.make_graph(
        list(nodes), "test", [helper.make_tensor_value_info(*i) for i in inputs],
        [helper.make_tensor_value_info(*o) for o in outputs],
        [numpy_helper.from_array(np.asarray(v), n) for n, v in (initializers or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    inferred = onnx.shape_inference.infer_shapes(model).graph.output
    for out, known in zip(model.graph.output, inferred):
        out.CopyFrom(known)
    return model


def check_load_vs_ort(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray],
                      rtol: float = 1e-4, atol: float = 1e-5) -> Any:
    """Load `model` through `compiler.frontend.load.load` (cleaning, lowering, fusion, BN
    folding), run it with `compiler.executor.run` and assert every output equals onnxruntime's
    on the original model. Returns the loaded Graph."""
    from compiler.executor import run
    from compiler.frontend.load import load

    graph = load(model)
    ours = run(graph, feeds)
    for out, want in zip(model.graph.output, run_ort(model, feeds)):
        np.testing.assert_allclose(ours[out.name], want, rtol=rtol, atol=atol, err_msg=out.name)
    return graph
