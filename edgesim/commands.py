"""The built-in subcommands of `edgesim`: for each, `cmd_NAME(args) -> exit code` (a thin
layer over one `edgesim.api` function, printing its result or its JSON) and `add_NAME(sub)`,
which registers its parser through `edgesim.cli.add_command`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from edgesim.budget import DEFAULT_ANALYSIS_BUDGET_S, format_bytes
from edgesim.cli import (
    GLOBAL,
    add_command,
    collection_paused,
    parse_input_shapes,
    positive_int,
)
from edgesim.errors import UserError

if TYPE_CHECKING:
    from edgesim import api
    from edgesim.report_plots import Plotter


def parse_named(items: Sequence[str] | None, flag: str, example: str,
                convert: Callable[[str], Any]) -> dict[str, Any]:
    """Parse repeated `--flag name=value` flags, `convert` turning each value text into a
    value (ValueError: a bad value)."""
    out: dict[str, Any] = {}
    for item in items or ():
        name, sep, text = item.partition("=")
        try:
            value = convert(text) if sep and name else None
        except ValueError:
            value = None
        if value is None:
            raise UserError(flag, f"expected {example}, got {item!r}")
        out[name] = value
    return out


def _number(text: str) -> float | int:
    return int(text) if text.lstrip("-").isdigit() else float(text)


def _axis(text: str) -> int | str:
    return "none" if text.lower() == "none" else int(text)


def _fmt_count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def _print_inspection(r: api.Inspection) -> None:
    print(f"model {r.model}: {len(r.layers)} layers")
    for note in r.notes:
        print(f"note: {note}")
    print(f"{'layer':40s} {'kind':16s} {'output':22s} {'MACs':>9s} {'params':>9s} "
          f"{'in B':>9s} {'out B':>9s}")
    for x in r.layers:
        kind = f"{x.kind}:{x.detail}" if x.detail else x.kind
        fmt = f" {x.format} w{x.w_bits}a{x.a_bits or 32}" if x.format else ""
        print(f"{x.name[:40]:40s} {kind[:16]:16s} {str(x.out_shape)[:22]:22s} "
              f"{_fmt_count(x.macs):>9s} {_fmt_count(x.params):>9s} "
              f"{_fmt_count(x.in_bytes):>9s} {_fmt_count(x.out_bytes):>9s}{fmt}")
    print(f"total: {_fmt_count(r.total_macs)} MACs, {_fmt_count(r.total_params)} params, "
          f"{format_bytes(r.weight_bytes)} of weights")


def cmd_inspect(args: argparse.Namespace) -> int:
    from edgesim import api  # imported by the command that runs, not the parser

    r = api.inspect(args.model, parse_input_shapes(args.input_shape))
    if args.json:
        print(json.dumps(r.to_dict()))
    else:
        _print_inspection(r)
    return 0


def _print_simulation(s) -> None:  # noqa: ANN001 - edgesim.simulation.Simulation
    print(f"{s.model} on {s.target} (runtime {s.runtime}, threads {s.threads or 'all'})")
    print(f"{'layer':36s} {'kind':14s} {'bits':>6s} {'MACs':>8s} {'cycles':>9s} {'ms':>8s} "
          f"{'uJ':>8s} {'bound':>8s} {'util':>5s}")
    for r in s.layers:
        bits = "fp32" if (r.w_bits, r.a_bits) == (32, 32) else f"{r.w_bits}/{r.a_bits}"
        print(f"{r.name[:36]:36s} {r.kind[:14]:14s} {bits:>6s} {_fmt_count(r.macs):>8s} "
              f"{_fmt_count(r.cycles):>9s} {r.latency_ms:8.3f} {r.energy_uj:8.2f} "
              f"{r.bound:>8s} {r.util:5.2f}")
    t, b = s.total, s.fp32
    for note in s.notes:
        print(note if note.startswith("WARNING") else f"note: {note}")
    print(f"total: latency {t.latency_ms:.3f} ms (fp32 {b.latency_ms:.3f}), energy "
          f"{t.energy_mj:.4f} mJ (fp32 {b.energy_mj:.4f}), weights {format_bytes(t.weight_bytes)} "
          f"(fp32 {format_bytes(b.weight_bytes)}), peak activations "
          f"{format_bytes(t.peak_act_bytes)}")


def cmd_simulate(args: argparse.Namespace) -> int:
    from edgesim import api  # imported by the command that runs, not the parser

    s = api.simulate(args.model, args.target, bits=args.bits, threads=args.threads,
                     runtime=args.runtime, input_shapes=parse_input_shapes(args.input_shape))
    if args.json:
        print(json.dumps(s.to_dict()))
    else:
        _print_simulation(s)
    return 0


def cmd_targets(args: argparse.Namespace) -> int:
    from edgesim import api  # imported by the command that runs, not the parser

    rows = api.targets()
    if args.json:
        print(json.dumps([r.__dict__ for r in rows]))
        return 0
    for r in rows:
        print(f"{r.name:20s} {r.kind:9s} {r.description}  ({r.file})")
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from edgesim import api  # imported by the command that runs, not the parser
    from edgesim.output import output_file
    from hwmodels.probe import busy_of

    target = api.probe_target(output_file(args.output))
    if busy_of(target):  # one line on stderr; the YAML's sources keep the note
        print(f"edgesim: warning: {busy_of(target)}", file=sys.stderr)
    if args.json:
        print(json.dumps({"file": str(args.output), "cores": target.cores,
                          "clock_ghz": target.clock_ghz, "simd_bits": target.simd_bits,
                          "isa": list(target.isa)}))
        return 0
    print(f"wrote {args.output}: {target.cores} cores, {target.clock_ghz:.2f} GHz, "
          f"{target.simd_bits}-bit SIMD ({', '.join(target.isa)})")
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from compiler.numba_start import load_registries
    from edgesim import api  # imported by the command that runs, not the parser
    from edgesim.output import output_file

    with collection_paused():  # the quantizer's modules and numba's registries
        import edgesim.quantize  # noqa: F401
        load_registries()

    r = api.quantize(args.model, args.bits, output_file(args.output), calib=args.calib,
                     calib_random=args.calib_random,
                     input_shapes=parse_input_shapes(args.input_shape),
                     accuracy_level=args.accuracy_level, kernel_check=args.kernel_check)
    if args.json:
        print(json.dumps(r.to_dict()))
        return 0
    if r.calibration:
        print(f"calibration: {r.calibration}" + (" (random samples)" if r.calibration_random
                                                  else ""))
    for x in r.layers:
        bits = "float" if x.w_bits is None else f"w{x.w_bits}" + (f"a{x.a_bits}" if x.a_bits
                                                                    else "")
        ran = f" [{x.planned_kernel} / {x.onnxruntime_kernel or '(fused)'}]" \
            if x.planned_kernel else ""
        print(f"{x.name[:40]:40s} {x.kind:12s} {x.format:12s} {bits:8s} {x.reason}{ran}")
    print(f"wrote {r.out}: {format_bytes(r.file_bytes)} on disk, expected "
          f"{format_bytes(r.expected_bytes)} (bits x params / 8 + scales and zero points)")
    return 0


def _print_compile(r) -> None:  # noqa: ANN001 - edgesim.report.CompileResult
    from edgesim.report import markdown

    summary = markdown(r).split("\n\n| layer")[0]
    print(summary.replace("**", ""))
    print(f"wrote {', '.join(r.files.values())}")


def _bits_list(text: str | None, flag: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(sorted({int(b) for b in text.split(",")}))
    except ValueError:
        raise UserError(flag, f"expected comma-separated bit widths, got {text!r}") from None


def _sparsity_levels(text: str | None) -> tuple[float, ...]:
    if not text:  # edgesim.sparsity (~0.3 s of imports) loads inside the compile's phases
        return ()
    from edgesim.sparsity import parse_levels

    return parse_levels(text)


def cmd_compile(args: argparse.Namespace) -> int:
    from edgesim.report_plots import plotter, stopped_on_error

    # the plotting process imports matplotlib while this one imports the pipeline
    with stopped_on_error(plotter()) as plots:
        with collection_paused():  # the pipeline and the modules its load phase imports
            import edgesim.float_pass
            import edgesim.pipeline
            import edgesim.quantize
            import edgesim.sparsity  # noqa: F401
        return _compile(args, plots)


def _compile(args: argparse.Namespace, plots: Plotter) -> int:
    from edgesim import api  # imported by the command that runs, not the parser
    from edgesim.budget import parse_analysis_budget

    model, calib, held_out = args.model, args.calib, args.eval
    if args.example:
        model, calib, held_out = api.example_inputs()
    if model is None:
        raise UserError("compile", "give a model (or --example)")
    weight_bits = _bits_list(args.weight_bits, "--weight-bits")
    r = api.compile(  # the one place a CompileOptions is built
        model, args.target, outdir=args.output, calib=calib, calib_random=args.calib_random,
        eval_data=held_out, method=args.method, budget=args.budget,
        **({"weight_bits": weight_bits} if weight_bits else {}),
        act_bits=_bits_list(args.act_bits, "--act-bits"), threads=args.threads,
        blocks=_bits_list(args.blocks, "--blocks"),
        runtime=args.runtime, input_shapes=parse_input_shapes(args.input_shape),
        input_values=parse_named(args.input_value, "--input-value", "name=16000", _number),
        batch_axes={k: None if v == "none" else v for k, v in parse_named(
            args.batch_axis, "--batch-axis", "name=1 (or name=none)", _axis).items()},
        calib_method=args.calib_method, smooth_quant=args.smooth_quant,
        rounding=args.rounding, bias_correction=not args.no_bias_correction,
        sparsity=_sparsity_levels(args.sparsity),
        kernel_check=args.kernel_check, pick=args.pick, assignment=args.assignment,
        quiet=args.quiet, command=" ".join(["edgesim", *sys.argv[1:]]), force=args.force,
        verify=args.debug, min_fidelity=args.min_fidelity,
        analysis_budget_s=parse_analysis_budget(args.analysis_budget), plots=plots)
    if args.json:
        print(json.dumps(r.to_dict(), default=str))
    else:
        _print_compile(r)
    if args.verbose:  # where the time went, on stderr
        print("timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in r.timings_s.items()),
              file=sys.stderr)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from edgesim import api  # imported by the command that runs, not the parser

    r = api.evaluate_model(args.model, args.data, threads=args.threads, runs=args.runs)
    if args.json:
        print(json.dumps(r))
        return 0
    for key, value in r.items():
        print(f"{key}: {value}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from edgesim.sweep import sweep

    scheduler = args.scheduler
    if scheduler is None and args.workers is None and args.dask_local is None:
        scheduler = dask_scheduler_address()
    s = sweep(args.space, args.output, workers=args.workers, scheduler=scheduler,
              dask_local=args.dask_local, batch_size=args.batch_size, progress=not args.quiet)
    if args.json:
        print(json.dumps(dataclasses.asdict(s)))
        return 0
    print(f"{s.path}: {s.computed} points computed ({s.points_per_s:,.0f}/s), "
          f"{s.skipped} already stored, {s.errors} recorded with an error")
    return 0


def dask_scheduler_address() -> str | None:
    """The scheduler Dask itself is configured with: $DASK_SCHEDULER_ADDRESS, else the
    `scheduler-address` key of Dask's config files (when dask is installed)."""
    if os.environ.get("DASK_SCHEDULER_ADDRESS"):
        return os.environ["DASK_SCHEDULER_ADDRESS"]
    try:
        import dask.config
    except ImportError:
        return None
    return dask.config.get("scheduler-address", None) or None


def _pareto_png(args: argparse.Namespace, objectives: list[str], png: str) -> tuple[Any, list]:
    """`pareto -o plot.png`: the front plot under that name and nothing else (the CSV and
    summary plot are made in a scratch folder beside it and dropped)."""
    import tempfile

    from edgesim.pareto import pareto

    folder = os.path.dirname(os.path.abspath(png))
    if not os.path.isdir(folder):
        raise UserError(png, f"folder {folder} does not exist")
    with tempfile.TemporaryDirectory(prefix=".edgesim-pareto-", dir=folder) as scratch:
        r = pareto(args.results, objectives or ["area_proxy", "latency_s"], output=scratch,
                   color=args.color, plots=True)
        os.replace(os.path.join(scratch, "front.png"), png)
    return r, [png]


def cmd_pareto(args: argparse.Namespace) -> int:
    from edgesim.pareto import pareto

    objectives = [o for o in (args.objectives or "").split(",") if o.strip()]
    if args.x or args.y:
        if not (args.x and args.y):
            raise UserError("--x/--y", "give both axes")
        objectives = [args.x, args.y, *[o for o in objectives if o not in (args.x, args.y)]]
    png = args.output if args.output and args.output.endswith(".png") else None
    if png:
        r, files = _pareto_png(args, objectives, png)
    else:
        r = pareto(args.results, objectives or ["area_proxy", "latency_s"], output=args.output,
                   color=args.color, plots=not args.no_plots)
        files = [str(f) for f in r.files]
    if args.json:
        print(json.dumps({**r.to_dict(), "files": files}))
        return 0
    print(f"{len(r.front)} non-dominated of {r.points} points over {', '.join(r.objectives)}"
          f" ({r.dropped} records with errors left out)")
    for f in files:
        print(f"wrote {f}")
    return 0


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="ONNX file or zoo:NAME")
    p.add_argument("--input-shape", action="append", metavar="NAME=1x3x224x224",
                   help="static shape for an input with dynamic dims (repeatable)")


def _add_kernel_check(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--kernel-check", default=default, choices=("fail", "report", "off"),
                   help="compare each layer's kernel in onnxruntime's optimised graph with "
                        f"the plan: fail on a mismatch, report it, or skip (default {default})")


def add_inspect(sub: argparse._SubParsersAction) -> None:
    _add_model_args(add_command(sub, "inspect", "print the lowered layer table and totals",
                                cmd_inspect))


def add_simulate(sub: argparse._SubParsersAction) -> None:
    sim = add_command(sub, "simulate", "predict latency, energy and memory on a target",
                      cmd_simulate)
    _add_model_args(sim)
    sim.add_argument("--target", required=True, help="shipped target name or YAML file")
    sim.add_argument("--threads", type=positive_int, help="CPU threads (default: all cores)")
    sim.add_argument("--runtime", default="onnxruntime",
                     help="onnxruntime, ncnn, xnnpack or ideal")
    sim.add_argument("--bits", default=None,
                     help="fp32, 8 (W8A8), 4 (W4 weight-only), or an assignment JSON file "
                          "(default: a quantized model's own plan, else fp32)")


def _alpha(text: str) -> float | str:
    """--smooth-quant's value: auto, off, or a number (checked by the pipeline)."""
    return text if text in ("auto", "off") else float(text)


def add_compile(sub: argparse._SubParsersAction) -> None:
    cp = add_command(sub, "compile", "allocate bits for a target and emit a packed model",
                     cmd_compile)
    cp.add_argument("model", nargs="?", help="ONNX file or zoo:NAME")
    cp.add_argument("--example", action="store_true",
                    help="the shipped example: the trained digits CNN with its data")
    cp.add_argument("--target", default="rpi5", help="shipped target name or YAML file")
    calib = cp.add_mutually_exclusive_group()
    calib.add_argument("--calib", help="calibration .npz keyed by input name (+ labels); "
                       "for a KV-cache decoder, a text file read as bytes")
    calib.add_argument("--calib-random", type=int, metavar="N", help="N random samples")
    cp.add_argument("--eval", help="held-out .npz for the fidelity check (default: calib)")
    cp.add_argument("--method", default="hawq", choices=("hawq", "lrp", "uniform", "proxy"))
    cp.add_argument("--budget", help="size=2MB | latency=15ms | energy=5mJ | bits=4.5 "
                    "(default: the knee of the Pareto front)")
    cp.add_argument("--weight-bits", help="candidate weight bits, e.g. 2,3,4,6,8")
    cp.add_argument("--analysis-budget", metavar="60s",
                    help="time bound of the HAWQ / LRP analysis (default: "
                    f"{DEFAULT_ANALYSIS_BUDGET_S:g}s; none or 0: until 5%% precision / every "
                    "calibration sample); half of it also bounds the activation range "
                    "search")
    cp.add_argument("--act-bits", help="candidate activation bits, e.g. 8,32")
    cp.add_argument("--blocks", help="candidate block sizes of MatMulNBits / blocked "
                    "DequantizeLinear layers, chosen per layer, e.g. 32,64,128 (default: 32)")
    cp.add_argument("--threads", type=positive_int, help="CPU threads (default: all cores)")
    cp.add_argument("--runtime", default="onnxruntime", choices=("onnxruntime", "ideal"))
    cp.add_argument("--input-shape", action="append", metavar="NAME=1x3x224x224")
    cp.add_argument("--sparsity", help="candidate activation sparsities per MAC input, e.g. "
                    "0,0.25,0.5 (zero-skipping MAC arrays only)")
    cp.add_argument("--input-value", action="append", metavar="NAME=VALUE",
                    help="pin an input to a constant (If nodes on it are inlined), e.g. sr=16000")
    cp.add_argument("--calib-method", choices=("auto", "minmax", "percentile", "mse", "entropy"),
                    help="activation ranges from calibration (default auto: per tensor the "
                    "method with the least measured output error)")
    cp.add_argument("--rounding", default="rtn", choices=("rtn", "gptq"),
                    help="weight rounding: nearest, or GPTQ (second order, calibration data)")
    cp.add_argument("--no-bias-correction", action="store_true",
                    help="keep the mean output shift of <= 4-bit weight-only layers (by "
                    "default removed from their biases on calibration data)")
    cp.add_argument("--smooth-quant", type=_alpha, default="auto", metavar="ALPHA",
                    help="SmoothQuant: migrate activation outliers into weights at strength "
                    "ALPHA (e.g. 0.5), off, or auto (default: 0.5 where a norm's output has "
                    "outlier channels and 8-bit activations are among the choices)")
    cp.add_argument("--batch-axis", action="append", metavar="NAME=AXIS",
                    help="axis of an input that holds samples, e.g. state=1 (or state=none)")
    _add_kernel_check(cp, "fail")
    cp.add_argument("--pick", type=int, metavar="I",
                    help="emit point I of the front (0 = cheapest, -1 = most accurate) instead "
                         "of the knee or the budget's optimum")
    cp.add_argument("--assignment", metavar="PLAN.json",
                    help="re-emit a given plan (a {layer: bits} JSON or a report.json) "
                         "without recomputing sensitivities")
    cp.add_argument("-o", "--output", default="edgesim-out",
                    help="output folder: new, empty, or made by edgesim")
    cp.add_argument("--min-fidelity", type=float, metavar="AGREEMENT",
                    help="fail (exit 2, nothing written) when the emitted model's top-1 "
                    "agreement with fp32 (cosine for non-classifiers) is below this, e.g. 0.9")
    cp.add_argument("--force", action="store_true", help="also write into a non-empty folder "
                    "edgesim did not make (edgesim never deletes files it did not write)")


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    ev = add_command(sub, "evaluate", "run a model in onnxruntime: agreement and latency",
                     cmd_evaluate)
    ev.add_argument("model", help="ONNX file")
    ev.add_argument("--data", required=True, help=".npz keyed by input name (+ labels)")
    ev.add_argument("--threads", type=positive_int, help="onnxruntime intra-op threads")
    ev.add_argument("--runs", type=int, default=30, help="timed runs for the latency")


def add_quantize(sub: argparse._SubParsersAction) -> None:
    qz = add_command(sub, "quantize", "quantise with a fixed bit assignment and emit ONNX",
                     cmd_quantize)
    _add_model_args(qz)
    qz.add_argument("--bits", required=True,
                    help="8 (W8A8), 4 (W4 weight-only), fp32, or an assignment JSON file")
    calib = qz.add_mutually_exclusive_group()
    calib.add_argument("--calib", help="calibration .npz keyed by input name (+ labels)")
    calib.add_argument("--calib-random", type=int, metavar="N",
                       help="calibrate on N random samples")
    qz.add_argument("-o", "--output", required=True, help="ONNX file to write")
    _add_kernel_check(qz, "report")
    qz.add_argument("--accuracy-level", type=int, choices=(0, 1, 2, 3, 4),
                    help="force MatMulNBits accuracy_level (default: the plan's; 4 = int8 "
                         "activations on CPUs with int8 dot products)")


def add_sweep(sub: argparse._SubParsersAction) -> None:
    sw = add_command(sub, "sweep", "design-space exploration of a space YAML", cmd_sweep)
    sw.add_argument("space", help="space YAML, or a shipped space by name (macarray, "
                    "cpu-whatif)")
    sw.add_argument("-o", "--output", required=True,
                    help="results folder (re-running the same command resumes it)")
    where = sw.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, help="local process-pool workers (default: all "
                       "cores if they pay for their start, else this process)")
    where.add_argument("--scheduler", metavar="tcp://HOST:8786", help="a Dask scheduler "
                       "(default: $DASK_SCHEDULER_ADDRESS or Dask's config, if set)")
    where.add_argument("--dask-local", type=int, metavar="N",
                       help="start a Dask LocalCluster of N workers on 127.0.0.1")
    sw.add_argument("--batch-size", type=int, help="points per task (default: ~8 per worker)")


def add_pareto(sub: argparse._SubParsersAction) -> None:
    pa = add_command(sub, "pareto", "non-dominated points of sweep or compile results",
                     cmd_pareto)
    pa.add_argument("results", help="sweep folder, .jsonl, .json (incl. report.json) or .csv")
    pa.add_argument("--x", help="column on the x axis (first objective)")
    pa.add_argument("--y", help="column on the y axis (second objective)")
    pa.add_argument("--objectives", help="comma-separated columns, each optionally :min/:max "
                    "(default: area_proxy,latency_s)")
    pa.add_argument("--color", help="column colouring the front plot")
    pa.add_argument("-o", "--output", help="plot.png, or a folder for front.csv/front.png/"
                    "summary.png (default: beside the results)")
    pa.add_argument("--no-plots", action="store_true", help="write front.csv only")


def cmd_validate(args: argparse.Namespace) -> int:
    # edgesim.validate loads with the command, not the parser (simulate never imports it)
    from edgesim.validate import format_table, validate

    v = validate(args.model, args.target, bits=args.bits, threads=args.threads, runs=args.runs,
                 stat=args.stat, input_shapes=parse_input_shapes(args.input_shape))
    if v.warning:  # one line on stderr: stdout stays the table or the JSON
        print(f"edgesim: warning: {v.warning}", file=sys.stderr)
    if args.json and v.noise is not None and v.noise.disturbed:  # the table says it itself
        print(f"edgesim: warning: {v.noise.message()}", file=sys.stderr)
    print(json.dumps(v.to_dict(), indent=1) if args.json else format_table(v))
    return 0


def add_validate(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "validate", "predicted vs measured latency on this machine",
                    cmd_validate)
    _add_model_args(p)
    p.add_argument("--target", required=True, help="target describing this machine "
                   "(e.g. the YAML `edgesim target probe` wrote)")
    p.add_argument("--bits", default="fp32", help="fp32, 8 (W8A8), 4 (W4), ...")
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--stat", choices=("median", "min"), default="median",
                   help="per-node statistic over runs; min on a shared, loaded machine")


def add_targets(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "targets", "list the shipped hardware targets", cmd_targets)
    target = sub.add_parser("target", help="target tools", parents=[GLOBAL])
    tools = target.add_subparsers(dest="tool", required=True)
    probe = add_command(tools, "probe", "measure this machine and write a cpu target",
                        cmd_probe)
    probe.add_argument("-o", "--output", required=True, help="YAML file to write")


BUILTIN = (add_inspect, add_simulate, add_compile, add_evaluate, add_quantize, add_sweep,
           add_pareto, add_targets, add_validate)
