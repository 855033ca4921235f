"""`quantize(..., weight_codes=...)`: the range search quantises one model under many sets of
activation ranges; with a shared dict each weight is quantised once and the graphs are the
ones quantised afresh."""

from __future__ import annotations

import numpy as np

import compiler.passes.quant_rows as qrows
from compiler.passes.quantize import QuantOptions, quantize
from compiler.range_choice import with_choices
from edgesim import assignment
from edgesim import calibration as cal
from edgesim.float_pass import float_pass
from edgesim.loading import load_graph


def _same_graph(a, b) -> None:
    assert a.layers == b.layers  # the Quant annotations, activation scales included
    assert a.weights.keys() == b.weights.keys()
    for t, w in a.weights.items():
        np.testing.assert_array_equal(w, b.weights[t], err_msg=t)
        assert w.dtype == b.weights[t].dtype


def test_kept_codes_give_the_graphs_quantised_afresh_and_quantise_each_weight_once(
        monkeypatch) -> None:
    g = load_graph("zoo:digits_cnn")
    stats = float_pass(g, cal.random_samples(g, 8, seed=1), stats=True).stats
    assert stats is not None
    bits = assignment.resolve(g, 8)
    bits[0] = (4, 32)  # a weight-only layer too, on another row of the format policy
    tensors = list(stats.stats)
    ranges = [with_choices(stats, dict.fromkeys(tensors, m)) for m in ("minmax", "percentile")]
    afresh = [quantize(g, bits, s, QuantOptions(act_method="auto")) for s in ranges]
    assert afresh[0].layers != afresh[1].layers  # the ranges differ: a real comparison

    calls: list[str] = []
    real = qrows.quantize_weight
    monkeypatch.setattr(qrows, "quantize_weight", lambda *a, **k: calls.append("w") or
                        real(*a, **k))
    codes: dict = {}
    kept = [quantize(g, bits, s, QuantOptions(act_method="auto"), codes) for s in ranges]
    weighted = sum(1 for layer in kept[0].layers if layer.quant.w_bits is not None)
    assert len(calls) == weighted == len(codes)  # once per weight, not once per call
    for a, b in zip(kept, afresh):
        _same_graph(a, b)
