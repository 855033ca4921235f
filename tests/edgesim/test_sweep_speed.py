"""Sweep speed paths give the same records, and serial vs parallel is decided by size: the
batched fixed-bits path (`picked` hook) against the full cost path, and the pool decision
against its closed form (work saved by the workers vs one worker's start)."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from edgesim.sweep import WORKER_START_S, parallel_pays, predicted_work_s, runs_inline
from edgesim.sweep import run as run_mod
from edgesim.sweep.points import enumerate_points
from edgesim.sweep.run import Context, evaluate_batch, model_context, proxy_sensitivity
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
    ctx = Context(space.base, tuple(model_context(space, i, proxy_sensitivity)
                                    for i in range(len(space.models))),
                  space.optimise, space.runtime, space.threads)
    points = enumerate_points(space)
    fast = evaluate_batch(ctx, points)
    real = run_mod.hooks
    monkeypatch.setattr(run_mod, "hooks",
                        lambda base: dataclasses.replace(real(base), picked=None))
    full = evaluate_batch(ctx, points)
    assert len(fast) == 48
    # 4-bit-only designs cannot run 8-bit activations: both paths must agree on those too
    assert any("error" in r for r in fast) and any("error" not in r for r in fast)
    assert fast == full


def test_pool_pays_when_saved_work_exceeds_a_worker_start() -> None:
    start = WORKER_START_S
    assert not parallel_pays(100 * start, 1)  # one worker saves nothing
    assert not parallel_pays(2 * start - 0.1, 2)  # 2 workers save half the work
    assert parallel_pays(2 * start + 0.1, 2)
    assert not parallel_pays(4 / 3 * start - 0.1, 4)  # 4 workers save three quarters
    assert parallel_pays(4 / 3 * start + 0.1, 4)


def test_shipped_macarray_space_is_too_small_to_pay_for_workers() -> None:
    shipped = load_space(ROOT / "targets" / "spaces" / "macarray.yaml")
    work = predicted_work_s(shipped)
    assert work == pytest.approx(2000 * 2 * 1e-4)
    assert all(not parallel_pays(work, w) for w in (2, 4, 64))
    assert runs_inline(shipped, None) and not runs_inline(shipped, 2)


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
