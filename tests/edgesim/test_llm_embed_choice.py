"""The embedding table's format as a plan choice (issue 14 item 3, brief E14 item 2).

Oracles: brute force over every (linears, table) format combination of a small decoder against
the planner's exact knapsack; the table bytes the planner prices against the initializers the
emitter writes; onnxruntime running the compiled untied model, and a decoder file whose table
is rewritten against the same file with the table dequantised by hand.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgesim.budget import parse_budget
from edgesim.evaluate import session
from edgesim.llm.budgets import Workload
from edgesim.llm.compile import CHOICES, compile_decoder, zoo_source
from edgesim.llm.decoder_file import apply_plan, read_decoder
from edgesim.llm.embed_choice import Table, table_cost
from edgesim.llm.fit import footprint
from edgesim.llm.formats import EMBED, parse_format
from edgesim.llm.generate import empty_past, step
from edgesim.llm.kv_choice import kv_option
from edgesim.llm.plan import plan_bytes
from edgesim.zoo.decoder import DecoderShape, decoder_config, kv_decoder, linear_shapes
from hwmodels.target import load_target
from tests.compiler.opcheck import run_ort

SHAPE = DecoderShape(vocab=256, hidden=64, layers=1, heads=4, kv_heads=2, intermediate=96,
                     max_context=64, tied=False)
SMALL = ("q2z", "q4", "q8")
WORK = Workload()


def _problem(tied: bool, seed: int) -> tuple:
    shape = dataclasses.replace(SHAPE, tied=tied)
    cfg = decoder_config(shape, "t")
    params = {n: i * o for n, (i, o) in linear_shapes(shape).items()}
    rng = np.random.default_rng(seed)
    # harms fall with bits, as measured ones do; random otherwise
    omega = np.sort(rng.uniform(0, 10, (len(params), len(SMALL))), axis=1)[:, ::-1].copy()
    fmts = SMALL if tied else ("fp32", *SMALL)
    harm = dict(zip(fmts, np.sort(rng.uniform(0, 10, len(fmts)))[::-1]))
    harm = harm | ({} if tied else {"fp32": 0.0})
    return cfg, params, omega, Table(cfg.vocab, cfg.hidden, tied, harm)


def _brute(cfg, params, omega, table, metric: str, value: float) -> float:
    """Least summed harm over every combination within the budget, costed here by hand."""
    n = np.array(list(params.values()), np.float64)
    bpw = np.array([parse_format(c).bytes_per_weight() for c in SMALL])
    bits = np.array([parse_format(c).bits for c in SMALL], np.float64)
    emb = table.vocab * table.hidden
    # RAM: everything the plan does not change (KV cache, activations, runtime, norms)
    fixed = footprint(cfg, "q2z", WORK.context, WORK.prompt_len).total() - n.sum() * bpw[0] - (
        0 if table.tied else emb * bpw[0])
    fmts = [None] if table.tied else ["fp32", *SMALL]
    best = np.inf
    for combo in itertools.product(range(len(SMALL)), repeat=len(n)):
        idx = np.array(combo)
        for f in fmts:
            lin = omega[np.arange(len(n)), idx].sum()
            harm = table.harm[SMALL[idx[-1]]] if table.tied else table.harm[f]
            tb = 0.0 if table.tied else table.stored_bytes(f)
            cost = {"size": (n * bpw[idx]).sum() + tb, "ram": fixed + (n * bpw[idx]).sum() + tb,
                    "bits": ((n * bits[idx]).sum() + (0 if table.tied else emb * parse_format(
                        f).bits)) / (n.sum() + (0 if table.tied else emb))}[metric]
            if cost <= value * (1 + 1e-12):
                best = min(best, lin + harm)
    return best


@pytest.mark.parametrize(("tied", "metric", "value"), [
    (False, "size", 40e3), (False, "size", 80e3), (False, "bits", 5.0), (False, "ram", 0),
    (True, "size", 30e3), (True, "bits", 4.0)])
def test_planner_equals_brute_force(tied: bool, metric: str, value: float) -> None:
    cfg, params, omega, table = _problem(tied, seed=3)
    if metric == "ram":   # a RAM just above the size-40 kB plan's, in the RAM model's terms
        value = footprint(cfg, "q2z", WORK.context, WORK.prompt_len).total() + 25e3
    unit = "B" if metric in ("size", "ram") else ""
    budget = parse_budget(f"{metric}={value}{unit}")
    opt = kv_option(budget, cfg, load_target("rpi5"), list(params.values()), omega,
                    list(params), SMALL, WORK, 0.0, table)
    want = _brute(cfg, params, omega, table, metric, value)
    assert np.isfinite(want) and opt.feasible
    assert opt.plan_omega == pytest.approx(want, rel=1e-9)
    assert (EMBED in opt.plan) is not tied


def test_untied_table_bytes_equal_the_emitted_initializers() -> None:
    table = Table(SHAPE.vocab, SHAPE.hidden, False, {})
    fmts = ("fp32", *CHOICES)
    priced = table_cost(table, parse_budget("size=1MB"), load_target("rpi5"), WORK, fmts)
    for fmt, want in zip(fmts, priced):
        model = kv_decoder(SHAPE, {EMBED: fmt}, seed=1)
        got = sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer
                  if t.name.startswith(EMBED))
        assert got == want, fmt


def test_compile_untied_picks_a_quantised_table_when_the_budget_needs_it(tmp_path) -> None:
    src = zoo_source("tiny_lm", tied=False)
    linears_q4 = sum(p * parse_format("q4").bytes_per_weight() for p in src.params.values())
    # room for q4 linears but not for them and the float table (64 KiB)
    r = compile_decoder(src, load_target("rpi5"), f"size={linears_q4 + 30e3:.0f}B", "hawq",
                        tmp_path, threads=[1], calib_bytes=256, test_bytes=256)
    fmt = r.plan[EMBED]
    assert parse_format(fmt).quantized and fmt in r.embedding
    plan = next(v for v in r.variants if v.name == "plan")
    assert plan.linear_bytes + plan.table_bytes <= linears_q4 + 30e3
    assert plan.table_bytes == Table(256, 64, False, {}).stored_bytes(fmt)
    # predicted bytes (exact per layer: K padded to whole blocks) == the emitted initializers
    written = onnx.load(r.files["model"])
    planned = (*src.params, EMBED)
    emitted = sum(numpy_helper.to_array(t).nbytes for t in written.graph.initializer
                  if t.name.rsplit(".", 1)[0] in planned)   # {layer}.B / .scales / ...
    assert emitted == plan.linear_bytes + plan.table_bytes
    sess = session(open(r.files["model"], "rb").read())
    logits = step(sess, np.arange(0, 256, 9, dtype=np.int64)[None], empty_past(sess))[0]
    assert np.all(np.isfinite(logits)) and logits.shape == (1, 29, 256)


@pytest.mark.parametrize("fmt", ["q4", "q2z", "q8b128"])
def test_file_table_rewrite_matches_a_gather_of_the_dequantised_table(
        fmt: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    # an onnxruntime-genai-form untied decoder file; oracle: its table replaced by the
    # packed codes dequantised by hand ((code - zp) * scale per block), run as a float Gather
    from tests.edgesim.test_llm_compile_any import _feeds, genai_file
    from tests.edgesim.test_llm_tied_table import _dequantised

    df = read_decoder(genai_file(tmp_path, monkeypatch))
    assert df.table is not None
    packed = apply_plan(df.model, {EMBED: fmt}, df.table)
    assert [n.op_type for n in packed.graph.node].count("GatherBlockQuantized") == 1
    assert not any(t.name == df.table for t in packed.graph.initializer)
    ref = onnx.ModelProto()
    ref.CopyFrom(df.model)
    t = next(t for t in ref.graph.initializer if t.name == df.table)
    t.CopyFrom(numpy_helper.from_array(_dequantised(numpy_helper.to_array(t), fmt), t.name))
    ids = np.arange(0, 256, 11, dtype=np.int64)[None]
    want = run_ort(ref, _feeds(ref, ids))[0]
    got = run_ort(packed, _feeds(packed, ids))[0]
    np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max(), rtol=0)
    table = sum(numpy_helper.to_array(t).nbytes for t in packed.graph.initializer
                if t.name.startswith(f"{df.table}."))
    assert table == parse_format(fmt).stored_bytes(df.config.hidden, df.config.vocab)


def test_exact_linear_bytes_equal_the_emitted_initializers() -> None:
    # hidden 64: the b128 formats pad K = 64 to a whole block, which params x bytes per weight
    # misses by ~2x; the exact count must match what the emitter writes
    shapes = linear_shapes(SHAPE)
    params = {n: i * o for n, (i, o) in shapes.items()}
    for fmt in CHOICES:
        plan = dict.fromkeys(params, fmt)
        model = kv_decoder(SHAPE, plan, seed=2)
        emitted = sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer
                      if t.name.rsplit(".", 1)[0] in params)
        assert plan_bytes(plan, params, shapes) == emitted, fmt
    assert plan_bytes(dict.fromkeys(params, "q4b128"), params) < 0.6 * plan_bytes(
        dict.fromkeys(params, "q4b128"), params, shapes)
