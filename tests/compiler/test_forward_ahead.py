"""HAWQ's forward passes and observer on worker threads (`compiler.sensitivity.forward_ahead`):
the samples are the serial computation's, the observer sees each chunk once and in order, the
next chunk's forward pass runs during this one's backward pass, and errors surface as a
serial run's would; on a machine with no core to spare it all runs on the calling thread.
Each test runs with the workers (a spare core, forced) and, where it holds without them too,
without."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from compiler import executor
from compiler.frontend import load
from compiler.sensitivity import forward_ahead, gauss_newton, hawq
from compiler.sensitivity.loss import chunks, loss_outputs
from edgesim import zoo
from tests.compiler.hawq_models import two_block_least_squares as _two_block_least_squares


def _digits(n: int = 12):
    g = load(zoo.build("digits_cnn"))
    x = zoo.load_digits_data()["x_calib"][:n]
    return g, chunks(g, x), _names(g)


@pytest.fixture(params=[True, False], ids=["workers", "serial"])
def spare(request, monkeypatch) -> bool:
    """Whether a core is spare (the workers run), forced either way; these models' chunks are
    far below `AHEAD_MIN_BYTES`, so that bound is lifted."""
    monkeypatch.setattr(forward_ahead, "spare_core", lambda: request.param)
    monkeypatch.setattr(forward_ahead, "AHEAD_MIN_BYTES", 0)
    return bool(request.param)


def _names(g) -> tuple[str, ...]:
    return hawq.unique_weights(hawq.check_quantisable(g))


def _serial_samples(g, parts, names, seed: int) -> np.ndarray:
    """The first pass of one probe per chunk as the serial loop computes it: each chunk's
    forward pass on the calling thread, then its probe, drawing from one generator in order."""
    rng, outputs = np.random.default_rng(seed), loss_outputs(g, "kl", None)
    return sum(gauss_newton.chunk_samples(g, feeds, "kl", outputs, names, 1, len(parts), rng)
               for feeds in parts)


def test_samples_equal_the_serial_loop_and_forwards_leave_the_calling_thread(spare) -> None:
    """digits_cnn (convs, ReLUs, max-pool: the window kernels run on both threads), 12
    chunks, one probe each: bit for bit the serial loop's samples, every forward pass run on
    a worker thread (on the calling thread without a spare core)."""
    g, parts, names = _digits()
    threads = []

    def forward(feeds):
        threads.append(threading.current_thread())
        return executor.run(g, feeds, dtype="float32", keep=True)
    est = gauss_newton.traces(g, parts, "kl", loss_outputs(g, "kl", None), names,
                              max_iter=1, seed=5, forward=forward, early=False)
    np.testing.assert_array_equal(est.samples, _serial_samples(g, parts, names, seed=5))
    on_caller = [t is threading.main_thread() for t in threads]
    assert len(threads) == len(parts) and on_caller == [not spare] * len(parts)


@pytest.mark.parametrize(("least", "most"), [(0, 0), (2**20, 2**30)])
def test_chunks_outside_the_bounds_run_on_the_calling_thread(monkeypatch, least: int,
                                                             most: int) -> None:
    """A spare core, but chunks above `AHEAD_BYTES` or below `AHEAD_MIN_BYTES` (this model's
    are 192 bytes): no worker runs."""
    monkeypatch.setattr(forward_ahead, "spare_core", lambda: True)
    monkeypatch.setattr(forward_ahead, "AHEAD_MIN_BYTES", least)
    monkeypatch.setattr(forward_ahead, "AHEAD_BYTES", most)
    g, feeds, t = _two_block_least_squares(batch=8)
    threads = []

    def forward(f):
        threads.append(threading.current_thread())
        return executor.run(g, f, dtype="float32", keep=True)
    gauss_newton.traces(g, chunks(g, feeds), "mse", ["y"], _names(g), max_iter=2,
                        forward=forward)
    assert threads and all(t is threading.main_thread() for t in threads)


def test_next_forward_runs_during_the_backward_pass(monkeypatch) -> None:
    """Chunk 0's probes wait for chunk 1's forward pass to begin: that happens only if it runs
    beside them (serially it would start after them; the wait would then give up)."""
    monkeypatch.setattr(forward_ahead, "spare_core", lambda: True)
    monkeypatch.setattr(forward_ahead, "AHEAD_MIN_BYTES", 0)
    g, feeds, t = _two_block_least_squares(batch=8)
    started = [threading.Event() for _ in range(4)]
    overlapped = []
    real = gauss_newton.chunk_samples

    def forward(f):
        started[int(np.flatnonzero(feeds["x1"][:, 0] == f["x1"][0, 0])[0]) // 8].set()
        return executor.run(g, f, dtype="float32", keep=True)

    def probes(*args, **kwargs):
        if not overlapped:
            overlapped.append(started[1].wait(timeout=30))
        return real(*args, **kwargs)
    monkeypatch.setattr(gauss_newton, "chunk_samples", probes)
    gauss_newton.traces(g, chunks(g, feeds), "mse", ["y"], _names(g), max_iter=2,
                        forward=forward)
    assert overlapped == [True]


@pytest.mark.parametrize(("tol", "budget_s", "stops_at"), [
    (0.25, None, 9),     # early stop at the first check: 23 chunks observed forward only
    (1e-6, 3.0, 3),      # a budget cut: one second a chunk, so 3 chunks fit and are probed
    (1e-6, None, 32)])   # every chunk probed, then more passes (observed only in the first)
def test_observer_sees_every_chunk_once_in_order(monkeypatch, spare, tol: float,
                                                 budget_s: float | None, stops_at: int) -> None:
    g, feeds, t = _two_block_least_squares(batch=1)
    now, probed, seen = [0.0], [], []
    real = gauss_newton.chunk_samples

    def timed(*args, **kwargs):
        now[0] += 1.0
        probed.append(args[5])
        return real(*args, **kwargs)
    monkeypatch.setattr(gauss_newton, "chunk_samples", timed)
    sens = hawq.sensitivity(g, feeds, t, loss="mse", tol=tol, max_iter=3, budget_s=budget_s,
                            clock=lambda: now[0], observe=lambda env: seen.append(env["x1"]))
    assert probed[:stops_at] == [1] * stops_at and len(probed) >= stops_at
    assert (len(probed) > 32) == (stops_at == 32) and sens.cut_short == (budget_s is not None)
    np.testing.assert_array_equal(np.concatenate(seen), feeds["x1"])


def test_an_observer_error_is_raised(spare) -> None:
    g, feeds, t = _two_block_least_squares(batch=1)

    def observe(env):
        if env["x1"][0, 0] == feeds["x1"][20, 0]:
            raise ValueError("NaN in chunk 20")
    with pytest.raises(ValueError, match="NaN in chunk 20"):
        hawq.sensitivity(g, feeds, t, loss="mse", tol=0.25, observe=observe)


def test_a_forward_error_past_the_last_chunk_probed_is_dropped(spare) -> None:
    """Without an observer an early stop at 9 chunks ends the analysis; the 10th chunk's
    forward pass, begun ahead (unless the stop cancelled it first), fails, but a serial run
    never reached it."""
    g, feeds, t = _two_block_least_squares(batch=1)
    count = []

    def forward(f):
        count.append(1)
        if len(count) > 9:
            raise ValueError("chunk 10")
        return executor.run(g, f, dtype="float32", keep=True)
    est = gauss_newton.traces(g, chunks(g, feeds), "mse", ["y"], _names(g), tol=0.25,
                              forward=forward)
    assert est.iterations == 1 and np.all(est.trace > 0) and len(count) in ((9, 10) if spare
                                                                             else (9,))
