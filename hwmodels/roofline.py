"""Roofline targets (GPU / NPU-like): a peak MAC rate per precision, a memory bandwidth and a
fixed overhead per layer. The target kind, its cost model and its sweep hooks in one module.

Per layer l and bit choice (w_bits, a_bits), on the narrowest supported precision p whose
width holds both operands (`bits >= max(w_bits, a_bits)`; 16 and 32 are fp16 and fp32, wider
than every integer width):

    compute_s = macs / (peak_tmacs[p] * 1e12) + ops / (vector_gops * 1e9)
    memory_s  = (weight_bytes + act_bytes) / (memory_bandwidth_gbps * 1e9)
    latency_s = max(compute_s, memory_s) + op_overhead_us * 1e-6

(Williams, Waterman and Patterson, "Roofline: an insightful visual performance model for
multicore architectures", CACM 2009; the overhead term is a kernel launch per layer). Weight
bytes are at w_bits, activations (inputs + outputs) at a_bits (`hwmodels.cost.memory_bytes`):
every layer reads its operands from DRAM and writes its output back. Energy: macs times the
precision's `energy_pj_per_mac` (default Horowitz, ISSCC 2014, scaled to `process_nm`, see
`hwmodels.energy.mac_pj`) plus bytes times `dram_energy_pj_per_byte` (default Horowitz's DRAM
access). A choice no precision holds costs infinite time (the target cannot run it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from compiler.ir import LayerTable
from hwmodels import energy
from hwmodels.cost import (
    BOUND_COMPUTE,
    BOUND_DRAM,
    BOUND_OVERHEAD,
    Cost,
    check_bits,
    check_precisions,
    memory_bytes,
)


@dataclass(frozen=True)
class RooflinePrecision:
    """One operand width the device computes in.

    Attributes:
        bits: 1-8 integers, 16 = fp16, 32 = fp32.
        peak_tmacs: dense peak, tera multiply-accumulates per second.
        energy_pj_per_mac: None = Horowitz scaled to the target's process node.
    """

    bits: Literal[1, 2, 3, 4, 5, 6, 7, 8, 16, 32]
    peak_tmacs: float
    energy_pj_per_mac: float | None = None


@dataclass(frozen=True, kw_only=True)
class RooflineTarget:
    """A device costed by the roofline (module docstring); units in the field names."""

    name: str
    kind: Literal["roofline"] = "roofline"
    description: str
    sources: dict[str, str]
    precisions: tuple[RooflinePrecision, ...]
    vector_gops: float          # elementwise ops per second of the non-MAC layers, x1e9
    memory_bandwidth_gbps: float
    op_overhead_us: float
    clock_ghz: float            # only to report cycles
    process_nm: float
    dram_energy_pj_per_byte: float | None = None

    def __post_init__(self) -> None:
        check_precisions([p.bits for p in self.precisions])


def precision_rates(target: RooflineTarget, bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per bit choice [B]: MACs per second (0: no precision holds it) and pJ per MAC."""
    rate, pj = np.zeros(len(bits)), np.full(len(bits), np.inf)
    for j, (w, a) in enumerate(bits.tolist()):
        fits = [p for p in target.precisions if p.bits >= max(w, a)]
        if fits:
            p = min(fits, key=lambda x: x.bits)
            rate[j] = p.peak_tmacs * 1e12
            width = np.array([p.bits], dtype=np.float64)
            default = float(energy.mac_pj(width, width, target.process_nm)[0])
            pj[j] = default if p.energy_pj_per_mac is None else p.energy_pj_per_mac
    return rate, pj


def _one(table: LayerTable, bits: np.ndarray, target: RooflineTarget) -> dict[str, np.ndarray]:
    """The [L, B] cost fields of one target."""
    rate, mac_pj = precision_rates(target, bits)
    weight, act = memory_bytes(table, bits)
    macs, ops = table.macs[:, None].astype(np.float64), table.ops[:, None].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        compute = np.where(rate > 0, macs / rate, np.inf) + ops / (target.vector_gops * 1e9)
        util = np.where(rate > 0, macs / rate, 0.0)
    memory = (weight + act) / (target.memory_bandwidth_gbps * 1e9)
    overhead = target.op_overhead_us * 1e-6
    latency = np.maximum(compute, memory) + overhead
    bound = np.where(overhead > np.maximum(compute, memory), BOUND_OVERHEAD,
                     np.where(compute >= memory, BOUND_COMPUTE, BOUND_DRAM))
    dram_pj = (energy.dram_pj_per_byte() if target.dram_energy_pj_per_byte is None
               else target.dram_energy_pj_per_byte)
    return {"cycles": latency * target.clock_ghz * 1e9, "latency_s": latency,
            "energy_pj_compute": np.where(np.isfinite(mac_pj), macs * mac_pj, np.inf),
            "energy_pj_onchip": np.zeros_like(latency),
            "energy_pj_dram": (weight + act) * dram_pj, "bound": bound,
            "util": np.where(np.isfinite(latency), util / latency, 0.0),
            "weight_bytes": weight, "act_bytes": act}


def evaluate(table: LayerTable, bits: np.ndarray, target: RooflineTarget) -> Cost:
    """Cost of every layer under every bit choice on one roofline target: [L, B] arrays."""
    return Cost(**_one(table, check_bits(bits), target))


def evaluate_configs(table: LayerTable, bits: np.ndarray,
                     targets: Sequence[RooflineTarget]) -> Cost:
    """[H, L, B] costs of H roofline targets (the sweep hook)."""
    bits = check_bits(bits)
    per = [_one(table, bits, t) for t in targets]
    return Cost(**{name: np.stack([p[name] for p in per]) for name in per[0]})


def variant(base: RooflineTarget, changes: dict[str, Any], label: str) -> RooflineTarget:
    """`base` with `changes`, named `base.name[label]` (the sweep hook)."""
    return dataclasses.replace(base, name=f"{base.name}[{label}]", **changes)


def area(target: RooflineTarget) -> dict[str, float]:
    """Area proxy (the sweep hook): the widest precision's peak MACs per clock times its
    width, in MAC-bits as the MAC array's proxy counts them (`hwmodels.sweep_hooks`)."""
    widest = max(target.precisions, key=lambda p: p.bits)
    mac_bits = widest.peak_tmacs * 1e3 / target.clock_ghz * widest.bits
    return {"area_proxy": mac_bits, "area_mac_bits": mac_bits}
