"""Transformer builders: ViT-Tiny, MiniLM (BERT encoder), a small Llama, the digits transformer.

Each one writes the op patterns PyTorch exporters emit, because the frontend must recognise
them: the LayerNormalization op (ViT, digits) or LayerNorm decomposed into ReduceMean/Sub/Pow/
Sqrt/Div (MiniLM), GELU in the erf form, RMSNorm decomposed with Reciprocal, SiLU as
x * Sigmoid(x), rotary embeddings with constant cos/sin tables and rotate_half via Slice/Neg/
Concat, attention as MatMul/Reshape/Transpose/Softmax with a scale Mul. Linear layers are MatMul
with a [in, out] weight then Add bias. Weights are seeded draws with LeCun-like scales, so
activations stay O(1); the residual-branch output projections are damped with depth.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import TensorProto

from edgesim.zoo.cnn import GraphBuilder, normal

NEG_LARGE = -10000.0  # additive mask value for masked positions, as BERT's exporters write


def layer_norm(b: GraphBuilder, x: str, name: str, d: int, eps: float) -> str:
    """LayerNorm over the last axis with the opset-17 LayerNormalization op."""
    g = b.param(f"{name}.weight", (d,), normal(0.05, 1.0))
    beta = b.param(f"{name}.bias", (d,), normal(0.02))
    return b.op("LayerNormalization", [x, g, beta], name, axis=-1, epsilon=eps)


def layer_norm_decomposed(b: GraphBuilder, x: str, name: str, d: int, eps: float) -> str:
    """LayerNorm as older exporters emit it: ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div."""
    mean = b.op("ReduceMean", [x], name, axes=[-1], keepdims=1)
    centred = b.op("Sub", [x, mean], name)
    var = b.op("ReduceMean", [b.op("Pow", [centred, b.scalar(2.0)], name)], name, axes=[-1],
               keepdims=1)
    std = b.op("Sqrt", [b.op("Add", [var, b.scalar(eps)], name)], name)
    y = b.op("Div", [centred, std], name)
    y = b.op("Mul", [y, b.param(f"{name}.weight", (d,), normal(0.05, 1.0))], name)
    return b.op("Add", [y, b.param(f"{name}.bias", (d,), normal(0.02))], name)


def rms_norm(b: GraphBuilder, x: str, name: str, d: int, eps: float = 1e-6) -> str:
    """RMSNorm decomposed: Pow 2, ReduceMean, Add eps, Sqrt, Reciprocal, Mul, Mul weight."""
    ms = b.op("ReduceMean", [b.op("Pow", [x, b.scalar(2.0)], name)], name, axes=[-1], keepdims=1)
    inv = b.op("Reciprocal", [b.op("Sqrt", [b.op("Add", [ms, b.scalar(eps)], name)], name)], name)
    y = b.op("Mul", [x, inv], name)
    return b.op("Mul", [y, b.param(f"{name}.weight", (d,), normal(0.05, 1.0))], name)


def gelu_erf(b: GraphBuilder, x: str, scope: str) -> str:
    """Exact GELU as opset<20 exporters write it: x * (1 + erf(x / sqrt 2)) * 0.5."""
    e = b.op("Erf", [b.op("Div", [x, b.scalar(float(np.float32(np.sqrt(2.0))))], scope)], scope)
    y = b.op("Mul", [x, b.op("Add", [e, b.scalar(1.0)], scope)], scope)
    return b.op("Mul", [y, b.scalar(0.5)], scope)


def silu(b: GraphBuilder, x: str, scope: str) -> str:
    """SiLU as x * Sigmoid(x)."""
    return b.op("Mul", [x, b.op("Sigmoid", [x], scope)], scope)


def _heads(b: GraphBuilder, x: str, scope: str, seq: int, heads: int, perm: list[int]) -> str:
    # [N, S, H*Dh] -> [N, S, H, Dh] -> perm ([0,2,1,3] for q/v, [0,2,3,1] for k transposed)
    x = b.op("Reshape", [x, b.ints([0, seq, heads, -1])], scope)
    return b.op("Transpose", [x], scope, perm=perm)


def _merge_heads(b: GraphBuilder, x: str, scope: str, seq: int, d: int) -> str:
    x = b.op("Transpose", [x], scope, perm=[0, 2, 1, 3])
    return b.op("Reshape", [x, b.ints([0, seq, d])], scope)


def _attend(b: GraphBuilder, q: str, kt: str, v: str, scope: str, dh: int,
            mask: str | None) -> str:
    """softmax(q k^T / sqrt(dh) + mask) v on [N, H, S, Dh] heads."""
    s = b.op("Mul", [b.op("MatMul", [q, kt], scope), b.scalar(1.0 / np.sqrt(dh))], scope)
    s = b.op("Add", [s, mask], scope) if mask else s
    return b.op("MatMul", [b.op("Softmax", [s], scope, axis=-1), v], scope)


def attention(b: GraphBuilder, x: str, name: str, d: int, heads: int, seq: int,
              mask: str | None = None, out_gain: float = 1.0) -> str:
    """Multi-head self-attention with separate q/k/v/o projections (biases on)."""
    q = _heads(b, b.linear(x, f"{name}.q", d, d), f"{name}.q", seq, heads, [0, 2, 1, 3])
    kt = _heads(b, b.linear(x, f"{name}.k", d, d), f"{name}.k", seq, heads, [0, 2, 3, 1])
    v = _heads(b, b.linear(x, f"{name}.v", d, d), f"{name}.v", seq, heads, [0, 2, 1, 3])
    y = _attend(b, q, kt, v, name, d // heads, mask)
    return b.linear(_merge_heads(b, y, name, seq, d), f"{name}.o", d, d, gain=out_gain)


def mlp(b: GraphBuilder, x: str, name: str, d: int, hidden: int, out_gain: float = 1.0) -> str:
    """fc1 -> GELU (erf) -> fc2."""
    h = gelu_erf(b, b.linear(x, f"{name}.fc1", d, hidden), f"{name}.act")
    return b.linear(h, f"{name}.fc2", hidden, d, gain=out_gain)


def pre_ln_block(b: GraphBuilder, x: str, name: str, d: int, heads: int, hidden: int,
                 seq: int, eps: float, gain: float) -> str:
    """x + attn(LN(x)), then + mlp(LN(x)): the ViT / digits transformer block."""
    a = attention(b, layer_norm(b, x, f"{name}.norm1", d, eps), f"{name}.attn", d, heads, seq,
                  out_gain=gain)
    x = b.op("Add", [x, a], name)
    m = mlp(b, layer_norm(b, x, f"{name}.norm2", d, eps), f"{name}.mlp", d, hidden, gain)
    return b.op("Add", [x, m], name)


def _cls_token(b: GraphBuilder, x: str, scope: str) -> str:
    # exporters take x[:, 0] as a Gather with a scalar index
    return b.op("Gather", [x, b.const("const_index0", np.int64(0))], scope, axis=1)


def vit_tiny(num_classes: int = 1000, resolution: int = 224, patch: int = 16, d: int = 192,
             depth: int = 12, heads: int = 3, hidden: int = 768, seed: int = 0,
             weights: Mapping[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """ViT-Tiny / DeiT-Tiny (patch 16, d 192, 12 blocks, 3 heads): 5.7 M params, 1.26 GMACs."""
    b, tokens = GraphBuilder(seed, weights), (resolution // patch) ** 2
    x = b.conv(b.input("pixel_values", (3, resolution, resolution)), "patch_embed", 3, d, patch,
               stride=patch, bias=True, pad=0)
    x = b.op("Transpose", [b.op("Reshape", [x, b.ints([0, d, tokens])], "patch_embed")],
             "patch_embed", perm=[0, 2, 1])
    # cls_token.expand(N, -1, -1): the target shape is [Shape(x)[0], 1, d]
    shape = b.op("Concat", [b.op("Shape", [x], "cls_token", start=0, end=1), b.ints([1, d])],
                 "cls_token", axis=0)
    cls = b.op("Expand", [b.param("cls_token", (1, 1, d), normal(1.0)), shape], "cls_token")
    x = b.op("Concat", [cls, x], "embed", axis=1)
    x = b.op("Add", [x, b.param("pos_embed", (1, tokens + 1, d), normal(0.5))], "embed")
    for i in range(depth):
        x = pre_ln_block(b, x, f"blocks.{i}", d, heads, hidden, tokens + 1, 1e-6,
                         1.0 / np.sqrt(2 * depth))
    x = _cls_token(b, layer_norm(b, x, "norm", d, 1e-6), "pool")
    return b.model("vit_tiny", {"logits": (b.gemm(x, "head", d, num_classes), (num_classes,))})


def _bert_embeddings(b: GraphBuilder, ids: str, vocab: int, seq: int, d: int) -> str:
    words = b.op("Gather", [b.param("embeddings.word", (vocab, d), normal(1.0)), ids],
                 "embeddings", axis=0)
    pos_ids = b.const("position_ids", np.arange(seq, dtype=np.int64)[None])
    pos = b.op("Gather", [b.param("embeddings.position", (512, d), normal(0.5)), pos_ids],
               "embeddings", axis=0)
    type_ids = b.const("token_type_ids", np.zeros((1, seq), np.int64))
    types = b.op("Gather", [b.param("embeddings.token_type", (2, d), normal(0.5)), type_ids],
                 "embeddings", axis=0)
    x = b.op("Add", [b.op("Add", [words, types], "embeddings"), pos], "embeddings")
    return layer_norm_decomposed(b, x, "embeddings.norm", d, 1e-12)


def _extended_mask(b: GraphBuilder, mask: str) -> str:
    # BERT: (1 - mask[:, None, None, :]) * -10000, added to every head's scores
    m = b.op("Cast", [b.op("Unsqueeze", [mask, b.ints([1, 2])], "mask")], "mask",
             to=TensorProto.FLOAT)
    return b.op("Mul", [b.op("Sub", [b.scalar(1.0), m], "mask"), b.scalar(NEG_LARGE)], "mask")


def _post_ln_block(b: GraphBuilder, x: str, name: str, d: int, heads: int, hidden: int,
                   seq: int, mask: str) -> str:
    a = attention(b, x, f"{name}.attn", d, heads, seq, mask)
    x = layer_norm_decomposed(b, b.op("Add", [a, x], name), f"{name}.norm1", d, 1e-12)
    m = mlp(b, x, f"{name}.mlp", d, hidden)
    return layer_norm_decomposed(b, b.op("Add", [m, x], name), f"{name}.norm2", d, 1e-12)


def minilm(vocab: int = 30522, seq: int = 128, d: int = 384, depth: int = 6, heads: int = 12,
           hidden: int = 1536, seed: int = 0,
           weights: Mapping[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """MiniLM-L6-H384 (BERT encoder, post-LN): ~22.7 M params with the pooler.

    Inputs `input_ids`, `attention_mask` (int64 [N, seq]); outputs `last_hidden_state`
    [N, seq, d] and `pooler_output` [N, d] (tanh dense on the first token).
    """
    b = GraphBuilder(seed, weights)
    ids = b.input("input_ids", (seq,), TensorProto.INT64)
    mask = _extended_mask(b, b.input("attention_mask", (seq,), TensorProto.INT64))
    x = _bert_embeddings(b, ids, vocab, seq, d)
    for i in range(depth):
        x = _post_ln_block(b, x, f"encoder.{i}", d, heads, hidden, seq, mask)
    pooled = b.op("Tanh", [b.gemm(_cls_token(b, x, "pooler"), "pooler.dense", d, d)], "pooler")
    return b.model("minilm", {"last_hidden_state": (x, (seq, d)), "pooler_output": (pooled, (d,))})


def _rope_tables(seq: int, dh: int, base: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
    inv_freq = base ** (-np.arange(0, dh, 2) / dh)
    angles = np.outer(np.arange(seq), inv_freq)
    emb = np.concatenate([angles, angles], axis=-1)[None, None]  # [1, 1, S, Dh]
    return np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32)


def _rope(b: GraphBuilder, x: str, scope: str, dh: int) -> str:
    """x * cos + rotate_half(x) * sin; rotate_half = Concat(-x[..., dh/2:], x[..., :dh/2])."""
    lo = b.op("Slice", [x, b.ints([0]), b.ints([dh // 2]), b.ints([-1])], scope)
    hi = b.op("Slice", [x, b.ints([dh // 2]), b.ints([dh]), b.ints([-1])], scope)
    rot = b.op("Concat", [b.op("Neg", [hi], scope), lo], scope, axis=-1)
    return b.op("Add", [b.op("Mul", [x, "rope.cos"], scope), b.op("Mul", [rot, "rope.sin"], scope)],
                scope)


def _llama_attention(b: GraphBuilder, x: str, name: str, d: int, heads: int, seq: int,
                     gain: float) -> str:
    dh = d // heads
    q = _heads(b, b.linear(x, f"{name}.q_proj", d, d, bias=False), f"{name}.q", seq, heads,
               [0, 2, 1, 3])
    k = _heads(b, b.linear(x, f"{name}.k_proj", d, d, bias=False), f"{name}.k", seq, heads,
               [0, 2, 1, 3])
    v = _heads(b, b.linear(x, f"{name}.v_proj", d, d, bias=False), f"{name}.v", seq, heads,
               [0, 2, 1, 3])
    q, k = _rope(b, q, f"{name}.q", dh), _rope(b, k, f"{name}.k", dh)
    kt = b.op("Transpose", [k], f"{name}.k", perm=[0, 1, 3, 2])
    y = _merge_heads(b, _attend(b, q, kt, v, name, dh, "causal_mask"), name, seq, d)
    return b.linear(y, f"{name}.o_proj", d, d, bias=False, gain=gain)


def _swiglu(b: GraphBuilder, x: str, name: str, d: int, hidden: int, gain: float) -> str:
    gate = silu(b, b.linear(x, f"{name}.gate_proj", d, hidden, bias=False), f"{name}.act")
    up = b.linear(x, f"{name}.up_proj", d, hidden, bias=False)
    h = b.op("Mul", [gate, up], name)
    return b.linear(h, f"{name}.down_proj", hidden, d, bias=False, gain=gain)


def _llama_constants(b: GraphBuilder, seq: int, dh: int) -> None:
    cos, sin = _rope_tables(seq, dh)
    b.const("rope.cos", cos)
    b.const("rope.sin", sin)
    causal = np.triu(np.full((seq, seq), NEG_LARGE, np.float32), k=1)[None, None]
    b.const("causal_mask", causal)


def llama(vocab: int = 32000, seq: int = 128, d: int = 512, depth: int = 4, heads: int = 8,
          hidden: int = 1376, seed: int = 0,
          weights: Mapping[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """A small Llama decoder (4 layers, d 512, 8 heads, SwiGLU 1376, vocab 32000, untied head).

    Input `input_ids` int64 [N, seq]; output `logits` [N, seq, vocab]. The causal mask is a
    constant additive matrix (0 on and below the diagonal, -10000 above); about 45 M params at
    the defaults, of which 32.8 M sit in the embedding table and the LM head.
    """
    b, gain = GraphBuilder(seed, weights), 1.0 / np.sqrt(2 * depth)
    _llama_constants(b, seq, d // heads)
    x = b.op("Gather", [b.param("embed_tokens", (vocab, d), normal(1.0)),
                        b.input("input_ids", (seq,), TensorProto.INT64)], "embed", axis=0)
    for i in range(depth):
        name = f"layers.{i}"
        a = _llama_attention(b, rms_norm(b, x, f"{name}.input_norm", d), f"{name}.self_attn", d,
                             heads, seq, gain)
        x = b.op("Add", [x, a], name)
        m = _swiglu(b, rms_norm(b, x, f"{name}.post_attention_norm", d), f"{name}.mlp", d,
                    hidden, gain)
        x = b.op("Add", [x, m], name)
    logits = b.linear(rms_norm(b, x, "norm", d), "lm_head", d, vocab, bias=False)
    return b.model("llama", {"logits": (logits, (seq, vocab))})


def digits_transformer_graph(seed: int = 0, weights: Mapping[str, np.ndarray] | None = None,
                             d: int = 64, depth: int = 2, heads: int = 4,
                             hidden: int = 128) -> onnx.ModelProto:
    """The digits transformer: input [N, 1, 8, 8], reshaped inside to 8 row tokens of 8 pixels.

    Linear embed to d, learned position embedding, `depth` pre-LN blocks, final LayerNorm, mean
    pool over tokens (ReduceMean), Gemm classifier to 10 logits.
    """
    b = GraphBuilder(seed, weights)
    x = b.op("Reshape", [b.input("input", (1, 8, 8)), b.ints([0, 8, 8])], "tokens")
    x = b.linear(x, "embed", 8, d)
    x = b.op("Add", [x, b.param("pos_embed", (1, 8, d), normal(0.5))], "embed")
    for i in range(depth):
        x = pre_ln_block(b, x, f"blocks.{i}", d, heads, hidden, 8, 1e-5, 1.0)
    x = b.op("ReduceMean", [layer_norm(b, x, "norm", d, 1e-5)], "pool", axes=[1], keepdims=0)
    return b.model("digits_transformer", {"logits": (b.gemm(x, "head", d, 10), (10,))})
