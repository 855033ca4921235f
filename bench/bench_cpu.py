"""CPU cost model benchmarks; prints JSON.

(a) throughput: layer evaluations (layer x bit choice x config) per second of the analytical
    CPU model after a warm call -- one target (one thread) and a what-if sweep (numba threads).
(d) host fidelity: the probed host target's predicted latency vs onnxruntime's measured median
    (>= 20 runs, 1 and all threads) on the zoo models in fp32; per-model error and MAPE. The
    host target comes from `probe_host()` alone -- nothing is fitted to these comparisons.

Usage: python bench/bench_cpu.py [--skip-fidelity] [--models a,b] [--runs 20] [--host host.yaml]

On a shared machine, wall times include time slices lost to other processes; for 1 thread the
JSON also reports the calling thread's CPU time, which such load does not inflate.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compiler.ir import KIND_CATEGORY, KIND_CODE, LayerTable  # noqa: E402
from hwmodels import cpu  # noqa: E402
from hwmodels.target import load_target  # noqa: E402

TARGETS = Path(__file__).resolve().parents[1] / "targets"
BITS = np.array([(32, 32), (16, 16), (8, 8), (4, 32), (4, 8), (2, 8), (3, 32), (6, 8)])
ZOO_MODELS = ("digits_cnn", "digits_transformer", "mobilenet_v2", "resnet18", "resnet50",
              "vit_tiny", "minilm", "llama")


def synthetic_table(n_layers: int, seed: int = 0) -> LayerTable:
    """A mix of convs, linears and streaming layers with random shapes."""
    rng = np.random.default_rng(seed)
    kinds = rng.choice(["conv", "linear", "matmul", "eltwise", "softmax", "norm"], n_layers)
    m = rng.integers(1, 4096, n_layers)
    n = rng.integers(1, 1024, n_layers)
    k = rng.integers(1, 2048, n_layers)
    gemm = np.isin(kinds, ["conv", "linear", "matmul"])
    m, n, k = (np.where(gemm, x, 0) for x in (m, n, k))
    g = np.ones(n_layers, dtype=np.int64)
    wel = np.where(np.isin(kinds, ["conv", "linear"]), n * k, 0)
    ain = np.where(gemm, m * k, rng.integers(1, 1 << 20, n_layers))
    aout = np.where(gemm, m * n, ain)
    return LayerTable(
        tuple(f"l{i}" for i in range(n_layers)),
        np.array([KIND_CODE[x] for x in kinds], np.int32),
        np.array([KIND_CATEGORY[x] for x in kinds], np.int32),
        m, n, k, g, m * n * k, np.where(gemm, 0, aout), wel, ain, aout, ain * 4, aout * 4,
        wel * 4, np.ones(n_layers), np.ones(n_layers))


def _rate(fn, evals: int, seconds: float) -> float:
    fn()  # warm: numba compile / cache load
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return evals * calls / (time.perf_counter() - start)


def throughput(seconds: float) -> dict:
    """(a): evaluations per second for one target and for a 64-config sweep."""
    rpi5 = load_target(str(TARGETS / "rpi5.yaml"))
    table = synthetic_table(2000)
    configs = cpu.variants(rpi5, clock_ghz=[1.5, 1.8, 2.1, 2.4], cores=[1, 2, 3, 4],
                           dram_gbps=[4.0, 6.0, 9.5, 17.0])
    one = _rate(lambda: cpu.evaluate(table, BITS, rpi5), len(table) * len(BITS), seconds)
    sweep = _rate(lambda: cpu.evaluate_configs(table, BITS, configs),
                  len(table) * len(BITS) * len(configs), seconds)
    return {"layers": len(table), "bit_choices": len(BITS), "configs": len(configs),
            "evals_per_s_one_target": round(one), "evals_per_s_sweep": round(sweep),
            "goal_evals_per_s": 1_000_000}


def _feeds(session: object, rng: np.random.Generator) -> dict:
    feeds = {}
    for inp in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in inp.shape]
        if "int64" in inp.type:
            feeds[inp.name] = (np.ones(shape, np.int64) if "mask" in inp.name
                               else rng.integers(0, 100, shape).astype(np.int64))
        else:
            feeds[inp.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def measure_ort(model: object, threads: int, runs: int) -> tuple[float, float]:
    """Median wall latency (s) of `runs` onnxruntime runs after 3 warm-ups, and the median CPU
    time of the calling thread (on 1 thread the latency a busy machine would not inflate)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    feeds = _feeds(sess, np.random.default_rng(0))
    for _ in range(3):
        sess.run(None, feeds)
    wall, cpu_time = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.thread_time()
        sess.run(None, feeds)
        wall.append(time.perf_counter() - t0)
        cpu_time.append(time.thread_time() - c0)
    return statistics.median(wall), statistics.median(cpu_time)


def _host(path: str | None) -> cpu.CpuTarget:
    if path:
        return load_target(path)
    from hwmodels.probe import probe_host

    return probe_host()


def _point(name: str, table: LayerTable, proto: object, host: cpu.CpuTarget, threads: int,
           runs: int) -> dict:
    wall, cpu_time = measure_ort(proto, threads, runs)
    predicted = float(cpu.evaluate(table, np.array([(32, 32)]), host,
                                   threads=threads).latency_s.sum())
    row = {"model": name, "threads": threads, "layers": len(table),
           "measured_ms": round(wall * 1e3, 3), "predicted_ms": round(predicted * 1e3, 3),
           "error_pct": round(100 * (predicted - wall) / wall, 1)}
    if threads == 1:
        row["measured_cpu_ms"] = round(cpu_time * 1e3, 3)
        row["error_vs_cpu_pct"] = round(100 * (predicted - cpu_time) / cpu_time, 1)
    return row


def fidelity(models: list[str], runs: int, host_yaml: str | None) -> dict:
    """(d): predicted vs measured fp32 latency on the probed host."""
    from compiler.frontend.load import load
    from edgesim import zoo

    host = _host(host_yaml)
    load_before = os.getloadavg()[0]
    rows = []
    for name in models:
        proto = zoo.build(name)
        table = load(proto).layer_table()
        rows += [_point(name, table, proto, host, t, runs) for t in sorted({1, host.cores})]
    wall = [abs(r["error_pct"]) for r in rows]
    one = [abs(r["error_vs_cpu_pct"]) for r in rows if "error_vs_cpu_pct" in r]
    return {"host": host.description, "runs_per_point": runs,
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "points": rows, "mape_pct": round(float(np.mean(wall)), 1),
            "mape_1_thread_cpu_time_pct": round(float(np.mean(one)), 1), "goal_mape_pct": 20.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-fidelity", action="store_true")
    parser.add_argument("--models", default=",".join(ZOO_MODELS))
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--host", help="a probed target YAML (default: probe now)")
    args = parser.parse_args()
    result = {"throughput": throughput(args.seconds)}
    if not args.skip_fidelity:
        result["fidelity"] = fidelity(args.models.split(","), max(20, args.runs), args.host)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
