"""HAWQ-V2 sensitivity: per-layer average Hessian trace by Hutchinson's estimator.

Dong et al., "HAWQ-V2: Hessian Aware trace-Weighted Quantization of Neural Networks", NeurIPS
2020: the sensitivity of layer l at b bits is `Omega_l(b) = Tr(H_l)/n_l * ||Q_b(W_l) - W_l||^2`,
with H_l the diagonal block of the loss Hessian for the layer's n_l weights.

Two estimators of the traces (`curvature`):

- "gauss-newton" (default): Hutchinson probes in the output space, J^T L u with L L^T the
  loss's Hessian in the outputs: one float32 backward pass per probe gives every layer's trace,
  with no cross-layer noise. It is the exact Hessian for the label-free losses (KL / MSE to the
  unquantised model's outputs have zero gradient there) and the Gauss-Newton part of it with
  labels. See `compiler.sensitivity.gauss_newton`.
- "hessian": weight-space Hutchinson with finite-difference Hessian-vector products, below.
  It keeps the residual term with labels, but needs two float64 gradients per probe and far
  more probes; it is the reference the Gauss-Newton estimator was checked against.

Estimator ("hessian"). Hutchinson: for Rademacher v (entries +-1), E[v^T A v] = Tr(A). One
vector v over the weights of *all* quantisable layers gives, for every layer at once,
`v_l . (H v)_l`, whose expectation is Tr(H_ll) because the cross terms v_l^T H_lj v_j
(j != l) vanish in expectation (E[v_l v_j^T] = 0). Each iteration therefore costs one
Hessian-vector product, i.e. two gradient evaluations, for all layers. Iterations stop when
every layer's relative standard error of the running mean is below `tol`, or at `max_iter`.

Variance. The cross terms have zero mean but not zero variance: for a PSD Hessian,
||H_lj||_F^2 <= Tr(H_ll) Tr(H_jj), so a layer with a small trace next to one with a large trace
gets a relative noise of order sqrt(Tr_j / Tr_l) (the trained digits CNN: ~16 per sample for its
final Gemm beside conv2). By default (`balance=True`) the probe of layer l is scaled by c_l =
1/sqrt(|running mean of Tr_l|) and its estimate divided by c_l: `v_l . (H D v)_l / c_l` with
D = diag(c) is still unbiased for Tr(H_ll) (the scales come from earlier iterations only, and
E[v_l v_j^T] = 0 still kills the cross terms), while each cross term's variance is now bounded
by Tr_l^2 (digits CNN: worst per-sample relative std 16 -> 1.3). Hessians of trained networks
are dominated by a few eigenvalues, so even a single block needs O(100) iterations for a 5%
relative standard error.

Hessian-vector products: central differences of the exact (reverse-mode) gradient in float64,
`Hv ~ (g(w + h v) - g(w - h v)) / 2h`, with `h = fd_eps * rms(w)` over all quantisable weights
(error O(h^2) from smooth layers, O(1e-16 / h) from rounding). Piecewise-linear layers (ReLU,
clip, max-pool, max/min...) have zero second derivative almost everywhere, which is the
Hessian HAWQ means (what autograd's double backward computes); but a difference quotient whose
step flips a ReLU pays the jump of its derivative divided by h. So by default (`freeze=True`)
the backward passes at w +- hv take those layers' switching pattern from the unperturbed
forward (their vjp is fed the reference inputs; their vjp depends on the inputs only through
the pattern). That makes the difference quotient the a.e. Hessian for any h small enough for
the smooth parts.

Loss: see `compiler.sensitivity.loss` (cross-entropy with labels, else KL to the unquantised
model's outputs for classifiers, else MSE). A Hessian block of a non-convex loss can have a
negative trace: `score` keeps the estimate as it is, and `omega` uses `max(score, 0)` so that
quantisation error never counts as a gain.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import numpy as np
from threadpoolctl import threadpool_limits

from compiler import executor
from compiler.errors import ModelError
from compiler.executor import Arrays, Outputs, Rule, Values, vjp_rule
from compiler.ir import Graph, Layer
from compiler.sensitivity import gauss_newton
from compiler.sensitivity.early_stop import Settled, open_rse
from compiler.sensitivity.forward_ahead import Forward, Observer
from compiler.sensitivity.loss import (
    Objective,
    check_label_rows,
    check_loss,
    chunks,
    default_loss,
    loss_notes,
    loss_outputs,
    objective,
    value_and_grad,
)
from compiler.sensitivity.proxy import (
    DEFAULT_BITS,
    Sensitivity,
    bit_choices,
    check_quantisable,
    quant_errors,
    weight_name,
    weight_sizes,
)
from compiler.sensitivity.trace_estimate import TraceEstimate, estimate
from compiler.time_budget import Clock, TimeBudget, WorkMeter, start

# Layer kind -> `fn`s whose derivative is piecewise constant (second derivative 0 a.e.).
PIECEWISE_LINEAR: Mapping[str, frozenset[str]] = {
    "activation": frozenset({"relu", "clip", "leaky_relu", "abs"}),
    "pool": frozenset({"max", "global_max"}),
    "reduce": frozenset({"max", "min"}),
    "eltwise": frozenset({"max", "min", "where"}),
}
CURVATURES = ("gauss-newton", "hessian")
FD_EPS = 1e-5  # central-difference step relative to rms(w): rounding and truncation ~1e-10


def is_piecewise_linear(layer: Layer) -> bool:
    """True if the layer's derivative depends on its inputs only through a switching pattern."""
    return layer.attrs.get("fn") in PIECEWISE_LINEAR.get(layer.kind, frozenset())


def _pattern_env(obj: Objective, i: int, frozen: Sequence[Layer]) -> dict[str, np.ndarray]:
    """The tensors the frozen layers' vjp reads, from the unperturbed forward of chunk i."""
    names = {t for layer in frozen for t in (*layer.inputs, *layer.outputs) if t}
    env = executor.run(obj.graph, obj.chunks[i], dtype="float64", keep=names)
    return {t: env[t] if t in env else obj.graph.weights[t] for t in names}


def _frozen_rule(ref: Arrays, frozen: frozenset[str]) -> Rule:
    def rule(layer: Layer, gs: Values, xs: Values, ys: Outputs) -> Values:
        if layer.name in frozen:
            xs = tuple(ref[t] if t else None for t in layer.inputs)
            ys = tuple(ref[t] for t in layer.outputs)
        return vjp_rule(layer, gs, xs, ys)
    return rule


def pattern_rules(obj: Objective) -> Callable[[int], Rule]:
    """Chunk index -> backward rule freezing piecewise-linear layers at the unperturbed pattern."""
    frozen = [layer for layer in obj.graph.layers if is_piecewise_linear(layer)]
    refs = [_pattern_env(obj, i, frozen) for i in range(len(obj.chunks))]
    names = frozenset(layer.name for layer in frozen)
    return lambda i: _frozen_rule(refs[i], names)


def step_size(obj: Objective, names: Sequence[str], fd_eps: float = FD_EPS) -> float:
    """The difference step: `fd_eps` times the RMS of the weights `names`."""
    sq = sum(float(np.vdot(obj.graph.weights[n], obj.graph.weights[n])) for n in names)
    count = sum(np.size(obj.graph.weights[n]) for n in names)
    rms = np.sqrt(sq / count)
    return fd_eps * (rms if rms > 0 else 1.0)


def hvp(obj: Objective, v: Arrays, h: float,
        rule_for: Callable[[int], Rule] | None = None) -> dict[str, np.ndarray]:
    """Hessian-vector product of the loss by central differences of its gradient.

    Args:
        obj: the objective (float64 weights).
        v: direction, per weight name (weights not named stay fixed).
        h: step: the gradient is taken at w + h v and w - h v.
        rule_for: backward rule per chunk (e.g. `pattern_rules(obj)`), default plain vjp.

    Returns:
        (H v) restricted to the weights named in `v`.
    """
    w = {n: obj.graph.weights[n] for n in v}
    _, up = value_and_grad(obj, {n: w[n] + h * v[n] for n in v}, v, rule_for)
    _, down = value_and_grad(obj, {n: w[n] - h * v[n] for n in v}, v, rule_for)
    return {n: (up[n] - down[n]) / (2.0 * h) for n in v}


def balanced_scales(trace: np.ndarray, sizes: np.ndarray, floor: float = 1e-4) -> np.ndarray:
    """Probe scale per weight tensor, 1/sqrt(|Tr|) (floored at `floor` * the largest), with
    unit RMS over all weights."""
    t = np.abs(trace)
    if not np.isfinite(t).all() or t.max() <= 0:
        return np.ones(len(t))
    c = 1.0 / np.sqrt(np.maximum(t, floor * t.max()))
    return c / np.sqrt(np.sum(sizes * c * c) / np.sum(sizes))


def _rademacher(rng: np.random.Generator, obj: Objective, names: Sequence[str]
                ) -> dict[str, np.ndarray]:
    shapes = {n: np.shape(obj.graph.weights[n]) for n in names}
    return {n: rng.integers(0, 2, size=s).astype(np.float64) * 2.0 - 1.0
            for n, s in shapes.items()}


def _sample(obj: Objective, rng: np.random.Generator, names: Sequence[str],
            scales: np.ndarray, h: float, rule_for: Callable[[int], Rule] | None) -> np.ndarray:
    """One Hutchinson sample per weight tensor: v_l . (H D v)_l / c_l, D = diag(c_l)."""
    v = _rademacher(rng, obj, names)
    hv = hvp(obj, {n: c * v[n] for n, c in zip(names, scales)}, h, rule_for)
    return np.array([np.vdot(v[n], hv[n]) / c for n, c in zip(names, scales)])


def hutchinson(obj: Objective, names: Sequence[str], *, tol: float = 0.05,
               max_iter: int = 100, min_iter: int = 3, fd_eps: float = FD_EPS, seed: int = 0,
               freeze: bool = True, balance: bool = True, budget: TimeBudget | None = None,
               settled: Settled | None = None) -> TraceEstimate:
    """Estimate Tr(H_ww) of each weight tensor in `names` with shared Rademacher vectors.

    Args:
        obj: the objective.
        names: weight tensor names.
        tol: stop once every relative standard error is below this (after `min_iter`).
        max_iter: iteration cap (each iteration is one HVP: two gradient evaluations).
        min_iter: least iterations before the stopping test (a variance needs a few samples).
        fd_eps: difference step relative to rms(w).
        seed: Rademacher seed.
        freeze: freeze piecewise-linear switching patterns (see the module docstring).
        balance: scale each tensor's probe by 1/sqrt(|running trace|) (see the module
            docstring); False uses plain Rademacher vectors.
        budget: time budget, checked after each iteration from the second on (a variance
            needs two samples): no iteration starts that would not finish in the time left
            at the pace of those before it.
        settled: weights whose uncertainty cannot change the result: exempt from `tol`.

    Returns:
        The `TraceEstimate` (`cut_short` if the budget ended it).
    """
    rng, h = np.random.default_rng(seed), step_size(obj, names, fd_eps)
    rule_for = pattern_rules(obj) if freeze else None
    sizes = np.array([np.size(obj.graph.weights[n]) for n in names])
    samples: list[np.ndarray] = []
    scales = np.ones(len(names))
    for _ in range(max_iter):
        samples.append(_sample(obj, rng, names, scales, h, rule_for))
        scales = balanced_scales(np.mean(samples, axis=0), sizes) if balance else scales
        est = estimate(names, samples)
        if (len(samples) >= min_iter
                and float(open_rse(est, tol, settled).max()) < tol):
            return est
        if len(samples) >= 2 and budget is not None and not budget.fits(budget.start,
                                                                           len(samples)):
            return replace(est, cut_short=True)
    return estimate(names, samples)


def unique_weights(layers: Sequence[Layer]) -> tuple[str, ...]:
    """Weight names of `layers`, each once (layers may share a weight), in order."""
    return tuple(dict.fromkeys(weight_name(layer) for layer in layers))


def sensitivity(g: Graph, calib_inputs: np.ndarray | Arrays, labels: np.ndarray | None = None,
                *, bits: Sequence[int] = DEFAULT_BITS, loss: str | None = None,
                curvature: str = "gauss-newton", tol: float = 0.05, max_iter: int = 100,
                min_iter: int = 3, fd_eps: float = FD_EPS, seed: int = 0,
                freeze: bool = True, observe: Observer | None = None,
                budget_s: float | None = None, clock: Clock | None = None,
                settled: Settled | None = None,
                forward: Forward | None = None) -> Sensitivity:
    """HAWQ-V2 sensitivity `Omega_l(b) = max(Tr(H_l)/n_l, 0) * ||Q_b(W_l) - W_l||^2`.

    Args:
        g: the lowered model (`compiler.ir.Graph`).
        calib_inputs: calibration inputs by input name (or one array for a single-input
            model), a whole number of the graph's static batches along axis 0.
        labels: integer class labels (for "ce") or float targets (for "mse"), one per row.
        bits: weight-bit choices.
        loss: "ce", "kl" or "mse"; None picks by the rule in `compiler.sensitivity.loss`.
        curvature: "gauss-newton" (default): output-space Hutchinson probes of J^T H_y J, one
            float32 backward pass each, the exact Hessian for the label-free losses
            (`compiler.sensitivity.gauss_newton`); "hessian": weight-space Hutchinson with
            float64 finite-difference Hessian-vector products (this module's docstring).
        tol: relative standard error at which to stop.
        max_iter: cap on Hutchinson iterations (probes).
        min_iter: least iterations before stopping ("hessian"; "gauss-newton" starts with
            enough probes for a variance estimate, `trace_estimate.MIN_DOF`).
        fd_eps: difference step relative to rms(w) ("hessian").
        seed: Rademacher seed.
        freeze: freeze piecewise-linear switching patterns in the difference quotients
            ("hessian").
        observe: sees every tensor of each calibration chunk's float32 forward pass, once per
            chunk, in order, maybe on a worker thread ("gauss-newton"; see `gauss_newton.traces`).
        budget_s: seconds the analysis may take (None: no bound); when they are used up it
            stops probing and reports the precision reached (`rse`) and `cut_short`.
        clock: the clock `budget_s` is measured on. Default: for "gauss-newton" a
            `WorkMeter` charged with the work of the passes run (`time_budget.WORK_RATE`),
            so the plan does not depend on the machine's load; for "hessian" the process's
            CPU seconds. Tests inject a fake one.
        settled: (estimate, bool per weight tensor still above `tol`) -> bool per weight
            tensor (`unique_weights` order): the tensors whose trace uncertainty cannot
            change the result (e.g. a layer's bit choice) need not reach `tol` (see
            `edgesim.allocation.settled_rule`).
        forward: feeds -> every tensor of the float32 forward pass ("gauss-newton"), e.g. run
            in onnxruntime (`edgesim.float_pass.onnxruntime_env`); default the reference
            executor.

    Returns:
        A `Sensitivity` with `score` = Tr(H_l)/n_l and `rse` per layer.

    Raises:
        ModelError: on bad inputs, labels, loss, curvature or bits, or a model with nothing
            to quantise.
    """
    # One BLAS thread: the analysis runs batch-1 GEMMs, too small for OpenBLAS to split
    # profitably; its threads spun and waited at barriers instead (one forward + backward
    # pass, shared 2-core machine, 1 vs 2 threads: MiniLM 0.3-0.5 s vs 5-6 s wall, 0.08 vs
    # 1.4 s CPU; mobilenet_v2 0.2-0.4 vs 1.7-2.4 s; magika 0.4-0.5 vs 0.5-0.9 s).
    from compiler.window_kernels import serial  # numba loads with the first use

    with threadpool_limits(1, user_api="blas"), serial():  # likewise numba's window loops
        return _sensitivity(g, calib_inputs, labels, bits=bits, loss=loss,
                            curvature=curvature, tol=tol, max_iter=max_iter,
                            min_iter=min_iter, fd_eps=fd_eps, seed=seed, freeze=freeze,
                            observe=observe, budget=start(budget_s, _clock(clock, curvature)),
                            settled=settled, forward=forward)


def _clock(clock: Clock | None, curvature: str) -> Clock:
    """The budget's clock: `clock`, else by `curvature` (see `sensitivity`)."""
    if clock is not None:
        return clock
    return WorkMeter() if curvature == "gauss-newton" else time.process_time


def _sensitivity(g: Graph, calib_inputs: np.ndarray | Arrays, labels: np.ndarray | None, *,
                 bits: Sequence[int], loss: str | None, curvature: str, tol: float,
                 max_iter: int, min_iter: int, fd_eps: float, seed: int, freeze: bool,
                 observe: Observer | None, budget: TimeBudget | None,
                 settled: Settled | None,
                 forward: Forward | None = None) -> Sensitivity:
    layers, choices = check_quantisable(g), bit_choices(bits)
    names = unique_weights(layers)
    if curvature == "gauss-newton":
        loss = default_loss(g, labels) if loss is None else loss
        check_loss(g, loss, labels)
        parts = chunks(g, calib_inputs)
        check_label_rows(labels, sum(len(next(iter(p.values()))) for p in parts))
        est = gauss_newton.traces(g, parts, loss, loss_outputs(g, loss, labels), names,
                                  tol=tol, max_iter=max_iter, seed=seed, observe=observe,
                                  budget=budget, settled=settled, forward=forward)
        exact = loss == "kl" or (loss == "mse" and labels is None)  # against the reference
        how: tuple[str, ...] = ("curvature=gauss-newton" + (" (exact Hessian: zero-gradient loss)"
                                           if exact else ""),)
    elif curvature == "hessian":
        obj = objective(g, calib_inputs, labels, loss)
        loss = obj.loss
        est = hutchinson(obj, names, tol=tol, max_iter=max_iter, min_iter=min_iter,
                         fd_eps=fd_eps, seed=seed, freeze=freeze, budget=budget,
                         settled=settled)
        how = ("curvature=hessian (finite differences)", f"freeze={freeze}")
    else:
        raise ModelError("curvature", f"unknown curvature {curvature!r}; choose one of "
                         f"{list(CURVATURES)}")
    index = [names.index(weight_name(layer)) for layer in layers]
    score = est.trace[index] / weight_sizes(g, layers)
    omega = np.maximum(score, 0.0)[:, None] * quant_errors(g, layers, choices)
    notes = (f"loss={loss}", *loss_notes(g, loss, labels), *how, f"iterations={est.iterations}",
             f"max_rse={float(est.rse.max()):.3g}",
             *((f"analysis budget {budget.seconds:g} CPU-s used up before rse<{tol:g}",)
               if est.cut_short and budget is not None else ()),
             *_settled_note(est, tol, settled))
    return Sensitivity(tuple(layer.name for layer in layers), choices, omega, score, "hawq",
                       est.iterations, est.rse[index], notes, est.cut_short)


def _settled_note(est: TraceEstimate, tol: float, settled: Settled | None
                  ) -> tuple[str, ...]:
    """Why an analysis that was not cut short stopped above `tol`: the rule settled the rest."""
    above = int(np.count_nonzero(est.rse >= tol))
    if est.cut_short or settled is None or not above:
        return ()
    return (f"{above} of {len(est.rse)} traces stopped at rse>={tol:g}, settled: no value "
            "within their error changes the plan beyond the settle rule's margin",)
