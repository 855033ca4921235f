"""Compile's HAWQ analysis, timed as compile runs it, against a baseline tree, interleaved.

Per model (zoo or a trained model of bench/real_models, with bench_compile's 32 calibration
samples): the analysis graph and samples compile uses, forward passes in onnxruntime, the
allocator's settle rule for rpi5 at the knee, and each tree's own default analysis budget
(`CompileOptions().analysis_budget_s`). Each tree runs in a fresh process (PYTHONPATH), the
trees alternate which goes first each round. Prints JSON per model and tree: seconds of the
analysis, Hutchinson probes per sample (`iterations`), forward and backward passes and their
seconds, the max relative standard error reached, whether the budget cut it short, and the
knee's weight bits on rpi5 (`plan`).

The machine is shared: compare the trees within a round (same load), not across runs.

    PYTHONPATH=. python bench/bench_analysis_time.py --baseline /tmp/base \
        [--models ppocr,magika,mobilenet_v2,resnet18] [--rounds 1] [--cache DIR] [--out f.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _named(args: list[str], flag: str) -> dict[str, str]:
    """{name: text} of the `flag NAME=TEXT` pairs in bench_compile's CLI flags `args`."""
    return dict(v.split("=", 1) for f, v in zip(args[::2], args[1::2]) if f == flag)


def worker(src: str, npz: str, flags: list[str]) -> dict[str, Any]:
    """The analysis in this process's tree (imported from PYTHONPATH), instrumented."""
    import numpy as np

    from compiler.sensitivity import hawq, weight_norms
    from edgesim import calibration as cal
    from edgesim.analysis_inputs import analysis_inputs
    from edgesim.compile_options import CompileOptions
    from edgesim.compile_plan import settled as plan_settled
    from edgesim.float_pass import onnxruntime_env
    from edgesim.loading import load_graph, resolve_target

    shapes = {k: tuple(int(t) for t in v.split("x"))
              for k, v in _named(flags, "--input-shape").items()}
    # silero: the pinned inputs that fold its If, and its state's batch axis, as compile takes
    values = {k: int(v) if v.lstrip("-").isdigit() else float(v)
              for k, v in _named(flags, "--input-value").items()}
    axes = {k: int(v) for k, v in _named(flags, "--batch-axis").items()}
    g = load_graph(src, shapes or None, input_values=values or None, batch_axes=axes or None)
    inputs, _ = analysis_inputs(cal.read(g, npz), None, g)
    options = CompileOptions()
    settled = plan_settled(g, g, resolve_target("rpi5"), options, {})
    took = {"forward": [0, 0.0], "backward": [0, 0.0]}
    inner_forward, inner_norms = onnxruntime_env(g), weight_norms.squared_norms

    def timed(key: str, fn: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            took[key][0] += 1
            took[key][1] += time.perf_counter() - start
            return out
        return call
    weight_norms.squared_norms = timed("backward", inner_norms)
    start = time.perf_counter()
    sens = hawq.sensitivity(g, inputs, None, bits=options.weight_bits, settled=settled,
                            forward=timed("forward", inner_forward),
                            budget_s=options.analysis_budget_s)
    return {"seconds": round(time.perf_counter() - start, 2), "iterations": sens.iterations,
            "budget_s": options.analysis_budget_s,
            **{f"{k}_passes": v[0] for k, v in took.items()},
            **{f"{k}_s": round(v[1], 2) for k, v in took.items()},
            "max_rse": round(float(np.max(sens.rse)), 4), "cut_short": bool(sens.cut_short),
            **_plan(g, sens, options.weight_bits)}


def _plan(g: Any, sens: Any, weight_bits: Any) -> dict[str, Any]:
    """The knee plan's weight bits on rpi5 from `sens` (mean over the analysed layers, and
    how many layers take each), and the analysis notes on the loss (which tensor it read)."""
    import numpy as np

    from edgesim.allocation import allocate
    from edgesim.loading import resolve_target

    plan = allocate(g, resolve_target("rpi5"), sens=sens, weight_bits=weight_bits)
    row = {layer.name: i for i, layer in enumerate(g.layers)}
    bits = [int(plan.bits[row[name], 0]) for name in sens.layers]
    values, counts = np.unique(bits, return_counts=True)
    return {"mean_w_bits": round(float(np.mean(bits)), 3),
            "w_bits_layers": {str(v): int(c) for v, c in zip(values, counts)},
            "loss_notes": [n for n in sens.notes if n.startswith("loss")]}


def run_tree(tree: Path, case: dict[str, Any]) -> dict[str, Any]:
    """`worker` in a fresh process of `tree`."""
    cmd = [sys.executable, str(ROOT / "bench" / "bench_analysis_time.py"), "--worker",
           json.dumps(case)]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run(cmd, env=env, cwd=str(tree), capture_output=True, text=True)
    if proc.returncode:
        return {"error": proc.stderr.strip()[-400:]}
    return {**json.loads(proc.stdout.strip().splitlines()[-1]),
            "load_1min": round(os.getloadavg()[0], 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="ppocr,magika,mobilenet_v2,resnet18")
    p.add_argument("--baseline", help="an older edgesim tree to run interleaved")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--cache", help="folder for downloaded packages")
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        case = json.loads(args.worker)
        print(json.dumps(worker(case["src"], case["npz"], case["flags"])))
        return
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_compile import prepare
    from bench_real_models import cache_dir

    trees = {"this": ROOT, **({"baseline": Path(args.baseline)} if args.baseline else {})}
    out: dict[str, Any] = {"load_average_before": os.getloadavg(), "models": {}}
    with tempfile.TemporaryDirectory() as d:
        for name in args.models.split(","):
            c = prepare(name, Path(d), cache_dir(args.cache))
            case = {"src": str(c.src), "npz": str(c.npz),
                    "flags": list(c.args)}
            runs: dict[str, list[dict[str, Any]]] = {k: [] for k in trees}
            for r in range(args.rounds):
                order = list(trees) if r % 2 == 0 else list(reversed(trees))
                for label in order:
                    runs[label].append(run_tree(trees[label], case))
            out["models"][name] = runs
    out["load_average_after"] = os.getloadavg()
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
