"""The CPU target schema: cores, SIMD pipes, ISA, register tile, caches, DRAM, overheads,
power. `hwmodels.target` validates YAML into `CpuTarget`; `hwmodels.cpu` costs layers on it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from hwmodels.cost import Memoised
from hwmodels.kernels.cpu_layout import MAX_LEVELS

ISA_FEATURES = ("neon", "dotprod", "i8mm", "fp16", "sve", "sse4_2", "avx", "avx2", "fma",
                "f16c", "avx512f", "avx512bw", "avx512_vnni", "avxvnni", "amx")


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
    """Main memory: theoretical and sustained (single-thread STREAM-like) bandwidth, and what
    all cores draw together (None: the one-thread figure; on the Pis it is no higher)."""

    technology: str
    bandwidth_gbps: float
    sustained_bandwidth_gbps: float
    all_core_bandwidth_gbps: float | None = None
    # time one core takes for two independent random DRAM reads (tinymembench "dual random
    # read"): what a core streams when its prefetcher does not follow the access pattern
    # (`kernels.cpu_roofline.latency_bound_bpc`); None: not modelled
    dual_random_read_ns: float | None = None
    energy_pj_per_byte: float | None = None  # None: Horowitz DRAM (`energy.dram_pj_per_byte`)


@dataclass(frozen=True)
class Power:
    """Package / board power with the cores idle and with all cores busy."""

    idle_w: float
    active_w: float


@dataclass(frozen=True, kw_only=True)
class CpuTarget(Memoised):
    """A multi-core CPU with SIMD units, a cache hierarchy and DRAM.

    Pipe counts are SIMD instructions of full `simd_bits` width issued per cycle per core
    (0.5 where a 128-bit op takes two cycles on a 64-bit datapath): `fma_pipes` for float FMA,
    `int_mul_pipes` for widening integer multiplies (smull/smlal, pmaddubsw/pmaddwd),
    `dot_pipes` for int8 dot products (sdot/smmla, vpdpbusd; 0 without them). `gemm_tile_m`
    x `gemm_tile_n` is the fp32 register tile of the runtime's GEMM micro-kernel and
    `gemm_efficiency` the fraction of the micro-kernel peak a large GEMM sustains. Runtime
    overheads: `op_overhead_us` per elementwise / copy node, `gemm_overhead_us` per conv /
    matmul node, `run_overhead_us` per inference, `thread_overhead_us` per parallel op.
    `parallel_efficiency`: the share of a core each thread beyond the first adds to compute
    (contention for the shared cache and memory; 1 = perfect scaling).
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
    # cycles from a vector FMA to a dependent FMA that accumulates onto its result; sets the
    # rate of kernels with few accumulator chains (`kernels.cpu_ncnn.chain_share`); None:
    # not described (kernels assumed to hide it)
    fma_latency_cycles: float | None = None
    # cycles a 128-bit vector load holds an in-order core's issue, no vector arithmetic
    # issuing beside it (Cortex-A53: 2); sets the rate of ncnn's loops there
    # (`kernels.cpu_ncnn`); None: loads issue beside the arithmetic (out-of-order cores)
    vector_load_cycles: float | None = None
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
    parallel_efficiency: float = 1.0
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
        if not 1 <= len(self.caches) <= MAX_LEVELS:
            raise ValueError(f"caches: need 1..{MAX_LEVELS} levels, got {len(self.caches)}")
        if self.parallel_efficiency > 1:
            raise ValueError(f"parallel_efficiency: must be <= 1, got {self.parallel_efficiency}")
        if self.gemm_efficiency > 1:
            raise ValueError(f"gemm_efficiency: must be <= 1, got {self.gemm_efficiency}")
        if self.dram.sustained_bandwidth_gbps > self.dram.bandwidth_gbps:
            raise ValueError("dram.sustained_bandwidth_gbps: exceeds dram.bandwidth_gbps")
        if self.power.active_w < self.power.idle_w:
            raise ValueError("power.active_w: below power.idle_w")
