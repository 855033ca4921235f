"""Edge CPUs (Arm / x86): the target schema and the cost model's Python glue.

The arithmetic lives in `hwmodels.kernels.cpu` (formulas and sources are listed there). This
module resolves a `CpuTarget` into the kernel's arrays -- scalar parameters, cache levels and
one row per kernel path (its MAC rate from the pipes and ISA, and the passes it adds) -- calls
the kernel once, and wraps the result in a `Cost`. It must not import `hwmodels.target`.

Runtimes: `"onnxruntime"` models the kernels onnxruntime 1.31 takes for each emitted format;
`"ideal"` the best kernel the ISA allows (headroom).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from compiler.ir import CATEGORY_GEMM, KIND_CODE, LayerTable
from hwmodels import energy
from hwmodels.cost import Cost, check_bits, memory_bytes
from hwmodels.kernels import cpu as K

RUNTIMES = {"onnxruntime": K.RUNTIME_ORT, "ideal": K.RUNTIME_IDEAL}
ISA_FEATURES = ("neon", "dotprod", "i8mm", "fp16", "sve", "sse4_2", "avx", "avx2", "fma",
                "f16c", "avx512f", "avx512bw", "avx512_vnni", "avxvnni", "amx")
# int8 dot-product instructions and their MACs per instruction relative to sdot / vpdpbusd
# (smmla computes a 2x8 by 8x2 tile: twice sdot's 16 MACs per 128 bits; Arm ARM v8.6)
DOT_FEATURES = {"i8mm": 2.0, "dotprod": 1.0, "avx512_vnni": 1.0, "avxvnni": 1.0}
# k consumed per lane by one int8 instruction: smmla 8, sdot / vpdpbusd 4, widening pairs 2
DOT_K_ALIGN = {"i8mm": 8.0, "dotprod": 4.0, "avx512_vnni": 4.0, "avxvnni": 4.0}
# Horowitz (ISSCC 2014): ~70 pJ to fetch, decode and issue an instruction at 45 nm
INSTRUCTION_PJ_45NM = 70.0
NBITS_BLOCK = 32  # MatMulNBits / blocked DequantizeLinear block size along K
LUT_MAX_M = 8     # T-MAC's table-lookup kernels target GEMV and small batches
_LINEAR_KINDS = (KIND_CODE["linear"], KIND_CODE["matmul"])
_COST_FIELDS = ("cycles", "latency_s", "energy_pj_compute", "energy_pj_onchip",
                "energy_pj_dram", "bound", "util")


@dataclass(frozen=True)
class CacheLevel:
    """One cache level.

    Attributes:
        level: 1, 2, 3 ...
        size_kib: capacity (per core if private, total if shared).
        line_bytes / associativity: geometry.
        bandwidth_bytes_per_cycle: sustained bytes per core clock it serves to the level below,
            per core for a private level and in total for a shared one.
        shared: shared by all cores.
        energy_pj_per_byte: access energy; None = Horowitz SRAM energy for its size, scaled to
            the target's `process_nm` (`hwmodels.energy.sram_pj_per_byte`).
    """

    level: int
    size_kib: float
    line_bytes: int
    associativity: int
    bandwidth_bytes_per_cycle: float
    shared: bool
    energy_pj_per_byte: float | None = None


@dataclass(frozen=True)
class Dram:
    """Main memory: theoretical and sustained (single-thread STREAM-like) bandwidth."""

    technology: str
    bandwidth_gbps: float
    sustained_bandwidth_gbps: float
    energy_pj_per_byte: float | None = None  # None: Horowitz DRAM (`energy.dram_pj_per_byte`)


@dataclass(frozen=True)
class Power:
    """Package / board power with the cores idle and with all cores busy."""

    idle_w: float
    active_w: float


@dataclass(frozen=True, kw_only=True)
class CpuTarget:
    """A multi-core CPU with SIMD units, a cache hierarchy and DRAM.

    Pipe counts are SIMD instructions of full `simd_bits` width issued per cycle per core
    (0.5 where a 128-bit op takes two cycles on a 64-bit datapath): `fma_pipes` for float FMA,
    `int_mul_pipes` for widening integer multiplies (smull/smlal, pmaddubsw/pmaddwd),
    `dot_pipes` for int8 dot products (sdot/smmla, vpdpbusd; 0 without them). `gemm_tile_m`
    x `gemm_tile_n` is the fp32 register tile of the runtime's GEMM micro-kernel and
    `gemm_efficiency` the fraction of the micro-kernel peak a large GEMM sustains. Runtime
    overheads: `op_overhead_us` per elementwise / copy node, `gemm_overhead_us` per conv /
    matmul node, `run_overhead_us` per inference, `thread_overhead_us` per parallel op.
    """

    name: str
    kind: Literal["cpu"] = "cpu"
    description: str
    sources: dict[str, str]
    arch: Literal["arm64", "x86_64"]
    cores: int
    clock_ghz: float
    simd_bits: int
    fma_pipes: float
    int_mul_pipes: float
    dot_pipes: float = field(default=0.0, metadata={"ge": 0})
    isa: tuple[str, ...]
    gemm_tile_m: int
    gemm_tile_n: int
    gemm_efficiency: float
    caches: tuple[CacheLevel, ...]
    dram: Dram
    op_overhead_us: float
    gemm_overhead_us: float
    run_overhead_us: float = field(default=0.0, metadata={"ge": 0})
    thread_overhead_us: float
    power: Power
    process_nm: float
    instruction_energy_pj: float | None = None  # None: Horowitz 70 pJ at 45 nm, node-scaled
    # small LLMs (edgesim.llm): effective DRAM read bandwidth at 1, 2, ... threads (decode is
    # bound by it), the board's RAM variants and the RAM the OS keeps; None = not described
    read_bandwidth_gbps_by_threads: tuple[float, ...] | None = None
    ram_options_gib: tuple[float, ...] | None = None
    ram_reserved_gib: float | None = None

    def __post_init__(self) -> None:
        # cross-field rules; messages name the field as "<field>: <what>"
        unknown = sorted(set(self.isa) - set(ISA_FEATURES))
        if unknown:
            raise ValueError(f"isa: unknown feature {unknown[0]!r} (known: {ISA_FEATURES})")
        if not 1 <= len(self.caches) <= K.MAX_LEVELS:
            raise ValueError(f"caches: need 1..{K.MAX_LEVELS} levels, got {len(self.caches)}")
        if self.gemm_efficiency > 1:
            raise ValueError(f"gemm_efficiency: must be <= 1, got {self.gemm_efficiency}")
        if self.dram.sustained_bandwidth_gbps > self.dram.bandwidth_gbps:
            raise ValueError("dram.sustained_bandwidth_gbps: exceeds dram.bandwidth_gbps")
        if self.power.active_w < self.power.idle_w:
            raise ValueError("power.active_w: below power.idle_w")


def peak_macs_per_cycle(target: CpuTarget) -> dict[str, float]:
    """Per-core MAC rates of the target's kernel families (MACs per cycle per core)."""
    lanes8 = target.simd_bits / 8.0
    dot = max((DOT_FEATURES[f] for f in target.isa if f in DOT_FEATURES), default=0.0)
    # without dot products: smull/smlal (Arm) or pmaddubsw+pmaddwd (x86) give simd_bits/16
    # products per multiply instruction (MLAS QGEMM NEON / AVX2 kernels)
    int8 = dot * target.dot_pipes * lanes8 if dot else target.int_mul_pipes * lanes8 / 2.0
    return {
        "fp32": target.fma_pipes * lanes8 / 4.0,
        "fp16": target.fma_pipes * lanes8 / 2.0 if "fp16" in target.isa else 0.0,
        "int8": int8,
        # T-MAC (Wei et al., EuroSys 2025): one table lookup resolves lanes8 groups of 4
        # one-bit weights and one add accumulates them -> 2 * lanes8 MACs per pipe at 1 bit
        "lut_1bit": target.fma_pipes * lanes8 * 2.0,
    }


def nbits_int8_available(target: CpuTarget) -> bool:
    """MLAS has a MatMulNBits CompInt8 kernel: Arm needs dotprod, x86 AVX2 or better."""
    return "dotprod" in target.isa if target.arch == "arm64" else "avx2" in target.isa


def _int8_k_align(target: CpuTarget) -> float:
    return max((DOT_K_ALIGN[f] for f in target.isa if f in DOT_K_ALIGN), default=2.0)


def _mac_pj(bits: int, node: float) -> float:
    return float(energy.mac_pj(bits, bits, node))


def _path_rows(target: CpuTarget, runtime: int) -> dict[int, dict[str, float]]:
    """Kernel paths: MAC rate, operand widths in the kernel, and the passes each adds."""
    r, node = peak_macs_per_cycle(target), target.process_nm
    kal = _int8_k_align(target)
    ort = runtime == K.RUNTIME_ORT
    # x86 with AVX2 / AVX-512: onnxruntime's NchwcTransformer runs convs as direct NCHWc
    # kernels; elsewhere MLAS expands the input (im2col) into per-thread tiles
    im2col = ort and target.arch == "arm64"
    fp32 = dict(rate=r["fp32"], eb_a=4, eb_w=4, eb_o=4, e_mac=_mac_pj(32, node),
                im2col=im2col, fake_q=ort)
    int8 = dict(rate=r["int8"], eb_a=1, eb_w=1, eb_o=1, k_align=kal, e_mac=_mac_pj(8, node),
                requant=1)
    nbits_rate = r["int8"] if nbits_int8_available(target) else 0.0
    return {
        K.PATH_FP32: fp32,
        K.PATH_FP16: {**fp32, "rate": r["fp16"], "eb_a": 2, "eb_w": 2, "eb_o": 2,
                      "e_mac": _mac_pj(16, node)},
        # Q node -> QLinearConv/MatMul (packs A, requantises) -> DQ node
        K.PATH_QLINEAR: {**int8, "nodes": 3, "q_in": 1, "dq_out": 1, "a_pack": 1,
                         "im2col": 1},  # QLinearConv always expands (no NCHWc int8 conv)
        # MatMulNBits CompInt8: A quantised per block, nibbles unpacked in registers
        K.PATH_NBITS_INT8: {**int8, "rate": nbits_rate, "eb_w": -1, "eb_o": 4, "requant": 0,
                            "a_quant": 1, "w_inline": 1},
        # MatMulNBits CompFp32: dequantise B per block to fp32 (in registers when M = 1)
        K.PATH_NBITS_FP32: {**fp32, "im2col": 0, "fake_q": 0, "w_dq": 4, "w_inline": 1},
        # DequantizeLinear node writes fp32 weights; MLAS packs that non-constant B (r+w)
        K.PATH_DQ_FP32: {**fp32, "nodes": 2, "w_dq": 12},
        K.PATH_INT8: {**int8, "eb_w": -1, "w_inline": 1},
        K.PATH_LUT: dict(rate=r["lut_1bit"], eb_a=1, eb_w=-1, eb_o=4, k_align=4, a_quant=1,
                         e_mac=float(energy.add_pj(16, node))),
        K.PATH_FP32_UNPACK: {**fp32, "eb_w": -1, "w_inline": 1},
    }


_ATTR_COLUMNS = {"rate": K.A_RATE, "eb_a": K.A_EB_A, "eb_w": K.A_EB_W, "eb_o": K.A_EB_O,
                 "k_align": K.A_K_ALIGN, "nodes": K.A_NODES, "e_mac": K.A_E_MAC,
                 "q_in": K.A_Q_IN, "dq_out": K.A_DQ_OUT, "a_quant": K.A_A_QUANT,
                 "w_dq": K.A_W_DQ, "w_inline": K.A_W_INLINE, "im2col": K.A_IM2COL,
                 "fake_q": K.A_FAKE_Q, "a_pack": K.A_A_PACK, "requant": K.A_REQUANT}
_ATTR_DEFAULTS = {"k_align": 1.0, "nodes": 1.0}


def path_table(target: CpuTarget, runtime: int) -> np.ndarray:
    """The kernel's path table, float64 [NPATH, NA]."""
    table = np.zeros((K.NPATH, K.NA))
    for path, attrs in _path_rows(target, runtime).items():
        for name, value in {**_ATTR_DEFAULTS, **attrs}.items():
            table[path, _ATTR_COLUMNS[name]] = float(value)
    return table


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
    us = np.array([target.op_overhead_us, target.gemm_overhead_us, target.run_overhead_us,
                   target.thread_overhead_us])
    p[[K.P_OP_OVH, K.P_GEMM_OVH, K.P_RUN_OVH, K.P_THR_OVH]] = us * 1e-6 * hz
    p[[K.P_NLEVELS, K.P_E_INSTR, K.P_E_OP, K.P_E_DRAM]] = len(target.caches), e_instr, e_op, e_dram
    p[K.P_FP16] = 1.0 if "fp16" in target.isa else 0.0
    return p


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
            table.w_bytes)
    if not len(table):
        return np.zeros((0, K.NL), dtype=np.int64)
    return np.ascontiguousarray(np.stack(cols, axis=1), dtype=np.int64)


def _runtime_code(runtime: str) -> int:
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {sorted(RUNTIMES)}, got {runtime!r}")
    return RUNTIMES[runtime]


def container(w_bits: np.ndarray) -> np.ndarray:
    """onnxruntime's storage width for w-bit weights: MatMulNBits bits 2 / 4 / 8, INT4 / INT8
    initializers; widths without a format (3, 5-7) take the next one."""
    w = np.asarray(w_bits)
    return np.select([w <= 2, w <= 4, w <= 8], [2, 4, 8], w)


def weight_store_bytes(w_bits: np.ndarray, runtime: int) -> np.ndarray:
    """Bytes per stored weight. onnxruntime: the container plus, below 8 bits, an fp32 scale
    and a packed zero point per block (MatMulNBits layout, DESIGN.md); ideal: exactly w bits
    plus an fp16 scale per block."""
    w = np.asarray(w_bits, dtype=np.float64)
    if runtime == K.RUNTIME_IDEAL:
        return w / 8 + np.where(w < 8, 2.0 / NBITS_BLOCK, 0.0)
    c = container(w)
    return np.where(c < 8, c / 8 + (4 + c / 8) / NBITS_BLOCK, c / 8)


def kernel_paths(table: LayerTable, bits: np.ndarray, target: CpuTarget,
                 runtime: int) -> np.ndarray:
    """The kernel path (kernels.cpu.PATH_*) of every GEMM layer and bit choice, int64 [L, B].

    onnxruntime 1.31 (DESIGN.md facts): float weights -> MLAS SGEMM (fp16 where the ISA has
    it); W8A8 -> QLinearConv / QLinearMatMul; sub-8-bit linear -> MatMulNBits, CompInt8 when
    a <= 8 (emitted with accuracy_level 4) and MLAS has the int8 kernel, else CompFp32;
    anything else -> DequantizeLinear + fp32. Ideal: int8 kernels for a <= 8, T-MAC table
    lookup for weight-only GEMV (m <= LUT_MAX_M), else fp32 with weights unpacked in place.
    """
    has_w = (table.w_elems > 0)[:, None]
    a = np.broadcast_to(bits[None, :, 1], (len(table), len(bits)))
    w = np.where(has_w, bits[None, :, 0], a)  # activation x activation: both at a_bits
    float_w = w >= 16
    fp16 = float_w & ((w == 16) | (a == 16)) & ("fp16" in target.isa)
    if runtime == K.RUNTIME_IDEAL:
        small_m = np.broadcast_to((table.m <= LUT_MAX_M)[:, None], w.shape)
        return np.select([fp16, float_w, a <= 8, small_m],
                         [K.PATH_FP16, K.PATH_FP32, K.PATH_INT8, K.PATH_LUT], K.PATH_FP32_UNPACK)
    c = container(w)
    low_linear = has_w & np.isin(table.kind_code, _LINEAR_KINDS)[:, None] & (c < 8)
    int8_ok = nbits_int8_available(target)
    return np.select([fp16, float_w, (c == 8) & (a <= 8), low_linear & (a <= 8) & int8_ok,
                      low_linear],
                     [K.PATH_FP16, K.PATH_FP32, K.PATH_QLINEAR, K.PATH_NBITS_INT8,
                      K.PATH_NBITS_FP32], K.PATH_DQ_FP32)


def fused_activations(table: LayerTable) -> np.ndarray:
    """bool [L]: clamp-like activations (relu, clip, leaky relu: <= 2 ops per element) that
    consume the output of the conv or linear layer just before them. onnxruntime's
    ConvActivationFusion / GemmActivationFusion run them in that kernel's output loop."""
    gemm_kinds = (KIND_CODE["conv"], KIND_CODE["linear"])
    act = (table.kind_code == KIND_CODE["activation"]) & (table.ops <= 2 * table.a_out_elems)
    after_gemm = np.r_[False, np.isin(table.kind_code[:-1], gemm_kinds)]
    feeds = np.r_[False, table.a_out_elems[:-1] == table.a_in_elems[1:]]
    return act & after_gemm & feeds


def layer_choices(table: LayerTable, bits: np.ndarray, target: CpuTarget,
                  runtime: int) -> np.ndarray:
    """int64 [L, B]: kernel path of GEMM layers, PATH_FUSED for fused activations,
    PATH_NONE for the other layers."""
    gemm = (table.category == CATEGORY_GEMM)[:, None]
    fused = fused_activations(table)[:, None]
    paths = kernel_paths(table, bits, target, runtime)
    return np.where(gemm, paths, np.where(fused, K.PATH_FUSED, K.PATH_NONE))


def weights_resident(table: LayerTable, store: np.ndarray, target: CpuTarget) -> np.ndarray:
    """Per bit choice: whether the model's weights stay in the last cache level across runs
    (embedding tables are read by row and do not count)."""
    gemm = table.category == CATEGORY_GEMM
    other = table.w_bytes[~gemm & (table.kind_code != KIND_CODE["gather"])].sum()
    total = table.w_elems[gemm].sum() * store + other
    return total <= K.LLC_RESIDENT * target.caches[-1].size_kib * 1024


def evaluate_configs(table: LayerTable, bits: np.ndarray, targets: Sequence[CpuTarget], *,
                     threads: int | None = None, runtime: str = "onnxruntime") -> Cost:
    """Cost of every layer under every bit choice on H CPU configs, in one kernel call.

    Args:
        table: the model's layers.
        bits: int [B, 2] (w_bits, a_bits); 32 = float32, 16 = float16.
        targets: H CPU configurations (e.g. from `variants`).
        threads: threads per inference (None: each config's cores).
        runtime: "onnxruntime" or "ideal".

    Returns:
        A `Cost` of [H, L, B] arrays.
    """
    bits, code = check_bits(bits), _runtime_code(runtime)
    store = weight_store_bytes(bits[:, 0], code)
    per_bit = np.column_stack([bits.astype(np.float64), store])
    resident = np.stack([weights_resident(table, store, t) for t in targets]).astype(np.float64)
    choice = np.stack([layer_choices(table, bits, t, code) for t in targets])
    params = np.stack([params_row(t, threads) for t in targets])
    caches = np.stack([cache_rows(t) for t in targets])
    paths = np.stack([path_table(t, code) for t in targets])
    out = np.zeros((K.NO, len(targets), len(table), len(bits)))
    K.evaluate(layer_array(table), per_bit, resident, choice.astype(np.int64), params, caches,
               paths, code, out)
    _, act = memory_bytes(table, bits)
    return Cost(**dict(zip(_COST_FIELDS, out)), weight_bytes=out[K.O_WBYTES],
                act_bytes=np.broadcast_to(act, out.shape[1:]))


def evaluate(table: LayerTable, bits: np.ndarray, target: CpuTarget, *,
             threads: int | None = None, runtime: str = "onnxruntime") -> Cost:
    """Cost of every layer under every bit choice on one CPU: [L, B] arrays.

    Args:
        table: the model's layers (`Graph.layer_table()`).
        bits: int [B, 2] (w_bits, a_bits).
        target: the CPU.
        threads: threads per inference (None: all cores).
        runtime: "onnxruntime" (the kernels onnxruntime takes) or "ideal" (ISA headroom).
    """
    cost = evaluate_configs(table, bits, [target], threads=threads, runtime=runtime)
    return Cost(**{f.name: getattr(cost, f.name)[0] for f in dataclasses.fields(cost)})


def power_time_energy_pj(cost: Cost, target: CpuTarget, threads: int | None = None, *,
                         include_idle: bool = True) -> np.ndarray:
    """Top-down energy: power x latency (`cost.latency_s` shape, picojoules).

    Power is the busy cores' share of (active - idle) power, plus idle power unless
    `include_idle` is False (the dynamic part a bottom-up switching model compares against).
    """
    busy = resolve_threads(target, threads) / target.cores
    watts = (target.power.active_w - target.power.idle_w) * busy
    watts += target.power.idle_w if include_idle else 0.0
    return cost.latency_s * watts * 1e12


def variants(target: CpuTarget, **axes: Sequence[Any]) -> list[CpuTarget]:
    """What-if configs: the cartesian product of replaced fields, for `evaluate_configs`.

    Top-level fields are replaced by name (`clock_ghz=[1.5, 2.4]`, `cores=[2, 4]`);
    `dram_gbps` sets the sustained DRAM bandwidth (and raises the theoretical one to match).
    """
    names = list(axes)
    return [_replace(target, dict(zip(names, combo)))
            for combo in itertools.product(*(axes[n] for n in names))]


def _replace(target: CpuTarget, changes: dict[str, Any]) -> CpuTarget:
    suffix = ",".join(f"{k}={v}" for k, v in changes.items())
    changes = dict(changes)
    if "dram_gbps" in changes:
        gbps = float(changes.pop("dram_gbps"))
        changes["dram"] = dataclasses.replace(
            target.dram, sustained_bandwidth_gbps=gbps,
            bandwidth_gbps=max(gbps, target.dram.bandwidth_gbps))
    return dataclasses.replace(target, name=f"{target.name}[{suffix}]", **changes)
