"""Activation sparsity on a zero-skipping MAC array (issue 15). Prints JSON.

(a) cycles: per model and density level, the exact data-driven model's cycles (averaged over
    single samples) against the per-lane statistical model and the mean-density-only
    estimate (total relative errors and the worst layer's), on sparse-mac-32x32 (os,
    skip_both) and on a 2:4-pruned variant (weights pruned by magnitude along K).
    Models: the trained digits CNN and transformer, and the zoo's resnet18 and mobilenet_v2
    (seeded random weights, 32x32 inputs made from the digits images).
(c) stream: delta thresholds, frame by frame in onnxruntime (see `stream`).
(b) joint: on the trained digits CNN and transformer, the Pareto fronts of joint
    bits x sparsity plans and of bits-only plans (predicted latency vs accuracy measured in
    onnxruntime on the 360 held-out images), and the best of each within 0.5 point of the
    float model. onnxruntime itself gains no speed from the thresholds. `bits_only_bound`
    (`sparsity_floor.py`) splits the best bits-only plan's MAC layers into compute at density
    0 (fold fill/drain, and with pipelined folds the tile-swap floor per fold) and weight DRAM
    time and gives its latency with every MAC input at density 0: no threshold can beat that
    floor; its vector unit time, and that of the GEMM epilogues (bias, scale, ReLU/clip right
    after a GEMM), which the target applies on the accumulator drain (`fused_epilogue`), with
    their time as separate vector passes next to it. Every figure is given per regime of the array
    (`REGIMES`): SCALE-Sim's back-to-back folds with weights from DRAM every inference and
    unfused epilogues (the model before issue 15's follow-up), pipelined folds with fused
    epilogues per inference, and pipelined folds in a stream's steady state with resident
    weights, with epilogues as separate vector passes and fused (the target file's setting);
    each regime says where weights come from. The best plans carry `breakdown`, their latency
    split per layer into work, fill, swap, exposed DRAM and vector unit; the bound splits the
    density-0 latency the same way, gives the floor of any plan (density 0, every layer at its
    fastest bits) and the term that bounds it; for models with few bits-only plans
    (`EXACT_MAX`) `exact_bits_only` is the fastest one within the accuracy rule, found by
    measuring every plan in latency order.

Usage: python bench/bench_sparsity.py [--part cycles|joint|stream|all] [--samples 32]
       [--plot front.png] [--points 14] [--mode magnitude|centred]
       [--regime all|back_to_back_per_inference|pipelined_per_inference|pipelined_steady_state]
       [--levels 0,0.25,0.5,0.625,0.75] [--models digits_cnn,digits_transformer]
"""

import argparse
import dataclasses
import itertools
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # sparsity_floor

from sparsity_floor import bound  # noqa: E402

from compiler.allocate import joint_choices, pareto_front, split_choice  # noqa: E402
from compiler.emit import emit  # noqa: E402
from compiler.executor import run  # noqa: E402
from compiler.frontend import load  # noqa: E402
from compiler.ir import Graph  # noqa: E402
from compiler.passes.calibrate import calibrate  # noqa: E402
from compiler.passes.quantize import quantize  # noqa: E402
from compiler.passes.sparsify import (  # noqa: E402
    calibrate_sequential,
    delta_gates,
    sparsifiable,
    sparsify,
)
from compiler.sparsity import mac_layers, operand_stats  # noqa: E402
from edgesim.sparsity import (  # noqa: E402
    LEVELS,
    bits_sensitivity,
    compare_cycles,
    level_sensitivity,
    level_thresholds,
    plan_bits,
)
from edgesim.sparsity_costs import TERMS, joint_costs, latency_terms, plan_latency_s  # noqa: E402
from edgesim.streaming import ort_forward, run_stream  # noqa: E402
from edgesim.zoo import build, load_digits_data  # noqa: E402
from hwmodels.macarray import weight_regime  # noqa: E402
from hwmodels.target import load_target  # noqa: E402

TARGET = "sparse-mac-32x32"
DATA = load_digits_data()
# (fold_pipelining, weights_resident, fused_epilogue) per regime; the target file sets all
# three true
REGIMES = {"back_to_back_per_inference": (False, False, False),
           "pipelined_per_inference": (True, False, True),
           "pipelined_steady_state_unfused": (True, True, False),
           "pipelined_steady_state": (True, True, True)}


def regime_target(name: str):
    """The shipped target in one of `REGIMES`."""
    pipelined, resident, fused = REGIMES[name]
    return dataclasses.replace(load_target(TARGET), fold_pipelining=pipelined,
                               weights_resident=resident, fused_epilogue=fused)


def _images(name: str, count: int) -> tuple[np.ndarray, dict]:
    """Inputs and the builder's shapes: the digits images, or for zoo CNNs the same images
    upscaled 4x to 32x32 and repeated over 3 channels."""
    x = DATA["x_calib"][:count]
    if name.startswith("digits"):
        return x, {}
    big = np.kron(x, np.ones((1, 1, 4, 4), np.float32)).repeat(3, axis=1)
    return big, {"num_classes": 10, "resolution": 32}


def _graphs(name: str, count: int) -> tuple[Graph, Graph, np.ndarray]:
    x, kw = _images(name, count)
    model = build(name, **kw)
    inp = "input" if name.startswith("digits") else None
    g1 = load(model)
    inp = inp or g1.inputs[0]
    return load(model, {inp: x.shape}), g1, x


def prune_n_of_m(g: Graph, n: int = 2, m: int = 4) -> Graph:
    """Keep the n largest-magnitude of every m weights along K (the reduction axis) of every
    conv and linear layer; depthwise convs (K = 9, no groups of 4 to prune) stay dense."""
    weights = dict(g.weights)
    for layer in (x for x in mac_layers(g) if x.inputs[1] in g.weights):
        w = g.weights[layer.inputs[1]]
        rows = w.reshape(w.shape[0], -1)  # [out, K] for conv [Cout, Cg*kh*kw] and linear
        if rows.shape[1] % m:
            continue
        grouped = np.abs(rows).reshape(rows.shape[0], -1, m)
        keep = np.argsort(grouped, axis=2)[:, :, m - n:]
        mask = np.zeros_like(grouped, dtype=bool)
        np.put_along_axis(mask, keep, True, axis=2)
        weights[layer.inputs[1]] = np.where(mask.reshape(rows.shape), rows, 0).reshape(w.shape)
    return dataclasses.replace(g, weights=weights)


def _cycles_row(g, g1, x, level, target) -> dict:
    layers = [l.name for l in sparsifiable(g)]
    th = calibrate_sequential(g, [{g.inputs[0]: x}], dict.fromkeys(layers, level))
    stats = operand_stats(sparsify(g, th), [{g.inputs[0]: x}])
    feeds = [{g1.inputs[0]: x[i:i + 1]} for i in range(len(x))]
    rows = compare_cycles(sparsify(g1, th), stats, feeds, target)
    exact = sum(r.exact for r in rows)
    return {"level": level,
            "density": round(float(np.mean([r.density for r in rows])), 4),
            "exact_cycles": round(exact, 1),
            "lane_error": round(sum(r.lanes for r in rows) / exact - 1, 4),
            "mean_only_error": round(sum(r.mean_only for r in rows) / exact - 1, 4),
            "worst_layer_lane_error": round(max(abs(r.lanes / r.exact - 1) for r in rows), 4),
            "worst_layer_mean_only_error": round(max(abs(r.mean_only / r.exact - 1)
                                                     for r in rows), 4)}


def cycles(samples: int) -> list[dict]:
    base = load_target(TARGET)
    out = []
    for name in ("digits_cnn", "digits_transformer", "resnet18", "mobilenet_v2"):
        g, g1, x = _graphs(name, samples)
        for weights in ("dense", "2:4"):
            if weights == "2:4":
                g, g1 = prune_n_of_m(g), prune_n_of_m(g1)
            for level in (0.0, 0.5, 0.75):
                row = _cycles_row(g, g1, x, level, base)
                out.append({"model": name, "weights": weights, **row})
                print(json.dumps(out[-1]), file=sys.stderr)
    return out


BITS = ((8, 8), (4, 8), (4, 4), (2, 8), (2, 4))  # (w_bits, a_bits) the array runs fused
LOSS_POINTS = 0.5  # accuracy loss allowed against the float model, in points
GOAL = 1.3  # issue 15: joint plans >= 1.3x faster than the best bits-only plan


def _ort_accuracy(g: Graph) -> float:
    import onnxruntime as ort  # noqa: PLC0415

    sess = ort.InferenceSession(emit(g).SerializeToString(), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {g.inputs[0]: DATA["x_test"]})[0]
    return float((logits.argmax(1) == DATA["y_test"]).mean() * 100)


def _plan(gs3, calib, layers, bits, levels, target, mode, grid=LEVELS) -> dict:
    """Build, measure and cost one plan: thresholds re-calibrated for the chosen levels (of
    `grid`) together, quantised, emitted, run in onnxruntime on the held-out images."""
    g, g1, gt = gs3
    chosen = {n: BITS[b] for n, b in zip(layers, bits)}
    want = {n: grid[s] for n, s in zip(layers, levels) if grid[s] > 0}
    th = calibrate_sequential(g, calib, want, mode) if want else {}
    gs = sparsify(g, th)
    stats = operand_stats(gs, calib)
    g1s = sparsify(g1, th)
    terms = latency_terms(g1s, stats, chosen, target)
    per_layer = plan_latency_s(g1s, stats, chosen, target)
    latency = float(per_layer.sum())
    mac = float(sum(t for x, t in zip(g1s.layers, per_layer) if x.name in stats))
    cal = calibrate(gs, calib)
    acc = _ort_accuracy(quantize(sparsify(gt, th), plan_bits(sparsify(gt, th), chosen), cal))
    return {"latency_us": round(latency * 1e6, 3), "mac_latency_us": round(mac * 1e6, 3),
            "accuracy": round(acc, 3),
            "bits": [list(BITS[b]) for b in bits], "levels": [grid[s] for s in levels],
            "density": round(float(np.mean([stats[n].density for n in layers])), 4),
            "breakdown": breakdown(g1s, terms, set(stats))}


def breakdown(gs: Graph, terms: dict, mac: set) -> dict:
    """A plan's predicted latency split by cause (`edgesim.sparsity_costs.latency_terms`): per MAC
    layer its work, fill, swap and exposed DRAM (us), the other layers' vector-unit time
    together, and the totals of each term."""
    us = {t: terms[t] * 1e6 for t in TERMS}
    rows = [{"layer": x.name, **{t: round(float(us[t][i]), 3) for t in TERMS if t != "vector"}}
            for i, x in enumerate(gs.layers) if x.name in mac]
    vec = {x.name: round(float(us["vector"][i]), 3) for i, x in enumerate(gs.layers)
           if us["vector"][i] > 0}
    return {"mac_layers": rows, "vector_layers": vec,
            "total_us": {t: round(float(us[t].sum()), 3) for t in TERMS}}


def joint(name: str, points: int, mode: str = "magnitude",
          regimes: tuple[str, ...] = tuple(REGIMES), grid: tuple[float, ...] = LEVELS) -> dict:
    """Sensitivities per (layer, bits, level of `grid`) once; per regime the costs, both
    fronts and the best plans."""
    g = load(build(name), {"input": DATA["x_calib"].shape})
    gt = load(build(name), {"input": DATA["x_test"].shape})
    g1 = load(build(name))
    calib = [{"input": DATA["x_calib"]}]
    layers = tuple(x.name for x in sparsifiable(g))
    ref = [run(g, calib[0], dtype="float32")[g.outputs[0]]]
    per_level = level_thresholds(g, calib, layers, grid, mode=mode)
    per_stats = [operand_stats(sparsify(g, th), calib) for th in per_level]
    sens_s = level_sensitivity(g, calib, ref, per_level, layers)
    sens_b = bits_sensitivity(g, calib, ref, calibrate(g, calib), layers, BITS)
    acc = round(_ort_accuracy(gt), 3)
    fixed = (g, g1, gt, calib, layers, per_level, per_stats, sens_b, sens_s, acc, grid)
    return {"float_accuracy": acc, "levels": list(grid),
            **{r: _regime(fixed, regime_target(r), points, mode) for r in regimes}}


def _regime(fixed: tuple, target, points: int, mode: str) -> dict:
    """One regime of `joint`: costs on `target`, both fronts, the best plans, the bound."""
    g, g1, gt, calib, layers, per_level, per_stats, sens_b, sens_s, acc, grid = fixed
    cost = joint_costs(g1, per_stats, per_level, layers, BITS, target)
    sens, c = joint_choices(sens_b, sens_s, cost)
    joint_ok = np.ones(sens.shape, dtype=bool)
    bits_only = joint_ok.copy()
    bits_only[:, np.arange(sens.shape[1]) % len(grid) != 0] = False
    out: dict = {"weights": weight_regime(g1.layer_table(), target)}
    for kind, allowed in (("joint", joint_ok), ("bits_only", bits_only)):
        front = pareto_front(sens, c, allowed, max_points=points)
        out[kind] = [_plan((g, g1, gt), calib, layers, *split_choice(a.choice, len(grid)),
                           target, mode, grid) for a in front]
        print(json.dumps({"regime": out["weights"][:40], kind: len(out[kind])}),
              file=sys.stderr)
    ok = acc - LOSS_POINTS
    best = {k: min((p for p in out[k] if p["accuracy"] >= ok), key=lambda p: p["latency_us"],
                   default=None) for k in ("joint", "bits_only")}
    out["best"] = best
    for kind in ("joint", "bits_only"):  # the split is kept for the best plans only
        for p in out[kind]:
            if p is not best[kind]:
                p.pop("breakdown")
    if best["joint"] and best["bits_only"]:
        out["speedup_joint_vs_bits_only"] = round(best["bits_only"]["latency_us"]
                                                  / best["joint"]["latency_us"], 3)
        out["speedup_mac_layers"] = round(best["bits_only"]["mac_latency_us"]
                                          / best["joint"]["mac_latency_us"], 3)
    if best["bits_only"]:
        out["bits_only_bound"] = bound(g1, layers, best["bits_only"], target, BITS)
    if len(BITS) ** len(layers) <= EXACT_MAX:
        exact = exact_bits_only((g, g1, gt), calib, layers, cost[:, :, 0], acc - LOSS_POINTS,
                                target, mode)
        out["exact_bits_only"] = exact
        if exact["plan"] and "bits_only_bound" in out:  # the exact bound of any joint plan
            floor = out["bits_only_bound"]["latency_at_density_0_fastest_bits_us"]
            exact["max_speedup_any_plan"] = round(exact["plan"]["latency_us"] / floor, 3)
    return out


EXACT_MAX = 5 ** 5  # bits-only plans enumerated exhaustively up to this many


def exact_bits_only(gs3, calib, layers, cost: np.ndarray, ok: float, target, mode) -> dict:
    """The fastest bits-only plan within the accuracy rule, by enumeration: every plan in
    order of predicted latency (layer costs add), measured in onnxruntime until one passes.
    The best bits-only plan of any front can be no faster, so the latency floor bounds every
    joint plan's speed-up against it exactly."""
    plans = np.array(list(itertools.product(range(len(BITS)), repeat=len(layers))))
    order = np.argsort(cost[np.arange(len(layers)), plans].sum(axis=1), kind="stable")
    zero = np.zeros(len(layers), dtype=np.int64)
    for tried, i in enumerate(order, 1):
        plan = _plan(gs3, calib, layers, plans[i], zero, target, mode)
        if plan["accuracy"] >= ok:
            plan.pop("breakdown")
            return {"plan": plan, "plans_measured": tried, "plans": len(plans)}
    return {"plan": None, "plans_measured": len(plans), "plans": len(plans)}


def plot_fronts(joint_result: dict, path: str, regime: str = "pipelined_steady_state") -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, len(joint_result), figsize=(6 * len(joint_result), 4.5))
    for ax, (name, res) in zip(np.atleast_1d(axes), joint_result.items()):
        for kind, style in (("bits_only", "s--"), ("joint", "o-")):
            pts = sorted((p["latency_us"], p["accuracy"]) for p in res[regime][kind])
            ax.plot(*zip(*pts), style, label=kind.replace("_", "-"))
        ax.axhline(res["float_accuracy"] - LOSS_POINTS, color="grey", lw=0.8,
                   label=f"float - {LOSS_POINTS} pt")
        bound = res[regime].get("bits_only_bound")
        if bound:  # no plan can be faster than the floor; the goal needs best bits-only / 1.3
            ax.axvline(bound["latency_at_density_0_fastest_bits_us"], color="k", ls=":",
                       label="floor: density 0, fastest bits")
            ax.axvline(bound["plan_latency_us"] / GOAL, color="r", ls="--", lw=0.8,
                       label=f"best bits-only / {GOAL}")
        ax.set(title=f"{name} on {TARGET} ({regime})", xlabel="predicted latency (us)",
               ylabel="onnxruntime accuracy (%)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _clips(count: int, frames: int) -> list[np.ndarray]:
    """Streams of `frames` frames morphing one held-out digit into the next (pixels move
    smoothly between frames, as in a slowly changing sensor stream)."""
    x = DATA["x_test"]
    steps = np.linspace(0, 1, frames)
    return [np.stack([(1 - a) * x[2 * i] + a * x[2 * i + 1] for a in steps])[:, None]
            .astype(np.float32) for i in range(count)]


def stream(name: str, clips: int = 20, frames: int = 16) -> list[dict]:
    """Delta thresholds t = alpha * std(input) on every MAC input, frame by frame in
    onnxruntime: MACs skipped (MAC-weighted unchanged inputs) vs agreement with the dense
    model's per-frame prediction."""
    g = load(build(name))
    gb = load(build(name), {"input": DATA["x_calib"].shape})
    layers = tuple(x.name for x in sparsifiable(g))
    env = run(gb, {"input": DATA["x_calib"]}, dtype="float32", keep=True)
    std = {n: float(env[gb.layer(n).inputs[0]].std()) for n in layers}
    table = g.layer_table()
    macs = {n: float(table.macs[table.names.index(n)]) for n in layers}
    dense = ort_forward(emit(g))
    data = _clips(clips, frames)
    ref = [np.stack([dense({"input": f})[g.outputs[0]] for f in c]).argmax(-1) for c in data]
    out = []
    for alpha in (0.0, 0.05, 0.1, 0.2, 0.3):
        gd = delta_gates(g, {n: alpha * std[n] for n in layers})
        fwd = ort_forward(emit(gd))
        runs = [run_stream(gd, fwd, c, layers) for c in data]
        sent = sum(macs[n] * np.mean([r.changed[n] for r in runs]) for n in layers)
        agree = np.mean([(r.outputs.argmax(-1) == f).mean() for r, f in zip(runs, ref)])
        out.append({"model": name, "alpha": alpha,
                    "macs_skipped": round(1 - sent / sum(macs.values()), 4),
                    "agreement_with_dense": round(float(agree), 4)})
        print(json.dumps(out[-1]), file=sys.stderr)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", default="all", choices=["cycles", "joint", "stream", "all"])
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--plot", default=None)
    ap.add_argument("--points", type=int, default=14)
    ap.add_argument("--mode", default="magnitude", choices=["magnitude", "centred"])
    ap.add_argument("--regime", default="all", choices=["all", *REGIMES])
    ap.add_argument("--levels", default=",".join(map(str, LEVELS)),
                    help="sparsity levels per MAC input, comma-separated, starting at 0")
    ap.add_argument("--models", default="digits_cnn,digits_transformer")
    args = ap.parse_args()
    regimes = tuple(REGIMES) if args.regime == "all" else (args.regime,)
    result = {"target": TARGET}
    if args.part in ("cycles", "all"):
        result["cycles"] = cycles(args.samples)
    if args.part in ("joint", "all"):
        grid = tuple(float(v) for v in args.levels.split(","))
        result["joint"] = {name: joint(name, args.points, args.mode, regimes, grid)
                           for name in args.models.split(",")}
        if args.plot:
            plot_fronts(result["joint"], args.plot, regimes[-1])
    if args.part in ("stream", "all"):
        result["stream"] = [r for name in ("digits_cnn", "digits_transformer")
                            for r in stream(name)]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
