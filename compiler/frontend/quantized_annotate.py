"""Quantized layers of a model read back (`compiler.frontend.quantized`): `annotate` gives each
marked IR layer the `Quant` of the `compiler.formats` policy row it runs as.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from compiler.formats import Policy, host_arch, resolve
from compiler.frontend.quantized_reader import NBITS_UNPACKED, Mark
from compiler.ir import Graph, Layer, Quant

DYNAMIC_SOURCES = frozenset({"MatMulInteger", "ConvInteger", "DynamicQuantizeLSTM"})

# Architecture (`CpuTarget.arch`) -> whether onnxruntime runs a QDQ GEMM whose int8 activation
# QuantizeLinear has several readers (`Mark.shared_int8`) on its integer kernel. The QDQ
# fusions take int8 activations where QDQIsInt8Allowed(): true under MLAS_TARGET_ARM_ANY only
# (onnxruntime qdq_transformer/selectors_actions/qdq_selector_action_transformer.h). On x86
# int8 activations reach QLinearConv / QLinearMatMul only through QDQS8ToU8Transformer, which
# converts a QuantizeLinear with one consumer (qdq_s8_to_u8.cc): the shared ones run fp32.
SHARED_INT8_FUSES = {"arm64": True, "x86_64": False}


def annotate(g: Graph, marks: Mapping[str, Mark], policy: Policy | None = None,
             arch: str | None = None) -> Graph:
    """Give every marked layer the `Quant` of the format-policy row it runs as on onnxruntime
    built for `arch` (`SHARED_INT8_FUSES`; None: this machine's, where `check_kernels` runs
    the file)."""
    policy = policy or Policy(act_matmul_int8=True)  # the file quantises what it quantises
    fuses = SHARED_INT8_FUSES[arch or host_arch()]
    unrolled = {f"{name}/": m for name, m in marks.items() if m.unrolled}
    layers = tuple(_annotated(g, layer, _as_run(marks.get(layer.name) or
                                                _unrolled(layer, unrolled), fuses), policy)
                   for layer in g.layers)
    return replace(g, layers=layers)


def _unrolled(layer: Layer, marks: Mapping[str, Mark]) -> Mark | None:
    """The mark of the LSTM `layer` was unrolled from (`expand_lstm` names its nodes
    `<LSTM name>/...`); the policy leaves its element-wise layers float."""
    return next((m for prefix, m in marks.items() if layer.name.startswith(prefix)), None)


def _as_run(mark: Mark | None, shared_int8_fuses: bool) -> Mark | None:
    """`mark` as the runtime runs it: activations float where a shared int8 one does not fuse."""
    if mark is None or not mark.shared_int8 or shared_int8_fuses:
        return mark
    return replace(mark, a_bits=None, requant=False)


def _annotated(g: Graph, layer: Layer, mark: Mark | None, policy: Policy) -> Layer:
    if mark is None:
        return layer
    const = g.const_weight(layer)
    policy = replace(policy, dynamic_int8=mark.source in DYNAMIC_SOURCES,
                     requant_out=mark.requant, nbits_float_zp=mark.source == NBITS_UNPACKED)
    row = resolve(layer.kind, const, mark.w_bits, mark.a_bits, policy, mark.granularity)
    if row.name == "float":
        return layer
    w = mark.w_bits if row.w_bits != (None,) else None
    a = mark.a_bits if mark.a_bits in row.a_bits else None
    n_act = len([t for t in layer.inputs[:2] if t and t not in g.weights])
    scales = (1.0,) * n_act if row.act == "static" else ()
    out: tuple[float | None, int | None] = (1.0, 0) if row.requant else (None, None)  # any grid
    quant = Quant(w, a, mark.granularity if w is not None else "per_tensor", mark.block, True,
                  "minmax", row.fmt, scales, (0,) * len(scales), *out,
                  reason=f"read from {mark.source or 'QuantizeLinear'}: {row.pattern}")
    return replace(layer, quant=quant)
