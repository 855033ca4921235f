"""HAWQ and LRP sensitivities of a decoder's linears, per weight format, through the IR.

The decoder (any form the frontend reads: the zoo's decomposed graph, onnxruntime-genai's
GroupQueryAttention graph, opset-23 Attention) is loaded at a static calibration shape (batch
1, `seq` tokens, empty KV cache) with only its logits as output, and scored on calibration
text windows:

- HAWQ: Gauss-Newton Hutchinson traces of the KL to the float model's next-token
  distributions (`compiler.sensitivity.hawq`), score_l = Tr(H_l) / n_l;
- LRP: relevance share of each linear (`compiler.sensitivity.lrp`), score_l = C_l / ||W_l||^2.

A format's harm is score_l * ||Q_fmt(W_l) - W_l||^2 with Q_fmt the exact MatMulNBits
round trip of that format (bits, block size, zero points) of W_l as MatMul's B [in, out],
blocked along K as onnxruntime stores it, so block size and zero points are choices the
allocation sees, not just the bit count. For a quadratic loss with isotropic inputs HAWQ's
harm is twice the exact loss rise (tests/edgesim/test_llm_mixed_plans.py).

HAWQ's loss is the default for the decoder's 3-D logits: the squared error to the float
logits. On the tiny LM it ranks single-layer harm as onnxruntime measures it (Spearman 0.95,
LRP 0.91, bench/bench_llm_quality.py); the KL to the float next-byte distributions gave worse
plans there (3 average bits: ppl 3.47 vs 3.24 per byte).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from compiler.frontend import load
from compiler.frontend.load import read, source_interface
from compiler.ir import Graph
from compiler.packing import dequantize_matmulnbits, pack_matmulnbits
from compiler.passes.drop_dead import drop_dead
from compiler.sensitivity import hawq, lrp
from compiler.sensitivity.proxy import check_quantisable, weight_name
from edgesim.errors import UserError
from edgesim.llm.formats import parse_format

METHODS = ("hawq", "lrp")


def _static_dim(name: str, axis: int, dim: int | str, seq: int) -> int:
    """A symbolic decoder input dim at the calibration shape (batch 1, empty cache)."""
    if isinstance(dim, int) and dim > 0:
        return dim
    if axis == 0:
        return 1
    return 0 if name.startswith("past") and axis == 2 else seq


def calibration_graph(model: object, seq: int, output: str = "logits") -> Graph:
    """The decoder at batch 1, `seq` new tokens and an empty cache, `output` its only output.

    Raises:
        UserError: the model has no output named `output`.
    """
    proto, _ = read(model)  # type: ignore[arg-type]
    dims = source_interface(proto).dims
    shapes = {vi.name: [_static_dim(vi.name, a, d, seq) for a, d in enumerate(dims[vi.name])]
              for vi in proto.graph.input}
    g = load(proto, shapes)
    if output not in g.outputs:
        raise UserError("decoder", f"no output {output!r}; outputs are {list(g.outputs)}")
    return drop_dead(replace(g, outputs=(output,)))


def calibration_feeds(g: Graph, tokens: np.ndarray, seq: int) -> dict[str, np.ndarray]:
    """Non-overlapping `seq`-token windows of `tokens` as the graph's inputs (zeros elsewhere:
    empty caches, and an all-ones attention mask where the model takes one)."""
    n = len(tokens) // seq
    feeds = {}
    for name in g.inputs:
        spec = g.types[name]
        shape = (n,) + spec.shape[1:]
        fill = 1 if name == "attention_mask" else 0
        feeds[name] = np.full(shape, fill, np.dtype(spec.dtype))
    ids = next(n for n in g.inputs if "ids" in n)
    feeds[ids] = np.asarray(tokens[: n * seq], np.int64).reshape(n, seq)
    return feeds


def layer_scores(g: Graph, feeds: Mapping[str, np.ndarray], method: str,
                 seed: int = 0) -> dict[str, float]:
    """Per weight tensor, the method's per-layer factor (HAWQ trace / n, LRP C / ||W||^2)."""
    if method == "hawq":
        sens = hawq.sensitivity(g, dict(feeds), bits=(8,), seed=seed, max_iter=64)
    elif method == "lrp":
        sens = lrp.sensitivity(g, dict(feeds), bits=(8,))
    else:
        raise UserError("sensitivity", f"unknown method {method!r}; choose one of {METHODS}")
    layers = {layer.name: layer for layer in check_quantisable(g)}
    return {weight_name(layers[n]): float(s) for n, s in zip(sens.layers, sens.score)}


def format_error(w: np.ndarray, fmt: str) -> float:
    """||Q_fmt(W) - W||^2 for W [in, out] stored as `fmt` (0 for float formats)."""
    f = parse_format(fmt)
    if not f.quantized:
        return 0.0
    blob = pack_matmulnbits(w, f.bits, f.block, symmetric=not f.zero_point)
    deq = dequantize_matmulnbits(blob)
    deq = deq.T if deq.shape != w.shape else deq
    return float(np.sum((deq.astype(np.float64) - w) ** 2))


def matmul_weight(g: Graph, key: str) -> np.ndarray:
    """Weight tensor `key` as MatMul's B [in, out], the layout MatMulNBits blocks along K.

    The IR keeps a `linear` layer's weight as [out, in] (`compiler.ops.linear`); packing that
    as it stands would block along the outputs and price every format wrongly.
    """
    w = np.asarray(g.weights[key], np.float64)
    kinds = {layer.kind for layer in g.layers if key in layer.inputs}
    return w.T if "linear" in kinds else w


def format_sensitivity(g: Graph, scores: Mapping[str, float], names: Sequence[str],
                       choices: Sequence[str]) -> np.ndarray:
    """omega [L, B]: score of each linear (by `names`: the ONNX node `name` or `name/...`)
    times its squared weight error in each format."""
    out = np.zeros((len(names), len(choices)))
    for i, name in enumerate(names):
        key = _weight_of(name, scores)
        w = matmul_weight(g, key)
        out[i] = [max(scores[key], 0.0) * format_error(w, c) for c in choices]
    return out


def _weight_of(name: str, scores: Mapping[str, float]) -> str:
    """The weight tensor of linear `name` (its node is `name` or `name/MatMul`)."""
    for key in scores:
        if key.rsplit(".weight", 1)[0].split("/")[0] == name:
            return key
    raise UserError("sensitivity", f"linear {name!r} is not a weight of the graph")


def decoder_sensitivity(model: object, names: Sequence[str], choices: Sequence[str],
                        calib: np.ndarray, method: str, seq: int = 64) -> np.ndarray:
    """omega [L, B] of a float decoder's linears `names` in formats `choices` by `method`
    ("hawq" or "lrp"), scored on `seq`-token windows of the calibration tokens `calib`."""
    g = calibration_graph(model, seq)
    scores = layer_scores(g, calibration_feeds(g, calib, seq), method)
    return format_sensitivity(g, scores, names, choices)
