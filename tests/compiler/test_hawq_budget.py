"""HAWQ's time budget and stopping rule, on fake clocks that count the work done (probes per
chunk), so each test asserts what ran, not how long it took."""

from __future__ import annotations

import time

import numpy as np
import pytest

from compiler.executor import run
from compiler.sensitivity import gauss_newton, hawq
from tests.compiler.hawq_models import mlp, two_block_least_squares


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
    g, feeds, t = two_block_least_squares(batch=4)
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
    g, feeds, t = two_block_least_squares(batch=4)
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
    g, feeds, t = two_block_least_squares(batch=4)

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
    g, feeds, t = two_block_least_squares(batch=4)
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
    g, feeds, t = two_block_least_squares(batch=1)
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
    g, feeds, t = two_block_least_squares(batch=2)
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
    g, feeds, t = two_block_least_squares(batch=1)
    first = hawq.sensitivity(g, feeds, t, loss="mse", max_iter=1)
    now, calls = _probe_clock(monkeypatch, later_s=3)
    sens = hawq.sensitivity(g, feeds, t, loss="mse", tol=1e-3, budget_s=70,
                            clock=lambda: now[0])
    assert calls == [1] * 32 + [1] and sens.cut_short and sens.iterations == 1
    assert now[0] <= 70
    np.testing.assert_array_equal(sens.score, first.score)
    np.testing.assert_array_equal(sens.rse, first.rse)


def test_generous_budget_changes_nothing(monkeypatch) -> None:
    g, feeds, t = two_block_least_squares(batch=8)
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
    g, feeds, t = two_block_least_squares(batch=4)  # 8 chunks: first pass 2 probes
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
    g, feeds, t = two_block_least_squares(batch=1)
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
    g, x, labels = mlp("Tanh")
    ticks = iter(range(1000))
    sens = hawq.sensitivity(g, x, labels, curvature="hessian", tol=1e-6, max_iter=50,
                            budget_s=budget_s, clock=lambda: next(ticks))
    assert sens.iterations == 4 and sens.cut_short and np.all(np.isfinite(sens.rse))


def _blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


def test_analysis_runs_on_one_blas_thread_and_restores_the_pool() -> None:
    from threadpoolctl import threadpool_limits

    g, feeds, _ = two_block_least_squares(batch=8)
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
    g, feeds, t = two_block_least_squares(batch=8)
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
