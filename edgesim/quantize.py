"""`quantize_model`: an ONNX model + a bit assignment -> a quantised ONNX model on disk.

The steps (one line each in `quantize_model`): load and lower the model, resolve the
assignment, calibrate activations if any are quantised (a `.npz` keyed by input name, or
random samples, which the result says), run the quantize pass, verify, emit, write
atomically, and report per layer what was done and why, with the file size against
`sum(bits x params) / 8 + scales / zero points`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from compiler.emit import EmitOptions, emit, write
from compiler.errors import ModelError
from compiler.ir import CATEGORY_GEMM, KIND_CATEGORY, Graph
from compiler.passes.calibrate import CalibrationStats, calibrate
from compiler.passes.quantize import QuantOptions, container, quantize, weight_bytes
from compiler.verify import verify
from edgesim import assignment
from edgesim import calibration as cal
from edgesim.errors import UserError

DEFAULT_RANDOM_SAMPLES = 32
CALIB_BATCH = 32


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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def _layer_report(g: Graph, i: int, w_elems: np.ndarray) -> LayerReport | None:
    layer = g.layers[i]
    if KIND_CATEGORY[layer.kind] != CATEGORY_GEMM and not (
            layer.kind == "gather" and layer.inputs[0] in g.weights):
        return None
    q = layer.quant
    gran = q.granularity if q.w_bits is not None else None
    return LayerReport(layer.name, layer.kind, q.w_bits, q.a_bits, q.fmt, gran, q.block,
                       int(w_elems[i]), q.reason)


def _auto_embedding_bits(bits: np.ndarray, g: Graph) -> int | None:
    w = bits[assignment.quantisable(g), 0]
    w = w[w < 16]
    return None if w.size == 0 else container(int(w.min()))


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


def _batched_graph(model: Any, g: Graph, count: int,
                   input_shapes: Mapping[str, Sequence[int]] | None) -> Graph:
    """The model at a calibration batch size (fewer executor calls); `g` if it cannot be."""
    from edgesim.api import load_graph

    size = min(count, CALIB_BATCH)
    shapes = {n: (size, *g.types[n].shape[1:]) for n in g.inputs}
    if isinstance(model, Graph) or size <= 1 or input_shapes:
        return g
    try:
        return load_graph(model, shapes)
    except ModelError:  # e.g. a Reshape with the batch size baked in
        return g


def _calibrate(model: Any, g: Graph, data: cal.CalibrationData | None,
               input_shapes: Mapping[str, Sequence[int]] | None) -> CalibrationStats | None:
    if data is None:
        return None
    cg = _batched_graph(model, g, data.count, input_shapes)
    return calibrate(cg, cal.batches(cg, data), source=data.source)


def quantize_model(model: Any, bits: Any, calib: Any = None, calib_random: int | None = None,
                   out: str | os.PathLike = "model.quant.onnx", *,
                   options: QuantOptions | None = None, embedding_bits: int | str | None = "auto",
                   emit_options: EmitOptions | None = None,
                   input_shapes: Mapping[str, Sequence[int]] | None = None) -> QuantizeResult:
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

    Returns:
        Per-layer decisions, sizes and the calibration used.

    Raises:
        UserError / ModelError: bad bits, unknown layers, bad calibration data, or a model
            edgesim cannot load; nothing is written then.
    """
    from edgesim.api import load_graph

    g = load_graph(model, input_shapes)                                   # ONNX -> IR
    assign = assignment.resolve(g, bits)                                  # [L, 2] bits
    data = _calibration_data(g, calib, calib_random, bool((assign[:, 1] < 32).any()))
    stats = _calibrate(model, g, data, input_shapes)                      # activation ranges
    emb = _auto_embedding_bits(assign, g) if embedding_bits == "auto" else embedding_bits
    opts = replace(options or QuantOptions(), embedding_bits=emb)
    qg = quantize(g, assign, stats, opts)                                 # annotate + weights
    verify(qg)
    path = write(emit(qg, emit_options or EmitOptions()), out)            # atomic
    w_elems = g.layer_table().w_elems
    layers = tuple(r for i in range(len(qg.layers)) if (r := _layer_report(qg, i, w_elems)))
    return QuantizeResult(str(path), layers, os.path.getsize(path), weight_bytes(qg),
                          weight_bytes(g), data.source if data else "",
                          bool(data and data.random), g.notes)
