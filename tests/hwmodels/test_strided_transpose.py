"""The strided side of onnxruntime's inserted Transposes (hwmodels.ort_layout.strided_side,
hwmodels.kernels.cpu_inserted.strided_pass) in closed form: MlasTranspose's 8-column strips
re-read their input rows when one strip's lines overflow a cache level, and the 4-byte scalar
loop refills its C output rows' lines when they overflow L1; on several threads each sweeps
its share of the rows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hwmodels import cpu, ort_layout
from hwmodels.cpu_schema import CacheLevel
from hwmodels.kernels import cpu_inserted as I
from hwmodels.kernels import cpu_layout as K
from hwmodels.target import load_target

L1_BPC, L2_BPC, L3_BPC = 64.0, 25.7, 18.6


def _host():
    """An AVX2 host shaped like this project's (L1 32 KiB, L2 512 KiB, L3 32 MiB, 64 B
    lines), with round bandwidths for the arithmetic below."""
    caches = (CacheLevel(1, 32.0, 64, 8, L1_BPC, False), CacheLevel(2, 512.0, 64, 8, L2_BPC, False),
              CacheLevel(3, 32768.0, 64, 16, L3_BPC, True))
    return dataclasses.replace(load_target("rpi5"), arch="x86_64", simd_bits=256,
                               isa=("sse4_2", "avx", "avx2", "fma"), caches=caches,
                               name="avx2-host")


def _cycles(row: np.ndarray, threads: int = 1) -> float:
    t = _host()
    p, ch = cpu.params_row(t, threads), cpu.cache_rows(t)
    out = np.zeros((K.NO, 1, 1, 1))
    I.add_inserted(row[None, None, None, :], p[None], ch[None], out)
    return float(out[K.O_CYCLES, 0, 0, 0]) - p[K.P_OP_OVH]


def test_strided_side_counts_revisited_lines():
    # uint8 [1, 112, 112, 64] NHWC -> NCHW: MlasTranspose(M = 12544 rows of N = 64 bytes);
    # each 64-byte row is one line visited by 64 / 8 = 8 strips: 7 fetches again per line
    extra, ws = ort_layout.strided_side(12544, 64, 8, 64)
    assert extra == 12544 * 64 * 7 and ws == 12544 * 64
    # fp32 [1, 7, 7, 2048] NHWC -> NCHW: 2048 output rows of 49 * 4 = 196 bytes; a line takes
    # 16 stores, each after 2047 other rows' stores
    extra, ws = ort_layout.strided_side(2048, 196, 4, 64)
    assert extra == 2048 * 196 * 15 and ws == 2048 * 64
    # rows shorter than a line: a 32-byte row is visited 4 times per strip sweep
    assert ort_layout.strided_side(100, 32, 8, 64) == (100 * 32 * 3, 100 * 32)
    # rows of one chunk are visited once: nothing again
    assert ort_layout.strided_side(100, 8, 8, 64)[0] == 0


def test_u8_strips_overflowing_l2_reread_from_l3():
    elems = 112 * 112 * 64
    extra, ws = ort_layout.strided_side(112 * 112, 64, 8, 64)
    row = np.zeros(I.NI)
    row[I.I_T_U8_BLOCK], row[I.I_U8_EXTRA], row[I.I_U8_WS], row[I.I_NODES] = elems, extra, ws, 1
    # 802 KB of lines per strip > 512 KiB L2: the re-reads come from L3, where the 1.6 MB
    # tensor pair lives too: one sum over L3's bandwidth, above the 8 x 8 block compute
    expect = (2 * elems + extra) / L3_BPC
    assert expect > elems * I.T_BLOCK_CYC
    assert _cycles(row) == pytest.approx(expect)
    assert expect / elems == pytest.approx(9 / L3_BPC)  # 0.48 cycles per element


def test_two_threads_halve_the_strips_so_they_fit_l2_again():
    """onnxruntime 1.32 splits a layout Transpose's rows over the session's threads: each
    thread's strips span half the rows, 401 KB of lines < the 512 KiB L2 each core has, so
    the re-reads come from two private L2s while the tensor still streams from the shared
    L3; the block compute halves."""
    elems = 112 * 112 * 64
    extra, ws = ort_layout.strided_side(112 * 112, 64, 8, 64)
    row = np.zeros(I.NI)
    row[I.I_T_U8_BLOCK], row[I.I_U8_EXTRA], row[I.I_U8_WS], row[I.I_NODES] = elems, extra, ws, 1
    expect = max(elems * I.T_BLOCK_CYC / 2, 2 * elems / L3_BPC, extra / (2 * L2_BPC))
    assert expect == pytest.approx(extra / (2 * L2_BPC))  # 7 re-reads per line bind
    assert _cycles(row, 2) == pytest.approx(expect)
    assert _cycles(row, 2) < 0.5 * _cycles(row, 1)


def test_fp32_rows_overflowing_l1_refill_from_l2():
    elems = 7 * 7 * 2048
    extra, ws = ort_layout.strided_side(2048, 196, 4, 64)
    row = np.zeros(I.NI)
    row[I.I_T_SCALAR_F32], row[I.I_F32_EXTRA], row[I.I_F32_WS] = elems, extra, ws
    row[I.I_NODES] = 1
    # 128 KiB of open lines > 32 KiB L1, < 512 KiB L2: refills at L2's bandwidth, above the
    # store-port cycle per element and the tensor's own L3 traffic
    refill = extra / L2_BPC
    assert refill > max(elems * I.T_SCALAR_CYC, 8 * elems / L3_BPC)
    assert _cycles(row) == pytest.approx(refill)
    assert refill / elems == pytest.approx(60 / L2_BPC)  # 2.33 cycles per element


def test_lines_that_fit_l1_cost_only_l1_bandwidth():
    # fp32 [1, 56, 56, 64]: 64 rows' lines (4 KiB) stay in L1; the refetches are L1 hits
    elems = 56 * 56 * 64
    extra, ws = ort_layout.strided_side(64, 56 * 56 * 4, 4, 64)
    row = np.zeros(I.NI)
    row[I.I_T_SCALAR_F32], row[I.I_F32_EXTRA], row[I.I_F32_WS] = elems, extra, ws
    row[I.I_NODES] = 1
    assert ws == 4096
    assert _cycles(row) == pytest.approx(max(elems * I.T_SCALAR_CYC, extra / L1_BPC,
                                             8 * elems / L3_BPC))
    assert _cycles(row) == pytest.approx(elems * 1.0)  # the store port still binds
    # no strided side at all: the old roofline of the copy
    bare = row.copy()
    bare[I.I_F32_EXTRA] = bare[I.I_F32_WS] = 0
    assert _cycles(bare) == pytest.approx(elems * 1.0)


def test_resnet18_w8a8_transposes_carry_their_strided_side():
    """Every inserted transpose of ResNet18 W8A8 on an AVX2 host books the strided side of
    its shape: entry transposes (MlasTranspose over C input rows of H * W bytes), and exit
    transposes to a float Add (4-byte loop over C output rows of H * W floats)."""
    from edgesim.api import load_graph

    t = load_graph("zoo:resnet18").layer_table()
    choice = cpu.layer_choices(t, np.array([[8, 8]]), _host(), K.RUNTIME_ORT)
    ins = ort_layout.inserted(t, choice[:, 0], _host())
    f32 = np.flatnonzero(ins[:, I.I_T_SCALAR_F32])
    assert f32.size > 0
    for i in f32:  # one exit per layer here: C rows of H * W * 4 bytes, 60 bytes again each
        chans = t.channels[i]
        hw = ins[i, I.I_T_SCALAR_F32] / chans
        assert (ins[i, I.I_F32_EXTRA], ins[i, I.I_F32_WS]) == pytest.approx(
            (chans * hw * 4 * (min(64, hw * 4) / 4 - 1), chans * min(64, hw * 4)))
    assert ins[:, I.I_U8_EXTRA].sum() > 0
    assert np.all(ins[ins[:, I.I_T_U8_BLOCK] == 0, I.I_U8_EXTRA] == 0)
