"""Quality of the shipped tiny LM under weight formats, in onnxruntime; prints JSON.

Perplexity (per byte) and next-byte agreement with fp32 on the held-out KJV test text
(16 KiB, `edgesim.zoo.trained.load_lm_text`; never the calibration text) of:

- every uniform format: fp32 and each MatMulNBits candidate (`formats.candidate_formats`: 2/4/8
  bits x blocks 32/64/128 x symmetric / zero points; W8 = q8, W4 = q4 and q4b128, W2 = q2z),
  and q4 with an fp16 KV cache;
- HAWQ (Gauss-Newton traces) and LRP mixed plans over the candidates (`edgesim.llm.sensitivity`
  on 2 KiB of the calibration text; exact knapsack `plan_for_bytes`) at three sizes: "4bit" =
  uniform q4's stored bytes, "q4b128" = uniform q4b128's, "3bit" = the mean of uniform q2z's
  and q4's (MatMulNBits has no 3-bit format);
- the references each plan must beat at <= its bytes: the best uniform candidate that fits, and
  at 3 bits the sensitivity-free mixes `plan.fill_plan` of two uniform formats (q2z / q4 and
  q2b128z / q4b128z; layers in graph order, reversed, and 4 random orders take the 4-bit format
  while it fits) -- `beats` says whether the plan's perplexity is below the best of them, and
  `beats_on_each_half` whether it is on each half of the test text (8 KiB each) below the best
  reference on that half (the least over the references, picked after the fact).

Sizes are the linears' stored bytes as emitted (scales and zero points included, K padded to
whole blocks: the tiny LM's K = 64 linears take a whole 128-block in the b128 formats).
Without --only-ir it also measures each layer's NLL rise alone in q2z / q4b128 / q4 / q8 in
onnxruntime on the 8 KiB calibration text (~5 min here), plans from those, and reports the
Spearman rank correlation of the IR's predicted harm (HAWQ, LRP) with them.

Usage: python bench/bench_llm_quality.py [--only-ir]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgesim.llm.formats import candidate_formats  # noqa: E402
from edgesim.llm.generate import TextScore, score_text  # noqa: E402
from edgesim.llm.plan import (  # noqa: E402
    fill_plan,
    layer_sensitivity,
    plan_bytes,
    plan_for_bytes,
)
from edgesim.llm.sensitivity import decoder_sensitivity  # noqa: E402
from edgesim.zoo.decoder import linear_shapes  # noqa: E402
from edgesim.zoo.trained import TINY_LM_SHAPE, load_lm_text, tiny_lm  # noqa: E402

CANDIDATES = list(candidate_formats())
MEASURED = ["q2z", "q4b128", "q4", "q8"]   # the onnxruntime-measured sensitivities' formats
METHODS = ("hawq", "lrp")
CALIB_BYTES = 2048   # 32 windows of 64 bytes for the IR sensitivities
FILL_PAIRS = (("q2z", "q4"), ("q2b128z", "q4b128z"))
RANDOM_ORDERS = 4
SHAPES = linear_shapes(TINY_LM_SHAPE)   # linear -> (in, out): exact emitted bytes


Scored = tuple[TextScore, list[float]]   # on the whole text, and ppl on each half


def score(plan: dict | str, text: np.ndarray, kv: str = "fp32") -> Scored:
    """Scored on each half of `text` (whole windows each), the whole text from the halves."""
    model, half = tiny_lm(plan, kv).SerializeToString(), len(text) // 2
    a, b = score_text(model, text[:half]), score_text(model, text[half:])
    both = TextScore((a.nll + b.nll) / 2, np.concatenate([a.predictions, b.predictions]))
    return both, [a.perplexity, b.perplexity]


def row(plan: dict, params: dict, scored: Scored, ref: TextScore) -> dict:
    s, halves = scored
    counts = {c: sum(v == c for v in plan.values()) for c in set(plan.values())}
    return {"ppl": s.perplexity, "ppl_halves": halves, "agreement": s.agreement(ref),
            "linear_bytes": plan_bytes(plan, params, SHAPES),
            "formats": dict(sorted(counts.items()))}


def best_of(rows: dict) -> dict:
    """The row with the least perplexity, and the least on each half (any row's)."""
    best = min(rows, key=lambda k: rows[k]["ppl"])
    halves = np.min([r["ppl_halves"] for r in rows.values()], axis=0)
    return {"name": best, "ppl": rows[best]["ppl"], "ppl_halves": halves.tolist()}


def orders(names: list[str]) -> dict[str, list[str]]:
    rng = np.random.default_rng(0)
    out = {"graph": names, "reversed": names[::-1]}
    return out | {f"random{i}": list(rng.permutation(names)) for i in range(RANDOM_ORDERS)}


def references(rows: dict, params: dict, budgets: dict, test: np.ndarray, ref: TextScore
               ) -> dict:
    """Per budget: the best uniform candidate that fits; at 3 bits also the fill mixes."""
    out: dict = {}
    for key, limit in budgets.items():
        out[key] = {"uniform": best_of({f: rows[f] for f in CANDIDATES
                                        if rows[f]["linear_bytes"] <= limit})}
    mixes = {}
    for low, high in FILL_PAIRS:
        if plan_bytes(dict.fromkeys(params, low), params, SHAPES) > budgets["3bit"]:
            continue   # q2b128z: K = 64 padded to 128 makes it larger than the 3-bit budget
        for how, order in orders(list(params)).items():
            plan = fill_plan(params, order, low, high, budgets["3bit"], SHAPES)
            mixes[f"{low}/{high} {how}"] = row(plan, params, score(plan, test), ref)
    out["3bit"] |= {"fill": best_of(mixes), "fill_mixes": mixes}
    return out


def ir_plans(params: dict, budgets: dict, text: dict, ref: TextScore, refs: dict,
             rows: dict) -> dict:
    """HAWQ and LRP plans at each budget, scored; their omega over `MEASURED` for the check."""
    names, sizes, omegas = list(params), list(params.values()), {}
    for method in METHODS:
        t0 = time.perf_counter()
        omega = decoder_sensitivity(tiny_lm(), names, CANDIDATES, text["calib"][:CALIB_BYTES],
                                    method)
        rows[f"{method}_sensitivity_s"] = round(time.perf_counter() - t0, 1)
        omegas[method] = omega[:, [CANDIDATES.index(c) for c in MEASURED]]
        for key, limit in budgets.items():
            plan = plan_for_bytes(omega, sizes, names, CANDIDATES, limit,
                                  [SHAPES[n] for n in names])
            r = row(plan, params, score(plan, text["test"]), ref)
            bar = [refs[key][k] for k in ("uniform", "fill") if k in refs[key]]
            rows[f"{method}_{key}"] = r | {
                "beats": all(r["ppl"] < b["ppl"] for b in bar),
                "beats_on_each_half": all(np.less(r["ppl_halves"], b["ppl_halves"]).all()
                                          for b in bar), "plan": plan}
            if key == "4bit":   # the same plan with the KV cache in fp16
                s = score(plan, text["test"], "fp16")
                rows[f"{method}_{key}_kv_fp16"] = row(plan, params, s, ref)
    return omegas


def measured(params: dict, budgets: dict, text: dict, ref: TextScore, rows: dict,
             omegas: dict) -> dict:
    """onnxruntime-measured single-layer NLL rises, their plans, and the IR's rank agreement."""
    names, sizes = list(params), list(params.values())
    t0 = time.perf_counter()
    sens = layer_sensitivity(lambda p: tiny_lm(dict(p)).SerializeToString(), names, MEASURED,
                             text["calib"])
    for key, limit in budgets.items():
        plan = plan_for_bytes(sens, sizes, names, MEASURED, limit, [SHAPES[n] for n in names])
        rows[f"measured_{key}"] = row(plan, params, score(plan, text["test"]), ref)
    rho = {m: {"all": float(spearmanr(o.ravel(), sens.ravel())[0]),
               **{c: float(spearmanr(o[:, j], sens[:, j])[0]) for j, c in enumerate(MEASURED)}}
           for m, o in omegas.items()}
    return {"measured_sensitivity_s": round(time.perf_counter() - t0, 1),
            "spearman_vs_measured_single_layer": rho}


def main() -> None:
    text = load_lm_text()
    params = {n: i * o for n, (i, o) in linear_shapes(TINY_LM_SHAPE).items()}
    ref = score("fp32", text["test"])[0]
    rows = {f: row(dict.fromkeys(params, f), params, score(f, text["test"]), ref)
            for f in ["fp32", *CANDIDATES]}
    rows["q4_kv_fp16"] = row(dict.fromkeys(params, "q4"), params,
                             score("q4", text["test"], "fp16"), ref)
    # 4 / 3 bits: uniform q4's bytes and the mean of uniform q2z's and q4's, as emitted
    uniform = {f: rows[f]["linear_bytes"] for f in ("q2z", "q4")}
    budgets = {"4bit": uniform["q4"], "q4b128": rows["q4b128"]["linear_bytes"],
               "3bit": (uniform["q2z"] + uniform["q4"]) / 2}
    refs = references(rows, params, budgets, text["test"], ref)
    omegas = ir_plans(params, budgets, text, ref, refs, rows)
    check = {} if "--only-ir" in sys.argv else measured(params, budgets, text, ref, rows, omegas)
    print(json.dumps({"model": "tiny_lm (KJV bytes)", "test_bytes": int(len(text["test"])),
                      "budgets_bytes": budgets, "references": refs, **check,
                      "results": rows}, indent=1))


if __name__ == "__main__":
    main()
