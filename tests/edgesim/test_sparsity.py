"""Sparse MAC-array cycles on real activations: the per-lane statistical model against the
exact data-driven model, with the mean-density-only estimate beside it."""

import dataclasses

import pytest

from compiler.frontend import load
from compiler.passes.sparsify import calibrate_sequential, sparsifiable, sparsify
from compiler.sparsity import operand_stats
from edgesim.sparsity import compare_cycles
from edgesim.zoo import build, load_digits_data
from hwmodels.target import load_target

X = load_digits_data()["x_calib"][:16]


@pytest.mark.parametrize("level", [0.0, 0.5, 0.75])  # 0: the ReLUs' and background's zeros
def test_lane_model_within_5_percent_of_exact_on_the_digits_cnn(level):
    g = load(build("digits_cnn"), {"input": (16, 1, 8, 8)})
    layers = [x.name for x in sparsifiable(g)]
    th = calibrate_sequential(g, [{"input": X}], dict.fromkeys(layers, level))
    stats = operand_stats(sparsify(g, th), [{"input": X}])
    single = sparsify(load(build("digits_cnn")), th)
    target = load_target("sparse-mac-32x32")  # os, skip_both
    rows = compare_cycles(single, stats, [{"input": X[i:i + 1]} for i in range(16)], target)
    exact, lanes = sum(r.exact for r in rows), sum(r.lanes for r in rows)
    assert lanes == pytest.approx(exact, rel=0.05)
    for r in rows:
        assert r.lanes == pytest.approx(r.exact, rel=0.05), r.layer
    if level == 0.0:  # padded borders and dead channels: the mean alone misses the busiest lane
        mean_only = sum(r.mean_only for r in rows)
        assert abs(mean_only / exact - 1) > 2 * abs(lanes / exact - 1)


def test_skip_activations_and_skip_both_agree_for_dense_weights():
    g = load(build("digits_cnn"), {"input": (16, 1, 8, 8)})
    stats = operand_stats(g, [{"input": X}])
    single = load(build("digits_cnn"))
    base = load_target("sparse-mac-32x32")
    feeds = [{"input": X[i:i + 1]} for i in range(4)]
    both = compare_cycles(single, stats, feeds, base)
    act = compare_cycles(single, stats, feeds, dataclasses.replace(base,
                                                                   sparsity="skip_activations"))
    assert [r.exact for r in both] == [r.exact for r in act]  # trained weights have no zeros
    assert [r.lanes for r in both] == [r.lanes for r in act]
