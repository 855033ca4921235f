"""Decoder ops (attention, rotary) and the onnxruntime-genai contrib ops lowered onto them:
forward vs onnxruntime (standard opset-23 Attention / RotaryEmbedding and com.microsoft
GroupQueryAttention / RotaryEmbedding / SkipSimplifiedLayerNormalization), end to end through
the frontend and the executor, and VJPs vs central finite differences in float64."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.executor import run
from compiler.frontend import load
from compiler.ops import OPS, claims
from tests.compiler.opcheck import check_forward_vs_ort, check_vjp, lower_and_run, run_ort

RNG = np.random.default_rng(14)
MS = "com.microsoft"
_TYPES = {np.dtype("float32"): TensorProto.FLOAT, np.dtype("int64"): TensorProto.INT64,
          np.dtype("int32"): TensorProto.INT32, np.dtype("bool"): TensorProto.BOOL}


def _f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _cache(positions: int, half: int, theta: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
    inv = theta ** (-np.arange(half) / half)
    ang = np.outer(np.arange(positions), inv)
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


COS, SIN = _cache(32, 4)          # head_dim 8
COS16, SIN16 = _cache(32, 8)      # head_dim 16 (onnxruntime's GroupQueryAttention needs 16k)
COS3, SIN3 = _cache(32, 3)        # rotary_dim 6 of head_dim 8


class Case(NamedTuple):
    op: str
    inputs: dict[str, np.ndarray]
    attrs: dict[str, Any] = {}
    n_outputs: int = 1


def _causal_mask(s: int, t: int) -> np.ndarray:
    """A bottom-right aligned causal bool mask [S, T] written out by hand."""
    return np.array([[j <= i + t - s for j in range(t)] for i in range(s)])


ATT = [
    Case("Attention", {"q": _f32(2, 4, 3, 8), "k": _f32(2, 2, 3, 8), "v": _f32(2, 2, 3, 8)},
         {"is_causal": 1}),
    Case("Attention", {"q": _f32(1, 2, 3, 8), "k": _f32(1, 2, 5, 8), "v": _f32(1, 2, 5, 6),
                       "m": _f32(3, 5)}, {"scale": 0.3}),
    Case("Attention", {"q": _f32(1, 4, 2, 8), "k": _f32(1, 1, 2, 8), "v": _f32(1, 1, 2, 8),
                       "m": _causal_mask(2, 6), "pk": _f32(1, 1, 4, 8), "pv": _f32(1, 1, 4, 8)},
         {}, 3),
    Case("Attention", {"q": _f32(2, 3, 32), "k": _f32(2, 3, 16), "v": _f32(2, 3, 16),
                       "": None, "pk": _f32(2, 2, 4, 8), "pv": _f32(2, 2, 4, 8)},
         {"is_causal": 1, "q_num_heads": 4, "kv_num_heads": 2}, 3),
    Case("Attention", {"q": _f32(1, 2, 3, 8), "k": _f32(1, 2, 4, 8), "v": _f32(1, 2, 4, 8)},
         {"is_causal": 1, "softcap": 0.7}),
]
ROT = [
    Case("RotaryEmbedding", {"x": _f32(2, 3, 5, 8), "cos": COS, "sin": SIN,
                             "pos": RNG.integers(0, 32, (2, 5))}),
    Case("RotaryEmbedding", {"x": _f32(2, 5, 24), "cos": COS, "sin": SIN,
                             "pos": RNG.integers(0, 32, (2, 5))},
         {"num_heads": 3, "interleaved": 1}),
    Case("RotaryEmbedding", {"x": _f32(1, 2, 4, 8), "cos": COS3, "sin": SIN3,
                             "pos": np.array([[3, 4, 5, 6]])}, {"rotary_embedding_dim": 6}),
    Case("RotaryEmbedding", {"x": _f32(2, 3, 4, 8), "cos": COS[:8].reshape(2, 4, 4),
                             "sin": SIN[:8].reshape(2, 4, 4)}),
]


@pytest.mark.parametrize("case", ATT + ROT, ids=lambda c: f"{c.op}-{sorted(c.inputs)}")
def test_standard_ops_match_onnxruntime(case: Case) -> None:
    check_forward_vs_ort(case.op, case.inputs, case.n_outputs, case.attrs, _tables(case),
                         opset=23, rtol=1e-4, atol=1e-5)


def _tables(case: Case) -> tuple[str, ...]:
    return tuple(n for n in ("cos", "sin") if n in case.inputs)


@pytest.mark.parametrize("case", ATT + ROT, ids=lambda c: f"{c.op}-{sorted(c.inputs)}")
def test_vjp_matches_finite_differences(case: Case) -> None:
    names = [f"y{i}" for i in range(case.n_outputs)]
    _, lowered, _ = lower_and_run(case.op, case.inputs, names, case.attrs, _tables(case))
    for layer in lowered.layers:
        xs = [case.inputs.get(t) if t else None for t in layer.inputs]
        check_vjp(OPS[layer.kind], xs, layer.attrs, rtol=1e-5, atol=1e-8)


def test_causal_with_past_is_bottom_right_aligned() -> None:
    """A decode step (S=1) after 4 cached tokens sees all 5 keys; a 2-token step sees 4 / 5."""
    q, k, v = _f32(1, 1, 2, 8), _f32(1, 1, 2, 8), _f32(1, 1, 2, 8)
    pk, pv = _f32(1, 1, 3, 8), _f32(1, 1, 3, 8)
    (y, _, _), _, _ = lower_and_run("Attention", {"q": q, "k": k, "v": v, "": None, "pk": pk,
                                                  "pv": pv}, ["y", "pk2", "pv2"],
                                    {"is_causal": 1})
    keys, vals = np.concatenate([pk, k], 2)[0, 0], np.concatenate([pv, v], 2)[0, 0]
    for i, seen in ((0, 4), (1, 5)):   # closed form: softmax over the visible keys only
        z = keys[:seen] @ q[0, 0, i] / np.sqrt(8)
        p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        np.testing.assert_allclose(y[0, 0, i], p @ vals[:seen], rtol=1e-5)


# --- onnxruntime-genai's contrib ops -----------------------------------------------------------


def _model(nodes: list[onnx.NodeProto], feeds: dict[str, np.ndarray], consts: dict[str, Any],
           outputs: list[str]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info(n, _TYPES[v.dtype], v.shape)
                     for n, v in feeds.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        [numpy_helper.from_array(np.asarray(v), n) for n, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(MS, 1)])
    model.ir_version = 8
    return model


def _typed(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """onnxruntime's outputs; their shapes are written into the model (the checker wants them)."""
    want = run_ort(model, feeds)
    for out, ref in zip(model.graph.output, want):
        out.CopyFrom(helper.make_tensor_value_info(out.name, TensorProto.FLOAT, ref.shape))
    return want


def _check_vs_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray], outputs: list[str],
                  atol: float = 2e-5) -> None:
    want = _typed(model, feeds)
    g = load(model)
    got = run(g, {n: feeds[n] for n in g.inputs})
    for name, ref in zip(outputs, want):
        np.testing.assert_allclose(got[name], ref, rtol=1e-4, atol=atol, err_msg=name)


def _gqa(past: int, seq: int, packed: bool, rotary: bool) -> tuple:
    # onnxruntime: batch 1 when a multi-token step follows a cache
    b, hq, hkv, d = 1 if past and seq > 1 else 2, 4, 2, 16
    feeds = {"q": _f32(b, seq, (hq + 2 * hkv) * d) if packed else _f32(b, seq, hq * d),
             "pk": _f32(b, hkv, past, d), "pv": _f32(b, hkv, past, d)}
    if not packed:
        feeds |= {"k": _f32(b, seq, hkv * d), "v": _f32(b, seq, hkv * d)}
    consts = {"seqlens": np.full(b, past + seq - 1, np.int32),
              "total": np.array(past + seq, np.int32), "cos": COS16, "sin": SIN16}
    ins = ["q", "" if packed else "k", "" if packed else "v", "pk", "pv", "seqlens", "total"]
    ins += ["cos", "sin"] if rotary else []
    node = helper.make_node("GroupQueryAttention", ins, ["y", "present_k", "present_v"],
                            domain=MS, num_heads=hq, kv_num_heads=hkv, do_rotary=int(rotary))
    return _model([node], feeds, consts, ["y", "present_k", "present_v"]), feeds


@pytest.mark.parametrize("past,seq,packed,rotary", [(0, 5, False, True), (4, 1, False, True),
                                                    (3, 2, True, True), (6, 3, False, False)])
def test_group_query_attention_matches_onnxruntime(past: int, seq: int, packed: bool,
                                                   rotary: bool) -> None:
    model, feeds = _gqa(past, seq, packed, rotary)
    _check_vs_ort(model, feeds, ["y", "present_k", "present_v"])


def test_group_query_attention_lowers_to_rotary_and_attention() -> None:
    model, feeds = _gqa(3, 2, True, True)
    _typed(model, feeds)
    kinds = [layer.kind for layer in load(model).layers]
    assert kinds == ["split", "rotary", "rotary", "attention"]


def test_ms_rotary_embedding_matches_onnxruntime() -> None:
    feeds = {"x": _f32(2, 5, 24), "pos": RNG.integers(0, 32, (2, 5))}
    for interleaved in (0, 1):
        node = helper.make_node("RotaryEmbedding", ["x", "pos", "cos", "sin"], ["y"], domain=MS,
                                interleaved=interleaved, num_heads=3)
        _check_vs_ort(_model([node], feeds, {"cos": COS, "sin": SIN}, ["y"]), feeds, ["y"])


def test_skip_simplified_layer_norm_matches_onnxruntime() -> None:
    feeds = {"x": _f32(2, 3, 16), "skip": _f32(2, 3, 16)}
    consts = {"gamma": _f32(16), "bias": _f32(16)}
    node = helper.make_node("SkipSimplifiedLayerNormalization", ["x", "skip", "gamma", "bias"],
                            ["y", "", "", "sum"], domain=MS, epsilon=1e-5)
    _check_vs_ort(_model([node], feeds, consts, ["y", "sum"]), feeds, ["y", "sum"])


def test_contrib_rotary_is_told_apart_from_onnx_rotary() -> None:
    assert claims("RotaryEmbedding", MS) and claims("RotaryEmbedding", "")
    assert claims("GroupQueryAttention", MS) and not claims("GroupQueryAttention", "")
