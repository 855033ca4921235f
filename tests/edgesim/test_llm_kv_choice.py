"""The KV-cache dtype as a decoder plan choice (`edgesim.llm.kv_choice`), on the shipped tiny
LM. Oracles: the cache's bytes in closed form (layers x K and V x kv heads x head dim x
context x dtype bytes) set a RAM budget only an fp16 cache meets; the written model's
past/present dtypes read from the ONNX file; the fp16 cache's harm recomputed here in
onnxruntime from the two float models' logits; the choice recomputed as the least objective."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from compiler.packing import dequantize_matmulnbits, pack_matmulnbits
from edgesim.errors import UserError
from edgesim.evaluate import session
from edgesim.llm.budgets import Workload
from edgesim.llm.compile import compile_decoder
from edgesim.llm.fit import footprint
from edgesim.llm.formats import parse_format
from edgesim.llm.generate import empty_past, step
from edgesim.llm.kv_choice import KvOption, choose_kv
from edgesim.zoo.decoder import EMBED, DecoderShape, decoder_config, kv_decoder
from edgesim.zoo.trained import TINY_LM_SHAPE, load_lm_text, tiny_lm
from hwmodels.target import load_target

WORK = Workload(context=512, prompt_len=128)
CFG = decoder_config(TINY_LM_SHAPE, "tiny_lm")


def _kv_bytes(dtype_bytes: int) -> int:
    s = TINY_LM_SHAPE
    return s.layers * 2 * s.kv_heads * (s.hidden // s.heads) * WORK.context * dtype_bytes


def _compile(budget: str, out: Path):  # noqa: ANN202 - DecoderReport
    return compile_decoder("zoo:tiny_lm", load_target("rpi5"), budget, "hawq", out, WORK,
                           threads=[1], calib_bytes=512, test_bytes=512)


def test_ram_budget_only_an_fp16_cache_meets_picks_fp16(tmp_path: Path) -> None:
    # fp16 cache, every linear at q2z, plus half the fp16 cache's bytes: the fp32 cache adds
    # a whole fp16 cache's bytes, more than the q2z -> q2b128z saving of the linears
    fixed16 = footprint(CFG, "q2z", WORK.context, WORK.prompt_len, "fp16").total()
    assert _kv_bytes(4) - _kv_bytes(2) == _kv_bytes(2) == 262144
    budget = f"ram={int(fixed16 + _kv_bytes(2) // 2)}B"
    r = _compile(budget, tmp_path)
    assert r.workload.kv_dtype == "fp16"
    assert [(o.kv_dtype, o.feasible) for o in r.kv_options] == [("fp32", False), ("fp16", True)]
    model = onnx.load(r.files["model"])
    caches = [v for v in (*model.graph.input, *model.graph.output)
              if v.name.startswith(("past_key_values.", "present."))]
    assert len(caches) == 4 * TINY_LM_SHAPE.layers
    assert {v.type.tensor_type.elem_type for v in caches} == {TensorProto.FLOAT16}
    assert "KV cache fp16 chosen" in Path(r.files["md"]).read_text()


def _harm_fp16(calib: np.ndarray, seq: int = 64) -> float:
    n = len(calib) // seq
    ids = np.asarray(calib[: n * seq], np.int64).reshape(n, seq)
    out = []
    for kv in ("fp32", "fp16"):
        sess = session(tiny_lm("fp32", kv).SerializeToString())
        out.append(np.concatenate([step(sess, w[None], empty_past(sess))[0] for w in ids]))
    d = out[1].astype(np.float64) - out[0].astype(np.float64)
    return float(2 * np.mean(np.sum(d * d, axis=-1)))


def test_loose_budget_choice_is_the_least_measured_objective(tmp_path: Path) -> None:
    # 6000 tokens/s on the Pi 5 at 1 thread: met by both caches, but only the fp16 cache
    # (less bytes per token) affords the q8 formats
    r = _compile("tok_s=6000", tmp_path)
    by = {o.kv_dtype: o for o in r.kv_options}
    assert set(by) == {"fp32", "fp16"} and all(o.feasible for o in r.kv_options)
    harm = _harm_fp16(load_lm_text()["calib"][:512])
    assert harm > 0 and by["fp16"].harm == pytest.approx(harm, rel=1e-6)
    assert by["fp32"].harm == 0.0
    # the fp16 knapsack is looser, so its least-sensitive plan is no worse
    assert by["fp16"].plan_omega <= by["fp32"].plan_omega
    assert by["fp16"].plan != by["fp32"].plan
    objectives = {k: o.plan_omega + (harm if k == "fp16" else 0.0) for k, o in by.items()}
    chosen = min(objectives, key=objectives.__getitem__)
    assert r.workload.kv_dtype == chosen and dict(r.plan) == dict(by[chosen].plan)


def test_choose_kv_refuses_when_no_dtype_meets_the_budget() -> None:
    from edgesim.budget import parse_budget

    opts = [KvOption("fp32", False, None, 0.0, {}), KvOption("fp16", False, None, 1.0, {})]
    with pytest.raises(UserError, match="any KV cache dtype"):
        choose_kv(opts, parse_budget("ram=1B"))
    better = [KvOption("fp32", True, 5.0, 0.0, {}), KvOption("fp16", True, 3.0, 1.0, {})]
    assert choose_kv(better, parse_budget("ram=1B")).kv_dtype == "fp16"


# The embedding table as GatherBlockQuantized (brief item 2, emission only). Oracle: the same
# decoder with the float Gather of the table dequantised by compiler.packing (the MatMulNBits
# round trip), run in onnxruntime; untied so the head keeps the float table.
EMB_SHAPE = DecoderShape(vocab=256, hidden=64, layers=1, heads=4, kv_heads=2, intermediate=96,
                         max_context=64, tied=False)


@pytest.mark.parametrize("fmt", ["q4", "q8", "q4b64", "q2z", "q4b128z"])
def test_embedding_as_gather_block_quantized_matches_dequantised_table(fmt: str) -> None:
    w = {t.name: numpy_helper.to_array(t) for t in kv_decoder(EMB_SHAPE, seed=3).graph.initializer
         if t.name.endswith((".weight", ".bias"))}
    f = parse_format(fmt)
    blob = pack_matmulnbits(w["embed_tokens.weight"].T, f.bits, f.block,
                            symmetric=not f.zero_point)
    deq = dequantize_matmulnbits(blob)
    deq = deq.T if deq.shape != w["embed_tokens.weight"].shape else deq
    assert not np.allclose(deq, w["embed_tokens.weight"])
    quant = kv_decoder(EMB_SHAPE, {EMBED: fmt}, weights=w)
    assert [n.op_type for n in quant.graph.node].count("GatherBlockQuantized") == 1
    ref = kv_decoder(EMB_SHAPE, "fp32", weights=w | {"embed_tokens.weight": deq.astype(np.float32)})
    ids = np.arange(0, 256, 23, dtype=np.int64)[None]
    got = [step(s, ids, empty_past(s))[0] for s in (session(m.SerializeToString())
                                                   for m in (quant, ref))]
    np.testing.assert_allclose(got[0], got[1], rtol=1e-5, atol=1e-5)


