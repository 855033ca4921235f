"""Do latency / energy budgets hold for the plan edgesim emits? (issues 13/17)

For each model x target x metric, budgets evenly spaced from the front's cheapest estimate to
the fp32 plan's: how many plans the front's estimate alone would choose exceed the budget at
their own cost (each layer with the plan's neighbours, as `simulate` costs the emitted file
read back), how many `allocate` returns that exceed it (should be 0), how many budgets no
plan found meets, and the own-cost evaluations `allocate` adds per budget (each is one
`edgesim.simulation.runnable` call) with their time, and how often the plan is more (or less)
sensitive than the least sensitive front point whose own cost meets the budget.
Sensitivities are the data-free proxy, computed once per model; times are CPU seconds on a
shared machine (ratios only).

Usage: python bench/bench_budget_exact.py [--budgets 25] [--out bench_budget_exact.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import edgesim.allocation as allocation  # noqa: E402
from edgesim import alloc_solve, api  # noqa: E402
from edgesim.alloc_problem import build_problem, candidate_choices  # noqa: E402
from edgesim.alloc_solve import solve_problem  # noqa: E402
from edgesim.budget import Budget  # noqa: E402
from edgesim.errors import UserError  # noqa: E402
from edgesim.loading import load_graph  # noqa: E402

CASES = (("zoo:digits_cnn", "rpi5", (4, 8)), ("zoo:mobilenet_v2", "rpi5", (2, 3, 4, 6, 8)),
         ("zoo:mobilenet_v2", "rpi4", (2, 3, 4, 6, 8)), ("zoo:resnet18", "rpi5", (4, 8)),
         ("zoo:digits_transformer", "rpi5", (4, 8)))


class Counter:
    """Wraps `allocation.runnable` to count and time the own-cost evaluations."""

    def __init__(self) -> None:
        self.calls, self.cpu_s, self.inner = 0, 0.0, allocation.runnable

    def __call__(self, *args: Any, **kw: Any) -> Any:
        t = time.process_time()
        out = self.inner(*args, **kw)
        self.calls, self.cpu_s = self.calls + 1, self.cpu_s + time.process_time() - t
        return out


def estimate_only_over(g: Any, target: Any, sens: Any, bits: tuple, budget: Budget) -> bool:
    """Whether the plan the front's estimate alone picks exceeds `budget` at its own cost."""
    choices = candidate_choices(target, bits, None)
    p = build_problem(g, sens, choices, target, budget.metric, None, "onnxruntime")
    w = float(g.layer_table().w_elems[p.rows].sum())
    plan = p.fixed_bits.copy()
    try:
        plan[p.rows] = choices[solve_problem(p, budget, w)[0].choice, :2]
    except UserError:  # the estimate says no plan meets it (float rounding at the cheapest)
        return False
    t = api.simulate(g, target, bits=plan).total
    own = t.latency_ms * 1e-3 if budget.metric == "latency" else t.energy_mj * 1e9
    return own > budget.value * (1 + 1e-9)


def front_walk(g: Any, target: Any, sens: Any, bits: tuple, metric: str
               ) -> list[tuple[float, float]]:
    """(own cost, sensitivity) of every point of the front: the reference a budget's plan is
    compared with (the least sensitive point whose own cost meets it)."""
    choices = candidate_choices(target, bits, None)
    p = build_problem(g, sens, choices, target, metric, None, "onnxruntime")
    w = float(g.layer_table().w_elems[p.rows].sum())
    own = allocation._own_cost(g, p, choices, target, metric, None, "onnxruntime")
    return [(own(a.choice) + p.fixed, a.total_sens) for a in solve_problem(p, None, w)[1]]


def run_case(model: str, tname: str, bits: tuple, metric: str, n: int) -> dict[str, Any]:
    g, target = load_graph(model), api.resolve_target(tname)
    sens = allocation.sensitivity(g, "proxy", weight_bits=bits)
    knee = allocation.allocate(g, target, sens=sens, weight_bits=bits, metric=metric)
    low, high = float(knee.front[0, 0]), knee.marks["fp32"][0]
    walk = front_walk(g, target, sens, bits, metric)
    counter = Counter()
    allocation.runnable = counter  # type: ignore[assignment]
    out: dict[str, Any] = {"model": model, "target": tname, "metric": metric, "budgets": n,
                           "weight_bits": list(bits), "estimate_only_over": 0, "over": 0,
                           "no_plan": 0, "evaluations": [], "eval_cpu_s": 0.0,
                           "worse_than_front_walk": 0, "better_than_front_walk": 0}
    try:
        for value in np.linspace(low, high, n):
            budget = Budget(metric, float(value))
            out["estimate_only_over"] += int(estimate_only_over(g, target, sens, bits, budget))
            before = counter.calls
            try:
                r = allocation.allocate(g, target, sens=sens, weight_bits=bits, budget=budget)
            except UserError:
                out["no_plan"] += 1
                continue
            # allocate's own costing of its result is not an added evaluation
            out["evaluations"].append(counter.calls - before - 1)
            t = r.cost.total()
            own = float((t.latency_s if metric == "latency" else t.energy_pj)[0])
            out["over"] += int(own > budget.value * (1 + 1e-9))
            ref = min((s for c, s in walk if c <= budget.value), default=np.inf)
            out["worse_than_front_walk"] += int(r.sensitivity > ref * (1 + 1e-9))
            out["better_than_front_walk"] += int(r.sensitivity < ref * (1 - 1e-9))
    finally:
        allocation.runnable = counter.inner  # type: ignore[assignment]
    ev = out["evaluations"]
    out.update(evaluations_mean=float(np.mean(ev)) if ev else 0.0,
               evaluations_max=max(ev, default=0),
               cpu_s_per_evaluation=counter.cpu_s / max(counter.calls, 1))
    del out["eval_cpu_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", type=int, default=25)
    ap.add_argument("--out", default=None)
    ap.add_argument("--refine", type=int, default=alloc_solve.REFINE_ROUNDS,
                    help="bisections after the first plan that fits (0: none)")
    args = ap.parse_args()
    alloc_solve.REFINE_ROUNDS = args.refine
    rows = [run_case(m, t, b, metric, args.budgets)
            for m, t, b in CASES for metric in ("latency", "energy")]
    text = json.dumps({"refine_rounds": args.refine, "cases": rows}, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
