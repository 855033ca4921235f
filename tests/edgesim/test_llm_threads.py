"""Decode thread scaling: the token-time arithmetic in closed form, and the direction of the
published Raspberry Pi 5 thread trends (bench/llm_published.csv)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

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


def test_unrepacked_q4_0_gemv_runs_one_row_per_vec_dot() -> None:
    from hwmodels.kernels import cpu_nbits as K

    # ggml_vec_dot_q4_0_q8_0 per 32-deep block: 2 sdots of 12 vector instructions
    assert K.nbits_kernel(4, 1, "llama.cpp vec_dot").efficiency() == pytest.approx(2 / 12)
    n, k = np.array([4096]), np.array([11008])
    sec = K.gemm_seconds(1, n, k, 4, 32, RPI5, 1, np.inf, "llama.cpp vec_dot")
    # 2 sdot pipes x 16 MACs x 2.4 GHz x 1/6 x 0.85; A quantised: 11008 x 46/32 ops on 2 pipes
    rate = 2 * 16 * 2.4e9 / 6 * 0.85
    quant_a = 11008 * 46 / 32 / (2 * 2.4e9)
    np.testing.assert_allclose(sec, 4096 * 11008 / rate + quant_a, rtol=1e-12)


def test_vec_dot_built_without_dotprod_emulates_each_sdot() -> None:
    from hwmodels.kernels import cpu_nbits as K

    # ggml-impl.h ggml_vdotq_s32 without __ARM_FEATURE_DOTPROD: smull, smull2, 2 saddlp, 2 add
    # per sdot; the block's two chained calls, the first adding to zero: 11 instructions where
    # the dotprod build issues 2 sdots; the rest of the block as with sdot (4 unpack, 6 scale)
    kern = K.nbits_kernel(4, 1, "llama.cpp vec_dot no-dotprod")
    assert kern.efficiency() == pytest.approx(2 / (11 + 4 + 6))
    n, k = np.array([4096]), np.array([11008])
    sec = K.gemm_seconds(1, n, k, 4, 32, RPI5, 2, np.inf, "llama.cpp vec_dot no-dotprod")
    # 2 pipes x 16 MACs x 2.4 GHz x 2/21 x 0.85 per core, the rows split over 2 threads
    # (4096 columns in 16 tasks of 256, 8 per thread); A quantised by both threads
    rate = 2 * 16 * 2.4e9 * 2 / 21 * 0.85
    quant_a = 11008 * 46 / 32 / (2 * 2.4e9) / 2
    np.testing.assert_allclose(sec, 8 * 256 * 11008 / rate + quant_a, rtol=1e-12)


def test_t_mac_baseline_rows_run_the_build_without_dotprod() -> None:
    # T-MAC tools/run_pipeline.py @ 0babfafb builds its llama.cpp submodule (kaleid-liner/
    # llama.cpp @ 0358ebc1) with no -march; that CMakeLists.txt adds -march=armv8.2a+fp16 on
    # aarch64 (no dotprod); the Qwen rows' builds repack Q4_0 for the sdot GEMV
    from bench.bench_llm import llama_cpp_runtime, published_rows

    runtimes = {(r["model"], r["their_format"]): llama_cpp_runtime(r["kernel_family"])
                for r in published_rows()}
    assert runtimes[("llama-2-7b", "Q4_0")] == "llama.cpp vec_dot no-dotprod"
    assert runtimes[("qwen2.5-0.5b", "Q4_0")] == "llama.cpp"


def test_llama_cpp_predictions_follow_every_published_thread_trend() -> None:
    # bench/llm_published.csv: per model, format and metric, the published tok/s across thread
    # counts rise or fall (Qwen2.5-0.5B Q4_0 decode 32.42 / 33.84 / 29.37 / 27.28 and pp512
    # 93.49 / 173.68 / 233.22 / 289.92 at 1 / 2 / 3 / 4 threads, Arm learning path
    # llm-decode-roofline; Llama-2-7B Q4_0 0.85 / 1.63 at 1 / 2, T-MAC); the predictions with
    # llama.cpp's kernels rise or fall alike
    from bench.bench_llm import EXTRA_CONFIGS, predict_llama_cpp, published_rows

    groups: dict[tuple[str, str, str], list[dict[str, str]]] = {}
    for row in published_rows():
        groups.setdefault((row["model"], row["their_format"], row["metric"]), []).append(row)
    trends = [sorted(g, key=lambda r: int(r["threads"])) for g in groups.values() if len(g) > 1]
    assert len(trends) == 3
    for rows in trends:
        cfg = load_config(EXTRA_CONFIGS.get(rows[0]["model"]) or f"zoo:{rows[0]['model']}")
        pub = np.array([float(r["published_tok_s"]) for r in rows])
        pred = np.array([predict_llama_cpp(cfg, RPI5, r) for r in rows])
        assert (np.sign(np.diff(pred)) == np.sign(np.diff(pub))).all(), (rows[0]["model"], pred)


def test_llama2_7b_decode_near_t_mac_baseline() -> None:
    # T-MAC docs/profiling_data.md @ 0babfafb: llama.cpp Q4_0 (2024 build, vec_dot without
    # dotprod) on a Pi 5 decodes Llama-2-7B at 0.85 tok/s on 1 thread, 1.63 on 2; costed with
    # sdot the prediction was 1.33 / 1.38 x these
    from bench.bench_llm import predict_llama_cpp, published_rows

    cfg = load_config(LLAMA2_7B)
    rows = [r for r in published_rows() if r["model"] == "llama-2-7b"]
    assert len(rows) == 2
    for row in rows:
        ratio = predict_llama_cpp(cfg, RPI5, row) / float(row["published_tok_s"])
        assert 0.8 < ratio < 1.25, (row["threads"], ratio)
