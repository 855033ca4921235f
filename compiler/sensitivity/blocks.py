"""Sensitivity of a per-block choice: the weight error at each (bits, block), as bits are measured.

Every data-driven method writes `omega_l(b) = score_l * ||Q_b(W_l) - W_l||^2` (HAWQ: Hessian
trace per parameter, LRP: relevance per unit weight energy, proxy: 1), the weight error taken
on the grid emission writes. A layer whose row is per-block (MatMulNBits, blocked
DequantizeLinear) has one such grid per block length, so its omega at (bits, block) is the same
score times the error on that grid: the exchange between error and harm is the method's own,
only the error changes with the block.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from compiler.formats import CHANNEL_AXIS
from compiler.ir import Graph, Layer
from compiler.quantizers import fake_quant_weight
from compiler.sensitivity.proxy import Sensitivity, weight_name

# Methods whose omega is score x weight error (`uniform`'s 4^-b knows no weights)
SCORED = ("hawq", "lrp", "proxy")


def block_error(layer: Layer, w: np.ndarray, bits: int, block: int) -> float:
    """`||Q(W) - W||^2` of `layer`'s weight `w` quantised per block of `block` along its
    reduction axis at `bits` (the grid of the layer's per-block rows), in float64."""
    w32 = np.asarray(w, np.float32)
    q = fake_quant_weight(w32, bits, "per_block", CHANNEL_AXIS[layer.kind], block)
    diff = q.astype(np.float64) - w32.astype(np.float64)
    return float(np.vdot(diff, diff))


def block_errors(g: Graph, layers: Sequence[Layer], w_bits: np.ndarray, blocks: np.ndarray,
                 mask: np.ndarray) -> np.ndarray:
    """float64 [L, B]: `block_error` of each layer at each choice (w_bits[b], blocks[b])
    where `mask` [L, B] is set, NaN elsewhere (each distinct pair is measured once)."""
    out = np.full(np.shape(mask), np.nan)
    for i, layer in enumerate(layers):
        w = g.weights[weight_name(layer)]
        seen: dict[tuple[int, int], float] = {}
        for j in np.flatnonzero(mask[i]).tolist():
            key = (int(w_bits[j]), int(blocks[j]))
            if key not in seen:
                seen[key] = block_error(layer, w, *key)
            out[i, j] = seen[key]
    return out


def block_omega(g: Graph, sens: Sensitivity, omega: np.ndarray, w_bits: np.ndarray,
                blocks: np.ndarray, blocked: np.ndarray) -> np.ndarray:
    """`omega` [L, B] with every per-block entry (`blocked` [L, B]) measured at its own
    block: `max(score, 0) * block_error` for the scored methods; `uniform` stays as it is
    (no weights, so every block of a width looks alike and the cheapest wins).

    Args:
        g: the graph whose weights `sens` scored.
        sens: the layers' sensitivity (its `score` and `method`).
        omega: [L, B] omega of each choice at its weight bits.
        w_bits, blocks: int [B] of the choices.
        blocked: bool [L, B], the layer's row at that choice is per-block.
    """
    if sens.method not in SCORED or not blocked.any():
        return omega
    layers = [g.layer(name) for name in sens.layers]
    err = block_errors(g, layers, w_bits, blocks, blocked)
    scored = np.maximum(sens.score, 0.0)[:, None] * err
    return np.where(blocked, scored, omega)
