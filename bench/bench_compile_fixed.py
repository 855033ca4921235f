"""The compile's fixed costs in CPU seconds, per tree, interleaved. Prints JSON.

Three probes, each in a fresh process with its tree first on PYTHONPATH (this checkout, and
`--baseline DIR` if given), alternating trees round by round; figures are medians over rounds
of the process's own CPU seconds (`time.process_time`: a loaded shared machine inflates them
far less than wall time):

- `startup`: what `edgesim compile` runs before its first phase, step by step (the CLI and its
  parser, the plot process's start, numpy / onnx / onnxruntime / numba, edgesim's modules,
  numba's registries), with the bytecode cached (`PYTHONPYCACHEPREFIX`, as an installed copy
  has it) and without (`PYTHONDONTWRITEBYTECODE=1`: every module compiled from source);
- `load`: `edgesim.loading.load_graph` of each real model (bench/real_models, fetched with pip
  into `--cache`) and zoo resnet18, warm (imports paid), and how many whole-model shape
  inferences and reference runs one load makes;
- `fidelity_metrics`: `edgesim.evaluate.fidelity_metrics` on an output of PP-OCR's shape
  (32 samples x 40 x 6625), CPU seconds and traced peak MiB.

    python bench/bench_compile_fixed.py [--baseline /tmp/base] [--rounds 3] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

STARTUP = r"""
import json, time
marks, last = {"python_and_site": time.process_time()}, [time.process_time()]
def mark(name):
    now = time.process_time(); marks[name] = now - last[0]; last[0] = now
import edgesim.cli as cli; cli.build_parser(); mark("cli_and_parser")
from edgesim.report_plots import plotter
plots = plotter("process"); mark("plot_process_start")
with cli.collection_paused():
    import numpy; mark("numpy")
    import onnx; mark("onnx")
    import onnxruntime; mark("onnxruntime")
    import numba; mark("numba")
    import edgesim.float_pass, edgesim.pipeline, edgesim.quantize, edgesim.sparsity
    import compiler.frontend; mark("edgesim_modules")
from compiler.numba_start import load_registries
load_registries(); mark("numba_registries")
plots.stop()
marks["total"] = time.process_time()
print(json.dumps(marks))
"""

LOAD = r"""
import json, sys, time
import compiler.frontend.static_shapes as ss
counts = {"inferred_shapes": 0, "run_shapes": 0}
for name in counts:
    def counted(*a, _f=getattr(ss, name), _n=name):
        counts[_n] += 1
        return _f(*a)
    setattr(ss, name, counted)
from edgesim.loading import load_graph
path, kw = sys.argv[1], json.loads(sys.argv[2])
load_graph(path, **kw)  # imports (onnx.reference where an If needs it) paid here
made = dict(counts)
times = []
for _ in range(4):
    start = time.process_time()
    load_graph(path, **kw)
    times.append(time.process_time() - start)
print(json.dumps({"cpu_s": sorted(times)[1], **made}))
"""

METRICS = r"""
import json, time, tracemalloc
import numpy as np
from edgesim.evaluate import fidelity_metrics
rng = np.random.default_rng(0)
ref = rng.random((32, 40, 6625), dtype=np.float32)
test = ref + rng.normal(0, 1e-3, ref.shape).astype(np.float32)
tracemalloc.start()
start = time.process_time()
fidelity_metrics(ref, test, "tensor")
cpu = time.process_time() - start
peak = tracemalloc.get_traced_memory()[1]
print(json.dumps({"cpu_s": cpu, "peak_mib": peak / 2**20}))
"""


def _run(tree: Path, args: list[str], pycache: str = "") -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    if pycache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = pycache
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    out = subprocess.run([sys.executable, *args], env=env, cwd=tree, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _models(cache: Path, tmp: Path) -> dict[str, tuple[str, dict]]:
    """name -> (ONNX path, load_graph keyword arguments)."""
    import importlib

    import onnx

    sys.path.insert(0, str(ROOT / "bench"))
    from edgesim import zoo

    out = {}
    for name in ("silero", "magika", "ppocr"):
        model = importlib.import_module(f"real_models.{name}").load(cache, 2)
        kw = dict(model.compile_kw)
        out[name] = (str(model.path), {k: kw[k] for k in ("input_shapes", "input_values",
                                                           "batch_axes") if k in kw})
    onnx.save(zoo.build("resnet18"), tmp / "resnet18.onnx")
    out["resnet18"] = (str(tmp / "resnet18.onnx"), {})
    return out


def _medians(runs: list[dict]) -> dict:
    return {k: round(statistics.median(r[k] for r in runs), 4) for k in runs[0]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", help="an older edgesim tree to run interleaved")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cache", help="folder for downloaded packages")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_real_models import cache_dir

    trees = {"this": ROOT, **({"baseline": Path(args.baseline)} if args.baseline else {})}
    load = os.getloadavg()
    runs: dict[str, dict[str, list[dict]]] = {}
    with tempfile.TemporaryDirectory() as d:
        models = _models(cache_dir(args.cache), Path(d))
        pycache = str(Path(d) / "pycache")
        probes = {"startup_bytecode_cached": lambda t: _run(t, ["-c", STARTUP], pycache),
                  "startup_from_source": lambda t: _run(t, ["-c", STARTUP]),
                  "fidelity_metrics": lambda t: _run(t, ["-c", METRICS], pycache),
                  **{f"load_{n}": (lambda t, path=path, kw=kw: _run(
                      t, ["-c", LOAD, path, json.dumps(kw)], pycache))
                     for n, (path, kw) in models.items()}}
        for tree in trees.values():  # fill the bytecode cache: not timed
            _run(tree, ["-c", STARTUP], pycache)
        for r in range(args.rounds):
            order = list(trees.items()) if r % 2 == 0 else list(trees.items())[::-1]
            for probe, measure in probes.items():
                for side, tree in order:
                    runs.setdefault(probe, {}).setdefault(side, []).append(measure(tree))
                    print(probe, side, runs[probe][side][-1], file=sys.stderr, flush=True)
    result = {"rounds": args.rounds, "load_average_before": load,
              "load_average_after": os.getloadavg(),
              "probes": {probe: {side: _medians(v) for side, v in sides.items()}
                         for probe, sides in runs.items()}}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
