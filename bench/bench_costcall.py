"""Per-call cost of hwmodels' cost models, before and after issue 17, interleaved. Prints JSON.

One design x one network: `hwmodels.cost.evaluate(table, bits, target)` on zoo resnet18's layer
table (one bit choice) for a MAC array (systolic-16x16) and a CPU (rpi5), CPU microseconds per
call after warm-up (median of rounds), and the prepared MAC-array and CPU calls
(`hwmodels.prepared`, `hwmodels.prepared_cpu`; null on a side that lacks them), the 1-minute
load average, and whether both sides' outputs are bit-identical (`outputs_digest`). 10,000
designs: one `evaluate_configs` call over a 10,000-config MAC-array grid, in layer-evaluations
per second (layers x bit choices x configs / s), glue included.

Each side runs in its own subprocess with its repository first on sys.path; the rounds
alternate between the two so that load on the shared machine hits both alike.

Usage: python bench/bench_costcall.py [--before /work/main] [--rounds 3]
"""

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def _per_call(fn, calls: int) -> float:
    """CPU seconds per call (process time: on a shared machine, wall time per call measures
    the other processes as much as this one)."""
    fn()
    start = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - start) / calls


# the outputs both sides must agree on bit for bit: small zoo models of every layer family
DIGEST_MODELS = {"digits_cnn": {}, "mobilenet_v2": {"resolution": 32, "num_classes": 10},
                 "minilm": {"vocab": 500, "seq": 16, "d": 96, "depth": 2, "hidden": 192},
                 "llama": {"vocab": 500, "seq": 16, "d": 128, "depth": 2, "hidden": 256}}
DIGEST_BITS = ([[8, 8]], [[32, 32], [16, 16], [8, 8], [4, 8], [4, 32], [2, 8], [8, 16]])


def outputs_digest() -> str:
    """sha256 of every Cost field of `hwmodels.cost.evaluate` on DIGEST_MODELS x every
    shipped CPU and MAC-array target x DIGEST_BITS (x every runtime on CPUs), each call made
    twice (cold, then memoised): equal on both sides = bit-identical outputs."""
    import dataclasses
    import hashlib

    import numpy as np

    from compiler.frontend import load
    from edgesim import zoo
    from hwmodels.cost import evaluate
    from hwmodels.target import list_targets, load_target

    digest = hashlib.sha256()
    targets = [load_target(n) for n in list_targets()]
    targets = [t for t in targets if type(t).__name__ in ("CpuTarget", "MacArrayTarget")]
    for model, kw in DIGEST_MODELS.items():
        table = load(zoo.build(model, **kw)).layer_table()
        for target, bits, _ in itertools.product(targets, DIGEST_BITS, range(2)):
            runtimes = ("onnxruntime", "ideal", "ncnn", "xnnpack") \
                if type(target).__name__ == "CpuTarget" else ("onnxruntime",)
            for runtime in runtimes:
                cost = evaluate(table, np.array(bits), target, runtime=runtime)
                for f in dataclasses.fields(cost):
                    digest.update(np.ascontiguousarray(getattr(cost, f.name)).tobytes())
    return digest.hexdigest()


def worker(calls: int) -> dict:
    """Runs with the repository under test first on sys.path."""
    import dataclasses

    import numpy as np

    from compiler.frontend import load
    from edgesim import zoo
    from hwmodels import configs
    from hwmodels.cost import evaluate
    from hwmodels.macarray import evaluate_configs
    from hwmodels.target import load_target

    table = load(zoo.build("resnet18")).layer_table()
    bits = np.array([[8, 8]])
    mac, cpu = load_target("systolic-16x16"), load_target("rpi5")
    out = {"layers": len(table), "load_average_1min": os.getloadavg()[0],
           "outputs_sha256": outputs_digest(),
           "macarray_us": 1e6 * _per_call(lambda: evaluate(table, bits, mac), calls),
           "cpu_us": 1e6 * _per_call(lambda: evaluate(table, bits, cpu), calls // 4)}
    try:
        from hwmodels import prepared
        call = prepared.prepare(table, bits, mac)
        out["macarray_prepared_us"] = 1e6 * _per_call(lambda: prepared.run(call), calls)
    except ImportError:
        out["macarray_prepared_us"] = None
    try:
        from hwmodels import prepared_cpu
        call_cpu = prepared_cpu.prepare(table, bits, cpu)
        out["cpu_prepared_us"] = 1e6 * _per_call(lambda: prepared_cpu.run(call_cpu), calls)
    except ImportError:
        out["cpu_prepared_us"] = None
    grid = configs.grid(mac, rows=[8, 16, 32, 64, 128], cols=[8, 16, 32, 64, 128],
                        dataflow=["os", "ws", "is"], dram_bandwidth_gbps=[4, 8, 16, 32],
                        ifmap_sram_kib=[32, 64, 128, 256, 512], clock_ghz=[0.5, 1.0],
                        double_buffered=[True, False], ofmap_sram_kib=[16, 64, 256, 1024])
    grid = grid[:10_000]
    start = time.perf_counter()
    cfg = configs.from_targets(grid)
    evaluate_configs(table, bits, cfg)
    first = time.perf_counter() - start
    wall = _per_call(lambda: evaluate_configs(table, bits, configs.from_targets(grid)), 2)
    out["designs"] = len(grid)
    out["sweep_evals_per_s"] = len(table) * len(grid) / wall
    out["sweep_first_call_s"] = first
    out["single_macarray_evals_per_s"] = len(table) / (out["macarray_us"] * 1e-6)
    out["single_cpu_evals_per_s"] = len(table) / (out["cpu_us"] * 1e-6)
    del dataclasses
    return out


def run(repo: Path, calls: int) -> dict:
    code = (f"import sys; sys.path.insert(0, {str(repo)!r}); sys.path.insert(1, {str(HERE)!r});"
            f"import importlib.util as u; s = u.spec_from_file_location('b', {__file__!r});"
            f"m = u.module_from_spec(s); s.loader.exec_module(m);"
            f"import json; print(json.dumps(m.worker({calls})))")
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True, cwd=repo, env={"PATH": "/usr/bin:/bin",
                                                    "PYTHONPATH": str(repo)})
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="/work/main", help="repository before the change")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=400)
    args = parser.parse_args()
    sides = {"before": Path(args.before), "after": HERE}
    runs: dict[str, list[dict]] = {k: [] for k in sides}
    for _ in range(args.rounds):
        for side, repo in sides.items():
            runs[side].append(run(repo, args.calls))
    summary = {side: {key: statistics.median(r[key] for r in rs)
                      if isinstance(rs[0][key], float | int) else rs[0][key] for key in rs[0]}
               for side, rs in runs.items()}
    digests = {r["outputs_sha256"] for rs in runs.values() for r in rs}
    summary["outputs_bit_identical"] = len(digests) == 1
    summary["speedup"] = {key: summary["before"][key] / summary["after"][key]
                          for key in ("macarray_us", "cpu_us")}
    after = summary["after"]
    summary["cpu_prepared_vs_before_evaluate"] = (summary["before"]["cpu_us"]
                                                  / after["cpu_prepared_us"])
    print(json.dumps({"rounds": args.rounds, "summary": summary, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
