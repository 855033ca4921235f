"""An explicit KV-cache dtype pins compile_decoder's choice (brief E14 item 3): the budget then
plans under that dtype only, and refuses when that dtype cannot meet it, instead of quietly
switching. Oracle: the cache dtype onnxruntime's emitted model declares, and the RAM budget
arithmetic of test_llm_kv_choice (only an fp16 cache fits it)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto

from edgesim.errors import UserError
from edgesim.llm.budgets import Workload
from edgesim.llm.compile import compile_decoder
from edgesim.llm.fit import footprint
from edgesim.zoo.decoder import decoder_config
from edgesim.zoo.trained import TINY_LM_SHAPE
from hwmodels.target import load_target

WORK = Workload(context=512, prompt_len=128)
CFG = decoder_config(TINY_LM_SHAPE, "tiny_lm")
FP16_CACHE = 262144   # 4 layers x K,V x 2 KV heads x 16 dims x 512 positions x 2 bytes
# every linear at q2z with an fp16 cache, plus half that cache: an fp32 cache cannot fit
RAM = f"ram={int(footprint(CFG, 'q2z', 512, 128, 'fp16').total() + FP16_CACHE // 2)}B"


def _compile(budget: str, out: Path, kv: str | None):  # noqa: ANN202 - DecoderReport
    return compile_decoder("zoo:tiny_lm", load_target("rpi5"), budget, "hawq", out, WORK,
                           threads=[1], calib_bytes=256, test_bytes=256, kv_dtype=kv)


def test_pinned_fp16_plans_under_fp16_only(tmp_path: Path) -> None:
    r = _compile(RAM, tmp_path, "fp16")
    assert r.workload.kv_dtype == "fp16"
    assert [o.kv_dtype for o in r.kv_options] == ["fp16"] and r.kv_options[0].harm > 0
    model = onnx.load(r.files["model"])
    caches = {v.type.tensor_type.elem_type for v in (*model.graph.input, *model.graph.output)
              if v.name.startswith(("past_key_values.", "present."))}
    assert caches == {TensorProto.FLOAT16}


def test_pinned_fp32_refuses_a_budget_only_fp16_meets(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"infeasible.*\(fp32\)"):
        _compile(RAM, tmp_path, "fp32")


def test_pinned_dtype_the_source_cannot_build_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="int8"):
        _compile("bits=4", tmp_path, "int8")
