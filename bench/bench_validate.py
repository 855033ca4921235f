"""`edgesim validate` on this machine over models x threads x precisions; prints JSON.

For each model, thread count and precision: per-group median |error|, share within +-25 %,
total error (predicted / measured wall time - 1); per thread count and precision (and over
all runs) the median of those per-run medians, the median over every group > 50 us of all
runs pooled, and the median |total error|; for each model and thread count the
quantisation speed-up (fp32 / quantised latency), predicted and measured, and whether the
predicted one lies on the measured side of 1 wherever the measured change exceeds 10 %.
The host target is probed once (`--host FILE` reuses a YAML `edgesim target probe` wrote).

On a shared, loaded machine (`--stat min`, the default) every node's time is its fastest
profiled run and the measured speed-up compares the sums of those node times: preemption
only adds time, so minima are the undisturbed kernels, while wall times of whole runs are
preempted in nearly every run once the load exceeds the cores; the profiler adds a few us
per node, so a small model's node sum overstates it: the measured time of a case is the lower
of the two (wall p10, node sum), and the predicted one the model's total. `--baseline-tree DIR`
recomputes the predictions with another checkout's cost model (a subprocess with that tree
on PYTHONPATH) against the same measurements, so before / after share one set of timings.

Several threads on a shared machine: a node's time comes only from the profiled runs in
which the pool's worker took part and no thread of the session waited on the run queue
(`edgesim.profile_runs`); each case reports how many runs were clean and, in `noisy`, why
`profile_runs.assess` calls its measurements disturbed (spread, halves that disagree, few
clean runs), and the cells are pooled a second time over the cases with a clean run that
are not noisy (`per_layer_and_total_clean_cases`; `noisy_cases` lists the rest); a speed-up
with a noisy case (separate or paired) is left out of the sign score
(`sign_right_with_noisy_cases` keeps it), a noisy case out of the thread scaling; for groups
measured at 1 and t threads the scaling error (predicted t / 1 ratio against the measured
one) separates the thread model from the one-thread kernels. `--paired-runs N`
re-measures every quantisation speed-up with the fp32 and quantised sessions open together
and run alternately (N runs each), so both see the same load, with a second fp32 session in
the rotation whose fp32 / fp32 ratio gives the noise floor; a multi-thread speed-up counts in
the sign score only with clean runs in all three and a change above max(10 %, floor), and
only where the separate sessions' speed-up is beyond that threshold on the same side (two
measurements of one quantity minutes apart that disagree show a machine state the floor does
not see: mobilenet_v2 1t W8A8 read 0.895 paired, every session ~25 % slower than usual, and
1.099 separately in one run); `sign_right_paired_only` keeps the paired-only score.

Usage: python bench/bench_validate.py [--models a,b] [--threads 1,2] [--bits fp32,8,4]
       [--runs 20] [--host host.yaml] [--stat min|median] [--baseline-tree DIR]
       [--baseline-host base.yaml] [--paired-runs N]
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgesim.validate import (  # noqa: E402
    finish,
    net_of_floor,
    optimised_nodes,
    profiled_session,
    profiler_floor_us,
    validate,
    waited_run,
)
from hwmodels.probe import probe_host  # noqa: E402
from hwmodels.target import load_target  # noqa: E402

MODELS = ("digits_cnn", "digits_transformer", "mobilenet_v2", "resnet18", "resnet50",
          "vit_tiny", "minilm", "llama")
BIG_GROUP_MS = 0.05  # per-layer goal counts groups measured above ~50 us (brief F12)
# run in the baseline tree: per-layer predictions (ms) of each case, as JSON on stdout
_BASELINE = """
import json, sys
from edgesim import assignment
from edgesim.api import load_graph
from edgesim.simulation import simulate_graph
from hwmodels.target import load_target
host, cases = load_target(sys.argv[1]), json.loads(sys.argv[2])
out = {}
for model, threads, bits in cases:
    g = load_graph(f"zoo:{model}")
    sim = simulate_graph(g, host, assignment.resolve(g, bits), threads=threads)
    out[f"{model}|{threads}|{bits}"] = {r.name: r.latency_ms for r in sim.layers}
print(json.dumps(out))
"""


def _groups(v, layer_ms: dict[str, float] | None = None) -> list[tuple[float, float]]:
    """(predicted, measured) ms per group; `layer_ms` re-prices the groups' layers."""
    return [(sum(layer_ms[n] for n in r.layers) if layer_ms else r.predicted_ms, r.measured_ms)
            for r in v.rows if r.measured_ms > 0]


def _errors(groups: list[tuple[float, float]], total_ms: float) -> dict:
    err = [abs(p / m - 1) for p, m in groups]
    big = [abs(p / m - 1) for p, m in groups if m > BIG_GROUP_MS]
    return {"median_abs_err": round(statistics.median(err), 3) if err else 0.0,
            "median_abs_err_over_50us": round(statistics.median(big), 3) if big else 0.0,
            "groups_over_50us": len(big),
            "within_25": round(sum(e <= 0.25 for e in err) / max(1, len(err)), 3),
            "predicted_ms": round(total_ms, 3)}


def _row(v, base: dict[str, float] | None) -> dict:
    measured = min(v.measured_ms, v.node_sum_ms)
    row = {"groups": len(v.rows), "clean_runs": v.clean_runs,
           "noisy": list(v.noise.reasons) if v.noise else [],
           "measured_wall_ms": round(v.measured_ms, 3),
           "node_sum_ms": round(v.node_sum_ms, 3), "measured_ms": round(measured, 3),
           "after": _errors(_groups(v), v.predicted_ms)}
    row["after"]["big_group_errors"] = _big(_groups(v))
    row["after"]["total_error"] = round(v.predicted_ms / measured - 1, 3)
    row["group_ms"] = {r.layers[0]: [round(r.predicted_ms, 4), round(r.measured_ms, 4)]
                       for r in v.rows if r.measured_ms > BIG_GROUP_MS}
    if base is not None:
        row["before"] = _errors(_groups(v, base), sum(base.values()))
        row["before"]["big_group_errors"] = _big(_groups(v, base))
        row["before"]["total_error"] = round(sum(base.values()) / measured - 1, 3)
    return row


def _big(groups: list[tuple[float, float]]) -> list[float]:
    """|error| of every group measured above BIG_GROUP_MS (pooled across runs later)."""
    return [round(abs(p / m - 1), 4) for p, m in groups if m > BIG_GROUP_MS]


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def _pooled(runs: dict, key: str, clean_only: bool = False) -> dict:
    """Per (threads, bits) and overall: the median over runs of each run's median |error| of
    groups > 50 us, the median over every such group of all runs pooled, and the median
    |total error|; `clean_only`: only cases with a clean profiled run whose measurements
    `profile_runs.assess` did not call disturbed."""
    cells: dict[str, list[dict]] = {}
    for (_, threads, bits), r in runs.items():
        if key in r and (not clean_only or (r["clean_runs"] > 0 and not r["noisy"])):
            cells.setdefault(f"{threads}t/{bits}", []).append(r[key])
            cells.setdefault("all", []).append(r[key])
    return {cell: {"runs": len(rs),
                   "median_of_run_medians": _median(
                       [x["median_abs_err_over_50us"] for x in rs if x["groups_over_50us"]]),
                   "pooled_group_median": _median([e for x in rs for e in x["big_group_errors"]]),
                   "median_abs_total_error": _median([abs(x["total_error"]) for x in rs])}
            for cell, rs in sorted(cells.items())}


def _scaling(runs: dict) -> dict:
    """Per precision: the multi-thread error of a group split into its one-thread error and
    its scaling error, |(p_t / p_1) / (m_t / m_1) - 1| (p predicted, m measured ms, same
    group at t and 1 threads, both cases with a clean run), median over groups > 50 us."""
    out: dict[str, dict] = {}
    for (model, threads, bits), r in runs.items():
        one = runs.get((model, 1, bits))
        if (threads == 1 or one is None or min(r["clean_runs"], one["clean_runs"]) <= 0
                or r["noisy"] or one["noisy"]):
            continue
        pairs = [(one["group_ms"][g], pm) for g, pm in r["group_ms"].items()
                 if g in one["group_ms"]]
        cell = out.setdefault(f"{threads}t/{bits}", {"errors": [], "measured_ratio": []})
        cell["errors"] += [abs((p[0] / q[0]) / (p[1] / q[1]) - 1) for q, p in pairs]
        cell["measured_ratio"] += [p[1] / q[1] for q, p in pairs]
    return {c: {"groups": len(v["errors"]), "median_scaling_error": _median(v["errors"]),
                "median_measured_ratio": _median(v["measured_ratio"])}
            for c, v in sorted(out.items())}


def _paired(model: str, threads: int, bits: str, runs: int, stat: str) -> dict:
    """fp32 and `bits` sessions kept open and run alternately (so both see the same load),
    each node timed over its session's clean runs, net of the profiler's floor
    (`edgesim.validate.profiler_floor_us`): the node sums and the speed-up. A second
    fp32 session runs in the same rotation: fp32 / fp32 is 1 on a quiet machine, so its
    distance from 1 is the noise floor of this measurement."""
    from edgesim import calibration as cal
    from edgesim.loading import load_graph
    from edgesim.quantize import quantize_model

    g = load_graph(f"zoo:{model}")
    feeds = next(cal.batches(g, cal.random_samples(g, 1)))
    tags = {"fp32": "fp32", "quant": bits, "fp32_again": "fp32"}
    with tempfile.TemporaryDirectory(prefix="bench-paired-") as tmp:
        work = Path(tmp)
        sess: dict[str, Any] = {}
        waits: dict[str, list[int]] = {tag: [] for tag in tags}
        for tag, b in tags.items():
            path = quantize_model(g, b, calib_random=8, out=work / f"{tag}.onnx").out
            sess[tag] = profiled_session(Path(path), threads, work, tag)
        for _ in range(runs):
            for tag in tags:
                waits[tag].append(waited_run(sess[tag], feeds))
        done = {tag: finish(sess[tag], waits[tag], stat, threads) for tag in tags}
        floor = profiler_floor_us(threads, runs, stat, work)
        inputs = {tag: {n: sum(map(bool, i)) for n, i, _ in optimised_nodes(
            work / f"optimised{tag}.onnx", done[tag][0])} for tag in tags}
    ms = {tag: sum(net_of_floor(t, inputs[tag], floor).values())
          for tag, (t, _, _) in done.items()}
    clean = {tag: c for tag, (_, c, _) in done.items()}
    noisy = [f"{tag}: {r}" for tag, (_, _, n) in done.items() for r in n.reasons]
    return {"fp32_ms": round(ms["fp32"], 3), "quant_ms": round(ms["quant"], 3),
            "clean_runs": clean, "measured": round(ms["fp32"] / ms["quant"], 3),
            "noise_floor": round(abs(ms["fp32"] / ms["fp32_again"] - 1), 3),
            "noisy": noisy, "clean": min(clean.values()) > 0}


def _speedup(base: dict, r: dict, key: str, meas: float) -> dict:
    pred = base[key]["predicted_ms"] / r[key]["predicted_ms"]
    return {"predicted": round(pred, 3), "sign_right": (meas > 1) == (pred > 1)}


def _speedups(runs: dict, paired: dict) -> list[dict]:
    """Quantisation speed-ups, predicted (totals) and measured: from the alternating paired
    sessions where `paired` has the case (`_paired`), else `_row`'s measured_ms."""
    out = []
    for (model, threads, bits), r in runs.items():
        base = runs.get((model, threads, "fp32"))
        if bits == "fp32" or base is None:
            continue
        pair = paired.get((model, threads, bits))
        meas = pair["measured"] if pair else base["measured_ms"] / r["measured_ms"]
        # a multi-thread pair counts only where its profiles had clean runs and the change
        # exceeds both 10 % and the fp32 / fp32 noise floor of the same rotation; and with
        # --paired-runs, only where the separate sessions' speed-up (the same quantity,
        # measured minutes apart) lies beyond that threshold on the same side: the floor
        # sees noise within a rotation, not a machine state that lasts through one
        floor = pair["noise_floor"] if pair else 0.0
        usable = threads == 1 or (pair is not None and pair["clean"])
        noisy = bool(base["noisy"] or r["noisy"] or (pair and pair["noisy"]))
        separate = base["measured_ms"] / r["measured_ms"]
        limit = max(0.10, floor)
        agree = pair is None or (abs(separate - 1) > limit and (separate > 1) == (meas > 1))
        s = {"model": model, "threads": threads, "bits": bits, "measured": round(meas, 3),
             "separate_runs": round(separate, 3), "measurements_agree": agree,
             "noisy": noisy, "sign_checked": usable and abs(meas - 1) > limit and agree
             and not noisy,
             "sign_checked_with_noisy": usable and abs(meas - 1) > limit and agree,
             "sign_checked_paired_only": usable and abs(meas - 1) > limit,
             "after": _speedup(base, r, "after", meas)}
        if pair:
            s["paired"] = pair
        if "before" in r:
            s["before"] = _speedup(base, r, "before", meas)
        out.append(s)
    return out


def _baseline(tree: str, host: str, cases: list) -> dict:
    env = {**os.environ, "PYTHONPATH": tree}
    res = subprocess.run([sys.executable, "-c", _BASELINE, host, json.dumps(cases)], env=env,
                         cwd=tree, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def _score(speed: list[dict], key: str, checked_by: str = "sign_checked") -> str:
    checked = [s for s in speed if s[checked_by] and key in s]
    return f"{sum(s[key]['sign_right'] for s in checked)}/{len(checked)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--bits", default="fp32,8,4")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--host", help="host target YAML (default: probe now)")
    ap.add_argument("--stat", default="min", choices=("min", "median"))
    ap.add_argument("--baseline-tree", help="checkout whose cost model gives 'before'")
    ap.add_argument("--paired-runs", type=int, default=0,
                    help="re-measure every quantisation speed-up with fp32 and quantised "
                    "sessions run alternately, this many runs each (0: off)")
    ap.add_argument("--baseline-host", help="host target YAML for 'before' (default --host: "
                    "e.g. the baseline tree's own probe of this machine)")
    args = ap.parse_args()
    if args.baseline_tree and not (args.baseline_host or args.host):
        # the baseline tree runs in its own process and reads its host from a file
        ap.error("--baseline-tree needs --baseline-host or --host (a YAML from "
                 "`edgesim target probe`)")
    load_start = os.getloadavg()
    host = load_target(args.host) if args.host else probe_host()
    cases = [(m, t, b) for m in args.models.split(",") for t in map(int, args.threads.split(","))
             for b in args.bits.split(",")]
    base_host = args.baseline_host or args.host
    base = _baseline(args.baseline_tree, base_host, cases) if args.baseline_tree else {}
    runs = {}
    for model, threads, bits in cases:
        v = validate(f"zoo:{model}", host, bits=bits, threads=threads, runs=args.runs,
                     stat=args.stat)
        runs[(model, threads, bits)] = _row(v, base.get(f"{model}|{threads}|{bits}"))
    paired = {c: _paired(c[0], c[1], c[2], args.paired_runs, args.stat) for c in cases
              if args.paired_runs and c[2] != "fp32"}
    speed = _speedups(runs, paired)
    print(json.dumps({
        "host": host.description, "stat": args.stat,
        "load_avg": {"start": load_start, "end": os.getloadavg()},
        "runs": [{"model": m, "threads": t, "bits": b, **r} for (m, t, b), r in runs.items()],
        "per_layer_and_total": {"after": _pooled(runs, "after"),
                                "before": _pooled(runs, "before")},
        "per_layer_and_total_clean_cases": {"after": _pooled(runs, "after", True),
                                            "before": _pooled(runs, "before", True)},
        "noisy_cases": {f"{m}|{t}t|{b}": r["noisy"] for (m, t, b), r in runs.items()
                        if r["noisy"]},
        "thread_scaling_per_group": _scaling(runs),
        "quant_speedups": speed,
        "sign_right_where_change_over_10pct": {"after": _score(speed, "after"),
                                               "before": _score(speed, "before")},
        "sign_right_with_noisy_cases": {"after": _score(speed, "after",
                                                        "sign_checked_with_noisy"),
                                        "before": _score(speed, "before",
                                                         "sign_checked_with_noisy")},
        "sign_right_paired_only": {"after": _score(speed, "after", "sign_checked_paired_only"),
                                   "before": _score(speed, "before",
                                                    "sign_checked_paired_only")}}, indent=1))


if __name__ == "__main__":
    main()
