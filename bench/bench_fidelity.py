"""Fidelity of the CPU cost model against published latencies; prints JSON.

The table `bench/fidelity/measurements.csv` holds published end-to-end latencies with their
conditions (board, clock, runtime, threads, precision, model, input size) and a source per row;
`bench/fidelity/layers.csv` the per-layer shapes of the measured networks (derived from the
runtime's own network files, see `bench/fidelity/extract_ncnn.py`). For every row the model
predicts the latency on the row's target at the row's clock, thread count and precision.

Figures: median absolute error |pred / meas - 1|, share of rows within +-10 % / +-25 %, and the
bias (geometric mean of pred / meas) overall and per device / runtime / precision / threads;
1 -> N thread speed-ups (pred vs meas); int8-vs-fp32 speed-up direction. Rows whose model is in
`FIT_MODELS` (or whose target is in `FIT_TARGETS`) are reported separately from the held-out
rest, and rows of the runtimes in `SEPARATE_RUNTIMES` (XNNPACK, TensorFlow Lite Micro on a
Cortex-M85) on their own, per runtime: `--fit` fits each target's
`parallel_efficiency` (the one fitted number; every other comes from its cited source) to the
multi-thread rows of those models and prints the values the target files record.

`--decompose` lists the Pi 1 -> 4 thread pairs outside +-15 % with their predicted times
split by what bounds each layer, and the speed-up without the fitted efficiency.

Rows of a build no profile models (`UNMODELLED_RUNTIMES`: the Zero 2 W rows of ncnn's README,
a 32-bit armv7 build) stay in the table with their evidence and are scored nowhere; their
figures against the nearest profile are printed under `unmodelled_builds`.

`--cross-check` scores `bench/fidelity/crosscheck.csv`, rows kept out of the headline figures:
the Pi 3B+ table of January 2022 (the ncnn release the armv7 Zero 2 W rows ran, on the Pi 3's
board); and compares the Zero 2 W / Pi 3B+ latency ratio at one release, measured and
predicted, row by row.

`--rank` lists the rows outside +-25 % worst first (fitted / held-out / separate) and each
device x model's share of the misses (summed |log(pred / meas)|).

Usage: python bench/bench_fidelity.py [--runtime as-measured|onnxruntime] [--rows] [--rank]
       [--fit] [--decompose] [--cross-check]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compiler.ir import KIND_CATEGORY, KIND_CODE, LayerTable  # noqa: E402
from hwmodels import cpu  # noqa: E402
from hwmodels.cost import BOUND_NAMES, evaluate  # noqa: E402
from hwmodels.target import load_target  # noqa: E402

HERE = Path(__file__).resolve().parent / "fidelity"
BITS = {"fp32": (32, 32), "fp16": (16, 16), "int8": (8, 8)}
# models whose rows the one fitted parameter per target (`parallel_efficiency`) was fitted on
FIT_MODELS = ("mobilenet", "resnet18", "squeezenet")
# targets whose kernel rates were set with their rows in view (see their `sources`)
FIT_TARGETS = ("stm32l4r5", "nrf5340", "stm32u575")
# runtimes of the rows added in round 3 (XNNPACK's README table, MLPerf Tiny v1.2 Cortex-M85):
# reported on their own, outside the ncnn / MLPerf Tiny v1.0 held-out and fitted splits
SEPARATE_RUNTIMES = ("xnnpack", "tflm-cmsis-nn")
# builds no runtime profile models, kept in the table with their evidence and out of every
# score (their figures are printed on their own, predicted with the nearest profile): the
# Zero 2 W rows of ncnn's README were built as 32-bit ncnn (Tencent/ncnn issue #3485:
# cmake -D PI3=ON, armv7l, -mfpu=neon), whose armv7 kernels (16 q registers, smaller register
# tiles, no fused multiply-add under -mfpu=neon) are not the aarch64 kernels of the profiles
UNMODELLED_RUNTIMES = {"ncnn-2022-armv7": "ncnn-2022"}
EFF_GRID = np.round(np.arange(0.05, 1.0001, 0.01), 2)
GROUPS = ("device", "runtime", "precision", "threads")


def read_csv(name: str) -> list[dict[str, str]]:
    with open(HERE / name, newline="") as f:
        return list(csv.DictReader(f))


def layer_tables() -> dict[str, LayerTable]:
    """One LayerTable per network of layers.csv."""
    by_model: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in read_csv("layers.csv"):
        by_model[row["model"]].append(row)
    return {m: _table(rows) for m, rows in by_model.items()}


def _table(rows: list[dict[str, str]]) -> LayerTable:
    col = {k: np.array([int(r[k]) for r in rows], dtype=np.int64)
           for k in ("m", "n", "k", "groups", "a_in", "a_out", "w_elems", "ops",
                     "transcendentals", "function_nodes")}
    kinds = [r["kind"] for r in rows]
    macs = col["m"] * col["n"] * col["k"] * col["groups"]
    ones = np.ones(len(rows))
    return LayerTable(tuple(r["layer"] for r in rows),
                      np.array([KIND_CODE[k] for k in kinds], np.int32),
                      np.array([KIND_CATEGORY[k] for k in kinds], np.int32),
                      col["m"], col["n"], col["k"], col["groups"], macs, col["ops"],
                      col["w_elems"], col["a_in"], col["a_out"], col["a_in"] * 4,
                      col["a_out"] * 4, col["w_elems"] * 4, ones, ones,
                      transcendentals=col["transcendentals"],
                      function_nodes=col["function_nodes"])


def predict_ms(row: dict[str, str], tables: dict[str, LayerTable], runtime: str) -> float:
    """The model's latency for one measurement row, in milliseconds."""
    target = _target(row)
    rt = _runtime(row["runtime"] if runtime == "as-measured" else runtime)
    bits = np.array([BITS[row["precision"]]])
    cost = evaluate(tables[row["model"]], bits, target, threads=int(row["threads"]), runtime=rt)
    return float(cost.latency_s.sum()) * 1e3


def _runtime(name: str) -> str:
    """The cost model's profile for a row's runtime (an unmodelled build: the nearest
    profile; MCU runtimes: the CPU default, unused)."""
    name = UNMODELLED_RUNTIMES.get(name, name)
    return name if name in cpu.RUNTIMES or name in cpu.LEGACY_RUNTIMES else "onnxruntime"


def scored_rows() -> list[dict[str, str]]:
    """The rows of measurements.csv whose build a runtime profile models."""
    return [r for r in read_csv("measurements.csv") if r["runtime"] not in UNMODELLED_RUNTIMES]


def _target(row: dict[str, str]) -> object:
    """The row's target at the row's clock (a variant when the clock differs)."""
    target = load_target(row["target"])
    ghz = float(row["clock_ghz"])
    mcu = getattr(target, "kind", "") == "mcu"
    have = target.clock_mhz / 1e3 if mcu else target.clock_ghz
    if abs(have - ghz) > 1e-9:
        field, value = ("clock_mhz", ghz * 1e3) if mcu else ("clock_ghz", ghz)
        target = load_target(f"{row['target']}:{field}={value}")
    return target


def _grid_ms(row: dict[str, str], tables: dict[str, LayerTable], threads: int) -> np.ndarray:
    """Predicted latency (ms) of a row at `threads` for every parallel_efficiency of EFF_GRID."""
    configs = cpu.variants(_target(row), parallel_efficiency=list(EFF_GRID))
    rt = _runtime(row["runtime"])
    cost = cpu.evaluate_configs(tables[row["model"]], np.array([BITS[row["precision"]]]),
                                configs, threads=threads, runtime=rt)
    return cost.latency_s.sum(axis=(1, 2)) * 1e3


def fit_parallel_efficiency(tables: dict[str, LayerTable]) -> dict[str, float]:
    """Per target: the `parallel_efficiency` on EFF_GRID minimising the squared log error of
    the 1 -> N thread speed-ups of the FIT_MODELS rows (speed-ups, not latencies, so that the
    single-thread error does not leak into the thread parameter)."""
    loss: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(len(EFF_GRID)))
    rows = [r for r in scored_rows()
            if r["model"] in FIT_MODELS and r["runtime"] not in SEPARATE_RUNTIMES]
    one = {(r["target"], r["model"], r["precision"]): r for r in rows if r["threads"] == "1"}
    for row in rows:
        base = one.get((row["target"], row["model"], row["precision"]))
        if row["threads"] == "1" or base is None:
            continue
        pred = _grid_ms(base, tables, 1) / _grid_ms(row, tables, int(row["threads"]))
        meas = float(base["latency_ms"]) / float(row["latency_ms"])
        loss[row["target"]] += np.log(pred / meas) ** 2
    return {t: float(EFF_GRID[int(np.argmin(v))]) for t, v in sorted(loss.items())}


def summary(ratios: list[float]) -> dict[str, float]:
    """Median |error|, shares within +-10 / +-25 %, bias (geometric mean of pred / meas)."""
    err = [abs(r - 1.0) for r in ratios]
    return {"n": len(ratios), "median_abs_err": round(statistics.median(err), 3),
            "within_10": round(sum(e <= 0.10 for e in err) / len(err), 3),
            "within_25": round(sum(e <= 0.25 for e in err) / len(err), 3),
            "bias": round(float(np.exp(np.mean(np.log(ratios)))), 3)}


def grouped_rows(rows: list[dict], key: str) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[str(r[key])].append(r)
    return dict(sorted(groups.items()))


def grouped(rows: list[dict], key: str) -> dict[str, dict[str, float]]:
    return {k: summary([r["ratio"] for r in v]) for k, v in grouped_rows(rows, key).items()}


def _pairs(rows: list[dict], vary: str, a: str, b: str) -> list[tuple[dict, dict]]:
    """Rows equal in everything but `vary`, which is `a` in the first and `b` in the second."""
    key = ("device", "runtime", "precision", "threads", "model")
    index = {tuple(r[k] for k in key): r for r in rows}
    out = []
    for r in rows:
        if r[vary] == a:
            other = index.get(tuple(b if k == vary else r[k] for k in key))
            if other is not None:
                out.append((r, other))
    return out


def thread_scaling(rows: list[dict]) -> dict:
    """1 -> 4 thread speed-ups: predicted vs measured, per device; the pairs outside 15 %."""
    per: dict[str, list[float]] = defaultdict(list)
    means: dict[str, list[tuple[float, float]]] = defaultdict(list)
    detail, outside = [], []
    for one, four in _pairs(rows, "threads", "1", "4"):
        meas, pred = one["meas_ms"] / four["meas_ms"], one["pred_ms"] / four["pred_ms"]
        per[one["device"]].append(pred / meas)
        means[one["device"]].append((meas, pred))
        detail.append((meas, pred))
        if abs(pred / meas - 1) > 0.15:
            outside.append(f"{one['device']} {one['runtime']} {one['model']} "
                           f"{one['precision']}: measured {meas:.2f}, predicted {pred:.2f}")
    return {"n": len(detail), "within_15": round(sum(abs(p / m - 1) <= 0.15
                                                     for m, p in detail) / len(detail), 3),
            "n_within_15": len(detail) - len(outside), "outside_15": outside,
            "over_predicted": sum(p > m for m, p in detail),
            "measured_range": [round(min(m for m, _ in detail), 2),
                               round(max(m for m, _ in detail), 2)],
            "predicted_range": [round(min(p for _, p in detail), 2),
                                round(max(p for _, p in detail), 2)],
            "ratio_pred_over_meas_per_device": {
                d: round(float(np.exp(np.mean(np.log(v)))), 3) for d, v in sorted(per.items())},
            "mean_speedup_meas_pred_per_device": {
                d: [round(float(np.mean([m for m, _ in v])), 2),
                    round(float(np.mean([p for _, p in v])), 2)] for d, v in sorted(means.items())}}


def quant_direction(rows: list[dict]) -> dict:
    """int8 vs fp32: is the predicted speed-up on the measured side of 1 (|change| > 10 %)?"""
    checked, right, per = 0, 0, defaultdict(lambda: [0, 0])
    for fp, q in _pairs(rows, "precision", "fp32", "int8"):
        meas, pred = fp["meas_ms"] / q["meas_ms"], fp["pred_ms"] / q["pred_ms"]
        if abs(meas - 1.0) > 0.10:
            ok = (meas > 1.0) == (pred > 1.0)
            checked, right = checked + 1, right + ok
            per[fp["device"]][0] += 1
            per[fp["device"]][1] += ok
    return {"pairs_with_change_over_10pct": checked, "sign_right": right,
            "per_device_checked_right": {d: v for d, v in sorted(per.items())}}


def _split_ms(row: dict[str, str], tables: dict[str, LayerTable], threads: int,
              **changes: object) -> dict[str, float]:
    """A row's predicted latency at `threads` (ms), summed per layer bound class."""
    target = dataclasses.replace(_target(row), **changes)
    cost = evaluate(tables[row["model"]], np.array([BITS[row["precision"]]]), target,
                    threads=threads, runtime=_runtime(row["runtime"]))
    ms, bound = cost.latency_s[:, 0] * 1e3, cost.bound[:, 0]
    split = {name: float(ms[bound == b].sum()) for b, name in enumerate(BOUND_NAMES)}
    return {"total": float(ms.sum()), **split}


def _rounded(split: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 2) for k, v in split.items()}


def decompose(tables: dict[str, LayerTable]) -> list[dict]:
    """Every Pi 1 -> 4 thread pair outside +-15 %: measured and predicted speed-ups, the
    predicted times split by what bounds each layer (compute, on-chip, DRAM, overhead), and
    the speed-up with `parallel_efficiency` = 1 (what the fitted number takes away)."""
    rows = [r for r in scored_rows() if r["runtime"] not in SEPARATE_RUNTIMES]
    one = {(r["target"], r["model"], r["precision"]): r for r in rows if r["threads"] == "1"}
    out = []
    for four in (r for r in rows if r["threads"] == "4"):
        base = one.get((four["target"], four["model"], four["precision"]))
        if base is None:
            continue
        t1, t4 = _split_ms(base, tables, 1), _split_ms(four, tables, 4)
        meas = float(base["latency_ms"]) / float(four["latency_ms"])
        if abs(t1["total"] / t4["total"] / meas - 1.0) > 0.15:
            ideal = _split_ms(four, tables, 4, parallel_efficiency=1.0)["total"]
            out.append({k: four[k] for k in ("target", "model", "precision")}
                       | {"meas_speedup": round(meas, 2),
                          "pred_speedup": round(t1["total"] / t4["total"], 2),
                          "pred_speedup_eff1": round(t1["total"] / ideal, 2),
                          "meas_ms": [float(base["latency_ms"]), float(four["latency_ms"])],
                          "pred_ms_1t": _rounded(t1), "pred_ms_4t": _rounded(t4)})
    return out


def rank_misses(rows: list[dict]) -> dict:
    """Rows outside +-25 %, worst first by |log(pred / meas)|, marked fitted / held-out /
    separate, and each (device, model)'s share of the summed |log| of all misses."""
    miss = sorted((r for r in rows if abs(r["ratio"] - 1.0) > 0.25),
                  key=lambda r: -abs(np.log(r["ratio"])))
    total = sum(abs(float(np.log(r["ratio"]))) for r in miss) or 1.0
    share: dict[str, float] = defaultdict(float)
    for r in miss:
        share[f"{r['device']} {r['model']}"] += abs(float(np.log(r["ratio"]))) / total
    return {"n_outside_25": len(miss),
            "rows": [f"{r['device']} {r['runtime']} {r['model']} {r['precision']} "
                     f"t{r['threads']}: {r['ratio']:.2f} ({_split_of(r)})" for r in miss],
            "share_by_device_model": {k: round(v, 3) for k, v in
                                      sorted(share.items(), key=lambda kv: -kv[1])}}


def _split_of(row: dict) -> str:
    """Which split of the report a row counts in."""
    if row["runtime"] in SEPARATE_RUNTIMES:
        return "separate"
    fitted = row["model"] in FIT_MODELS or row["target"] in FIT_TARGETS
    return "fitted" if fitted else "held-out"


def run(runtime: str) -> tuple[dict, list[dict]]:
    tables = layer_tables()
    rows = []
    for m in read_csv("measurements.csv"):
        pred = predict_ms(m, tables, runtime)
        meas = float(m["latency_ms"])
        rows.append({**{k: m[k] for k in ("device", "target", "runtime", "precision", "threads",
                                          "model")},
                     "meas_ms": meas, "pred_ms": round(pred, 3), "ratio": pred / meas})
    for r in rows:
        r["device"] = r["target"]
    unmodelled = [r for r in rows if r["runtime"] in UNMODELLED_RUNTIMES]
    rows = [r for r in rows if r not in unmodelled]
    separate = [r for r in rows if r["runtime"] in SEPARATE_RUNTIMES]
    main_rows = [r for r in rows if r not in separate]
    fitted = [r for r in main_rows if r["model"] in FIT_MODELS or r["target"] in FIT_TARGETS]
    held = [r for r in main_rows if r not in fitted]
    report = {"runtime_modelled": runtime, "overall": summary([r["ratio"] for r in rows]),
              "held_out": summary([r["ratio"] for r in held]),
              "fitted": summary([r["ratio"] for r in fitted]) if fitted else None,
              "separate_sources": grouped(separate, "runtime"),
              **{f"per_{g}": grouped(rows, g) for g in GROUPS},
              "per_model": grouped(rows, "model"),
              "thread_scaling_1_to_4": thread_scaling(rows),
              "int8_vs_fp32": quant_direction(rows),
              "unmodelled_builds": {k: _unscored(v) for k, v in
                                    grouped_rows(unmodelled, "runtime").items()}}
    return report, rows + unmodelled


def _unscored(rows: list[dict]) -> dict:
    """An unmodelled build's rows against the nearest profile: latency and 1 -> 4 figures."""
    pairs = thread_scaling(rows)
    return {"profile_used": UNMODELLED_RUNTIMES[rows[0]["runtime"]], **summary(
        [r["ratio"] for r in rows]), "thread_pairs_within_15": [pairs["n_within_15"], pairs["n"]]}


def cross_check(tables: dict[str, LayerTable]) -> dict:
    """The rows of `crosscheck.csv` scored per target and runtime profile, per thread count;
    and per thread count the median Zero 2 W / Pi 3B+ latency ratio at one ncnn release
    (the Zero 2 W rows of `measurements.csv` built for armv7, over the Pi 3B+ rows of
    January 2022, an aarch64 build), measured and predicted (both with aarch64 kernels: the
    gap is what the armv7 build costs, x 1.15 at one thread in round 10b)."""
    rows = read_csv("crosscheck.csv")
    ratios = [predict_ms(r, tables, "as-measured") / float(r["latency_ms"]) for r in rows]
    groups: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r, x in zip(rows, ratios):
        for t in ("all", r["threads"]):
            groups[f"{r['target']} {r['runtime']}"][t].append(x)
    zero = {(r["model"], r["precision"], r["threads"]): r for r in read_csv("measurements.csv")
            if r["target"] == "rpizero2w" and r["runtime"] in UNMODELLED_RUNTIMES}
    boards: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r, x in zip(rows, ratios):
        z = zero.get((r["model"], r["precision"], r["threads"]))
        if r["target"] != "rpi3" or z is None:
            continue
        boards[r["threads"]]["measured"].append(float(z["latency_ms"]) / float(r["latency_ms"]))
        boards[r["threads"]]["predicted"].append(predict_ms(z, tables, "as-measured")
                                                 / (x * float(r["latency_ms"])))
    return {"scores": {g: {t: summary(v) for t, v in d.items()} for g, d in groups.items()},
            "zero2w_over_pi3_same_release": {
                t: {k: round(statistics.median(v), 3) for k, v in d.items()}
                | {"n": len(d["measured"])} for t, d in sorted(boards.items())}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runtime", default="as-measured",
                    help="as-measured (each row's runtime profile) or a runtime name")
    ap.add_argument("--rows", action="store_true", help="also print every row")
    ap.add_argument("--fit", action="store_true",
                    help="print each target's fitted parallel_efficiency and exit")
    ap.add_argument("--rank", action="store_true",
                    help="also rank the rows outside +-25 %% and each device/model's share")
    ap.add_argument("--decompose", action="store_true",
                    help="print the 1 -> 4 thread pairs outside +-15 %% decomposed and exit")
    ap.add_argument("--cross-check", action="store_true",
                    help="score the rows of fidelity/crosscheck.csv and exit")
    args = ap.parse_args()
    if args.cross_check:
        print(json.dumps(cross_check(layer_tables()), indent=1))
        return
    if args.fit:
        print(json.dumps(fit_parallel_efficiency(layer_tables()), indent=1))
        return
    if args.decompose:
        print(json.dumps(decompose(layer_tables()), indent=1))
        return
    report, rows = run(args.runtime)
    if args.rank:
        report["misses"] = rank_misses([r for r in rows
                                        if r["runtime"] not in UNMODELLED_RUNTIMES])
    if args.rows:
        report["rows"] = rows
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
