"""The activation term of a sensitivity: what a (weight bits, activation handling) choice adds
to the weight-only harm, measured like the weight term.

A weight-only sensitivity (HAWQ, LRP, proxy) gives `omega_w[l, w]`, the harm of rounding layer
l's weight to w bits. Quantising its input activations as well (static int8 QDQ, MatMulNBits'
int8 blocks) adds output error. Both errors are measured the same way, at the layer's own
output on calibration data (`compiler.fake_quant`, as the emitted model computes it, from the
float model's inputs to that layer): `e[l, (w, a)]`. The harm per unit of output error,
`omega_w[l, w] / e[l, (w, float)]`, is the layer's own exchange rate (HAWQ's curvature seen
at its output), so

    omega[l, (w, a)] = omega_w[l, w] + rate_l * (e[l, (w, a)] - e[l, (w, float)])

with rate_l taken at the weight-only choice with the largest (best-measured) errors; a layer
whose weight-only error is 0 there takes the median rate of the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from compiler import fake_quant
from compiler.executor import run
from compiler.ir import Graph
from compiler.passes.calibrate import CalibrationStats
from compiler.passes.quantize import QuantOptions, quantize

FLOAT = 32


def output_errors(g: Graph, rows: Sequence[int], choices: np.ndarray,
                  calib: CalibrationStats | None, batches: Iterable[Mapping[str, np.ndarray]],
                  options: QuantOptions | None = None) -> np.ndarray:
    """Float [len(rows), B]: squared output error of each layer `rows[i]` alone at each
    choice `choices[b]` = (w_bits, a_bits), summed over `batches` (float inputs to the layer).

    Every layer is quantised at one choice per pass, so B quantize passes cover all layers.
    """
    bits = np.full((len(g.layers), 2), FLOAT, dtype=np.int64)
    graphs = []
    for w, a in np.asarray(choices).tolist():
        bits[list(rows)] = (w, a)
        graphs.append(quantize(g, bits, calib, options or QuantOptions()))
    err = np.zeros((len(rows), len(graphs)))
    for feeds in batches:
        env = run(g, feeds, dtype="float32", keep=True)
        for b, qg in enumerate(graphs):
            full = {**qg.weights, **env}
            for i, r in enumerate(rows):
                layer = qg.layers[r]
                if layer.quant.fmt in ("float", None):  # runs float at this choice
                    continue
                ref = np.asarray(env[layer.outputs[0]], np.float64)
                got = np.asarray(fake_quant.forward(layer, full)[0], np.float64)
                err[i, b] = err[i, b] + float(np.sum((got - ref) ** 2))
    return err


def with_act_term(omega_w: np.ndarray, err: np.ndarray, choices: np.ndarray) -> np.ndarray:
    """[L, B] omega of every choice from the weight-only omega `omega_w` [L, B] (each column
    at its choice's weight bits) and the measured errors `err` [L, B] (see the module doc).

    A choice's weight-only twin is the choice with the same weight bits and float
    activations; a choice without one in `choices` keeps its weight-only omega.
    """
    c = np.asarray(choices)
    twin = {int(w): j for j, (w, a) in enumerate(c.tolist()) if a == FLOAT}
    only = [j for j, (w, a) in enumerate(c.tolist()) if a == FLOAT and w < FLOAT]
    rate = _rates(omega_w, err, only)
    out = omega_w.astype(np.float64).copy()
    for j, (w, a) in enumerate(c.tolist()):
        t = twin.get(int(w))
        if a < FLOAT and t is not None:
            out[:, j] = omega_w[:, t] + rate * (err[:, j] - err[:, t])
    return np.maximum(out, 0.0)


def _rates(omega_w: np.ndarray, err: np.ndarray, only: Sequence[int]) -> np.ndarray:
    """Per layer, omega per unit output error at the weight-only choice with most error."""
    if not only:
        return np.zeros(omega_w.shape[0])
    narrow = max(only, key=lambda j: float(err[:, j].sum()))
    e, o = err[:, narrow], omega_w[:, narrow]
    ok = e > 0
    rate = np.where(ok, o / np.where(ok, e, 1.0), np.nan)
    fill = float(np.median(rate[ok])) if ok.any() else 0.0
    return np.where(ok, rate, fill)
