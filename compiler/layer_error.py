"""Measured quantisation error of each layer on its own: the layer's output computed as the
emitted model computes it (`compiler.fake_quant`), from the float model's own inputs to that
layer, against its float output. Errors do not accumulate from earlier layers, so a low
figure points at the layer itself (an embedding output, an attention-score matmul, a first
or last layer forced to few bits).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np

from compiler import fake_quant
from compiler.executor import run
from compiler.ir import Graph, Layer

CATASTROPHIC_SQNR_DB = 10.0  # output noise above a tenth of the signal's power


def measured(layer: Layer) -> bool:
    """Whether `layer_sqnr` measures `layer`: a quantised weight or activation."""
    return layer.quant.fmt not in ("float", None) and (
        layer.quant.w_bits is not None or layer.quant.a_bits is not None)


Env = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


def layer_sqnr(qg: Graph, batches: Iterable[Mapping[str, np.ndarray]],
               reference: Graph | None = None, forward: Env | None = None,
               quantised: Env | None = None) -> dict[str, float]:
    """Output SQNR in dB of every quantised layer of `qg`, alone, summed over `batches`,
    against the float model `reference` (default `qg` run in float; pass the source model
    when the quantised one changed float constants, e.g. biases by bias correction).
    `forward(feeds)` computes `reference`'s float32 tensors (default the reference executor;
    e.g. onnxruntime, equal to float rounding and several times faster). `quantised(env)`
    gives every quantised layer's first output from the float tensors `env` (weights
    included), keyed by that output's name (default `compiler.fake_quant` per layer, in
    numpy; e.g. `compiler.layer_graph.isolated_layers` run in onnxruntime)."""
    layers = [layer for layer in qg.layers if measured(layer)]
    relu = _feeds_only_relus(qg)
    signal = dict.fromkeys((layer.name for layer in layers), 0.0)
    noise = dict(signal)
    for feeds in batches:
        ref_env = (forward(feeds) if forward is not None
                   else run(reference or qg, feeds, dtype="float32", keep=True))
        env = {**qg.weights, **ref_env}
        outs = quantised(env) if quantised is not None else None
        for layer in layers:
            ref = np.asarray(env[layer.outputs[0]], np.float64)
            got = np.asarray(fake_quant.forward(layer, env)[0] if outs is None
                             else outs[layer.outputs[0]], np.float64)
            if layer.name in relu:  # compared as the ReLU after it sees it
                ref, got = np.maximum(ref, 0.0), np.maximum(got, 0.0)
            signal[layer.name] += float(np.sum(ref * ref))
            noise[layer.name] += float(np.sum((got - ref) ** 2))
    return {name: float("inf") if noise[name] == 0 else
            float(10 * np.log10(max(signal[name], 1e-300) / noise[name])) for name in signal}


def _feeds_only_relus(g: Graph) -> frozenset[str]:
    """Layers requantised onto a grid that starts at 0 (zero point 0) whose output only ReLUs
    read: the grid is the ReLU's, so their negative outputs are not an error of their own."""
    users = g.consumers()
    return frozenset(layer.name for layer in g.layers
                     if layer.quant.out_scale is not None and layer.quant.out_zero_point == 0
                     and (us := users.get(layer.outputs[0], [])) and all(
                         u.kind == "activation" and u.attrs.get("fn") == "relu" for u in us))


def catastrophic(sqnr_db: Mapping[str, float],
                 threshold_db: float = CATASTROPHIC_SQNR_DB) -> dict[str, float]:
    """The layers whose own output SQNR is below `threshold_db`."""
    return {name: db for name, db in sqnr_db.items() if db < threshold_db}
