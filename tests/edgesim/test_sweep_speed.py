"""Sweep speed paths give the same records, and serial vs parallel is decided by predicted
time: the batched fixed-bits path (`picked` hook) against the full cost path, and the choice of
this process or N pool workers against hand arithmetic on injected timings."""

from __future__ import annotations

import dataclasses
import os
import sys
import textwrap
from pathlib import Path

import pytest

from edgesim.sweep import (
    POOL_GAIN_S,
    Timings,
    best_workers,
    evaluate,
    point_count,
    predicted_timings,
    predicted_wall_s,
    predicted_work_s,
    runs_inline,
)
from edgesim.sweep import run as run_mod
from edgesim.sweep.evaluate import Context, evaluate_batch, model_context, proxy_sensitivity
from edgesim.sweep.points import enumerate_points
from edgesim.sweep.space import load_space
from edgesim.sweep.store import RESULTS_NAME, ResultStore, encode, read_results
from hwmodels.macarray import Precision
from hwmodels.sweep_hooks import macarray_variant
from hwmodels.target import load_target

ROOT = Path(__file__).resolve().parents[2]
FIXED = """
base: systolic-16x16
parameters:
  rows: [8, 32]
  cols: [8, 16]
  dataflow: [os, ws, is]
  ofmap_sram_kib: [4, 256]
  precisions:
    - [{bits: 4, macs_per_pe_cycle: 2}]
    - [{bits: 8, macs_per_pe_cycle: 1}, {bits: 4, macs_per_pe_cycle: 2}]
models: [zoo:digits_cnn]
optimise: {bits: {w_bits: 4, a_bits: 8}}
"""


@pytest.fixture(scope="module")
def fixed_space(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("speed") / "fixed.yaml"
    path.write_text(textwrap.dedent(FIXED))
    return load_space(path)


def test_fixed_bits_records_equal_with_and_without_the_batched_path(fixed_space, monkeypatch):
    space = fixed_space
    ctx = Context(space, tuple(model_context(space, i, proxy_sensitivity)
                               for i in range(len(space.models))))
    points = enumerate_points(space)
    fast = evaluate_batch(ctx, points)
    real = evaluate.hooks
    monkeypatch.setattr(evaluate, "hooks",
                        lambda base: dataclasses.replace(real(base), picked=None))
    full = evaluate_batch(ctx, points)
    assert len(fast) == 48 == point_count(space)  # the grid's size, counted without enumerating
    # 4-bit-only designs cannot run 8-bit activations: both paths must agree on those too
    assert any("error" in r for r in fast) and any("error" not in r for r in fast)
    assert fast == full


def test_predicted_wall_time_of_this_process_and_of_a_pool() -> None:
    t = Timings(setup_s=4.0, work_s=0.4, start_s=1.2, per_worker_s=0.05)
    assert predicted_wall_s(t, 0, 2) == pytest.approx(4.0 + 0.4)
    # 2 cores: the pool starts beside the model loading (4 s > 1.25 s, and (4 + 1.3) / 2)
    assert predicted_wall_s(t, 1, 2) == pytest.approx(4.0 + 0.4)
    assert predicted_wall_s(t, 2, 2) == pytest.approx(4.0 + 0.4 / 2)
    assert predicted_wall_s(t, 4, 2) == pytest.approx(4.0 + 0.4 / 2)  # one worker per core
    # one core: loading, then the pool's start, then all the work
    assert predicted_wall_s(t, 2, 1) == pytest.approx(4.0 + 1.2 + 2 * 0.05 + 0.4)
    quick = Timings(setup_s=0.5, work_s=3.0, start_s=1.2, per_worker_s=0.05)
    assert predicted_wall_s(quick, 2, 2) == pytest.approx(1.25 + 1.5)  # waits for its start
    heavy = Timings(setup_s=2.0, work_s=3.0, start_s=3.0, per_worker_s=1.0)
    # summed start and loading (2 + 3 + 4 x 1) over 2 cores outlast either alone
    assert predicted_wall_s(heavy, 4, 2) == pytest.approx(4.5 + 1.5)


@pytest.mark.parametrize(("timings", "cores", "best"), [
    (Timings(4.2, 0.4), 2, 2),  # the shipped space on an idle machine: halve the work
    (Timings(4.2, 0.4), 1, 0),  # one idle core: a pool only adds its start
    (Timings(0.1, 0.4), 2, 0),  # 0.1 + 0.4 s here beats a 1.25 s start
    (Timings(0.1, 3.0), 2, 2),  # 3 s of work: 1.25 + 1.5 s < 3.1 s
    (Timings(0.1, 1.5), 2, 0),  # 1.6 s here; 2 workers 1.25 + 0.75 = 2.0 s
    (Timings(0.1, 100.0), 8, 8),
    (Timings(4.0, 0.0), 2, 0),  # no work: equal times, the fewest processes
    (Timings(0.5, 2.0, 0.0, 1.2), 2, 2),  # spawned: (0.5 + 2.4) / 2 + 1.0 < 2.5 s
    (Timings(0.5, 1.0, 0.0, 1.2), 2, 0),  # spawned: 1.45 + 0.5 s > 1.5 s
])
def test_the_fastest_number_of_workers_is_chosen(timings, cores, best) -> None:
    assert best_workers(timings, cores) == best
    # the choice is the minimum of the predictions (the rule, not only the cases above)
    times = [predicted_wall_s(timings, n, cores) for n in range(cores + 1)]
    assert times[best] == pytest.approx(min(times))


def test_a_pool_that_saves_less_than_its_batches_fixed_cost_is_not_started() -> None:
    tiny = Timings(4.2, 84 * 2 * 1e-4)  # cpu-whatif: 84 points x 2 models
    saved = predicted_wall_s(tiny, 0, 2) - predicted_wall_s(tiny, 2, 2)
    assert 0 < saved < POOL_GAIN_S  # 2 workers are predicted 8 ms faster ...
    assert best_workers(tiny, 2) == 0  # ... which two batches' fixed cost would eat


def test_shipped_macarray_space_takes_two_workers_on_two_idle_cores(monkeypatch) -> None:
    import edgesim.sweep as sweep_mod

    shipped = load_space(ROOT / "targets" / "spaces" / "macarray.yaml")
    t = predicted_timings(shipped)
    assert predicted_work_s(shipped) == pytest.approx(2000 * 2 * 1e-4)
    assert t.setup_s == pytest.approx(2 * (0.7 + 1.4))  # two models, loaded and analysed
    monkeypatch.setattr(sweep_mod, "cpu_count", lambda: 2)
    monkeypatch.setattr(sweep_mod.os, "getloadavg", lambda: (1.0, 1.0, 1.0))  # only us
    assert sweep_mod.auto_workers(shipped) == 2 and not runs_inline(shipped, None)
    monkeypatch.setattr(sweep_mod.os, "getloadavg", lambda: (6.0, 6.0, 6.0))  # shared
    assert sweep_mod.auto_workers(shipped) == 0 and runs_inline(shipped, None)
    assert not runs_inline(shipped, 2)  # workers asked for: a pool


@pytest.mark.parametrize(("todo", "workers", "point_s", "size"), [
    (2000, 2, 2e-4, 500),  # 10 ms fixed cost <= 10 % of 500 x 0.2 ms; a quarter share is 250
    (2000, 1, 2e-4, 500),
    (20000, 2, 2e-4, 2500),  # four batches per worker
    (100, 2, 2e-4, 50),  # never more than a worker's share
    (10**6, 2, 2e-4, 4096),
    (2000, 2, 1e-4, 1000),  # cheaper points: more of them per batch
])
def test_batches_are_large_enough_to_pay_for_themselves(todo, workers, point_s, size) -> None:
    assert run_mod.default_batch_size(todo, workers, point_s) == size


def test_macarray_variant_is_what_dataclasses_replace_builds() -> None:
    base = load_target("sparse-mac-32x32")
    assert base.kernel_configs.cfg_i[0, 1] == 32  # cached on the base: must not carry over
    changes = {"rows": 64, "dataflow": "is", "ofmap_sram_kib": 12.5,
               "precisions": (Precision(8, 1.0), Precision(4, 2.0))}
    got = macarray_variant(base, changes, "p1")
    assert got == dataclasses.replace(base, name=f"{base.name}[p1]", **changes)
    assert got.kernel_configs.cfg_i[0, 1] == 64 and got.kernel_configs.cfg_i[0, 0] == 2
    assert base.rows == 32  # the base is untouched
    with pytest.raises(ValueError, match="sparsity_n"):
        macarray_variant(base, {"sparsity_n": 4, "sparsity_m": 4}, "bad")
    with pytest.raises(ValueError, match="duplicate"):
        macarray_variant(base, {"precisions": (Precision(8, 1.0), Precision(8, 2.0))}, "dup")
    with pytest.raises(TypeError, match="not fields"):
        macarray_variant(base, {"rowz": 8}, "typo")


def test_encoded_records_store_as_the_records_and_skip_stored_ids(tmp_path: Path) -> None:
    records = [{"id": "a", "index": 0, "params": {"rows": 8}, "x": 0.1},
               {"id": "b", "index": 1, "params": {"rows": 16}, "error": "invalid design: no"}]
    batch = encode(records)
    assert (len(batch), batch.errors, batch.ids) == (2, 1, ("a", "b"))
    with ResultStore.open(tmp_path, {"space": "t"}) as store:
        store.append(records[:1])
        store.append_encoded(batch)  # "a" is stored already: written once
    assert read_results(tmp_path / RESULTS_NAME)[1] == records


@pytest.mark.parametrize(("cores", "load", "idle"),
                         [(2, 0.5, 2), (2, 1.0, 2), (2, 2.0, 1), (2, 13.0, 1), (8, 3.0, 6)])
def test_idle_cores_are_the_cores_less_the_load_of_other_processes(monkeypatch, cores, load,
                                                                    idle) -> None:
    import edgesim.sweep as sweep_mod

    monkeypatch.setattr(sweep_mod, "cpu_count", lambda: cores)
    monkeypatch.setattr(sweep_mod.os, "getloadavg", lambda: (load, load, load))
    assert sweep_mod.idle_cores() == idle


def test_a_large_sweep_takes_a_pool_only_on_idle_cores(monkeypatch) -> None:
    import edgesim.sweep as sweep_mod

    shipped = load_space(ROOT / "targets" / "spaces" / "macarray.yaml")
    monkeypatch.setattr(sweep_mod, "predicted_work_s", lambda space: 100.0)
    monkeypatch.setattr(sweep_mod, "cpu_count", lambda: 2)
    monkeypatch.setattr(sweep_mod.os, "getloadavg", lambda: (1.0, 1.0, 1.0))  # only us
    assert not sweep_mod.runs_inline(shipped, None)
    monkeypatch.setattr(sweep_mod.os, "getloadavg", lambda: (13.0, 13.0, 13.0))  # shared
    assert sweep_mod.runs_inline(shipped, None)


def worker_facts(shared: object, task: int) -> tuple[int, bool, bool]:
    """(parent pid, sweep preloaded before the task, BLAS probe left importable)."""
    return (os.getppid(), "edgesim.sweep.preload" in sys.modules,
            sys.modules.get("scipy.linalg.cython_blas", "unloaded") is not None)


def test_pool_workers_are_forks_of_a_server_that_loaded_the_sweep_once() -> None:
    from edgesim.sweep.executors import LocalExecutor, forkserver_available

    assert forkserver_available()  # Linux, where the tests run
    with LocalExecutor(2) as ex:
        facts = list(ex.map_unordered(worker_facts, None, [0, 1]))
    parents = {parent for parent, _, _ in facts}
    assert len(parents) == 1 and os.getpid() not in parents  # one fork server, not this process
    assert all(preloaded and probe_free for _, preloaded, probe_free in facts)
