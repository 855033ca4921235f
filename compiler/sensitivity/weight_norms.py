"""Squared norms of weight cotangents, for Hutchinson samples, without the work nobody reads.

A Gauss-Newton probe (`compiler.sensitivity.gauss_newton`) reads one number per weight from
its backward pass, ||dL/dW||^2, and nothing else. Two savings follow, both exact up to float
rounding:

- Pruning. A cotangent is needed only on the way to a probed weight: the outputs of layers
  downstream of one. The others (the model input's, e.g. the first conv's input gradient, or
  a preprocessing chain of casts and compares in front of the first weight) are not computed.
- Factored norms. A conv or linear weight cotangent is a product `A B^T` of the output
  cotangent A `[M, P]` and the im2col'd input B `[K, P]` over P positions. Its squared norm is
  also `<A^T A, B^T B>`, two symmetric `[P, P]` Gram matrices (BLAS syrk, P^2 (M + K) / 2
  multiply-adds against M K P for the product). Deep layers have few positions and many
  weights (resnet18's last stage: P = 49, M K = 512 x 4608, 19x fewer), so each weight whose
  layer alone reads it takes the cheaper form.
  At stride 1, B^T B comes from the Gram of the conv's input positions without im2col
  (`compiler.sensitivity.column_gram`), where that is cheaper.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from compiler.executor import Arrays, Outputs, Rule, Values, backward, needed_vjp
from compiler.ir import Graph, Layer
from compiler.ops.conv import conv_grad_factors, is_depthwise
from compiler.sensitivity.column_gram import column_grams

FACTORED_KINDS = ("conv", "linear")


@dataclass(frozen=True)
class NormPlan:
    """What a backward pass for the squared norms of weights `names` computes.

    Attributes:
        names: the weights whose squared norms are wanted.
        needed: tensors whose cotangent leads to one of them (the weights included).
        factored: layer name -> its weight (input 1), for the conv (not depthwise) and linear
            layers that alone read a wanted weight and need no bias cotangent: their norm
            comes from the cotangent's factors.
    """

    names: tuple[str, ...]
    needed: frozenset[str]
    factored: Mapping[str, str]


def plan(g: Graph, names: Sequence[str]) -> NormPlan:
    """The `NormPlan` for the squared norms of weights `names` of `g`."""
    wanted = frozenset(names)
    needed = set(wanted)
    for layer in g.layers:  # topological order: a layer downstream of a wanted weight
        if any(t in needed for t in layer.inputs if t):
            needed.update(t for t in layer.outputs if t)
    readers: dict[str, int] = {}  # reads of each tensor (a layer reading one twice: 2)
    for layer in g.layers:
        for t in layer.inputs:
            readers[t] = readers.get(t, 0) + 1
    factored = {layer.name: layer.inputs[1] for layer in g.layers
                if _factorable(g, layer, wanted, needed) and readers[layer.inputs[1]] == 1}
    return NormPlan(tuple(names), frozenset(needed), factored)


def _factorable(g: Graph, layer: Layer, wanted: frozenset[str], needed: set[str]) -> bool:
    if layer.kind not in FACTORED_KINDS or len(layer.inputs) < 2:
        return False
    if layer.inputs[1] not in wanted or any(t in needed for t in layer.inputs[2:] if t):
        return False
    if layer.kind == "linear":
        return True
    t = layer.inputs[0]
    x = g.types[t].shape if t in g.types else np.shape(g.weights[t])
    return not is_depthwise(x, np.shape(g.weights[layer.inputs[1]]), int(layer.attrs["group"]))


Grams = dict[str, list[np.ndarray]]  # layer name -> its input side's [P, P] Gram per group


def squared_norms(g: Graph, env: Arrays, seeds: Arrays, p: NormPlan,
                  grams: Grams | None = None) -> np.ndarray:
    """||cotangent||^2 of each weight `p.names[i]` after one backward pass of `seeds` through
    `g` (forward tensors `env`), float64 [W]; 0 for a weight the seeds do not reach.

    `grams`, if given, keeps the input sides' Gram matrices from one pass to the next over
    the same `env` (further probes of one chunk), which then need neither them nor im2col.
    """
    norms: dict[str, float] = {}
    grads = backward(g, env, seeds, _rule(p, norms, {} if grams is None else grams))
    return np.array([norms[n] if n in norms else _squared_norm(grads.get(n))
                     for n in p.names])


def _squared_norm(x: np.ndarray | None) -> float:
    if x is None:
        return 0.0
    flat = x.ravel(order="K")  # a view in memory order: gradients often come transposed
    return float(np.dot(flat, flat))


def _rule(p: NormPlan, norms: dict[str, float], grams: Grams) -> Rule:
    """The vjp rule of a pass for `p`, adding factored layers' weight norms to `norms`."""
    def rule(layer: Layer, gs: Values, xs: Values, ys: Outputs) -> Values:
        need = tuple(bool(t) and t in p.needed for t in layer.inputs)
        if not any(need):
            return (None,) * len(xs)
        if layer.name in p.factored:
            gx, norm = _factored(layer, gs, xs, ys, need[0], grams)
            w = p.factored[layer.name]
            norms[w] = norms.get(w, 0.0) + norm
            return (gx,) + (None,) * (len(xs) - 1)
        return needed_vjp(layer, gs, xs, ys, need)
    return rule


def _factored(layer: Layer, gs: Values, xs: Values, ys: Outputs, need_x: bool,
              grams: Grams) -> tuple[np.ndarray | None, float]:
    """(input cotangent if `need_x`, squared norm of the weight cotangent) of a conv/linear."""
    x, w = xs[0], xs[1]
    assert x is not None and w is not None
    g = gs[0] if gs[0] is not None else np.zeros_like(ys[0])
    kept = grams.get(layer.name)
    if kept is None and layer.kind == "conv":
        kept = _input_grams(layer, x, w, ys[0].shape, grams)
    if layer.kind == "conv":
        gx, a, b = conv_grad_factors(g, x, w, need_x=need_x, need_cols=kept is None,
                                     **layer.attrs)
    else:
        gx = (g @ w.astype(g.dtype, copy=False)).astype(x.dtype, copy=False) if need_x else None
        a, b = g.reshape(-1, g.shape[-1]).T[None], x.reshape(-1, x.shape[-1]).T[None]
    if kept is not None:
        return gx, float(sum(_gram_dot(_gram_p(ai), bg) for ai, bg in zip(a, kept)))
    assert b is not None
    return gx, _kept_sqnorm(a, b, grams, layer.name)


def _input_grams(layer: Layer, x: np.ndarray, w: np.ndarray, y_shape: Sequence[int],
                 grams: Grams) -> list[np.ndarray] | None:
    """A conv's column Grams from its input's own Gram (`column_gram`), kept in
    `grams[layer.name]`, where the Gram form is taken and that way is the cheaper; else None
    (then im2col and syrk, `_kept_sqnorm`)."""
    group = int(layer.attrs["group"])
    m, k = w.shape[0] // group, int(np.prod(w.shape[1:]))
    if not _gram_form(m, int(np.prod(y_shape[2:])) * y_shape[0], k):
        return None
    got = column_grams(x, w.shape[2:], **layer.attrs)
    if got is not None:
        grams[layer.name] = got
    return got


def _kept_sqnorm(a: np.ndarray, b: np.ndarray, grams: Grams, name: str) -> float:
    """`product_sqnorm(a, b)`, keeping b's Gram matrices in `grams[name]` if it took them."""
    if not _gram_form(a.shape[1], a.shape[2], b.shape[1]):
        return product_sqnorm(a, b)
    grams[name] = [_gram_p(bi) for bi in b]
    return float(sum(_gram_dot(_gram_p(ai), bg) for ai, bg in zip(a, grams[name])))


def product_sqnorm(a: np.ndarray, b: np.ndarray) -> float:
    """sum over groups i of ||a[i] @ b[i]^T||_F^2 for a `[G, M, P]`, b `[G, K, P]`, in the
    cheaper of the direct form and the Gram form `<a^T a, b^T b>` (module docstring)."""
    if _gram_form(a.shape[1], a.shape[2], b.shape[1]):
        return float(sum(_gram_dot(_gram_p(ai), _gram_p(bi)) for ai, bi in zip(a, b)))
    return float(sum(_squared_norm(ai @ bi.T) for ai, bi in zip(a, b)))


def _gram_form(m: int, p: int, k: int) -> bool:
    """Whether syrk's P^2 (M + K) / 2 multiply-adds undercut the product's M K P."""
    return p * (m + k) < 2 * m * k


def _gram_dot(u: np.ndarray, v: np.ndarray) -> float:
    return float(np.sum(u * v, dtype=np.float64))


def _gram_p(a: np.ndarray) -> np.ndarray:
    """`a^T a` `[P, P]` of `a` `[M, P]`: numpy calls BLAS syrk when both operands are views
    of one buffer (half a GEMM's work)."""
    gram: np.ndarray = a.T @ a
    return gram
