"""The commands on one model: `inspect` (layer table), `simulate` (predicted costs),
`quantize` (a fixed plan, emitted) and `evaluate` (onnxruntime's agreement and latency)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from edgesim.budget import format_bytes
from edgesim.cli import add_command, collection_paused, parse_input_shapes, positive_int
from edgesim.commands.common import (
    add_kernel_check,
    add_model_args,
    add_reading_args,
    format_count,
    reading_options,
)

if TYPE_CHECKING:
    from edgesim import api


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
              f"{format_count(x.macs):>9s} {format_count(x.params):>9s} "
              f"{format_count(x.in_bytes):>9s} {format_count(x.out_bytes):>9s}{fmt}")
    print(f"total: {format_count(r.total_macs)} MACs, {format_count(r.total_params)} params, "
          f"{format_bytes(r.weight_bytes)} of weights")


def cmd_inspect(args: argparse.Namespace) -> int:
    """`edgesim inspect`: the lowered layer table and totals (or its JSON)."""
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
        print(f"{r.name[:36]:36s} {r.kind[:14]:14s} {bits:>6s} {format_count(r.macs):>8s} "
              f"{format_count(r.cycles):>9s} {r.latency_ms:8.3f} {r.energy_uj:8.2f} "
              f"{r.bound:>8s} {r.util:5.2f}")
    t, b = s.total, s.fp32
    for note in s.notes:
        print(note if note.startswith("WARNING") else f"note: {note}")
    print(f"total: latency {t.latency_ms:.3f} ms (fp32 {b.latency_ms:.3f}), energy "
          f"{t.energy_mj:.4f} mJ (fp32 {b.energy_mj:.4f}), weights {format_bytes(t.weight_bytes)} "
          f"(fp32 {format_bytes(b.weight_bytes)}), peak activations "
          f"{format_bytes(t.peak_act_bytes)}")


def cmd_simulate(args: argparse.Namespace) -> int:
    """`edgesim simulate`: predicted per-layer costs on a target (or their JSON)."""
    from edgesim import api  # imported by the command that runs, not the parser

    s = api.simulate(args.model, args.target, bits=args.bits, threads=args.threads,
                     runtime=args.runtime, input_shapes=parse_input_shapes(args.input_shape))
    if args.json:
        print(json.dumps(s.to_dict()))
    else:
        _print_simulation(s)
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    """`edgesim quantize`: quantise with a fixed bit assignment and write the ONNX file."""
    from compiler.numba_start import load_registries
    from edgesim import api  # imported by the command that runs, not the parser
    from edgesim.output import output_file

    with collection_paused():  # the quantizer's modules and numba's registries
        import edgesim.quantize  # noqa: F401
        load_registries()

    values, axes = reading_options(args)
    r = api.quantize(args.model, args.bits, output_file(args.output), calib=args.calib,
                     calib_random=args.calib_random,
                     input_shapes=parse_input_shapes(args.input_shape),
                     input_values=values, batch_axes=axes,
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


def cmd_evaluate(args: argparse.Namespace) -> int:
    """`edgesim evaluate`: agreement and latency of a model run in onnxruntime."""
    from edgesim import api  # imported by the command that runs, not the parser

    r = api.evaluate_model(args.model, args.data, threads=args.threads, runs=args.runs)
    if args.json:
        print(json.dumps(r))
        return 0
    for key, value in r.items():
        print(f"{key}: {value}")
    return 0


def add_inspect(sub: argparse._SubParsersAction) -> None:
    """Register `inspect`."""
    add_model_args(add_command(sub, "inspect", "print the lowered layer table and totals",
                                cmd_inspect))


def add_simulate(sub: argparse._SubParsersAction) -> None:
    """Register `simulate`."""
    sim = add_command(sub, "simulate", "predict latency, energy and memory on a target",
                      cmd_simulate)
    add_model_args(sim)
    sim.add_argument("--target", required=True, help="shipped target name or YAML file")
    sim.add_argument("--threads", type=positive_int, help="CPU threads (default: all cores)")
    sim.add_argument("--runtime", default="onnxruntime",
                     help="onnxruntime, ncnn, xnnpack or ideal")
    sim.add_argument("--bits", default=None,
                     help="fp32, 8 (W8A8), 4 (W4 weight-only), or an assignment JSON file "
                          "(default: a quantized model's own plan, else fp32)")


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    """Register `evaluate`."""
    ev = add_command(sub, "evaluate", "run a model in onnxruntime: agreement and latency",
                     cmd_evaluate)
    ev.add_argument("model", help="ONNX file")
    ev.add_argument("--data", required=True, help=".npz keyed by input name (+ labels)")
    ev.add_argument("--threads", type=positive_int, help="onnxruntime intra-op threads")
    ev.add_argument("--runs", type=int, default=30, help="timed runs for the latency")


def add_quantize(sub: argparse._SubParsersAction) -> None:
    """Register `quantize`."""
    qz = add_command(sub, "quantize", "quantise with a fixed bit assignment and emit ONNX",
                     cmd_quantize)
    add_model_args(qz)
    qz.add_argument("--bits", required=True,
                    help="8 (W8A8), 4 (W4 weight-only), fp32, or an assignment JSON file")
    calib = qz.add_mutually_exclusive_group()
    calib.add_argument("--calib", help="calibration .npz keyed by input name (+ labels)")
    calib.add_argument("--calib-random", type=int, metavar="N",
                       help="calibrate on N random samples")
    qz.add_argument("-o", "--output", required=True, help="ONNX file to write")
    add_reading_args(qz)
    add_kernel_check(qz, "report")
    qz.add_argument("--accuracy-level", type=int, choices=(0, 1, 2, 3, 4),
                    help="force MatMulNBits accuracy_level (default: the plan's; 4 = int8 "
                         "activations on CPUs with int8 dot products)")
