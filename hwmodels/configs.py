"""H MAC-array configurations as a struct of arrays, for sweeps in one kernel call.

`from_targets([...])` turns `MacArrayTarget`s (shipped, or variations made with `grid`) into the
arrays the kernel reads; `precision_rates` resolves every (config, bit choice) pair to a MAC
throughput and energy. Precision rules:

- Integer widths (1-8) run on the narrowest supported integer width >= the request; floats
  (16, 32) on the narrowest supported float >= the request (fp16 may run on fp32 units).
  If either operand is a float, both run as that float (weight-only quantisation dequantises).
- `precision_scaling: fused` (Bit Fusion, Sharma et al. ISCA 2018): mixed widths take the
  geometric mean of the two widths' rates and energies -- exact when rate ~ 1/(w*a) and
  energy ~ w*a, as with Bit Fusion's 2-bit bricks. `widest`: the wider operand sets both.
- Unsupported precisions get rate 0 (the kernel reports infinite cost).
"""

from __future__ import annotations

import dataclasses
import itertools
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hwmodels import energy

DATAFLOWS = ("os", "ws", "is")
SPARSITY_MODES = ("none", "zero_gating", "skip_activations", "skip_weights", "skip_both",
                  "structured")
MAX_BITS = 32
_INT_MAX = 8  # widths above this are the floats 16 and 32


@dataclass(frozen=True)
class MacArrayConfigs:
    """H hardware configurations: kernel arrays plus per-width precision tables.

    Attributes:
        names: one name per config.
        cfg_i: int64 [H, 13] (dataflow, rows, cols, sparsity, sp_n, sp_m, double_buffered,
            lanes, activations_on_chip, fold_pipelining, weights_resident, fused_epilogue,
            weight_preload).
        cfg_f: float64 [H, 9] (clock_ghz, dram_gbps, dram pJ/B, SRAM bytes x3, SRAM pJ/B x3).
        rate_table: [H, 33] MACs per PE per cycle with both operands at width b (0: unsupported).
        energy_table: [H, 33] pJ per MAC at width b.
        fused: bool [H], Bit Fusion precision scaling.
        process_nm: [H], for the vector unit's energy.
    """

    names: tuple[str, ...]
    cfg_i: np.ndarray
    cfg_f: np.ndarray
    rate_table: np.ndarray
    energy_table: np.ndarray
    fused: np.ndarray
    process_nm: np.ndarray

    def __len__(self) -> int:
        return len(self.names)


def from_targets(targets: Sequence[Any]) -> MacArrayConfigs:
    """Struct of arrays from a list of `MacArrayTarget`s (vectorised: sweeps pass thousands,
    so each field is read in one pass over the list, without a call per target)."""
    table_of, tables = _precision_tables(targets)
    node = np.array([t.process_nm for t in targets], dtype=np.float64)
    return MacArrayConfigs(
        names=tuple([t.name for t in targets]),
        cfg_i=_ints(targets),
        cfg_f=_floats(targets, node),
        rate_table=tables[0][table_of],
        energy_table=tables[1][table_of],
        fused=np.array([t.precision_scaling == "fused" for t in targets], dtype=bool),
        process_nm=node,
    )


def grid(base: Any, **axes: Sequence[Any]) -> list[Any]:
    """Every combination of the given field values applied to `base` (dataclasses.replace).

    Example: `grid(target, rows=[8, 16], dataflow=["os", "ws"])` -> 4 targets.
    """
    names = list(axes)
    out = []
    for values in itertools.product(*(axes[n] for n in names)):
        change = dict(zip(names, values))
        label = ",".join(f"{n}={v}" for n, v in change.items())
        out.append(dataclasses.replace(base, name=f"{base.name}[{label}]", **change))
    return out


_DATAFLOW_CODE = {name: i for i, name in enumerate(DATAFLOWS)}
_SPARSITY_CODE = {name: i for i, name in enumerate(SPARSITY_MODES)}


def _ints(targets: Sequence[Any]) -> np.ndarray:
    """[H, 13] dataflow, rows, cols, sparsity, sp_n, sp_m, double_buffered, lanes, on-chip,
    fold_pipelining, weights_resident, fused_epilogue, weight_preload."""
    rows = [(_DATAFLOW_CODE[t.dataflow], t.rows, t.cols, _SPARSITY_CODE[t.sparsity],
             t.sparsity_n, t.sparsity_m, t.double_buffered,
             t.cols if t.vector_lanes is None else t.vector_lanes, t.activations_on_chip,
             t.fold_pipelining, t.weights_resident, t.fused_epilogue, t.weight_preload)
            for t in targets]
    return np.array(rows, dtype=np.int64).reshape(-1, 13)


_FLOAT_FIELDS = operator.attrgetter("clock_ghz", "dram_bandwidth_gbps",
                                     "dram_energy_pj_per_byte", "ifmap_sram_kib",
                                     "filter_sram_kib", "ofmap_sram_kib",
                                     "sram_energy_pj_per_byte")


def _floats(targets: Sequence[Any], node: np.ndarray) -> np.ndarray:
    """[H, 9] clock_ghz, dram_gbps, dram pJ/B, SRAM bytes x3, SRAM pJ/B x3."""
    # None (use the default energy) becomes NaN in a float array
    raw = np.array(list(map(_FLOAT_FIELDS, targets)), dtype=np.float64).reshape(-1, 7)
    sizes, given = raw[:, 3:6], raw[:, 6:7]
    sram_pj = np.where(np.isnan(given), energy.sram_pj_per_byte(sizes, node[:, None]), given)
    dram = np.where(np.isnan(raw[:, 2]), energy.dram_pj_per_byte(), raw[:, 2])
    return np.column_stack([raw[:, :2], dram, sizes * 1024.0, sram_pj]).reshape(-1, 9)


def _precision_tables(targets: Sequence[Any]) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """(index [H] into the tables, (rate [T, 33], energy [T, 33])): one table per distinct
    (precisions, node), as sweeps share few. Variants share their precisions tuple, so it is
    looked up by identity first (hashing the tuple's dataclasses cost more than the rest)."""
    by_id: dict[tuple[int, float], int] = {}
    by_value: dict[tuple[object, ...], int] = {}
    index = []
    for t in targets:
        fast = (id(t.precisions), t.process_nm)
        found = by_id.get(fast)
        if found is None:
            found = by_id[fast] = by_value.setdefault((t.precisions, t.process_nm),
                                                      len(by_value))
        index.append(found)
    sample = {i: t for t, i in zip(targets, index)}  # one target per table
    made = [_precision_table(sample[i]) for i in range(len(by_value))]
    rate = np.array([r for r, _ in made]).reshape(-1, MAX_BITS + 1)
    pj = np.array([e for _, e in made]).reshape(-1, MAX_BITS + 1)
    return np.array(index, dtype=np.int64), (rate, pj)


def _precision_table(t: Any) -> tuple[np.ndarray, np.ndarray]:
    rate = np.zeros(MAX_BITS + 1)
    pj = np.full(MAX_BITS + 1, np.inf)
    for p in t.precisions:
        rate[p.bits] = p.macs_per_pe_cycle
        default = float(energy.mac_pj(p.bits, p.bits, t.process_nm))
        pj[p.bits] = default if p.energy_pj_per_mac is None else p.energy_pj_per_mac
    return rate, pj


def resolve_bits(rate_table: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """[H, B] width each requested width runs at: the narrowest supported width >= it in the
    same class (integer <= 8, or float 16/32); 0 where none is supported."""
    widths = np.arange(MAX_BITS + 1)
    req = np.asarray(bits)[None, :, None]
    same_class = (widths[None, None, :] > _INT_MAX) == (req > _INT_MAX)
    ok = (rate_table[:, None, :] > 0) & (widths[None, None, :] >= req) & same_class
    return np.where(ok.any(axis=2), ok.argmax(axis=2), 0)


def pair_rates(cfg: MacArrayConfigs, w_bits: np.ndarray,
               a_bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MACs per PE per cycle and pJ per MAC, [H, B], for operand widths (w_bits, a_bits)."""
    w_bits, a_bits = np.asarray(w_bits), np.asarray(a_bits)
    floating = np.maximum(w_bits, a_bits) > _INT_MAX
    w_eff = np.where(floating, np.maximum(w_bits, a_bits), w_bits)  # floats promote both
    a_eff = np.where(floating, w_eff, a_bits)
    rw, ra = resolve_bits(cfg.rate_table, w_eff), resolve_bits(cfg.rate_table, a_eff)
    rows = np.arange(len(cfg))[:, None]
    fused = cfg.fused[:, None] & ~floating[None, :]
    wide = np.maximum(rw, ra)
    rate = np.where(fused, np.sqrt(cfg.rate_table[rows, rw] * cfg.rate_table[rows, ra]),
                    cfg.rate_table[rows, wide])
    pj = np.where(fused, np.sqrt(cfg.energy_table[rows, rw] * cfg.energy_table[rows, ra]),
                  cfg.energy_table[rows, wide])
    supported = (rw > 0) & (ra > 0)
    return np.where(supported, rate, 0.0), np.where(supported, pj, np.inf)


def precision_rates(cfg: MacArrayConfigs, bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kernel inputs `rates` and `energies`, each [3, H, B] (see kernels.macarray.evaluate):
    GEMM at (w, a), GEMM of two activations at (a, a), and the vector unit at a."""
    w_bits, a_bits = bits[:, 0], bits[:, 1]
    rate_wa, pj_wa = pair_rates(cfg, w_bits, a_bits)
    rate_aa, pj_aa = pair_rates(cfg, a_bits, a_bits)
    vec_ok = (resolve_bits(cfg.rate_table, a_bits) > 0).astype(np.float64)
    node = cfg.process_nm[:, None]
    pj_op = np.where(a_bits[None, :] > _INT_MAX, energy.add_pj(a_bits[None, :], node),
                     energy.int_add_pj(32, node))  # integer vector ops work in 32 bits
    return np.stack([rate_wa, rate_aa, vec_ok]), np.stack([pj_wa, pj_aa, pj_op])
