"""Time to compute all HAWQ traces and LRP relevances on zoo models.

For each model: one gradient evaluation (forward + reverse, float64, all calibration samples),
HAWQ (`hawq.sensitivity`, loss by the default rule: KL for the CNN classifiers, MSE for
minilm's hidden states) with its curvature (default Gauss-Newton probes, float32; `--curvature
hessian` for float64 finite-difference HVPs), iterations, final max relative standard error,
seconds per iteration and the iterations a 5% tolerance would take at the measured variance
(`iterations * (max_rse / tol)^2`), and LRP (`lrp.sensitivity`, float32). Each method's graph batch
defaults to the compile pipeline's analysis batch (`edgesim.analysis_inputs.analysis_batch`).
Calibration data is seeded random (images N(0, 1); token ids uniform, full attention mask):
timing does not depend on it.

Prints one JSON object (and writes it to --out if given).

Usage: PYTHONPATH=. python bench/bench_sensitivity.py [--models mobilenet_v2 resnet18 minilm]
    [--samples 32] [--batch B] [--resolution 224] [--seq 128] [--max-iter 100] [--tol 0.05]
    [--curvature gauss-newton|hessian] [--blas-threads N] [--out f.json]

On a shared 2-core machine OpenBLAS's own threading can make small batched GEMMs (attention's
[B, heads, S, d] products) hundreds of times slower than one thread: `--blas-threads 1`
measures without that.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from compiler.frontend import load
from compiler.ir import Graph
from compiler.sensitivity import hawq, lrp
from compiler.sensitivity.loss import objective, value_and_grad
from edgesim import zoo
from edgesim.analysis_inputs import analysis_batch

CNNS = ("mobilenet_v2", "resnet18", "resnet50")


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """(result, seconds) of one call."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def model_and_data(name: str, args: argparse.Namespace, method: str
                   ) -> tuple[Graph, dict[str, np.ndarray]]:
    """The lowered model at `method`'s analysis batch and `args.samples` seeded calibration
    inputs. The batch is `args.batch`, or by default the compile pipeline's (`analysis_batch`)."""
    rng = np.random.default_rng(0)
    if name in CNNS:
        shape = (3, args.resolution, args.resolution)
        model = zoo.build(name, resolution=args.resolution)
        shapes = {"input": shape}
        calib = {"input": rng.standard_normal((args.samples, *shape)).astype(np.float32)}
    else:
        model = zoo.build(name, seq=args.seq)
        shapes = {"input_ids": (args.seq,), "attention_mask": (args.seq,)}
        ids = rng.integers(0, 30522, (args.samples, args.seq))
        calib = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    batch = args.batch or analysis_batch(load(model, {k: (1, *v) for k, v in shapes.items()}),
                                         args.samples, method)
    return load(model, {k: (batch, *v) for k, v in shapes.items()}), calib


def bench_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Timings and estimator diagnostics of one model."""
    (g, calib), load_s = timed(lambda: model_and_data(name, args, "hawq"))
    names = hawq.unique_weights(hawq.check_quantisable(g))
    obj, setup_s = timed(lambda: objective(g, calib))
    _, grad_s = timed(lambda: value_and_grad(obj, {}, names))
    sens, hawq_s = timed(lambda: hawq.sensitivity(g, calib, curvature=args.curvature,
                                                  tol=args.tol, max_iter=args.max_iter))
    g_lrp = model_and_data(name, args, "lrp")[0]
    _, lrp_s = timed(lambda: lrp.sensitivity(g_lrp, calib))
    max_rse = float(np.nanmax(sens.rse))
    return {
        "batch": g.types[g.inputs[0]].shape[0], "lrp_batch": g_lrp.types[g.inputs[0]].shape[0],
        "layers": len(sens.layers),
        "weights": int(sum(g.weights[n].size for n in names)),
        "loss": obj.loss, "curvature": args.curvature, "load_s": load_s,
        "reference_forward_s": setup_s,
        "gradient_s": grad_s, "hawq_s": hawq_s, "hawq_iterations": sens.iterations,
        "hawq_s_per_iteration": hawq_s / max(1, sens.iterations),
        "hawq_max_rse": max_rse, "hawq_median_rse": float(np.nanmedian(sens.rse)),
        "hawq_iterations_for_tol": int(np.ceil(sens.iterations * (max_rse / args.tol) ** 2)),
        "lrp_s": lrp_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mobilenet_v2", "resnet18", "minilm"])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--batch", type=int, default=None,
                        help="graph batch (samples %% batch == 0); default: compile's choice")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--max-iter", type=int, default=100)
    parser.add_argument("--tol", type=float, default=0.05)
    parser.add_argument("--curvature", choices=hawq.CURVATURES, default="gauss-newton")
    parser.add_argument("--blas-threads", type=int, default=None,
                        help="cap BLAS threads (threadpoolctl); default: the library's own")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with threadpool_limits(limits=args.blas_threads):
        result = run_all(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    """The JSON result: configuration, machine, and one entry per model."""
    return {
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "numpy": np.__version__},
        "models": {name: bench_model(name, args) for name in args.models},
    }


if __name__ == "__main__":
    main()
