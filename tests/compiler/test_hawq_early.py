"""A first pass that stops probing once the chunks so far meet the precision goal
(`early_stop.early_checks`): the estimate stays within its stated error of the exact trace,
every chunk is still observed, and the allocation it steers is the one the full pass gives."""

from __future__ import annotations

import numpy as np
import pytest

from compiler.frontend import load
from compiler.sensitivity import early_stop, gauss_newton, hawq
from edgesim import allocation, api, zoo
from edgesim.budget import parse_budget
from edgesim.settle_rule import settled_rule
from tests.compiler.hawq_models import two_block_least_squares as _two_block_least_squares


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Probes of each `chunk_samples` call (one per chunk probed), recorded."""
    calls: list[int] = []
    real = gauss_newton.chunk_samples

    def counted(*args, **kwargs):
        calls.append(args[5])
        return real(*args, **kwargs)
    monkeypatch.setattr(gauss_newton, "chunk_samples", counted)
    return calls


def test_early_checks_start_after_min_dof_and_stay_inside_the_pass() -> None:
    assert early_stop.early_checks(32) == {9, 12, 16, 24}
    assert early_stop.early_checks(10) == {9}
    assert early_stop.early_checks(9) == frozenset()


def test_early_stop_meets_tol_against_the_closed_form_and_observes_every_chunk(
        monkeypatch) -> None:
    """Least squares, 32 chunks of one sample: Tr of block l is out * 2 * sum(x_l^2) / N. At
    tol 0.25 the first check (9 chunks) already meets it; 9 of 32 chunks then stand for all,
    within 3 of their stated standard errors of the exact traces; the other 23 chunks still
    reach `observe`, in order."""
    g, feeds, t = _two_block_least_squares(batch=1)
    x1, x2 = (feeds[k].astype(np.float64) for k in ("x1", "x2"))
    exact = np.array([2 * 2 * (x1**2).sum() / 32, 2 * 2 * (x2**2).sum() / 32])
    calls, seen = _counting(monkeypatch), []
    sens = hawq.sensitivity(g, feeds, t, loss="mse", tol=0.25,
                            observe=lambda env: seen.append(env["x1"].copy()))
    assert calls == [1] * 9 and sens.iterations == 1 and not sens.cut_short
    assert np.all(sens.rse < 0.25)
    trace = sens.score * np.array([10, 6])
    assert np.all(np.abs(trace - exact) <= 3 * sens.rse * trace)
    np.testing.assert_array_equal(np.concatenate(seen), feeds["x1"])


@pytest.mark.parametrize("budget", ["bits=3", "bits=4", "bits=5"])
def test_early_stop_gives_the_plan_of_the_full_pass(monkeypatch, budget: str) -> None:
    """digits_cnn (trained), 32 calibration samples, the allocator's settle rule: `allocate`
    picks the same bits from the estimate with early checks as from the full pass's (checks
    off). At 3 and 5 bits the first pass stops before its 32 chunks; its estimate is the full
    pass's first chunks (same probes), so it lies within its own error of the full one. (At
    4 bits the first check leaves two weights open, so it probes on, as without checks.)"""
    g, target = load(zoo.build("digits_cnn")), api.resolve_target("sparse-mac-32x32")
    x = zoo.load_digits_data()["x_calib"][:32]
    rule = settled_rule(g, g, target, budget=parse_budget(budget))
    calls = _counting(monkeypatch)
    early = hawq.sensitivity(g, x, settled=rule)
    stopped_at = len(calls)
    monkeypatch.setattr(gauss_newton, "early_checks", lambda chunks: frozenset())
    full = hawq.sensitivity(g, x, settled=rule)
    assert (stopped_at < 32) == (budget != "bits=4") and len(calls) - stopped_at >= 32
    plans = [allocation.allocate(g, target, budget=parse_budget(budget), sens=s).bits
             for s in (early, full)]
    np.testing.assert_array_equal(plans[0], plans[1])
    assert np.all(np.abs(early.score - full.score) <= 3 * early.rse * early.score)


@pytest.mark.parametrize(("rule_s", "settles", "asked"), [
    (0, [True, False], [9, 9, 12, 12, 16, 16, 24, 24, 32]),
    (100, [True, False], [9, 9, 12, 12, 16, 16, 24, 24, 32]), (0, [False, False], [9, 32])])
def test_early_tests_are_bounded_by_open_weights_not_by_time(monkeypatch, rule_s: int,
                                                             settles: list[bool],
                                                             asked: list[int]) -> None:
    """A fake budget clock: one second per chunk, `rule_s` per settle-rule call (tol out of
    reach). The rule settles a weight that `settles` says, or when asked again about an
    estimate with its errors shrunk: whether the open weights would close by the end of the
    pass (`_closes_by_end`), which they would. A rule that leaves one weight open is asked
    at every early check (and about its end) and at the end of the pass, whether it is free
    or takes 100 s per call: the tests' time is not charged to a work budget, so no rule
    may depend on it (one that skipped them past a quarter of the pass's time stopped
    after 12 chunks here). One that left both weights open is not asked again before the
    pass ends (nor about its end: too many open weights for another check)."""
    g, feeds, t = _two_block_least_squares(batch=1)
    now, seen, traces = [0], [], []
    real = gauss_newton.chunk_samples

    def timed(*args, **kwargs):
        now[0] += 1
        return real(*args, **kwargs)
    monkeypatch.setattr(gauss_newton, "chunk_samples", timed)

    def settled(est, need):
        seen.append(now[0])
        now[0] += rule_s
        shrunk = any(np.array_equal(est.trace, t) for t in traces)  # the same estimate again
        traces.append(est.trace)
        return np.array(settles) | shrunk
    sens = hawq.sensitivity(g, feeds, t, loss="mse", tol=1e-6, max_iter=1, settled=settled,
                            budget_s=1e6, clock=lambda: now[0])
    chunks_at = [s - rule_s * i for i, s in enumerate(seen)]  # chunks done at each call
    assert chunks_at == asked and sens.iterations == 1
