"""ncnn's direct fp16-arithmetic convs (kernels.cpu_ncnn.direct_fp16_kernel): which layers take
them, the share of the FMA peak their few accumulator chains issue at a given FMA latency,
and the bytes they move instead of an im2col matrix, checked in closed form."""

from __future__ import annotations

import pytest

from hwmodels.kernels import cpu_ncnn as N
from tests.hwmodels.test_cpu import conv, cycles, layer, shipped, simple_target


def _kernel(cin: int, cout: int, hw_in: int, hw_out: int, ksize: int) -> tuple[float, float]:
    """direct_fp16_kernel on a conv's GEMM view (stride hw_in / hw_out)."""
    m, k = hw_out * hw_out, cin * ksize * ksize
    return N.direct_fp16_kernel(m, cout, k, 1.0, cin * hw_in * hw_in)


@pytest.mark.parametrize("cin, cout, hw_in, hw_out, ksize, want", [
    (16, 32, 28, 28, 5, (4.0, 16.0)),    # GoogLeNet 5x5: conv5x5s1_pack8, j += 4
    (3, 64, 224, 112, 7, (8.0, 3.0)),    # ResNet conv1: conv7x7s2_pack1to8, j += 8
    (3, 32, 224, 112, 3, (4.0, 3.0)),    # MobileNet conv1: conv3x3s2_pack1to8, j += 4
    (8, 64, 56, 28, 5, (2.0, 8.0)),      # conv5x5s2_pack8 (cin < 16), j += 2
    (16, 128, 56, 28, 5, (0.0, 0.0)),    # 5x5 s2 with cin >= 16 and cout >= 88: im2col GEMM
    (64, 64, 56, 28, 3, (4.0, 64.0)),    # conv3x3s2_pack8 (cout < 128)
    (64, 128, 56, 28, 3, (0.0, 0.0)),    # 3x3 s2, cin >= 64 and cout >= 128: im2col GEMM
    (16, 36, 28, 28, 5, (0.0, 0.0)),     # 36 outputs: elempack 4, no pack8 kernel
    (12, 32, 28, 28, 5, (0.0, 0.0)),     # 12 inputs: elempack 4, not pack8 / pack1
    (64, 64, 56, 56, 3, (0.0, 0.0)),     # 3x3 s1: Winograd, not a direct kernel
    (64, 64, 56, 56, 1, (0.0, 0.0)),     # 1x1: im2col GEMM
])
def test_direct_kernel_choice_from_create_pipeline_fp16s(cin, cout, hw_in, hw_out, ksize, want):
    assert _kernel(cin, cout, hw_in, hw_out, ksize) == want


def test_odd_edges_still_name_the_kernel():
    # 3x3 stride 2 from an odd 113 x 113 input to 57 x 57: 113^2 / 57^2 = 3.93 input pixels
    # per output, not 4, still conv3x3s2_pack1to8
    assert N.direct_fp16_kernel(57 * 57, 32, 27, 1.0, 3 * 113 * 113) == (4.0, 3.0)


@pytest.mark.parametrize("chains, lat, pipes, share", [
    (4, 4, 2, 0.5),    # 4 chains, one FMA each per 4 cycles: 1 per cycle of 2 pipes
    (8, 4, 2, 1.0),    # 8 chains keep both pipes busy
    (2, 4, 2, 0.25),
    (4, 2, 2, 1.0),
    (4, 0, 2, 1.0),    # latency not described: no limit
    (0, 4, 2, 1.0),    # not a direct kernel
])
def test_chain_share_closed_form(chains, lat, pipes, share):
    assert N.chain_share(chains, lat, pipes) == share


def test_direct_pass_bytes_closed_form():
    # each of cout / 8 tasks reads the whole input; each input pack loads and stores the
    # accumulators: 16 x 28^2 x 4 packs + 32 x 28^2 x 2 x 2 packs, fp16
    ain, aout = 16 * 28 * 28, 32 * 28 * 28
    assert N.direct_pass_bytes(ain, aout, 32, 16, 2.0) == (ain * 4 + aout * 2 * 2) * 2.0
    # pack1 input (cin = 3): one accumulator round trip per input channel
    assert N.direct_pass_bytes(3 * 50176, 64 * 12544, 64, 3, 2.0) == (
        3 * 50176 * 8 + 64 * 12544 * 2 * 3) * 2.0


def _ncnn_cycles(rows: list[dict], lat: float | None) -> float:
    t = simple_target(isa=("neon", "dotprod", "fp16"), fma_pipes=2, fma_latency_cycles=lat)
    return float(cycles(rows, [(32, 32)], t, threads=1, runtime="ncnn")[0, 0])


def test_four_chains_at_latency_four_halve_the_gemm_rate():
    # conv5x5s1_pack8 on 2 FMA pipes of 8 fp16 lanes: the busy register tiles (32 output
    # channels, 784 -> 792 pixels in 12-pixel tiles, k = 400) take 32 x 792 x 400 / 16 cycles
    # at the full rate; at latency 4 the 4 chains issue half of that, so they take it twice
    five = conv(16, 32, 28, ksize=5)
    full = 32 * 792 * 400 / 16
    assert _ncnn_cycles([five], 4.0) - _ncnn_cycles([five], 2.0) == pytest.approx(full)
    # the same layer on the full-rate latency costs as much as with no latency given
    assert _ncnn_cycles([five], 2.0) == pytest.approx(_ncnn_cycles([five], None), rel=0.05)


def test_layers_on_other_kernels_do_not_see_the_latency():
    three = conv(64, 64, 56, ksize=3)       # Winograd
    one = conv(64, 64, 56, ksize=1)         # im2col GEMM
    fc = layer("linear", 1, 1000, 1024, w_elems=1024000, a_in=1024, a_out=1000)
    rows = [three, one, fc]
    assert _ncnn_cycles(rows, 4.0) == _ncnn_cycles(rows, 2.0)


def test_only_ncnn_fp16_paths_carry_the_latency():
    from hwmodels.cpu import path_table
    from hwmodels.kernels import cpu_layout as K
    rpi5 = shipped("rpi5")
    assert rpi5.fma_latency_cycles == 4
    assert path_table(rpi5, K.RUNTIME_NCNN)[K.PATH_FP16, K.A_FMA_LAT] == 4.0
    assert path_table(rpi5, K.RUNTIME_ORT)[K.PATH_FP16, K.A_FMA_LAT] == 0.0
    assert path_table(rpi5, K.RUNTIME_NCNN)[K.PATH_FP32, K.A_FMA_LAT] == 0.0
