"""The quantize pass: a bit assignment + calibration -> a graph annotated for emission.

`quantize(g, bits, calib)` decides, layer by layer, what runs quantised and in which
onnxruntime format, and stores the quantised weights (codes, scales, zero points, int32
biases) in `Graph.weights` under `compiler.fake_quant.quant_names`. It never mutates `g`.
This module picks each layer's row of the format policy; `compiler.passes.quant_rows` holds
each row's quantiser, `compiler.passes.quant_bytes` the size the result should take on disk.

What gets quantised, and why:

- Only MAC layers (conv, conv_transpose, linear, matmul) take bits; everything else (norms,
  softmax, eltwise adds such as the attention mask, activations) stays float32, so no
  LayerNorm or Softmax input is ever quantised. onnxruntime's all-operator QDQ quantises
  exactly those and collapses a MiniLM's output (cosine 0.44); MatMul/Gemm/Conv-only QDQ
  reaches 0.94.
- W8A8 ("qdq"): weights per output channel, symmetric (narrow int8 grid, MSE-clipped by
  default), activations per tensor, unsigned with a zero point, from the calibration
  histogram. Conv requantises its output (that is what lets
  onnxruntime fuse it into QLinearConv); when a ReLU or Clip is the conv's only reader, the
  output range is the activation's, so the saturating requantisation does the ReLU's work.
  The range method is chosen per tensor by measured output error (`compiler.range_choice`)
  where the calibration statistics carry a choice (percentile otherwise).
  Linear layers keep a float output (MatMulIntegerToFloat): no second rounding.
- Activation x activation matmuls (attention scores, attention x values) stay float by
  default: both operands change with the input, their ranges are wide (softmax outputs span
  orders of magnitude), they hold no weights to shrink, and they are a small share of MACs.
  `QuantOptions.act_matmul="int8"` quantises them (MatMulIntegerToFloat).
- Weight-only N-bit: linear as MatMulNBits (per block of `block` along K), conv as
  DequantizeLinear on INT4/INT8 initializers (per output channel). Bits without an
  onnxruntime type (3, 5, 6, 7) keep their own grid inside the next container (4 or 8).
- Gather tables (embeddings) of at least `min_embedding` elements: weight-only int8/int4 via
  GatherBlockQuantized when `embedding_bits` is set; smaller tables stay float (reported).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import numpy as np

from compiler.errors import ModelError
from compiler.formats import ACT_BITS, FLOAT_BITS, NBITS_BLOCK, WEIGHT_BITS, Format, Policy, resolve
from compiler.ir import CATEGORY_GEMM, KIND_CATEGORY, Graph, Layer, Quant
from compiler.passes.calibrate import METHODS, CalibrationStats
from compiler.passes.quant_rows import PLANNERS, Ctx, Plan, kept, linear_readers
from compiler.quantizers import QuantizedTensor

FLOAT = FLOAT_BITS
W_BITS = (*WEIGHT_BITS, FLOAT)
A_BITS = (*ACT_BITS, FLOAT)


@dataclass(frozen=True)
class QuantOptions:
    """How the quantize pass quantises (defaults: the accuracy-first choices above).

    Attributes:
        granularity: weight scales "auto" (per channel for W8A8 and conv, per block for
            weight-only linear), or force "per_tensor" / "per_channel" / "per_block" where the
            format allows it.
        block: block length along the reduction axis (MatMulNBits, per-block int4).
        layer_blocks: layer name -> its own block (a per-layer choice of the allocator);
            layers not named take `block`.
        clip: weight range "mse" (clip-ratio search), "minmax", or "auto": MSE at 6 bits
            and below, where clipping pays, min/max at 7 and 8 bits, where it gains
            little and the search costs most of the pass's time.
        act_method: activation range "percentile", "mse", "minmax", "entropy", or "auto":
            per tensor the one of those with the least measured output error where
            `CalibrationStats.chosen` holds a choice (`compiler.range_choice`), else
            percentile.
        percentile: kept mass (percent) for "percentile".
        act_matmul: "float" keeps activation x activation matmuls float; "int8" quantises.
        embedding_bits: bits of large gather tables (4 or 8 containers; None keeps float).
        min_embedding: tables with fewer elements stay float.
        int8_dot: the target runs MatMulNBits with int8 activations (accuracy_level 4);
            without it, linear layers planned at (w < 8, a8) run weight-only in fp32.
        dynamic_int8: W8A8 conv / linear with activations quantised at run time
            (MatMulInteger / ConvInteger, as quantize_dynamic writes) instead of calibrated.
        requant_out: W8A8 linear / matmul layers requantise their output (QGemm /
            QLinearMatMul, as quantize_static writes) instead of a float output.
        nbits_float_zp: weight-only linear layers as MatMulNBits with float zero points
            (onnxruntime's non-prepacked slow path, as some exporters write it).
        dynamic_layers: W8A8 layers planned with `dynamic_int8` whatever the option says (a
            per-layer choice: `edgesim.alloc_dynamic` names convs whose static output
            requantisation costs them most).
        bias_correction_bits: weight-only linear / conv layers at this many weight bits or
            fewer get their mean output shift removed from the bias on calibration data
            (`compiler.bias_correction`, run by `edgesim.quantize` after this pass); 0: off.
    """

    granularity: str = "auto"
    block: int = NBITS_BLOCK
    layer_blocks: Mapping[str, int] = field(default_factory=dict)
    clip: str = "auto"
    act_method: str = "auto"
    percentile: float = 99.99
    rounding: str = "rtn"  # weight codes: "rtn" (nearest) or "gptq" (needs calib grams)
    act_matmul: str = "float"
    embedding_bits: int | None = None
    min_embedding: int = 65536
    int8_dot: bool = True
    dynamic_int8: bool = False
    requant_out: bool = False
    nbits_float_zp: bool = False
    bias_correction_bits: int = 4
    dynamic_layers: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        checks = {
            "granularity": self.granularity in ("auto", "per_tensor", "per_channel", "per_block"),
            "block": self.block >= 16 and self.block & (self.block - 1) == 0,
            "layer_blocks": all(b >= 16 and b & (b - 1) == 0 for b in self.layer_blocks.values()),
            "clip": self.clip in ("auto", "mse", "minmax"),
            "act_method": self.act_method in METHODS,
            "rounding": self.rounding in ("rtn", "gptq"),
            "percentile": 50.0 < self.percentile <= 100.0,
            "act_matmul": self.act_matmul in ("float", "int8"),
            "embedding_bits": self.embedding_bits in (None, *WEIGHT_BITS),
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ModelError("quantize options", f"invalid {bad[0]}: {getattr(self, bad[0])!r}")


# ----------------------------------------------------------------------------------------------
# Bits


def check_bits(g: Graph, bits: np.ndarray) -> np.ndarray:
    """Validate an assignment `[L, 2]` of (weight bits, activation bits); 32 means float.

    Raises:
        ModelError: on a wrong shape or unsupported bits, naming the layer.
    """
    bits = np.asarray(bits)
    if bits.shape != (len(g.layers), 2) or bits.dtype.kind not in "iu":
        raise ModelError("bits", f"expected integers of shape ({len(g.layers)}, 2), "
                         f"got {bits.dtype} {bits.shape}")
    for layer, (w, a) in zip(g.layers, bits.tolist()):
        if w not in W_BITS or a not in A_BITS:
            raise ModelError(f"layer {layer.name}", f"bits ({w}, {a}) not in weights {W_BITS} "
                             f"x activations {A_BITS}")
    return bits.astype(np.int64)


def _bits_or_none(b: int) -> int | None:
    return None if b == FLOAT else int(b)


def policy(options: QuantOptions) -> Policy:
    """The format policy these options choose."""
    gran = options.granularity if options.granularity != "auto" else "per_channel"
    return Policy(options.int8_dot, options.act_matmul == "int8", gran, options.dynamic_int8,
                  options.requant_out, options.nbits_float_zp)


def _row(ctx: Ctx, layer: Layer, w_bits: int | None, a_bits: int | None) -> Format:
    pol, const = policy(ctx.opts), ctx.g.const_weight(layer)
    pol = replace(pol, dynamic_int8=True) if layer.name in ctx.opts.dynamic_layers else pol
    row = resolve(layer.kind, const, w_bits, a_bits, pol)
    forced = ctx.opts.granularity
    if forced != "auto" and row.name != "float" and forced not in row.granularities:
        other = resolve(layer.kind, const, w_bits, a_bits, pol, forced)
        row = other if other.name != "float" else row
    return row


def _gather_bits(ctx: Ctx, layer: Layer, w_bits: int | None) -> int | None | Plan:
    table = ctx.g.weights.get(layer.inputs[0])
    if table is None or table.dtype.kind != "f":
        return Plan(Quant())
    if table.ndim != 2 or layer.attrs.get("axis") != 0 or layer.attrs.get("elements"):
        return kept("float32: only 2-D tables gathered along rows are quantised")
    bits = w_bits if w_bits is not None else _embedding_bits(ctx, table)
    if bits is None:
        return kept(f"float32: table of {table.size} elements (embedding_bits="
                     f"{ctx.opts.embedding_bits}, min_embedding={ctx.opts.min_embedding})")
    return bits


def _embedding_bits(ctx: Ctx, table: np.ndarray) -> int | None:
    return ctx.opts.embedding_bits if table.size >= ctx.opts.min_embedding else None


def _plan(ctx: Ctx, layer: Layer, w_bits: int | None, a_bits: int | None) -> Plan:
    if layer.kind == "gather":
        gathered = _gather_bits(ctx, layer, w_bits)
        if isinstance(gathered, Plan):
            return gathered
        w_bits = gathered
    elif KIND_CATEGORY[layer.kind] != CATEGORY_GEMM:
        if w_bits is not None or a_bits is not None:
            raise ModelError(f"layer {layer.name}", f"a {layer.kind} layer has no bits to "
                             "choose (only conv, linear, matmul and gather layers do)")
        return Plan(Quant())
    row = _row(ctx, layer, w_bits, a_bits)
    bits = (w_bits, a_bits) if row.name == "float" else _row_bits(row, w_bits, a_bits)
    plan = PLANNERS[row.name](ctx, layer, row, *bits)
    if a_bits == 16:  # calibrated 16-bit grids have no onnxruntime kernel and ~fp32 accuracy
        note = f"{plan.quant.reason}; 16-bit activations run as float32"
        plan = replace(plan, quant=replace(plan.quant, reason=note))
    return plan


def _row_bits(row: Format, w_bits: int | None, a_bits: int | None
              ) -> tuple[int | None, int | None]:
    """The bits a row's planner quantises at (what the policy kept of the plan's)."""
    w = w_bits if row.w_bits != (None,) else None
    return w, a_bits if a_bits in row.a_bits else None


def quantize(g: Graph, bits: np.ndarray, calib: CalibrationStats | None = None,
             options: QuantOptions = QuantOptions(),
             weight_codes: dict[tuple[str, int, str], QuantizedTensor] | None = None) -> Graph:
    """Annotate every layer with its quantisation and store the quantised weights.

    Args:
        g: the float model.
        bits: int `[L, 2]` (weight bits, activation bits) aligned with `g.layers`; 32 = float.
        calib: calibration statistics (needed wherever activations are quantised).
        options: how to quantise (see `QuantOptions`).
        weight_codes: a dict the caller keeps across calls with the same `g`, `options` and
            Gram matrices, whose statistics differ only in activation ranges (the range
            search quantises one model under many): each weight is quantised into it once
            and read back after (the same arrays; weight codes do not depend on activation
            ranges). None: every call quantises every weight.

    Returns:
        A new graph whose layers carry `Quant` annotations and whose weights include the
        quantised codes, scales, zero points and int32 biases.

    Raises:
        ModelError: on unsupported bits, bits on a layer that has none to choose, or
            quantised activations without calibration statistics.
    """
    bits = check_bits(g, bits)
    ctx = Ctx(g, calib, options, linear_readers(g), weight_codes, g.consumers())
    layers, weights = [], dict(g.weights)
    for layer, (w, a) in zip(g.layers, bits.tolist()):
        plan = _plan(ctx, layer, _bits_or_none(w), _bits_or_none(a))
        layers.append(replace(layer, quant=plan.quant))
        weights.update(plan.weights)
    return replace(g, layers=tuple(layers), weights=MappingProxyType(weights))
