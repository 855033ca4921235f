"""`edgesim.sparsity_costs.latency_terms`: a plan's predicted latency split by cause, on the digits
CNN at batch 1 on sparse-mac-32x32 (os 32x32, 0.5 GHz, pipelined folds), against hand
arithmetic of the fold schedule and the vector unit."""

import dataclasses

import numpy as np
import pytest

from compiler.frontend import load
from compiler.sparsity import operand_stats
from edgesim.sparsity_costs import TERMS, latency_terms, plan_latency_s
from edgesim.zoo import build, load_digits_data
from hwmodels.target import load_target

X = load_digits_data()["x_calib"][:8]
HZ = 0.5e9


@pytest.fixture(scope="module")
def case():
    g = load(build("digits_cnn"))
    stats = operand_stats(g, [{"input": X[i:i + 1]} for i in range(8)])
    return g, stats, dict.fromkeys(stats, (4, 4))


def test_terms_follow_the_fold_schedule(case):
    g, stats, chosen = case
    target = load_target("sparse-mac-32x32")
    terms = latency_terms(g, stats, chosen, target)
    names = [x.name for x in g.layers]
    for layer in ("conv1/Conv", "conv2/Conv", "conv3/Conv", "fc/Gemm"):
        i = names.index(layer)
        assert terms["fill"][i] * HZ == pytest.approx(32 + 32 - 2)  # once per layer, os
        assert terms["vector"][i] == 0.0
        assert terms["dram"][i] == 0.0  # 4-bit weights resident, activations on chip
    # conv1: M=64 pixels -> 2 row folds, N=16 -> 1 column fold, T=K=9 at 4 MACs per cycle:
    # at most 3 cycles of work per fold, so the first fold waits >= 29 cycles for the swap
    i = names.index("conv1/Conv")
    assert terms["work"][i] * HZ <= 2 * 3
    assert 32 - 3 <= terms["swap"][i] * HZ <= 32
    total = plan_latency_s(g, stats, chosen, target)
    np.testing.assert_allclose(sum(terms[t] for t in TERMS), total, rtol=1e-12)


def test_back_to_back_folds_pay_the_fill_per_fold_and_never_wait(case):
    g, stats, chosen = case
    target = dataclasses.replace(load_target("sparse-mac-32x32"), fold_pipelining=False)
    terms = latency_terms(g, stats, chosen, target)
    i = [x.name for x in g.layers].index("conv2/Conv")  # 2 x 1 folds
    assert terms["fill"][i] * HZ == pytest.approx(2 * 62)
    assert terms["swap"][i] == 0.0


def test_weights_from_dram_show_as_the_part_compute_does_not_hide(case):
    g, stats, chosen = case
    slow = dataclasses.replace(load_target("sparse-mac-32x32"), weights_resident=False,
                               dram_bandwidth_gbps=0.01)
    terms = latency_terms(g, stats, chosen, slow)
    i = [x.name for x in g.layers].index("conv3/Conv")
    compute = terms["fill"][i] + terms["swap"][i] + terms["work"][i]
    # 32*9*64 4-bit weights = 9216 B at 10 MB/s, double buffered: max(compute, DRAM)
    weight_s = 32 * 9 * 64 * 4 / 8 / 0.01e9
    assert compute + terms["dram"][i] == pytest.approx(weight_s, rel=0.05)
