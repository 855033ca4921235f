"""LRP sensitivity: layer-wise relevance propagation through the IR (as in LRP-QViT).

Ranjan & Savakis, "LRP-QViT: Mixed-Precision Vision Transformer Quantization via Layer-wise
Relevance Propagation" (2024) score each layer by the relevance that flows through it when the
predicted class's score is propagated back to the input. Rules (Montavon et al., "Layer-wise
relevance propagation: an overview", 2019; Ali et al., "XAI for Transformers: Better
Explanations through Conservative Propagation", ICML 2022), one per layer kind in `RULES`:

- linear / conv / conv_transpose / pool / reduce, and eltwise add / sub / mean / max / min:
  the epsilon rule `R_x = x * vjp(R / (z + eps * rms(z) * sign(z)))` for every activation
  input x, with z the layer's output. For sums (add, residuals) it is the proportional split;
  for max-pooling it is winner-take-all; constants (bias, a constant addend) absorb their share.
- matmul / eltwise mul with two activation operands: the epsilon rule gives each operand the
  whole relevance of a product, so each gets 1/k of it (AttnLRP's uniform rule for
  multiplicative interactions, Achtibat et al. 2024); with a constant operand it is the plain
  epsilon rule (all relevance to the activation).
- eltwise div / pow: all relevance to the first operand (divisor / exponent as a gate).
- activation, norm, softmax, cast: pass-through, `R_in = R_out` (Ali et al.: LayerNorm and the
  attention softmax treated as linear / constant gates).
- reshape-likes, gather, resize, where, rotary: the op's vjp (pure redistribution of relevance).
- attention: softmax(q k^T) as a constant gate on the values (`gate`).
- Option `rule="zplus"`: the z+ rule on conv / linear layers whose input is nonnegative
  (after ReLU): `R_x = x * vjp_{w+}(R / z+)` with w+ = max(w, 0) and no bias.

Eps is relative to each layer's output RMS (Montavon et al. use 0.25 std for "LRP-eps"). The
default 0.05 absorbs little, yet keeps near-cancelling sums (a residual add of two almost
opposite terms, a bias that cancels the weighted sum) from blowing relevance up: on the trained
digits transformer, eps 1e-6 gives its first layer 200x the output relevance, eps 0.05 about
0.5x. On bias-free networks a tiny eps conserves relevance exactly (see the tests).

Seed: for every float output, per row (all leading axes), the value of the largest entry of the
last axis (the predicted class's logit), zero elsewhere.

Score: `share_l` = sum |R| at layer l's output over sum |R| at the seeds, averaged over the
calibration chunks: the fraction of the prediction's relevance that flows through layer l (1
for a layer every path crosses; residual branches split it; above 1 where positive and negative
relevance cancel). The contribution score is the share normalised over the quantisable layers,
`C_l = share_l / sum_j share_j` (LRP-QViT's layer contribution score). Omega weights the
*relative* weight error by it, `omega_l(b) = C_l * ||Q_b(W_l) - W_l||^2 / ||W_l||^2`, so
`score_l = C_l / ||W_l||^2` and `omega = score * ||Q_b(W_l) - W_l||^2` as for HAWQ. Sum over
layers, omega is the contribution-weighted mean relative squared weight error, a dimensionless
number in [0, ~1] on every model, where HAWQ's omega is in loss units (about twice the loss
increase); the allocator is invariant to a global scale of omega, so either is used as it is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from compiler import executor
from compiler.errors import ModelError
from compiler.executor import Arrays, Outputs, Rule, Values, backward
from compiler.ir import Graph, Layer
from compiler.ops import OPS
from compiler.ops.opdef import unbroadcast
from compiler.sensitivity.loss import chunks
from compiler.sensitivity.proxy import (
    DEFAULT_BITS,
    Sensitivity,
    bit_choices,
    check_quantisable,
    quant_errors,
    weight_name,
)
from compiler.time_budget import Clock, TimeBudget, start

EPS = 0.05
MASKED = 1e8   # |score| from which an entry is an additive mask's "minus infinity"
LRP_RULES = ("epsilon", "zplus")
MIN_CHUNKS = 2  # chunks a budget-cut analysis still covers: an error needs a spread
# rule(layer, relevances of outputs, inputs, outputs, active input mask, eps) -> per input
LrpRule = Callable[[Layer, Outputs, Values, Outputs, tuple[bool, ...], float], Values]


def _stabilised(z: np.ndarray, eps: float) -> np.ndarray:
    """z + eps * rms(z) * sign(z), with sign(0) = +1 so nothing divides by zero.

    The RMS skips masked entries (|z| >= MASKED, an additive attention mask's -1e9 or -inf):
    one such entry would otherwise set the stabiliser of the whole tensor (a decoder's causal
    mask made it ~5e7 and sent no relevance to its queries and keys)."""
    kept = z[np.abs(z) < MASKED] if z.size else z
    rms = float(np.sqrt(np.mean(kept * kept))) if kept.size else 0.0
    stab = eps * (rms if rms > 0 else 1.0)
    return z + np.where(z >= 0, stab, -stab)


def epsilon(layer: Layer, rs: Outputs, xs: Values, ys: Outputs, active: tuple[bool, ...],
            eps: float,
            share: float = 1.0) -> Values:
    """Epsilon rule: each active input x gets `share * x * vjp(R / stabilised(z))`."""
    s = rs[0] / _stabilised(ys[0], eps)
    gs = OPS[layer.kind].vjp((s,), xs, ys, **layer.attrs)
    return tuple(share * x * g if on and g is not None and x is not None else None
                 for x, g, on in zip(xs, gs, active))


def product(layer: Layer, rs: Outputs, xs: Values, ys: Outputs, active: tuple[bool, ...],
            eps: float) -> Values:
    """Epsilon rule split evenly among the k active operands of a product (uniform rule)."""
    return epsilon(layer, rs, xs, ys, active, eps, share=1.0 / max(1, sum(active)))


def first(layer: Layer, rs: Outputs, xs: Values, ys: Outputs, active: tuple[bool, ...],
          eps: float) -> Values:
    """All relevance to the first operand (summed back over broadcast axes)."""
    out: list[np.ndarray | None] = [None] * len(xs)
    if active and active[0]:
        assert xs[0] is not None  # an active input is present
        out[0] = unbroadcast(rs[0], np.shape(xs[0]))
    return tuple(out)


def passthrough(layer: Layer, rs: Outputs, xs: Values, ys: Outputs, active: tuple[bool, ...],
                eps: float) -> Values:
    """R_in = R_out for the first input (shape-preserving elementwise layers)."""
    return first(layer, rs, xs, ys, active, eps)


def adjoint(layer: Layer, rs: Outputs, xs: Values, ys: Outputs, active: tuple[bool, ...],
            eps: float) -> Values:
    """The op's vjp moves relevance back as it moves cotangents (data movement layers)."""
    gs = OPS[layer.kind].vjp(rs, xs, ys, **layer.attrs)
    return tuple(g if on else None for g, on in zip(gs, active))


ELTWISE_RULES: Mapping[str, LrpRule] = {
    "add": epsilon, "sub": epsilon, "mean": epsilon, "max": epsilon, "min": epsilon,
    "mul": product, "div": first, "pow": first, "where": adjoint,
}


def eltwise(layer: Layer, rs: Outputs, xs: Values, ys: Outputs, active: tuple[bool, ...],
            eps: float) -> Values:
    """Eltwise layers: the rule of their `fn` (`ELTWISE_RULES`)."""
    rule = ELTWISE_RULES.get(layer.attrs.get("fn", ""), first)
    return rule(layer, rs, xs, ys, active, eps)


def gate(layer: Layer, rs: Outputs, xs: Values, ys: Outputs, active: tuple[bool, ...],
         eps: float) -> Values:
    """Attention y = p v with the probabilities p as a constant gate (Ali et al. 2022): the
    epsilon rule sends y's relevance to the values (new and cached), none to q / k; relevance
    of the present caches goes back to their past and new parts as their vjp moves it."""
    op = OPS[layer.kind]
    zero = tuple(np.zeros_like(y) for y in ys)
    s = rs[0] / _stabilised(ys[0], eps)
    gy = op.vjp((s, None, None), xs, ys, **layer.attrs)            # p^T s on v and past_v
    gpass = op.vjp((zero[0], rs[1], rs[2]), xs, ys, **layer.attrs)  # caches: pure copies
    out: list[np.ndarray | None] = [None] * len(xs)
    for i in (1, 2, 4, 5):                                           # k, v, past_k, past_v
        x, g, p = (xs[i], gy[i], gpass[i]) if i < len(xs) else (None, None, None)
        if x is not None and active[i]:
            value = x * g if i in (2, 5) and g is not None else np.zeros_like(x)
            out[i] = value + p if p is not None else value
    return tuple(out)


RULES: Mapping[str, LrpRule] = {
    "conv": epsilon, "conv_transpose": epsilon, "linear": epsilon, "matmul": product,
    "pool": epsilon, "reduce": epsilon, "eltwise": eltwise,
    "activation": passthrough, "norm": passthrough, "softmax": passthrough, "cast": passthrough,
    "attention": gate, "rotary": adjoint,
    **{k: adjoint for k in ("reshape", "identity", "transpose", "concat", "split", "slice",
                            "pad", "expand", "gather", "resize", "gather_nd", "arg_reduce")},
}
ZPLUS_KINDS = frozenset({"conv", "linear"})


def zplus(layer: Layer, rs: Outputs, xs: Values, ys: Outputs, active: tuple[bool, ...],
          eps: float) -> Values:
    """z+ rule for a conv / linear layer with nonnegative input: positive weights, no bias."""
    op = OPS[layer.kind]
    assert xs[0] is not None and xs[1] is not None  # conv / linear: data and weight
    pos = (xs[0], np.maximum(xs[1], 0.0))
    zp = op.forward(*pos, **layer.attrs)
    s = rs[0] / _stabilised(zp[0], eps)
    gx = op.vjp((s,), pos, zp, **layer.attrs)[0]
    return (xs[0] * gx,) + (None,) * (len(xs) - 1)


def _uses_zplus(layer: Layer, xs: Values, active: tuple[bool, ...]) -> bool:
    return (layer.kind in ZPLUS_KINDS and not active[1] and active[0]
            and xs[0] is not None and float(np.min(xs[0])) >= 0.0)


def _rule(g: Graph, eps: float, rule: str) -> Rule:
    def apply(layer: Layer, rs: Values, xs: Values, ys: Outputs) -> Values:
        dense = tuple(np.zeros_like(y) if r is None else r for r, y in zip(rs, ys))
        active = tuple(bool(t) and t not in g.weights and x is not None and x.dtype.kind == "f"
                       for t, x in zip(layer.inputs, xs))
        if rule == "zplus" and _uses_zplus(layer, xs, active):
            return zplus(layer, dense, xs, ys, active, eps)
        return RULES[layer.kind](layer, dense, xs, ys, active, eps)
    return apply


def seeds(g: Graph, env: Arrays) -> dict[str, np.ndarray]:
    """Output relevance: per row of each float output, its largest entry's value."""
    out = {}
    for name in g.outputs:
        y = env[name]
        if y.dtype.kind != "f" or y.ndim == 0:
            continue
        mask = np.zeros(y.shape, dtype=bool)
        np.put_along_axis(mask, np.argmax(y, axis=-1)[..., None], True, axis=-1)
        out[name] = np.where(mask, y, 0.0)
    return out


def _propagate(g: Graph, feeds: Arrays, eps: float, rule: str, keep: Sequence[str] | None,
               dtype: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(seeds, relevance of the kept tensors) for one batch, computed in `dtype`."""
    if rule not in LRP_RULES:
        raise ModelError("rule", f"unknown LRP rule {rule!r}; choose one of {LRP_RULES}")
    env = executor.run(g, feeds, dtype=dtype, keep=True)
    start = seeds(g, env)
    kept = set(env) if keep is None else set(keep)
    got = backward(g, env, start, _rule(g, eps, rule), keep=kept)
    return start, {t: v for t, v in got.items() if t in kept}


def relevance(g: Graph, feeds: Arrays, *, eps: float = EPS, rule: str = "epsilon",
              keep: Sequence[str] | None = None, dtype: str = "float64"
              ) -> dict[str, np.ndarray]:
    """Relevance of tensors for one batch of inputs.

    Args:
        g: the lowered model; `feeds` must match its static input shapes.
        feeds: one array per graph input.
        eps: stabiliser relative to each layer's output RMS.
        rule: "epsilon", or "zplus" (z+ on conv/linear layers with nonnegative input).
        keep: tensors to return (default: every tensor reached).
        dtype: float dtype to compute in.

    Returns:
        Relevance by tensor name (a graph output holds its seed plus anything that flowed
        back into it from later layers).
    """
    return _propagate(g, feeds, eps, rule, keep, dtype)[1]


def _shares(g: Graph, feeds: Arrays, outputs: Sequence[str], eps: float,
            rule: str, dtype: str) -> np.ndarray:
    """Fraction of the seeds' |relevance| at each tensor of `outputs`, for one chunk."""
    start, rel = _propagate(g, feeds, eps, rule, outputs, dtype)
    total = sum(float(np.abs(v).sum()) for v in start.values())
    return np.array([float(np.abs(rel[t]).sum()) / total if t in rel and total > 0 else 0.0
                     for t in outputs])


def layer_shares(g: Graph, calib_inputs: np.ndarray | Arrays, layers: Sequence[Layer], *,
                 eps: float = EPS, rule: str = "epsilon", dtype: str = "float32",
                 budget: TimeBudget | None = None) -> np.ndarray:
    """Relevance share of each layer's output per calibration chunk: [chunks covered, L].

    With a `budget`, after at least `MIN_CHUNKS` (a spread between chunks, i.e. an error,
    needs two), no chunk starts that would not finish in the time left at the pace of those
    before it (`TimeBudget.fits`): the covered chunks stand for all of them.
    """
    outs = [layer.outputs[0] for layer in layers]
    rows: list[np.ndarray] = []
    began = None if budget is None else budget.clock()
    for feeds in chunks(g, calib_inputs):
        if (len(rows) >= MIN_CHUNKS and budget is not None and began is not None
                and not budget.fits(began, len(rows))):
            break
        rows.append(_shares(g, feeds, outs, eps, rule, dtype))
    return np.array(rows)


def sensitivity(g: Graph, calib_inputs: np.ndarray | Arrays, labels: object = None, *,
                bits: Sequence[int] = DEFAULT_BITS, eps: float = EPS,
                rule: str = "epsilon", dtype: str = "float32", budget_s: float | None = None,
                clock: Clock = time.process_time) -> Sensitivity:
    """LRP sensitivity `omega_l(b) = C_l * ||Q_b(W_l) - W_l||^2 / ||W_l||^2`.

    Args:
        g: the lowered model.
        calib_inputs: calibration inputs by input name (or one array for a single-input
            model), a whole number of the graph's static batches along axis 0.
        labels: ignored (relevance starts from the predicted class, as in LRP-QViT).
        bits: weight-bit choices.
        eps: epsilon-rule stabiliser relative to each layer's output RMS.
        rule: "epsilon" or "zplus".
        dtype: float dtype of the propagation (float32: the stabiliser keeps the epsilon
            rule's divisions well away from rounding noise).
        budget_s: seconds the analysis may take (None: every chunk); once they are used up
            no further chunk is propagated (at least `MIN_CHUNKS` are), the covered chunks
            stand for all, and the result says `cut_short`, its `rse` the precision reached.
        clock: the clock `budget_s` is measured on (default the process's CPU seconds,
            so the plan does not depend on the machine's load; tests inject a fake one).

    Returns:
        A `Sensitivity` with `score` = C_l / ||W_l||^2, `iterations` = chunks covered and
        `rse` the relative standard error of the mean share over them (NaN for one chunk).
    """
    layers, choices = check_quantisable(g), bit_choices(bits)
    budget = start(budget_s, clock)
    from compiler.window_kernels import serial  # numba loads with the first use

    with serial():  # small planes: one thread beats two waiting at barriers (see `serial`)
        per_chunk = layer_shares(g, calib_inputs, layers, eps=eps, rule=rule, dtype=dtype,
                                 budget=budget)
    total = len(chunks(g, calib_inputs))
    cut = len(per_chunk) < total
    share = per_chunk.mean(axis=0)
    share = share / share.sum() if share.sum() > 0 else share
    energy = np.array([float(np.vdot(w, w)) for w in
                       (np.asarray(g.weights[weight_name(la)], np.float64) for la in layers)])
    score = share / np.where(energy > 0, energy, 1.0)
    omega = score[:, None] * quant_errors(g, layers, choices)
    return Sensitivity(tuple(la.name for la in layers), choices, omega, score, "lrp",
                       len(per_chunk), _chunk_rse(per_chunk),
                       (f"rule={rule}", f"eps={eps:g}", "score = contribution share / ||W||^2",
                        *((f"analysis budget {budget_s:g} CPU-s used up after {len(per_chunk)} of "
                           f"{total} chunks",) if cut else ())), cut)


def _chunk_rse(per_chunk: np.ndarray) -> np.ndarray:
    if len(per_chunk) < 2:
        return np.full(per_chunk.shape[1], np.nan)
    se = per_chunk.std(axis=0, ddof=1) / np.sqrt(len(per_chunk))
    mean = np.abs(per_chunk.mean(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(se == 0, 0.0, se / mean)

