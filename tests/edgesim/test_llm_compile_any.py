"""`edgesim compile` on decoder files, not only zoo:tiny_lm: an onnxruntime-genai-form
(GroupQueryAttention) and an opset-23-form (Attention, RotaryEmbedding, RMSNormalization)
decoder built here, calibrated on a user-given text. Oracles: the plan's packed weights
dequantised back into the float model (compiler.packing) give onnxruntime's logits of the
emitted MatMulNBits model; the shape read from the file equals the shape it was built with;
the budget holds in the plan's own bits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.packing import dequantize_matmulnbits, pack_matmulnbits
from edgesim.errors import UserError
from edgesim.llm.compile import CHOICES, compile_decoder, texts
from edgesim.llm.decoder_file import apply_plan, read_decoder
from edgesim.llm.formats import EMBED, parse_format
from edgesim.zoo.decoder import DecoderShape, kv_decoder
from hwmodels.target import load_target
from tests.compiler.opcheck import run_ort
from tests.edgesim import test_llm_sensitivity as genai_form

SHAPE = DecoderShape(vocab=256, hidden=64, layers=2, heads=4, kv_heads=2, intermediate=96,
                     max_context=256)   # byte vocabulary; head_dim 16 for onnxruntime's GQA
TEXT = ("In the beginning was the word, and the word was with the model, and the model was "
        "quantised block by block until it fit in the memory of a small board. ") * 4


def _weights() -> dict[str, np.ndarray]:
    zoo = kv_decoder(SHAPE, seed=5)
    return {t.name: numpy_helper.to_array(t) for t in zoo.graph.initializer}


def genai_file(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(genai_form, "SHAPE", SHAPE)
    path = tmp / "genai_decoder.onnx"
    onnx.save(genai_form.genai_decoder(_weights()), path)
    return path


class _Std(genai_form._Genai):
    """The standard-ONNX (opset 23) form: RMSNormalization, RotaryEmbedding, Attention (the
    genai writer's op/const/linear; its ops are in the default domain)."""

    def __init__(self, w: dict[str, np.ndarray]):
        super().__init__(w)
        self.presents: list[str] = []

    def norm(self, x: str, weight: str) -> str:
        return self.op("RMSNormalization", [x, self.const(weight)], epsilon=1e-6, axis=-1)[0]

    def rope(self, x: str, heads: int) -> str:
        return self.op("RotaryEmbedding", [x, "cos", "sin", "position_ids"],
                       num_heads=heads)[0]


def _std_block(b: _Std, resid: str, i: int) -> str:
    p = f"layers.{i}"
    h = b.norm(resid, f"{p}.input_norm.weight")
    q, k, v = (b.linear(h, f"{p}.self_attn.{t}_proj") for t in "qkv")
    y, pk, pv = b.op("Attention", [b.rope(q, SHAPE.heads), b.rope(k, SHAPE.kv_heads), v, "",
                                   f"past_key_values.{i}.key", f"past_key_values.{i}.value"],
                     3, q_num_heads=SHAPE.heads, kv_num_heads=SHAPE.kv_heads, is_causal=1)
    b.presents += [(f"present.{i}.key", pk), (f"present.{i}.value", pv)]
    resid = b.op("Add", [resid, b.linear(y, f"{p}.self_attn.o_proj")])[0]
    h = b.norm(resid, f"{p}.post_attention_norm.weight")
    g = b.linear(h, f"{p}.mlp.gate_proj")
    act = b.op("Mul", [g, b.op("Sigmoid", [g])[0]])[0]
    up = b.linear(h, f"{p}.mlp.up_proj")
    down = b.linear(b.op("Mul", [act, up])[0], f"{p}.mlp.down_proj")
    return b.op("Add", [resid, down])[0]


def std_decoder() -> onnx.ModelProto:
    """The zoo decoder's weights in the opset-23 op vocabulary (causal prefill from an empty
    cache, as compile scores it)."""
    w = _weights()
    dh = SHAPE.head_dim
    w = dict(w, cos=w["rope.cos"][:, : dh // 2], sin=w["rope.sin"][:, : dh // 2])
    b = _Std(w)
    b.const("cos"), b.const("sin")
    resid = b.op("Gather", [b.const("embed_tokens.weight"), "input_ids"], axis=0)[0]
    for i in range(SHAPE.layers):
        resid = _std_block(b, resid, i)
    logits = b.linear(b.norm(resid, "norm.weight"), "lm_head")
    kv = [1, SHAPE.kv_heads, "past", dh]
    ins = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "seq"]),
           helper.make_tensor_value_info("position_ids", TensorProto.INT64, [1, "seq"])]
    ins += [helper.make_tensor_value_info(f"past_key_values.{i}.{t}", TensorProto.FLOAT, kv)
            for i in range(SHAPE.layers) for t in ("key", "value")]
    b.nodes += [helper.make_node("Identity", [t], [n]) for n, t in
                [("logits", logits), *b.presents]]
    outs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, "seq", SHAPE.vocab])]
    outs += [helper.make_tensor_value_info(n, TensorProto.FLOAT,
                                           [1, SHAPE.kv_heads, "total", dh])
             for n, _ in b.presents]
    graph = helper.make_graph(b.nodes, "std23", ins, outs,
                              [numpy_helper.from_array(np.asarray(v), k)
                               for k, v in b.inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    model.ir_version = 10
    return model


def std_file(tmp: Path) -> Path:
    path = tmp / "std23_decoder.onnx"
    onnx.save(std_decoder(), path)
    return path


@pytest.fixture(params=["genai", "opset23"])
def decoder_file(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return genai_file(tmp_path, monkeypatch) if request.param == "genai" else std_file(tmp_path)


def _feeds(model: onnx.ModelProto, ids: np.ndarray) -> dict[str, np.ndarray]:
    names = {i.name for i in model.graph.input}
    empty = np.zeros((1, SHAPE.kv_heads, 0, SHAPE.head_dim), np.float32)
    feeds = {"input_ids": ids, **{n: empty for n in names if n.startswith("past")}}
    if "attention_mask" in names:
        feeds["attention_mask"] = np.ones_like(ids)
    if "position_ids" in names:
        feeds["position_ids"] = np.arange(ids.shape[1], dtype=np.int64)[None]
    return feeds


def test_shape_is_read_from_the_file(decoder_file: Path) -> None:
    df = read_decoder(decoder_file)
    c = df.config
    assert (c.hidden, c.layers, c.heads, c.kv_heads, c.head_dim, c.intermediate, c.vocab) == (
        SHAPE.hidden, SHAPE.layers, SHAPE.heads, SHAPE.kv_heads, SHAPE.head_dim,
        SHAPE.intermediate, SHAPE.vocab)
    assert len(df.linears) == 7 * SHAPE.layers + 1 and not c.tied   # own embedding table


def test_applied_plan_equals_the_dequantised_float_model(decoder_file: Path) -> None:
    df = read_decoder(decoder_file)
    names = list(df.linears)
    plan = {n: CHOICES[i % len(CHOICES)] for i, n in enumerate(names)}
    packed = apply_plan(df.model, plan)
    ops = {n.name: n for n in packed.graph.node}
    for name, spec in plan.items():
        f = parse_format(spec)
        node = ops[name]
        assert node.op_type == "MatMulNBits"
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        assert (attrs["bits"], attrs["block_size"], attrs["accuracy_level"]) == (
            f.bits, f.block, 4)
    # oracle: each weight replaced by its own MatMulNBits round trip, as float MatMuls
    ref = onnx.ModelProto()
    ref.CopyFrom(df.model)
    inits = {t.name: t for t in ref.graph.initializer}
    for node in ref.graph.node:
        if node.name in plan:
            f = parse_format(plan[node.name])
            w = numpy_helper.to_array(inits[node.input[1]])
            deq = dequantize_matmulnbits(pack_matmulnbits(w, f.bits, f.block,
                                                          symmetric=not f.zero_point))
            deq = deq.T if deq.shape != w.shape else deq
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(
                np.ascontiguousarray(deq, np.float32), node.input[1]))
    ids = np.frombuffer(TEXT[:24].encode(), np.uint8).astype(np.int64)[None]
    want = run_ort(ref, _feeds(ref, ids))[0]
    got = run_ort(packed, _feeds(packed, ids))[0]
    # accuracy_level 4 may quantise activations to int8 where the CPU has int8 dot kernels
    np.testing.assert_allclose(got, want, atol=0.02 * np.abs(want).max())
    assert np.abs(got - run_ort(df.model, _feeds(df.model, ids))[0]).max() > 0  # it did change


def test_compile_a_decoder_file_with_user_text(decoder_file: Path, tmp_path: Path) -> None:
    r = compile_decoder(str(decoder_file), load_target("rpi5"), "bits=3", "hawq",
                        tmp_path / "out", threads=[1, 4], calib_text=TEXT.encode())
    params = read_decoder(decoder_file).params()
    bits = sum(parse_format(r.plan[n]).bits * p for n, p in params.items()) / sum(
        params.values())
    assert bits <= 3.0 and set(r.plan) == {*params, EMBED}   # untied: the table is planned
    assert {v.name for v in r.variants} == {*CHOICES, "plan"}
    assert all(np.isfinite(v.perplexity) and v.perplexity > 1 for v in r.variants)
    # the plan's time per token is a weight-share mix of the uniform plans' times
    rates = np.array([v.tokens_per_s for v in r.variants if v.name != "plan"])
    plan = next(v for v in r.variants if v.name == "plan")
    assert np.all(rates.min(0) <= np.array(plan.tokens_per_s) + 1e-9)
    assert np.all(np.array(plan.tokens_per_s) <= rates.max(0) + 1e-9)
    written = onnx.load(r.files["model"])
    kinds = [n.op_type for n in written.graph.node]
    quantised = sum(parse_format(r.plan[n]).quantized for n in params)
    assert kinds.count("MatMulNBits") == quantised
    assert kinds.count("GatherBlockQuantized") == parse_format(r.plan[EMBED]).quantized
    report = json.loads(Path(r.files["json"]).read_text())
    assert report["model"] == decoder_file.stem and Path(r.files["plot"]).stat().st_size > 0


def test_user_text_is_split_and_checked() -> None:
    calib, test = texts(b"x" * 400, 256, 1024, 4096)
    assert len(calib) == 200 and len(test) == 200
    with pytest.raises(UserError, match="too short"):
        texts(b"x" * 100, 256, 1024, 4096)
    with pytest.raises(UserError, match="byte vocabulary"):
        texts(b"x" * 400, 48, 1024, 4096)


def test_cli_compiles_a_decoder_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, text = genai_file(tmp_path, monkeypatch), tmp_path / "calib.txt"
    text.write_text(TEXT)
    res = subprocess.run([sys.executable, "-m", "edgesim", "compile", str(model), "--target",
                          "rpi5", "--budget", "bits=4", "--calib", str(text), "--threads", "2",
                          "-o", str(tmp_path / "o"), "-q"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "o" / "report.md").read_text().startswith("# genai_decoder on rpi5")
