"""Peak memory of `simulate` on decoders, before and after shape-only loading. Prints JSON.

Builds KV-cache decoders with the zoo's builder (`edgesim.zoo.decoder.kv_decoder`) and saves
them with external data under /tmp (never committed; reused when present): a ~0.27 B one
(hidden 1024, 16 layers, MLP 4096, vocab 32000) run on both sides, and a ~1.04 B one
(Llama-3.2-1B-like: hidden 2048, 16 layers, 32 / 8 heads, MLP 8192, vocab 32000, tied) run on
the after side only (the before side would hold ~3.6 copies of its 4.2 GB of fp32 weights,
which this shared machine cannot spare). Then `edgesim simulate zoo:llama-3.1-8b` (a
config-only 8 B decoder, no weights at all) on both sides. Each measurement is a fresh
process; its peak RSS is `ru_maxrss` of that child.

Usage: python bench/bench_simulate_memory.py [--before /work/main] [--skip-1b]
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
SIZES = {"0.27b": dict(vocab=32000, hidden=1024, layers=16, heads=16, kv_heads=4,
                       intermediate=4096),
         "1.04b": dict(vocab=32000, hidden=2048, layers=16, heads=32, kv_heads=8,
                       intermediate=8192)}
BUILD = """
import math, onnx
from edgesim.zoo.decoder import DecoderShape, kv_decoder
m = kv_decoder(DecoderShape(**{shape}))
print(sum(math.prod(t.dims) for t in m.graph.initializer))
onnx.save(m, {path!r}, save_as_external_data=True, all_tensors_to_one_file=True,
          location="decoder.data", size_threshold=1024)
"""
SIMULATE = """
import resource, time
from edgesim import api
t = time.perf_counter()
s = api.simulate({path!r}, "rpi5", bits=4, input_shapes={shapes!r})
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _run(repo: Path, code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(repo)}
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True, env=env, cwd=repo).stdout.strip()


def build(name: str) -> tuple[Path, int | None]:
    path = Path(f"/tmp/edgesim-decoder-{name}/decoder.onnx")
    if path.exists():
        return path, None
    path.parent.mkdir(parents=True, exist_ok=True)
    params = _run(HERE, BUILD.format(shape=SIZES[name], path=str(path)))
    return path, int(params.splitlines()[-1])


def simulate(repo: Path, path: Path, layers: int, kv_heads: int, head_dim: int) -> dict:
    shapes = {"input_ids": (1, 1), **{f"past_key_values.{i}.{kv}": (1, kv_heads, 127, head_dim)
                                      for i in range(layers) for kv in ("key", "value")}}
    seconds, rss_kib = _run(repo, SIMULATE.format(path=str(path), shapes=shapes)).split()
    return {"wall_s": round(float(seconds), 2), "peak_rss_mb": round(int(rss_kib) / 1024)}


CLI_RSS = """
import resource, runpy, sys
sys.argv = ["edgesim", "simulate", "zoo:llama-3.1-8b", "--target", "rpi5", "--json"]
try:
    runpy.run_module("edgesim", run_name="__main__")
except SystemExit:
    pass
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def config_only(repo: Path) -> dict:
    """The CLI's simulate of a config-only 8 B decoder, in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(repo)}
    err = subprocess.run([sys.executable, "-c", CLI_RSS], check=True, capture_output=True,
                         text=True, env=env, cwd=repo).stderr
    return {"peak_rss_mb": round(int(err.strip().splitlines()[-1]) / 1024)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", default="/work/main")
    p.add_argument("--skip-1b", action="store_true")
    args = p.parse_args()
    sides = {"before": Path(args.before), "after": HERE}
    out: dict = {"config_only_llama_3_1_8b": {s: config_only(r) for s, r in sides.items()}}
    for name in ["0.27b"] + ([] if args.skip_1b else ["1.04b"]):
        sz = SIZES[name]
        path, params = build(name)
        dims = (sz["layers"], sz["kv_heads"], sz["hidden"] // sz["heads"])
        run_sides = sides if name == "0.27b" else {"after": HERE}
        out[f"decoder_{name}"] = {
            "onnx": str(path), "params": params,
            "external_data_mb": round((path.parent / "decoder.data").stat().st_size / 2**20),
            **{s: simulate(r, path, *dims) for s, r in run_sides.items()}}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
