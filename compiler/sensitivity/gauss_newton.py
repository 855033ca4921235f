"""Per-layer Hessian traces by Hutchinson probes in the output space (Gauss-Newton form).

For a loss L(w) = l(f(w)) of the model outputs y = f(w), the Hessian splits as

    H = J^T H_y J + sum_k (dl/dy_k) d2y_k/dw2,

with J the output Jacobian and H_y the Hessian of l in y. The first term is the generalised
Gauss-Newton matrix G (Schraudolph 2002; Martens, "New insights and perspectives on the natural
gradient method", 2020). G is the *exact* Hessian wherever dl/dy = 0, which holds for the
label-free losses edgesim uses by default: KL to the unquantised model's own outputs, and MSE to
them, are zero with a zero gradient at the weights being analysed. With labels (cross-entropy,
MSE to targets) G drops the residual term, which is small where the model fits its labels; G is
positive semi-definite, so no layer gets a negative trace.

H_y is known in closed form and factors as H_y = L L^T with a cheap L, row by row:

- softmax losses ("ce", "kl"): H_y = (diag(p) - p p^T) / R with p = softmax(y) and R the rows
  of the whole calibration set; L u = (sqrt(p) * u - p * <sqrt(p), u>) / sqrt(R). (Check:
  L L^T = diag(p) - 2 p p^T + p p^T <sqrt(p), sqrt(p)> = diag(p) - p p^T, as sum(p) = 1.)
- "mse": H_y = 2 I / R, L u = sqrt(2 / R) u.

Hutchinson in the output space: for Rademacher u (E[u u^T] = I),

    E ||(J^T L u)_l||^2 = Tr(J_l^T L L^T J_l) = Tr(G_ll),

and J^T (L u) is one reverse pass seeded with the cotangent L u. So every layer's block trace
comes from one backward pass per probe, and each calibration chunk's forward pass serves all of
its probes. That pass computes only the squared norms the samples read
(`compiler.sensitivity.weight_norms`: no cotangent that leads to no probed weight, and conv and
linear weight norms from their factors). There are no finite differences, so it runs in float32.
Each sample is a squared norm (never negative) and has no cross-layer terms, unlike weight-space
Hutchinson, where v_l^T H_lj v_j adds noise of order Tr(H_jj) to layer l: on zoo mobilenet_v2 at
224x224 with 32 samples, one probe per sample gives a 2.6% max relative standard error, where
weight-space probes need hundreds. Chunks of one sample are best: a probe's gradient sums its
chunk's samples, whose cross terms add variance (about double at two samples).

Probing runs in passes over the chunks. A probe is one backward pass over every chunk. The
trace is the sum of the chunks' mean samples; chunks are independent, so its variance is the
sum of their variances, each estimated within its chunk (or, after a single probe, bounded
from above by the spread between chunks). After a pass, the probes still needed
are predicted from the relative standard error, which falls as 1/sqrt(probes): the fewest at
which every weight still open either meets `tol` or, with its error so shrunk, is settled by
the `settled` rule (`_next_probes`; PP-OCR: one more probe per chunk where `tol` alone asked
for the 3x cap); each further pass recomputes the chunks' forward passes rather than keeping
every chunk's activations. With a core to spare and chunks of 1-64 MiB of tensors, the
chunks' forward passes and the caller's observer run on worker threads, one chunk ahead of the
calling thread's backward passes (`compiler.sensitivity.forward_ahead`): the same samples, on
two cores.
A first pass of one probe per chunk need not cover every chunk: at a few chunk counts the
chunks so far are tested against `tol` and the `settled` rule, and once they pass, the rest
run forward only (`compiler.sensitivity.early_stop`).

Bounded time: with a `TimeBudget`, probing never starts a chunk that would not finish within
the budget at the pace of the pass's chunks so far (`TimeBudget.fits`), so it overruns by the
spread of the chunks' times, not by a whole chunk. (The forward passes of the chunks a cut
first pass did not probe still run after it, for `observe`: compile's calibration pass, which
it needs either way.) A first pass cut after c of C chunks
(c >= 2) scales their sum by C / c and takes its error from the spread of the chunks
(`sampled_estimate`: the chunk-to-chunk variation of the trace counts as error too); a later
pass cut short is dropped, so a later pass takes only the probes that fit in what is left of
the budget at the last pass's pace (`_fitting`), is not started if none fits, and stops as
soon as its own pace shows that it cannot finish (a load spike). The result says `cut_short`
and its `rse` is the precision reached. A `settled` rule (e.g. the allocator's: no value of
the trace within its error changes the chosen bits) exempts weights from the `tol` test.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import numpy as np

from compiler import executor
from compiler.ir import Graph
from compiler.sensitivity import weight_norms
from compiler.sensitivity.early_stop import Settled, early_checks, early_estimate, open_rse
from compiler.sensitivity.forward_ahead import Forward, ForwardAhead, Observer
from compiler.sensitivity.trace_estimate import (
    MIN_DOF,
    TraceEstimate,
    pooled_estimate,
    sampled_estimate,
)
from compiler.sensitivity.weight_norms import NormPlan
from compiler.time_budget import BACKWARD_SHARE, TimeBudget, pass_seconds

Factor = Callable[[np.ndarray], np.ndarray]  # u -> L u
MIN_CHUNKS = 2  # chunks a budget-cut first pass still covers: a variance needs two


def output_factor(loss: str, y: np.ndarray, rows: int) -> Factor:
    """u -> L u, with L L^T the Hessian of the mean-over-`rows` `loss` in the output `y`."""
    if loss == "mse":
        scale = np.sqrt(2.0 / rows)
        return lambda u: (scale * u).astype(y.dtype, copy=False)
    p = softmax(np.asarray(y, np.float64))
    root, norm = np.sqrt(p), 1.0 / np.sqrt(rows)

    def apply(u: np.ndarray) -> np.ndarray:
        lu = root * u - p * np.sum(root * u, axis=-1, keepdims=True)
        out: np.ndarray = (norm * lu).astype(y.dtype, copy=False)
        return out
    return apply


def softmax(y: np.ndarray) -> np.ndarray:
    """softmax over the last axis, as `scipy.special.softmax` computes it (max-shifted exp
    over its sum): importing scipy.special for it took 0.07-0.08 CPU-s (0.1-0.14 s wall under
    load) of every softmax-loss compile (magika, resnet18, mobilenet_v2), where nothing else
    needs it."""
    e = np.exp(y - np.max(y, axis=-1, keepdims=True))
    out: np.ndarray = e / np.sum(e, axis=-1, keepdims=True)
    return out


def _rows(shape: Sequence[int]) -> int:
    return int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) else 1


def chunk_samples(g: Graph, feeds: dict[str, np.ndarray], loss: str, outputs: Sequence[str],
                  names: Sequence[str], probes: int, chunks: int, rng: np.random.Generator,
                  dtype: str = "float32", observe: Observer | None = None,
                  forward: Forward | None = None, norms: NormPlan | None = None,
                  env: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """`probes` Hutchinson samples of each weight's ||(J^T L u)_w||^2 for one chunk [probes, W].

    `chunks` is how many chunks of this size the calibration set holds: the loss is a mean
    over all of their rows. `observe`, if given, sees every tensor of the chunk's forward pass.
    `forward`, if given, computes that pass instead of the reference executor (e.g. in
    onnxruntime, several times faster; float32 only, equal to rounding). `norms` is
    `weight_norms.plan(g, names)`, made here if not given (`traces` makes it once). `env`, if
    given, is that forward pass already run (and observed): `feeds`, `observe` and `forward`
    are then not used.
    """
    if env is None:
        env = _forward_pass(forward, dtype, g)(feeds)
        if observe is not None:
            observe(env)
    factors = {o: output_factor(loss, env[o], _rows(env[o].shape) * chunks) for o in outputs}
    norms = weight_norms.plan(g, names) if norms is None else norms
    out = np.empty((probes, len(names)))
    grams: weight_norms.Grams = {}  # the input sides' Gram matrices, shared by the probes
    for k in range(probes):
        seeds = {o: f(rng.choice(np.array([-1.0, 1.0], env[o].dtype), env[o].shape))
                 for o, f in factors.items()}
        out[k] = weight_norms.squared_norms(g, env, seeds, norms, grams)
    return out


def traces(g: Graph, chunks: Sequence[dict[str, np.ndarray]], loss: str,
           outputs: Sequence[str], names: Sequence[str], *, tol: float = 0.05,
           max_iter: int = 100, seed: int = 0, dtype: str = "float32",
           observe: Observer | None = None, budget: TimeBudget | None = None,
           settled: Settled | None = None, forward: Forward | None = None,
           early: bool = True) -> TraceEstimate:
    """Gauss-Newton block traces Tr(G_ww) of the weights `names` (see the module docstring).

    Args:
        g: the model.
        chunks: calibration feeds, each at the graph's static shapes.
        loss: "ce", "kl" or "mse" (the output Hessian's form; labels are not needed).
        outputs: the outputs the loss reads.
        names: weight tensor names.
        tol: stop once every nonzero trace's relative standard error is below this.
        max_iter: cap on probes (each is one backward pass over every chunk). The first pass
            takes enough for `MIN_DOF` degrees of freedom of the variance: one probe when
            there are more than `MIN_DOF` chunks (see `pooled_estimate`), else at least 2.
        seed: Rademacher seed.
        dtype: float dtype of the forward and backward passes.
        observe: called with every tensor of each chunk's forward pass in the first pass over
            the chunks (in chunk order), e.g. to collect calibration statistics on the way;
            it may run on a worker thread, beside the next chunk's forward pass and this
            one's backward pass (`compiler.sensitivity.forward_ahead`).
        budget: time budget, checked before each chunk (`compiler.time_budget`):
            no chunk starts that would not finish in the time left at the pass's pace so
            far (`_stop_pass`). A cut first pass keeps the chunks
            it covered (at least `MIN_CHUNKS`) as a sample of all (the others then run
            forward only, for `observe`, as after an early stop); a later pass takes the
            probes that fit in the time left at the last pass's pace (none: stop), and one
            cut anyway drops its extra probes.
        settled: weights whose trace uncertainty can no longer change the result (e.g. the
            bit allocation); their error does not hold up the `tol` test (`open_rse`).
        forward: computes each chunk's forward pass (`chunk_samples`); float32 only.
        early: let a first pass of one probe per chunk stop at one of `early_checks` chunks
            once the chunks so far, as a sample of all (`sampled_estimate`), meet `tol`
            (with `settled`); the rest then run forward only, for `observe`.

    Returns:
        The `TraceEstimate`: one sample per probe, summed over the chunks; `cut_short` says
        whether the budget ended it.
    """
    with ForwardAhead(_forward_pass(forward, dtype, g), chunks, observe,
                      _chunk_bytes(g, dtype)) as ahead:
        return _probe(g, chunks, loss, outputs, names, ahead, tol=tol, max_iter=max_iter,
                      seed=seed, budget=budget, settled=settled, early=early)


def _probe(g: Graph, chunks: Sequence[dict[str, np.ndarray]], loss: str,
           outputs: Sequence[str], names: Sequence[str], ahead: ForwardAhead, *, tol: float,
           max_iter: int, seed: int, budget: TimeBudget | None, settled: Settled | None,
           early: bool) -> TraceEstimate:
    """`traces`, each chunk's forward pass taken from `ahead`."""
    rng, norms = np.random.default_rng(seed), weight_norms.plan(g, names)
    parts: list[np.ndarray] = [np.empty((0, len(names))) for _ in chunks]
    done, want = 0, min(max_iter, _first_pass(len(chunks)))
    checks = early_checks(len(chunks)) if early and want == 1 else frozenset()
    left = [0.0]  # weights the last early test left open (`early_estimate`)
    unit = pass_seconds(g)  # charged per forward pass (a `WorkMeter` budget)
    while True:
        covered, began = 0, None if budget is None else budget.clock()
        # the chunks' pace counts from a later pass's start, or from the end of the first
        # pass's first chunk: its forward pass also starts onnxruntime's session (seconds
        # under load, which made every chunk look that slow)
        paced = None if done == 0 else began
        for i, feeds in enumerate(chunks):
            if _stop_pass(budget, paced, covered - (done == 0), done, covered, len(chunks)):
                break
            parts[i] = np.concatenate([parts[i], chunk_samples(
                g, feeds, loss, outputs, names, want - done, len(chunks), rng,
                norms=norms, env=ahead.env(i))])
            if budget is not None:  # every pass runs the chunk's forward pass again
                budget.charge(unit * (1 + BACKWARD_SHARE * (want - done)))
            covered += 1
            if paced is None and budget is not None:
                paced = budget.clock()
            if done == 0 and covered in checks:
                est = early_estimate(names, parts[:covered], len(chunks), tol, settled, left)
                if est is not None:
                    ahead.observe_rest()
                    return est
        if covered < len(chunks):  # the rest still reach `observe` (none after the first
            ahead.observe_rest()  # pass): a caller's statistics need them all
            return _cut_estimate(names, parts, done, covered)
        took, added, done = _took(budget, began), want - done, want
        est = pooled_estimate(names, parts)
        still = open_rse(est, tol, settled)
        if done >= max_iter or float(np.max(still, initial=0.0)) < tol:
            return est
        want = done + _fitting(budget, took, added, _next_probes(
            est, still >= tol, done, tol, settled, min(max_iter, 3 * done)) - done)
        if want == done:  # not even one more probe fits: stop at the precision reached
            return replace(est, cut_short=True)


def _next_probes(est: TraceEstimate, still: np.ndarray, done: int, tol: float,
                 settled: Settled | None, cap: int) -> int:
    """Probes per chunk for the next pass (at most `cap`: 3x per pass, as the variance is
    itself noisy): the fewest at which every weight `still` open, its error shrunk as
    1/sqrt(probes) (with a 10 % margin), meets `tol` or settles by the rule at the current
    estimate. Sizing only: the pass's own estimate is what is tested when it ends."""
    def shrunk(k: int) -> TraceEstimate:
        return replace(est, rse=est.rse * np.sqrt(1.1 * done / k))

    need = int(np.ceil(1.1 * done * (float(est.rse[still].max()) / tol) ** 2))
    hi = min(cap, max(done + 1, need))
    if settled is None or hi <= done + 1:
        return hi

    def enough(k: int) -> bool:
        e = shrunk(k)
        return bool(np.all((e.rse < tol) | settled(e, still & (e.rse >= tol)) | ~still))
    lo = done + 1
    while lo < hi:  # the rule is monotone enough in the interval's width to bisect
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid + 1, hi)
    return hi


def _chunk_bytes(g: Graph, dtype: str) -> float:
    """Bytes of a chunk's forward tensors (every layer output, float ones in `dtype`)."""
    def nbytes(t: str) -> int:
        kind = np.dtype(g.types[t].dtype)
        item = np.dtype(dtype).itemsize if kind.kind == "f" else kind.itemsize
        return int(np.prod(g.types[t].shape, dtype=np.int64)) * item
    return float(sum(nbytes(t) for layer in g.layers for t in layer.outputs if t))


def _forward_pass(forward: Forward | None, dtype: str, g: Graph) -> Forward:
    """feeds -> every tensor of `g`'s forward pass: `forward`, or the reference executor's."""
    if forward is not None:
        return forward
    return lambda feeds: executor.run(g, feeds, dtype=dtype, keep=True)


def _took(budget: TimeBudget | None, began: float | None) -> float:
    """Seconds since `began` on the budget's clock (0 without a budget)."""
    return 0.0 if budget is None or began is None else budget.clock() - began


def _fitting(budget: TimeBudget | None, took: float, added: int, wanted: int) -> int:
    """How many of `wanted` further probes per chunk the next pass can take without running
    past the budget, from the last pass: `took` seconds for `added` probes per chunk.

    A pass is C forward passes (f each) and C * p probes (b each), so p probes take
    C (f + p b) <= took * max(1, p / added): an upper bound that needs no split of f and b.
    A pass the budget would cut is dropped (`_cut_estimate`), so one that cannot finish is
    not started."""
    if budget is None:
        return wanted
    left = budget.remaining()
    if left < took:
        return 0
    return wanted if took <= 0 else min(wanted, int(added * left / took))


def _stop_pass(budget: TimeBudget | None, paced: float | None, timed: int, done: int,
               covered: int, chunks: int) -> bool:
    """Whether to stop the pass before its next chunk, at the pace of its `timed` chunks
    since the budget clock read `paced`: in the first pass, once it has the `MIN_CHUNKS`
    it needs for an estimate with an error, when the next chunk would not finish within the
    budget; in a later pass, as soon as the rest of it would not (a cut pass is dropped, so
    its remaining chunks would be time spent for nothing)."""
    if budget is None or paced is None or (done == 0 and covered < min(MIN_CHUNKS, chunks)):
        return False
    return not budget.fits(paced, timed, 1 if done == 0 else chunks - covered)


def _cut_estimate(names: Sequence[str], parts: list[np.ndarray], done: int,
                  covered: int) -> TraceEstimate:
    """The estimate when the budget cut a pass short after `covered` chunks."""
    if done == 0:  # first pass: the covered chunks stand for all of them
        return replace(sampled_estimate(names, parts[:covered], len(parts)), cut_short=True)
    est = pooled_estimate(names, [p[:done] for p in parts])  # drop the unfinished pass
    return replace(est, cut_short=True)


def _first_pass(chunks: int) -> int:
    """Probes in the first pass: enough for `MIN_DOF` degrees of freedom of the variance."""
    if chunks - 1 >= MIN_DOF:
        return 1  # the spread between chunks bounds the variance
    return max(2, 1 + -(-MIN_DOF // chunks))
