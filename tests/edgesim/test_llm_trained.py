"""The shipped tiny LM in onnxruntime: cached decode equals no-cache on trained weights,
quantisation costs perplexity in bit order, and the budgeted plan is the exact optimum."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edgesim.errors import UserError
from edgesim.llm.generate import empty_past, score_text, session, step
from edgesim.llm.plan import plan_bytes, plan_for_bits, plan_for_decode_rate
from edgesim.zoo.decoder import linear_shapes
from edgesim.zoo.trained import TINY_LM_SHAPE, load_lm_text, tiny_lm

pytestmark = pytest.mark.ort
TEST = load_lm_text()["test"][:4096]


@pytest.fixture(scope="module")
def scores() -> dict:
    return {f: score_text(tiny_lm(f).SerializeToString(), TEST)
            for f in ("fp32", "q8", "q4", "q4b128", "q2z")}


def test_trained_lm_beats_the_byte_unigram(scores: dict) -> None:
    counts = np.bincount(TEST, minlength=256).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    unigram_nll = float(-(p * np.log(p)).sum())   # the best context-free byte model
    assert scores["fp32"].nll < 0.75 * unigram_nll


def test_perplexity_rises_as_bits_fall(scores: dict) -> None:
    nll = {f: s.nll for f, s in scores.items()}
    assert nll["fp32"] <= nll["q8"] + 1e-3 < nll["q4"] + 1e-3 < nll["q2z"]
    assert nll["q4"] <= nll["q4b128"] + 1e-3     # finer blocks lose less
    agree = {f: scores[f].agreement(scores["fp32"]) for f in ("q8", "q4", "q2z")}
    assert agree["q8"] > 0.97 and agree["q8"] >= agree["q4"] > agree["q2z"]


@pytest.mark.parametrize("fmt", ["fp32", "q4"])
def test_trained_cached_decode_equals_no_cache(fmt: str) -> None:
    sess = session(tiny_lm(fmt).SerializeToString())
    ids = TEST[:40].astype(np.int64)[None]
    full, _ = step(sess, ids, empty_past(sess))
    logits, past = step(sess, ids[:, :16], empty_past(sess))
    out = [logits]
    for t in range(16, 40):
        logits, past = step(sess, ids[:, t:t + 1], past)
        out.append(logits)
    np.testing.assert_allclose(np.concatenate(out, 1), full, atol=1e-5 * np.abs(full).max())


def test_plan_for_bits_is_the_brute_force_optimum() -> None:
    rng = np.random.default_rng(0)
    choices, params = ["q2z", "q4", "q8"], [300, 100, 50, 200]
    names = [f"l{i}" for i in range(4)]
    sens = np.sort(rng.uniform(0, 1, (4, 3)), axis=1)[:, ::-1].copy()   # fewer bits hurt more
    plan = plan_for_bits(sens, params, names, choices, 4.0)
    bits = {"q2z": 2, "q4": 4, "q8": 8}
    best = min((c for c in itertools.product(range(3), repeat=4)
                if sum(p * bits[choices[j]] for p, j in zip(params, c)) <= 4.0 * sum(params)),
               key=lambda c: sum(sens[i, j] for i, j in enumerate(c)))
    assert [plan[n] for n in names] == [choices[j] for j in best]
    with pytest.raises(UserError, match="infeasible"):
        plan_for_bits(sens, params, names, choices, 1.0)


def test_plan_bytes_counts_scales() -> None:
    params = {n: i * o for n, (i, o) in linear_shapes(TINY_LM_SHAPE).items()}
    total = sum(params.values())
    assert plan_bytes({n: "q4" for n in params}, params) == pytest.approx(total * (0.5 + 4 / 32))
    assert plan_bytes({}, params) == 4 * total


def test_decode_rate_plan_meets_the_rate_with_least_sensitivity() -> None:
    choices, params, names = ["q2z", "q4", "q8"], [2000, 500], ["big", "small"]
    sens = np.array([[3.0, 1.0, 0.0], [5.0, 2.0, 0.0]])
    # 400 tokens/s at 1 MB/s with 1 ms fixed leaves 1500 B per token. Bytes per weight: q2z
    # 0.25 + 4.25/32, q4 0.625, q8 1.125 -> big 765.6 / 1250 / 2250 B, small 191.4 / 312.5 /
    # 562.5 B. Feasible: (q2z,q2z) 957 s8, (q2z,q4) 1078 s5, (q2z,q8) 1328 s3, (q4,q2z) 1441 s6
    plan = plan_for_decode_rate(sens, params, names, choices, 400.0, 1e6, 1e-3)
    assert plan == {"big": "q2z", "small": "q8"}
    assert plan_for_decode_rate(sens, params, names, choices, 200.0, 1e6, 1e-3) == {
        "big": "q8", "small": "q8"}
    with pytest.raises(UserError, match="infeasible"):
        plan_for_decode_rate(sens, params, names, choices, 1000.0, 1e6, 1e-3)
