"""Activation ranges chosen per tensor by the error they cause where they are read.

No single range method wins everywhere: on a transformer's LayerNorm output a few outlier
channels carry signal, and clipping them (percentile, entropy, histogram MSE) costs far more
than the coarser grid of the full min/max range (all-MiniLM-L6-v2, W8A8: percentile 0.929
mean cosine, minmax 0.993); on a CNN's ReLU output the long tail is rare and clipping it pays.

`choose_methods(g, stats, batches)` therefore scores every candidate range of every
calibrated tensor on calibration data by what its readers compute: for each MAC reader with
a constant weight (conv, linear, matmul), the squared error of the reader's float output when
the tensor is fake-quantised on that range (everything else exact); a tensor without such a
reader is scored by its own squared error. The candidate with the least summed error wins.
Candidate ranges come from the merged histograms (`CalibrationStats.params`), so the chosen
range is one of those the named methods give.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType

import numpy as np

from compiler import range_kernels as kernels
from compiler.activation_quant import ActivationParams
from compiler.executor import run
from compiler.ir import CATEGORY_GEMM, KIND_CATEGORY, Graph, Layer, Quant
from compiler.ops import OPS
from compiler.passes.calibrate import CalibrationStats, Forward
from compiler.quantizers import storage_range

CANDIDATES = ("minmax", "percentile", "mse", "entropy")


def weighted_readers(g: Graph, tensor: str) -> tuple[Layer, ...]:
    """MAC layers with a constant weight that read `tensor` as an activation."""
    return readers_of(g, (tensor,))[tensor]


def readers_of(g: Graph, tensors: Iterable[str]) -> dict[str, tuple[Layer, ...]]:
    """`weighted_readers` of each of `tensors`, from one walk over the graph (mobilenet_v2:
    one per tensor took 0.1 CPU-s of a compile's range choice)."""
    users = g.consumers()
    return {t: tuple(r for r in users.get(t, ())
                     if KIND_CATEGORY[r.kind] == CATEGORY_GEMM and g.const_weight(r)
                     and t not in g.weights) for t in tensors}


def _squares(y: np.ndarray) -> float:
    flat = np.ravel(y)
    return float(np.dot(flat, flat))  # float32 BLAS: ample for ranking candidates


def _reader_error(layer: Layer, env: Mapping[str, np.ndarray], tensor: str,
                  d: np.ndarray) -> float:
    """||reader(x + d) - reader(x)||^2: the reader is linear in `tensor` with its other inputs
    fixed, so that is its output for input `d` without the bias."""
    xs = [d if t == tensor else (env[t] if t else None) for t in layer.inputs]
    if len(xs) > 2 and tensor != layer.inputs[2]:
        xs[2] = None
    y = OPS[layer.kind].forward(*xs, **layer.attrs)[0]
    return _squares(y)


def rounding_error(x: np.ndarray, p: ActivationParams) -> np.ndarray:
    """`fake_quant_activation(x, p) - x` (float32), in one numba pass over one new array
    instead of nine numpy passes over six (the local range choice computes it for every
    tensor, method and sample: 1.8 of its 3 s on mobilenet_v2; five numpy passes still
    took 0.44 CPU-s of a mobilenet_v2 compile). Equal bit for bit, up to the sign of zero
    differences (squared and linearly read, they count the same): clip(rint(r) + zp, qmin,
    qmax) - zp is clip(rint(r), qmin - zp, qmax - zp) for every integral float32 rint(r)
    (below 2^24 the shift is exact; beyond, both saturate), and that difference is an exact
    float32 integer either way."""
    qmin, qmax = storage_range(p.bits, p.signed)
    return kernels.rounding_error(x, np.float32(p.scale), qmin - p.zero_point,
                                  qmax - p.zero_point)


def tensor_errors(g: Graph, env: Mapping[str, np.ndarray], tensor: str,
                  params: Mapping[str, ActivationParams]) -> dict[str, float]:
    """Squared output error of `tensor`'s weighted readers (or of the tensor itself, if it
    has none) on one batch `env`, per candidate in `params`."""
    x = env[tensor]
    readers = weighted_readers(g, tensor)
    full = {**g.weights, **env}
    out = {}
    for m, p in params.items():
        d = rounding_error(x, p)
        out[m] = (sum(_reader_error(r, full, tensor, d) for r in readers) if readers
                  else _squares(d))
    return out


def _perturbed(t: str) -> str:
    return f"{t}#d"


def _reader_copy(g: Graph, layer: Layer, t: str) -> Layer | None:
    """`layer` reading `_perturbed(t)` in place of `t`, without its bias (as `_reader_error`
    computes it); None if it reads another activation, which the copy could not be fed."""
    ins = tuple(_perturbed(t) if i == t else "" if k == 2 else i
                for k, i in enumerate(layer.inputs))
    if any(i and i != _perturbed(t) and i not in g.weights for i in ins):
        return None
    return replace(layer, name=f"{layer.name}#{t}", inputs=ins,
                   outputs=(f"{layer.outputs[0]}#{t}",), quant=Quant())


def reader_graph(g: Graph, tensors: Iterable[str]) -> Graph | None:
    """The weighted readers of `tensors` (`weighted_readers`) as one float graph that reads a
    perturbation `<tensor>#d` of each tensor in its place, without biases: its outputs are
    the readers' responses to the perturbations, whose squares `tensor_errors` sums. None
    if no tensor has such a reader or a reader reads another activation."""
    readers = readers_of(g, tensors)
    copies = [(t, _reader_copy(g, r, t)) for t, rs in readers.items() for r in rs]
    if not copies or any(c is None for _, c in copies):
        return None
    layers = tuple(c for _, c in copies if c is not None)
    ins = tuple(_perturbed(t) for t, rs in readers.items() if rs)
    outs = tuple(c.outputs[0] for c in layers)
    types = {**{_perturbed(t): g.types[t] for t, rs in readers.items() if rs},
             **{c.outputs[0]: g.types[r.outputs[0]]
                for r, c in zip((r for rs in readers.values() for r in rs), layers)}}
    weights = {i: g.weights[i] for c in layers for i in c.inputs if i in g.weights}
    return Graph(f"{g.name}.readers", ins, outs, layers, MappingProxyType(weights),
                 MappingProxyType(types))


ReaderRun = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


def _graph_errors(env: Mapping[str, np.ndarray], tensors: Iterable[str], params: Params,
                  rg: Graph, run: ReaderRun) -> dict[str, dict[str, float]]:
    """`tensor_errors` of every tensor on one batch `env`: per candidate, the perturbations
    of all tensors run through the reader graph `rg` (`reader_graph`) at once."""
    outs = {t: [c.outputs[0] for c in rg.layers if _perturbed(t) in c.inputs] for t in tensors}
    errors: dict[str, dict[str, float]] = {t: {} for t in tensors}
    for m in CANDIDATES:
        ds = {t: rounding_error(env[t], params[t][m]) for t in errors}
        ys = run({_perturbed(t): d for t, d in ds.items() if outs[t]})
        for t, d in ds.items():
            errors[t][m] = sum(_squares(ys[o]) for o in outs[t]) if outs[t] else _squares(d)
    return errors


def candidate_params(stats: CalibrationStats, tensor: str, bits: int,
                     percentile: float) -> dict[str, ActivationParams]:
    """`tensor`'s asymmetric parameters by every candidate method."""
    return {m: stats.params(tensor, bits, m, percentile) for m in CANDIDATES}


def choose_methods(g: Graph, stats: CalibrationStats,
                   batches: Iterable[Mapping[str, np.ndarray]], bits: int = 8,
                   percentile: float = 99.99, forward: Forward | None = None,
                   tensors: Iterable[str] | None = None,
                   params: Mapping[str, Mapping[str, ActivationParams]] | None = None,
                   readers: Runner | None = None) -> dict[str, str]:
    """Per calibrated tensor of `stats`, the candidate method whose range causes the least
    summed output error over `batches` (see the module docstring).

    Args:
        g: the float model `stats` were collected on.
        stats: merged range statistics (candidate ranges come from them).
        batches: feed dicts of calibration data (a few are enough).
        bits: activation bits the ranges are for.
        percentile: the kept mass of the percentile candidate.
        forward: `forward(feeds, names)` -> at least the tensors `names` and the weighted
            readers' other inputs; default the reference executor in float32.
        tensors: the tensors to choose for (default: every one `stats` holds).
        params: tensor -> `candidate_params`, where the caller has them already.
        readers: how the weighted readers' responses are computed: `readers(reader_graph(g,
            tensors))` runs all of them on one candidate's perturbations at once (e.g. in
            onnxruntime); default each reader's op forward in numpy.

    Returns:
        tensor -> method name; empty if `batches` is empty.
    """
    tensors = tuple(t for t in (stats.stats if tensors is None else tensors)
                    if t in stats.stats and stats.stats[t].count and t in g.types)
    params = {t: (params[t] if params and t in params
                  else candidate_params(stats, t, bits, percentile)) for t in tensors}
    needed = tuple(dict.fromkeys(
        [*tensors, *(i for rs in readers_of(g, tensors).values() for r in rs
                     for i in r.inputs if i and i not in g.weights)]))
    forward = forward or (lambda feeds, names: run(g, feeds, dtype="float32", keep=names))
    total = {t: dict.fromkeys(CANDIDATES, 0.0) for t in tensors}
    seen = 0
    rg = reader_graph(g, tensors) if readers else None
    run_readers = readers(rg) if readers and rg else None
    for feeds in batches:
        env = forward(feeds, needed)
        seen += 1
        errors = (_graph_errors(env, tensors, params, rg, run_readers) if rg and run_readers
                  else {t: tensor_errors(g, env, t, params[t]) for t in tensors})
        for t in tensors:
            for m, e in errors[t].items():
                total[t][m] += e
    if not seen:
        return {}
    # ties (e.g. two methods giving the same range) go to the first candidate listed
    return {t: min(CANDIDATES, key=total[t].__getitem__) for t in tensors}


def with_choices(stats: CalibrationStats, chosen: Mapping[str, str], bits: int = 8,
                 params: Mapping[str, Mapping[str, ActivationParams]] | None = None
                 ) -> CalibrationStats:
    """`stats` carrying the chosen method per tensor at `bits` (read by method "auto"), and
    its parameters where `params` (tensor -> method -> parameters) holds them."""
    merged = {**stats.chosen, **{(t, bits): m for t, m in chosen.items()}}
    resolved = {k: p for k, p in stats.resolved.items() if not (k[1] == bits and k[0] in chosen)}
    if params is not None:
        resolved.update({(t, bits): params[t][m] for t, m in chosen.items() if t in params})
    return replace(stats, chosen=MappingProxyType(merged),
                   resolved=MappingProxyType(resolved))


# ----------------------------------------------------------------------------------------------
# Closing the loop: the per-tensor choice above is local (each tensor scored with every other
# tensor exact), and on some models the local optimum is not the end-to-end one (magika W8A8:
# local choices 36.6 dB probability SQNR, every tensor at min/max 54.7 dB). So the assignments
# below are scored by the model's own output error with every tensor quantised at once.

# graph outputs of one calibration batch, in float: what a quantised graph is compared with
Case = tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]
# activation statistics carrying a choice -> the graph quantised with it
Quantizer = Callable[[CalibrationStats], Graph]
# a graph -> its outputs on one batch of feeds (prepared once per graph, run per batch)
Runner = Callable[[Graph], Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]]


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
            energy[t] = energy.get(t, 0.0) + _squares(np.asarray(y, np.float64))
    return energy


def case_error(got: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray],
               energy: Mapping[str, float]) -> float:
    """One case's share of `output_error`: its squared error per output over that output's
    energy on all cases."""
    return sum(_squares(np.asarray(got[t], np.float64) - y) / max(energy[t], 1e-30)
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


Params = Mapping[str, Mapping[str, ActivationParams]]  # tensor -> method -> parameters


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
    """End-to-end error of choices, each distinct assignment quantised and run once.

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
                 screen: float | None = None) -> None:
        self._stats, self._bits, self._params = stats, bits, params
        self._quantizer, self._cases, self._runner = quantizer, cases, runner
        self._energy = energies(cases)
        self._screen = screen
        self._ordered = False
        # assignment -> (error, or a lower bound of it; whether all cases ran)
        self._seen: dict[tuple[tuple[str, float, int], ...], tuple[float, bool]] = {}
        self._shares: dict[tuple[tuple[str, float, int], ...], list[float]] = {}  # exact ones
        self._screened: dict[tuple[tuple[str, float, int], ...], float] = {}  # -> its bound

    def __call__(self, choice: Mapping[str, str], bound: float = math.inf,
                 against: Mapping[str, str] | None = None, margin: float = 0.0) -> float:
        key = _key(self._params, choice)
        value, exact = self._seen.get(key, (0.0, False))
        if key in self._seen and (exact or value >= bound):
            return value
        if bound <= self._screened.get(key, -math.inf):  # lost to a higher bar already
            return math.inf
        qg = self._quantizer(with_choices(self._stats, choice, self._bits, self._params))
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

    def _limits(self, against: Mapping[str, str] | None, margin: float) -> list[float] | None:
        """Per number of cases run, the sum at which the screen stops a trial: (1 - margin)
        x the incumbent's sum over those cases, from the `screen` fraction of the cases on
        (the incumbent's largest shares come first, so they carry at least that fraction
        of its error)."""
        inc = self._shares.get(_key(self._params, against)) if against is not None else None
        if self._screen is None or inc is None:
            return None
        first = math.ceil(self._screen * len(inc))
        return [(1.0 - margin) * s if k >= first else math.inf
                for k, s in enumerate(np.cumsum(inc).tolist(), 1)]

    @property
    def evaluations(self) -> int:
        """Assignments quantised and run so far (each a forward pass per case, or fewer if
        it stopped at its bound)."""
        return len(self._seen)


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
                   screen: float | None = None) -> Refined:
    """`refine_end_to_end` under a time bound: before each assignment after the first (the
    min/max incumbent, always scored), `expired()` is asked, and once it is true the search
    stops with the best assignment scored so far (None: no bound, the same search)."""
    params = params or {t: candidate_params(stats, t, bits, percentile) for t in local}
    score = _Scorer(stats, bits, params, quantizer, tuple(cases), runner, screen)
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
                   expired: Callable[[], bool] | None = None, screen: float | None = None
                   ) -> tuple[CalibrationStats, Refined]:
    """`choose_end_to_end` with its refinement under a time bound (`refine_bounded`), its
    trials screened as `screen` says (`refine_end_to_end`).

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
                             screen=screen)
    return with_choices(stats, refined.chosen, bits, params), refined
