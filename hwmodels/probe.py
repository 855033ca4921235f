"""Probe this machine into a `CpuTarget`, and write targets as YAML that `load_target` reads.

What is read: cores (scheduler affinity), clock and ISA flags (/proc/cpuinfo, cpufreq), caches
(/sys/devices/system/cpu/cpu0/cache/index*). What is measured: peak fp32 GFLOP/s of a cache-
resident onnxruntime MatMul (MLAS SGEMM, the kernel the model prices) on 1 thread and on all
threads (their ratio gives `parallel_efficiency`), sustained memory bandwidth (large
numpy copy, bytes read + written per second), L2/L3 bandwidth (copies that fit the level), and
onnxruntime's per-node and fork/join overheads (chains of tiny ops). What is derived from the
ISA: pipe counts for int8 (no portable int8 benchmark in numpy) and the GEMM register tile. The
rest is `assumed`, and the target's `sources` say which is which.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from pathlib import Path
from typing import Any

import yaml

from compiler.formats import host_arch as host_arch  # re-exported: host_check asks the probe
from hwmodels.cpu import CacheLevel, CpuTarget, Dram, Power
from hwmodels.probe_timing import (
    measure_copy_gbps,
    measure_copy_gbps_threads,
    measure_gflops,
    measure_ort_overheads,
)

CPU_SYSFS = Path("/sys/devices/system/cpu")
# Linux /proc/cpuinfo flag -> edgesim ISA feature (x86 "flags", Arm "Features")
FLAG_FEATURES = {"sse4_2": "sse4_2", "avx": "avx", "avx2": "avx2", "fma": "fma", "f16c": "f16c",
                 "avx512f": "avx512f", "avx512bw": "avx512bw", "avx512_vnni": "avx512_vnni",
                 "avx_vnni": "avxvnni", "amx_tile": "amx", "asimd": "neon",
                 "asimddp": "dotprod", "i8mm": "i8mm", "asimdhp": "fp16", "sve": "sve"}
# MLAS fp32 register tiles (rows x columns): SgemmKernelFma3 (6 x 16), the AVX-512F kernel
# (12 x 32), SgemmKernelNeon (4 x 16)
GEMM_TILES = {("x86_64", 256): (6, 16), ("x86_64", 512): (12, 32), ("arm64", 128): (4, 16)}
# assumed: other programs' 1-minute load average at the start of a probe above which an
# all-core measurement cannot have every core to itself (most of a core's worth of work)
BUSY_LOAD = 0.75
ALL_CORE_FIELDS = ("parallel_efficiency", "thread_overhead_us", "dram.all_core_bandwidth_gbps")
BUSY_PREFIX = "1-minute load average"
BOOST_GEMM_EFFICIENCY = 0.9  # assumed share of peak a cache-resident MLAS SGEMM reaches


def read_cpuinfo(text: str | None = None) -> list[dict[str, str]]:
    """/proc/cpuinfo as one dict per processor block."""
    text = Path("/proc/cpuinfo").read_text() if text is None else text
    blocks = []
    for chunk in text.strip().split("\n\n"):
        pairs = (line.split(":", 1) for line in chunk.splitlines() if ":" in line)
        blocks.append({k.strip(): v.strip() for k, v in pairs})
    return blocks


def isa_features(cpuinfo: list[dict[str, str]]) -> tuple[str, ...]:
    """edgesim ISA features named by the first processor's flags, in `FLAG_FEATURES` order."""
    first = cpuinfo[0] if cpuinfo else {}
    flags = set((first.get("flags") or first.get("Features") or "").split())
    return tuple(dict.fromkeys(f for flag, f in FLAG_FEATURES.items() if flag in flags))


def clock_ghz(cpuinfo: list[dict[str, str]]) -> tuple[float, str]:
    """Core clock and where it came from: /proc/cpuinfo "cpu MHz", else cpufreq's maximum."""
    mhz = [float(b["cpu MHz"]) for b in cpuinfo if "cpu MHz" in b]
    if mhz:
        return max(mhz) / 1000.0, "/proc/cpuinfo cpu MHz"
    freq = CPU_SYSFS / "cpu0" / "cpufreq" / "cpuinfo_max_freq"
    if freq.exists():
        return int(freq.read_text()) / 1e6, "cpufreq cpuinfo_max_freq"
    return 2.0, "assumed: no clock in /proc/cpuinfo or cpufreq"


def parse_size_kib(text: str) -> float:
    """sysfs cache size ("32K", "1M", "1024") in KiB."""
    units = {"K": 1.0, "M": 1024.0, "G": 1024.0 ** 2}
    text = text.strip()
    return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text) / 1024.0


def cpu_list_size(text: str) -> int:
    """Number of CPUs in a sysfs list such as "0-3,8"."""
    total = 0
    for part in text.strip().split(","):
        lo, _, hi = part.partition("-")
        total += int(hi or lo) - int(lo) + 1
    return total


def read_caches(root: Path = CPU_SYSFS / "cpu0" / "cache") -> list[dict[str, Any]]:
    """Data and unified caches of cpu0, innermost first, from sysfs."""
    levels = []
    for d in sorted(root.glob("index*")):
        if (d / "type").read_text().strip() == "Instruction":
            continue
        levels.append({
            "level": int((d / "level").read_text()),
            "size_kib": parse_size_kib((d / "size").read_text()),
            "line_bytes": int((d / "coherency_line_size").read_text()),
            "associativity": max(1, int((d / "ways_of_associativity").read_text())),
            "shared": cpu_list_size((d / "shared_cpu_list").read_text()) > 1,
        })
    return sorted(levels, key=lambda c: c["level"])


def _simd_bits(arch: str, isa: tuple[str, ...]) -> int:
    if arch == "arm64":
        return 128
    return 512 if "avx512f" in isa else 256 if "avx" in isa else 128


def _matmul_size(l2_kib: float) -> int:
    """Largest n (multiple of 32, >= 64) with three n x n fp32 matrices in half the L2."""
    n = int((l2_kib * 1024 / 2 / 12) ** 0.5) // 32 * 32
    return max(64, n)


def _level_bandwidth(c: dict[str, Any], simd_bits: int, ghz: float, seconds: float,
                     measured: str) -> tuple[float, str]:
    """Bytes per cycle of a cache level: L1 from the ISA (two vector loads per cycle), outer
    levels from a copy that fits half of the level."""
    if c["level"] == 1:
        return 2 * simd_bits / 8, "derived from ISA: two full-width vector loads per cycle"
    gbps = measure_copy_gbps(int(c["size_kib"] * 1024 / 4), seconds)
    return gbps / ghz, f"{measured}: single-thread numpy copy within the level"


def _isa_pipes(arch: str, isa: tuple[str, ...]) -> tuple[float, float, float, str]:
    """(fma, int_mul, dot) pipes per core from the ISA, and the sentence that says so."""
    if arch == "arm64":
        dot = 2.0 if "dotprod" in isa else 0.0
        return 2.0, 1.0, dot, "derived from ISA: 2 NEON pipes (Cortex-A76-class core)"
    dot = 2.0 if ("avx512_vnni" in isa or "avxvnni" in isa) else 0.0
    return 2.0, 2.0, dot, ("derived from ISA: 2 FMA and 2 vector-multiply ports on AVX2/FMA "
                           "cores (Intel Haswell and later, AMD Zen 2 and later)")


def _probe_caches(ghz: float, simd_bits: int, seconds: float, measured: str
                  ) -> tuple[tuple[CacheLevel, ...], dict[str, str]]:
    levels, sources = [], {}
    for j, c in enumerate(read_caches()):
        bpc, how = _level_bandwidth(c, simd_bits, ghz, seconds, measured)
        levels.append(CacheLevel(bandwidth_bytes_per_cycle=bpc, **c))
        for key in ("level", "size_kib", "line_bytes", "associativity", "shared"):
            sources[f"caches[{j}].{key}"] = f"{measured}: /sys/devices/system/cpu/cpu0/cache"
        sources[f"caches[{j}].bandwidth_bytes_per_cycle"] = how
    return tuple(levels), sources


def _probe_compute(arch: str, isa: tuple[str, ...], ghz: float, cores: int, l2_kib: float,
                   seconds: float, measured: str) -> tuple[dict[str, Any], dict[str, str], str]:
    """Pipes, tile, clock and GEMM efficiency; their sources; a note of the GFLOP/s measured.

    A boosting core runs above the clock /proc/cpuinfo reports: when the measured matmul needs
    more than the nominal clock at the ISA's flops per cycle, the clock is raised to the
    effective one at an assumed BOOST_GEMM_EFFICIENCY."""
    simd = _simd_bits(arch, isa)
    fma, int_mul, dot, how = _isa_pipes(arch, isa)
    n = _matmul_size(l2_kib)
    g1, gn = measure_gflops(1, n, seconds), measure_gflops(cores, 2 * n, seconds)
    flops_per_cycle = 2.0 * simd / 32 * fma
    clock = max(ghz, g1 / (flops_per_cycle * BOOST_GEMM_EFFICIENCY))
    tile_m, tile_n = GEMM_TILES.get((arch, simd), (4, 16))
    fields = dict(clock_ghz=round(clock, 4), simd_bits=simd, fma_pipes=fma,
                  int_mul_pipes=int_mul, dot_pipes=dot, gemm_tile_m=tile_m, gemm_tile_n=tile_n,
                  gemm_efficiency=round(min(1.0, g1 / (flops_per_cycle * clock)), 3))
    gemm = f"onnxruntime MatMul {n}x{n} fp32, 1 thread: {g1:.1f} GFLOP/s"
    sources = {"simd_bits": f"{measured}: widest vector ISA in /proc/cpuinfo flags",
               "fma_pipes": how, "int_mul_pipes": how,
               "dot_pipes": f"{how}; int8 throughput derived from the ISA, not measured",
               "gemm_tile_m": "MLAS fp32 register tile for this ISA (SgemmKernelFma3 6x16, "
                              "AVX-512F 12x32, NEON 4x16)",
               "gemm_tile_n": "MLAS fp32 register tile for this ISA",
               "gemm_efficiency": f"{measured}: {gemm} at the clock below",
               "clock_ghz": f"{measured}: /proc/cpuinfo reports {ghz:.3f} GHz"
                            + (f"; effective boost clock from {gemm} at {flops_per_cycle:.0f} "
                               f"flops/cycle, assumed {BOOST_GEMM_EFFICIENCY:.0%} efficient"
                               if clock > ghz else "")}
    note = f"fp32 matmul {g1:.1f} GFLOP/s on 1 thread, {gn:.1f} on {cores}"
    fields["parallel_efficiency"], sources["parallel_efficiency"] = _parallel_efficiency(
        g1, gn, cores, measured)
    return fields, sources, note


def _parallel_efficiency(g1: float, gn: float, cores: int, measured: str) -> tuple[float, str]:
    """The share of a core each thread beyond the first adds: (gn / g1 - 1) / (cores - 1)."""
    if cores <= 1:
        return 1.0, "assumed: one core, nothing to share"
    eff = min(1.0, max(0.05, (gn / g1 - 1.0) / (cores - 1)))
    return round(eff, 3), (f"{measured}: fp32 matmul {g1:.1f} GFLOP/s on 1 thread vs "
                           f"{gn:.1f} on {cores}, (ratio - 1) / (cores - 1)")


_OVERHEAD_HOW = {
    "op_overhead_us": "onnxruntime chains of 6 and 60 elementwise / norm / softmax nodes on "
                      "[1,4,16], 1 thread (CPU time)",
    "run_overhead_us": "onnxruntime chains of 6 and 60 elementwise / norm / softmax nodes on "
                       "[1,4,16], 1 thread (CPU time)",
    "gemm_overhead_us": "onnxruntime chain of 60 MatMuls [1,4,16]x[16,16], 1 thread (CPU time)",
    "thread_overhead_us": "onnxruntime chains of 6 and 66 LayerNormalization nodes on "
                          "[1,cores,16] (split over every thread), all vs 1 thread, fastest "
                          "runs"}
_OVERHEAD_ASSUMED = {"op_overhead_us": 1.0, "gemm_overhead_us": 2.0, "run_overhead_us": 10.0,
                     "thread_overhead_us": 10.0}


def _probe_runtime(cores: int, seconds: float, measured: str
                   ) -> tuple[dict[str, Any], dict[str, str]]:
    got = measure_ort_overheads(cores, seconds)
    if got is None:
        why = "assumed: onnxruntime not importable when probing"
        return dict(_OVERHEAD_ASSUMED), {k: why for k in _OVERHEAD_ASSUMED}
    return ({k: round(v, 3) for k, v in got.items()},
            {k: f"{measured}: {how}" for k, how in _OVERHEAD_HOW.items()})


def _probe_dram(llc_kib: float, seconds: float, measured: str,
                cores: int = 1) -> tuple[Dram, dict[str, str]]:
    """Sustained DRAM bandwidth on one thread and, with several cores, on all of them at once
    (the shared roof the cost model's threads contend for, `kernels.cpu_roofline`)."""
    nbytes = int(max(256 * 2 ** 20, 8 * llc_kib * 1024))
    gbps = round(measure_copy_gbps(nbytes, seconds), 3)
    sources = {"dram.sustained_bandwidth_gbps": f"{measured}: numpy copy of {nbytes >> 20} MiB, "
                                                "(bytes read + bytes written) / time, 1 thread",
               "dram.bandwidth_gbps": "assumed: theoretical bandwidth is not probed; set to the "
                                      "higher measured bandwidth"}
    all_core = None
    if cores > 1:
        all_core = round(measure_copy_gbps_threads(nbytes, seconds, cores), 3)
        sources["dram.all_core_bandwidth_gbps"] = (
            f"{measured}: {cores} numpy copies of {nbytes // cores >> 20} MiB at once, "
            "(bytes read + bytes written) / time")
    return Dram(technology="unknown", bandwidth_gbps=max(gbps, all_core or 0.0),
                sustained_bandwidth_gbps=gbps, all_core_bandwidth_gbps=all_core), sources


def busy_note(load: float, cores: int) -> str:
    """"" on a quiet machine; else the note the all-core figures' sources carry (and the CLI
    prints): measured while other programs held cores, they read low."""
    if load < BUSY_LOAD:
        return ""
    return (f"{BUSY_PREFIX} {load:.1f} on {cores} cores when the probe started: other "
            f"programs held cores, so the all-core figures ({', '.join(ALL_CORE_FIELDS)}) "
            "read low; probe again on an idle machine")


def busy_of(target: CpuTarget) -> str:
    """The `busy_note` a probed target's sources carry ("" when it was probed quiet)."""
    src = target.sources.get(ALL_CORE_FIELDS[0], "")
    return src[src.find(BUSY_PREFIX):] if BUSY_PREFIX in src else ""


def probe_host(*, seconds: float = 0.3) -> CpuTarget:
    """Measure this machine as a `CpuTarget` named "host".

    Args:
        seconds: time budget of each timed measurement (a few are taken).

    Returns:
        The target; its `sources` say what was read, measured, derived or assumed.
    """
    measured = f"measured by edgesim target probe on {datetime.date.today().isoformat()}"
    info = read_cpuinfo()
    cores = len(os.sched_getaffinity(0))
    busy = busy_note(os.getloadavg()[0], cores)
    nominal_ghz, clock_src = clock_ghz(info)
    isa = isa_features(info)
    arch = host_arch()
    l2 = [c for c in read_caches() if c["level"] <= 2][-1]["size_kib"]
    compute, compute_src, note = _probe_compute(arch, isa, nominal_ghz, cores, l2, seconds,
                                                measured)
    ghz = compute["clock_ghz"]
    caches, cache_src = _probe_caches(ghz, compute["simd_bits"], seconds, measured)
    runtime, runtime_src = _probe_runtime(cores, seconds, measured)
    dram, dram_src = _probe_dram(caches[-1].size_kib, seconds, measured, cores)
    model = (info[0].get("model name") or info[0].get("CPU part") or arch) if info else arch
    sources = {"cores": f"{measured}: os.sched_getaffinity", "isa": f"{measured}: /proc/cpuinfo",
               "power.idle_w": "assumed: 1 W per core idle", "power.active_w":
               "assumed: 5 W per busy core", "process_nm": "assumed: a 7 nm-class process",
               **compute_src, **cache_src, **runtime_src, **dram_src}
    sources["clock_ghz"] = sources["clock_ghz"].replace("/proc/cpuinfo", clock_src, 1)
    for key in ALL_CORE_FIELDS if busy else ():
        if key in sources:
            sources[key] += f"; {busy}"
    return CpuTarget(
        name="host", description=f"{model} ({cores} cores available); {note}",
        sources=sources, arch=arch, cores=cores, isa=isa, caches=caches, dram=dram,
        power=Power(idle_w=1.0 * cores, active_w=5.0 * cores), process_nm=7.0,
        **compute, **runtime)


def target_to_dict(target: Any) -> Any:
    """A target dataclass as plain YAML data: tuples become lists, unset optionals vanish."""
    if dataclasses.is_dataclass(target):
        return {f.name: target_to_dict(getattr(target, f.name))
                for f in dataclasses.fields(target) if getattr(target, f.name) is not None}
    if isinstance(target, (tuple, list)):
        return [target_to_dict(x) for x in target]
    if isinstance(target, dict):
        return {k: target_to_dict(v) for k, v in target.items()}
    return target


def target_yaml(target: Any) -> str:
    """`target` as YAML text that `load_target` reads back (the caller writes it atomically,
    e.g. `edgesim.api.probe_target`)."""
    return yaml.safe_dump(target_to_dict(target), sort_keys=False, width=100)
