"""Sparse MAC-array cycles on real activations: the per-lane statistical model against the
exact data-driven model, with the mean-density-only estimate beside it."""

import dataclasses

import pytest

from compiler.frontend import load
from compiler.passes.sparsify import calibrate_sequential, sparsifiable, sparsify
from compiler.sparsity import operand_stats
from edgesim.errors import UserError
from edgesim.sparsity import apply_sparsity, compare_cycles, parse_levels
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


def test_parse_levels():
    assert parse_levels("0.5,0.25") == (0.0, 0.25, 0.5)
    assert parse_levels(None) == ()
    with pytest.raises(UserError, match="--sparsity.*1.0"):
        parse_levels("0.5,1.0")
    with pytest.raises(UserError, match="--sparsity"):
        parse_levels("half")


def test_a_cpu_target_gets_no_thresholds_and_a_note_saying_why():
    g = load(build("digits_cnn"))
    out = apply_sparsity(g, load_target("rpi5"), {"input": X}, (0.0, 0.5))
    assert out.layers == g.layers
    assert "gains nothing" in out.notes[-1]


def test_a_skipping_array_gets_thresholds_that_lower_the_lane_cycles():
    g = load(build("digits_cnn"))
    target = load_target("sparse-mac-32x32")
    out = apply_sparsity(g, target, {"input": X[:8]}, (0.0, 0.5, 0.75))
    cuts = [x for x in out.layers if x.attrs.get("fn") == "threshold"]
    assert cuts and all(n.startswith("sparsity: ") for n in out.notes[-len(cuts):])
    # the latency note says which fold schedule and weight regime it assumes (digits_cnn's
    # 23946 weights fit the 32 KiB usable filter SRAM at 8 bits, not at 16)
    assert "pipelined folds" in out.notes[-1] and "<= 8 bits stay" in out.notes[-1]
    feeds = [{"input": X[i:i + 1]} for i in range(8)]
    dense, sparse = operand_stats(g, feeds), operand_stats(out, feeds)
    for cut in cuts:  # each thresholded layer's exact cycles drop
        layer = cut.name.removesuffix("/sparsify")
        before = compare_cycles(g, {layer: dense[layer]}, feeds, target)[0].exact
        after = compare_cycles(out, {layer: sparse[layer]}, feeds, target)[0].exact
        assert after < before


def test_compile_headline_latency_counts_the_thresholds(tmp_path):
    """`compile --sparsity` on a zero-skipping array: the thresholded MAC layers' latencies
    drop, every other layer's stays as the dense compile has it, and the headline total is
    the sum of the layers (it ignored the thresholds before)."""
    import edgesim  # noqa: PLC0415

    calib = {"input": X}
    kw = dict(calib=calib, method="uniform", budget="bits=8", weight_bits=(8,), quiet=True)
    dense = edgesim.compile(build("digits_cnn"), "sparse-mac-32x32", outdir=tmp_path / "d",
                            **kw)
    sparse = edgesim.compile(build("digits_cnn"), "sparse-mac-32x32", outdir=tmp_path / "s",
                             sparsity=(0.5, 0.75), **kw)
    cut = {x.name for x in sparse.layers if x.sparsity}
    assert cut
    before = {x.name: x.latency_ms for x in dense.layers}
    for x in sparse.layers:
        if x.name in cut:
            assert x.latency_ms < before[x.name]
        else:
            assert x.latency_ms == pytest.approx(before[x.name])
    assert sparse.result.latency_ms == pytest.approx(sum(x.latency_ms for x in sparse.layers))
    assert sparse.result.latency_ms < dense.result.latency_ms
    assert any("thresholds' measured densities" in n for n in sparse.notes)
