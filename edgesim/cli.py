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


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of every subcommand."""
    p = argparse.ArgumentParser(prog="edgesim", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="show tracebacks, verify the IR")
    sub = p.add_subparsers(dest="command", required=True)
    ins = sub.add_parser("inspect", help="print the lowered layer table and totals")
    ins.add_argument("model", help="ONNX file")
    ins.add_argument("--input-shape", action="append", metavar="NAME=1x3x224x224")
    ins.add_argument("--json", action="store_true", help="machine-readable output")
    ins.set_defaults(run=cmd_inspect)
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
