"""`compile_model`: ONNX model + target -> packed mixed-precision model, reports and plot.

The order of the whole flow, one line per step, is in `compile_model`. Outputs are staged inside
OUTDIR and renamed into place at the end (`edgesim.output`): a failed run changes nothing, and
no file edgesim did not write is ever deleted.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from compiler.emit import EmitOptions
from compiler.ir import Graph
from compiler.passes.quantize import QuantOptions
from compiler.verify import verify
from edgesim import calibration as cal
from edgesim.alloc_problem import fixed_bits
from edgesim.allocation import DATA_METHODS, allocate, sensitivity
from edgesim.analysis_inputs import (
    analysis_graph,
    analysis_inputs,
    built_model,
    calibration_data,
)
from edgesim.budget import DEFAULT_ANALYSIS_BUDGET_S, Budget
from edgesim.errors import UserError
from edgesim.fidelity import check_fidelity, check_minimum, measure_fidelity
from edgesim.output import output_folder, publish, staging
from edgesim.progress import Progress
from edgesim.report import (
    CompileResult,
    build_result,
    front_job,
    planned_rows,
    write_reports,
)
from edgesim.report_plots import Plotter, layers_job, plotter, stopped_on_error
from edgesim.settle_rule import settled_rule
from edgesim.simulation import totals
from edgesim.smoothing import outlier_channels, smooth_alpha, smoothed
from edgesim.tables import EmittedBytes
from hwmodels import kinds

if TYPE_CHECKING:
    from hwmodels.target import Target, TargetRef


@dataclass(frozen=True)
class CompileOptions:
    """Everything `edgesim compile` takes besides the model and the target."""

    method: str = "hawq"
    budget: Budget | None = None
    weight_bits: tuple[int, ...] = (2, 3, 4, 6, 8)
    act_bits: tuple[int, ...] | None = None
    metric: str = "latency"
    threads: int | None = None
    runtime: str = "onnxruntime"
    input_shapes: Mapping[str, Sequence[int]] | None = None
    input_values: Mapping[str, Any] | None = None   # inputs pinned to a value (If folding)
    batch_axes: Mapping[str, int | None] | None = None  # declared batch axes of inputs
    fidelity_metric: Any = None  # (reference, test) -> float replacing the primary metric
    calib_method: str | None = None  # activation ranges: minmax/percentile/mse/entropy
    # SmoothQuant migration strength alpha at every site, None: off, "auto": AUTO_ALPHA at
    # the sites with outlier channels, when static 8-bit activations are among the choices
    smooth_quant: float | str | None = "auto"
    rounding: str = "rtn"  # weight codes: "rtn" or "gptq" (second-order, calibration data)
    bias_correction: bool = True  # remove <= 4-bit weight-only layers' mean output shift
    quiet: bool = False
    command: str = ""
    sparsity: tuple[float, ...] = ()  # candidate activation sparsities (edgesim.sparsity)
    kernel_check: str = "fail"  # "fail" | "report" | "off": onnxruntime's kernels vs the plan
    pick: int | None = None     # emit this point of the front (0 = cheapest) instead
    assignment: str | None = None  # plan.json or report.json: re-emit its bits, no analysis
    force: bool = False  # write into a non-empty folder edgesim did not make
    verify: bool = False  # run compiler.verify on the loaded IR (`--debug`)
    min_fidelity: float | None = None  # fail below this primary fidelity metric (fp32 ref)
    # HAWQ's / LRP's time bound (None: unbounded)
    analysis_budget_s: float | None = DEFAULT_ANALYSIS_BUDGET_S
    blocks: tuple[int, ...] | None = None  # per-layer block choices of per-block rows
    # CPU-time bound of the end-to-end activation range search (None: RANGE_SHARE of
    # analysis_budget_s when that is given, else unbounded)
    range_budget_s: float | None = None
    # who draws pareto.png and layers.png: "process" (a child process started with the
    # compile), "inline" (this process, at the end), "auto" (a process unless this one
    # has imported matplotlib already), or a Plotter already started; see
    # edgesim.report_plots
    plots: str | Plotter = "auto"


def _settled(g: Graph, ga: Graph, target: Target, options: CompileOptions,
             emitted: EmittedBytes) -> Any:
    """HAWQ's stopping rule for this compile's allocation (None for the other methods)."""
    if options.method != "hawq":
        return None
    return settled_rule(g, ga, target, budget=options.budget, weight_bits=options.weight_bits,
                        act_bits=options.act_bits, metric=options.metric,
                        threads=options.threads, runtime=options.runtime, emitted=emitted)


def _check_memory(g: Graph, bits: np.ndarray, target: Target, which: str,
                  suggest: bool = True) -> None:
    """A target with a `memory_fit` capability (an MCU) must hold the weights in flash and the
    largest layer's activations in SRAM; `which` says what assignment `bits` is, for the
    message."""
    check_fit = kinds.memory_fit(target)
    if check_fit is None:
        return
    fit = check_fit(g.layer_table(), bits, target)
    if fit.weight_bytes > fit.flash_bytes:
        over = fit.weight_bytes - fit.flash_bytes
        raise UserError(target.name, f"flash overflows by {over} bytes {which}: the weights "
                        f"take {fit.weight_bytes} bytes, flash holds {fit.flash_bytes}"
                        + (f"; try --budget size={fit.flash_bytes / 1e6:.3g}MB" if suggest
                           else ""))
    if fit.peak_act_bytes > fit.sram_bytes:
        over = fit.peak_act_bytes - fit.sram_bytes
        raise UserError(target.name, f"SRAM overflows by {over} bytes at layer "
                        f"{fit.peak_layer}: its activations take {fit.peak_act_bytes} bytes, "
                        f"the SRAM arena holds {fit.sram_bytes}")


def _emitted_bits(g: Graph, bits: np.ndarray) -> np.ndarray:
    """What the ONNX model carries: the chosen bits on MAC layers; every other layer is a float
    op in ONNX (MCUs and MAC arrays run those at 8 bits, which only their cost models see)."""
    from edgesim.assignment import quantisable

    return np.where(quantisable(g)[:, None], bits, 32)


def read_assignment(g: Graph, path: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Bits [L, 2] from a plan JSON ({layer: bits | [w_bits, a_bits]}) or a report.json (its
    per-layer w_bits / a_bits), and a report.json's per-layer blocks, int [L] (0: none; None
    for a plan JSON)."""
    from edgesim import assignment

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UserError("--assignment", f"cannot read {path}: {e}") from None
    blocks = None
    if isinstance(data, dict) and isinstance(data.get("layers"), list):  # a report.json
        rows = data["layers"]
        named = {x.get("name"): x.get("block") or 0 for x in rows if isinstance(x, dict)}
        blocks = np.array([int(named.get(layer.name, 0)) for layer in g.layers], dtype=np.int64)
        data = {x["name"]: [x["w_bits"], x["a_bits"]] for x in rows
                if (x["w_bits"], x["a_bits"]) != (32, 32)}
    return assignment.resolve(g, data), blocks


def _provenance(g: Graph, target: Target, alloc: Any, options: CompileOptions) -> EmitOptions:
    """metadata_props of the emitted model: target, method, budget, predicted latency."""
    predicted = {layer.name: round(float(alloc.cost.latency_s[i, 0]) * 1e3, 6)
                 for i, layer in enumerate(g.layers)}
    return EmitOptions(metadata=(
        ("edgesim.target", str(getattr(target, "name", target))),
        ("edgesim.method", options.method),
        ("edgesim.budget", "" if options.budget is None else str(options.budget)),
        ("edgesim.predicted_latency_ms", json.dumps(predicted, separators=(",", ":")))))


def _smallest(g: Graph, target: Target, weight_bits: Sequence[int]) -> np.ndarray:
    """The assignment with the least memory: MAC layers at the fewest bits, 8-bit activations."""
    from edgesim.assignment import quantisable

    bits = fixed_bits(g, target)
    bits[quantisable(g)] = (min(weight_bits), 8)
    return bits


def compile_model(model: Any, target: TargetRef, outdir: str | os.PathLike, *, calib: Any = None,
                  calib_random: int | None = None, eval_data: Any = None,
                  options: CompileOptions = CompileOptions()) -> CompileResult:
    """Load, calibrate, analyse, allocate, quantise, emit and report (see `edgesim compile`).

    Args:
        model: ONNX path, `zoo:NAME`, ModelProto or Graph.
        target: shipped target name, YAML path or loaded target.
        outdir: folder for model.<target>.onnx, report.json, report.md and pareto.png.
        calib: calibration .npz (optional `labels` key) or a mapping of arrays.
        calib_random: use this many random samples instead (the report says so).
        eval_data: held-out .npz or mapping for the fidelity check (default: calibration).
        options: the remaining choices (`CompileOptions`).

    Returns:
        A `CompileResult` with the same fields as report.json.
    """
    if calib_random is not None:  # requests no run can meet, refused before any work
        cal.check_sample_count(calib_random)
    check_minimum(options.min_fidelity, options.fidelity_metric is not None)
    with output_folder(outdir, options.force) as folder:  # checked and locked before any work
        plots = plotter(options.plots)  # a plotting process imports matplotlib from now on
        with stopped_on_error(plots):
            return _compile(model, target, folder, calib, calib_random, eval_data, options,
                            plots)


def _compile(model: Any, target: TargetRef, outdir: Path, calib: Any, calib_random: int | None,
             eval_data: Any, options: CompileOptions, plots: Plotter) -> CompileResult:
    """`compile_model` inside its claimed output folder."""
    progress = Progress(total=7, quiet=options.quiet)
    with progress.phase("loading model and target"):  # and the modules the phases run
        from compiler.numba_start import load_registries
        from edgesim.float_pass import FloatPassRecorder, fit_batches, float_pass, onnxruntime_env
        from edgesim.loading import float_graph, resolve_target
        from edgesim.quantize import quantize_model
        from edgesim.sparsity import apply_sparsity, expand_bits
        load_registries()  # before any kernel runs: numba's start without its BLAS probe
        source = built_model(model)
        g = float_graph(source, options.input_shapes, **_load_options(options))  # ONNX -> IR
        if options.verify:
            verify(g)                                                      # --debug
        tgt = resolve_target(target)                                       # YAML -> target
        data, labels = calibration_data(g, calib, calib_random)            # validated samples
        held_out = (data, labels) if eval_data is None else calibration_data(
            g, eval_data, None, "held-out data")
        _check_memory(g, _smallest(g, tgt, options.weight_bits), tgt,
                      f"even with every weight at {min(options.weight_bits)} bits", False)
        alpha = smooth_alpha(tgt, options)
        absmax = outlier_channels(g, data, tgt, options)
        g = smoothed(g, absmax, alpha)                                    # SmoothQuant
    given, given_blocks = ((None, None) if options.assignment is None
                           else read_assignment(g, options.assignment))
    if given is not None:  # a given plan needs no data-driven analysis: proxy sensitivities
        options = replace(options, method="proxy")
    emitted: EmittedBytes = {}  # plans emitted for their size: the settle rule's, allocate's
    with progress.phase(f"sensitivity ({options.method})"):
        ga = (analysis_graph(source, g, data.count, options.method, options.input_shapes,
                             **_load_options(options))
              if options.method in DATA_METHODS else g)
        ga = ga if ga is g else smoothed(ga, absmax, alpha)
        inputs, in_labels = analysis_inputs(data, labels, ga)
        # HAWQ's forward passes over the calibration samples can also give the activation
        # ranges and the fidelity reference, which then need no pass of their own
        gptq = options.rounding == "gptq"
        recorder = (FloatPassRecorder(g, grams=gptq, fit=fit_batches(g, data))
                    if ga is g and options.method == "hawq" else None)
        sens = sensitivity(ga, options.method, inputs, in_labels, options.weight_bits,
                           observe=recorder, analysis_budget_s=options.analysis_budget_s,
                           settled=_settled(g, ga, tgt, options, emitted),
                           forward=(onnxruntime_env(ga) if options.method == "hawq"
                                    else None))  # forward passes in onnxruntime
    del ga, source  # copies of the weights nothing needs any more
    with progress.phase("allocating bits"):
        alloc = (_uniform_allocation(g, tgt, sens, options) if options.method == "uniform"
                 else allocate(g, tgt, sens=sens, budget=options.budget,
                               weight_bits=options.weight_bits, act_bits=options.act_bits,
                               metric=options.metric, threads=options.threads,
                               runtime=options.runtime, pick=options.pick,
                               assignment=given, blocks=_blocks(options.blocks, given_blocks),
                               assignment_blocks=given_blocks,
                               act_errors=_act_errors(g, tgt, sens, data, options),
                               emitted=emitted))
        _check_memory(g, alloc.bits, tgt, "with the chosen bits")
        if options.budget is None:
            alloc = replace(alloc, notes=alloc.notes + _knee_note(g, alloc.bits, tgt))
    with staging(outdir) as stage, stopped_on_error(plots):
        # both figures are drawn (by a plotting process) while the model is quantised
        plots.submit(front_job(g.name, tgt, alloc, stage / "pareto.png"))
        with progress.phase("quantising and emitting"):
            model_path = stage / f"model.{tgt.name}.onnx"
            bits = _emitted_bits(g, alloc.bits)
            acts = bool((bits[:, 1] < 32).any())
            # one pass of the float model over the calibration data (onnxruntime's, unless
            # the analysis's covered it): activation ranges, and the fidelity reference if
            # that data is also the held-out set
            ref = recorder.result(data) if recorder else None
            if ref is None and (acts or gptq or eval_data is None):
                ref = float_pass(g, data, stats=acts or gptq, grams=gptq)
            gq, stats = g, ref
            if options.sparsity:  # thresholds on MAC inputs where the target skips zeros
                gq = apply_sparsity(g, tgt, data.samples, options.sparsity, bits)
                if (acts or gptq) and gq is not g:
                    stats = float_pass(gq, data, stats=True, grams=gptq)
            qopts = _with_dynamic(_with_blocks(_quant_options(options, tgt), g, alloc.blocks),
                                  gq, expand_bits(g, gq, bits), stats, tgt, options)
            alloc = _priced(alloc, g, qopts, tgt, options)
            # layers.png as the report will show it: drawn before the dynamic convs were
            # priced, it was drawn twice (silero, ppocr)
            early = layers_job(g.name, tgt.name, planned_rows(g, alloc), stage / "layers.png")
            plots.submit(early)
            quant = quantize_model(gq, expand_bits(g, gq, bits), calib=data,  # not loaded again
                                   out=model_path, stats=stats.stats if stats else None,
                                   fit_stats=stats.fit_stats if stats else None,
                                   held_outputs=stats.held_outputs if stats else None,
                                   options=qopts,
                                   emit_options=_provenance(g, tgt, alloc, options),
                                   kernel_check=options.kernel_check,
                                   range_budget_s=range_budget(options))
        with progress.phase("measuring fidelity in onnxruntime"):
            if eval_data is not None:
                ref = float_pass(g, held_out[0], stats=False)
            assert ref is not None  # the float pass above ran (no recorder, or eval data)
            fidelity = measure_fidelity(gq, model_path, ref.outputs, *held_out,
                                        options.fidelity_metric)
            check_fidelity(fidelity, options.min_fidelity)
        # a process, not a helper thread: drawing on a thread during quantise+emit raised
        # resnet18's compile peak 739 -> 818-877 MiB; the process's memory is its own
        with progress.phase("drawing the report's plots"):  # and waiting for them
            result = replace(_reported(g, gq, tgt, alloc, quant, data, bits, options,
                                       (stage, outdir), progress.timings, qopts.dynamic_layers),
                             fidelity=fidelity)
            final = layers_job(g.name, tgt.name, result.layers, stage / "layers.png")
            if final != early:  # a later step re-costed the layers (sparsity, kernel check)
                plots.submit(final)
            plots.finish()
        with progress.phase("writing reports"):  # timings: every phase but this one (ms)
            result = replace(result, timings_s=dict(progress.timings))
            write_reports(result, alloc, stage)
        publish(stage, outdir)
    return replace(result, files={k: str(outdir / Path(v).name) for k, v in result.files.items()})


# The range search's bound as a share of the analysis budget, when only that is given: the
# two data-driven searches then take at most twice the budget together (assumed split; the
# default bound, 5 CPU-s, is what the search had as half of the old 10 s analysis default:
# ddddocr's CRNN and FastMRZ already stop at it, and a shorter search picks worse ranges).
RANGE_SHARE = 1.0


def range_budget(options: CompileOptions) -> float | None:
    """The end-to-end range search's time bound in seconds (None: unbounded)."""
    if options.range_budget_s is not None:
        return options.range_budget_s
    budget = options.analysis_budget_s
    return None if budget is None else RANGE_SHARE * budget


ACT_TERM_SAMPLES = 16  # calibration samples that measure each choice's own output error


def _act_errors(g: Graph, tgt: Target, sens: Any, data: cal.CalibrationData,
                options: CompileOptions) -> np.ndarray | None:
    """Each layer's measured output error per candidate when `--act-bits` offers both
    quantised and float activations (activation handling is then a choice); else None."""
    import itertools

    from edgesim.allocation import choice_errors
    from edgesim.float_pass import float_pass

    acts = set(options.act_bits or ())
    if not (acts & {4, 8} and 32 in acts) or options.assignment is not None:
        return None
    stats = float_pass(g, data, stats=True).stats
    limit = max(1, ACT_TERM_SAMPLES // cal.batch_size(g))
    return choice_errors(g, tgt, sens, stats, itertools.islice(cal.batches(g, data), limit),
                         weight_bits=options.weight_bits, act_bits=options.act_bits,
                         options=_quant_options(options, tgt))


def _reported(g: Graph, gq: Graph, tgt: Target, alloc: Any, quant: Any,
              data: cal.CalibrationData, bits: np.ndarray, options: CompileOptions,
              folders: tuple[Path, Path], timings: dict[str, float],
              dynamic: frozenset[str]) -> CompileResult:
    """The report without its fidelity (`folders`: staging, output; `dynamic`: the convs
    emitted in the dynamic row, which `alloc` already costs as such)."""
    _, outdir = folders
    from edgesim.alloc_dynamic import with_gap_note
    from edgesim.sparsity import sparsity_column, with_sparse_costs

    result = build_result(replace(g, notes=gq.notes), tgt, alloc, quant, {},
                          _baseline(g, tgt, options), data, options, outdir, timings)
    result = replace(result, layers=sparsity_column(result.layers, gq))
    result = with_sparse_costs(result, g, gq, data.samples, bits, tgt)
    result = with_gap_note(result, dynamic)
    if options.kernel_check == "report":  # cost what onnxruntime runs, not the plan
        from edgesim.kernel_check import with_running_costs

        result = with_running_costs(result, g, bits, tgt, threads=options.threads,
                                    runtime=options.runtime)
    return result


def _knee_note(g: Graph, bits: np.ndarray, target: Target) -> tuple[str, ...]:
    """Why the knee (no budget) barely compressed: fewer bits buy the target little."""
    from edgesim.assignment import has_weights, quantisable

    mac = quantisable(g) & has_weights(g)
    w = g.layer_table().w_elems[mac].astype(np.float64)
    avg = float((np.minimum(bits[mac, 0], 32) * w).sum() / max(w.sum(), 1.0))
    if avg <= 16:
        return ()
    return (f"the knee keeps {avg:.1f} weight bits on average: on {target.name} fewer bits "
            "buy this model little of the metric (its layers are bound by overheads or "
            "activations, not weights); pass --budget (e.g. bits=4 or size=...) to compress "
            "further",)


def _metric_total(alloc: Any, metric: str) -> float:
    """The chosen assignment's predicted total of a budget metric (base units)."""
    c = alloc.cost
    return float({"size": lambda: c.weight_bytes.sum(), "latency": lambda: c.latency_s.sum(),
                  "energy": lambda: (c.energy_pj_compute + c.energy_pj_onchip
                                     + c.energy_pj_dram).sum()}[metric]())


def _uniform_allocation(g: Graph, target: Target, sens: Any, options: CompileOptions) -> Any:
    """`--method uniform`: every MAC layer at one weight width -- the widest candidate whose
    uniform assignment meets the budget (8 bits, or the widest below 8, without one). A bits
    budget of w with only w to choose from forces every MAC layer to w exactly."""
    budget = options.budget
    limit = 8 if budget is None else (budget.value if budget.metric == "bits" else math.inf)
    widths = sorted((w for w in options.weight_bits if w <= limit), reverse=True)
    for w in widths:
        alloc = allocate(g, target, sens=sens, budget=Budget("bits", w), weight_bits=(w,),
                         act_bits=options.act_bits, threads=options.threads,
                         runtime=options.runtime, blocks=options.blocks)
        if budget is None or budget.metric == "bits" or \
                _metric_total(alloc, budget.metric) <= budget.value:
            note = f"uniform: every MAC layer at {w} weight bits"
            return replace(alloc, notes=(note, *alloc.notes))
    raise UserError("--budget", f"no uniform width of {list(options.weight_bits)} meets "
                    f"{budget}; try a larger budget or --method hawq")


def _baseline(g: Graph, target: Target, options: CompileOptions) -> Any:
    """Float32 totals on the target (layers it cannot run in float take their fallbacks)."""
    from edgesim.simulation import runnable

    fp32 = np.full((len(g.layers), 2), 32, dtype=np.int64)
    return totals(runnable(g, fp32, target, options.threads, options.runtime)[1])


def _quant_options(options: CompileOptions, target: Target) -> QuantOptions:
    """The quantize pass's options: the format policy's target capabilities (int8
    MatMulNBits where MLAS has it), the user's activation range method and weight rounding."""
    from compiler.passes.calibrate import METHODS

    if options.calib_method not in (None, *METHODS):
        raise UserError("--calib-method", f"{options.calib_method!r} is not one of {METHODS}")
    if options.rounding not in ("rtn", "gptq"):
        raise UserError("--rounding", f"must be rtn or gptq, got {options.rounding!r}")
    return QuantOptions(act_method=options.calib_method or QuantOptions.act_method,
                        rounding=options.rounding, int8_dot=kinds.int8_dot(target),
                        bias_correction_bits=QuantOptions.bias_correction_bits
                        if options.bias_correction else 0)


def _with_blocks(quant: QuantOptions, g: Graph, blocks: np.ndarray | None) -> QuantOptions:
    """`quant` with the allocator's block per layer (`AllocationResult.blocks`)."""
    if blocks is None:
        return quant
    return replace(quant, layer_blocks={layer.name: int(b) for layer, b in zip(g.layers, blocks)
                                        if b > 0})


def _with_dynamic(quant: QuantOptions, g: Graph, bits: np.ndarray, stats: Any, tgt: Target,
                  options: CompileOptions) -> QuantOptions:
    """`quant` with the W8A8 convs whose static output requantisation costs them most run
    at run-time activation ranges, where the plan's latency can afford it
    (`edgesim.alloc_dynamic`)."""
    from compiler.passes.quantize import policy
    from edgesim.alloc_dynamic import affordable, dynamic_convs

    calib = stats.stats if stats is not None else None
    names = affordable(g, dynamic_convs(g, bits, calib, policy(quant)), bits, tgt,
                       threads=options.threads, runtime=options.runtime)
    return replace(quant, dynamic_layers=names)


def _priced(alloc: Any, g: Graph, quant: QuantOptions, target: Target,
            options: CompileOptions) -> Any:
    """`alloc` with the convs emitted dynamic costed as such (`alloc_dynamic.priced_alloc`)."""
    from edgesim.alloc_dynamic import priced_alloc

    return priced_alloc(alloc, g, quant.dynamic_layers, target, threads=options.threads,
                        runtime=options.runtime)


def _blocks(blocks: tuple[int, ...] | None, given: np.ndarray | None
            ) -> tuple[int, ...] | None:
    """The block choices: the user's, else those a given plan names (None: neither)."""
    named = () if given is None else tuple(sorted({int(b) for b in given if b > 0}))
    return blocks or named or None


def _load_options(options: CompileOptions) -> dict[str, Any]:
    """What `load_graph` takes besides the shapes: pinned input values, batch axes."""
    return {"input_values": options.input_values, "batch_axes": options.batch_axes}
