"""The end-to-end range search runs each distinct quantised graph once (`refine_bounded`'s
`graph_key`): assignments that differ only in a range no quantised layer reads give one
graph, and scoring it once picks what running every assignment picks."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.activation_quant import ActivationParams
from compiler.passes.calibrate import CalibrationStats
from compiler.passes.quantize import QuantOptions, quantize
from compiler.range_choice import CANDIDATES, candidate_params, with_choices
from compiler.range_search import (
    fake_quant_runner,
    layer_annotations,
    reference_cases,
    refine_bounded,
)
from edgesim import assignment
from edgesim import calibration as cal
from edgesim.float_pass import float_pass
from edgesim.loading import load_graph

TENSORS = ("a", "b")
PAIRS = list(itertools.product(CANDIDATES, repeat=len(TENSORS)))
PARAMS = {t: {m: ActivationParams(np.float32(i + 1), 0, 8, False)
              for i, m in enumerate(CANDIDATES)} for t in TENSORS}


def test_the_ranges_of_a_conv_output_a_relu_requantises_run_once() -> None:
    g = load_graph("zoo:digits_cnn")
    data = cal.random_samples(g, 8, seed=3)
    stats = float_pass(g, data, stats=True).stats
    assert stats is not None
    bits = assignment.resolve(g, 8)  # W8A8: conv1 is a QLinearConv
    h = g.layers[0].outputs[0]  # conv1's output: only its ReLU reads it, and the
    # requantisation takes the ReLU output's range, so no quantised layer reads h's range
    assert [r.kind for r in g.consumers()[h]] == ["activation"]
    params = {h: candidate_params(stats, h, 8, 99.99)}
    assert len({float(p.scale) for p in params[h].values()}) > 1  # distinct ranges
    codes: dict = {}

    def quantizer(s: CalibrationStats):
        return quantize(g, bits, s, QuantOptions(act_method="auto"), codes)
    # the oracle: every candidate range of h gives one quantised graph
    graphs = [quantizer(with_choices(stats, {h: m}, 8, params)) for m in CANDIDATES]
    assert all(q.layers == graphs[0].layers for q in graphs)

    built: list = []

    def runner(qg):
        built.append(qg)
        return fake_quant_runner(qg)
    cases = reference_cases(g, list(cal.batches(g, data))[:2])
    with_key = refine_bounded(stats, {h: "mse"}, quantizer, cases, params=params,
                              runner=runner, graph_key=layer_annotations)
    assert len(built) == 1 and with_key.chosen == {h: "minmax"}
    built.clear()
    without = refine_bounded(stats, {h: "mse"}, quantizer, cases, params=params, runner=runner)
    assert len(built) > 1  # each assignment run: what the key saves
    assert (without.chosen, without.evaluations) == (with_key.chosen, with_key.evaluations)


def _search(errors: dict[int, np.ndarray], graph_of: dict[tuple[str, ...], int],
            keyed: bool, max_evaluations: int):
    """`refine_bounded` where assignment k quantises to graph `graph_of[k]`, whose error on
    case i is errors[graph][i] / cases; also the graphs run, in order."""
    built: list[int] = []

    def graph(choice: CalibrationStats) -> int:
        return graph_of[tuple(choice.chosen[t, 8] for t in TENSORS)]

    def runner(choice: CalibrationStats):
        built.append(graph(choice))
        row = errors[graph(choice)]
        return lambda feeds: {"y": np.array([1.0 + np.sqrt(row[feeds["i"]])])}

    n = len(next(iter(errors.values())))
    cases = tuple(({"i": i}, {"y": np.ones(1)}) for i in range(n))
    got = refine_bounded(CalibrationStats(), dict.fromkeys(TENSORS, "mse"), lambda s: s,
                         cases, max_evaluations=max_evaluations, params=PARAMS,
                         runner=runner, graph_key=graph if keyed else None)
    return got, built


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**31), graphs=st.integers(1, len(PAIRS)),
       cases=st.integers(1, 6), max_evaluations=st.integers(1, 16))
def test_scoring_each_graph_once_picks_what_scoring_each_assignment_picks(
        seed: int, graphs: int, cases: int, max_evaluations: int) -> None:
    rng = np.random.default_rng(seed)
    graph_of = {k: int(rng.integers(graphs)) for k in PAIRS}  # many assignments, one graph
    errors = {i: rng.pareto(1.5, cases) + 1e-3 for i in range(graphs)}
    keyed, keyed_built = _search(errors, graph_of, True, max_evaluations)
    plain, plain_built = _search(errors, graph_of, False, max_evaluations)
    assert (keyed.chosen, keyed.evaluations) == (plain.chosen, plain.evaluations)
    assert len(keyed_built) <= len(plain_built)
    # the bars only fall (the incumbent only improves), so no graph is run twice
    assert len(keyed_built) == len(set(keyed_built))
