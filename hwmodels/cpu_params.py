"""Edge CPUs: a target's scalar parameters (clock, cores, threads, DRAM roofs, overheads,
energy per instruction / op / byte), its cache table and the layer array, as the cost kernel
(`hwmodels.kernels.cpu`, `kernels.cpu_roofline`, `kernels.threads`) reads them."""

from __future__ import annotations

import numpy as np

from compiler.ir import LayerTable
from hwmodels import energy, ort_int8
from hwmodels.cpu_schema import CpuTarget
from hwmodels.kernels import cpu_layout as K  # the kernel's array layout

# Horowitz (ISSCC 2014): ~70 pJ to fetch, decode and issue an instruction at 45 nm
INSTRUCTION_PJ_45NM = 70.0


def _energy_scalars(target: CpuTarget) -> tuple[float, float, float]:
    """pJ per instruction, per fp32 lane op, per DRAM byte."""
    node = target.process_nm
    instr = target.instruction_energy_pj
    instr = INSTRUCTION_PJ_45NM * float(energy.node_scale(node)) if instr is None else instr
    dram = target.dram.energy_pj_per_byte
    dram = energy.dram_pj_per_byte() if dram is None else dram
    return instr, float(energy.add_pj(32, node)), dram


def params_row(target: CpuTarget, threads: int | None) -> np.ndarray:
    """The kernel's scalar parameters, float64 [NP]."""
    hz = target.clock_ghz * 1e9
    e_instr, e_op, e_dram = _energy_scalars(target)
    p = np.zeros(K.NP)
    p[[K.P_CLOCK_HZ, K.P_CORES, K.P_THREADS]] = hz, target.cores, resolve_threads(target, threads)
    p[[K.P_LANES32, K.P_PIPES]] = target.simd_bits / 32.0, target.fma_pipes
    p[[K.P_TILE_M, K.P_TILE_N, K.P_GEMM_EFF]] = (target.gemm_tile_m, target.gemm_tile_n,
                                                  target.gemm_efficiency)
    p[K.P_DRAM_BPC] = target.dram.sustained_bandwidth_gbps / target.clock_ghz
    all_core = target.dram.all_core_bandwidth_gbps or target.dram.sustained_bandwidth_gbps
    p[K.P_DRAM_ALL_BPC] = all_core / target.clock_ghz
    us = np.array([target.op_overhead_us, target.gemm_overhead_us, target.run_overhead_us,
                   target.thread_overhead_us])
    p[[K.P_OP_OVH, K.P_GEMM_OVH, K.P_RUN_OVH, K.P_THR_OVH]] = us * 1e-6 * hz
    p[[K.P_NLEVELS, K.P_E_INSTR, K.P_E_OP, K.P_E_DRAM]] = len(target.caches), e_instr, e_op, e_dram
    p[K.P_FP16] = 1.0 if "fp16" in target.isa else 0.0
    p[K.P_PAR_EFF] = target.parallel_efficiency
    pair_ns = target.dram.dual_random_read_ns
    if pair_ns is not None:
        p[K.P_DRAM_MISS_BPC] = latency_bound_bpc(pair_ns, target.caches[-1].line_bytes,
                                                 target.clock_ghz)
    return p


def latency_bound_bpc(pair_ns: float, line_bytes: int, clock_ghz: float) -> float:
    """DRAM bytes per core cycle one core reads when no prefetch runs ahead of it: two
    independent cache-line misses in flight (what tinymembench's "dual random read" times,
    `Dram.dual_random_read_ns`), so two lines per `pair_ns` (Little's law)."""
    return 2.0 * line_bytes / (pair_ns * clock_ghz)


def cache_rows(target: CpuTarget) -> np.ndarray:
    """The kernel's cache table, float64 [MAX_LEVELS, NC]."""
    rows = np.zeros((K.MAX_LEVELS, K.NC))
    for j, c in enumerate(target.caches):
        e = c.energy_pj_per_byte
        e = float(energy.sram_pj_per_byte(c.size_kib, target.process_nm)) if e is None else e
        rows[j] = c.size_kib * 1024.0, c.bandwidth_bytes_per_cycle, float(c.shared), e
    return rows


def resolve_threads(target: CpuTarget, threads: int | None) -> int:
    """Threads the model assumes: the target's cores by default, never more than the cores."""
    if threads is None:
        return target.cores
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    return min(int(threads), target.cores)


def layer_array(table: LayerTable) -> np.ndarray:
    """The kernel's layer input, int64 [L, NL] (column order = kernels.cpu.L_*)."""
    cols = (table.kind_code, table.category, table.m, table.n, table.k, table.groups,
            table.macs, table.ops, table.w_elems, table.a_in_elems, table.a_out_elems,
            table.w_bytes,
            np.ones(len(table), np.int64) if table.kernel_rows is None else table.kernel_rows,
            table.exp_evaluations(), _function_nodes(table), ort_int8.dq_copies(table))
    if not len(table):
        return np.zeros((0, K.NL), dtype=np.int64)
    return np.ascontiguousarray(np.stack(cols, axis=1), dtype=np.int64)


def _function_nodes(table: LayerTable) -> np.ndarray:
    """`table.function_nodes`, or one node per layer where the table does not carry them."""
    if table.function_nodes is not None:
        return table.function_nodes
    return np.ones(len(table), np.int64)
