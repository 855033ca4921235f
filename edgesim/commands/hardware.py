"""Hardware commands: `targets` (the shipped list), `target probe` (measure this machine into a
cpu target) and `validate` (predicted against measured latency here)."""

from __future__ import annotations

import argparse
import json
import sys

from edgesim.cli import GLOBAL, add_command, parse_input_shapes, positive_int
from edgesim.commands.common import add_model_args


def cmd_targets(args: argparse.Namespace) -> int:
    """`edgesim targets`: the shipped hardware targets."""
    from edgesim import api  # imported by the command that runs, not the parser

    rows = api.targets()
    if args.json:
        print(json.dumps([r.__dict__ for r in rows]))
        return 0
    for r in rows:
        print(f"{r.name:20s} {r.kind:9s} {r.description}  ({r.file})")
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    """`edgesim target probe`: measure this machine and write a cpu target YAML."""
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


def cmd_validate(args: argparse.Namespace) -> int:
    """`edgesim validate`: predicted against measured latency on this machine."""
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
    """Register `validate`."""
    p = add_command(sub, "validate", "predicted vs measured latency on this machine",
                    cmd_validate)
    add_model_args(p)
    p.add_argument("--target", required=True, help="target describing this machine "
                   "(e.g. the YAML `edgesim target probe` wrote)")
    p.add_argument("--bits", help="fp32, 8 (W8A8), 4 (W4), ... (default: a quantized "
                   "file's own plan, else fp32)")
    p.add_argument("--threads", type=positive_int, default=1)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--stat", choices=("median", "min"), default="median",
                   help="per-node statistic over runs; min on a shared, loaded machine")


def add_targets(sub: argparse._SubParsersAction) -> None:
    """Register `targets` and the `target probe` tool."""
    add_command(sub, "targets", "list the shipped hardware targets", cmd_targets)
    target = sub.add_parser("target", help="target tools", parents=[GLOBAL])
    tools = target.add_subparsers(dest="tool", required=True)
    probe = add_command(tools, "probe", "measure this machine and write a cpu target",
                        cmd_probe)
    probe.add_argument("-o", "--output", required=True, help="YAML file to write")
