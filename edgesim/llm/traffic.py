"""Bytes a decoder holds and reads: weights in runtime layout, KV cache, activations.

One home for the byte counts that both the phase model (`phases`) and the RAM check (`fit`)
use. Layout (onnxruntime-genai's CPU models, DESIGN.md): each block's seven linears are
MatMulNBits (or float MatMul); the LM head is a MatMulNBits in its own format; the embedding
table is a GatherBlockQuantized in the head's format -- one shared table when the embeddings are
tied, a second one otherwise (fp32 Gather when the head is float); norms and biases are fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgesim.llm.config import DecoderConfig
from edgesim.llm.formats import WeightFormat, kv_bytes

FP32 = 4.0


@dataclass(frozen=True)
class WeightBytes:
    """Resident weight bytes by part."""

    blocks: float      # the layers' linears
    head: float        # the LM head
    embedding: float   # an untied embedding table (0 when tied: the head's table is shared)
    small: float       # norms and biases, fp32

    def total(self) -> float:
        """All resident weight bytes."""
        return self.blocks + self.head + self.embedding + self.small


def weight_bytes(cfg: DecoderConfig, fmt: WeightFormat, head: WeightFormat) -> WeightBytes:
    """Resident weight bytes of `cfg` with block linears in `fmt` and the head in `head`."""
    emb = cfg.embedding_params() * head.bytes_per_weight()
    return WeightBytes(blocks=cfg.layers * cfg.block_linear_params() * fmt.bytes_per_weight(),
                       head=emb, embedding=0.0 if cfg.tied else emb,
                       small=cfg.small_params() * FP32)


def kv_bytes_per_position(cfg: DecoderConfig, kv_dtype: str) -> float:
    """KV-cache bytes one token position adds: K and V of every layer and KV head."""
    return 2 * cfg.layers * cfg.kv_dim * kv_bytes(kv_dtype)


def decode_bytes(cfg: DecoderConfig, fmt: WeightFormat, head: WeightFormat, kv_dtype: str,
                 contexts: np.ndarray, share_kv_buffer: bool = True) -> np.ndarray:
    """DRAM bytes read or written to decode one token at each context length, float64 [C].

    All weights but the embedding table once (one row of it), the KV cache at the context
    (read twice more and written when past and present are separate buffers: the attention
    node concatenates them), the new position's K/V, and the fp32 logits. Other activations
    are a few KiB per layer and stay in cache.
    """
    w = weight_bytes(cfg, fmt, head)
    per_pos = kv_bytes_per_position(cfg, kv_dtype)
    kv_passes = 1.0 if share_kv_buffer else 3.0  # read past; + copy into present (read, write)
    fixed = w.blocks + w.head + w.small + cfg.hidden * head.bytes_per_weight()
    return fixed + per_pos * (kv_passes * np.asarray(contexts, np.float64) + 1) + cfg.vocab * FP32


def prefill_activation_bytes(cfg: DecoderConfig, prompt_len: int) -> float:
    """Peak activation bytes of a prefill of `prompt_len` tokens (fp32).

    The logits of every position, one block's widest live set (residual, q/k/v, gate and up)
    and one layer's attention scores (heads x P x P).
    """
    p = float(prompt_len)
    live = cfg.hidden * 2 + (cfg.heads * cfg.head_dim + 2 * cfg.kv_dim) + 2 * cfg.intermediate
    return FP32 * (p * cfg.vocab + p * live + cfg.heads * p * p)
