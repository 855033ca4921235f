"""What a quantised graph's weights take on disk (`weight_bytes`): the size the emitted
model's constants should have, which the allocator's size budgets and the report check the
written file against."""

from __future__ import annotations

from compiler.fake_quant import quant_names
from compiler.formats import WEIGHT_INPUT
from compiler.ir import Graph, Layer


def _quant_bytes(g: Graph, layer: Layer) -> tuple[float, float]:
    """Bytes of one quantised weight: (bits x params / 8, scales and the zero points the
    emitted format writes -- shared by the layers that read the weight at the same
    quantisation; the layer's own int32-bias scales)."""
    q, names = layer.quant, quant_names(layer.name)
    codes = g.weights[names.codes]
    if q.fmt == "fp16":
        return codes.nbytes, 0.0
    scale = g.weights[names.scale]
    assert q.w_bits is not None  # a layer with weight codes has weight bits
    total = codes.size * q.w_bits / 8 + scale.nbytes
    if q.fmt == "qdq":  # uint8 zero points, and the int32 bias's dequantisation scale
        return total + scale.size, 4.0 * scale.size * (names.bias in g.weights)
    return total, 0.0


def _quant_key(layer: Layer, slot: int) -> tuple[object, ...]:
    """What a quantised weight's stored codes depend on besides the layer: layers with one
    key write one copy (`compiler.emit.builder.Builder.const`)."""
    q = layer.quant
    return (layer.inputs[slot], q.w_bits, q.granularity, q.block, q.clip, q.fmt)


def weight_bytes(g: Graph) -> int:
    """What the emitted model's constants should take on disk: float weights at their own
    width, quantised weights at `bits x params / 8` plus scales and zero points.

    Shared constants count once, and so do the codes of a weight several layers quantise
    alike; the float weight a quantised layer replaces counts not at all.
    """
    total, seen = 0.0, set[object]()
    for layer in g.layers:
        slot = WEIGHT_INPUT.get(layer.kind) if layer.quant.w_bits is not None else None
        for i, t in enumerate(layer.inputs):
            if t in g.weights and i != slot and t not in seen:
                seen.add(t)
                total += g.weights[t].nbytes
        if slot is not None:
            shared, own = _quant_bytes(g, layer)
            key = _quant_key(layer, slot)
            total += own + (shared if key not in seen else 0.0)
            seen.add(key)
    return int(round(total))
