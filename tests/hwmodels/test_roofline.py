"""The `roofline` target kind (added by docs/adding-a-target-kind.md's steps): its schema, its
arithmetic against the roofline's closed form, and the product (simulate, compile, sweep)
reaching it through the kind's capabilities alone."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import edgesim
from compiler.ir import KIND_CODE
from edgesim import zoo
from edgesim.errors import UserError
from edgesim.sweep import InlineExecutor, load_space, run_sweep
from edgesim.sweep.store import RESULTS_NAME, read_results
from hwmodels import kinds
from hwmodels.cost import BOUND_NAMES, evaluate
from hwmodels.roofline import RooflinePrecision, RooflineTarget
from hwmodels.target import TargetError, load_target, target_from_dict
from tests.hwmodels.test_cpu import layer, linear, make_table

SHIPPED = Path(__file__).resolve().parents[2] / "targets" / "jetson-orin-nano.yaml"
DRAM_PJ_PER_BYTE = (1300.0 + 2600.0) / 2 / 8  # Horowitz ISSCC 2014 64-bit access midpoint
OVERHEAD_S = 5e-6


@pytest.fixture(scope="module")
def orin() -> RooflineTarget:
    return load_target("jetson-orin-nano")


def _cost(target: RooflineTarget, rows: list[dict], bits: list[tuple[int, int]]):
    return evaluate(make_table(rows), np.array(bits), target)


# ------------------------------------------------------------------------------ schema
def test_the_shipped_target_loads_as_a_roofline_with_the_datasheet_peaks(orin):
    assert type(orin) is RooflineTarget and orin.kind == "roofline"
    assert {p.bits: p.peak_tmacs for p in orin.precisions} == {8: 10.0, 16: 5.0, 32: 0.64}
    caps = kinds.capabilities(orin)  # a device running its own program: no host options
    assert caps.runtimes == () and not caps.threads and not caps.float_rest
    assert caps.memory_fit is None and kinds.sweep(orin) is not None


def test_a_negative_bandwidth_names_the_file_and_the_field():
    raw = yaml.safe_load(SHIPPED.read_text())
    with pytest.raises(TargetError, match=r"^x.yaml: memory_bandwidth_gbps: .*"):
        target_from_dict({**raw, "memory_bandwidth_gbps": -1}, "x.yaml")


def test_duplicate_precisions_name_the_field():
    raw = yaml.safe_load(SHIPPED.read_text())
    twice = raw["precisions"] + raw["precisions"][:1]
    with pytest.raises(TargetError, match="precisions"):
        target_from_dict({**raw, "precisions": twice}, "x.yaml")


# ------------------------------------------------------------------------------ arithmetic
def test_a_gemv_is_memory_bound(orin):
    c = _cost(orin, [linear(1, 1024, 1024)], [(8, 8)])
    byts = 1024 * 1024 * 1 + (1024 + 1024) * 1          # int8 weights + int8 in/out
    assert c.latency_s[0, 0] == pytest.approx(byts / 68e9 + OVERHEAD_S)
    assert BOUND_NAMES[c.bound[0, 0]] == "dram"
    assert c.energy_pj_dram[0, 0] == pytest.approx(byts * DRAM_PJ_PER_BYTE)
    # int8 multiply 0.2 pJ + 32-bit accumulate 0.1 pJ at 45 nm, scaled linearly to 8 nm
    assert c.energy_pj_compute[0, 0] == pytest.approx(1024 * 1024 * 0.3 * 8 / 45)
    assert c.util[0, 0] == pytest.approx(1024 * 1024 / 10e12 / c.latency_s[0, 0])


def test_a_large_fp16_gemm_is_compute_bound_on_the_fp16_peak(orin):
    c = _cost(orin, [linear(4096, 1024, 1024)], [(16, 16)])
    compute = 4096 * 1024 * 1024 / 5e12                 # 5 TMAC/s fp16
    assert (1024 * 1024 * 2 + 2 * 4096 * 1024 * 2) / 68e9 < compute
    assert c.latency_s[0, 0] == pytest.approx(compute + OVERHEAD_S)
    assert BOUND_NAMES[c.bound[0, 0]] == "compute"
    assert c.cycles[0, 0] == pytest.approx((compute + OVERHEAD_S) * 0.625e9)


def test_4_bit_weights_run_on_the_int8_path_but_move_half_the_bytes(orin):
    c = _cost(orin, [linear(1, 1024, 1024)], [(4, 8), (32, 32)])
    assert c.latency_s[0, 0] == pytest.approx((1024 * 1024 / 2 + 2048) / 68e9 + OVERHEAD_S)
    fp32_bytes = 1024 * 1024 * 4 + 2048 * 4
    assert c.latency_s[0, 1] == pytest.approx(fp32_bytes / 68e9 + OVERHEAD_S)


def test_a_small_layer_is_bound_by_the_per_layer_overhead(orin):
    c = _cost(orin, [layer("eltwise", ops=100, a_in=100, a_out=100)], [(32, 32)])
    assert KIND_CODE["eltwise"] >= 0
    assert c.latency_s[0, 0] == pytest.approx(max(100 / 640e9, 800 / 68e9) + OVERHEAD_S)
    assert BOUND_NAMES[c.bound[0, 0]] == "overhead"


def test_a_width_no_precision_holds_cannot_run(orin):
    int8_only = dataclasses.replace(orin, precisions=(RooflinePrecision(8, 10.0),))
    c = _cost(int8_only, [linear(1, 64, 64)], [(16, 16), (2, 2)])
    assert np.isinf(c.latency_s[0, 0]) and c.util[0, 0] == 0.0
    assert c.latency_s[0, 1] == pytest.approx((64 * 64 * 2 / 8 + 128 * 2 / 8) / 68e9
                                              + OVERHEAD_S)


# ------------------------------------------------------------------------------ product
def test_simulate_on_the_roofline_ignores_host_options():
    a = edgesim.simulate("zoo:digits_cnn", "jetson-orin-nano", bits=8)
    b = edgesim.simulate("zoo:digits_cnn", "jetson-orin-nano", bits=8, threads=1,
                         runtime="ideal")
    assert a.total == b.total and not a.notes
    assert all(x.latency_ms >= OVERHEAD_S * 1e3 for x in a.layers)
    assert a.total.latency_ms == pytest.approx(sum(x.latency_ms for x in a.layers))


def test_compile_hawq_on_the_roofline_runs_8_bit_activations(tmp_path):
    d = zoo.load_digits_data()
    r = edgesim.compile("zoo:digits_cnn", "jetson-orin-nano", outdir=tmp_path / "o",
                        method="hawq", budget="bits=6", quiet=True,
                        calib={"input": d["x_calib"][:16], "labels": d["y_calib"][:16]})
    assert r.target_kind == "roofline" and Path(r.files["model"]).is_file()
    macs = [x for x in r.layers if x.macs > 0 and x.w_bits < 32]
    assert macs and all(x.a_bits == 8 for x in macs)  # float_rest is False: integer pipeline
    assert r.avg_weight_bits <= 6 + 1e-9
    assert r.fidelity["cosine"] > 0.9


def _space(tmp_path: Path, extra: str = "") -> Path:
    f = tmp_path / "space.yaml"
    f.write_text("base: jetson-orin-nano\nparameters:\n  memory_bandwidth_gbps: [2, 68]\n"
                 "models: [zoo:digits_cnn]\noptimise: {bits: {w_bits: 8, a_bits: 8}}\n" + extra)
    return f


def test_a_sweep_varies_the_roofline_through_its_sweep_hooks(tmp_path):
    with InlineExecutor() as ex:
        run_sweep(load_space(str(_space(tmp_path))), tmp_path / "out", executor=ex)
    _, records, _ = read_results(tmp_path / "out" / RESULTS_NAME)
    by_bw = {r["params"]["memory_bandwidth_gbps"]: r for r in records}
    slow, fast = (by_bw[bw]["models"]["digits_cnn"]["latency_s"] for bw in (2, 68))
    assert slow > fast > 0
    assert by_bw[68]["area_proxy"] == pytest.approx(1024 * 32)  # 1024 fp32 lanes x 32 bits
    assert json.dumps(records)  # plain data


def test_a_roofline_space_refuses_host_options(tmp_path):
    with pytest.raises(UserError, match="threads: not for roofline bases"):
        load_space(str(_space(tmp_path, "threads: 2\n")))
