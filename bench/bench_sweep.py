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
    allocation per design) and on the same space at `--big-samples` designs. Every run is a
    fresh Python process, as an `edgesim sweep` call is (the pool's fork server lives as long
    as its process, so a second sweep in one process would not pay the start). Per run:
    `wall_s` from making the executor to the last stored point (the pool starts with the
    executor, while the models load, so its start is inside it); `setup_s`, `eval_s` as the
    sweep reports them; `points_per_s` = points / wall_s; `cpu_s` the run's process and all its
    descendants (the fork server is stopped and reaped before the process exits, so its workers'
    time is counted); `predicted_s` what `edgesim.sweep.predicted_wall_s` predicts for that
    executor (pool sizes only) on the idle cores at the run's start (`idle_cores`), a quiet-machine
    figure in CPU seconds. `auto` is what `edgesim sweep` would pick (`auto_workers`: 0 = this
    process) at the end, on the idle cores then and on 2 idle cores.
(c) A pool's start, in a fresh process: wall and CPU seconds (fork server and workers
    included) from making a pool of 1 or 2 workers to every worker's first (empty) task done --
    the figures `edgesim.sweep.POOL_START_S` and `FORK_S` are set from.

Each round runs every measurement once, in turn, so load on the shared machine hits all alike;
the summary takes the median over rounds. The machine's load average is recorded at the start
and the end; on a shared machine (load above the cores) wall times are inflated and
`idle_cores` is 1, which is why the predictions are quoted per run.

Usage: python bench/bench_sweep.py [--rounds 2] [--big-samples 10000]
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
    auto_workers,
    best_workers,
    idle_cores,
    predicted_timings,
    predicted_wall_s,
    run_sweep,
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
    from edgesim.sweep.evaluate import Context, evaluate_batch, model_context, proxy_sensitivity
    from edgesim.sweep.kinds import hooks
    from edgesim.sweep.points import enumerate_points
    from hwmodels import prepared
    from hwmodels.target import load_target

    table = load_graph("zoo:resnet50").layer_table()
    bits = np.array([[8, 8]])
    call = prepared.prepare(table, bits, load_target("systolic-16x16"))
    reps = 2000
    one_cpu = _best_cpu(lambda: [prepared.run(call) for _ in range(reps)])[0] / reps
    space = load_space(space_file)
    points = enumerate_points(space)
    ctx = Context(space, (model_context(space, 0, proxy_sensitivity),))
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


def _reap_fork_server() -> None:
    """Stop this process's pool fork server, if one runs, and wait for it: its CPU time (and
    that of the workers it reaped) then counts in this process's children."""
    from multiprocessing import forkserver

    server = forkserver._forkserver  # noqa: SLF001 - the module's own singleton
    if getattr(server, "_forkserver_pid", None) is not None:
        server._stop()  # noqa: SLF001 - closes its alive pipe and waits for it


def start_worker(workers: int) -> dict:
    """(c), in a fresh process: a pool's start, to every worker's first task done."""
    cpu, start = _cpu_s(), time.perf_counter()
    with LocalExecutor(workers) as ex:
        list(ex.map_unordered(operator.is_, None, list(range(workers))))  # picklable no-ops
        wall = time.perf_counter() - start
    _reap_fork_server()
    return {"wall_s": round(wall, 2), "cpu_s": round(_cpu_s() - cpu, 2)}


def sweep_worker(space_file: str, name: str) -> dict:
    """(b), in a fresh process: one sweep of the space on executor `name`."""
    from edgesim.sweep import idle_cores, predicted_timings, predicted_wall_s

    space = load_space(space_file)
    cores = idle_cores()
    workers = {"inline": 0, "local1": 1, "local2": 2}.get(name)
    predicted = (None if workers is None
                 else round(predicted_wall_s(predicted_timings(space), workers, cores), 2))
    cpu, start = _cpu_s(), time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        with EXECUTORS[name]() as ex:
            s = run_sweep(space, out, executor=ex)
    wall = time.perf_counter() - start
    _reap_fork_server()
    return {"points": s.computed, "errors": s.errors, "wall_s": round(wall, 2),
            "setup_s": round(s.setup_s, 2), "eval_s": round(s.eval_s, 2),
            "points_per_s": round(s.computed / wall, 1), "cpu_s": round(_cpu_s() - cpu, 2),
            "idle_cores": cores, "predicted_s": predicted}


def _fresh(call: str) -> dict:
    """Run `call` (an expression on this module, `m`) in a fresh Python process."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r});"
            f"import importlib.util as u; s = u.spec_from_file_location('b', {__file__!r});"
            f"m = u.module_from_spec(s); s.loader.exec_module(m);"
            f"import json; print(json.dumps({call}))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def worker_start(workers: int) -> dict:
    return _fresh(f"m.start_worker({workers})")


def run(space_file: Path, name: str) -> dict:
    """One sweep of the space on executor `name`, in a fresh process."""
    return _fresh(f"m.sweep_worker({str(space_file)!r}, {name!r})")


def _median(rows: list[dict]) -> dict:
    return {k: None if rows[0][k] is None else statistics.median(r[k] for r in rows)
            for k in rows[0]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--big-samples", type=int, default=10000)
    p.add_argument("--executors", default=",".join(EXECUTORS))
    args = p.parse_args()
    names = args.executors.split(",")
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        spaces = {"shipped": SHIPPED,
                  "big": variant_space(Path(tmp), "big", args.big_samples)}
        fixed = variant_space(Path(tmp), "fixed10000", 10_000, fixed_w8a8=True)
        runs: dict[str, list[dict]] = {"costcall": [], "pool_start_1": [], "pool_start_2": []}
        runs.update({f"{s}/{n}": [] for s in spaces for n in names})
        for _ in range(args.rounds):
            runs["costcall"].append(costcall(fixed))
            for workers in (1, 2):
                runs[f"pool_start_{workers}"].append(worker_start(workers))
            for label, path in spaces.items():
                for name in names:
                    runs[f"{label}/{name}"].append(run(path, name))
        auto = {label: {"idle_cores_now": idle_cores(),
                        "now": auto_workers(load_space(path)),
                        "on_2_idle_cores": best_workers(predicted_timings(load_space(path)), 2),
                        "predicted_s_on_2_idle_cores": {
                            n: round(predicted_wall_s(predicted_timings(load_space(path)), n, 2),
                                     2) for n in (0, 1, 2)}}
                for label, path in spaces.items()}
    summary = {key: _median(rows) for key, rows in runs.items()}
    for label in spaces:  # the fastest executor measured, to hold against `auto`
        walls = {n: summary[f"{label}/{n}"]["wall_s"] for n in names}
        summary[f"{label}/fastest_measured"] = min(walls, key=walls.__getitem__)
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
