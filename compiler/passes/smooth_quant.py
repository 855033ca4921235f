"""SmoothQuant scale migration (Xiao et al., "SmoothQuant", ICML 2023, eq. 4): activation
outlier channels are divided down by s and the weights that read them multiplied up by s,
which leaves the float function unchanged but makes per-tensor activation quantisation
see flatter channels.

`channel_absmax(g, batches)` measures max|x_j| per input channel of every smoothable site;
`smooth(g, absmax, alpha)` folds `s_j = max|X_j|^alpha / max|W_:j|^(1-alpha)` into the site:
a site is a LayerNorm/RMSNorm (normalising the last axis, per-channel scale [D]) whose output
is read by linear layers with constant weights (the QKV and first FFN projections of a
transformer). The norm's scale and bias are divided by s, each linear reader's weight columns
multiplied by s; any other reader (the residual Add of a post-LN block) reads the output
multiplied back by s through a new float `eltwise` mul layer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

import numpy as np

from compiler.executor import run
from compiler.ir import Graph, Layer, Spec, frozen_attrs, readonly

MIN_SCALE = 1e-5  # keeps s (and so the divided norm scale) away from 0 for dead channels
# A site has outlier channels when its largest channel max|x| is this many times its median
# one. Measured on calibration data: all-MiniLM-L6-v2's LayerNorm outputs 5.2 to 22.4 (where
# migration lifts W8A8 from 0.993 to 0.996 mean cosine), the digits transformer's 1.7 to 1.9
# (nothing to migrate); the threshold between them is a choice, not a published figure.
OUTLIER_RATIO = 4.0


def _is_last_axis_norm(g: Graph, layer: Layer) -> bool:
    if layer.kind != "norm" or layer.attrs.get("fn") not in ("layer_norm", "rms_norm"):
        return False
    rank = len(g.types[layer.inputs[0]].shape)
    scale = layer.inputs[1]
    return (layer.attrs["axis"] == rank - 1 and scale in g.weights
            and g.weights[scale].shape == g.types[layer.inputs[0]].shape[-1:]
            and all(not b or b in g.weights for b in layer.inputs[2:]))


def _reads_alone(r: Layer, out: str, users: Mapping[str, list[Layer]], g: Graph) -> bool:
    """`r` is a linear layer reading `out` as its input and a weight no other layer reads."""
    return (r.kind == "linear" and r.inputs[0] == out and r.inputs[1] in g.weights
            and out not in r.inputs[1:] and len(users[r.inputs[1]]) == 1)


def sites(g: Graph) -> dict[str, tuple[Layer, ...]]:
    """Smoothable norm layers (by name) and the linear layers that read their output; every
    weight the migration rewrites is read by that one layer only."""
    users = g.consumers()
    found = {}
    for layer in g.layers:
        out = layer.outputs[0]
        linear = tuple(r for r in users.get(out, ()) if _reads_alone(r, out, users, g))
        own = all(len(users[t]) == 1 for t in layer.inputs[1:] if t)
        if _is_last_axis_norm(g, layer) and own and linear and out not in g.outputs:
            found[layer.name] = linear
    return found


def _compensated(g: Graph, norm: Layer, linear: tuple[Layer, ...], s: np.ndarray,
                 weights: dict[str, np.ndarray]) -> Graph:
    """`g` with the norm's non-linear readers reading its output times `s` (a new layer)."""
    out = norm.outputs[0]
    others = {r.name for r in g.consumers()[out] if r not in linear}
    if not others:
        return g
    scale, restored = f"{norm.name}.smooth_scale", f"{out}.unsmoothed"
    weights[scale] = readonly(s.astype(g.types[out].dtype))
    mul = Layer(f"{norm.name}.unsmooth", "eltwise", (out, scale), (restored,),
                frozen_attrs({"fn": "mul"}))
    layers = []
    for layer in g.layers:
        if layer.name in others:
            layer = replace(layer, inputs=tuple(restored if t == out else t
                                                for t in layer.inputs))
        layers.append(layer)
        if layer is norm:
            layers.append(mul)
    types = {**g.types, scale: Spec(s.shape, g.types[out].dtype), restored: g.types[out]}
    return replace(g, layers=tuple(layers), types=types)


def channel_absmax(g: Graph, batches: Iterable[Mapping[str, np.ndarray]],
                   forward: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]
                   | None = None) -> dict[str, np.ndarray]:
    """max|x_j| per channel (last axis) of every site's output, over the batches (float32
    reference executor, or `forward`: feeds -> at least the sites' outputs, e.g. run in
    onnxruntime)."""
    outs = {name: g.layer(name).outputs[0] for name in sites(g)}
    absmax = {name: np.zeros(g.types[t].shape[-1]) for name, t in outs.items()}
    for feeds in batches:
        env = (run(g, feeds, dtype="float32", keep=tuple(outs.values())) if forward is None
               else forward(feeds))
        for name, t in outs.items():
            x = np.abs(env[t]).reshape(-1, absmax[name].size)
            absmax[name] = np.maximum(absmax[name], x.max(axis=0))
    return absmax


def outlier_ratio(x_absmax: np.ndarray) -> float:
    """Largest over median channel max|x| (inf if the median channel is dead)."""
    x = np.asarray(x_absmax, np.float64)
    median = float(np.median(x))
    return float(x.max() / median) if median > 0 else float("inf")


def outlier_sites(absmax: Mapping[str, np.ndarray], ratio: float = OUTLIER_RATIO
                  ) -> dict[str, np.ndarray]:
    """The sites of `absmax` whose channels hold outliers (`outlier_ratio` >= `ratio`)."""
    return {name: x for name, x in absmax.items() if outlier_ratio(x) >= ratio}


def smoothing_scales(x_absmax: np.ndarray, w_absmax: np.ndarray, alpha: float) -> np.ndarray:
    """s_j = max|X_j|^alpha / max|W_:j|^(1 - alpha) (SmoothQuant eq. 4), floored."""
    s = np.power(np.maximum(x_absmax, MIN_SCALE), alpha) / np.power(
        np.maximum(w_absmax, MIN_SCALE), 1.0 - alpha)
    return np.maximum(s, MIN_SCALE)


def smooth(g: Graph, absmax: Mapping[str, np.ndarray], alpha: float = 0.5) -> Graph:
    """`g` with SmoothQuant scales folded into every site in `absmax` (see the module
    docstring); the float function is unchanged up to rounding."""
    found = sites(g)
    weights = dict(g.weights)
    out = g
    for name, x_max in absmax.items():
        if name not in found:
            continue
        norm, readers = g.layer(name), found[name]
        w_max = np.max([np.abs(g.weights[r.inputs[1]]).max(axis=0) for r in readers], axis=0)
        s = smoothing_scales(np.asarray(x_max, np.float64), w_max, alpha)
        for t in norm.inputs[1:]:
            if t:
                weights[t] = readonly((g.weights[t] / s).astype(g.weights[t].dtype))
        for r in readers:
            w = g.weights[r.inputs[1]]
            weights[r.inputs[1]] = readonly((w * s[None, :]).astype(w.dtype))
        out = _compensated(out, out.layer(name), readers, s, weights)
    return replace(out, weights=weights)
