"""Long fuzz tier: seeded hostile inputs of every family through edgesim's loaders. Prints JSON.

Families (tests/fuzz/families.py): ONNX byte mutations, ONNX protobuf mutations (dims,
initializers, nodes, opsets), target YAML, sweep spaces, calibration .npz, assignment JSON,
command lines of the cheap commands through `edgesim.cli.main` (exit 1 counts as foreign).
Each input's outcome is `ok`, `project_error` (ModelError / TargetError / UserError: the
one-line errors the CLI prints with exit 2), `foreign` (any other exception: a bug) or `slow`
(stopped at --limit-s seconds). Goals: >= 10,000 inputs, 0 foreign, 0 slow (> 10 s).

Usage: python bench/bench_fuzz.py [--count 11050] [--seed 0] [--limit-s 10] [--families a,b]
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fuzz.families import FAMILIES, fuzz  # noqa: E402

# The slow families (each input simulates a model on a target, or enumerates a space) get
# fewer inputs; the total is --count.
WEIGHT = {"onnx_bytes": 3, "onnx_proto": 4, "target_yaml": 1, "sweep_space": 1,
          "calib_npz": 2, "assignment": 1, "cli_flags": 1}


def warm_up() -> float:
    """Compile numba's kernels (or load them from its on-disk cache) before anything is timed:
    a cold cache costs tens of seconds once, start-up rather than the fault of whichever input
    first reaches a kernel. Returns the seconds it took."""
    from edgesim import api

    t0 = time.perf_counter()
    for target in ("rpi5", "cortex-m7", "systolic-16x16", "sparse-mac-32x32"):
        api.simulate("zoo:digits_cnn", target, bits=8)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=11_050)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit-s", type=float, default=10.0)
    ap.add_argument("--families", help="comma-separated subset (default: all)")
    args = ap.parse_args()
    families = args.families.split(",") if args.families else list(FAMILIES)
    total_w = sum(WEIGHT[f] for f in families)
    report: dict = {"seed": args.seed, "limit_s": args.limit_s, "warm_up_s": round(warm_up(), 1),
                    "families": {}}
    start = time.perf_counter()
    for family in families:
        n = args.count * WEIGHT[family] // total_w
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as work, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outcomes = fuzz(family, args.seed, n, Path(work), args.limit_s)
        kinds = collections.Counter(o.kind for o in outcomes)
        report["families"][family] = {
            "inputs": n, **{k: kinds.get(k, 0) for k in ("ok", "project_error", "foreign",
                                                          "slow")},
            "max_s": round(max(o.seconds for o in outcomes), 3),
            "wall_s": round(time.perf_counter() - t0, 1),
            "foreign_examples": sorted({o.detail for o in outcomes if o.kind == "foreign"})[:10],
        }
        print(f"{family}: {report['families'][family]}", file=sys.stderr, flush=True)
    fams = report["families"].values()
    report["total"] = {k: sum(f[k] for f in fams)
                       for k in ("inputs", "ok", "project_error", "foreign", "slow")}
    report["max_s"] = max(f["max_s"] for f in fams)
    report["wall_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
