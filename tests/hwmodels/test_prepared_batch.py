"""The sweep's batched MAC-array kernel (one chosen bit choice per layer and design) gives
exactly the numbers of the full kernel (every bit choice) at those columns, on random designs
and random layers: GEMMs with weights, matmuls of two activations, streaming, copy and view
layers, every dataflow and sparsity mode, supported and unsupported precisions."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from compiler.ir import KIND_CATEGORY, KIND_CODE, LayerTable
from hwmodels import configs, sweep_hooks
from hwmodels.kernels import macarray as kernel
from hwmodels.kernels import macarray_batch
from hwmodels.macarray import Precision, layer_arrays
from hwmodels.target import load_target

BITS = np.array([[8, 8], [4, 8], [2, 8], [32, 32], [16, 16], [4, 4]])
KINDS = ("conv", "linear", "matmul", "activation", "eltwise", "pool", "reshape", "concat")
PRECISIONS = ((Precision(8, 1.0),),
              (Precision(8, 1.0), Precision(4, 2.0), Precision(2, 4.0)),
              (Precision(8, 1.0), Precision(16, 0.5), Precision(32, 0.25)))


def random_table(rng: np.random.Generator, count: int) -> LayerTable:
    """Random layers of every category; matmuls read two activations (no weights)."""
    kinds = [KINDS[i] for i in rng.integers(len(KINDS), size=count)]
    m, n, k = (rng.integers(1, 3000, size=count) for _ in range(3))
    groups = np.where(rng.random(count) < 0.2, rng.integers(1, 33, size=count), 1)
    gemm = np.array([KIND_CATEGORY[x] == 0 for x in kinds])
    matmul = np.array([x == "matmul" for x in kinds])
    w_elems = np.where(gemm & ~matmul, groups * k * n, 0)
    ops = np.where(gemm, 0, rng.integers(1, 10**6, size=count))
    a_in = np.where(gemm, groups * m * k + np.where(matmul, groups * k * n, 0), ops)
    a_out = np.where(gemm, groups * m * n, ops)
    return LayerTable(
        tuple(f"l{i}" for i in range(count)),
        np.array([KIND_CODE[x] for x in kinds], np.int32),
        np.array([KIND_CATEGORY[x] for x in kinds], np.int32),
        m, n, k, groups, groups * m * n * k, ops, w_elems, a_in, a_out, 4 * a_in, 4 * a_out,
        4 * w_elems, rng.uniform(0.2, 1.0, count), rng.uniform(0.2, 1.0, count))


def random_designs(rng: np.random.Generator, count: int) -> list:
    """Random MAC arrays around the shipped ones: shape, dataflow, SRAMs, link, sparsity."""
    bases = [load_target("systolic-16x16"), load_target("sparse-mac-32x32")]
    out = []
    for i in range(count):
        out.append(dataclasses.replace(
            bases[i % 2], name=f"d{i}", rows=int(rng.choice([4, 8, 16, 32, 128])),
            cols=int(rng.choice([4, 8, 16, 64])), dataflow=str(rng.choice(["os", "ws", "is"])),
            ifmap_sram_kib=float(rng.uniform(1, 2048)),
            filter_sram_kib=float(rng.uniform(1, 2048)),
            ofmap_sram_kib=float(rng.uniform(0.5, 1024)),
            dram_bandwidth_gbps=float(rng.uniform(1, 64)), clock_ghz=float(rng.uniform(0.2, 2)),
            double_buffered=bool(rng.random() < 0.5),
            sparsity=str(rng.choice(configs.SPARSITY_MODES)),
            precisions=PRECISIONS[int(rng.integers(len(PRECISIONS)))],
            precision_scaling=str(rng.choice(["fused", "widest"]))))
    return out


@pytest.fixture(scope="module")
def case() -> tuple[LayerTable, list, np.ndarray]:
    rng = np.random.default_rng(17)
    table, designs = random_table(rng, 60), random_designs(rng, 50)
    return table, designs, rng.integers(len(BITS), size=(len(designs), len(table)))


def full_costs(table: LayerTable, designs: list) -> np.ndarray:
    """The full kernel's [7, D, L, B] costs of `designs` at every column of BITS."""
    cfg = configs.from_targets(designs)
    rates, energies = configs.precision_rates(cfg, BITS)
    out = np.empty((7, len(cfg), len(table), len(BITS)))
    kernel.evaluate_serial(*layer_arrays(table), BITS[:, 0].astype(float),
                           BITS[:, 1].astype(float), cfg.cfg_i, cfg.cfg_f, rates, energies, out)
    return out


@pytest.mark.parametrize("threaded", [False, True])
def test_batched_kernel_equals_full_kernel_at_the_chosen_columns(case, threaded: bool) -> None:
    table, designs, cols = case
    full = full_costs(table, designs)
    cfg = configs.from_targets(designs)
    rates, energies = configs.precision_rates(cfg, BITS)
    got = np.empty((7, len(designs), len(table)))
    run = macarray_batch.evaluate_picked if threaded else macarray_batch.evaluate_picked_serial
    run(*layer_arrays(table), BITS[:, 0].astype(float), BITS[:, 1].astype(float), cols,
        cfg.cfg_i, cfg.cfg_f, rates, energies, got)
    want = np.take_along_axis(full, cols[None, :, :, None], axis=3)[..., 0]
    assert np.isinf(want[0]).any() and np.isfinite(want[0]).any()  # both kinds of precision
    np.testing.assert_array_equal(got, want)


def batch_equals_full(table: LayerTable, designs: list, rng: np.random.Generator
                      ) -> np.ndarray:
    """Assert the sweep's batch kernel at random columns equals the full kernel there; return
    the full kernel's costs."""
    full = full_costs(table, designs)
    cfg = configs.from_targets(designs)
    rates, energies = configs.precision_rates(cfg, BITS)
    cols = rng.integers(len(BITS), size=(len(designs), len(table)))
    got = np.empty((7, len(designs), len(table)))
    macarray_batch.evaluate_picked_serial(*layer_arrays(table), BITS[:, 0].astype(float),
                                          BITS[:, 1].astype(float), cols, cfg.cfg_i,
                                          cfg.cfg_f, rates, energies, got)
    want = np.take_along_axis(full, cols[None, :, :, None], axis=3)[..., 0]
    np.testing.assert_array_equal(got, want)
    return full


def test_shared_columns_equal_per_design_columns(case) -> None:
    """cols [L] (every design alike) is the same as that row repeated for every design."""
    table, designs, cols = case
    one = sweep_hooks.macarray_picked(table, BITS, designs, cols[0])
    tiled = sweep_hooks.macarray_picked(table, BITS, designs, np.tile(cols[0], (len(designs), 1)))
    for f in dataclasses.fields(one):
        np.testing.assert_array_equal(getattr(one, f.name), getattr(tiled, f.name))


def test_picked_hook_totals_equal_the_full_costs_totals(case) -> None:
    """Whole-model totals of the picked hook equal those of `macarray_costs` picked in numpy."""
    table, designs, cols = case
    full = sweep_hooks.macarray_costs(table, BITS, designs)
    want_fields = {f.name: np.ascontiguousarray(np.take_along_axis(
        np.broadcast_to(getattr(full, f.name), full.cycles.shape), cols[:, :, None], axis=2))
        for f in dataclasses.fields(full)}
    want = type(full)(**want_fields).total()
    got = sweep_hooks.macarray_picked(table, BITS, designs, cols).total()
    for f in dataclasses.fields(want):
        np.testing.assert_array_equal(getattr(got, f.name), getattr(want, f.name), f.name)
