"""The sweep hooks of the CPU and MAC-array kinds (`hwmodels.kinds.SweepHooks`): how a variant
is built, how H configurations are costed in one call, and the area proxy.

Area proxies (relative silicon cost, for ranking designs; not square millimetres):
- MAC array: `rows * cols * widest_bits + sram_bytes`, where `widest_bits` is the widest
  supported precision (a PE's datapath, as in Bit Fusion's bit-scalable PEs, is sized by it) and
  `sram_bytes` the ifmap + filter + ofmap SRAM capacity. One unit is one MAC-bit or one byte.
- CPU: `cores * simd_bits * fma_pipes + cache_bytes`: the SIMD MAC datapath bits of every core,
  plus every cache's capacity (private levels once per core, shared levels once).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from compiler.ir import LayerTable
from hwmodels import configs, cpu, macarray
from hwmodels.cost import Cost, check_bits, memory_bytes, shared_once
from hwmodels.cpu_schema import CpuTarget
from hwmodels.kernels import threads

_MACARRAY_FIELDS = frozenset(f.name for f in dataclasses.fields(macarray.MacArrayTarget) if f.init)


def macarray_variant(base: macarray.MacArrayTarget, changes: dict[str, Any],
                     label: str) -> macarray.MacArrayTarget:
    """`base` with `changes`, named `base.name[label]`: what `dataclasses.replace` builds, with
    the same checks (`__post_init__`), in a third of its time (replace's field-by-field copy and
    frozen `__init__` took a third of a 10,000-design batch, bench/bench_sweep.py).

    Raises:
        TypeError: a name in `changes` that is not a field (as `dataclasses.replace`).
        ValueError: a combination the target's cross-field rules refuse.
    """
    fields = _MACARRAY_FIELDS
    if not changes.keys() <= fields:
        raise TypeError(f"not fields of {type(base).__name__}: {sorted(changes.keys() - fields)}")
    state = {name: base.__dict__[name] for name in fields}  # not the cached properties
    state.update(changes, name=f"{base.name}[{label}]")
    target = object.__new__(type(base))
    target.__dict__.update(state)  # a frozen dataclass's __init__ stores into __dict__ too
    target.__post_init__()
    return target


def cpu_variant(base: CpuTarget, changes: dict[str, Any], label: str) -> CpuTarget:
    """`base` with `changes` (`dram_gbps` included, see `cpu.variants`)."""
    return cpu.variants(base, **{name: [value] for name, value in changes.items()})[0]


def macarray_costs(table: LayerTable, bits: np.ndarray,
                   targets: Sequence[macarray.MacArrayTarget]) -> Cost:
    """[H, L, B] costs of H MAC arrays."""
    return macarray.evaluate_configs(table, bits, configs.from_targets(list(targets)),
                                     engine="numba")  # sweeps run compiled, whatever the size


def macarray_picked(table: LayerTable, bits: np.ndarray,
                    targets: Sequence[macarray.MacArrayTarget], cols: np.ndarray) -> Cost:
    """[H, L, 1] costs of H MAC arrays, layer l of design h at bit choice `cols[h, l]` (cols
    [H, L], or [L] for every design alike): `macarray_costs` at those columns, exactly, without
    evaluating the others (`hwmodels.kernels.macarray_batch`)."""
    from hwmodels.kernels import macarray_batch  # numba's own: imports it

    bits = check_bits(bits)
    cfg = configs.from_targets(list(targets))
    rates, energies = configs.precision_rates(cfg, bits)
    cols = np.ascontiguousarray(np.atleast_2d(cols), dtype=np.int64)
    out = np.empty((7, len(cfg), len(table)))
    parallel = out.size >= macarray.PARALLEL_MIN and threads.available() > 1
    run = macarray_batch.evaluate_picked if parallel else macarray_batch.evaluate_picked_serial
    # sweeps always run compiled (batch work): macarray_batch is numba's own
    run(*macarray.layer_arrays(table), bits[:, 0].astype(np.float64),
        bits[:, 1].astype(np.float64), cols, cfg.cfg_i, cfg.cfg_f, rates, energies, out)
    layers = np.arange(len(table))
    w_all, a_all = memory_bytes(table, bits)
    weight, act = (np.ascontiguousarray(np.broadcast_to(b[layers, cols], out.shape[1:]))
                   for b in (shared_once(table, w_all), a_all))  # a shared weight stored once
    # out holds the 7 array fields before weight_bytes, in order (as `hwmodels.prepared.run`)
    return Cost(*out[:, :, :, None], weight_bytes=weight[:, :, None],  # type: ignore[misc]
                act_bytes=act[:, :, None])


def cpu_costs(table: LayerTable, bits: np.ndarray, targets: Sequence[CpuTarget], *,
              threads: int | None = None, runtime: str = "onnxruntime") -> Cost:
    """[H, L, B] costs of H CPUs."""
    return cpu.evaluate_configs(table, bits, targets, threads=threads, runtime=runtime,
                                engine="numba")  # sweeps run compiled, whatever the size


def cpu_picked(table: LayerTable, bits: np.ndarray, targets: Sequence[CpuTarget],
               cols: np.ndarray, *, threads: int | None = None,
               runtime: str = "onnxruntime") -> Cost:
    """[H, L, 1] costs of H CPUs, layer l at bit choice `cols[l]` (cols [L]: every design
    alike), each layer with its own format as `simulate` costs a plan (`cpu.planned_table`):
    designs are grouped by format policy, one kernel call per group."""
    groups: dict[Any, list[int]] = {}
    for h, t in enumerate(targets):
        groups.setdefault(cpu.format_policy(t), []).append(h)
    layers = np.arange(len(table))
    parts: list[tuple[list[int], Cost]] = []
    for hs in groups.values():
        planned = cpu.planned_table(table, bits, cols, targets[hs[0]])
        cost = cpu.evaluate_configs(planned, bits, [targets[h] for h in hs], threads=threads,
                                    runtime=runtime, engine="numba")
        parts.append((hs, cost))
    order = np.argsort(np.concatenate([hs for hs, _ in parts]), kind="stable")
    return Cost(**{name: np.concatenate([getattr(c, name)[:, layers, cols][:, :, None]
                                         for _, c in parts])[order]
                   for name in Cost.__dataclass_fields__})


def macarray_area(t: macarray.MacArrayTarget) -> dict[str, float]:
    """The MAC array's area proxy (module docstring)."""
    mac_bits = t.rows * t.cols * max(p.bits for p in t.precisions)
    sram = (t.ifmap_sram_kib + t.filter_sram_kib + t.ofmap_sram_kib) * 1024.0
    return {"area_proxy": mac_bits + sram, "area_mac_bits": float(mac_bits),
            "area_sram_bytes": sram}


def cpu_area(t: CpuTarget) -> dict[str, float]:
    """The CPU's area proxy (module docstring)."""
    mac_bits = t.cores * t.simd_bits * t.fma_pipes
    cache = sum(c.size_kib * 1024.0 * (1 if c.shared else t.cores) for c in t.caches)
    return {"area_proxy": mac_bits + cache, "area_mac_bits": float(mac_bits),
            "area_sram_bytes": cache}
