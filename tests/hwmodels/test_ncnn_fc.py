"""ncnn's float InnerProduct on aarch64 cores without fp16 arithmetic: fp16 weights
(kernels.cpu_ncnn.fc_weight_bytes), checked as batch-1 weight streaming in closed form."""

from __future__ import annotations

import pytest

from hwmodels.cpu import CacheLevel, Dram
from hwmodels.kernels import cpu_ncnn as N
from tests.hwmodels.test_cpu import OVH, cycles, linear, shipped, simple_target

K_IN, N_OUT = 4096, 1024  # 4 Mi weights: far beyond the 64 KiB cache below
GBPS = 1.0  # 1 GB/s at 1 GHz: one DRAM byte per cycle


def _dram_bound_target(isa: tuple[str, ...] = ("neon",)) -> object:
    """One core at 1 GHz, a single 64 KiB cache level (weights never stay resident), DRAM at
    one byte per cycle: a batch-1 fc is weight streaming."""
    cache = (CacheLevel(1, 64, 64, 4, 1e6, False),)
    return simple_target(isa=isa, caches=cache, dram=Dram("t", GBPS, GBPS))


def _fc_cycles(runtime: str, isa: tuple[str, ...] = ("neon",)) -> float:
    cyc = cycles([linear(1, K_IN, N_OUT)], [(32, 32)], _dram_bound_target(isa), threads=1,
                 runtime=runtime)
    return float(cyc[0, 0])


def test_fc_weight_bytes_follow_the_release():
    assert N.fc_weight_bytes(True) == 2   # PR #3950 (2022-06-24) on: fp16 storage
    assert N.fc_weight_bytes(False) == 4  # ncnn-2022 (<= 20211208): fp32 weights


def test_ncnn_fc_streams_fp16_weights_on_a_core_without_fp16_arithmetic():
    # fc time = weight bytes / bandwidth: 4096 x 1024 weights x 2 B at 1 B/cycle, plus the
    # fp32 input (16 KiB) and output (4 KiB) and the op overhead
    acts = (K_IN + N_OUT) * 4
    assert _fc_cycles("ncnn") == pytest.approx(K_IN * N_OUT * 2 + acts + OVH, rel=0.02)


def test_ncnn_2022_fc_streams_fp32_weights():
    acts = (K_IN + N_OUT) * 4
    assert _fc_cycles("ncnn-2022") == pytest.approx(K_IN * N_OUT * 4 + acts + OVH, rel=0.02)


def test_fp16_weights_halve_the_stream_of_a_weight_bound_fc():
    # the same layer, the same core: only the weight width differs between the releases
    assert _fc_cycles("ncnn-2022") / _fc_cycles("ncnn") == pytest.approx(2.0, rel=0.02)


def test_cores_with_fp16_arithmetic_keep_their_fp16_path():
    # an A76-class core runs the fp16 arithmetic path (also 2-byte weights) in both releases
    fp16 = ("neon", "fp16")
    assert _fc_cycles("ncnn", fp16) == pytest.approx(_fc_cycles("ncnn-2022", fp16))


def test_shipped_pi3_alexnet_fc6_is_its_fp16_weights_over_the_sustained_bandwidth():
    # AlexNet fc6 (9216 -> 4096) on the Pi 3B+ at one thread: 37.7 M fp16 weights over the
    # target's sustained 2.0 GB/s; inputs and outputs add < 0.1 %
    pi3 = shipped("rpi3")
    lat = cycles([linear(1, 9216, 4096)], [(32, 32)], pi3, threads=1, runtime="ncnn")[0, 0]
    seconds = lat / (pi3.clock_ghz * 1e9)
    expect = 9216 * 4096 * 2 / (pi3.dram.sustained_bandwidth_gbps * 1e9)
    assert seconds == pytest.approx(expect, rel=0.01)
