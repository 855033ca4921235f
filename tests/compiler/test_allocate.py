"""Exact MCKP allocation and its Pareto front, checked against brute force.

Small instances (6 layers x 4 choices = 4096 assignments) are enumerated outright. Most data are
dyadic (integers times powers of two), so every float sum is exact in any order and the oracle can
be compared with `==`, ties and zero costs included; one test uses arbitrary floats with a
relative tolerance.
"""

from __future__ import annotations

import ctypes
import itertools
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler import allocate
from compiler.allocate import (
    InfeasibleBudget,
    knee,
    pareto_front,
    smallest_feasible_budget,
    solve,
)
from compiler.errors import ModelError
from compiler.pareto import non_dominated

L, B = 6, 4
BITS = np.array([2, 4, 8, 16])
SETTINGS = settings(max_examples=25, deadline=None)
METHODS = ("milp", "front")


# ---- instances: three cost shapes, all exact in binary floating point -------------------------

def _size_like(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Bytes = params * bits / 8; sens = trace * 4^-bits (quantisation noise ~ step^2)."""
    params = rng.integers(1, 50, L)[:, None]
    trace = rng.integers(0, 9, L)[:, None]
    return trace * 4.0 ** -BITS, params * BITS / 8.0


def _latency_like(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Not monotone in bits, many ties and zero costs (a layer whose time does not change)."""
    return rng.integers(0, 6, (L, B)) / 4.0, rng.integers(0, 5, (L, B)) * 0.125


def _energy_like(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Joules in the nJ range (2^-30 J units) with a few zero-energy choices."""
    energy = rng.integers(0, 40, (L, B)) * rng.integers(0, 2, (L, B)) * 2.0 ** -30
    return rng.integers(0, 100, (L, B)) / 16.0, energy


KINDS = {"size": _size_like, "latency": _latency_like, "energy": _energy_like}


def _mask(rng: np.random.Generator) -> np.ndarray:
    """Random allowed mask with at least one choice per layer; layer 0 is 'fp32 only'."""
    allowed = rng.random((L, B)) < 0.75
    allowed[np.arange(L), rng.integers(0, B, L)] = True
    allowed[0] = [False, False, False, True]
    return allowed


instances = st.builds(lambda kind, seed: (kind, np.random.default_rng(seed)),
                      st.sampled_from(sorted(KINDS)), st.integers(0, 2**32 - 1))


# ---- the oracle: every assignment --------------------------------------------------------------

def _enumerate(sens: np.ndarray, cost: np.ndarray, allowed: np.ndarray | None):
    """All allowed assignments int [n, L] and their totals, summed left to right in Python."""
    ok = np.ones(sens.shape, bool) if allowed is None else allowed
    ok = ok & np.isfinite(sens)
    cols = [np.flatnonzero(ok[l]) for l in range(sens.shape[0])]
    assign = np.array(list(itertools.product(*cols)))
    total_s = sum(sens[l, assign[:, l]] for l in range(sens.shape[0]))
    total_c = sum(cost[l, assign[:, l]] for l in range(sens.shape[0]))
    return assign, total_s, total_c


def _brute_front(total_c: np.ndarray, total_s: np.ndarray) -> set[tuple[float, float]]:
    """Distinct (cost, sens) pairs that no assignment dominates, by all-pairs comparison."""
    c, s = np.unique(np.stack([total_c, total_s], axis=1), axis=0).T
    le = (c[None, :] <= c[:, None]) & (s[None, :] <= s[:, None])
    lt = (c[None, :] < c[:, None]) | (s[None, :] < s[:, None])
    dominated = (le & lt).any(axis=1)
    return set(zip(c[~dominated].tolist(), s[~dominated].tolist()))


def _best_within(total_s: np.ndarray, total_c: np.ndarray, budget: float) -> float:
    return float(total_s[total_c <= budget].min())


# ---- solve --------------------------------------------------------------------------------------

@SETTINGS
@given(instances, st.floats(0.0, 1.0), st.booleans())
def test_solve_equals_brute_force(inst, where: float, masked: bool) -> None:
    kind, rng = inst
    sens, cost = KINDS[kind](rng)
    allowed = _mask(rng) if masked else None
    assign, total_s, total_c = _enumerate(sens, cost, allowed)
    budget = total_c.min() + where * (total_c.max() - total_c.min())
    for method in METHODS:
        got = solve(sens, cost, budget, allowed, method=method)
        assert got.total_cost <= budget
        assert got.total_sens == _best_within(total_s, total_c, budget), method
        # The totals are those of the returned choice, and the choice is an allowed assignment.
        assert got.total_sens == sum(sens[l, got.choice[l]] for l in range(L))
        assert got.total_cost == sum(cost[l, got.choice[l]] for l in range(L))
        assert (assign == got.choice).all(axis=1).any()


def test_solve_equals_brute_force_on_arbitrary_floats() -> None:
    rng = np.random.default_rng(7)
    for _ in range(15):
        sens, cost = rng.lognormal(0, 2, (L, B)), rng.lognormal(10, 1, (L, B))
        _, total_s, total_c = _enumerate(sens, cost, None)
        budget = rng.uniform(total_c.min(), total_c.max())
        best = _best_within(total_s, total_c, budget)
        milp_answer = solve(sens, cost, budget)  # exact up to HiGHS's tolerances
        assert milp_answer.total_cost <= budget
        assert milp_answer.total_sens == pytest.approx(best, rel=1e-12)
        # The DP sums layer by layer, as the oracle does, and float addition is monotone, so
        # its answer is exact even here.
        assert solve(sens, cost, budget, method="front").total_sens == best


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_milp_is_exact_when_sensitivities_span_many_decades(seed: int) -> None:
    # sens = trace * 4^-bits with traces over ~8 decades: increments down to ~1e-12 of the
    # largest, below HiGHS's default tolerances unless the objective is scaled up.
    rng = np.random.default_rng(seed)
    bits = np.array([2, 3, 4, 5, 6, 8])
    sens = rng.lognormal(0, 4, 8)[:, None] * 4.0 ** -bits
    cost = rng.lognormal(12, 1.5, 8)[:, None] * bits / 8
    assign = np.indices((6,) * 8).reshape(8, -1).T  # all 6^8 assignments
    total_s = sum(sens[l, assign[:, l]] for l in range(8))
    total_c = sum(cost[l, assign[:, l]] for l in range(8))
    for where in (0.2, 0.4, 0.6, 0.8):
        budget = total_c.min() + where * (total_c.max() - total_c.min())
        got = solve(sens, cost, budget)
        assert got.total_cost <= budget
        assert got.total_sens == pytest.approx(_best_within(total_s, total_c, budget), rel=1e-12)


def test_an_over_budget_milp_answer_falls_back_to_the_exact_front(monkeypatch) -> None:
    # Stand in for HiGHS accepting an assignment a tolerance over budget: drop the budget row,
    # so the "solution" is the unconstrained optimum. solve() must notice and still be exact.
    real = allocate.milp
    monkeypatch.setattr(allocate, "milp", lambda c, constraints, **kw: real(
        c, constraints=constraints[:1], **kw))
    rng = np.random.default_rng(2)
    sens, cost = _latency_like(rng)
    _, total_s, total_c = _enumerate(sens, cost, None)
    calmest = total_c[total_s == total_s.min()].min()  # cost of the unconstrained optimum
    budget = float(total_c.min() + calmest) / 2
    got = solve(sens, cost, budget)
    assert got.total_cost <= budget
    assert got.total_sens == _best_within(total_s, total_c, budget)


def test_highs_debug_lines_stay_off_stdout(capfd) -> None:
    # HiGHS printf()s "...transformNewIntegerFeasibleSolution tmpSolver.run();" on these two
    # instances (found by search); stdout must stay clean for the CLI's JSON.
    bits = np.array([2, 3, 4, 5, 6, 8])
    for seed, where in ((4, 0.8), (10, 0.6)):
        rng = np.random.default_rng(seed)
        cost = rng.lognormal(12, 1.5, 20)[:, None] * bits / 8
        sens = rng.lognormal(0, 2, 20)[:, None] * 4.0 ** -bits
        low, high = cost.min(axis=1).sum(), cost.max(axis=1).sum()
        solve(sens, cost, low + where * (high - low))
    ctypes.CDLL(None).fflush(None)  # C's stdout buffer, which Python's flush does not reach
    assert capfd.readouterr().out == ""


def test_solve_with_room_for_everything_takes_each_layers_least_sensitive_choice() -> None:
    sens = np.array([[3.0, 1.0, 2.0], [0.5, 0.25, 0.25]])
    cost = np.array([[1.0, 5.0, 2.0], [1.0, 3.0, 2.0]])
    got = solve(sens, cost, budget=100.0)
    # Layer 1 ties on sens: the cheaper of the two (column 2) is the sensible pick.
    assert got.choice.tolist() == [1, 2]
    assert (got.total_sens, got.total_cost) == (1.25, 7.0)


def test_choice_is_read_only() -> None:
    got = solve(np.ones((2, 2)), np.ones((2, 2)), 5.0)
    with pytest.raises(ValueError):
        got.choice[0] = 1


# ---- infeasible budgets -------------------------------------------------------------------------

def test_infeasible_message_matches_the_documented_text() -> None:
    # Cheapest choices: 1.0e6 + 0.53e6 = 1.53e6 bytes.
    cost = np.array([[1.0e6, 2.0e6], [0.53e6, 4.0e6]])
    with pytest.raises(InfeasibleBudget) as err:
        solve(np.ones((2, 2)), cost, 1.2e6)
    assert str(err.value) == ("budget 1.20e+06 is below the smallest feasible 1.53e+06 "
                              "(every layer at its cheapest choice)")
    assert isinstance(err.value, ValueError)
    assert (err.value.budget, err.value.smallest_feasible) == (1.2e6, 1.53e6)


@SETTINGS
@given(instances, st.booleans())
def test_smallest_feasible_budget_is_tight(inst, masked: bool) -> None:
    kind, rng = inst
    sens, cost = KINDS[kind](rng)
    allowed = _mask(rng) if masked else None
    _, total_s, total_c = _enumerate(sens, cost, allowed)
    smallest = float(total_c.min())
    assert smallest_feasible_budget(sens, cost, allowed) == smallest
    below = np.nextafter(smallest, -np.inf)
    with pytest.raises(InfeasibleBudget) as err:
        solve(sens, cost, below, allowed)
    assert err.value.smallest_feasible == smallest
    # The message names it in digits that tell it apart from the budget asked for.
    shown = [float(x) for x in re.findall(r"-?\d\.\d+e[+-]\d+", str(err.value))]
    assert shown[1] == pytest.approx(smallest, rel=1e-2, abs=0) and shown[0] != shown[1]
    for method in METHODS:
        got = solve(sens, cost, smallest, allowed, method=method)
        assert got.total_cost == smallest
        assert got.total_sens == _best_within(total_s, total_c, smallest)


# ---- allowed choices and bad input --------------------------------------------------------------

def test_allowed_mask_and_inf_sensitivity_are_respected() -> None:
    rng = np.random.default_rng(3)
    sens, cost = _latency_like(rng)
    allowed = _mask(rng)
    sens[~allowed] = np.inf  # the same exclusion spelled the other way
    for budget in (cost.max() * L, np.median(cost) * L):
        for method in METHODS:
            for got in (solve(sens, cost, budget, method=method),
                        solve(np.where(allowed, sens, 0.0), cost, budget, allowed, method)):
                assert allowed[np.arange(L), got.choice].all()
                assert got.choice[0] == 3  # the fp32-only layer
    for point in pareto_front(sens, cost):
        assert allowed[np.arange(L), point.choice].all()


def test_bad_inputs_name_the_problem() -> None:
    sens, cost = np.ones((3, 2)), np.ones((3, 2))
    with pytest.raises(ModelError, match="layer 1: no allowed bit choice"):
        solve(sens, cost, 5.0, allowed=np.array([[1, 1], [0, 0], [1, 0]], bool))
    with pytest.raises(ModelError, match="layer 2: choice 0"):
        solve(sens, np.array([[1, 1], [1, 1], [np.nan, 1]]), 5.0)
    with pytest.raises(ModelError, match="must both be"):
        solve(sens, np.ones((3, 3)), 5.0)
    with pytest.raises(ModelError, match="method"):
        solve(sens, cost, 5.0, method="greedy")


# ---- the Pareto front ---------------------------------------------------------------------------

@SETTINGS
@given(instances, st.booleans())
def test_front_equals_brute_force_front(inst, masked: bool) -> None:
    kind, rng = inst
    sens, cost = KINDS[kind](rng)
    allowed = _mask(rng) if masked else None
    _, total_s, total_c = _enumerate(sens, cost, allowed)
    front = pareto_front(sens, cost, allowed)
    got = [(a.total_cost, a.total_sens) for a in front]
    assert set(got) == _brute_front(total_c, total_s)
    assert len(got) == len(set(got))  # one assignment per trade-off
    assert got == sorted(got, key=lambda p: p[0])


@settings(max_examples=10, deadline=None)
@given(instances)
def test_each_front_point_is_the_optimum_at_its_own_cost(inst) -> None:
    kind, rng = inst
    sens, cost = KINDS[kind](rng)
    _, total_s, total_c = _enumerate(sens, cost, None)
    for point in pareto_front(sens, cost):
        assert point.total_sens == _best_within(total_s, total_c, point.total_cost)
        assert point.total_cost == sum(cost[l, point.choice[l]] for l in range(L))
        for method in METHODS:
            again = solve(sens, cost, point.total_cost, method=method)
            assert again.total_sens == point.total_sens
            assert again.total_cost <= point.total_cost


def test_front_equals_brute_force_front_on_arbitrary_floats() -> None:
    rng = np.random.default_rng(13)
    for _ in range(5):
        sens, cost = rng.lognormal(0, 2, (L, B)), rng.lognormal(10, 1, (L, B))
        _, total_s, total_c = _enumerate(sens, cost, None)
        front = pareto_front(sens, cost)
        assert {(a.total_cost, a.total_sens) for a in front} == _brute_front(total_c, total_s)


def test_front_on_arbitrary_floats_solves_back_to_itself() -> None:
    rng = np.random.default_rng(11)
    sens, cost = rng.lognormal(0, 2, (12, 5)), rng.lognormal(12, 1.5, (12, 5))
    front = pareto_front(sens, cost, max_points=25)
    for point in front:
        again = solve(sens, cost, point.total_cost)
        assert again.total_cost <= point.total_cost
        assert again.total_sens == pytest.approx(point.total_sens, rel=1e-12)


def test_max_points_thins_evenly_in_cost() -> None:
    # One layer, 100 choices: cost i, sens 100 - i. Every choice is on the front, and the
    # evenly spaced costs 0, 9, ..., 99 are all choices, so thinning to 12 must hit exactly them.
    cost = np.arange(100.0)[None]
    front = pareto_front(100.0 - cost, cost, max_points=12)
    assert [a.total_cost for a in front] == list(np.linspace(0, 99, 12))
    assert len(pareto_front(100.0 - cost, cost)) == 100


def test_thinned_front_is_a_subset_with_both_ends() -> None:
    rng = np.random.default_rng(5)
    sens, cost = _size_like(rng)
    full = [(a.total_cost, a.total_sens) for a in pareto_front(sens, cost)]
    thin = [(a.total_cost, a.total_sens) for a in pareto_front(sens, cost, max_points=5)]
    assert len(full) > 5 >= len(thin)
    assert set(thin) <= set(full) and thin[0] == full[0] and thin[-1] == full[-1]


# ---- knee ---------------------------------------------------------------------------------------

def _front_of(points: list[tuple[float, float]]) -> list:
    # One layer whose choices are the points: its front is exactly the given non-dominated set.
    cost, sens = np.array(points, dtype=float).T
    return pareto_front(sens[None], cost[None])


def test_knee_is_farthest_below_the_normalised_chord() -> None:
    # Normalised (x, y): (0, 1), (.2, .3), (.5, .1), (1, 0); 1 - x - y = 0, .5, .4, 0.
    front = _front_of([(0.0, 10.0), (2.0, 3.0), (5.0, 1.0), (10.0, 0.0)])
    assert knee(front).total_cost == 2.0
    # Scaling either axis leaves the normalised picture, hence the knee, unchanged.
    scaled = _front_of([(0.0, 1e-6), (2e6, 3e-7), (5e6, 1e-7), (10e6, 0.0)])
    assert knee(scaled).total_cost == 2e6


def test_knee_of_a_two_point_front_is_the_cheaper_point() -> None:
    assert knee(_front_of([(1.0, 5.0), (4.0, 2.0)])).total_cost == 1.0
    with pytest.raises(ModelError):
        knee([])


# ---- non_dominated ------------------------------------------------------------------------------

def _brute_non_dominated(p: np.ndarray) -> np.ndarray:
    le = (p[None, :, :] <= p[:, None, :]).all(axis=2)
    lt = (p[None, :, :] < p[:, None, :]).any(axis=2)
    return ~(le & lt).any(axis=1)


@SETTINGS
@given(st.integers(1, 4), st.integers(0, 60), st.integers(0, 2**32 - 1), st.booleans())
def test_non_dominated_equals_all_pairs_check(d: int, n: int, seed: int, mixed: bool) -> None:
    rng = np.random.default_rng(seed)
    points = rng.integers(0, 5, (n, d)).astype(float)  # small range: many ties and duplicates
    senses = [rng.choice(["min", "max"]) for _ in range(d)] if mixed else None
    flip = np.array([-1.0 if s == "max" else 1.0 for s in senses or ["min"] * d])
    expected = _brute_non_dominated(points * flip)
    np.testing.assert_array_equal(non_dominated(points, senses), expected)


@pytest.mark.parametrize("d", [2, 3])
def test_non_dominated_on_a_larger_continuous_cloud(d: int) -> None:
    rng = np.random.default_rng(d)
    points = rng.random((1500, d))
    points[:100] = points[100:200]  # exact duplicates
    np.testing.assert_array_equal(non_dominated(points), _brute_non_dominated(points))


def test_non_dominated_rejects_bad_senses_and_nan() -> None:
    with pytest.raises(ModelError, match="senses"):
        non_dominated(np.zeros((3, 2)), ["min", "up"])
    with pytest.raises(ModelError, match="NaN"):
        non_dominated(np.array([[0.0, np.nan]]))
