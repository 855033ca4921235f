"""MatMulNBits CompInt8 kernel model (hwmodels.kernels.cpu_nbits) and the prefill built on it:
MLAS's partition formula worked by hand, instruction-count efficiencies in closed form,
compute / memory bounds, GQA head rounds, and the published Pi 5 pp512 as a sanity band."""

from __future__ import annotations

import numpy as np
import pytest

from edgesim.llm import load_config
from edgesim.llm.formats import parse_format
from edgesim.llm.phases import attention_prefill_s, nbits_kernel_path, prefill_s
from hwmodels.kernels import cpu_nbits as K
from hwmodels.target import load_target

PI5 = load_target("rpi5")


@pytest.mark.parametrize(("m", "n", "k", "threads", "slices", "nc"), [
    # MlasQNBitGemmBatch by hand: target = min(MNK / 65536 + 1, 8 T); BlockedM = ceil(M / 128);
    # nc = roundup16(ceil(N * BlockedM / target)) when smaller than N
    (512, 4864, 896, 4, 4, 608),   # target 32: ceil(4864 * 4 / 32) = 608
    (1, 896, 896, 2, 1, 80),       # target 13: ceil(896 / 13) = 69 -> 80
    (1, 64, 64, 4, 1, 64),         # 4096 MACs: one task
    (300, 896, 896, 1, 3, 336),    # target 8: ceil(896 * 3 / 8) = 336
])
def test_task_grid_follows_mlas_partition(m, n, k, threads, slices, nc) -> None:
    got_slices, got_nc = K.task_grid(m, np.array([n]), np.array([k]), threads)
    assert got_slices == slices and int(got_nc[0]) == nc


def test_kernel_efficiency_is_the_sdot_share() -> None:
    # 16 x 4 tile, 32 deep: 128 sdots; 8 unpack ops; 16 accumulators x (scvtf + fmla) + 2
    assert K.KLEIDIAI_Q4_GEMM.efficiency() == pytest.approx(128 / (128 + 8 + 34))
    # GEMV 1 x 4: 8 sdots against 8 unpack and 2 + 2 scale ops
    assert K.KLEIDIAI_Q4_GEMV.efficiency() == pytest.approx(8 / (8 + 8 + 4))
    assert K.nbits_kernel(4, 1) is K.KLEIDIAI_Q4_GEMV
    assert K.nbits_kernel(8, 64) is K.MLAS_Q8_GEMM
    assert K.nbits_kernel(4, 64, "llama.cpp") is K.GGML_Q4_0_4X4
    # KleidiAI only without zero points and with blocks of 32k (UseKleidiAI)
    assert K.nbits_kernel(4, 64, zero_point=True) is K.MLAS_Q4_4X2
    assert K.nbits_kernel(4, 64, block=16) is K.MLAS_Q4_4X2
    assert K.MLAS_Q4_4X2.efficiency() == pytest.approx(16 / (16 + 6 + 26))


def test_large_gemm_is_compute_bound_at_the_kernel_rate() -> None:
    m, n, k = 512, np.array([4864]), np.array([896])
    sec = K.gemm_seconds(m, n, k, 4, 32, PI5, 1, np.inf)[0]
    macs = m * 4864 * 896       # tiles divide the shape exactly: no padding
    quant_a = m * 896 * K.QUANT_A_OPS_PER_VALUE / (PI5.fma_pipes * PI5.clock_ghz * 1e9)
    rate = K.core_macs_per_s(PI5, K.KLEIDIAI_Q4_GEMM)
    assert sec == pytest.approx(macs / rate + quant_a)
    # 32 equal tasks over 4 threads: the kernel part scales by 4, A's quantisation is serial
    sec4 = K.gemm_seconds(m, n, k, 4, 32, PI5, 4, np.inf)[0]
    assert sec4 == pytest.approx(macs / rate / 4 + quant_a)


def test_gemv_takes_the_longer_of_compute_and_traffic() -> None:
    n, k = np.array([4864]), np.array([896])
    slow_bw = 1e6
    sec = K.gemm_seconds(1, n, k, 4, 32, PI5, 1, slow_bw)[0]
    traffic = 4864 * 896 * (0.5 + 4 / 32) + 896 * 4 + 4864 * 4
    quant_a = 896 * K.QUANT_A_OPS_PER_VALUE / (PI5.fma_pipes * PI5.clock_ghz * 1e9)
    assert sec == pytest.approx(traffic / slow_bw + quant_a)


def test_gqa_prefill_attention_runs_in_head_rounds() -> None:
    cfg = load_config("zoo:qwen2.5-0.5b")     # 14 query heads
    one = attention_prefill_s(cfg, PI5, 1, 256)
    assert attention_prefill_s(cfg, PI5, 4, 256) == pytest.approx(one * 4 / 14)  # 4 rounds
    assert attention_prefill_s(cfg, PI5, 4, 512) == pytest.approx(4 * attention_prefill_s(
        cfg, PI5, 4, 256))                                                     # P^2


def test_kernel_path_only_on_arm_dot_product_cores() -> None:
    q4 = parse_format("q4")
    assert nbits_kernel_path(PI5, q4) and not nbits_kernel_path(PI5, parse_format("fp32"))
    # MLAS has CompInt8 QNBitGemm variants for 4 and 8 bits only: 2-bit falls back
    assert not nbits_kernel_path(PI5, parse_format("q2z"))
    assert not nbits_kernel_path(load_target("rpi4"), q4)   # Cortex-A72: no dotprod


def test_pi5_prefill_scales_with_threads_and_sits_near_published() -> None:
    cfg, q4 = load_config("zoo:qwen2.5-0.5b"), parse_format("q4")
    ttft = prefill_s(cfg, PI5, q4, q4, np.array([1, 4]), 512)
    assert 3.0 < ttft[0] / ttft[1] <= 4.0
    # llama.cpp Q4_0 pp512 at 4 threads on a Pi 5: 289.92 tok/s (llama.cpp discussion 30069);
    # the same kernel family, last-token logits only, must land within a factor of 1.5
    lc = 512 / prefill_s(cfg, PI5, q4, q4, np.array([4]), 512, "llama.cpp", 1)[0]
    assert 289.92 / 1.5 < lc < 289.92 * 1.5


def test_graph_node_counts_price_each_extra_node() -> None:
    from edgesim.llm import simulate_llm
    from edgesim.llm.phases import node_counts

    cfg = load_config("zoo:smollm-135m")
    gemm, other = node_counts(cfg)
    base = simulate_llm(cfg, PI5, ["q4"], [1], [64], 32)
    same = simulate_llm(cfg, PI5, ["q4"], [1], [64], 32, nodes=(gemm, other))
    more = simulate_llm(cfg, PI5, ["q4"], [1], [64], 32, nodes=(gemm, other + 1000))
    assert np.array_equal(base.decode_s, same.decode_s)
    extra = 1000 * PI5.op_overhead_us * 1e-6
    assert more.decode_s[0, 0, 0] - base.decode_s[0, 0, 0] == pytest.approx(extra)
    assert more.ttft_s[0, 0] - base.ttft_s[0, 0] == pytest.approx(extra)
