"""ncnn's unpacked fp32 InnerProduct before 2022-06 (four weight rows read side by side) on a
Cortex-A53: its misses escape the prefetcher, so each thread streams at the latency-bound
rate of two lines in flight, up to the shared DRAM roof. Checked in closed form."""

from __future__ import annotations

import pytest

from hwmodels.cpu import CacheLevel, Dram, latency_bound_bpc
from hwmodels.kernels import cpu_ncnn as N
from tests.hwmodels.test_cpu import cycles, linear, shipped, simple_target

K_IN, N_OUT = 4096, 1024  # 4 Mi weights, 16 KiB rows: far beyond the cache and the window
ROOF_GBPS = 1.0           # shared DRAM roof: one byte per cycle at 1 GHz
PAIR_NS = 512.0           # two 64 B misses per 512 ns: 0.25 B/cycle per core at 1 GHz


def _target(pair_ns: float | None = PAIR_NS, cores: int = 4) -> object:
    """Cores at 1 GHz without fp16 arithmetic, one 64 KiB cache level, a 1 GB/s DRAM roof
    (the same at every thread count) and a dual-random-read time of `pair_ns`."""
    cache = (CacheLevel(1, 64, 64, 4, 1e6, False),)
    dram = Dram("t", ROOF_GBPS, ROOF_GBPS, dual_random_read_ns=pair_ns)
    return simple_target(isa=("neon",), caches=cache, dram=dram, cores=cores,
                         parallel_efficiency=1.0)


def _fc_seconds(runtime: str, threads: int, target: object | None = None) -> float:
    tgt = _target() if target is None else target
    cyc = cycles([linear(1, K_IN, N_OUT)], [(32, 32)], tgt, threads=threads, runtime=runtime)
    return float(cyc[0, 0]) / 1e9


def test_latency_bound_rate_is_two_lines_per_pair_time():
    # Little's law: 2 x 64 B per 209.3 ns at 1 GHz = 0.6116 B/cycle; at 2 GHz half per cycle
    assert latency_bound_bpc(209.3, 64, 1.0) == pytest.approx(128 / 209.3, rel=1e-12)
    assert latency_bound_bpc(209.3, 64, 2.0) == pytest.approx(64 / 209.3, rel=1e-12)


def test_rows_follow_the_release_and_the_prefetch_window():
    assert N.fc_interleaved_rows(False) == 4  # ncnn <= 20211208: w0..w3, one task
    assert N.fc_interleaved_rows(True) == 0   # fp16 weights packed: one stream
    assert N.fc_rows_unprefetched(4.0, 9216.0, 4.0)      # rows 36 KiB apart
    assert not N.fc_rows_unprefetched(4.0, 64.0, 4.0)    # 256 B apart: inside 4 lines
    assert not N.fc_rows_unprefetched(0.0, 9216.0, 2.0)  # one packed stream


def test_one_thread_streams_at_the_latency_bound_rate():
    # 4 Mi fp32 weights at 0.25 B/cycle (not the 1 B/cycle roof); acts (20 KiB) < 0.2 %
    expect = K_IN * N_OUT * 4 / (128 / PAIR_NS) / 1e9
    assert _fc_seconds("ncnn-2022", 1) == pytest.approx(expect, rel=0.01)


def test_the_rate_grows_with_threads_until_the_roof_binds():
    w = K_IN * N_OUT * 4
    two = w / (2 * 128 / PAIR_NS) / 1e9   # 0.5 B/cycle: still below the roof
    four = w / ROOF_GBPS / 1e9            # 4 x 0.25 = the 1 B/cycle roof itself
    assert _fc_seconds("ncnn-2022", 2) == pytest.approx(two, rel=0.01)
    assert _fc_seconds("ncnn-2022", 4) == pytest.approx(four, rel=0.01)


def test_packed_release_and_targets_without_the_figure_keep_the_roof():
    w = K_IN * N_OUT
    # ncnn 2022-06 on: fp16 weights in one stream at the roof
    assert _fc_seconds("ncnn", 1) == pytest.approx(w * 2 / ROOF_GBPS / 1e9, rel=0.01)
    # no dual_random_read_ns: the old fp32 rows stream at the roof as before
    assert _fc_seconds("ncnn-2022", 1, _target(None)) == pytest.approx(
        w * 4 / ROOF_GBPS / 1e9, rel=0.01)


def test_shipped_zero2w_alexnet_fc6():
    # AlexNet fc6 (9216 -> 4096, fp32) on the Zero 2 W with ncnn-2022: one thread at
    # 2 x 64 B / 209.3 ns (sbc-bench's tinymembench figure), four threads at the sustained
    # 1.8 GB/s roof (4 x 0.61 GB/s exceeds it)
    z = shipped("rpizero2w")
    fc6 = [linear(1, 9216, 4096)]
    w = 9216 * 4096 * 4
    one = cycles(fc6, [(32, 32)], z, threads=1, runtime="ncnn-2022")[0, 0] / 1e9
    four = cycles(fc6, [(32, 32)], z, threads=4, runtime="ncnn-2022")[0, 0] / 1e9
    assert one == pytest.approx(w / (128 / 209.3e-9), rel=0.01)
    assert four == pytest.approx(w / (z.dram.sustained_bandwidth_gbps * 1e9), rel=0.01)
