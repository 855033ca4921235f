"""x86 cost terms read from onnxruntime's MLAS kernels (hwmodels.cpu_x86): the AVX2 QGEMM
rates and the scalar dequantise loop of MatMulNBits without prepacking, checked in closed form
against the instruction counts of the kernels' code."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from compiler.formats import FORMAT_CODE
from compiler.ir import CATEGORY_GEMM, KIND_CODE, LayerTable
from hwmodels import cpu, cpu_x86
from hwmodels.kernels import cpu as K
from hwmodels.kernels import cpu_gemm
from hwmodels.target import load_target


def _avx2(**changes) -> cpu.CpuTarget:
    """An AVX2 + FMA host (no VNNI): 256-bit vectors, 2 FMA and 2 vector-multiply pipes."""
    base = dict(arch="x86_64", isa=("sse4_2", "avx", "avx2", "fma"), simd_bits=256,
                fma_pipes=2.0, int_mul_pipes=2.0, dot_pipes=0.0, name="avx2-host")
    return dataclasses.replace(load_target("rpi5"), **{**base, **changes})


def test_u8u8_rate_is_bound_by_vector_issue():
    # QgemmU8U8KernelAvx2.S: per K pair of a 6x16 tile 12 vpmaddwd + 12 vpaddd = 192 MACs;
    # 2 multiply pipes would allow 2 x 16 = 32 MACs/cycle, 3 issue slots / 2 uops x 16 = 24
    assert cpu_x86.qgemm_rate(_avx2()) == pytest.approx(24.0)
    # one multiply pipe: 16 MACs/cycle, below the issue bound
    assert cpu_x86.qgemm_rate(_avx2(int_mul_pipes=1.0)) == pytest.approx(16.0)


def test_u8s8_rate_is_bound_by_both_multiplies():
    # QgemmU8S8KernelAvx2.S: vpmaddubsw + vpmaddwd + vpaddd per 32 MACs:
    # min(2 pipes / 2 multiplies, 3 issue / 3 uops) x 32 = 32
    assert cpu_x86.qgemm_rate(_avx2(), signed_weights=True) == pytest.approx(32.0)


def test_qlinear_path_takes_the_u8u8_rate_on_every_x86_host_vnni_or_not():
    ort = cpu.RUNTIMES["onnxruntime"]
    x86 = cpu.path_table(_avx2(), ort)
    assert x86[K.PATH_QLINEAR, K.A_RATE] == pytest.approx(24.0)
    assert x86[K.PATH_CONV_INTEGER, K.A_RATE] == pytest.approx(24.0)  # uint8 weights too
    # MLAS platform.cpp: AVX-VNNI swaps the U8S8 kernel only; uint8 weights keep the AVX2
    # vpmaddwd + vpaddd steps (24 MACs/cycle), not vpdpbusd's 2 x 32 = 64
    vnni = _avx2(isa=("avx2", "fma", "avxvnni"), dot_pipes=2.0)
    assert cpu_x86.is_x86_qgemm(vnni) and cpu.peak_macs_per_cycle(vnni)["int8"] == 64.0
    assert cpu.path_table(vnni, ort)[K.PATH_QLINEAR, K.A_RATE] == pytest.approx(24.0)
    # AVX-512 + VNNI (MlasGemmU8U8KernelAvx512Core): the same steps on 512-bit vectors,
    # min(2 pipes / 1, 3 issue / 2) x 512 / 16 = 48 MACs/cycle
    zmm = _avx2(isa=("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni"), simd_bits=512,
                dot_pipes=2.0)
    assert cpu.path_table(zmm, ort)[K.PATH_QLINEAR, K.A_RATE] == pytest.approx(48.0)
    rpi5 = load_target("rpi5")
    assert cpu.path_table(rpi5, ort)[K.PATH_QLINEAR, K.A_RATE] == pytest.approx(
        cpu.peak_macs_per_cycle(rpi5)["int8"])


def test_reorder_dequant_cycles_closed_form():
    # 4 divisions of 20 cycles per 8-weight call, then 9 scalar ops per weight at 4 per cycle
    assert cpu_x86.reorder_dequant_cycles() == pytest.approx(4 * 20 / 8 + 9 / 4)


def _linear(m: int, k: int, n: int, fmt: str) -> LayerTable:
    one = lambda v: np.array([v], dtype=np.int64)  # noqa: E731
    return LayerTable(
        names=("fc",), kind_code=one(KIND_CODE["linear"]), category=one(CATEGORY_GEMM),
        m=one(m), n=one(n), k=one(k), groups=one(1), macs=one(m * n * k), ops=one(2 * m * n * k),
        w_elems=one(k * n), a_in_elems=one(m * k), a_out_elems=one(m * n),
        w_bytes=one(4 * k * n), in_bytes=one(4 * m * k), out_bytes=one(4 * m * n),
        w_density=np.ones(1), a_density=np.ones(1), fmt_code=one(FORMAT_CODE[fmt]))


def test_float_zero_point_layer_pays_the_scalar_loop_on_one_thread():
    """The dequantise pass of a 2048 x 2048 4-bit MatMulNBits with float zero points is at
    least its scalar loop (weights x cycles per weight) and at most that plus the same
    layer's vectorised slow path (the fp32 buffer pass and the GEMM)."""
    t = _avx2()
    table = _linear(1, 2048, 2048, "nbits_float_zp")
    bits = np.array([[4, 32]])
    slow = cpu.evaluate(table, bits, t, threads=1).cycles[0, 0]
    scalar = 2048 * 2048 * cpu_x86.reorder_dequant_cycles()
    vector_path = cpu.evaluate(dataclasses.replace(table, fmt_code=np.array(
        [FORMAT_CODE["int_dq_block"]])), bits, t, threads=1).cycles[0, 0]
    assert scalar <= slow <= scalar + vector_path
    # and it is the cliff users meet: far slower than the prepacked MatMulNBits
    fast = cpu.evaluate(dataclasses.replace(table, fmt_code=np.array(
        [FORMAT_CODE["nbits_fp32"]])), bits, t, threads=1).cycles[0, 0]
    assert slow > 10 * fast


def test_nchwc_depthwise_cycles_closed_form():
    # 14 x 14 outputs, 3x3 taps, 384 channels in 8-lane blocks, FMA latency 4: 28 padded edge
    # outputs one at a time, the other 168 three at a time -> 84 chains of 9 dependent FMAs
    cyc = cpu_gemm.nchwc_depthwise_cycles(196.0, 9.0, 384.0, 8.0, 4.0)
    assert cyc == pytest.approx((168 / 3 + 28) * 9 * 4 * 48)


def test_x86_fp32_depthwise_is_latency_bound_only_on_nchwc_hosts():
    ort = cpu.RUNTIMES["onnxruntime"]
    assert cpu.path_table(_avx2(), ort)[K.PATH_FP32, K.A_DW_CHAIN_CYC] == 4.0
    assert cpu.path_table(load_target("rpi5"), ort)[K.PATH_FP32, K.A_DW_CHAIN_CYC] == 0.0
    # a depthwise layer on one thread costs at least its FMA chains (clock cycles)
    one = lambda v: np.array([v], dtype=np.int64)  # noqa: E731
    dw = LayerTable(
        names=("dw",), kind_code=one(KIND_CODE["conv"]), category=one(CATEGORY_GEMM),
        m=one(196), n=one(1), k=one(9), groups=one(384), macs=one(196 * 9 * 384),
        ops=one(2 * 196 * 9 * 384), w_elems=one(9 * 384), a_in_elems=one(196 * 384),
        a_out_elems=one(196 * 384), w_bytes=one(4 * 9 * 384), in_bytes=one(4 * 196 * 384),
        out_bytes=one(4 * 196 * 384), w_density=np.ones(1), a_density=np.ones(1))
    cycles = cpu.evaluate(dw, np.array([[32, 32]]), _avx2(), threads=1).cycles[0, 0]
    assert cycles >= (168 / 3 + 28) * 9 * 4 * 48


def test_requantise_weight_closed_form():
    # MlasRequantizeOutput (SSE2): 31 uops per 16 outputs at 3 per cycle; the kernel's generic
    # term books 16 lane ops per output on 32 int8 lanes x 2 pipes = 0.25 cycles
    assert cpu_x86.requant_weight(_avx2(), 16.0, 2.0) == pytest.approx((31 / 16 / 3) / 0.25)
    assert cpu_x86.requant_weight(load_target("rpi5"), 16.0, 2.0) == 1.0
    ort = cpu.RUNTIMES["onnxruntime"]
    assert cpu.path_table(_avx2(), ort)[K.PATH_QLINEAR_CHAIN, K.A_REQUANT] == pytest.approx(
        (31 / 16 / 3) / 0.25)


def _int8_depthwise(m: int, g: int) -> LayerTable:
    one = lambda v: np.array([v], dtype=np.int64)  # noqa: E731
    return LayerTable(
        names=("dw",), kind_code=one(KIND_CODE["conv"]), category=one(CATEGORY_GEMM),
        m=one(m), n=one(1), k=one(9), groups=one(g), macs=one(m * 9 * g), ops=one(2 * m * 9 * g),
        w_elems=one(9 * g), a_in_elems=one(m * g), a_out_elems=one(m * g),
        w_bytes=one(4 * 9 * g), in_bytes=one(4 * m * g), out_bytes=one(4 * m * g),
        w_density=np.ones(1), a_density=np.ones(1), fmt_code=one(FORMAT_CODE["qlinear_conv"]))


def test_int8_depthwise_pays_the_avx2_kernel_indirection_and_requantise_loops():
    # MlasConvDepthwiseKernelAvx2: 10 uops per tap and 16 channels at 3 per cycle; one cycle
    # per indirection entry (4 scalar ops at 4 per cycle); requantise 31 uops / 16 outputs / 3
    assert cpu_x86.qdw_vector_cycles(_avx2()) == pytest.approx(10 / 3)
    assert cpu_x86.indirection_cycles(_avx2()) == pytest.approx(1.0)
    m, g = 56 * 56, 144
    floor = m * 9 * (g / 16) * 10 / 3 + m * 9 * 1.0 + m * g * 31 / 16 / 3
    cycles = cpu.evaluate(_int8_depthwise(m, g), np.array([[8, 8]]), _avx2(),
                          threads=1).cycles[0, 0]
    assert cycles >= floor  # (plus the Q / DQ passes of a lone layer)
    # Arm (no AVX2 kernel): the 16-bit lanes at the multiply-add rate, far below that floor
    arm = cpu.evaluate(_int8_depthwise(m, g), np.array([[8, 8]]), load_target("rpi5"),
                       threads=1).cycles[0, 0]
    assert cpu.path_table(load_target("rpi5"), cpu.RUNTIMES["onnxruntime"])[
        K.PATH_QLINEAR, K.A_DW_VEC_CYC] == 0.0
    assert arm < cycles


def test_int8_depthwise_keeps_16_channel_steps_on_avx512_hosts():
    # the AVX2 kernel runs on AVX-512 hosts too: a 512-bit vector (32 int16 lanes, what the
    # cost kernel counts) is two 16-channel steps of 10 uops, so the same floor as at 256 bits
    zmm = _avx2(isa=("avx2", "fma", "avx512f", "avx512bw"), simd_bits=512)
    assert cpu_x86.qdw_vector_cycles(zmm) == pytest.approx(2 * 10 / 3)
    m, g = 56 * 56, 96
    floor = m * 9 * (g / 16) * 10 / 3 + m * 9 * 1.0 + m * g * 31 / 16 / 3
    cycles = cpu.evaluate(_int8_depthwise(m, g), np.array([[8, 8]]), zmm,
                          threads=1).cycles[0, 0]
    assert cycles >= floor


def test_nhwc_im2col_pays_one_copy_call_per_pixel_and_kernel_row():
    # a 3-channel 3x3 stem conv (k = 27) on QLinearConv: Im2col<NHWC> memcpys kw x cin bytes
    # per kernel row, so 3 calls per output pixel instead of 1 cost 2 x 25 cycles more each
    one = lambda v: np.array([v], dtype=np.int64)  # noqa: E731
    m, n, k = 112 * 112, 32, 27
    stem = LayerTable(
        names=("stem",), kind_code=one(KIND_CODE["conv"]), category=one(CATEGORY_GEMM),
        m=one(m), n=one(n), k=one(k), groups=one(1), macs=one(m * n * k), ops=one(2 * m * n * k),
        w_elems=one(n * k), a_in_elems=one(4 * m * 3), a_out_elems=one(m * n),
        w_bytes=one(4 * n * k), in_bytes=one(16 * m * 3), out_bytes=one(4 * m * n),
        w_density=np.ones(1), a_density=np.ones(1), fmt_code=one(FORMAT_CODE["qlinear_conv"]),
        kernel_rows=one(3))
    bits = np.array([[8, 8]])
    three = cpu.evaluate(stem, bits, _avx2(), threads=1).cycles[0, 0]
    single = cpu.evaluate(dataclasses.replace(stem, kernel_rows=one(1)), bits, _avx2(),
                          threads=1).cycles[0, 0]
    assert three - single == pytest.approx(m * 2 * cpu_x86.IM2COL_CALL_CYCLES)
    assert cpu.path_table(load_target("rpi5"), cpu.RUNTIMES["onnxruntime"])[
        K.PATH_QLINEAR, K.A_IM2COL_CALL_CYC] == 0.0
