"""Throughput of `edgesim sweep` on the shipped example space, by executor, interleaved. Prints
JSON.

Workload: `targets/spaces/macarray.yaml` (2000 Latin-hypercube MAC-array designs x ResNet-50
and MobileNet-V2, a weight-bit allocation per design), or `--space`. Executors: this process
(inline), the local process pool with 1 and 2 workers, and a Dask LocalCluster of 2 workers.
Each round runs every executor once, in turn, so load on the shared machine hits all alike;
the summary takes the median over rounds.

Per run: `wall_s` from making the executor to the last stored point (the pool's workers start
with the executor and warm up while the models load, so start-up is inside it); `setup_s`
(enumeration, model load, sensitivity) and `eval_s` (evaluating and storing) as the sweep
reports them; `points_per_s` = points / wall_s; `cpu_s` this process's CPU time plus that of
the child processes reaped by the run's end (the pool's workers, a LocalCluster's processes)
-- other load on the machine does not inflate CPU time as it inflates wall time.

Usage: python bench/bench_sweep.py [--rounds 3] [--space targets/spaces/macarray.yaml]
    [--executors inline,local1,local2,dask2]
"""

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgesim.sweep import DaskExecutor, InlineExecutor, LocalExecutor, run_sweep  # noqa: E402
from edgesim.sweep.space import load_space  # noqa: E402

EXECUTORS = {
    "inline": InlineExecutor,
    "local1": lambda: LocalExecutor(1),
    "local2": lambda: LocalExecutor(2),
    "dask2": lambda: DaskExecutor(local_workers=2),
}


def _cpu_s() -> float:
    own, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run(space_file: Path, name: str) -> dict:
    """One sweep of the space into a temporary directory on executor `name`."""
    cpu, start = _cpu_s(), time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        with EXECUTORS[name]() as ex:
            s = run_sweep(load_space(space_file), out, executor=ex)
    wall = time.perf_counter() - start
    return {"points": s.computed, "errors": s.errors, "wall_s": round(wall, 2),
            "setup_s": round(s.setup_s, 2), "eval_s": round(s.eval_s, 2),
            "points_per_s": round(s.computed / wall, 1), "cpu_s": round(_cpu_s() - cpu, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--space", type=Path, default=ROOT / "targets" / "spaces" / "macarray.yaml")
    p.add_argument("--executors", default=",".join(EXECUTORS))
    args = p.parse_args()
    names = args.executors.split(",")
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for _ in range(args.rounds):
        for name in names:
            runs[name].append(run(args.space, name))
    summary = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
               for n, rs in runs.items()}
    if "local1" in summary and "local2" in summary:
        summary["speedup_local1_to_local2_wall"] = round(
            summary["local1"]["wall_s"] / summary["local2"]["wall_s"], 2)
    print(json.dumps({"machine": {"cores": os.cpu_count(), "python": sys.version.split()[0],
                                  "load_avg_at_end": os.getloadavg()},
                      "space": str(args.space), "rounds": args.rounds, "summary": summary,
                      "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
