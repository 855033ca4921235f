"""The activation range choice closed over the whole model: assignments of range methods
scored by the model's own output error with every tensor quantised at once.

The per-tensor choice (`compiler.range_choice.choose_methods`) is local (each tensor scored
with every other tensor exact), and on some models the local optimum is not the end-to-end
one (magika W8A8: local choices 36.6 dB probability SQNR, every tensor at min/max 54.7 dB).
`choose_bounded` makes the local choice, then searches from it (`refine_bounded`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from compiler.executor import run
from compiler.ir import Graph, Quant
from compiler.passes.calibrate import CalibrationStats, Forward
from compiler.range_choice import (
    CANDIDATES,
    Params,
    Runner,
    candidate_params,
    choose_methods,
    squares,
    with_choices,
)

# graph outputs of one calibration batch, in float: what a quantised graph is compared with
Case = tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]
# activation statistics carrying a choice -> the graph quantised with it
Quantizer = Callable[[CalibrationStats], Graph]
# a quantised graph -> a value equal for graphs with equal outputs (`layer_annotations`)
GraphKey = Callable[[Graph], Hashable]


def fake_quant_runner(qg: Graph) -> Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]:
    """The reference executor's fake-quant simulation of `qg` (float32); on a float graph,
    its float outputs."""
    return lambda feeds: run(qg, feeds, dtype="float32", fake_quant=True)


def reference_case(feeds: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]
                   ) -> Case:
    """A batch and the float graph's outputs on it; integer outputs (labels) are left out of
    the comparison."""
    return feeds, {t: y for t, y in outputs.items() if np.asarray(y).dtype.kind == "f"}


def reference_cases(g: Graph, batches: Iterable[Mapping[str, np.ndarray]],
                    runner: Runner = fake_quant_runner) -> tuple[Case, ...]:
    """Each batch with the float graph `g`'s outputs on it (`reference_case`)."""
    compute = runner(g)
    return tuple(reference_case(feeds, compute(feeds)) for feeds in batches)


def energies(cases: Iterable[Case]) -> dict[str, float]:
    """Per output, the summed squares of its reference values over `cases`."""
    energy: dict[str, float] = {}
    for _, ref in cases:
        for t, y in ref.items():
            energy[t] = energy.get(t, 0.0) + squares(np.asarray(y, np.float64))
    return energy


def case_error(got: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray],
               energy: Mapping[str, float]) -> float:
    """One case's share of `output_error`: its squared error per output over that output's
    energy on all cases."""
    return sum(squares(np.asarray(got[t], np.float64) - y) / max(energy[t], 1e-30)
               for t, y in ref.items())


def bounded_error(qg: Graph, cases: Sequence[Case], runner: Runner,
                  energy: Mapping[str, float], bound: float = math.inf,
                  limits: Sequence[float] | None = None) -> list[float]:
    """`case_error` of `qg` on `cases` in order, stopping once their sum reaches `bound`
    (the shares are never negative, so the full sum cannot be below it then), or once the
    sum over the first k cases reaches `limits[k - 1]` (a screen: `_Scorer`)."""
    compute, shares = runner(qg), []
    for feeds, ref in cases:
        shares.append(case_error(compute(feeds), ref, energy))
        total = sum(shares)
        if total >= bound or limits is not None and total >= limits[len(shares) - 1]:
            break
    return shares


def output_error(qg: Graph, cases: Iterable[Case], runner: Runner = fake_quant_runner) -> float:
    """Summed relative squared error of `qg`'s float outputs (as `runner` computes them)
    against the reference outputs of `cases` (each output weighs the same, whatever its
    scale)."""
    cases = tuple(cases)
    return sum(bounded_error(qg, cases, runner, energies(cases)))


def _key(params: Params, choice: Mapping[str, str]) -> tuple[tuple[str, float, int], ...]:
    """What a choice quantises with: methods giving equal ranges are the same assignment."""
    return tuple((t, float(params[t][m].scale), int(params[t][m].zero_point))
                 for t, m in sorted(choice.items()))


def starting_choices(local: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """The assignments scored first: every tensor at min/max (the incumbent), the local
    choice, then every tensor on each other method."""
    return {"minmax": dict.fromkeys(local, "minmax"), "local": dict(local),
            **{m: dict.fromkeys(local, m) for m in CANDIDATES if m != "minmax"}}


class _Scorer:
    """End-to-end error of choices, each distinct assignment quantised once and each distinct
    quantised graph run once.

    Assignments that differ only in ranges no quantised layer reads give one graph (a conv
    input or output the plan runs with run-time ranges, a conv output whose ReLU's range
    sets the requantisation): given `graph_key` (e.g. `layer_annotations`), a graph is known
    by it and scored once, by the rules below, as an assignment asked twice is.

    Asked with a `bound`, an assignment's cases stop running once its error reaches the bound
    (the caller only needs to know that it is not below; it is run again, in full, if a later
    caller asks with a higher bound). The cases run in the order of their share of the first
    fully scored assignment's error, largest first: a few samples carry most of the error
    (magika: 3 of 16 carry 60-90 %), so a losing assignment shows it on the first ones.

    `screen` (a fraction, None: off) also stops a trial that is not ahead of the incumbent
    (`against`, a fully scored assignment) by the margin on the cases run so far, once that
    fraction of the cases has run: losing trials are mostly 5-20 % short of the margin
    (resnet18, mobilenet_v2), so the exact bound alone runs nearly all their cases. Not on
    a fraction of the incumbent's error: on magika W8A8 the first case carries 63 % of it,
    and the all-MSE assignment, 0.87 x min/max there, is 0.69 x on all cases (it wins).
    A screened trial scores `inf` (it lost)."""

    def __init__(self, stats: CalibrationStats, bits: int, params: Params,
                 quantizer: Quantizer, cases: tuple[Case, ...], runner: Runner,
                 screen: float | None = None, graph_key: GraphKey | None = None) -> None:
        self._stats, self._bits, self._params = stats, bits, params
        self._quantizer, self._cases, self._runner = quantizer, cases, runner
        self._energy = energies(cases)
        self._screen = screen
        self._ordered = False
        self._graph_key = graph_key
        # assignment -> what its quantised graph is known by (`graph_key`; else the assignment)
        self._graphs: dict[tuple[tuple[str, float, int], ...], Hashable] = {}
        # quantised graph -> (error, or a lower bound of it; whether all cases ran)
        self._seen: dict[Hashable, tuple[float, bool]] = {}
        self._shares: dict[Hashable, list[float]] = {}  # exact ones
        self._screened: dict[Hashable, float] = {}  # -> its bound

    def __call__(self, choice: Mapping[str, str], bound: float = math.inf,
                 against: Mapping[str, str] | None = None, margin: float = 0.0) -> float:
        asked, qg = _key(self._params, choice), None
        if asked not in self._graphs:
            qg = self._quantized(choice)
            self._graphs[asked] = asked if self._graph_key is None else self._graph_key(qg)
        key = self._graphs[asked]
        value, exact = self._seen.get(key, (0.0, False))
        if key in self._seen and (exact or value >= bound):
            return value
        if bound <= self._screened.get(key, -math.inf):  # lost to a higher bar already
            return math.inf
        if qg is None:  # run again, at a higher bound
            qg = self._quantized(choice)
        limits = self._limits(against, margin)
        shares = bounded_error(qg, self._cases, self._runner, self._energy, bound, limits)
        value, exact = sum(shares), len(shares) == len(self._cases)
        self._seen[key] = value, exact
        if exact and not self._ordered:
            self._cases, shares = _by_share(self._cases, shares), sorted(shares, reverse=True)
            self._ordered = True
        if exact:
            self._shares[key] = shares
        if limits is not None and bound > value >= limits[len(shares) - 1]:
            self._screened[key] = bound
            return math.inf
        return value

    def _quantized(self, choice: Mapping[str, str]) -> Graph:
        return self._quantizer(with_choices(self._stats, choice, self._bits, self._params))

    def _limits(self, against: Mapping[str, str] | None, margin: float) -> list[float] | None:
        """Per number of cases run, the sum at which the screen stops a trial: (1 - margin)
        x the incumbent's sum over those cases, from the `screen` fraction of the cases on
        (the incumbent's largest shares come first, so they carry at least that fraction
        of its error)."""
        graph = self._graphs.get(_key(self._params, against)) if against is not None else None
        inc = self._shares.get(graph) if graph is not None else None
        if self._screen is None or inc is None:
            return None
        first = math.ceil(self._screen * len(inc))
        return [(1.0 - margin) * s if k >= first else math.inf
                for k, s in enumerate(np.cumsum(inc).tolist(), 1)]

    @property
    def evaluations(self) -> int:
        """Distinct assignments scored so far: each quantised, and run (a forward pass per
        case, or fewer if it stopped at its bound) unless its graph was run before."""
        return len(self._graphs)


def layer_annotations(qg: Graph) -> tuple[Quant, ...]:
    """A `GraphKey` for graphs of one float model quantised with one bit assignment and
    options (`compiler.passes.quantize.quantize`) under different activation ranges: their
    layers' annotations. The ranges live there (`compiler.ir.Quant`); the quantised weights
    do not depend on them, except int32 biases, which follow the annotated input scales."""
    return tuple(layer.quant for layer in qg.layers)


def _by_share(cases: tuple[Case, ...], shares: Sequence[float]) -> tuple[Case, ...]:
    """`cases` by their `shares`, largest first."""
    order = sorted(range(len(cases)), key=lambda i: -shares[i])
    return tuple(cases[i] for i in order)


def refine_end_to_end(stats: CalibrationStats, local: Mapping[str, str], quantizer: Quantizer,
                      cases: Iterable[Case], bits: int = 8, percentile: float = 99.99,
                      max_evaluations: int = 32, params: Params | None = None,
                      runner: Runner = fake_quant_runner, margin: float = 0.2,
                      prune: bool = True, screen: float | None = None
                      ) -> tuple[dict[str, str], int]:
    """The assignment of range methods with the least end-to-end output error found: the
    best of `starting_choices(local)`, then refined greedily one tensor at a time in the
    order of `local` (topological), each other candidate kept if it lowers the error.

    An assignment replaces the incumbent (at first every tensor at min/max) only if it
    lowers the error by more than `margin` (a fraction): a few samples carry most of the
    output error (magika: 3 of 16 carry 60-90 %), so smaller gains are noise of the sample
    more often than gains on new data, and min/max is the range that clips no calibration
    sample.

    Args:
        stats: range statistics the candidates come from (already carrying the choices of
            other activation widths).
        local: tensor -> method, the per-tensor choice (`choose_methods`); its order is
            the refinement's.
        quantizer: statistics carrying a choice -> the quantised graph.
        cases: calibration batches with the float outputs (`reference_cases`); never
            held-out data, or the choice would be fitted to what it is judged on.
        bits: activation bits the choice is for.
        percentile: the kept mass of the percentile candidate.
        max_evaluations: bound on distinct assignments quantised and run (each costs one
            forward pass per case); the starting ones are always scored.
        params: tensor -> `candidate_params`, where the caller has them already.
        runner: how a quantised graph's outputs are computed (default the fake-quant
            executor; `edgesim` runs the emitted model in onnxruntime, several times faster).
        margin: the fraction by which a trial must lower the incumbent's error.
        prune: stop running a trial's cases once its error shows that it cannot beat the
            incumbent by `margin` (the choice is the same as without; it costs fewer runs).
        screen: also stop a trial that is not ahead of the incumbent by `margin` once this
            fraction of the cases has run (None: off, the exact search; see `_Scorer`).

    Returns:
        (tensor -> method, the number of assignments evaluated).
    """
    r = refine_bounded(stats, local, quantizer, cases, bits, percentile, max_evaluations,
                       params, runner, margin, prune, screen=screen)
    return r.chosen, r.evaluations


@dataclass(frozen=True)
class Refined:
    """What `refine_bounded` found.

    Attributes:
        chosen: tensor -> method, the best assignment scored.
        evaluations: distinct assignments quantised and run.
        stopped: whether the time bound ended the search with assignments left to score.
    """

    chosen: dict[str, str]
    evaluations: int
    stopped: bool = False


def refine_bounded(stats: CalibrationStats, local: Mapping[str, str], quantizer: Quantizer,
                   cases: Iterable[Case], bits: int = 8, percentile: float = 99.99,
                   max_evaluations: int = 32, params: Params | None = None,
                   runner: Runner = fake_quant_runner, margin: float = 0.2,
                   prune: bool = True, expired: Callable[[], bool] | None = None,
                   screen: float | None = None, graph_key: GraphKey | None = None
                   ) -> Refined:
    """`refine_end_to_end` under a time bound: before each assignment after the first (the
    min/max incumbent, always scored), `expired()` is asked, and once it is true the search
    stops with the best assignment scored so far (None: no bound, the same search).
    `graph_key`: what identifies `quantizer`'s graphs, so that assignments giving one graph
    run once (`_Scorer`; None: each assignment is its own graph)."""
    params = params or {t: candidate_params(stats, t, bits, percentile) for t in local}
    score = _Scorer(stats, bits, params, quantizer, tuple(cases), runner, screen, graph_key)
    if not local:
        return Refined({}, 0)
    starts = list(starting_choices(local).values())
    trials = [*starts[1:], *({t: m} for t in local for m in CANDIDATES)]
    best, err = starts[0], score(starts[0])
    for k, change in enumerate(trials):
        if k >= len(starts) - 1 and score.evaluations >= max_evaluations:
            break
        if expired is not None and expired():
            return Refined(best, score.evaluations, True)
        trial = change if k < len(starts) - 1 else {**best, **change}
        best, err = _try(score, trial, best, err, margin, prune)
    return Refined(best, score.evaluations)


def _try(score: _Scorer, trial: dict[str, str], best: dict[str, str], err: float,
         margin: float, prune: bool) -> tuple[dict[str, str], float]:
    """The trial and its error if it beats the incumbent's `err` by more than `margin`,
    else the incumbent (a trial scored up to the bound where it cannot win, if `prune`)."""
    bar = err * (1.0 - margin)
    e = score(trial, bar if prune else math.inf, best, margin)
    return (trial, e) if e < bar else (best, err)


def choose_end_to_end(g: Graph, stats: CalibrationStats,
                      batches: Iterable[Mapping[str, np.ndarray]], cases: Iterable[Case],
                      quantizer: Quantizer, bits: int = 8, percentile: float = 99.99,
                      forward: Forward | None = None, tensors: Iterable[str] | None = None,
                      max_evaluations: int = 32, runner: Runner = fake_quant_runner,
                      prune: bool = True, readers: Runner | None = None
                      ) -> tuple[CalibrationStats, int]:
    """`choose_methods` on `batches`, then `refine_end_to_end` on `cases` (both calibration
    data; `cases` made with the same `runner`), the candidate ranges computed once for both
    (`prune`: see `refine_end_to_end`; `readers`: see `choose_methods`).

    Returns:
        (`stats` carrying the choice at `bits`, the number of assignments run end to end).
    """
    chosen, refined = choose_bounded(g, stats, batches, cases, quantizer, bits, percentile,
                                     forward, tensors, max_evaluations, runner, prune, readers)
    return chosen, refined.evaluations


def choose_bounded(g: Graph, stats: CalibrationStats,
                   batches: Iterable[Mapping[str, np.ndarray]], cases: Iterable[Case],
                   quantizer: Quantizer, bits: int = 8, percentile: float = 99.99,
                   forward: Forward | None = None, tensors: Iterable[str] | None = None,
                   max_evaluations: int = 32, runner: Runner = fake_quant_runner,
                   prune: bool = True, readers: Runner | None = None,
                   expired: Callable[[], bool] | None = None, screen: float | None = None,
                   graph_key: GraphKey | None = None) -> tuple[CalibrationStats, Refined]:
    """`choose_end_to_end` with its refinement under a time bound (`refine_bounded`), its
    trials screened as `screen` says (`refine_end_to_end`), its graphs known by
    `graph_key` (`refine_bounded`).

    Returns:
        (`stats` carrying the choice at `bits`, what the refinement found).
    """
    names = tuple(t for t in (stats.stats if tensors is None else tensors)
                  if t in stats.stats and stats.stats[t].count and t in g.types)
    params = {t: candidate_params(stats, t, bits, percentile) for t in names}
    local = choose_methods(g, stats, batches, bits, percentile, forward, names, params,
                           readers)
    refined = refine_bounded(stats, local, quantizer, cases, bits, percentile,
                             max_evaluations, params, runner, prune=prune, expired=expired,
                             screen=screen, graph_key=graph_key)
    return with_choices(stats, refined.chosen, bits, params), refined
