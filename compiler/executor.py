"""Reference executor: runs a `Graph` forward in numpy and backward through each op's VJP.

Float tensors run in the dtype asked for (float32 to match onnxruntime, float64 for gradient
checks and Hessian-vector products); integer tensors (token ids, indices) keep theirs.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence

import numpy as np

from compiler import fake_quant as fq
from compiler.errors import ModelError
from compiler.ir import Graph, Layer
from compiler.ops import OPS

Arrays = Mapping[str, np.ndarray]
Values = tuple[np.ndarray | None, ...]  # per-input arrays or cotangents (None: absent)
Outputs = tuple[np.ndarray, ...]
Rule = Callable[[Layer, Values, Values, Outputs], Values]  # (layer, gs, xs, ys) -> per input


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


def vjp_rule(layer: Layer, gs: Values, xs: Values, ys: Outputs) -> Values:
    """The plain reverse-mode rule: the op's own vjp."""
    return OPS[layer.kind].vjp(gs, xs, ys, **layer.attrs)


def needed_vjp(layer: Layer, gs: Values, xs: Values, ys: Outputs,
               need: Sequence[bool]) -> Values:
    """The op's vjp for the inputs flagged in `need` only (None for the others): its
    `vjp_needed` where it has one, else its `vjp` with the rest dropped."""
    op = OPS[layer.kind]
    if op.vjp_needed is not None:
        return op.vjp_needed(gs, xs, ys, need, **layer.attrs)
    return tuple(v if n else None for v, n in zip(op.vjp(gs, xs, ys, **layer.attrs), need))


def backward(g: Graph, env: Arrays, seeds: Arrays, rule: Rule = vjp_rule,
             keep: Collection[str] = ()) -> dict[str, np.ndarray]:
    """Propagate `seeds` (per output tensor) back through `g` with `rule`, layer by layer.

    Args:
        g: the graph `env` was computed with.
        env: every tensor of a forward pass (`executor.run(..., keep=True)`).
        seeds: cotangents (or relevances) of some tensors.
        rule: per-layer backward rule (default: the op's vjp).
        keep: tensors to return besides the graph's float weights.

    Returns:
        The accumulated values of the kept tensors and weights that something reached.
    """
    acc = {t: np.asarray(v) for t, v in seeds.items()}
    wanted = set(keep) | set(g.weights)
    for layer in reversed(g.layers):
        gs = tuple(acc.get(t) for t in layer.outputs)
        if all(x is None for x in gs):
            continue
        xs = tuple(env[t] if t else None for t in layer.inputs)
        ys = tuple(env[t] for t in layer.outputs)
        _accumulate(acc, layer.inputs, rule(layer, gs, xs, ys), env)
        for t in layer.outputs:  # complete now (consumers come later): free unless wanted
            if t not in wanted:
                acc.pop(t, None)
    return {t: v for t, v in acc.items() if t in wanted}


def _accumulate(acc: dict[str, np.ndarray], names: Sequence[str], values: Values,
                env: Arrays) -> None:
    for t, v in zip(names, values):
        if t and v is not None and env[t].dtype.kind == "f":
            acc[t] = acc[t] + v if t in acc else v


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
    seeds = {t: np.asarray(g, dtype=env[t].dtype) for t, g in cotangents.items()}
    leaves = set(graph.inputs) | set(graph.weights)
    return backward(graph, env, seeds, keep=set(env) if keep else leaves)
