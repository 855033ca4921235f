"""Real exporter constructs load, calibrate with real data and compile (issue 16, item 0).

Each test builds a small model with exactly the construct a current exporter writes:
a transformers-5-style attention-mask chain (Range, GreaterOrEqual, GatherND, And, Where)
and an ArgMax label tail. The oracle is onnxruntime running the source model in float32.
The If on a pinned input and the recurrent state are in test_exporter_state.py.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import edgesim
from compiler.frontend import load
from edgesim.errors import UserError
from tests.edgesim.exporter_models import I64, B, F, checked_model, ort_outputs, weight

pytestmark = pytest.mark.ort
# this file's own generator: its draws do not depend on which other test files ran first
RNG = np.random.default_rng(16)


# --- a transformers-5 attention mask ---------------------------------------------------------

S, D = 6, 16


def mask_chain_model() -> onnx.ModelProto:
    """x [batch, S, D], attention_mask int64 [batch, S] -> attention output [batch, S, D].

    The mask is built as torch.onnx.export writes transformers 5's `sdpa_mask`: kv_idx =
    Range(0, S); padding = GatherND(attention_mask, [batch, kv]) (batch_dims 1); the causal
    part GreaterOrEqual(q_idx, kv_idx); And of both; Where(mask, 0, -1e9) added to scores."""
    nodes = [
        helper.make_node("Range", ["zero", "len", "one"], ["kv"]),
        helper.make_node("Unsqueeze", ["kv", "ax_last"], ["kv_col"]),                # [S, 1]
        helper.make_node("Unsqueeze", ["kv_col", "ax0"], ["kv_idx"]),               # [1, S, 1]
        helper.make_node("GatherND", ["attention_mask", "kv_idx"], ["pad"], batch_dims=1),
        helper.make_node("Cast", ["pad"], ["pad_b"], to=B),                         # [1, S]
        helper.make_node("Unsqueeze", ["kv", "ax_last"], ["q_idx"]),                # [S, 1]
        helper.make_node("GreaterOrEqual", ["q_idx", "kv"], ["causal"]),            # [S, S]
        helper.make_node("Unsqueeze", ["pad_b", "ax1"], ["pad_row"]),               # [1, 1, S]
        helper.make_node("And", ["causal", "pad_row"], ["allowed"]),                # [1, S, S]
        helper.make_node("Where", ["allowed", "zero_f", "neg"], ["bias"]),
        helper.make_node("MatMul", ["x", "wq"], ["q"]),
        helper.make_node("MatMul", ["x", "wk"], ["k"]),
        helper.make_node("MatMul", ["x", "wv"], ["v"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"]),
        helper.make_node("Add", ["scores", "bias"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["ctx"]),
        helper.make_node("MatMul", ["ctx", "wo"], ["y"]),
    ]
    inits = {"zero": np.array(0, np.int64), "len": np.array(S, np.int64),
             "one": np.array(1, np.int64), "ax_last": np.array([-1], np.int64),
             "ax0": np.array([0], np.int64), "ax1": np.array([1], np.int64),
             "zero_f": np.array(0.0, np.float32), "neg": np.array(-1e9, np.float32),
             "wq": weight(RNG, D, D), "wk": weight(RNG, D, D), "wv": weight(RNG, D, D),
             "wo": weight(RNG, D, D)}
    inputs = [helper.make_tensor_value_info("x", F, ["batch", S, D]),
              helper.make_tensor_value_info("attention_mask", I64, ["batch", S])]
    return checked_model(nodes, inputs, [helper.make_tensor_value_info("y", F, ["batch", S, D])],
                  inits)


def _mask_data(n: int) -> dict[str, np.ndarray]:
    lengths = RNG.integers(2, S + 1, n)
    mask = (np.arange(S)[None, :] < lengths[:, None]).astype(np.int64)
    return {"x": RNG.standard_normal((n, S, D)).astype(np.float32), "attention_mask": mask}


def test_mask_chain_lowers_and_matches_onnxruntime() -> None:
    from compiler.executor import run

    model, data = mask_chain_model(), _mask_data(1)
    g = load(model)
    kinds = {layer.kind for layer in g.layers}
    assert "gather_nd" in kinds  # the mask depends on the input: it is not folded away
    (want,) = ort_outputs(model, data)
    np.testing.assert_allclose(run(g, data)["y"], want, rtol=1e-4, atol=1e-5)


def test_mask_chain_compiles_w8a8_close_to_float(tmp_path) -> None:
    model, calib = mask_chain_model(), _mask_data(16)
    r = edgesim.compile(model, "rpi5", outdir=tmp_path / "o", calib=calib, method="uniform",
                        budget="bits=8", weight_bits=(8,))
    test = _mask_data(8)
    want = np.concatenate([ort_outputs(model, {k: v[i:i + 1] for k, v in test.items()})[0]
                           for i in range(8)])
    emitted = onnx.load(r.files["model"])
    got = np.concatenate([ort_outputs(emitted, {k: v[i:i + 1] for k, v in test.items()})[0]
                          for i in range(8)])
    cos = np.sum(want * got, -1) / (np.linalg.norm(want, axis=-1) * np.linalg.norm(got, axis=-1))
    assert cos.mean() > 0.99, cos.mean()


# --- an ArgMax / ai.onnx.ml label tail (skl2onnx's classifier output) -------------------------

CLASSES = np.array([3, 1, 4, 15, 9], np.int64)


def mlp_classifier_model() -> onnx.ModelProto:
    """x [N, 6] -> (label int64 [N], probabilities [N, 5]) as skl2onnx writes an
    MLPClassifier with zipmap=False: Gemm/Relu/Gemm/Softmax, then classes[ArgMax]."""
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("Gemm", ["hr", "w2", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["idx"], axis=1),
        helper.make_node("ArrayFeatureExtractor", ["classes", "idx"], ["picked"],
                         domain="ai.onnx.ml"),
        helper.make_node("Reshape", ["picked", "flat"], ["label"]),
    ]
    inits = {"w1": weight(RNG, 6, 12), "b1": weight(RNG, 12), "w2": weight(RNG, 12, 5) * 3,
             "b2": weight(RNG, 5),
             "classes": CLASSES, "flat": np.array([-1], np.int64)}
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", F, ["N", 6])],
        [helper.make_tensor_value_info("label", I64, ["N"]),
         helper.make_tensor_value_info("probabilities", F, ["N", 5])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("ai.onnx.ml", 1)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def test_label_tail_is_a_float_island_and_compiles(tmp_path) -> None:
    from compiler.executor import run

    model = mlp_classifier_model()
    x = RNG.standard_normal((4, 6)).astype(np.float32)
    g = load(model, {"x": (4, 6)})
    assert {"arg_reduce", "gather"} <= {layer.kind for layer in g.layers}
    want_label, want_p = ort_outputs(model, {"x": x})
    got = run(g, {"x": x})
    np.testing.assert_array_equal(got["label"], want_label)
    np.testing.assert_allclose(got["probabilities"], want_p, rtol=1e-5, atol=1e-6)
    calib = {"x": RNG.standard_normal((32, 6)).astype(np.float32)}
    r = edgesim.compile(model, "rpi5", outdir=tmp_path / "o", calib=calib, method="uniform",
                        budget="bits=8", weight_bits=(8,))
    assert (r.fidelity["output_kind"], r.fidelity["metric"]) == ("labels", "label_agreement")
    assert r.fidelity["top1_agreement"] is None and r.fidelity["value"] >= 0.9
    emitted = onnx.load(r.files["model"])
    assert [o.name for o in emitted.graph.output] == ["label", "probabilities"]
    labels = [ort_outputs(emitted, {"x": calib["x"][i:i + 1]})[0] for i in range(32)]
    ref = [ort_outputs(model, {"x": calib["x"][i:i + 1]})[0] for i in range(32)]
    assert set(np.concatenate(labels)) <= set(CLASSES)
    assert np.mean(np.concatenate(labels) == np.concatenate(ref)) >= 0.9


@pytest.mark.parametrize("method", ["minmax", "mse", "entropy"])
def test_every_calibration_method_compiles(tmp_path, method: str) -> None:
    r = edgesim.compile(mask_chain_model(), "rpi5", outdir=tmp_path / "o", calib=_mask_data(16),
                        method="uniform", budget="bits=8", weight_bits=(8,),
                        calib_method=method)
    assert r.fidelity["metric"] == "cosine" and r.fidelity["value"] > 0.98
    with pytest.raises(UserError, match="calib-method"):
        edgesim.compile(mask_chain_model(), "rpi5", outdir=tmp_path / "p",
                        calib=_mask_data(4), method="uniform", calib_method="kl")
