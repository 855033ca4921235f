"""`compile_model`: ONNX model + target -> packed mixed-precision model, reports and plot.

The order of the whole flow, one line per step, is in `compile_model`; `CompileOptions` and
what it becomes for each pass are in `edgesim.compile_options`, the plan's checks and
alternatives (memory fit, uniform, a given plan, the knee's note) in `edgesim.compile_plan`.
Outputs are staged inside OUTDIR and renamed into place at the end (`edgesim.output`): a
failed run changes nothing, and no file edgesim did not write is ever deleted.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from compiler.emit import EmitOptions
from compiler.ir import Graph
from compiler.verify import verify
from edgesim import calibration as cal
from edgesim.allocation import DATA_METHODS, allocate, sensitivity
from edgesim.analysis_inputs import (
    analysis_graph,
    analysis_inputs,
    built_model,
    calibration_data,
)
from edgesim.compile_options import (
    CompileOptions,
    block_choices,
    load_options,
    quant_options,
    range_budget,
    with_blocks,
)
from edgesim.compile_plan import (
    act_errors,
    check_memory,
    emitted_bits,
    knee_note,
    priced,
    read_assignment,
    settled,
    smallest,
    uniform_allocation,
    with_dynamic,
)
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
from edgesim.simulation import totals
from edgesim.smoothing import outlier_channels, smooth_alpha, smoothed
from edgesim.tables import EmittedBytes

if TYPE_CHECKING:
    from hwmodels.target import Target, TargetRef


DEFAULT_OPTIONS = CompileOptions()  # frozen: one shared default


def _provenance(g: Graph, target: Target, alloc: Any, options: CompileOptions) -> EmitOptions:
    """metadata_props of the emitted model: target, method, budget, predicted latency."""
    predicted = {layer.name: round(float(alloc.cost.latency_s[i, 0]) * 1e3, 6)
                 for i, layer in enumerate(g.layers)}
    return EmitOptions(metadata=(
        ("edgesim.target", str(getattr(target, "name", target))),
        ("edgesim.method", options.method),
        ("edgesim.budget", "" if options.budget is None else str(options.budget)),
        ("edgesim.predicted_latency_ms", json.dumps(predicted, separators=(",", ":")))))


def compile_model(model: Any, target: TargetRef, outdir: str | os.PathLike, *, calib: Any = None,
                  calib_random: int | None = None, eval_data: Any = None,
                  options: CompileOptions = DEFAULT_OPTIONS) -> CompileResult:
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
        g = float_graph(source, options.input_shapes, **load_options(options))  # ONNX -> IR
        if options.verify:
            verify(g)                                                      # --debug
        tgt = resolve_target(target)                                       # YAML -> target
        data, labels = calibration_data(g, calib, calib_random)            # validated samples
        held_out = (data, labels) if eval_data is None else calibration_data(
            g, eval_data, None, "held-out data")
        check_memory(g, smallest(g, tgt, options.weight_bits), tgt,
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
                             **load_options(options))
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
                           settled=settled(g, ga, tgt, options, emitted),
                           forward=(onnxruntime_env(ga) if options.method == "hawq"
                                    else None))  # forward passes in onnxruntime
    del ga, source  # copies of the weights nothing needs any more
    with progress.phase("allocating bits"):
        alloc = (uniform_allocation(g, tgt, sens, options) if options.method == "uniform"
                 else allocate(g, tgt, sens=sens, budget=options.budget,
                               weight_bits=options.weight_bits, act_bits=options.act_bits,
                               metric=options.metric, threads=options.threads,
                               runtime=options.runtime, pick=options.pick,
                               assignment=given, blocks=block_choices(options.blocks, given_blocks),
                               assignment_blocks=given_blocks,
                               act_errors=act_errors(g, tgt, sens, data, options),
                               emitted=emitted))
        check_memory(g, alloc.bits, tgt, "with the chosen bits")
        if options.budget is None:
            alloc = replace(alloc, notes=alloc.notes + knee_note(g, alloc.bits, tgt))
    with staging(outdir) as stage, stopped_on_error(plots):
        # both figures are drawn (by a plotting process) while the model is quantised
        plots.submit(front_job(g.name, tgt, alloc, stage / "pareto.png"))
        with progress.phase("quantising and emitting"):
            model_path = stage / f"model.{tgt.name}.onnx"
            bits = emitted_bits(g, alloc.bits)
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
            qopts = with_dynamic(with_blocks(quant_options(options, tgt), g, alloc.blocks),
                                  gq, expand_bits(g, gq, bits), stats, tgt, options)
            alloc = priced(alloc, g, qopts, tgt, options)
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


def _reported(g: Graph, gq: Graph, tgt: Target, alloc: Any, quant: Any,
              data: cal.CalibrationData, bits: np.ndarray, options: CompileOptions,
              folders: tuple[Path, Path], timings: dict[str, float],
              dynamic: frozenset[str]) -> CompileResult:
    """The report without its fidelity (`folders`: staging, output; `dynamic`: the convs
    emitted in the dynamic row, which `alloc` already costs as such)."""
    _, outdir = folders
    from edgesim.alloc_dynamic import with_gap_note
    from edgesim.sparsity import with_sparse_costs
    from edgesim.sparsity_notes import sparsity_column

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


def _baseline(g: Graph, target: Target, options: CompileOptions) -> Any:
    """Float32 totals on the target (layers it cannot run in float take their fallbacks)."""
    from edgesim.simulation import runnable

    fp32 = np.full((len(g.layers), 2), 32, dtype=np.int64)
    return totals(runnable(g, fp32, target, options.threads, options.runtime)[1])
