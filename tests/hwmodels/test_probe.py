"""Host probing: parsers on known text, the probed target against /proc and sysfs, YAML I/O."""

from __future__ import annotations

import dataclasses
import datetime
import os
from pathlib import Path

import numpy as np
import pytest

from compiler.atomic import atomic_write
from hwmodels import cpu, probe, probe_timing
from hwmodels.target import load_target

X86_CPUINFO = """processor\t: 0
model name\t: Some CPU
cpu MHz\t\t: 2445.406
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_vnni avx_vnni

processor\t: 1
model name\t: Some CPU
cpu MHz\t\t: 3100.000
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_vnni avx_vnni
"""
ARM_CPUINFO = """processor\t: 0
Features\t: fp asimd aes crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU part\t: 0xd0b
"""


def test_cpuinfo_parsing():
    blocks = probe.read_cpuinfo(X86_CPUINFO)
    assert len(blocks) == 2 and blocks[1]["cpu MHz"] == "3100.000"
    assert probe.clock_ghz(blocks)[0] == pytest.approx(3.1)  # the fastest core
    assert probe.isa_features(blocks) == ("sse4_2", "avx", "avx2", "fma", "avx512f",
                                          "avx512_vnni", "avxvnni")
    # Cortex-A76 (part 0xd0b): asimd, asimddp (dotprod), asimdhp (fp16); no i8mm
    assert probe.isa_features(probe.read_cpuinfo(ARM_CPUINFO)) == ("neon", "dotprod", "fp16")


def test_sysfs_value_parsing():
    assert probe.parse_size_kib("32K") == 32 and probe.parse_size_kib("1M") == 1024
    assert probe.parse_size_kib("2048") == 2  # bytes
    assert probe.cpu_list_size("0-3,8") == 5 and probe.cpu_list_size("0") == 1


@pytest.fixture(scope="module")
def host() -> cpu.CpuTarget:
    return probe.probe_host(seconds=0.1)


def test_probe_reads_this_machine(host):
    assert host.cores == len(os.sched_getaffinity(0))
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith(("flags", "Features")):
            flags |= set(line.split(":", 1)[1].split())
    assert {"avx2": "avx2" in flags, "fma": "fma" in flags} == {
        "avx2": "avx2" in host.isa, "fma": "fma" in host.isa}
    mhz = [float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines()
           if line.startswith("cpu MHz")]
    assert host.clock_ghz >= max(mhz) / 1000 - 1e-3  # never below the reported clock


def test_probe_caches_match_sysfs(host):
    root = Path("/sys/devices/system/cpu/cpu0/cache")
    sysfs = sorted((int((d / "level").read_text()), (d / "size").read_text().strip())
                   for d in root.glob("index*")
                   if (d / "type").read_text().strip() != "Instruction")
    probed = [(c.level, c.size_kib) for c in host.caches]
    assert probed == [(lvl, probe.parse_size_kib(size)) for lvl, size in sysfs]


def test_probe_measurements_are_physical(host):
    flops_per_cycle = 2 * host.simd_bits / 32 * host.fma_pipes
    assert 0 < host.gemm_efficiency <= 1
    assert 0.1 < host.dram.sustained_bandwidth_gbps < 2000
    # the all-core roof is measured wherever there are several cores
    all_core = host.dram.all_core_bandwidth_gbps
    assert (all_core is None) if host.cores == 1 else 0.1 < all_core < 2000
    assert host.dram.bandwidth_gbps >= max(host.dram.sustained_bandwidth_gbps, all_core or 0)
    assert host.op_overhead_us > 0 and host.thread_overhead_us > 0
    assert flops_per_cycle * host.clock_ghz > 1  # GFLOP/s of the peak the efficiency refers to


def numeric_leaves(value: object, path: str = "") -> list[str]:
    """Dotted paths of every int/float field, walked independently of hwmodels.target."""
    if dataclasses.is_dataclass(value):
        return [p for f in dataclasses.fields(value) if f.name != "sources"
                for p in numeric_leaves(getattr(value, f.name), f"{path}.{f.name}".lstrip("."))]
    if isinstance(value, tuple):
        return [p for i, x in enumerate(value) for p in numeric_leaves(x, f"{path}[{i}]")]
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return [path] if is_number else []


def test_probe_cites_every_number(host):
    leaves = numeric_leaves(host)
    assert "caches[1].bandwidth_bytes_per_cycle" in leaves and "dram.bandwidth_gbps" in leaves
    assert [p for p in leaves if p not in host.sources] == []
    today = datetime.date.today().isoformat()
    measured = [s for s in host.sources.values() if "measured by edgesim target probe" in s]
    assert len(measured) > 10 and all(today in s for s in measured)


def test_written_yaml_loads_back_identically(host, tmp_path):
    path = tmp_path / "host.yaml"
    path.write_text("stale: true\n")
    atomic_write(path, probe.target_yaml(host))
    assert load_target(str(path)) == host
    assert [p.name for p in tmp_path.iterdir()] == ["host.yaml"]  # no temp file left behind


def test_probed_target_runs_the_cost_model(host):
    from tests.hwmodels.test_cpu import linear, make_table

    cost = cpu.evaluate(make_table([linear(64, 512, 512)]), np.array([(32, 32), (8, 8)]), host)
    assert np.isfinite(cost.latency_s).all() and (cost.latency_s > 0).all()


def test_fork_join_is_the_split_layernorms_extra_time_per_node(monkeypatch):
    # chains timed in this order: 6 and 60 elementwise nodes (1 us each + 10 us per run),
    # 60 small MatMuls (2 us each), then 6 and 66 LayerNorms on 1 thread (0.5 us each + 8 us
    # per run) and on 4 threads (0.5 + 0.3 us of fork/join each + 9 us per run)
    times = iter([16e-6, 70e-6, 60 * 2e-6, 11e-6, 41e-6, 13.8e-6, 61.8e-6])
    seen = []

    def timed(model, x, threads, seconds, pick=None):
        seen.append((len(model.graph.node), threads, x.shape))
        return next(times)

    monkeypatch.setattr(probe_timing, "_time_session", timed)
    got = probe_timing.measure_ort_overheads(4, 0.01)
    assert got["op_overhead_us"] == pytest.approx(1.0)
    assert got["run_overhead_us"] == pytest.approx(10.0)
    assert got["gemm_overhead_us"] == pytest.approx(2.0)
    assert got["thread_overhead_us"] == pytest.approx(0.3)
    # one LayerNorm row per thread, at 1 and at all 4 threads
    assert seen[3:] == [(6, 1, (1, 4, 16)), (66, 1, (1, 4, 16)), (6, 4, (1, 4, 16)),
                        (66, 4, (1, 4, 16))]


@pytest.mark.ort
def test_onnxruntime_splits_a_one_row_per_thread_layernorm(tmp_path):
    """The fork/join chain's premise, from onnxruntime's own profile: at 2 threads each
    LayerNorm node of the probe's chain runs a parallel section (its thread statistics list
    a block), while a Relu of the same size stays on the calling thread."""
    import json

    import onnxruntime as ort

    x = np.ones((1, 2, 16), np.float32)
    inits = {"s": np.ones(16, np.float32), "b": np.zeros(16, np.float32)}
    for cycle, split in ((probe_timing._FORK_CYCLE, True), ((("Relu", (), {}),), False)):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        opts.enable_profiling = True
        opts.profile_file_prefix = str(tmp_path / cycle[0][0])
        sess = ort.InferenceSession(probe_timing.chain_model(cycle, 6, x.shape, inits)
                                    .SerializeToString(), opts,
                                    providers=["CPUExecutionProvider"])
        sess.run(None, {"t0": x})
        blocks = [e["args"]["thread_scheduling_stats"]["main_thread"]["block_size"]
                  for e in json.loads(open(sess.end_profiling()).read())
                  if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
        assert len(blocks) == 6 and all(bool(b) == split for b in blocks)


def test_concurrent_copies_count_every_threads_bytes(monkeypatch):
    # a clock that advances 1 s per reading: each round's threads span at least 1 s, so the
    # figure is at most the bytes all threads moved, (read + write) x 2 x 8 MiB, per second
    ticks = iter(range(10 ** 6))
    monkeypatch.setattr(probe_timing.time, "perf_counter", lambda: float(next(ticks)))
    gbps = probe_timing.measure_copy_gbps_threads(16 * 2 ** 20, 0.0, 2)
    assert 0 < gbps <= 2 * 16 * 2 ** 20 / 1e9


def test_a_busy_start_is_noted_on_the_all_core_figures():
    # quiet: no note; a neighbour's core's worth of load: the note names the figures
    assert probe.busy_note(0.3, 2) == ""
    note = probe.busy_note(probe.BUSY_LOAD, 2)
    assert note.startswith("1-minute load average 0.8 on 2 cores") and "\n" not in note
    assert all(f in note for f in ("parallel_efficiency", "thread_overhead_us"))
    base = dataclasses.replace(load_target("rpi5"), sources={"parallel_efficiency": "measured"})
    assert probe.busy_of(base) == ""
    marked = dataclasses.replace(base, sources={"parallel_efficiency": f"measured; {note}"})
    assert probe.busy_of(marked) == note
