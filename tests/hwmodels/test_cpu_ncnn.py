"""ncnn's conv work split (kernels.cpu_ncnn): values traced by hand through ncnn's
`convolution_im2col_gemm_get_optimal_tile_mnk` (aarch64 branch) and closed-form latencies."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hwmodels import cpu
from hwmodels.cpu import CacheLevel
from hwmodels.kernels import cpu as K
from hwmodels.kernels import cpu_ncnn as N
from tests.hwmodels.test_cpu import OVH, conv, cycles, make_table, simple_target


@pytest.mark.parametrize("m, threads, block, tile", [
    # M = 16, 4 threads: nn = 1, tile 16, x4 = 64, back to 16, split by 4 -> ceil8(4) = 8
    (16, 4, 32, 8),
    # M = 144: nn = 5, ceil8(29) = 32, x4 = 128, nn = 2 -> 72, split -> ceil8(18) = 24
    (144, 4, 32, 24),
    (144, 1, 32, 32),  # one thread: the first guess, ceil8(144 / 5) = 32
    # fp16sa starts from 64-row blocks: nn = 3 -> 48, x4 = 192 -> 144, split -> ceil8(36)
    (144, 4, 64, 40),
    (256, 4, 32, 32),  # nn = 8 -> 32, x4 = 128 -> 128, split -> 32
])
def test_tile_oc_traces_ncnns_tile_solver(m, threads, block, tile):
    assert N.tile_oc(m, threads, 4, block) == tile


def test_conv_gemm_split_counts_the_busiest_threads_tiles():
    # 16 output channels in tasks of 8: two threads get work whatever the thread count;
    # pixels 100 -> ceil12 = 108, rows one 8-channel tile
    assert N.conv_gemm_split(100, 16, 64.0, 1, 4, 4, 4.0) == (2.0, 8 * 108 * 64)
    # 144 channels in 6 tasks of 24 over 4 threads: the busiest runs 2 tasks = 48 rows
    assert N.conv_gemm_split(100, 144, 64.0, 1, 4, 4, 4.0) == (4.0, 48 * 108 * 64)
    # int8 tiles cover 8 pixels: 100 -> 104
    assert N.conv_gemm_split(100, 16, 64.0, 1, 1, 4, 1.0) == (1.0, 16 * 104 * 64)


@pytest.mark.parametrize("channels, lanes, expect", [
    (8, 4, (2.0, 1.0)),    # two packs of 4 channels: two threads
    (6, 4, (4.0, 2.0)),    # 6 is no multiple of 4: six one-channel tasks, busiest runs 2
    (96, 8, (4.0, 3.0)),   # twelve packs of 8 over 4 threads
    (12, 8, (3.0, 1.0)),   # 12 % 8 != 0 -> packs of 4: three tasks
])
def test_depthwise_split_is_one_task_per_channel_pack(channels, lanes, expect):
    assert N.depthwise_split(channels, 4, lanes) == expect


def test_ncnn_1x1_conv_matches_8x12_tile_arithmetic():
    # 64 -> 20 channels, 1x1, 10x10, one core with 4 fp32 lanes x 1 FMA pipe (4 MACs/cycle)
    row = conv(64, 20, 10, ksize=1)
    t = simple_target(isa=("neon",))
    ncnn = cycles([row], [(32, 32)], t, runtime="ncnn")[0, 0]
    # ncnn: ceil12(100) = 108 pixels x ceil8(20) = 24 channels x 64, and per 8 x 12 tile 22
    # mov + 24 q stores around the k loop of 24 fmla per k (46 / 24 k steps); the
    # whole-matrix im2col copy of a 1x1 conv costs bytes / (1e6 bytes per cycle) ~ 0.05 cycles
    assert ncnn == pytest.approx(108 * 24 * (64 + 46 / 24) / 4 + OVH, rel=1e-5)
    # onnxruntime's MLAS 4 x 16 tile: 100 pixels x ceil16(20) = 32 channels, no copy
    ort = cycles([row], [(32, 32)], t, runtime="onnxruntime")[0, 0]
    assert ort == 100 * 32 * 64 / 4 + OVH


@pytest.mark.parametrize("cout, speedup", [(16, 2.0), (144, 3.0), (256, 4.0)])
def test_ncnn_thread_speedup_follows_its_output_channel_tasks(cout, speedup):
    # perfect cores, no fork/join cost: 1 -> 4 threads speeds a compute-bound 1x1 conv up by
    # (rows of one thread) / (rows of the busiest of four): 16 / 8, 144 / 48, 256 / 64
    row = conv(256, cout, 64, ksize=1)
    t = simple_target(isa=("neon",), cores=4, thread_overhead_us=0.0)
    t = dataclasses.replace(t, parallel_efficiency=1.0)
    one = cycles([row], [(32, 32)], t, threads=1, runtime="ncnn")[0, 0] - OVH
    four = cycles([row], [(32, 32)], t, threads=4, runtime="ncnn")[0, 0] - OVH
    assert one / four == pytest.approx(speedup, rel=1e-4)


@pytest.mark.parametrize("cin, cout, fp32_tile, fp16_tile", [
    (12, 12, 6.0, 0.0),     # fp16sa wants cin or cout >= 16 (asimdhp.cpp:87)
    (12, 64, 6.0, 6.0),     # both <= 128: F(6,3) either way
    (12, 200, 4.0, 2.0),    # too wide for F(6,3); F(4,3) needs both >= 8 / >= 16
])
def test_fp16_winograd_thresholds_are_sixteen_channels(cin, cout, fp32_tile, fp16_tile):
    li = cpu.layer_array(make_table([conv(cin, cout, 24)]))[0]
    assert K.winograd_tile(li, 6.0) == fp32_tile
    assert K.winograd_tile(li, 6.0, K.WINOGRAD_MIN_CH_FP16) == fp16_tile


@pytest.mark.parametrize("taps, in_per_out, generic", [
    (9, 1.0, False), (25, 4.0, False),   # 3x3 / 5x5 at stride 1 / 2: specialised kernels
    (49, 1.0, True),                     # 7x7: the generic loop
    (9, 9.0, True),                      # 3x3 at stride 3: the generic loop
])
def test_depthwise_generic_loop_is_taken_off_the_specialised_shapes(taps, in_per_out, generic):
    assert N.depthwise_generic(taps, in_per_out) is generic


def test_generic_depthwise_loads_the_weight_vector_every_tap():
    # 7x7 depthwise, 8 channels, 10x10, stride 1; one core, 4 fp32 lanes x 1 FMA pipe and an
    # L1 serving 16 bytes per cycle (one 128-bit load). FMAs: 100 px x 49 taps x 2 vectors =
    # 9800 cycles. L1 bytes: ncnn's generic loop loads input and weight vectors per tap,
    # 100 * 49 * 8 * 4 * 2, plus the 100 * 8 * 4 output -> 316800 / 16 = 19800 cycles
    fast = simple_target().caches
    t = simple_target(isa=("neon",), caches=(CacheLevel(1, 64, 64, 4, 16.0, False),) + fast[1:])
    row = conv(8, 8, 10, ksize=7, groups=8)
    assert cycles([row], [(32, 32)], t, runtime="ncnn")[0, 0] == pytest.approx(19800 + OVH)
    # onnxruntime's model keeps one load per tap: (156800 + 3200) / 16 = 10000 cycles
    assert cycles([row], [(32, 32)], t, runtime="onnxruntime")[0, 0] == pytest.approx(
        10000 + OVH)


@pytest.mark.parametrize("cout, threads, sweeps", [
    (64, 1, 8),     # one thread runs nn_M = 64 / 8 tasks, each sweeping BT
    (64, 4, 2),     # 8 tasks in lockstep rounds of 4: two DRAM sweeps
    (512, 4, 16),   # 64 tasks / 4
    (20, 4, 1),     # 3 tasks (8 + 8 + 4 channels), one round on 3 of the 4 threads
    (100, 3, 5),    # 13 tasks: rounds of 3 -> ceil(13 / 3)
])
def test_winograd_input_sweeps_count_rounds_of_eight_channel_tasks(cout, threads, sweeps):
    assert N.winograd_input_sweeps(cout, threads) == sweeps


def _shared_llc_target(llc_kib: int):
    """A 4-core neon board with a 32 KiB L1, a shared last level of `llc_kib` KiB, and DRAM
    at 1 pJ a byte (so a layer's DRAM energy is its DRAM bytes)."""
    caches = (CacheLevel(1, 32, 64, 4, 64.0, False), CacheLevel(2, llc_kib, 64, 8, 64.0, True))
    return simple_target(isa=("neon",), cores=4, caches=caches,
                         dram=cpu.Dram("t", 10.0, 10.0, energy_pj_per_byte=1.0))


def test_winograd_reads_a_transformed_input_beyond_the_cache_once_per_task_round():
    # 64 -> 64, 3x3, 24x24 on ncnn fp32: F(6,3), 16 tiles x 64 positions x 64 channels x 4 B
    # = 262144 B of BT, above a 128 KiB shared last level. Every other DRAM byte (weights,
    # output, the padded copy) is the same at 1 and 4 threads; BT is read 8 times on one
    # thread and 2 times on four, so the DRAM bytes (1 pJ per byte) differ by 6 x 262144
    t = _shared_llc_target(128)
    table, bits = make_table([conv(64, 64, 24)]), np.array([(32, 32)])
    one, four = (float(cpu.evaluate(table, bits, t, threads=n, runtime="ncnn")
                       .energy_pj_dram[0, 0]) for n in (1, 4))
    assert one - four == pytest.approx(6 * 16 * 64 * 64 * 4)


def test_winograd_dram_bytes_at_one_thread_add_up_by_hand():
    # the layer above on one thread, every DRAM byte: the transformed weights (8 x 8 x 64 x 64
    # x 4 B, read once), BT read by each of the 8 tasks, the transformed output (16 x 64 x 64
    # x 4 B) written back from the thread's scratch tile and read again (its working set,
    # BT 262144 + top_tile 16 x 64 x 8 x 4 + AT_tile 8 x 64 x 64 x 4 B, exceeds 0.75 of the
    # 128 KiB level), the repack of B_tile into BT (transpose_pack_B_tile: read + write of
    # BT, both beyond the 128 KiB level) and make_padding's bordered copy (read + write)
    t = _shared_llc_target(128)
    got = cpu.evaluate(make_table([conv(64, 64, 24)]), np.array([(32, 32)]), t, threads=1,
                       runtime="ncnn").energy_pj_dram[0, 0]
    bt = 16 * 64 * 64 * 4
    assert got == pytest.approx(8 * 8 * 64 * 64 * 4 + 8 * bt + 2 * bt + 2 * bt
                                + 2 * 64 * 24 * 24 * 4)


@pytest.mark.parametrize("tiles, k, l2_elems, int8, tile_nk", [
    # Pi 4 (1 MiB L2) fp32, 56x56 F(6,3) (100 tiles), 64 channels: TILE_K = (262144 - 32)
    # / 12 -> 21840, one K block -> ceil8(64) = 64; TILE_N = (262144 - 8 x 64) / 64 = 4088,
    # one N block -> ceil4(100) = 100
    (100, 64, 262144, False, (100, 64)),
    # a 16 KiB fp32 L2: TILE_K = max(8, (4096 - 32) / 12 / 8 * 8 = 336); K = 1000 in 3
    # blocks of ceil8(334) = 336; split K: TILE_N = (4096 - 8 x 336) / (8 + 336) = 4 -> 4
    (100, 1000, 4096, False, (4, 336)),
    # int8 divides by TILE_M x 2 + TILE_K: (4096 - 2688) / (16 + 336) = 4
    (100, 1000, 4096, True, (4, 336)),
    # 20000 tiles, 64 channels, 1 MiB fp32: TILE_N 4088 -> 5 blocks -> ceil4(4000) = 4000
    (20000, 64, 262144, False, (4000, 64)),
])
def test_winograd_tile_nk_traces_ncnns_tile_solver(tiles, k, l2_elems, int8, tile_nk):
    assert N.winograd_tile_nk(tiles, k, l2_elems, int8) == tile_nk


def test_winograd_scratch_live_counts_bt_and_each_threads_tiles():
    # 16 tiles, 16 -> 128 channels, F(6,3) (64 positions), 512 KiB fp32 L2: TILE_N 16,
    # TILE_K 16. BT_tile 16 x 64 x 16 x 4 = 65536 B, shared; per thread top_tile 16 x 64 x 8
    # x 4 = 32768 and AT_tile 8 x 64 x 16 x 4 = 32768; 16 tasks keep all 4 threads busy
    live = N.winograd_scratch_live(16, 16, 128, 64, 512 * 1024, 4.0, 4.0, 4.0, 4.0)
    assert live == 65536 + 4 * (32768 + 32768)


def test_int8_winograd_scratch_live_counts_bt_at_two_bytes():
    # int8 F(4,3) (36 positions), 36 tiles, 64 -> 64, 128 KiB L2 (l2_elems 65536 at
    # sizeof(short)): TILE_K 64, TILE_N 36. ncnn's BT is int16 (`Mat BT(..., 2u)`): BT_tile
    # 36 x 36 x 64 x 2 = 165888 B; top_tile int32 36 x 36 x 8 x 4 = 41472, AT_tile 8 x 36
    # x 64 x 1 = 18432
    live = N.winograd_scratch_live(36, 64, 64, 36, 128 * 1024, 1.0, 1.0, 4.0, 1.0)
    assert live == 36 * 36 * 64 * 2 + 41472 + 18432


def test_int8_winograd_reads_its_int16_transformed_input_once_per_task_round():
    # 64 -> 64, 3x3, 24x24 on ncnn int8 (neon, no dotprod): F(4,3), 36 tiles x 36 positions
    # x 64 channels of int16 = 165888 B of BT, above the 128 KiB shared last level (at 1 B
    # an element, 82944 B, it fit and was read once at any thread count). BT is read 8
    # times on one thread and 2 times on four; every other DRAM byte is the same
    t = _shared_llc_target(128)
    table, bits = make_table([conv(64, 64, 24)]), np.array([(8, 8)])
    one, four = (float(cpu.evaluate(table, bits, t, threads=n, runtime="ncnn")
                       .energy_pj_dram[0, 0]) for n in (1, 4))
    assert one - four == pytest.approx(6 * 36 * 36 * 64 * 2)


def test_winograd_transformed_output_stays_in_the_threads_scratch_tile():
    # 16 -> 128, 3x3, 24x24 on ncnn fp32, one thread, a 512 KiB shared last level (0.75 of
    # it: 393216 B). BT (65536 B) plus the whole transformed output (16 x 64 x 128 x 4 =
    # 524288 B) would not fit it, but ncnn never holds the output whole: the working set of
    # its task (BT 65536 + top_tile 32768 + AT_tile 32768 B) fits. The weights (16 x 128 x
    # 9 x 4 B) and the padded input copy fit too: the layer books no DRAM byte (it booked
    # BT + the transformed output, 589824 B, before)
    t = _shared_llc_target(512)
    got = cpu.evaluate(make_table([conv(16, 128, 24)]), np.array([(32, 32)]), t, threads=1,
                       runtime="ncnn").energy_pj_dram[0, 0]
    assert got == 0.0


def test_ncnn_fp16_tiles_pay_the_same_accumulator_edges_in_k_steps():
    # fp16 arithmetic (8 lanes x 1 pipe = 8 MACs / cycle): 64 -> 64, 1x1, 12x12, k = 64.
    # ncnn: 144 pixels (12 tiles of 12) x 64 channels (8 rows of 8); per tile 11 mov + 12 q
    # stores around 12 fmla per k: (64 + 23 / 12) k steps; int8 tiles (8 x 8) pay none
    t = simple_target(isa=("neon", "fp16"))
    row = conv(64, 64, 12, ksize=1)
    fp16 = cycles([row], [(16, 16)], t, runtime="ncnn")[0, 0]
    copy = 2 * 64 * 144 * 2 / 1e6  # the im2col copy at 1e6 bytes per cycle
    assert fp16 == pytest.approx(144 * 64 * (64 + 23 / 12) / 8 + copy + OVH, rel=1e-6)
