"""`edgesim sweep`: space parsing and enumeration, per-point figures against independent
evaluations, per-design allocation against brute force, resume after SIGKILL and torn writes,
and identical results from the in-process, process-pool and Dask executors (with a worker
killed mid-sweep)."""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgesim.api import load_graph, simulate
from edgesim.errors import UserError
from edgesim.sweep import DaskExecutor, InlineExecutor, LocalExecutor, run_sweep, sweep
from edgesim.sweep.evaluate import evaluate_batch
from edgesim.sweep.points import enumerate_points, point_id
from edgesim.sweep.run import print_progress
from edgesim.sweep.space import load_space
from edgesim.sweep.store import HEADER_NAME, RESULTS_NAME, ResultStore, read_results
from hwmodels.cost import evaluate
from hwmodels.target import load_target

ROOT = Path(__file__).resolve().parents[2]

GRID = """
base: systolic-16x16
parameters:
  rows: [8, 16]
  cols: {range: [8, 24], step: 8}
  ifmap_sram_kib: {range: [16, 256], num: 3, scale: log}
  dataflow: [os, ws]
models: [zoo:digits_cnn]
"""


def _space(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _records(out: Path) -> dict[str, dict]:
    header, records, good = read_results(out / RESULTS_NAME)
    assert header is not None
    # every whole line is a point record (no header line): a JSON-lines table, as pandas reads
    lines = (out / RESULTS_NAME).read_bytes()[:good].splitlines()
    assert all(set(json.loads(line)) >= {"id", "index", "params"} for line in lines)
    return {r["id"]: r for r in records}


def _inline(space_file: Path, out: Path, **kw) -> dict[str, dict]:
    with InlineExecutor() as ex:
        run_sweep(load_space(space_file), out, executor=ex, **kw)
    return _records(out)


# ---------------------------------------------------------------- enumeration


def test_grid_enumerates_the_cartesian_product(tmp_path: Path) -> None:
    points = enumerate_points(load_space(_space(tmp_path, GRID)))
    # step 8 from 8 to 24 inclusive; 3 log-spaced values from 16 to 256: 16, 64, 256
    expected = list(itertools.product([8, 16], [8, 16, 24], [16.0, 64.0, 256.0], ["os", "ws"]))
    assert [tuple(v for _, v in p.params) for p in points] == expected
    assert [p.index for p in points] == list(range(36))
    assert len({p.id for p in points}) == 36


def test_point_ids_do_not_depend_on_spelling(tmp_path: Path) -> None:
    # 16 and 16.0 for a float field, and the same point reached by a range or a list
    a = load_space(_space(tmp_path, GRID.replace("{range: [16, 256], num: 3, scale: log}",
                                                 "[16, 64.0, 256]"), "a.yaml"))
    b = load_space(_space(tmp_path, GRID, "b.yaml"))
    assert [p.id for p in enumerate_points(a)] == [p.id for p in enumerate_points(b)]


RANDOM = """
base: systolic-16x16
parameters:
  rows: [8, 16, 32]
  clock_ghz: {uniform: [0.25, 1.0]}
  dram_bandwidth_gbps: {loguniform: [1, 100]}
  cols: {uniform: [4, 9]}
search: {method: METHOD, samples: N, seed: SEED}
models: [zoo:digits_cnn]
"""


def _sampled(tmp_path: Path, method: str, n: int, seed: int = 3) -> list:
    text = RANDOM.replace("METHOD", method).replace("N,", f"{n},").replace("SEED", str(seed))
    return enumerate_points(load_space(_space(tmp_path, text, f"{method}{n}-{seed}.yaml")))


def test_random_search_follows_its_documented_draws(tmp_path: Path) -> None:
    points = _sampled(tmp_path, "random", 40)
    # the documented procedure, written out: point by point, parameter by parameter
    rng = np.random.default_rng(3)
    for p in points:
        rows, u_clock, u_bw, u_cols = (int(rng.integers(3)), rng.random(), rng.random(),
                                       rng.random())
        want = {"rows": [8, 16, 32][rows], "clock_ghz": 0.25 + u_clock * 0.75,
                "dram_bandwidth_gbps": 10 ** (2 * u_bw), "cols": 4 + math.floor(u_cols * 6)}
        got = dict(p.params)
        assert got["rows"] == want["rows"] and got["cols"] == want["cols"]
        assert got["clock_ghz"] == pytest.approx(want["clock_ghz"], rel=1e-12)
        assert got["dram_bandwidth_gbps"] == pytest.approx(want["dram_bandwidth_gbps"], rel=1e-12)
    # prefix-stable: a longer sample starts with the shorter one; another seed differs
    assert [p.id for p in _sampled(tmp_path, "random", 60)][:40] == [p.id for p in points]
    assert {p.id for p in _sampled(tmp_path, "random", 40, seed=4)} != {p.id for p in points}


def test_latin_hypercube_puts_one_sample_in_every_stratum(tmp_path: Path) -> None:
    n = 24
    points = [dict(p.params) for p in _sampled(tmp_path, "lhs", n)]
    strata = {
        "clock_ghz": [(p["clock_ghz"] - 0.25) / 0.75 for p in points],
        "dram_bandwidth_gbps": [math.log10(p["dram_bandwidth_gbps"]) / 2 for p in points],
    }
    for name, u in strata.items():
        assert sorted(math.floor(x * n) for x in u) == list(range(n)), name
    # a list of 3 values over 24 strata: each value exactly 8 times; cols 4..9: 4 times each
    assert sorted(np.unique([p["rows"] for p in points], return_counts=True)[1]) == [8, 8, 8]
    assert list(np.unique([p["cols"] for p in points], return_counts=True)[1]) == [4] * 6
    assert len(_sampled(tmp_path, "lhs", n)) == n
    assert [p.id for p in _sampled(tmp_path, "lhs", n)] == [p.id for p in
                                                              _sampled(tmp_path, "lhs", n)]


BAD_SPACES = [
    ("parameters:\n  rowz: [8]", "parameters.rowz", "unknown parameter"),
    ("parameters:\n  rows: []", "parameters.rows", "empty"),
    ("parameters:\n  rows: {range: [64, 8], step: 8}", "parameters.rows.range", "empty range"),
    ("parameters:\n  rows: [8, sixteen]", "parameters.rows[1]", "expected int"),
    ("parameters:\n  rows: [8.5]", "parameters.rows[0]", "expected int"),
    ("parameters:\n  rows: 16", "parameters.rows", "expected a list"),
    ("parameters:\n  clock_ghz: [-1]", "parameters.clock_ghz[0]", "must be > 0"),
    ("parameters:\n  dataflow: [xs]", "parameters.dataflow[0]", "must be one of"),
    ("parameters:\n  clock_ghz: {uniform: [0.5, 1]}", "parameters.clock_ghz", "random or lhs"),
    ("parameters:\n  precisions: [[{bits: 9, macs_per_pe_cycle: 1}]]",
     "parameters.precisions[0]", "precisions[0].bits"),
    ("parameters:\n  rows: [8]\nmodles: []", "modles", "unknown key"),
    ("parameters:\n  rows: [8]\nsearch: {method: lhs}", "search.samples", "missing"),
    ("parameters:\n  rows: [8]\nsearch: {method: grid, samples: 3}", "search.samples", "grid"),
    ("parameters:\n  rows: [8]\noptimise: {allocate: {metric: area, fraction: 0.5}}",
     "optimise.allocate.metric", "must be one of"),
    ("parameters:\n  rows: [8]\noptimise: {allocate: {metric: latency}}",
     "optimise.allocate", "exactly one of budget"),
    ("parameters:\n  rows: [8]\noptimise: {allocate: {budget: latency=3parsecs}}",
     "optimise.allocate.budget", "unknown unit"),
    ("parameters:\n  rows: [8]\nthreads: 2", "threads", "not for macarray bases"),
    ("parameters:\n  rows: [8]\nmodels: [zoo:digits_cnn, zoo:digits_cnn]", "models[1]",
     "a second model"),
]


@pytest.mark.parametrize("body,field,what", BAD_SPACES)
def test_malformed_space_is_one_line_naming_the_field(tmp_path: Path, body: str, field: str,
                                                      what: str) -> None:
    text = f"base: systolic-16x16\nmodels: [zoo:digits_cnn]\n{body}\n"
    path = _space(tmp_path, text)
    with pytest.raises(UserError) as e:
        load_space(path)
    assert str(e.value).startswith(f"{path}: {field}: "), str(e.value)
    assert what in e.value.what and "\n" not in str(e.value)


def test_bad_base_and_model_name_their_field(tmp_path: Path) -> None:
    for text, field in (("base: nope\nparameters: {rows: [8]}\nmodels: [zoo:digits_cnn]",
                         "base"),
                        ("base: systolic-16x16\nparameters: {rows: [8]}\nmodels: [zoo:nope]",
                         "models[0].model")):
        path = _space(tmp_path, text)
        with pytest.raises(UserError) as e:
            load_space(path)
        assert str(e.value).startswith(f"{path}: {field}: "), str(e.value)


# ---------------------------------------------------------------- per-point figures


def test_records_match_a_single_target_simulation(tmp_path: Path) -> None:
    records = _inline(_space(tmp_path, GRID), tmp_path / "out")
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

    records = _inline(_space(tmp_path, CPU), tmp_path / "out")
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
    records = _inline(_space(tmp_path, text), tmp_path / "out")
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
    records = _inline(_space(tmp_path, text), tmp_path / "out", sensitivity=fake_sensitivity)
    one_by_one = _inline(_space(tmp_path, text), tmp_path / "b1", sensitivity=fake_sensitivity,
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


# ---------------------------------------------------------------- store and resume


def _no_duplicates(out: Path) -> None:
    lines = (out / RESULTS_NAME).read_text().splitlines()[1:]
    ids = [json.loads(line)["id"] for line in lines]
    assert len(ids) == len(set(ids))


KILLED = """
import sys, time
from edgesim.sweep import LocalExecutor, load_space, run_sweep
from edgesim.sweep.evaluate import evaluate_batch
from edgesim.sweep.run import print_progress

def slow(ctx, points):
    time.sleep(0.1)
    return evaluate_batch(ctx, points)

if __name__ == "__main__":
    with LocalExecutor(1) as ex:
        run_sweep(load_space(sys.argv[1]), sys.argv[2], executor=ex, batch_size=3, task=slow)
"""


def test_sigkill_mid_sweep_then_resume_gives_the_uninterrupted_set(tmp_path: Path) -> None:
    space = _space(tmp_path, GRID)
    script = tmp_path / "sweep_script.py"
    script.write_text(KILLED)
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(script), str(space), str(out)], env=env,
                            start_new_session=True, stderr=subprocess.DEVNULL)
    stored = 0
    deadline = time.monotonic() + 60
    while stored < 1 + 9 and time.monotonic() < deadline:  # header + 3 batches of 3
        time.sleep(0.02)
        path = out / RESULTS_NAME
        stored = len(path.read_bytes().splitlines()) if path.exists() else 0
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its pool worker, mid-way
    assert proc.wait(timeout=30) == -signal.SIGKILL
    partial_ids = set(_records(out))
    assert 9 <= len(partial_ids) < 36
    resumed = _inline(space, out)
    full = _inline(space, tmp_path / "full")
    assert resumed == full and len(full) == 36
    _no_duplicates(out)


@settings(max_examples=12, deadline=None)
@given(cut=st.floats(0.0, 1.0, exclude_max=True))
def test_a_torn_results_file_resumes_to_the_same_set(tmp_path_factory, cut: float) -> None:
    tmp = tmp_path_factory.mktemp("torn")
    space = _space(tmp, GRID)
    full = _inline(space, tmp / "full")
    data = (tmp / "full" / RESULTS_NAME).read_bytes()
    (tmp / "torn").mkdir()
    (tmp / "torn" / RESULTS_NAME).write_bytes(data[:int(cut * len(data))])  # kill -9 anywhere
    # the header is written (atomically) before the first point, so it is always there
    (tmp / "torn" / HEADER_NAME).write_bytes((tmp / "full" / HEADER_NAME).read_bytes())
    assert _inline(space, tmp / "torn") == full
    _no_duplicates(tmp / "torn")


def test_rerun_computes_nothing_and_other_spaces_are_refused(tmp_path: Path) -> None:
    space = _space(tmp_path, GRID)
    _inline(space, tmp_path / "out")
    with InlineExecutor() as ex:
        again = run_sweep(load_space(space), tmp_path / "out", executor=ex)
    assert (again.points, again.skipped, again.computed) == (36, 36, 0)
    other = _space(tmp_path, GRID.replace("digits_cnn", "digits_transformer"), "other.yaml")
    with pytest.raises(UserError, match="different space"):
        _inline(other, tmp_path / "out")


def test_one_writer_per_directory(tmp_path: Path) -> None:
    header = {"fingerprint": "x"}
    with ResultStore.open(tmp_path, header) as store:
        with pytest.raises(UserError, match="another sweep"):
            ResultStore.open(tmp_path, header)
        store.append([{"id": "a", "v": 1}, {"id": "b", "v": 2}])
        store.append([{"id": "a", "v": 3}])  # already stored: never written twice
    assert [r["v"] for r in read_results(tmp_path / RESULTS_NAME)[1]] == [1, 2]
    assert point_id({"a": 1, "b": 2.0}) == point_id({"b": 2.0, "a": 1})


# ---------------------------------------------------------------- executors


def test_batch_size_and_process_pool_do_not_change_results(tmp_path: Path) -> None:
    space = _space(tmp_path, GRID)
    reference = _inline(space, tmp_path / "inline", batch_size=36)
    assert _inline(space, tmp_path / "small", batch_size=5) == reference
    with LocalExecutor(2) as ex:
        run_sweep(load_space(space), tmp_path / "pool", executor=ex, batch_size=4)
    assert _records(tmp_path / "pool") == reference


def test_sweep_options_and_progress_line(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    space = _space(tmp_path, GRID)
    for kw, flag in (({"workers": 0}, "--workers"), ({"batch_size": 0}, "--batch-size"),
                     ({"workers": 2, "dask_local": 2}, "--workers"),
                     ({"dask_local": 0}, "--dask-local")):
        with pytest.raises(UserError, match=f"^{flag}: "):
            sweep(space, tmp_path / "out", **kw)
    print_progress(250, 1000, 2.0)  # 125 points/s, 750 left: 6 s
    assert capsys.readouterr().err.strip() == "sweep: 250/1000 points, 125 points/s, ETA 6 s"


def die_once(marker: str, ctx, points):  # noqa: ANN001, ANN201 - a Dask task
    """The first task to run kills its worker process (SIGKILL) mid-task."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return evaluate_batch(ctx, points)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def cancelled_once(marker: str, ctx, points):  # noqa: ANN001, ANN201 - a Dask task
    """The first task to run has the scheduler cancel it for every client, as the scheduler
    does to tasks whose scattered inputs died with a worker; it finishes regardless."""
    from distributed import Future, get_client, get_worker

    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return evaluate_batch(ctx, points)
    client = get_client()
    client.cancel([Future(get_worker().get_current_task(), client)], force=True)
    return evaluate_batch(ctx, points)


def test_dask_submits_a_cancelled_task_again(tmp_path: Path) -> None:
    space = _space(tmp_path, GRID)
    reference = _inline(space, tmp_path / "inline")
    marker = tmp_path / "cancelled"
    with DaskExecutor(local_workers=2) as ex:
        run_sweep(load_space(space), tmp_path / "dask", executor=ex, batch_size=4,
                  task=partial(cancelled_once, str(marker)))
    assert marker.exists()  # a task really was cancelled
    assert _records(tmp_path / "dask") == reference  # and its batch was evaluated again
    _no_duplicates(tmp_path / "dask")


def test_dask_local_cluster_matches_the_pool_even_when_a_worker_dies(tmp_path: Path) -> None:
    space = _space(tmp_path, GRID)
    reference = _inline(space, tmp_path / "inline")
    marker = tmp_path / "killed.pid"
    with DaskExecutor(local_workers=2) as ex:
        assert ex.workers == 2
        run_sweep(load_space(space), tmp_path / "dask", executor=ex, batch_size=4)
        run_sweep(load_space(space), tmp_path / "dask-kill", executor=ex, batch_size=4,
                  task=partial(die_once, str(marker)))
    assert _records(tmp_path / "dask") == reference
    assert marker.exists()  # a worker really died holding a task
    assert _records(tmp_path / "dask-kill") == reference  # its lost task was rerun
    _no_duplicates(tmp_path / "dask-kill")
