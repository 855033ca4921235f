"""llama.cpp's Q8_0 tensors (a Qwen2.5-0.5B Q4_0 GGUF's Q8_0 output table, a Q8_0 GGUF) run its
Q8_0 kernels (repack.cpp ggml_gemv / ggml_gemm_q8_0_4x4_q8_0 on a dotprod core), not Q4_0's:
instruction-count efficiencies and the head's decode time in closed form."""

from __future__ import annotations

import numpy as np
import pytest

from edgesim.llm import load_config
from edgesim.llm.formats import parse_format
from edgesim.llm.phases import decode_compute_s
from hwmodels.kernels import cpu_nbits as K
from hwmodels.target import load_target

PI5 = load_target("rpi5")   # Cortex-A76: 2 sdot pipes x 128 bits, 2.4 GHz, gemm_efficiency 0.85


def test_q8_0_weights_pick_the_q8_0_kernels() -> None:
    assert K.nbits_kernel(8, 1, "llama.cpp") is K.GGML_Q8_0_1X4
    assert K.nbits_kernel(8, 512, "llama.cpp") is K.GGML_Q8_0_4X4
    assert K.nbits_kernel(4, 1, "llama.cpp") is K.GGML_Q4_0_1X4
    # gemv_q8_0_4x4 per 32-deep block: 8 sdots by lane; scvtf + fmla on one accumulator and
    # the A x B scale product (2 loads, 2 fcvtl, 1 fmul); B's bytes need no shl / and
    assert K.GGML_Q8_0_1X4.efficiency() == pytest.approx(8 / (8 + 2 + 5))
    assert K.GGML_Q4_0_1X4.efficiency() == pytest.approx(8 / (8 + 8 + 2 + 5))
    # 4 x 4 tile: 32 sdots, 4 accumulators x (scvtf + fmla) + 5
    assert K.GGML_Q8_0_4X4.efficiency() == pytest.approx(32 / (32 + 8 + 5))


def test_a_q8_0_head_decodes_with_the_q8_0_gemv() -> None:
    cfg = load_config("zoo:qwen2.5-0.5b")   # head 896 -> 151936
    q4, q8 = parse_format("q4"), parse_format("q8")
    ctx = np.array([64])
    both = decode_compute_s(cfg, PI5, q4, q8, np.array([1]), ctx, "llama.cpp")[0, 0]
    q4_head = decode_compute_s(cfg, PI5, q4, q4, np.array([1]), ctx, "llama.cpp")[0, 0]
    # one thread, 8 tasks of 18992 columns (no padding): head MACs / (peak x eff x 0.85);
    # 1 / eff is 15 / 8 for Q8_0 and 23 / 8 for Q4_0, so the Q8_0 head is faster by exactly
    # N K / (peak x 0.85), the same A quantisation in both
    peak = 2 * 16 * 2.4e9
    assert q4_head - both == pytest.approx(151936 * 896 / (peak * 0.85), rel=1e-9)


def test_llama_cpp_blocks_carry_an_fp16_scale() -> None:
    # memory-bound GEMV: B bytes at 8 bits + a 2-byte scale per 32 (block_q8_0: 34 bytes),
    # where MatMulNBits' blocks carry an fp32 scale (36 bytes)
    n, k, slow_bw = np.array([4864]), np.array([896]), 1e6
    quant_a = 896 * K.QUANT_A_OPS_PER_VALUE / (PI5.fma_pipes * PI5.clock_ghz * 1e9)
    sec = K.gemm_seconds(1, n, k, 8, 32, PI5, 1, slow_bw, "llama.cpp")[0]
    assert sec == pytest.approx((4864 * 896 * 34 / 32 + 896 * 4 + 4864 * 4) / slow_bw + quant_a)
    ort = K.gemm_seconds(1, n, k, 8, 32, PI5, 1, slow_bw)[0]
    assert ort == pytest.approx((4864 * 896 * 36 / 32 + 896 * 4 + 4864 * 4) / slow_bw + quant_a)
