"""CPU cost model: hand arithmetic, onnxruntime kernel-path facts, roofline properties, energy."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from compiler.formats import NBITS_BLOCK
from compiler.ir import KIND_CATEGORY, KIND_CODE, LayerTable
from hwmodels import cost as cost_mod
from hwmodels import cpu
from hwmodels.cpu import CacheLevel, CpuTarget, Dram, Power
from hwmodels.target import load_target

TARGETS = Path(__file__).resolve().parents[2] / "targets"
FAST = 1e6  # bytes per cycle: no memory level ever limits
OVH = 1000  # 1 us op overhead at 1 GHz, in cycles


def layer(kind: str, m: int = 0, n: int = 0, k: int = 0, groups: int = 1, ops: int = 0,
          w_elems: int = 0, a_in: int = 0, a_out: int = 0) -> dict:
    return dict(kind=kind, m=m, n=n, k=k, groups=groups, ops=ops, w_elems=w_elems, a_in=a_in,
                a_out=a_out)


def linear(m: int, k: int, n: int) -> dict:
    return layer("linear", m, n, k, w_elems=k * n, a_in=m * k, a_out=m * n)


def conv(cin: int, cout: int, hw: int, ksize: int = 3, groups: int = 1) -> dict:
    k = cin // groups * ksize * ksize
    return layer("conv", hw * hw, cout // groups, k, groups, w_elems=cout * k,
                 a_in=cin * hw * hw, a_out=cout * hw * hw)


def make_table(rows: list[dict]) -> LayerTable:
    """A LayerTable built directly from GEMM-view facts (fp32 byte counts)."""
    def col(key: str) -> np.ndarray:
        return np.array([r[key] for r in rows], dtype=np.int64)

    m, n, k, g = col("m"), col("n"), col("k"), col("groups")
    ain, aout, wel = col("a_in"), col("a_out"), col("w_elems")
    return LayerTable(
        tuple(f"l{i}" for i in range(len(rows))),
        np.array([KIND_CODE[r["kind"]] for r in rows], dtype=np.int32),
        np.array([KIND_CATEGORY[r["kind"]] for r in rows], dtype=np.int32),
        m, n, k, g, m * n * k * g, col("ops"), wel, ain, aout, ain * 4, aout * 4, wel * 4,
        np.ones(len(rows)), np.ones(len(rows)))


def simple_target(**changes: object) -> CpuTarget:
    """1 core at 1 GHz, 128-bit SIMD with one FMA and one sdot pipe, 4x16 tile, no memory
    limits (unless changed), 1 us per onnxruntime node, no per-inference overhead."""
    caches = (CacheLevel(1, 64, 64, 4, FAST, False), CacheLevel(2, 1024, 64, 8, FAST, False),
              CacheLevel(3, 4096, 64, 16, FAST, True))
    base = CpuTarget(name="t", description="test", sources={}, arch="arm64", cores=1,
                     clock_ghz=1.0, simd_bits=128, fma_pipes=1, int_mul_pipes=1, dot_pipes=1,
                     isa=("neon", "dotprod"), gemm_tile_m=4, gemm_tile_n=16, gemm_efficiency=1.0,
                     caches=caches, dram=Dram("t", FAST, FAST), op_overhead_us=1.0,
                     gemm_overhead_us=1.0, thread_overhead_us=1.0, power=Power(1.0, 2.0),
                     process_nm=16)
    return dataclasses.replace(base, **changes)


def cycles(rows: list[dict], bits: list[tuple[int, int]], target: CpuTarget,
           **kw: object) -> np.ndarray:
    return cpu.evaluate(make_table(rows), np.array(bits), target, **kw).cycles


def shipped(name: str) -> CpuTarget:
    return load_target(str(TARGETS / f"{name}.yaml"))


# --- hand arithmetic -------------------------------------------------------------------------

def test_compute_bound_gemm_matches_tile_arithmetic():
    cyc = cycles([linear(64, 256, 64)], [(32, 32)], simple_target())
    assert cyc[0, 0] == 64 * 64 * 256 / 4 + OVH  # macs / (1 FMA pipe x 4 fp32 lanes) + 1 us


def test_edge_tiles_cost_a_full_tile():
    cyc = cycles([linear(5, 64, 17)], [(32, 32)], simple_target())
    assert cyc[0, 0] == 2 * 2 * (4 * 16 * 64) / 4 + OVH  # ceil(5/4) x ceil(17/16) 4x16 tiles


def test_gemv_uses_single_row_tiles():
    cyc = cycles([linear(1, 64, 40)], [(32, 32)], simple_target())
    assert cyc[0, 0] == 3 * (16 * 64) / 4 + OVH  # M=1 kernel: ceil(40/16) tiles of 1x16


def test_int8_dot_pads_k_and_requantises():
    cyc = cycles([linear(8, 30, 16)], [(8, 8)], simple_target(), runtime="ideal")
    # 2 tiles x 4x16 x k=30 padded to sdot's 4 (32) / 16 int8 MACs per cycle
    # + 128 outputs x 4 requantise ops / 4 fp32 lanes + 1 us
    assert cyc[0, 0] == 2 * 4 * 16 * 32 / 16 + 128 * 4 / 4 + OVH


def test_dram_bound_gemv_streams_the_weights_once():
    slow = simple_target(dram=Dram("t", 4.0, 4.0))  # 4 GB/s at 1 GHz = 4 bytes per cycle
    cost = cpu.evaluate(make_table([linear(1, 4096, 4096)]), np.array([(32, 32)]), slow)
    assert cost.cycles[0, 0] == pytest.approx(4096 * 4096 * 4 / 4 + OVH)  # 64 MiB fp32 > LLC
    assert cost.bound[0, 0] == cost_mod.BOUND_DRAM


def test_dram_bound_elementwise_add():
    n = 2 ** 20  # 12 MiB of fp32 in + out exceeds 0.75 x 4 MiB of L3
    add = layer("eltwise", ops=n, a_in=2 * n, a_out=n)
    cyc = cycles([add], [(32, 32)], simple_target(dram=Dram("t", 4.0, 4.0)))
    assert cyc[0, 0] == pytest.approx(3 * n * 4 / 4 + OVH)  # 3 tensors x 4 B / (4 B/cycle)


def test_softmax_pays_an_exp_per_element():
    n = 1024
    soft = layer("softmax", ops=3 * n, a_in=n, a_out=n)
    cyc = cycles([soft], [(32, 32)], simple_target())
    # (ops + 15 vector ops per exp: MLAS's MlasComputeSumExpVector, counted in compute.cpp)
    assert cyc[0, 0] == (3 * n + 15 * n) / 4 + OVH  # / 4 fp32 lanes


def test_run_overhead_is_booked_once_on_the_first_layer():
    rows = [layer("reshape", a_in=100, a_out=100)] * 3
    cyc = cycles(rows, [(32, 32)], simple_target(run_overhead_us=5.0))
    assert cyc[:, 0].tolist() == [5 * OVH + OVH, OVH, OVH]  # 5 us per inference + 1 us node


def test_views_cost_only_the_reshape_node():
    rows = [layer("reshape", a_in=100, a_out=100), layer("identity", a_in=100, a_out=100)]
    ort = cycles(rows, [(32, 32)], simple_target())
    ideal = cycles(rows, [(32, 32)], simple_target(), runtime="ideal")
    assert ort[:, 0].tolist() == [OVH, 0.0]  # identity is removed by onnxruntime's optimiser
    assert ideal[:, 0].tolist() == [0.0, 0.0]


def test_small_gemm_stays_on_one_thread():
    two = simple_target(cores=2)  # MLAS gives each thread >= 64K MACs: 4096 MACs -> 1 thread
    one, both = (cycles([linear(1, 64, 64)], [(32, 32)], two, threads=t) for t in (1, 2))
    assert one[0, 0] == both[0, 0]


# --- onnxruntime kernel-path facts (DESIGN.md) ----------------------------------------------

def test_int8_weight_only_needs_dotprod_for_the_int8_path():
    rows, bits = [linear(128, 1024, 1024)], [(4, 8), (4, 32)]
    rpi4, rpi5 = cycles(rows, bits, shipped("rpi4")), cycles(rows, bits, shipped("rpi5"))
    assert rpi4[0, 0] == rpi4[0, 1]  # no dotprod: accuracy_level 4 falls back to CompFp32
    assert rpi5[0, 0] < 0.7 * rpi5[0, 1]  # dotprod: CompInt8


def test_int8_slower_than_fp32_on_a_small_layer_but_not_ideally():
    rows, bits, rpi5 = [linear(1, 64, 64)], [(8, 8), (32, 32)], shipped("rpi5")
    ort = cycles(rows, bits, rpi5)
    ideal = cycles(rows, bits, rpi5, runtime="ideal")
    assert ort[0, 0] > ort[0, 1]  # Q and DQ nodes around QLinearMatMul
    assert ideal[0, 0] <= ideal[0, 1]


def test_bits_without_a_format_take_the_next_container():
    rows, rpi5 = [linear(16, 512, 512), conv(64, 64, 14)], shipped("rpi5")
    ort = cpu.evaluate(make_table(rows), np.array([(3, 32), (4, 32), (6, 8), (8, 8)]), rpi5)
    np.testing.assert_array_equal(ort.cycles[:, 0], ort.cycles[:, 1])
    np.testing.assert_array_equal(ort.cycles[:, 2], ort.cycles[:, 3])
    ideal = cpu.evaluate(make_table(rows), np.array([(3, 32), (4, 32)]), rpi5, runtime="ideal")
    assert (ideal.weight_bytes[:, 0] < ideal.weight_bytes[:, 1]).all()


def test_matmulnbits_storage_matches_the_blob_layout():
    n_out, k, block, bits = 64, 256, 32, 4
    cost = cpu.evaluate(make_table([linear(1, k, n_out)]), np.array([(bits, 32)]),
                        shipped("rpi5"))
    # B [N, k_blocks, block*bits/8] + fp32 scales; the codes are shifted onto the op's
    # default zero point, so the emitter writes no zero-point input (compiler.emit.matmulnbits)
    blocks = k // block
    expected = n_out * blocks * block * bits // 8 + n_out * blocks * 4
    assert cost.weight_bytes[0, 0] == expected


def test_int4_conv_is_never_faster_than_fp32_conv():
    rows = [conv(64, 64, 56), conv(256, 512, 7, 1), conv(32, 32, 112, groups=32)]
    cyc = cycles(rows, [(4, 32), (32, 32)], shipped("rpi5"))
    # the emitted Cast(INT4) * scale is constant-folded by onnxruntime at load (checked on its
    # optimised graph in tests/edgesim/test_kernel_check.py): the Conv runs in fp32
    np.testing.assert_array_equal(cyc[:, 0], cyc[:, 1])


# --- properties --------------------------------------------------------------------------------

LAYERS = st.one_of(
    st.builds(linear, st.integers(1, 256), st.integers(1, 2048), st.integers(1, 2048)),
    st.builds(conv, st.sampled_from([3, 16, 64]), st.sampled_from([8, 32, 128]),
              st.integers(4, 64), st.sampled_from([1, 3])))
BITS = st.sampled_from([(32, 32), (16, 16), (8, 8), (4, 32), (4, 8), (2, 8), (3, 32), (6, 8)])
RUNTIMES = st.sampled_from(["onnxruntime", "ideal"])


@settings(max_examples=25, deadline=None)
@given(LAYERS, BITS, RUNTIMES, st.floats(1.1, 4.0))
def test_more_bandwidth_or_clock_is_never_slower(row, bits, runtime, factor):
    base = shipped("rpi5")
    faster = [cpu.variants(base, dram_gbps=[base.dram.sustained_bandwidth_gbps * factor])[0],
              dataclasses.replace(base, clock_ghz=base.clock_ghz * factor)]
    table, b = make_table([row]), np.array([bits])
    ref = cpu.evaluate(table, b, base, runtime=runtime).latency_s
    for t in faster:
        assert (cpu.evaluate(table, b, t, runtime=runtime).latency_s <= ref * (1 + 1e-12)).all()


@settings(max_examples=25, deadline=None)
@given(LAYERS, BITS, RUNTIMES, st.sampled_from(["rpi3", "rpi4", "rpi5"]))
def test_roofline_is_never_beaten(row, bits, runtime, name):
    t = shipped(name)
    cost = cpu.evaluate(make_table([row]), np.array([bits]), t, runtime=runtime)
    peak = max(cpu.peak_macs_per_cycle(t).values()) * t.cores * t.clock_ghz * 1e9
    macs = row["m"] * row["n"] * row["k"] * row["groups"]
    assert cost.latency_s[0, 0] >= macs / peak
    if cost.weight_bytes.sum() > t.caches[-1].size_kib * 1024:  # weights stream from DRAM
        assert cost.latency_s[0, 0] >= (cost.weight_bytes[0, 0]
                                        / (t.dram.sustained_bandwidth_gbps * 1e9))


@settings(max_examples=20, deadline=None)
@given(LAYERS, RUNTIMES, st.sampled_from([8, 16, 32]))
def test_fewer_bits_never_more_weight_bytes(row, runtime, a_bits):
    # the exceptions, as emitted: a linear layer's K padded to whole MatMulNBits blocks (next
    # test), and per-channel scale + zero point (5 bytes) outweighing fp16 below k = 5
    assume(row["k"] % NBITS_BLOCK == 0 if row["kind"] == "linear" else row["k"] >= 5)
    bits = np.array([(w, a_bits) for w in (2, 3, 4, 5, 6, 7, 8, 16, 32)])
    wb = cpu.evaluate(make_table([row]), bits, shipped("rpi5"), runtime=runtime).weight_bytes[0]
    assert (np.diff(wb) >= 0).all()


def test_a_short_k_padded_to_a_block_takes_more_bytes_at_four_bits_than_at_eight():
    # K = 8, N = 16: w4a8 is MatMulNBits, one 32-element block per row (16 bytes of 4-bit
    # codes + a 4-byte scale); w8a8 is 8 uint8 codes + a 4-byte scale + a zero point per row
    wb = cpu.evaluate(make_table([linear(1, 8, 16)]), np.array([(4, 8), (8, 8)]),
                      shipped("rpi5")).weight_bytes[0]
    assert wb.tolist() == [16 * (16 + 4), 16 * (8 + 4 + 1)]


# --- configs, dispatch, energy ---------------------------------------------------------------

def test_config_sweep_matches_single_evaluations():
    base = shipped("rpi4")
    configs = cpu.variants(base, clock_ghz=[1.5, 1.8], dram_gbps=[4.0, 8.0])
    table = make_table([conv(64, 64, 28), linear(1, 1024, 1024)])
    bits = np.array([(32, 32), (8, 8), (4, 32)])
    swept = cpu.evaluate_configs(table, bits, configs)
    assert swept.latency_s.shape == (4, 2, 3)
    for h, t in enumerate(configs):
        np.testing.assert_allclose(swept.latency_s[h], cpu.evaluate(table, bits, t).latency_s)
    assert [t.clock_ghz for t in configs] == [1.5, 1.5, 1.8, 1.8]
    assert configs[1].name == "rpi4[clock_ghz=1.5,dram_gbps=8.0]"
    assert configs[1].dram.sustained_bandwidth_gbps == 8.0


def test_dispatch_through_hwmodels_cost():
    table, bits, t = make_table([linear(4, 64, 64)]), np.array([(8, 8)]), shipped("rpi5")
    direct = cpu.evaluate(table, bits, t, threads=2, runtime="ideal")
    via = cost_mod.evaluate(table, bits, t, threads=2, runtime="ideal")
    np.testing.assert_array_equal(direct.cycles, via.cycles)


def test_unknown_runtime_and_bad_threads_are_rejected():
    table, bits, t = make_table([linear(1, 8, 8)]), np.array([(32, 32)]), shipped("rpi5")
    with pytest.raises(ValueError, match="runtime"):
        cpu.evaluate(table, bits, t, runtime="tvm")
    with pytest.raises(ValueError, match="threads"):
        cpu.evaluate(table, bits, t, threads=0)


def test_bottom_up_energy_agrees_with_power_times_latency():
    # Reference layer: 3x3 conv 64->64 at 56x56 on one A76 core (one core: the time the
    # contention of more threads adds draws power but switches no datapath). Horowitz's
    # switching energies (datapath, caches, DRAM) cannot exceed the dynamic (active - idle)
    # energy the board draws, and land within 6x of it: out-of-order bookkeeping, clock tree
    # and uncore switching are not in the bottom-up count.
    rpi5 = shipped("rpi5")
    cost = cpu.evaluate(make_table([conv(64, 64, 56)]), np.array([(32, 32), (8, 8)]), rpi5,
                        threads=1)
    ratio = cost.energy_pj / cpu.power_time_energy_pj(cost, rpi5, threads=1, include_idle=False)
    assert ((ratio > 1 / 6) & (ratio < 1)).all()


@pytest.mark.parametrize("name", ["rpi3", "rpi4", "rpi5"])
def test_shipped_targets_never_count_more_energy_than_the_board_draws(name):
    t = shipped(name)
    table = make_table([conv(64, 64, 56), linear(1, 4096, 4096), linear(128, 768, 3072)])
    cost = cpu.evaluate(table, np.array([(32, 32), (8, 8), (4, 32)]), t)
    assert (cost.energy_pj < cpu.power_time_energy_pj(cost, t)).all()


def test_shipped_isa_facts():
    rpi4, rpi5 = shipped("rpi4"), shipped("rpi5")
    assert cpu.nbits_int8_available(rpi5) and not cpu.nbits_int8_available(rpi4)
    # A76: 2 sdot pipes x 16 int8 MACs vs 2 FMLA pipes x 4 fp32 lanes (Arm A76 SWOG)
    assert cpu.peak_macs_per_cycle(rpi5)["int8"] == 4 * cpu.peak_macs_per_cycle(rpi5)["fp32"]
    # A72 SWOG: smull/smlal (8 int8 products) once per cycle on F0; a Q-form FMLA takes both
    # 64-bit pipes F0 + F1, once per cycle (4 fp32 lanes) -> the int8 peak is 2x fp32
    assert cpu.peak_macs_per_cycle(rpi4)["int8"] == 8
    assert cpu.peak_macs_per_cycle(rpi4)["fp32"] == 4
