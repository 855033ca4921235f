"""HAWQ's per-probe backward pass: the plain reverse pass (every cotangent, full weight
gradients, then their squared norms) against `compiler.sensitivity.weight_norms` (pruned to
what leads to a probed weight; conv/linear weight norms from their factors, in Gram form
where positions are few), interleaved on the same forward passes and probes.

Per model: the compile pipeline's analysis graph at batch 1 and the first SAMPLES samples of
bench_compile's calibration data, forward passes in onnxruntime (as compile runs them), one
Gauss-Newton probe per sample; the two backward variants alternate which goes first. Prints
JSON: milliseconds per sample of each, their ratio, the largest relative difference of the
squared norms (float32 rounding), and how many weights took the factored form.

    PYTHONPATH=. python bench/bench_hawq_backward.py [--models resnet18,mobilenet_v2,magika,
        silero] [--samples 9] [--cache DIR] [--out f.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_compile import prepare  # noqa: E402

from compiler.executor import backward  # noqa: E402
from compiler.sensitivity import weight_norms  # noqa: E402
from compiler.sensitivity.gauss_newton import output_factor  # noqa: E402
from compiler.sensitivity.hawq import unique_weights  # noqa: E402
from compiler.sensitivity.loss import chunks, default_loss, loss_outputs  # noqa: E402
from compiler.sensitivity.proxy import check_quantisable  # noqa: E402


def _flags(args: tuple[str, ...]) -> dict:
    """load_graph keywords from bench_compile's CLI flags."""
    out: dict = {"input_shapes": {}, "input_values": {}, "batch_axes": {}}
    keys = {"--input-shape": "input_shapes", "--input-value": "input_values",
            "--batch-axis": "batch_axes"}
    for flag, value in zip(args[::2], args[1::2]):
        name, v = value.split("=")
        parse = {"--input-shape": lambda s: tuple(int(t) for t in s.split("x")),
                 "--input-value": float, "--batch-axis": int}[flag]
        out[keys[flag]][name] = parse(v)
    return {k: v or None for k, v in out.items()}


def _plain(g, env, seeds, names) -> np.ndarray:
    grads = backward(g, env, seeds)
    flat = [np.ravel(grads[n]) if n in grads else np.zeros(1, np.float32) for n in names]
    return np.array([float(np.dot(f, f)) for f in flat])


def bench_model(name: str, tmp: Path, cache: Path, samples: int) -> dict:
    from edgesim import calibration as cal
    from edgesim.float_pass import onnxruntime_env
    from edgesim.loading import load_graph

    case = prepare(name, tmp, cache)
    kw = _flags(case.args)
    g = load_graph(str(case.src), kw.pop("input_shapes"), **kw)
    data = cal.read(g, str(case.npz))
    parts = chunks(g, {k: cal.model_layout(g, k, v[:samples]) for k, v in data.samples.items()})
    forward, loss = onnxruntime_env(g), default_loss(g, None)
    outputs, names = loss_outputs(g, loss, None), unique_weights(check_quantisable(g))
    plan = weight_norms.plan(g, names)
    rng = np.random.default_rng(0)
    took, worst = {"plain": 0.0, "norms": 0.0}, 0.0
    for i, feeds in enumerate(parts):
        env = forward(feeds)
        seeds = {o: output_factor(loss, env[o], len(parts))(
            rng.choice(np.array([-1.0, 1.0], env[o].dtype), env[o].shape)) for o in outputs}
        got = {}
        for label in (("plain", "norms") if i % 2 else ("norms", "plain")):
            start = time.perf_counter()
            got[label] = (_plain(g, env, seeds, names) if label == "plain"
                          else weight_norms.squared_norms(g, env, seeds, plan))
            if i:  # the first sample warms caches (numba, window layouts)
                took[label] += time.perf_counter() - start
        ok = got["plain"] > 0
        worst = max(worst, float(np.max(np.abs(got["norms"][ok] / got["plain"][ok] - 1),
                                        initial=0.0)))
    n = max(1, len(parts) - 1)
    return {"model": name, "samples_timed": n,
            "plain_ms_per_sample": round(took["plain"] / n * 1e3, 1),
            "norms_ms_per_sample": round(took["norms"] / n * 1e3, 1),
            "norms/plain": round(took["norms"] / took["plain"], 3),
            "max_relative_difference": worst, "weights": len(names),
            "factored": len(plan.factored)}


def main() -> None:
    from bench_real_models import cache_dir

    from compiler.window_kernels import serial

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet18,mobilenet_v2,magika,silero")
    p.add_argument("--samples", type=int, default=9)
    p.add_argument("--cache", help="folder for downloaded packages")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as d, threadpool_limits(1, user_api="blas"), serial():
        models = [bench_model(n, Path(d), cache_dir(args.cache), args.samples)
                  for n in args.models.split(",")]
    text = json.dumps({"load_average_before": load, "load_average_after": os.getloadavg(),
                       "blas_threads": 1, "models": models}, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
