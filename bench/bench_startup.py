"""CLI start-up before and after issue 17, interleaved. Prints JSON.

Per side (its repository first on PYTHONPATH), wall seconds of fresh processes (median of
rounds): `python -c pass` (the interpreter alone, the floor), `edgesim --version`, the CLI up
to the first work of a simulate (parsing `simulate zoo:digits_cnn --target rpi5`: everything
imported before the command starts), and the whole simulate of the small trained digits CNN
(model load, cost kernels, report), and of zoo mobilenet_v2 and resnet18. `imports_s` sums
`-X importtime`'s top-level cumulative times of the parse-only run (CPU-bound, so less noisy
than wall time); `cpu_s` per case is the child's user + system CPU seconds (from getrusage),
which a loaded shared machine inflates far less than wall time.

Usage: python bench/bench_startup.py [--before /work/main] [--rounds 5]
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
SIM = ["simulate", "zoo:digits_cnn", "--target", "rpi5"]
PARSE = f"from edgesim import cli; cli.parse_args({SIM!r})"
CASES = {"python_pass_s": ["-c", "pass"], "version_s": ["-m", "edgesim", "--version"],
         "to_first_work_s": ["-c", PARSE], "simulate_digits_cnn_s": ["-m", "edgesim", *SIM],
         # larger networks (issue 17: their few hundred layer-evaluations run in Python now)
         "simulate_mobilenet_v2_s": ["-m", "edgesim", "simulate", "zoo:mobilenet_v2",
                                     "--target", "rpi5"],
         "simulate_resnet18_s": ["-m", "edgesim", "simulate", "zoo:resnet18", "--target",
                                 "rpi5"]}


def _children_cpu_s() -> float:
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def _wall(repo: Path, args: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one fresh process."""
    env = {**os.environ, "PYTHONPATH": str(repo)}
    cpu, start = _children_cpu_s(), time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, capture_output=True, env=env, cwd=repo)
    return time.perf_counter() - start, _children_cpu_s() - cpu


def _imports_s(repo: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(repo)}
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", PARSE], check=True,
                         capture_output=True, text=True, env=env, cwd=repo).stderr
    top = [line.split("|") for line in err.splitlines() if line.startswith("import time:")]
    return sum(int(c[1]) for c in top if c[1].strip().isdigit() and not c[2].startswith("  ")) / 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", default="/work/main")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    sides = {"before": Path(args.before), "after": HERE}
    load = os.getloadavg()
    keys = [*CASES, *(c.removesuffix("_s") + "_cpu_s" for c in CASES), "imports_s"]
    runs: dict[str, dict[str, list[float]]] = {s: {k: [] for k in keys} for s in sides}
    for _ in range(args.rounds):
        for case, argv in CASES.items():
            for side, repo in sides.items():
                wall, cpu = _wall(repo, argv)
                runs[side][case].append(round(wall, 3))
                runs[side][case.removesuffix("_s") + "_cpu_s"].append(round(cpu, 3))
        for side, repo in sides.items():
            runs[side]["imports_s"].append(round(_imports_s(repo), 3))
    summary = {s: {k: statistics.median(v) for k, v in r.items()} for s, r in runs.items()}
    print(json.dumps({"rounds": args.rounds, "load_avg_at_start": load,
                      "load_avg_at_end": os.getloadavg(),
                      "summary": summary, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
