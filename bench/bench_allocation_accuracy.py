"""Accuracy of emitted mixed-precision models at matched size, per sensitivity method.

For each trained model shipped with edgesim and each average-weight-bits budget, compile with
HAWQ, LRP, the data-free proxy and uniform sensitivities (exact allocation at the same budget,
so the same size), run the emitted model in onnxruntime on the held-out test split and report
accuracy against fp32. The target is the sparse MAC array, whose cost model counts true bits
(2/3/4/6/8), so a budget in bits is a budget in size. Prints JSON.

    python bench/bench_allocation_accuracy.py [--budgets 3,4,5] [--models digits_cnn]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import edgesim
from edgesim.zoo import load_digits_data

METHODS = ("hawq", "lrp", "proxy", "uniform")


def run(model: str, budget: float, method: str, data: dict) -> dict:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        r = edgesim.compile(
            f"zoo:{model}", target="sparse-mac-32x32", outdir=f"{out}/o", method=method,
            budget=f"bits={budget}", calib={"input": data["x_calib"], "labels": data["y_calib"]},
            eval_data={"input": data["x_test"], "labels": data["y_test"]})
        seconds = time.perf_counter() - start
    f = r.fidelity
    return {"model": model, "budget_bits": budget, "method": method,
            "avg_weight_bits": round(r.avg_weight_bits, 3), "accuracy": f["accuracy"],
            "fp32_accuracy": f["fp32_accuracy"],
            "drop_points": round(100 * (f["fp32_accuracy"] - f["accuracy"]), 2),
            "cosine": round(f["cosine"], 5), "weight_bytes": r.result.weight_bytes,
            "compile_s": round(seconds, 2)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--budgets", default="2.5,3,3.5,4,5,6")
    p.add_argument("--models", default="digits_cnn,digits_transformer")
    args = p.parse_args()
    data = load_digits_data()
    rows = [run(m, float(b), method, data) for m in args.models.split(",")
            for b in args.budgets.split(",") for method in METHODS]
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
