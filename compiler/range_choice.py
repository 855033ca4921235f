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
range is one of those the named methods give. The local choice is where the end-to-end search
starts (`compiler.range_search`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
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
Params = Mapping[str, Mapping[str, ActivationParams]]  # tensor -> method -> parameters
# a graph -> its outputs on one batch of feeds (prepared once per graph, run per batch)
Runner = Callable[[Graph], Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]]


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


def squares(y: np.ndarray) -> float:
    """The summed squares of `y`."""
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
    return squares(y)


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
                  else squares(d))
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
            errors[t][m] = sum(squares(ys[o]) for o in outs[t]) if outs[t] else squares(d)
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
