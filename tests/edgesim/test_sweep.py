"""`edgesim sweep` results: per-point figures against independent evaluations and per-design
allocation against brute force (spaces: test_sweep_space.py; storage, resume and executors:
test_sweep_store.py)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgesim.api import load_graph, simulate
from edgesim.sweep.points import enumerate_points
from edgesim.sweep.space import load_space
from hwmodels.cost import evaluate
from hwmodels.target import load_target
from tests.edgesim.sweep_spaces import GRID, inline_sweep, write_space

ROOT = Path(__file__).resolve().parents[2]

# ---------------------------------------------------------------- per-point figures


def test_records_match_a_single_target_simulation(tmp_path: Path) -> None:
    records = inline_sweep(write_space(tmp_path, GRID), tmp_path / "out")
    g = load_graph("zoo:digits_cnn")
    base = load_target("systolic-16x16")
    for r in list(records.values())[::7]:
        p = r["params"]
        target = base.__class__(**{**base.__dict__, **p})
        # an int8-only accelerator: every layer at (8, 8), the full-integer pipeline
        sim = simulate(g, target, bits=np.full((len(g.layers), 2), 8))
        fig = r["models"]["digits_cnn"]
        assert fig["latency_s"] == pytest.approx(sim.total.latency_ms * 1e-3, rel=1e-12)
        assert fig["energy_j"] == pytest.approx(sim.total.energy_mj * 1e-3, rel=1e-12)
        assert fig["weight_bytes"] == sim.total.weight_bytes
        assert fig["throughput_ips"] == pytest.approx(1 / fig["latency_s"], rel=1e-12)
        # area proxy: rows x cols x 8-bit MACs + (ifmap + filter 512 + ofmap 256 KiB) SRAM
        sram = (p["ifmap_sram_kib"] + 512 + 256) * 1024
        assert r["area_proxy"] == p["rows"] * p["cols"] * 8 + sram


CPU = """
base: rpi5
parameters:
  clock_ghz: [1.5, 3.0]
  dram_gbps: [4.75, 19.0]
models: [zoo:digits_cnn]
optimise: {bits: {w_bits: 8, a_bits: 8}}
"""


def test_cpu_what_if_matches_simulate_at_w8a8(tmp_path: Path) -> None:
    import dataclasses

    from edgesim import assignment

    records = inline_sweep(write_space(tmp_path, CPU), tmp_path / "out")
    g = load_graph("zoo:digits_cnn")
    base = load_target("rpi5")
    assert len(records) == 4
    for r in records.values():
        gbps = r["params"]["dram_gbps"]  # the sustained bandwidth; the peak rises to match
        dram = dataclasses.replace(base.dram, sustained_bandwidth_gbps=gbps,
                                   bandwidth_gbps=max(gbps, base.dram.bandwidth_gbps))
        target = dataclasses.replace(base, clock_ghz=r["params"]["clock_ghz"], dram=dram)
        sim = simulate(g, target, bits=assignment.uniform(g, 8))  # QDQ int8 MACs, rest fp32
        fig = r["models"]["digits_cnn"]
        assert fig["latency_s"] == pytest.approx(sim.total.latency_ms * 1e-3, rel=1e-12)
        assert fig["energy_j"] == pytest.approx(sim.total.energy_mj * 1e-3, rel=1e-12)
        # 4 cores x 128-bit SIMD x 2 FMA pipes + 4 x (64 + 512) KiB private + 2 MiB shared
        assert r["area_proxy"] == 4 * 128 * 2 + (4 * (64 + 512) + 2048) * 1024


@pytest.mark.parametrize("name", ["digits_cnn", "mobilenet_v2"])
def test_cpu_picked_costs_each_design_as_simulate_does(name: str) -> None:
    """A fixed-bits sweep costs its plan with each layer's own format, as `simulate` (and the
    emitted model read back) does: onnxruntime's int8 chains and NHWC transposes depend on
    the neighbours; designs of different format policies are grouped, in order."""
    from edgesim import assignment
    from edgesim.zoo import build
    from hwmodels import cpu
    from hwmodels.sweep_hooks import cpu_picked

    g = load_graph(build(name, **({"resolution": 32} if name == "mobilenet_v2" else {})))
    targets = [load_target(t) for t in ("rpi5", "rpi4", "rpi5", "rpi3")]
    assert len({cpu.format_policy(t) for t in targets}) > 1
    plan = assignment.uniform(g, 8)
    choices, cols = np.unique(plan, axis=0, return_inverse=True)
    got = cpu_picked(g.layer_table(), choices, targets, cols.ravel()).total()
    for h, t in enumerate(targets):
        want = simulate(g, t, bits=plan).total
        assert got.latency_s[h, 0] == pytest.approx(want.latency_ms * 1e-3, rel=1e-12)
        assert got.energy_pj[h, 0] == pytest.approx(want.energy_mj * 1e9, rel=1e-12)


def test_example_spaces_enumerate_their_documented_points() -> None:
    cpu = enumerate_points(load_space(ROOT / "targets" / "spaces" / "cpu-whatif.yaml"))
    clocks = [1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0]
    assert [tuple(v for _, v in p.params) for p in cpu] == list(
        itertools.product(clocks, [2, 4, 6, 8], [4.75, 9.5, 19.0]))
    assert len(enumerate_points(load_space(ROOT / "targets" / "spaces" / "macarray.yaml"))) \
        == 2000


def test_invalid_combinations_are_recorded_not_fatal(tmp_path: Path) -> None:
    text = GRID.replace("  dataflow: [os, ws]", "  sparsity: [structured]\n"
                        "  sparsity_n: [1, 2, 3]\n  sparsity_m: [3, 4]")
    records = inline_sweep(write_space(tmp_path, text), tmp_path / "out")
    for r in records.values():
        bad = r["params"]["sparsity_n"] >= r["params"]["sparsity_m"]  # N:M needs N < M
        assert ("error" in r) == bad and ("models" in r) == (not bad)
    assert sum("error" in r for r in records.values()) == 2 * 3 * 3  # (3,3) in every combo


ALLOCATE = """
base: systolic-16x16
parameters:
  rows: [16, 32]
  precisions:
    - [{bits: 8, macs_per_pe_cycle: 1}, {bits: 4, macs_per_pe_cycle: 2},
       {bits: 2, macs_per_pe_cycle: 4}]
  precision_scaling: [fused]
models: [zoo:digits_cnn]
optimise: {allocate: {BUDGET, w_bits: WBITS, a_bits: 8}}
"""


def fake_sensitivity(g, w_bits):  # noqa: ANN001, ANN201 - the injectable signature
    """Layer l at b bits: (l + 1) * 4^-b (a deterministic, cheap stand-in)."""
    from compiler.sensitivity.proxy import quantisable_layers

    layers = quantisable_layers(g)
    bits = np.asarray(w_bits)
    omega = np.array([[(i + 1) * 4.0 ** -b for b in bits] for i in range(len(layers))])
    return SimpleNamespace(layers=tuple(x.name for x in layers), bits=bits, omega=omega)


# (the space's budget clause, weight bits listed, metric, fraction of all-8-bit or absolute)
ALLOCATIONS = [
    ("metric: size, fraction: 0.45", "[2, 4, 8]", "size", ("fraction", 0.45)),
    ("metric: latency, fraction: 0.9", "[8, 2, 4]", "latency", ("fraction", 0.9)),
    ("metric: latency, fraction: 0.8", "[2, 4, 8]", "latency", ("fraction", 0.8)),  # too tight
    ("budget: size=10kB", "[4, 2, 8]", "size", ("value", 10_000.0)),
    ("budget: bits=5", "[2, 4, 8]", "bits", ("value", 5.0)),
]


@pytest.mark.parametrize("clause,w_bits,metric,limit", ALLOCATIONS)
def test_allocation_per_design_equals_brute_force(tmp_path: Path, clause: str, w_bits: str,
                                                  metric: str, limit: tuple) -> None:
    text = ALLOCATE.replace("BUDGET", clause).replace("WBITS", w_bits)
    space = write_space(tmp_path, text)
    records = inline_sweep(space, tmp_path / "out", sensitivity=fake_sensitivity)
    one_by_one = inline_sweep(space, tmp_path / "b1", sensitivity=fake_sensitivity,
                              batch_size=1)
    assert one_by_one == records
    g = load_graph("zoo:digits_cnn")
    chosen = [i for i, x in enumerate(g.layers) if x.name in fake_sensitivity(g, [8]).layers]
    base = load_target("systolic-16x16")
    for r in records.values():
        target = base.__class__(**{**base.__dict__, **r["params"],
                                   "precisions": _precisions(r["params"]["precisions"])})
        best = _brute_force(g, target, chosen, metric, limit)
        if best[1] is None:  # no assignment meets the budget: recorded, not fatal
            assert "allocation: budget" in r["error"]
            continue
        alloc = r["models"]["digits_cnn"]["alloc"]
        assert alloc["total_sens"] == pytest.approx(best[0], rel=1e-12)
        assert alloc["w_bits"] == best[1]


def _precisions(raw: list) -> tuple:
    from hwmodels.macarray import Precision

    return tuple(Precision(**p) for p in raw)


def _brute_force(g, target, chosen, metric, limit):  # noqa: ANN001, ANN202
    """Every assignment of {2, 4, 8} bits to the chosen layers, priced by
    hwmodels.cost.evaluate on one target (or, for bits, by parameter counts); the least
    sensitive one within the budget."""
    cost = evaluate(g.layer_table(), np.array([[2, 8], [4, 8], [8, 8]]), target)
    n = g.layer_table().w_elems.astype(float)
    arr = {"size": cost.weight_bytes, "latency": cost.latency_s,
           # mean weight bits per parameter over the chosen layers
           "bits": n[:, None] * np.array([2, 4, 8]) / n[chosen].sum()}[metric]
    rest = 0.0 if metric == "bits" else sum(arr[i, 2] for i in range(len(g.layers))
                                            if i not in chosen)  # other layers at (8, 8)
    kind, amount = limit
    budget = amount * (rest + sum(arr[i, 2] for i in chosen)) if kind == "fraction" else amount
    best = (math.inf, None)
    for combo in itertools.product(range(3), repeat=len(chosen)):
        total = rest + sum(arr[i, c] for i, c in zip(chosen, combo))
        sens = sum((j + 1) * 4.0 ** -(2, 4, 8)[c] for j, c in enumerate(combo))
        if total <= budget and sens < best[0]:
            best = (sens, [(2, 4, 8)[c] for c in combo])
    return best


