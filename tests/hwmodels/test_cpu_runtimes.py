"""CPU runtime profiles (ncnn) and the thread model: hand arithmetic of each formula."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hwmodels import cpu
from hwmodels.cpu import CacheLevel, Dram
from hwmodels.kernels import cpu as K
from hwmodels.kernels import cpu_ncnn as ncnn
from tests.hwmodels.test_cpu import OVH, conv, cycles, layer, make_table, shipped, simple_target


def _tile(row: dict, r_max: float = 6.0) -> float:
    return K.winograd_tile(cpu.layer_array(make_table([row]))[0], r_max)


@pytest.mark.parametrize("row, r_max, tile", [
    (conv(64, 64, 24), 6.0, 6.0),      # cin, cout <= 128: F(6,3)
    (conv(3, 64, 24), 6.0, 6.0),       # a thin input still takes F(6,3) (cout >= 8)
    (conv(256, 256, 14), 6.0, 4.0),    # wide: F(4,3)
    (conv(256, 4, 14), 6.0, 2.0),      # wide and cout < 8: F(2,3)
    (conv(4, 4, 14), 6.0, 0.0),        # cin and cout < 8: no Winograd
    (conv(64, 64, 24, ksize=1), 6.0, 0.0),   # 1x1: a plain GEMM
    (conv(64, 64, 24), 4.0, 4.0),      # int8: F(4,3) only
    (conv(3, 64, 24), 4.0, 0.0),       # int8 needs cin and cout >= 8
])
def test_winograd_tile_follows_ncnns_selection(row, r_max, tile):
    assert _tile(row, r_max) == tile


def test_stride_two_conv_is_not_winograd():
    # 3x3 stride 2: the input holds 4x the output pixels -> not a stride-1 conv
    row = conv(64, 64, 12)
    row["a_in"] = 64 * 24 * 24
    assert _tile(row) == 0.0


def test_winograd_f63_matches_hand_arithmetic():
    # 64 -> 64, 3x3, 24x24, one core, 4 fp32 lanes x 1 pipe, no memory limit, ncnn fp32.
    # tiles = (24 / 6)^2 = 16; the 64 transformed GEMMs: m' = 16 * 64 = 1024, k = cin = 64,
    # n = 64 -> ceil(1024/4) * ceil(64/16) = 1024 register tiles of 4 x 16 x 64 MACs at 4/cycle
    gemm = 1024 * 4 * 16 * 64 / 4
    # input and output transforms: 1024 * 64 elements each, 8 lane ops per element, 4 lanes
    transforms = 2 * 1024 * 64 * 8 / 4
    got = cycles([conv(64, 64, 24)], [(32, 32)], simple_target(isa=("neon",)), runtime="ncnn")
    assert got[0, 0] == pytest.approx(gemm + transforms + OVH)


def test_grouped_conv_runs_one_winograd_conv_per_group():
    # ncnn runs a grouped (not depthwise) conv as one Convolution op per group, each
    # choosing its own kernel: 2 groups of 64 -> 64 on 24x24 cost twice the F(6,3) hand
    # arithmetic above (GEMM tiles and both transforms), plus one node's overhead
    assert _tile(conv(128, 128, 24, groups=2)) == 6.0
    assert _tile(conv(64, 64, 24, groups=64)) == 0.0  # depthwise: its own kernel
    one_group = 1024 * 4 * 16 * 64 / 4 + 2 * 1024 * 64 * 8 / 4
    got = cycles([conv(128, 128, 24, groups=2)], [(32, 32)], simple_target(isa=("neon",)),
                 runtime="ncnn")
    assert got[0, 0] == pytest.approx(2 * one_group + OVH)


def test_winograd_beats_im2col_gemm_as_the_mac_count_says():
    # onnxruntime runs the same conv as im2col + GEMM: 576 / 4 * 64 / 16 tiles of 4 x 16 x 576
    t = simple_target(isa=("neon",))
    ort = cycles([conv(64, 64, 24)], [(32, 32)], t, runtime="onnxruntime")[0, 0]
    assert ort == pytest.approx(144 * 4 * 4 * 16 * 576 / 4 + OVH)
    ncnn = cycles([conv(64, 64, 24)], [(32, 32)], t, runtime="ncnn")[0, 0]
    assert ort / ncnn == pytest.approx(5308416 / (1048576 + 262144), rel=1e-3)


def test_ncnn_runs_float_models_in_fp16_where_the_core_has_fp16_arithmetic():
    table, bits = make_table([conv(64, 64, 8, ksize=1)]), np.array([(32, 32), (8, 8)])
    rpi5, rpi4 = shipped("rpi5"), shipped("rpi4")
    assert cpu.kernel_paths(table, bits, rpi5, K.RUNTIME_NCNN).tolist() == [
        [K.PATH_FP16, K.PATH_INT8]]
    assert cpu.kernel_paths(table, bits, rpi4, K.RUNTIME_NCNN).tolist() == [
        [K.PATH_FP32, K.PATH_INT8]]
    # onnxruntime keeps an fp32 model in fp32 on the same core
    assert cpu.kernel_paths(table, bits, rpi5, K.RUNTIME_ORT)[0, 0] == K.PATH_FP32


def test_ncnn_int8_winograd_runs_on_int16_products_without_dotprod():
    # F(4,3) int8 on a core without dotprod: the transformed GEMM runs at simd_bits / 32
    # widening MACs per instruction; with dotprod ncnn skips Winograd for int8
    plain = simple_target(isa=("neon",))
    rows = cpu.path_table(plain, K.RUNTIME_NCNN)[K.PATH_INT8]
    assert rows[K.A_WINOGRAD] == 4.0 and rows[K.A_WG_RATE] == 128 / 32
    dot = cpu.path_table(simple_target(), K.RUNTIME_NCNN)[K.PATH_INT8]
    assert dot[K.A_WINOGRAD] == 0.0


def test_parallel_efficiency_scales_compute_as_its_definition():
    # compute-bound 1x1 GEMM big enough for 4 threads: each thread beyond the first adds
    # `parallel_efficiency` of a core -> t = 4 at 0.5 runs 1 / (1 + 3 * 0.5) of one thread
    row = conv(256, 256, 64, ksize=1)
    t = simple_target(cores=4, parallel_efficiency=0.5, thread_overhead_us=0.0)
    one = cycles([row], [(32, 32)], t, threads=1, runtime="ncnn")[0, 0] - OVH
    four = cycles([row], [(32, 32)], t, threads=4, runtime="ncnn")[0, 0] - OVH
    assert one / four == pytest.approx(2.5)
    perfect = dataclasses.replace(t, parallel_efficiency=1.0)
    four_perfect = cycles([row], [(32, 32)], perfect, threads=4, runtime="ncnn")[0, 0] - OVH
    assert one / four_perfect == pytest.approx(4.0)


def test_dram_roof_moves_from_the_one_thread_to_the_all_core_figure():
    t = simple_target(cores=4, clock_ghz=2.0, dram=Dram("t", 16.0, 8.0, 4.0))
    p = cpu.params_row(t, None)
    # GB/s / GHz = bytes per cycle: 8 / 2 at one thread, 4 / 2 at four, linear between
    assert K.dram_bandwidth(p, 1.0) == pytest.approx(4.0)
    assert K.dram_bandwidth(p, 4.0) == pytest.approx(2.0)
    assert K.dram_bandwidth(p, 2.0) == pytest.approx(4.0 - 2.0 / 3.0)
    # unset: the one-thread figure at any thread count
    p1 = cpu.params_row(simple_target(cores=4, clock_ghz=2.0, dram=Dram("t", 16.0, 8.0)), None)
    assert K.dram_bandwidth(p1, 4.0) == pytest.approx(4.0)


def test_dram_bound_pass_slows_as_the_shared_roof_says():
    # a 64 MiB elementwise add on 4 threads, DRAM-bound: bytes / all-core bandwidth
    nbytes = 3 * 4 * (1 << 22)
    row = layer("eltwise", ops=1 << 22, a_in=2 << 22, a_out=1 << 22)
    t = simple_target(cores=4, dram=Dram("t", 8.0, 8.0, 2.0), op_overhead_us=0.0,
                      thread_overhead_us=0.0)
    got = cycles([row], [(32, 32)], t, threads=4, runtime="ncnn")[0, 0]
    assert got == pytest.approx(nbytes / 2.0)


def test_rpi_zero_2w_is_the_pi3_core_at_one_gigahertz():
    zero, pi3 = shipped("rpizero2w"), shipped("rpi3")
    assert (zero.clock_ghz, zero.cores) == (1.0, 4)
    # Cortex-A53: one 128-bit FMLA per cycle (measured on a Pi 3) -> 4 fp32 MACs per cycle
    assert cpu.peak_macs_per_cycle(zero)["fp32"] == 4.0
    # its LPDDR2 runs at sdram_freq 450 MHz against the Pi 3B+'s 500 (Raspberry Pi docs)
    assert zero.dram.bandwidth_gbps / pi3.dram.bandwidth_gbps == pytest.approx(450 / 500)
    assert dataclasses.replace(zero, name=pi3.name, description=pi3.description,
                               sources=pi3.sources, clock_ghz=pi3.clock_ghz, dram=pi3.dram,
                               power=pi3.power, parallel_efficiency=pi3.parallel_efficiency) == pi3


def test_xnnpack_int8_gemm_matches_hand_arithmetic():
    # 1x1 conv 64 -> 64 on 8x8 pixels, W8A8, one core with one sdot pipe (16 int8 MACs per
    # instruction): 64 / 4 * 64 / 16 = 64 register tiles of 4 x 16 x 64 MACs at 16 per cycle;
    # requantisation fused in the kernel: 4096 outputs x 4 fp32 lane ops = 16 int8-lane ops
    # each, on 16 int8 lanes. No Q / DQ nodes, no A packing, no im2col (indirect
    # convolution): one node's overhead
    row = conv(64, 64, 8, ksize=1)
    got = cycles([row], [(8, 8)], simple_target(), runtime="xnnpack")[0, 0]
    assert got == pytest.approx(64 * 4 * 16 * 64 / 16 + 4096 * 16 / 16 + OVH)


def test_xnnpack_skips_the_nodes_and_passes_onnxruntime_adds_around_int8():
    # onnxruntime's QDQ path: QuantizeLinear + QLinearConv + DequantizeLinear = 3 nodes, the
    # extra two each cost an op overhead; xnnpack runs one fused node
    t = simple_target(op_overhead_us=5.0)
    row = conv(64, 64, 8, ksize=1)
    ort = cycles([row], [(8, 8)], t, runtime="onnxruntime")[0, 0]
    xnn = cycles([row], [(8, 8)], t, runtime="xnnpack")[0, 0]
    assert ort - xnn >= 2 * 5000
    assert cpu.kernel_paths(make_table([row]), np.array([(8, 8), (32, 32)]), t,
                            K.RUNTIME_XNNPACK).tolist() == [[K.PATH_INT8, K.PATH_FP32]]


def test_ncnn_a53_fp32_loop_pays_for_the_issue_cycles_without_fmla():
    # 8 x 12 fp32 tile per k step: 24 fmla (1 cycle each, measured on a Pi 3); the generic
    # loop's 5 q-register loads do not dual-issue (2 cycles each); the A53 loop leads each
    # group of 3 fmla with one cycle that holds none (8 per k step; ncnn 20230517 source and
    # docs/developer-guide/arm-a53-a55-dual-issue.md)
    assert ncnn.a53_fp32_load_share(1.0, 2.0, tuned=False) == pytest.approx(24 / 34)
    assert ncnn.a53_fp32_load_share(1.0, 2.0, tuned=True) == pytest.approx(3 / 4)
    # an fmla every other cycle (a 64-bit datapath) would halve the loads' weight
    assert ncnn.a53_fp32_load_share(2.0, 2.0, tuned=False) == pytest.approx(48 / 58)


def test_ncnn_a53_int8_winograd_loop_pays_for_its_loads():
    # 12 tiles x 8 channels per pass: 192 widening multiplies, 20 q loads of 2 cycles
    assert ncnn.a53_int8_winograd_load_share(1.0, 2.0) == pytest.approx(192 / 232)


def test_ncnn_fp32_rate_on_an_a53_depends_on_the_release():
    zero, pi4 = shipped("rpizero2w"), shipped("rpi4")
    fp32 = K.PATH_FP32
    new = cpu.path_table(zero, K.RUNTIME_NCNN)[fp32, K.A_RATE]
    old = cpu.path_table(zero, K.RUNTIME_NCNN, a53_kernels=False)[fp32, K.A_RATE]
    # fp32 peak: 1 fmla of 4 lanes per cycle; the loop's share of it
    assert (old, new) == (pytest.approx(4.0 * 24 / 34), pytest.approx(4.0 * 3 / 4))
    # onnxruntime has no such kernel; the Cortex-A72 is not an A53
    assert cpu.path_table(zero, K.RUNTIME_ORT)[fp32, K.A_RATE] == 4.0
    assert cpu.path_table(pi4, K.RUNTIME_NCNN)[fp32, K.A_RATE] == 4.0
    # the int8 kernels did not change with that release: 32 multiplies of 8 products, 24
    # other NEON instructions and 4 q loads (2 cycles each) per k step, 256 MACs in 64
    # cycles; the int8 Winograd GEMM: 4 int16 products per multiply, 192 / 232 of them
    for a53_kernels in (True, False):
        table = cpu.path_table(zero, K.RUNTIME_NCNN, a53_kernels=a53_kernels)
        assert table[K.PATH_INT8, K.A_RATE] == pytest.approx(256 / 64)
        assert table[K.PATH_INT8, K.A_WG_RATE] == pytest.approx(4.0 * 192 / 232)
    assert cpu.path_table(pi4, K.RUNTIME_NCNN)[K.PATH_INT8, K.A_WG_RATE] == 4.0


def test_legacy_ncnn_release_is_evaluated_but_not_offered_for_comparison():
    table, bits = make_table([conv(64, 64, 24, ksize=1)]), np.array([(32, 32)])
    zero = shipped("rpizero2w")
    new = cpu.evaluate(table, bits, zero, threads=1, runtime="ncnn").latency_s[0, 0]
    old = cpu.evaluate(table, bits, zero, threads=1, runtime="ncnn-2022").latency_s[0, 0]
    assert old > new
    assert "ncnn-2022" not in cpu.RUNTIMES


def test_threads_wait_on_a_dram_roof_that_grows_less_than_their_count():
    # 1 GHz: 8 GB/s alone = 8 B/cycle, 4 B/cycle for all four cores -> s = 4 / 8 = 0.5.
    # 100 cycles of compute per thread and 40 of DRAM at the four threads' roof: each thread
    # waits 40 * (1 - 0.5 / 4) = 35 cycles; alone nothing changes
    p = cpu.params_row(simple_target(cores=4, dram=Dram("t", 16.0, 8.0, 4.0)), None)
    assert K.contended(100.0, 40.0, 4.0, p) == pytest.approx(135.0)
    assert K.contended(100.0, 40.0, 1.0, p) == 100.0
    # a roof that grows with the threads (all-core = 4 x one-thread): no wait
    grows = cpu.params_row(simple_target(cores=4, dram=Dram("t", 64.0, 8.0, 32.0)), None)
    assert K.contended(100.0, 40.0, 4.0, grows) == pytest.approx(100.0)


def test_dram_heavy_layers_scale_less_than_compute_bound_ones():
    # the same 1x1 conv with its activations in DRAM (a 64 KiB last level) and in cache:
    # the DRAM-resident one gains less from 4 threads
    t = simple_target(cores=4, parallel_efficiency=1.0, thread_overhead_us=0.0,
                      dram=Dram("t", 2.0, 1.0))
    small = dataclasses.replace(t, caches=(CacheLevel(1, 64, 64, 4, 1e6, True),))
    row = conv(256, 256, 32, ksize=1)

    def speedup(target: object) -> float:
        one = cycles([row], [(32, 32)], target, threads=1, runtime="ncnn")[0, 0]
        return float(one / cycles([row], [(32, 32)], target, threads=4, runtime="ncnn")[0, 0])

    assert speedup(small) < speedup(t)


def test_ncnn_refetches_do_not_grow_with_threads():
    # ncnn sizes TILE_N / TILE_K from the whole L2 (get_optimal_tile_mnk), so a conv whose
    # weights exceed the last level reads them from DRAM as often on 4 threads as on 1;
    # MLAS's model splits a shared level among the threads and refetches more
    pi3 = shipped("rpi3")
    row = conv(512, 512, 14, ksize=1)

    def dram_pj(runtime: str, threads: int) -> float:
        c = cpu.evaluate(make_table([row]), np.array([(32, 32)]), pi3, threads=threads,
                         runtime=runtime)
        return float(c.energy_pj_dram.sum())

    assert dram_pj("ncnn", 4) == pytest.approx(dram_pj("ncnn", 1))
    assert dram_pj("onnxruntime", 4) > dram_pj("onnxruntime", 1)
