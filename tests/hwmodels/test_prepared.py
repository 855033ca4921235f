"""Fast cost calls give the same numbers as the plain ones: the serial kernel as the threaded
one, a prepared call as `hwmodels.cost.evaluate`, a target's cached arrays as fresh ones."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from compiler.frontend import load
from edgesim import zoo
from hwmodels import configs, prepared
from hwmodels.cost import Cost, evaluate
from hwmodels.kernels import macarray as kernel
from hwmodels.macarray import evaluate_configs, layer_arrays
from hwmodels.target import load_target

BITS = np.array([[8, 8], [4, 8], [32, 32], [2, 8]])


@pytest.fixture(scope="module")
def table():
    return load(zoo.build("digits_cnn")).layer_table()


def _fields(cost) -> dict:
    return {f.name: getattr(cost, f.name) for f in dataclasses.fields(cost)}


def test_serial_kernel_equals_threaded_kernel(table) -> None:
    grid = configs.grid(load_target("systolic-16x16"), rows=[8, 16], dataflow=["os", "ws", "is"],
                        sparsity=["none", "skip_both"])
    cfg = configs.from_targets(grid)
    rates, energies = configs.precision_rates(cfg, BITS)
    args = (*layer_arrays(table), BITS[:, 0].astype(float), BITS[:, 1].astype(float),
            cfg.cfg_i, cfg.cfg_f, rates, energies)
    a, b = (np.empty((7, len(cfg), len(table), len(BITS))) for _ in range(2))
    kernel.evaluate(*args, a)
    kernel.evaluate_serial(*args, b)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["systolic-16x16", "sparse-mac-32x32"])
def test_prepared_call_equals_evaluate(table, name: str) -> None:
    target = load_target(name)
    # the oracle: the configs path, one config ([H=1, L, B]), which prepares nothing
    full = _fields(evaluate_configs(table, BITS, configs.from_targets([target])))
    for got in (prepared.run(prepared.prepare(table, BITS, target)), evaluate(table, BITS, target)):
        for field, value in _fields(got).items():
            np.testing.assert_array_equal(value, full[field][0], err_msg=field)
            assert value.dtype == full[field].dtype, field  # bound int8, the rest float64


def test_a_cost_from_kernel_output_is_the_checked_cost() -> None:
    out = np.arange(7 * 3 * 2, dtype=np.float64).reshape(7, 3, 2) % 4
    weight, act = np.full((3, 2), 2.0), np.full((3, 2), 5.0)
    fast, checked = Cost.from_kernel(out, weight, act), Cost(*out, weight, act)
    for field, value in _fields(checked).items():
        np.testing.assert_array_equal(_fields(fast)[field], value, err_msg=field)
        assert _fields(fast)[field].dtype == value.dtype, field
    with pytest.raises(ValueError, match="does not match"):
        Cost.from_kernel(out, weight[:2], act)


def test_prepared_calls_refuse_other_targets(table) -> None:
    with pytest.raises(TypeError, match="MAC arrays"):
        prepared.prepare(table, BITS, load_target("rpi5"))


def test_cached_kernel_configs_follow_the_target() -> None:
    """The cached arrays are the target's own; a changed copy gets its own arrays."""
    t = load_target("systolic-16x16")
    fresh = configs.from_targets([t])
    assert t.kernel_configs is t.kernel_configs
    np.testing.assert_array_equal(t.kernel_configs.cfg_i, fresh.cfg_i)
    np.testing.assert_array_equal(t.kernel_configs.cfg_f, fresh.cfg_f)
    wider = dataclasses.replace(t, rows=t.rows * 2)
    assert wider.kernel_configs.cfg_i[0, 1] == 2 * t.rows


def test_memoised_rates_equal_fresh_ones_for_every_bit_set() -> None:
    t = load_target("sparse-mac-32x32")
    many = np.array([[w, a] for w in (1, 2, 4, 8, 16, 32) for a in (8, 16, 32)] * 30)
    for bits in (BITS, BITS[:1], BITS[::-1], many):  # same bytes, other shapes included
        for got, want in zip(t.kernel_rates(bits),
                             configs.precision_rates(configs.from_targets([t]), bits)):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("bits", [[[8, 33]], [[-1, 8]], [[0, 8]], [[9, 8]], [[8, 64]]])
def test_bad_widths_are_still_refused(bits) -> None:
    from hwmodels.cost import check_bits

    with pytest.raises(ValueError, match=r"bits\[0\]"):
        check_bits(np.array(bits))
