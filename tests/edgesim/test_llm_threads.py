"""Decode thread scaling: the token-time arithmetic in closed form, and the direction of the
published Raspberry Pi 5 thread trends (bench/llm_published.csv)."""

from __future__ import annotations

import dataclasses

import numpy as np

from edgesim.llm import load_config, simulate_llm
from edgesim.llm.phases import token_time_s
from hwmodels.target import load_target

RPI5 = load_target("rpi5")
# Llama-2-7B's config.json (as bench/bench_llm.py's EXTRA_CONFIGS)
LLAMA2_7B = {"name": "llama-2-7b", "hidden_size": 4096, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 32,
             "intermediate_size": 11008, "vocab_size": 32000, "tie_word_embeddings": False}


def test_token_time_closed_form() -> None:
    target = dataclasses.replace(RPI5, read_bandwidth_gbps_by_threads=(10.0, 8.0, 6.0, 4.0))
    t = np.array([1, 2, 3, 4])
    compute = 0.05 / t                     # 50 ms of kernels split over the threads
    sec, mem = token_time_s(np.array(1e9), compute, target, t)
    # 1 GB: one thread streams it at 10 GB/s and computes 50 ms after it (0.15 s); two
    # threads stream 0.5 GB each (0.05 s) + 25 ms, but the shared roof at 8 GB/s is 0.125 s;
    # three: roof 1/6 s; four: roof 0.25 s
    np.testing.assert_allclose(sec, [0.15, 0.125, 1 / 6, 0.25], rtol=1e-12)
    assert mem.tolist() == [True, True, True, True]
    slow = token_time_s(np.array(1e8), np.array(0.05), target, np.array(1))
    np.testing.assert_allclose(slow[0], 0.01 + 0.05)   # 100 MB at 10 GB/s, then the kernels
    assert not slow[1]


def test_decode_tokens_per_s_is_the_inverse_of_the_summed_terms() -> None:
    cfg = load_config("zoo:qwen2.5-0.5b")
    free = dataclasses.replace(RPI5, clock_ghz=1e6)   # compute ~0: bytes over one core's bw
    sim = simulate_llm(cfg, free, ["q4"], [1], [64])
    over = sim.decode_s[0, 0, 0] - sim.bytes_per_token[0, 0] / 13.78e9
    # what is left is the node overheads: 24 x 7 + 1 GEMM nodes x 2 us, 24 x 6 + 2 others x
    # 1 us, one run x 10 us (targets/rpi5.yaml), no fork/join at one thread
    np.testing.assert_allclose(over, (169 * 2 + 146 * 1 + 10) * 1e-6, rtol=1e-3)


def test_two_threads_decode_fastest_for_qwen_0_5b_q4() -> None:
    # github.com/ggml-org/llama.cpp/discussions/30069 (Pi 5, llama-bench tg128): Qwen2.5-0.5B
    # Q4_0 decodes fastest at 2 threads (33.84 tok/s)
    tps = simulate_llm(load_config("zoo:qwen2.5-0.5b"), RPI5, ["q4"], [1, 2, 4],
                       [64]).tokens_per_s[0, :, 0]
    assert tps[1] > tps[0] and tps[1] > tps[2]


def test_llama2_7b_q4_decode_speeds_up_from_one_to_two_threads() -> None:
    # T-MAC docs/profiling_data.md @ 0babfafb, Raspberry Pi 5, llama.cpp Q4_0 baseline:
    # 0.85 tok/s at 1 thread, 1.63 at 2 (x1.92)
    tps = simulate_llm(load_config(LLAMA2_7B), RPI5, ["q4"], [1, 2], [64]).tokens_per_s[0, :, 0]
    assert 1.5 < tps[1] / tps[0] < 2.0
