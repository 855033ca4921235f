"""The Python API; each CLI subcommand is a thin layer over one function here."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from edgesim.budget import DEFAULT_ANALYSIS_BUDGET_S
from edgesim.errors import UserError
from edgesim.loading import ZOO_PREFIX as ZOO_PREFIX
from edgesim.loading import costable as costable
from edgesim.loading import load_graph as load_graph
from edgesim.loading import resolve_target as resolve_target
from edgesim.loading import zoo_model as zoo_model

if TYPE_CHECKING:
    from edgesim.allocation import AllocationResult
    from edgesim.budget import Budget
    from edgesim.quantize import QuantizeResult
    from edgesim.report import CompileResult
    from edgesim.report_plots import Plotter
    from edgesim.simulation import Simulation
    from hwmodels.cpu_schema import CpuTarget
    from hwmodels.target import TargetRef

@dataclass(frozen=True)
class LayerSummary:
    """One row of `inspect`: what a layer is and what it costs in the abstract."""

    name: str
    kind: str
    detail: str          # e.g. the eltwise/activation function
    out_shape: tuple[int, ...]
    macs: int
    params: int
    in_bytes: int
    out_bytes: int
    format: str = ""     # a quantized model's format-policy row for the layer ("" = float)
    w_bits: int | None = None
    a_bits: int | None = None


@dataclass(frozen=True)
class Inspection:
    """Result of `inspect`: per-layer rows and totals of a lowered model."""

    model: str
    notes: tuple[str, ...]
    layers: tuple[LayerSummary, ...]
    total_macs: int
    total_params: int
    weight_bytes: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True)
class TargetInfo:
    """One shipped target, as `edgesim targets` lists it."""

    name: str
    kind: str
    description: str
    file: str


def targets() -> list[TargetInfo]:
    """Every shipped target (targets/*.yaml)."""
    from hwmodels.target import list_targets, load_target

    out = []
    for name in list_targets():
        t = load_target(name)
        out.append(TargetInfo(name, t.kind, t.description, f"targets/{name}.yaml"))
    return out


def probe_target(output: str | os.PathLike[str]) -> CpuTarget:
    """Measure this machine, write it as a `cpu` target YAML (atomically) and return it."""
    from compiler.atomic import atomic_write
    from hwmodels.probe import probe_host, target_yaml

    target = probe_host()
    atomic_write(output, target_yaml(target))
    return target


def simulate(model: Any, target: TargetRef, *, bits: Any = None, threads: int | None = None,
             runtime: str = "onnxruntime",
             input_shapes: Mapping[str, Sequence[int]] | None = None) -> Simulation:
    """Predict per-layer and total latency, energy and memory of `model` on `target`.

    Args:
        model: ONNX path, `zoo:NAME`, ModelProto or Graph.
        target: shipped target name, YAML path or target object.
        bits: None (the model's own: the plan of a quantized ONNX file, read back by
            `compiler.frontend.quantized`, else fp32), "fp32", a bit width (8 = W8A8, 4 = W4
            weight-only), a JSON path, a mapping {layer: bits} or an int array [L, 2].
        threads: CPU threads (default: all cores of the target).
        runtime: one of the runtimes the target's kind models (its capabilities; CPUs:
            "onnxruntime", the kernels onnxruntime takes, "ncnn", Tencent ncnn's Arm kernels,
            "xnnpack", or "ideal", best the ISA allows); kinds that model none ignore it.

    Returns:
        An `edgesim.simulation.Simulation`.
    """
    from edgesim import assignment
    from edgesim.simulation import planned_bits, simulate_graph, unplanned
    from hwmodels import kinds

    tgt = resolve_target(target)
    runtimes = kinds.capabilities(tgt).runtimes
    if runtimes and runtime not in runtimes:
        raise UserError("--runtime", f"must be one of {', '.join(runtimes)}, got {runtime!r}")
    g = load_graph(model, input_shapes, shapes_only=True,  # costs need shapes, not weights
                   arch=getattr(tgt, "arch", None))  # a quantized file runs as there
    if bits is None:  # a quantized file runs its own plan
        bits = planned_bits(g)
    else:  # another assignment replaces the file's plan
        g = unplanned(g)
    return simulate_graph(g, tgt, assignment.resolve(g, bits),
                          threads=threads, runtime=runtime)


def compare_runtimes(model: Any, target: TargetRef, runtimes: Sequence[str] | None = None, *,
                     bits: Any = "fp32", threads: int | None = None,
                     input_shapes: Mapping[str, Sequence[int]] | None = None
                     ) -> dict[str, Simulation]:
    """One model on one target under several runtime profiles, side by side.

    Args:
        model / target / bits / threads / input_shapes: as `simulate`.
        runtimes: profile names (default: every runtime the target's kind models).

    Returns:
        Runtime name -> its `edgesim.simulation.Simulation` (same layers, same bits).
    """
    from hwmodels import kinds

    tgt = resolve_target(target)
    g = load_graph(model, input_shapes, arch=getattr(tgt, "arch", None))
    return {rt: simulate(g, tgt, bits=bits, threads=threads, runtime=rt)
            for rt in (runtimes or kinds.capabilities(tgt).runtimes or ("onnxruntime",))}
def _format_name(code: int) -> str:
    from compiler.formats import FORMATS

    return "" if code < 0 or FORMATS[code].name == "float" else FORMATS[code].name


def inspect(model: Any, input_shapes: Mapping[str, Sequence[int]] | None = None) -> Inspection:
    """Lower `model` and summarise every layer (op, output shape, MACs, params, bytes)."""
    g = load_graph(model, input_shapes)
    t = g.layer_table()
    assert t.fmt_code is not None  # layer_table() fills every column
    rows = tuple(
        LayerSummary(
            name=layer.name, kind=layer.kind, detail=str(layer.attrs.get("fn", "")),
            out_shape=g.types[layer.outputs[0]].shape, macs=int(t.macs[i]),
            params=int(t.w_elems[i]), in_bytes=int(t.in_bytes[i]), out_bytes=int(t.out_bytes[i]),
            format=_format_name(int(t.fmt_code[i])), w_bits=layer.quant.w_bits,
            a_bits=layer.quant.a_bits,
        )
        for i, layer in enumerate(g.layers)
    )
    params = sum(w.size for w in g.weights.values() if w.dtype.kind == "f")
    wbytes = sum(w.nbytes for w in g.weights.values())
    return Inspection(g.name, g.notes, rows, int(t.macs.sum()), int(params), int(wbytes))


def example_inputs() -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The shipped example: the trained digits CNN, its calibration split and test split."""
    from edgesim.zoo import load_digits_data

    d = load_digits_data()
    return ("zoo:digits_cnn", {"input": d["x_calib"], "labels": d["y_calib"]},
            {"input": d["x_test"], "labels": d["y_test"]})


def compile(model: Any, target: TargetRef = "rpi5", *, outdir: str | os.PathLike = "edgesim-out",
            calib: Any = None, calib_random: int | None = None, eval_data: Any = None,
            method: str = "hawq", budget: str | None = None,
            weight_bits: Sequence[int] = (2, 3, 4, 6, 8), act_bits: Sequence[int] | None = None,
            threads: int | None = None, runtime: str = "onnxruntime",
            input_shapes: Mapping[str, Sequence[int]] | None = None,
            input_values: Mapping[str, Any] | None = None,
            batch_axes: Mapping[str, int | None] | None = None,
            fidelity_metric: Any = None, calib_method: str | None = None,
            smooth_quant: float | str | None = "auto", rounding: str = "rtn",
            bias_correction: bool = True,
            quiet: bool | None = None, force: bool = False,
            min_fidelity: float | None = None,
            analysis_budget_s: float | None = DEFAULT_ANALYSIS_BUDGET_S,
            sparsity: Sequence[float] = (),
            kernel_check: str = "fail", pick: int | None = None, assignment: str | None = None,
            verify: bool = False, command: str = "edgesim.compile(...)",
            blocks: Sequence[int] | None = None, plots: str | Plotter = "auto"
            ) -> CompileResult:
    """Compile `model` for `target`: choose bits per layer, emit the packed model and reports.

    Mirrors `edgesim compile`; returns an `edgesim.report.CompileResult` (the fields of
    report.json). `budget` is e.g. "size=2MB", "latency=15ms", "energy=5mJ" or "bits=4.5";
    None picks the knee of the Pareto front. `calib` is a .npz path or a mapping of arrays by
    input name (with optional "labels"), samples along each input's batch axis.
    `input_values` pins inputs to constants (`If` nodes on them are inlined; they leave the
    emitted model's inputs); `batch_axes` declares inputs' batch axes (see `load_graph`).
    The fidelity check scores the first output that depends on an input, and each other
    float output stacking samples on axis 0, by the metrics that fit it (top-1 agreement for
    class scores, label agreement for integer labels, cosine and SQNR otherwise);
    `fidelity_metric(reference, test) -> float` replaces the primary one (first output only).
    `calib_method` picks activation ranges: "auto" (default: per tensor the method with the
    least measured output error), "minmax", "percentile", "mse" or "entropy" (KL).
    `smooth_quant=alpha` migrates activation outliers into the weights of the linear layers
    after each LayerNorm/RMSNorm (SmoothQuant; 0.5 is the paper's default); "auto" (default)
    does so at alpha 0.5 where a norm's output has outlier channels and 8-bit activations
    are among the choices; None turns it off.
    `rounding="gptq"` rounds linear weights with GPTQ (second order, on calibration data).
    `bias_correction` removes the mean output shift of weight-only layers at <= 4 bits,
    measured on the calibration data (default on).
    `outdir` must be new, empty or made by edgesim unless `force` (nothing in it that
    edgesim did not write is ever deleted). With `min_fidelity`, a plan whose emitted
    model's primary fidelity metric is lower raises UserError and writes nothing; a
    minimum above 1, which edgesim's own metrics never reach, is refused before any work
    (unless `fidelity_metric` is given).
    `analysis_budget_s` bounds the HAWQ or LRP analysis's time (its precision reached is in the
    report's notes). `sparsity`, `kernel_check`, `pick`, `assignment` and `verify` are the
    CLI's `--sparsity` (candidate activation sparsities per MAC input; 0 is always a
    candidate), `--kernel-check`, `--pick`, `--assignment` and `--debug` (see
    `edgesim.pipeline.CompileOptions`); `command` is recorded in the report. `blocks`
    (e.g. (32, 64, 128)) makes the block of MatMulNBits / blocked-DequantizeLinear layers a
    per-layer choice of the allocator (default: one block, 32). `plots` says who draws the
    figures (`edgesim.pipeline.CompileOptions.plots`).
    `analysis_budget_s` defaults to `edgesim.budget.DEFAULT_ANALYSIS_BUDGET_S` (None: no
    bound); the notes say whether the budget ended the analysis.
    """
    from edgesim.budget import parse_budget
    from edgesim.pipeline import CompileOptions, compile_model

    options = CompileOptions(
        method=method, budget=None if budget is None else parse_budget(budget),
        weight_bits=tuple(weight_bits), act_bits=None if act_bits is None else tuple(act_bits),
        threads=threads, runtime=runtime, input_shapes=input_shapes,
        input_values=input_values, batch_axes=batch_axes, fidelity_metric=fidelity_metric,
        calib_method=calib_method, smooth_quant=smooth_quant, rounding=rounding,
        bias_correction=bias_correction,
        quiet=not sys.stderr.isatty() if quiet is None else quiet,  # bars in a terminal
        command=command, force=force, min_fidelity=min_fidelity,
        analysis_budget_s=analysis_budget_s,
        sparsity=tuple(sorted({0.0, *map(float, sparsity)})) if sparsity else (),
        kernel_check=kernel_check, pick=pick, assignment=assignment, verify=verify,
        blocks=None if blocks is None else tuple(blocks), plots=plots)
    return compile_model(model, target, outdir, calib=calib, calib_random=calib_random,
                         eval_data=eval_data, options=options)


def quantize(model: Any, bits: Any, out: str | os.PathLike, *, calib: Any = None,
             calib_random: int | None = None,
             input_shapes: Mapping[str, Sequence[int]] | None = None,
             input_values: Mapping[str, Any] | None = None,
             batch_axes: Mapping[str, int | None] | None = None,
             accuracy_level: int | None = None, kernel_check: str = "report"
             ) -> QuantizeResult:
    """Quantise `model` with a fixed assignment and write it atomically (`edgesim quantize`).

    `bits` is "fp32", 8 (W8A8), 4 (W4 weight-only), a JSON path or a mapping {layer: bits};
    `calib` a .npz (optional `labels` are ignored) or None with `calib_random` samples.
    `input_shapes`, `input_values` and `batch_axes` read the model as `compile` does (e.g.
    silero's state, batch on axis 1: `batch_axes={"state": 1}`).
    `accuracy_level` forces MatMulNBits' (default: the plan's); `kernel_check` compares the
    kernels onnxruntime runs with the plan ("fail", "report" or "off").
    """
    from compiler.emit import EmitOptions
    from compiler.ir import Graph
    from edgesim.loading import float_graph
    from edgesim.quantize import quantize_model

    if isinstance(model, Graph) and (input_shapes or input_values or batch_axes):
        raise UserError("quantize", "input_shapes / input_values / batch_axes read a model "
                        "file; a Graph is already read")
    g = float_graph(model, input_shapes, input_values=input_values, batch_axes=batch_axes)
    return quantize_model(g, bits, calib=calib, calib_random=calib_random, out=out,
                          emit_options=EmitOptions(accuracy_level=accuracy_level),
                          kernel_check=kernel_check)


def evaluate_model(model: str | os.PathLike, data: str | os.PathLike, *,
                   threads: int | None = None, runs: int = 30) -> dict[str, Any]:
    """Run an ONNX model in onnxruntime on a .npz (keyed by input name, optional labels):
    accuracy (with labels) and latency measured here (median, p90)."""
    import numpy as np

    from edgesim.evaluate import evaluate_model as run_and_time

    if not os.path.exists(model):
        raise UserError(str(model), "no such file")
    try:
        with np.load(data, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as e:
        raise UserError(str(data), f"not a readable .npz file ({e})") from None
    labels = arrays.pop("labels", None)
    return run_and_time(model, arrays, labels, threads=threads, runs=runs)


def allocate(model: Any, target: TargetRef = "rpi5", *, method: str = "hawq",
             budget: str | Budget | None = None, calib: Any = None,
             calib_random: int | None = None, weight_bits: Sequence[int] = (2, 3, 4, 6, 8),
             act_bits: Sequence[int] | None = None, metric: str = "latency",
             threads: int | None = None, runtime: str = "onnxruntime",
             input_shapes: Mapping[str, Sequence[int]] | None = None,
             blocks: Sequence[int] | None = None) -> AllocationResult:
    """Bits per layer for a budget, exactly, with the whole front (`edgesim compile`'s
    allocation step, without emitting anything).

    Args:
        model: ONNX path, `zoo:NAME`, ModelProto or Graph -- as `compile` takes.
        target: shipped target name, YAML path or target object.
        method: "hawq", "lrp", "proxy" (data-free) or "uniform".
        budget: "size=2MB", "latency=15ms", "energy=5mJ", "bits=4.5", a `Budget`, or None
            for the knee of the front.
        calib: .npz path or mapping of arrays by input name (+ "labels"); HAWQ and LRP
            use it (default: `calib_random` or 32 random samples).
        calib_random: this many random samples instead.
        weight_bits, act_bits, metric, threads, runtime, input_shapes, blocks: as `compile`
            (with `blocks`, the result's `blocks` [L] holds each layer's block).

    Returns:
        An `edgesim.allocation.AllocationResult` (bits [L, 2], predicted cost, sensitivity,
        front).
    """
    from edgesim.allocation import DATA_METHODS
    from edgesim.allocation import allocate as solve_allocation
    from edgesim.analysis_inputs import calibration_inputs
    from edgesim.budget import parse_budget

    g = load_graph(model, input_shapes)
    if isinstance(budget, str):
        budget = parse_budget(budget)
    inputs, labels = (calibration_inputs(g, calib, calib_random) if method in DATA_METHODS
                      else (None, None))
    return solve_allocation(g, resolve_target(target), method=method, budget=budget,
                            calib_inputs=inputs, labels=labels, weight_bits=tuple(weight_bits),
                            act_bits=act_bits, metric=metric, threads=threads, runtime=runtime,
                            blocks=blocks)
