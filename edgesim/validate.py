"""`edgesim validate`: predicted vs measured latency, per layer and in total, on this machine.

The model (at the asked bits, emitted as `edgesim quantize` would; an already quantized file as
it is, predicted at its own plan) runs in onnxruntime with per-node profiling
(`SessionOptions.enable_profiling`); the graph onnxruntime optimised is saved beside it, so
every profiled node is known by its outputs and mapped to the IR layer it ran
(`edgesim.node_map`). IR layers onnxruntime fused away (a Relu inside FusedConv, a folded
Reshape) join the group of the layer they feed, so each row compares a group of layers with
the nodes that ran them. The error of a row is predicted / measured - 1. A node's measured
time is net of the profiler's own work inside its event (`profiler_floor_us`, measured here
on chains of cheap nodes): predictions are of the unprofiled run.

On a board: `edgesim target probe host.yaml`, then `edgesim validate MODEL --target host.yaml`.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgesim import profile_runs
from edgesim.errors import UserError
from edgesim.host_check import check_host
from edgesim.node_map import assign_nodes, layer_groups, name_unnamed

if TYPE_CHECKING:  # the CLI registers this command without loading the compiler
    from compiler.ir import Graph
    from hwmodels.target import Target

NODE_SUFFIX = profile_runs.NODE_SUFFIX
# onnxruntime's profiler works inside each node's kernel event (it sizes the inputs and
# formats their shapes and the thread statistics into the event before taking the end time):
# on this project's x86 host ~0.9 us for a one-input node and ~2.2 us for a nine-input one at
# 1 thread, ~2.8 us at 2 (fastest of 20 runs), against 0.2-1.6 us for those cheap nodes
# unprofiled, so a small node reads several times its cost. `profiler_floor_us` measures it
# on chains of cheap nodes with these input counts
FLOOR_INPUTS = (1, 9)
FLOOR_CHAIN = (6, 60)  # chain lengths: the unprofiled per-node time is their difference
OWN_PLAN = "own plan"  # `Validation.bits` of a quantized file run as it is


@dataclass(frozen=True)
class Row:
    """One group of IR layers and the onnxruntime nodes that ran them."""

    layers: tuple[str, ...]
    nodes: tuple[str, ...]
    predicted_ms: float
    measured_ms: float

    @property
    def error(self) -> float:
        return self.predicted_ms / self.measured_ms - 1.0 if self.measured_ms > 0 else np.inf


@dataclass(frozen=True)
class Validation:
    """Per-group rows, totals and the error summary of one validation run."""

    model: str
    target: str
    bits: str
    threads: int
    rows: tuple[Row, ...]
    predicted_ms: float
    measured_ms: float        # wall time of a whole run (unprofiled; median or p10, `stat`)
    node_sum_ms: float        # sum of the profiled node times, net of the profiler's floor
    unmapped_nodes: tuple[str, ...]
    clean_runs: int = -1      # profiled runs on cores of their own (`profile_runs`)
    warning: str = ""         # the target and this machine differ (`host_check`)
    noise: profile_runs.Noise | None = None  # were the measurements disturbed (`assess`)
    profiler_us: tuple[float, float] = (0.0, 0.0)  # taken off node times (`profiler_floor_us`)

    @property
    def total_error(self) -> float:
        return self.predicted_ms / self.measured_ms - 1.0

    def summary(self) -> dict[str, float]:
        """Median |error| over groups, share within +-10 / +-25 %, total error."""
        err = [abs(r.error) for r in self.rows if r.measured_ms > 0]
        return {"groups": len(err), "median_abs_err": float(np.median(err)) if err else 0.0,
                "within_10": float(np.mean([e <= 0.10 for e in err])) if err else 0.0,
                "within_25": float(np.mean([e <= 0.25 for e in err])) if err else 0.0,
                "total_error": self.total_error}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        rows = [{**asdict(r), "error": r.error} for r in self.rows]
        return {**{k: v for k, v in asdict(self).items() if k != "rows"}, "rows": rows,
                "summary": self.summary()}


def node_times(events: Sequence[Mapping[str, Any]], stat: str = "median",
               keep: Sequence[bool] | None = None) -> dict[str, float]:
    """Kernel time (ms) of every node in an onnxruntime profile (one event per run): the
    median over runs, or with `stat="min"` the fastest run (on a shared, loaded machine
    preemption only ever adds time, so the minimum is the undisturbed kernel). `keep`: per
    run (`profile_runs.clean_mask`), whether its events count; a node with no kept run keeps
    all of its runs."""
    return _picked(profile_runs.kept(profile_runs.node_samples(events), keep), stat)


def _picked(samples: Mapping[str, Sequence[float]], stat: str) -> dict[str, float]:
    """Per node, the median of its times (ms), or the fastest with `stat="min"`."""
    pick = min if stat == "min" else statistics.median
    return {n: float(pick(v)) for n, v in samples.items()}


def compare(graph: Graph, predicted_ms: np.ndarray, node_ms: Mapping[str, float],
            node_layer: Mapping[str, int]) -> list[Row]:
    """Rows of (layers, nodes, predicted, measured) per group, in graph order."""
    group = layer_groups(graph, set(node_layer.values()))
    layers: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(group):
        layers[g].append(i)
    nodes: dict[int, list[str]] = defaultdict(list)
    for name, i in node_layer.items():
        if name in node_ms:
            nodes[group[i]].append(name)
    # the group's own layer (the one its nodes ran) names the row
    return [Row(tuple(graph.layers[i].name for i in [g, *(j for j in members if j != g)]),
                tuple(sorted(nodes[g])),
                float(sum(predicted_ms[i] for i in members)),
                float(sum(node_ms[n] for n in nodes[g])))
            for g, members in sorted(layers.items())]


def optimised_nodes(path: Path, profiled: Iterable[str] = ()
                    ) -> list[tuple[str, list[str], list[str]]]:
    """(name, inputs, outputs) of every node of the graph onnxruntime saved at `path`; a
    node saved without a name gets the one the profile (`profiled`: its node names) knew
    it by (`name_unnamed`)."""
    import onnx  # on demand: the CLI registers this command without loading onnx

    model = onnx.load(str(path), load_external_data=False)
    return name_unnamed([(n.name, n.op_type, list(n.input), list(n.output))
                         for n in model.graph.node], profiled)


def profiled_session(model_path: Path, threads: int, workdir: Path, tag: str = "") -> Any:
    """An onnxruntime session that profiles every node and saves its optimised graph as
    `workdir/optimised{tag}.onnx`."""
    import onnxruntime as ort  # on demand, as onnx above

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.enable_profiling = True
    opts.profile_file_prefix = str(workdir / f"profile{tag}")
    opts.optimized_model_filepath = str(workdir / f"optimised{tag}.onnx")
    opts.log_severity_level = 3
    # pool workers stop spinning when a run ends, so between runs (and while another
    # session runs, or the total is timed) they leave the cores to whatever runs next
    opts.add_session_config_entry("session.force_spinning_stop", "1")
    return ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])


def waited_run(sess: Any, feeds: Mapping[str, np.ndarray]) -> int:
    """Run once; return the run-queue wait (ns) of this process's threads meanwhile."""
    before = profile_runs.sched_wait_ns()
    sess.run(None, dict(feeds))
    return profile_runs.sched_wait_ns() - before


def finish(sess: Any, waits: Sequence[int], stat: str, threads: int
           ) -> tuple[dict[str, float], int, profile_runs.Noise]:
    """End a `profiled_session`'s profile: node times (ms, `node_times` over the clean runs
    of `profile_runs.clean_mask`; the first, cold run never counts), the clean runs, and how
    disturbed those runs were (`profile_runs.assess`)."""
    events = json.loads(Path(sess.end_profiling()).read_text())
    keep = profile_runs.clean_mask(events, waits)
    samples = profile_runs.kept(profile_runs.node_samples(events), keep)
    warm = max(0, len(keep) - profile_runs.FIRST_RUN_COLD)
    noise = profile_runs.assess(samples, sum(keep), warm, threads,
                                profile_runs.queue_share(events, waits))
    return _picked(samples, stat), sum(keep), noise


def profile(model_path: Path, feeds: Mapping[str, np.ndarray], threads: int, runs: int,
            workdir: Path, stat: str = "median"
            ) -> tuple[dict[str, float], list[tuple[str, list[str], list[str]]], int,
                       profile_runs.Noise]:
    """Profile `runs` runs; returns node times, the optimised graph's nodes, how many runs
    were clean and how disturbed they were (`finish`)."""
    sess = profiled_session(model_path, threads, workdir)
    waits = [waited_run(sess, feeds) for _ in range(runs)]
    times, clean, noise = finish(sess, waits, stat, threads)
    return times, optimised_nodes(workdir / "optimised.onnx", times), clean, noise


def _floor_chain(inputs: int, n: int) -> Any:
    from hwmodels.probe_timing import chain_model

    extra = tuple(f"c{j}" for j in range(inputs - 1))
    cycle: tuple[tuple[str, tuple[str, ...], dict[str, Any]], ...] = (
        (("Sum", extra, {}),) if extra else (("Relu", (), {}),))
    return chain_model(cycle, n, (1, 4, 16), {c: np.full(16, 0.01, np.float32) for c in extra})


def fit_floor(points: Sequence[tuple[int, float]]) -> tuple[float, float]:
    """(a, b) of the line a + b * inputs through two (inputs, us) points, neither below 0."""
    (n0, f0), (n1, f1) = points
    b = max((f1 - f0) / (n1 - n0), 0.0)
    return max(f0 - b * n0, 0.0), b


def profiler_floor_us(threads: int, runs: int, stat: str, workdir: Path
                      ) -> tuple[float, float]:
    """(a, b): onnxruntime's profiler adds a + b * inputs us to a node's kernel time here, at
    `threads` threads, read with the same statistic (`stat`, over `runs` runs) as the
    model's nodes: chains of FLOOR_CHAIN Relu (one input) and Sum (nine) nodes on [1, 4, 16],
    the mean node time profiled less the unprofiled per-node time (chain difference)."""
    import onnx

    from edgesim.evaluate import measure_latency

    x = {"t0": np.full((1, 4, 16), 0.5, np.float32)}
    points = []
    for k in FLOOR_INPUTS:
        short, long = (_floor_chain(k, n) for n in FLOOR_CHAIN)
        reps = max(runs, 50)  # the unprofiled difference is small: many short runs
        bare_ms = (measure_latency(long, x, threads, reps).p10_ms - measure_latency(
            short, x, threads, reps).p10_ms) / (FLOOR_CHAIN[1] - FLOOR_CHAIN[0])
        onnx.save(long, str(workdir / f"floor{k}.onnx"))
        sess = profiled_session(workdir / f"floor{k}.onnx", threads, workdir, f"floor{k}")
        waits = [waited_run(sess, x) for _ in range(runs)]
        times, _, _ = finish(sess, waits, stat, threads)
        points.append((k, (float(np.mean(list(times.values()))) - bare_ms) * 1e3))
    return fit_floor(points)


def net_of_floor(node_ms: Mapping[str, float], inputs: Mapping[str, int],
                 floor_us: tuple[float, float]) -> dict[str, float]:
    """Node times (ms) less the profiler's share a + b * inputs us (`profiler_floor_us`),
    never below 0."""
    a, b = floor_us
    return {n: max(ms - (a + b * inputs.get(n, 1)) * 1e-3, 0.0) for n, ms in node_ms.items()}


def busy_host_ms(model: Any, feeds: Mapping[str, np.ndarray], threads: int,
                 runs: int) -> float:
    """A run's time (ms) on a shared, loaded machine: the lower of the 10th-percentile wall
    time of `runs` runs and the sum of every node's fastest profiled run (preemption only
    adds time; the profiler adds a few us per node, so small models are measured by the
    former, large ones by the latter). `model`: a ModelProto."""
    import onnx

    from edgesim.evaluate import measure_latency

    wall = measure_latency(model, feeds, threads, runs).p10_ms
    with tempfile.TemporaryDirectory(prefix="edgesim-busy-") as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save(model, str(path))
        nodes, _, _, _ = profile(path, feeds, threads, runs, Path(tmp), "min")
    return min(wall, sum(nodes.values()))


def validate(model: Any, target: Target, *, bits: Any = None, threads: int = 1,
             runs: int = 20, calib_random: int = 8, stat: str = "median",
             input_shapes: Mapping[str, Sequence[int]] | None = None) -> Validation:
    """Run `model` at `bits` here, profiled, and compare with the prediction on `target`.

    Args:
        model: ONNX path, `zoo:NAME`, ModelProto or Graph.
        target: the target (name, YAML path or object) describing this machine: a target
            of another kind or architecture is refused (`UserError`), one claiming ISA
            features or cores this machine lacks gives `Validation.warning`.
        bits: as `edgesim quantize` takes them ("fp32", 8 = W8A8, 4 = W4, ...); None: a
            quantized file (edgesim's own or onnxruntime's `quantize_static` / `_dynamic`)
            runs as it is, against the prediction of its own plan (as `simulate` reads it),
            a float model at fp32. Bits for an already quantized model are refused
            (`UserError`): requantising its read-back float self would validate another model.
        threads: onnxruntime intra-op threads, and the threads the model assumes.
        runs: profiled runs (and timed runs of the total).
        calib_random: random calibration samples for quantised activations.
        stat: "median" (per node, and the total's wall time) or "min" (fastest run per node;
            the total's 10th percentile): the robust choice on a shared, loaded machine.
        input_shapes: static shapes of inputs with dynamic dims (`--input-shape`).
    """
    from edgesim import assignment
    from edgesim import calibration as cal
    from edgesim.evaluate import measure_latency
    from edgesim.loading import load_graph, resolve_target
    from edgesim.quantize import quantize_model
    from edgesim.simulation import planned_bits, simulate_graph

    tgt = resolve_target(target)
    warning = check_host(tgt)
    g = load_graph(model, input_shapes)
    own = planned_bits(g)
    quantized = bool((own < 32).any())
    if quantized and bits is not None:
        raise UserError("--bits", "the model is already quantized and runs at its own plan: "
                        "drop --bits, or validate its float model at these bits")
    bits = own if quantized else "fp32" if bits is None else bits
    sim = simulate_graph(g, tgt, assignment.resolve(g, bits), threads=threads)
    predicted = np.array([r.latency_ms for r in sim.layers])
    feeds = next(cal.batches(g, cal.random_samples(g, 1)))
    with tempfile.TemporaryDirectory(prefix="edgesim-validate-") as tmp:
        work = Path(tmp)
        # the read-back plan has no weight codes to emit from: the file runs as it is
        path = (quantized_file(model, work) if quantized else Path(quantize_model(
            g, bits, calib_random=calib_random, out=work / "model.onnx").out))
        raw_ms, nodes, clean, noise = profile(path, feeds, threads, runs, work, stat)
        floor = profiler_floor_us(threads, runs, stat, work)
        lat = measure_latency(path, feeds, threads, runs)
    node_ms = net_of_floor(raw_ms, {name: sum(map(bool, ins)) for name, ins, _ in nodes}, floor)
    total = lat.p10_ms if stat == "min" else lat.median_ms
    node_layer = assign_nodes(nodes, g)
    rows = compare(g, predicted, node_ms, node_layer)
    return Validation(g.name, getattr(tgt, "name", str(target)),
                      OWN_PLAN if quantized else str(bits), threads,
                      tuple(rows), float(predicted.sum()), total, float(sum(node_ms.values())),
                      tuple(sorted(set(node_ms) - set(node_layer))), clean, warning, noise,
                      floor)


def quantized_file(model: Any, workdir: Path) -> Path:
    """The ONNX file of an already quantized `model` (a path, or a ModelProto saved into
    `workdir`); a lowered Graph carrying a plan has no file to run (`UserError`)."""
    import onnx

    from edgesim.loading import ZOO_PREFIX, zoo_model

    if isinstance(model, str) and model.startswith(ZOO_PREFIX):
        model = zoo_model(model[len(ZOO_PREFIX):])
    if isinstance(model, str | os.PathLike):
        return Path(model)

    if isinstance(model, onnx.ModelProto):
        onnx.save(model, str(workdir / "model.onnx"))
        return workdir / "model.onnx"
    raise UserError("model", "a quantized model validates from its ONNX file or ModelProto, "
                    "not from a lowered Graph")


def format_table(v: Validation) -> str:
    """The human-readable report: one line per group, then the totals and the summary."""
    lines = [f"{v.model} on {v.target} ({v.bits}, {v.threads} thread(s))",
             f"{'layers':<40} {'pred ms':>9} {'meas ms':>9} {'error':>7}"]
    for r in v.rows:
        name = r.layers[0] + (f" +{len(r.layers) - 1}" if len(r.layers) > 1 else "")
        lines.append(f"{name[:40]:<40} {r.predicted_ms:9.3f} {r.measured_ms:9.3f} "
                     f"{r.error:+7.1%}")
    s = v.summary()
    lines.append(f"{'total (wall)':<40} {v.predicted_ms:9.3f} {v.measured_ms:9.3f} "
                 f"{v.total_error:+7.1%}")
    lines.append(f"per group: median |error| {s['median_abs_err']:.1%}, within 10 % "
                 f"{s['within_10']:.0%}, within 25 % {s['within_25']:.0%}")
    if v.noise is not None and v.noise.disturbed:
        lines.append(v.noise.message())
    return "\n".join(lines)
