"""Independent oracles for op tests: central finite differences and onnxruntime.

- `check_vjp(op, xs, attrs)`: the op's VJP against central finite differences in float64,
  along random directions (one directional derivative per differentiable input).
- `onnx_single_node(...)`: a one-node ONNX model; `run_ort(model, feeds)` runs it in
  onnxruntime; `infer_specs(model)` gives ONNX shape inference's output shapes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

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
