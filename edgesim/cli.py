"""The `edgesim` command line: argparse subcommands, each mapped to one `edgesim.api` function.

Errors about the user's input (ModelError, TargetError, UserError — all ValueErrors with a
place) print one line `edgesim: <where>: <what>` and exit 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from edgesim import api
from edgesim.errors import UserError

EXIT_USAGE = 2


def parse_input_shapes(items: Sequence[str] | None) -> dict[str, tuple[int, ...]]:
    """Parse repeated `--input-shape name=1x3x224x224` flags."""
    shapes: dict[str, tuple[int, ...]] = {}
    for item in items or ():
        name, sep, dims = item.rpartition("=")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or min(shape) <= 0:
            raise UserError("--input-shape", f"expected name=1x3x224x224, got {item!r}")
        shapes[name] = shape
    return shapes


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
        print(f"{x.name[:40]:40s} {kind[:16]:16s} {str(x.out_shape)[:22]:22s} "
              f"{_fmt_count(x.macs):>9s} {_fmt_count(x.params):>9s} "
              f"{_fmt_count(x.in_bytes):>9s} {_fmt_count(x.out_bytes):>9s}")
    print(f"total: {_fmt_count(r.total_macs)} MACs, {_fmt_count(r.total_params)} params, "
          f"{r.weight_bytes / 2**20:.2f} MiB of weights")


def cmd_inspect(args: argparse.Namespace) -> int:
    r = api.inspect(args.model, parse_input_shapes(args.input_shape))
    if args.json:
        print(json.dumps(r.to_dict()))
    else:
        _print_inspection(r)
    return 0


def _print_simulation(s) -> None:  # noqa: ANN001 - edgesim.simulate.Simulation
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
        print(f"note: {note}")
    print(f"total: latency {t.latency_ms:.3f} ms (fp32 {b.latency_ms:.3f}), energy "
          f"{t.energy_mj:.4f} mJ (fp32 {b.energy_mj:.4f}), weights {t.weight_bytes / 2**20:.2f} "
          f"MiB (fp32 {b.weight_bytes / 2**20:.2f}), peak activations "
          f"{t.peak_act_bytes / 2**10:.1f} KiB")


def cmd_simulate(args: argparse.Namespace) -> int:
    s = api.simulate(args.model, args.target, bits=args.bits, threads=args.threads,
                     runtime=args.runtime, input_shapes=parse_input_shapes(args.input_shape))
    if args.json:
        print(json.dumps(s.to_dict()))
    else:
        _print_simulation(s)
    return 0


def cmd_targets(args: argparse.Namespace) -> int:
    rows = api.targets()
    if args.json:
        print(json.dumps([r.__dict__ for r in rows]))
        return 0
    for r in rows:
        print(f"{r.name:20s} {r.kind:9s} {r.description}  ({r.file})")
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    target = api.probe_target(args.output)
    print(f"wrote {args.output}: {target.cores} cores, {target.clock_ghz:.2f} GHz, "
          f"{target.simd_bits}-bit SIMD ({', '.join(target.isa)})")
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from edgesim.quantize import quantize_model

    r = quantize_model(args.model, args.bits, calib=args.calib, calib_random=args.calib_random,
                       out=args.output, input_shapes=parse_input_shapes(args.input_shape))
    if args.json:
        print(json.dumps(r.to_dict()))
        return 0
    if r.calibration:
        print(f"calibration: {r.calibration}" + (" (random samples)" if r.calibration_random
                                                  else ""))
    for x in r.layers:
        bits = "float" if x.w_bits is None else f"w{x.w_bits}" + (f"a{x.a_bits}" if x.a_bits
                                                                    else "")
        print(f"{x.name[:40]:40s} {x.kind:12s} {x.format:12s} {bits:8s} {x.reason}")
    print(f"wrote {r.out}: {r.file_bytes / 2**20:.2f} MiB on disk, expected "
          f"{r.expected_bytes / 2**20:.2f} MiB (bits x params / 8 + scales and zero points)")
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


def cmd_compile(args: argparse.Namespace) -> int:
    from edgesim.budget import parse_budget, parse_duration
    from edgesim.pipeline import CompileOptions, compile_model

    model, calib, held_out = args.model, args.calib, args.eval
    if args.example:
        model, calib, held_out = api.example_inputs()
    if model is None:
        raise UserError("compile", "give a model (or --example)")
    options = CompileOptions(
        method=args.method, budget=None if args.budget is None else parse_budget(args.budget),
        weight_bits=_bits_list(args.weight_bits, "--weight-bits") or CompileOptions.weight_bits,
        act_bits=_bits_list(args.act_bits, "--act-bits"), threads=args.threads,
        runtime=args.runtime, input_shapes=parse_input_shapes(args.input_shape),
        quiet=args.quiet or args.json, command=" ".join(["edgesim", *sys.argv[1:]]),
        analysis_budget_s=None if args.analysis_budget is None else parse_duration(
            args.analysis_budget))
    r = compile_model(model, args.target, args.output, calib=calib,
                      calib_random=args.calib_random, eval_data=held_out, options=options)
    if args.json:
        print(json.dumps(r.to_dict(), default=str))
    else:
        _print_compile(r)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    r = api.evaluate_model(args.model, args.data, threads=args.threads, runs=args.runs)
    if args.json:
        print(json.dumps(r))
        return 0
    for key, value in r.items():
        print(f"{key}: {value}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from edgesim.sweep import sweep

    s = sweep(args.space, args.output, workers=args.workers, scheduler=args.scheduler,
              dask_local=args.dask_local, batch_size=args.batch_size, progress=not args.quiet)
    print(f"{s.path}: {s.computed} points computed ({s.points_per_s:,.0f}/s), "
          f"{s.skipped} already stored, {s.errors} recorded with an error")
    return 0


def cmd_pareto(args: argparse.Namespace) -> int:
    from edgesim.pareto import pareto

    objectives = [o for o in (args.objectives or "").split(",") if o.strip()]
    if args.x or args.y:
        if not (args.x and args.y):
            raise UserError("--x/--y", "give both axes")
        objectives = [args.x, args.y, *[o for o in objectives if o not in (args.x, args.y)]]
    png = args.output if args.output and args.output.endswith(".png") else None
    outdir = os.path.dirname(png) or "." if png else args.output
    r = pareto(args.results, objectives or ["area_proxy", "latency_s"], output=outdir,
               color=args.color, plots=not args.no_plots)
    files = list(r.files)
    if png and not args.no_plots:  # the front plot under the name asked for
        front = next(f for f in files if f.endswith("front.png"))
        os.replace(front, png)
        files[files.index(front)] = png
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
    p.add_argument("--json", action="store_true", help="machine-readable output")


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of every subcommand."""
    p = argparse.ArgumentParser(prog="edgesim", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="show tracebacks, verify the IR")
    sub = p.add_subparsers(dest="command", required=True)
    ins = sub.add_parser("inspect", help="print the lowered layer table and totals")
    _add_model_args(ins)
    ins.set_defaults(run=cmd_inspect)
    sim = sub.add_parser("simulate", help="predict latency, energy and memory on a target")
    _add_model_args(sim)
    sim.add_argument("--target", required=True, help="shipped target name or YAML file")
    sim.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    sim.add_argument("--runtime", default="onnxruntime", choices=("onnxruntime", "ideal"))
    sim.add_argument("--bits", default="fp32",
                     help="fp32, 8 (W8A8), 4 (W4 weight-only), or an assignment JSON file")
    sim.set_defaults(run=cmd_simulate)
    cp = sub.add_parser("compile", help="allocate bits for a target and emit a packed model")
    cp.add_argument("model", nargs="?", help="ONNX file or zoo:NAME")
    cp.add_argument("--example", action="store_true",
                    help="the shipped example: the trained digits CNN with its data")
    cp.add_argument("--target", default="rpi5", help="shipped target name or YAML file")
    calib = cp.add_mutually_exclusive_group()
    calib.add_argument("--calib", help="calibration .npz keyed by input name (+ labels)")
    calib.add_argument("--calib-random", type=int, metavar="N", help="N random samples")
    cp.add_argument("--eval", help="held-out .npz for the fidelity check (default: calib)")
    cp.add_argument("--method", default="hawq", choices=("hawq", "lrp", "uniform", "proxy"))
    cp.add_argument("--budget", help="size=2MB | latency=15ms | energy=5mJ | bits=4.5 "
                    "(default: the knee of the Pareto front)")
    cp.add_argument("--weight-bits", help="candidate weight bits, e.g. 2,3,4,6,8")
    cp.add_argument("--analysis-budget", metavar="60s",
                    help="time bound of the HAWQ analysis (default: until 5%% precision)")
    cp.add_argument("--act-bits", help="candidate activation bits, e.g. 8,32")
    cp.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    cp.add_argument("--runtime", default="onnxruntime", choices=("onnxruntime", "ideal"))
    cp.add_argument("--input-shape", action="append", metavar="NAME=1x3x224x224")
    cp.add_argument("-o", "--output", default="edgesim-out", help="output folder")
    cp.add_argument("--json", action="store_true", help="print report.json to stdout")
    cp.add_argument("--quiet", action="store_true", help="no progress lines")
    cp.set_defaults(run=cmd_compile)
    ev = sub.add_parser("evaluate", help="run a model in onnxruntime: agreement and latency")
    ev.add_argument("model", help="ONNX file")
    ev.add_argument("--data", required=True, help=".npz keyed by input name (+ labels)")
    ev.add_argument("--threads", type=int, help="onnxruntime intra-op threads")
    ev.add_argument("--runs", type=int, default=30, help="timed runs for the latency")
    ev.add_argument("--json", action="store_true", help="machine-readable output")
    ev.set_defaults(run=cmd_evaluate)
    qz = sub.add_parser("quantize", help="quantise with a fixed bit assignment and emit ONNX")
    _add_model_args(qz)
    qz.add_argument("--bits", required=True,
                    help="8 (W8A8), 4 (W4 weight-only), fp32, or an assignment JSON file")
    calib = qz.add_mutually_exclusive_group()
    calib.add_argument("--calib", help="calibration .npz keyed by input name")
    calib.add_argument("--calib-random", type=int, metavar="N",
                       help="calibrate on N random samples")
    qz.add_argument("-o", "--output", required=True, help="ONNX file to write")
    qz.set_defaults(run=cmd_quantize)
    sw = sub.add_parser("sweep", help="design-space exploration of a space YAML")
    sw.add_argument("space", help="space YAML (see targets/spaces/)")
    sw.add_argument("-o", "--output", required=True,
                    help="results folder (re-running the same command resumes it)")
    where = sw.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, help="local process-pool workers (default: all)")
    where.add_argument("--scheduler", metavar="tcp://HOST:8786", help="a Dask scheduler")
    where.add_argument("--dask-local", type=int, metavar="N",
                       help="start a Dask LocalCluster of N workers on 127.0.0.1")
    sw.add_argument("--batch-size", type=int, help="points per task (default: ~8 per worker)")
    sw.add_argument("--quiet", action="store_true", help="no progress line")
    sw.set_defaults(run=cmd_sweep)
    pa = sub.add_parser("pareto", help="non-dominated points of sweep or compile results")
    pa.add_argument("results", help="sweep folder, .jsonl, .json (incl. report.json) or .csv")
    pa.add_argument("--x", help="column on the x axis (first objective)")
    pa.add_argument("--y", help="column on the y axis (second objective)")
    pa.add_argument("--objectives", help="comma-separated columns, each optionally :min/:max "
                    "(default: area_proxy,latency_s)")
    pa.add_argument("--color", help="column colouring the front plot")
    pa.add_argument("-o", "--output", help="plot.png, or a folder for front.csv/front.png/"
                    "summary.png (default: beside the results)")
    pa.add_argument("--no-plots", action="store_true", help="write front.csv only")
    pa.add_argument("--json", action="store_true", help="machine-readable output")
    pa.set_defaults(run=cmd_pareto)
    tg = sub.add_parser("targets", help="list the shipped hardware targets")
    tg.add_argument("--json", action="store_true", help="machine-readable output")
    tg.set_defaults(run=cmd_targets)
    target = sub.add_parser("target", help="target tools").add_subparsers(dest="tool",
                                                                         required=True)
    probe = target.add_parser("probe", help="measure this machine and write a cpu target")
    probe.add_argument("-o", "--output", required=True, help="YAML file to write")
    probe.set_defaults(run=cmd_probe)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `edgesim` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ValueError as e:  # ModelError, TargetError, UserError name where and what
        if args.debug:
            raise
        print(f"edgesim: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:  # unreadable file, unwritable output
        if args.debug:
            raise
        print(f"edgesim: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return EXIT_USAGE
