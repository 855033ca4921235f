"""The per-lane statistical sparse model: order statistics against scipy, consistency with
the i.i.d. model, and hand arithmetic on small folds."""

import numpy as np
import pytest
from scipy import stats

from hwmodels.kernels.sparse import binomial_cdf, expected_max_binomial, expected_max_lanes
from hwmodels.sparsity import data_driven_cycles, lane_cycles
from tests.hwmodels.test_macarray import array


@pytest.mark.parametrize("t, p", [(10, 0.3), (4000, 0.45), (7, 0.0), (7, 1.0), (60, 0.02)])
def test_binomial_cdf_against_scipy(t, p):
    out = np.empty(t + 5)
    binomial_cdf(t, p, out)
    np.testing.assert_allclose(out, stats.binom.cdf(np.arange(t + 5), t, p), atol=1e-12)


def test_expected_max_of_unequal_lanes_against_the_pmf_of_the_max():
    t = np.array([12, 20, 20, 5])
    p = np.array([0.7, 0.2, 0.45, 0.9])
    x = np.arange(21)
    cdf = np.prod([stats.binom.cdf(x, ti, pi) for ti, pi in zip(t, p)], axis=0)
    pmf = np.diff(np.concatenate([[0.0], cdf]))  # P(max = x)
    assert expected_max_lanes(t, p) == pytest.approx(float((x * pmf).sum()), rel=1e-10)


def test_equal_lanes_reduce_to_the_iid_model():
    t, p, g = 300, 0.35, 16
    lanes = expected_max_lanes(np.full(g, t), np.full(g, p))
    assert lanes == pytest.approx(expected_max_binomial(t, p, g), rel=1e-10)


def test_deterministic_lanes_give_the_exact_cycles_by_hand():
    # lanes of density 0 or 1 are deterministic: row work is k or 0. os 4x4, m = 8, n = 4, k = 10
    target = array(dataflow="os", rows=4, cols=4, sparsity="skip_activations")
    lane_p = np.array([[0, 0, 1, 0, 0, 0, 0, 0]], float)  # fold 0 has a dense row, fold 1 none
    cycles = lane_cycles(lane_p, np.full((1, 4), 10), 10, target)
    fill = 4 + 4 - 2
    assert cycles == (fill + 10) + (fill + 0)
    a = np.repeat(lane_p[0][:, None] > 0, 10, axis=1)
    assert data_driven_cycles(a, np.ones((10, 4), bool), target) == cycles


def test_skip_weights_takes_the_densest_weight_column():
    target = array(dataflow="os", rows=4, cols=2, sparsity="skip_weights")
    nnz = np.array([[3, 9, 4, 4]])  # column folds {3, 9} and {4, 4}
    cycles = lane_cycles(np.full((1, 4), 0.5), nnz, 10, target)
    assert cycles == 2 * (4 + 2 - 2) + 9 + 4


def test_lane_model_follows_heterogeneous_random_masks():
    # rows of four densities: the mean-density model misses the busiest lane, the lane model not
    rng = np.random.default_rng(0)
    target = array(dataflow="os", rows=16, cols=16, sparsity="skip_both")
    p = np.repeat([0.05, 0.2, 0.5, 0.9], 16)
    exact = np.mean([data_driven_cycles(rng.random((64, 200)) < p[:, None],
                                        np.ones((200, 32), bool), target) for _ in range(20)])
    model = lane_cycles(p[None], np.full((1, 32), 200), 200, target)
    assert model == pytest.approx(exact, rel=0.02)


def test_per_lane_statistics_need_output_stationary():
    with pytest.raises(ValueError, match="output stationary"):
        lane_cycles(np.ones((1, 4)), np.ones((1, 4), int), 4, array(dataflow="ws"))


@pytest.mark.parametrize("k", [64, 288])
def test_lane_model_with_two_of_four_pruned_weights(k):
    # each column keeps a different 2 of every 4 weights along K: its PEs meet different
    # subsets of the row's activations, so the busiest of them exceeds one column's count
    rng = np.random.default_rng(2)
    target = array(dataflow="os", rows=32, cols=32, sparsity="skip_both")
    p = np.repeat([0.1, 0.3, 0.5, 0.7], 16)
    w = np.zeros((k, 64), bool)
    for j in range(64):
        for g in range(0, k, 4):
            w[g + rng.choice(4, 2, replace=False), j] = True
    exact = np.mean([data_driven_cycles(rng.random((64, k)) < p[:, None], w, target)
                     for _ in range(10)])
    assert lane_cycles(p[None], w.sum(0)[None], k, target) == pytest.approx(exact, rel=0.02)
