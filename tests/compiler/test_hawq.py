"""HAWQ's estimates: Hutchinson traces vs closed-form and brute-force Hessians,
finite-difference HVPs vs exact HVPs, and a falsifiable ranking check on the trained digits
CNN (the losses: test_hawq_loss.py; the time budget and stopping rule: test_hawq_budget.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy.special import softmax
from scipy.stats import spearmanr
from sklearn.metrics import log_loss

from compiler.errors import ModelError
from compiler.executor import run, vjp
from compiler.frontend import load
from compiler.sensitivity import gauss_newton, hawq
from compiler.sensitivity.loss import (
    cross_entropy,
    objective,
    squared_error,
)
from compiler.sensitivity.trace_estimate import pooled_estimate
from edgesim import zoo
from tests.compiler.hawq_models import mlp, two_block_least_squares

ROOT = Path(__file__).resolve().parents[2]

# --- least squares: closed form -----------------------------------------------------------------

@pytest.mark.parametrize("curvature", hawq.CURVATURES)  # both exact for a linear model
@pytest.mark.parametrize("batch", [32, 8])  # one chunk, or four chunks of the graph's batch
def test_hutchinson_matches_least_squares_closed_form(batch: int, curvature: str) -> None:
    g, feeds, t = two_block_least_squares(batch=batch)
    x1, x2 = (feeds[k].astype(np.float64) for k in ("x1", "x2"))
    exact = np.array([2 * 2 * (x1**2).sum() / 32, 2 * 2 * (x2**2).sum() / 32])  # out = 2
    sens = hawq.sensitivity(g, feeds, t, loss="mse", curvature=curvature, tol=0.05,
                            max_iter=400)
    trace = sens.score * np.array([10, 6])  # score = Tr / n_l
    assert sens.iterations < 400  # converged to 5%
    assert np.all(sens.rse < 0.05)
    assert np.all(np.abs(trace - exact) <= 3 * sens.rse * np.abs(trace) + 1e-9)


def test_fd_hvp_equals_exact_least_squares_hvp() -> None:
    g, feeds, t = two_block_least_squares()
    obj = objective(g, feeds, t, loss="mse")
    names = hawq.unique_weights(hawq.check_quantisable(g))
    rng = np.random.default_rng(3)
    v = {n: rng.standard_normal(obj.graph.weights[n].shape) for n in names}
    got = hawq.hvp(obj, v, h=1e-3)
    x1, x2 = (feeds[k].astype(np.float64) for k in ("x1", "x2"))
    dy = x1 @ v[names[0]].T + x2 @ v[names[1]].T  # lowered weights are [out, in]
    np.testing.assert_allclose(got[names[0]], 2 / 32 * dy.T @ x1, rtol=1e-8)
    np.testing.assert_allclose(got[names[1]], 2 / 32 * dy.T @ x2, rtol=1e-8)


# --- a small nonlinear net: brute-force Hessian -------------------------------------------------

def _brute_hessian(g, x: np.ndarray, labels: np.ndarray | None, names: tuple[str, ...],
                   h: float = 1e-6) -> np.ndarray:
    """Hessian of the mean loss by central differences of the executor's gradient, one column
    per weight. The cotangents are written out here: CE (softmax - onehot) / N with labels,
    else KL to the unperturbed model's softmax q, (softmax - q) / N."""
    w0 = {k: np.asarray(g.weights[k], np.float64) for k in names}
    sizes = [w0[k].size for k in names]
    y0 = run(g, {"x": x}, dtype="float64")[g.outputs[0]]
    target = softmax(y0, axis=-1) if labels is None else np.eye(y0.shape[1])[labels]

    def grad(flat: np.ndarray) -> np.ndarray:
        parts = np.split(flat, np.cumsum(sizes)[:-1])
        gw = replace(g, weights={
            **g.weights, **{k: p.reshape(w0[k].shape) for k, p in zip(names, parts)}})
        y = run(gw, {"x": x}, dtype="float64")[g.outputs[0]]
        grads = vjp(gw, {"x": x}, {g.outputs[0]: (softmax(y, axis=-1) - target) / len(y)})
        return np.concatenate([grads[k].ravel() for k in names])

    flat = np.concatenate([w0[k].ravel() for k in names])
    cols = [(grad(flat + h * e) - grad(flat - h * e)) / (2 * h) for e in np.eye(flat.size)]
    return np.array(cols).T


def _block_traces(hess: np.ndarray) -> np.ndarray:
    """Traces of the fc1 (4*5 weights) and fc2 (5*3) blocks of an `_mlp` Hessian."""
    return np.array([np.trace(hess[:20, :20]), np.trace(hess[20:, 20:])])


@pytest.mark.parametrize("act", ["Tanh", "Relu"])
def test_fd_hvp_equals_brute_force_hessian_times_v(act: str) -> None:
    g, x, labels = mlp(act)
    obj = objective(g, x, labels)
    names = hawq.unique_weights(hawq.check_quantisable(g))
    hess = _brute_hessian(g, x, labels, names)
    rng = np.random.default_rng(0)
    v = {n: rng.choice([-1.0, 1.0], obj.graph.weights[n].shape) for n in names}
    # A large step: with ReLU it crosses kinks, which the frozen switching pattern ignores.
    got = hawq.hvp(obj, v, h=1e-3, rule_for=hawq.pattern_rules(obj))
    flat_v = np.concatenate([v[n].ravel() for n in names])
    np.testing.assert_allclose(np.concatenate([got[n].ravel() for n in names]), hess @ flat_v,
                               rtol=1e-4, atol=1e-6 * np.abs(hess).max())


def test_hutchinson_matches_brute_force_block_traces() -> None:
    g, x, labels = mlp("Tanh")
    names = hawq.unique_weights(hawq.check_quantisable(g))
    exact = _block_traces(_brute_hessian(g, x, labels, names))
    sens = hawq.sensitivity(g, x, labels, curvature="hessian", tol=0.05, max_iter=600, seed=1)
    trace = sens.score * np.array([20, 15])
    assert np.all(np.abs(trace - exact) <= 3 * sens.rse * np.abs(trace) + 1e-9)


@pytest.mark.parametrize("labelled", [False, True])
def test_gauss_newton_traces_equal_brute_force_kl_hessian(labelled: bool) -> None:
    """KL to the model's own outputs has a zero output gradient, so its Hessian is exactly
    J^T H_y J; cross-entropy's Gauss-Newton term has the same H_y (softmax), so with labels
    the Gauss-Newton traces are those same numbers (not the CE Hessian's: see the test above,
    whose exact traces differ from these by the residual term)."""
    g, x, labels = mlp("Tanh")
    names = hawq.unique_weights(hawq.check_quantisable(g))
    exact = _block_traces(_brute_hessian(g, x, None, names))
    assert not np.allclose(exact, _block_traces(_brute_hessian(g, x, labels, names)), rtol=0.1)
    sens = hawq.sensitivity(g, x, labels if labelled else None, tol=0.03, max_iter=2000, seed=2)
    assert sens.notes[0] == ("loss=ce" if labelled else "loss=kl")
    assert np.all(sens.rse < 0.03)
    trace = sens.score * np.array([20, 15])
    assert np.all(np.abs(trace - exact) <= 3 * sens.rse * np.abs(trace) + 1e-9)


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_output_factor_squares_to_the_loss_hessian(loss: str) -> None:
    """L L^T from `output_factor` equals the Hessian of the loss in the outputs, taken by
    central differences of the loss's own cotangent (itself checked against FD above)."""
    rng = np.random.default_rng(4)
    y, labels = rng.standard_normal((3, 4)), rng.integers(0, 4, 3)
    fn = (lambda z: cross_entropy(z, labels)[1]) if loss == "ce" else (
        lambda z: squared_error(z, np.zeros_like(z))[1])
    eye = np.eye(y.size).reshape(y.size, *y.shape)
    hess = np.array([((fn(y + 1e-6 * e) - fn(y - 1e-6 * e)) / 2e-6).ravel() for e in eye])
    factor = gauss_newton.output_factor(loss, y, rows=3)
    lmat = np.array([factor(e).ravel() for e in eye]).T  # column j = L e_j
    np.testing.assert_allclose(lmat @ lmat.T, hess, atol=1e-8)


def test_softmax_is_scipys_bit_for_bit() -> None:
    """The output factor's own softmax equals scipy.special.softmax exactly (the traces do
    not move), over the last axis, at magnitudes where an unshifted exp overflows."""
    rng = np.random.default_rng(6)
    for y in (rng.standard_normal((3, 4)), 800.0 * rng.standard_normal((2, 5, 1000)),
              np.array([[1e4, -1e4, 0.0]])):
        got = gauss_newton.softmax(y)
        assert np.isfinite(got).all()
        np.testing.assert_array_equal(got, softmax(y, axis=-1))


def test_a_softmax_loss_analysis_loads_no_scipy_special() -> None:
    """The default (Gauss-Newton, KL) analysis of a ReLU CNN needs no scipy.special, whose
    import cost ~0.13 CPU-s of every such compile (a fresh process: this one's tests load it)."""
    code = ("import sys, numpy as np; from compiler.frontend import load; "
            "from edgesim import zoo; from compiler.sensitivity import hawq; "
            "g = load(zoo.build('digits_cnn'), {'input': (1, 1, 8, 8)}); "
            "x = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32); "
            "s = hawq.sensitivity(g, {'input': x}); "
            "print(s.notes[0], 'scipy.special' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.split() == ["loss=kl", "False"]


@pytest.mark.parametrize("spread", [0.0, 1.0])
def test_pooled_variance_matches_its_expectation(spread: float) -> None:
    """The trace estimate's variance, against its closed-form expectation over many draws
    (one column each). Chunk c's probe samples are N(T_c, s_c^2). With 3 probes per chunk the
    pooled variance is unbiased for sum(s_c^2) / 3; with one probe, the between-chunk bound
    has expectation sum(s_c^2) + C/(C-1) * sum((T_c - mean T)^2): unbiased when the chunks
    agree, above the variance when they do not."""
    rng = np.random.default_rng(5)
    chunks, draws = 12, 40000
    means = 2.0 + spread * rng.uniform(-1, 1, chunks)
    sds = rng.uniform(0.1, 0.5, chunks)
    for probes, want in [
        (3, np.sum(sds ** 2) / 3),
        (1, np.sum(sds ** 2) + chunks / (chunks - 1) * np.sum((means - means.mean()) ** 2)),
    ]:
        parts = [m + s * rng.standard_normal((probes, draws)) for m, s in zip(means, sds)]
        est = pooled_estimate([f"w{i}" for i in range(draws)], parts)
        var = (est.rse * np.abs(est.trace)) ** 2
        np.testing.assert_allclose(est.trace.mean(), means.sum(), rtol=1e-3)
        np.testing.assert_allclose(var.mean(), want, rtol=4 * var.std() / var.mean() / 200)
    if spread:
        assert want > 2 * np.sum(sds ** 2)  # the bound is conservative, and visibly so here


def test_gauss_newton_rejects_bad_labels_and_curvature() -> None:
    g, x, labels = mlp("Tanh")
    with pytest.raises(ModelError, match="labels"):
        hawq.sensitivity(g, x, labels[:-1])
    with pytest.raises(ModelError, match="curvature"):
        hawq.sensitivity(g, x, labels, curvature="fisher")


# --- ranking on the trained digits CNN ----------------------------------------------------------

def _ce(g, x: np.ndarray, y: np.ndarray) -> float:
    logits = run(g, {"input": x}, dtype="float64")["logits"]
    return log_loss(y, softmax(logits, axis=-1), labels=np.arange(10))


def test_highest_hawq_layer_hurts_more_under_relative_noise() -> None:
    data = zoo.load_digits_data()
    x, y = data["x_calib"][:48], data["y_calib"][:48]
    g = load(zoo.build("digits_cnn"), {"input": (48, 1, 8, 8)})
    sens = hawq.sensitivity(g, x, y, tol=0.15, max_iter=20)
    layers = [g.layer(n) for n in sens.layers]
    w = [np.asarray(g.weights[la.inputs[1]], np.float64) for la in layers]
    # Noise of std alpha * rms(W) raises the loss by ~ alpha^2/2 * rms(W)^2 * Tr(H_l).
    predicted = sens.score * np.array([(a * a).sum() for a in w])
    rng, base = np.random.default_rng(0), _ce(g, x, y)

    def hurt(i: int) -> float:
        rms = np.sqrt(np.mean(w[i] ** 2))
        noisy = [{**g.weights, layers[i].inputs[1]: w[i] + 0.1 * rms * rng.standard_normal(
            w[i].shape)} for _ in range(6)]
        return float(np.mean([_ce(replace(g, weights=ws), x, y) - base for ws in noisy]))

    measured = np.array([hurt(i) for i in range(len(layers))])
    top, bottom = int(np.argmax(predicted)), int(np.argmin(predicted))
    assert predicted[top] > 3 * predicted[bottom]  # a clear call to check
    assert measured[top] > measured[bottom]
    assert spearmanr(predicted, measured).statistic >= 0.8 - 1e-9  # <= one adjacent swap of 4


