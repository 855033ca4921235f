"""Per-core and per-thread terms of the ncnn profile on the Raspberry Pi boards, each checked
against hand arithmetic from the ncnn source it cites (Tencent/ncnn @a4d2ea1)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hwmodels import cpu, cpu_rates
from hwmodels.cpu import CacheLevel
from hwmodels.kernels import cpu as K
from hwmodels.kernels import cpu_gemm
from hwmodels.kernels import cpu_ncnn as N
from tests.hwmodels.test_cpu import conv, cycles, shipped, simple_target


def test_a53_int8_loop_pays_for_its_q_register_loads():
    # one k step of the 8 x 8 int8 tile: 32 widening multiplies and 24 other NEON
    # instructions (16 sadalp, 4 rev64, 4 ext) issuing one at a time, 1 cycle each, and 4
    # q-register loads that do not dual-issue (2 cycles each)
    assert N.a53_int8_load_share(1.0, 2.0) == pytest.approx(32 / (32 + 24 + 8))
    # on a core issuing a 128-bit NEON instruction every other cycle the loads weigh less
    assert N.a53_int8_load_share(2.0, 2.0) == pytest.approx(64 / (64 + 48 + 8))


@pytest.mark.parametrize("board, a53", [("rpi3", True), ("rpizero2w", True), ("rpi4", False),
                                        ("rpi5", False)])
def test_int8_rate_drops_only_on_in_order_a53_cores_under_ncnn(board, a53):
    target = shipped(board)
    peak = cpu.peak_macs_per_cycle(target)["int8"]
    ncnn = cpu.path_table(target, K.RUNTIME_NCNN)[K.PATH_INT8, K.A_RATE]
    assert ncnn == pytest.approx(peak * (32 / 64 if a53 else 1.0))
    # onnxruntime's MLAS kernels are another loop: unchanged
    assert cpu.path_table(target, K.RUNTIME_ORT)[K.PATH_QLINEAR, K.A_RATE] == peak


def test_a53_int8_conv_time_follows_the_load_share(monkeypatch):
    # a compute-bound int8 1x1 conv (no memory limits) on an A53-class core: the load share
    # doubles the GEMM's multiply-bound time (64 / 32 cycles); the passes are unchanged
    a53 = simple_target(fma_pipes=1.0, int_mul_pipes=1.0, isa=("neon",), dot_pipes=0,
                        vector_load_cycles=2.0)
    row = conv(256, 64, 24, ksize=1)
    rate = cpu.peak_macs_per_cycle(a53)["int8"]  # 1 pipe x 16 lanes / 2 = 8 MACs / cycle
    assert rate == 8.0 and cpu_rates._a53_class(a53)
    got = cycles([row], [(8, 8)], a53, threads=1, runtime="ncnn")[0, 0]
    monkeypatch.setattr(cpu_rates, "_a53_class", lambda target: False)
    fresh = dataclasses.replace(a53)  # a new target: path rows are memoised per target
    without = cycles([row], [(8, 8)], fresh, threads=1, runtime="ncnn")[0, 0]
    # ncnn int8 tiles 8 x 8: 576 pixels, 64 channels, k 256, all whole tiles
    assert got - without == pytest.approx(576 * 64 * 256 / rate * (64 / 32 - 1))


def _params_and_caches(shared: bool) -> tuple[np.ndarray, np.ndarray]:
    # a 32 KiB private L1 and a 512 KiB L2 serving 8 bytes per cycle, shared or private
    levels = (CacheLevel(1, 32, 64, 4, 16.0, False), CacheLevel(2, 512, 64, 16, 8.0, shared))
    target = simple_target(cores=4, caches=levels)
    return cpu.params_row(target, 4), cpu.cache_rows(target)


def test_threads_wait_for_a_shared_cache_level_as_for_dram():
    # 800 L2 bytes at 8 bytes per cycle = 100 cycles of the shared level: on 4 threads each
    # waits 100 * (1 - 1 / 4) = 75 cycles; alone, or on a private L2, nothing
    traffic = np.array([0.0, 800.0, 0.0, 0.0, 0.0])
    p, ch = _params_and_caches(shared=True)
    assert K.shared_wait(traffic, 4.0, p, ch) == pytest.approx(75.0)
    assert K.shared_wait(traffic, 1.0, p, ch) == 0.0
    p, ch = _params_and_caches(shared=False)
    assert K.shared_wait(traffic, 4.0, p, ch) == 0.0


@pytest.mark.parametrize("kp, l2_bytes", [
    # 12 pixels x 4 B + 8 channels x 4 B = 80 B per k: 576 k = 46080 B > 32 KiB L1 -> the
    # tile reloads come from L2: mp (eba / tn + ebw / tm) = 1000 x (4 / 8 + 4 / 12)
    (576.0, 1000 * (4 / 8 + 4 / 12)),
    (256.0, 0.0),  # 20480 B fit L1: nothing from L2
])
def test_ncnn_operand_panels_spill_to_l2_past_l1(kp, l2_bytes):
    p, ch = _params_and_caches(shared=True)
    traffic = np.zeros(5)
    cpu_gemm.ncnn_panel_bytes(kp, 1000.0, 12.0, 8.0, 4.0, 4.0, p, ch, traffic)
    assert traffic.tolist() == [0.0, pytest.approx(l2_bytes), 0.0, 0.0, 0.0]


def test_shared_l2_slows_only_the_multi_thread_run_of_an_ncnn_conv():
    # fp32 3x3 stride-2 conv (im2col GEMM, k = 576), perfect cores: a shared L2 leaves the
    # one-thread time alone and takes speed from four threads
    row = dict(conv(64, 64, 28, ksize=3), a_in=64 * 56 * 56)  # stride 2: no Winograd

    def run(shared: bool, threads: int) -> float:
        levels = (CacheLevel(1, 32, 64, 4, 16.0, False),
                  CacheLevel(2, 512, 64, 16, 8.0, shared))
        t = simple_target(cores=4, caches=levels, isa=("neon",), parallel_efficiency=1.0,
                          thread_overhead_us=0.0)
        return float(cycles([row], [(32, 32)], t, threads=threads, runtime="ncnn")[0, 0])

    assert run(True, 1) == pytest.approx(run(False, 1))
    assert run(True, 1) / run(True, 4) < run(False, 1) / run(False, 4)


def test_a53_fp32_peak_covers_the_published_pi3_mobilenet_rate():
    # ncnn benchmark/README.md, Pi 3B+ section: mobilenet (568.7 M MACs, layers.csv) in
    # 204.6 ms on one 1.4 GHz core = 1.99 MACs per cycle end to end. A 128-bit fmla every
    # other cycle (2 MACs per cycle) could not reach that; the measured one per cycle can
    rpi3 = shipped("rpi3")
    measured = 568.7e6 / 204.6e-3 / (rpi3.clock_ghz * 1e9)
    assert measured > 0.99 * 2.0
    assert cpu.peak_macs_per_cycle(rpi3)["fp32"] == 4.0 > measured
