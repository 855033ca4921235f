"""Per model and plan: kernel check, predicted fp32-vs-emitted latency (rpi5, rpi4 and this
machine probed as a target) and measured onnxruntime latency on this machine. Prints JSON.

The fidelity figure is the `host` block: this machine probed as a target (`--host FILE` reuses
a YAML `edgesim target probe` wrote) predicted against what the same files measure here, fp32
and emitted, with the errors and whether the predicted speed-up lies on the measured side of 1.
rpi5 / rpi4 predictions are what the plan promises there (not checked here). On a shared,
loaded machine preemption only adds time: a measured time is the lower of the 10th percentile
of `--runs` timed runs and the sum of every node's fastest profiled run (the profiler adds a
few us per node, so small models are measured by the former, large ones by the latter).

    python bench/bench_formats.py [--runs 20] [--threads 1] [--host host.yaml]

Plans: uniform W8A8, uniform W4 (weight-only), and the HAWQ mixed plan allocated for rpi5 (knee
of the latency front; 2 calibration samples, a few Hutchinson probes). Models at small input
shapes so the whole script takes minutes on a loaded machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
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
from edgesim.kernel_check import check_kernels
from edgesim.simulation import simulate_graph
from edgesim.validate import busy_host_ms
from hwmodels.cpu import nbits_int8_available
from hwmodels.probe import probe_host
from hwmodels.target import load_target

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


def _host(pred: dict[str, float], fp32_ms: float, emitted_ms: float) -> dict:
    """This machine as a target: predicted vs measured, fp32 and emitted, and the speed-up."""
    meas, speed = fp32_ms / emitted_ms, pred["fp32_ms"] / pred["emitted_ms"]
    return {"predicted": pred, "measured": {"fp32_ms": round(fp32_ms, 4),
                                            "emitted_ms": round(emitted_ms, 4)},
            "error_fp32": round(pred["fp32_ms"] / fp32_ms - 1, 3),
            "error_emitted": round(pred["emitted_ms"] / emitted_ms - 1, 3),
            "speedup_predicted": round(speed, 3), "speedup_measured": round(meas, 3),
            "sign_checked": abs(meas - 1) > 0.10, "sign_right": (speed > 1) == (meas > 1)}


def bench_model(name: str, targets, runs: int, threads: int) -> list[dict]:
    g = load(zoo.build(name, **MODELS[name]))
    feeds = _feeds(g, 2)
    one = {t: v[:1] for t, v in feeds.items()}
    calib = calibrate(g, [{t: v[i:i + 1] for t, v in feeds.items()} for i in range(2)])
    fp32_ms = busy_host_ms(emit(g), one, threads, runs)
    rows = []
    for plan, bits in _plans(g, feeds, targets[0]).items():
        q = quantize(g, bits, calib, QuantOptions(int8_dot=nbits_int8_available(targets[0])))
        model = emit(q)
        kernels = check_kernels(q, model)
        bad = [f"{r.layer}: {r.planned} / {r.onnxruntime}" for r in kernels if not r.ok]
        pred = _predicted(g, bits, targets, threads)
        emitted_ms = busy_host_ms(model, one, threads, runs)
        rows.append({
            "model": name, "plan": plan, "layers_checked": len(kernels),
            "kernel_mismatches": len(bad), "mismatched": bad[:5], "threads": threads,
            "host": _host(pred.pop("host"), fp32_ms, emitted_ms), "predicted_boards": pred,
        })
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--host", help="host target YAML (default: probe now)")
    args = p.parse_args()
    start = time.perf_counter()
    host = load_target(args.host) if args.host else probe_host()
    host = dataclasses.replace(host, name="host")
    targets = [resolve_target("rpi5"), resolve_target("rpi4"), host]
    rows = [r for name in args.models.split(",") for r in bench_model(name, targets,
                                                                       args.runs, args.threads)]
    checked = [r["host"] for r in rows if r["host"]["sign_checked"]]
    errors = [abs(r["host"][k]) for r in rows for k in ("error_fp32", "error_emitted")]
    print(json.dumps({"rows": rows, "host": host.description,
                      "host_median_abs_err": round(float(np.median(errors)), 3),
                      "host_sign_right_where_change_over_10pct":
                          f"{sum(h['sign_right'] for h in checked)}/{len(checked)}",
                      "kernel_mismatches": sum(r["kernel_mismatches"] for r in rows),
                      "load_avg": os.getloadavg(),
                      "seconds": round(time.perf_counter() - start, 1)}, indent=1))


if __name__ == "__main__":
    main()
