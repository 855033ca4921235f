"""The KV-cache decoder in onnxruntime: cached prefill + decode equals a no-cache run, the float
graph equals an independent numpy Llama/Qwen2 forward, and greedy generation equals argmax of
repeated no-cache runs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from edgesim.llm.generate import empty_past, generate, step
from edgesim.zoo.decoder import DecoderShape, kv_decoder, linear_names

pytestmark = pytest.mark.ort
SHAPE = DecoderShape(vocab=256, hidden=64, layers=2, heads=4, kv_heads=2, intermediate=96,
                     max_context=64)
QWEN_LIKE = DecoderShape(vocab=300, hidden=96, layers=2, heads=6, kv_heads=2, intermediate=160,
                         max_context=64, tied=False, attention_bias=True, rope_theta=1e6)


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    onnx.checker.check_model(model)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _cached_logits(sess: ort.InferenceSession, ids: np.ndarray, prefill: int) -> np.ndarray:
    logits, past = step(sess, ids[:, :prefill], empty_past(sess, len(ids)))
    out = [logits]
    for t in range(prefill, ids.shape[1]):
        logits, past = step(sess, ids[:, t:t + 1], past)
        out.append(logits)
    return np.concatenate(out, axis=1)


@pytest.mark.parametrize("shape", [SHAPE, QWEN_LIKE], ids=["llama_tied", "qwen_bias_untied"])
@pytest.mark.parametrize("fmt", ["fp32", "q8", "q4", "q4b128", "q2z"])
def test_prefill_plus_decode_equals_no_cache(shape: DecoderShape, fmt: str) -> None:
    sess = _session(kv_decoder(shape, fmt, seed=1))
    ids = np.random.default_rng(0).integers(0, shape.vocab, (2, 11))
    full, _ = step(sess, ids, empty_past(sess, 2))
    cached = _cached_logits(sess, ids, prefill=4)
    scale = np.abs(full).max()
    np.testing.assert_allclose(cached, full, atol=2e-6 * scale, rtol=0)


def test_fp16_kv_cache_halves_the_cache_and_keeps_cached_equal_no_cache() -> None:
    import dataclasses

    shape = dataclasses.replace(SHAPE, kv_dtype="fp16")
    sess = _session(kv_decoder(shape, "q4", seed=5))
    ids = np.random.default_rng(3).integers(0, 256, (1, 10))
    full, past = step(sess, ids, empty_past(sess))
    assert all(v.dtype == np.float16 and v.shape == (1, 2, 10, 16) for v in past.values())
    np.testing.assert_allclose(_cached_logits(sess, ids, 3), full,
                               atol=2e-6 * np.abs(full).max(), rtol=0)
    fp32_kv = _session(kv_decoder(SHAPE, "q4", seed=5))
    ref, _ = step(fp32_kv, ids, empty_past(fp32_kv))
    assert 0 < np.abs(full - ref).max() < 0.05 * np.abs(ref).max()   # fp16 rounding only


def test_mixed_plan_prefill_plus_decode_equals_no_cache() -> None:
    names = linear_names(SHAPE)
    plan = {n: ("q2z", "q4", "q8", "fp32")[i % 4] for i, n in enumerate(names)}
    model = kv_decoder(SHAPE, plan, seed=2)
    ops = {n.op_type for n in model.graph.node}
    assert {"MatMulNBits", "MatMul"} <= ops
    sess = _session(model)
    ids = np.random.default_rng(1).integers(0, 256, (1, 9))
    full, _ = step(sess, ids, empty_past(sess))
    np.testing.assert_allclose(_cached_logits(sess, ids, 1), full,
                               atol=2e-6 * np.abs(full).max(), rtol=0)


def _reference(model: onnx.ModelProto, s: DecoderShape, ids: np.ndarray) -> np.ndarray:
    """Hugging Face Llama/Qwen2 forward in float64 numpy on the model's float weights."""
    w = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    hd, group, n = s.head_dim, s.heads // s.kv_heads, len(ids)

    def rms(x: np.ndarray, name: str) -> np.ndarray:
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6) * w[f"{name}.weight"]

    def lin(x: np.ndarray, name: str) -> np.ndarray:
        y = x @ w[f"{name}.weight"]
        return y + w[f"{name}.bias"] if f"{name}.bias" in w else y

    ang = np.outer(np.arange(n), s.rope_theta ** (-np.arange(0, hd, 2) / hd))
    cos, sin = np.cos(np.tile(ang, 2)), np.sin(np.tile(ang, 2))

    def rope(x: np.ndarray) -> np.ndarray:   # [heads, n, hd]
        rot = np.concatenate([-x[..., hd // 2:], x[..., :hd // 2]], -1)
        return x * cos + rot * sin

    x = w["embed_tokens.weight"][ids]
    causal = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(s.layers):
        a, h = f"layers.{i}.self_attn", rms(x, f"layers.{i}.input_norm")
        q = rope(lin(h, f"{a}.q_proj").reshape(n, s.heads, hd).transpose(1, 0, 2))
        k = rope(lin(h, f"{a}.k_proj").reshape(n, s.kv_heads, hd).transpose(1, 0, 2))
        v = lin(h, f"{a}.v_proj").reshape(n, s.kv_heads, hd).transpose(1, 0, 2)
        k, v = np.repeat(k, group, 0), np.repeat(v, group, 0)   # HF repeat_kv
        sc = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + causal
        p = np.exp(sc - sc.max(-1, keepdims=True))
        y = (p / p.sum(-1, keepdims=True)) @ v
        x = x + lin(y.transpose(1, 0, 2).reshape(n, -1), f"{a}.o_proj")
        h, m = rms(x, f"layers.{i}.post_attention_norm"), f"layers.{i}.mlp"
        g = lin(h, f"{m}.gate_proj")
        x = x + lin(g / (1 + np.exp(-g)) * lin(h, f"{m}.up_proj"), f"{m}.down_proj")
    head = w["embed_tokens.weight"].T if s.tied else w["lm_head.weight"]
    return rms(x, "norm") @ head


@pytest.mark.parametrize("shape", [SHAPE, QWEN_LIKE], ids=["llama_tied", "qwen_bias_untied"])
def test_float_graph_matches_numpy_llama_forward(shape: DecoderShape) -> None:
    model = kv_decoder(shape, "fp32", seed=3)
    ids = np.random.default_rng(2).integers(0, shape.vocab, 13)
    sess = _session(model)
    got, _ = step(sess, ids[None], empty_past(sess))
    want = _reference(model, shape, ids)
    np.testing.assert_allclose(got[0], want, atol=1e-4 * np.abs(want).max(), rtol=0)


def test_greedy_generation_equals_repeated_no_cache_argmax() -> None:
    model = kv_decoder(SHAPE, "q4", seed=4)
    sess = _session(model)
    g = generate(model.SerializeToString(), "abc", 6, threads=1)
    ids = list(b"abc")
    for _ in range(6):
        logits, _ = step(sess, np.array([ids]), empty_past(sess))
        ids.append(int(logits[0, -1].argmax()))
    assert list(g.tokens) == ids[3:]
    assert g.tokens_per_s > 0 and g.prefill_s > 0


def test_cli_generate_prints_measured_rate() -> None:
    res = subprocess.run([sys.executable, "-m", "edgesim", "generate", "zoo:kv_decoder",
                          "--prompt", "hello", "--max-new-tokens", "4", "--threads", "1"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("hello") and "tokens/s" in res.stdout


def test_generate_rejects_bad_input_with_user_errors(tmp_path) -> None:
    from edgesim.errors import UserError
    from edgesim.zoo.trained import digits_cnn

    model = kv_decoder(SHAPE, "fp32").SerializeToString()
    with pytest.raises(UserError, match="--prompt"):
        generate(model, "", 3)
    with pytest.raises(UserError, match="--max-new-tokens"):
        generate(model, "a", 0)
    with pytest.raises(UserError, match="past_key_values"):
        generate(digits_cnn().SerializeToString(), "a", 2)
    with pytest.raises(UserError, match="onnxruntime cannot load"):
        generate(str(tmp_path / "missing.onnx"), "a", 2)
