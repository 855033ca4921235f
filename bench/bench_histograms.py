"""Calibration statistics' cost on real activations, per tree, interleaved. Prints JSON.

Per model (bench_compile's case and its first `--samples` calibration samples, one sample per
forward pass in onnxruntime as compile's HAWQ analysis runs them): the CPU seconds (this
thread's) of `FloatPassRecorder` over every sample (compile's observer: histograms, merges,
output copies), of `range_stats` alone over the calibration tensors, and of `np.max` over
the same arrays (a memory-bound floor: one read of the data), with the bytes read and the
throughput of each in GB/s. Each tree runs in its own process (`--baseline DIR` alternates
with this checkout round by round); the forward passes are not timed.

    PYTHONPATH=. python bench/bench_histograms.py [--models resnet18,ppocr] [--samples 32]
        [--rounds 3] [--baseline /tmp/base14] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def measure(name: str, cache: str | None, samples: int) -> dict:
    """One tree's figures for one model (run in a child process with that tree first)."""
    import compiler  # the tree on PYTHONPATH; its own bench helpers prepare the model
    tree = Path(compiler.__file__).resolve().parents[1]
    sys.path[:0] = [str(tree), str(tree / "bench")]
    from bench_compile import prepare
    from bench_hawq_backward import _flags
    from bench_real_models import cache_dir

    try:
        from compiler.activation_quant import range_stats
    except ImportError:  # trees before the activation quantiser's own module
        from compiler.quantizers import range_stats  # type: ignore[attr-defined,no-redef]
    from compiler.passes.calibrate import calibration_tensors
    from edgesim import calibration as cal
    from edgesim.float_pass import FloatPassRecorder, fit_batches, onnxruntime_env
    from edgesim.loading import load_graph

    with tempfile.TemporaryDirectory() as d:
        case = prepare(name, Path(d), cache_dir(cache))
        kw = _flags(case.args)
        g = load_graph(str(case.src), kw.pop("input_shapes"), **kw)
        data = cal.read(g, str(case.npz))
    forward = onnxruntime_env(g)
    assert forward is not None
    names = calibration_tensors(g)
    recorder = FloatPassRecorder(g, fit=fit_batches(g, data))
    range_stats(np.ones(8, np.float32))  # numba's cached kernel loaded before the timings
    took = {"recorder": 0.0, "range_stats": 0.0, "max": 0.0}
    nbytes = 0
    for i in range(min(samples, data.count)):
        feeds = {k: cal.model_layout(g, k, v[i:i + 1]) for k, v in data.samples.items()}
        env = forward(feeds)
        start = time.thread_time()
        recorder(env)
        took["recorder"] += time.thread_time() - start
        arrays = [env[t] for t in names]
        for label, fn in (("range_stats", range_stats), ("max", np.max)):
            start = time.thread_time()
            for a in arrays:
                fn(a)
            took[label] += time.thread_time() - start
        nbytes += sum(a.nbytes for a in arrays)
    return {"tree": str(tree),
            "cpu_s": {k: round(v, 4) for k, v in took.items()}, "gb": round(nbytes / 1e9, 3),
            "tensors": len(names),
            "gb_per_s": {k: round(nbytes / 1e9 / v, 2) for k, v in took.items() if v}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet18,ppocr")
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--baseline", help="an older edgesim tree to run interleaved (PYTHONPATH)")
    p.add_argument("--cache", help="folder for downloaded packages")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.cache, args.samples)))
        return
    trees = {"this": ROOT, **({"baseline": Path(args.baseline)} if args.baseline else {})}
    load = os.getloadavg()
    runs: dict[str, dict[str, list[dict]]] = {m: {t: [] for t in trees} for m in
                                             args.models.split(",")}
    for r in range(args.rounds):
        for model in runs:
            order = list(trees) if r % 2 == 0 else list(trees)[::-1]
            for tree in order:
                env = {**os.environ, "PYTHONPATH": str(trees[tree]),
                       "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
                cmd = [sys.executable, __file__, "--child", model, "--samples",
                       str(args.samples), *(["--cache", args.cache] if args.cache else [])]
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
                runs[model][tree].append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(json.dumps({"model": model, "tree": tree, **runs[model][tree][-1]}),
                      file=sys.stderr, flush=True)
    summary = {m: {t: {k: statistics.median(r["cpu_s"][k] for r in rs)
                       for k in ("recorder", "range_stats", "max")} | {"gb": rs[0]["gb"]}
                   for t, rs in per.items()} for m, per in runs.items()}
    print(json.dumps({"load_average_before": load, "load_average_after": os.getloadavg(),
                      "rounds": args.rounds, "median_cpu_s": summary, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
