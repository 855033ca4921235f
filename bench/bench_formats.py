"""Per model and plan: kernel check, predicted fp32-vs-emitted latency (rpi5, rpi4 and this
machine probed as a target) and measured onnxruntime latency on this machine. Prints JSON.

    python bench/bench_formats.py [--runs 20] [--threads 1]

Plans: uniform W8A8, uniform W4 (weight-only), and the HAWQ mixed plan allocated for rpi5 (knee
of the latency front; 2 calibration samples, a few Hutchinson probes). Models at small input
shapes so the whole script takes minutes on a loaded machine.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from compiler.emit import emit
from compiler.frontend import load
from compiler.passes.calibrate import calibrate
from compiler.passes.quantize import QuantOptions, quantize
from compiler.sensitivity.hawq import sensitivity as hawq
from edgesim import assignment, zoo
from edgesim.allocation import allocate
from edgesim.api import resolve_target
from edgesim.evaluate import measure_latency
from edgesim.kernel_check import check_kernels
from edgesim.simulation import simulate_graph
from hwmodels.cpu import nbits_int8_available
from hwmodels.probe import probe_host

MODELS = {"mobilenet_v2": {"resolution": 96}, "resnet18": {"resolution": 96},
          "minilm": {"seq": 64}, "digits_cnn": {}, "digits_transformer": {}}


def _feeds(g, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {t: rng.standard_normal((n, *g.types[t].shape[1:])).astype(np.float32)
            if g.types[t].dtype == "float32" else
            rng.integers(0, 100, (n, *g.types[t].shape[1:])).astype(g.types[t].dtype)
            for t in g.inputs}


def _plans(g, feeds, target) -> dict[str, np.ndarray]:
    sens = hawq(g, {t: v[:1] for t, v in feeds.items()}, tol=0.5, max_iter=4)
    return {"uniform-8": assignment.uniform(g, 8), "uniform-4": assignment.uniform(g, 4),
            "hawq-mixed": allocate(g, target, sens=sens).bits}


def _predicted(g, bits, targets, threads: int) -> dict[str, dict[str, float]]:
    """Predicted latency on each target (all its cores), and on this host at `threads`."""
    out = {}
    for t in targets:
        s = simulate_graph(g, t, bits, threads=threads if t.name == "host" else None)
        out[t.name] = {"fp32_ms": round(s.fp32.latency_ms, 4),
                       "emitted_ms": round(s.total.latency_ms, 4)}
    return out


def bench_model(name: str, targets, runs: int, threads: int) -> list[dict]:
    g = load(zoo.build(name, **MODELS[name]))
    feeds = _feeds(g, 2)
    one = {t: v[:1] for t, v in feeds.items()}
    calib = calibrate(g, [{t: v[i:i + 1] for t, v in feeds.items()} for i in range(2)])
    fp32_ms = measure_latency(emit(g), one, threads, runs).median_ms
    rows = []
    for plan, bits in _plans(g, feeds, targets[0]).items():
        q = quantize(g, bits, calib, QuantOptions(int8_dot=nbits_int8_available(targets[0])))
        model = emit(q)
        kernels = check_kernels(q, model)
        bad = [f"{r.layer}: {r.planned} / {r.onnxruntime}" for r in kernels if not r.ok]
        rows.append({
            "model": name, "plan": plan, "layers_checked": len(kernels),
            "kernel_mismatches": len(bad), "mismatched": bad[:5],
            "predicted": _predicted(g, bits, targets, threads),
            "measured_here": {"fp32_ms": round(fp32_ms, 4), "emitted_ms": round(
                measure_latency(model, one, threads, runs).median_ms, 4), "threads": threads},
        })
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--models", default=",".join(MODELS))
    args = p.parse_args()
    start = time.perf_counter()
    host = probe_host()
    targets = [resolve_target("rpi5"), resolve_target("rpi4"), host]
    rows = [r for name in args.models.split(",") for r in bench_model(name, targets,
                                                                       args.runs, args.threads)]
    print(json.dumps({"rows": rows, "host_threads_assumed": host.cores,
                      "seconds": round(time.perf_counter() - start, 1)}, indent=1))


if __name__ == "__main__":
    main()
