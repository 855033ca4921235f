"""Prefill's element-wise steps priced by the bytes they move (edgesim.llm.elementwise): the
ggml op list of a Qwen2 block counted by hand, the last-level-cache / DRAM switch in closed
form, and the published llama.cpp Pi 5 pp512 thread scaling it was missing."""

from __future__ import annotations

import numpy as np
import pytest

from edgesim.llm import load_config
from edgesim.llm.elementwise import elementwise_prefill_s, step_features
from edgesim.llm.formats import parse_format
from edgesim.llm.phases import prefill_s
from hwmodels.target import load_target

PI5 = load_target("rpi5")
QWEN = load_config("zoo:qwen2.5-0.5b")   # hidden 896, q 896, kv 128, intermediate 4864


def test_qwen2_block_moves_65_mb_at_512_tokens_in_llama_cpp() -> None:
    h, q, kv, inter = 896, 896, 128, 4864
    per_token = (2 * (2 * h + 2 * h)      # two rms_norm + norm-weight mul, each read + write
                 + 2 * q + 4 * kv         # q/k/v bias adds (Qwen2 has attention biases)
                 + 2 * q + 2 * kv         # RoPE of q and k
                 + 2 * (kv + kv / 2)      # K, V fp32 read, f16 written into the cache
                 + 2 * 3 * h              # two residual adds: two reads, one write
                 + 3 * inter)             # swiglu: gate and up read, product written
    got = sum(step_features(QWEN, "llama.cpp")) * 4 * 512
    assert got == pytest.approx(per_token * 4 * 512)
    assert 60e6 < got < 70e6


def test_small_prompt_stays_in_l3_large_prompt_streams_from_dram() -> None:
    feats = sum(step_features(QWEN, "llama.cpp"))
    l3_bw = 32 * 2.4e9                     # rpi5.yaml: 32 B per cycle from the shared L3
    # 16 tokens: the largest step (swiglu, 3 x 4864 x 4 x 16 = 0.93 MB) fits the 2 MiB L3
    small = elementwise_prefill_s(QWEN, PI5, 10.6e9, 16, "llama.cpp")
    assert small == pytest.approx(24 * feats * 4 * 16 / l3_bw)
    # 512 tokens: only the k/v-wide steps (<= 2 x 128 x 4 x 512 = 0.52 MB) fit
    kv_feats = 2 * 2 * 128 + 2 * 128 + 2 * 1.5 * 128
    big = elementwise_prefill_s(QWEN, PI5, 10.6e9, 512, "llama.cpp")
    want = 24 * 4 * 512 * ((feats - kv_feats) / 10.6e9 + kv_feats / l3_bw)
    assert big == pytest.approx(want)


def test_pi5_pp512_thread_scaling_nears_published() -> None:
    # llama.cpp 836d571, Qwen2.5-0.5B Q4_0 pp512 on a Pi 5 at 1 and 4 threads: 93.49 and
    # 289.92 tok/s (Arm learning path llm-decode-roofline; llama.cpp discussion 30069), a
    # 3.10x speed-up; without the element-wise traffic the model gave 3.90x and +28 % at 4
    q4 = parse_format("q4")
    tok_s = 512 / prefill_s(QWEN, PI5, q4, parse_format("q8"), np.array([1, 4]), 512,
                            "llama.cpp", 1)
    assert tok_s[0] == pytest.approx(93.49, rel=0.05)
    assert tok_s[1] < 289.92 * 1.2
    assert tok_s[1] / tok_s[0] < 3.7
