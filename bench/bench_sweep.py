"""Sweep throughput, interleaved in one run. Prints JSON.

(a) Cost-model layer-evaluations per second on one core (a subprocess with
    NUMBA_NUM_THREADS=1), one evaluation = one (layer, design) pair at W8A8 on zoo resnet50:
    `one_design` = a prepared single-design call (`hwmodels.prepared`); `designs_10000` = 10,000
    Latin-hypercube designs of the shipped macarray space with fixed W8A8 bits, as a sweep batch
    costs them: `cost_call` (the kind's `picked` hook: configs from the targets, the batched
    kernel, the Cost) and `batch` (`evaluate_batch`: building the targets, area, cost, totals,
    records). Per CPU-second (process time, best of 3; other load on the shared machine
    inflates wall time, not CPU time) and per wall second.
(b) Sweep points per second by executor: this process (inline), the local process pool with 1
    and 2 workers, and a Dask LocalCluster of 2 workers, on the shipped example space
    `targets/spaces/macarray.yaml` (2000 LHS designs x ResNet-50 and MobileNet-V2, a weight-bit
    allocation per design) and on the same space at `--big-samples` designs, where workers pay
    for their start. Per run: `wall_s` from making the executor to the last stored point (the
    pool's workers start with the executor and warm up while the models load, so start-up is
    inside it); `setup_s`, `eval_s` as the sweep reports them; `points_per_s` = points / wall_s;
    `cpu_s` this process's CPU time plus that of the child processes reaped by the run's end.
    `auto` names the executor `edgesim sweep` picks by size (`edgesim.sweep.runs_inline`).
(c) A pool worker's start: wall and CPU seconds from making a 1-worker pool to its first
    (empty) task done -- the figure `edgesim.sweep.WORKER_START_S` is set from.

Each round runs every measurement once, in turn, so load on the shared machine hits all alike;
the summary takes the median over rounds. The machine's load average is recorded at the start
and the end.

Usage: python bench/bench_sweep.py [--rounds 2] [--big-samples 20000]
    [--executors inline,local1,local2,dask2]
"""

import argparse
import json
import operator
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgesim.sweep import (  # noqa: E402
    DaskExecutor,
    InlineExecutor,
    LocalExecutor,
    run_sweep,
    runs_inline,
)
from edgesim.sweep.space import load_space  # noqa: E402

SHIPPED = ROOT / "targets" / "spaces" / "macarray.yaml"
EXECUTORS = {
    "inline": InlineExecutor,
    "local1": lambda: LocalExecutor(1),
    "local2": lambda: LocalExecutor(2),
    "dask2": lambda: DaskExecutor(local_workers=2),
}


def _cpu_s() -> float:
    own, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def variant_space(directory: Path, name: str, samples: int, fixed_w8a8: bool = False) -> Path:
    """The shipped space at `samples` designs (fixed W8A8 on resnet50 alone if asked)."""
    text = re.sub(r"samples: \d+", f"samples: {samples}", SHIPPED.read_text())
    if fixed_w8a8:
        text = re.sub(r"models: .*", "models: [zoo:resnet50]", text)
        text = re.sub(r"optimise:\n.*", "optimise: {bits: {w_bits: 8, a_bits: 8}}", text)
    path = directory / f"{name}.yaml"
    path.write_text(text)
    return path


def _best_cpu(call, repeats: int = 3) -> tuple[float, float]:
    """(best CPU seconds, best wall seconds) of `repeats` calls after a warm one."""
    call()
    cpu, wall = [], []
    for _ in range(repeats):
        c, w = time.process_time(), time.perf_counter()
        call()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return min(cpu), min(wall)


def costcall_worker(space_file: str) -> dict:
    """(a), run in a one-thread subprocess."""
    import numpy as np

    from edgesim.loading import load_graph
    from edgesim.sweep.kinds import hooks
    from edgesim.sweep.points import enumerate_points
    from edgesim.sweep.run import Context, evaluate_batch, model_context, proxy_sensitivity
    from hwmodels import prepared
    from hwmodels.target import load_target

    table = load_graph("zoo:resnet50").layer_table()
    bits = np.array([[8, 8]])
    call = prepared.prepare(table, bits, load_target("systolic-16x16"))
    reps = 2000
    one_cpu = _best_cpu(lambda: [prepared.run(call) for _ in range(reps)])[0] / reps
    space = load_space(space_file)
    points = enumerate_points(space)
    ctx = Context(space.base, (model_context(space, 0, proxy_sensitivity),), space.optimise)
    kind = hooks(space.base)
    targets = [kind.variant(space.base, dict(p.typed), p.id) for p in points]
    cols = np.zeros(len(table), dtype=np.int64)
    cost_cpu, cost_wall = _best_cpu(lambda: kind.picked(table, bits, targets, cols).total())
    batch_cpu, batch_wall = _best_cpu(lambda: evaluate_batch(ctx, points))
    evals = len(points) * len(table)
    return {"layers": len(table), "designs": len(points),
            "one_design_us_cpu": one_cpu * 1e6,
            "one_design_evals_per_cpu_s": len(table) / one_cpu,
            "designs_10000_cost_call_evals_per_cpu_s": evals / cost_cpu,
            "designs_10000_cost_call_evals_per_wall_s": evals / cost_wall,
            "designs_10000_batch_evals_per_cpu_s": evals / batch_cpu,
            "designs_10000_batch_evals_per_wall_s": evals / batch_wall}


def costcall(space_file: Path) -> dict:
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r});"
            f"import importlib.util as u; s = u.spec_from_file_location('b', {__file__!r});"
            f"m = u.module_from_spec(s); s.loader.exec_module(m);"
            f"import json; print(json.dumps(m.costcall_worker({str(space_file)!r})))")
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def worker_start() -> dict:
    """(c): a 1-worker pool's start, to its first task done."""
    cpu, start = _cpu_s(), time.perf_counter()
    with LocalExecutor(1) as ex:
        list(ex.map_unordered(operator.is_, None, [0]))  # a picklable no-op
        wall = time.perf_counter() - start
    return {"wall_s": round(wall, 2), "cpu_s": round(_cpu_s() - cpu, 2)}


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


def _median(rows: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--big-samples", type=int, default=20000)
    p.add_argument("--executors", default=",".join(EXECUTORS))
    args = p.parse_args()
    names = args.executors.split(",")
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        spaces = {"shipped": SHIPPED,
                  "big": variant_space(Path(tmp), "big", args.big_samples)}
        fixed = variant_space(Path(tmp), "fixed10000", 10_000, fixed_w8a8=True)
        runs: dict[str, list[dict]] = {"costcall": [], "worker_start": []}
        runs.update({f"{s}/{n}": [] for s in spaces for n in names})
        for _ in range(args.rounds):
            runs["costcall"].append(costcall(fixed))
            runs["worker_start"].append(worker_start())
            for label, path in spaces.items():
                for name in names:
                    runs[f"{label}/{name}"].append(run(path, name))
        auto = {label: "inline" if runs_inline(load_space(path), None) else "pool"
                for label, path in spaces.items()}
    summary = {key: _median(rows) for key, rows in runs.items()}
    for label in spaces:
        if f"{label}/local1" in summary and f"{label}/local2" in summary:
            summary[f"{label}/speedup_local1_to_local2_wall"] = round(
                summary[f"{label}/local1"]["wall_s"] / summary[f"{label}/local2"]["wall_s"], 2)
    print(json.dumps({"machine": {"cores": os.cpu_count(), "python": sys.version.split()[0],
                                  "load_avg_at_start": load_start,
                                  "load_avg_at_end": os.getloadavg()},
                      "rounds": args.rounds, "big_samples": args.big_samples, "auto": auto,
                      "summary": summary, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
