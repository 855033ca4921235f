"""Decoders through the IR: an onnxruntime-genai-shaped graph (GroupQueryAttention with rotary,
SkipSimplifiedLayerNormalization, opset-23 RMSNormalization) built from the zoo decoder's
weights gives the zoo decoder's logits in onnxruntime and in edgesim's executor, and HAWQ /
LRP run on both forms (HAWQ's Gauss-Newton traces agree across the forms: same function)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.executor import run
from edgesim.errors import UserError
from edgesim.llm.sensitivity import (
    calibration_feeds,
    calibration_graph,
    format_error,
    format_sensitivity,
    layer_scores,
)
from edgesim.zoo.decoder import DecoderShape, kv_decoder, linear_names
from tests.compiler.opcheck import run_ort

SHAPE = DecoderShape(vocab=48, hidden=64, layers=2, heads=4, kv_heads=2, intermediate=96,
                     max_context=64)   # head_dim 16: onnxruntime's GQA needs a multiple of 16
MS = "com.microsoft"


class _Genai:
    """A tiny writer of the builder's node patterns."""

    def __init__(self, weights: dict[str, np.ndarray]):
        self.w, self.nodes, self.inits, self.n = weights, [], {}, 0

    def op(self, op_type: str, ins: list[str], outs: int = 1, node: str = "",
           **attrs: object) -> list[str]:
        self.n += 1
        names = [f"t{self.n}_{i}" for i in range(outs)]
        domain = MS if op_type in ("GroupQueryAttention", "SkipSimplifiedLayerNormalization") \
            else ""
        self.nodes.append(helper.make_node(op_type, ins, names, node or f"n{self.n}", domain=domain,
                                           **attrs))
        return names

    def const(self, name: str) -> str:
        self.inits[name] = self.w[name]
        return name

    def linear(self, x: str, name: str) -> str:
        return self.op("MatMul", [x, self.const(f"{name}.weight")], node=name)[0]

    def skip_norm(self, x: str, resid: str, weight: str) -> tuple[str, str]:
        y, _, _, total = self.op("SkipSimplifiedLayerNormalization",
                                 [x, resid, self.const(weight)], 4, epsilon=1e-6)
        self.nodes[-1].output[1] = self.nodes[-1].output[2] = ""   # as the builder writes it
        return y, total


def _attention(b: _Genai, h: str, i: int, lens: tuple[str, str], dh: int) -> str:
    p = f"layers.{i}.self_attn"
    q, k, v = (b.linear(h, f"{p}.{t}_proj") for t in "qkv")
    y, pk, pv = b.op("GroupQueryAttention", [q, k, v, f"past_key_values.{i}.key",
                                             f"past_key_values.{i}.value", *lens, "cos", "sin"],
                     3, num_heads=SHAPE.heads, kv_num_heads=SHAPE.kv_heads, do_rotary=1)
    b.presents += [(f"present.{i}.key", pk), (f"present.{i}.value", pv)]
    return b.linear(y, f"{p}.o_proj")


def _mlp(b: _Genai, h: str, i: int) -> str:
    g = b.linear(h, f"layers.{i}.mlp.gate_proj")
    act = b.op("Mul", [g, b.op("Sigmoid", [g])[0]])[0]
    up = b.linear(h, f"layers.{i}.mlp.up_proj")
    return b.linear(b.op("Mul", [act, up])[0], f"layers.{i}.mlp.down_proj")


def _lengths(b: _Genai) -> tuple[str, str]:
    """seqlens_k = sum(mask) - 1 and total_sequence_length, as the builder computes them."""
    total = b.op("ReduceSum", ["attention_mask", b.const("one_axis")], keepdims=0)[0]
    seqlens = b.op("Cast", [b.op("Sub", [total, b.const("one")])[0]], to=TensorProto.INT32)[0]
    shape = b.op("Shape", ["attention_mask"])[0]
    width = b.op("Gather", [shape, b.const("one")], axis=0)[0]
    return seqlens, b.op("Cast", [width], to=TensorProto.INT32)[0]


def genai_decoder(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The zoo decoder's function in onnxruntime-genai's op vocabulary."""
    dh = SHAPE.head_dim
    w = dict(weights, cos=weights["rope.cos"][:, : dh // 2], sin=weights["rope.sin"][:, : dh // 2],
             one=np.array(1, np.int64), one_axis=np.array([1], np.int64))
    b = _Genai(w)
    b.presents = []
    b.const("cos"), b.const("sin")
    lens = _lengths(b)
    resid = b.op("Gather", [b.const("embed_tokens.weight"), "input_ids"], axis=0)[0]
    h = b.op("RMSNormalization", [resid, b.const("layers.0.input_norm.weight")],
             epsilon=1e-6, axis=-1)[0]
    for i in range(SHAPE.layers):
        h, resid = b.skip_norm(_attention(b, h, i, lens, dh), resid,
                               f"layers.{i}.post_attention_norm.weight")
        nxt = f"layers.{i + 1}.input_norm.weight" if i + 1 < SHAPE.layers else "norm.weight"
        h, resid = b.skip_norm(_mlp(b, h, i), resid, nxt)
    logits = b.linear(h, "lm_head")
    return _finish(b, logits)


def _finish(b: _Genai, logits: str) -> onnx.ModelProto:
    kv = [1, SHAPE.kv_heads, "past", SHAPE.head_dim]
    ins = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "seq"]),
           helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [1, "total"])]
    ins += [helper.make_tensor_value_info(f"past_key_values.{i}.{t}", TensorProto.FLOAT, kv)
            for i in range(SHAPE.layers) for t in ("key", "value")]
    b.nodes += [helper.make_node("Identity", [t], [n]) for n, t in
                [("logits", logits), *b.presents]]
    outs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, "seq", SHAPE.vocab])]
    outs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, SHAPE.kv_heads, "total",
                                                                   SHAPE.head_dim])
             for n, _ in b.presents]
    graph = helper.make_graph(b.nodes, "genai", ins, outs,
                              [numpy_helper.from_array(np.asarray(v), k)
                               for k, v in b.inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23),
                                                    helper.make_opsetid(MS, 1)])
    model.ir_version = 10
    return model


@pytest.fixture(scope="module")
def forms() -> tuple[onnx.ModelProto, onnx.ModelProto]:
    zoo = kv_decoder(SHAPE, seed=3)
    weights = {t.name: numpy_helper.to_array(t) for t in zoo.graph.initializer}
    return zoo, genai_decoder(weights)


def _feeds(ids: np.ndarray, past: dict[str, np.ndarray] | None = None) -> dict:
    p = 0 if past is None else next(iter(past.values())).shape[2]
    empty = np.zeros((1, SHAPE.kv_heads, 0, SHAPE.head_dim), np.float32)
    caches = past or {f"past_key_values.{i}.{t}": empty for i in range(SHAPE.layers)
                      for t in ("key", "value")}
    return {"input_ids": ids, "attention_mask": np.ones((1, p + ids.shape[1]), np.int64),
            **caches}


def test_genai_form_matches_zoo_decoder_in_onnxruntime_and_in_the_ir(forms) -> None:
    zoo, genai = forms
    ids = np.array([[3, 17, 5, 40, 2, 9]])
    want = run_ort(zoo, {k: v for k, v in _feeds(ids).items() if k != "attention_mask"})
    got = run_ort(genai, _feeds(ids))
    np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-4)
    g = calibration_graph(genai, seq=6)
    ir = run(g, {n: v for n, v in _feeds(ids).items() if n in g.inputs})
    np.testing.assert_allclose(ir["logits"], want[0], rtol=1e-4, atol=1e-4)
    # a decode step with the cache onnxruntime returned
    past = {f"past_key_values.{i}.{t}": got[1 + 2 * i + j] for i in range(SHAPE.layers)
            for j, t in enumerate(("key", "value"))}
    step = run_ort(genai, _feeds(np.array([[11]]), past))[0]
    full = run_ort(zoo, {k: v for k, v in _feeds(np.array([[3, 17, 5, 40, 2, 9, 11]])).items()
                         if k != "attention_mask"})[0]
    np.testing.assert_allclose(step[0, 0], full[0, -1], rtol=1e-4, atol=1e-4)


def test_genai_form_lowers_to_attention_and_rotary(forms) -> None:
    kinds = [layer.kind for layer in calibration_graph(forms[1], seq=4).layers]
    assert kinds.count("attention") == SHAPE.layers
    assert kinds.count("rotary") == 2 * SHAPE.layers
    assert kinds.count("linear") + kinds.count("matmul") == 7 * SHAPE.layers + 1


def test_hawq_traces_agree_across_decoder_forms(forms) -> None:
    tokens = np.random.default_rng(0).integers(0, SHAPE.vocab, 32)
    scores = []
    for model in forms:
        g = calibration_graph(model, seq=8)
        scores.append(layer_scores(g, calibration_feeds(g, tokens, 8), "hawq"))
    names = linear_names(SHAPE)
    zoo, genai = ([s[_key(s, n)] for n in names] for s in scores)
    assert all(v > 0 for v in zoo)
    np.testing.assert_allclose(genai, zoo, rtol=1e-3)


def _key(scores: dict[str, float], name: str) -> str:
    return next(k for k in scores if k.rsplit(".weight", 1)[0].split("/")[0] == name)


def test_lrp_runs_on_the_genai_form(forms) -> None:
    g = calibration_graph(forms[1], seq=8)
    tokens = np.random.default_rng(1).integers(0, SHAPE.vocab, 16)
    scores = layer_scores(g, calibration_feeds(g, tokens, 8), "lrp")
    values = np.array([scores[_key(scores, n)] for n in linear_names(SHAPE)])
    assert np.all(np.isfinite(values)) and np.all(values >= 0) and values.max() > 0
    # the values and the output projection carry relevance under the attention gate rule
    assert scores[_key(scores, "layers.0.self_attn.v_proj")] > 0


def test_format_error_orders_formats_and_is_exact() -> None:
    w = np.random.default_rng(2).standard_normal((64, 8))
    errs = [format_error(w, f) for f in ("q8", "q4", "q4b128", "q2z")]
    assert errs[0] < errs[1] < errs[3] and errs[1] <= errs[2]
    # q8 symmetric per block of 32: the error of each weight is at most half a step
    steps = np.abs(w.reshape(2, 32, 8)).max(axis=1) / 127
    assert errs[0] <= float(((steps / 2) ** 2).sum() * 32)
    assert format_error(w, "fp32") == 0.0


def test_format_sensitivity_names_a_missing_linear() -> None:
    g = calibration_graph(kv_decoder(SHAPE, seed=3), seq=4)
    with pytest.raises(UserError, match="nope"):
        format_sensitivity(g, {"a/MatMul.weight": 1.0}, ["nope"], ["q4"])


def test_lrp_reaches_queries_and_keys_past_an_additive_mask(forms) -> None:
    """The zoo form adds a -1e9 causal mask to the scores; the epsilon rule's stabiliser must
    not be set by those entries, or q_proj / k_proj would get no relevance at all."""
    g = calibration_graph(forms[0], seq=8)
    tokens = np.random.default_rng(1).integers(0, SHAPE.vocab, 16)
    scores = layer_scores(g, calibration_feeds(g, tokens, 8), "lrp")
    for name in ("q_proj", "k_proj"):
        share = scores[_key(scores, f"layers.0.self_attn.{name}")]
        assert share > 0.01 * scores[_key(scores, "layers.0.self_attn.v_proj")]
