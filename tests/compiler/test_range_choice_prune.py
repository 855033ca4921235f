"""The range search's pruned scoring (an assignment's held-out cases stop running once its
error shows it cannot beat the incumbent by the margin; cases in batches of 2 samples)
picks what the unpruned search over one batch picks: on random error tables (hypothesis)
and on zoo models run in onnxruntime, with the same number of assignments and fewer runs.
The scores it does complete equal the one-batch `output_error`."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.activation_quant import ActivationParams
from compiler.passes.calibrate import CalibrationStats
from compiler.passes.quantize import QuantOptions, quantize
from compiler.range_choice import CANDIDATES, with_choices
from compiler.range_search import (
    bounded_error,
    choose_end_to_end,
    energies,
    output_error,
    reference_case,
    refine_end_to_end,
)
from edgesim import assignment
from edgesim import calibration as cal
from edgesim.float_pass import float_pass
from edgesim.loading import load_graph
from edgesim.ranges import _held_runs, _onnxruntime_runner

TENSORS = ("a", "b", "c")
PAIRS = list(itertools.product(CANDIDATES, repeat=len(TENSORS)))


def _table_search(shares: dict[tuple[str, ...], np.ndarray], margin: float, prune: bool,
                  max_evaluations: int) -> tuple[dict[str, str], int, int]:
    """`refine_end_to_end` where assignment k's output on case i is 1 + sqrt(shares[k][i])
    against a reference of ones: its error is sum(shares[k]) / cases. Also returns the
    number of case runs."""
    params = {t: {m: ActivationParams(np.float32(i + 1), 0, 8, False)
                  for i, m in enumerate(CANDIDATES)} for t in TENSORS}
    runs = []

    def runner(choice: CalibrationStats):
        row = shares[tuple(choice.chosen[t, 8] for t in TENSORS)]
        runs.append(0)

        def compute(feeds):
            runs[-1] += 1
            return {"y": np.array([1.0 + np.sqrt(row[feeds["i"]])])}
        return compute

    cases = tuple(({"i": i}, {"y": np.ones(1)}) for i in range(len(next(iter(shares.values())))))
    chosen, evals = refine_end_to_end(CalibrationStats(), dict.fromkeys(TENSORS, "mse"),
                                      lambda s: s, cases, max_evaluations=max_evaluations,
                                      params=params, runner=runner, margin=margin,
                                      prune=prune)
    return chosen, evals, sum(runs)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), cases=st.integers(1, 8),
       margin=st.sampled_from([0.0, 0.2, 0.5]), max_evaluations=st.integers(1, 40))
def test_pruning_picks_what_the_full_scores_pick(seed: int, cases: int, margin: float,
                                                 max_evaluations: int) -> None:
    rng = np.random.default_rng(seed)
    # heavy-tailed shares: a few cases carry most of an assignment's error, as on real data
    shares = {k: rng.pareto(1.5, cases) * rng.uniform(0.5, 2.0) for k in PAIRS}
    full = _table_search(shares, margin, False, max_evaluations)
    pruned = _table_search(shares, margin, True, max_evaluations)
    assert pruned[:2] == full[:2]
    assert pruned[2] <= full[2]


def test_a_bounded_score_stops_at_the_first_prefix_reaching_the_bound() -> None:
    g = load_graph("zoo:digits_cnn")
    data = cal.random_samples(g, 12, seed=5)
    cases = tuple(reference_case(*r) for r in _held_runs(g, data, 2))
    qg = quantize(g, assignment.resolve(g, 8), float_pass(g, data, stats=True).stats,
                  QuantOptions())
    energy = energies(cases)
    full = bounded_error(qg, cases, _onnxruntime_runner, energy)
    assert len(full) == 6 and min(full) > 0
    sums = np.cumsum(full)
    for k in range(6):
        bound = float(sums[k]) * (1 - 1e-9)  # reached on case k, not before
        assert len(bounded_error(qg, cases, _onnxruntime_runner, energy, bound)) == k + 1


def _search(name: str, chunk: int | None, prune: bool, bits: int
            ) -> tuple[dict[str, str], int, int, tuple]:
    """The range search of `edgesim.ranges.chosen_ranges` at W`bits`A`bits` on a zoo
    model (random samples: held-out 16, local choice on 4), counting onnxruntime runs."""
    g = load_graph(f"zoo:{name}")
    data = cal.random_samples(g, 32, seed=1)
    stats = float_pass(g, data, stats=True).stats
    assign = assignment.resolve(g, bits)
    _, held = cal.split(data, 16)
    cases = tuple(reference_case(*r) for r in _held_runs(g, held, chunk))
    runs = []

    def runner(qg):
        compute = _onnxruntime_runner(qg)
        return lambda feeds: (runs.append(1), compute(feeds))[1]

    chosen, evals = choose_end_to_end(
        g, stats, itertools.islice(cal.batches(g, held), 4), cases,
        lambda s: quantize(g, assign, s, QuantOptions()), bits, max_evaluations=8,
        runner=runner, prune=prune)
    picks = {t: m for (t, b), m in chosen.chosen.items() if b == bits}
    return picks, evals, len(runs), cases


def test_zoo_models_pick_the_same_ranges_with_fewer_runs() -> None:
    for name, bits in (("digits_cnn", 8), ("digits_transformer", 8)):
        slow, fast = _search(name, None, False, bits), _search(name, 2, True, bits)
        assert fast[:2] == slow[:2], name
        assert len(slow[3]) == 1 and len(fast[3]) == 8, name  # one batch / 8 of 2 samples
        assert fast[2] < slow[2] * 8, name  # case runs: 8 per full score on the fast side


def test_scores_in_batches_of_two_equal_the_one_batch_score() -> None:
    g = load_graph("zoo:digits_transformer")
    data = cal.random_samples(g, 16, seed=2)
    stats = float_pass(g, data, stats=True).stats
    one = tuple(reference_case(*r) for r in _held_runs(g, data, None))
    two = tuple(reference_case(*r) for r in _held_runs(g, data, 2))
    assert (len(one), len(two)) == (1, 8)
    for m in CANDIDATES:
        qg = quantize(g, assignment.resolve(g, 8),
                      with_choices(stats, dict.fromkeys(stats.stats, m), 8), QuantOptions())
        a, b = (output_error(qg, c, _onnxruntime_runner) for c in (one, two))
        assert a > 0
        np.testing.assert_allclose(b, a, rtol=1e-4)
