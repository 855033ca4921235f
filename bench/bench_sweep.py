"""Throughput of `edgesim sweep`. Prints JSON.

Workload: N Latin-hypercube MAC-array configurations around `systolic-16x16` (rows and cols
8..128, dataflow, ifmap/filter SRAM, DRAM bandwidth, clock, int8-only or Bit-Fusion int8/4/2
precisions) x ResNet-50 (zoo, 224x224), on the local process pool.

(a) fixed W8A8: wall time with 2 workers (goal: under 10 s for 10,000 points) and points/s;
(b) the same points, each with its least sensitive weight-bit allocation (data-free proxy
    sensitivity, computed once) within a size budget of half the int8 model's weight bytes,
    i.e. 4 bits per weight on average (w_bits 2, 3, 4, 6, 8; a_bits 8);
(c) per-design allocation under a latency budget (90% of each design's own all-8-bit latency),
    which needs one exact solve per design, on fewer points;
(d) scaling of (a) from 1 to 2 local workers.

`setup_s` is enumeration + model load + sensitivity (once per model); `eval_s` is starting the
pool, evaluating and storing; `wall_s` their sum; `worker_cpu_s` the CPU time the pool's
workers used (their start-up included), which other load on the machine does not inflate.

Usage: python bench/bench_sweep.py [--points 10000] [--latency-points 1000]
"""

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgesim.sweep import LocalExecutor, run_sweep  # noqa: E402
from edgesim.sweep.space import space_from_dict  # noqa: E402

PARAMETERS = {
    "rows": {"range": [8, 128], "num": 5, "scale": "log"},
    "cols": {"range": [8, 128], "num": 5, "scale": "log"},
    "dataflow": ["os", "ws", "is"],
    "ifmap_sram_kib": {"loguniform": [32, 2048]},
    "filter_sram_kib": {"loguniform": [32, 2048]},
    "dram_bandwidth_gbps": {"loguniform": [2, 64]},
    "clock_ghz": {"uniform": [0.2, 1.5]},
    "precisions": [[{"bits": 8, "macs_per_pe_cycle": 1}],
                   [{"bits": 8, "macs_per_pe_cycle": 1}, {"bits": 4, "macs_per_pe_cycle": 2},
                    {"bits": 2, "macs_per_pe_cycle": 4}]],
    "precision_scaling": ["fused"],
}
FIXED = {"bits": {"w_bits": 8, "a_bits": 8}}
SIZE_BUDGET = {"allocate": {"metric": "size", "fraction": 0.5, "a_bits": 8}}
LATENCY_BUDGET = {"allocate": {"metric": "latency", "fraction": 0.9, "a_bits": 8}}


def space(points: int, optimise: dict):  # noqa: ANN201 - edgesim.sweep.space.Space
    doc = {"name": "bench", "base": "systolic-16x16", "parameters": PARAMETERS,
           "search": {"method": "lhs", "samples": points, "seed": 0},
           "models": ["zoo:resnet50"], "optimise": optimise}
    return space_from_dict(doc, "bench_sweep", Path.cwd())


def _cpu_s(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def run(points: int, optimise: dict, workers: int) -> dict:
    """One sweep into a temporary directory; CPU seconds of the pool's workers (reaped when
    the pool closes) tell the work apart from waiting on other processes of the machine."""
    children = _cpu_s(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory() as out:
        with LocalExecutor(workers) as ex:
            s = run_sweep(space(points, optimise), out, executor=ex)
    worker_cpu = _cpu_s(resource.RUSAGE_CHILDREN) - children
    return {"points": s.computed, "workers": workers, "setup_s": round(s.setup_s, 2),
            "eval_s": round(s.eval_s, 2), "wall_s": round(s.setup_s + s.eval_s, 2),
            "points_per_s": round(s.points_per_s), "worker_cpu_s": round(worker_cpu, 2),
            "points_per_worker_cpu_s": round(s.computed / max(worker_cpu, 1e-9)),
            "errors": s.errors}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--points", type=int, default=10_000)
    p.add_argument("--latency-points", type=int, default=1000)
    args = p.parse_args()
    start = time.perf_counter()
    fixed2 = run(args.points, FIXED, 2)
    fixed1 = run(args.points, FIXED, 1)
    report = {
        "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0]},
        "model": "zoo:resnet50 (224x224, 122 layers, 54 weighted)",
        "fixed_w8a8_2_workers": fixed2,
        "size_budget_allocation_2_workers": {
            **run(args.points, SIZE_BUDGET, 2),
            "budget": "weight bytes <= 0.5 x the int8 model's (4 bits per weight on average)"},
        "latency_budget_allocation_2_workers": {
            **run(args.latency_points, LATENCY_BUDGET, 2),
            "budget": "latency <= 0.9 x the design's own all-8-bit latency"},
        "fixed_w8a8_1_worker": fixed1,
        "speedup_1_to_2_workers_eval": round(fixed1["eval_s"] / fixed2["eval_s"], 2),
        "bench_wall_s": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
