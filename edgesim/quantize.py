"""`quantize_model`: an ONNX model + a bit assignment -> a quantised ONNX model on disk.

The steps (one line each in `quantize_model`): load and lower the model, resolve the
assignment, calibrate activations if any are quantised (a `.npz` keyed by input name, or
random samples, which the result says), run the quantize pass, verify, emit, write
atomically, and report per layer what was done and why, with the file size against
`sum(bits x params) / 8 + scales / zero points`.

Calibration runs the float model in onnxruntime (`edgesim.float_pass`), as onnxruntime's own
`quantize_static` does: the model emitted in float, with the calibration tensors as extra
outputs (the emitter keeps IR tensor names). That is several times faster than the reference
executor, whose results it matches to float rounding (tests/compiler/test_emit.py checks the
float emission of every kind against the executor). The activation ranges' method choice
(`--calib-method auto`) and its trial runs live in `edgesim.ranges`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from compiler.emit import EmitOptions, emit, folded_layers, write
from compiler.ir import CATEGORY_GEMM, KIND_CATEGORY, Graph
from compiler.passes.calibrate import CalibrationStats
from compiler.passes.quant_bytes import weight_bytes
from compiler.passes.quantize import QuantOptions, quantize
from compiler.verify import verify
from edgesim import assignment
from edgesim import calibration as cal
from edgesim.errors import UserError
from edgesim.float_pass import FloatEnv, float_pass, onnxruntime_env
from edgesim.ranges import WeightCodes, chosen_ranges

DEFAULT_RANDOM_SAMPLES = 32


@dataclass(frozen=True)
class LayerReport:
    """What happened to one MAC or gather layer."""

    name: str
    kind: str
    w_bits: int | None
    a_bits: int | None
    format: str
    granularity: str | None
    block: int | None
    params: int
    reason: str
    planned_kernel: str = ""       # the format policy's kernel for the layer
    onnxruntime_kernel: str = ""   # what onnxruntime's optimised graph runs ("" = not checked)


@dataclass(frozen=True)
class QuantizeResult:
    """Result of `quantize_model`."""

    out: str
    layers: tuple[LayerReport, ...]
    file_bytes: int
    expected_bytes: int   # sum(bits x params) / 8 + scales / zero points (+ float constants)
    fp32_bytes: int       # every constant at its original width
    calibration: str      # where the activation ranges came from ("" if none were needed)
    calibration_random: bool
    notes: tuple[str, ...]
    # IR layers the file has no node for -> the layer (or graph input) making their output
    folded: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


KERNEL_CHECKS = ("fail", "report", "off")


def _kernel_check(qg: Graph, model: Any, mode: str) -> dict[str, Any]:
    """Layer name -> `edgesim.kernel_check.KernelRow` (empty when off); raises on a
    mismatch in "fail" mode."""
    if mode not in KERNEL_CHECKS:
        raise UserError("--kernel-check", f"must be one of {KERNEL_CHECKS}, got {mode!r}")
    if mode == "off":
        return {}
    from edgesim.kernel_check import check_kernels, require_match

    rows = check_kernels(qg, model)
    if mode == "fail":
        require_match(rows)
    return {r.layer: r for r in rows}


def _layer_report(g: Graph, i: int, w_elems: np.ndarray, kernels: Mapping[str, Any]
                  ) -> LayerReport | None:
    layer = g.layers[i]
    if KIND_CATEGORY[layer.kind] != CATEGORY_GEMM and not (
            layer.kind == "gather" and layer.inputs[0] in g.weights):
        return None
    q, k = layer.quant, kernels.get(layer.name)
    gran = q.granularity if q.w_bits is not None else None
    return LayerReport(layer.name, layer.kind, q.w_bits, q.a_bits, q.fmt, gran, q.block,
                       int(w_elems[i]), q.reason, k.planned if k else "",
                       k.onnxruntime if k else "")


def _auto_embedding_bits(bits: np.ndarray, g: Graph) -> int | None:
    from edgesim.tables import emitted_embedding_bits

    return emitted_embedding_bits(bits[assignment.quantisable(g), 0])


def _calibration_data(g: Graph, calib: Any, calib_random: int | None,
                      needed: bool) -> cal.CalibrationData | None:
    if calib is not None and calib_random is not None:
        raise UserError("--calib", "give a calibration file or --calib-random, not both")
    if calib is not None:
        return calib if isinstance(calib, cal.CalibrationData) else cal.read(g, calib)
    if calib_random is not None or needed:
        n = DEFAULT_RANDOM_SAMPLES if calib_random is None else calib_random
        return cal.random_samples(g, n)
    return None


def quantize_model(model: Any, bits: Any, calib: Any = None, calib_random: int | None = None,
                   out: str | os.PathLike = "model.quant.onnx", *,
                   options: QuantOptions | None = None, embedding_bits: int | str | None = "auto",
                   emit_options: EmitOptions | None = None,
                   input_shapes: Mapping[str, Sequence[int]] | None = None,
                   stats: CalibrationStats | None = None,
                   kernel_check: str = "report",
                   fit_stats: CalibrationStats | None = None,
                   range_budget_s: float | None = None,
                   held_outputs: tuple[dict[str, np.ndarray], ...] | None = None
                   ) -> QuantizeResult:
    """Quantise a model with a fixed bit assignment and write it for onnxruntime.

    Args:
        model: ONNX path, `zoo:NAME`, ModelProto or Graph.
        bits: 8 (W8A8), 4 (weight-only W4), another width, "fp32", a JSON path, a mapping
            {layer: bits | [w_bits, a_bits]} or an int array [L, 2].
        calib: a `.npz` path keyed by input name (or `edgesim.calibration.CalibrationData`).
        calib_random: calibrate on this many random samples instead.
        out: where to write the model (atomically; nothing is written on any error).
        options: quantize-pass options (`compiler.passes.quantize.QuantOptions`).
        embedding_bits: bits for large gather tables; "auto" follows the assignment (8 for
            W8A8, 4 for W4, none if nothing is quantised); None keeps them float.
        emit_options: emitter options (MatMulNBits accuracy level).
        input_shapes: static shapes for dynamic inputs.
        stats: activation statistics already collected over `calib` (`float_pass`), so that
            they are not collected again.
        kernel_check: "fail" (a layer onnxruntime runs with another kernel than planned is an
            error, nothing is written), "report" (record both kernels per layer) or "off".
        fit_stats: `FloatPass.fit_stats` of the pass that gave `stats`, if it has them.
        held_outputs: `FloatPass.held_outputs` of that pass, if it has them.
        range_budget_s: bound of the end-to-end range search's charged work in seconds
            (`edgesim.ranges`; None: none);
            when it stops the search, the result's notes say after how many assignments.

    Returns:
        Per-layer decisions, sizes and the calibration used.

    Raises:
        UserError / ModelError: bad bits, unknown layers, bad calibration data, a model
            edgesim cannot load or one already quantized; nothing is written then.
    """
    from edgesim.batch_check import per_sample_batch
    from edgesim.loading import float_graph

    g = float_graph(model, input_shapes)                                  # ONNX -> IR
    assign = assignment.resolve(g, bits)                                  # [L, 2] bits
    gptq = options is not None and options.rounding == "gptq"
    needed = bool((assign[:, 1] < 32).any()) or gptq
    data = _calibration_data(g, calib, calib_random, needed)
    if needed and data and (stats is None or (gptq and not stats.grams)):
        ref = float_pass(g, data, stats=True, grams=gptq)                 # ranges (+ X^T X)
        stats, fit_stats, held_outputs = ref.stats, ref.fit_stats, ref.held_outputs
    if isinstance(embedding_bits, str) and embedding_bits != "auto":
        raise UserError("--embedding-bits", f"must be bits or 'auto', got {embedding_bits!r}")
    emb = _auto_embedding_bits(assign, g) if isinstance(embedding_bits, str) else embedding_bits
    opts = replace(options or QuantOptions(), embedding_bits=emb)
    # one float session with every tensor as an output, built on first use, for both the
    # range search's forward passes and the own-layer check (it computes the tensors the
    # calibration-tensor session does, bit for bit: tests/edgesim/test_isolated_layers.py)
    float_env = functools.cache(functools.partial(onnxruntime_env, g, threads=None))
    codes: WeightCodes = {}  # each weight quantised once, however many range assignments
    stats, searched = chosen_ranges(g, assign, data, stats, opts, fit_stats,  # "auto"
                                     range_budget_s, float_env, held_outputs, codes)
    qg = quantize(g, assign, stats, opts, codes)                          # annotate + weights
    qg = _bias_corrected(qg, data, opts)                                  # low-bit mean shift
    verify(qg)
    notes = g.notes + searched + _extreme_layers(qg, data, g, float_env)  # last float use
    w_elems, fp32_bytes = g.layer_table().w_elems, weight_bytes(g)
    del g, float_env, codes  # with `spent_weights` below: float weights freed before emission
    qg = spent_weights(qg)
    emit_opts = emit_options or EmitOptions()
    model = emit(qg, emit_opts)                                           # IR -> ONNX
    model, fixed = per_sample_batch(qg, model, emit_opts)                 # run at batch 2
    kernels = _kernel_check(qg, model, kernel_check)                      # vs onnxruntime
    path = write(model, out)                                              # atomic
    layers = tuple(r for i in range(len(qg.layers))
                   if (r := _layer_report(qg, i, w_elems, kernels)))
    return QuantizeResult(str(path), layers, os.path.getsize(path), weight_bytes(qg),
                          fp32_bytes, data.source if data else "",
                          bool(data and data.random), notes + fixed, folded_layers(model))


def replaced_weights(qg: Graph) -> frozenset[str]:
    """The float weights of `qg` that only quantised layers read, each in its weight slot:
    emission writes their codes instead, so the float values are never written (the rule
    `weight_bytes` counts sizes by)."""
    from compiler.formats import WEIGHT_INPUT

    replaced: set[str] = set()
    read = set(qg.outputs)
    for layer in qg.layers:
        slot = WEIGHT_INPUT.get(layer.kind) if layer.quant.w_bits is not None else None
        for i, t in enumerate(layer.inputs):
            (replaced if i == slot else read).add(t)
    return frozenset((replaced - read) & qg.weights.keys())


def spent_weights(qg: Graph) -> Graph:
    """`qg` with its `replaced_weights` as shape-only placeholders (`compiler.ir.
    is_placeholder`: no memory behind them), so that the float model is not held through
    emission and serialisation (minilm W4: ~86 MiB of float weights)."""
    from types import MappingProxyType

    gone = replaced_weights(qg)
    if not gone:
        return qg
    # a one-element weight holds nothing worth freeing, and as a placeholder it would read
    # as a real zero (`is_placeholder` needs two elements)
    weights = {t: np.broadcast_to(np.zeros((), w.dtype), w.shape)
               if t in gone and w.size > 1 else w for t, w in qg.weights.items()}
    return replace(qg, weights=MappingProxyType(weights))


ERROR_BATCHES = 2  # calibration batches the per-layer error check runs
BIAS_SAMPLES = 16  # calibration samples that measure the mean output shift of low-bit layers


def _bias_corrected(qg: Graph, data: cal.CalibrationData | None, opts: QuantOptions) -> Graph:
    """`qg` with the biases of its low-bit weight-only layers corrected on the calibration
    data (`compiler.bias_correction`), when there is data and the options ask for it."""
    if data is None or opts.bias_correction_bits < 2:  # W4 without data: nothing imported
        return qg
    import itertools

    from compiler.bias_correction import bias_correct

    limit = max(1, BIAS_SAMPLES // cal.batch_size(qg))
    return bias_correct(qg, itertools.islice(cal.batches(qg, data), limit),
                        opts.bias_correction_bits)


def _extreme_layers(qg: Graph, data: cal.CalibrationData | None, g: Graph,
                    float_env: Callable[[], FloatEnv | None] | None = None
                    ) -> tuple[str, ...]:
    """A note per layer whose own quantisation error is extreme (`compiler.layer_error`),
    measured on the first calibration batches; none without data. `float_env()`: the float
    model's tensors per batch (`onnxruntime_env`), where the caller shares one."""
    if data is None:
        return ()
    import itertools

    from compiler.layer_error import CATASTROPHIC_SQNR_DB, catastrophic, layer_sqnr, measured

    # the float tensors from onnxruntime where it stands in for the executor (mobilenet_v2:
    # 1.6 s of the executor's forward passes)
    env = float_env() if float_env else onnxruntime_env(g)
    # only the tensors the measured layers read and write (not all of them: memory)
    read = [t for layer in qg.layers if measured(layer) for t in (*layer.inputs,
                                                                  *layer.outputs[:1]) if t]
    sqnr = layer_sqnr(qg, itertools.islice(cal.batches(qg, data), ERROR_BATCHES), g,
                      None if env is None else functools.partial(env, wanted=read),
                      _isolated_runner(qg))
    return tuple(f"layer {name}: its quantisation alone leaves {db:.1f} dB output SQNR "
                 f"(< {CATASTROPHIC_SQNR_DB:g} dB: extreme error; give it more bits)"
                 for name, db in catastrophic(sqnr).items())


def _isolated_runner(qg: Graph) -> Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]
                                            ] | None:
    """env -> every quantised layer's output from the float tensors `env`, as onnxruntime
    computes it (`compiler.layer_graph.isolated_layers`, one session; the same values as the
    numpy fake-quant rules, 15-20x faster on resnet18/mobilenet_v2); None where the graph
    cannot be emitted or loaded (then `layer_sqnr` runs the numpy rules)."""
    from compiler.errors import ModelError
    from compiler.layer_error import measured
    from compiler.layer_graph import isolated_layers, isolated_output
    from edgesim.evaluate import session

    lg = isolated_layers(qg, measured)
    if lg is None:
        return None
    try:
        sess = session(emit(lg, check=False), spin=False)
    except (ModelError, UserError):
        return None
    names = {isolated_output(t): t for layer in qg.layers for t in layer.outputs[:1]}

    def run(env: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        got = sess.run(list(lg.outputs), {t: env[t] for t in lg.inputs})
        return {names[t]: y for t, y in zip(lg.outputs, got)}
    return run
