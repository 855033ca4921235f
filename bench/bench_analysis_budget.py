"""Does a shorter analysis budget change compile's plan? HAWQ at several budgets, one model.

Per model (zoo or a trained model of bench/real_models, bench_compile's 32 calibration samples,
forward passes in onnxruntime, the allocator's settle rule for rpi5 at the knee, as compile
runs it): the analysis at each budget in `--budgets` ("none": unbounded), then the knee plan
on rpi5 from each. Every plan is scored at the unbounded analysis's sensitivities (the most
precise estimate): its total omega there and its cost, each relative to the unbounded plan's,
and whether the two plans are equivalent by the settle rule's margin (`SETTLE_EPS`, 1 %).
Prints JSON per model and budget: analysis seconds, probes per sample, max_rse, cut_short, the
plan's weight bits, and those comparisons. Plans, not times, are the point: times are noisy
on a shared machine. `--brute` adds, as the reference, the analysis without the settle rule
(every trace to tol 5 %, up to 100 probes per sample): whether the rule's "cannot change the
plan" holds against brute force.

    PYTHONPATH=. python bench/bench_analysis_budget.py --models ppocr \
        [--budgets 10,20,30,none] [--brute] [--cache DIR] [--out f.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_analysis_time import _named  # noqa: E402


def _graph(src: str, flags: list[str]) -> Any:
    """The model as bench_compile's flags load it."""
    from edgesim.loading import load_graph

    shapes = {k: tuple(int(t) for t in v.split("x"))
              for k, v in _named(flags, "--input-shape").items()}
    values = {k: int(v) if v.lstrip("-").isdigit() else float(v)
              for k, v in _named(flags, "--input-value").items()}
    axes = {k: int(v) for k, v in _named(flags, "--batch-axis").items()}
    return load_graph(src, shapes or None, input_values=values or None,
                      batch_axes=axes or None)


def _omega_at(ref: Any, plan: Any, row: dict[str, int]) -> float:
    """Total omega of `plan`'s weight bits at the sensitivities `ref` (float: 0)."""
    bits = list(ref.bits)
    return float(sum(ref.omega[i, bits.index(b)] for i, name in enumerate(ref.layers)
                     if (b := int(plan.bits[row[name], 0])) in bits))


def run(name: str, src: str, npz: str, flags: list[str], budgets: list[float | None],
        brute: bool = False) -> list[dict[str, Any]]:
    """The analysis and knee plan of one model at each budget (the unbounded one last; with
    `brute`, also without the settle rule, to every trace's tol, as the reference)."""
    from compiler.sensitivity import hawq
    from edgesim import calibration as cal
    from edgesim.allocation import allocate
    from edgesim.analysis_inputs import analysis_inputs
    from edgesim.compile_options import CompileOptions
    from edgesim.compile_plan import settled as plan_settled
    from edgesim.float_pass import onnxruntime_env
    from edgesim.loading import resolve_target
    from edgesim.settle_rule import SETTLE_EPS

    g = _graph(src, flags)
    inputs, _ = analysis_inputs(cal.read(g, npz), None, g)
    options, target = CompileOptions(), resolve_target("rpi5")
    forward = onnxruntime_env(g)
    row = {layer.name: i for i, layer in enumerate(g.layers)}
    out, plans = [], []
    for b in budgets + ([None] if brute else []):
        settled = plan_settled(g, g, target, options, {}) if len(out) < len(budgets) else None
        start = time.perf_counter()
        sens = hawq.sensitivity(g, inputs, None, bits=options.weight_bits, settled=settled,
                                forward=forward, budget_s=b)
        took = time.perf_counter() - start
        plan = allocate(g, target, sens=sens, weight_bits=options.weight_bits)
        out.append({"model": name, "budget_s": b, "seconds": round(took, 2),
                    "iterations": sens.iterations, "max_rse": round(float(np.max(sens.rse)), 4),
                    "cut_short": bool(sens.cut_short), "settle_rule": settled is not None})
        plans.append((plan, sens))
    best_plan, best_sens = plans[-1]
    for r, (plan, _) in zip(out, plans):
        omega, omega_ref = _omega_at(best_sens, plan, row), _omega_at(best_sens, best_plan, row)
        same = bool(np.array_equal(plan.bits, best_plan.bits))
        d_omega = omega / omega_ref - 1 if omega_ref else 0.0
        d_cost = plan.total / best_plan.total - 1
        bits = [int(plan.bits[row[n], 0]) for n in best_sens.layers]
        values, counts = np.unique(bits, return_counts=True)
        r.update({"w_bits_layers": {str(v): int(c) for v, c in zip(values, counts)},
                  "same_plan_as_unbounded": same,
                  "layers_differing": int(np.count_nonzero(plan.bits != best_plan.bits)),
                  "omega_vs_unbounded": round(d_omega, 5), "cost_vs_unbounded": round(d_cost, 5),
                  "within_settle_eps": same or (abs(d_omega) <= SETTLE_EPS
                                                and abs(d_cost) <= SETTLE_EPS)})
    return out


def main() -> None:
    from bench_compile import prepare
    from bench_real_models import cache_dir

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="ppocr")
    p.add_argument("--budgets", default="10,20,30,none")
    p.add_argument("--brute", action="store_true",
                   help="the reference is the analysis without the settle rule, every trace "
                        "to tol 5%% (brute force: minutes per model)")
    p.add_argument("--cache", help="folder for downloaded packages")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args()
    budgets = [None if t == "none" else float(t) for t in args.budgets.split(",")]
    budgets = [b for b in budgets if b is not None] + [None]  # the reference runs last
    result: dict[str, Any] = {"load_average_before": os.getloadavg(), "models": []}
    with tempfile.TemporaryDirectory() as d:
        for name in args.models.split(","):
            c = prepare(name, Path(d), cache_dir(args.cache))
            result["models"].append(run(name, str(c.src), str(c.npz), list(c.args), budgets,
                                        args.brute))
            print(json.dumps(result["models"][-1]), flush=True)
    result["load_average_after"] = os.getloadavg()
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
