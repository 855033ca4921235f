"""`compile_model`: ONNX model + target -> packed mixed-precision model, reports and plot.

The order of the whole flow, one line per step, is in `compile_model`. Outputs are written into
a temporary folder beside OUTDIR and renamed into place at the end, so a failed run leaves no
OUTDIR behind (and an existing OUTDIR is replaced only by a complete one).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from compiler.emit.write import current_umask
from compiler.errors import ModelError
from compiler.ir import Graph
from edgesim import calibration as cal
from edgesim.allocation import (
    DATA_METHODS,
    allocate,
    fixed_bits,
    sensitivity,
    settled_rule,
)
from edgesim.budget import Budget
from edgesim.errors import UserError
from edgesim.progress import Progress
from edgesim.report import CompileResult, build_result, write_reports
from edgesim.simulate import totals

DEFAULT_CALIB_SAMPLES = 32
ANALYSIS_SAMPLES = 32  # calibration samples the sensitivity analysis uses
# Most samples per executor call in the analysis, per method. HAWQ probes one sample at a time:
# a Gauss-Newton probe's gradient sums its batch's samples, and their cross terms double its
# variance already at batch 2 (224x224 resnet50 needs 2 probes at batch 2 for a 5% relative
# standard error, 1 at batch 1: 19.3 s -> 10.8 s). LRP is deterministic and batches freely.
ANALYSIS_BATCH = {"hawq": 1, "lrp": 2}
ANALYSIS_MEMORY = 256e6  # bytes of float32 activations one analysis batch may keep


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
    quiet: bool = False
    command: str = ""
    analysis_budget_s: float | None = None  # HAWQ's time bound (None: until its precision)


def _calibration(g: Graph, calib: Any, calib_random: int | None, name: str = "calibration data"
                 ) -> tuple[cal.CalibrationData, np.ndarray | None]:
    """Samples (and labels) from a .npz path, an in-memory mapping, or random samples."""
    if calib is not None and calib_random is not None:
        raise UserError("--calib", "give a calibration file or --calib-random, not both")
    if calib is None:
        return cal.random_samples(g, calib_random or DEFAULT_CALIB_SAMPLES), None
    if isinstance(calib, Mapping):
        arrays = dict(calib)
        labels = arrays.pop(cal.LABELS_KEY, None)
        return cal.from_arrays(g, arrays, name, labels)
    return cal.read_labelled(g, calib)


def _built(model: Any) -> Any:
    """`zoo:NAME` built into its ModelProto, anything else as given: the analysis lowers the
    model a second time (at its batch size), and building a zoo model costs ~0.4 s."""
    from edgesim.api import ZOO_PREFIX, zoo_model

    if isinstance(model, str) and model.startswith(ZOO_PREFIX):
        return zoo_model(model[len(ZOO_PREFIX):])
    return model


def _settled(g: Graph, ga: Graph, target: Any, options: CompileOptions) -> Any:
    """HAWQ's stopping rule for this compile's allocation (None for the other methods)."""
    if options.method != "hawq":
        return None
    return settled_rule(g, ga, target, budget=options.budget, weight_bits=options.weight_bits,
                        act_bits=options.act_bits, metric=options.metric,
                        threads=options.threads, runtime=options.runtime)


def _analysis_graph(model: Any, g: Graph, count: int, method: str,
                    input_shapes: Mapping[str, Sequence[int]] | None) -> Graph:
    """`g` at `method`'s analysis batch size (one executor call per batch)."""
    from edgesim.api import load_graph

    size = analysis_batch(g, count, method)
    if isinstance(model, Graph) or size <= 1 or input_shapes:
        return g
    try:
        return load_graph(model, {n: (size, *g.types[n].shape[1:]) for n in g.inputs})
    except ModelError:  # a Reshape with the batch size baked in: analyse at batch 1
        return g


def analysis_batch(g: Graph, count: int, method: str) -> int:
    """Samples per analysis batch: at most ANALYSIS_BATCH[method], and no more than keep
    ANALYSIS_MEMORY bytes of float32 activations (the reverse pass holds every tensor of its
    batch; 224x224 mobilenet_v2 has 53 MB per sample, resnet50 106 MB)."""
    per_sample = 4.0 * float(g.layer_table().a_out_elems.sum()) / max(
        1, g.types[g.inputs[0]].shape[0])
    return max(1, min(count, ANALYSIS_BATCH[method],
                      int(ANALYSIS_MEMORY // max(per_sample, 1.0))))


def _analysis_inputs(data: cal.CalibrationData, labels: np.ndarray | None, ga: Graph
                     ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The first whole analysis batches of the samples (at most ANALYSIS_SAMPLES)."""
    batch = ga.types[ga.inputs[0]].shape[0]
    n = max(batch, min(data.count, ANALYSIS_SAMPLES) // batch * batch)
    return ({k: v[:n] for k, v in data.samples.items()},
            None if labels is None else labels[:n])


def _check_memory(g: Graph, bits: np.ndarray, target: Any, which: str,
                  suggest: bool = True) -> None:
    """An MCU must hold the weights in flash and the largest layer's activations in SRAM;
    `which` says what assignment `bits` is, for the message."""
    if getattr(target, "kind", "") != "mcu":
        return
    from hwmodels.mcu import check_fit

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


def _smallest(g: Graph, target: Any, weight_bits: Sequence[int]) -> np.ndarray:
    """The assignment with the least memory: MAC layers at the fewest bits, 8-bit activations."""
    from edgesim.assignment import quantisable

    bits = fixed_bits(g, target)
    bits[quantisable(g)] = (min(weight_bits), 8)
    return bits


def _fidelity(g: Graph, model_path: Path, reference: np.ndarray, data: cal.CalibrationData,
              labels: np.ndarray | None) -> dict[str, Any]:
    """Emitted model (run in onnxruntime) against the float model's first output `reference`
    over `data` (`float_pass`, or HAWQ's recorded forward passes), sample by sample at the
    deployment batch size."""
    from edgesim.evaluate import agreement, run_batches

    (out,) = g.outputs[:1]
    got_arr = np.concatenate([o[out] for o in run_batches(model_path, cal.batches(g, data))])
    ref_flat = reference.reshape(len(reference), -1)
    got_flat = got_arr.reshape(len(got_arr), -1)
    n = len(ref_flat)
    fp32_acc = None
    if labels is not None and ref_flat.shape[1] > 1:
        from edgesim.evaluate import accuracy
        fp32_acc = accuracy(ref_flat, labels[:n])
    a = agreement(ref_flat, got_flat, None if labels is None else labels[:n])
    return {"samples": n, "data": data.source, "output": out, "cosine": a.cosine,
            "sqnr_db": a.sqnr_db, "top1_agreement": a.top1_agreement,
            "accuracy": a.accuracy, "fp32_accuracy": fp32_acc}


def compile_model(model: Any, target: Any, outdir: str | os.PathLike, *, calib: Any = None,
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
    from edgesim.api import load_graph, resolve_target
    from edgesim.quantize import FloatPassRecorder, float_pass, quantize_model

    progress = Progress(total=6, quiet=options.quiet)
    outdir = Path(outdir)
    _check_outdir(outdir)
    with progress.phase("loading model and target"):
        source = _built(model)
        g = load_graph(source, options.input_shapes)                      # ONNX -> IR
        tgt = resolve_target(target)                                       # YAML -> target
        data, labels = _calibration(g, calib, calib_random)               # validated samples
        held_out = (data, labels) if eval_data is None else _calibration(
            g, eval_data, None, "held-out data")
        _check_memory(g, _smallest(g, tgt, options.weight_bits), tgt,
                      f"even with every weight at {min(options.weight_bits)} bits", False)
    with progress.phase(f"sensitivity ({options.method})"):
        ga = (_analysis_graph(source, g, data.count, options.method, options.input_shapes)
              if options.method in DATA_METHODS else g)
        inputs, in_labels = _analysis_inputs(data, labels, ga)
        # HAWQ's forward passes over the calibration samples can also give the activation
        # ranges and the fidelity reference, which then need no pass of their own
        recorder = FloatPassRecorder(g) if ga is g and options.method == "hawq" else None
        sens = sensitivity(ga, options.method, inputs, in_labels, options.weight_bits,
                           observe=recorder, analysis_budget_s=options.analysis_budget_s,
                           settled=_settled(g, ga, tgt, options))
    del ga, source  # copies of the weights nothing needs any more
    with progress.phase("allocating bits"):
        alloc = allocate(g, tgt, sens=sens, budget=options.budget,
                         weight_bits=options.weight_bits, act_bits=options.act_bits,
                         metric=options.metric, threads=options.threads,
                         runtime=options.runtime)                          # exact MCKP
        _check_memory(g, alloc.bits, tgt, "with the chosen bits")
    staging = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", dir=outdir.parent))
    os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp makes 0700
    try:
        with progress.phase("quantising and emitting"):
            model_path = staging / f"model.{tgt.name}.onnx"
            bits = _emitted_bits(g, alloc.bits)
            acts = bool((bits[:, 1] < 32).any())
            # one pass of the float model over the calibration data (onnxruntime's, unless
            # the analysis's covered it): activation ranges, and the fidelity reference if
            # that data is also the held-out set
            ref = recorder.result(data) if recorder else None
            if ref is None and (acts or eval_data is None):
                ref = float_pass(g, data, stats=acts)
            quant = quantize_model(g, bits, calib=data, out=model_path,   # g: not loaded again
                                   stats=ref and ref.stats)
        with progress.phase("measuring fidelity in onnxruntime"):
            if eval_data is not None:
                ref = float_pass(g, held_out[0], stats=False)
            fidelity = _fidelity(g, model_path, ref.outputs, *held_out)
        with progress.phase("writing reports"):
            baseline = _baseline(g, tgt, options)
            result = build_result(g, tgt, alloc, quant, fidelity, baseline, data, options,
                                  outdir, progress.timings)
            write_reports(result, alloc, staging)
        _replace_dir(staging, outdir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return replace(result, files={k: str(outdir / Path(v).name) for k, v in result.files.items()})


def _baseline(g: Graph, target: Any, options: CompileOptions) -> Any:
    """Float32 totals on the target (layers it cannot run in float take their fallbacks)."""
    from edgesim.simulate import runnable

    fp32 = np.full((len(g.layers), 2), 32, dtype=np.int64)
    return totals(runnable(g, fp32, target, options.threads, options.runtime)[1])


def _check_outdir(outdir: Path) -> None:
    parent = outdir.resolve().parent
    if not parent.is_dir():
        raise UserError(str(outdir), f"parent folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UserError(str(outdir), f"cannot write in {parent}")
    if outdir.exists() and not outdir.is_dir():
        raise UserError(str(outdir), "exists and is not a folder")


def _replace_dir(staging: Path, outdir: Path) -> None:
    """Move the finished staging folder to `outdir` (replacing an older one)."""
    if outdir.exists():
        old = outdir.with_name(f".{outdir.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        outdir.rename(old)
        staging.rename(outdir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(outdir)
