"""Joint bits x sparsity allocation: the exact allocator against brute force."""

import itertools

import numpy as np
import pytest

from compiler.allocate import joint_choices, pareto_front, solve, split_choice
from compiler.errors import ModelError


def _instance(seed, layers=3, bits=3, levels=3):
    rng = np.random.default_rng(seed)
    sens_bits = rng.random((layers, bits)) * np.array([0.0, 1.0, 4.0])[:bits]
    sens_levels = np.sort(rng.random((layers, levels)), axis=1)
    sens_levels[:, 0] = 0.0  # level 0: no thresholds
    # cheaper with fewer bits and with more sparsity, not additively
    cost = rng.uniform(1, 10, (layers, 1, 1)) / (1 + np.arange(bits))[None, :, None] \
        * (1 - 0.6 * np.linspace(0, 1, levels))[None, None, :] * rng.uniform(0.8, 1.2, (layers,
                                                                               bits, levels))
    return sens_bits, sens_levels, cost


def _brute(sens_bits, sens_levels, cost):
    """Every (bit, level) pair per layer: (total cost, total sens, picks)."""
    layers, bits, levels = cost.shape
    pairs = list(itertools.product(range(bits), range(levels)))
    out = []
    for pick in itertools.product(pairs, repeat=layers):
        c = sum(cost[l, b, s] for l, (b, s) in enumerate(pick))
        v = sum(sens_bits[l, b] + sens_levels[l, s] for l, (b, s) in enumerate(pick))
        out.append((c, v, pick))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_joint_optimum_equals_brute_force(seed):
    sb, sl, cost = _instance(seed)
    sens, c = joint_choices(sb, sl, cost)
    every = _brute(sb, sl, cost)
    costs = sorted(x[0] for x in every)
    for budget in np.quantile(costs, [0.0, 0.05, 0.3, 0.7, 1.0]):
        best = min(v for cc, v, _ in every if cc <= budget + 1e-12)
        for method in ("milp", "front"):
            got = solve(sens, c, budget, method=method)
            assert got.total_sens == pytest.approx(best, abs=1e-9)
            b, s = split_choice(got.choice, cost.shape[2])
            assert sum(cost[l, b[l], s[l]] for l in range(len(b))) <= budget + 1e-9


def test_joint_front_equals_the_brute_force_front():
    sb, sl, cost = _instance(11, layers=3, bits=2, levels=4)
    sens, c = joint_choices(sb, sl, cost)
    every = sorted(_brute(sb, sl, cost), key=lambda x: (x[0], x[1]))
    front, best = [], np.inf
    for cc, v, _ in every:  # non-dominated: strictly less sensitive than anything cheaper
        if v < best - 1e-12:
            front.append((cc, v))
            best = v
    got = [(a.total_cost, a.total_sens) for a in pareto_front(sens, c)]
    np.testing.assert_allclose(sorted(got), front, rtol=1e-12)


def test_joint_choices_layout_and_errors():
    sens, c = joint_choices(np.array([[0.0, 2.0]]), np.array([[0.0, 0.5, 1.0]]),
                            np.arange(6.0).reshape(1, 2, 3))
    np.testing.assert_array_equal(sens, [[0.0, 0.5, 1.0, 2.0, 2.5, 3.0]])
    np.testing.assert_array_equal(c, [[0, 1, 2, 3, 4, 5]])
    assert [x.tolist() for x in split_choice(np.array([4, 2]), 3)] == [[1, 0], [1, 2]]
    with pytest.raises(ModelError, match="must be"):
        joint_choices(np.zeros((2, 2)), np.zeros((2, 3)), np.zeros((2, 3, 2)))
