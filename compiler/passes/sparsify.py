"""Activation sparsification (post-training, no retraining): thresholds on MAC-layer inputs.

Each thresholded MAC layer reads its activation through a layer `Where(|x - c| < t, c, x)`
(kind "activation", fn "threshold"), so a zero-skipping array sees `x - c` with a calibrated
share of zeros (the constant `W c` folds into the bias). Modes:

- "magnitude" (c = 0; TEAL, Liu et al. 2024; CATS, Lee et al. 2024): t is the target
  quantile of |x|;
- "centred" (SCAP, mode-centring of FC inputs): c is the mode of the input's distribution,
  t the target quantile of |x - c|; for inputs not centred at zero (e.g. after GELU). Convs
  keep c = 0, because their zero padding would become -c after the shift.

Thresholds are per MAC layer, so layers that share an input (q, k, v) each get their own.
Calibration is on float32 values, as the emitted model computes: `|x - c| < t` holds for the
target share of the calibration values (the nearest share tied values allow).
The delta rule for streams lives in `compiler.sparsity.delta_density` and the streaming
wrapper of `edgesim.sparsity`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

import numpy as np

from compiler.errors import ModelError
from compiler.executor import run
from compiler.ir import Graph, Layer

MODES = ("magnitude", "centred")
MAX_VALUES = 2_000_000  # values kept per input for the quantile (an even subsample beyond)
_MODE_MASS = 0.01  # an exact value holding this share of the inputs is their mode


@dataclass(frozen=True)
class Threshold:
    """The threshold of one MAC layer's activation input.

    Attributes:
        layer: the MAC layer.
        threshold: t; values with |x - center| < t become `center`.
        center: c (0 for magnitude thresholding).
        target: the sparsity (share of inputs equal to c) it was calibrated for.
    """

    layer: str
    threshold: float
    center: float
    target: float


def sparsifiable(g: Graph) -> tuple[Layer, ...]:
    """MAC layers with a weight and a float activation input: convs and linear layers."""
    return tuple(x for x in g.layers if x.kind in ("conv", "linear") and x.inputs[0]
                 not in g.weights and np.dtype(g.types[x.inputs[0]].dtype).kind == "f")


def input_values(g: Graph, batches: Iterable[Mapping[str, np.ndarray]],
                 layers: Iterable[str]) -> dict[str, np.ndarray]:
    """The float32 activation inputs of `layers` over all batches, flattened per layer."""
    wanted = {name: g.layer(name).inputs[0] for name in layers}
    parts: dict[str, list[np.ndarray]] = {name: [] for name in wanted}
    for feeds in batches:
        env = run(g, feeds, dtype="float32", keep=set(wanted.values()))
        for name, tensor in wanted.items():
            parts[name].append(env[tensor].astype(np.float32).ravel())
    if not any(parts.values()):
        raise ModelError("sparsify", "no calibration batches were given")
    return {name: _subsample(np.concatenate(p)) for name, p in parts.items()}


def _subsample(v: np.ndarray) -> np.ndarray:
    step = -(-v.size // MAX_VALUES)
    return v[::step] if step > 1 else v


def mode_center(values: np.ndarray) -> float:
    """The mode of a float sample: its most frequent exact value if that holds >= 1 % (e.g.
    the zeros of a ReLU), else the centre of the fullest of 256 bins over the central
    99.8 %."""
    vals, counts = np.unique(values, return_counts=True)
    if counts.max() >= _MODE_MASS * values.size:
        return float(vals[counts.argmax()])
    lo, hi = np.percentile(values, [0.1, 99.9])
    hist, edges = np.histogram(values, bins=256, range=(lo, hi))
    i = int(hist.argmax())
    return float(np.float32((edges[i] + edges[i + 1]) / 2))


def threshold_for(values: np.ndarray, target: float, center: float) -> float:
    """The float32 t whose share of `values` with |v - c| < t is closest to `target` (values
    that tie, e.g. an image's discrete levels, allow only some shares; on a draw, the larger).
    """
    if not 0.0 <= target < 1.0:
        raise ModelError("sparsify", f"target sparsity {target} is not in [0, 1)")
    dist = np.sort(np.abs(values.astype(np.float32) - np.float32(center)))
    want = target * dist.size
    need = int(np.ceil(want))
    if need == 0:
        return 0.0
    edge = dist[need - 1]
    below = np.searchsorted(dist, edge, side="left")  # share with t = edge
    upto = np.searchsorted(dist, edge, side="right")  # share with t just above edge
    if want - below < upto - want:
        return float(edge)
    return float(np.nextafter(edge, np.float32(np.inf)))


def calibrate_thresholds(g: Graph, values: Mapping[str, np.ndarray],
                         levels: Mapping[str, float], mode: str = "magnitude"
                         ) -> dict[str, Threshold]:
    """Thresholds reaching the target sparsity `levels[layer]` on calibration `values`
    (from `input_values`).

    Raises:
        ModelError: for an unknown mode or a target outside [0, 1).
    """
    if mode not in MODES:
        raise ModelError("sparsify", f"mode {mode!r} is not one of {', '.join(MODES)}")
    out = {}
    for name, target in levels.items():
        centred = mode == "centred" and g.layer(name).kind != "conv"
        c = mode_center(values[name]) if centred else 0.0
        out[name] = Threshold(name, threshold_for(values[name], target, c), c, target)
    return out


def _threshold_layer(layer: Layer, th: Threshold) -> Layer:
    return Layer(name=f"{layer.name}/sparsify", kind="activation", inputs=(layer.inputs[0],),
                 outputs=(f"{layer.name}/sparsify_output",),
                 attrs=MappingProxyType({"fn": "threshold", "threshold": th.threshold,
                                         "center": th.center}))


def sparsify(g: Graph, thresholds: Mapping[str, Threshold]) -> Graph:
    """`g` with a threshold layer in front of every MAC layer named in `thresholds` (those
    with t = 0 are left alone: they change nothing).

    Raises:
        ModelError: if a named layer is not a sparsifiable MAC layer.
    """
    ok = {x.name for x in sparsifiable(g)}
    bad = sorted(set(thresholds) - ok)
    if bad:
        raise ModelError(f"layer {bad[0]}", "is not a conv/linear layer with a float input")
    layers, types = [], dict(g.types)
    for layer in g.layers:
        th = thresholds.get(layer.name)
        if th is not None and th.threshold > 0.0:
            cut = _threshold_layer(layer, th)
            types[cut.outputs[0]] = g.types[layer.inputs[0]]
            layers.append(cut)
            layer = replace(layer, inputs=(cut.outputs[0], *layer.inputs[1:]))
        layers.append(layer)
    return replace(g, layers=tuple(layers), types=MappingProxyType(types))


def calibrate_sequential(g: Graph, batches: Iterable[Mapping[str, np.ndarray]],
                         levels: Mapping[str, float], mode: str = "magnitude"
                         ) -> dict[str, Threshold]:
    """Thresholds for several layers at once, calibrated in graph order on the model with
    the earlier thresholds already applied, so each layer reaches its target together with
    the others (thresholding one layer shifts the inputs of the layers after it).

    Costs one pass over `batches` per layer; `batches` must be re-iterable (a list).
    """
    batches = list(batches)
    out: dict[str, Threshold] = {}
    for layer in (x.name for x in g.layers if x.name in levels):
        vals = input_values(sparsify(g, out), batches, [layer])
        out.update(calibrate_thresholds(g, vals, {layer: levels[layer]}, mode))
    return out


# --- delta thresholds for streams -------------------------------------------------------------


def delta_state(layer: str) -> tuple[str, str]:
    """(graph input, graph output) names of the state a delta gate on `layer` carries."""
    return f"{layer}/delta_state", f"{layer}/delta_sent"


def _delta_layers(layer: Layer, t_name: str) -> tuple[Layer, ...]:
    # sent = Where(|x - state| < t, state, x): an element is sent again only when it moved
    # by t or more since it was last sent; the MAC layer reads what was sent
    x, (state, sent), base = layer.inputs[0], delta_state(layer.name), layer.name + "/delta"
    return (
        Layer(f"{base}/sub", "eltwise", (x, state), (f"{base}/d",),
              MappingProxyType({"fn": "sub"})),
        Layer(f"{base}/abs", "activation", (f"{base}/d",), (f"{base}/a",),
              MappingProxyType({"fn": "abs"})),
        Layer(f"{base}/less", "eltwise", (f"{base}/a", t_name), (f"{base}/keep",),
              MappingProxyType({"fn": "less"})),
        Layer(f"{base}/where", "eltwise", (f"{base}/keep", state, x), (sent,),
              MappingProxyType({"fn": "where"})),
    )


def delta_gates(g: Graph, thresholds: Mapping[str, float]) -> Graph:
    """A stateful `g` for frame-by-frame streams: every MAC layer named in `thresholds`
    reads its input through a delta gate (Neil et al., "Delta Networks", ICML 2017).

    Each gate adds a graph input (the values last sent, zeros before the first frame) and
    a graph output (the values sent now, the next frame's state); see `delta_state`.

    Raises:
        ModelError: if a named layer is not a sparsifiable MAC layer.
    """
    bad = sorted(set(thresholds) - {x.name for x in sparsifiable(g)})
    if bad:
        raise ModelError(f"layer {bad[0]}", "is not a conv/linear layer with a float input")
    layers: list[Layer] = []
    types, weights = dict(g.types), dict(g.weights)
    inputs, outputs = list(g.inputs), list(g.outputs)
    for layer in g.layers:
        if layer.name in thresholds:
            spec = g.types[layer.inputs[0]]
            t_name = f"{layer.name}/delta_threshold"
            weights[t_name] = np.asarray(thresholds[layer.name], dtype=spec.dtype)
            weights[t_name].flags.writeable = False
            gate = _delta_layers(layer, t_name)
            for x in gate:
                types[x.outputs[0]] = replace(spec, dtype="bool") if x.attrs["fn"] == "less" \
                    else spec
            state, sent = delta_state(layer.name)
            types[state], types[t_name] = spec, replace(spec, shape=())
            inputs.append(state)
            outputs.append(sent)
            layers.extend(gate)
            layer = replace(layer, inputs=(sent, *layer.inputs[1:]))
        layers.append(layer)
    return replace(g, inputs=tuple(inputs), outputs=tuple(outputs), layers=tuple(layers),
                   types=MappingProxyType(types), weights=MappingProxyType(weights))
