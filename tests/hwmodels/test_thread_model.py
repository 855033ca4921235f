"""Per-core and per-thread terms of the ncnn profile on the Raspberry Pi boards, each checked
against hand arithmetic from the ncnn source it cites (Tencent/ncnn @a4d2ea1)."""

from __future__ import annotations

import pytest

from hwmodels import cpu
from hwmodels.kernels import cpu as K
from hwmodels.kernels import cpu_ncnn as N
from tests.hwmodels.test_cpu import conv, cycles, shipped, simple_target


def test_a53_int8_loop_pays_for_its_q_register_loads():
    # one k step of the 8 x 8 int8 tile: 32 widening multiplies (2 cycles each on the A53's
    # 64-bit NEON) and 4 q-register loads that do not dual-issue (2 cycles each)
    assert N.a53_int8_load_share(2.0) == pytest.approx(64 / (64 + 8))
    assert N.a53_int8_load_share(1.0) == pytest.approx(32 / (32 + 8))


@pytest.mark.parametrize("board, a53", [("rpi3", True), ("rpizero2w", True), ("rpi4", False),
                                        ("rpi5", False)])
def test_int8_rate_drops_only_on_in_order_a53_cores_under_ncnn(board, a53):
    target = shipped(board)
    peak = cpu.peak_macs_per_cycle(target)["int8"]
    ncnn = cpu.path_table(target, K.RUNTIME_NCNN)[K.PATH_INT8, K.A_RATE]
    assert ncnn == pytest.approx(peak * (64 / 72 if a53 else 1.0))
    # onnxruntime's MLAS kernels are another loop: unchanged
    assert cpu.path_table(target, K.RUNTIME_ORT)[K.PATH_QLINEAR, K.A_RATE] == peak


def test_a53_int8_conv_time_follows_the_load_share(monkeypatch):
    # a compute-bound int8 1x1 conv (no memory limits) on an A53-class core: the load share
    # adds exactly the GEMM's multiply-bound time x (72 / 64 - 1); the passes are unchanged
    a53 = simple_target(fma_pipes=0.5, int_mul_pipes=0.5, isa=("neon",), dot_pipes=0)
    row = conv(256, 64, 24, ksize=1)
    rate = cpu.peak_macs_per_cycle(a53)["int8"]  # 0.5 pipes x 16 lanes / 2 = 4 MACs / cycle
    assert rate == 4.0 and cpu._a53_class(a53)
    got = cycles([row], [(8, 8)], a53, threads=1, runtime="ncnn")[0, 0]
    monkeypatch.setattr(cpu, "_a53_class", lambda target: False)
    without = cycles([row], [(8, 8)], a53, threads=1, runtime="ncnn")[0, 0]
    # ncnn int8 tiles 8 x 8: 576 pixels, 64 channels, k 256, all whole tiles
    assert got - without == pytest.approx(576 * 64 * 256 / rate * (72 / 64 - 1))
