"""Decoder attention op family: fused scaled-dot-product `attention` and `rotary` embeddings.

Kinds (conventions other code relies on):

- "attention": inputs (q, k, v, mask?, past_k?, past_v?), outputs (y, present_k, present_v).
  q/k/v are [B, H, S, D] (4-D) or [B, S, H*D] (3-D, with attrs `q_heads` / `kv_heads`);
  past/present are always [B, kv_heads, T, D] with present = concat(past, new) on axis 2.
  Grouped-query attention: each KV head serves `q_heads / kv_heads` consecutive query heads.
  `y = softmax(cap(scale * q k^T) + mask) v`, cap(z) = softcap * tanh(z / softcap) when
  `softcap` > 0; with `causal`, query i sees key j iff j <= i + P, P the past length (the new
  tokens follow the cached ones; without a cache it is top-left aligned), as ONNX opset-23
  `Attention` and onnxruntime's `GroupQueryAttention` define it. A bool mask keeps True
  entries; a float mask is added to the scores.
- "rotary": inputs (x, cos, sin, positions?), output y. x is [B, H, S, D] (4-D) or
  [B, S, H*D] (3-D, attr `num_heads`); cos/sin are [max_pos, R/2] gathered by the int
  positions [B, S] (a single position p means p, p+1, ...), or [B, S, R/2] without positions.
  The first R = `rotary_dim` (0: all) channels of each head are rotated in halves
  (x1 = x[:R/2], x2 = x[R/2:]) or, `interleaved`, in pairs (x[0::2], x[1::2]):
  (x1, x2) -> (x1 cos - x2 sin, x1 sin + x2 cos), as ONNX opset-23 `RotaryEmbedding`.

Lowering here covers the standard ONNX ops; `compiler.ops.decoder` lowers onnxruntime-genai's
contrib ops (GroupQueryAttention, RotaryEmbedding, SkipSimplifiedLayerNormalization) onto them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from compiler.errors import ModelError
from compiler.ir import Facts, Spec
from compiler.ops.opdef import Lowered, LowerRule, Node, OpDef, single, unbroadcast

Array = np.ndarray
Grads = tuple[Array | None, ...]
T = TypeVar("T")


def required(x: T | None, what: str = "input") -> T:
    """`x`, or ValueError when a required input is absent."""
    if x is None:
        raise ValueError(f"required {what} is absent")
    return x


# --- layouts ----------------------------------------------------------------------------------


def to_heads(x: Array, heads: int) -> Array:
    """[B, S, H*D] -> [B, H, S, D]; 4-D input is returned as it is."""
    if x.ndim == 4:
        return x
    b, s, hd = x.shape
    return x.reshape(b, s, heads, hd // heads).transpose(0, 2, 1, 3)


def from_heads(x: Array, rank: int) -> Array:
    """[B, H, S, D] -> the layout of a `rank`-D input (inverse of `to_heads`)."""
    if rank == 4:
        return x
    b, h, s, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, s, h * d)


def _kv(past: Array | None, new: Array) -> Array:
    return new if past is None else np.concatenate([past.astype(new.dtype), new], axis=2)


def _group(x: Array, groups: int) -> Array:
    """Expand each KV head to its query heads: [B, Hkv, T, D] -> [B, Hkv*groups, T, D]."""
    return np.repeat(x, groups, axis=1) if groups > 1 else x


def _ungroup(g: Array, groups: int) -> Array:
    """Cotangent of `_group`: sum each KV head's query heads back."""
    b, h, t, d = g.shape
    return g.reshape(b, h // groups, groups, t, d).sum(axis=2) if groups > 1 else g


# --- attention --------------------------------------------------------------------------------


def _allowed(s: int, t: int, past: int) -> Array:
    """Causal pattern [S, T] after `past` cached keys: query i sees key j iff j <= i + past."""
    return np.arange(t)[None, :] <= np.arange(s)[:, None] + past


def _capped(q4: Array, ke: Array, scale: float, softcap: float) -> tuple[Array, Array | None]:
    """The scores before masking, and tanh(z / softcap) when capped (its vjp needs it)."""
    z = scale * (q4 @ ke.swapaxes(-1, -2))
    if softcap <= 0:
        return z, None
    th = np.tanh(z / softcap)
    return softcap * th, th


def _probs(z: Array, mask: Array | None, causal: bool, past: int) -> Array:
    """softmax(z + mask) over the keys, masked entries exactly 0."""
    if mask is not None:
        z = np.where(mask, z, -np.inf) if mask.dtype == bool else z + mask.astype(z.dtype)
    if causal:
        z = np.where(_allowed(z.shape[-2], z.shape[-1], past), z, -np.inf)
    e: Array = np.exp(z - z.max(axis=-1, keepdims=True))
    return np.asarray(e / e.sum(axis=-1, keepdims=True))


def _pad_mask(mask: Array | None, t: int) -> Array | None:
    """A mask shorter than the keys is padded with 'masked' (ONNX Attention)."""
    if mask is None or mask.shape[-1] == t:
        return mask
    pad = [(0, 0)] * (mask.ndim - 1) + [(0, t - mask.shape[-1])]
    return np.asarray(np.pad(mask, pad,
                             constant_values=False if mask.dtype == bool else -np.inf))


def _setup(q: Array, k: Array, v: Array, past_k: Array | None, past_v: Array | None,
           q_heads: int, kv_heads: int) -> tuple[Array, Array, Array, int]:
    """q [B, Hq, S, D], present k / v [B, Hkv, T, D] and the group size."""
    q4, k4, v4 = to_heads(q, q_heads), to_heads(k, kv_heads), to_heads(v, kv_heads)
    kf, vf = _kv(past_k, k4), _kv(past_v, v4)
    return q4, kf, vf, q4.shape[1] // kf.shape[1]


def _attention_forward(q: Array, k: Array, v: Array, mask: Array | None = None,
                       past_k: Array | None = None, past_v: Array | None = None, *,
                       scale: float, causal: bool, q_heads: int = 0, kv_heads: int = 0,
                       softcap: float = 0.0) -> tuple[Array, Array, Array]:
    q4, kf, vf, groups = _setup(q, k, v, past_k, past_v, q_heads, kv_heads)
    z, _ = _capped(q4, _group(kf, groups), scale, softcap)
    p = _probs(z, _pad_mask(mask, kf.shape[2]), causal, _past(past_k))
    y = (p @ _group(vf, groups)).astype(q.dtype)
    return from_heads(y, q.ndim), kf, vf


def _split_kv(g: Array, past: Array | None, new: Array, heads: int) -> tuple[Array | None, Array]:
    """A present-cache cotangent split into (past, new-in-its-input-layout) parts."""
    cut = 0 if past is None else past.shape[2]
    return (None if past is None else g[:, :, :cut]), from_heads(g[:, :, cut:], new.ndim)


def _attention_vjp(gs: Sequence[Array | None], xs: Sequence[Array | None],
                   ys: Sequence[Array], *, scale: float, causal: bool, q_heads: int = 0,
                   kv_heads: int = 0, softcap: float = 0.0) -> Grads:
    mask, past_k, past_v = (list(xs[3:]) + [None] * 3)[:3]
    q, k, v = required(xs[0]), required(xs[1]), required(xs[2])
    q4, kf, vf, groups = _setup(q, k, v, past_k, past_v, q_heads, kv_heads)
    ke, ve = _group(kf, groups), _group(vf, groups)
    z, th = _capped(q4, ke, scale, softcap)
    p = _probs(z, _pad_mask(mask, kf.shape[2]), causal, _past(past_k))
    gy = to_heads(gs[0], q4.shape[1]) if gs[0] is not None else np.zeros(
        p.shape[:-1] + (ve.shape[-1],), q4.dtype)
    gp = gy @ ve.swapaxes(-1, -2)
    gz = p * (gp - (gp * p).sum(axis=-1, keepdims=True))   # softmax's vjp
    gmask = _mask_cot(mask, gz)
    gz = gz if th is None else gz * (1.0 - th * th)          # tanh cap's vjp
    gkf = _ungroup(scale * gz.swapaxes(-1, -2) @ q4, groups) + _cot(gs, 1, kf)
    gvf = _ungroup(p.swapaxes(-1, -2) @ gy, groups) + _cot(gs, 2, vf)
    gpk, gk = _split_kv(gkf, past_k, k, kv_heads)
    gpv, gv = _split_kv(gvf, past_v, v, kv_heads)
    grads = (from_heads(scale * gz @ ke, q.ndim), gk, gv, gmask, gpk, gpv)
    return grads[:len(xs)]


def _past(past_k: Array | None) -> int:
    return 0 if past_k is None else past_k.shape[2]


def _cot(gs: Sequence[Array | None], i: int, like: Array) -> Array | float:
    g = gs[i] if len(gs) > i else None
    return 0.0 if g is None else g


def _mask_cot(mask: Array | None, gz: Array) -> Array | None:
    """An additive float mask's cotangent is the scores'; a bool mask has none."""
    if mask is None or mask.dtype == bool or mask.shape[-1] != gz.shape[-1]:
        return None
    return unbroadcast(gz, mask.shape).astype(mask.dtype)


def _heads_of(spec: Spec, heads: int) -> tuple[int, int, int]:
    """(batch, heads, head_dim) of a q/k/v spec in either layout."""
    if len(spec.shape) == 4:
        return spec.shape[0], spec.shape[1], spec.shape[3]
    if heads <= 0 or spec.shape[2] % heads:
        raise ValueError(f"3-D input {spec.shape} needs a head count dividing {spec.shape[2]}")
    return spec.shape[0], heads, spec.shape[2] // heads


def _attention_shape(specs: Sequence[Spec | None], *, scale: float, causal: bool,
                     q_heads: int = 0, kv_heads: int = 0, softcap: float = 0.0
                     ) -> tuple[Spec, ...]:
    q, k, v = required(specs[0]), required(specs[1]), required(specs[2])
    b, hq, dq = _heads_of(q, q_heads)
    _, hkv, dk = _heads_of(k, kv_heads)
    _, _, dv = _heads_of(v, kv_heads)
    if dq != dk or hkv == 0 or hq % hkv:
        raise ValueError(f"q heads {hq} x {dq} do not fit k heads {hkv} x {dk}")
    past = specs[4] if len(specs) > 4 else None
    t = _seq(k) + (past.shape[2] if past is not None else 0)
    s = _seq(q)
    y = (b, hq, s, dv) if len(q.shape) == 4 else (b, s, hq * dv)
    return (Spec(y, q.dtype), Spec((b, hkv, t, dk), k.dtype), Spec((b, hkv, t, dv), v.dtype))


def _seq(spec: Spec) -> int:
    return spec.shape[2] if len(spec.shape) == 4 else spec.shape[1]


def _attention_facts(specs_in: Sequence[Spec | None], specs_out: Sequence[Spec], *,
                     q_heads: int = 0, **attrs: object) -> Facts:
    """Two batched GEMMs per query head (scores [S, T] over D, then [S, Dv] over T) and the
    softmax. The kind is costed as streaming work (it has no weights to quantise), so `ops`
    counts each MAC as two operations plus five per score (max, sub, exp, sum, div)."""
    q = required(specs_in[0])
    b, hq, d = _heads_of(q, q_heads)
    s, t = _seq(q), specs_out[1].shape[2]
    macs = 2 * b * hq * s * t * d
    return Facts(m=s, n=t, k=d, groups=2 * b * hq, macs=macs, ops=2 * macs + 5 * b * hq * s * t)


# --- rotary -----------------------------------------------------------------------------------


def _angles(cos: Array, sin: Array, positions: Array | None, b: int, s: int
            ) -> tuple[Array, Array]:
    """cos / sin [B, S, 1, R/2] for the given positions."""
    if positions is None:
        return cos[:, :, None, :], sin[:, :, None, :]
    pos = _positions(positions, b, s)
    return cos[pos][:, :, None, :], sin[pos][:, :, None, :]


def _positions(positions: Array, b: int, s: int) -> Array:
    """Position ids [B, S]; a single id p stands for p, p+1, ... (onnxruntime's contrib op)."""
    pos = np.asarray(positions, dtype=np.int64)
    if pos.size == 1 and s > 1:
        pos = pos.reshape(()) + np.arange(s)
    return np.broadcast_to(pos, (b, s))


def _as_bshd(x: Array, num_heads: int) -> Array:
    """x as [B, S, H, D] (a view)."""
    if x.ndim == 4:
        return x.transpose(0, 2, 1, 3)
    b, s, hd = x.shape
    return x.reshape(b, s, num_heads, hd // num_heads)


def _from_bshd(y: Array, like: Array) -> Array:
    return y.transpose(0, 2, 1, 3) if like.ndim == 4 else y.reshape(like.shape)


def _pairs(xr: Array, interleaved: bool) -> tuple[Array, Array]:
    if interleaved:
        return xr[..., 0::2], xr[..., 1::2]
    half = xr.shape[-1] // 2
    return xr[..., :half], xr[..., half:]


def _unpairs(a: Array, b: Array, interleaved: bool) -> Array:
    if interleaved:
        return np.stack([a, b], axis=-1).reshape(a.shape[:-1] + (2 * a.shape[-1],))
    return np.concatenate([a, b], axis=-1)


def _rotate(x: Array, c: Array, sn: Array, *, num_heads: int, rotary_dim: int,
            interleaved: bool) -> Array:
    """The rotation on x's first R channels per head; c/sn are [B, S, 1, R/2]."""
    x4 = _as_bshd(x, num_heads)
    r = rotary_dim or x4.shape[-1]
    x1, x2 = _pairs(x4[..., :r], interleaved)
    rot = _unpairs(x1 * c - x2 * sn, x1 * sn + x2 * c, interleaved)
    y = np.concatenate([rot.astype(x.dtype), x4[..., r:]], axis=-1)
    return _from_bshd(y, x)


def _rotary_forward(x: Array, cos: Array, sin: Array, positions: Array | None = None, *,
                    num_heads: int = 0, rotary_dim: int = 0, interleaved: bool = False
                    ) -> tuple[Array]:
    b, s = x.shape[0], (x.shape[2] if x.ndim == 4 else x.shape[1])
    c, sn = _angles(cos, sin, positions, b, s)
    return (_rotate(x, c, sn, num_heads=num_heads, rotary_dim=rotary_dim,
                    interleaved=interleaved),)


def _table_cot(g: Array, cache: Array, positions: Array | None, b: int, s: int) -> Array:
    """Cotangent of a cos/sin table from that of its gathered rows [B, S, R/2]."""
    if positions is None:
        return g.astype(cache.dtype)
    out = np.zeros(cache.shape, dtype=np.float64)
    np.add.at(out, _positions(positions, b, s), g)
    return out.astype(cache.dtype)


def _rotary_vjp(gs: Sequence[Array | None], xs: Sequence[Array | None], ys: Sequence[Array],
                *, num_heads: int = 0, rotary_dim: int = 0, interleaved: bool = False) -> Grads:
    x, cos, sin = required(xs[0]), required(xs[1]), required(xs[2])
    positions = xs[3] if len(xs) > 3 else None
    g = gs[0] if gs[0] is not None else np.zeros_like(ys[0])
    b, s = x.shape[0], (x.shape[2] if x.ndim == 4 else x.shape[1])
    c, sn = _angles(cos, sin, positions, b, s)
    # a rotation's transpose is the rotation by the opposite angle
    gx = _rotate(g, c, -sn, num_heads=num_heads, rotary_dim=rotary_dim, interleaved=interleaved)
    g4, x4 = _as_bshd(g, num_heads), _as_bshd(x, num_heads)
    r = rotary_dim or x4.shape[-1]
    (g1, g2), (x1, x2) = _pairs(g4[..., :r], interleaved), _pairs(x4[..., :r], interleaved)
    gc = (g1 * x1 + g2 * x2).sum(axis=2)
    gsn = (g2 * x1 - g1 * x2).sum(axis=2)
    grads = (gx, _table_cot(gc, cos, positions, b, s), _table_cot(gsn, sin, positions, b, s),
             None)
    return grads[:len(xs)]


def _rotary_shape(specs: Sequence[Spec | None], *, num_heads: int = 0, rotary_dim: int = 0,
                  interleaved: bool = False) -> tuple[Spec, ...]:
    x, cos = required(specs[0]), required(specs[1])
    _, _, d = _heads_of(x, num_heads)
    r = rotary_dim or d
    if r > d or r % 2 or cos.shape[-1] != r // 2:
        raise ValueError(f"cos/sin last dim {cos.shape[-1]} is not rotary_dim/2 = {r // 2}")
    return (x,)


def _rotary_facts(specs_in: Sequence[Spec | None], specs_out: Sequence[Spec],
                  **attrs: object) -> Facts:
    return Facts(ops=3 * specs_out[0].size)   # two products and a sum per element


# --- lowering of the standard ONNX ops (opset 23) --------------------------------------------


def head_dim(node: Node, i: int, heads: int) -> int:
    """Per-head width of input `i` of `node` (3-D: needs `heads`)."""
    try:
        return _heads_of(required(node.spec(i)), heads)[2]
    except ValueError as e:
        raise ModelError(node.name, str(e)) from e


def lower_attention(node: Node, is_causal: int = 0, kv_num_heads: int = 0,
                    q_num_heads: int = 0, qk_matmul_output_mode: int = 0,
                    scale: float | None = None, softcap: float = 0.0,
                    softmax_precision: int = 0) -> Lowered:
    """ONNX Attention (opset 23) -> attention; its 4th output (qk_matmul_output) is refused."""
    if len(node.outputs) > 3 and node.outputs[3]:
        raise ModelError(node.name, "Attention qk_matmul_output is not supported")
    if len(node.inputs) > 6 and node.inputs[6]:
        raise ModelError(node.name, "Attention nonpad_kv_seqlen is not supported")
    d = head_dim(node, 0, q_num_heads)
    outs = _outputs(node)
    return single("attention", node, inputs=node.inputs[:6], outputs=outs,
                  scale=float(scale) if scale is not None else 1.0 / float(np.sqrt(d)),
                  causal=bool(is_causal), q_heads=int(q_num_heads), kv_heads=int(kv_num_heads),
                  softcap=float(softcap))


def _outputs(node: Node) -> tuple[str, ...]:
    """y, present_k, present_v; unused present outputs get private names."""
    outs = list(node.outputs[:3]) + [""] * (3 - len(node.outputs[:3]))
    return tuple(o or f"{node.name}.{n}" for o, n in zip(outs, ("y", "present_k", "present_v")))


def lower_rotary(node: Node, interleaved: int = 0, num_heads: int = 0,
                 rotary_embedding_dim: int = 0) -> Lowered:
    """ONNX RotaryEmbedding (opset 23): inputs (X, cos_cache, sin_cache, position_ids?)."""
    return single("rotary", node, inputs=node.inputs[:4], num_heads=int(num_heads),
                  rotary_dim=int(rotary_embedding_dim), interleaved=bool(interleaved))


OPS: tuple[OpDef, ...] = (
    OpDef("attention", shape=_attention_shape, forward=_attention_forward, vjp=_attention_vjp,
          facts=_attention_facts),
    OpDef("rotary", shape=_rotary_shape, forward=_rotary_forward, vjp=_rotary_vjp,
          facts=_rotary_facts),
)
LOWER: dict[str, LowerRule] = {"Attention": lower_attention, "RotaryEmbedding": lower_rotary}
