"""The `edgesim` command line: argparse subcommands, each mapped to one `edgesim.api` function.

Errors about the user's input (ModelError, TargetError, UserError — all ValueErrors with a
place) print one line `edgesim: <where>: <what>` and exit 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
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
