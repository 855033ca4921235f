"""`edgesim validate` on this machine over models x threads x precisions; prints JSON.

For each model, thread count and precision: per-group median |error|, share within +-25 %,
total error (predicted / measured wall time - 1); for each model and thread count the
quantisation speed-up (fp32 / quantised latency), predicted and measured, and whether the
predicted one lies on the measured side of 1 wherever the measured change exceeds 10 %.
The host target is probed once (`--host FILE` reuses a YAML `edgesim target probe` wrote).

Usage: python bench/bench_validate.py [--models a,b] [--threads 1,2] [--bits fp32,8,4]
       [--runs 20] [--host host.yaml]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgesim.validate import validate  # noqa: E402
from hwmodels.probe import probe_host  # noqa: E402
from hwmodels.target import load_target  # noqa: E402

MODELS = ("digits_cnn", "digits_transformer", "mobilenet_v2", "resnet18", "resnet50",
          "vit_tiny", "minilm", "llama")


def _row(v) -> dict:
    s = v.summary()
    return {"groups": s["groups"], "median_abs_err": round(s["median_abs_err"], 3),
            "within_25": round(s["within_25"], 3), "total_error": round(s["total_error"], 3),
            "predicted_ms": round(v.predicted_ms, 3), "measured_ms": round(v.measured_ms, 3)}


def _speedups(runs: dict) -> list[dict]:
    out = []
    for (model, threads, bits), r in runs.items():
        base = runs.get((model, threads, "fp32"))
        if bits == "fp32" or base is None:
            continue
        meas = base["measured_ms"] / r["measured_ms"]
        pred = base["predicted_ms"] / r["predicted_ms"]
        out.append({"model": model, "threads": threads, "bits": bits,
                    "measured": round(meas, 3), "predicted": round(pred, 3),
                    "sign_checked": abs(meas - 1) > 0.10,
                    "sign_right": (meas > 1) == (pred > 1)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--bits", default="fp32,8,4")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--host", help="host target YAML (default: probe now)")
    args = ap.parse_args()
    host = load_target(args.host) if args.host else probe_host()
    runs = {}
    for model in args.models.split(","):
        for threads in map(int, args.threads.split(",")):
            for bits in args.bits.split(","):
                v = validate(f"zoo:{model}", host, bits=bits, threads=threads, runs=args.runs)
                runs[(model, threads, bits)] = _row(v)
    speed = _speedups(runs)
    checked = [s for s in speed if s["sign_checked"]]
    print(json.dumps({
        "host": host.description, "runs": [{"model": m, "threads": t, "bits": b, **r}
                                           for (m, t, b), r in runs.items()],
        "quant_speedups": speed,
        "sign_right_where_change_over_10pct": f"{sum(s['sign_right'] for s in checked)}"
                                              f"/{len(checked)}"}, indent=1))


if __name__ == "__main__":
    main()
