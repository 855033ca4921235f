"""Time the exact bit allocator: one MCKP solve and a 50-point Pareto front.

Sizes: L=53 layers (ResNet-50-like) and L=150 (transformer-like), B=6 bit choices
(2, 3, 4, 5, 6, 8). Data are random but shaped like the real thing, which is the hard case for
the front (it grows to ~1e5 points at L=150): cost = params * bits / 8 bytes with log-normal
parameter counts, sens = trace * 4^-bits (quantisation noise ~ step^2) with log-normal traces.
Each time is the best of `--repeats` runs, after one warm-up run that compiles the numba kernels.

Usage: python bench/bench_allocate.py [--repeats 3] [--out bench_allocate.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compiler.allocate import pareto_front, solve  # noqa: E402

BITS = np.array([2, 3, 4, 5, 6, 8])
BUDGET_FRACTIONS = (0.1, 0.3, 0.5, 0.8)  # of the way from the cheapest to the dearest total


def instance(layers: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random (sens, cost) [layers, 6] shaped like HAWQ traces and weight bytes."""
    rng = np.random.default_rng(seed)
    params = rng.lognormal(12, 1.5, layers)[:, None]
    trace = rng.lognormal(0, 2, layers)[:, None]
    return trace * 4.0 ** -BITS, params * BITS / 8


def best_time(run: Callable[[], object], repeats: int) -> dict[str, float]:
    """Best wall and CPU seconds over `repeats` runs (CPU time is the fairer figure on a
    shared machine)."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        run()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {"wall_s": min(wall), "cpu_s": min(cpu)}


def bench_size(layers: int, repeats: int) -> dict:
    sens, cost = instance(layers, seed=layers)
    low, high = cost.min(axis=1).sum(), cost.max(axis=1).sum()
    budgets = [low + f * (high - low) for f in BUDGET_FRACTIONS]
    solve_time = {m: [best_time(lambda b=b, m=m: solve(sens, cost, b, method=m), repeats)
                      for b in budgets] for m in ("milp", "front")}
    start = time.perf_counter()
    full = len(pareto_front(sens, cost))
    return {
        "layers": layers, "choices": len(BITS), "budget_fractions": list(BUDGET_FRACTIONS),
        "solve_milp": solve_time["milp"], "solve_front": solve_time["front"],
        "front_50_points": best_time(lambda: pareto_front(sens, cost, max_points=50), repeats),
        "front_points": full, "full_front_with_allocations_wall_s": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    start = time.perf_counter()
    sens, cost = instance(4, seed=0)
    pareto_front(sens, cost)  # compiles (or loads the cache of) the numba kernels
    report = {"warmup_s": time.perf_counter() - start,
              "sizes": [bench_size(layers, args.repeats) for layers in (53, 150)]}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
