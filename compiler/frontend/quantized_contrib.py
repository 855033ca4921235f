"""Quantized ops read as float ones: `com.microsoft::MatMulNBits`, `MatMulIntegerToFloat`,
`GatherBlockQuantized` and `DynamicQuantizeLSTM` rewritten to MatMul (+ Add bias) / Gather /
LSTM on their dequantised weights (marked on the reader), and the reader's MatMul + Add made
a Gemm where the input is 2-D (`as_gemm`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
from onnx import helper, numpy_helper

from compiler.frontend.quantized_dynamic import dynamic_lstm
from compiler.frontend.quantized_reader import NBITS_UNPACKED, Mark, Reader, act_source, attr
from compiler.frontend.static_shapes import skeleton


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    """Tensor ranks onnx's shape inference knows (contrib ops' outputs stay unknown)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton(model))  # no weights: fast
    except Exception:  # noqa: BLE001 - ranks are a hint; without them MatMul + Add is used
        return {}
    infos = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    return {v.name: len(v.type.tensor_type.shape.dim) for v in infos
            if v.type.tensor_type.HasField("shape")}


def nbits(r: Reader, node: onnx.NodeProto, nodes: list[onnx.NodeProto]) -> None:
    """MatMulNBits -> MatMul (+ Add bias) on its dequantised weight, marked."""
    from compiler.packing import MatMulNBitsBlob, dequantize_matmulnbits

    k, n = int(attr(node, "K")), int(attr(node, "N"))
    bits, block = int(attr(node, "bits", 4)), int(attr(node, "block_size"))
    ins = list(node.input) + [""] * (6 - len(node.input))
    zp = r.array(ins[3]) if ins[3] else None
    float_zp = zp is not None and zp.dtype.kind == "f"

    def value() -> np.ndarray:
        scales = r.constant(ins[2]).astype(np.float32).reshape(n, -1)
        blob = MatMulNBitsBlob(r.constant(ins[1]), scales, None if zp is None or float_zp
                               else zp.reshape(n, -1), k, n, bits, block)
        w = dequantize_matmulnbits(blob)  # [K, N], at the default zero point if it is float
        if float_zp:  # (q - 2^(b-1)) * s + (2^(b-1) - zp) * s
            assert zp is not None
            shift = (2.0 ** (bits - 1) - zp.astype(np.float32).reshape(n, -1)) * scales
            w = w + shift[:, np.arange(k) // block].T
        return w

    w = r.add_stored(tuple(ins[1:5]), f"{node.name}.weight", value)
    acc = int(attr(node, "accuracy_level", 0))
    mark = Mark(bits, 8 if acc == 4 else None, "per_block", block, acc == 4, "MatMulNBits")
    if float_zp or ins[4]:  # not prepacked: onnxruntime dequantises B per run (#28552)
        mark = replace(mark, a_bits=None, dynamic=False, source=NBITS_UNPACKED)
    _matmul(r, node, ins[0], w, ins[5], mark, nodes)


def _matmul(r: Reader, node: onnx.NodeProto, x: str, w: str, bias: str, mark: Mark,
            nodes: list[onnx.NodeProto]) -> None:
    """x @ w (+ bias) as MatMul (+ Add); `as_gemm` makes it a Gemm where x is 2-D (the form
    a float linear layer is written in)."""
    out = node.output[0]
    mm_out = out if not bias else f"{out}.matmul"
    nodes.append(helper.make_node("MatMul", [x, w], [mm_out], name=node.name))
    if bias:
        nodes.append(helper.make_node("Add", [mm_out, bias], [out], name=f"{node.name}.bias"))
    r.weights[node.name] = mark


def as_gemm(model: onnx.ModelProto, names: set[str]) -> None:
    """MatMul + bias Add written by the reader -> Gemm(transB) where the input is 2-D."""
    ranks = _ranks(model)
    inits = {t.name: t for t in model.graph.initializer}
    nodes, out = list(model.graph.node), []
    skip = set()
    for i, node in enumerate(nodes):
        nxt = nodes[i + 1] if i + 1 < len(nodes) else None
        if node.name in names and nxt is not None and nxt.name == f"{node.name}.bias" and \
                ranks.get(node.input[0]) == 2 and node.input[1] in inits:
            if f"{node.input[1]}.T" not in inits:  # a shared weight is transposed once
                w = numpy_helper.to_array(inits[node.input[1]]).T
                inits[f"{node.input[1]}.T"] = numpy_helper.from_array(w, f"{node.input[1]}.T")
                model.graph.initializer.append(inits[f"{node.input[1]}.T"])
            out.append(helper.make_node("Gemm", [node.input[0], f"{node.input[1]}.T",
                                                 nxt.input[1]], list(nxt.output),
                                        name=node.name, transB=1))
            skip.add(i + 1)
        elif i not in skip:
            out.append(node)
    del model.graph.node[:]
    model.graph.node.extend(out)


def integer_to_float(r: Reader, node: onnx.NodeProto, nodes: list[onnx.NodeProto]) -> bool:
    """MatMulIntegerToFloat on QuantizeLinear codes -> MatMul (+ Add bias) on the float input
    and the dequantised weight, marked; False if it reads no such codes and constant weight."""
    ins = list(node.input) + [""] * (7 - len(node.input))
    src, wq = act_source(r, ins[0]), r.array(ins[1])
    if src is None or wq is None:
        return False
    ws = r.constant(ins[3]).astype(np.float32)
    wz = r.constant(ins[5]).astype(np.float32) if ins[5] else np.zeros_like(ws)
    w = r.add_stored((ins[1], ins[3], ins[5]), f"{node.name}.weight",
                     lambda: (wq.astype(np.float32) - wz) * ws)
    gran = "per_tensor" if ws.size == 1 else "per_channel"
    _matmul(r, node, src[0], w, ins[6], Mark(8, src[1], gran, source="MatMulIntegerToFloat"),
            nodes)
    return True


def gather_block(r: Reader, node: onnx.NodeProto, nodes: list[onnx.NodeProto]) -> bool:
    """GatherBlockQuantized -> Gather on the dequantised table, marked; False if the table or
    its scales are not constants."""
    data, scale = r.array(node.input[0]), r.array(node.input[2])
    if data is None or scale is None:
        return False
    bits, block = int(attr(node, "bits", 4)), int(attr(node, "block_size", 128))
    zp = 128.0 if data.dtype == np.uint8 and bits == 8 else 0.0
    s = np.repeat(scale.astype(np.float32), block, axis=-1)[..., :data.shape[-1]]
    r.add(f"{node.name}.table", (data.astype(np.float32) - zp) * s)
    nodes.append(helper.make_node("Gather", [f"{node.name}.table", node.input[1]],
                                  list(node.output), name=node.name, axis=0))
    r.weights[node.name] = Mark(bits, None, "per_block", block, source="GatherBlockQuantized")
    return True


def lstm(r: Reader, node: onnx.NodeProto, nodes: list[onnx.NodeProto]) -> None:
    """DynamicQuantizeLSTM -> LSTM on the dequantised weights, marked for its unrolled layers:
    8-bit weights, activations quantised at run time."""
    lstm, gran = dynamic_lstm(r, node)
    nodes.append(lstm)
    r.weights[lstm.name] = Mark(8, 8, gran, None, True, node.op_type, unrolled=True)
