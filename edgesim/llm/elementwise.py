"""Memory traffic of a prefill's element-wise steps: norms, RoPE, bias and residual adds, SwiGLU.

Both runtimes run each such step over the whole prompt at once (llama.cpp: one ggml node per
op over the ubatch of up to 512 tokens; onnxruntime: one node over all P positions), so a step
moves every tensor it touches in full: at P = 512 a Qwen2.5-0.5B hidden state is 1.8 MB and its
SwiGLU operands 10 MB each, past a Pi 5's 2 MiB L3. A step whose tensors together fit in the
last-level cache is served from it (the producer just wrote them there); a larger one streams
from DRAM at the target's read bandwidth at the thread count (writes are priced as reads,
assumed). Their arithmetic is not priced (assumed hidden under the traffic).

Steps per decoder block, in fp32 features per token (each tensor read or written once):
llama.cpp (llama-graph.cpp's Qwen2 / Llama build, CPU backend without graph fusion, assumed):
rms_norm and the norm-weight mul twice (2 x (2 + 2) x hidden), q/k/v bias adds when the model
has them (2 x (q + 2 kv)), RoPE of q and k (2 x (q + kv)), K and V copied into the f16 cache
(2 x 1.5 kv), two residual adds (2 x 3 x hidden) and the fused SwiGLU (3 x intermediate).
onnxruntime (onnxruntime-genai's builder, `phases.OTHER_NODES_PER_BLOCK`): two
SkipSimplifiedLayerNormalization (input and skip read, output and sum written: 2 x 4 x hidden;
biases fused into MatMulNBits, assumed), rotary of q and k (2 x (q + kv)), SiLU
(2 x intermediate) and the gate Mul (3 x intermediate). Attention's own traffic is part of
`phases.attention_prefill_s`.
"""

from __future__ import annotations

import numpy as np

from edgesim.llm.config import DecoderConfig
from hwmodels.cpu import CpuTarget

FP32 = 4.0


def step_features(cfg: DecoderConfig, runtime: str) -> list[float]:
    """Features per token each element-wise step of one block moves (reads + writes)."""
    h, q, kv, inter = cfg.hidden, cfg.heads * cfg.head_dim, cfg.kv_dim, cfg.intermediate
    if runtime.startswith("llama.cpp"):
        bias = [2.0 * q, 2.0 * kv, 2.0 * kv] if cfg.attention_bias else []
        return [*[2.0 * h] * 4, *bias, 2.0 * q, 2.0 * kv, 1.5 * kv, 1.5 * kv, 3.0 * h, 3.0 * h,
                3.0 * inter]
    return [4.0 * h, 4.0 * h, 2.0 * q, 2.0 * kv, 2.0 * inter, 3.0 * inter]


def elementwise_prefill_s(cfg: DecoderConfig, target: CpuTarget, dram_bw: float,
                          prompt_len: int, runtime: str = "onnxruntime") -> float:
    """Seconds the element-wise steps of a `prompt_len`-token prefill spend moving their
    tensors: each step from the last-level cache when its tensors fit there, else from DRAM at
    `dram_bw` bytes/s (the read bandwidth at the thread count)."""
    nbytes = np.array(step_features(cfg, runtime)) * FP32 * prompt_len
    llc = target.caches[-1]
    llc_bw = llc.bandwidth_bytes_per_cycle * target.clock_ghz * 1e9
    rate = np.where(nbytes <= llc.size_kib * 1024.0, llc_bw, dram_bw)
    return float(cfg.layers * (nbytes / rate).sum())
