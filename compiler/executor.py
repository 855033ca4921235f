"""Reference executor: runs a `Graph` forward in numpy and backward through each op's VJP.

Float tensors run in the dtype asked for (float32 to match onnxruntime, float64 for gradient
checks and Hessian-vector products); integer tensors (token ids, indices) keep theirs.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np

from compiler import fake_quant as fq
from compiler.errors import ModelError
from compiler.ir import Graph
from compiler.ops import OPS


def _as_dtype(x: np.ndarray, dtype: np.dtype | None) -> np.ndarray:
    if dtype is None or x.dtype.kind != "f" or x.dtype == dtype:
        return x
    return x.astype(dtype)


def check_feeds(graph: Graph, feeds: Mapping[str, np.ndarray]) -> None:
    """Raise ModelError unless `feeds` gives every graph input with its static shape."""
    missing = [n for n in graph.inputs if n not in feeds]
    if missing:
        raise ModelError("inputs", f"missing {missing}; the model takes {list(graph.inputs)}")
    for name in graph.inputs:
        want, got = graph.types[name], np.asarray(feeds[name])
        if tuple(got.shape) != want.shape:
            raise ModelError(f"input {name}", f"shape {tuple(got.shape)}, model wants {want.shape}")
        if (got.dtype.kind == "f") != (np.dtype(want.dtype).kind == "f"):
            raise ModelError(f"input {name}", f"dtype {got.dtype}, model wants {want.dtype}")


def run(graph: Graph, feeds: Mapping[str, np.ndarray], *, dtype: str | None = None,
        keep: bool | Collection[str] = False, fake_quant: bool = False) -> dict[str, np.ndarray]:
    """Run the graph forward.

    Args:
        graph: the lowered model.
        feeds: one array per graph input.
        dtype: float dtype to compute in ("float32", "float64"); None keeps the model's own.
        keep: True to return every tensor, or a collection of tensor names to return besides
            the outputs (e.g. layer inputs for calibration).
        fake_quant: simulate the quantisation annotated on the layers (`Layer.quant`), as
            the emitted model computes it (`compiler.fake_quant`); False runs in float.

    Returns:
        Graph outputs (and the kept intermediates) by tensor name.
    """
    env = _forward(graph, feeds, None if dtype is None else np.dtype(dtype), fake_quant)
    if keep is True:
        return env
    wanted = set(graph.outputs) | set(keep or ())
    return {t: env[t] for t in env if t in wanted}


def _forward(graph: Graph, feeds: Mapping[str, np.ndarray], dtype: np.dtype | None,
             fake_quant: bool = False) -> dict[str, np.ndarray]:
    check_feeds(graph, feeds)
    env = {t: _as_dtype(w, dtype) for t, w in graph.weights.items()}
    env.update({n: _as_dtype(np.asarray(feeds[n]), dtype) for n in graph.inputs})
    for layer in graph.layers:
        if fake_quant and layer.quant.fmt != "float":
            env.update(zip(layer.outputs, fq.forward(layer, env)))
            continue
        xs = [env[t] if t else None for t in layer.inputs]
        env.update(zip(layer.outputs, OPS[layer.kind].forward(*xs, **layer.attrs)))
    return env


def vjp(graph: Graph, feeds: Mapping[str, np.ndarray], cotangents: Mapping[str, np.ndarray],
        *, dtype: str = "float64", keep: bool = False) -> dict[str, np.ndarray]:
    """Reverse-mode gradient: cotangents of graph outputs -> cotangents of inputs and weights.

    Args:
        graph: the lowered model.
        feeds: one array per graph input.
        cotangents: d(loss)/d(output) for some graph outputs (others count as zero).
        dtype: float dtype to compute in (float64 by default, for exact checks).
        keep: also return the cotangent of every intermediate tensor.

    Returns:
        Cotangents by tensor name for every float graph input and weight that the outputs
        depend on (plus intermediates with `keep`).
    """
    env = _forward(graph, feeds, np.dtype(dtype))
    grads: dict[str, np.ndarray] = {
        t: np.asarray(g, dtype=env[t].dtype) for t, g in cotangents.items()}
    for layer in reversed(graph.layers):
        gs = tuple(grads.get(t) for t in layer.outputs)
        if all(g is None for g in gs):
            continue
        xs = tuple(env[t] if t else None for t in layer.inputs)
        ys = tuple(env[t] for t in layer.outputs)
        for t, g in zip(layer.inputs, OPS[layer.kind].vjp(gs, xs, ys, **layer.attrs)):
            if t and g is not None and env[t].dtype.kind == "f":
                grads[t] = grads[t] + g if t in grads else g
    if keep:
        return grads
    leaves = set(graph.inputs) | set(graph.weights)
    return {t: g for t, g in grads.items() if t in leaves}
