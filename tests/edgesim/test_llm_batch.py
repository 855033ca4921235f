"""Padded-batch decode (edgesim.llm.batch): GroupQueryAttention reads each sequence's own
cached positions, a masked plain attention all of the padded ones; closed forms for the bytes,
and B = 1 is exactly simulate_llm's decode."""

from __future__ import annotations

import numpy as np
import pytest

from edgesim.errors import UserError
from edgesim.llm import load_config, simulate_llm
from edgesim.llm.batch import attended_positions, batch_step
from edgesim.llm.traffic import kv_bytes_per_position
from hwmodels.target import load_target

PI5, CFG = load_target("rpi5"), load_config("zoo:qwen2.5-0.5b")


def test_one_sequence_is_simulate_llms_decode() -> None:
    for c in (64, 2048):
        step = batch_step(CFG, PI5, "q4", [c], [1, 2, 4])
        sim = simulate_llm(CFG, PI5, ["q4"], [1, 2, 4], [c])
        np.testing.assert_allclose(step.step_s, sim.decode_s[0, :, 0], rtol=1e-12)
        assert step.bytes == pytest.approx(float(sim.bytes_per_token[0, 0]))


def test_equal_lengths_make_gqa_and_masked_equal() -> None:
    a = batch_step(CFG, PI5, "q4", [300] * 4, [2], "gqa")
    b = batch_step(CFG, PI5, "q4", [300] * 4, [2], "masked")
    assert a.bytes == b.bytes and np.array_equal(a.step_s, b.step_s)


def test_padding_costs_masked_attention_the_padded_positions() -> None:
    ctx = [64, 1024, 200]
    gqa = batch_step(CFG, PI5, "q4", ctx, [4], "gqa", kv_dtype="fp16")
    masked = batch_step(CFG, PI5, "q4", ctx, [4], "masked", kv_dtype="fp16")
    padded = 3 * 1024 - sum(ctx)
    # K and V of every layer and KV head in fp16 per cached position
    per_pos = 2 * CFG.layers * CFG.kv_heads * CFG.head_dim * 2
    assert kv_bytes_per_position(CFG, "fp16") == per_pos
    assert masked.bytes - gqa.bytes == pytest.approx(per_pos * padded)
    assert masked.step_s[0] >= gqa.step_s[0]
    assert attended_positions(ctx, "gqa") == sum(ctx)
    assert attended_positions(ctx, "masked") == 3 * 1024


def test_a_batch_shares_the_weight_reads() -> None:
    one = batch_step(CFG, PI5, "q4", [64], [4])
    four = batch_step(CFG, PI5, "q4", [64] * 4, [4])
    # decode is weight-bound at short contexts: four sequences cost far less than 4 steps
    # (not 4x the rate: the 4-row GEMMs run the 16-row KleidiAI tile, a quarter used)
    assert four.bytes < 1.1 * one.bytes
    assert four.tokens_per_s[0] > 2.0 * one.tokens_per_s[0]


def test_bad_batches_are_refused() -> None:
    with pytest.raises(UserError, match="contexts"):
        batch_step(CFG, PI5, "q4", [], [1])
    with pytest.raises(UserError, match="attention"):
        batch_step(CFG, PI5, "q4", [8], [1], attention="flash")
