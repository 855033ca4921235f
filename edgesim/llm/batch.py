"""One decode step of a padded batch: B sequences of different context lengths, one new token
each, as onnxruntime runs it with grouped-query attention or with a masked plain attention.

Weights are read once per step and the linears are B-row GEMMs (`phases.decode_linears_s`:
the CompInt8 GEMM kernels on Arm dot-product cores). The attention differs:

- `gqa`: onnxruntime's GroupQueryAttention takes each sequence's length (`seqlens_k`, from the
  attention mask) and reads and scores only its own C_b cached positions of the shared
  max-length buffer;
- `masked`: a plain attention over the padded cache (standard Attention with an additive
  mask, or the decomposed form) reads and scores all C_max positions of every sequence, the
  mask zeroing the padding after the fact.

So with contexts C_b the KV bytes and attention MACs scale with sum C_b (gqa) or B * max C_b
(masked); with equal lengths the two are the same, and B = 1 is `simulate_llm`'s decode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgesim.errors import UserError
from edgesim.llm.config import DecoderConfig
from edgesim.llm.formats import parse_format
from edgesim.llm.phases import (
    decode_linears_s,
    fp32_rate,
    overhead_s,
    token_time_s,
)
from edgesim.llm.traffic import FP32, kv_bytes_per_position, weight_bytes
from hwmodels.cpu import CpuTarget

ATTENTION = ("gqa", "masked")


@dataclass(frozen=True)
class BatchStep:
    """A batched decode step at each thread count."""

    attention: str
    contexts: tuple[int, ...]
    bytes: float             # DRAM bytes of the step
    step_s: np.ndarray       # [T] seconds per step (one token of every sequence)

    @property
    def tokens_per_s(self) -> np.ndarray:
        """Tokens of all sequences per second, [T]."""
        return len(self.contexts) / self.step_s


def attended_positions(contexts: Sequence[int], attention: str) -> float:
    """Cached positions the step's attention reads, summed over the batch."""
    if attention not in ATTENTION:
        raise UserError("attention", f"must be one of {ATTENTION}, got {attention!r}")
    c = np.asarray(contexts, np.float64)
    return float(c.sum() if attention == "gqa" else c.size * c.max())


def batch_step(cfg: DecoderConfig, target: CpuTarget, fmt: str, contexts: Sequence[int],
               threads: Sequence[int], attention: str = "gqa", kv_dtype: str = "fp32",
               head_format: str | None = None) -> BatchStep:
    """Predict one decode step of a batch whose sequences hold `contexts` cached tokens.

    Raises:
        UserError: an empty batch, a context < 1, or an unknown attention.
    """
    if not len(contexts) or min(contexts) < 1:
        raise UserError("contexts", f"need one or more lengths >= 1, got {list(contexts)}")
    f = parse_format(fmt)
    h = parse_format(head_format) if head_format else f
    b, pos = len(contexts), attended_positions(contexts, attention)
    w = weight_bytes(cfg, f, h)
    per_pos = kv_bytes_per_position(cfg, kv_dtype)
    nbytes = (w.blocks + w.head + w.small + b * cfg.hidden * h.bytes_per_weight()
              + per_pos * (pos + b) + b * cfg.vocab * FP32)
    t = np.asarray(threads)
    lin = (decode_linears_s(target, f, list(cfg.layer_linears().values()), cfg.layers, t,
                            rows=b)
           + decode_linears_s(target, h, [(cfg.hidden, cfg.vocab)], 1, t, rows=b))[:, 0]
    attn = 2.0 * cfg.layers * cfg.heads * cfg.head_dim * pos / fp32_rate(target, t)
    step = token_time_s(np.asarray(nbytes), lin + attn, target, t)[0] + overhead_s(cfg, target, t)
    return BatchStep(attention, tuple(int(c) for c in contexts), float(nbytes), step)
