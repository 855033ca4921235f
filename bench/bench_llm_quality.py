"""Quality of the shipped tiny LM under weight formats, in onnxruntime; prints JSON.

Perplexity (per byte) and next-byte agreement with fp32 on the held-out KJV test text
(16 KiB, `edgesim.zoo.trained.load_lm_text`), for uniform fp32, W8 (q8), W4 block 32 (q4) and
128 (q4b128), W2 (q2z: 2-bit with packed zero points), and mixed plans over {q2z, q4b128, q4,
q8} at 3 and 4 average nominal weight bits and at exactly the stored bytes of uniform q4 and
q4b128, from per-layer sensitivities measured on the separate calibration text
(`edgesim.llm.plan`: NLL rise with one layer quantised), and q4 with an fp16 KV cache. The same
plans from the IR's HAWQ (Gauss-Newton traces) and LRP sensitivities
(`edgesim.llm.sensitivity`, 2 KiB of the calibration text), and those at uniform bytes with an
fp16 KV cache. Sizes are the linears' stored bytes (scales and zero points included).

Usage: python bench/bench_llm_quality.py [--only-ir]   (--only-ir: skip the onnxruntime-measured
sensitivities, keep the uniform, HAWQ and LRP rows)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgesim.llm.generate import score_text  # noqa: E402
from edgesim.llm.plan import (  # noqa: E402
    layer_sensitivity,
    plan_bytes,
    plan_for_bits,
    plan_for_bytes,
)
from edgesim.llm.sensitivity import decoder_sensitivity  # noqa: E402
from edgesim.zoo.decoder import linear_shapes  # noqa: E402
from edgesim.zoo.trained import TINY_LM_SHAPE, load_lm_text, tiny_lm  # noqa: E402

CHOICES = ["q2z", "q4b128", "q4", "q8"]
METHODS = ("hawq", "lrp")
CALIB_BYTES = 2048   # 32 windows of 64 bytes for the IR sensitivities


def build(plan: dict | str) -> bytes:
    return tiny_lm(plan).SerializeToString()


def main() -> None:
    text = load_lm_text()
    params = {n: i * o for n, (i, o) in linear_shapes(TINY_LM_SHAPE).items()}
    names = list(params)
    ref = score_text(build("fp32"), text["test"])
    rows = {}
    for fmt in ("fp32", "q8", "q4", "q4b128", "q2z"):
        s = score_text(build(fmt), text["test"])
        rows[fmt] = {"ppl": s.perplexity, "agreement": s.agreement(ref),
                     "linear_bytes": plan_bytes({n: fmt for n in names}, params)}
    # q4 weights with the KV cache in fp16 (half the cache bytes per token); attention reads
    # K/V back from the fp16 cache even in a no-cache batch, so the batch score includes it
    s = score_text(tiny_lm("q4", "fp16").SerializeToString(), text["test"])
    rows["q4_kv_fp16"] = {"ppl": s.perplexity, "agreement": s.agreement(ref),
                          "linear_bytes": rows["q4"]["linear_bytes"]}
    t0 = time.perf_counter()
    plans: dict = {}
    if "--only-ir" not in sys.argv:   # the onnxruntime-measured sensitivities (~5 min here)
        sens = layer_sensitivity(build, names, CHOICES, text["calib"])
        plans = {f"mixed_{b:g}bit": plan_for_bits(sens, list(params.values()), names, CHOICES,
                                                  b) for b in (3.0, 4.0)}
        for fmt in ("q4", "q4b128"):   # equal stored bytes as the uniform format
            plans[f"mixed_at_{fmt}_bytes"] = plan_for_bytes(
                sens, list(params.values()), names, CHOICES, rows[fmt]["linear_bytes"])
    sens_s = time.perf_counter() - t0
    for method in METHODS:   # the IR's sensitivities (HAWQ traces, LRP shares) instead
        t0 = time.perf_counter()
        omega = decoder_sensitivity(tiny_lm(), names, CHOICES, text["calib"][:CALIB_BYTES],
                                    method)
        rows[f"{method}_sensitivity_s"] = round(time.perf_counter() - t0, 1)
        for b in (3.0, 4.0):
            plans[f"{method}_{b:g}bit"] = plan_for_bits(omega, list(params.values()), names,
                                                        CHOICES, b)
        for fmt in ("q4", "q4b128"):
            plans[f"{method}_at_{fmt}_bytes"] = plan_for_bytes(
                omega, list(params.values()), names, CHOICES, rows[fmt]["linear_bytes"])
    for key, plan in plans.items():
        s = score_text(build(plan), text["test"])
        rows[key] = {"ppl": s.perplexity, "agreement": s.agreement(ref),
                     "linear_bytes": plan_bytes(plan, params),
                     "formats": {c: sum(v == c for v in plan.values()) for c in CHOICES}}
    for key in [k for k in rows if k.startswith("hawq_at") or k.startswith("lrp_at")]:
        # the same plans with the KV cache in fp16 (a runtime choice beside the weights)
        s = score_text(tiny_lm(plans[key], "fp16").SerializeToString(), text["test"])
        rows[f"{key}_kv_fp16"] = {"ppl": s.perplexity, "agreement": s.agreement(ref),
                                  "linear_bytes": rows[key]["linear_bytes"]}
    print(json.dumps({"model": "tiny_lm (KJV bytes)", "test_bytes": int(len(text["test"])),
                      "sensitivity_s": round(sens_s, 1), "results": rows}, indent=1))


if __name__ == "__main__":
    main()
