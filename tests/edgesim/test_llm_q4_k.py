"""llama.cpp's Q4_K_M row: Q4_K repacked 8x4 on dotprod cores (PR 17494), its GEMV's
instruction count read from ggml_gemv_q4_K_8x4_q8_K, and the published Pi 5 decode at the
DRAM read roof."""

from __future__ import annotations

import numpy as np
import pytest

from bench.bench_llm import llama_cpp_runtime, predict_llama_cpp, published_rows
from edgesim.llm import load_config
from edgesim.llm.phases import overhead_s
from hwmodels.kernels import cpu_nbits as K
from hwmodels.target import load_target

PI5 = load_target("rpi5")


def test_q4_k_gemv_sdot_share_from_its_source() -> None:
    # ggml_gemv_q4_K_8x4_q8_K, per 64-deep sub-block of its 8 columns: 2 groups x 16 vdotq_laneq;
    # 2 x 8 vandq + 2 x 8 vshrq; scales: 2 decodes x 3, 2 x (vld1_s8 + vmovl_s8), 2 groups x
    # (2 vmovl_s16 + 2 vmulq_s32 + vaddq + vcvtq + vfmaq), 2 vdup + 4 vmlal, 4 zeroed
    # accumulators, and 23 per 256-deep super-block spread over its 4 sub-blocks
    kern = K.nbits_kernel(4, 1, "llama.cpp q4_K")
    assert kern is K.GGML_Q4_K_8X4_GEMV
    sdots, unpack, scale = 32, 32, 6 + 4 + 14 + 6 + 4 + 23 / 4
    assert kern.efficiency() == pytest.approx(sdots / (sdots + unpack + scale))
    assert 2 * kern.sdots() * K.SDOT_MACS == 64 * 8   # the 32-deep step is half a sub-block


def test_q4_k_m_row_runs_the_repacked_gemv_at_the_dram_roof() -> None:
    row = next(r for r in published_rows() if r["their_format"] == "Q4_K_M")
    assert llama_cpp_runtime(row["kernel_family"]) == "llama.cpp q4_K"
    cfg = load_config("zoo:qwen2.5-0.5b")
    # 398 MB GGUF + f16 K and V (24 layers x 128 wide) at 64 tokens + fp32 logits, over the
    # 4-thread read roof (rpi5.yaml: 10.6 GB/s)
    nbytes = 398e6 + 2 * 24 * 128 * 2.0 * 64 + 151936 * 4.0
    step = nbytes / 10.6e9 + overhead_s(cfg, PI5, np.array([4]))[0]
    assert predict_llama_cpp(cfg, PI5, row) == pytest.approx(1.0 / step)
