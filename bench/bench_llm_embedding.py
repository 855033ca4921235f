"""The embedding table as a plan choice on the shipped tiny LM, in onnxruntime; prints JSON.

Perplexity per byte on the held-out KJV test text (16 KiB, never the calibration text) and the
emitted initializer bytes of HAWQ plans (exact knapsack over the compile choices,
`edgesim.llm.compile.CHOICES`, fp32 KV cache; bytes exact as emitted) at size budgets below
uniform q4's, with and
without the table as a plan choice (`edgesim.llm.embed_choice`):

- untied (the trained table copied into its own lm_head, the same function): the budget counts
  the linears and the table. Without the choice the table stays fp32 (64 KiB) and the linears
  get what is left; with it the table is one more knapsack item (float or any MatMulNBits
  format GatherBlockQuantized reads), priced by its emitted bytes and measured harm.
- tied (the shipped model): the budget counts the linears. Without the choice the head is
  planned on its own omega and the embedding keeps a float Gather of the table (a second,
  uncounted 64 KiB copy: the form before shared tables); with it the embedding reads the head's
  packed table and the head's row pays the table's measured harm.

Usage: python bench/bench_llm_embedding.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import onnx
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgesim.budget import parse_budget  # noqa: E402
from edgesim.llm.budgets import Workload  # noqa: E402
from edgesim.llm.compile import CHOICES, SCORE_SEQ, embedding_table, texts, zoo_source  # noqa: E402
from edgesim.llm.formats import EMBED  # noqa: E402
from edgesim.llm.generate import score_text  # noqa: E402
from edgesim.llm.kv_choice import kv_option  # noqa: E402
from edgesim.llm.plan import plan_bytes  # noqa: E402
from edgesim.llm.sensitivity import decoder_sensitivity  # noqa: E402
from hwmodels.target import load_target  # noqa: E402

CALIB_BYTES, TEST_BYTES = 1024, 16384
FP32_TABLE = 256 * 64 * 4


def _row(src, plan: dict[str, str] | None, test) -> dict:
    """Perplexity and emitted initializer bytes of `plan` (None: no plan meets the budget)."""
    if plan is None:
        return {"feasible": False}
    model = src.build(plan, "fp32")
    weights = sum(numpy_helper.to_array(t).nbytes for t in onnx.load_from_string(
        model).graph.initializer)
    return {"feasible": True, "perplexity": score_text(model, test, SCORE_SEQ).perplexity,
            "initializer_bytes": weights, "linear_bytes": plan_bytes(plan, src.params, src.shapes),
            "table": plan.get(EMBED, "shared lm_head" if src.cfg.tied else "fp32"),
            "lm_head": plan["lm_head"]}


def _plan(src, omega, budget_bytes: float, table) -> dict[str, str] | None:
    opt = kv_option(parse_budget(f"size={budget_bytes:.0f}B"), src.cfg, load_target("rpi5"),
                    list(src.params.values()), omega, list(src.params), CHOICES, Workload(),
                    0.0, table, [src.shapes[n] for n in src.params])
    return dict(opt.plan) if opt.feasible else None


def bench(tied: bool) -> dict:
    src = zoo_source("tiny_lm", tied=tied)
    calib, test = texts(None, 256, CALIB_BYTES, TEST_BYTES)
    omega = decoder_sensitivity(src.float_model, list(src.params), CHOICES, calib, "hawq")
    table = embedding_table(src, calib)
    q4 = plan_bytes(dict.fromkeys(src.params, "q4"), src.params, src.shapes)
    # below uniform q4's size: q4 linears (+ the float table when it is counted) and less
    top = q4 + (0 if tied else FP32_TABLE)
    out: dict = {"uniform_q4": _row(src, dict.fromkeys(src.params, "q4"), test),
                 "table_harm": dict(table.harm) if table else {}, "budgets": {}}
    for frac in (0.95, 0.85, 0.75, 0.65):
        b = frac * top
        with_choice = _row(src, _plan(src, omega, b, table), test)
        bare = _plan(src, omega, b - (0 if tied else FP32_TABLE), None)
        if tied and bare is not None:
            bare[EMBED] = "fp32"   # the float Gather beside the packed head
        out["budgets"][f"{b:.0f}"] = {"with_choice": with_choice,
                                      "without_choice": _row(src, bare, test)}
    return out


def main() -> None:
    t0 = time.perf_counter()
    result = {"untied": bench(False), "tied": bench(True),
              "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
