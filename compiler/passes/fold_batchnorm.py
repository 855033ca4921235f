"""Fold inference-mode BatchNorm into the conv or linear layer that feeds it.

BN(y) = (y - mean) * s + beta with s = gamma / sqrt(var + eps), per output channel. When
y = conv(x, w) + b (or linear) and nothing else reads y, BN(y) = conv(x, w * s) + (b - mean) * s
+ beta: one MAC layer with new weights (`<layer>.weight_bn`, `<layer>.bias_bn`) replaces both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

import numpy as np

from compiler.ir import Graph, Layer, Spec, readonly

FOLDS_INTO = ("conv", "linear")


@dataclass(frozen=True)
class Fold:
    """One BN folded into its producer: the layers replaced and the new constants."""

    producer: Layer
    batchnorm: Layer
    folded: Layer
    weights: Mapping[str, np.ndarray]


def _channel_axis_ok(g: Graph, producer: Layer) -> bool:
    """BN normalises axis 1; a linear layer's channels are its last axis, so rank must be 2."""
    return producer.kind == "conv" or len(g.types[producer.outputs[0]].shape) == 2


def foldable(g: Graph, bn: Layer, made: Mapping[str, Layer],
             users: Mapping[str, list[Layer]]) -> Layer | None:
    """The conv/linear layer `bn` can fold into, or None.

    Requires: `bn` is a batch_norm whose parameters are constants; its input is produced by a
    conv/linear layer with constant weights, read by nothing else and not a graph output.
    """
    if bn.kind != "norm" or bn.attrs.get("fn") != "batch_norm" or len(bn.inputs) != 5:
        return None
    producer = made.get(bn.inputs[0])
    if producer is None or producer.kind not in FOLDS_INTO or len(producer.outputs) != 1:
        return None
    params = (*bn.inputs[1:], producer.inputs[1], *(t for t in producer.inputs[2:3] if t))
    single_use = {u.name for u in users.get(bn.inputs[0], [])} == {bn.name}
    if (not all(t in g.weights for t in params) or not single_use
            or bn.inputs[0] in g.outputs or len(bn.outputs) != 1):
        return None
    channels = g.weights[producer.inputs[1]].shape[0]
    sizes_ok = all(g.weights[t].size == channels for t in bn.inputs[1:])
    return producer if sizes_ok and _channel_axis_ok(g, producer) else None


def folded_params(w: np.ndarray, b: np.ndarray | None, scale: np.ndarray, beta: np.ndarray,
                  mean: np.ndarray, var: np.ndarray, epsilon: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(w * s, (b - mean) * s + beta) with s = scale / sqrt(var + epsilon), in w's dtype.

    `w` has output channels on axis 0 (conv [Cout, Cin/g, *k], linear [out, in]).
    """
    s = scale.astype(np.float64).reshape(-1) / np.sqrt(var.astype(np.float64).reshape(-1)
                                                       + epsilon)
    w_new = w.astype(np.float64) * s.reshape((-1,) + (1,) * (w.ndim - 1))
    b_old = np.zeros(w.shape[0]) if b is None else b.astype(np.float64).reshape(-1)
    b_new = (b_old - mean.astype(np.float64).reshape(-1)) * s + beta.astype(np.float64).reshape(-1)
    return w_new.astype(w.dtype), b_new.astype(w.dtype)


def _fold(g: Graph, producer: Layer, bn: Layer) -> Fold:
    weights = g.weights
    bias = producer.inputs[2] if len(producer.inputs) > 2 and producer.inputs[2] else None
    scale, beta, mean, var = (weights[t] for t in bn.inputs[1:])  # BatchNormalization's 5 inputs
    w, b = folded_params(weights[producer.inputs[1]], weights[bias] if bias else None,
                         scale, beta, mean, var, float(bn.attrs.get("epsilon", 1e-5)))
    w_name, b_name = f"{producer.name}.weight_bn", f"{producer.name}.bias_bn"
    folded = replace(producer, inputs=(producer.inputs[0], w_name, b_name, *producer.inputs[3:]),
                     outputs=bn.outputs)
    return Fold(producer, bn, folded, {w_name: readonly(w), b_name: readonly(b)})


def find_folds(g: Graph) -> list[Fold]:
    """Every BN layer of `g` that can fold, with its fold."""
    made, users = g.producers(), g.consumers()
    folds = []
    for layer in g.layers:
        producer = foldable(g, layer, made, users)
        if producer is not None:
            folds.append(_fold(g, producer, layer))
    return folds


def fold_batchnorm(g: Graph) -> Graph:
    """Fold each foldable batch_norm layer into its conv/linear producer; others stay.

    Returns a new graph: the folded layer takes the producer's place (and name) and writes the
    BN's output; constants and types nothing refers to any more are dropped.
    """
    folds = find_folds(g)
    if not folds:
        return g
    swapped = {f.producer.name: f.folded for f in folds}
    dropped = {f.batchnorm.name for f in folds}
    layers = tuple(swapped.get(layer.name, layer) for layer in g.layers
                   if layer.name not in dropped)
    new = {t: w for f in folds for t, w in f.weights.items()}
    read = {t for layer in layers for t in layer.inputs} | set(g.outputs)
    weights = {t: w for t, w in {**g.weights, **new}.items() if t in read}
    gone = {f.producer.outputs[0] for f in folds} | (set(g.weights) - set(weights))
    types = {t: s for t, s in g.types.items() if t not in gone}
    types.update({t: Spec(tuple(w.shape), w.dtype.name) for t, w in new.items()})
    return replace(g, layers=layers, weights=MappingProxyType(weights),
                   types=MappingProxyType(types))
