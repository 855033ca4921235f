"""HAWQ: losses vs finite differences and scipy/sklearn, Hutchinson traces vs closed-form and
brute-force Hessians, finite-difference HVPs vs exact HVPs, and a falsifiable ranking check on
the trained digits CNN."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from scipy.special import rel_entr, softmax
from scipy.stats import spearmanr
from sklearn.metrics import log_loss

from compiler.errors import ModelError
from compiler.executor import run, vjp
from compiler.frontend import load
from compiler.sensitivity import gauss_newton, hawq
from compiler.sensitivity.loss import (
    cross_entropy,
    default_loss,
    kl_divergence,
    objective,
    squared_error,
)
from compiler.sensitivity.trace_estimate import pooled_estimate
from edgesim import zoo

ROOT = Path(__file__).resolve().parents[2]

def _model(nodes: list, inputs: dict[str, list[int]], output: tuple[str, list[int]],
           weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info(k, TensorProto.FLOAT, s)
                     for k, s in inputs.items()],
        [helper.make_tensor_value_info(output[0], TensorProto.FLOAT, output[1])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _fd_grad(f, y: np.ndarray, h: float = 1e-6) -> np.ndarray:
    out = np.zeros_like(y)
    for i in np.ndindex(y.shape):
        e = np.zeros_like(y)
        e[i] = h
        out[i] = (f(y + e) - f(y - e)) / (2 * h)
    return out


# --- losses -------------------------------------------------------------------------------------

@settings(max_examples=20, deadline=None)
@given(rows=st.integers(1, 4), classes=st.integers(2, 5), seed=st.integers(0, 10**6))
def test_loss_cotangents_match_finite_differences(rows: int, classes: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    y, ref = rng.standard_normal((2, rows, classes)) * 2
    labels = rng.integers(0, classes, rows)
    for loss, target in ((cross_entropy, labels), (kl_divergence, ref), (squared_error, ref)):
        _, cot = loss(y, target)
        fd = _fd_grad(lambda z, f=loss, t=target: f(z, t)[0], y)
        np.testing.assert_allclose(cot, fd, rtol=1e-6, atol=1e-8)


def test_loss_values_match_sklearn_and_scipy() -> None:
    rng = np.random.default_rng(0)
    y, ref = rng.standard_normal((2, 6, 4)) * 3
    labels = np.array([0, 1, 2, 3, 1, 0])
    p = softmax(y, axis=-1)
    assert cross_entropy(y, labels)[0] == pytest.approx(log_loss(labels, p), rel=1e-10)
    kl = rel_entr(softmax(ref, axis=-1), p).sum() / 6
    assert kl_divergence(y, ref)[0] == pytest.approx(kl, rel=1e-10)
    assert squared_error(y, ref)[0] == pytest.approx(((y - ref) ** 2).sum() / 6, rel=1e-12)


def test_default_loss_rule() -> None:
    cls = load(_model([helper.make_node("MatMul", ["x", "w"], ["y"])], {"x": [2, 3]},
                      ("y", [2, 4]), {"w": np.ones((3, 4))}))
    assert default_loss(cls, np.zeros(2)) == "ce"
    assert default_loss(cls, None) == "kl"  # one [N, C] output: class scores
    seq = load(_model([helper.make_node("MatMul", ["x", "w"], ["y"])], {"x": [2, 5, 3]},
                      ("y", [2, 5, 4]), {"w": np.ones((3, 4))}))
    assert default_loss(seq, None) == "mse"
    with pytest.raises(ModelError, match="labels"):
        objective(cls, np.zeros((2, 3), np.float32), None, loss="ce")
    with pytest.raises(ModelError, match="whole batches"):
        objective(cls, np.zeros((3, 3), np.float32))


# --- least squares: closed form -----------------------------------------------------------------

def _two_block_least_squares(n: int = 32, seed: int = 0, batch: int | None = None):
    """y = x1 @ W1 + x2 @ W2 (two linear layers), MSE to targets t.

    L = (1/N) sum_n ||y_n - t_n||^2 and y_no = sum_i x1_ni w1_oi + sum_j x2_nj w2_oj, so
    d2L / dw1_oi dw1_o'i' = (2/N) sum_n x1_ni x1_ni' [o == o'], whose trace over the block
    [out, in] is out * 2 * sum(x1^2) / N; cross blocks are (2/N) X1^T X2 per output.
    """
    rng = np.random.default_rng(seed)
    x1, x2 = rng.standard_normal((n, 5)), rng.standard_normal((n, 3)) * 3.0
    weights = {"w1": rng.standard_normal((5, 2)), "w2": rng.standard_normal((3, 2))}
    nodes = [helper.make_node("MatMul", ["x1", "w1"], ["y1"], name="mm1"),
             helper.make_node("MatMul", ["x2", "w2"], ["y2"], name="mm2"),
             helper.make_node("Add", ["y1", "y2"], ["y"], name="add")]
    b = n if batch is None else batch  # the graph's static batch; the data may be k batches
    g = load(_model(nodes, {"x1": [b, 5], "x2": [b, 3]}, ("y", [b, 2]), weights))
    feeds = {"x1": x1.astype(np.float32), "x2": x2.astype(np.float32)}
    targets = rng.standard_normal((n, 2))
    return g, feeds, targets


@pytest.mark.parametrize("curvature", hawq.CURVATURES)  # both exact for a linear model
@pytest.mark.parametrize("batch", [32, 8])  # one chunk, or four chunks of the graph's batch
def test_hutchinson_matches_least_squares_closed_form(batch: int, curvature: str) -> None:
    g, feeds, t = _two_block_least_squares(batch=batch)
    x1, x2 = (feeds[k].astype(np.float64) for k in ("x1", "x2"))
    exact = np.array([2 * 2 * (x1**2).sum() / 32, 2 * 2 * (x2**2).sum() / 32])  # out = 2
    sens = hawq.sensitivity(g, feeds, t, loss="mse", curvature=curvature, tol=0.05,
                            max_iter=400)
    trace = sens.score * np.array([10, 6])  # score = Tr / n_l
    assert sens.iterations < 400  # converged to 5%
    assert np.all(sens.rse < 0.05)
    assert np.all(np.abs(trace - exact) <= 3 * sens.rse * np.abs(trace) + 1e-9)


def test_fd_hvp_equals_exact_least_squares_hvp() -> None:
    g, feeds, t = _two_block_least_squares()
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

def _mlp(act: str, n: int = 16, seed: int = 1):
    rng = np.random.default_rng(seed)
    weights = {"w1": rng.standard_normal((4, 5)) * 0.8, "w2": rng.standard_normal((5, 3)) * 0.8}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
             helper.make_node(act, ["h"], ["a"], name="act"),
             helper.make_node("MatMul", ["a", "w2"], ["y"], name="fc2")]
    g = load(_model(nodes, {"x": [n, 4]}, ("y", [n, 3]), weights))
    x = rng.standard_normal((n, 4)).astype(np.float32)
    return g, x, rng.integers(0, 3, n)


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
    g, x, labels = _mlp(act)
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
    g, x, labels = _mlp("Tanh")
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
    g, x, labels = _mlp("Tanh")
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
    g, x, labels = _mlp("Tanh")
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


# --- time budget and stopping rule --------------------------------------------------------------

def _probe_clock(monkeypatch: pytest.MonkeyPatch, later_s: int = 1
                 ) -> tuple[list[int], list[int]]:
    """A fake clock that advances one second per Gauss-Newton probe of one chunk (`later_s`
    from the 33rd chunk call on: a slower machine), and the list of each chunk call's probe
    count (so the work done can be asserted, not timed)."""
    now, calls = [0], []
    real = gauss_newton.chunk_samples

    def counted(*args, **kwargs):
        probes = args[5]
        now[0] += probes * (1 if len(calls) < 32 else later_s)
        calls.append(probes)
        return real(*args, **kwargs)
    monkeypatch.setattr(gauss_newton, "chunk_samples", counted)
    return now, calls


def test_budget_cuts_the_first_pass_and_samples_the_chunks(monkeypatch) -> None:
    """8 chunks take 2 probes each in the first pass (MIN_DOF = 8); at one second per probe a
    6 s budget holds three chunks (2, 4, 6 s) and no fourth, so 3 chunks stand for all 8: the
    estimate is 8/3 times their sum, and still within its own error of the closed form (exact
    for a linear model)."""
    now, calls = _probe_clock(monkeypatch)
    g, feeds, t = _two_block_least_squares(batch=4)
    x1, x2 = (feeds[k].astype(np.float64) for k in ("x1", "x2"))
    exact = np.array([2 * 2 * (x1**2).sum() / 32, 2 * 2 * (x2**2).sum() / 32])
    sens = hawq.sensitivity(g, feeds, t, loss="mse", tol=1e-3, budget_s=6,
                            clock=lambda: now[0])
    assert calls == [2, 2, 2] and sens.cut_short and sens.iterations == 2
    assert any("analysis budget 6 CPU-s used up" in n for n in sens.notes)
    assert np.all(np.isfinite(sens.rse)) and np.all(sens.rse > 1e-3)  # precision reached
    trace = sens.score * np.array([10, 6])
    assert np.all(np.abs(trace - exact) <= 4 * sens.rse * np.abs(trace))


def test_no_chunk_starts_that_cannot_finish_in_the_budget(monkeypatch) -> None:
    """At 2 s per chunk a 5 s budget has 1 s left after two chunks: a third would end at 6 s,
    so the pass stops at 4 s, within the budget (a check for a used-up budget before
    each chunk ran it and overran by 20 %, a whole chunk: seconds on a large model under load)."""
    now, calls = _probe_clock(monkeypatch)
    g, feeds, t = _two_block_least_squares(batch=4)
    sens = hawq.sensitivity(g, feeds, t, loss="mse", tol=1e-3, budget_s=5,
                            clock=lambda: now[0])
    assert calls == [2, 2] and sens.cut_short and now[0] <= 5
    assert np.all(np.isfinite(sens.rse))  # two chunks still give an error


def test_the_first_pass_is_paced_from_its_second_chunk(monkeypatch) -> None:
    """A fake clock: 1 s per probe, and 5 s more for the first forward pass (it starts
    onnxruntime's session); 8 chunks of 2 probes each. A 12 s budget: after two chunks (9 s)
    the pace is the second chunk's 2 s, so a third fits (11 s), a fourth does not. (Paced
    from the start, 4.5 s a chunk, the pass stopped after two.)"""
    from compiler.sensitivity import forward_ahead

    monkeypatch.setattr(forward_ahead, "spare_core", lambda: False)  # one thread: one clock
    now, calls = _probe_clock(monkeypatch)
    g, feeds, t = _two_block_least_squares(batch=4)

    def forward(f):
        now[0] += 5 if not seen else 0
        seen.append(1)
        return run(g, f, dtype="float32", keep=True)
    seen: list[int] = []
    sens = hawq.sensitivity(g, feeds, t, loss="mse", tol=1e-3, budget_s=12,
                            clock=lambda: now[0], forward=forward)
    assert calls == [2, 2, 2] and sens.cut_short and now[0] == 11


def test_a_cut_first_pass_still_observes_every_chunk(monkeypatch) -> None:
    """A 6 s budget cuts the first pass after 3 of 8 chunks (as above); the other 5 still
    run forward for `observe`, in order, so a caller collecting statistics on the way (the
    compile's calibration ranges) has every sample and needs no pass of its own."""
    now, calls = _probe_clock(monkeypatch)
    g, feeds, t = _two_block_least_squares(batch=4)
    seen: list[np.ndarray] = []
    sens = hawq.sensitivity(g, feeds, t, loss="mse", tol=1e-3, budget_s=6,
                            clock=lambda: now[0], observe=lambda env: seen.append(
                                env["x1"].copy()))
    assert calls == [2, 2, 2] and sens.cut_short
    np.testing.assert_array_equal(np.concatenate(seen), feeds["x1"])


def test_a_pass_that_cannot_finish_is_not_started(monkeypatch) -> None:
    """32 chunks: the first pass is one probe each (32 s); a second pass of even one probe
    per chunk would take as long, more than the 8 s a 40 s budget has left, so none starts:
    the estimate is the first pass's, bit for bit, and says the budget ended it."""
    g, feeds, t = _two_block_least_squares(batch=1)
    first = hawq.sensitivity(g, feeds, t, loss="mse", max_iter=1)
    now, calls = _probe_clock(monkeypatch)
    sens = hawq.sensitivity(g, feeds, t, loss="mse", tol=1e-3, budget_s=40,
                            clock=lambda: now[0])
    assert calls == [1] * 32 and sens.cut_short and sens.iterations == 1
    assert any("analysis budget 40 CPU-s used up" in n for n in sens.notes)
    np.testing.assert_array_equal(sens.score, first.score)
    np.testing.assert_array_equal(sens.rse, first.rse)


@pytest.mark.parametrize(("budget_s", "passes"), [(40, [1, 1]), (50, [1, 2])])
def test_a_later_pass_takes_the_probes_that_fit(monkeypatch, budget_s: int,
                                                passes: list[int]) -> None:
    """16 chunks of 2 rows: the first pass takes 16 s for one probe per chunk; tol 1e-3 wants
    2 more per chunk. With 24 s left (40 s budget) one more fits (16 s), with 34 s (50 s)
    both (32 s); then the 8 s or 2 s left fit no further pass, and the analysis stops there,
    cut short, within its budget."""
    g, feeds, t = _two_block_least_squares(batch=2)
    now, calls = _probe_clock(monkeypatch)
    sens = hawq.sensitivity(g, feeds, t, loss="mse", tol=1e-3, budget_s=budget_s,
                            clock=lambda: now[0])
    assert calls == [p for p in passes for _ in range(16)]
    assert sens.cut_short and sens.iterations == sum(passes) and now[0] <= budget_s
    assert np.all(sens.rse > 1e-3) and np.all(np.isfinite(sens.rse))  # the precision reached


def test_budget_cut_in_a_later_pass_drops_that_pass(monkeypatch) -> None:
    """A pass that fitted at the first pass's pace but runs slower (3 s per probe: a load
    spike) is cut as soon as its pace shows it cannot finish in the 70 s budget: after its
    first chunk (35 s used, 31 chunks at 3 s to go; a check for a used-up budget ran 13 chunks
    to 71 s, all dropped). Its probes are dropped: the estimate is the first pass's, bit for
    bit."""
    g, feeds, t = _two_block_least_squares(batch=1)
    first = hawq.sensitivity(g, feeds, t, loss="mse", max_iter=1)
    now, calls = _probe_clock(monkeypatch, later_s=3)
    sens = hawq.sensitivity(g, feeds, t, loss="mse", tol=1e-3, budget_s=70,
                            clock=lambda: now[0])
    assert calls == [1] * 32 + [1] and sens.cut_short and sens.iterations == 1
    assert now[0] <= 70
    np.testing.assert_array_equal(sens.score, first.score)
    np.testing.assert_array_equal(sens.rse, first.rse)


def test_generous_budget_changes_nothing(monkeypatch) -> None:
    g, feeds, t = _two_block_least_squares(batch=8)
    free = hawq.sensitivity(g, feeds, t, loss="mse", tol=0.05)
    now, _ = _probe_clock(monkeypatch)
    sens = hawq.sensitivity(g, feeds, t, loss="mse", tol=0.05, budget_s=1e6,
                            clock=lambda: now[0])
    assert not sens.cut_short and not free.cut_short and np.all(sens.rse < 0.05)
    np.testing.assert_array_equal(sens.score, free.score)


def test_settled_layers_need_no_more_probes(monkeypatch) -> None:
    """With tol far out of reach, probing goes on for the unsettled weight only: once the
    rule calls both settled, the first stopping test passes. The rule also sizes pass 2: it
    is asked about the first pass's estimate with its errors shrunk as more probes would
    (same samples), and as that never settles the second weight, pass 2 takes its cap, 3x."""
    g, feeds, t = _two_block_least_squares(batch=4)  # 8 chunks: first pass 2 probes
    _, calls = _probe_clock(monkeypatch)
    seen = []

    def settled(est, need):
        seen.append(est.iterations)
        return np.array([True, est.iterations >= 3])
    sens = hawq.sensitivity(g, feeds, t, loss="mse", tol=1e-6, max_iter=1000,
                            settled=settled)
    assert seen == [2, 2, 2, 6] and sens.iterations == 6  # pass 1: 2 probes, pass 2: 3x
    assert sum(calls) == 8 * 6 and not sens.cut_short


def test_no_early_test_follows_one_that_cannot_close_by_the_pass_end() -> None:
    """32 chunks of one sample: the first pass (one probe each) tests the chunks so far at 9,
    12, 16 and 24 of them. The rule settles the first weight always, the second never (as
    PP-OCR's one open weight within a pass). After the test at 9 chunks the rule is asked
    whether the open weight would settle with all 32 chunks (its error shrunk by
    sqrt(9 / (1.1 * 32))); it would not, so the tests at 12, 16 and 24 chunks (larger errors)
    are skipped and the pass ends with its own test: 3 questions where there were 5 (each a
    solve per open weight and interval end). The estimate is the plain first pass's, bit for
    bit."""
    g, feeds, t = _two_block_least_squares(batch=1)
    plain = hawq.sensitivity(g, feeds, t, loss="mse", tol=1e-9, max_iter=1)
    asked: list[np.ndarray] = []

    def settled(est, need):
        asked.append(est.rse.copy())
        return np.array([True, False])
    sens = hawq.sensitivity(g, feeds, t, loss="mse", tol=1e-9, max_iter=1, settled=settled)
    assert len(asked) == 3
    np.testing.assert_allclose(asked[1], asked[0] * np.sqrt(9 / (1.1 * 32)))  # the end's
    np.testing.assert_array_equal(sens.score, plain.score)
    np.testing.assert_array_equal(sens.rse, plain.rse)


@pytest.mark.parametrize("budget_s", [3.0, 3.5])
def test_hessian_curvature_respects_the_budget(budget_s: float) -> None:
    """Weight-space Hutchinson checks the budget after each iteration from the second on; a
    clock that advances one second per reading (one at the start, one per check) uses a 3 s
    budget up at the third check, i.e. after 4 iterations. A 3.5 s budget stops there too:
    0.5 s are left, less than the 0.75 s an iteration has taken (a check for a used-up
    budget ran a fifth and overran)."""
    g, x, labels = _mlp("Tanh")
    ticks = iter(range(1000))
    sens = hawq.sensitivity(g, x, labels, curvature="hessian", tol=1e-6, max_iter=50,
                            budget_s=budget_s, clock=lambda: next(ticks))
    assert sens.iterations == 4 and sens.cut_short and np.all(np.isfinite(sens.rse))


def _blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


def test_analysis_runs_on_one_blas_thread_and_restores_the_pool() -> None:
    from threadpoolctl import threadpool_limits

    g, feeds, _ = _two_block_least_squares(batch=8)
    seen: list[list[int]] = []
    with threadpool_limits(2, user_api="blas"):  # as on a 2-core machine, whatever this one has
        before = _blas_threads()
        hawq.sensitivity(g, feeds, loss="mse", max_iter=4,
                         observe=lambda env: seen.append(_blas_threads()))
        assert _blas_threads() == before
    assert seen and all(threads == [1] * len(before) for threads in seen)
    assert before and max(before) == 2


def test_a_busy_machine_does_not_cut_the_analysis(monkeypatch) -> None:
    """The default clock counts CPU seconds: a first pass whose chunks are each descheduled
    for 0.3 s (sleeping, as on a machine whose cores are busy: 2.4 s of wall time for 8
    chunks) within a 2 s budget is not cut, and the result is the unbounded analysis's; on
    the wall clock the same budget ran out after six or seven chunks."""
    g, feeds, t = _two_block_least_squares(batch=8)
    free = hawq.sensitivity(g, feeds, t, loss="mse", tol=0.05)
    real, calls = gauss_newton.chunk_samples, []

    def descheduled(*args, **kwargs):
        if len(calls) < 8:
            time.sleep(0.3)
        calls.append(args[5])
        return real(*args, **kwargs)
    monkeypatch.setattr(gauss_newton, "chunk_samples", descheduled)
    sens = hawq.sensitivity(g, feeds, t, loss="mse", tol=0.05, budget_s=2)
    assert not sens.cut_short and len(calls) >= 8
    np.testing.assert_array_equal(sens.score, free.score)
    np.testing.assert_array_equal(sens.rse, free.rse)
    calls.clear()
    wall = hawq.sensitivity(g, feeds, t, loss="mse", tol=0.05, budget_s=2,
                            clock=time.monotonic)
    assert wall.cut_short  # the sleeps alone exceed the budget in wall seconds
