"""Decoder budgets: parsing tok_s / ttft / ram, their knapsack costs against the phase and RAM
models (uniform plans reproduce the simulation exactly), budgeted plans that meet them, and a
clean refusal of decoder metrics for other models and of latency budgets for decoders."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from edgesim.budget import parse_budget
from edgesim.errors import UserError
from edgesim.llm.budgets import Workload, knapsack, plan_cost, uniform_times
from edgesim.llm.fit import footprint
from edgesim.llm.plan import plan_for_budget
from edgesim.zoo.decoder import decoder_config, linear_names, linear_shapes
from edgesim.zoo.trained import TINY_LM_SHAPE
from hwmodels.target import load_target

CFG = decoder_config(TINY_LM_SHAPE, "tiny_lm")
NAMES = linear_names(TINY_LM_SHAPE)
PARAMS = [i * o for i, o in linear_shapes(TINY_LM_SHAPE).values()]
CHOICES = ["q2z", "q4b128", "q4", "q8"]
WORK = Workload(threads=2, context=256, prompt_len=64)


@pytest.fixture(scope="module")
def rpi5():
    return load_target("rpi5")


def test_parse_decoder_budgets() -> None:
    assert parse_budget("tok_s=20").value == 20.0
    assert parse_budget("ttft=800ms").value == pytest.approx(0.8)
    assert parse_budget("ram=3.5GB").value == pytest.approx(3.5e9)
    assert parse_budget("tok_s=20").met(25.0) and not parse_budget("tok_s=20").met(19.0)
    assert parse_budget("ttft=1s").met(0.5) and not parse_budget("ttft=1s").met(1.5)
    with pytest.raises(UserError, match="tok_s"):
        parse_budget("tok_s=fast")


@pytest.mark.parametrize("metric,value", [("tok_s", "1"), ("ttft", "10s"), ("ram", "8GB")])
def test_uniform_plans_cost_what_the_phase_models_predict(rpi5, metric: str,
                                                          value: str) -> None:
    k = knapsack(parse_budget(f"{metric}={value}"), CFG, rpi5, PARAMS, CHOICES, WORK)
    decode, ttft = uniform_times(CFG, rpi5, CHOICES, WORK)
    for j, fmt in enumerate(CHOICES):
        total = plan_cost(k, dict.fromkeys(NAMES, fmt), NAMES, CHOICES)
        if metric == "ram":   # the knapsack total + what it fixed = the whole footprint
            total += parse_budget(f"ram={value}").value - k.limit
            want = footprint(CFG, fmt, WORK.context, WORK.prompt_len).total()
            assert total == pytest.approx(want, rel=1e-9)
        else:
            assert total == pytest.approx((ttft if metric == "ttft" else decode)[j], rel=1e-12)


def test_budgeted_plan_meets_a_decode_rate(rpi5) -> None:
    decode, _ = uniform_times(CFG, rpi5, CHOICES, WORK)
    floor = 0.5 * (1 / decode[1] + 1 / decode[3])        # between uniform q4b128 and q8
    budget = parse_budget(f"tok_s={floor}")
    k = knapsack(budget, CFG, rpi5, PARAMS, CHOICES, WORK)
    sens = np.tile([8.0, 2.0, 1.5, 0.1], (len(NAMES), 1)) * np.arange(1, len(NAMES) + 1)[:, None]
    plan = plan_for_budget(sens, k.cost, k.limit, NAMES, CHOICES, str(budget))
    assert budget.met(1.0 / plan_cost(k, plan, NAMES, CHOICES))
    assert {"q8"} < set(plan.values()) | {"q8"} and len(set(plan.values())) > 1
    with pytest.raises(UserError, match="tok_s"):
        k2 = knapsack(parse_budget(f"tok_s={10 / decode[0]}"), CFG, rpi5, PARAMS, CHOICES, WORK)
        plan_for_budget(sens, k2.cost, k2.limit, NAMES, CHOICES, "tok_s")


def test_latency_budget_is_refused_for_decoders(rpi5) -> None:
    with pytest.raises(UserError, match="do not apply to decoders"):
        knapsack(parse_budget("latency=1s"), CFG, rpi5, PARAMS, CHOICES, WORK)


@pytest.mark.slow   # HAWQ-free (LRP) but nine onnxruntime scorings of 4 KiB
def test_compile_on_the_trained_decoder_writes_model_report_and_front(tmp_path) -> None:
    from edgesim.cli import main
    from edgesim.llm.generate import score_text
    from edgesim.zoo.trained import load_lm_text

    out = tmp_path / "out"
    code = main(["compile", "zoo:tiny_lm", "--target", "rpi5", "--method", "lrp", "--budget",
                 "size=100kB", "--threads", "2", "-o", str(out)])
    assert code == 0
    files = {p.name for p in out.iterdir()}
    # and the marker of a folder edgesim made (edgesim.output), as every compile leaves
    assert files == {"tiny_lm.rpi5.onnx", "report.json", "report.md", "front.png", ".edgesim"}
    report = json.loads((out / "report.json").read_text())
    plan = report["plan"]
    assert set(plan) == set(NAMES)
    variants = {v["name"]: v for v in report["variants"]}
    assert variants["plan"]["linear_bytes"] <= 100e3 < variants["q8"]["linear_bytes"]
    # the written model is the plan: its perplexity on the same text is the reported one
    test = load_lm_text()["test"][:4096]
    ppl = score_text((out / "tiny_lm.rpi5.onnx").read_bytes(), test).perplexity
    assert ppl == pytest.approx(variants["plan"]["perplexity"], rel=1e-6)
    md = (out / "report.md").read_text()
    assert "Decode tokens/s" in md and "time to first token" in md
    # tied head: the embedding reads the head's packed table, the file holds no other copy
    written = onnx.load(out / "tiny_lm.rpi5.onnx")
    gbq = [n for n in written.graph.node if n.op_type == "GatherBlockQuantized"]
    assert len(gbq) == 1 and not any(t.name.startswith("embed_tokens")
                                     for t in written.graph.initializer)
    assert f"shared with lm_head in {plan['lm_head']}" in report["embedding"] in md
