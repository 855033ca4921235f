"""`edgesim compile`: allocate bits for a target and emit a packed model (its flags, their
parsing into `edgesim.api.compile`'s arguments, and the printed summary)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from edgesim.budget import DEFAULT_ANALYSIS_BUDGET_S
from edgesim.cli import add_command, collection_paused, parse_input_shapes, positive_int
from edgesim.commands.common import add_kernel_check, add_reading_args, reading_options
from edgesim.errors import UserError

if TYPE_CHECKING:
    from edgesim.report_plots import Plotter


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
    """`edgesim compile`: allocate bits for a target and emit a packed model."""
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
    values, axes = reading_options(args)
    r = api.compile(  # the one place a CompileOptions is built
        model, args.target, outdir=args.output, calib=calib, calib_random=args.calib_random,
        eval_data=held_out, method=args.method, budget=args.budget,
        **({"weight_bits": weight_bits} if weight_bits else {}),
        act_bits=_bits_list(args.act_bits, "--act-bits"), threads=args.threads,
        blocks=_bits_list(args.blocks, "--blocks"),
        runtime=args.runtime, input_shapes=parse_input_shapes(args.input_shape),
        input_values=values, batch_axes=axes,
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


def _alpha(text: str) -> float | str:
    """--smooth-quant's value: auto, off, or a number (checked by the pipeline)."""
    return text if text in ("auto", "off") else float(text)


def add_compile(sub: argparse._SubParsersAction) -> None:
    """Register `compile`."""
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
                    help="CPU-time bound of the HAWQ / LRP analysis (HAWQ's default "
                    "Gauss-Newton probing: its passes' multiply-accumulates at a fixed "
                    "rate, about one CPU second per 1e10, so the plan does not vary with "
                    "the load; LRP: CPU seconds; default: "
                    f"{DEFAULT_ANALYSIS_BUDGET_S:g}s; none or 0: until 5%% precision / every "
                    "calibration sample); it also bounds the activation range "
                    "search")
    cp.add_argument("--act-bits", help="candidate activation bits, e.g. 8,32")
    cp.add_argument("--blocks", help="candidate block sizes of MatMulNBits / blocked "
                    "DequantizeLinear layers, chosen per layer, e.g. 32,64,128 (default: 32)")
    cp.add_argument("--threads", type=positive_int, help="CPU threads (default: all cores)")
    cp.add_argument("--runtime", default="onnxruntime", choices=("onnxruntime", "ideal"))
    cp.add_argument("--input-shape", action="append", metavar="NAME=1x3x224x224")
    cp.add_argument("--sparsity", help="candidate activation sparsities per MAC input, e.g. "
                    "0,0.25,0.5 (zero-skipping MAC arrays only)")
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
    add_reading_args(cp)
    add_kernel_check(cp, "fail")
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
