"""Cost calls in microseconds: everything a MAC-array cost call derives from its arguments
(the layer arrays, the target's per-width rate and energy tables, the byte counts), computed
once and held in a `PreparedCall`; `run` then costs one serial kernel call and a `Cost`.

A caller that costs the same network on the same target again and again (a simulation loop, a
design-space walk that changes bits) prepares once. The prepared call is an explicit value,
not a hidden cache: nothing goes stale behind the caller's back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler.ir import LayerTable
from hwmodels.cost import Cost, bits_key, check_bits, checked_memory_bytes, memoised, shared_once
from hwmodels.macarray import MacArrayTarget, layer_arrays, run_kernel

_FIELDS = ("cycles", "latency_s", "energy_pj_compute", "energy_pj_onchip", "energy_pj_dram",
           "bound", "util")


@dataclass(frozen=True, eq=False)  # holds arrays
class PreparedCall:
    """The kernel's inputs for one network, one target (or H configs) and B bit choices."""

    lay_i: np.ndarray
    lay_f: np.ndarray
    w_bits: np.ndarray
    a_bits: np.ndarray
    cfg_i: np.ndarray
    cfg_f: np.ndarray
    rates: np.ndarray
    energies: np.ndarray
    weight_bytes: np.ndarray
    act_bytes: np.ndarray


def prepare(table: LayerTable, bits: np.ndarray, target: MacArrayTarget) -> PreparedCall:
    """Everything `hwmodels.macarray.evaluate(table, bits, target)` computes before its kernel.

    Raises:
        TypeError: for a target that is not a MAC array.
        ValueError: on bad bits.
    """
    if not isinstance(target, MacArrayTarget):
        raise TypeError(f"prepared calls cover MAC arrays; got {type(target).__name__}")
    bits = check_bits(bits)
    cfg = target.kernel_configs
    rates, energies = target.kernel_rates(bits)  # memoised on the target
    weight, act = memoised(table.memo, ("bytes", bits_key(bits)), lambda: _bytes(table, bits))
    lay = memoised(table.memo, "macarray.layer_arrays", lambda: layer_arrays(table))
    return PreparedCall(*lay, bits[:, 0].astype(np.float64),
                        bits[:, 1].astype(np.float64), cfg.cfg_i, cfg.cfg_f,
                        np.ascontiguousarray(rates), np.ascontiguousarray(energies), weight, act)


def _bytes(table: LayerTable, bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`checked_memory_bytes`, read-only: every `Cost` of these bits hands them out."""
    weight, act = checked_memory_bytes(table, bits)
    weight = shared_once(table, weight)  # a shared weight is stored once (`cost.stored_once`)
    weight.flags.writeable = act.flags.writeable = False
    return weight, act


def run(p: PreparedCall) -> Cost:
    """The `Cost` [L, B] of a prepared call; equal to `hwmodels.macarray.evaluate`'s."""
    out = np.empty((7, len(p.cfg_i), len(p.lay_i), len(p.w_bits)))
    run_kernel(out)(p.lay_i, p.lay_f, p.w_bits, p.a_bits, p.cfg_i, p.cfg_f, p.rates,
                    p.energies, out)
    return Cost.from_kernel(out[:, 0], p.weight_bytes, p.act_bytes)
