"""Real exporter constructs load, calibrate with real data and compile (issue 16, item 0).

Each test builds a small model with exactly the construct a current exporter writes:
a transformers-5-style attention-mask chain (Range, GreaterOrEqual, GatherND, And, Where),
an `If` on an input the user pins (silero-vad's `sr == 16000`), a recurrent state input
`[2, batch, H]` whose batch axis is 1, and an ArgMax label tail. The oracle is onnxruntime
running the source model in float32.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgesim
from compiler.errors import ModelError
from compiler.frontend import load
from edgesim import calibration as cal
from edgesim.errors import UserError

pytestmark = pytest.mark.ort
RNG = np.random.default_rng(16)
F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL


def _model(nodes: list, inputs: list, outputs: list, inits: dict) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "m", inputs, outputs,
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _ort(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _w(*shape: int) -> np.ndarray:
    return (RNG.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)


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
             "wq": _w(D, D), "wk": _w(D, D), "wv": _w(D, D), "wo": _w(D, D)}
    inputs = [helper.make_tensor_value_info("x", F, ["batch", S, D]),
              helper.make_tensor_value_info("attention_mask", I64, ["batch", S])]
    return _model(nodes, inputs, [helper.make_tensor_value_info("y", F, ["batch", S, D])],
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
    (want,) = _ort(model, data)
    np.testing.assert_allclose(run(g, data)["y"], want, rtol=1e-4, atol=1e-5)


def test_mask_chain_compiles_w8a8_close_to_float(tmp_path) -> None:
    model, calib = mask_chain_model(), _mask_data(16)
    r = edgesim.compile(model, "rpi5", outdir=tmp_path / "o", calib=calib, method="uniform",
                        budget="bits=8", weight_bits=(8,))
    test = _mask_data(8)
    want = np.concatenate([_ort(model, {k: v[i:i + 1] for k, v in test.items()})[0]
                           for i in range(8)])
    emitted = onnx.load(r.files["model"])
    got = np.concatenate([_ort(emitted, {k: v[i:i + 1] for k, v in test.items()})[0]
                          for i in range(8)])
    cos = np.sum(want * got, -1) / (np.linalg.norm(want, axis=-1) * np.linalg.norm(got, axis=-1))
    assert cos.mean() > 0.99, cos.mean()


# --- an If on an input, and a recurrent state [2, batch, H] -----------------------------------

H = 8


def vad_like_model() -> onnx.ModelProto:
    """input [batch, 32], state [2, batch, H], sr int64 scalar -> (prob [batch, 1],
    stateN [2, batch, H]). Like silero-vad: `If(sr == 16000)` picks a branch; the state is
    mixed into the input's features and updated."""
    then_nodes = [helper.make_node("MatMul", ["input", "w16"], ["feat_t"])]
    else_nodes = [helper.make_node("MatMul", ["input", "w8"], ["feat_e"])]
    then_g = helper.make_graph(then_nodes, "then", [], [
        helper.make_tensor_value_info("feat_t", F, None)])
    else_g = helper.make_graph(else_nodes, "else", [], [
        helper.make_tensor_value_info("feat_e", F, None)])
    nodes = [
        helper.make_node("Equal", ["sr", "k16000"], ["is16"]),
        helper.make_node("If", ["is16"], ["feat"], then_branch=then_g, else_branch=else_g),
        helper.make_node("Gather", ["state", "zero"], ["h0"], axis=0),             # [batch, H]
        helper.make_node("Gather", ["state", "one"], ["h1"], axis=0),
        helper.make_node("MatMul", ["h0", "wh"], ["rec"]),
        helper.make_node("Add", ["feat", "rec"], ["pre"]),
        helper.make_node("Add", ["pre", "h1"], ["pre2"]),
        helper.make_node("Tanh", ["pre2"], ["h"]),
        helper.make_node("Unsqueeze", ["h", "ax0"], ["hu"]),
        helper.make_node("Concat", ["hu", "hu"], ["stateN"], axis=0),
        helper.make_node("MatMul", ["h", "wout"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["output"]),
    ]
    inits = {"k16000": np.array(16000, np.int64), "zero": np.array(0, np.int64),
             "one": np.array(1, np.int64), "ax0": np.array([0], np.int64),
             "w16": _w(32, H), "w8": _w(32, H), "wh": _w(H, H), "wout": _w(H, 1)}
    inputs = [helper.make_tensor_value_info("input", F, ["?", 32]),
              helper.make_tensor_value_info("state", F, [2, "?", H]),
              helper.make_tensor_value_info("sr", I64, [])]
    outputs = [helper.make_tensor_value_info("output", F, ["?", 1]),
               helper.make_tensor_value_info("stateN", F, [2, "?", H])]
    return _model(nodes, inputs, outputs, inits)


def _vad_data(n: int) -> dict[str, np.ndarray]:
    return {"input": RNG.standard_normal((n, 32)).astype(np.float32),
            "state": RNG.standard_normal((2, n, H)).astype(np.float32)}


def test_an_if_on_a_pinned_input_takes_the_pinned_branch() -> None:
    from compiler.executor import run

    model = vad_like_model()
    with pytest.raises(ModelError, match="If"):
        load(model)
    for sr in (16000, 8000):
        g = load(model, input_values={"sr": sr})
        assert g.inputs == ("input", "state") and any("pinned" in n for n in g.notes)
        data = _vad_data(1)
        want = _ort(model, {**data, "sr": np.array(sr, np.int64)})
        got = run(g, data)
        np.testing.assert_allclose(got["output"], want[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got["stateN"], want[1], rtol=1e-5, atol=1e-6)


def test_an_if_on_constants_is_folded_without_shape_inference(monkeypatch) -> None:
    """`sr == 16000` reads no shape: the condition needs no inference of the whole model
    (which ran once per If condition; silero has ten)."""
    import compiler.frontend.inline_if as inline_if
    from compiler.executor import run

    def refused(*args: object) -> None:
        raise AssertionError("shape inference for a condition that reads no shape")

    monkeypatch.setattr(inline_if, "known_shapes", refused)
    model, data = vad_like_model(), _vad_data(1)
    g = load(model, input_values={"sr": 8000})
    want = _ort(model, {**data, "sr": np.array(8000, np.int64)})
    np.testing.assert_allclose(run(g, data)["output"], want[0], rtol=1e-5, atol=1e-6)


def test_state_batch_axis_is_detected_and_can_be_declared() -> None:
    model = vad_like_model()
    g = load(model, input_values={"sr": 16000})
    assert g.batch_axis("state") == 1 and g.batch_axis("input") == 0
    assert g.types["state"].shape == (2, 1, H)
    g3 = load(model, {"input": (3, 32), "state": (2, 3, H)}, input_values={"sr": 16000})
    assert cal.batch_size(g3) == 3 and cal.batched_shape(g3, "state", 5) == (2, 5, H)
    with pytest.raises(ModelError, match="dimension 1"):  # no batch axis: give its shape
        load(model, input_values={"sr": 16000}, batch_axes={"state": None})
    declared = load(model, {"state": (2, 1, H)}, input_values={"sr": 16000},
                    batch_axes={"state": None})
    assert declared.batch_axis("state") is None
    with pytest.raises(ModelError, match="out of range"):
        load(model, input_values={"sr": 16000}, batch_axes={"state": 3})


def test_state_calibration_feeds_samples_along_axis_1() -> None:
    g = load(vad_like_model(), input_values={"sr": 16000})
    data, _ = cal.from_arrays(g, _vad_data(5), "calib")
    assert data.count == 5 and data.samples["state"].shape == (5, 2, H)
    raw = _vad_data(5)
    data, _ = cal.from_arrays(g, raw, "calib")
    feeds = list(cal.batches(g, data))
    assert len(feeds) == 5 and feeds[2]["state"].shape == (2, 1, H)
    np.testing.assert_array_equal(feeds[2]["state"][:, 0], raw["state"][:, 2])
    with pytest.raises(UserError, match=r"expected \[2, samples, 8\]"):
        cal.from_arrays(g, {"input": raw["input"], "state": raw["state"][:, :, :4]}, "calib")
    rand = list(cal.batches(g, cal.random_samples(g, 3)))
    assert [f["state"].shape for f in rand] == [(2, 1, H)] * 3


def speech_decisions(reference: np.ndarray, test: np.ndarray) -> float:
    """A voice-activity detector's own metric: chunks whose speech decision agrees."""
    return float(np.mean((reference > 0.5) == (test > 0.5)))


@pytest.mark.parametrize("calib_random", [None, 8])
def test_state_model_compiles_with_real_and_random_data(tmp_path, calib_random) -> None:
    model = vad_like_model()
    calib = None if calib_random else _vad_data(16)
    r = edgesim.compile(model, "rpi5", outdir=tmp_path / "o", calib=calib,
                        calib_random=calib_random, method="hawq", budget="bits=8",
                        weight_bits=(4, 8), input_values={"sr": 16000},
                        fidelity_metric=speech_decisions)
    # a probability per chunk: no top-1 agreement, the user's decision metric is primary
    assert r.fidelity["output_kind"] == "tensor" and r.fidelity["top1_agreement"] is None
    assert r.fidelity["metric"] == "speech_decisions" and r.fidelity["value"] >= 0.9
    emitted = onnx.load(r.files["model"])
    assert [i.name for i in emitted.graph.input] == ["input", "state"]
    test = _vad_data(4)
    for i in range(4):
        feeds = {"input": test["input"][i:i + 1], "state": test["state"][:, i:i + 1]}
        want = _ort(model, {**feeds, "sr": np.array(16000, np.int64)})
        got = _ort(emitted, feeds)
        np.testing.assert_allclose(got[0], want[0], atol=0.05)


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
    inits = {"w1": _w(6, 12), "b1": _w(12), "w2": _w(12, 5) * 3, "b2": _w(5),
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
    want_label, want_p = _ort(model, {"x": x})
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
    labels = [_ort(emitted, {"x": calib["x"][i:i + 1]})[0] for i in range(32)]
    ref = [_ort(model, {"x": calib["x"][i:i + 1]})[0] for i in range(32)]
    assert set(np.concatenate(labels)) <= set(CLASSES)
    assert np.mean(np.concatenate(labels) == np.concatenate(ref)) >= 0.9


def test_cli_pins_inputs_and_declares_batch_axes(tmp_path, capsys) -> None:
    from edgesim.cli import main

    onnx.save(vad_like_model(), tmp_path / "vad.onnx")
    np.savez(tmp_path / "calib.npz", **_vad_data(8))
    base = ["compile", str(tmp_path / "vad.onnx"), "--calib", str(tmp_path / "calib.npz"),
            "--method", "uniform", "--budget", "bits=8", "--weight-bits", "8", "--quiet",
            "-o", str(tmp_path / "o")]
    assert main(base) == 2  # the If on sr cannot be decided
    assert "If" in capsys.readouterr().err
    assert main([*base, "--input-value", "sr=16000", "--batch-axis", "state=1"]) == 0
    assert "pinned to 16000" in (tmp_path / "o" / "report.md").read_text()
    assert main([*base, "--input-value", "sr=fast"]) == 2
    assert "--input-value: expected name=16000" in capsys.readouterr().err
    assert main([*base, "--input-value", "sr=16000", "--batch-axis", "state=x"]) == 2


@pytest.mark.parametrize("method", ["minmax", "mse", "entropy"])
def test_every_calibration_method_compiles(tmp_path, method: str) -> None:
    r = edgesim.compile(mask_chain_model(), "rpi5", outdir=tmp_path / "o", calib=_mask_data(16),
                        method="uniform", budget="bits=8", weight_bits=(8,),
                        calib_method=method)
    assert r.fidelity["metric"] == "cosine" and r.fidelity["value"] > 0.98
    with pytest.raises(UserError, match="calib-method"):
        edgesim.compile(mask_chain_model(), "rpi5", outdir=tmp_path / "p",
                        calib=_mask_data(4), method="uniform", calib_method="kl")


def test_smooth_quant_raises_w8a8_fidelity_on_outlier_channels(tmp_path) -> None:
    from tests.compiler.test_smooth_quant import _model

    calib = {"x": RNG.standard_normal((16, 12, 16)).astype(np.float32)}
    kw = dict(calib=calib, method="uniform", budget="bits=8", weight_bits=(8,),
              calib_method="minmax")
    plain = edgesim.compile(_model(), "rpi5", outdir=tmp_path / "a", smooth_quant=None, **kw)
    smooth = edgesim.compile(_model(), "rpi5", outdir=tmp_path / "b", smooth_quant=0.5, **kw)
    assert any("SmoothQuant" in n for n in smooth.notes)
    assert smooth.fidelity["sqnr_db"] > plain.fidelity["sqnr_db"] + 3.0  # at least 2x less noise
    with pytest.raises(UserError, match="alpha"):
        edgesim.compile(_model(), "rpi5", outdir=tmp_path / "c", smooth_quant=1.5, **kw)


def _mlp_model(k: int = 64) -> onnx.ModelProto:
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]),
             helper.make_node("Relu", ["h"], ["hr"]),
             helper.make_node("MatMul", ["hr", "w2"], ["y"])]
    inits = {"w1": _w(k, k), "w2": _w(k, 16)}
    return _model(nodes, [helper.make_tensor_value_info("x", F, ["n", k])],
                  [helper.make_tensor_value_info("y", F, ["n", 16])], inits)


@pytest.mark.parametrize("weight_bits,budget", [(4, "bits=4")])
def test_gptq_rounding_beats_nearest_on_held_out_data(tmp_path, weight_bits: int,
                                                      budget: str) -> None:
    """W4 weight-only (MatMulNBits), one model for both roundings: GPTQ was +0.5 to +2.9 dB
    SQNR over RTN (median +1.7) on 32 draws of the model and data, 5 of them under the 1 dB
    once asserted (which passed on lucky draws: the test drew a fresh model per rounding)."""
    mix = RNG.standard_normal((64, 64)) + 2.0 * np.eye(64)

    def data(n: int) -> dict[str, np.ndarray]:
        return {"x": (RNG.standard_normal((n, 64)) @ mix).astype(np.float32)}

    calib, held_out = data(128), data(64)
    model = _mlp_model()
    sqnr = {}
    for rounding in ("rtn", "gptq"):
        r = edgesim.compile(model, "rpi5", outdir=tmp_path / rounding, calib=calib,
                            eval_data=held_out, method="uniform", budget=budget,
                            weight_bits=(weight_bits,), rounding=rounding,
                            bias_correction=False)  # the rounding alone
        sqnr[rounding] = r.fidelity["sqnr_db"]
    assert sqnr["gptq"] > sqnr["rtn"], sqnr


def test_extreme_layer_errors_are_flagged_with_their_measured_sqnr(tmp_path) -> None:
    calib = {"x": RNG.standard_normal((8, 64)).astype(np.float32)}
    model = _mlp_model()
    flagged = {}
    for bits in (2, 8):
        r = edgesim.compile(model, "rpi5", outdir=tmp_path / str(bits), calib=calib,
                            method="uniform", budget=f"bits={bits}", weight_bits=(bits,))
        flagged[bits] = [n for n in r.notes if "extreme error" in n]
    assert flagged[8] == [] and any(n.startswith("layer MatMul_0:") for n in flagged[2])
    # the first layer reads the model input, so its own error is the emitted model's error
    # on h: measure it in onnxruntime
    emitted = onnx.load(tmp_path / "2" / "model.rpi5.onnx")
    emitted.graph.output.append(helper.make_tensor_value_info("h", F, None))
    source = _model([helper.make_node("MatMul", ["x", "w1"], ["h"])],
                    [helper.make_tensor_value_info("x", F, ["n", 64])],
                    [helper.make_tensor_value_info("h", F, ["n", 64])],
                    {"w1": numpy_helper.to_array(
                        next(t for t in model.graph.initializer if t.name == "w1"))})
    ref = np.concatenate([_ort(source, {"x": calib["x"][i:i + 1]})[0] for i in range(2)])
    sess = ort.InferenceSession(emitted.SerializeToString(), providers=["CPUExecutionProvider"])
    got = np.concatenate([sess.run(["h"], {"x": calib["x"][i:i + 1]})[0] for i in range(2)])
    db = 10 * np.log10(np.sum(ref ** 2) / np.sum((got - ref) ** 2))
    note = next(n for n in flagged[2] if n.startswith("layer MatMul_0:"))
    assert f"{db:.1f} dB" in note, (db, note)


def test_a_w8a8_conv_before_a_relu_is_not_flagged(tmp_path) -> None:
    """digits_cnn's conv3 at W8A8: its output grid is the ReLU's (zero point 0), so its
    negative outputs are not its error. The flag compared them with the pre-ReLU float output
    (5.6 dB); the emitted model's own SQNR on the same plan is above 30 dB."""
    from edgesim import zoo
    from edgesim.api import quantize

    x = zoo.load_digits_data()["x_calib"][:16]
    np.savez(tmp_path / "calib.npz", input=x)
    r = quantize(zoo.build("digits_cnn"), {"conv3/Conv": [8, 8]}, tmp_path / "q.onnx",
                 calib=tmp_path / "calib.npz")
    assert not [n for n in r.notes if "extreme error" in n], r.notes
    sess = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    ref = _ort(zoo.build("digits_cnn"), {"input": x})[0]
    got = sess.run(None, {"input": x})[0]
    assert 10 * np.log10((ref ** 2).sum() / ((got - ref) ** 2).sum()) > 30
