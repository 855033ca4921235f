"""`simulate` and bit assignments: totals are the sums of their layers, every layer runs at
bits its target can run, and bad assignments name the problem."""

from __future__ import annotations

import json

import numpy as np
import pytest

from compiler.frontend import load
from edgesim import api, assignment, zoo
from edgesim.errors import UserError
from tests.edgesim.test_cli import _one_line_error, edgesim


@pytest.fixture(scope="module")
def cnn():
    return load(zoo.build("digits_cnn"))


def test_uniform_assignments_follow_onnxruntime_formats(cnn) -> None:
    mac = assignment.quantisable(cnn)
    w8 = assignment.uniform(cnn, 8)
    assert (w8[mac] == (8, 8)).all() and (w8[~mac] == 32).all()
    w4 = assignment.uniform(cnn, 4)
    assert (w4[mac] == (4, 32)).all()  # weight-only: MatMulNBits / DequantizeLinear
    assert (assignment.uniform(cnn, 32) == 32).all()


def test_mapping_assignment_and_its_errors(cnn) -> None:
    bits = assignment.from_mapping(cnn, {"conv1/Conv": 4, "fc/Gemm": [8, 8]}, "a.json")
    names = [layer.name for layer in cnn.layers]
    assert tuple(bits[names.index("conv1/Conv")]) == (4, 32)
    assert tuple(bits[names.index("fc/Gemm")]) == (8, 8)
    assert int((bits != 32).any(axis=1).sum()) == 2
    with pytest.raises(UserError, match="unknown layer"):
        assignment.from_mapping(cnn, {"nope": 4}, "a.json")
    with pytest.raises(UserError, match="bn1/Relu"):  # a relu has no bits to choose
        assignment.from_mapping(cnn, {"bn1/Relu": 8}, "a.json")
    with pytest.raises(UserError, match="not in"):
        assignment.from_mapping(cnn, {"fc/Gemm": 1}, "a.json")


@pytest.mark.parametrize("target", ["rpi5", "rpi4", "cortex-m7", "systolic-16x16",
                                    "sparse-mac-32x32"])
def test_totals_are_sums_of_layers_and_finite(cnn, target: str) -> None:
    s = api.simulate(cnn, target, bits=8)
    assert s.total.latency_ms == pytest.approx(sum(r.latency_ms for r in s.layers), rel=1e-9)
    assert s.total.energy_mj * 1e3 == pytest.approx(sum(r.energy_uj for r in s.layers),
                                                    rel=1e-9)  # mJ -> uJ
    assert s.total.weight_bytes == pytest.approx(sum(r.weight_bytes for r in s.layers))
    assert np.isfinite(s.total.latency_ms) and np.isfinite(s.fp32.latency_ms)


def test_int8_only_array_runs_float_layers_at_int8_and_says_so(cnn) -> None:
    s = api.simulate(cnn, "systolic-16x16", bits="fp32")
    assert all(np.isfinite(r.latency_ms) for r in s.layers)
    assert all((r.w_bits, r.a_bits) == (8, 8) for r in s.layers if r.macs)
    assert any("cannot run" in n for n in s.notes)


def test_simulate_cli_json(tmp_path) -> None:
    res = edgesim("simulate", "zoo:digits_cnn", "--target", "rpi5", "--bits", "4", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["target"] == "rpi5" and len(report["layers"]) == 10
    assert {(r["w_bits"], r["a_bits"]) for r in report["layers"] if r["macs"]} == {(4, 32)}


def test_simulate_cli_errors(tmp_path) -> None:
    err = _one_line_error(edgesim("simulate", "zoo:digits_cnn", "--target", "nope"), "nope")
    assert "rpi5" in err  # the shipped targets are listed
    bad = tmp_path / "bits.json"
    bad.write_text('{"no_such_layer": 4}')
    _one_line_error(edgesim("simulate", "zoo:digits_cnn", "--target", "rpi5", "--bits",
                            str(bad)), "no_such_layer")
    _one_line_error(edgesim("simulate", "zoo:nope", "--target", "rpi5"), "zoo:nope")


def test_target_probe_writes_a_target_simulate_accepts(tmp_path) -> None:
    out = tmp_path / "host.yaml"
    res = edgesim("target", "probe", "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert out.is_file() and "measured by edgesim target probe" in out.read_text()
    sim = edgesim("simulate", "zoo:digits_cnn", "--target", str(out), "--json")
    assert sim.returncode == 0, sim.stderr
    report = json.loads(sim.stdout)
    assert report["target"] == "host" and report["total"]["latency_ms"] > 0
