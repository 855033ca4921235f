"""A Llama / Qwen2-style decoder with a KV cache that plain onnxruntime runs.

One graph serves prefill and decode (dynamic sequence and past lengths):

- inputs `input_ids` int64 [N, seq] and, per layer i, `past_key_values.{i}.key` / `.value`
  float32 [N, kv_heads, past, head_dim] (past may be 0);
- outputs `logits` [N, seq, vocab] and `present.{i}.key` / `.value` [N, kv_heads, past + seq,
  head_dim] (Concat of past and new: feed them back as the next step's past).

Positions start at `past`, so RoPE (cos/sin tables gathered by position) and the causal mask
(key position > query position -> -1e9) are the same whether a sequence runs at once or token
by token. Blocks: RMSNorm (decomposed), q/k/v (optional biases, as Qwen2), grouped-query
attention (each KV head expanded to its `heads / kv_heads` query heads), o_proj, SwiGLU.
Linear layers are float MatMul or, per layer, `com.microsoft::MatMulNBits` in an
`edgesim.llm.formats` spelling (q8, q4, q4b128, q2z, ...; accuracy_level 4 as
onnxruntime-genai writes it). The LM head is `lm_head` (tied: the embedding table).

The token embedding is a float Gather or `com.microsoft::GatherBlockQuantized` (`_embed`). A
tied head in a quantised format shares ONE packed table with the embedding, as
onnxruntime-genai's builder ties them (`make_embedding` with `int4_tied_embeddings`): the head's
MatMulNBits B [vocab, k_blocks, block * bits / 8] reshaped to [vocab, k_blocks * block * bits /
8] is GatherBlockQuantized's uint8 data (quantize_axis 1: blocks of `block` codes along the
hidden axis, low bits first -- the byte order of both kernels), and the head's scales [vocab,
k_blocks] and packed zero points [vocab, ceil(k_blocks * bits / 8)] are its scales and zero
points unchanged (onnxruntime's contrib_ops/cpu/quantization gather_block_quantized.cc and
matmul_nbits_helper.h; both default the zero point to 2^(bits-1)). Every MatMulNBits format
(2 / 4 / 8 bits, any block, symmetric or with zero points) reads back exactly this way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from edgesim.errors import UserError
from edgesim.llm.config import DecoderConfig
from edgesim.llm.formats import EMBED, WeightFormat, parse_format
from edgesim.zoo.cnn import GraphBuilder, normal
from edgesim.zoo.transformer import rms_norm, silu

KV_TYPES = {"fp32": TensorProto.FLOAT, "fp16": TensorProto.FLOAT16}
MASKED = -1e9  # additive score of a future key: exp underflows to exactly 0
ACCURACY_LEVEL = 4


@dataclass(frozen=True)
class DecoderShape:
    """Sizes of a built decoder (a `DecoderConfig` without the bookkeeping)."""

    vocab: int = 256
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 344
    max_context: int = 512
    tied: bool = True
    attention_bias: bool = False
    rope_theta: float = 10000.0
    kv_dtype: str = "fp32"   # past/present dtype: "fp32" (onnxruntime-genai on CPU) or "fp16"

    @property
    def head_dim(self) -> int:
        """Per-head width."""
        return self.hidden // self.heads


def decoder_config(shape: DecoderShape, name: str) -> DecoderConfig:
    """The weights-free description (`edgesim.llm`'s phase and RAM models) of a built shape."""
    return DecoderConfig(name=name, hidden=shape.hidden, layers=shape.layers, heads=shape.heads,
                         kv_heads=shape.kv_heads, head_dim=shape.head_dim,
                         intermediate=shape.intermediate, vocab=shape.vocab, tied=shape.tied,
                         attention_bias=shape.attention_bias, max_context=shape.max_context)


# The module each of a block's linear layers sits in (Hugging Face's names).
_MODULE = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn",
           "o_proj": "self_attn", "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}


def linear_names(shape: DecoderShape) -> list[str]:
    """Every linear layer's name in graph order (the keys of a per-layer format plan)."""
    return list(linear_shapes(shape))


def linear_shapes(shape: DecoderShape) -> dict[str, tuple[int, int]]:
    """(in, out) of every linear layer in graph order: `DecoderConfig.layer_linears` per
    block, then the head."""
    per = decoder_config(shape, "").layer_linears()
    out = {f"layers.{i}.{_MODULE[k]}.{k}": v for i in range(shape.layers) for k, v in per.items()}
    return out | {"lm_head": (shape.hidden, shape.vocab)}


class _Ctx:
    """The builder plus what every block reads: formats, RoPE tables, mask, past inputs."""

    presents: dict[str, str]  # KV-cache output name -> tensor, set by the KV decoder

    def __init__(self, b: GraphBuilder, shape: DecoderShape, formats: Mapping[str, str]):
        self.b, self.s, self.formats, self.nbits = b, shape, formats, False
        self.packed: dict[str, list[str]] = {}  # weight name -> its MatMulNBits initializers


def _packed(c: _Ctx, name: str, w: np.ndarray, fmt: WeightFormat) -> list[str]:
    """[B, scales, (zero points)] initializers of W [K, N] packed as MatMulNBits in `fmt`,
    written once per `name` (a tied head and its embedding read the same ones)."""
    # numba's packing kernels load here, not with the zoo (simulating a CNN imports this module)
    from compiler.packing import pack_matmulnbits

    if name not in c.packed:
        c.nbits = True
        blob = pack_matmulnbits(w, fmt.bits, fmt.block, symmetric=not fmt.zero_point)
        ins = [c.b.const(f"{name}.B", blob.b), c.b.const(f"{name}.scales", blob.scales)]
        if blob.zero_points is not None:
            ins.append(c.b.const(f"{name}.zero_points", blob.zero_points))
        c.packed[name] = ins
    return c.packed[name]


def _linear(c: _Ctx, x: str, name: str, cin: int, cout: int, gain: float = 1.0,
            bias: bool = False, w: np.ndarray | None = None) -> str:
    """x @ W (+ b): float MatMul, or MatMulNBits when `name` has a quantised format."""
    b, fmt = c.b, parse_format(c.formats.get(name, "fp32"))
    if w is None:
        w = b.draw(f"{name}.weight", (cin, cout), normal(gain / np.sqrt(cin)))
    if not fmt.quantized:
        y = b.op("MatMul", [x, b.const(f"{name}.weight", w)], name)
    else:
        y = b.op("MatMulNBits", [x, *_packed(c, name, w, fmt)], name, domain="com.microsoft",
                 accuracy_level=ACCURACY_LEVEL, K=cin, N=cout, bits=fmt.bits,
                 block_size=fmt.block)
    return b.op("Add", [y, b.param(f"{name}.bias", (cout,), normal(0.02))], name) if bias else y


def embedding_format(shape: DecoderShape, formats: Mapping[str, str]) -> str:
    """The table format the embedding reads: a tied head's quantised format (one shared
    table; an explicit "fp32" keeps a float copy beside it), else the plan's `embed_tokens`
    entry (default fp32).

    Raises:
        UserError: a tied quantised head and another quantised `embed_tokens` format.
    """
    head, own = formats.get("lm_head", "fp32"), formats.get(EMBED)
    if not (shape.tied and parse_format(head).quantized) or own == "fp32":
        return own or "fp32"
    if own not in (None, head):
        raise UserError(EMBED, f"tied to lm_head's packed {head!r} table; got {own!r}")
    return head


def _embed(c: _Ctx, emb: np.ndarray) -> str:
    """The token embedding [N, S, D]: float Gather, or `com.microsoft::GatherBlockQuantized`
    over the table packed as MatMulNBits (module docstring) -- the tied head's own
    initializers when shared, a table of its own otherwise."""
    b, spec = c.b, embedding_format(c.s, c.formats)
    fmt = parse_format(spec)
    if not fmt.quantized:
        return b.op("Gather", [b.const("embed_tokens.weight", emb), "input_ids"], "embed",
                    axis=0)
    shared = c.s.tied and spec == c.formats.get("lm_head")
    vocab, hidden = emb.shape
    data, *rest = _packed(c, "lm_head" if shared else EMBED, emb.T, fmt)
    data = b.op("Reshape", [data, b.ints([vocab, -1])], "embed")
    y = b.op("GatherBlockQuantized", [data, "input_ids", *rest], "embed",
             domain="com.microsoft", gather_axis=0, quantize_axis=1, block_size=fmt.block,
             bits=fmt.bits)
    if -(-hidden // fmt.block) * fmt.block == hidden:
        return y
    # K padded to whole blocks: the gathered rows carry the padding codes
    return b.op("Slice", [y, b.ints([0]), b.ints([hidden]), b.ints([-1])], "embed")


def _positions(c: _Ctx) -> tuple[str, str, str]:
    """(cos [S, Dh], sin [S, Dh], additive causal mask [S, T]) for the current positions."""
    b, s = c.b, c.s
    past = b.op("Shape", ["past_key_values.0.key"], "pos", start=2, end=3)
    seq = b.op("Shape", ["input_ids"], "pos", start=1, end=2)
    zero = b.ints([0])
    total = b.op("Squeeze", [b.op("Add", [past, seq], "pos"), zero], "pos")
    pos = b.op("Range", [b.op("Squeeze", [past, zero], "pos"), total, b.const("one", np.int64(1))],
               "pos")
    inv = s.rope_theta ** (-np.arange(0, s.head_dim, 2) / s.head_dim)
    ang = np.outer(np.arange(s.max_context), inv)
    ang = np.concatenate([ang, ang], axis=-1)
    cos = b.op("Gather", [b.const("rope.cos", np.cos(ang).astype(np.float32)), pos], "rope")
    sin = b.op("Gather", [b.const("rope.sin", np.sin(ang).astype(np.float32)), pos], "rope")
    keys = b.op("Range", [b.const("zero", np.int64(0)), total, "one"], "mask")
    future = b.op("Greater", [b.op("Unsqueeze", [keys, zero], "mask"),
                              b.op("Unsqueeze", [pos, b.ints([1])], "mask")], "mask")
    mask = b.op("Where", [future, b.scalar(MASKED), b.scalar(0.0)], "mask")
    return cos, sin, mask


def _rope(b: GraphBuilder, x: str, scope: str, dh: int, cos: str, sin: str) -> str:
    """x * cos + rotate_half(x) * sin on [N, H, S, Dh]."""
    lo = b.op("Slice", [x, b.ints([0]), b.ints([dh // 2]), b.ints([-1])], scope)
    hi = b.op("Slice", [x, b.ints([dh // 2]), b.ints([dh]), b.ints([-1])], scope)
    rot = b.op("Concat", [b.op("Neg", [hi], scope), lo], scope, axis=-1)
    return b.op("Add", [b.op("Mul", [x, cos], scope), b.op("Mul", [rot, sin], scope)], scope)


def _split_heads(b: GraphBuilder, x: str, scope: str, heads: int, dh: int) -> str:
    x = b.op("Reshape", [x, b.ints([0, 0, heads, dh])], scope)
    return b.op("Transpose", [x], scope, perm=[0, 2, 1, 3])


def _cache(c: _Ctx, new: str, i: int, kind: str) -> str:
    """present = Concat(past, new) on the sequence axis; returns it expanded to every head."""
    b, s = c.b, c.s
    past, scope = f"past_key_values.{i}.{kind}", f"layers.{i}.{kind}_cache"
    b.inputs.append(helper.make_tensor_value_info(
        past, KV_TYPES[s.kv_dtype], ["N", s.kv_heads, "past", s.head_dim]))
    half = s.kv_dtype == "fp16"  # the cache holds fp16; attention reads it back as fp32
    new = b.op("Cast", [new], scope, to=TensorProto.FLOAT16) if half else new
    present = b.op("Concat", [past, new], scope, axis=2)
    c.presents[f"present.{i}.{kind}"] = present
    present = b.op("Cast", [present], scope, to=TensorProto.FLOAT) if half else present
    group = s.heads // s.kv_heads
    x = b.op("Unsqueeze", [present, b.ints([2])], f"layers.{i}.{kind}_gqa")
    x = b.op("Expand", [x, b.ints([1, 1, group, 1, 1])], f"layers.{i}.{kind}_gqa")
    return b.op("Reshape", [x, b.ints([0, s.heads, -1, s.head_dim])], f"layers.{i}.{kind}_gqa")


def _attention(c: _Ctx, x: str, i: int, rope: tuple[str, str, str], gain: float) -> str:
    b, s, name = c.b, c.s, f"layers.{i}.self_attn"
    dh, bias, (cos, sin, mask) = s.head_dim, s.attention_bias, rope
    q = _split_heads(b, _linear(c, x, f"{name}.q_proj", s.hidden, s.heads * dh, bias=bias),
                     f"{name}.q", s.heads, dh)
    k = _split_heads(b, _linear(c, x, f"{name}.k_proj", s.hidden, s.kv_heads * dh, bias=bias),
                     f"{name}.k", s.kv_heads, dh)
    v = _split_heads(b, _linear(c, x, f"{name}.v_proj", s.hidden, s.kv_heads * dh, bias=bias),
                     f"{name}.v", s.kv_heads, dh)
    q, k = _rope(b, q, f"{name}.q", dh, cos, sin), _rope(b, k, f"{name}.k", dh, cos, sin)
    k, v = _cache(c, k, i, "key"), _cache(c, v, i, "value")
    kt = b.op("Transpose", [k], name, perm=[0, 1, 3, 2])
    scores = b.op("Mul", [b.op("MatMul", [q, kt], name), b.scalar(1.0 / np.sqrt(dh))], name)
    p = b.op("Softmax", [b.op("Add", [scores, mask], name)], name, axis=-1)
    y = b.op("Transpose", [b.op("MatMul", [p, v], name)], name, perm=[0, 2, 1, 3])
    y = b.op("Reshape", [y, b.ints([0, 0, s.heads * dh])], name)
    return _linear(c, y, f"{name}.o_proj", s.heads * dh, s.hidden, gain)


def _mlp(c: _Ctx, x: str, i: int, gain: float) -> str:
    b, s, name = c.b, c.s, f"layers.{i}.mlp"
    gate = silu(b, _linear(c, x, f"{name}.gate_proj", s.hidden, s.intermediate), f"{name}.act")
    up = _linear(c, x, f"{name}.up_proj", s.hidden, s.intermediate)
    return _linear(c, b.op("Mul", [gate, up], name), f"{name}.down_proj", s.intermediate,
                   s.hidden, gain)


def kv_decoder(shape: DecoderShape = DecoderShape(), formats: Mapping[str, str] | str = "fp32",
               seed: int = 0, weights: Mapping[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """The KV-cache decoder (module docstring) with seeded or given weights.

    Args:
        shape: sizes.
        formats: one format for every linear layer, or linear name -> format (missing: fp32);
            names as `linear_names(shape)`, plus `EMBED` for the token embedding (`_embed`).
        seed: seed of the weights not in `weights`.
        weights: parameter name -> array (`embed_tokens.weight` [vocab, d], `{linear}.weight`
            [in, out], `*.bias`, norm weights `layers.{i}.input_norm.weight`, ...).
    """
    plan = {n: formats for n in linear_names(shape)} if isinstance(formats, str) else formats
    b = GraphBuilder(seed, weights)
    c = _Ctx(b, shape, dict(plan))
    c.presents = {}
    b.inputs.append(helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["N", "seq"]))
    emb = b.draw("embed_tokens.weight", (shape.vocab, shape.hidden), normal(1.0))
    x = _embed(c, emb)
    rope, gain = _positions(c), 1.0 / np.sqrt(2 * shape.layers)
    for i in range(shape.layers):
        a = _attention(c, rms_norm(b, x, f"layers.{i}.input_norm", shape.hidden), i, rope, gain)
        x = b.op("Add", [x, a], f"layers.{i}")
        m = _mlp(c, rms_norm(b, x, f"layers.{i}.post_attention_norm", shape.hidden), i, gain)
        x = b.op("Add", [x, m], f"layers.{i}")
    x = rms_norm(b, x, "norm", shape.hidden)
    head_w = np.ascontiguousarray(emb.T) if shape.tied else None
    logits = _linear(c, x, "lm_head", shape.hidden, shape.vocab, w=head_w)
    return _finish(c, logits)


def _finish(c: _Ctx, logits: str) -> onnx.ModelProto:
    s = c.s
    kv: list[int | str] = ["N", s.kv_heads, "total", s.head_dim]
    outs: dict[str, tuple[str, Sequence[int | str]]] = {
        "logits": (logits, ["seq", s.vocab]), **{n: (t, kv[1:]) for n, t in c.presents.items()}}
    model = c.b.model("kv_decoder", outs)
    for out in model.graph.output:
        if out.name.startswith("present."):
            out.type.tensor_type.elem_type = KV_TYPES[s.kv_dtype]
    if c.nbits:
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model

