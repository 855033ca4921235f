"""Which tensor a softmax loss reads: the logits behind a model output that is a softmax.

The "ce" and "kl" losses (`compiler.sensitivity.loss`) apply a softmax to what they read. On a
model whose output already is a softmax, they would apply a second one: softmax(p) of
probabilities p in [0, 1] is nearly uniform, its KL is not the KL of the model's own
probabilities, and its curvature in the logits scales like (1 - p_max)^2 per sample, so
confident samples get traces near 0 and a few unsure ones dominate (magika: heavy-tailed
per-sample traces, 3 probes per sample for a max relative error of 0.36). The loss reads the
softmax's input x instead: softmax(x) is exactly the model's output, so KL(p_ref || p) is the
KL of the model's own probabilities, and its Gauss-Newton Hessian in x is diag(p) - p p^T.

Recognised softmax outputs (over the last axis of x, the axis the losses take as classes):

- a `softmax` layer (ONNX Softmax at any rank; one over another axis is refused, with the
  reason, as the losses' classes are the last axis). LogSoftmax needs nothing:
  softmax(log p) = p, so the losses already see the model's probabilities;
- Div(Exp(s), D) with s = x or x - m, m constant along the last axis (e.g. the row max, as
  magika's jax2tf export writes it), and D the same Exp's sum over the last axis, through
  reshape / expand / identity layers that keep one value per row.

Either may be followed by identity / reshape layers that keep the last axis (same size, so
every row of the output is one softmax row).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler.ir import Graph, Layer

MOVES = frozenset({"identity", "reshape"})  # layers that keep the values in flat order


@dataclass(frozen=True)
class LossTensor:
    """The tensor a softmax loss reads for one model output.

    Attributes:
        tensor: the logits of a softmax output, else the output itself.
        note: what was decided and why (None: an output that is not a softmax).
    """

    tensor: str
    note: str | None = None


def loss_tensor(g: Graph, output: str) -> LossTensor:
    """The tensor the "ce" / "kl" losses read for `output` of `g` (see the module docstring)."""
    producers = g.producers()
    probs, kept = _before_moves(g, producers, output)
    layer = producers.get(probs)
    if layer is None:
        return LossTensor(output)
    found = _softmax_input(g, producers, layer)
    if found is None:
        return LossTensor(output)
    logits, refused = found
    if refused is None and not kept:
        refused = "a reshape after it changes the last (class) axis"
    if refused is not None:
        return LossTensor(output, f"output {output} is a softmax ({refused}): the loss reads "
                          "it as it is")
    return LossTensor(logits, f"loss reads {logits}, the logits of softmax output {output}")


def _shape(g: Graph, t: str) -> tuple[int, ...]:
    return tuple(g.types[t].shape) if t in g.types else tuple(np.shape(g.weights[t]))


def _before_moves(g: Graph, producers: dict[str, Layer], t: str) -> tuple[str, bool]:
    """The tensor before the identity / reshape layers that produce `t`, and whether every
    one of them kept the last axis's size."""
    kept, last = True, _shape(g, t)[-1:]
    while (layer := producers.get(t)) is not None and layer.kind in MOVES:
        t = layer.inputs[0]
        kept = kept and _shape(g, t)[-1:] == last
    return t, kept


def _softmax_input(g: Graph, producers: dict[str, Layer], layer: Layer
                   ) -> tuple[str, str | None] | None:
    """(x, None) if `layer` computes softmax(x) over x's last axis; (x, reason) for a softmax
    over another axis; None if it is no softmax."""
    if layer.kind == "softmax" and not layer.attrs["log"]:
        x = layer.inputs[0]
        axis, rank = int(layer.attrs["axis"]), len(_shape(g, x))
        return x, (None if axis == rank - 1 else f"over axis {axis} of rank {rank}")
    if layer.kind == "eltwise" and layer.attrs.get("fn") == "div":
        return _exp_sum_div(g, producers, layer)
    return None


def _exp_sum_div(g: Graph, producers: dict[str, Layer], div: Layer
                 ) -> tuple[str, str | None] | None:
    """(x, None) if `div` is exp(x [- m]) / sum(exp(...)) over the last axis; (x, reason)
    for such a sum over another single axis; else None."""
    n, d = div.inputs[:2]
    exp, shape = producers.get(n), _shape(g, n)
    if exp is None or exp.kind != "activation" or exp.attrs.get("fn") != "exp" \
            or not shape or _shape(g, div.outputs[0]) != shape:
        return None
    total = _source(producers, d)
    if total is None or total.kind != "reduce" or total.attrs.get("fn") != "sum" \
            or total.inputs[0] != n:
        return None
    axes = _reduced(total, shape)
    if axes != {len(shape) - 1}:
        return (exp.inputs[0], f"exp / sum / div over axes {sorted(axes)} of rank "
                f"{len(shape)}") if len(axes) == 1 else None
    return (_unshifted(g, producers, exp.inputs[0], shape), None) if \
        _row_aligned(g, producers, d, shape) else None


def _source(producers: dict[str, Layer], t: str) -> Layer | None:
    """The first layer behind `t` that is not a reshape, identity or expand."""
    while (layer := producers.get(t)) is not None and layer.kind in MOVES | {"expand"}:
        t = layer.inputs[0]
    return layer


def _reduced(layer: Layer, shape: tuple[int, ...]) -> set[int]:
    """The axes of `shape` a reduce layer sums over, leaving out those of size 1."""
    axes = layer.attrs.get("axes")
    picked = range(len(shape)) if axes is None else (int(a) % len(shape) for a in axes)
    return {a for a in picked if shape[a] != 1}


def _row_aligned(g: Graph, producers: dict[str, Layer], d: str, shape: tuple[int, ...]
                 ) -> bool:
    """Whether the divisor `d` holds the per-row values of its `_source` (repeated along the
    last axis of `shape` at most) through its reshape / identity / expand layers, aligned
    with the rows of `shape` when broadcast against it."""
    rows, keep = shape[:-1], (*shape[:-1], 1)
    one_row = int(np.prod(rows, dtype=np.int64)) == 1

    def per_row(s: tuple[int, ...], aligned: bool) -> bool:
        """`s` holds one value per row in row order (`aligned`: broadcasts onto `shape`)."""
        return s == keep or (s == rows and not aligned) or (one_row and int(np.prod(s)) == 1)

    layer = producers.get(d)
    if not (per_row(_shape(g, d), True) or (_shape(g, d) == shape and layer is not None
                                            and layer.kind == "expand")):
        return False
    while layer is not None and layer.kind in MOVES | {"expand"}:
        d = layer.inputs[0]
        if not per_row(_shape(g, d), layer.kind == "expand"):
            return False
        layer = producers.get(d)
    return True


def _unshifted(g: Graph, producers: dict[str, Layer], s: str, shape: tuple[int, ...]) -> str:
    """x where `s` = x - m with m constant along the last axis (softmax(x - m) = softmax(x)),
    else `s` itself."""
    sub = producers.get(s)
    if sub is None or sub.kind != "eltwise" or sub.attrs.get("fn") != "sub":
        return s
    x, m = sub.inputs[:2]
    while _shape(g, m)[-1:] not in ((), (1,)) and (grow := producers.get(m)) is not None \
            and grow.kind == "expand":  # repeats its input's size-1 last axis, if it has one
        m = grow.inputs[0]
    constant = _shape(g, m)[-1:] in ((), (1,))
    return x if constant and _shape(g, x) == shape else s
