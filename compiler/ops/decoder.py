"""onnxruntime-genai's decoder contrib ops (`com.microsoft`), lowered onto existing kinds.

The model builder of onnxruntime-genai (`src/python/py/models/builder.py`) writes Llama / Qwen
/ Phi decoders with:

- `GroupQueryAttention`: q/k/v [B, S, H*D] (or packed QKV in `query`), past/present KV caches
  [B, kv_heads, T, D], optional rotary (`do_rotary`, cos/sin caches [max_pos, D/2]), causal.
  -> `rotary` layers on q and k (positions past .. past+S-1) and one `attention` layer.
  `seqlens_k` / `total_sequence_length` are read as "no padding": every row holds
  past + S tokens (static shapes give past and S; padded batches are not modelled).
- `RotaryEmbedding` (input, position_ids, cos_cache, sin_cache) -> `rotary`.
- `SkipSimplifiedLayerNormalization` (input, skip, gamma, bias?) -> eltwise add (its 4th
  output, input + skip + bias, feeds the next residual) and norm(rms_norm).
"""

from __future__ import annotations

import numpy as np

from compiler.errors import ModelError
from compiler.ir import Layer, frozen_attrs
from compiler.ops.attention import head_dim, required
from compiler.ops.opdef import Lowered, LowerRule, Node, OpDef

MS = "com.microsoft"


def _layer(name: str, kind: str, inputs: tuple[str, ...], outputs: tuple[str, ...],
           **attrs: object) -> Layer:
    return Layer(name, kind, inputs, outputs, frozen_attrs(attrs))


def _unpack_qkv(node: Node, heads: int, kv_heads: int) -> tuple[tuple[str, str, str],
                                                                   tuple[Layer, ...]]:
    """(q, k, v) names; a packed `query` [B, S, (H + 2 Hkv) D] is split first."""
    if node.input(1):
        return (node.inputs[0], node.inputs[1], node.inputs[2]), ()
    d = required(node.spec(0)).shape[2] // (heads + 2 * kv_heads)
    names = tuple(f"{node.name}.{t}" for t in ("q", "k", "v"))
    split = _layer(f"{node.name}.split", "split", (node.inputs[0],), names, axis=2,
                   sizes=(heads * d, kv_heads * d, kv_heads * d))
    return (names[0], names[1], names[2]), (split,)


def _positions(node: Node, name: str) -> dict[str, np.ndarray]:
    """past .. past+S-1 for every row: the positions of the new tokens (no padding)."""
    q, past = required(node.spec(0)), node.spec(3)
    start = past.shape[2] if past is not None else 0
    pos = start + np.arange(q.shape[1], dtype=np.int64)
    return {name: np.ascontiguousarray(np.broadcast_to(pos, (q.shape[0], q.shape[1])))}


def _check_gqa(node: Node, local_window_size: int, smooth_softmax: int, qk_output: int) -> None:
    extra = [node.input(i) for i in range(9, 12) if node.input(i)]
    if local_window_size != -1 or smooth_softmax or qk_output or extra:
        raise ModelError(node.name, "GroupQueryAttention with a local window, smooth "
                         "softmax, qk output, position_ids, attention_bias or head_sink is "
                         "not supported")


def lower_group_query_attention(node: Node, num_heads: int = 0, kv_num_heads: int = 0,
                                do_rotary: int = 0, rotary_interleaved: int = 0,
                                scale: float = 0.0, local_window_size: int = -1,
                                softcap: float = 0.0, smooth_softmax: int = 0,
                                qk_output: int = 0) -> Lowered:
    """com.microsoft GroupQueryAttention -> [split] [rotary x2] attention (module docstring)."""
    _check_gqa(node, local_window_size, smooth_softmax, qk_output)
    (q, k, v), layers = _unpack_qkv(node, num_heads, kv_num_heads)
    consts: dict[str, np.ndarray] = {}
    if do_rotary:
        pos = f"{node.name}.positions"
        consts = _positions(node, pos)
        rot = {"rotary_dim": 0, "interleaved": bool(rotary_interleaved)}
        layers += tuple(_layer(f"{node.name}.rotary_{t}", "rotary",
                               (x, node.inputs[7], node.inputs[8], pos), (f"{x}.rot",),
                               num_heads=h, **rot)
                        for t, x, h in (("q", q, num_heads), ("k", k, kv_num_heads)))
        q, k = f"{q}.rot", f"{k}.rot"
    d = head_dim(node, 0, num_heads + (0 if node.input(1) else 2 * kv_num_heads))
    outs = (list(node.outputs[:3]) + ["", ""])[:3]
    att = _layer(node.name, "attention", (q, k, v, "", node.input(3), node.input(4)),
                 tuple(o or f"{node.name}.out{i}" for i, o in enumerate(outs)),
                 scale=float(scale) if scale else 1.0 / float(np.sqrt(d)), causal=True,
                 q_heads=int(num_heads), kv_heads=int(kv_num_heads), softcap=float(softcap))
    return Lowered(layers=layers + (att,), consts=consts)


def lower_ms_rotary(node: Node, interleaved: int = 0, is_packed_batching: int = 0,
                    num_heads: int = 0, rotary_embedding_dim: int = 0,
                    scale: float = 1.0) -> Lowered:
    """com.microsoft RotaryEmbedding (input, position_ids, cos_cache, sin_cache) -> rotary."""
    if is_packed_batching or scale != 1.0:
        raise ModelError(node.name, "RotaryEmbedding packed batching / scale is not supported")
    layer = _layer(node.name, "rotary", (node.inputs[0], node.inputs[2], node.inputs[3],
                                         node.inputs[1]), node.outputs[:1],
                   num_heads=int(num_heads), rotary_dim=int(rotary_embedding_dim),
                   interleaved=bool(interleaved))
    return Lowered(layers=(layer,))


def lower_skip_simplified_norm(node: Node, epsilon: float = 1e-5) -> Lowered:
    """com.microsoft SkipSimplifiedLayerNormalization -> eltwise add, norm(rms_norm)."""
    if any(node.outputs[1:3]):
        raise ModelError(node.name, "SkipSimplifiedLayerNormalization mean / inv_std_var "
                         "outputs are not supported")
    total = node.outputs[3] if len(node.outputs) > 3 and node.outputs[3] else \
        f"{node.name}.sum"
    addends = tuple(t for t in (node.inputs[0], node.inputs[1], node.input(3)) if t)
    rank = len(required(node.spec(0)).shape)
    return Lowered(layers=(
        _layer(f"{node.name}.skip", "eltwise", addends, (total,), fn="add"),
        _layer(node.name, "norm", (total, node.inputs[2]), node.outputs[:1], fn="rms_norm",
               axis=rank - 1, epsilon=float(epsilon)),
    ))


LOWER: dict[str, LowerRule] = {}
# Rules of ops outside the default domain, keyed (domain, op_type): com.microsoft's
# RotaryEmbedding shares its name with ONNX's but orders its inputs differently.
DOMAIN_LOWER: dict[tuple[str, str], LowerRule] = {
    (MS, "GroupQueryAttention"): lower_group_query_attention,
    (MS, "RotaryEmbedding"): lower_ms_rotary,
    (MS, "SkipSimplifiedLayerNormalization"): lower_skip_simplified_norm,
}
OPS: tuple[OpDef, ...] = ()
