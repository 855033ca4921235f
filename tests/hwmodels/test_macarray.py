"""MAC-array model: SCALE-Sim fold arithmetic, precision scaling, memory, energy, properties.

Also holds the small LayerTable builders the other hwmodels tests import.
"""

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.ir import KIND_CATEGORY, KIND_CODE, LayerTable
from hwmodels import configs
from hwmodels.macarray import MacArrayTarget, Precision, evaluate, evaluate_configs

INT8 = np.array([[8, 8]])


def gemm(m, n, k, groups=1, w_elems=None, a_in=None, a_out=None, wd=1.0, ad=1.0,
         kind="linear"):
    """One GEMM layer; operands default to their im2col-free sizes."""
    return dict(kind=kind, m=m, n=n, k=k, groups=groups, macs=groups * m * n * k, ops=0,
                w_elems=groups * k * n if w_elems is None else w_elems,
                a_in=groups * m * k if a_in is None else a_in,
                a_out=groups * m * n if a_out is None else a_out, wd=wd, ad=ad)


def stream(ops, a_in, a_out, w_elems=0, kind="eltwise"):
    """One non-GEMM layer (streaming, copy or view, by kind)."""
    return dict(kind=kind, m=0, n=0, k=0, groups=1, macs=0, ops=ops, w_elems=w_elems,
                a_in=a_in, a_out=a_out, wd=1.0, ad=1.0)


def layer_table(layers):
    """A LayerTable from layer dicts (fp32 byte counts, as the IR reports them)."""
    col = {key: np.array([lay[key] for lay in layers], dtype=np.int64)
           for key in ("m", "n", "k", "groups", "macs", "ops", "w_elems", "a_in", "a_out")}
    return LayerTable(
        names=tuple(f"layer{i}" for i in range(len(layers))),
        kind_code=np.array([KIND_CODE[lay["kind"]] for lay in layers], dtype=np.int32),
        category=np.array([KIND_CATEGORY[lay["kind"]] for lay in layers], dtype=np.int32),
        m=col["m"], n=col["n"], k=col["k"], groups=col["groups"], macs=col["macs"],
        ops=col["ops"], w_elems=col["w_elems"], a_in_elems=col["a_in"],
        a_out_elems=col["a_out"], in_bytes=4 * col["a_in"], out_bytes=4 * col["a_out"],
        w_bytes=4 * col["w_elems"],
        w_density=np.array([lay["wd"] for lay in layers], dtype=np.float64),
        a_density=np.array([lay["ad"] for lay in layers], dtype=np.float64),
    )


def array(**change):
    """A test array: compute bound by default (huge SRAMs and bandwidth), int8 only."""
    base = MacArrayTarget(
        name="t", description="test", sources={}, rows=16, cols=16, dataflow="ws",
        clock_ghz=1.0, process_nm=45.0, ifmap_sram_kib=1e6, filter_sram_kib=1e6,
        ofmap_sram_kib=1e6, dram_bandwidth_gbps=1e6, precisions=(Precision(8, 1.0),))
    return dataclasses.replace(base, **change)


FUSION = (Precision(8, 1.0), Precision(4, 4.0), Precision(2, 16.0))


@pytest.mark.parametrize("dataflow, rows, cols, m, n, k, expected", [
    ("ws", 16, 16, 64, 16, 32, 2 * (2 * 16 + 16 + 64 - 2)),  # 2 folds of ws, R=C=16, T=64
    # SCALE-Sim 3.0.0's demand matrices for these shapes have 1000, 1160 and 1520 rows
    ("os", 8, 4, 40, 20, 30, 5 * 5 * (8 + 4 + 30 - 2)),  # os: Sr=M, Sc=N, T=K, R+C+T-2
    ("ws", 8, 4, 40, 20, 30, 4 * 5 * (2 * 8 + 4 + 40 - 2)),  # ws: Sr=K, Sc=N, T=M
    ("is", 8, 4, 40, 20, 30, 4 * 10 * (2 * 8 + 4 + 20 - 2)),  # is: Sr=K, Sc=M, T=N
])
def test_dense_cycles_follow_scalesim_folds(dataflow, rows, cols, m, n, k, expected):
    assert expected in (220, 1000, 1160, 1520)
    c = evaluate(layer_table([gemm(m, n, k)]), INT8, array(dataflow=dataflow, rows=rows,
                                                             cols=cols))
    assert c.cycles[0, 0] == expected
    assert c.bound[0, 0] == 0
    assert c.latency_s[0, 0] == pytest.approx(expected / 1e9)  # 1 GHz


def test_groups_repeat_the_per_group_gemm():
    # depthwise 3x3 over 8 channels of 7x7: per group Sr=K=9 -> 1 fold, Sc=N=1, T=M=49
    c = evaluate(layer_table([gemm(m=49, n=1, k=9, groups=8, kind="conv")]), INT8, array())
    assert c.cycles[0, 0] == 8 * (2 * 16 + 16 + 49 - 2)


def test_utilisation_is_macs_over_pe_cycles():
    c = evaluate(layer_table([gemm(64, 16, 32)]), INT8, array())
    assert c.util[0, 0] == pytest.approx(64 * 16 * 32 / (220 * 256))


@pytest.mark.parametrize("bits, stream_cycles", [
    ((8, 8), 64), ((4, 4), 64 / 4), ((2, 2), 64 / 16),
    ((4, 8), 64 / 2), ((2, 8), 64 / 4),  # Bit Fusion: W4A8 2x, W2A8 4x (geometric mean)
    ((3, 8), 64 / 2),  # 3-bit weights run on the 4-bit bricks
])
def test_bit_fusion_precision_scaling(bits, stream_cycles):
    target = array(dataflow="os", rows=4, cols=4, precisions=FUSION, precision_scaling="fused")
    c = evaluate(layer_table([gemm(4, 4, 64)]), np.array([bits]), target)
    assert c.cycles[0, 0] == (4 + 4 - 2) + stream_cycles  # one os fold


def test_widest_scaling_runs_mixed_widths_at_the_wider_one():
    target = array(dataflow="os", rows=4, cols=4, precisions=FUSION)
    c = evaluate(layer_table([gemm(4, 4, 64)]), np.array([[4, 8], [4, 4]]), target)
    assert c.cycles[0].tolist() == [6 + 64, 6 + 16]


def test_unsupported_precisions_cost_infinity():
    c = evaluate(layer_table([gemm(4, 4, 64), stream(100, 100, 100)]),
                 np.array([[32, 32], [16, 16], [4, 32], [8, 8]]), array())
    assert np.isinf(c.latency_s[:, :3]).all()  # an int8-only array runs no float
    assert np.isfinite(c.latency_s[:, 3]).all()
    assert (c.util[:, :3] == 0).all()


def test_fp16_runs_on_fp32_units():
    target = array(precisions=(Precision(32, 0.25),))
    c = evaluate(layer_table([gemm(16, 16, 16)]), np.array([[16, 16], [32, 32]]), target)
    assert c.cycles[0, 0] == c.cycles[0, 1] == 2 * 16 + 16 + 16 * 4 - 2  # T / 0.25


def test_partial_sums_that_do_not_fit_chunk_the_stream():
    # ws, R=C=4, K=8 -> 2 row folds. Ofmap SRAM 1 KiB double buffered -> 512 B = 32 rows of
    # 4 x 4-byte partial sums, so T = M = 100 runs in 4 chunks, each paying the fill again.
    small = array(rows=4, cols=4, ofmap_sram_kib=1.0)
    c = evaluate(layer_table([gemm(100, 4, 8)]), INT8, small)
    assert c.cycles[0, 0] == 4 * 2 * (2 * 4 + 4 - 2) + 2 * 100
    big = evaluate(layer_table([gemm(100, 4, 8)]), INT8, array(rows=4, cols=4))
    assert big.cycles[0, 0] == 2 * (2 * 4 + 4 - 2 + 100)


def _dram_bound_case(**change):
    # os 4x4, 16^3 GEMM: compute 16 folds x (4+4+16-2) = 352 cycles; int8 operands
    # 256 + 256 + 256 bytes over 0.5 GB/s at 1 GHz = 0.5 B/cycle -> 1536 cycles
    target = array(dataflow="os", rows=4, cols=4, dram_bandwidth_gbps=0.5,
                   dram_energy_pj_per_byte=1.0, **change)
    return evaluate(layer_table([gemm(16, 16, 16)]), INT8, target)


def test_dram_bound_layer_overlaps_transfers_when_double_buffered():
    c = _dram_bound_case()
    assert c.cycles[0, 0] == 1536 and c.bound[0, 0] == 2
    assert c.energy_pj_dram[0, 0] == 768.0  # 768 bytes at 1 pJ/B


def test_without_double_buffering_transfers_add_to_compute():
    assert _dram_bound_case(double_buffered=False).cycles[0, 0] == 352 + 1536


def test_weights_that_do_not_fit_are_refetched_per_row_fold():
    # filter SRAM 128 B, double buffered -> 64 B < 256 B of weights: os refetches them for
    # each of the 4 row folds; ifmap and ofmap still move once
    c = _dram_bound_case(filter_sram_kib=0.125)
    assert c.energy_pj_dram[0, 0] == 256 + 4 * 256 + 256


def test_vector_unit_runs_non_gemm_layers():
    table = layer_table([stream(1000, 1000, 1000), stream(0, 160, 160, kind="transpose"),
                         stream(0, 160, 160, kind="reshape")])
    c = evaluate(table, INT8, array())
    assert c.cycles[:, 0].tolist() == [math.ceil(1000 / 16), 160 / 16, 0]  # 16 lanes
    assert c.energy_pj[2, 0] == 0 and (c.util == 0).all()


def test_compute_energy_is_horowitz_mac_energy_scaled_by_node():
    table = layer_table([gemm(16, 16, 16)])
    c = evaluate(table, INT8, array(process_nm=22.5))
    # int8 mult 0.2 pJ + 32-bit add 0.1 pJ at 45 nm, halved at 22.5 nm
    assert c.energy_pj_compute[0, 0] == pytest.approx(4096 * 0.3 / 2)
    given_pj = array(precisions=(Precision(8, 1.0, energy_pj_per_mac=1.0),))
    assert evaluate(table, INT8, given_pj).energy_pj_compute[0, 0] == pytest.approx(4096)


def test_zero_gating_saves_energy_not_cycles():
    table = layer_table([gemm(64, 32, 48, wd=0.5, ad=0.4)])
    dense = evaluate(table, INT8, array())
    gated = evaluate(table, INT8, array(sparsity="zero_gating"))
    assert np.array_equal(dense.cycles, gated.cycles)
    assert gated.energy_pj_compute[0, 0] == pytest.approx(dense.energy_pj_compute[0, 0] * 0.2)


def test_evaluate_configs_stacks_per_target_results():
    table = layer_table([gemm(64, 16, 32), gemm(49, 1, 9, groups=8), stream(50, 50, 50)])
    bits = np.array([[8, 8], [4, 8], [32, 32]])
    variants = configs.grid(array(precisions=FUSION, precision_scaling="fused"),
                            rows=[4, 16], dataflow=["os", "ws", "is"])
    assert len(variants) == 6 and variants[1].name == "t[rows=4,dataflow=ws]"
    swept = evaluate_configs(table, bits, configs.from_targets(variants))
    assert swept.cycles.shape == (6, 3, 3)
    for h, target in enumerate(variants):
        one = evaluate(table, bits, target)
        assert np.array_equal(swept.cycles[h], one.cycles)
        assert np.allclose(swept.energy_pj[h], one.energy_pj)


def test_peak_rate_of_the_shipped_dense_array():
    from hwmodels.target import load_target
    assert load_target("systolic-16x16").peak_macs_per_s == 16 * 16 * 0.5e9


shapes = st.tuples(st.integers(1, 300), st.integers(1, 80), st.integers(1, 300),
                   st.integers(1, 4))
hardware = st.fixed_dictionaries({
    "rows": st.sampled_from([4, 8, 16, 32]), "cols": st.sampled_from([4, 8, 16, 32]),
    "dataflow": st.sampled_from(["os", "ws", "is"]),
    "ifmap_sram_kib": st.floats(0.5, 512), "filter_sram_kib": st.floats(0.5, 512),
    "ofmap_sram_kib": st.floats(0.5, 512), "dram_bandwidth_gbps": st.floats(0.05, 50),
    "clock_ghz": st.floats(0.1, 2.0), "double_buffered": st.booleans()})
bit_choice = st.sampled_from([(8, 8), (4, 8), (2, 8), (4, 4)])


def _latency(shape, hw, bits, **change):
    m, n, k, g = shape
    target = array(precisions=FUSION, precision_scaling="fused", **{**hw, **change})
    return evaluate(layer_table([gemm(m, n, k, groups=g)]), np.array([bits]), target)


@settings(max_examples=25, deadline=None)
@given(shapes, hardware, bit_choice, st.floats(1.01, 10))
def test_more_bandwidth_or_clock_or_sram_is_never_slower(shape, hw, bits, factor):
    base = _latency(shape, hw, bits).latency_s[0, 0]
    more_bw = _latency(shape, hw, bits, dram_bandwidth_gbps=hw["dram_bandwidth_gbps"] * factor)
    faster = _latency(shape, hw, bits, clock_ghz=hw["clock_ghz"] * factor)
    bigger = _latency(shape, hw, bits, **{s: hw[s] * factor for s in
                                          ("ifmap_sram_kib", "filter_sram_kib", "ofmap_sram_kib")})
    assert more_bw.latency_s[0, 0] <= base * (1 + 1e-12)
    assert faster.latency_s[0, 0] <= base * (1 + 1e-12)
    assert bigger.latency_s[0, 0] <= base * (1 + 1e-12)


@settings(max_examples=25, deadline=None)
@given(shapes, hardware, bit_choice)
def test_roofline_is_never_beaten(shape, hw, bits):
    m, n, k, g = shape
    c = _latency(shape, hw, bits)
    rate = math.sqrt({8: 1, 4: 4, 2: 16}[bits[0]] * {8: 1, 4: 4, 2: 16}[bits[1]])
    peak_macs_s = hw["rows"] * hw["cols"] * rate * hw["clock_ghz"] * 1e9
    compulsory = g * (m * k * bits[1] + k * n * bits[0] + m * n * bits[1]) / 8  # each once
    roof = max(g * m * n * k / peak_macs_s, compulsory / (hw["dram_bandwidth_gbps"] * 1e9))
    assert c.latency_s[0, 0] >= roof * (1 - 1e-9)
    assert 0.0 < c.util[0, 0] <= 1.0
